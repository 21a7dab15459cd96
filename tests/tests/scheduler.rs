//! The scheduler (`logbook_controllers::scheduler::run`, in this test process) against the
//! real server: pods land on nodes that fit; a pod that fits nowhere stays Pending with
//! PodScheduled=False/Unschedulable and a FailedScheduling event until a node fits it;
//! nodeSelector and node affinity, pod affinity and anti-affinity, taints and tolerations,
//! topology spread and cordoned nodes behave as with kube-scheduler.

#![allow(clippy::unwrap_used)] // a test that panics has failed; the message says where

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Result;
use futures::StreamExt;
use logbook_controllers::scheduler::{self, Metrics, SchedulerConfig};
use logbook_e2e::{Server, call_json as call, within};
use serde_json::{Value, json};

const PODS: &str = "/api/v1/namespaces/default/pods";

async fn patch(c: &kube::Client, path: &str, body: Value) -> Result<Value> {
    let req = logbook_e2e::json_request("PATCH", path, "application/merge-patch+json", &body);
    Ok(serde_json::from_str(&c.request_text(req).await?)?)
}

/// Registers a node the way a kubelet does: the Node, then its status (allocatable, Ready).
async fn add_node(
    c: &kube::Client,
    name: &str,
    cpu: &str,
    labels: Value,
    spec: Value,
) -> Result<()> {
    let mut l = json!({"kubernetes.io/hostname": name});
    l.as_object_mut()
        .unwrap()
        .extend(labels.as_object().cloned().unwrap_or_default());
    call(
        c,
        "POST",
        "/api/v1/nodes",
        json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": l}, "spec": spec}),
    )
    .await?;
    patch(
        c,
        &format!("/api/v1/nodes/{name}/status"),
        json!({"status": {
        "capacity": {"cpu": cpu, "memory": "16Gi", "pods": "110"},
        "allocatable": {"cpu": cpu, "memory": "16Gi", "pods": "110"},
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                        "lastHeartbeatTime": jiff::Timestamp::now().to_string(),
                        "lastTransitionTime": jiff::Timestamp::now().to_string()}]}}),
    )
    .await?;
    Ok(())
}

async fn add_pod(
    c: &kube::Client,
    name: &str,
    cpu: &str,
    labels: Value,
    spec: Value,
) -> Result<()> {
    let mut spec = spec;
    spec["containers"] = json!([{"name": "c", "image": "busybox",
        "resources": {"requests": {"cpu": cpu, "memory": "64Mi"}}}]);
    call(
        c,
        "POST",
        PODS,
        json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels}, "spec": spec}),
    )
    .await?;
    Ok(())
}

async fn get_pod(c: &kube::Client, name: &str) -> Value {
    call(c, "GET", &format!("{PODS}/{name}"), Value::Null)
        .await
        .unwrap()
}

/// Polls until the pod is bound; returns its node.
async fn node_of(c: &kube::Client, name: &str) -> String {
    let what = format!("pod {name} was not bound (is the scheduler running and does a node fit?)");
    within(30, &what, async {
        loop {
            let p = get_pod(c, name).await;
            if let Some(n) = p["spec"]["nodeName"].as_str() {
                return n.to_string();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
}

/// Polls until the pod carries PodScheduled=False/Unschedulable; returns the message.
async fn unschedulable_message(c: &kube::Client, name: &str) -> String {
    let what = format!(
        "pod {name} did not get PodScheduled=False reason Unschedulable (status write lost?)"
    );
    within(30, &what, async {
        loop {
            let p = get_pod(c, name).await;
            assert!(
                p["spec"]["nodeName"].is_null(),
                "{name} should not be bound: {}",
                p["spec"]
            );
            let cond = p["status"]["conditions"]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["type"] == "PodScheduled").cloned());
            if let Some(cond) = cond
                && cond["status"] == "False"
                && cond["reason"] == "Unschedulable"
            {
                return cond["message"].as_str().unwrap_or_default().to_string();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
}

/// Polls until an event with `reason` about the pod exists; returns its message.
async fn event_for(c: &kube::Client, pod: &str, reason: &str) -> Value {
    let what =
        format!("no {reason} event for pod {pod} (event queue dropped it or the write failed)");
    within(30, &what, async {
        loop {
            let list = call(c, "GET", "/api/v1/namespaces/default/events", Value::Null)
                .await
                .unwrap();
            let found = list["items"].as_array().and_then(|items| {
                items
                    .iter()
                    .find(|e| e["involvedObject"]["name"] == pod && e["reason"] == reason)
                    .cloned()
            });
            if let Some(e) = found {
                return e;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
}

/// Lets the scheduler's node watch deliver a node change before the next pod depends on it
/// (its cache is observable only through placements).
async fn settle() {
    tokio::time::sleep(Duration::from_millis(1_000)).await;
}

/// Starts the scheduler in this process; flipping the returned sender stops it.
fn start_scheduler(
    c: &kube::Client,
) -> (
    tokio::sync::watch::Sender<bool>,
    Arc<Metrics>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let cfg = SchedulerConfig::default();
    let metrics = cfg.metrics.clone();
    let client = c.clone();
    let h = tokio::spawn(async move {
        scheduler::run(client, cfg, rx).await.unwrap();
    });
    (tx, metrics, h)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_places_pods_as_kube_scheduler_would() -> Result<()> {
    within(240, "the scheduler scenario did not finish", async {
        let s = Server::start_api_only()?;
        let c = s.client().await?;
        for (n, zone) in [("n1", "z1"), ("n2", "z2"), ("n3", "z3")] {
            add_node(&c, n, "2", json!({"topology.kubernetes.io/zone": zone}), json!({})).await?;
        }
        let (stop, metrics, handle) = start_scheduler(&c);

        // A pod lands on a node that fits, with a Scheduled event.
        add_pod(&c, "small", "500m", json!({}), json!({})).await?;
        let node = node_of(&c, "small").await;
        assert!(["n1", "n2", "n3"].contains(&node.as_str()), "{node}");
        let ev = event_for(&c, "small", "Scheduled").await;
        assert_eq!(ev["type"], "Normal");
        assert_eq!(ev["message"], format!("Successfully assigned default/small to {node}"));
        assert_eq!(ev["source"]["component"], "default-scheduler");

        // Too big for every node: Pending, Unschedulable, FailedScheduling; then a big node.
        add_pod(&c, "huge", "16", json!({}), json!({})).await?;
        let msg = unschedulable_message(&c, "huge").await;
        assert_eq!(
            msg,
            "0/3 nodes are available: 3 Insufficient cpu. preemption: 0/3 nodes are available: \
             3 Preemption is not helpful for scheduling."
        );
        let ev = event_for(&c, "huge", "FailedScheduling").await;
        assert_eq!((ev["type"].as_str(), ev["message"].as_str()), (Some("Warning"), Some(msg.as_str())));
        add_node(&c, "big", "32", json!({}), json!({})).await?;
        assert_eq!(node_of(&c, "huge").await, "big", "a new node retries unschedulable pods");

        // A cordoned node is skipped.
        patch(&c, "/api/v1/nodes/big", json!({"spec": {"unschedulable": true}})).await?;
        settle().await;
        add_pod(&c, "wants-big", "100m", json!({}), json!({"nodeSelector": {"kubernetes.io/hostname": "big"}})).await?;
        let msg = unschedulable_message(&c, "wants-big").await;
        assert!(
            msg.starts_with("0/4 nodes are available: 1 node(s) were unschedulable, 3 node(s) didn't match Pod's node affinity/selector."),
            "{msg}"
        );

        // nodeSelector and required node affinity.
        add_pod(&c, "in-z2", "100m", json!({}), json!({"nodeSelector": {"topology.kubernetes.io/zone": "z2"}})).await?;
        add_pod(&c, "in-z3", "100m", json!({}), json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["z3", "z9"]}]}]}}}})).await?;
        assert_eq!(node_of(&c, "in-z2").await, "n2");
        assert_eq!(node_of(&c, "in-z3").await, "n3");

        // Taints: refused without a toleration, accepted with one; removing it retries.
        patch(&c, "/api/v1/nodes/n1", json!({"spec": {"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}})).await?;
        settle().await;
        let on_n1 = json!({"kubernetes.io/hostname": "n1"});
        add_pod(&c, "plain-n1", "100m", json!({}), json!({"nodeSelector": on_n1})).await?;
        add_pod(&c, "tolerant-n1", "100m", json!({}), json!({"nodeSelector": on_n1,
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]})).await?;
        assert_eq!(node_of(&c, "tolerant-n1").await, "n1");
        let msg = unschedulable_message(&c, "plain-n1").await;
        assert!(msg.contains("1 node(s) had untolerated taint {dedicated: gpu}"), "{msg}");
        patch(&c, "/api/v1/nodes/n1", json!({"spec": {"taints": null}})).await?;
        assert_eq!(node_of(&c, "plain-n1").await, "n1", "an untainted node retries the pod");

        // Hostname anti-affinity: one replica per schedulable node, the fourth Pending.
        let anti = json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "anti"}}, "topologyKey": "kubernetes.io/hostname"}]}}});
        for i in 0..3 {
            add_pod(&c, &format!("anti-{i}"), "10m", json!({"app": "anti"}), anti.clone()).await?;
        }
        let mut nodes = Vec::new();
        for i in 0..3 {
            nodes.push(node_of(&c, &format!("anti-{i}")).await);
        }
        nodes.sort();
        assert_eq!(nodes, ["n1", "n2", "n3"]);
        add_pod(&c, "anti-3", "10m", json!({"app": "anti"}), anti.clone()).await?;
        let msg = unschedulable_message(&c, "anti-3").await;
        assert!(
            msg.starts_with("0/4 nodes are available: 1 node(s) were unschedulable, 3 node(s) didn't match pod anti-affinity rules."),
            "{msg}"
        );

        // Topology spread over three zones: 2/2/2.
        let spread = json!({"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "spread"}}}]});
        for i in 0..6 {
            add_pod(&c, &format!("spread-{i}"), "10m", json!({"app": "spread"}), spread.clone()).await?;
        }
        let mut per_node: BTreeMap<String, u32> = BTreeMap::new();
        for i in 0..6 {
            *per_node.entry(node_of(&c, &format!("spread-{i}")).await).or_default() += 1;
        }
        assert_eq!(per_node, BTreeMap::from([("n1".into(), 2), ("n2".into(), 2), ("n3".into(), 2)]));

        // Required pod affinity: waits for a matching pod, then joins its zone.
        let follow = json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "leader"}}, "topologyKey": "topology.kubernetes.io/zone"}]}}});
        add_pod(&c, "follower", "10m", json!({}), follow).await?;
        let msg = unschedulable_message(&c, "follower").await;
        assert!(msg.contains("3 node(s) didn't match pod affinity rules"), "{msg}");
        add_pod(&c, "leader", "10m", json!({"app": "leader"}), json!({"nodeSelector": {"topology.kubernetes.io/zone": "z2"}})).await?;
        assert_eq!(node_of(&c, "follower").await, "n2", "a newly bound pod retries pods waiting for affinity");

        // Deleting an anti-affinity replica frees its node for the Pending one.
        call(&c, "DELETE", &format!("{PODS}/anti-0?gracePeriodSeconds=0"), Value::Null).await?;
        let freed = nodes_of_anti(&c).await;
        assert_eq!(node_of(&c, "anti-3").await, freed, "a deleted pod retries unschedulable pods");

        assert_eq!(metrics.events_dropped.load(Ordering::Relaxed), 0);
        stop.send(true)?;
        within(10, "the scheduler did not stop when shutdown flipped", handle).await?;
        Ok(())
    })
    .await
}

/// The node anti-0 was on (read before it goes).
async fn nodes_of_anti(c: &kube::Client) -> String {
    let mut taken = Vec::new();
    for i in 1..3 {
        taken.push(node_of(c, &format!("anti-{i}")).await);
    }
    ["n1", "n2", "n3"]
        .into_iter()
        .find(|n| !taken.iter().any(|t| t == n))
        .unwrap()
        .to_string()
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Creates `n` small pods, 32 requests at a time.
async fn create_pods(c: &kube::Client, prefix: &str, n: usize) -> Result<()> {
    futures::stream::iter(0..n)
        .map(|i| {
            let c = c.clone();
            async move {
                add_pod(
                    &c,
                    &format!("{prefix}-{i}"),
                    "10m",
                    json!({"app": "bench"}),
                    json!({}),
                )
                .await
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>>>()?;
    Ok(())
}

/// Not a floor assertion (debug build, shared machine): prints pods bound per second.
/// `LOGBOOK_SCHED_BENCH_NODES` / `LOGBOOK_SCHED_BENCH_PODS` size it (default 100 / 2,000).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduler_throughput_is_reported() -> Result<()> {
    let (nodes, pods_total) = (
        env_or("LOGBOOK_SCHED_BENCH_NODES", 100),
        env_or("LOGBOOK_SCHED_BENCH_PODS", 2_000),
    );
    within(900, "the throughput run did not bind every pod", async {
        let s = Server::start_api_only()?;
        let c = s.client().await?;
        futures::stream::iter(0..nodes)
            .map(|i| {
                let c = c.clone();
                async move { add_node(&c, &format!("node-{i}"), "64", json!({"topology.kubernetes.io/zone": format!("z{}", i % 3)}), json!({})).await }
            })
            .buffer_unordered(16)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<Vec<_>>>()?;
        // Pods first, scheduler second: measures scheduling alone, not pod creation.
        create_pods(&c, "backlog", pods_total).await?;
        let t0 = Instant::now();
        let (stop, metrics, handle) = start_scheduler(&c);
        let mut first_bind = None;
        while metrics.scheduled.load(Ordering::Relaxed) < pods_total as u64 {
            if first_bind.is_none() && metrics.scheduled.load(Ordering::Relaxed) > 0 {
                first_bind = Some(t0.elapsed().as_secs_f64());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let secs = t0.elapsed().as_secs_f64();
        let listed = first_bind.unwrap_or(0.0);
        println!(
            "scheduler (backlog): {pods_total} pods on {nodes} nodes bound in {secs:.2} s = {:.0} pods/s \
             ({listed:.2} s to the first binding: the initial list; {:.0} pods/s after it); \
             choosing nodes took {:.0} µs/pod (bind errors {}, events dropped {})",
            pods_total as f64 / secs,
            pods_total as f64 / (secs - listed).max(0.001),
            metrics.algorithm_us.load(Ordering::Relaxed) as f64 / pods_total as f64,
            metrics.bind_errors.load(Ordering::Relaxed),
            metrics.events_dropped.load(Ordering::Relaxed),
        );
        // Scheduler running while pods arrive: bound per second from the first create.
        let t0 = Instant::now();
        create_pods(&c, "live", pods_total).await?;
        let created = t0.elapsed().as_secs_f64();
        while metrics.scheduled.load(Ordering::Relaxed) < 2 * pods_total as u64 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let secs = t0.elapsed().as_secs_f64();
        println!(
            "scheduler (live): {pods_total} pods created in {created:.2} s, all bound after {secs:.2} s = {:.0} pods/s",
            pods_total as f64 / secs,
        );
        let list = call(&c, "GET", PODS, Value::Null).await?;
        let unbound = list["items"].as_array().unwrap().iter().filter(|p| p["spec"]["nodeName"].is_null()).count();
        assert_eq!(unbound, 0);
        stop.send(true)?;
        within(10, "the scheduler did not stop", handle).await?;
        Ok(())
    })
    .await
}
