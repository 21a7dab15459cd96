//! Node lifecycle, drain and leader election as operators meet them, with real kubectl
//! against the real binary and simulated nodes: a node whose heartbeat stops goes Unknown,
//! is tainted, loses its pods to healthy nodes and recovers; `kubectl drain` waits for a
//! PodDisruptionBudget; two `logbook controllers` processes never reconcile at once and the
//! standby takes over when the leader is killed.

#![allow(clippy::unwrap_used)] // a test that panics has failed; the message says where

use std::time::Duration;

use anyhow::Result;
use logbook_e2e::{Server, eventually, within};
use serde_json::Value;

fn json(s: &Server, args: &[&str]) -> Result<Value> {
    s.kubectl_json(args)
}

/// Running, not deleting pods with `selector`: (name, node).
fn running(s: &Server, selector: &str) -> Result<Vec<(String, String)>> {
    let v = json(s, &["get", "pods", "-l", selector])?;
    Ok(v["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|p| {
            p["status"]["phase"] == "Running" && p["metadata"]["deletionTimestamp"].is_null()
        })
        .map(|p| {
            (
                p["metadata"]["name"].as_str().unwrap_or("").to_string(),
                p["spec"]["nodeName"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect())
}

fn ready_status(node: &Value) -> String {
    node["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .and_then(|c| c["status"].as_str())
        .unwrap_or("")
        .to_string()
}

fn taint_keys(node: &Value) -> Vec<String> {
    node["spec"]["taints"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            format!(
                "{}:{}",
                t["key"].as_str().unwrap_or(""),
                t["effect"].as_str().unwrap_or("")
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_node_goes_unknown_is_tainted_loses_its_pods_to_healthy_nodes_and_recovers()
-> Result<()> {
    within(240, "the node lifecycle did not complete", async {
        let s = Server::start_with(&["--simulate-nodes", "2", "--node-monitor-grace-period", "15s"])?;
        let node_args = ["node", "--simulate", "1", "--node-name-prefix", "doomed"];
        let mut doomed = s.component(&node_args, "running")?;
        let doomed_name = within(30, "the doomed node registered", async {
            loop {
                let v = json(&s, &["get", "nodes"]).unwrap_or_default();
                if let Some(n) = v["items"].as_array().into_iter().flatten().find(|n| {
                    n["metadata"]["name"].as_str().is_some_and(|x| x.starts_with("doomed"))
                        && ready_status(n) == "True"
                }) {
                    return n["metadata"]["name"].as_str().unwrap_or("").to_string();
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
        .await;
        // Pods that tolerate an unreachable node for 2 s (the default is 300 s).
        s.kubectl(&["create", "deployment", "web", "--image=nginx:1", "--replicas=6"])?;
        s.kubectl(&[
            "patch", "deployment/web", "-p",
            r#"{"spec":{"template":{"spec":{"tolerations":[{"key":"node.kubernetes.io/unreachable","operator":"Exists","effect":"NoExecute","tolerationSeconds":2}]}}}}"#,
        ])?;
        s.kubectl(&["rollout", "status", "deployment/web", "--timeout=90s"])?;
        let before = running(&s, "app=web")?;
        assert_eq!(before.len(), 6);
        let on_doomed: Vec<_> = before.iter().filter(|(_, n)| *n == doomed_name).collect();
        assert!(!on_doomed.is_empty(), "spreading put no pod on {doomed_name}: {before:?}");
        // A pod that tolerates the taint forever stays (as DaemonSet pods do).
        s.kubectl(&["run", "stayer", "--image=nginx:1", "--overrides", &serde_json::json!({
            "spec": {"nodeName": doomed_name, "tolerations": [{"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"}]}
        }).to_string()])?;
        eventually(30, "the stayer runs", || {
            Ok(json(&s, &["get", "pod", "stayer"])?["status"]["phase"] == "Running")
        })
        .await;

        doomed.kill9()?;
        eventually(40, "the silent node went Unknown with the unreachable taints", || {
            let n = json(&s, &["get", "node", &doomed_name])?;
            let t = taint_keys(&n);
            Ok(ready_status(&n) == "Unknown"
                && t.contains(&"node.kubernetes.io/unreachable:NoExecute".to_string())
                && t.contains(&"node.kubernetes.io/unreachable:NoSchedule".to_string()))
        })
        .await;
        eventually(60, "six web pods run on the healthy nodes", || {
            let r = running(&s, "app=web")?;
            Ok(r.len() == 6 && r.iter().all(|(_, n)| *n != doomed_name))
        })
        .await;
        let stayer = json(&s, &["get", "pod", "stayer"])?;
        assert!(stayer["metadata"]["deletionTimestamp"].is_null(), "a pod tolerating the taint forever was evicted");
        let healthy = json(&s, &["get", "nodes", "-l", "type=logbook-simulated"])?;
        for n in healthy["items"].as_array().into_iter().flatten() {
            if n["metadata"]["name"] != doomed_name.as_str() {
                assert_eq!(ready_status(n), "True", "a healthy node was marked {n}");
                assert!(taint_keys(n).is_empty(), "a healthy node was tainted: {n}");
            }
        }

        // The node comes back: Ready again and untainted.
        let _back = s.component(&node_args, "running")?;
        eventually(40, "the recovered node is Ready and untainted", || {
            let n = json(&s, &["get", "node", &doomed_name])?;
            Ok(ready_status(&n) == "True" && taint_keys(&n).is_empty())
        })
        .await;
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_drain_waits_for_a_disruption_budget_until_another_replica_is_ready() -> Result<()>
{
    within(240, "the drain did not complete", async {
        let s = Server::start_with(&["--simulate-nodes", "3"])?;
        s.kubectl(&[
            "create",
            "deployment",
            "db",
            "--image=nginx:1",
            "--replicas=2",
        ])?;
        s.kubectl(&[
            "create",
            "poddisruptionbudget",
            "db",
            "--selector=app=db",
            "--min-available=2",
        ])?;
        s.kubectl(&["rollout", "status", "deployment/db", "--timeout=90s"])?;
        eventually(
            30,
            "the budget counts two healthy pods and allows nothing",
            || {
                let b = json(&s, &["get", "pdb", "db"])?;
                Ok(b["status"]["currentHealthy"] == 2
                    && b["status"]["desiredHealthy"] == 2
                    && b["status"]["disruptionsAllowed"] == 0
                    && b["status"]["expectedPods"] == 2)
            },
        )
        .await;
        let pods = running(&s, "app=db")?;
        let (victim, node) = pods[0].clone();
        // Blocked: the eviction answers 429 until kubectl's timeout.
        let out = s.kubectl_output(
            "kubectl",
            &[
                "drain",
                &node,
                "--ignore-daemonsets",
                "--delete-emptydir-data",
                "--timeout=6s",
            ],
        )?;
        assert!(!out.status.success(), "drain succeeded despite the budget");
        let n = json(&s, &["get", "node", &node])?;
        assert_eq!(
            n["spec"]["unschedulable"], true,
            "drain did not cordon the node"
        );
        assert!(
            running(&s, "app=db")?.iter().any(|(p, _)| *p == victim),
            "the budget did not keep {victim}"
        );
        // Another replica lands on another node (this one is cordoned) and becomes ready.
        s.kubectl(&["scale", "deployment/db", "--replicas=3"])?;
        eventually(60, "the budget allows one disruption", || {
            Ok(json(&s, &["get", "pdb", "db"])?["status"]["disruptionsAllowed"] == 1)
        })
        .await;
        s.kubectl(&[
            "drain",
            &node,
            "--ignore-daemonsets",
            "--delete-emptydir-data",
            "--timeout=60s",
        ])?;
        eventually(60, "three db pods run, none on the drained node", || {
            let r = running(&s, "app=db")?;
            Ok(r.len() == 3 && r.iter().all(|(_, n)| *n != node))
        })
        .await;
        s.kubectl(&["uncordon", &node])?;
        let n = json(&s, &["get", "node", &node])?;
        assert!(n["spec"]["unschedulable"].is_null() || n["spec"]["unschedulable"] == false);
        Ok(())
    })
    .await
}

fn lease_holder(s: &Server) -> Result<(String, i64)> {
    let l = json(
        s,
        &["get", "lease", "-n", "kube-system", "logbook-controllers"],
    )?;
    Ok((
        l["spec"]["holderIdentity"]
            .as_str()
            .unwrap_or("")
            .to_string(),
        l["spec"]["leaseTransitions"].as_i64().unwrap_or(0),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leading_controllers_hands_over_to_the_standby_without_double_reconciling()
-> Result<()> {
    within(240, "the handover did not complete", async {
        let s = Server::start_with(&["--simulate-nodes", "2", "--no-controllers"])?;
        let dirs: Vec<String> = ["ctrl-a", "ctrl-b"]
            .iter()
            .map(|d| s.data_dir.join(d).to_string_lossy().to_string())
            .collect();
        let mut a = s.component(&["controllers", "--state-dir", &dirs[0]], "campaigning")?;
        let mut b = s.component(&["controllers", "--state-dir", &dirs[1]], "campaigning")?;
        let ids: Vec<String> = dirs
            .iter()
            .map(|d| std::fs::read_to_string(format!("{d}/leader-identity")).unwrap_or_default())
            .collect();
        assert!(
            !ids[0].is_empty() && ids[0] != ids[1],
            "identities: {ids:?}"
        );
        let mut holder = String::new();
        eventually(30, "one of the two holds the lease", || {
            holder = lease_holder(&s)?.0;
            Ok(ids.contains(&holder))
        })
        .await;
        let creates_before = s.request_count("create", "pods").await?;
        s.kubectl(&[
            "create",
            "deployment",
            "web",
            "--image=nginx:1",
            "--replicas=5",
        ])?;
        s.kubectl(&["rollout", "status", "deployment/web", "--timeout=90s"])?;
        // Let a second reconciler, if one were running, act on what it saw.
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(
            s.request_count("create", "pods").await? - creates_before,
            5,
            "pods were created twice: both processes reconciled"
        );
        assert_eq!(
            lease_holder(&s)?.0,
            holder,
            "the lease changed hands without a failure"
        );
        let (transitions_before, standby) = (
            lease_holder(&s)?.1,
            if holder == ids[0] {
                ids[1].clone()
            } else {
                ids[0].clone()
            },
        );
        if holder == ids[0] {
            a.kill9()?;
        } else {
            b.kill9()?;
        }
        let killed_at = std::time::Instant::now();
        s.kubectl(&["scale", "deployment/web", "--replicas=8"])?;
        eventually(60, "the standby took the lease", || {
            Ok(lease_holder(&s)?.0 == standby)
        })
        .await;
        let took = killed_at.elapsed();
        s.kubectl(&["rollout", "status", "deployment/web", "--timeout=90s"])?;
        assert!(
            took < Duration::from_secs(25),
            "the failover took {took:?}, beyond the 15 s lease and a renewal round"
        );
        assert_eq!(running(&s, "app=web")?.len(), 8);
        assert_eq!(
            s.request_count("create", "pods").await? - creates_before,
            8,
            "the standby re-created pods the leader had created"
        );
        assert!(
            lease_holder(&s)?.1 > transitions_before,
            "leaseTransitions did not count the handover"
        );
        Ok(())
    })
    .await
}
