//! Retention and tamper evidence against the real binary (issue 6, items 6 and 7): a short
//! Lease window removes old Lease revisions (a watch or an Exact list below the horizon gets
//! 410) but never the current Lease, nor a ConfigMap's history; `logbook audit verify`
//! passes on a cleanly stopped store and, after one byte of a stored object is flipped in
//! the data file, fails naming the damaged position and object.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use logbook_e2e::{Server, within};
use serde_json::{Value, json};

/// How long the retention test waits for the compactor to remove old Lease revisions.
const RETENTION_WAIT_SECONDS: u64 = 30;

use logbook_e2e::raw_request as req;

async fn send(
    c: &kube::Client,
    method: &str,
    path: &str,
    ct: Option<&str>,
    body: Value,
) -> Result<Value> {
    let body = if body.is_null() {
        Vec::new()
    } else {
        serde_json::to_vec(&body)?
    };
    let t = c.request_text(req(method, path, ct, body)).await?;
    Ok(serde_json::from_str(&t)?)
}

fn rv(o: &Value) -> String {
    o["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The HTTP code of a request expected to fail with a Status.
async fn status_code(c: &kube::Client, path: &str) -> Option<u16> {
    match c.request_text(req("GET", path, None, Vec::new())).await {
        Err(kube::Error::Api(s)) => Some(s.code),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_lease_window_removes_old_lease_revisions_but_never_the_lease_or_other_history()
-> Result<()> {
    let s = Server::start_with(&[
        "--no-controllers",
        "--no-scheduler",
        "--retention",
        "leases.coordination.k8s.io=2s",
        "--retention-interval",
        "1s",
        "--checkpoint-interval",
        "300ms",
    ])?;
    let c = s.client().await?;
    let leases = "/apis/coordination.k8s.io/v1/namespaces/default/leases";
    let cms = "/api/v1/namespaces/default/configmaps";
    let lease = send(
        &c,
        "POST",
        leases,
        Some("application/json"),
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "leader"}, "spec": {"holderIdentity": "h0"}}),
    )
    .await?;
    let first_lease_rv = rv(&lease);
    let cm = send(
        &c,
        "POST",
        cms,
        Some("application/json"),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kept"}, "data": {"a": "1"}}),
    )
    .await?;
    let cm_rv = rv(&cm);
    for i in 1..=20 {
        send(
            &c,
            "PATCH",
            &format!("{leases}/leader"),
            Some("application/merge-patch+json"),
            json!({"spec": {"holderIdentity": format!("h{i}")}}),
        )
        .await?;
    }
    let exact_old = format!("{leases}?resourceVersion={first_lease_rv}&resourceVersionMatch=Exact");
    // Before the window passes, the old Lease revision is still readable.
    let now = send(&c, "GET", &exact_old, None, Value::Null).await;
    assert!(
        now.is_ok(),
        "an Exact list inside the window answers: {now:?}"
    );

    let deadline = Instant::now() + Duration::from_secs(RETENTION_WAIT_SECONDS);
    loop {
        if status_code(&c, &exact_old).await == Some(410) {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "the Lease's old revisions were not compacted within {RETENTION_WAIT_SECONDS} s (Exact list at {first_lease_rv} still answers)"
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // A watch from the old resourceVersion: one ERROR event carrying 410 Expired.
    let text = within(
        20,
        "the expired Lease watch to close",
        c.request_text(req(
            "GET",
            &format!("{leases}?watch=true&resourceVersion={first_lease_rv}"),
            None,
            vec![],
        )),
    )
    .await?;
    let ev: Value = serde_json::from_str(text.lines().next().context("no watch event")?)?;
    assert_eq!(ev["type"], "ERROR", "{text}");
    assert_eq!(ev["object"]["code"], 410, "{text}");

    // The Lease itself is intact, at its newest revision.
    let now = send(&c, "GET", &format!("{leases}/leader"), None, Value::Null).await?;
    assert_eq!(now["spec"]["holderIdentity"], "h20");
    // The ConfigMap written at the same time keeps its history: its old RV still lists.
    let old_cms = send(
        &c,
        "GET",
        &format!("{cms}?resourceVersion={cm_rv}&resourceVersionMatch=Exact"),
        None,
        Value::Null,
    )
    .await?;
    let names: Vec<&str> = old_cms["items"]
        .as_array()
        .context("items")?
        .iter()
        .filter_map(|i| i["metadata"]["name"].as_str())
        .collect();
    assert_eq!(names, vec!["kept"]);
    // Progress is in /metrics. The horizon moves before a run removes anything (readers
    // never see half-compacted history), and removal only reaches what a checkpoint covers:
    // the count catches up within a run or two after the 410.
    let removed_metric =
        "logbook_compaction_removed_events_total{resource=\"coordination.k8s.io/leases\"} ";
    let deadline = Instant::now() + Duration::from_secs(RETENTION_WAIT_SECONDS);
    let metrics = loop {
        let metrics = c.request_text(req("GET", "/metrics", None, vec![])).await?;
        let removed: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(removed_metric))
            .unwrap_or("0")
            .parse()?;
        if removed >= 19 {
            break metrics;
        }
        if Instant::now() > deadline {
            bail!("{removed} lease events removed after {RETENTION_WAIT_SECONDS} s:\n{metrics}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(
        metrics.contains("logbook_compaction_runs_total "),
        "{metrics}"
    );
    assert!(
        metrics.contains("logbook_compaction_horizon{resource=\"coordination.k8s.io/leases\"}")
    );
    Ok(())
}

/// Flips one byte of every occurrence of `needle` in `file`; returns how many there were.
fn flip_everywhere(file: &std::path::Path, needle: &[u8]) -> Result<usize> {
    let mut bytes = std::fs::read(file)?;
    let mut found = 0;
    let mut i = 0;
    while i + needle.len() <= bytes.len() {
        if &bytes[i..i + needle.len()] == needle {
            bytes[i + needle.len() - 1] ^= 0x20; // a lower-case letter becomes upper case
            found += 1;
            i += needle.len();
        } else {
            i += 1;
        }
    }
    std::fs::write(file, bytes)?;
    Ok(found)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_passes_on_a_clean_store_and_names_the_object_whose_stored_byte_was_flipped()
-> Result<()> {
    let mut s = Server::start_with(&[
        "--no-controllers",
        "--no-scheduler",
        "--checkpoint-interval",
        "200ms",
    ])?;
    let c = s.client().await?;
    let cms = "/api/v1/namespaces/default/configmaps";
    let canary = "tamper-canary-q7x9z";
    for (name, label) in [("before", "plain"), ("canary", canary), ("after", "plain")] {
        send(
            &c,
            "POST",
            cms,
            Some("application/json"),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": {"audit": label}}, "data": {"a": "1"}}),
        )
        .await?;
    }
    send(
        &c,
        "PATCH",
        &format!("{cms}/after"),
        Some("application/merge-patch+json"),
        json!({"data": {"a": "2"}}),
    )
    .await?;
    // Let a checkpoint and the store's own durable checkpoint pass.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(s.terminate()?, "the server exits cleanly on SIGTERM");

    let out = s.run_tool(&["audit", "verify"])?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "audit verify of an untouched store: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("| events | objects | checkpoints |"),
        "{stdout}"
    );

    let data_file = s.data_dir.join("logbook.redb");
    let flipped = flip_everywhere(&data_file, canary.as_bytes())?;
    assert!(flipped >= 1, "the label value is in the data file");
    let out = s.run_tool(&["audit", "verify"])?;
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.status.success(),
        "audit verify passed a tampered store: {all}"
    );
    assert!(
        all.contains("log position ") && all.contains("object configmaps/default/canary"),
        "the failure names the damaged position and object: {all}"
    );
    Ok(())
}
