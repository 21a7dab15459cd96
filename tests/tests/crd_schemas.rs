//! Custom objects against their CRD's structural schema, over HTTP: 422 with kube's field
//! paths, defaults applied on write, unknown fields pruned (reported under
//! fieldValidation), `x-kubernetes-validations` rules (including transition rules),
//! non-structural CRDs refused, and cluster-scoped custom resources.

#![allow(clippy::unwrap_used)] // a test that panics has failed; the message says where

use std::time::{Duration, Instant};

use anyhow::Result;
use logbook_e2e::{Server, call_json as call, json_request as req, within};
use serde_json::{Value, json};

/// The code and message of a request expected to fail.
async fn fails(c: &kube::Client, method: &str, path: &str, body: Value) -> (u16, String, Value) {
    match c
        .request_text(req(method, path, "application/json", &body))
        .await
    {
        Err(kube::Error::Api(s)) => (
            s.code,
            s.message.clone(),
            serde_json::to_value(&s.details).unwrap_or_default(),
        ),
        other => panic!("{method} {path} should fail, got {other:?}"),
    }
}

fn crd(plural: &str, kind: &str, scope: &str, schema: Value) -> Value {
    json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.example.com")},
        "spec": {"group": "example.com", "scope": scope,
            "names": {"plural": plural, "singular": kind.to_lowercase(), "kind": kind},
            "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": schema}}]}})
}

async fn established(c: &kube::Client, name: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = call(
            c,
            "GET",
            &format!("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"),
            Value::Null,
        )
        .await?;
        let ok = v["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Established" && c["status"] == "True")
        });
        if ok {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "{name} was not established");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_objects_are_validated_defaulted_and_pruned_by_their_schema() -> Result<()> {
    within(120, "a schema step did not finish", async {
        let s = Server::start()?;
        let c = s.client_without_retries().await?;
        let crds = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions";

        // Not structural: refused with kube's message.
        let (code, msg, _) = fails(&c, "POST", crds, crd("bad", "Bad", "Namespaced",
            json!({"type": "object", "properties": {"spec": {"properties": {"x": {"type": "string"}}}}}))).await;
        assert_eq!(code, 422, "{msg}");
        assert!(msg.contains("spec.versions[0].schema.openAPIV3Schema.properties[spec].type: Required value"), "{msg}");

        let schema = json!({"type": "object", "properties": {"spec": {"type": "object",
            "required": ["size"],
            "x-kubernetes-validations": [
                {"rule": "self.size <= self.maxSize", "message": "size must not exceed maxSize"},
                {"rule": "self.size >= oldSelf.size", "message": "size may only grow"}],
            "properties": {
                "size": {"type": "integer", "minimum": 1},
                "maxSize": {"type": "integer", "default": 10},
                "color": {"type": "string", "enum": ["red", "blue"], "default": "blue"},
                "tags": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set"}}}}});
        call(&c, "POST", crds, crd("widgets", "Widget", "Namespaced", schema)).await?;
        established(&c, "widgets.example.com").await?;
        let ws = "/apis/example.com/v1/namespaces/default/widgets";
        let w = |name: &str, spec: Value| json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": name}, "spec": spec});

        // Defaults on write; unknown fields pruned (Warn by default).
        let created = call(&c, "POST", ws, w("a", json!({"size": 3, "extra": 1}))).await?;
        assert_eq!(created["spec"], json!({"size": 3, "maxSize": 10, "color": "blue"}));

        // Strict refuses the unknown field; nothing is stored.
        let (code, msg, _) = fails(&c, "POST", &format!("{ws}?fieldValidation=Strict"), w("b", json!({"size": 3, "extra": 1}))).await;
        assert_eq!(code, 400, "{msg}");
        assert!(msg.contains(r#"unknown field "spec.extra""#), "{msg}");

        // Schema violations: 422 naming each field.
        let (code, msg, details) = fails(&c, "POST", ws, w("c", json!({"size": 0, "color": "green", "tags": ["x", "x"]}))).await;
        assert_eq!(code, 422, "{msg}");
        let fields: Vec<&str> = details["causes"].as_array().unwrap().iter().filter_map(|c| c["field"].as_str()).collect();
        for f in ["spec.size", "spec.color", "spec.tags[1]"] {
            assert!(fields.contains(&f), "{f} missing from {fields:?}: {msg}");
        }
        let (code, msg, _) = fails(&c, "POST", ws, w("d", json!({"color": "red"}))).await;
        assert_eq!(code, 422);
        assert!(msg.contains("spec.size: Required value"), "{msg}");

        // CEL rules, and a transition rule on update.
        let (code, msg, _) = fails(&c, "POST", ws, w("e", json!({"size": 30}))).await;
        assert_eq!(code, 422);
        assert!(msg.contains("size must not exceed maxSize"), "{msg}");
        let shrink = c.request_text(req("PATCH", &format!("{ws}/a"), "application/merge-patch+json", &json!({"spec": {"size": 2}}))).await;
        match shrink {
            Err(kube::Error::Api(st)) => {
                assert_eq!(st.code, 422);
                assert!(st.message.contains("size may only grow"), "{}", st.message);
            }
            other => panic!("a shrink must fail the transition rule: {other:?}"),
        }
        let grown: Value = serde_json::from_str(&c.request_text(req("PATCH", &format!("{ws}/a"), "application/merge-patch+json", &json!({"spec": {"size": 4}}))).await?)?;
        assert_eq!(grown["spec"]["size"], 4);

        // A cluster-scoped custom resource.
        call(&c, "POST", crds, crd("regions", "Region", "Cluster", json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}))).await?;
        established(&c, "regions.example.com").await?;
        call(&c, "POST", "/apis/example.com/v1/regions", json!({"apiVersion": "example.com/v1", "kind": "Region", "metadata": {"name": "eu"}, "spec": {"anything": [1, 2]}})).await?;
        let eu = call(&c, "GET", "/apis/example.com/v1/regions/eu", Value::Null).await?;
        assert_eq!(eu["spec"]["anything"], json!([1, 2]), "preserve-unknown-fields keeps everything");
        assert!(eu["metadata"].get("namespace").is_none());
        anyhow::Ok(())
    })
    .await
}
