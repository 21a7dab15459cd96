//! The HTTP API directly (through kube-rs' raw requests): status codes and reasons for bad
//! input, list semantics (Exact at any retained resourceVersion, paging, 410 below the
//! horizon, 504 in the future), and the watch guarantees — ordered, unique, atomic,
//! reliable, resumable, bookmarkable.

#![allow(clippy::unwrap_used)] // a test that panics has failed; the message says where

use std::time::Duration;

use anyhow::Result;
use futures::{AsyncBufReadExt, StreamExt};
use logbook_e2e::{Server, get_json, within};
use serde_json::{Value, json};

use logbook_e2e::raw_request as req;

/// The status code and reason of a request expected to fail.
async fn fails(client: &kube::Client, r: http::Request<Vec<u8>>) -> (u16, String) {
    match client.request_text(r).await {
        Err(kube::Error::Api(s)) => (s.code, s.reason.clone()),
        Err(e) => panic!("expected a Status error, got {e}"),
        Ok(t) => panic!("expected a failure, got {t}"),
    }
}

async fn create_cm(client: &kube::Client, name: &str, labels: Value) -> Result<Value> {
    let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels}, "data": {"a": "b"}});
    let t = client
        .request_text(req(
            "POST",
            "/api/v1/namespaces/default/configmaps",
            Some("application/json"),
            serde_json::to_vec(&body)?,
        ))
        .await?;
    Ok(serde_json::from_str(&t)?)
}

/// The names of a list's items, in order.
fn item_names(list: &Value) -> Vec<&str> {
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap_or_default())
        .collect()
}

fn lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_statuses_with_kubernetes_codes_and_reasons() -> Result<()> {
    let s = Server::start_api_only()?;
    // kube-rs retries 5xx answers that carry Retry-After (as client-go does); these checks
    // want to see them.
    let c = s.client_without_retries().await?;
    let cms = "/api/v1/namespaces/default/configmaps";
    create_cm(&c, "exists", json!({})).await?;

    let cases: Vec<(&str, http::Request<Vec<u8>>, u16, &str)> = vec![
        (
            "malformed JSON",
            req("POST", cms, Some("application/json"), b"{not json".to_vec()),
            400,
            "BadRequest",
        ),
        (
            "a wrong type for a field",
            req(
                "POST",
                cms,
                Some("application/json"),
                br#"{"metadata":{"name":"x"},"data":"nope"}"#.to_vec(),
            ),
            400,
            "BadRequest",
        ),
        (
            "an unknown object",
            req("GET", &format!("{cms}/missing"), None, vec![]),
            404,
            "NotFound",
        ),
        (
            "an unknown resource",
            req("GET", "/api/v1/namespaces/default/widgets", None, vec![]),
            404,
            "NotFound",
        ),
        (
            "POST to a named object",
            req(
                "POST",
                &format!("{cms}/exists"),
                Some("application/json"),
                b"{}".to_vec(),
            ),
            405,
            "MethodNotAllowed",
        ),
        (
            "a duplicate create",
            req(
                "POST",
                cms,
                Some("application/json"),
                br#"{"metadata":{"name":"exists"}}"#.to_vec(),
            ),
            409,
            "AlreadyExists",
        ),
        (
            "a stale resourceVersion",
            req(
                "PUT",
                &format!("{cms}/exists"),
                Some("application/json"),
                br#"{"metadata":{"name":"exists","resourceVersion":"1"}}"#.to_vec(),
            ),
            409,
            "Conflict",
        ),
        (
            "a body above 3 MiB",
            req(
                "POST",
                cms,
                Some("application/json"),
                vec![b' '; 3 * 1024 * 1024 + 10],
            ),
            413,
            "RequestEntityTooLarge",
        ),
        (
            "an unknown content type",
            req("POST", cms, Some("text/plain"), b"{}".to_vec()),
            415,
            "UnsupportedMediaType",
        ),
        (
            "an unknown patch type",
            req(
                "PATCH",
                &format!("{cms}/exists"),
                Some("application/xml"),
                b"{}".to_vec(),
            ),
            415,
            "UnsupportedMediaType",
        ),
        (
            "an invalid name",
            req(
                "POST",
                cms,
                Some("application/json"),
                br#"{"metadata":{"name":"Not_Valid"}}"#.to_vec(),
            ),
            422,
            "Invalid",
        ),
        (
            "a missing name",
            req(
                "POST",
                cms,
                Some("application/json"),
                br#"{"metadata":{}}"#.to_vec(),
            ),
            422,
            "Invalid",
        ),
        (
            "resourceVersionMatch without resourceVersion",
            req(
                "GET",
                &format!("{cms}?resourceVersionMatch=Exact"),
                None,
                vec![],
            ),
            422,
            "Invalid",
        ),
        (
            "Exact at resourceVersion 0",
            req(
                "GET",
                &format!("{cms}?resourceVersionMatch=Exact&resourceVersion=0"),
                None,
                vec![],
            ),
            422,
            "Invalid",
        ),
        (
            "sendInitialEvents on a list",
            req(
                "GET",
                &format!("{cms}?sendInitialEvents=true"),
                None,
                vec![],
            ),
            422,
            "Invalid",
        ),
        (
            "resourceVersionMatch on a plain watch",
            req(
                "GET",
                &format!("{cms}?watch=true&resourceVersionMatch=NotOlderThan&resourceVersion=1"),
                None,
                vec![],
            ),
            422,
            "Invalid",
        ),
        (
            "a bad label selector",
            req(
                "GET",
                &format!("{cms}?labelSelector=a%20in%20(b"),
                None,
                vec![],
            ),
            400,
            "BadRequest",
        ),
        (
            "an unsupported field selector",
            req(
                "GET",
                &format!("{cms}?fieldSelector=spec.x%3Dy"),
                None,
                vec![],
            ),
            400,
            "BadRequest",
        ),
        (
            "a bad dryRun value",
            req(
                "POST",
                &format!("{cms}?dryRun=Some"),
                Some("application/json"),
                br#"{"metadata":{"name":"dr"}}"#.to_vec(),
            ),
            422,
            "Invalid",
        ),
        (
            "a bad propagationPolicy",
            req(
                "DELETE",
                &format!("{cms}/exists"),
                Some("application/json"),
                br#"{"propagationPolicy":"Sideways"}"#.to_vec(),
            ),
            422,
            "Invalid",
        ),
        (
            "a namespace in the body that differs from the path",
            req(
                "POST",
                cms,
                Some("application/json"),
                br#"{"metadata":{"name":"n","namespace":"other"}}"#.to_vec(),
            ),
            400,
            "BadRequest",
        ),
        (
            "a create in a missing namespace",
            req(
                "POST",
                "/api/v1/namespaces/nowhere/configmaps",
                Some("application/json"),
                br#"{"metadata":{"name":"n"}}"#.to_vec(),
            ),
            404,
            "NotFound",
        ),
        (
            "a resourceVersion far in the future",
            req(
                "GET",
                &format!("{cms}?resourceVersion=999999999999999"),
                None,
                vec![],
            ),
            504,
            "Timeout",
        ),
    ];
    for (what, r, code, reason) in cases {
        let started = std::time::Instant::now();
        let (got_code, got_reason) = fails(&c, r).await;
        eprintln!("{what}: {got_code} in {:?}", started.elapsed());
        assert_eq!((got_code, got_reason.as_str()), (code, reason), "{what}");
    }

    // 406: a client that accepts only protobuf.
    let r = http::Request::get(cms)
        .header("accept", "application/vnd.kubernetes.protobuf")
        .body(Vec::new())?;
    assert_eq!(fails(&c, r).await.0, 406);

    // dryRun=All runs the whole create but stores nothing.
    let t = c
        .request_text(req(
            "POST",
            &format!("{cms}?dryRun=All"),
            Some("application/json"),
            br#"{"metadata":{"name":"dry"}}"#.to_vec(),
        ))
        .await?;
    assert!(t.contains("\"dry\""));
    assert_eq!(
        fails(&c, req("GET", &format!("{cms}/dry"), None, vec![]))
            .await
            .0,
        404
    );

    // Nothing malformed reached the log: only the one object exists.
    let list = get_json(&c, cms).await?;
    let names = item_names(&list);
    assert_eq!(names, vec!["exists"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_are_exact_at_any_retained_resource_version_and_410_below_the_horizon() -> Result<()>
{
    let mut s = Server::start_api_only()?;
    let c = s.client().await?;
    let cms = "/api/v1/namespaces/default/configmaps";
    let empty = get_json(&c, cms).await?;
    assert_eq!(empty["items"], json!([]), "items is [] and never null");
    let mut rvs = Vec::new();
    for i in 0..5 {
        let o = create_cm(&c, &format!("c{i}"), json!({})).await?;
        rvs.push(
            o["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
    }
    for (i, rv) in rvs.iter().enumerate() {
        let l = get_json(
            &c,
            &format!("{cms}?resourceVersion={rv}&resourceVersionMatch=Exact"),
        )
        .await?;
        assert_eq!(
            l["items"].as_array().map(Vec::len),
            Some(i + 1),
            "exact list at {rv}"
        );
        assert_eq!(l["metadata"]["resourceVersion"], json!(rv));
    }
    // A restart loses nothing of that: Exact still answers at the old positions.
    s.restart()?;
    let c = s.client().await?;
    let l = get_json(
        &c,
        &format!(
            "{cms}?resourceVersion={}&resourceVersionMatch=Exact",
            rvs[1]
        ),
    )
    .await?;
    assert_eq!(l["items"].as_array().map(Vec::len), Some(2));

    // Compact everything below the newest write (offline), restart: old positions are gone.
    s.kill9()?;
    let out = s.run_tool(&["compact", "--to", &rvs[4]])?;
    assert!(
        out.status.success(),
        "compact: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    s.restart()?;
    let c = s.client().await?;
    let (code, reason) = fails(
        &c,
        req(
            "GET",
            &format!(
                "{cms}?resourceVersion={}&resourceVersionMatch=Exact",
                rvs[1]
            ),
            None,
            vec![],
        ),
    )
    .await;
    assert_eq!((code, reason.as_str()), (410, "Expired"));
    // A watch from below the horizon: HTTP 200, then one ERROR event carrying 410 Expired.
    let text = within(
        20,
        "the expired watch to close",
        c.request_text(req(
            "GET",
            &format!("{cms}?watch=true&resourceVersion={}", rvs[0]),
            None,
            vec![],
        )),
    )
    .await?;
    let evs = lines(&text);
    assert_eq!(evs.len(), 1, "{text}");
    assert_eq!(evs[0]["type"], "ERROR");
    assert_eq!(evs[0]["object"]["code"], 410);
    assert_eq!(evs[0]["object"]["reason"], "Expired");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_keeps_one_snapshot_and_reports_remaining_items() -> Result<()> {
    let s = Server::start_api_only()?;
    let c = s.client().await?;
    let cms = "/api/v1/namespaces/default/configmaps";
    for i in 0..10 {
        create_cm(&c, &format!("p{i}"), json!({})).await?;
    }
    let first = get_json(&c, &format!("{cms}?limit=4")).await?;
    assert_eq!(first["metadata"]["remainingItemCount"], 6);
    let rv = first["metadata"]["resourceVersion"].clone();
    create_cm(&c, "p-late", json!({})).await?;
    c.request_text(req("DELETE", &format!("{cms}/p9"), None, vec![]))
        .await?;
    let mut names: Vec<String> = Vec::new();
    let mut page = first;
    loop {
        assert_eq!(
            page["metadata"]["resourceVersion"], rv,
            "every page reads the same position"
        );
        names.extend(page["items"].as_array().expect("items").iter().map(|i| {
            i["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        }));
        let Some(token) = page["metadata"]["continue"]
            .as_str()
            .filter(|t| !t.is_empty())
        else {
            break;
        };
        page = get_json(&c, &format!("{cms}?limit=4&continue={token}")).await?;
    }
    assert_eq!(names, (0..10).map(|i| format!("p{i}")).collect::<Vec<_>>());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_are_ordered_unique_atomic_resumable_and_bookmarked() -> Result<()> {
    let s = Server::start_api_only()?;
    let c = s.client().await?;
    let cms = "/api/v1/namespaces/default/configmaps";
    let start = get_json(&c, cms).await?["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    // Concurrent writers.
    let mut tasks = Vec::new();
    for w in 0..8 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                create_cm(&c, &format!("w{w}-{i}"), json!({"w": w.to_string()}))
                    .await
                    .expect("create");
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let text = within(
        30,
        "the watch to end at its timeout",
        c.request_text(req(
            "GET",
            &format!("{cms}?watch=true&resourceVersion={start}&timeoutSeconds=2"),
            None,
            vec![],
        )),
    )
    .await?;
    let evs = lines(&text);
    assert_eq!(evs.len(), 200, "one event per write");
    let rvs: Vec<u64> = evs
        .iter()
        .map(|e| {
            e["object"]["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or("0")
                .parse()
                .unwrap_or(0)
        })
        .collect();
    assert!(rvs.windows(2).all(|w| w[0] < w[1]), "ordered and unique");
    assert!(
        evs.iter().all(|e| e["type"] == "ADDED"
            && e["object"]["kind"] == "ConfigMap"
            && e["object"]["data"]["a"] == "b"),
        "atomic: whole objects"
    );

    // Resumable: from the 100th event's RV, exactly the last 100.
    let mid = rvs[99];
    let text = c
        .request_text(req(
            "GET",
            &format!("{cms}?watch=true&resourceVersion={mid}&timeoutSeconds=1"),
            None,
            vec![],
        ))
        .await?;
    let again: Vec<u64> = lines(&text)
        .iter()
        .map(|e| {
            e["object"]["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or("0")
                .parse()
                .unwrap_or(0)
        })
        .collect();
    assert_eq!(again, rvs[100..].to_vec());

    // Selectors: an object leaving the selector is DELETED for that watcher, entering is ADDED.
    let here = rvs[199];
    c.request_text(req(
        "PATCH",
        &format!("{cms}/w0-0"),
        Some("application/merge-patch+json"),
        br#"{"metadata":{"labels":{"w":"moved"}}}"#.to_vec(),
    ))
    .await?;
    c.request_text(req(
        "PATCH",
        &format!("{cms}/w1-0"),
        Some("application/merge-patch+json"),
        br#"{"metadata":{"labels":{"w":"0"}}}"#.to_vec(),
    ))
    .await?;
    let text = c
        .request_text(req(
            "GET",
            &format!(
                "{cms}?watch=true&resourceVersion={here}&labelSelector=w%3D0&timeoutSeconds=1"
            ),
            None,
            vec![],
        ))
        .await?;
    let sel: Vec<(String, String)> = lines(&text)
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap_or_default().to_string(),
                e["object"]["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    assert_eq!(
        sel,
        vec![
            ("DELETED".into(), "w0-0".into()),
            ("ADDED".into(), "w1-0".into())
        ]
    );

    // Bookmarkable: an idle watch with allowWatchBookmarks gets a bookmark at the head.
    let text = c.request_text(req("GET", &format!("{cms}?watch=true&resourceVersion={here}&labelSelector=w%3Dnone&allowWatchBookmarks=true&timeoutSeconds=7"), None, vec![])).await?;
    let bm: Vec<Value> = lines(&text)
        .into_iter()
        .filter(|e| e["type"] == "BOOKMARK")
        .collect();
    assert!(!bm.is_empty(), "a bookmark within 7 s: {text}");
    let bm_rv: u64 = bm[0]["object"]["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("0")
        .parse()?;
    assert!(bm_rv >= here);
    assert_eq!(bm[0]["object"]["kind"], "ConfigMap");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_watcher_still_receives_every_event_in_order() -> Result<()> {
    let s = Server::start_api_only()?;
    let c = s.client().await?;
    let cms = "/api/v1/namespaces/default/configmaps";
    let start = get_json(&c, cms).await?["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let stream = c
        .request_stream(req(
            "GET",
            &format!("{cms}?watch=true&resourceVersion={start}&timeoutSeconds=120"),
            None,
            vec![],
        ))
        .await?;
    // Write far more than any buffer holds before reading a single line.
    let total = 3_000;
    let mut tasks = Vec::new();
    for w in 0..8 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = w;
            while i < total {
                create_cm(&c, &format!("slow-{i}"), json!({}))
                    .await
                    .expect("create");
                i += 8;
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let mut lines_stream = stream.lines();
    let mut rvs = Vec::new();
    within(120, "the slow watcher to receive every event", async {
        while rvs.len() < total {
            let Some(line) = lines_stream.next().await else {
                break;
            };
            let e: Value = serde_json::from_str(&line.expect("line"))?;
            assert_eq!(e["type"], "ADDED", "{e}");
            rvs.push(
                e["object"]["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or("0")
                    .parse::<u64>()?,
            );
        }
        anyhow::Ok(())
    })
    .await?;
    assert_eq!(rvs.len(), total);
    assert!(rvs.windows(2).all(|w| w[0] < w[1]));
    tokio::time::sleep(Duration::from_millis(1)).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_documents_describe_every_registered_group() -> Result<()> {
    let s = Server::start_api_only()?;
    let c = s.client().await?;
    let core = get_json(&c, "/api/v1").await?;
    let pods = core["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .find(|r| r["name"] == "pods")
        .expect("pods")
        .clone();
    assert_eq!(pods["singularName"], "pod");
    assert_eq!(pods["namespaced"], true);
    assert_eq!(pods["shortNames"], json!(["po"]));
    assert!(
        pods["categories"]
            .as_array()
            .is_some_and(|c| c.contains(&json!("all")))
    );
    assert!(
        core["resources"]
            .as_array()
            .expect("resources")
            .iter()
            .any(|r| r["name"] == "pods/status")
    );
    let groups = get_json(&c, "/apis").await?;
    let names: Vec<&str> = groups["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .map(|g| g["name"].as_str().unwrap_or_default())
        .collect();
    for g in [
        "apps",
        "batch",
        "coordination.k8s.io",
        "discovery.k8s.io",
        "events.k8s.io",
        "networking.k8s.io",
        "policy",
        "rbac.authorization.k8s.io",
        "scheduling.k8s.io",
        "storage.k8s.io",
        "autoscaling",
        "certificates.k8s.io",
        "node.k8s.io",
    ] {
        assert!(names.contains(&g), "{g} in /apis: {names:?}");
    }
    let apps = get_json(&c, "/apis/apps/v1").await?;
    assert!(
        apps["resources"]
            .as_array()
            .expect("resources")
            .iter()
            .any(|r| r["name"] == "deployments/scale" && r["kind"] == "Scale")
    );

    // Aggregated discovery echoes the requested g/v/as in Content-Type.
    let r = http::Request::get("/apis")
        .header(
            "accept",
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json",
        )
        .body(Vec::new())?;
    let text = c.request_text(r).await?;
    let agg: Value = serde_json::from_str(&text)?;
    assert_eq!(agg["kind"], "APIGroupDiscoveryList");
    assert_eq!(agg["apiVersion"], "apidiscovery.k8s.io/v2");
    let apps = agg["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|g| g["metadata"]["name"] == "apps")
        .expect("apps");
    let deploy = apps["versions"][0]["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .find(|r| r["resource"] == "deployments")
        .expect("deployments");
    assert_eq!(deploy["scope"], "Namespaced");
    assert!(
        deploy["subresources"]
            .as_array()
            .is_some_and(|s| s.iter().any(|x| x["subresource"] == "scale"))
    );

    // kubectl reads the same documents.
    let out = s.kubectl(&["api-resources", "--api-group=apps", "-o", "name"])?;
    assert!(out.lines().any(|l| l == "deployments.apps"), "{out}");
    let v = get_json(&c, "/version").await?;
    assert_eq!(v["major"], "1");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_scale_subresources_own_their_halves_of_an_object() -> Result<()> {
    let s = Server::start_api_only()?;
    let c = s.client().await?;
    let rs = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "r"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}},
        "status": {"replicas": 99}});
    let created: Value = serde_json::from_str(
        &c.request_text(req(
            "POST",
            "/apis/apps/v1/namespaces/default/replicasets",
            Some("application/json"),
            serde_json::to_vec(&rs)?,
        ))
        .await?,
    )?;
    assert_eq!(created["metadata"]["generation"], 1);
    assert!(
        created["status"].get("replicas").is_none(),
        "status is not set through the main endpoint: {created}"
    );
    // /status changes status only (a spec change there is ignored), and no generation bump.
    let patched: Value = serde_json::from_str(
        &c.request_text(req(
            "PATCH",
            "/apis/apps/v1/namespaces/default/replicasets/r/status",
            Some("application/merge-patch+json"),
            br#"{"spec":{"replicas":5},"status":{"replicas":1}}"#.to_vec(),
        ))
        .await?,
    )?;
    assert_eq!(
        (
            patched["spec"]["replicas"].clone(),
            patched["status"]["replicas"].clone(),
            patched["metadata"]["generation"].clone()
        ),
        (json!(1), json!(1), json!(1))
    );
    // /scale reads and writes spec.replicas through an autoscaling/v1 Scale.
    let scale = get_json(&c, "/apis/apps/v1/namespaces/default/replicasets/r/scale").await?;
    assert_eq!(
        (
            scale["kind"].clone(),
            scale["spec"]["replicas"].clone(),
            scale["status"]["replicas"].clone(),
            scale["status"]["selector"].clone()
        ),
        (json!("Scale"), json!(1), json!(1), json!("a=b"))
    );
    let scaled: Value = serde_json::from_str(
        &c.request_text(req(
            "PATCH",
            "/apis/apps/v1/namespaces/default/replicasets/r/scale",
            Some("application/merge-patch+json"),
            br#"{"spec":{"replicas":4}}"#.to_vec(),
        ))
        .await?,
    )?;
    assert_eq!(scaled["spec"]["replicas"], 4);
    let now = get_json(&c, "/apis/apps/v1/namespaces/default/replicasets/r").await?;
    assert_eq!(
        (
            now["spec"]["replicas"].clone(),
            now["metadata"]["generation"].clone()
        ),
        (json!(4), json!(2))
    );
    // A no-op update writes nothing: same resourceVersion.
    let same: Value = serde_json::from_str(
        &c.request_text(req(
            "PUT",
            "/apis/apps/v1/namespaces/default/replicasets/r",
            Some("application/json"),
            serde_json::to_vec(&now)?,
        ))
        .await?,
    )?;
    assert_eq!(
        same["metadata"]["resourceVersion"],
        now["metadata"]["resourceVersion"]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletecollection_removes_what_the_selector_matches() -> Result<()> {
    let s = Server::start_api_only()?;
    let c = s.client().await?;
    let cms = "/api/v1/namespaces/default/configmaps";
    for i in 0..4 {
        create_cm(
            &c,
            &format!("d{i}"),
            json!({"del": if i < 3 { "yes" } else { "no" }}),
        )
        .await?;
    }
    let out: Value = serde_json::from_str(
        &c.request_text(req(
            "DELETE",
            &format!("{cms}?labelSelector=del%3Dyes"),
            None,
            vec![],
        ))
        .await?,
    )?;
    assert_eq!(out["kind"], "ConfigMapList");
    assert_eq!(out["items"].as_array().map(Vec::len), Some(3));
    let left = get_json(&c, cms).await?;
    let names = item_names(&left);
    assert_eq!(names, vec!["d3"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_metrics_and_a_clean_exit_on_sigterm() -> Result<()> {
    let mut s = Server::start_api_only()?;
    let c = s.client().await?;
    for p in ["/healthz", "/livez", "/readyz"] {
        assert_eq!(
            c.request_text(req("GET", p, None, vec![])).await?,
            "ok",
            "{p}"
        );
    }
    create_cm(&c, "m", json!({})).await?;
    // An open watch must not hold up shutdown.
    let _watch = c
        .request_stream(req(
            "GET",
            "/api/v1/namespaces/default/configmaps?watch=true",
            None,
            vec![],
        ))
        .await?;
    let metrics = c.request_text(req("GET", "/metrics", None, vec![])).await?;
    for needle in [
        "apiserver_request_total{verb=\"create\",resource=\"configmaps\",code=\"201\"} 1",
        "apiserver_request_duration_seconds_bucket{verb=\"create\",resource=\"configmaps\",code=\"201\",le=",
        "logbook_commit_duration_seconds_count",
        "logbook_watches 1",
        "logbook_log_position ",
    ] {
        assert!(
            metrics.contains(needle),
            "metrics lack {needle:?}:\n{metrics}"
        );
    }
    let clean = tokio::task::spawn_blocking(move || s.terminate()).await??;
    assert!(clean, "logbook exits 0 after SIGTERM");
    Ok(())
}
