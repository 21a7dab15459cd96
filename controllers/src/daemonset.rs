//! The DaemonSet controller: one pod per eligible node, following nodes as they join, change
//! and leave, rolled forward with RollingUpdate (maxUnavailable or maxSurge) or OnDelete, with
//! revisions in ControllerRevisions ([`crate::history`]) and the status that `kubectl
//! rollout status` reads.
//!
//! As kube-controller-manager's `pkg/controller/daemon` since 1.12, the controller does not
//! bind: a daemon pod carries a required node affinity `matchFields metadata.name In
//! [<node>]` and the default scheduler places it. A node is eligible when the template's
//! `nodeSelector` and required node affinity match it and every NoSchedule/NoExecute taint is
//! tolerated — with the tolerations kube adds to every daemon pod ([`DEFAULT_TOLERATIONS`]).
//! A node with an untolerated NoSchedule taint keeps a pod it already runs; an untolerated
//! NoExecute taint, a selector that stops matching, or the node's deletion removes it (pods of
//! a deleted node are deleted at once, grace 0, as the pod garbage collector would). Failed
//! daemon pods are replaced, with a per-node back-off. Orphan pods the selector matches are
//! adopted.
//!
//! Creates use generated names, so they wait on [`Expectations`] like the ReplicaSet
//! controller's: a lagging cache never puts two pods on a node.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{
    ControllerRevision, DaemonSet, DaemonSetStatus, RollingUpdateDaemonSet,
};
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
    PodSpec, Taint, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Api, Client};
use serde_json::json;

use crate::history;
use crate::pods;
use crate::runtime::adopt;
use crate::runtime::expectations::Expectations;
use crate::runtime::{
    Action, Informer, OwnerIndex, ReconcileError, Reconciler, WorkQueue, controller_of, key_of,
};
use crate::scheduler::filters::tolerated;
use crate::scheduler::labels::node_selector_terms_match;
use crate::selector::Selector;

/// Most pods created by one reconcile of one DaemonSet (kube: burstReplicas).
pub const BURST_PODS: usize = 250;
/// Pod creates or deletes in flight at once for one DaemonSet.
pub const POD_WRITES_INFLIGHT_MAX: usize = 32;
/// First wait before a failed daemon pod on a node is replaced again (kube: 1 s), doubling
/// per failure up to the max (kube: 15 min).
pub const FAILED_POD_BACKOFF_BASE_MS: u64 = 1_000;
pub const FAILED_POD_BACKOFF_MAX_MS: u64 = 900_000;
/// Back-off entries kept before stale ones (idle for twice the max) are dropped.
pub const FAILED_POD_BACKOFF_ENTRIES_MAX: usize = 10_000;
/// How long pod changes that are neither creates nor deletes (status: running, ready) are
/// gathered before the DaemonSet is looked at again: one look covers every node, so a
/// rollout over thousands of nodes does not recompute it once per pod status write.
pub const STATUS_BATCH_MS: u64 = 250;

/// The tolerations every daemon pod gets (kube's `AddOrUpdateDaemonPodTolerations`), as
/// (key, effect); `network-unavailable` is added for hostNetwork pods only.
pub const DEFAULT_TOLERATIONS: [(&str, &str); 6] = [
    ("node.kubernetes.io/not-ready", "NoExecute"),
    ("node.kubernetes.io/unreachable", "NoExecute"),
    ("node.kubernetes.io/disk-pressure", "NoSchedule"),
    ("node.kubernetes.io/memory-pressure", "NoSchedule"),
    ("node.kubernetes.io/pid-pressure", "NoSchedule"),
    ("node.kubernetes.io/unschedulable", "NoSchedule"),
];
pub const HOST_NETWORK_TOLERATION: (&str, &str) =
    ("node.kubernetes.io/network-unavailable", "NoSchedule");

pub struct DaemonSetController {
    client: Client,
    pub sets: Arc<Informer<DaemonSet>>,
    pods: Arc<Informer<Pod>>,
    pods_by_owner: Arc<OwnerIndex>,
    nodes: Arc<Informer<Node>>,
    revisions: Arc<Informer<ControllerRevision>>,
    revisions_by_owner: Arc<OwnerIndex>,
    pub queue: Arc<WorkQueue>,
    expectations: Arc<Expectations>,
    /// Per `<ds key>/<node>`: the current back-off and when it was last bumped.
    backoff: Mutex<HashMap<String, (Duration, Instant)>>,
}

fn ds_key_of_owner(p: &Pod) -> Option<String> {
    let r = controller_of(p)?;
    (r.kind == "DaemonSet" && r.api_version.starts_with("apps/")).then(|| {
        format!(
            "{}/{}",
            p.metadata.namespace.as_deref().unwrap_or(""),
            r.name
        )
    })
}

pub fn owner_ref(ds: &DaemonSet) -> OwnerReference {
    OwnerReference {
        api_version: "apps/v1".into(),
        kind: "DaemonSet".into(),
        name: ds.metadata.name.clone().unwrap_or_default(),
        uid: ds.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Adds kube's default daemon tolerations that the spec lacks.
pub fn add_default_tolerations(spec: &mut PodSpec) {
    let host_network = spec.host_network == Some(true);
    let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
    let extra = host_network.then_some(HOST_NETWORK_TOLERATION);
    for (key, effect) in DEFAULT_TOLERATIONS.into_iter().chain(extra) {
        let present = tolerations.iter().any(|t| {
            t.key.as_deref() == Some(key)
                && t.effect.as_deref() == Some(effect)
                && t.operator.as_deref() == Some("Exists")
        });
        if !present {
            tolerations.push(Toleration {
                key: Some(key.into()),
                operator: Some("Exists".into()),
                effect: Some(effect.into()),
                ..Toleration::default()
            });
        }
    }
}

/// Whether a daemon pod should run on the node, and whether one already there may keep
/// running (kube's `NodeShouldRunDaemonPod`). `spec` carries the default tolerations.
pub fn should_run(spec: &PodSpec, node: &Node) -> (bool, bool) {
    let name = node.metadata.name.as_deref().unwrap_or("");
    if spec
        .node_name
        .as_deref()
        .is_some_and(|n| !n.is_empty() && n != name)
    {
        return (false, false);
    }
    let empty = BTreeMap::new();
    let labels = node.metadata.labels.as_ref().unwrap_or(&empty);
    if let Some(sel) = &spec.node_selector
        && !sel.iter().all(|(k, v)| labels.get(k) == Some(v))
    {
        return (false, false);
    }
    if let Some(req) = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| {
            na.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        && !node_selector_terms_match(&req.node_selector_terms, name, labels)
    {
        return (false, false);
    }
    let tolerations = spec.tolerations.as_deref().unwrap_or_default();
    let taints: Vec<&Taint> = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .map(|t| t.iter().collect())
        .unwrap_or_default();
    let untolerated = |effect: &str| {
        taints
            .iter()
            .any(|t| t.effect == effect && !tolerated(tolerations, t))
    };
    if untolerated("NoExecute") {
        return (false, false);
    }
    if untolerated("NoSchedule") {
        return (false, true);
    }
    (true, true)
}

/// The node a daemon pod is on, or is meant for (its `matchFields metadata.name` affinity).
pub fn target_node(p: &Pod) -> Option<String> {
    let spec = p.spec.as_ref()?;
    if let Some(n) = spec.node_name.as_ref().filter(|n| !n.is_empty()) {
        return Some(n.clone());
    }
    let terms = &spec
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    terms.iter().find_map(|t| {
        t.match_fields.as_ref()?.iter().find_map(|r| {
            (r.key == "metadata.name" && r.operator == "In")
                .then(|| r.values.as_ref()?.first().cloned())?
        })
    })
}

/// The pod spec the template asks for, with the default tolerations (what eligibility is
/// judged on).
fn daemon_spec(ds: &DaemonSet) -> PodSpec {
    let mut spec = ds
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.clone())
        .unwrap_or_default();
    add_default_tolerations(&mut spec);
    spec
}

/// A daemon pod for `node` (kube's `CreatePodTemplate` + `ReplaceDaemonSetPodNodeNameNodeAffinity`).
pub fn new_pod(ds: &DaemonSet, hash: &str, node: &str) -> Pod {
    let tm = ds
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.clone())
        .unwrap_or_default();
    let mut labels = tm.labels.unwrap_or_default();
    labels.insert(history::HASH_LABEL.into(), hash.to_string());
    let mut spec = daemon_spec(ds);
    let term = NodeSelectorTerm {
        match_expressions: None,
        match_fields: Some(vec![NodeSelectorRequirement {
            key: "metadata.name".into(),
            operator: "In".into(),
            values: Some(vec![node.to_string()]),
        }]),
    };
    let affinity = spec.affinity.get_or_insert_with(Affinity::default);
    let na = affinity
        .node_affinity
        .get_or_insert_with(NodeAffinity::default);
    na.required_during_scheduling_ignored_during_execution = Some(NodeSelector {
        node_selector_terms: vec![term],
    });
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", ds.metadata.name.as_deref().unwrap_or(""))),
            namespace: ds.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: tm.annotations,
            finalizers: tm.finalizers,
            owner_references: Some(vec![owner_ref(ds)]),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        status: None,
    }
}

fn scaled_up(v: Option<&IntOrString>, total: i32, default: i32) -> i32 {
    match v {
        Some(IntOrString::Int(i)) => *i,
        Some(IntOrString::String(s)) => match s.trim_end_matches('%').parse::<i64>() {
            Ok(p) => i32::try_from((i64::from(total) * p + 99) / 100).unwrap_or(i32::MAX),
            Err(_) => default,
        },
        None => default,
    }
}

/// `(maxSurge, maxUnavailable)` against the number of eligible nodes, percentages rounded
/// up (kube's `updatedDesiredNodeCounts`); both zero means one unavailable at a time.
pub fn surge_and_unavailable(ru: Option<&RollingUpdateDaemonSet>, desired: i32) -> (i32, i32) {
    let surge = scaled_up(ru.and_then(|r| r.max_surge.as_ref()), desired, 0).max(0);
    let mut unavailable = scaled_up(ru.and_then(|r| r.max_unavailable.as_ref()), desired, 1).max(0);
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    (surge, unavailable)
}

fn pod_hash(p: &Pod) -> &str {
    p.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(history::HASH_LABEL))
        .map_or("", String::as_str)
}

fn created(p: &Pod) -> (i64, String) {
    (
        p.metadata
            .creation_timestamp
            .as_ref()
            .map_or(0, |t| t.0.as_second()),
        p.metadata.name.clone().unwrap_or_default(),
    )
}

/// The new and the old pod on a node, ignoring terminating ones; `None` when there are more
/// than one of either (the manage step cleans that up first).
type NewAndOld<'a> = (Option<&'a Arc<Pod>>, Option<&'a Arc<Pod>>);

fn updated_and_old<'a>(node_pods: &[&'a Arc<Pod>], hash: &str) -> Option<NewAndOld<'a>> {
    let (mut new, mut old) = (None, None);
    for p in node_pods {
        if p.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let slot = if pod_hash(p) == hash {
            &mut new
        } else {
            &mut old
        };
        if slot.is_some() {
            return None;
        }
        *slot = Some(*p);
    }
    Some((new, old))
}

/// What one pass decided: pods to delete (with their grace) and nodes to create on.
#[derive(Default)]
struct Plan {
    delete: Vec<(Arc<Pod>, Option<i64>)>,
    create: Vec<String>,
    wait: Option<Duration>,
}

impl DaemonSetController {
    /// Wires the handlers; the informers are started by the caller.
    #[allow(clippy::too_many_arguments)] // the informers and indexes it shares
    pub fn new(
        client: Client,
        sets: Arc<Informer<DaemonSet>>,
        pods: Arc<Informer<Pod>>,
        pods_by_owner: Arc<OwnerIndex>,
        nodes: Arc<Informer<Node>>,
        revisions: Arc<Informer<ControllerRevision>>,
        revisions_by_owner: Arc<OwnerIndex>,
    ) -> Arc<Self> {
        let queue = Arc::new(WorkQueue::default());
        let expectations = Arc::new(Expectations::default());
        {
            let q = queue.clone();
            sets.on_change(move |_, new| {
                if let Some(n) = new {
                    q.add(&key_of(n));
                }
            });
        }
        {
            let q = queue.clone();
            let e = expectations.clone();
            let sets2 = sets.clone();
            pods.on_change(move |old, new| {
                let Some(p) = new.or(old) else { return };
                // An orphan: a DaemonSet whose selector matches adopts it.
                if let Some(n) = new
                    && controller_of(n).is_none()
                {
                    let ns = n.metadata.namespace.as_deref().unwrap_or("");
                    let labels = n.metadata.labels.clone().unwrap_or_default();
                    for d in sets2.filter(|d| {
                        d.metadata.namespace.as_deref() == Some(ns)
                            && d.spec.as_ref().is_some_and(|s| {
                                Selector::from_label_selector(&s.selector).matches(&labels)
                            })
                    }) {
                        q.add(&key_of(d.as_ref()));
                    }
                }
                let Some(owner) = ds_key_of_owner(p) else {
                    return;
                };
                let key = key_of(p);
                let now = match (old, new) {
                    (None, Some(_)) => {
                        e.creation_observed(&owner);
                        true
                    }
                    (Some(_), None) => {
                        e.deletion_observed(&owner, &key);
                        true
                    }
                    (Some(o), Some(n))
                        if o.metadata.deletion_timestamp.is_none()
                            && n.metadata.deletion_timestamp.is_some() =>
                    {
                        e.deletion_observed(&owner, &key);
                        true
                    }
                    _ => false,
                };
                if now {
                    q.add(&owner);
                } else {
                    q.add_after(&owner, Duration::from_millis(STATUS_BATCH_MS));
                }
            });
        }
        {
            // A node that joins, leaves, or changes what decides eligibility: every DaemonSet
            // looks again. Heartbeats (status only) are ignored.
            let q = queue.clone();
            let sets2 = sets.clone();
            nodes.on_change(move |old, new| {
                let relevant = match (old, new) {
                    (Some(o), Some(n)) => {
                        o.metadata.labels != n.metadata.labels
                            || o.spec.as_ref().and_then(|s| s.taints.clone())
                                != n.spec.as_ref().and_then(|s| s.taints.clone())
                            || o.spec.as_ref().and_then(|s| s.unschedulable)
                                != n.spec.as_ref().and_then(|s| s.unschedulable)
                    }
                    _ => true,
                };
                if relevant {
                    for d in sets2.filter(|_| true) {
                        q.add(&key_of(d.as_ref()));
                    }
                }
            });
        }
        Arc::new(DaemonSetController {
            client,
            sets,
            pods,
            pods_by_owner,
            nodes,
            revisions,
            revisions_by_owner,
            queue,
            expectations,
            backoff: Mutex::new(HashMap::new()),
        })
    }

    /// Active orphans the selector matches become the DaemonSet's; whether any did.
    async fn adopt(&self, ds: &DaemonSet) -> Result<bool, ReconcileError> {
        let Some(spec) = ds.spec.as_ref() else {
            return Ok(false);
        };
        let sel = Selector::from_label_selector(&spec.selector);
        let ns = ds.metadata.namespace.as_deref().unwrap_or("");
        let empty = BTreeMap::new();
        let orphans = self
            .pods
            .get_many(self.pods_by_owner.orphans_in(ns).iter().map(AsRef::as_ref))
            .into_iter()
            .filter(|p| {
                pods::is_active(p) && sel.matches(p.metadata.labels.as_ref().unwrap_or(&empty))
            });
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        Ok(!adopt::adopt(&api, &owner_ref(ds), orphans)
            .await?
            .is_empty())
    }

    /// Whether a failed pod on this node may be replaced now; `Err(wait)` while backing off.
    fn failed_pod_backoff(&self, key: &str) -> Result<(), Duration> {
        let mut m = match self.backoff.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        next_backoff(&mut m, key, Instant::now())
    }

    /// kube's `podsShouldBeOnNode` over every node, and pods on nodes that are gone.
    #[allow(clippy::too_many_arguments)] // one reconcile's view, passed apart
    fn manage(
        &self,
        key: &str,
        spec: &PodSpec,
        nodes: &[Arc<Node>],
        by_node: &HashMap<String, Vec<&Arc<Pod>>>,
        hash: &str,
        surge: bool,
        min_ready: i64,
        now: Timestamp,
    ) -> Plan {
        let mut plan = Plan::default();
        let mut known = std::collections::HashSet::new();
        for node in nodes {
            let name = node.metadata.name.clone().unwrap_or_default();
            known.insert(name.clone());
            let (run, keep) = should_run(spec, node);
            let here: &[&Arc<Pod>] = by_node.get(&name).map_or(&[], Vec::as_slice);
            if run && here.is_empty() {
                plan.create.push(name);
                continue;
            }
            if here.is_empty() {
                continue;
            }
            if !keep {
                for p in here {
                    if p.metadata.deletion_timestamp.is_none() {
                        plan.delete.push(((*p).clone(), None));
                    }
                }
                continue;
            }
            let mut running: Vec<&Arc<Pod>> = Vec::new();
            for p in here {
                if p.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                match pods::phase(p) {
                    "Failed" => match self.failed_pod_backoff(&format!("{key}/{name}")) {
                        Ok(()) => plan.delete.push(((*p).clone(), None)),
                        Err(w) => plan.wait = Some(plan.wait.map_or(w, |x| x.min(w))),
                    },
                    "Succeeded" => plan.delete.push(((*p).clone(), None)),
                    _ => running.push(p),
                }
            }
            if running.len() <= 1 {
                continue;
            }
            running.sort_by_key(|p| created(p));
            if !surge {
                for p in &running[1..] {
                    plan.delete.push(((*p).clone(), None));
                }
                continue;
            }
            // Surging: one old and one new may overlap while the new one is not available.
            let (mut oldest_new, mut oldest_old) = (None, None);
            for p in running {
                let slot = if pod_hash(p) == hash {
                    &mut oldest_new
                } else {
                    &mut oldest_old
                };
                if slot.is_none() {
                    *slot = Some(p);
                } else {
                    plan.delete.push((p.clone(), None));
                }
            }
            if let (Some(n), Some(o)) = (oldest_new, oldest_old)
                && (!pods::is_ready(o) || pods::is_available(n, min_ready, now))
            {
                plan.delete.push((o.clone(), None));
            }
        }
        // Pods of nodes that no longer exist: deleted at once (kube's pod GC does this).
        for (node, here) in by_node {
            if !known.contains(node) {
                for p in here {
                    plan.delete.push(((*p).clone(), Some(0)));
                }
            }
        }
        plan
    }

    /// Carries a plan out: deletes, then creates in slow-start batches, both under
    /// expectations.
    async fn execute(
        &self,
        key: &str,
        ds: &DaemonSet,
        hash: &str,
        plan: Plan,
    ) -> Result<(), ReconcileError> {
        let ns = ds.metadata.namespace.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let mut first_err: Option<kube::Error> = None;
        if !plan.delete.is_empty() {
            self.expectations
                .expect_deletions(key, plan.delete.iter().map(|(p, _)| key_of(p.as_ref())));
            let results: Vec<(String, Result<(), kube::Error>)> =
                futures::stream::iter(plan.delete)
                    .map(|(p, grace)| {
                        let api = api.clone();
                        async move {
                            let dp = DeleteParams {
                                grace_period_seconds: grace.and_then(|g| u32::try_from(g).ok()),
                                preconditions: Some(Preconditions {
                                    uid: p.metadata.uid.clone(),
                                    resource_version: None,
                                }),
                                ..DeleteParams::default()
                            };
                            let r = match api
                                .delete(p.metadata.name.as_deref().unwrap_or(""), &dp)
                                .await
                            {
                                Ok(_) => Ok(()),
                                Err(kube::Error::Api(s)) if matches!(s.code, 404 | 409) => Ok(()),
                                Err(e) => Err(e),
                            };
                            (key_of(p.as_ref()), r)
                        }
                    })
                    .buffer_unordered(POD_WRITES_INFLIGHT_MAX)
                    .collect()
                    .await;
            for (pod, r) in results {
                if let Err(e) = r {
                    self.expectations.deletion_observed(key, &pod);
                    first_err.get_or_insert(e);
                }
            }
        }
        let mut create = plan.create;
        create.truncate(BURST_PODS);
        if !create.is_empty() {
            self.expectations.expect_creations(key, create.len());
            let mut left: &[String] = &create;
            let mut batch = 1usize;
            while !left.is_empty() {
                let (this, rest) = left.split_at(batch.min(left.len()));
                left = rest;
                let pods: Vec<Pod> = this.iter().map(|node| new_pod(ds, hash, node)).collect();
                let results: Vec<Result<Pod, kube::Error>> = futures::stream::iter(pods)
                    .map(|pod| {
                        let api = api.clone();
                        async move { api.create(&PostParams::default(), &pod).await }
                    })
                    .buffer_unordered(POD_WRITES_INFLIGHT_MAX)
                    .collect()
                    .await;
                let mut failed = false;
                for r in results {
                    if let Err(e) = r {
                        self.expectations.creation_observed(key);
                        first_err.get_or_insert(e);
                        failed = true;
                    }
                }
                if failed {
                    // Creates not attempted will never be observed either.
                    for _ in 0..left.len() {
                        self.expectations.creation_observed(key);
                    }
                    break;
                }
                batch *= 2;
            }
        }
        match first_err {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }
}

/// client-go's `Backoff` as the DaemonSet controller uses it for failed pods: in back-off
/// while less than the current delay has passed since the last replacement, else the
/// replacement may go ahead and the delay doubles (back to the base after twice the max
/// idle). Stale entries are dropped once [`FAILED_POD_BACKOFF_ENTRIES_MAX`] is reached.
fn next_backoff(
    m: &mut HashMap<String, (Duration, Instant)>,
    key: &str,
    now: Instant,
) -> Result<(), Duration> {
    let base = Duration::from_millis(FAILED_POD_BACKOFF_BASE_MS);
    let max = Duration::from_millis(FAILED_POD_BACKOFF_MAX_MS);
    if m.len() >= FAILED_POD_BACKOFF_ENTRIES_MAX {
        m.retain(|_, (_, at)| now.saturating_duration_since(*at) < max * 2);
    }
    match m.get_mut(key) {
        Some((d, at)) => {
            let since = now.saturating_duration_since(*at);
            if since < *d {
                return Err(*d - since);
            }
            *d = if since > max * 2 {
                base
            } else {
                (*d * 2).min(max)
            };
            *at = now;
            Ok(())
        }
        None => {
            m.insert(key.to_string(), (base, now));
            Ok(())
        }
    }
}

/// kube's `rollingUpdate`: which old pods to delete and where to surge.
fn rolling_update(
    spec: &PodSpec,
    nodes: &[Arc<Node>],
    by_node: &HashMap<String, Vec<&Arc<Pod>>>,
    hash: &str,
    (max_surge, max_unavailable): (i32, i32),
    min_ready: i64,
    now: Timestamp,
) -> Plan {
    let mut plan = Plan::default();
    let avail = |p: &Pod| pods::is_available(p, min_ready, now);
    let mut names: Vec<&String> = by_node.keys().collect();
    names.sort();
    if max_surge == 0 {
        let mut unavailable = 0;
        let mut replace = Vec::new();
        let mut candidates = Vec::new();
        for n in names {
            let Some((new, old)) = updated_and_old(&by_node[n], hash) else {
                unavailable += 1;
                continue;
            };
            match (new, old) {
                (None, None) | (Some(_), Some(_)) => unavailable += 1,
                (Some(p), None) => {
                    if !avail(p) {
                        unavailable += 1;
                    }
                }
                (None, Some(o)) => {
                    if !avail(o) {
                        replace.push(o.clone());
                    } else if unavailable < max_unavailable {
                        candidates.push(o.clone());
                    }
                }
            }
        }
        let room = usize::try_from((max_unavailable - unavailable).max(0)).unwrap_or(0);
        candidates.truncate(room);
        plan.delete = replace
            .into_iter()
            .chain(candidates)
            .map(|p| (p, None))
            .collect();
        return plan;
    }
    let node_by_name: HashMap<&str, &Arc<Node>> = nodes
        .iter()
        .map(|n| (n.metadata.name.as_deref().unwrap_or(""), n))
        .collect();
    let mut surged = 0;
    let mut allowed = Vec::new();
    let mut candidates = Vec::new();
    for n in names {
        let Some((new, old)) = updated_and_old(&by_node[n], hash) else {
            surged += 1;
            continue;
        };
        match (new, old) {
            (_, None) => {}
            (None, Some(o)) => {
                if !avail(o) {
                    let eligible = node_by_name
                        .get(n.as_str())
                        .is_some_and(|node| should_run(spec, node).0);
                    if eligible {
                        allowed.push(n.clone());
                    } else {
                        plan.delete.push((o.clone(), None));
                    }
                } else if surged < max_surge {
                    candidates.push(n.clone());
                }
            }
            (Some(p), Some(o)) => {
                if avail(p) {
                    plan.delete.push((o.clone(), None));
                } else {
                    surged += 1;
                }
            }
        }
    }
    let room = usize::try_from((max_surge - surged).max(0)).unwrap_or(0);
    candidates.truncate(room);
    plan.create = allowed.into_iter().chain(candidates).collect();
    plan
}

/// The status over every node (kube's `updateDaemonSetStatus`).
fn compute_status(
    ds: &DaemonSet,
    spec: &PodSpec,
    nodes: &[Arc<Node>],
    by_node: &HashMap<String, Vec<&Arc<Pod>>>,
    hash: &str,
    min_ready: i64,
    now: Timestamp,
) -> (DaemonSetStatus, Option<i64>) {
    let (mut desired, mut current, mut mis, mut ready, mut available, mut updated) =
        (0, 0, 0, 0, 0, 0);
    let mut wait: Option<i64> = None;
    for node in nodes {
        let name = node.metadata.name.as_deref().unwrap_or("");
        let (run, _) = should_run(spec, node);
        let here = by_node.get(name).filter(|v| !v.is_empty());
        if !run {
            if here.is_some() {
                mis += 1;
            }
            continue;
        }
        desired += 1;
        let Some(here) = here else { continue };
        current += 1;
        let Some(p) = here.iter().min_by_key(|p| created(p)) else {
            continue;
        };
        if pods::is_ready(p) {
            ready += 1;
            match pods::availability(p, min_ready, now) {
                Ok(()) => available += 1,
                Err(Some(s)) => wait = Some(wait.map_or(s, |w| w.min(s))),
                Err(None) => {}
            }
        }
        if pod_hash(p) == hash {
            updated += 1;
        }
    }
    let s = DaemonSetStatus {
        observed_generation: ds.metadata.generation,
        desired_number_scheduled: desired,
        current_number_scheduled: current,
        number_misscheduled: mis,
        number_ready: ready,
        number_available: Some(available),
        number_unavailable: Some(desired - available),
        updated_number_scheduled: Some(updated),
        collision_count: ds.status.as_ref().and_then(|s| s.collision_count),
        conditions: ds.status.as_ref().and_then(|s| s.conditions.clone()),
    };
    (s, wait)
}

#[async_trait::async_trait]
impl Reconciler for DaemonSetController {
    fn name(&self) -> &'static str {
        "daemonset"
    }

    async fn reconcile(&self, key: &str) -> Result<Action, ReconcileError> {
        let Some(ds) = self.sets.get(key) else {
            self.expectations.delete(key);
            return Ok(Action::Done);
        };
        let ds = (*ds).clone();
        let Some(dspec) = ds.spec.clone() else {
            return Ok(Action::Done);
        };
        if ds.metadata.deletion_timestamp.is_some()
            || (dspec
                .selector
                .match_labels
                .as_ref()
                .is_none_or(BTreeMap::is_empty)
                && dspec
                    .selector
                    .match_expressions
                    .as_ref()
                    .is_none_or(Vec::is_empty))
        {
            return Ok(Action::Done);
        }
        let ns = ds.metadata.namespace.clone().unwrap_or_default();
        let name = ds.metadata.name.clone().unwrap_or_default();
        let uid = ds.metadata.uid.clone().unwrap_or_default();
        if self.adopt(&ds).await? {
            return Ok(adopt::settle_after());
        }

        let settled = history::settle_for(
            &self.client,
            history::Revisions {
                cache: &self.revisions,
                by_owner: &self.revisions_by_owner,
            },
            &Api::<DaemonSet>::namespaced(self.client.clone(), &ns),
            &owner_ref(&ds),
            &ns,
            &dspec.template,
            &Selector::from_label_selector(&dspec.selector),
            ds.status.as_ref().and_then(|s| s.collision_count),
        )
        .await?;
        let hash = history::hash_of(&settled.update);

        let spec = daemon_spec(&ds);
        let mut nodes: Vec<Arc<Node>> = self.nodes.filter(|_| true);
        nodes.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        let owned: Vec<Arc<Pod>> = self
            .pods
            .get_many(self.pods_by_owner.owned_by(&uid).iter().map(AsRef::as_ref));
        let mut by_node: HashMap<String, Vec<&Arc<Pod>>> = HashMap::new();
        for p in &owned {
            // Terminal pods being deleted no longer occupy a node.
            if p.metadata.deletion_timestamp.is_some()
                && matches!(pods::phase(p), "Failed" | "Succeeded")
            {
                continue;
            }
            if let Some(n) = target_node(p) {
                by_node.entry(n).or_default().push(p);
            }
        }
        let min_ready = i64::from(dspec.min_ready_seconds.unwrap_or(0));
        let now = Timestamp::now();
        let strategy = dspec.update_strategy.clone().unwrap_or_default();
        let on_delete = strategy.type_.as_deref() == Some("OnDelete");
        let desired = i32::try_from(nodes.iter().filter(|n| should_run(&spec, n).0).count())
            .unwrap_or(i32::MAX);
        let budget = if on_delete {
            (0, 1)
        } else {
            surge_and_unavailable(strategy.rolling_update.as_ref(), desired)
        };
        let mut wait = None;
        if self.expectations.satisfied(key) {
            let plan = self.manage(
                key,
                &spec,
                &nodes,
                &by_node,
                &hash,
                budget.0 > 0,
                min_ready,
                now,
            );
            wait = plan.wait;
            let plan = if plan.delete.is_empty() && plan.create.is_empty() && !on_delete {
                rolling_update(&spec, &nodes, &by_node, &hash, budget, min_ready, now)
            } else {
                plan
            };
            if !plan.delete.is_empty() || !plan.create.is_empty() {
                self.execute(key, &ds, &hash, plan).await?;
            }
        }

        let (status, avail_wait) =
            compute_status(&ds, &spec, &nodes, &by_node, &hash, min_ready, now);
        if ds.status.as_ref() != Some(&status) {
            let body = serde_json::to_value(&status).unwrap_or_default();
            Api::<DaemonSet>::namespaced(self.client.clone(), &ns)
                .patch_status(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({ "status": body })),
                )
                .await?;
        }

        let live: std::collections::HashSet<&str> = owned
            .iter()
            .map(|p| pod_hash(p))
            .chain([hash.as_str()])
            .collect();
        let limit =
            usize::try_from(dspec.revision_history_limit.unwrap_or(10).max(0)).unwrap_or(10);
        let is_live = |r: &ControllerRevision| live.contains(history::hash_of(r).as_str());
        for r in history::to_prune(&settled.all, &is_live, limit) {
            history::delete(&self.client, r).await?;
        }
        let wait = [
            wait,
            avail_wait.map(|s| Duration::from_secs(s.max(1).unsigned_abs())),
        ]
        .into_iter()
        .flatten()
        .min();
        Ok(match wait {
            Some(d) => Action::RequeueAfter(d),
            None => Action::Done,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(v: serde_json::Value) -> Node {
        serde_json::from_value(v).unwrap_or_default()
    }

    fn spec(v: serde_json::Value) -> PodSpec {
        let mut s: PodSpec = serde_json::from_value(v).unwrap_or_default();
        add_default_tolerations(&mut s);
        s
    }

    #[test]
    fn eligibility_follows_selectors_affinity_and_taints() {
        let plain = node(json!({"metadata": {"name": "n1", "labels": {"disk": "ssd"}}}));
        let noschedule = node(json!({"metadata": {"name": "n2"},
            "spec": {"taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]}}));
        let noexecute = node(json!({"metadata": {"name": "n3"},
            "spec": {"taints": [{"key": "dedicated", "effect": "NoExecute"}]}}));
        let not_ready = node(json!({"metadata": {"name": "n4"},
            "spec": {"unschedulable": true, "taints": [
                {"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"},
                {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]}}));
        let any = spec(json!({"containers": []}));
        let ssd = spec(json!({"containers": [], "nodeSelector": {"disk": "ssd"}}));
        let affinity = spec(json!({"containers": [], "affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["hdd"]}]}]}}}}));
        let tolerant = spec(json!({"containers": [], "tolerations": [
            {"key": "dedicated", "operator": "Exists"}]}));
        let cases = [
            (&any, &plain, (true, true)),
            (&any, &noschedule, (false, true)),
            (&any, &noexecute, (false, false)),
            (&any, &not_ready, (true, true)),
            (&ssd, &plain, (true, true)),
            (&ssd, &noschedule, (false, false)),
            (&affinity, &plain, (false, false)),
            (&tolerant, &noschedule, (true, true)),
            (&tolerant, &noexecute, (true, true)),
        ];
        for (i, (s, n, want)) in cases.into_iter().enumerate() {
            assert_eq!(should_run(s, n), want, "case {i}");
        }
    }

    #[test]
    fn host_network_pods_also_tolerate_an_unavailable_network() {
        let s = spec(json!({"containers": [], "hostNetwork": true}));
        let t = s.tolerations.unwrap_or_default();
        assert_eq!(t.len(), 7);
        assert!(
            t.iter()
                .any(|t| t.key.as_deref() == Some(HOST_NETWORK_TOLERATION.0))
        );
        let again = {
            let mut s2 = spec(json!({"containers": []}));
            add_default_tolerations(&mut s2);
            s2.tolerations.unwrap_or_default().len()
        };
        assert_eq!(again, 6, "adding twice adds nothing");
    }

    #[test]
    fn a_daemon_pod_targets_its_node_through_match_fields() {
        let ds: DaemonSet = serde_json::from_value(json!({
            "metadata": {"name": "agent", "namespace": "kube-system", "uid": "d1"},
            "spec": {"selector": {"matchLabels": {"app": "agent"}},
                     "template": {"metadata": {"labels": {"app": "agent"}},
                                  "spec": {"containers": [{"name": "c", "image": "i"}],
                                           "affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}]}}}}}}
        }))
        .unwrap_or_default();
        let p = new_pod(&ds, "abc", "n7");
        assert_eq!(target_node(&p).as_deref(), Some("n7"));
        assert_eq!(p.metadata.generate_name.as_deref(), Some("agent-"));
        assert_eq!(
            p.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(history::HASH_LABEL))
                .map(String::as_str),
            Some("abc")
        );
        let terms = p
            .spec
            .and_then(|s| s.affinity)
            .and_then(|a| a.node_affinity)
            .and_then(|n| n.required_during_scheduling_ignored_during_execution)
            .map(|r| r.node_selector_terms)
            .unwrap_or_default();
        assert_eq!(terms.len(), 1);
        assert!(terms[0].match_expressions.is_none());
    }

    #[test]
    fn surge_and_unavailable_are_percentages_of_eligible_nodes_rounded_up() {
        let ru = |surge: IntOrString, unavail: IntOrString| RollingUpdateDaemonSet {
            max_surge: Some(surge),
            max_unavailable: Some(unavail),
        };
        let cases = [
            (None, 10, (0, 1)),
            (
                Some(ru(IntOrString::Int(0), IntOrString::Int(2))),
                10,
                (0, 2),
            ),
            (
                Some(ru(IntOrString::String("25%".into()), IntOrString::Int(0))),
                10,
                (3, 0),
            ),
            (
                Some(ru(IntOrString::Int(0), IntOrString::String("10%".into()))),
                3,
                (0, 1),
            ),
            (
                Some(ru(
                    IntOrString::String("0%".into()),
                    IntOrString::String("0%".into()),
                )),
                4,
                (0, 1),
            ),
            (
                Some(ru(IntOrString::String("50%".into()), IntOrString::Int(0))),
                0,
                (0, 1),
            ),
        ];
        for (i, (r, desired, want)) in cases.into_iter().enumerate() {
            assert_eq!(surge_and_unavailable(r.as_ref(), desired), want, "case {i}");
        }
    }

    fn daemon_pod(name: &str, node: &str, hash: &str, ready: bool) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "labels": {history::HASH_LABEL: hash}},
                "spec": {"nodeName": node, "containers": []},
                "status": {"phase": "Running", "conditions": [
                    {"type": "Ready", "status": if ready { "True" } else { "False" }}]},
            }))
            .unwrap_or_default(),
        )
    }

    /// Runs the rolling-update step over `(node, [(hash, ready)])` and returns the names of
    /// the pods it deletes and the nodes it creates on, sorted.
    fn plan_for(
        layout: &[(&str, &[(&str, bool)])],
        budget: (i32, i32),
    ) -> (Vec<String>, Vec<String>) {
        let pods: Vec<(String, Arc<Pod>)> = layout
            .iter()
            .flat_map(|(node, ps)| {
                ps.iter().enumerate().map(move |(i, (h, r))| {
                    (
                        node.to_string(),
                        daemon_pod(&format!("{node}-{h}-{i}"), node, h, *r),
                    )
                })
            })
            .collect();
        let mut by_node: HashMap<String, Vec<&Arc<Pod>>> = HashMap::new();
        for (n, p) in &pods {
            by_node.entry(n.clone()).or_default().push(p);
        }
        let nodes: Vec<Arc<Node>> = layout
            .iter()
            .map(|(n, _)| Arc::new(node(json!({"metadata": {"name": n}}))))
            .collect();
        let spec = spec(json!({"containers": []}));
        let plan = rolling_update(&spec, &nodes, &by_node, "new", budget, 0, Timestamp::now());
        let mut deleted: Vec<String> = plan
            .delete
            .iter()
            .map(|(p, _)| p.metadata.name.clone().unwrap_or_default())
            .collect();
        deleted.sort();
        let mut created = plan.create;
        created.sort();
        (deleted, created)
    }

    #[test]
    fn without_surge_old_pods_go_within_max_unavailable_and_unavailable_ones_go_first() {
        let old = [("old", true)];
        let layout: [(&str, &[(&str, bool)]); 4] =
            [("a", &old), ("b", &old), ("c", &old), ("d", &old)];
        assert_eq!(plan_for(&layout, (0, 1)).0, ["a-old-0"]);
        assert_eq!(
            plan_for(&layout, (0, 3)).0,
            ["a-old-0", "b-old-0", "c-old-0"]
        );
        // A new pod not yet available uses up the budget...
        let waiting: [(&str, &[(&str, bool)]); 3] =
            [("a", &[("new", false)]), ("b", &old), ("c", &old)];
        assert!(plan_for(&waiting, (0, 1)).0.is_empty());
        // ...but an unavailable old pod is replaced whatever the budget.
        let broken: [(&str, &[(&str, bool)]); 3] = [
            ("a", &[("new", false)]),
            ("b", &[("old", false)]),
            ("c", &old),
        ];
        assert_eq!(plan_for(&broken, (0, 1)).0, ["b-old-0"]);
    }

    #[test]
    fn with_surge_new_pods_start_beside_old_ones_which_go_once_the_new_are_available() {
        let old = [("old", true)];
        let layout: [(&str, &[(&str, bool)]); 3] = [("a", &old), ("b", &old), ("c", &old)];
        assert_eq!(plan_for(&layout, (1, 0)), (vec![], vec!["a".to_string()]));
        assert_eq!(plan_for(&layout, (2, 0)).1, ["a", "b"]);
        // A surge pod not yet available holds the budget; an available one retires its old pod.
        let surging: [(&str, &[(&str, bool)]); 3] = [
            ("a", &[("old", true), ("new", false)]),
            ("b", &[("old", true), ("new", true)]),
            ("c", &old),
        ];
        assert_eq!(
            plan_for(&surging, (1, 0)),
            (vec!["b-old-0".to_string()], vec![])
        );
        // An unavailable old pod gets its replacement beside it at once.
        let broken: [(&str, &[(&str, bool)]); 2] = [
            ("a", &[("old", true), ("new", false)]),
            ("b", &[("old", false)]),
        ];
        assert_eq!(plan_for(&broken, (1, 0)).1, ["b"]);
    }

    #[test]
    fn failed_pods_are_replaced_with_a_doubling_back_off_per_node() {
        let mut m = HashMap::new();
        let t0 = Instant::now();
        let s = Duration::from_secs;
        assert_eq!(next_backoff(&mut m, "ds/n1", t0), Ok(()));
        assert_eq!(
            next_backoff(&mut m, "ds/n1", t0 + Duration::from_millis(400)),
            Err(Duration::from_millis(600))
        );
        assert_eq!(
            next_backoff(&mut m, "ds/n2", t0),
            Ok(()),
            "nodes back off apart"
        );
        assert_eq!(next_backoff(&mut m, "ds/n1", t0 + s(1)), Ok(()));
        assert_eq!(
            next_backoff(&mut m, "ds/n1", t0 + s(2)),
            Err(s(1)),
            "now 2 s"
        );
        assert_eq!(next_backoff(&mut m, "ds/n1", t0 + s(3)), Ok(()));
        assert_eq!(
            next_backoff(&mut m, "ds/n1", t0 + s(4)),
            Err(s(3)),
            "now 4 s"
        );
        let later = t0 + s(3) + Duration::from_millis(FAILED_POD_BACKOFF_MAX_MS * 2) + s(1);
        assert_eq!(next_backoff(&mut m, "ds/n1", later), Ok(()));
        assert_eq!(
            next_backoff(&mut m, "ds/n1", later + s(1)),
            Ok(()),
            "reset to 1 s after idling"
        );
    }
}
