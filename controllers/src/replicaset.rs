//! The ReplicaSet controller: keeps `spec.replicas` active pods matching the template,
//! adopts matching orphans, and reports `status` (replicas, ready, available, conditions).
//!
//! Creates go out in slow-start batches (1, 2, 4, … at most [`BURST_REPLICAS`] per
//! reconcile, as kube's controller does) and the next batch waits until the cache has seen
//! the last one ([`Expectations`]), so a lagging watch never doubles a ReplicaSet.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetCondition, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;

use crate::pods;
use crate::podwrites;
use crate::runtime::adopt;
use crate::runtime::expectations::Expectations;
use crate::runtime::{
    Action, Informer, OwnerIndex, ReconcileError, Reconciler, WorkQueue, controller_of, key_of,
};
use crate::selector::Selector;

static NO_LABELS: std::collections::BTreeMap<String, String> = std::collections::BTreeMap::new();

/// Most pods created or deleted by one reconcile of one ReplicaSet (kube: burstReplicas).
pub const BURST_REPLICAS: usize = 500;
/// How long pod changes that only move a ReplicaSet's status are gathered before it is
/// recomputed (over all its pods: 30,000 pods made continuous recomputation a quarter of
/// the server's CPU).
pub const STATUS_BATCH_MS: u64 = 250;
/// ...or `STATUS_BATCH_COST_FACTOR` times what the last status computation took, up to
/// `STATUS_BATCH_MAX_MS`, so a ReplicaSet of tens of thousands of pods spends a few percent
/// of a core on its status, not a quarter.
pub const STATUS_BATCH_COST_FACTOR: u64 = 20;
pub const STATUS_BATCH_MAX_MS: u64 = 2_000;
/// Pod creates or deletes in flight at once for one ReplicaSet.
pub const POD_WRITES_INFLIGHT_MAX: usize = 64;

pub struct ReplicaSetController {
    client: Client,
    pub rs: Arc<Informer<ReplicaSet>>,
    pods: Arc<Informer<Pod>>,
    pods_by_owner: Arc<OwnerIndex>,
    pub queue: Arc<WorkQueue>,
    expectations: Arc<Expectations>,
    /// How long the last status computation took, in microseconds.
    status_cost_us: Arc<std::sync::atomic::AtomicU64>,
}

fn rs_key_of_owner(pod: &Pod) -> Option<String> {
    let r = controller_of(pod)?;
    (r.kind == "ReplicaSet" && r.api_version == "apps/v1").then(|| {
        format!(
            "{}/{}",
            pod.metadata.namespace.as_deref().unwrap_or(""),
            r.name
        )
    })
}

impl ReplicaSetController {
    /// Wires the handlers; the informers are started by the caller.
    pub fn new(
        client: Client,
        rs: Arc<Informer<ReplicaSet>>,
        pods: Arc<Informer<Pod>>,
        pods_by_owner: Arc<OwnerIndex>,
    ) -> Arc<Self> {
        let queue = Arc::new(WorkQueue::default());
        let expectations = Arc::new(Expectations::default());
        let status_cost_us = Arc::new(std::sync::atomic::AtomicU64::new(0));
        {
            let q = queue.clone();
            rs.on_change(move |_, new| {
                if let Some(n) = new {
                    q.add(&key_of(n));
                }
            });
        }
        {
            let q = queue.clone();
            let e = expectations.clone();
            let cost = status_cost_us.clone();
            let rs_inf = rs.clone();
            pods.on_change(move |old, new| {
                let p = match (old, new) {
                    (_, Some(n)) => n,
                    (Some(o), None) => o,
                    (None, None) => return,
                };
                let owner = rs_key_of_owner(p);
                if let Some(owner) = &owner {
                    let key = key_of(p);
                    match (old, new) {
                        (None, Some(_)) => e.creation_observed(owner),
                        (Some(_), None) => e.deletion_observed(owner, &key),
                        (Some(o), Some(n))
                            if o.metadata.deletion_timestamp.is_none()
                                && n.metadata.deletion_timestamp.is_some() =>
                        {
                            e.deletion_observed(owner, &key)
                        }
                        _ => {}
                    }
                    // Creates and deletes wait on expectations: once met, act at once.
                    // Other pod changes only move the status, which is recomputed over
                    // every pod of the ReplicaSet: batch those.
                    if e.satisfied(owner) && matches!((old, new), (None, _) | (_, None)) {
                        q.add(owner);
                    } else {
                        let cost = cost.load(std::sync::atomic::Ordering::Relaxed);
                        let ms = (cost.saturating_mul(STATUS_BATCH_COST_FACTOR) / 1_000)
                            .clamp(STATUS_BATCH_MS, STATUS_BATCH_MAX_MS);
                        q.add_after(owner, Duration::from_millis(ms));
                    }
                }
                // A pod that lost its owner, or an orphan: a matching ReplicaSet may adopt it.
                let orphan_now = new.is_some_and(|n| controller_of(n).is_none());
                let owner_before = old.and_then(rs_key_of_owner);
                if orphan_now || (owner_before.is_some() && owner_before != owner) {
                    if let Some(o) = owner_before {
                        q.add(&o);
                    }
                    if orphan_now && let Some(n) = new {
                        let ns = n.metadata.namespace.clone().unwrap_or_default();
                        let labels = n.metadata.labels.clone().unwrap_or_default();
                        for r in rs_inf.filter(|r| {
                            r.metadata.namespace.as_deref() == Some(ns.as_str())
                                && r.metadata.deletion_timestamp.is_none()
                                && Selector::of_rs(r).is_some_and(|s| s.matches(&labels))
                        }) {
                            q.add(&key_of(r.as_ref()));
                        }
                    }
                }
            });
        }
        Arc::new(ReplicaSetController {
            client,
            rs,
            pods,
            pods_by_owner,
            queue,
            expectations,
            status_cost_us,
        })
    }

    fn owned_pods(&self, rs: &ReplicaSet) -> Vec<Arc<Pod>> {
        let uid = rs.metadata.uid.as_deref().unwrap_or("");
        let keys = self.pods_by_owner.owned_by(uid);
        self.pods.get_many(keys.iter().map(AsRef::as_ref))
    }

    /// Orphans in the namespace that the selector matches: adopted by setting this
    /// ReplicaSet as their controller. Whether any was adopted (see [`adopt`]).
    async fn adopt(&self, rs: &ReplicaSet, sel: &Selector) -> Result<bool, ReconcileError> {
        if rs.metadata.deletion_timestamp.is_some() {
            return Ok(false);
        }
        let ns = rs.metadata.namespace.as_deref().unwrap_or("");
        let orphans = self
            .pods
            .get_many(self.pods_by_owner.orphans_in(ns).iter().map(AsRef::as_ref))
            .into_iter()
            .filter(|p| {
                pods::is_active(p) && sel.matches(p.metadata.labels.as_ref().unwrap_or(&NO_LABELS))
            });
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        Ok(!adopt::adopt(&api, &owner_ref(rs), orphans)
            .await?
            .is_empty())
    }

    async fn create_pods(&self, key: &str, rs: &ReplicaSet, n: usize) -> Option<String> {
        let ns = rs.metadata.namespace.clone().unwrap_or_default();
        let pods = vec![pod_from_template(rs); n];
        podwrites::create_slow_start(
            &self.client,
            &ns,
            pods,
            &self.expectations,
            key,
            POD_WRITES_INFLIGHT_MAX,
        )
        .await
    }

    async fn delete_pods(&self, key: &str, victims: Vec<Arc<Pod>>) -> Result<(), ReconcileError> {
        podwrites::delete_expected(
            &self.client,
            victims,
            &self.expectations,
            key,
            POD_WRITES_INFLIGHT_MAX,
        )
        .await
        .map_err(Into::into)
    }
}

/// The controller reference a ReplicaSet puts on its pods.
pub fn owner_ref(rs: &ReplicaSet) -> OwnerReference {
    OwnerReference {
        api_version: "apps/v1".into(),
        kind: "ReplicaSet".into(),
        name: rs.metadata.name.clone().unwrap_or_default(),
        uid: rs.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// A new pod for `rs`: its template, a generated name, the controller reference.
pub fn pod_from_template(rs: &ReplicaSet) -> Pod {
    let tpl = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.clone())
        .unwrap_or_default();
    let tm = tpl.metadata.unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", rs.metadata.name.as_deref().unwrap_or(""))),
            namespace: rs.metadata.namespace.clone(),
            labels: tm.labels,
            annotations: tm.annotations,
            finalizers: tm.finalizers,
            owner_references: Some(vec![owner_ref(rs)]),
            ..ObjectMeta::default()
        },
        spec: tpl.spec,
        status: None,
    }
}

/// What the status should say, from the owned pods.
fn compute_status(
    rs: &ReplicaSet,
    owned: &[Arc<Pod>],
    sel: &Selector,
    failure: Option<&str>,
    now: Timestamp,
) -> (ReplicaSetStatus, Option<i64>) {
    let spec = rs.spec.clone().unwrap_or_default();
    let min_ready = i64::from(spec.min_ready_seconds.unwrap_or(0));
    let template_labels = spec
        .template
        .as_ref()
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let tsel = Selector::from_labels(&template_labels);
    let mut s = ReplicaSetStatus {
        observed_generation: rs.metadata.generation,
        ..ReplicaSetStatus::default()
    };
    let (mut replicas, mut labeled, mut ready, mut available, mut terminating) = (0, 0, 0, 0, 0);
    let mut wait: Option<i64> = None;
    for p in owned {
        if p.metadata.deletion_timestamp.is_some() {
            terminating += 1;
        }
        if !pods::is_active(p) {
            continue;
        }
        let labels = p.metadata.labels.as_ref().unwrap_or(&NO_LABELS);
        if !sel.matches(labels) {
            continue;
        }
        replicas += 1;
        if tsel.matches(labels) {
            labeled += 1;
        }
        if pods::is_ready(p) {
            ready += 1;
        }
        match pods::availability(p, min_ready, now) {
            Ok(()) => available += 1,
            Err(Some(secs)) => wait = Some(wait.map_or(secs, |w| w.min(secs))),
            Err(None) => {}
        }
    }
    s.replicas = replicas;
    s.fully_labeled_replicas = Some(labeled);
    s.ready_replicas = Some(ready);
    s.available_replicas = Some(available);
    s.terminating_replicas = Some(terminating);
    let old_cond = rs
        .status
        .as_ref()
        .and_then(|st| st.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "ReplicaFailure").cloned());
    // A failure is cleared once creates stop failing (kube keeps it until then).
    s.conditions = failure.map(|msg| {
        vec![ReplicaSetCondition {
            type_: "ReplicaFailure".into(),
            status: "True".into(),
            reason: Some("FailedCreate".into()),
            message: Some(msg.to_string()),
            last_transition_time: old_cond
                .as_ref()
                .and_then(|c| c.last_transition_time.clone())
                .or(Some(Time(now))),
        }]
    });
    (s, wait)
}

/// The status fields compared to decide whether to write (the transition time aside).
fn same_status(a: &ReplicaSetStatus, b: &ReplicaSetStatus) -> bool {
    let strip = |s: &ReplicaSetStatus| {
        let mut s = s.clone();
        if let Some(c) = s.conditions.as_mut() {
            for c in c.iter_mut() {
                c.last_transition_time = None;
            }
        }
        if s.conditions.as_ref().is_some_and(Vec::is_empty) {
            s.conditions = None;
        }
        if s.terminating_replicas == Some(0) {
            s.terminating_replicas = None;
        }
        s
    };
    strip(a) == strip(b)
}

#[async_trait::async_trait]
impl Reconciler for ReplicaSetController {
    fn name(&self) -> &'static str {
        "replicaset"
    }

    async fn reconcile(&self, key: &str) -> Result<Action, ReconcileError> {
        let Some(rs) = self.rs.get(key) else {
            self.expectations.delete(key);
            return Ok(Action::Done);
        };
        let Some(sel) = Selector::of_rs(&rs) else {
            return Ok(Action::Done);
        };
        if self.adopt(&rs, &sel).await? {
            return Ok(adopt::settle_after());
        }
        let timer = std::time::Instant::now();
        let owned = self.owned_pods(&rs);
        let mut failure = None;
        if self.expectations.satisfied(key) && rs.metadata.deletion_timestamp.is_none() {
            let want = usize::try_from(rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1))
                .unwrap_or(0);
            let mut active: Vec<Arc<Pod>> = owned
                .iter()
                .filter(|p| pods::is_active(p))
                .cloned()
                .collect();
            if active.len() < want {
                let n = (want - active.len()).min(BURST_REPLICAS);
                failure = self.create_pods(key, &rs, n).await;
            } else if active.len() > want {
                let n = (active.len() - want).min(BURST_REPLICAS);
                active.sort_by(|a, b| pods::deletion_order(a, b));
                active.truncate(n);
                self.delete_pods(key, active).await?;
            }
        }
        let now = Timestamp::now();
        let (status, wait) = compute_status(&rs, &owned, &sel, failure.as_deref(), now);
        // (Creates and deletes above are awaited API calls: measured without them.)
        if failure.is_none() && self.expectations.satisfied(key) {
            self.status_cost_us.store(
                u64::try_from(timer.elapsed().as_micros()).unwrap_or(u64::MAX),
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        let current = rs.status.clone().unwrap_or_default();
        if !same_status(&current, &status) {
            let api: Api<ReplicaSet> = Api::namespaced(
                self.client.clone(),
                rs.metadata.namespace.as_deref().unwrap_or(""),
            );
            let mut body = serde_json::to_value(&status).unwrap_or_default();
            if status.conditions.is_none()
                && let Some(o) = body.as_object_mut()
            {
                o.insert("conditions".into(), serde_json::Value::Null);
            }
            api.patch_status(
                rs.metadata.name.as_deref().unwrap_or(""),
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": body })),
            )
            .await?;
        }
        if let Some(msg) = failure {
            return Err(ReconcileError::Other(format!("creating pods: {msg}")));
        }
        Ok(match wait {
            Some(secs) => Action::RequeueAfter(Duration::from_secs(secs.max(1).unsigned_abs())),
            None => Action::Done,
        })
    }
}
