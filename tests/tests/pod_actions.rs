//! The pod subresources that are actions: binding (once per pod), eviction (within the
//! PodDisruptionBudget, 429 beyond it), and log/exec answering a clear Status until a node
//! agent serves them; all listed in discovery, as kubectl drain checks.

#![allow(clippy::unwrap_used)] // a test that panics has failed; the message says where

use anyhow::Result;
use logbook_e2e::{Server, call_json as call, within};
use serde_json::{Value, json};

fn req(method: &str, path: &str, body: &Value) -> http::Request<Vec<u8>> {
    logbook_e2e::json_request(method, path, "application/json", body)
}

async fn fails(c: &kube::Client, method: &str, path: &str, body: Value) -> (u16, String, String) {
    match c.request_text(req(method, path, &body)).await {
        Err(kube::Error::Api(s)) => (s.code, s.reason.clone(), s.message.clone()),
        other => panic!("{method} {path} should fail, got {other:?}"),
    }
}

fn pod(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": "db"}},
           "spec": {"containers": [{"name": "c", "image": "busybox"}]}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binding_eviction_and_node_streams_behave_as_kube_apiserver() -> Result<()> {
    within(120, "a pod action did not answer", async {
        // API only: this test plays the disruption controller itself (writes the budget's
        // status by hand), so the real one must not run.
        let s = Server::start_api_only()?;
        let c = s.client_without_retries().await?;
        let pods = "/api/v1/namespaces/default/pods";
        for n in ["p1", "p2", "p3"] {
            call(&c, "POST", pods, pod(n)).await?;
        }

        // Discovery lists the action subresources (kubectl drain looks for pods/eviction).
        let v1 = call(&c, "GET", "/api/v1", Value::Null).await?;
        let names: Vec<&str> = v1["resources"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r["name"].as_str())
            .collect();
        for sub in ["pods/binding", "pods/eviction", "pods/log", "pods/exec"] {
            assert!(names.contains(&sub), "{sub} missing from discovery: {names:?}");
        }
        let eviction = v1["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "pods/eviction")
            .unwrap();
        assert_eq!((eviction["group"].as_str(), eviction["kind"].as_str()), (Some("policy"), Some("Eviction")));

        // Binding: once.
        let binding = |node: &str| json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p1"}, "target": {"kind": "Node", "name": node}});
        let st = call(&c, "POST", &format!("{pods}/p1/binding"), binding("n1")).await?;
        assert_eq!(st["status"], "Success");
        let p1 = call(&c, "GET", &format!("{pods}/p1"), Value::Null).await?;
        assert_eq!(p1["spec"]["nodeName"], "n1");
        let scheduled = p1["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "PodScheduled" && c["status"] == "True");
        assert!(scheduled, "binding sets PodScheduled: {}", p1["status"]);
        let (code, reason, msg) = fails(&c, "POST", &format!("{pods}/p1/binding"), binding("n2")).await;
        assert_eq!((code, reason.as_str()), (409, "Conflict"), "{msg}");
        assert!(msg.contains("already assigned to node \"n1\""), "{msg}");
        let (code, _, _) = fails(&c, "GET", &format!("{pods}/p1/binding"), Value::Null).await;
        assert_eq!(code, 405, "binding is create-only");

        // Node streams: a clear Status until a node agent serves them.
        let (code, _, msg) = fails(&c, "GET", &format!("{pods}/p2/log"), Value::Null).await;
        assert_eq!(code, 400, "{msg}");
        assert!(msg.contains("does not have a host assigned"), "{msg}");
        let (code, reason, msg) = fails(&c, "GET", &format!("{pods}/p1/log"), Value::Null).await;
        assert_eq!((code, reason.as_str()), (503, "ServiceUnavailable"), "{msg}");
        let out = s.kubectl_output("kubectl", &["logs", "p1"])?;
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("node agent"), "{out:?}");

        // Eviction without a budget deletes the pod: gracefully, as it is bound to a node,
        // so it stays terminating until its node agent (here: nobody) ends it with grace 0.
        let ev = |name: &str| json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name}});
        let st = call(&c, "POST", &format!("{pods}/p1/eviction"), ev("p1")).await?;
        assert_eq!(st["status"], "Success");
        let p1 = call(&c, "GET", &format!("{pods}/p1"), Value::Null).await?;
        assert!(p1["metadata"]["deletionTimestamp"].is_string(), "{}", p1["metadata"]);
        assert_eq!(p1["metadata"]["deletionGracePeriodSeconds"], 30);
        let gone = http::Request::delete(format!("{pods}/p1?gracePeriodSeconds=0")).body(Vec::new())?;
        c.request_text(gone).await?;
        let (code, _, _) = fails(&c, "GET", &format!("{pods}/p1"), Value::Null).await;
        assert_eq!(code, 404, "grace 0 ends the evicted pod");

        // A budget whose status allows one disruption: one eviction, then 429.
        let pdbs = "/apis/policy/v1/namespaces/default/poddisruptionbudgets";
        call(&c, "POST", pdbs, json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": "db"}, "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "db"}}}})).await?;
        let (code, reason, msg) = fails(&c, "POST", &format!("{pods}/p2/eviction"), ev("p2")).await;
        assert_eq!((code, reason.as_str()), (429, "TooManyRequests"), "a budget nobody has observed allows nothing: {msg}");
        let patch = http::Request::builder()
            .method("PATCH")
            .uri(format!("{pdbs}/db/status"))
            .header("content-type", "application/merge-patch+json")
            .body(serde_json::to_vec(&json!({"status": {"observedGeneration": 1, "disruptionsAllowed": 1, "currentHealthy": 2, "desiredHealthy": 1, "expectedPods": 2}}))?)?;
        c.request_text(patch).await?;
        let st = call(&c, "POST", &format!("{pods}/p2/eviction"), ev("p2")).await?;
        assert_eq!(st["status"], "Success");
        let pdb = call(&c, "GET", &format!("{pdbs}/db"), Value::Null).await?;
        assert_eq!(pdb["status"]["disruptionsAllowed"], 0, "the eviction took the disruption");
        assert!(pdb["status"]["disruptedPods"]["p2"].is_string(), "{}", pdb["status"]);
        let (code, reason, msg) = fails(&c, "POST", &format!("{pods}/p3/eviction"), ev("p3")).await;
        assert_eq!((code, reason.as_str()), (429, "TooManyRequests"), "{msg}");
        assert!(msg.contains("disruption budget"), "{msg}");
        call(&c, "GET", &format!("{pods}/p3"), Value::Null).await?;
        anyhow::Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_drain_cordons_the_node_and_evicts_its_pods() -> Result<()> {
    within(120, "kubectl drain did not finish", async {
        // A simulated node ends the evicted pods' graceful deletion, as kubelet does; no
        // scheduler, so the pod meant for elsewhere stays unscheduled.
        let s = Server::start_with(&["--simulate-nodes", "1", "--no-scheduler", "--node-name-prefix", "n"])?;
        let c = s.client_without_retries().await?;
        let n1 = "n-0000";
        loop {
            if call(&c, "GET", &format!("/api/v1/nodes/{n1}"), Value::Null).await.is_ok() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        let pods = "/api/v1/namespaces/default/pods";
        for n in ["a", "b"] {
            call(&c, "POST", pods, pod(n)).await?;
            let b = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": n}, "target": {"kind": "Node", "name": n1}});
            call(&c, "POST", &format!("{pods}/{n}/binding"), b).await?;
        }
        call(&c, "POST", pods, pod("elsewhere")).await?;
        let out = s.kubectl(&["drain", n1, "--force", "--ignore-daemonsets", "--timeout=30s"])?;
        assert!(out.contains("evicted") && out.contains("drained"), "{out}");
        let node = call(&c, "GET", &format!("/api/v1/nodes/{n1}"), Value::Null).await?;
        assert_eq!(node["spec"]["unschedulable"], true, "drain cordons the node");
        let list = call(&c, "GET", pods, Value::Null).await?;
        let left: Vec<&str> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["metadata"]["name"].as_str())
            .collect();
        assert_eq!(left, ["elsewhere"], "only the pod on another node is left");
        anyhow::Ok(())
    })
    .await
}
