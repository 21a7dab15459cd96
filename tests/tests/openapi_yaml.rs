//! What kubectl reads and sends besides objects: the OpenAPI documents (v2 as JSON and
//! protobuf, v3 per group-version with schemas) and YAML request bodies with their limits.

#![allow(clippy::unwrap_used)] // a test that panics has failed; the message says where

use anyhow::Result;
use logbook_e2e::{Server, within};
use serde_json::Value;

fn req(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> http::Request<Vec<u8>> {
    let mut b = http::Request::builder().method(method).uri(path);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(body).expect("request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_documents_carry_the_schemas_kubectl_needs() -> Result<()> {
    within(120, "the OpenAPI documents were not served", async {
        let s = Server::start_api_only()?;
        let c = s.client().await?;

        let v2: Value = serde_json::from_str(
            &c.request_text(req(
                "GET",
                "/openapi/v2",
                &[("accept", "application/json")],
                vec![],
            ))
            .await?,
        )?;
        assert_eq!(v2["swagger"], "2.0");
        let dep = &v2["definitions"]["io.k8s.api.apps.v1.Deployment"];
        assert_eq!(
            dep["x-kubernetes-group-version-kind"][0]["kind"],
            "Deployment"
        );
        let containers =
            &v2["definitions"]["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
        assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
        let patch =
            &v2["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(patch["x-kubernetes-action"], "patch");
        let params: Vec<&str> = patch["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["name"].as_str())
            .collect();
        assert!(
            params.contains(&"dryRun") && params.contains(&"fieldValidation"),
            "{params:?}"
        );

        // The protobuf form kubectl asks for: a gnostic Document starting with swagger = "2.0".
        // kube-rs' request helpers decode text; the raw response is needed here.
        let raw = c
            .send(
                req(
                    "GET",
                    "/openapi/v2",
                    &[(
                        "accept",
                        "application/com.github.proto-openapi.spec.v2@v1.0+protobuf",
                    )],
                    vec![],
                )
                .map(Into::into),
            )
            .await?;
        assert_eq!(
            raw.headers()["content-type"],
            "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
        );
        let body = http_body_util::BodyExt::collect(raw.into_body())
            .await?
            .to_bytes();
        assert_eq!(
            &body[..5],
            b"\x0a\x032.0",
            "field 1 (swagger) = \"2.0\" comes first"
        );
        assert!(
            body.len() > 100_000,
            "the document holds the definitions ({} bytes)",
            body.len()
        );

        // v3: the index and one group-version with its schemas and references that resolve.
        let index: Value = serde_json::from_str(
            &c.request_text(req("GET", "/openapi/v3", &[], vec![]))
                .await?,
        )?;
        let url = index["paths"]["apis/apps/v1"]["serverRelativeURL"]
            .as_str()
            .unwrap()
            .to_string();
        let apps: Value =
            serde_json::from_str(&c.request_text(req("GET", &url, &[], vec![])).await?)?;
        let schemas = apps["components"]["schemas"].as_object().unwrap();
        let spec = &schemas["io.k8s.api.apps.v1.Deployment"]["properties"]["spec"];
        assert_eq!(
            spec["allOf"][0]["$ref"], "#/components/schemas/io.k8s.api.apps.v1.DeploymentSpec",
            "a reference with a description is wrapped in allOf"
        );
        assert!(schemas.contains_key("io.k8s.api.apps.v1.DeploymentSpec"));
        anyhow::Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn yaml_bodies_are_accepted_wherever_json_is_within_limits() -> Result<()> {
    within(120, "a YAML request did not complete", async {
        let s = Server::start_api_only()?;
        let c = s.client().await?;
        let cms = "/api/v1/namespaces/default/configmaps";
        let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-yaml\n  labels: {a: b}\ndata:\n  k: v\n";
        let created: Value = serde_json::from_str(
            &c.request_text(req("POST", cms, &[("content-type", "application/yaml")], yaml.into()))
                .await?,
        )?;
        assert_eq!(created["data"]["k"], "v");
        assert_eq!(created["metadata"]["labels"]["a"], "b");

        // Update with YAML too.
        let rv = created["metadata"]["resourceVersion"].as_str().unwrap();
        let update = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-yaml\n  resourceVersion: \"{rv}\"\ndata:\n  k: w\n"
        );
        let updated: Value = serde_json::from_str(
            &c.request_text(req(
                "PUT",
                &format!("{cms}/from-yaml"),
                &[("content-type", "application/yaml")],
                update.into(),
            ))
            .await?,
        )?;
        assert_eq!(updated["data"]["k"], "w");

        // An alias bomb is refused with 400, and nothing is stored.
        let mut bomb = String::from("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bomb\nx: &a [1, 2, 3]\ndata:\n");
        for i in 0..500 {
            bomb.push_str(&format!("  k{i}: *a\n"));
        }
        match c
            .request_text(req("POST", cms, &[("content-type", "application/yaml")], bomb.into()))
            .await
        {
            Err(kube::Error::Api(st)) => {
                assert_eq!((st.code, st.reason.as_str()), (400, "BadRequest"), "{}", st.message);
            }
            other => panic!("an alias bomb must be refused with 400, got {other:?}"),
        }
        match c
            .request_text(req("POST", cms, &[("content-type", "application/yaml")], b"a: [unclosed".to_vec()))
            .await
        {
            Err(kube::Error::Api(st)) => assert_eq!(st.code, 400, "{}", st.message),
            other => panic!("broken YAML must be refused with 400, got {other:?}"),
        }
        let list: Value = serde_json::from_str(&c.request_text(req("GET", cms, &[], vec![])).await?)?;
        let names: Vec<&str> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|i| i["metadata"]["name"].as_str())
            .collect();
        assert_eq!(names, ["from-yaml"]);
        anyhow::Ok(())
    })
    .await
}
