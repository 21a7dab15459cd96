//! The StatefulSet controller: pods with stable identities `<set>-<ordinal>` (labels
//! `statefulset.kubernetes.io/pod-name` and `apps.kubernetes.io/pod-index`, `hostname`, and
//! `subdomain` = `serviceName`), their PersistentVolumeClaims `<template>-<set>-<ordinal>`
//! from `volumeClaimTemplates` (created before the pod; kept or deleted per
//! `persistentVolumeClaimRetentionPolicy` through ownerReferences that the garbage collector
//! honours), revisions in ControllerRevisions ([`crate::history`]) and the status that
//! `kubectl rollout status` reads.
//!
//! The steps follow kube-controller-manager's `pkg/controller/statefulset`:
//! - `OrderedReady`: ordinal *i* is created only once 0..*i*-1 are Running, Ready and
//!   available (`minReadySeconds`); scale-down removes the highest ordinal first, one at a
//!   time, only while every other pod is healthy. `Parallel` creates and deletes at once.
//! - `RollingUpdate`: from the highest ordinal down to `partition`, a pod not on the update
//!   revision is deleted and recreated from it, waiting for each to be healthy again (or, with
//!   `maxUnavailable`, up to that many at once). `OnDelete`: a pod is replaced only when
//!   someone deletes it.
//! - Failed or succeeded pods are deleted and recreated.
//!
//! Not done: repairing a pod's identity or storage in place when someone edits it (kube
//! updates the pod), and releasing pods whose labels stop matching the selector.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, PodTemplateSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Api, Client};
use serde_json::json;

use crate::history;
use crate::pods;
use crate::runtime::adopt;
use crate::runtime::{
    Action, Informer, OwnerIndex, ReconcileError, Reconciler, WorkQueue, controller_of, key_of,
};
use crate::selector::Selector;

/// The pod's own name, as a label (a Service can select one replica).
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
/// The pod's ordinal, as a label.
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";
/// Pod creates or deletes in flight at once for one `Parallel` StatefulSet.
pub const POD_WRITES_INFLIGHT_MAX: usize = 16;

static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();

pub struct StatefulSetController {
    client: Client,
    pub sets: Arc<Informer<StatefulSet>>,
    pods: Arc<Informer<Pod>>,
    pods_by_owner: Arc<OwnerIndex>,
    revisions: Arc<Informer<ControllerRevision>>,
    revisions_by_owner: Arc<OwnerIndex>,
    claims: Arc<Informer<PersistentVolumeClaim>>,
    pub queue: Arc<WorkQueue>,
}

/// `(parent, ordinal)` of a pod named `<parent>-<ordinal>` (kube's `getParentNameAndOrdinal`;
/// the ordinal written without leading zeros).
pub fn parse_ordinal(pod_name: &str) -> Option<(&str, i32)> {
    let (parent, ord) = pod_name.rsplit_once('-')?;
    if ord.is_empty() || !ord.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: i32 = ord.parse().ok()?;
    (n.to_string() == ord).then_some((parent, n))
}

/// The ordinal of a pod of `set_name`, if it is one of its members by name.
fn ordinal_in(set_name: &str, pod: &Pod) -> Option<i32> {
    let (parent, n) = parse_ordinal(pod.metadata.name.as_deref()?)?;
    (parent == set_name).then_some(n)
}

/// `<template>-<set>-<ordinal>`: the claim a pod of a StatefulSet mounts.
pub fn claim_name(template: &str, set: &str, ordinal: i32) -> String {
    format!("{template}-{set}-{ordinal}")
}

fn set_key_of_owner(p: &Pod) -> Option<String> {
    let r = controller_of(p)?;
    (r.kind == "StatefulSet" && r.api_version.starts_with("apps/")).then(|| {
        format!(
            "{}/{}",
            p.metadata.namespace.as_deref().unwrap_or(""),
            r.name
        )
    })
}

pub fn owner_ref(set: &StatefulSet) -> OwnerReference {
    OwnerReference {
        api_version: "apps/v1".into(),
        kind: "StatefulSet".into(),
        name: set.metadata.name.clone().unwrap_or_default(),
        uid: set.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Running and Ready, and not being deleted.
fn is_healthy(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none() && pods::phase(p) == "Running" && pods::is_ready(p)
}

fn revision_of_pod(p: &Pod) -> &str {
    p.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(history::HASH_LABEL))
        .map_or("", String::as_str)
}

/// The retention policy as `(whenDeleted is Delete, whenScaled is Delete)`.
fn retention(set: &StatefulSet) -> (bool, bool) {
    let p = set
        .spec
        .as_ref()
        .and_then(|s| s.persistent_volume_claim_retention_policy.as_ref());
    let del = |v: Option<&String>| v.is_some_and(|v| v == "Delete");
    (
        del(p.and_then(|p| p.when_deleted.as_ref())),
        del(p.and_then(|p| p.when_scaled.as_ref())),
    )
}

fn plain_ref(api_version: &str, kind: &str, meta: &ObjectMeta) -> OwnerReference {
    OwnerReference {
        api_version: api_version.into(),
        kind: kind.into(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
        controller: None,
        block_owner_deletion: None,
    }
}

/// The ownerReferences a claim should carry for the retention policy (kube's
/// `updateClaimOwnerRefForSetAndPod`): the set's when `whenDeleted: Delete` (dropped while
/// the pod is scaled down under `whenScaled: Delete`), the pod's when `whenScaled: Delete`
/// and the pod's ordinal is out of range. Other owners are kept. `None`: no change.
pub fn claim_owner_refs(
    current: &[OwnerReference],
    set_ref: &OwnerReference,
    pod_ref: Option<&OwnerReference>,
    in_range: bool,
    (when_deleted, when_scaled): (bool, bool),
) -> Option<Vec<OwnerReference>> {
    let want_set = when_deleted && (in_range || !when_scaled);
    let want_pod = when_scaled && !in_range;
    let mut out: Vec<OwnerReference> = current
        .iter()
        .filter(|r| r.uid != set_ref.uid && pod_ref.is_none_or(|p| p.uid != r.uid))
        .cloned()
        .collect();
    let has = |uid: &str| current.iter().any(|r| r.uid == uid);
    if want_set {
        out.push(
            current
                .iter()
                .find(|r| r.uid == set_ref.uid)
                .cloned()
                .unwrap_or_else(|| set_ref.clone()),
        );
    }
    if let Some(p) = pod_ref
        && want_pod
    {
        out.push(
            current
                .iter()
                .find(|r| r.uid == p.uid)
                .cloned()
                .unwrap_or_else(|| p.clone()),
        );
    }
    let changed = want_set != has(&set_ref.uid) || pod_ref.is_some_and(|p| want_pod != has(&p.uid));
    changed.then_some(out)
}

/// An int-or-percent of `total`, rounded down, at least 1 (a StatefulSet's maxUnavailable).
pub fn max_unavailable(v: &IntOrString, total: i32) -> i32 {
    let n = match v {
        IntOrString::Int(i) => *i,
        IntOrString::String(s) => match s.trim_end_matches('%').parse::<i64>() {
            Ok(p) => i32::try_from(i64::from(total) * p / 100).unwrap_or(i32::MAX),
            Err(_) => 1,
        },
    };
    n.max(1)
}

/// The pod for `ordinal` from `template` at `revision` (kube's `newVersionedStatefulSetPod`).
pub fn new_pod(set: &StatefulSet, template: &PodTemplateSpec, revision: &str, ordinal: i32) -> Pod {
    let set_name = set.metadata.name.clone().unwrap_or_default();
    let name = format!("{set_name}-{ordinal}");
    let tm = template.metadata.clone().unwrap_or_default();
    let mut labels = tm.labels.unwrap_or_default();
    labels.insert(POD_NAME_LABEL.into(), name.clone());
    labels.insert(POD_INDEX_LABEL.into(), ordinal.to_string());
    labels.insert(history::HASH_LABEL.into(), revision.to_string());
    let mut spec = template.spec.clone().unwrap_or_default();
    spec.hostname = Some(name.clone());
    if let Some(svc) = set
        .spec
        .as_ref()
        .and_then(|s| s.service_name.clone())
        .filter(|s| !s.is_empty())
    {
        spec.subdomain = Some(svc);
    }
    let claims = set
        .spec
        .as_ref()
        .and_then(|s| s.volume_claim_templates.clone())
        .unwrap_or_default();
    if !claims.is_empty() {
        let volumes = spec.volumes.get_or_insert_with(Vec::new);
        for c in &claims {
            let cname = c.metadata.name.clone().unwrap_or_default();
            volumes.retain(|v| v.name != cname);
            volumes.push(Volume {
                name: cname.clone(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: claim_name(&cname, &set_name, ordinal),
                    read_only: None,
                }),
                ..Volume::default()
            });
        }
    }
    Pod {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: set.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: tm.annotations,
            finalizers: tm.finalizers,
            owner_references: Some(vec![owner_ref(set)]),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// The claims of `ordinal` (kube's `getPersistentVolumeClaims`): the templates, named per
/// ordinal, labelled with the set's `matchLabels`.
pub fn new_claims(set: &StatefulSet, ordinal: i32) -> Vec<PersistentVolumeClaim> {
    let set_name = set.metadata.name.clone().unwrap_or_default();
    let spec = set.spec.clone().unwrap_or_default();
    let (when_deleted, _) = retention(set);
    spec.volume_claim_templates
        .unwrap_or_default()
        .into_iter()
        .map(|t| {
            let tname = t.metadata.name.clone().unwrap_or_default();
            let mut labels = t.metadata.labels.clone().unwrap_or_default();
            for (k, v) in spec.selector.match_labels.iter().flatten() {
                labels.insert(k.clone(), v.clone());
            }
            PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some(claim_name(&tname, &set_name, ordinal)),
                    namespace: set.metadata.namespace.clone(),
                    labels: Some(labels),
                    annotations: t.metadata.annotations.clone(),
                    owner_references: when_deleted
                        .then(|| vec![plain_ref("apps/v1", "StatefulSet", &set.metadata)]),
                    ..ObjectMeta::default()
                },
                spec: t.spec,
                status: None,
            }
        })
        .collect()
}

/// What one reconcile works from.
struct View {
    set: StatefulSet,
    start: i32,
    replicas: i32,
    /// Pods in `[start, start + replicas)`, by ordinal.
    members: BTreeMap<i32, Arc<Pod>>,
    /// Pods outside the range, highest ordinal first.
    condemned: Vec<(i32, Arc<Pod>)>,
    current_rev: String,
    update_rev: String,
    current_tpl: PodTemplateSpec,
    update_tpl: PodTemplateSpec,
    min_ready_seconds: i64,
}

impl View {
    fn monotonic(&self) -> bool {
        self.set
            .spec
            .as_ref()
            .and_then(|s| s.pod_management_policy.as_deref())
            != Some("Parallel")
    }

    fn strategy(&self) -> (bool, i32, Option<IntOrString>) {
        let us = self
            .set
            .spec
            .as_ref()
            .and_then(|s| s.update_strategy.clone())
            .unwrap_or_default();
        let on_delete = us.type_.as_deref() == Some("OnDelete");
        let ru = us.rolling_update.unwrap_or_default();
        (on_delete, ru.partition.unwrap_or(0), ru.max_unavailable)
    }

    /// The template and revision a new pod for `ordinal` gets: the current revision below
    /// the partition, else the update revision.
    fn template_for(&self, ordinal: i32) -> (&PodTemplateSpec, &str) {
        let (on_delete, partition, _) = self.strategy();
        if !on_delete && ordinal < self.start + partition {
            (&self.current_tpl, &self.current_rev)
        } else {
            (&self.update_tpl, &self.update_rev)
        }
    }

    fn available(&self, p: &Pod, now: Timestamp) -> Result<(), Option<i64>> {
        if !is_healthy(p) {
            return Err(None);
        }
        pods::availability(p, self.min_ready_seconds, now)
    }
}

impl StatefulSetController {
    /// Wires the handlers; the informers are started by the caller.
    pub fn new(
        client: Client,
        sets: Arc<Informer<StatefulSet>>,
        pods: Arc<Informer<Pod>>,
        pods_by_owner: Arc<OwnerIndex>,
        revisions: Arc<Informer<ControllerRevision>>,
        revisions_by_owner: Arc<OwnerIndex>,
        claims: Arc<Informer<PersistentVolumeClaim>>,
    ) -> Arc<Self> {
        let queue = Arc::new(WorkQueue::default());
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
            let sets2 = sets.clone();
            pods.on_change(move |old, new| {
                for p in [old, new].into_iter().flatten() {
                    if let Some(k) = set_key_of_owner(p) {
                        q.add(&k);
                    }
                }
                // An orphan named like a member: its set may adopt it.
                if let Some(n) = new
                    && controller_of(n).is_none()
                    && let Some((parent, _)) = n.metadata.name.as_deref().and_then(parse_ordinal)
                {
                    let k = format!("{}/{parent}", n.metadata.namespace.as_deref().unwrap_or(""));
                    if sets2.get(&k).is_some() {
                        q.add(&k);
                    }
                }
            });
        }
        Arc::new(StatefulSetController {
            client,
            sets,
            pods,
            pods_by_owner,
            revisions,
            revisions_by_owner,
            claims,
            queue,
        })
    }

    fn pod_api(&self, ns: &str) -> Api<Pod> {
        Api::namespaced(self.client.clone(), ns)
    }

    /// Orphans named `<set>-<n>` that the selector matches become the set's; whether any did.
    async fn adopt(&self, set: &StatefulSet, sel: &Selector) -> Result<bool, ReconcileError> {
        let ns = set.metadata.namespace.as_deref().unwrap_or("");
        let name = set.metadata.name.as_deref().unwrap_or("");
        let orphans = self
            .pods
            .get_many(self.pods_by_owner.orphans_in(ns).iter().map(AsRef::as_ref))
            .into_iter()
            .filter(|p| {
                p.metadata.deletion_timestamp.is_none()
                    && ordinal_in(name, p).is_some()
                    && sel.matches(p.metadata.labels.as_ref().unwrap_or(&NO_LABELS))
            });
        Ok(!adopt::adopt(&self.pod_api(ns), &owner_ref(set), orphans)
            .await?
            .is_empty())
    }

    /// Creates the ordinal's missing claims, then its pod.
    async fn create(&self, v: &View, ordinal: i32) -> Result<(), ReconcileError> {
        let ns = v.set.metadata.namespace.clone().unwrap_or_default();
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), &ns);
        for c in new_claims(&v.set, ordinal) {
            let cname = c.metadata.name.clone().unwrap_or_default();
            if self.claims.get(&format!("{ns}/{cname}")).is_some() {
                continue;
            }
            match claims.create(&PostParams::default(), &c).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
        }
        let (tpl, rev) = v.template_for(ordinal);
        let pod = new_pod(&v.set, tpl, rev, ordinal);
        match self.pod_api(&ns).create(&PostParams::default(), &pod).await {
            Ok(_) => Ok(()),
            // Made already; the cache has not seen it yet.
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn delete(&self, p: &Pod) -> Result<(), ReconcileError> {
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: p.metadata.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match self
            .pod_api(p.metadata.namespace.as_deref().unwrap_or(""))
            .delete(p.metadata.name.as_deref().unwrap_or(""), &dp)
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if matches!(s.code, 404 | 409) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Puts the retention policy's ownerReferences on every existing pod's claims.
    async fn retain_claims(&self, v: &View) -> Result<(), ReconcileError> {
        let policy = retention(&v.set);
        let set_ref = plain_ref("apps/v1", "StatefulSet", &v.set.metadata);
        let set_name = v.set.metadata.name.clone().unwrap_or_default();
        let ns = v.set.metadata.namespace.clone().unwrap_or_default();
        let templates = v
            .set
            .spec
            .as_ref()
            .and_then(|s| s.volume_claim_templates.clone())
            .unwrap_or_default();
        if templates.is_empty() {
            return Ok(());
        }
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), &ns);
        let pods = v
            .members
            .iter()
            .map(|(o, p)| (*o, p, true))
            .chain(v.condemned.iter().map(|(o, p)| (*o, p, false)));
        for (ordinal, pod, in_range) in pods {
            let pod_ref = plain_ref("v1", "Pod", &pod.metadata);
            for t in &templates {
                let cname =
                    claim_name(t.metadata.name.as_deref().unwrap_or(""), &set_name, ordinal);
                let Some(claim) = self.claims.get(&format!("{ns}/{cname}")) else {
                    continue;
                };
                let current = claim.metadata.owner_references.clone().unwrap_or_default();
                let Some(refs) =
                    claim_owner_refs(&current, &set_ref, Some(&pod_ref), in_range, policy)
                else {
                    continue;
                };
                let patch = json!({"metadata": {
                    "ownerReferences": refs,
                    "resourceVersion": claim.metadata.resource_version,
                }});
                // A conflict fails the reconcile: a scaled-down pod must not be deleted before
                // its claims carry its reference, or they would outlive it.
                match api
                    .patch(&cname, &PatchParams::default(), &Patch::Merge(patch))
                    .await
                {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(())
    }

    /// Carries out one [`plan_step`]: claims and pods created, pods deleted; returns how
    /// long until a pod becomes available, when something waits on that.
    async fn sync_pods(&self, v: &View, now: Timestamp) -> Result<Option<i64>, ReconcileError> {
        let step = plan_step(v, now);
        let creates: Vec<Result<(), ReconcileError>> = futures::stream::iter(step.create)
            .map(|o| self.create(v, o))
            .buffer_unordered(POD_WRITES_INFLIGHT_MAX)
            .collect()
            .await;
        creates.into_iter().collect::<Result<Vec<()>, _>>()?;
        let deletes: Vec<Result<(), ReconcileError>> = futures::stream::iter(step.delete)
            .map(|p| async move { self.delete(&p).await })
            .buffer_unordered(POD_WRITES_INFLIGHT_MAX)
            .collect()
            .await;
        deletes.into_iter().collect::<Result<Vec<()>, _>>()?;
        Ok(step.wait)
    }
}

/// What one pass over a StatefulSet does.
#[derive(Debug, Default)]
struct Step {
    /// Ordinals to create (claims first, then the pod).
    create: Vec<i32>,
    delete: Vec<Arc<Pod>>,
    /// Seconds until a pod that is ready becomes available (minReadySeconds).
    wait: Option<i64>,
}

/// One pass of kube's `updateStatefulSet` as a pure function: replace failed members, create
/// missing ones, remove condemned ones from the highest ordinal, then roll. OrderedReady
/// (`monotonic`) does at most one thing per pass and stops at the first member that is not
/// yet available; Parallel does everything at once.
fn plan_step(v: &View, now: Timestamp) -> Step {
    let monotonic = v.monotonic();
    let mut step = Step::default();
    // Members: replace failed pods, create missing ones, wait for each in order.
    for ordinal in v.start..v.start + v.replicas {
        match v.members.get(&ordinal) {
            Some(p) if matches!(pods::phase(p), "Failed" | "Succeeded") => {
                if p.metadata.deletion_timestamp.is_none() {
                    step.delete.push(p.clone());
                }
                if monotonic {
                    return step;
                }
            }
            Some(p) => {
                if !monotonic {
                    continue;
                }
                if p.metadata.deletion_timestamp.is_some() {
                    return step;
                }
                if let Err(w) = v.available(p, now) {
                    step.wait = w;
                    return step;
                }
            }
            None => {
                step.create.push(ordinal);
                if monotonic {
                    return step;
                }
            }
        }
    }
    // Condemned: from the highest ordinal down, once the rest is healthy.
    let first_unhealthy = v
        .members
        .values()
        .chain(v.condemned.iter().rev().map(|(_, p)| p))
        .find(|p| !is_healthy(p))
        .map(|p| key_of(p.as_ref()));
    for (_, p) in &v.condemned {
        if p.metadata.deletion_timestamp.is_some() {
            if monotonic {
                return step;
            }
            continue;
        }
        if monotonic
            && v.available(p, now).is_err()
            && first_unhealthy.as_deref() != Some(key_of(p.as_ref()).as_str())
        {
            return step;
        }
        step.delete.push(p.clone());
        if monotonic {
            return step;
        }
    }
    let (on_delete, partition, max_unavail) = v.strategy();
    if on_delete {
        return step;
    }
    let update_min = v.start + partition.max(0);
    let outdated =
        |p: &Pod| revision_of_pod(p) != v.update_rev && p.metadata.deletion_timestamp.is_none();
    match max_unavail {
        None => {
            // One at a time, from the highest ordinal, each available before the next.
            for ordinal in (update_min..v.start + v.replicas).rev() {
                let Some(p) = v.members.get(&ordinal) else {
                    return step;
                };
                if outdated(p) {
                    step.delete.push(p.clone());
                    return step;
                }
                if let Err(w) = v.available(p, now) {
                    step.wait = step.wait.or(w);
                    return step;
                }
            }
        }
        Some(mu) => {
            // Up to maxUnavailable at once, counting members already unavailable.
            let budget = max_unavailable(&mu, v.replicas);
            let unavailable = (v.start..v.start + v.replicas)
                .filter(|o| {
                    v.members
                        .get(o)
                        .is_none_or(|p| v.available(p, now).is_err())
                })
                .count();
            let mut left = usize::try_from(budget)
                .unwrap_or(0)
                .saturating_sub(unavailable);
            for ordinal in (update_min..v.start + v.replicas).rev() {
                if left == 0 {
                    break;
                }
                if let Some(p) = v.members.get(&ordinal)
                    && outdated(p)
                {
                    step.delete.push(p.clone());
                    left -= 1;
                }
            }
        }
    }
    step
}

/// The status of the set's pods (kube's `updateStatefulSet` counting, then
/// `completeRollingUpdate`).
fn compute_status(v: &View, all: &[Arc<Pod>], now: Timestamp) -> StatefulSetStatus {
    let mut s = StatefulSetStatus {
        observed_generation: v.set.metadata.generation,
        current_revision: Some(v.current_rev.clone()),
        update_revision: Some(v.update_rev.clone()),
        collision_count: v.set.status.as_ref().and_then(|s| s.collision_count),
        ..StatefulSetStatus::default()
    };
    let (mut ready, mut available, mut current, mut updated) = (0, 0, 0, 0);
    for p in all {
        s.replicas += 1;
        if is_healthy(p) {
            ready += 1;
            if v.available(p, now).is_ok() {
                available += 1;
            }
        }
        if p.metadata.deletion_timestamp.is_none() {
            let r = revision_of_pod(p);
            if r == v.current_rev {
                current += 1;
            }
            if r == v.update_rev {
                updated += 1;
            }
        }
    }
    s.ready_replicas = Some(ready);
    s.available_replicas = Some(available);
    s.current_replicas = Some(current);
    s.updated_replicas = Some(updated);
    let (on_delete, _, _) = v.strategy();
    if !on_delete && updated == s.replicas && ready == s.replicas {
        s.current_replicas = Some(updated);
        s.current_revision = Some(v.update_rev.clone());
    }
    s
}

#[async_trait::async_trait]
impl Reconciler for StatefulSetController {
    fn name(&self) -> &'static str {
        "statefulset"
    }

    async fn reconcile(&self, key: &str) -> Result<Action, ReconcileError> {
        let Some(set) = self.sets.get(key) else {
            return Ok(Action::Done);
        };
        let set = (*set).clone();
        let Some(spec) = set.spec.clone() else {
            return Ok(Action::Done);
        };
        if set.metadata.deletion_timestamp.is_some() {
            // The garbage collector removes the pods (and claims owned by the set).
            return Ok(Action::Done);
        }
        let sel = Selector::from_label_selector(&spec.selector);
        if spec
            .selector
            .match_labels
            .as_ref()
            .is_none_or(BTreeMap::is_empty)
            && spec
                .selector
                .match_expressions
                .as_ref()
                .is_none_or(Vec::is_empty)
        {
            return Ok(Action::Done);
        }
        let ns = set.metadata.namespace.clone().unwrap_or_default();
        let name = set.metadata.name.clone().unwrap_or_default();
        let uid = set.metadata.uid.clone().unwrap_or_default();
        if self.adopt(&set, &sel).await? {
            return Ok(adopt::settle_after());
        }

        // Revisions.
        let settled = history::settle_for(
            &self.client,
            history::Revisions {
                cache: &self.revisions,
                by_owner: &self.revisions_by_owner,
            },
            &Api::<StatefulSet>::namespaced(self.client.clone(), &ns),
            &owner_ref(&set),
            &ns,
            &spec.template,
            &sel,
            set.status.as_ref().and_then(|s| s.collision_count),
        )
        .await?;
        let update_rev = settled.update.metadata.name.clone().unwrap_or_default();
        let current = set
            .status
            .as_ref()
            .and_then(|s| s.current_revision.clone())
            .and_then(|c| {
                settled
                    .all
                    .iter()
                    .find(|r| r.metadata.name.as_deref() == Some(c.as_str()))
                    .cloned()
            })
            .unwrap_or_else(|| settled.update.clone());
        let current_rev = current.metadata.name.clone().unwrap_or_default();
        let current_tpl = history::template_of(&current).unwrap_or_else(|| spec.template.clone());

        // Pods.
        let all: Vec<Arc<Pod>> = self
            .pods
            .get_many(self.pods_by_owner.owned_by(&uid).iter().map(AsRef::as_ref));
        let start = spec
            .ordinals
            .as_ref()
            .and_then(|o| o.start)
            .unwrap_or(0)
            .max(0);
        let replicas = spec.replicas.unwrap_or(1).max(0);
        let mut members = BTreeMap::new();
        let mut condemned = Vec::new();
        let mut mine = Vec::new();
        for p in all {
            let Some(o) = ordinal_in(&name, &p) else {
                continue;
            };
            mine.push(p.clone());
            if o >= start && o < start + replicas {
                members.insert(o, p);
            } else {
                condemned.push((o, p));
            }
        }
        condemned.sort_by_key(|(o, _)| std::cmp::Reverse(*o));
        let view = View {
            set: set.clone(),
            start,
            replicas,
            members,
            condemned,
            current_rev,
            update_rev,
            current_tpl,
            update_tpl: spec.template.clone(),
            min_ready_seconds: i64::from(spec.min_ready_seconds.unwrap_or(0)),
        };
        let now = Timestamp::now();
        self.retain_claims(&view).await?;
        let wait = self.sync_pods(&view, now).await?;

        // Status.
        let status = compute_status(&view, &mine, now);
        let old = set.status.clone().unwrap_or_default();
        let mut cmp = old.clone();
        cmp.conditions = None;
        if cmp != status {
            let body = serde_json::to_value(&status).unwrap_or_default();
            Api::<StatefulSet>::namespaced(self.client.clone(), &ns)
                .patch_status(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({ "status": body })),
                )
                .await?;
        }

        // History: keep revisionHistoryLimit revisions no pod runs.
        let live: HashMap<&str, ()> = mine
            .iter()
            .map(|p| (revision_of_pod(p), ()))
            .chain([
                (view.current_rev.as_str(), ()),
                (view.update_rev.as_str(), ()),
            ])
            .collect();
        let limit = usize::try_from(spec.revision_history_limit.unwrap_or(10).max(0)).unwrap_or(10);
        let is_live =
            |r: &ControllerRevision| live.contains_key(r.metadata.name.as_deref().unwrap_or(""));
        for r in history::to_prune(&settled.all, &is_live, limit) {
            history::delete(&self.client, r).await?;
        }
        Ok(match wait {
            Some(secs) => Action::RequeueAfter(Duration::from_secs(secs.max(1).unsigned_abs())),
            None => Action::Done,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(v: serde_json::Value) -> StatefulSet {
        serde_json::from_value(v).unwrap_or_default()
    }

    fn web() -> StatefulSet {
        set(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "s1"},
            "spec": {
                "serviceName": "nginx",
                "replicas": 3,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                             "spec": {"containers": [{"name": "c", "image": "nginx"}],
                                      "volumes": [{"name": "data", "emptyDir": {}}]}},
                "volumeClaimTemplates": [{"metadata": {"name": "data", "labels": {"t": "x"}},
                    "spec": {"accessModes": ["ReadWriteOnce"],
                             "resources": {"requests": {"storage": "1Gi"}}}}],
            }
        }))
    }

    #[test]
    fn ordinals_parse_only_from_canonical_member_names() {
        let cases = [
            ("web-0", Some(("web", 0))),
            ("web-12", Some(("web", 12))),
            ("my-web-3", Some(("my-web", 3))),
            ("web-03", None),
            ("web-", None),
            ("web", None),
            ("web-x", None),
            ("web--1", Some(("web-", 1))),
            ("web-99999999999", None),
        ];
        for (name, want) in cases {
            assert_eq!(parse_ordinal(name), want, "{name}");
        }
    }

    #[test]
    fn a_pod_gets_its_identity_and_its_claims_as_volumes() {
        let s = web();
        let tpl = s
            .spec
            .as_ref()
            .map(|s| s.template.clone())
            .unwrap_or_default();
        let p = new_pod(&s, &tpl, "web-abc", 2);
        assert_eq!(p.metadata.name.as_deref(), Some("web-2"));
        let l = p.metadata.labels.clone().unwrap_or_default();
        assert_eq!(l.get(POD_NAME_LABEL).map(String::as_str), Some("web-2"));
        assert_eq!(l.get(POD_INDEX_LABEL).map(String::as_str), Some("2"));
        assert_eq!(
            l.get(history::HASH_LABEL).map(String::as_str),
            Some("web-abc")
        );
        let spec = p.spec.unwrap_or_default();
        assert_eq!(spec.hostname.as_deref(), Some("web-2"));
        assert_eq!(spec.subdomain.as_deref(), Some("nginx"));
        let vols = spec.volumes.unwrap_or_default();
        assert_eq!(
            vols.len(),
            1,
            "the claim replaces the template's volume of that name"
        );
        assert_eq!(
            vols[0]
                .persistent_volume_claim
                .as_ref()
                .map(|c| c.claim_name.as_str()),
            Some("data-web-2")
        );
        let claims = new_claims(&s, 2);
        assert_eq!(claims[0].metadata.name.as_deref(), Some("data-web-2"));
        let cl = claims[0].metadata.labels.clone().unwrap_or_default();
        assert_eq!(cl.get("app").map(String::as_str), Some("web"));
        assert_eq!(cl.get("t").map(String::as_str), Some("x"));
        assert!(claims[0].metadata.owner_references.is_none());
    }

    #[test]
    fn claim_owners_follow_the_retention_policy() {
        let set_ref = plain_ref("apps/v1", "StatefulSet", &web().metadata);
        let pod_ref = OwnerReference {
            api_version: "v1".into(),
            kind: "Pod".into(),
            name: "web-2".into(),
            uid: "p2".into(),
            ..OwnerReference::default()
        };
        let uids = |v: Option<Vec<OwnerReference>>| {
            v.map(|v| v.into_iter().map(|r| r.uid).collect::<Vec<_>>())
        };
        // (refs now, in range, (whenDeleted, whenScaled)) -> new refs (None: unchanged)
        type Case<'a> = (
            Vec<OwnerReference>,
            bool,
            (bool, bool),
            Option<Vec<&'a str>>,
        );
        let cases: Vec<Case> = vec![
            (vec![], true, (false, false), None),
            (vec![set_ref.clone()], true, (false, false), Some(vec![])),
            (vec![], true, (true, false), Some(vec!["s1"])),
            (vec![set_ref.clone()], true, (true, false), None),
            (vec![], true, (false, true), None),
            (vec![], false, (false, true), Some(vec!["p2"])),
            (vec![set_ref.clone()], false, (true, true), Some(vec!["p2"])),
            (vec![pod_ref.clone()], true, (true, true), Some(vec!["s1"])),
        ];
        for (i, (now, in_range, policy, want)) in cases.into_iter().enumerate() {
            let got = uids(claim_owner_refs(
                &now,
                &set_ref,
                Some(&pod_ref),
                in_range,
                policy,
            ));
            let want = want.map(|w| w.into_iter().map(String::from).collect::<Vec<_>>());
            assert_eq!(got, want, "case {i}");
        }
    }

    #[test]
    fn max_unavailable_rounds_down_and_is_at_least_one() {
        assert_eq!(max_unavailable(&IntOrString::Int(2), 5), 2);
        assert_eq!(max_unavailable(&IntOrString::String("50%".into()), 5), 2);
        assert_eq!(max_unavailable(&IntOrString::String("10%".into()), 5), 1);
        assert_eq!(max_unavailable(&IntOrString::Int(0), 5), 1);
    }

    /// A member pod: `state` is one of ready, unready, terminating, failed.
    fn member(ordinal: i32, rev: &str, state: &str, ready_since: &str) -> (i32, Arc<Pod>) {
        let mut v = json!({
            "metadata": {"name": format!("web-{ordinal}"), "namespace": "default",
                         "labels": {history::HASH_LABEL: rev}},
            "spec": {"containers": []},
            "status": {"phase": if state == "failed" { "Failed" } else { "Running" },
                       "conditions": [{"type": "Ready",
                                       "status": if state == "unready" { "False" } else { "True" },
                                       "lastTransitionTime": ready_since}]},
        });
        if state == "terminating" {
            v["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        }
        (
            ordinal,
            Arc::new(serde_json::from_value(v).unwrap_or_default()),
        )
    }

    fn view(spec: serde_json::Value, pods: Vec<(i32, Arc<Pod>)>) -> View {
        let mut base = json!({"metadata": {"name": "web", "namespace": "default", "uid": "s1"},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {}}});
        if let (Some(o), Some(e)) = (base["spec"].as_object_mut(), spec.as_object()) {
            o.extend(e.clone());
        }
        let set = super::tests::set(base);
        let sp = set.spec.clone().unwrap_or_default();
        let start = sp.ordinals.as_ref().and_then(|o| o.start).unwrap_or(0);
        let replicas = sp.replicas.unwrap_or(1);
        let mut members = BTreeMap::new();
        let mut condemned = Vec::new();
        for (o, p) in pods {
            if o >= start && o < start + replicas {
                members.insert(o, p);
            } else {
                condemned.push((o, p));
            }
        }
        condemned.sort_by_key(|(o, _)| std::cmp::Reverse(*o));
        View {
            min_ready_seconds: i64::from(sp.min_ready_seconds.unwrap_or(0)),
            set,
            start,
            replicas,
            members,
            condemned,
            current_rev: "r1".into(),
            update_rev: "r2".into(),
            current_tpl: PodTemplateSpec::default(),
            update_tpl: PodTemplateSpec::default(),
        }
    }

    #[test]
    fn each_pass_takes_the_step_kube_would() {
        let t = "2026-01-01T00:00:00Z";
        let now: Timestamp = "2026-01-01T00:01:00Z".parse().unwrap_or_default();
        let ordered = |r: i32| json!({"replicas": r});
        let parallel = |r: i32| json!({"replicas": r, "podManagementPolicy": "Parallel"});
        let partition = |p: i32| json!({"replicas": 3, "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": p}}});
        let m = |o: i32, rev: &str, state: &str| member(o, rev, state, t);
        // (what, spec, pods, creates, deletes, wait)
        type Case<'a> = (
            &'a str,
            serde_json::Value,
            Vec<(i32, Arc<Pod>)>,
            Vec<i32>,
            Vec<&'a str>,
            Option<i64>,
        );
        let cases: Vec<Case> = vec![
            (
                "ordered: the first ordinal alone",
                ordered(3),
                vec![],
                vec![0],
                vec![],
                None,
            ),
            (
                "ordered: the next once the previous is ready",
                ordered(3),
                vec![m(0, "r2", "ready")],
                vec![1],
                vec![],
                None,
            ),
            (
                "ordered: nothing while a member is unready",
                ordered(3),
                vec![m(0, "r2", "unready")],
                vec![],
                vec![],
                None,
            ),
            (
                "parallel: all at once",
                parallel(3),
                vec![],
                vec![0, 1, 2],
                vec![],
                None,
            ),
            (
                "ordered: the highest ordinal goes first",
                ordered(1),
                vec![
                    m(0, "r2", "ready"),
                    m(1, "r2", "ready"),
                    m(2, "r2", "ready"),
                ],
                vec![],
                vec!["web-2"],
                None,
            ),
            (
                "ordered: one at a time",
                ordered(1),
                vec![
                    m(0, "r2", "ready"),
                    m(1, "r2", "ready"),
                    m(2, "r2", "terminating"),
                ],
                vec![],
                vec![],
                None,
            ),
            (
                "ordered: no scale-down while a member is unready",
                ordered(1),
                vec![
                    m(0, "r2", "unready"),
                    m(1, "r2", "ready"),
                    m(2, "r2", "ready"),
                ],
                vec![],
                vec![],
                None,
            ),
            (
                "parallel: every condemned pod at once",
                parallel(1),
                vec![
                    m(0, "r2", "ready"),
                    m(1, "r2", "ready"),
                    m(2, "r2", "ready"),
                ],
                vec![],
                vec!["web-2", "web-1"],
                None,
            ),
            (
                "rolling: the highest outdated ordinal",
                partition(1),
                vec![
                    m(0, "r1", "ready"),
                    m(1, "r1", "ready"),
                    m(2, "r1", "ready"),
                ],
                vec![],
                vec!["web-2"],
                None,
            ),
            (
                "rolling: then the next",
                partition(1),
                vec![
                    m(0, "r1", "ready"),
                    m(1, "r1", "ready"),
                    m(2, "r2", "ready"),
                ],
                vec![],
                vec!["web-1"],
                None,
            ),
            (
                "rolling: never below the partition",
                partition(1),
                vec![
                    m(0, "r1", "ready"),
                    m(1, "r2", "ready"),
                    m(2, "r2", "ready"),
                ],
                vec![],
                vec![],
                None,
            ),
            (
                "on delete: nothing rolls",
                json!({"replicas": 2, "updateStrategy": {"type": "OnDelete"}}),
                vec![m(0, "r1", "ready"), m(1, "r1", "ready")],
                vec![],
                vec![],
                None,
            ),
            (
                "maxUnavailable: two at once",
                json!({"replicas": 4, "podManagementPolicy": "Parallel",
                "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0, "maxUnavailable": 2}}}),
                vec![
                    m(0, "r1", "ready"),
                    m(1, "r1", "ready"),
                    m(2, "r1", "ready"),
                    m(3, "r1", "ready"),
                ],
                vec![],
                vec!["web-3", "web-2"],
                None,
            ),
            (
                "maxUnavailable: the unavailable count against it",
                json!({"replicas": 4, "podManagementPolicy": "Parallel",
                "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0, "maxUnavailable": 2}}}),
                vec![
                    m(0, "r1", "ready"),
                    m(1, "r1", "ready"),
                    m(2, "r1", "ready"),
                    m(3, "r2", "unready"),
                ],
                vec![],
                vec!["web-2"],
                None,
            ),
            (
                "a failed member is deleted to be made again",
                ordered(2),
                vec![m(0, "r2", "failed"), m(1, "r2", "ready")],
                vec![],
                vec!["web-0"],
                None,
            ),
            (
                "ordinals start where asked",
                json!({"replicas": 2, "ordinals": {"start": 5}}),
                vec![],
                vec![5],
                vec![],
                None,
            ),
            (
                "minReadySeconds holds the next ordinal back",
                json!({"replicas": 2, "minReadySeconds": 90}),
                vec![m(0, "r2", "ready")],
                vec![],
                vec![],
                Some(30),
            ),
        ];
        for (what, spec, pods, creates, deletes, wait) in cases {
            let step = plan_step(&view(spec, pods), now);
            let deleted: Vec<String> = step
                .delete
                .iter()
                .map(|p| p.metadata.name.clone().unwrap_or_default())
                .collect();
            assert_eq!(step.create, creates, "{what}");
            assert_eq!(deleted, deletes, "{what}");
            assert_eq!(step.wait, wait, "{what}");
        }
    }
}
