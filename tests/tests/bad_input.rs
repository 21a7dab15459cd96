//! Abusive and malformed input (issue 9's bad-input suite): every case is answered with a
//! 4xx Kubernetes Status, nothing is written (the log's head does not move), and the server
//! keeps serving.

use anyhow::{Context, Result};
use logbook_e2e::{Server, within};
use serde_json::Value;

use logbook_e2e::raw_request as req;

/// The log's head, read through a consistent list (its resourceVersion).
async fn head(c: &kube::Client) -> Result<u64> {
    let text = c
        .request_text(req(
            "GET",
            "/api/v1/namespaces/default/configmaps",
            None,
            vec![],
        ))
        .await?;
    let v: Value = serde_json::from_str(&text)?;
    v["metadata"]["resourceVersion"]
        .as_str()
        .context("list resourceVersion")?
        .parse()
        .context("numeric resourceVersion")
}

fn nested(depth: usize, open: &str, close: &str, leaf: &str) -> String {
    let mut s = String::with_capacity(depth * (open.len() + close.len()) + leaf.len());
    for _ in 0..depth {
        s.push_str(open);
    }
    s.push_str(leaf);
    for _ in 0..depth {
        s.push_str(close);
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_gets_a_4xx_status_and_writes_nothing() -> Result<()> {
    within(120, "the bad-input cases did not finish", async {
        let s = Server::start_api_only()?;
        let c = s.client_without_retries().await?;
        let cms = "/api/v1/namespaces/default/configmaps";
        let deploys = "/apis/apps/v1/namespaces/default/deployments";
        let json = Some("application/json");
        let yaml = Some("application/yaml");

        let mut oversized = br#"{"metadata":{"name":"big"},"data":{"k":""#.to_vec();
        oversized.resize(4 * 1024 * 1024, b'a');
        oversized.extend_from_slice(br#""}}"#);
        let deep_json = format!(
            r#"{{"metadata":{{"name":"deep"}},"data":{{"k":{}}}}}"#,
            nested(100_000, "[", "]", "1")
        );
        let deep_yaml = format!(
            "metadata:\n  name: deepy\ndata:\n  k: {}\n",
            nested(100_000, "[", "]", "1")
        );
        let mut bomb = String::from("a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n");
        for (i, prev) in ["a", "b", "c", "d", "e", "f", "g", "h"].iter().enumerate() {
            let name = (b'b' + u8::try_from(i).unwrap_or(0)) as char;
            bomb.push_str(&format!(
                "{name}: &{name} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"
            ));
        }
        bomb.push_str("metadata:\n  name: bomb\n");
        let mut bad_utf8 = br#"{"metadata":{"name":"utf"},"data":{"k":""#.to_vec();
        bad_utf8.extend_from_slice(&[0xff, 0xfe, 0xc3, 0x28]);
        bad_utf8.extend_from_slice(br#""}}"#);
        let long_name = "a".repeat(254);
        let cm = |name: &str| format!(r#"{{"metadata":{{"name":{}}}}}"#, serde_json::to_string(name).unwrap_or_default()).into_bytes();

        let cases: Vec<(&str, http::Request<Vec<u8>>)> = vec![
            ("a 4 MiB body", req("POST", cms, json, oversized)),
            ("JSON nested 100,000 levels", req("POST", cms, json, deep_json.into_bytes())),
            ("YAML nested 100,000 levels", req("POST", cms, yaml, deep_yaml.into_bytes())),
            ("a YAML alias bomb", req("POST", cms, yaml, bomb.into_bytes())),
            ("invalid UTF-8 in a JSON string", req("POST", cms, json, bad_utf8)),
            (
                "duplicate keys under fieldValidation=Strict",
                req(
                    "POST",
                    &format!("{cms}?fieldValidation=Strict"),
                    json,
                    br#"{"metadata":{"name":"dup","name":"dup2"}}"#.to_vec(),
                ),
            ),
            (
                "a number too large for any integer",
                req(
                    "POST",
                    deploys,
                    json,
                    br#"{"metadata":{"name":"huge"},"spec":{"replicas":1e400,"selector":{"matchLabels":{"a":"b"}},"template":{"metadata":{"labels":{"a":"b"}},"spec":{"containers":[{"name":"c","image":"i"}]}}}}"#.to_vec(),
                ),
            ),
            (
                "replicas beyond int32",
                req(
                    "POST",
                    deploys,
                    json,
                    br#"{"metadata":{"name":"huge2"},"spec":{"replicas":99999999999999999999,"selector":{"matchLabels":{"a":"b"}},"template":{"metadata":{"labels":{"a":"b"}},"spec":{"containers":[{"name":"c","image":"i"}]}}}}"#.to_vec(),
                ),
            ),
            ("the name ..", req("POST", cms, json, cm(".."))),
            ("the name .", req("POST", cms, json, cm("."))),
            ("the name a/b", req("POST", cms, json, cm("a/b"))),
            ("a 254-character name", req("POST", cms, json, cm(&long_name))),
            ("a NUL in a name", req("POST", cms, json, cm("a\u{0}b"))),
            (
                "a NUL in a label value",
                req(
                    "POST",
                    cms,
                    json,
                    br#"{"metadata":{"name":"nul-label","labels":{"a":"x\u0000y"}}}"#.to_vec(),
                ),
            ),
            ("%2e%2e as a name in the path", req("GET", &format!("{cms}/%2e%2e"), None, vec![])),
            ("%2e%2e as a name to delete", req("DELETE", &format!("{cms}/%2e%2e"), None, vec![])),
            (
                "a PUT of a name with a slash",
                req("PUT", &format!("{cms}/a%2Fb"), json, cm("a/b")),
            ),
        ];

        let before = head(&c).await?;
        for (what, r) in cases {
            match c.request_text(r).await {
                Err(kube::Error::Api(st)) => {
                    assert!(
                        (400..500).contains(&st.code),
                        "{what}: answered {} {} ({}), not a 4xx",
                        st.code,
                        st.reason,
                        st.message
                    );
                    assert!(!st.reason.is_empty(), "{what}: the Status has a reason");
                }
                Ok(body) => panic!("{what}: accepted: {}", body.chars().take(300).collect::<String>()),
                Err(e) => panic!("{what}: no Kubernetes Status came back: {e}"),
            }
            assert_eq!(head(&c).await?, before, "{what}: nothing was written");
        }
        // Still serving, and still writing.
        let ok = c
            .request_text(req("POST", cms, json, cm("after-the-abuse")))
            .await?;
        assert!(ok.contains("after-the-abuse"));
        Ok(())
    })
    .await
}
