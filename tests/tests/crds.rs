//! CustomResourceDefinitions against the real binary: established at once, served with
//! their printer columns, explained, scaled, status split from spec, generation bumped on
//! spec changes only, kept across a kill -9, names conflicts refused, and deleted with their
//! objects (finalizers respected) — with every installed kubectl where kubectl is the client.

#![allow(clippy::unwrap_used)] // a test that panics has failed; the message says where

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use logbook_e2e::{Server, call_json as call, json_request as req, within};
use serde_json::{Value, json};

const CRD: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: crontabs.stable.example.com
spec:
  group: stable.example.com
  scope: Namespaced
  names:
    plural: crontabs
    singular: crontab
    kind: CronTab
    shortNames: [ct]
    categories: [all]
  versions:
  - name: v1
    served: true
    storage: true
    subresources:
      status: {}
      scale:
        specReplicasPath: .spec.replicas
        statusReplicasPath: .status.replicas
    additionalPrinterColumns:
    - name: Spec
      type: string
      jsonPath: .spec.cronSpec
    - name: Replicas
      type: integer
      jsonPath: .spec.replicas
    - name: Age
      type: date
      jsonPath: .metadata.creationTimestamp
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            description: The schedule and what it runs.
            properties:
              cronSpec:
                type: string
                description: A cron schedule.
              image: {type: string}
              replicas: {type: integer}
          status:
            type: object
            properties:
              replicas: {type: integer}
"#;

const CT: &str = r#"apiVersion: stable.example.com/v1
kind: CronTab
metadata:
  name: nightly
spec:
  cronSpec: "0 3 * * *"
  image: backup:1
  replicas: 2
"#;

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write manifest");
    p.display().to_string()
}

async fn merge(c: &kube::Client, path: &str, body: Value) -> Result<Value> {
    Ok(serde_json::from_str(
        &c.request_text(req("PATCH", path, "application/merge-patch+json", &body))
            .await?,
    )?)
}

#[test]
fn every_installed_kubectl_applies_a_crd_and_uses_its_resource() -> Result<()> {
    let s = Server::start()?;
    let dir = tempfile::tempdir()?;
    let crd = write(dir.path(), "crd.yaml", CRD);
    let ct = write(dir.path(), "ct.yaml", CT);
    s.kubectl(&["apply", "-f", &crd])?;
    s.kubectl(&[
        "wait",
        "--for=condition=Established",
        "crd/crontabs.stable.example.com",
        "--timeout=20s",
    ])?;
    for (label, bin) in Server::kubectl_binaries() {
        let ns = format!("crd-{}", label.replace('.', "-"));
        s.kubectl(&["create", "namespace", &ns])?;
        let out = s.kubectl_with(&bin, &["-n", &ns, "apply", "-f", &ct])?;
        assert!(
            out.contains("crontab.stable.example.com/nightly created"),
            "{label}: {out}"
        );
        let table = s.kubectl_with(&bin, &["-n", &ns, "get", "ct"])?;
        let header: Vec<&str> = table
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        assert_eq!(
            header,
            ["NAME", "SPEC", "REPLICAS", "AGE"],
            "{label}: {table}"
        );
        assert!(
            table
                .lines()
                .nth(1)
                .unwrap_or_default()
                .contains("0 3 * * *"),
            "{label}: {table}"
        );
        let explained = s.kubectl_with(&bin, &["explain", "crontab.spec.cronSpec"])?;
        assert!(
            explained.contains("A cron schedule."),
            "{label}: {explained}"
        );
        s.kubectl_with(&bin, &["-n", &ns, "scale", "ct", "nightly", "--replicas=4"])?;
        let got = s.kubectl_with(
            &bin,
            &[
                "-n",
                &ns,
                "get",
                "ct",
                "nightly",
                "-o",
                "jsonpath={.spec.replicas}",
            ],
        )?;
        assert_eq!(got, "4", "{label}");
        // Server-side apply: two managers, a conflict, then --force-conflicts.
        let first = write(
            dir.path(),
            "ssa1.yaml",
            &CT.replace("name: nightly", "name: shared"),
        );
        let second = write(
            dir.path(),
            "ssa2.yaml",
            &CT.replace("name: nightly", "name: shared")
                .replace("replicas: 2", "replicas: 7"),
        );
        let out = s.kubectl_with(&bin, &["-n", &ns, "apply", "--server-side", "-f", &first])?;
        assert!(out.contains("serverside-applied"), "{label}: {out}");
        s.kubectl_with(&bin, &["-n", &ns, "apply", "--server-side", "-f", &first])?;
        let conflict = s.kubectl_output(
            &bin,
            &[
                "-n",
                &ns,
                "apply",
                "--server-side",
                "--field-manager=other",
                "-f",
                &second,
            ],
        )?;
        let err = String::from_utf8_lossy(&conflict.stderr);
        assert!(
            !conflict.status.success(),
            "{label}: a conflicting apply must fail"
        );
        assert!(
            err.contains("conflict") && err.contains(".spec.replicas"),
            "{label}: {err}"
        );
        s.kubectl_with(
            &bin,
            &[
                "-n",
                &ns,
                "apply",
                "--server-side",
                "--field-manager=other",
                "--force-conflicts",
                "-f",
                &second,
            ],
        )?;
        let got = s.kubectl_with(
            &bin,
            &[
                "-n",
                &ns,
                "get",
                "ct",
                "shared",
                "-o",
                "jsonpath={.spec.replicas}",
            ],
        )?;
        assert_eq!(got, "7", "{label}");
        let all = s.kubectl_with(&bin, &["-n", &ns, "get", "all"])?;
        assert!(
            all.contains("crontab.stable.example.com/nightly"),
            "{label}: the category 'all' includes it: {all}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_resources_split_status_bump_generation_and_survive_a_kill() -> Result<()> {
    within(120, "a custom resource step did not finish", async {
        let mut s = Server::start()?;
        let dir = tempfile::tempdir()?;
        let crd = write(dir.path(), "crd.yaml", CRD);
        s.kubectl(&["apply", "-f", &crd])?;
        let c = s.client_without_retries().await?;
        let cts = "/apis/stable.example.com/v1/namespaces/default/crontabs";
        // Served within a second of the CRD's creation.
        let started = Instant::now();
        let created = loop {
            match call(
                &c,
                "POST",
                cts,
                json!({"apiVersion": "stable.example.com/v1", "kind": "CronTab",
                "metadata": {"name": "a"}, "spec": {"cronSpec": "* * * * *", "replicas": 1}}),
            )
            .await
            {
                Ok(v) => break v,
                Err(e) if started.elapsed() < Duration::from_secs(1) => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => bail!("not served 1 s after the CRD was created: {e}"),
            }
        };
        assert_eq!(created["metadata"]["generation"], 1);

        // The main resource ignores status; /status ignores spec.
        let v = merge(&c, &format!("{cts}/a"), json!({"status": {"replicas": 9}})).await?;
        assert!(
            v.get("status").is_none() || v["status"]["replicas"] != 9,
            "{v}"
        );
        assert_eq!(
            v["metadata"]["generation"], 1,
            "no spec change, no new generation"
        );
        let v = merge(
            &c,
            &format!("{cts}/a/status"),
            json!({"status": {"replicas": 3}, "spec": {"replicas": 7}}),
        )
        .await?;
        assert_eq!(v["status"]["replicas"], 3);
        assert_eq!(v["spec"]["replicas"], 1, "status updates leave spec alone");
        assert_eq!(v["metadata"]["generation"], 1);
        let v = merge(&c, &format!("{cts}/a"), json!({"spec": {"replicas": 2}})).await?;
        assert_eq!(
            v["metadata"]["generation"], 2,
            "a spec change bumps generation"
        );

        // Discovery lists the new group with its resource.
        let groups = call(&c, "GET", "/apis", Value::Null).await?;
        assert!(
            groups["groups"]
                .as_array()
                .unwrap()
                .iter()
                .any(|g| g["name"] == "stable.example.com"),
            "{groups}"
        );

        // A second CRD claiming the same kind in the group is not accepted.
        let clash = CRD
            .replace("name: crontabs.stable.example.com", "name: clashes.stable.example.com")
            .replace("plural: crontabs", "plural: clashes")
            .replace("singular: crontab", "singular: clash")
            .replace("shortNames: [ct]", "shortNames: [cl]");
        let clash_file = write(dir.path(), "clash.yaml", &clash);
        s.kubectl(&["apply", "-f", &clash_file])?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let crd = call(
                &c,
                "GET",
                "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/clashes.stable.example.com",
                Value::Null,
            )
            .await?;
            let accepted = crd["status"]["conditions"]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["type"] == "NamesAccepted"))
                .cloned();
            if let Some(a) = accepted {
                assert_eq!(a["status"], "False", "{crd}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the clashing CRD got no NamesAccepted condition"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        // kill -9 and restart: the resource is served at once from the stored CRD.
        s.kill9()?;
        s.restart()?;
        let c = s.client_without_retries().await?;
        let v = call(&c, "GET", &format!("{cts}/a"), Value::Null).await?;
        assert_eq!(v["spec"]["replicas"], 2);
        anyhow::Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_crd_deletes_its_objects_first_respecting_their_finalizers() -> Result<()> {
    within(120, "the CRD was not deleted", async {
        let s = Server::start()?;
        let dir = tempfile::tempdir()?;
        let crd = write(dir.path(), "crd.yaml", CRD);
        s.kubectl(&["apply", "-f", &crd])?;
        s.kubectl(&["wait", "--for=condition=Established", "crd/crontabs.stable.example.com", "--timeout=20s"])?;
        let c = s.client_without_retries().await?;
        let cts = "/apis/stable.example.com/v1/namespaces/default/crontabs";
        call(&c, "POST", cts, json!({"apiVersion": "stable.example.com/v1", "kind": "CronTab", "metadata": {"name": "free"}, "spec": {}})).await?;
        call(&c, "POST", cts, json!({"apiVersion": "stable.example.com/v1", "kind": "CronTab", "metadata": {"name": "held", "finalizers": ["example.com/hold"]}, "spec": {}})).await?;
        let crd_path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/crontabs.stable.example.com";
        call(&c, "DELETE", crd_path, Value::Null).await?;

        // The CRD waits, terminating, while an object is held by its finalizer.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let held = call(&c, "GET", &format!("{cts}/held"), Value::Null).await?;
            let free_gone = call(&c, "GET", &format!("{cts}/free"), Value::Null).await.is_err();
            if held["metadata"]["deletionTimestamp"].is_string() && free_gone {
                break;
            }
            assert!(Instant::now() < deadline, "the CRD's objects were not deleted");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let crd_now = call(&c, "GET", crd_path, Value::Null).await?;
        assert!(crd_now["metadata"]["deletionTimestamp"].is_string(), "{crd_now}");
        assert!(crd_now["metadata"]["finalizers"].as_array().unwrap().iter().any(|f| f == "customresourcecleanup.apiextensions.k8s.io"));

        // Releasing the object lets the CRD go, and its resource with it.
        merge(&c, &format!("{cts}/held"), json!({"metadata": {"finalizers": null}})).await?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while call(&c, "GET", crd_path, Value::Null).await.is_ok() {
            assert!(Instant::now() < deadline, "the CRD stayed after its last object went");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        match c.request_text(req("GET", cts, "", &Value::Null)).await {
            Err(kube::Error::Api(st)) => assert_eq!(st.code, 404),
            other => panic!("the resource should be gone with its CRD: {other:?}"),
        }
        anyhow::Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crd_serves_each_version_of_one_stored_object() -> Result<()> {
    within(60, "a multi-version step did not finish", async {
        let s = Server::start()?;
        let c = s.client_without_retries().await?;
        let schema = json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true});
        let crd = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "gizmos.example.com"},
            "spec": {"group": "example.com", "scope": "Namespaced",
                "names": {"plural": "gizmos", "singular": "gizmo", "kind": "Gizmo"},
                "conversion": {"strategy": "None"},
                "versions": [
                    {"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": schema}},
                    {"name": "v2", "served": true, "storage": false, "schema": {"openAPIV3Schema": schema}}]}});
        call(&c, "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd).await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let v1 = "/apis/example.com/v1/namespaces/default/gizmos";
        let v2 = "/apis/example.com/v2/namespaces/default/gizmos";
        let created = call(&c, "POST", v2, json!({"apiVersion": "example.com/v2", "kind": "Gizmo",
            "metadata": {"name": "g"}, "spec": {"a": 1}})).await?;
        assert_eq!(created["apiVersion"], "example.com/v2");
        let as_v1 = call(&c, "GET", &format!("{v1}/g"), Value::Null).await?;
        assert_eq!(as_v1["apiVersion"], "example.com/v1");
        let as_v2 = call(&c, "GET", &format!("{v2}/g"), Value::Null).await?;
        assert_eq!(as_v2["apiVersion"], "example.com/v2");
        assert_eq!(as_v1["metadata"]["resourceVersion"], as_v2["metadata"]["resourceVersion"], "one stored object");
        let list = call(&c, "GET", v2, Value::Null).await?;
        assert_eq!(list["items"][0]["apiVersion"], "example.com/v2");
        let patched = merge(&c, &format!("{v2}/g"), json!({"spec": {"b": 2}})).await?;
        assert_eq!((patched["apiVersion"].as_str(), patched["spec"]["b"].as_i64()), (Some("example.com/v2"), Some(2)));
        let unchanged = merge(&c, &format!("{v1}/g"), json!({"spec": {"b": 2}})).await?;
        assert_eq!(unchanged["metadata"]["resourceVersion"], patched["metadata"]["resourceVersion"], "a no-op patch through v1 writes nothing");
        anyhow::Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_a_deleted_crd_held_go_to_the_crd_refused_them() -> Result<()> {
    within(60, "the refused CRD was not accepted", async {
        let s = Server::start()?;
        let dir = tempfile::tempdir()?;
        let c = s.client_without_retries().await?;
        s.kubectl(&["apply", "-f", &write(dir.path(), "crd.yaml", CRD)])?;
        s.kubectl(&["wait", "--for=condition=Established", "crd/crontabs.stable.example.com", "--timeout=20s"])?;
        let clash = CRD
            .replace("name: crontabs.stable.example.com", "name: clashes.stable.example.com")
            .replace("plural: crontabs", "plural: clashes")
            .replace("singular: crontab", "singular: clash")
            .replace("shortNames: [ct]", "shortNames: [cl]");
        s.kubectl(&["apply", "-f", &write(dir.path(), "clash.yaml", &clash)])?;
        let clash_path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/clashes.stable.example.com";
        let condition = |v: &Value, ty: &str| {
            v["status"]["conditions"]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["type"] == ty))
                .and_then(|c| c["status"].as_str().map(str::to_string))
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while condition(&call(&c, "GET", clash_path, Value::Null).await?, "NamesAccepted").as_deref() != Some("False") {
            assert!(Instant::now() < deadline, "the clashing CRD was not refused");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        call(&c, "DELETE", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/crontabs.stable.example.com", Value::Null).await?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while condition(&call(&c, "GET", clash_path, Value::Null).await?, "Established").as_deref() != Some("True") {
            assert!(Instant::now() < deadline, "the refused CRD did not get the names once they were free");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        call(&c, "POST", "/apis/stable.example.com/v1/namespaces/default/clashes", json!({"apiVersion": "stable.example.com/v1", "kind": "CronTab", "metadata": {"name": "x"}, "spec": {}})).await?;
        anyhow::Ok(())
    })
    .await
}
