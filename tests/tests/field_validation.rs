//! `fieldValidation` on every write: unknown and duplicate fields refused (Strict, 400),
//! reported in `Warning` headers (Warn, the default) or ignored (Ignore), for built-in and
//! custom resources.

#![allow(clippy::unwrap_used)] // a test that panics has failed; the message says where

use anyhow::Result;
use logbook_e2e::{Server, within};

fn req(method: &str, path: &str, ct: &str, body: &str) -> http::Request<Vec<u8>> {
    http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", ct)
        .body(body.as_bytes().to_vec())
        .expect("request")
}

/// Sends a request; returns the status code, the Warning headers and the body.
async fn send(c: &kube::Client, r: http::Request<Vec<u8>>) -> Result<(u16, Vec<String>, String)> {
    let resp = c.send(r.map(Into::into)).await?;
    let code = resp.status().as_u16();
    let warnings = resp
        .headers()
        .get_all("warning")
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_string))
        .collect();
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await?
        .to_bytes();
    Ok((code, warnings, String::from_utf8_lossy(&body).into_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_fields_follow_field_validation() -> Result<()> {
    within(60, "a write did not answer", async {
        let s = Server::start()?;
        let c = s.client_without_retries().await?;
        let cms = "/api/v1/namespaces/default/configmaps";
        let body = |name: &str| {
            format!(r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{name}"}},"data":{{"a":"1","a":"2"}}}}"#)
        };

        let (code, _, text) = send(&c, req("POST", &format!("{cms}?fieldValidation=Strict"), "application/json", &body("strict"))).await?;
        assert_eq!(code, 400, "{text}");
        assert!(text.contains(r#"strict decoding error: duplicate field \"data.a\""#), "{text}");

        let (code, warnings, text) = send(&c, req("POST", cms, "application/json", &body("warn"))).await?;
        assert_eq!(code, 201, "{text}");
        assert!(warnings.iter().any(|w| w.contains("duplicate field") && w.contains("data.a")), "{warnings:?}");
        assert!(text.contains(r#""a":"2""#), "the last value wins: {text}");

        let (code, warnings, _) = send(&c, req("POST", &format!("{cms}?fieldValidation=Ignore"), "application/json", &body("ignore"))).await?;
        assert_eq!(code, 201);
        assert!(warnings.is_empty(), "{warnings:?}");

        // Patches are checked too.
        let (code, _, text) = send(&c, req("PATCH", &format!("{cms}/warn?fieldValidation=Strict"), "application/merge-patch+json", r#"{"data":{"b":"1","b":"2"}}"#)).await?;
        assert_eq!(code, 400, "{text}");

        // Unknown fields of a built-in kind.
        let (code, _, text) = send(&c, req("POST", &format!("{cms}?fieldValidation=Strict"), "application/json", r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"u"},"datta":{}}"#)).await?;
        assert_eq!(code, 400, "{text}");
        assert!(text.contains(r#"unknown field \"datta\""#), "{text}");
        anyhow::Ok(())
    })
    .await
}
