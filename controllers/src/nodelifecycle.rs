//! The node lifecycle controller and taint-based eviction, as kube-controller-manager's
//! `node-lifecycle-controller` and `taint-eviction-controller` behave:
//!
//! - **Noticing silence.** A node is alive while its Lease in `kube-node-lease` is renewed
//!   or its Ready condition's heartbeat moves. Both are timed by this controller's own clock
//!   from the moment it saw them change (never by the timestamps written on other
//!   machines). A node silent for longer than the grace period gets its Ready,
//!   MemoryPressure, DiskPressure and PIDPressure conditions set to `Unknown`
//!   (`NodeStatusUnknown`, "Kubelet stopped posting node status."), and the pods on it are
//!   marked not Ready, so Services stop sending them traffic.
//! - **Registering nodes.** A Node without a Ready condition yet is neither tainted nor
//!   counted in its zone's health (kube's taints follow the conditions a node reported).
//! - **Taints.** A node whose Ready is `Unknown` gets `node.kubernetes.io/unreachable`, one
//!   whose Ready is `False` gets `node.kubernetes.io/not-ready`: the `NoSchedule` taint at
//!   once (nothing new lands there) and the `NoExecute` taint through a per-zone rate
//!   limiter. Recovery (Ready `True` again) removes both at once.
//! - **Zone disruption.** A zone with more than [`UNHEALTHY_ZONE_THRESHOLD`] of its nodes
//!   (and more than two) unhealthy is partially disrupted: NoExecute tainting slows to
//!   [`SECONDARY_EVICTION_NODES_PER_S`] in large zones and stops in small ones; when every
//!   zone is fully disrupted the controller assumes the fault is its own (or the network's)
//!   and evicts nothing, removing the NoExecute taints it placed — a zone-wide or
//!   cluster-wide outage never evicts everything at once.
//! - **Taint-based eviction.** A pod on a node with NoExecute taints is deleted at once if
//!   it does not tolerate one of them, after the smallest `tolerationSeconds` of the
//!   tolerations it uses (counted from the taint's `timeAdded`), or never when they have
//!   none. The pod first gets the `DisruptionTarget` condition
//!   (`DeletionByTaintManager`). Its controller then replaces it on a healthy node.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod, PodCondition, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Api, Client};
use serde_json::json;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::runtime::{Informer, key_of};
use crate::scheduler::filters::tolerates;

/// How often node health is checked (kube's `--node-monitor-period`).
pub const NODE_MONITOR_PERIOD_MS: u64 = 5_000;
/// How long a node may stay silent before it is `Unknown` (kube's
/// `--node-monitor-grace-period`, 50 s since 1.32).
pub const NODE_MONITOR_GRACE_PERIOD_S: u64 = 50;
/// How often due taint-based evictions are carried out.
pub const EVICTION_TICK_MS: u64 = 1_000;
/// Nodes tainted NoExecute per second per healthy (or fully down) zone
/// (kube's `--node-eviction-rate`).
pub const EVICTION_NODES_PER_S: f64 = 0.1;
/// ...in a partially disrupted zone of more than [`LARGE_CLUSTER_NODES_MIN`] nodes
/// (kube's `--secondary-node-eviction-rate`); smaller disrupted zones get none.
pub const SECONDARY_EVICTION_NODES_PER_S: f64 = 0.01;
/// A zone larger than this counts as large (kube's `--large-cluster-size-threshold`).
pub const LARGE_CLUSTER_NODES_MIN: usize = 50;
/// The unhealthy fraction of a zone (with more than two unhealthy nodes) that makes it
/// partially disrupted (kube's `--unhealthy-zone-threshold`).
pub const UNHEALTHY_ZONE_THRESHOLD: f64 = 0.55;
/// Node and pod writes in flight at once.
pub const WRITES_INFLIGHT_MAX: usize = 64;

pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
const CONDITIONS_SET_UNKNOWN: [&str; 4] =
    ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Ready,
    NotReady,
    Unknown,
    /// No Ready condition yet: a node still registering. Neither tainted nor counted in its
    /// zone's health until it reports or stays silent past the grace period.
    Pending,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZoneState {
    Normal,
    PartialDisruption,
    FullDisruption,
}

/// kube's `ComputeZoneState`: from a zone's node count and unhealthy count.
pub fn zone_state(nodes: usize, unhealthy: usize) -> ZoneState {
    if nodes > 0 && unhealthy == nodes {
        ZoneState::FullDisruption
    } else if unhealthy > 2 && unhealthy as f64 / nodes.max(1) as f64 >= UNHEALTHY_ZONE_THRESHOLD {
        ZoneState::PartialDisruption
    } else {
        ZoneState::Normal
    }
}

/// How many nodes per second a zone in `state` of `nodes` nodes may get NoExecute taints.
pub fn eviction_rate(state: ZoneState, nodes: usize) -> f64 {
    match state {
        ZoneState::Normal | ZoneState::FullDisruption => EVICTION_NODES_PER_S,
        ZoneState::PartialDisruption if nodes > LARGE_CLUSTER_NODES_MIN => {
            SECONDARY_EVICTION_NODES_PER_S
        }
        ZoneState::PartialDisruption => 0.0,
    }
}

fn ready_condition(n: &Node) -> Option<&NodeCondition> {
    n.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
}

/// The node's health as its Ready condition states it.
pub fn stated_health(n: &Node) -> Health {
    match ready_condition(n).map(|c| c.status.as_str()) {
        Some("True") => Health::Ready,
        Some("False") => Health::NotReady,
        Some(_) => Health::Unknown,
        None => Health::Pending,
    }
}

fn taints(n: &Node) -> &[Taint] {
    n.spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default()
}

fn has_taint(n: &Node, key: &str, effect: &str) -> bool {
    taints(n).iter().any(|t| t.key == key && t.effect == effect)
}

/// When a pod on a node with these NoExecute taints must go: `Some(now-or-past)` at once,
/// `Some(t)` later, `None` never (kube's `getMinTolerationTime` over the used tolerations).
pub fn eviction_time(pod: &Pod, no_execute: &[Taint], now: Timestamp) -> Option<Timestamp> {
    let tolerations = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or_default();
    let mut due: Option<Timestamp> = None;
    for taint in no_execute {
        let used: Vec<_> = tolerations.iter().filter(|t| tolerates(t, taint)).collect();
        if used.is_empty() {
            return Some(now);
        }
        // The smallest finite toleration of this taint; any unbounded one... kube takes
        // the minimum over every used toleration, unbounded ones counting as infinite.
        let secs = used.iter().filter_map(|t| t.toleration_seconds).min();
        if let Some(s) = secs {
            let since = taint.time_added.as_ref().map_or(now, |t| t.0);
            let at = since
                .checked_add(jiff::SignedDuration::from_secs(s.max(0)))
                .unwrap_or(since);
            due = Some(due.map_or(at, |d| d.min(at)));
        }
    }
    due
}

/// Token bucket of one zone (burst 1, as kube's eviction limiter).
#[derive(Debug)]
struct ZoneLimiter {
    tokens: f64,
    last: Instant,
    /// Nodes waiting for their NoExecute taint, in the order they went unhealthy.
    waiting: VecDeque<String>,
}

impl ZoneLimiter {
    fn new() -> Self {
        Self {
            tokens: 1.0,
            last: Instant::now(),
            waiting: VecDeque::new(),
        }
    }

    fn refill(&mut self, rate: f64) {
        let now = Instant::now();
        self.tokens = (self.tokens + rate * (now - self.last).as_secs_f64()).min(1.0);
        self.last = now;
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct NodeLifecycleConfig {
    /// How long a silent node stays as it was; `None`: [`NODE_MONITOR_GRACE_PERIOD_S`].
    pub grace_period: Option<Duration>,
}

pub struct NodeLifecycleController {
    client: Client,
    nodes: Arc<Informer<Node>>,
    pods: Arc<Informer<Pod>>,
    grace: Duration,
    /// When each node was last seen alive (a Lease renewal or a heartbeat), by our clock.
    probes: Mutex<HashMap<String, Instant>>,
    /// Pod keys per node name.
    pods_by_node: Mutex<HashMap<String, HashSet<String>>>,
    zones: Mutex<HashMap<String, ZoneLimiter>>,
    /// Pods whose eviction has been sent (until they are gone from the cache).
    evicting: Mutex<HashSet<String>>,
    /// Whether a task marking pods not Ready is running.
    marking_pods: AtomicBool,
    /// Wakes the monitor early: a node reported Ready while still carrying our taints.
    wake: tokio::sync::Notify,
}

fn pod_node(p: &Pod) -> Option<&str> {
    p.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

impl NodeLifecycleController {
    /// Wires the handlers; the informers are started by the caller.
    pub fn new(
        client: Client,
        nodes: Arc<Informer<Node>>,
        leases: &Arc<Informer<Lease>>,
        pods: Arc<Informer<Pod>>,
        cfg: NodeLifecycleConfig,
    ) -> Arc<Self> {
        let c = Arc::new(Self {
            client,
            nodes: nodes.clone(),
            pods: pods.clone(),
            grace: cfg
                .grace_period
                .unwrap_or(Duration::from_secs(NODE_MONITOR_GRACE_PERIOD_S)),
            probes: Mutex::new(HashMap::new()),
            pods_by_node: Mutex::new(HashMap::new()),
            zones: Mutex::new(HashMap::new()),
            evicting: Mutex::new(HashSet::new()),
            marking_pods: AtomicBool::new(false),
            wake: tokio::sync::Notify::new(),
        });
        {
            let w = Arc::downgrade(&c);
            leases.on_change(move |old, new| {
                let Some(c) = w.upgrade() else { return };
                let Some(n) = new else { return };
                if n.metadata.namespace.as_deref() != Some("kube-node-lease") {
                    return;
                }
                let renew = |l: &Lease| l.spec.as_ref().and_then(|s| s.renew_time.clone());
                if old.is_none_or(|o| renew(o) != renew(n)) {
                    c.probe(n.metadata.name.as_deref().unwrap_or_default());
                }
            });
        }
        {
            let w = Arc::downgrade(&c);
            nodes.on_change(move |old, new| {
                let Some(c) = w.upgrade() else { return };
                match new {
                    Some(n) => {
                        let beat = |n: &Node| {
                            ready_condition(n)
                                .map(|r| (r.last_heartbeat_time.clone(), r.status.clone()))
                        };
                        if old.is_none_or(|o| beat(o) != beat(n))
                            && stated_health(n) != Health::Unknown
                        {
                            c.probe(n.metadata.name.as_deref().unwrap_or_default());
                        }
                        // Recovered: lift the taints now, not at the next pass.
                        let ours = taints(n)
                            .iter()
                            .any(|t| t.key == TAINT_UNREACHABLE || t.key == TAINT_NOT_READY);
                        if ours && stated_health(n) == Health::Ready {
                            c.wake.notify_one();
                        }
                    }
                    None => {
                        if let Some(o) = old {
                            let name = o.metadata.name.as_deref().unwrap_or_default();
                            lock(&c.probes).remove(name);
                        }
                    }
                }
            });
        }
        {
            let w = Arc::downgrade(&c);
            pods.on_change(move |old, new| {
                let Some(c) = w.upgrade() else { return };
                let mut idx = lock(&c.pods_by_node);
                if let Some(o) = old
                    && let Some(node) = pod_node(o)
                    && new.is_none_or(|n| pod_node(n) != Some(node))
                    && let Some(s) = idx.get_mut(node)
                {
                    s.remove(&key_of(o));
                    if s.is_empty() {
                        idx.remove(node);
                    }
                }
                match new {
                    Some(n) => {
                        if let Some(node) = pod_node(n) {
                            idx.entry(node.to_string()).or_default().insert(key_of(n));
                        }
                    }
                    None => {
                        if let Some(o) = old {
                            lock(&c.evicting).remove(&key_of(o));
                        }
                    }
                }
            });
        }
        c
    }

    fn probe(&self, node: &str) {
        lock(&self.probes).insert(node.to_string(), Instant::now());
    }

    /// Runs the monitor and the eviction loop until `shutdown`; call once the informers
    /// are synced.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        // Every node starts with a full grace period from now (kube does the same at start).
        for n in self.nodes.filter(|_| true) {
            let name = n.metadata.name.as_deref().unwrap_or_default();
            lock(&self.probes)
                .entry(name.to_string())
                .or_insert_with(Instant::now);
        }
        let mut monitor = tokio::time::interval(Duration::from_millis(NODE_MONITOR_PERIOD_MS));
        monitor.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut evict = tokio::time::interval(Duration::from_millis(EVICTION_TICK_MS));
        evict.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.changed() => {
                    if *shutdown.borrow() { return; }
                }
                _ = monitor.tick() => self.clone().monitor_nodes().await,
                () = self.wake.notified() => self.clone().monitor_nodes().await,
                _ = evict.tick() => self.evict_due_pods().await,
            }
        }
    }

    /// The node's health: what it states, or `Unknown` once it has been silent too long.
    fn health(&self, n: &Node) -> Health {
        let name = n.metadata.name.as_deref().unwrap_or_default();
        let silent = lock(&self.probes)
            .get(name)
            .is_some_and(|at| at.elapsed() > self.grace);
        if silent {
            Health::Unknown
        } else {
            stated_health(n)
        }
    }

    /// One pass of kube's `monitorNodeHealth`.
    async fn monitor_nodes(self: Arc<Self>) {
        let nodes = self.nodes.filter(|_| true);
        let mut writes: Vec<futures::future::BoxFuture<'_, ()>> = Vec::new();
        let mut not_ready_pods: Vec<Arc<Pod>> = Vec::new();
        // Zone sizes and unhealthy counts.
        let mut zone_counts: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        let mut health_of: HashMap<String, Health> = HashMap::new();
        for n in &nodes {
            let name = n.metadata.name.clone().unwrap_or_default();
            let h = self.health(n);
            if h != Health::Pending {
                let e = zone_counts.entry(zone_of(n)).or_default();
                e.0 += 1;
                if h != Health::Ready {
                    e.1 += 1;
                }
            }
            if h == Health::Unknown && stated_health(n) != Health::Unknown {
                writes.push(Box::pin(self.set_unknown(n.clone())));
            }
            health_of.insert(name, h);
        }
        let states: BTreeMap<&str, ZoneState> = zone_counts
            .iter()
            .map(|(z, (n, u))| (z.as_str(), zone_state(*n, *u)))
            .collect();
        let all_down =
            !states.is_empty() && states.values().all(|s| *s == ZoneState::FullDisruption);
        if all_down {
            tracing::warn!(
                "every zone is fully disrupted: assuming the fault is not the nodes'; no evictions"
            );
        }
        {
            let mut zones = lock(&self.zones);
            for (zone, (count, _)) in &zone_counts {
                let state = states
                    .get(zone.as_str())
                    .copied()
                    .unwrap_or(ZoneState::Normal);
                let z = zones.entry(zone.clone()).or_insert_with(ZoneLimiter::new);
                z.refill(eviction_rate(state, *count));
            }
        }
        for n in &nodes {
            let name = n.metadata.name.clone().unwrap_or_default();
            let h = health_of.get(&name).copied().unwrap_or(Health::Ready);
            let want_key = match h {
                Health::Ready | Health::Pending => None,
                Health::NotReady => Some(TAINT_NOT_READY),
                Health::Unknown => Some(TAINT_UNREACHABLE),
            };
            let mut add: Vec<(&str, &str)> = Vec::new();
            let mut remove: Vec<(&str, &str)> = Vec::new();
            for key in [TAINT_UNREACHABLE, TAINT_NOT_READY] {
                if Some(key) != want_key {
                    for effect in ["NoSchedule", "NoExecute"] {
                        if has_taint(n, key, effect) {
                            remove.push((key, effect));
                        }
                    }
                }
            }
            if let Some(key) = want_key {
                if !has_taint(n, key, "NoSchedule") {
                    add.push((key, "NoSchedule"));
                }
                if all_down {
                    if has_taint(n, key, "NoExecute") {
                        remove.push((key, "NoExecute"));
                    }
                } else if !has_taint(n, key, "NoExecute") && self.take_eviction_token(n) {
                    add.push((key, "NoExecute"));
                }
            }
            if !add.is_empty() || !remove.is_empty() {
                writes.push(Box::pin(self.retaint(n.clone(), add, remove)));
            }
            // Pods on an unhealthy node stop being Ready (kube's MarkPodsNotReady).
            if h == Health::Unknown {
                not_ready_pods.extend(self.pods_on(&name).into_iter().filter(|p| {
                    crate::pods::is_ready(p) && p.metadata.deletion_timestamp.is_none()
                }));
            }
        }
        // Forget queued nodes that recovered or left.
        {
            let mut zones = lock(&self.zones);
            for z in zones.values_mut() {
                z.waiting.retain(|n| {
                    health_of
                        .get(n)
                        .is_some_and(|h| matches!(h, Health::NotReady | Health::Unknown))
                });
            }
        }
        // Pods are marked by a task of their own, so that thousands of pod writes never
        // hold up the next pass (which notices the next silent nodes); one such task at a
        // time, and what it has not done yet the next pass finds again.
        if !not_ready_pods.is_empty() && !self.marking_pods.swap(true, Ordering::AcqRel) {
            let c = self.clone();
            tokio::spawn(async move {
                futures::stream::iter(not_ready_pods.into_iter().map(|p| c.mark_pod_not_ready(p)))
                    .buffer_unordered(WRITES_INFLIGHT_MAX)
                    .collect::<Vec<()>>()
                    .await;
                c.marking_pods.store(false, Ordering::Release);
            });
        }
        futures::stream::iter(writes)
            .buffer_unordered(WRITES_INFLIGHT_MAX)
            .collect::<Vec<()>>()
            .await;
    }

    /// Whether node `n` may get its NoExecute taint now (its zone's limiter has a token and
    /// it is first in line); queues it otherwise.
    fn take_eviction_token(&self, n: &Node) -> bool {
        let name = n.metadata.name.clone().unwrap_or_default();
        let mut zones = lock(&self.zones);
        let z = zones.entry(zone_of(n)).or_insert_with(ZoneLimiter::new);
        if !z.waiting.contains(&name) {
            z.waiting.push_back(name.clone());
        }
        if z.tokens >= 1.0 && z.waiting.front() == Some(&name) {
            z.tokens -= 1.0;
            z.waiting.pop_front();
            true
        } else {
            false
        }
    }

    fn pods_on(&self, node: &str) -> Vec<Arc<Pod>> {
        let keys: Vec<String> = lock(&self.pods_by_node)
            .get(node)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        self.pods.get_many(keys.iter().map(String::as_str))
    }

    async fn set_unknown(&self, n: Arc<Node>) {
        let name = n.metadata.name.clone().unwrap_or_default();
        let now = Time(Timestamp::now());
        let mut conditions = n
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        for t in CONDITIONS_SET_UNKNOWN {
            let unknown = NodeCondition {
                type_: t.to_string(),
                status: "Unknown".into(),
                reason: Some("NodeStatusUnknown".into()),
                message: Some("Kubelet stopped posting node status.".into()),
                last_transition_time: Some(now.clone()),
                last_heartbeat_time: None,
            };
            match conditions.iter_mut().find(|c| c.type_ == t) {
                Some(c) => {
                    c.status = unknown.status;
                    c.reason = unknown.reason;
                    c.message = unknown.message;
                    c.last_transition_time = unknown.last_transition_time;
                }
                None => conditions.push(unknown),
            }
        }
        let patch = json!({
            "metadata": {"resourceVersion": n.metadata.resource_version},
            "status": {"conditions": conditions},
        });
        let api: Api<Node> = Api::all(self.client.clone());
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => tracing::info!(node = name, "node stopped posting status: Ready Unknown"),
            Err(e) => tracing::debug!(
                node = name,
                "marking the node Unknown failed (next pass retries): {e}"
            ),
        }
    }

    async fn retaint(&self, n: Arc<Node>, add: Vec<(&str, &str)>, remove: Vec<(&str, &str)>) {
        let name = n.metadata.name.clone().unwrap_or_default();
        let now = Time(Timestamp::now());
        let mut ts: Vec<Taint> = taints(&n)
            .iter()
            .filter(|t| !remove.iter().any(|(k, e)| t.key == *k && t.effect == *e))
            .cloned()
            .collect();
        for (key, effect) in &add {
            ts.push(Taint {
                key: (*key).to_string(),
                effect: (*effect).to_string(),
                time_added: Some(now.clone()),
                value: None,
            });
        }
        let patch = json!({
            "metadata": {"resourceVersion": n.metadata.resource_version},
            "spec": {"taints": ts},
        });
        let api: Api<Node> = Api::all(self.client.clone());
        match api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => tracing::info!(node = name, ?add, ?remove, "node taints changed"),
            Err(e) => {
                tracing::debug!(
                    node = name,
                    "changing node taints failed (next pass retries): {e}"
                );
                // A NoExecute taint that did not land goes back to the front of the line.
                if add.iter().any(|(_, e)| *e == "NoExecute") {
                    let mut zones = lock(&self.zones);
                    if let Some(z) = zones.get_mut(&zone_of(&n)) {
                        z.tokens = (z.tokens + 1.0).min(1.0);
                        if !z.waiting.contains(&name) {
                            z.waiting.push_front(name);
                        }
                    }
                }
            }
        }
    }

    async fn mark_pod_not_ready(&self, p: Arc<Pod>) {
        let now = Time(Timestamp::now());
        let mut conditions = p
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        for c in conditions.iter_mut().filter(|c| c.type_ == "Ready") {
            c.status = "False".into();
            c.reason = Some("NodeNotReady".into());
            c.message = Some("the node this pod runs on is not ready".into());
            c.last_transition_time = Some(now.clone());
        }
        let patch = json!({
            "metadata": {"resourceVersion": p.metadata.resource_version},
            "status": {"conditions": conditions},
        });
        let api: Api<Pod> = Api::namespaced(
            self.client.clone(),
            p.metadata.namespace.as_deref().unwrap_or("default"),
        );
        let name = p.metadata.name.clone().unwrap_or_default();
        if let Err(e) = api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            tracing::debug!(
                pod = name,
                "marking a pod not ready failed (next pass retries): {e}"
            );
        }
    }

    /// Deletes the pods whose NoExecute toleration ran out.
    async fn evict_due_pods(&self) {
        let now = Timestamp::now();
        let tainted = self
            .nodes
            .filter(|n| taints(n).iter().any(|t| t.effect == "NoExecute"));
        let mut due = Vec::new();
        for n in tainted {
            let ne: Vec<Taint> = taints(&n)
                .iter()
                .filter(|t| t.effect == "NoExecute")
                .cloned()
                .collect();
            for p in self.pods_on(n.metadata.name.as_deref().unwrap_or_default()) {
                if p.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                if eviction_time(&p, &ne, now).is_some_and(|t| t <= now) {
                    let key = key_of(p.as_ref());
                    if lock(&self.evicting).insert(key) {
                        due.push(p);
                    }
                }
            }
        }
        futures::stream::iter(due.into_iter().map(|p| self.evict(p)))
            .buffer_unordered(WRITES_INFLIGHT_MAX)
            .collect::<Vec<()>>()
            .await;
    }

    async fn evict(&self, p: Arc<Pod>) {
        let ns = p.metadata.namespace.clone().unwrap_or_default();
        let name = p.metadata.name.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let mut conditions = p
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        conditions.retain(|c| c.type_ != "DisruptionTarget");
        conditions.push(PodCondition {
            type_: "DisruptionTarget".into(),
            status: "True".into(),
            reason: Some("DeletionByTaintManager".into()),
            message: Some("Taint manager: deleting due to NoExecute taint".into()),
            last_transition_time: Some(Time(Timestamp::now())),
            ..Default::default()
        });
        let patch = json!({"status": {"conditions": conditions}});
        if let Err(e) = api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            tracing::debug!(pod = name, "adding DisruptionTarget failed: {e}");
        }
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: p.metadata.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(&name, &dp).await {
            Ok(_) => {
                tracing::info!(pod = %format!("{ns}/{name}"), "evicted: its node has a NoExecute taint it does not tolerate (any longer)")
            }
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => {
                tracing::warn!(pod = name, "taint eviction failed (retried): {e}");
                lock(&self.evicting).remove(&key_of(p.as_ref()));
            }
        }
    }
}

fn zone_of(n: &Node) -> String {
    n.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(ZONE_LABEL))
        .cloned()
        .unwrap_or_default()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSpec, Toleration};

    fn taint(key: &str, at: Timestamp) -> Taint {
        Taint {
            key: key.into(),
            effect: "NoExecute".into(),
            time_added: Some(Time(at)),
            value: None,
        }
    }

    fn pod(tolerations: Vec<Toleration>) -> Pod {
        Pod {
            spec: Some(PodSpec {
                tolerations: Some(tolerations),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn tol(key: &str, secs: Option<i64>) -> Toleration {
        Toleration {
            key: Some(key.into()),
            operator: Some("Exists".into()),
            effect: Some("NoExecute".into()),
            toleration_seconds: secs,
            value: None,
        }
    }

    #[test]
    fn a_pod_without_a_matching_toleration_is_evicted_at_once() {
        let now = Timestamp::now();
        let p = pod(vec![tol(TAINT_NOT_READY, Some(300))]);
        assert_eq!(
            eviction_time(&p, &[taint(TAINT_UNREACHABLE, now)], now),
            Some(now)
        );
    }

    #[test]
    fn a_tolerating_pod_goes_after_its_seconds_counted_from_the_taint() {
        let now = Timestamp::now();
        let added = now - jiff::SignedDuration::from_secs(100);
        let p = pod(vec![tol(TAINT_UNREACHABLE, Some(300))]);
        let due = eviction_time(&p, &[taint(TAINT_UNREACHABLE, added)], now);
        assert_eq!(due, Some(added + jiff::SignedDuration::from_secs(300)));
    }

    #[test]
    fn a_toleration_without_seconds_keeps_the_pod_forever() {
        let now = Timestamp::now();
        let p = pod(vec![tol(TAINT_UNREACHABLE, None)]);
        assert_eq!(
            eviction_time(&p, &[taint(TAINT_UNREACHABLE, now)], now),
            None
        );
    }

    #[test]
    fn a_node_that_has_not_reported_yet_is_pending_not_unknown() {
        let n = Node::default();
        assert_eq!(stated_health(&n), Health::Pending);
    }

    #[test]
    fn zones_are_normal_partially_or_fully_disrupted_as_kube_counts() {
        assert_eq!(zone_state(10, 2), ZoneState::Normal);
        assert_eq!(zone_state(4, 3), ZoneState::PartialDisruption);
        assert_eq!(zone_state(2, 2), ZoneState::FullDisruption);
        assert_eq!(zone_state(100, 54), ZoneState::Normal);
        assert_eq!(zone_state(100, 55), ZoneState::PartialDisruption);
        assert_eq!(eviction_rate(ZoneState::PartialDisruption, 10), 0.0);
        assert_eq!(
            eviction_rate(ZoneState::PartialDisruption, 100),
            SECONDARY_EVICTION_NODES_PER_S
        );
    }
}
