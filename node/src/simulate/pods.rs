//! The kubelet's share of the pod lifecycle for every simulated node, in one task: one
//! list+watch over bound pods (`spec.nodeName!=`; kube-runtime's watcher resumes from the
//! last resourceVersion and relists on 410), a map of the pods on our nodes, one timer heap
//! for everything that happens later (exits, restarts, readiness delays, retries), and
//! status writes spawned with bounded concurrency.
//!
//! A pod has at most one write in flight; a change while it is in flight marks it dirty and
//! the latest status is written when the first write returns, so writes never overtake each
//! other. The status is built when the write starts, from the state at that moment.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::net::Ipv4Addr;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde_json::{Value, json};
use tokio::task::JoinSet;

use super::SimConfig;
use super::lifecycle::{PodShape, SimPod, after};
use super::objects::{IpPool, host_in_node_cidr, node_ip, node_name, pod_network, pod_status};

/// Pod status writes (with the deletes that follow a terminating pod's last status) in
/// flight at once, across all simulated nodes.
pub const STATUS_WRITES_INFLIGHT_MAX: usize = 64;
/// Pods waiting for a write slot. Each pod is queued at most once (a later change rides on
/// the queued write), and while the queue is this long the watch is not read: a slow API
/// server slows the simulation instead of growing memory.
const PENDING_WRITES_MAX: usize = 16_384;
/// Attempts per write for conflicts (409), throttling (429), server errors (5xx) and
/// transport errors; other errors (422…) are not retried.
const WRITE_ATTEMPTS_MAX: u32 = 6;
/// The first delay between write attempts; doubles per attempt (50, 100… 800 ms).
const WRITE_RETRY_DELAY_FIRST_MS: u64 = 50;
/// Timer entries handled per wake-up of the loop, so a burst of due timers cannot starve
/// the watch and the write completions.
const TIMERS_FIRED_PER_WAKE_MAX: usize = 4_096;
/// After a write gave up, the pod's status is written again this much later.
const FAILED_WRITE_RETRY_S: u64 = 5;
/// How long a deleted pod's containers take to stop once the deletion is seen. Real ones
/// take a moment to act on SIGTERM; an instant stop also let a replacement pod of the same
/// name (a StatefulSet's) appear before a client that deletes and then waits — kubectl
/// delete — had even started watching, and it waited for a deletion it could no longer see.
pub const CONTAINER_STOP_MS: u64 = 500;

enum WriteState {
    Idle,
    Queued,
    /// `dirty`: the pod changed after the in-flight status was built.
    InFlight {
        dirty: bool,
    },
}

/// What the simulation keeps per pod (its spec's shape, its life, its IP, its timer).
struct Tracked {
    namespace: String,
    node: usize,
    ip_host: Option<u8>,
    sim: SimPod,
    write: WriteState,
    /// The live timer-heap entry (others for this pod are stale and skipped).
    timer_at: Option<Timestamp>,
    /// A write gave up: write again at this time.
    retry_at: Option<Timestamp>,
    /// The pod is being deleted: its containers will have stopped at this time.
    stop_at: Option<Timestamp>,
}

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Written,
    /// The pod (or, for a delete, that pod's UID) no longer exists.
    Gone,
    Failed,
}

pub(super) struct Kubelet {
    client: kube::Client,
    run_time: Duration,
    nodes: HashMap<String, usize>,
    pools: Vec<IpPool>,
    pods: HashMap<String, Tracked>,
    pending: VecDeque<String>,
    timers: BinaryHeap<Reverse<(Timestamp, String)>>,
    inflight: JoinSet<(String, Outcome)>,
    /// During a (re)list: the pods it listed, so the ones it did not can be forgotten.
    relisted: Option<HashSet<String>>,
}

fn pod_ip(node: usize, host: u8) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(pod_network(node)) | u32::from(host))
}

fn retryable(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => s.code == 409 || s.code == 429 || s.code >= 500,
        _ => true,
    }
}

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

/// Writes a pod's status (a merge patch of `status`: every list in it is whole), then for a
/// terminating pod deletes it with grace 0 and a UID precondition, as kubelet ends the
/// graceful-deletion handshake.
async fn write(api: Api<Pod>, name: String, uid: String, patch: Value, delete: bool) -> Outcome {
    let mut delay = Duration::from_millis(WRITE_RETRY_DELAY_FIRST_MS);
    for attempt in 1..=WRITE_ATTEMPTS_MAX {
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => break,
            Err(e) if is_status(&e, 404) => return Outcome::Gone,
            Err(e) if retryable(&e) && attempt < WRITE_ATTEMPTS_MAX => {
                tracing::debug!(pod = name, attempt, error = %e, "pod status write failed; retrying");
                tokio::time::sleep(delay).await;
                delay = delay.saturating_mul(2);
            }
            Err(e) => {
                tracing::warn!(pod = name, attempt, error = %e, "pod status write failed; giving up for now");
                return Outcome::Failed;
            }
        }
    }
    if !delete {
        return Outcome::Written;
    }
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    let mut delay = Duration::from_millis(WRITE_RETRY_DELAY_FIRST_MS);
    for attempt in 1..=WRITE_ATTEMPTS_MAX {
        match api.delete(&name, &params).await {
            Ok(_) => return Outcome::Written,
            // 409 here is the UID precondition: a new pod took the name; ours is gone.
            Err(e) if is_status(&e, 404) || is_status(&e, 409) => return Outcome::Gone,
            Err(e) if retryable(&e) && attempt < WRITE_ATTEMPTS_MAX => {
                tokio::time::sleep(delay).await;
                delay = delay.saturating_mul(2);
            }
            Err(e) => {
                tracing::warn!(pod = name, attempt, error = %e, "deleting a terminated pod failed; giving up for now");
                return Outcome::Failed;
            }
        }
    }
    Outcome::Failed
}

impl Kubelet {
    pub(super) fn new(client: kube::Client, cfg: &SimConfig) -> Self {
        Self {
            client,
            run_time: cfg.run_time,
            nodes: (0..cfg.nodes).map(|i| (node_name(cfg, i), i)).collect(),
            pools: vec![IpPool::default(); cfg.nodes],
            pods: HashMap::new(),
            pending: VecDeque::new(),
            timers: BinaryHeap::new(),
            inflight: JoinSet::new(),
            relisted: None,
        }
    }

    pub(super) async fn run(mut self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let api: Api<Pod> = Api::all(self.client.clone());
        let watch_cfg = watcher::Config::default().fields("spec.nodeName!=");
        let events = watcher::watcher(api, watch_cfg).default_backoff();
        let mut events = std::pin::pin!(events);
        loop {
            self.dispatch();
            let next_timer = self.timers.peek().map(|Reverse((at, _))| *at);
            let sleep =
                tokio::time::sleep_until(instant_at(next_timer.unwrap_or_else(Timestamp::now)));
            let read_watch = self.pending.len() < PENDING_WRITES_MAX;
            tokio::select! {
                biased;
                () = super::shutdown_requested(&mut shutdown) => break,
                Some(done) = self.inflight.join_next(), if !self.inflight.is_empty() => match done {
                    Ok((key, outcome)) => self.written(&key, outcome),
                    Err(e) => tracing::error!(error = %e, "a pod status write task failed"),
                },
                () = sleep, if next_timer.is_some() => self.fire_timers(Timestamp::now()),
                event = events.next(), if read_watch => match event {
                    Some(Ok(ev)) => self.on_event(ev),
                    Some(Err(e)) => tracing::warn!(error = %e, "the pod watch failed; it resumes after a back-off"),
                    None => {
                        tracing::error!("the pod watch ended; simulated kubelets stop");
                        break;
                    }
                },
            }
        }
        self.inflight.abort_all();
    }

    fn on_event(&mut self, ev: Event<Pod>) {
        match ev {
            Event::Init => self.relisted = Some(HashSet::new()),
            Event::InitApply(pod) => {
                if let Some(seen) = self.relisted.as_mut() {
                    seen.insert(key_of(&pod));
                }
                self.on_pod(&pod);
            }
            Event::InitDone => {
                if let Some(seen) = self.relisted.take() {
                    let gone: Vec<String> = self
                        .pods
                        .keys()
                        .filter(|k| !seen.contains(*k))
                        .cloned()
                        .collect();
                    for k in gone {
                        self.forget(&k);
                    }
                }
            }
            Event::Apply(pod) => self.on_pod(&pod),
            Event::Delete(pod) => self.forget(&key_of(&pod)),
        }
    }

    fn on_pod(&mut self, pod: &Pod) {
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .and_then(|n| self.nodes.get(n))
            .copied();
        let Some(node) = node else {
            return;
        };
        let key = key_of(pod);
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        let deleting = pod.metadata.deletion_timestamp.is_some();
        let now = Timestamp::now();
        if let Some(t) = self.pods.get_mut(&key) {
            if t.sim.shape.uid == uid {
                if deleting && !t.sim.terminating && t.stop_at.is_none() {
                    t.stop_at = Some(after(now, Duration::from_millis(CONTAINER_STOP_MS)));
                    self.schedule(&key);
                }
                return;
            }
            self.forget(&key); // the name was reused by a new pod
        }
        let shape = PodShape::of(pod, self.run_time);
        let status = pod.status.as_ref();
        let started = status.and_then(|s| s.start_time.as_ref()).map(|t| t.0);
        let listed_ip = status
            .and_then(|s| s.pod_ip.as_deref())
            .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
            .and_then(|ip| host_in_node_cidr(node, ip));
        let first_container = status
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|cs| cs.first());
        let (sim, mut ip_host, needs_write) = match status.and_then(|s| s.phase.as_deref()) {
            Some(phase @ ("Succeeded" | "Failed")) => (
                SimPod::finished(shape, started.unwrap_or(now), i32::from(phase == "Failed")),
                None,
                false,
            ),
            Some("Running") if listed_ip.is_some() && first_container.is_some() => {
                // Ours from before a restart of the simulation: carry on where it was.
                let since = first_container
                    .and_then(|c| c.state.as_ref())
                    .and_then(|s| s.running.as_ref())
                    .and_then(|r| r.started_at.as_ref())
                    .map_or(now, |t| t.0);
                let restarts =
                    first_container.map_or(0, |c| u32::try_from(c.restart_count).unwrap_or(0));
                let mut sim = SimPod::adopt(shape, started.unwrap_or(now), since, restarts);
                sim.ready_reported = sim.all_ready(now);
                let host = listed_ip.filter(|h| self.pools[node].reserve(*h));
                let lost = host.is_none();
                (sim, host, lost)
            }
            _ => (SimPod::new(shape, now), None, true),
        };
        if needs_write && ip_host.is_none() && !matches!(sim.phase(), "Succeeded" | "Failed") {
            ip_host = self.pools[node].allocate();
            if ip_host.is_none() {
                tracing::warn!(
                    pod = key,
                    node = node_name_of(&self.nodes, node),
                    "the node's pod CIDR is full; the pod runs without an IP"
                );
            }
        }
        let stop_at = deleting.then(|| after(now, Duration::from_millis(CONTAINER_STOP_MS)));
        self.pods.insert(
            key.clone(),
            Tracked {
                namespace: pod
                    .metadata
                    .namespace
                    .clone()
                    .unwrap_or_else(|| "default".into()),
                node,
                ip_host,
                sim,
                write: WriteState::Idle,
                timer_at: None,
                retry_at: None,
                stop_at,
            },
        );
        if needs_write {
            self.mark(&key);
        }
        self.schedule(&key);
    }

    fn forget(&mut self, key: &str) {
        if let Some(t) = self.pods.remove(key)
            && let Some(h) = t.ip_host
        {
            self.pools[t.node].release(h);
        }
    }

    /// The pod's status must be written (again).
    fn mark(&mut self, key: &str) {
        let Some(t) = self.pods.get_mut(key) else {
            return;
        };
        match t.write {
            WriteState::Idle => {
                t.write = WriteState::Queued;
                self.pending.push_back(key.to_string());
            }
            WriteState::Queued | WriteState::InFlight { dirty: true } => {}
            WriteState::InFlight { dirty: false } => t.write = WriteState::InFlight { dirty: true },
        }
    }

    /// Puts the pod's next deadline on the timer heap (if it moved). Deadlines already due
    /// while a write is queued or in flight are left to that write (`dispatch` and `written`
    /// schedule again); re-arming them here would fire them again at once, forever.
    fn schedule(&mut self, key: &str) {
        let Some(t) = self.pods.get_mut(key) else {
            return;
        };
        let floor = (!matches!(t.write, WriteState::Idle)).then(Timestamp::now);
        let retry = t.retry_at.filter(|r| floor.is_none_or(|f| *r > f));
        let next = [t.sim.next_deadline_after(floor), retry, t.stop_at]
            .into_iter()
            .flatten()
            .min();
        if next != t.timer_at {
            t.timer_at = next;
            if let Some(at) = next {
                self.timers.push(Reverse((at, key.to_string())));
            }
        }
    }

    fn fire_timers(&mut self, now: Timestamp) {
        for _ in 0..TIMERS_FIRED_PER_WAKE_MAX {
            let Some(Reverse((at, _))) = self.timers.peek() else {
                break;
            };
            if *at > now {
                break;
            }
            let Some(Reverse((at, key))) = self.timers.pop() else {
                break;
            };
            let Some(t) = self.pods.get_mut(&key) else {
                continue;
            };
            if t.timer_at != Some(at) {
                continue; // stale: the pod was rescheduled since
            }
            t.timer_at = None;
            let mut changed = t.sim.step(now);
            if t.stop_at.is_some_and(|s| s <= now) {
                t.stop_at = None;
                t.sim.terminate(now);
                changed = true;
            }
            if t.retry_at.is_some_and(|r| r <= now) {
                t.retry_at = None;
                changed = true;
            }
            if changed {
                self.mark(&key);
            }
            self.schedule(&key);
        }
    }

    /// Starts queued writes while there are free slots.
    fn dispatch(&mut self) {
        while self.inflight.len() < STATUS_WRITES_INFLIGHT_MAX {
            let Some(key) = self.pending.pop_front() else {
                break;
            };
            let Some(t) = self.pods.get_mut(&key) else {
                continue;
            };
            if !matches!(t.write, WriteState::Queued) {
                continue; // a duplicate entry from a pod that was forgotten and seen again
            }
            let now = Timestamp::now();
            t.sim.step(now);
            let ip = t.ip_host.map(|h| pod_ip(t.node, h));
            let status = pod_status(&t.sim, node_ip(t.node), ip, now);
            t.sim.ready_reported = t.sim.all_ready(now);
            t.write = WriteState::InFlight { dirty: false };
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &t.namespace);
            let (name, uid, delete) = (
                t.sim.shape.name.clone(),
                t.sim.shape.uid.clone(),
                t.sim.terminating,
            );
            let patch = json!({"status": status});
            let k = key.clone();
            self.inflight
                .spawn(async move { (k, write(api, name, uid, patch, delete).await) });
            self.schedule(&key);
        }
    }

    fn written(&mut self, key: &str, outcome: Outcome) {
        let Some(t) = self.pods.get_mut(key) else {
            return;
        };
        let dirty = matches!(t.write, WriteState::InFlight { dirty: true });
        t.write = WriteState::Idle;
        if outcome == Outcome::Failed {
            t.retry_at = Some(after(
                Timestamp::now(),
                Duration::from_secs(FAILED_WRITE_RETRY_S),
            ));
        }
        if dirty {
            self.mark(key);
        }
        self.schedule(key);
    }
}

fn key_of(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

fn node_name_of(nodes: &HashMap<String, usize>, i: usize) -> String {
    nodes
        .iter()
        .find(|(_, v)| **v == i)
        .map(|(k, _)| k.clone())
        .unwrap_or_default()
}

/// The tokio instant of wall-clock time `at` (now if it has passed).
fn instant_at(at: Timestamp) -> tokio::time::Instant {
    let wait = at.duration_since(Timestamp::now());
    tokio::time::Instant::now() + Duration::try_from(wait).unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a test that panics has failed; the message says where

    use super::*;
    use serde_json::json;

    /// A kubelet whose client is never used: these tests drive events and timers only.
    fn kubelet() -> Kubelet {
        let cfg = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        let client = kube::Client::try_from(cfg).unwrap();
        Kubelet::new(
            client,
            &SimConfig {
                nodes: 2,
                ..SimConfig::default()
            },
        )
    }

    fn pod(name: &str, node: &str, policy: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
            "spec": {"nodeName": node, "restartPolicy": policy,
                     "containers": [{"name": "c", "image": "nginx"}]},
        }))
        .unwrap()
    }

    fn ip(k: &Kubelet, name: &str) -> Option<Ipv4Addr> {
        let t = &k.pods[&format!("default/{name}")];
        t.ip_host.map(|h| pod_ip(t.node, h))
    }

    #[tokio::test]
    async fn a_new_pod_waiting_for_its_first_write_arms_no_timer_already_due() {
        let mut k = kubelet();
        k.on_event(Event::Apply(pod("a", "sim-node-0000", "Always")));
        assert_eq!(k.pending.len(), 1);
        let now = Timestamp::now();
        assert!(
            k.timers.iter().all(|Reverse((at, _))| *at > now),
            "a due timer for a queued pod fires again at once, forever"
        );
        k.fire_timers(now);
        assert_eq!(k.pending.len(), 1, "queued once");
    }

    #[tokio::test]
    async fn a_due_exit_of_a_queued_pod_is_applied_once_and_not_rearmed() {
        let mut k = kubelet();
        k.on_event(Event::Apply(pod("job", "sim-node-0001", "Never")));
        let later = after(Timestamp::now(), Duration::from_secs(5));
        k.fire_timers(later);
        assert_eq!(k.pods["default/job"].sim.phase(), "Succeeded");
        assert_eq!(k.pending.len(), 1, "the exit rides on the queued write");
        assert!(
            k.timers
                .iter()
                .all(|Reverse((at, _))| *at > Timestamp::now())
        );
    }

    #[tokio::test]
    async fn pods_get_distinct_ips_in_their_nodes_cidr_and_release_them_when_gone() {
        let mut k = kubelet();
        for n in ["a", "b"] {
            k.on_event(Event::Apply(pod(n, "sim-node-0001", "Always")));
        }
        let (a, b) = (ip(&k, "a").unwrap(), ip(&k, "b").unwrap());
        assert_ne!(a, b);
        assert!(a.to_string().starts_with("10.64.1."), "{a}");
        k.on_event(Event::Delete(pod("a", "sim-node-0001", "Always")));
        assert!(!k.pods.contains_key("default/a"));
        assert!(
            k.pools[1].reserve(host_in_node_cidr(1, a).unwrap()),
            "a's address was released"
        );
    }

    #[tokio::test]
    async fn pods_on_other_nodes_are_ignored_and_a_relist_forgets_vanished_pods() {
        let mut k = kubelet();
        k.on_event(Event::Apply(pod("theirs", "real-node", "Always")));
        assert!(k.pods.is_empty());
        k.on_event(Event::Apply(pod("a", "sim-node-0000", "Always")));
        k.on_event(Event::Apply(pod("b", "sim-node-0000", "Always")));
        k.on_event(Event::Init);
        k.on_event(Event::InitApply(pod("b", "sim-node-0000", "Always")));
        k.on_event(Event::InitDone);
        assert_eq!(k.pods.keys().collect::<Vec<_>>(), ["default/b"]);
    }

    #[tokio::test]
    async fn a_deletion_timestamp_stops_the_containers_and_queues_the_delete() {
        let mut k = kubelet();
        let mut p = pod("a", "sim-node-0000", "Always");
        k.on_event(Event::Apply(p.clone()));
        k.dispatch(); // the first write goes (and fails later, unseen: nothing listens)
        p.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            Timestamp::now(),
        ));
        k.on_event(Event::Apply(p));
        let t = &k.pods["default/a"];
        assert!(!t.sim.terminating, "the containers take a moment to stop");
        let stop = t.stop_at.unwrap();
        k.fire_timers(stop);
        let t = &k.pods["default/a"];
        assert!(t.sim.terminating);
        assert!(
            matches!(t.write, WriteState::InFlight { dirty: true }),
            "the terminated status follows the write in flight"
        );
        k.inflight.abort_all();
    }
}
