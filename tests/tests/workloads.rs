//! Deployments as users drive them with kubectl against the real binary, with the
//! controllers and scheduler running in-process and simulated nodes running the pods:
//! create → Available, scale, a rolling update that keeps within maxSurge/maxUnavailable
//! (observed through a watch), rollout history and undo, pause/resume, the three deletion
//! cascades, namespace deletion, and controllers restarted mid-rollout that resume from
//! their saved position instead of listing again.

#![allow(clippy::unwrap_used)] // a test that panics has failed; the message says where

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use futures::TryStreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::watcher;
use logbook_e2e::{Server, eventually, within};
use serde_json::Value;

fn json(s: &Server, args: &[&str]) -> Result<Value> {
    s.kubectl_json(args)
}

fn running_pods(s: &Server, ns: &str, selector: &str) -> Result<Vec<Value>> {
    let v = json(s, &["-n", ns, "get", "pods", "-l", selector])?;
    Ok(v["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|p| {
            p["status"]["phase"] == "Running" && p["metadata"]["deletionTimestamp"].is_null()
        })
        .collect())
}

/// Whether exactly `n` pods with `selector` run, all on `image`.
fn on_image(s: &Server, selector: &str, n: usize, image: &str) -> Result<bool> {
    let p = running_pods(s, "default", selector)?;
    Ok(p.len() == n
        && p.iter()
            .all(|p| p["spec"]["containers"][0]["image"] == image))
}

fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

#[derive(Default, Debug)]
struct Observed {
    max_active: usize,
    min_ready: usize,
}

/// Watches pods with `selector` and records the most active and the fewest ready pods seen
/// at any point (after `start` ready pods were first seen).
fn observe(client: kube::Client, ns: &str, selector: &str, start: usize) -> Arc<Mutex<Observed>> {
    let out = Arc::new(Mutex::new(Observed {
        max_active: 0,
        min_ready: usize::MAX,
    }));
    let o = out.clone();
    let api: Api<Pod> = Api::namespaced(client, ns);
    let cfg = watcher::Config::default().labels(selector);
    tokio::spawn(async move {
        let mut pods: HashMap<String, Pod> = HashMap::new();
        let mut armed = false;
        let mut stream = std::pin::pin!(watcher(api, cfg));
        while let Ok(Some(ev)) = stream.try_next().await {
            match ev {
                watcher::Event::Apply(p) | watcher::Event::InitApply(p) => {
                    pods.insert(p.metadata.name.clone().unwrap_or_default(), p);
                }
                watcher::Event::Delete(p) => {
                    pods.remove(p.metadata.name.as_deref().unwrap_or(""));
                }
                _ => continue,
            }
            let active: Vec<&Pod> = pods
                .values()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .collect();
            let n_ready = active.iter().filter(|p| ready(p)).count();
            if n_ready >= start {
                armed = true;
            }
            if armed {
                let mut g = o.lock().unwrap();
                g.max_active = g.max_active.max(active.len());
                g.min_ready = g.min_ready.min(n_ready);
            }
        }
    });
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_becomes_available_scales_rolls_within_its_budget_and_rolls_back() -> Result<()>
{
    within(240, "the deployment workflow did not finish", async {
        let s = Server::start_with(&["--simulate-nodes", "4"])?;
        s.kubectl(&[
            "create",
            "deployment",
            "web",
            "--image=nginx:1.25",
            "--replicas=3",
        ])?;
        s.kubectl(&["rollout", "status", "deployment/web", "--timeout=60s"])?;
        let d = json(&s, &["get", "deployment", "web"])?;
        assert_eq!(d["status"]["availableReplicas"], 3, "{d}");
        let conds = d["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(
            conds
                .iter()
                .any(|c| c["type"] == "Available" && c["status"] == "True"),
            "{conds:?}"
        );
        assert!(
            conds
                .iter()
                .any(|c| c["type"] == "Progressing" && c["reason"] == "NewReplicaSetAvailable"),
            "{conds:?}"
        );
        let pods = running_pods(&s, "default", "app=web")?;
        assert_eq!(pods.len(), 3);
        for p in &pods {
            assert!(
                p["spec"]["nodeName"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("sim-node")),
                "{p}"
            );
            assert!(p["status"]["podIP"].as_str().is_some(), "{p}");
        }

        // Scale up and down.
        s.kubectl(&["scale", "deployment/web", "--replicas=5"])?;
        s.kubectl(&["rollout", "status", "deployment/web", "--timeout=60s"])?;
        eventually(30, "five running pods", || {
            Ok(running_pods(&s, "default", "app=web")?.len() == 5)
        })
        .await;
        s.kubectl(&["scale", "deployment/web", "--replicas=4"])?;
        eventually(30, "four pods after scaling down", || {
            Ok(json(&s, &["get", "pods", "-l", "app=web"])?["items"]
                .as_array()
                .map(Vec::len)
                == Some(4))
        })
        .await;

        // A rolling update with maxSurge 1 and maxUnavailable 0, watched.
        s.kubectl(&[
            "patch",
            "deployment/web",
            "-p",
            r#"{"spec":{"strategy":{"rollingUpdate":{"maxSurge":1,"maxUnavailable":0}}}}"#,
        ])?;
        s.kubectl(&["rollout", "status", "deployment/web", "--timeout=60s"])?;
        let seen = observe(s.client().await?, "default", "app=web", 4);
        tokio::time::sleep(Duration::from_millis(500)).await;
        s.kubectl(&["set", "image", "deployment/web", "nginx=nginx:1.26"])?;
        s.kubectl(&["rollout", "status", "deployment/web", "--timeout=90s"])?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        {
            let g = seen.lock().unwrap();
            assert!(
                g.max_active <= 5,
                "more than replicas + maxSurge pods at once: {g:?}"
            );
            assert!(
                g.min_ready >= 4,
                "fewer than replicas - maxUnavailable ready: {g:?}"
            );
            assert!(g.max_active == 5, "the surge pod was never seen: {g:?}");
        }
        let pods = running_pods(&s, "default", "app=web")?;
        assert_eq!(pods.len(), 4);
        assert!(
            pods.iter()
                .all(|p| p["spec"]["containers"][0]["image"] == "nginx:1.26")
        );
        let rs = json(&s, &["get", "rs", "-l", "app=web"])?;
        assert_eq!(
            rs["items"].as_array().map(Vec::len),
            Some(2),
            "old and new ReplicaSets"
        );

        // History and undo.
        let hist = s.kubectl(&["rollout", "history", "deployment/web"])?;
        assert!(hist.contains('1') && hist.contains('2'), "{hist}");
        s.kubectl(&["rollout", "undo", "deployment/web"])?;
        s.kubectl(&["rollout", "status", "deployment/web", "--timeout=90s"])?;
        let d = json(&s, &["get", "deployment", "web"])?;
        assert_eq!(
            d["spec"]["template"]["spec"]["containers"][0]["image"],
            "nginx:1.25"
        );
        assert_eq!(
            d["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
            "3"
        );
        eventually(30, "pods back on the old image", || {
            on_image(&s, "app=web", 4, "nginx:1.25")
        })
        .await;
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_deployment_rolls_out_only_after_resume() -> Result<()> {
    within(180, "pause/resume did not finish", async {
        let s = Server::start_with(&["--simulate-nodes", "2"])?;
        s.kubectl(&[
            "create",
            "deployment",
            "api",
            "--image=busybox:1",
            "--replicas=2",
        ])?;
        s.kubectl(&["rollout", "status", "deployment/api", "--timeout=60s"])?;
        s.kubectl(&["rollout", "pause", "deployment/api"])?;
        s.kubectl(&["set", "image", "deployment/api", "busybox=busybox:2"])?;
        eventually(20, "the Progressing condition says paused", || {
            let d = json(&s, &["get", "deployment", "api"])?;
            Ok(d["status"]["conditions"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c["reason"] == "DeploymentPaused")))
        })
        .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let rs = json(&s, &["get", "rs", "-l", "app=api"])?;
        assert_eq!(
            rs["items"].as_array().map(Vec::len),
            Some(1),
            "no new ReplicaSet while paused"
        );
        s.kubectl(&["rollout", "resume", "deployment/api"])?;
        s.kubectl(&["rollout", "status", "deployment/api", "--timeout=60s"])?;
        eventually(30, "pods on the new image", || {
            on_image(&s, "app=api", 2, "busybox:2")
        })
        .await;
        Ok(())
    })
    .await
}

fn count(s: &Server, kind: &str, selector: &str) -> Result<usize> {
    Ok(json(s, &["get", kind, "-l", selector])?["items"]
        .as_array()
        .map_or(0, Vec::len))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_deletion_cascade_does_what_kubectl_says() -> Result<()> {
    within(180, "the cascades did not finish", async {
        let s = Server::start_with(&["--simulate-nodes", "2"])?;
        for name in ["fg", "bg", "orph"] {
            s.kubectl(&[
                "create",
                "deployment",
                name,
                "--image=nginx",
                "--replicas=2",
            ])?;
        }
        for name in ["fg", "bg", "orph"] {
            s.kubectl(&[
                "rollout",
                "status",
                &format!("deployment/{name}"),
                "--timeout=60s",
            ])?;
        }
        // Foreground: kubectl returns once the Deployment is gone, which is after its
        // ReplicaSet and pods.
        s.kubectl(&[
            "delete",
            "deployment",
            "fg",
            "--cascade=foreground",
            "--timeout=60s",
        ])?;
        assert_eq!(count(&s, "rs", "app=fg")?, 0);
        assert_eq!(count(&s, "pods", "app=fg")?, 0);
        // Background: the Deployment goes at once, its dependents soon after.
        s.kubectl(&["delete", "deployment", "bg", "--cascade=background"])?;
        eventually(30, "background dependents gone", || {
            Ok(count(&s, "rs", "app=bg")? == 0 && count(&s, "pods", "app=bg")? == 0)
        })
        .await;
        // Orphan: the ReplicaSet and pods stay, without their owner.
        s.kubectl(&[
            "delete",
            "deployment",
            "orph",
            "--cascade=orphan",
            "--timeout=60s",
        ])?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let rs = json(&s, &["get", "rs", "-l", "app=orph"])?;
        let items = rs["items"].as_array().cloned().unwrap_or_default();
        assert_eq!(items.len(), 1, "the orphaned ReplicaSet stays");
        assert!(
            items[0]["metadata"]["ownerReferences"]
                .as_array()
                .is_none_or(Vec::is_empty),
            "{}",
            items[0]
        );
        assert_eq!(
            running_pods(&s, "default", "app=orph")?.len(),
            2,
            "its pods keep running"
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_namespace_removes_everything_in_it_and_refuses_new_content_meanwhile()
-> Result<()> {
    within(180, "the namespace was not deleted", async {
        let s = Server::start_with(&["--simulate-nodes", "1"])?;
        s.kubectl(&["create", "namespace", "team"])?;
        eventually(20, "the default ServiceAccount and root CA", || {
            Ok(
                s.kubectl(&["-n", "team", "get", "serviceaccount", "default"])
                    .is_ok()
                    && s.kubectl(&["-n", "team", "get", "configmap", "kube-root-ca.crt"])
                        .is_ok(),
            )
        })
        .await;
        s.kubectl(&[
            "-n",
            "team",
            "create",
            "deployment",
            "web",
            "--image=nginx",
            "--replicas=2",
        ])?;
        s.kubectl(&[
            "-n",
            "team",
            "create",
            "configmap",
            "settings",
            "--from-literal=a=b",
        ])?;
        s.kubectl(&[
            "-n",
            "team",
            "create",
            "service",
            "clusterip",
            "web",
            "--tcp=80:80",
        ])?;
        s.kubectl(&[
            "-n",
            "team",
            "rollout",
            "status",
            "deployment/web",
            "--timeout=60s",
        ])?;
        // An object held by someone's finalizer keeps the namespace Terminating.
        s.kubectl(&[
            "-n",
            "team",
            "patch",
            "configmap",
            "settings",
            "--type=merge",
            "-p",
            r#"{"metadata":{"finalizers":["example.com/hold"]}}"#,
        ])?;
        s.kubectl(&["delete", "namespace", "team", "--wait=false"])?;
        eventually(30, "the namespace reports what remains", || {
            let ns = json(&s, &["get", "namespace", "team"])?;
            Ok(ns["status"]["phase"] == "Terminating"
                && ns["status"]["conditions"].as_array().is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "NamespaceContentRemaining" && c["status"] == "True")
                }))
        })
        .await;
        let out = s.kubectl_output("kubectl", &["-n", "team", "create", "configmap", "late"])?;
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("because it is being terminated"), "{err}");
        assert_eq!(count(&s, "pods", "app=web").ok(), Some(0));
        s.kubectl(&[
            "-n",
            "team",
            "patch",
            "configmap",
            "settings",
            "--type=merge",
            "-p",
            r#"{"metadata":{"finalizers":null}}"#,
        ])?;
        eventually(30, "the namespace is gone", || {
            Ok(s.kubectl_output("kubectl", &["get", "namespace", "team"])?
                .status
                .code()
                == Some(1))
        })
        .await;
        let all = s.kubectl(&[
            "get",
            "pods,rs,deployments,services,configmaps",
            "-n",
            "team",
            "-o",
            "name",
        ])?;
        assert!(all.trim().is_empty(), "left behind: {all}");
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controllers_killed_mid_rollout_resume_from_their_position_without_listing_again()
-> Result<()> {
    within(240, "the resumed rollout did not finish", async {
        let s = Server::start_with(&["--simulate-nodes", "3", "--no-controllers"])?;
        let state = s.data_dir.join("controllers-process");
        let state_arg = state.to_string_lossy().to_string();
        let mut ctrl = s.component(&["controllers", "--state-dir", &state_arg], "running")?;
        s.kubectl(&["create", "deployment", "slow", "--image=nginx:1", "--replicas=4"])?;
        s.kubectl(&[
            "patch", "deployment/slow", "-p",
            r#"{"spec":{"minReadySeconds":2,"strategy":{"rollingUpdate":{"maxSurge":1,"maxUnavailable":0}}}}"#,
        ])?;
        s.kubectl(&["rollout", "status", "deployment/slow", "--timeout=90s"])?;
        s.kubectl(&["set", "image", "deployment/slow", "nginx=nginx:2"])?;
        // Mid-rollout: some new pods, not all.
        eventually(60, "the rollout under way", || {
            let d = json(&s, &["get", "deployment", "slow"])?;
            let updated = d["status"]["updatedReplicas"].as_i64().unwrap_or(0);
            Ok((1..4).contains(&updated))
        })
        .await;
        // Let the informers save their state (every 5 s), then SIGKILL.
        tokio::time::sleep(Duration::from_secs(6)).await;
        ctrl.kill9()?;
        let lists_before = (
            s.request_count("list", "pods").await?,
            s.request_count("list", "replicasets").await?,
        );
        let _ctrl = s.component(&["controllers", "--state-dir", &state_arg], "running")?;
        s.kubectl(&["rollout", "status", "deployment/slow", "--timeout=120s"])?;
        // (Counted before this test's own `kubectl get pods` below.)
        let lists_after = (
            s.request_count("list", "pods").await?,
            s.request_count("list", "replicasets").await?,
        );
        let pods = running_pods(&s, "default", "app=slow")?;
        assert_eq!(pods.len(), 4);
        assert!(pods.iter().all(|p| p["spec"]["containers"][0]["image"] == "nginx:2"));
        assert_eq!(
            lists_before, lists_after,
            "the restarted controllers listed pods or ReplicaSets instead of resuming"
        );
        Ok(())
    })
    .await
}

fn apply(s: &Server, name: &str, manifest: &Value) -> Result<String> {
    let path = s.data_dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_vec(manifest)?)?;
    s.kubectl(&["apply", "-f", &path.to_string_lossy()])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_that_fits_nowhere_waits_with_failed_scheduling_then_lands_when_a_node_fits()
-> Result<()> {
    within(180, "the unschedulable pod was not placed", async {
        let s = Server::start_with(&["--simulate-nodes", "2"])?;
        eventually(30, "two Ready nodes", || {
            Ok(json(&s, &["get", "nodes"])?["items"]
                .as_array()
                .map(Vec::len)
                == Some(2))
        })
        .await;
        apply(
            &s,
            "big",
            &serde_json::json!({
                "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "big"},
                "spec": {"containers": [{"name": "c", "image": "nginx",
                    "resources": {"requests": {"cpu": "64", "memory": "1Gi"}}}]}
            }),
        )?;
        eventually(30, "PodScheduled=False with reason Unschedulable", || {
            let p = json(&s, &["get", "pod", "big"])?;
            Ok(p["status"]["conditions"].as_array().is_some_and(|c| {
                c.iter().any(|c| {
                    c["type"] == "PodScheduled"
                        && c["status"] == "False"
                        && c["reason"] == "Unschedulable"
                })
            }))
        })
        .await;
        eventually(30, "a FailedScheduling event naming the shortage", || {
            let ev = json(
                &s,
                &[
                    "get",
                    "events",
                    "--field-selector",
                    "involvedObject.name=big,reason=FailedScheduling",
                ],
            )?;
            Ok(ev["items"].as_array().is_some_and(|i| {
                i.iter().any(|e| {
                    e["type"] == "Warning"
                        && e["message"].as_str().is_some_and(|m| {
                            m.contains("0/2 nodes are available") && m.contains("Insufficient cpu")
                        })
                })
            }))
        })
        .await;
        let p = json(&s, &["get", "pod", "big"])?;
        assert!(p["spec"]["nodeName"].is_null(), "{p}");
        // A bigger node joins (its own process, as a separate node agent would).
        let _node = s.component(
            &[
                "node",
                "--simulate",
                "1",
                "--node-name-prefix",
                "big-node",
                "--node-cpu",
                "128",
            ],
            "running",
        )?;
        eventually(60, "the pod Running on the big node", || {
            let p = json(&s, &["get", "pod", "big"])?;
            Ok(p["spec"]["nodeName"] == "big-node-0000" && p["status"]["phase"] == "Running")
        })
        .await;
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placement_follows_anti_affinity_taints_tolerations_and_zone_spread() -> Result<()> {
    within(180, "placement did not finish", async {
        // Six nodes over zone-a, zone-b, zone-c (two each).
        let s = Server::start_with(&["--simulate-nodes", "6"])?;
        eventually(30, "six nodes", || {
            Ok(json(&s, &["get", "nodes"])?["items"].as_array().map(Vec::len) == Some(6))
        })
        .await;
        s.kubectl(&["taint", "nodes", "sim-node-0000", "dedicated=db:NoSchedule"])?;
        let template = |app: &str, extra: Value| {
            let mut spec = serde_json::json!({"containers": [{"name": "c", "image": "nginx"}]});
            if let (Some(o), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
                o.extend(e.clone());
            }
            serde_json::json!({"metadata": {"labels": {"app": app}}, "spec": spec})
        };
        let deployment = |name: &str, replicas: u32, extra: Value| {
            serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
                "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                         "template": template(name, extra)}})
        };
        apply(&s, "spread", &deployment("spread", 6, serde_json::json!({"topologySpreadConstraints": [{
            "maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": {"matchLabels": {"app": "spread"}}}]})))?;
        apply(&s, "solo", &deployment("solo", 3, serde_json::json!({"affinity": {"podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [{
                "topologyKey": "kubernetes.io/hostname",
                "labelSelector": {"matchLabels": {"app": "solo"}}}]}}})))?;
        apply(&s, "db", &serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "db"},
            "spec": {"containers": [{"name": "c", "image": "postgres"}],
                     "nodeSelector": {"kubernetes.io/hostname": "sim-node-0000"},
                     "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"}]}}))?;
        for d in ["spread", "solo"] {
            s.kubectl(&["rollout", "status", &format!("deployment/{d}"), "--timeout=60s"])?;
        }
        let nodes = json(&s, &["get", "nodes"])?;
        let zone_of: HashMap<String, String> = nodes["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| {
                (
                    n["metadata"]["name"].as_str().unwrap_or("").to_string(),
                    n["metadata"]["labels"]["topology.kubernetes.io/zone"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        let placed = |app: &str| -> Result<Vec<String>> {
            Ok(running_pods(&s, "default", &format!("app={app}"))?
                .iter()
                .map(|p| p["spec"]["nodeName"].as_str().unwrap_or("").to_string())
                .collect())
        };
        let spread = placed("spread")?;
        let mut per_zone: HashMap<&str, usize> = HashMap::new();
        for n in &spread {
            *per_zone.entry(zone_of[n].as_str()).or_default() += 1;
        }
        assert_eq!(per_zone.len(), 3, "{per_zone:?}");
        assert!(per_zone.values().all(|c| *c == 2), "zone spread 2/2/2: {per_zone:?}");
        let solo = placed("solo")?;
        let distinct: std::collections::HashSet<&String> = solo.iter().collect();
        assert_eq!(distinct.len(), 3, "anti-affinity puts each on its own node: {solo:?}");
        for n in spread.iter().chain(solo.iter()) {
            assert_ne!(n, "sim-node-0000", "the tainted node takes only pods that tolerate it");
        }
        eventually(30, "the tolerating pod on the tainted node", || {
            let p = json(&s, &["get", "pod", "db"])?;
            Ok(p["spec"]["nodeName"] == "sim-node-0000" && p["status"]["phase"] == "Running")
        })
        .await;
        Ok(())
    })
    .await
}
