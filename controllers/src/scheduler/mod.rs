//! The scheduler: assigns pending pods to nodes, as kube-scheduler's default profile does.
//!
//! Start at [`run`]. One task owns all scheduling state (no locks):
//! - three watchers (nodes, pods, namespaces; `kube::runtime::watcher`: list+watch, resume
//!   from the last resourceVersion, relist on 410) feed one bounded channel;
//! - the [`cache::Cache`] counts every assigned pod on its node, plus *assumed* pods: placed
//!   the moment a node is chosen, before the binding returns, forgotten if it fails, so
//!   concurrent bindings never overcommit a node;
//! - the [`queue::SchedulingQueue`] orders pending pods (priority, then age) with
//!   per-pod back-off and an unschedulable set retried on cluster changes;
//! - [`algorithm::select_node`] filters a rotating sample of nodes ([`filters`]), scores the
//!   feasible ones ([`scores`]) and picks the best;
//! - bindings (`POST pods/{name}/binding`) run as tasks, at most
//!   [`SchedulerConfig::binds_inflight_max`] at once: the loop never awaits one;
//! - Events and `PodScheduled=False` status writes go through bounded queues drained by
//!   writer tasks; when full they are dropped and counted ([`Metrics`]), never slowing
//!   scheduling.
//!
//! # Not implemented
//! - **No preemption**: a pod that fits nowhere waits; the message says preemption is not
//!   helpful, as kube-scheduler's does when it finds no victims.
//! - No volume plugins (VolumeBinding, VolumeZone, limits), no DRA, no extenders, a single
//!   profile.
//! - The system default spreading (pods owned by a ReplicaSet, StatefulSet or
//!   ReplicationController) counts the pods with the same controller, where kube derives a
//!   label selector from the owning workload and the Services selecting the pod.

pub mod algorithm;
pub mod cache;
pub mod filters;
pub mod labels;
pub mod quantity;
pub mod queue;
pub mod scores;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{
    Binding, Event as CoreEvent, EventSource, Namespace, Node, ObjectReference, Pod,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event as WatchEvent};
use rand::SeedableRng;
use rand::rngs::SmallRng;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use cache::{Cache, PodInfo};
use queue::{SchedulingQueue, State};

/// Watch events (nodes, pods, namespaces together) buffered between the watchers and the
/// scheduling loop; a full buffer makes the watchers wait.
pub const WATCH_QUEUE_EVENTS_MAX: usize = 4_096;
/// Watch events applied before the loop schedules again (keeps both moving).
pub const WATCH_BATCH_EVENTS_MAX: usize = 1_024;
/// Pods scheduled before the loop looks at watch events and binding results again.
pub const SCHEDULE_BATCH_PODS_MAX: usize = 128;
/// Default bound on bindings in flight.
pub const BINDS_INFLIGHT_MAX_DEFAULT: usize = 64;
/// Default bound on Events waiting to be written.
pub const EVENT_QUEUE_EVENTS_MAX_DEFAULT: usize = 8_192;
/// Default bound on PodScheduled=False status writes waiting.
pub const STATUS_QUEUE_WRITES_MAX_DEFAULT: usize = 8_192;
/// Events or status writes sent to the API at once, per writer.
pub const API_WRITES_INFLIGHT_MAX: usize = 8;
/// Longest wait of the loop when nothing happens (it then checks timers).
pub const IDLE_WAKE_INTERVAL_MS: u64 = 1_000;
/// The scheduler's name on Events when none is configured.
pub const DEFAULT_SCHEDULER_NAME: &str = "default-scheduler";

/// Counters, readable while the scheduler runs (tests and metrics).
#[derive(Debug, Default)]
pub struct Metrics {
    /// Bindings that succeeded.
    pub scheduled: AtomicU64,
    /// Bindings the API refused or that failed.
    pub bind_errors: AtomicU64,
    /// Scheduling attempts where no node fit.
    pub unschedulable_attempts: AtomicU64,
    /// Events dropped because their queue was full.
    pub events_dropped: AtomicU64,
    /// Events the API refused.
    pub event_errors: AtomicU64,
    /// PodScheduled=False writes dropped because their queue was full (retried with the pod).
    pub status_writes_dropped: AtomicU64,
    /// Pending pods refused because the queue held [`queue::PENDING_PODS_MAX`].
    pub pending_dropped: AtomicU64,
    /// Time spent choosing nodes (filters and scores), in microseconds.
    pub algorithm_us: AtomicU64,
}

/// What [`run`] needs.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Pods whose `spec.schedulerName` is this (or empty) are ours.
    pub scheduler_name: String,
    /// Bindings in flight at once.
    pub binds_inflight_max: usize,
    /// Events waiting to be written; more are dropped and counted.
    pub event_queue_events_max: usize,
    /// Status writes waiting; more are dropped and counted.
    pub status_queue_writes_max: usize,
    pub metrics: Arc<Metrics>,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            scheduler_name: DEFAULT_SCHEDULER_NAME.to_string(),
            binds_inflight_max: BINDS_INFLIGHT_MAX_DEFAULT,
            event_queue_events_max: EVENT_QUEUE_EVENTS_MAX_DEFAULT,
            status_queue_writes_max: STATUS_QUEUE_WRITES_MAX_DEFAULT,
            metrics: Arc::default(),
        }
    }
}

/// Why the scheduler stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A watcher task ended (it retries errors with back-off, so only a panic ends it).
    #[error("the {resource} watcher stopped")]
    WatcherStopped { resource: &'static str },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One watch event (boxed: a Pod is large and the channel holds thousands).
enum Update {
    Node(Box<WatchEvent<Node>>),
    Pod(Box<WatchEvent<Pod>>),
    Namespace(Box<WatchEvent<Namespace>>),
}

struct BindResult {
    pod: Arc<PodInfo>,
    node: String,
    result: Result<(), kube::Error>,
}

struct StatusWrite {
    namespace: String,
    name: String,
    message: String,
}

/// Runs the scheduler until `shutdown` becomes true (or its sender is dropped).
///
/// # Errors
/// [`Error::WatcherStopped`] if a watcher task dies; API errors are logged and retried.
pub async fn run(
    client: kube::Client,
    cfg: SchedulerConfig,
    mut shutdown: watch::Receiver<bool>,
) -> Result<()> {
    let mut tasks = JoinSet::new();
    let (up_tx, mut up_rx) = mpsc::channel(WATCH_QUEUE_EVENTS_MAX);
    spawn_watcher(
        &mut tasks,
        Api::<Node>::all(client.clone()),
        up_tx.clone(),
        Update::Node,
    );
    spawn_watcher(
        &mut tasks,
        Api::<Pod>::all(client.clone()),
        up_tx.clone(),
        Update::Pod,
    );
    spawn_watcher(
        &mut tasks,
        Api::<Namespace>::all(client.clone()),
        up_tx,
        Update::Namespace,
    );
    let (event_tx, event_rx) = mpsc::channel(cfg.event_queue_events_max.max(1));
    tasks.spawn(write_events(client.clone(), event_rx, cfg.metrics.clone()));
    let (status_tx, status_rx) = mpsc::channel(cfg.status_queue_writes_max.max(1));
    tasks.spawn(write_statuses(client.clone(), status_rx));
    let binds_max = cfg.binds_inflight_max.max(1);
    let (bind_tx, mut bind_rx) = mpsc::channel(binds_max);

    let mut s = Loop {
        client,
        cfg,
        cache: Cache::default(),
        queue: SchedulingQueue::default(),
        rng: SmallRng::from_os_rng(),
        next_start: 0,
        inflight: 0,
        binds_max,
        bind_tx,
        event_tx,
        status_tx,
        relist_nodes: None,
        relist_pods: None,
        relist_namespaces: None,
        nodes_synced: false,
        pods_synced: false,
        cluster_changed: false,
        pod_assigned: false,
        last_flush: Instant::now(),
        event_seq: 0,
    };
    info!(scheduler = %s.cfg.scheduler_name, "scheduler started");
    loop {
        if *shutdown.borrow() {
            break;
        }
        // Apply what has arrived, without waiting.
        for _ in 0..WATCH_BATCH_EVENTS_MAX {
            match up_rx.try_recv() {
                Ok(u) => s.apply(u),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    return Err(Error::WatcherStopped {
                        resource: "pod/node",
                    });
                }
            }
        }
        while let Ok(r) = bind_rx.try_recv() {
            s.bound(r);
        }
        let now = Instant::now();
        if s.cluster_changed {
            s.cluster_changed = false;
            s.pod_assigned = false;
            s.queue.move_all_unschedulable(now);
        }
        if s.pod_assigned {
            s.pod_assigned = false;
            s.queue
                .move_unschedulable_if(now, |p| !p.required_affinity.is_empty());
        }
        if now.duration_since(s.last_flush) >= Duration::from_secs(1) {
            s.last_flush = now;
            s.queue.flush_unschedulable(now);
            s.queue.compact();
        }
        let mut scheduled = 0;
        if s.nodes_synced && s.pods_synced {
            while scheduled < SCHEDULE_BATCH_PODS_MAX && s.inflight < s.binds_max {
                let Some(pod) = s.queue.pop(now) else { break };
                s.schedule_one(pod, now);
                scheduled += 1;
            }
        }
        if scheduled == SCHEDULE_BATCH_PODS_MAX {
            tokio::task::yield_now().await;
            continue;
        }
        // Nothing more to do now: wait for an update, a binding, a back-off or a tick.
        let idle = now + Duration::from_millis(IDLE_WAKE_INTERVAL_MS);
        let wake = s.queue.next_backoff().map_or(idle, |t| t.min(idle));
        tokio::select! {
            changed = shutdown.changed() => {
                // A dropped sender can never say "stop" again: treat it as stop.
                if changed.is_err() {
                    break;
                }
            }
            u = up_rx.recv() => match u {
                Some(u) => s.apply(u),
                None => return Err(Error::WatcherStopped { resource: "pod/node" }),
            },
            Some(r) = bind_rx.recv() => s.bound(r),
            _ = tokio::time::sleep_until(wake) => {}
        }
    }
    tasks.abort_all();
    info!(
        scheduled = s.cfg.metrics.scheduled.load(Ordering::Relaxed),
        "scheduler stopped"
    );
    Ok(())
}

fn spawn_watcher<K>(
    tasks: &mut JoinSet<()>,
    api: Api<K>,
    tx: mpsc::Sender<Update>,
    wrap: fn(Box<WatchEvent<K>>) -> Update,
) where
    K: kube::Resource
        + Clone
        + k8s_openapi::serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static,
{
    tasks.spawn(async move {
        let mut stream = watcher::watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        loop {
            match stream.try_next().await {
                Ok(Some(ev)) => {
                    if tx.send(wrap(Box::new(ev))).await.is_err() {
                        return;
                    }
                }
                Ok(None) => return,
                Err(e) => warn!(error = %e, "watch failed; retrying"),
            }
        }
    });
}

/// The scheduling loop's state.
struct Loop {
    client: kube::Client,
    cfg: SchedulerConfig,
    cache: Cache,
    queue: SchedulingQueue,
    rng: SmallRng,
    next_start: usize,
    inflight: usize,
    binds_max: usize,
    bind_tx: mpsc::Sender<BindResult>,
    event_tx: mpsc::Sender<CoreEvent>,
    status_tx: mpsc::Sender<StatusWrite>,
    relist_nodes: Option<HashSet<String>>,
    relist_pods: Option<HashSet<String>>,
    relist_namespaces: Option<HashSet<String>>,
    nodes_synced: bool,
    pods_synced: bool,
    /// A node was added or changed, or a pod left a node: retry unschedulable pods.
    cluster_changed: bool,
    /// A pod was newly counted on a node: retry unschedulable pods with required pod
    /// affinity (the new pod may be what they wait for).
    pod_assigned: bool,
    last_flush: Instant,
    event_seq: u64,
}

impl Loop {
    fn apply(&mut self, u: Update) {
        match u {
            Update::Node(ev) => self.apply_node(*ev),
            Update::Pod(ev) => self.apply_pod(*ev),
            Update::Namespace(ev) => self.apply_namespace(*ev),
        }
    }

    fn apply_node(&mut self, ev: WatchEvent<Node>) {
        match ev {
            WatchEvent::Init => self.relist_nodes = Some(HashSet::new()),
            WatchEvent::InitApply(n) | WatchEvent::Apply(n) => {
                if let Some(seen) = &mut self.relist_nodes {
                    seen.insert(n.metadata.name.clone().unwrap_or_default());
                }
                if self.cache.upsert_node(&n) {
                    self.cluster_changed = true;
                }
            }
            WatchEvent::Delete(n) => self
                .cache
                .remove_node(n.metadata.name.as_deref().unwrap_or_default()),
            WatchEvent::InitDone => {
                if let Some(seen) = self.relist_nodes.take() {
                    for name in self.cache.node_names() {
                        if !seen.contains(&name) {
                            self.cache.remove_node(&name);
                        }
                    }
                }
                self.nodes_synced = true;
                self.cluster_changed = true;
            }
        }
    }

    fn apply_namespace(&mut self, ev: WatchEvent<Namespace>) {
        match ev {
            WatchEvent::Init => self.relist_namespaces = Some(HashSet::new()),
            WatchEvent::InitApply(ns) | WatchEvent::Apply(ns) => {
                let name = ns.metadata.name.clone().unwrap_or_default();
                if let Some(seen) = &mut self.relist_namespaces {
                    seen.insert(name.clone());
                }
                let labels = ns.metadata.labels.unwrap_or_default();
                if self.cache.namespaces.insert(name, labels.clone()) != Some(labels) {
                    self.cluster_changed = true;
                }
            }
            WatchEvent::Delete(ns) => {
                self.cache
                    .namespaces
                    .remove(ns.metadata.name.as_deref().unwrap_or_default());
            }
            WatchEvent::InitDone => {
                if let Some(seen) = self.relist_namespaces.take() {
                    self.cache.namespaces.retain(|n, _| seen.contains(n));
                }
            }
        }
    }

    fn apply_pod(&mut self, ev: WatchEvent<Pod>) {
        match ev {
            WatchEvent::Init => self.relist_pods = Some(HashSet::new()),
            WatchEvent::InitApply(p) | WatchEvent::Apply(p) => {
                let info = PodInfo::from_pod(&p);
                if let Some(seen) = &mut self.relist_pods {
                    seen.insert(info.uid.clone());
                }
                self.pod_changed(info);
            }
            WatchEvent::Delete(p) => {
                let uid = p.metadata.uid.unwrap_or_default();
                self.pod_gone(&uid);
            }
            WatchEvent::InitDone => {
                if let Some(seen) = self.relist_pods.take() {
                    for uid in self.cache.pod_uids() {
                        let assumed = self.cache.pod(&uid).is_some_and(|p| p.assumed);
                        if !seen.contains(&uid) && !assumed {
                            self.pod_gone(&uid);
                        }
                    }
                    for uid in self.queue.uids() {
                        let inflight = self
                            .queue
                            .get(&uid)
                            .is_some_and(|q| q.state == State::InFlight);
                        if !seen.contains(&uid) && !inflight {
                            self.queue.remove(&uid);
                        }
                    }
                }
                self.pods_synced = true;
            }
        }
    }

    fn pod_gone(&mut self, uid: &str) {
        if self
            .queue
            .get(uid)
            .is_some_and(|q| q.state != State::InFlight)
        {
            self.queue.remove(uid);
        }
        if self.cache.remove_pod(uid).is_some() {
            self.cluster_changed = true;
        }
    }

    fn pod_changed(&mut self, info: PodInfo) {
        let uid = info.uid.clone();
        if !info.node_name.is_empty() {
            // Assigned (by us or anyone): counted on its node until it finishes.
            if self
                .queue
                .get(&uid)
                .is_some_and(|q| q.state != State::InFlight)
            {
                self.queue.remove(&uid);
            }
            if info.finished {
                if self.cache.remove_pod(&uid).is_some() {
                    self.cluster_changed = true;
                }
            } else {
                if self.cache.pod(&uid).is_none_or(|p| p.assumed) {
                    self.pod_assigned = true;
                }
                let node = info.node_name.clone();
                self.cache.add_pod(&node, Arc::new(info), false);
            }
            return;
        }
        let ours = info.scheduler_name.is_empty() || info.scheduler_name == self.cfg.scheduler_name;
        if !ours || info.terminating || info.finished {
            self.pod_gone(&uid);
            return;
        }
        let changed = self.queue.get(&uid).is_some_and(|q| *q.pod != info);
        if !self
            .queue
            .add_or_update(Arc::new(info), changed, Instant::now())
        {
            self.cfg
                .metrics
                .pending_dropped
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    fn schedule_one(&mut self, pod: Arc<PodInfo>, now: Instant) {
        let t0 = std::time::Instant::now();
        let choice = algorithm::select_node(&self.cache, &pod, &mut self.next_start, &mut self.rng);
        let us = u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.cfg
            .metrics
            .algorithm_us
            .fetch_add(us, Ordering::Relaxed);
        match choice {
            Ok(p) => {
                let node = self.cache.node(p.node).name.clone();
                debug!(pod = %pod.name, %node, evaluated = p.evaluated, feasible = p.feasible, "assumed");
                self.cache.add_pod(&node, pod.clone(), true);
                self.inflight += 1;
                let api: Api<Pod> = Api::namespaced(self.client.clone(), &pod.namespace);
                let tx = self.bind_tx.clone();
                tokio::spawn(async move {
                    let binding = Binding {
                        metadata: ObjectMeta {
                            name: Some(pod.name.clone()),
                            namespace: Some(pod.namespace.clone()),
                            uid: Some(pod.uid.clone()),
                            ..Default::default()
                        },
                        target: ObjectReference {
                            api_version: Some("v1".into()),
                            kind: Some("Node".into()),
                            name: Some(node.clone()),
                            ..Default::default()
                        },
                    };
                    let result = api
                        .create_subresource::<_, serde_json::Value>(
                            "binding",
                            &pod.name,
                            &PostParams::default(),
                            &binding,
                        )
                        .await
                        .map(|_| ());
                    // The loop holds the receiver for as long as it runs.
                    let _ = tx.send(BindResult { pod, node, result }).await;
                });
            }
            Err(fit) => {
                self.cfg
                    .metrics
                    .unschedulable_attempts
                    .fetch_add(1, Ordering::Relaxed);
                self.queue.unschedulable(&pod.uid, now);
                let message = fit.to_string();
                debug!(pod = %pod.name, %message, "unschedulable");
                let changed = self
                    .queue
                    .get_mut(&pod.uid)
                    .map(|q| {
                        let changed = q.last_message.as_deref() != Some(message.as_str());
                        q.last_message = Some(message.clone());
                        changed
                    })
                    .unwrap_or(false);
                if changed {
                    let w = StatusWrite {
                        namespace: pod.namespace.clone(),
                        name: pod.name.clone(),
                        message: message.clone(),
                    };
                    if self.status_tx.try_send(w).is_err() {
                        self.cfg
                            .metrics
                            .status_writes_dropped
                            .fetch_add(1, Ordering::Relaxed);
                        if let Some(q) = self.queue.get_mut(&pod.uid) {
                            q.last_message = None; // written on the next attempt
                        }
                    }
                }
                self.event(&pod, "Warning", "FailedScheduling", "Scheduling", message);
            }
        }
    }

    fn bound(&mut self, r: BindResult) {
        self.inflight = self.inflight.saturating_sub(1);
        let uid = &r.pod.uid;
        match r.result {
            Ok(()) => {
                self.cfg.metrics.scheduled.fetch_add(1, Ordering::Relaxed);
                self.queue.remove(uid);
                let msg = format!(
                    "Successfully assigned {}/{} to {}",
                    r.pod.namespace, r.pod.name, r.node
                );
                self.event(&r.pod, "Normal", "Scheduled", "Binding", msg);
            }
            Err(e) => {
                self.cfg.metrics.bind_errors.fetch_add(1, Ordering::Relaxed);
                // Forget the assumption unless the watch already showed the pod bound.
                if self.cache.pod(uid).is_some_and(|p| p.assumed) {
                    self.cache.remove_pod(uid);
                }
                // Deleted, or bound by someone else: the watch says which. Any other
                // conflict (a write race inside the API) is retried.
                let gone = matches!(&e, kube::Error::Api(s)
                    if s.code == 404 || (s.code == 409 && s.message.contains("already assigned")));
                warn!(pod = %r.pod.name, node = %r.node, error = %e, "binding failed");
                if gone {
                    self.queue.remove(uid);
                } else {
                    self.queue.bind_failed(uid, Instant::now());
                    let msg = format!("Binding rejected: {e}");
                    self.event(&r.pod, "Warning", "FailedScheduling", "Binding", msg);
                }
            }
        }
    }

    /// Queues a core/v1 Event about `pod`; drops (and counts) it when the queue is full.
    fn event(&mut self, pod: &PodInfo, type_: &str, reason: &str, action: &str, message: String) {
        self.event_seq += 1;
        let now = jiff::Timestamp::now();
        let name = format!(
            "{}.{:x}{:04x}",
            pod.name,
            now.as_nanosecond(),
            self.event_seq & 0xffff
        );
        let component = self.cfg.scheduler_name.clone();
        let ev = CoreEvent {
            metadata: ObjectMeta {
                name: Some(name),
                namespace: Some(pod.namespace.clone()),
                ..Default::default()
            },
            involved_object: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(pod.name.clone()),
                namespace: Some(pod.namespace.clone()),
                uid: Some(pod.uid.clone()),
                ..Default::default()
            },
            reason: Some(reason.into()),
            message: Some(message),
            type_: Some(type_.into()),
            action: Some(action.into()),
            source: Some(EventSource {
                component: Some(component.clone()),
                host: None,
            }),
            reporting_component: Some(component),
            reporting_instance: Some(DEFAULT_SCHEDULER_NAME.into()),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            count: Some(1),
            ..Default::default()
        };
        if self.event_tx.try_send(ev).is_err() {
            self.cfg
                .metrics
                .events_dropped
                .fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn write_events(
    client: kube::Client,
    mut rx: mpsc::Receiver<CoreEvent>,
    metrics: Arc<Metrics>,
) {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
        .for_each_concurrent(API_WRITES_INFLIGHT_MAX, |ev| {
            let client = client.clone();
            let metrics = metrics.clone();
            async move {
                let ns = ev.metadata.namespace.clone().unwrap_or_default();
                let api: Api<CoreEvent> = Api::namespaced(client, &ns);
                if let Err(e) = api.create(&PostParams::default(), &ev).await {
                    metrics.event_errors.fetch_add(1, Ordering::Relaxed);
                    debug!(error = %e, "event not written");
                }
            }
        })
        .await;
}

async fn write_statuses(client: kube::Client, mut rx: mpsc::Receiver<StatusWrite>) {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
        .for_each_concurrent(API_WRITES_INFLIGHT_MAX, |w| {
            let client = client.clone();
            async move {
                let api: Api<Pod> = Api::namespaced(client, &w.namespace);
                let patch = serde_json::json!({"status": {"conditions": [{
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": w.message,
                    "lastProbeTime": null,
                    "lastTransitionTime": jiff::Timestamp::now().to_string(),
                }]}});
                if let Err(e) = api
                    .patch_status(&w.name, &PatchParams::default(), &Patch::Strategic(patch))
                    .await
                {
                    debug!(pod = %w.name, error = %e, "PodScheduled condition not written");
                }
            }
        })
        .await;
}
