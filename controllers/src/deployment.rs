//! The Deployment controller: one ReplicaSet per pod template (named `<deployment>-<hash>`,
//! the hash in the `pod-template-hash` label), rolled forward with RollingUpdate
//! (maxSurge/maxUnavailable) or Recreate, revisions in `deployment.kubernetes.io/revision`
//! (what `kubectl rollout history/undo` read), pause/resume, old ReplicaSets pruned past
//! `revisionHistoryLimit`, and the Available/Progressing conditions that `kubectl rollout
//! status` waits on. The arithmetic follows kube-controller-manager's
//! `pkg/controller/deployment` so rollouts step the way users know.
//!
//! Not done: proportional scaling of several active ReplicaSets when replicas change in the
//! middle of a rollout (the rolling step converges instead, in a few more steps).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec,
};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Api, Client};
use serde_json::{Value, json};

use crate::runtime::adopt;
use crate::runtime::{
    Action, Informer, OwnerIndex, ReconcileError, Reconciler, WorkQueue, controller_of, key_of,
};
use crate::selector::Selector;

pub const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";
pub const DESIRED_REPLICAS_ANNOTATION: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX_REPLICAS_ANNOTATION: &str = "deployment.kubernetes.io/max-replicas";
pub const HASH_LABEL: &str = "pod-template-hash";
/// Annotations a Deployment does not pass on to its ReplicaSets.
const NOT_COPIED: [&str; 5] = [
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION_ANNOTATION,
    "deployment.kubernetes.io/revision-history",
    DESIRED_REPLICAS_ANNOTATION,
    MAX_REPLICAS_ANNOTATION,
];

pub struct DeploymentController {
    client: Client,
    pub deployments: Arc<Informer<Deployment>>,
    rs: Arc<Informer<ReplicaSet>>,
    pods: Arc<Informer<Pod>>,
    rs_by_owner: Arc<OwnerIndex>,
    pods_by_owner: Arc<OwnerIndex>,
    pub queue: Arc<WorkQueue>,
}

fn deployment_key_of(rs: &ReplicaSet) -> Option<String> {
    let r = controller_of(rs)?;
    (r.kind == "Deployment").then(|| {
        format!(
            "{}/{}",
            rs.metadata.namespace.as_deref().unwrap_or(""),
            r.name
        )
    })
}

impl DeploymentController {
    pub fn new(
        client: Client,
        deployments: Arc<Informer<Deployment>>,
        rs: Arc<Informer<ReplicaSet>>,
        pods: Arc<Informer<Pod>>,
        rs_by_owner: Arc<OwnerIndex>,
        pods_by_owner: Arc<OwnerIndex>,
    ) -> Arc<Self> {
        let queue = Arc::new(WorkQueue::default());
        {
            let q = queue.clone();
            deployments.on_change(move |_, new| {
                if let Some(n) = new {
                    q.add(&key_of(n));
                }
            });
        }
        {
            let q = queue.clone();
            let ds = deployments.clone();
            rs.on_change(move |old, new| {
                for r in [old, new].into_iter().flatten() {
                    if let Some(k) = deployment_key_of(r) {
                        q.add(&k);
                    }
                }
                // An orphaned ReplicaSet: a Deployment whose selector matches adopts it.
                if let Some(n) = new
                    && controller_of(n).is_none()
                {
                    let ns = n.metadata.namespace.clone().unwrap_or_default();
                    let labels = n.metadata.labels.clone().unwrap_or_default();
                    for d in ds.filter(|d| {
                        d.metadata.namespace.as_deref() == Some(ns.as_str())
                            && d.spec.as_ref().is_some_and(|s| {
                                Selector::from_label_selector(&s.selector).matches(&labels)
                            })
                    }) {
                        q.add(&key_of(d.as_ref()));
                    }
                }
            });
        }
        {
            // Recreate waits for old pods to be gone: a pod's deletion re-checks its Deployment.
            let q = queue.clone();
            let rs2 = rs.clone();
            pods.on_change(move |old, new| {
                if new.is_some() {
                    return;
                }
                let Some(p) = old else { return };
                let Some(owner) = controller_of(p) else {
                    return;
                };
                if owner.kind != "ReplicaSet" {
                    return;
                }
                let key = format!(
                    "{}/{}",
                    p.metadata.namespace.as_deref().unwrap_or(""),
                    owner.name
                );
                if let Some(r) = rs2.get(&key)
                    && let Some(d) = deployment_key_of(&r)
                {
                    q.add(&d);
                }
            });
        }
        Arc::new(DeploymentController {
            client,
            deployments,
            rs,
            pods,
            rs_by_owner,
            pods_by_owner,
            queue,
        })
    }

    fn owned_rs(&self, d: &Deployment) -> Vec<ReplicaSet> {
        let uid = d.metadata.uid.as_deref().unwrap_or("");
        let mut v: Vec<ReplicaSet> = self
            .rs_by_owner
            .owned_by(uid)
            .iter()
            .filter_map(|k| self.rs.get(k))
            .map(|r| (*r).clone())
            .collect();
        v.sort_by(|a, b| {
            (
                a.metadata.creation_timestamp.as_ref().map(|t| t.0),
                &a.metadata.name,
            )
                .cmp(&(
                    b.metadata.creation_timestamp.as_ref().map(|t| t.0),
                    &b.metadata.name,
                ))
        });
        v
    }

    /// Orphaned ReplicaSets the selector matches become the Deployment's; whether any did.
    async fn adopt(&self, d: &Deployment, sel: &Selector) -> Result<bool, ReconcileError> {
        if d.metadata.deletion_timestamp.is_some() {
            return Ok(false);
        }
        let ns = d.metadata.namespace.as_deref().unwrap_or("");
        let empty = BTreeMap::new();
        let orphans = self
            .rs
            .get_many(self.rs_by_owner.orphans_in(ns).iter().map(AsRef::as_ref))
            .into_iter()
            .filter(|r| {
                r.metadata.deletion_timestamp.is_none()
                    && sel.matches(r.metadata.labels.as_ref().unwrap_or(&empty))
            });
        Ok(!adopt::adopt(&self.rs_api(ns), &owner_ref(d), orphans)
            .await?
            .is_empty())
    }

    fn rs_api(&self, ns: &str) -> Api<ReplicaSet> {
        Api::namespaced(self.client.clone(), ns)
    }

    /// Sets a ReplicaSet's replicas (and the annotations kube keeps beside them).
    async fn scale(
        &self,
        d: &Deployment,
        rs: &mut ReplicaSet,
        replicas: i32,
    ) -> Result<(), ReconcileError> {
        let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let max = want + max_surge(d);
        let cur = rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let ann = rs.metadata.annotations.clone().unwrap_or_default();
        if cur == replicas
            && ann.get(DESIRED_REPLICAS_ANNOTATION) == Some(&want.to_string())
            && ann.get(MAX_REPLICAS_ANNOTATION) == Some(&max.to_string())
        {
            return Ok(());
        }
        let patch = json!({
            "metadata": {"annotations": {
                DESIRED_REPLICAS_ANNOTATION: want.to_string(),
                MAX_REPLICAS_ANNOTATION: max.to_string(),
            }},
            "spec": {"replicas": replicas},
        });
        let ns = rs.metadata.namespace.clone().unwrap_or_default();
        let updated = self
            .rs_api(&ns)
            .patch(
                rs.metadata.name.as_deref().unwrap_or(""),
                &PatchParams::default(),
                &Patch::Merge(patch),
            )
            .await?;
        *rs = updated;
        Ok(())
    }

    /// Creates the ReplicaSet for the Deployment's current template.
    async fn create_new_rs(
        &self,
        d: &Deployment,
        revision: i64,
        replicas: i32,
    ) -> Result<ReplicaSet, ReconcileError> {
        let spec = d.spec.clone().unwrap_or_default();
        let collisions = d.status.as_ref().and_then(|s| s.collision_count);
        let hash = template_hash(&spec.template, collisions);
        let mut template = spec.template.clone();
        let tm = template.metadata.get_or_insert_with(ObjectMeta::default);
        tm.labels
            .get_or_insert_with(BTreeMap::new)
            .insert(HASH_LABEL.into(), hash.clone());
        let mut selector = spec.selector.clone();
        selector
            .match_labels
            .get_or_insert_with(BTreeMap::new)
            .insert(HASH_LABEL.into(), hash.clone());
        let mut labels = tm.labels.clone().unwrap_or_default();
        labels.insert(HASH_LABEL.into(), hash.clone());
        let mut annotations = copied_annotations(d);
        annotations.insert(REVISION_ANNOTATION.into(), revision.to_string());
        let want = spec.replicas.unwrap_or(1);
        annotations.insert(DESIRED_REPLICAS_ANNOTATION.into(), want.to_string());
        annotations.insert(
            MAX_REPLICAS_ANNOTATION.into(),
            (want + max_surge(d)).to_string(),
        );
        let name = format!("{}-{hash}", d.metadata.name.as_deref().unwrap_or(""));
        let rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: d.metadata.namespace.clone(),
                labels: Some(labels),
                annotations: Some(annotations),
                owner_references: Some(vec![owner_ref(d)]),
                ..ObjectMeta::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(replicas),
                min_ready_seconds: spec.min_ready_seconds,
                selector,
                template: Some(template),
            }),
            status: None,
        };
        let ns = d.metadata.namespace.clone().unwrap_or_default();
        match self.rs_api(&ns).create(&PostParams::default(), &rs).await {
            Ok(r) => Ok(r),
            Err(kube::Error::Api(s)) if s.code == 409 => {
                // The name is taken. Ours (a stale cache) → use it; another template → a
                // hash collision: bump collisionCount and retry with a new name.
                let existing = self.rs_api(&ns).get(&name).await?;
                let same_owner =
                    controller_of(&existing).map(|r| r.uid.as_str()) == d.metadata.uid.as_deref();
                if same_owner && templates_equal(&existing, &spec.template) {
                    return Ok(existing);
                }
                let next = collisions.unwrap_or(0).saturating_add(1);
                Api::<Deployment>::namespaced(self.client.clone(), &ns)
                    .patch_status(
                        d.metadata.name.as_deref().unwrap_or(""),
                        &PatchParams::default(),
                        &Patch::Merge(json!({"status": {"collisionCount": next}})),
                    )
                    .await?;
                Err(ReconcileError::Other(format!(
                    "ReplicaSet {name} exists with another template; collisionCount is now {next}"
                )))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn delete_rs(&self, rs: &ReplicaSet) -> Result<(), ReconcileError> {
        let ns = rs.metadata.namespace.clone().unwrap_or_default();
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: rs.metadata.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match self
            .rs_api(&ns)
            .delete(rs.metadata.name.as_deref().unwrap_or(""), &dp)
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if matches!(s.code, 404 | 409) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether any pod of these ReplicaSets still runs (Recreate waits for none).
    fn old_pods_running(&self, olds: &[ReplicaSet]) -> bool {
        olds.iter().any(|r| {
            let uid = r.metadata.uid.as_deref().unwrap_or("");
            self.pods_by_owner.owned_by(uid).iter().any(|k| {
                self.pods
                    .get(k)
                    .is_some_and(|p| !matches!(crate::pods::phase(&p), "Succeeded" | "Failed"))
            })
        })
    }
}

pub fn owner_ref(d: &Deployment) -> OwnerReference {
    OwnerReference {
        api_version: "apps/v1".into(),
        kind: "Deployment".into(),
        name: d.metadata.name.clone().unwrap_or_default(),
        uid: d.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

fn copied_annotations(d: &Deployment) -> BTreeMap<String, String> {
    d.metadata
        .annotations
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| !NOT_COPIED.contains(&k.as_str()))
        .collect()
}

/// FNV-1a, 32 bits (what kube hashes pod templates with).
/// The `pod-template-hash` of a template: FNV-1a of its JSON (and the collision count),
/// written with kube's safe alphabet.
pub fn template_hash(t: &PodTemplateSpec, collisions: Option<i32>) -> String {
    crate::history::safe_hash(serde_json::to_vec(t).unwrap_or_default(), collisions)
}

/// Whether a ReplicaSet runs this template (its own hash label aside).
pub fn templates_equal(rs: &ReplicaSet, t: &PodTemplateSpec) -> bool {
    let Some(mut rt) = rs.spec.as_ref().and_then(|s| s.template.clone()) else {
        return false;
    };
    if let Some(l) = rt.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        l.remove(HASH_LABEL);
        if l.is_empty()
            && let Some(m) = rt.metadata.as_mut()
        {
            m.labels = None;
        }
    }
    let mut t = t.clone();
    if let Some(l) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        l.remove(HASH_LABEL);
        if l.is_empty()
            && let Some(m) = t.metadata.as_mut()
        {
            m.labels = None;
        }
    }
    serde_json::to_value(&rt).ok() == serde_json::to_value(&t).ok()
}

pub fn revision_of(rs: &ReplicaSet) -> i64 {
    rs.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REVISION_ANNOTATION))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

fn status_of(rs: &ReplicaSet) -> (i32, i32, i32) {
    let s = rs.status.clone().unwrap_or_default();
    (
        s.replicas,
        s.ready_replicas.unwrap_or(0),
        s.available_replicas.unwrap_or(0),
    )
}

/// An int-or-percent of `total`, rounded up or down.
fn scaled(v: Option<&IntOrString>, total: i32, default_pct: i32, round_up: bool) -> i32 {
    match v {
        Some(IntOrString::Int(i)) => *i,
        Some(IntOrString::String(s)) => match s.trim_end_matches('%').parse::<i64>() {
            Ok(p) => pct(total, p, round_up),
            Err(_) => 0,
        },
        None => pct(total, i64::from(default_pct), round_up),
    }
}

fn pct(total: i32, p: i64, round_up: bool) -> i32 {
    let n = i64::from(total) * p;
    let v = if round_up { (n + 99) / 100 } else { n / 100 };
    i32::try_from(v).unwrap_or(i32::MAX)
}

fn rolling(d: &Deployment) -> Option<(i32, i32)> {
    let spec = d.spec.as_ref()?;
    let strategy = spec.strategy.clone().unwrap_or_default();
    if strategy.type_.as_deref() == Some("Recreate") {
        return None;
    }
    let ru = strategy.rolling_update.unwrap_or_default();
    let replicas = spec.replicas.unwrap_or(1);
    let surge = scaled(ru.max_surge.as_ref(), replicas, 25, true);
    let mut unavailable = scaled(ru.max_unavailable.as_ref(), replicas, 25, false);
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    Some((surge, unavailable.min(replicas)))
}

pub fn max_surge(d: &Deployment) -> i32 {
    rolling(d).map_or(0, |(s, _)| s)
}

pub fn max_unavailable(d: &Deployment) -> i32 {
    rolling(d).map_or(0, |(_, u)| u)
}

/// kube's `NewRSNewReplicas` for RollingUpdate.
fn new_rs_replicas(d: &Deployment, all: &[&ReplicaSet], new: Option<&ReplicaSet>) -> i32 {
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let new_now = new.map_or(0, spec_replicas);
    let max_total = want + max_surge(d);
    let current: i32 = all.iter().map(|r| spec_replicas(r)).sum();
    if current >= max_total {
        return new_now;
    }
    let up = (max_total - current).min(want - new_now).max(0);
    new_now + up
}

fn condition<'a>(s: &'a DeploymentStatus, t: &str) -> Option<&'a DeploymentCondition> {
    s.conditions.as_ref()?.iter().find(|c| c.type_ == t)
}

fn set_condition(s: &mut DeploymentStatus, mut c: DeploymentCondition, now: Timestamp) {
    let list = s.conditions.get_or_insert_with(Vec::new);
    if let Some(old) = list.iter().find(|o| o.type_ == c.type_) {
        if old.status == c.status && old.reason == c.reason && old.message == c.message {
            // Unchanged: keep both times.
            return;
        }
        if old.status == c.status {
            c.last_transition_time = old.last_transition_time.clone();
        }
    }
    if c.last_transition_time.is_none() {
        c.last_transition_time = Some(Time(now));
    }
    if c.last_update_time.is_none() {
        c.last_update_time = Some(Time(now));
    }
    list.retain(|o| o.type_ != c.type_);
    list.push(c);
}

fn cond(t: &str, status: &str, reason: &str, message: String) -> DeploymentCondition {
    DeploymentCondition {
        type_: t.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_transition_time: None,
        last_update_time: None,
    }
}

#[async_trait::async_trait]
impl Reconciler for DeploymentController {
    fn name(&self) -> &'static str {
        "deployment"
    }

    async fn reconcile(&self, key: &str) -> Result<Action, ReconcileError> {
        let Some(d) = self.deployments.get(key) else {
            return Ok(Action::Done);
        };
        let d = (*d).clone();
        let Some(spec) = d.spec.clone() else {
            return Ok(Action::Done);
        };
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
            // An empty selector would take every pod in the namespace; kube refuses to act.
            return Ok(Action::Done);
        }
        if self.adopt(&d, &sel).await? {
            return Ok(adopt::settle_after());
        }
        let mut all = self.owned_rs(&d);
        let want = spec.replicas.unwrap_or(1);
        let paused = spec.paused == Some(true);
        let deleting = d.metadata.deletion_timestamp.is_some();
        let new_idx = all.iter().position(|r| templates_equal(r, &spec.template));
        let max_old_revision = all
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != new_idx)
            .map(|(_, r)| revision_of(r))
            .max()
            .unwrap_or(0);
        let mut created_new: Option<String> = None;
        let mut new_idx = new_idx;
        if !paused && !deleting {
            match new_idx {
                Some(i) => {
                    // The newest revision, and the Deployment's annotations, on the new RS.
                    let r = &all[i];
                    let mut ann = r.metadata.annotations.clone().unwrap_or_default();
                    let mut changed = false;
                    if revision_of(r) <= max_old_revision {
                        ann.insert(
                            REVISION_ANNOTATION.into(),
                            (max_old_revision + 1).to_string(),
                        );
                        changed = true;
                    }
                    for (k, v) in copied_annotations(&d) {
                        if ann.get(&k) != Some(&v) {
                            ann.insert(k, v);
                            changed = true;
                        }
                    }
                    if changed {
                        let ns = r.metadata.namespace.clone().unwrap_or_default();
                        all[i] = self
                            .rs_api(&ns)
                            .patch(
                                r.metadata.name.as_deref().unwrap_or(""),
                                &PatchParams::default(),
                                &Patch::Merge(json!({"metadata": {"annotations": ann}})),
                            )
                            .await?;
                    }
                }
                None => {
                    let refs: Vec<&ReplicaSet> = all.iter().collect();
                    let replicas = match rolling(&d) {
                        Some(_) => new_rs_replicas(&d, &refs, None),
                        None => 0,
                    };
                    let r = self
                        .create_new_rs(&d, max_old_revision + 1, replicas)
                        .await?;
                    created_new = r.metadata.name.clone();
                    all.push(r);
                    new_idx = Some(all.len() - 1);
                }
            }
        }
        // The Deployment carries its newest revision, as kube's does.
        if let Some(i) = new_idx {
            let rev = revision_of(&all[i]).to_string();
            if d.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(REVISION_ANNOTATION))
                != Some(&rev)
                && !deleting
            {
                let ns = d.metadata.namespace.clone().unwrap_or_default();
                Api::<Deployment>::namespaced(self.client.clone(), &ns)
                    .patch(
                        d.metadata.name.as_deref().unwrap_or(""),
                        &PatchParams::default(),
                        &Patch::Merge(
                            json!({"metadata": {"annotations": {REVISION_ANNOTATION: rev}}}),
                        ),
                    )
                    .await?;
            }
        }
        if !deleting {
            if paused {
                // Paused: only scaling; a single active ReplicaSet follows `replicas`.
                let active: Vec<usize> = (0..all.len())
                    .filter(|i| spec_replicas(&all[*i]) > 0)
                    .collect();
                let target = match (active.as_slice(), new_idx) {
                    ([one], _) => Some(*one),
                    ([], Some(n)) => Some(n),
                    _ => None,
                };
                if let Some(t) = target {
                    let mut r = all[t].clone();
                    self.scale(&d, &mut r, want).await?;
                    all[t] = r;
                }
            } else if let Some(ni) = new_idx {
                match rolling(&d) {
                    None => self.recreate(&d, &mut all, ni, want).await?,
                    Some((_, max_unavailable)) => {
                        self.rolling_update(&d, &mut all, ni, want, max_unavailable)
                            .await?;
                    }
                }
            }
        }
        let complete = self
            .sync_status(&d, &all, new_idx, created_new.as_deref(), paused)
            .await?;
        if complete && !deleting {
            self.cleanup(&d, &all, new_idx).await?;
        }
        // A rollout in progress times out after progressDeadlineSeconds: look again then.
        Ok(if complete || paused {
            Action::Done
        } else {
            Action::RequeueAfter(Duration::from_secs(
                u64::try_from(spec.progress_deadline_seconds.unwrap_or(600).max(1)).unwrap_or(600),
            ))
        })
    }
}

impl DeploymentController {
    async fn recreate(
        &self,
        d: &Deployment,
        all: &mut [ReplicaSet],
        ni: usize,
        want: i32,
    ) -> Result<(), ReconcileError> {
        let mut scaled_down = false;
        for (i, r) in all.iter_mut().enumerate() {
            if i != ni && spec_replicas(r) > 0 {
                self.scale(d, r, 0).await?;
                scaled_down = true;
            }
        }
        if scaled_down {
            return Ok(());
        }
        let olds: Vec<ReplicaSet> = all
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != ni)
            .map(|(_, r)| r.clone())
            .collect();
        if self.old_pods_running(&olds) {
            return Ok(());
        }
        self.scale(d, &mut all[ni], want).await
    }

    async fn rolling_update(
        &self,
        d: &Deployment,
        all: &mut [ReplicaSet],
        ni: usize,
        want: i32,
        max_unavailable: i32,
    ) -> Result<(), ReconcileError> {
        // Scale the new ReplicaSet up (within maxSurge) or down (to replicas).
        let new_now = spec_replicas(&all[ni]);
        if new_now > want {
            return self.scale(d, &mut all[ni], want).await;
        }
        if new_now < want {
            let refs: Vec<&ReplicaSet> = all.iter().collect();
            let target = new_rs_replicas(d, &refs, Some(&all[ni]));
            if target != new_now {
                return self.scale(d, &mut all[ni], target).await;
            }
        }
        // Scale old ReplicaSets down while keeping replicas - maxUnavailable available.
        let old_count: i32 = all
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != ni)
            .map(|(_, r)| spec_replicas(r))
            .sum();
        if old_count == 0 {
            return Ok(());
        }
        let all_count: i32 = all.iter().map(spec_replicas).sum();
        let min_available = want - max_unavailable;
        let new_unavailable = spec_replicas(&all[ni]) - status_of(&all[ni]).2;
        let max_scaled_down = all_count - min_available - new_unavailable;
        if max_scaled_down <= 0 {
            return Ok(());
        }
        // First the old ReplicaSets' unhealthy pods (they count for nothing).
        let mut cleaned = 0;
        #[allow(clippy::needless_range_loop)] // `all[i]` is replaced after an await
        for i in 0..all.len() {
            if i == ni || cleaned >= max_scaled_down {
                continue;
            }
            let r = spec_replicas(&all[i]);
            let unhealthy = r - status_of(&all[i]).2;
            if r == 0 || unhealthy <= 0 {
                continue;
            }
            let down = (max_scaled_down - cleaned).min(unhealthy);
            let mut rs = all[i].clone();
            self.scale(d, &mut rs, r - down).await?;
            all[i] = rs;
            cleaned += down;
        }
        // Then as many available ones as minAvailable allows.
        let available: i32 = all.iter().map(|r| status_of(r).2).sum();
        let mut budget = (available - min_available).min(max_scaled_down - cleaned);
        #[allow(clippy::needless_range_loop)]
        for i in 0..all.len() {
            if i == ni || budget <= 0 {
                continue;
            }
            let r = spec_replicas(&all[i]);
            if r == 0 {
                continue;
            }
            let down = r.min(budget);
            let mut rs = all[i].clone();
            self.scale(d, &mut rs, r - down).await?;
            all[i] = rs;
            budget -= down;
        }
        Ok(())
    }

    /// Writes the status; returns whether the rollout is complete.
    async fn sync_status(
        &self,
        d: &Deployment,
        all: &[ReplicaSet],
        new_idx: Option<usize>,
        created_new: Option<&str>,
        paused: bool,
    ) -> Result<bool, ReconcileError> {
        let now = Timestamp::now();
        let spec = d.spec.clone().unwrap_or_default();
        let want = spec.replicas.unwrap_or(1);
        let old = d.status.clone().unwrap_or_default();
        let mut s = old.clone();
        let (mut replicas, mut ready, mut available, mut spec_total) = (0, 0, 0, 0);
        for r in all {
            let (rp, rd, av) = status_of(r);
            replicas += rp;
            ready += rd;
            available += av;
            spec_total += spec_replicas(r);
        }
        let updated = new_idx.map_or(0, |i| status_of(&all[i]).0);
        s.observed_generation = d.metadata.generation;
        s.replicas = Some(replicas);
        s.updated_replicas = Some(updated);
        s.ready_replicas = Some(ready);
        s.available_replicas = Some(available);
        s.unavailable_replicas = Some((spec_total - available).max(0));
        s.terminating_replicas = None;
        let min_available = want - max_unavailable(d);
        set_condition(
            &mut s,
            if available >= min_available {
                cond(
                    "Available",
                    "True",
                    "MinimumReplicasAvailable",
                    "Deployment has minimum availability.".into(),
                )
            } else {
                cond(
                    "Available",
                    "False",
                    "MinimumReplicasUnavailable",
                    "Deployment does not have minimum availability.".into(),
                )
            },
            now,
        );
        let rs_name = new_idx
            .and_then(|i| all[i].metadata.name.clone())
            .unwrap_or_default();
        let complete = updated == want
            && replicas == want
            && available == want
            && s.observed_generation >= d.metadata.generation;
        let progressing = condition(&old, "Progressing").cloned();
        if paused {
            set_condition(
                &mut s,
                cond(
                    "Progressing",
                    "Unknown",
                    "DeploymentPaused",
                    "Deployment is paused".into(),
                ),
                now,
            );
        } else if progressing
            .as_ref()
            .is_some_and(|c| c.reason.as_deref() == Some("DeploymentPaused"))
        {
            set_condition(
                &mut s,
                cond(
                    "Progressing",
                    "Unknown",
                    "DeploymentResumed",
                    "Deployment is resumed".into(),
                ),
                now,
            );
        } else if let Some(name) = created_new {
            set_condition(
                &mut s,
                cond(
                    "Progressing",
                    "True",
                    "NewReplicaSetCreated",
                    format!("Created new replica set \"{name}\""),
                ),
                now,
            );
        } else if complete {
            set_condition(
                &mut s,
                cond(
                    "Progressing",
                    "True",
                    "NewReplicaSetAvailable",
                    format!("ReplicaSet \"{rs_name}\" has successfully progressed."),
                ),
                now,
            );
        } else {
            let moved = updated > old.updated_replicas.unwrap_or(0)
                || replicas - updated
                    < old.replicas.unwrap_or(0) - old.updated_replicas.unwrap_or(0)
                || ready > old.ready_replicas.unwrap_or(0)
                || available > old.available_replicas.unwrap_or(0);
            let deadline = i64::from(spec.progress_deadline_seconds.unwrap_or(600));
            let last = progressing
                .as_ref()
                .and_then(|c| c.last_update_time.as_ref().map(|t| t.0));
            if moved || progressing.is_none() {
                let mut c = cond(
                    "Progressing",
                    "True",
                    "ReplicaSetUpdated",
                    format!("ReplicaSet \"{rs_name}\" is progressing."),
                );
                c.last_update_time = Some(Time(now));
                c.last_transition_time = progressing
                    .as_ref()
                    .filter(|p| p.status == "True")
                    .and_then(|p| p.last_transition_time.clone());
                s.conditions
                    .get_or_insert_with(Vec::new)
                    .retain(|o| o.type_ != "Progressing");
                set_condition(&mut s, c, now);
            } else if last.is_some_and(|t| now.as_second() - t.as_second() > deadline)
                && progressing
                    .as_ref()
                    .is_some_and(|c| c.reason.as_deref() != Some("NewReplicaSetAvailable"))
            {
                set_condition(
                    &mut s,
                    cond(
                        "Progressing",
                        "False",
                        "ProgressDeadlineExceeded",
                        format!("ReplicaSet \"{rs_name}\" has timed out progressing."),
                    ),
                    now,
                );
            }
        }
        if let Some(c) = s.conditions.as_mut() {
            // kube lists Available before Progressing.
            c.sort_by_key(|c| if c.type_ == "Available" { 0 } else { 1 });
        }
        if s != old {
            let ns = d.metadata.namespace.clone().unwrap_or_default();
            let body: Value = serde_json::to_value(&s).unwrap_or_default();
            Api::<Deployment>::namespaced(self.client.clone(), &ns)
                .patch_status(
                    d.metadata.name.as_deref().unwrap_or(""),
                    &PatchParams::default(),
                    &Patch::Merge(json!({ "status": body })),
                )
                .await?;
        }
        Ok(complete)
    }

    /// Deletes the oldest idle ReplicaSets beyond `revisionHistoryLimit`.
    async fn cleanup(
        &self,
        d: &Deployment,
        all: &[ReplicaSet],
        new_idx: Option<usize>,
    ) -> Result<(), ReconcileError> {
        let limit = usize::try_from(
            d.spec
                .as_ref()
                .and_then(|s| s.revision_history_limit)
                .unwrap_or(10),
        )
        .unwrap_or(10);
        let mut idle: Vec<&ReplicaSet> = all
            .iter()
            .enumerate()
            .filter(|(i, r)| {
                Some(*i) != new_idx
                    && spec_replicas(r) == 0
                    && status_of(r).0 == 0
                    && r.metadata.deletion_timestamp.is_none()
            })
            .map(|(_, r)| r)
            .collect();
        if idle.len() <= limit {
            return Ok(());
        }
        idle.sort_by_key(|r| revision_of(r));
        let n = idle.len() - limit;
        for r in idle.into_iter().take(n) {
            self.delete_rs(r).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(v: Value) -> Deployment {
        match serde_json::from_value(v) {
            Ok(d) => d,
            Err(e) => panic!("bad test deployment: {e}"),
        }
    }

    #[test]
    fn surge_rounds_up_and_unavailable_rounds_down() {
        let d = deployment(json!({"metadata":{"name":"d"},"spec":{"replicas":10,
            "selector":{"matchLabels":{"a":"b"}},"template":{}}}));
        assert_eq!((max_surge(&d), max_unavailable(&d)), (3, 2));
        let d = deployment(json!({"metadata":{"name":"d"},"spec":{"replicas":3,
            "strategy":{"rollingUpdate":{"maxSurge":0,"maxUnavailable":0}},
            "selector":{"matchLabels":{"a":"b"}},"template":{}}}));
        assert_eq!((max_surge(&d), max_unavailable(&d)), (0, 1));
    }

    #[test]
    fn the_template_hash_uses_the_safe_alphabet_and_changes_with_collisions() {
        let t = PodTemplateSpec::default();
        let h = template_hash(&t, None);
        assert!(!h.is_empty());
        assert!(
            h.bytes()
                .all(|b| b"bcdfghjklmnpqrstvwxz2456789".contains(&b))
        );
        assert_ne!(h, template_hash(&t, Some(1)));
    }

    #[test]
    fn a_new_replica_set_grows_only_within_max_surge() {
        let d = deployment(json!({"metadata":{"name":"d"},"spec":{"replicas":4,
            "strategy":{"rollingUpdate":{"maxSurge":1,"maxUnavailable":0}},
            "selector":{"matchLabels":{"a":"b"}},"template":{}}}));
        let old: ReplicaSet = serde_json::from_value(json!({"metadata":{"name":"o"},
            "spec":{"replicas":4,"selector":{}}}))
        .unwrap_or_default();
        assert_eq!(new_rs_replicas(&d, &[&old], None), 1);
    }
}
