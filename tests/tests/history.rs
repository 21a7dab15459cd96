//! History for auditors, end to end: two users (two client certificates) make a scripted
//! series of changes; then the history API answers who changed what, the change feed folds
//! back into the exact state the server lists at every past position, `asOf` reads the
//! cluster at a moment, and Secret values are redacted for callers who may not read them.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use logbook_e2e::{Server, get_json, within};
use serde_json::{Value, json};

const TEST_TIMEOUT_SECS: u64 = 120;

async fn client_for(kubeconfig: &std::path::Path) -> Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    Ok(kube::Client::try_from(cfg)?)
}

/// A user in `group`, which may edit everything (the `edit` ClusterRole, bound cluster-wide).
fn add_user(server: &Server, name: &str, group: &str) -> Result<std::path::PathBuf> {
    let out = server.run_tool(&["user", "add", name, "--group", group])?;
    if !out.status.success() {
        bail!("user add: {}", String::from_utf8_lossy(&out.stderr));
    }
    let binding = format!("{group}-edit");
    if server
        .kubectl(&["get", "clusterrolebinding", &binding])
        .is_err()
    {
        server.kubectl(&[
            "create",
            "clusterrolebinding",
            &binding,
            "--clusterrole=edit",
            &format!("--group={group}"),
        ])?;
    }
    Ok(server
        .data_dir
        .join("users")
        .join(format!("{name}.kubeconfig")))
}

async fn send(c: &kube::Client, method: &str, path: &str, ct: &str, body: Value) -> Result<Value> {
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", ct)
        .header("user-agent", "history-test/1.0")
        .header("audit-id", format!("audit-{method}-{}", path.len()))
        .body(serde_json::to_vec(&body)?)?;
    let text = c
        .request_text(req)
        .await
        .with_context(|| format!("{method} {path}"))?;
    Ok(serde_json::from_str(&text)?)
}

/// Every item of a paged history list.
async fn all_pages(c: &kube::Client, path: &str, limit: usize) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    let mut cont = String::new();
    loop {
        let sep = if path.contains('?') { '&' } else { '?' };
        let v = get_json(c, &format!("{path}{sep}limit={limit}&continue={cont}")).await?;
        out.extend(v["items"].as_array().cloned().unwrap_or_default());
        match v.pointer("/metadata/continue").and_then(Value::as_str) {
            Some(c) if !c.is_empty() => cont = c.to_string(),
            _ => return Ok(out),
        }
    }
}

/// An object as compared across reads: without what every read or write changes.
fn comparable(mut v: Value) -> Value {
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("managedFields");
        m.remove("resourceVersion");
    }
    v
}

fn rv(v: &Value) -> u64 {
    v.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn the_history_api_answers_who_changed_what_and_folds_back_into_every_past_state() {
    within(TEST_TIMEOUT_SECS, "history scenario", async {
        let server = Server::start_api_only().expect("server");
        let alice = client_for(&add_user(&server, "alice", "dev").expect("alice")).await.expect("alice client");
        let bob = client_for(&add_user(&server, "bob", "ops").expect("bob")).await.expect("bob client");
        let admin = server.client().await.expect("admin client");
        let ns = "/apis/apps/v1/namespaces/default/deployments";
        let cms = "/api/v1/namespaces/default/configmaps";
        let merge = "application/merge-patch+json";
        let json_ct = "application/json";

        // The script: (who, what) in order, with the resourceVersion each write answered.
        let mut script: Vec<(&str, &str, u64)> = Vec::new();
        let deploy = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "nginx:1.25"}]}}}});
        let v = send(&alice, "POST", ns, json_ct, deploy).await.expect("create");
        script.push(("alice", "create", rv(&v)));
        let v = send(&bob, "PATCH", &format!("{ns}/web"), merge, json!({"spec": {"replicas": 3}})).await.expect("scale");
        script.push(("bob", "patch", rv(&v)));
        let v = send(&bob, "POST", cms, json_ct, json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}, "data": {"mode": "a"}})).await.expect("cm");
        script.push(("bob", "create", rv(&v)));
        tokio::time::sleep(Duration::from_millis(20)).await;
        let between = jiff::Timestamp::now();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let v = send(&alice, "PATCH", &format!("{ns}/web"), merge, json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}}})).await.expect("set image");
        script.push(("alice", "patch", rv(&v)));
        let mut cm = get_json(&alice, &format!("{cms}/settings")).await.expect("get cm");
        cm["data"]["mode"] = json!("b");
        let v = send(&alice, "PUT", &format!("{cms}/settings"), json_ct, cm).await.expect("update cm");
        script.push(("alice", "update", rv(&v)));
        let v = send(&bob, "PATCH", &format!("{ns}/web"), merge, json!({"metadata": {"labels": {"tier": "front"}}})).await.expect("label");
        script.push(("bob", "patch", rv(&v)));
        send(&bob, "DELETE", &format!("{cms}/settings"), json_ct, json!({})).await.expect("delete cm");
        script.push(("bob", "delete", 0));
        let v = send(&bob, "POST", "/api/v1/namespaces/default/secrets", json_ct, json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"}, "data": {"password": "aHVudGVyMg=="}})).await.expect("secret");
        script.push(("bob", "create", rv(&v)));

        // 1. The deployment's revisions, newest first, with who and which verb.
        let revs = all_pages(&admin, "/apis/history.logbook.dev/v1/namespaces/default/revisions?resource=deployments.apps&name=web", 2).await.expect("revisions");
        let got: Vec<(String, String)> = revs.iter().map(|r| (r["user"]["username"].as_str().unwrap_or("").to_string(), r["verb"].as_str().unwrap_or("").to_string())).collect();
        let want: Vec<(String, String)> = vec![("bob", "patch"), ("alice", "patch"), ("bob", "patch"), ("alice", "create")].into_iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
        assert_eq!(got, want, "revisions of deploy/web newest first");
        assert_eq!(revs[0]["user"]["groups"], json!(["ops", "system:authenticated"]));
        assert_eq!(revs[0]["userAgent"], json!("history-test/1.0"));
        assert_eq!(revs[0]["sourceIP"], json!("127.0.0.1"));
        // The client's Audit-ID is the request id recorded with the change.
        let label_path_len = format!("{ns}/web").len();
        assert_eq!(revs[0]["requestID"], json!(format!("audit-PATCH-{label_path_len}")));
        assert_eq!(revs[3]["type"], json!("ADDED"));
        assert!(revs[1]["patch"].as_array().expect("patch").iter().any(|op| op["path"] == json!("/spec/template/spec/containers/0/image") && op["value"] == json!("nginx:1.27")), "set image patch: {}", revs[1]["patch"]);
        // Each revision is the resourceVersion the write answered with.
        let deploy_writes: Vec<String> = [0usize, 1, 3, 5].iter().rev().map(|&i| script[i].2.to_string()).collect();
        let revisions: Vec<String> = revs.iter().map(|r| r["revision"].as_str().unwrap_or("").to_string()).collect();
        assert_eq!(revisions, deploy_writes);

        // 2. Bob's changes, exactly.
        let bobs = all_pages(&admin, "/apis/history.logbook.dev/v1/changes?user=bob&order=oldest", 3).await.expect("bob's feed");
        let bob_objects: Vec<(String, String)> = bobs.iter().map(|c| (c["verb"].as_str().unwrap_or("").to_string(), format!("{}/{}", c["object"]["resource"].as_str().unwrap_or(""), c["object"]["name"].as_str().unwrap_or("")))).collect();
        assert_eq!(bob_objects, vec![
            ("patch".to_string(), "deployments/web".to_string()),
            ("create".to_string(), "configmaps/settings".to_string()),
            ("patch".to_string(), "deployments/web".to_string()),
            ("delete".to_string(), "configmaps/settings".to_string()),
            ("create".to_string(), "secrets/creds".to_string()),
        ]);
        let deletes = all_pages(&admin, "/apis/history.logbook.dev/v1/namespaces/default/changes?verb=delete", 10).await.expect("deletes");
        assert_eq!(deletes.len(), 1);
        assert_eq!(deletes[0]["user"]["username"], json!("bob"));

        // 3. Fold the whole feed (oldest first) into a model and compare it with what the
        //    server lists as of every position in the feed.
        let feed = all_pages(&admin, "/apis/history.logbook.dev/v1/namespaces/default/changes?order=oldest&resource=deployments.apps", 3).await.expect("feed");
        let feed_cm = all_pages(&admin, "/apis/history.logbook.dev/v1/namespaces/default/changes?order=oldest&resource=configmaps", 3).await.expect("feed");
        for (items, path) in [(&feed, ns), (&feed_cm, cms)] {
            let mut model: BTreeMap<String, Value> = BTreeMap::new();
            for change in items.iter() {
                let name = change["object"]["name"].as_str().expect("name").to_string();
                if change["type"] == json!("DELETED") {
                    model.remove(&name);
                } else {
                    let mut obj = model.get(&name).cloned().unwrap_or(json!({}));
                    let patch: json_patch::Patch = serde_json::from_value(change["patch"].clone()).expect("patch parses");
                    json_patch::patch(&mut obj, &patch).expect("patch applies to the previous revision");
                    model.insert(name, obj);
                }
                let at = change["revision"].as_str().expect("revision");
                let listed = get_json(&admin, &format!("{path}?resourceVersion={at}&resourceVersionMatch=Exact")).await.expect("list as of");
                let listed: BTreeMap<String, Value> = listed["items"].as_array().expect("items").iter().map(|i| (i["metadata"]["name"].as_str().unwrap_or("").to_string(), comparable(i.clone()))).collect();
                let folded: BTreeMap<String, Value> = model.iter().map(|(k, v)| (k.clone(), comparable(v.clone()))).collect();
                assert_eq!(listed, folded, "{path} as of {at}");
            }
        }

        // 4. asOf a time between two changes: the deployment as it was then.
        let then = get_json(&admin, &format!("{ns}/web?asOf={between}")).await.expect("get as of");
        assert_eq!(then["spec"]["replicas"], json!(3));
        assert_eq!(then["spec"]["template"]["spec"]["containers"][0]["image"], json!("nginx:1.25"));
        let list_then = get_json(&admin, &format!("{cms}?asOf={between}")).await.expect("list as of a time");
        assert_eq!(list_then["items"][0]["data"]["mode"], json!("a"));
        let now = get_json(&admin, &format!("{ns}/web")).await.expect("get");
        assert_eq!(now["spec"]["template"]["spec"]["containers"][0]["image"], json!("nginx:1.27"));
        // The object exactly as of its first revision.
        let first = get_json(&admin, &format!("{ns}/web?resourceVersion={}&resourceVersionMatch=Exact", script[0].2)).await.expect("get exact");
        assert_eq!(first["spec"]["replicas"], json!(1));
        assert_eq!(rv(&first), script[0].2);

        // 5. The history obeys RBAC: a Secret's revisions (values included) show to those who
        // may read the Secret, and not at all to a viewer, who may not.
        let secret_path = "/apis/history.logbook.dev/v1/namespaces/default/revisions?resource=secrets&name=creds";
        let seen = get_json(&admin, secret_path).await.expect("secret history");
        assert_eq!(seen["items"][0]["patch"].as_array().expect("ops").iter().find(|op| op["path"] == json!("/data")).expect("data op")["value"], json!({"password": "aHVudGVyMg=="}));
        let out = server.run_tool(&["user", "add", "vera"]).expect("user add");
        assert!(out.status.success());
        server.kubectl(&["create", "rolebinding", "vera-view", "--clusterrole=view", "--user=vera"]).expect("binding");
        let vera = client_for(&server.data_dir.join("users").join("vera.kubeconfig")).await.expect("vera's client");
        let hidden = get_json(&vera, secret_path).await.expect("a viewer's secret history");
        assert_eq!(hidden["items"], json!([]), "{hidden}");
        let feed = get_json(&vera, "/apis/history.logbook.dev/v1/namespaces/default/changes").await.expect("a viewer's feed");
        assert!(!feed.to_string().contains("aHVudGVyMg=="), "the secret value leaked: {feed}");
        assert!(feed["items"].as_array().is_some_and(|i| !i.is_empty()), "the viewer sees the other changes: {feed}");
        let other_ns = std::process::Command::new("curl").args(["-sk", &format!("{}{secret_path}", server.url())]).output().expect("curl");
        assert!(String::from_utf8_lossy(&other_ns.stdout).contains("\"code\":401"), "anonymous: 401");

        // 6. Bad parameters are Kubernetes errors.
        for (bad, want) in [
            ("/apis/history.logbook.dev/v1/namespaces/default/revisions?resource=deployments.apps", 400),
            ("/apis/history.logbook.dev/v1/namespaces/default/revisions?resource=nothing&name=x", 400),
            ("/apis/history.logbook.dev/v1/changes?since=yesterday", 400),
            ("/apis/history.logbook.dev/v1/changes?order=sideways", 422),
            ("/apis/apps/v1/namespaces/default/deployments?asOf=noon", 400),
        ] {
            let err = get_json(&admin, bad).await.expect_err(bad);
            let code = err.chain().find_map(|e| match e.downcast_ref::<kube::Error>() { Some(kube::Error::Api(s)) => Some(s.code), _ => None });
            assert_eq!(code, Some(want), "{bad}: {err:#}");
        }
        // The group is in discovery.
        let group = get_json(&admin, "/apis/history.logbook.dev/v1").await.expect("discovery");
        let names: Vec<&str> = group["resources"].as_array().expect("resources").iter().filter_map(|r| r["name"].as_str()).collect();
        assert!(names.contains(&"revisions") && names.contains(&"changes"), "{names:?}");
    })
    .await;
}
