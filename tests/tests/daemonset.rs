//! DaemonSets as users drive them with kubectl against the real binary, with the controllers
//! and scheduler in-process and simulated nodes running the pods: one pod per node as nodes
//! join (a second `logbook node` process) and leave (`kubectl delete node`), taints the pods
//! do not tolerate, rolling updates (maxUnavailable and maxSurge) that `kubectl rollout
//! status` follows, then `kubectl rollout undo`; failed pods replaced, orphans adopted.

#![allow(clippy::unwrap_used)] // a test that panics has failed; the message says where

use std::collections::BTreeMap;

use anyhow::Result;
use logbook_e2e::{Server, eventually, within};
use serde_json::{Value, json};

fn get_json(s: &Server, args: &[&str]) -> Result<Value> {
    s.kubectl_json(args)
}

/// Waits until `n` nodes are Ready: a DaemonSet created before its nodes register would
/// be "rolled out" at zero pods.
async fn nodes_ready(s: &Server, n: usize) {
    eventually(60, "the simulated nodes are Ready", || {
        let v = get_json(s, &["get", "nodes"])?;
        let ready = v["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|n| {
                n["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
            .count();
        Ok(ready >= n)
    })
    .await;
}

fn apply(s: &Server, name: &str, manifest: &Value) -> Result<String> {
    let path = s.data_dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_vec(manifest)?)?;
    s.kubectl(&["apply", "-f", &path.to_string_lossy()])
}

fn daemonset(name: &str, image: &str, extra: Value) -> Value {
    let mut spec = json!({
        "selector": {"matchLabels": {"app": name}},
        "template": {"metadata": {"labels": {"app": name}},
                     "spec": {"containers": [{"name": "c", "image": image}]}},
    });
    if let (Some(o), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        o.extend(e.clone());
    }
    json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": name}, "spec": spec})
}

/// Node → image of the set's Running pods that are not being deleted.
fn placed(s: &Server, app: &str) -> Result<BTreeMap<String, String>> {
    let v = get_json(s, &["get", "pods", "-l", &format!("app={app}")])?;
    let mut out = BTreeMap::new();
    for p in v["items"].as_array().cloned().unwrap_or_default() {
        if p["status"]["phase"] != "Running" || !p["metadata"]["deletionTimestamp"].is_null() {
            continue;
        }
        let node = p["spec"]["nodeName"].as_str().unwrap_or("").to_string();
        let image = p["spec"]["containers"][0]["image"]
            .as_str()
            .unwrap_or("")
            .to_string();
        if out.insert(node.clone(), image).is_some() {
            anyhow::bail!("two pods of {app} on {node}");
        }
    }
    Ok(out)
}

fn nodes_of(m: &BTreeMap<String, String>) -> Vec<&str> {
    m.keys().map(String::as_str).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemonset_follows_a_node_added_and_removed() -> Result<()> {
    within(240, "the daemonset did not follow its nodes", async {
        let s = Server::start_with(&["--simulate-nodes", "2"])?;
        nodes_ready(&s, 2).await;
        apply(&s, "agent", &daemonset("agent", "nginx:1.25", json!({})))?;
        eventually(60, "one agent pod on each of the two nodes", || {
            Ok(nodes_of(&placed(&s, "agent")?) == ["sim-node-0000", "sim-node-0001"])
        })
        .await;
        s.kubectl(&["rollout", "status", "daemonset/agent", "--timeout=60s"])?;

        // Two nodes join, run by a separate process.
        let mut extra = s.component(
            &["node", "--simulate", "2", "--node-name-prefix", "extra"],
            "running",
        )?;
        eventually(60, "agent pods on the joining nodes", || {
            Ok(nodes_of(&placed(&s, "agent")?)
                == ["extra-0000", "extra-0001", "sim-node-0000", "sim-node-0001"])
        })
        .await;
        let pod = get_json(&s, &["get", "pods", "-l", "app=agent"])?["items"][0].clone();
        let terms = &pod["spec"]["affinity"]["nodeAffinity"]
            ["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"];
        assert_eq!(terms[0]["matchFields"][0]["key"], "metadata.name", "{pod}");
        let tolerations = pod["spec"]["tolerations"].as_array().cloned().unwrap_or_default();
        assert!(
            tolerations
                .iter()
                .any(|t| t["key"] == "node.kubernetes.io/unreachable" && t["effect"] == "NoExecute"),
            "{tolerations:?}"
        );
        eventually(30, "status counts four nodes", || {
            let d = get_json(&s, &["get", "daemonset", "agent"])?;
            Ok(d["status"]["desiredNumberScheduled"] == 4 && d["status"]["numberReady"] == 4)
        })
        .await;

        // They leave: their agent stops, and they are deleted.
        extra.kill9()?;
        s.kubectl(&["delete", "node", "extra-0000", "extra-0001"])?;
        eventually(60, "the departed nodes' pods are gone", || {
            let v = get_json(&s, &["get", "pods", "-l", "app=agent"])?;
            let nodes: Vec<String> = v["items"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|p| p["spec"]["nodeName"].as_str().unwrap_or("").to_string())
                .collect();
            Ok(nodes.len() == 2 && nodes.iter().all(|n| n.starts_with("sim-node-")))
        })
        .await;
        eventually(30, "status counts two nodes", || {
            let d = get_json(&s, &["get", "daemonset", "agent"])?;
            Ok(d["status"]["desiredNumberScheduled"] == 2
                && d["status"]["currentNumberScheduled"] == 2)
        })
        .await;
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_a_taint_the_pod_does_not_tolerate_gets_no_daemon_pod() -> Result<()> {
    within(180, "taints were not honoured", async {
        let s = Server::start_with(&["--simulate-nodes", "3"])?;
        nodes_ready(&s, 3).await;
        eventually(30, "three nodes", || {
            Ok(get_json(&s, &["get", "nodes"])?["items"]
                .as_array()
                .map(Vec::len)
                == Some(3))
        })
        .await;
        s.kubectl(&["taint", "nodes", "sim-node-0000", "dedicated=db:NoSchedule"])?;
        apply(&s, "agent", &daemonset("agent", "nginx", json!({})))?;
        apply(
            &s,
            "tolerant",
            &daemonset(
                "tolerant",
                "nginx",
                json!({"template": {"metadata": {"labels": {"app": "tolerant"}},
                    "spec": {"containers": [{"name": "c", "image": "nginx"}],
                             "tolerations": [{"key": "dedicated", "operator": "Exists"}]}}}),
            ),
        )?;
        s.kubectl(&["rollout", "status", "daemonset/agent", "--timeout=60s"])?;
        s.kubectl(&["rollout", "status", "daemonset/tolerant", "--timeout=60s"])?;
        assert_eq!(
            nodes_of(&placed(&s, "agent")?),
            ["sim-node-0001", "sim-node-0002"]
        );
        assert_eq!(
            nodes_of(&placed(&s, "tolerant")?),
            ["sim-node-0000", "sim-node-0001", "sim-node-0002"]
        );
        let d = get_json(&s, &["get", "daemonset", "agent"])?;
        assert_eq!(d["status"]["desiredNumberScheduled"], 2, "{d}");

        // A NoExecute taint evicts the daemon pod that does not tolerate it.
        s.kubectl(&["taint", "nodes", "sim-node-0001", "evict=now:NoExecute"])?;
        eventually(60, "the agent pod leaves the NoExecute node", || {
            Ok(nodes_of(&placed(&s, "agent")?) == ["sim-node-0002"])
        })
        .await;
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemonset_rolling_updates_complete_under_rollout_status_and_undo() -> Result<()> {
    within(240, "the daemonset rolling updates did not finish", async {
        let s = Server::start_with(&["--simulate-nodes", "3"])?;
        nodes_ready(&s, 3).await;
        apply(
            &s,
            "unavail",
            &daemonset("unavail", "nginx:1.25", json!({})),
        )?;
        apply(
            &s,
            "surge",
            &daemonset(
                "surge",
                "nginx:1.25",
                json!({"updateStrategy": {"type": "RollingUpdate",
                    "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}}),
            ),
        )?;
        for d in ["unavail", "surge"] {
            s.kubectl(&[
                "rollout",
                "status",
                &format!("daemonset/{d}"),
                "--timeout=60s",
            ])?;
        }
        for d in ["unavail", "surge"] {
            s.kubectl(&["set", "image", &format!("daemonset/{d}"), "c=nginx:1.26"])?;
        }
        for d in ["unavail", "surge"] {
            let out = s.kubectl(&[
                "rollout",
                "status",
                &format!("daemonset/{d}"),
                "--timeout=90s",
            ])?;
            assert!(out.contains("successfully rolled out"), "{out}");
            // `rollout status` is done once the new pods are available; with maxSurge the
            // old ones may still be on their way out (as on any cluster), so converge.
            eventually(30, "one new pod per node", || {
                let p = placed(&s, d)?;
                Ok(p.len() == 3 && p.values().all(|i| i == "nginx:1.26"))
            })
            .await;
        }
        let d = get_json(&s, &["get", "daemonset", "unavail"])?;
        assert_eq!(d["status"]["updatedNumberScheduled"], 3, "{d}");
        assert_eq!(d["status"]["numberAvailable"], 3, "{d}");

        s.kubectl(&["rollout", "undo", "daemonset/unavail"])?;
        s.kubectl(&["rollout", "status", "daemonset/unavail", "--timeout=90s"])?;
        eventually(60, "every unavail pod back on nginx:1.25", || {
            let p = placed(&s, "unavail")?;
            Ok(p.len() == 3 && p.values().all(|i| i == "nginx:1.25"))
        })
        .await;
        let history = s.kubectl(&["rollout", "history", "daemonset/unavail"])?;
        assert!(history.contains('2') && history.contains('3'), "{history}");
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_pods_orphaned_by_their_daemonset_are_adopted_by_a_new_one() -> Result<()> {
    within(120, "the orphaned pods were not adopted", async {
        let s = Server::start_with(&["--simulate-nodes", "2"])?;
        nodes_ready(&s, 2).await;
        apply(&s, "agent", &daemonset("agent", "nginx", json!({})))?;
        s.kubectl(&["rollout", "status", "daemonset/agent", "--timeout=60s"])?;
        let names = |s: &Server| -> Result<Vec<String>> {
            let v = get_json(s, &["get", "pods", "-l", "app=agent"])?;
            let mut n: Vec<String> = v["items"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|p| p["metadata"]["name"].as_str().unwrap_or("").to_string())
                .collect();
            n.sort();
            Ok(n)
        };
        let before = names(&s)?;
        assert_eq!(before.len(), 2, "{before:?}");
        s.kubectl(&["delete", "daemonset", "agent", "--cascade=orphan"])?;
        apply(&s, "agent", &daemonset("agent", "nginx", json!({})))?;
        let uid = get_json(&s, &["get", "daemonset", "agent"])?["metadata"]["uid"].clone();
        eventually(60, "both pods owned by the new daemonset", || {
            let v = get_json(&s, &["get", "pods", "-l", "app=agent"])?;
            let items = v["items"].as_array().cloned().unwrap_or_default();
            Ok(items.len() == 2
                && items
                    .iter()
                    .all(|p| p["metadata"]["ownerReferences"][0]["uid"] == uid))
        })
        .await;
        s.kubectl(&["rollout", "status", "daemonset/agent", "--timeout=60s"])?;
        assert_eq!(
            names(&s)?,
            before,
            "the pods were replaced instead of adopted"
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_daemon_pod_is_replaced_on_its_node() -> Result<()> {
    within(120, "the failed daemon pod was not replaced", async {
        let s = Server::start_with(&["--simulate-nodes", "2"])?;
        nodes_ready(&s, 2).await;
        apply(&s, "agent", &daemonset("agent", "nginx", json!({})))?;
        s.kubectl(&["rollout", "status", "daemonset/agent", "--timeout=60s"])?;
        let on_node0 = |s: &Server| -> Result<Vec<String>> {
            let v = get_json(
                s,
                &[
                    "get",
                    "pods",
                    "-l",
                    "app=agent",
                    "--field-selector",
                    "spec.nodeName=sim-node-0000",
                ],
            )?;
            Ok(v["items"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .filter(|p| p["status"]["phase"] == "Running")
                .map(|p| p["metadata"]["name"].as_str().unwrap_or("").to_string())
                .collect())
        };
        let before = on_node0(&s)?;
        assert_eq!(before.len(), 1, "{before:?}");
        // The pod's containers fail (as its kubelet would report).
        s.kubectl(&[
            "patch",
            "pod",
            &before[0],
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"phase":"Failed"}}"#,
        ])?;
        eventually(60, "another pod running on sim-node-0000", || {
            let now = on_node0(&s)?;
            Ok(now.len() == 1 && now != before)
        })
        .await;
        eventually(30, "the failed pod deleted", || {
            let v = get_json(&s, &["get", "pods", "-l", "app=agent"])?;
            Ok(v["items"].as_array().map(Vec::len) == Some(2))
        })
        .await;
        Ok(())
    })
    .await
}
