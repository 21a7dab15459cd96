//! The Job controller (batch/v1): runs a Job's pods to completion and reports its status.
//!
//! Owns: creating pods from `spec.template` up to `parallelism` until `completions` pods
//! succeeded (or, with `completions` unset, until one succeeded and the rest finished —
//! work-queue Jobs), `completionMode: Indexed` (one pod per index, `status.completedIndexes`
//! as ranges), `backoffLimit` (failed pods, plus container restarts under `restartPolicy:
//! OnFailure`), `podFailurePolicy` (FailJob / Ignore / Count rules on exit codes and pod
//! conditions), `activeDeadlineSeconds`, `suspend`, the Complete / Failed conditions with
//! their interim SuccessCriteriaMet / FailureTarget, and `ttlSecondsAfterFinished`
//! (the finished Job is deleted with background propagation).
//!
//! Shape: [`plan`] is a pure function from the Job, its pods and the time to what to do
//! (pods to create and delete, the status to write, when to look again); the reconciler
//! applies it. Creates go out in slow-start batches under [`Expectations`], as in
//! [`crate::replicaset`].
//!
//! Simplifications against kube-controller-manager: no `batch.kubernetes.io/job-tracking`
//! finalizer on pods (and so no `uncountedTerminatedPods`): `succeeded` and `failed` are
//! counted from the pods that exist, never going below what the status already says. As in
//! kube, the pods still running when a Job fails (and which it then deletes) count as failed,
//! from the status write that sets FailureTarget on. No
//! `backoffLimitPerIndex`, `successPolicy` or `managedBy` (FailIndex rules count as Count).
//! Events only for condition changes (kube also records one per pod created or deleted).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::{
    Job, JobCondition, JobStatus, PodFailurePolicy, PodFailurePolicyRule,
};
use k8s_openapi::api::core::v1::{Event as CoreEvent, EventSource, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions, PropagationPolicy};
use kube::{Api, Client};
use serde_json::{Value, json};

use crate::pods;
use crate::podwrites;
use crate::runtime::expectations::Expectations;
use crate::runtime::{
    Action, Informer, OwnerIndex, ReconcileError, Reconciler, WorkQueue, controller_of, key_of,
};

/// Most pods created or deleted by one reconcile of one Job (kube: burstReplicas).
pub const JOB_BURST_PODS: usize = 500;
/// Pod creates or deletes in flight at once for one Job.
pub const JOB_POD_WRITES_INFLIGHT_MAX: usize = 64;
/// The wait before replacing a failed pod, doubled per failed pod (kube:
/// DefaultJobPodFailureBackOff)...
pub const JOB_POD_FAILURE_BACKOFF_BASE_SECONDS: i64 = 10;
/// ...up to this (kube: MaxJobPodFailureBackOff).
pub const JOB_POD_FAILURE_BACKOFF_MAX_SECONDS: i64 = 600;
/// How long pod changes that only move a Job's counts (readiness) are gathered before the
/// Job is looked at again (kube: syncJobBatchPeriod).
pub const JOB_STATUS_BATCH_MS: u64 = 1_000;
/// The longest generateName prefix of an Indexed Job's pod (kube: MaxGeneratedNameLength,
/// leaving room for the API's five random characters).
pub const GENERATED_NAME_PREFIX_MAX_CHARS: usize = 58;
/// Longest hostname an Indexed Job's pod gets (a DNS label).
pub const HOSTNAME_MAX_CHARS: usize = 63;

/// Annotation and label with an Indexed Job's pod's completion index.
pub const COMPLETION_INDEX_KEY: &str = "batch.kubernetes.io/job-completion-index";

pub const CONDITION_COMPLETE: &str = "Complete";
pub const CONDITION_FAILED: &str = "Failed";
pub const CONDITION_SUSPENDED: &str = "Suspended";
pub const CONDITION_SUCCESS_CRITERIA_MET: &str = "SuccessCriteriaMet";
pub const CONDITION_FAILURE_TARGET: &str = "FailureTarget";

const REASON_COMPLETIONS_REACHED: &str = "CompletionsReached";
const MESSAGE_COMPLETIONS_REACHED: &str = "Reached expected number of succeeded pods";
const REASON_BACKOFF_LIMIT: &str = "BackoffLimitExceeded";
const MESSAGE_BACKOFF_LIMIT: &str = "Job has reached the specified backoff limit";
const REASON_DEADLINE: &str = "DeadlineExceeded";
const MESSAGE_DEADLINE: &str = "Job was active longer than specified deadline";
const REASON_POD_FAILURE_POLICY: &str = "PodFailurePolicy";

pub struct JobController {
    client: Client,
    pub jobs: Arc<Informer<Job>>,
    pods: Arc<Informer<Pod>>,
    pods_by_owner: Arc<OwnerIndex>,
    pub queue: Arc<WorkQueue>,
    expectations: Arc<Expectations>,
    /// The Job as this controller's last status write returned it, per key: used instead of
    /// the informer's copy while that is older (a pass must not act on a status from before
    /// its own last write — with FailureTarget unseen, it would replace the pods it just
    /// deleted).
    written: std::sync::Mutex<HashMap<String, Arc<Job>>>,
}

/// The newer of the cached Job and the one this controller last wrote, by resourceVersion
/// (Logbook's are log positions: decimal and increasing).
fn newer_of(cached: Arc<Job>, written: Option<&Arc<Job>>) -> Arc<Job> {
    let rv = |j: &Job| {
        j.metadata
            .resource_version
            .as_deref()
            .and_then(|v| v.parse::<u64>().ok())
    };
    match written {
        Some(w)
            if w.metadata.uid == cached.metadata.uid
                && matches!((rv(w), rv(&cached)), (Some(a), Some(b)) if a > b) =>
        {
            w.clone()
        }
        _ => cached,
    }
}

fn job_key_of_owner(pod: &Pod) -> Option<String> {
    let r = controller_of(pod)?;
    (r.kind == "Job" && r.api_version == "batch/v1").then(|| {
        format!(
            "{}/{}",
            pod.metadata.namespace.as_deref().unwrap_or(""),
            r.name
        )
    })
}

impl JobController {
    /// Wires the handlers; the informers are started by the caller.
    pub fn new(
        client: Client,
        jobs: Arc<Informer<Job>>,
        pods: Arc<Informer<Pod>>,
        pods_by_owner: Arc<OwnerIndex>,
    ) -> Arc<Self> {
        let queue = Arc::new(WorkQueue::default());
        let expectations = Arc::new(Expectations::default());
        {
            let q = queue.clone();
            let e = expectations.clone();
            jobs.on_change(move |old, new| match (old, new) {
                (_, Some(n)) => q.add(&key_of(n)),
                (Some(o), None) => e.delete(&key_of(o)),
                (None, None) => {}
            });
        }
        {
            let q = queue.clone();
            let e = expectations.clone();
            pods.on_change(move |old, new| {
                let Some(p) = new.or(old) else { return };
                let Some(owner) = job_key_of_owner(p) else {
                    return;
                };
                let key = key_of(p);
                match (old, new) {
                    (None, Some(_)) => e.creation_observed(&owner),
                    (Some(_), None) => e.deletion_observed(&owner, &key),
                    (Some(o), Some(n))
                        if o.metadata.deletion_timestamp.is_none()
                            && n.metadata.deletion_timestamp.is_some() =>
                    {
                        e.deletion_observed(&owner, &key)
                    }
                    _ => {}
                }
                // Pods coming, going, finishing, terminating or restarting change what the
                // Job does: at once. Other changes (readiness) only move counts: gathered,
                // as kube's syncJobBatchPeriod does.
                let prompt = match (old, new) {
                    (Some(o), Some(n)) => {
                        pods::phase(o) != pods::phase(n)
                            || restart_total(o) != restart_total(n)
                            || o.metadata.deletion_timestamp.is_some()
                                != n.metadata.deletion_timestamp.is_some()
                    }
                    _ => true,
                };
                if prompt {
                    q.add(&owner);
                } else {
                    q.add_after(&owner, Duration::from_millis(JOB_STATUS_BATCH_MS));
                }
            });
        }
        Arc::new(JobController {
            client,
            jobs,
            pods,
            pods_by_owner,
            queue,
            expectations,
            written: std::sync::Mutex::new(HashMap::new()),
        })
    }

    fn written(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Job>>> {
        match self.written.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn owned_pods(&self, job: &Job) -> Vec<Arc<Pod>> {
        let uid = job.metadata.uid.as_deref().unwrap_or("");
        let keys = self.pods_by_owner.owned_by(uid);
        self.pods.get_many(keys.iter().map(AsRef::as_ref))
    }

    /// Creates one pod per entry of `indexes` (an index for Indexed Jobs) in slow-start
    /// batches (1, 2, 4, …); stops at the first failed batch. Returns the first error.
    async fn create_pods(&self, key: &str, job: &Job, indexes: Vec<Option<i32>>) -> Option<String> {
        let ns = job.metadata.namespace.clone().unwrap_or_default();
        let pods = indexes
            .into_iter()
            .map(|i| pod_from_template(job, i))
            .collect();
        podwrites::create_slow_start(
            &self.client,
            &ns,
            pods,
            &self.expectations,
            key,
            JOB_POD_WRITES_INFLIGHT_MAX,
        )
        .await
    }

    async fn delete_pods(&self, key: &str, victims: Vec<Arc<Pod>>) -> Result<(), ReconcileError> {
        podwrites::delete_expected(
            &self.client,
            victims,
            &self.expectations,
            key,
            JOB_POD_WRITES_INFLIGHT_MAX,
        )
        .await
        .map_err(Into::into)
    }

    /// A finished Job: deleted once `ttlSecondsAfterFinished` has passed since it finished.
    async fn expire(&self, job: &Job, now: Timestamp) -> Result<Action, ReconcileError> {
        let Some(ttl) = job.spec.as_ref().and_then(|s| s.ttl_seconds_after_finished) else {
            return Ok(Action::Done);
        };
        if job.metadata.deletion_timestamp.is_some() {
            return Ok(Action::Done);
        }
        let Some(finished) = finish_time(job) else {
            return Ok(Action::Done);
        };
        let left = finished.as_second() + i64::from(ttl.max(0)) - now.as_second();
        if left > 0 {
            return Ok(Action::RequeueAfter(Duration::from_secs(
                left.unsigned_abs(),
            )));
        }
        let api: Api<Job> = Api::namespaced(
            self.client.clone(),
            job.metadata.namespace.as_deref().unwrap_or(""),
        );
        let dp = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            preconditions: Some(Preconditions {
                uid: job.metadata.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api
            .delete(job.metadata.name.as_deref().unwrap_or(""), &dp)
            .await
        {
            Ok(_) => Ok(Action::Done),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(Action::Done),
            Err(e) => Err(e.into()),
        }
    }
}

/// Records a core/v1 Event about `about` from `component`; best effort (a failure is
/// logged at debug: Events are advice, never worth failing a reconcile for).
pub(crate) async fn record_event(
    client: &Client,
    about: ObjectReference,
    component: &str,
    type_: &str,
    reason: &str,
    message: String,
) {
    let now = Timestamp::now();
    let ns = about.namespace.clone().unwrap_or_default();
    let name = about.name.clone().unwrap_or_default();
    let ev = CoreEvent {
        metadata: ObjectMeta {
            name: Some(format!("{name}.{:x}", now.as_nanosecond())),
            namespace: Some(ns.clone()),
            ..ObjectMeta::default()
        },
        involved_object: about,
        reason: Some(reason.into()),
        message: Some(message),
        type_: Some(type_.into()),
        source: Some(EventSource {
            component: Some(component.into()),
            host: None,
        }),
        reporting_component: Some(component.into()),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        count: Some(1),
        ..CoreEvent::default()
    };
    let api: Api<CoreEvent> = Api::namespaced(client.clone(), &ns);
    if let Err(e) = api.create(&PostParams::default(), &ev).await {
        tracing::debug!(error = %e, %reason, "event not written");
    }
}

/// The Events kube's job controller records when a Job's conditions change:
/// (type, reason, message) for each transition from `old` to `new`.
pub fn condition_events(old: &JobStatus, new: &JobStatus) -> Vec<(&'static str, String, String)> {
    let mut out = Vec::new();
    let became = |t: &str, v: &str| {
        condition(new, t).is_some_and(|c| c.status == v)
            && condition(old, t).is_none_or(|c| c.status != v)
    };
    if became(CONDITION_COMPLETE, "True") {
        out.push((
            "Normal",
            "Completed".to_string(),
            "Job completed".to_string(),
        ));
    }
    if became(CONDITION_FAILED, "True")
        && let Some(c) = condition(new, CONDITION_FAILED)
    {
        out.push((
            "Warning",
            c.reason.clone().unwrap_or_default(),
            c.message.clone().unwrap_or_default(),
        ));
    }
    if became(CONDITION_SUSPENDED, "True") {
        out.push((
            "Normal",
            "Suspended".to_string(),
            "Job suspended".to_string(),
        ));
    }
    if became(CONDITION_SUSPENDED, "False") && condition(old, CONDITION_SUSPENDED).is_some() {
        out.push(("Normal", "Resumed".to_string(), "Job resumed".to_string()));
    }
    out
}

/// The controller reference a Job puts on its pods.
pub fn owner_ref(job: &Job) -> OwnerReference {
    OwnerReference {
        api_version: "batch/v1".into(),
        kind: "Job".into(),
        name: job.metadata.name.clone().unwrap_or_default(),
        uid: job.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// `<job>-<index>-` for an Indexed Job's pod, shortened like kube's so the name stays valid.
fn indexed_generate_name(job: &str, index: i32) -> String {
    let suffix = format!("-{index}-");
    let mut prefix = format!("{job}{suffix}");
    if prefix.len() > GENERATED_NAME_PREFIX_MAX_CHARS {
        let keep = GENERATED_NAME_PREFIX_MAX_CHARS.saturating_sub(suffix.len());
        let cut: String = job.chars().take(keep).collect();
        prefix = format!("{cut}{suffix}");
    }
    prefix
}

/// A new pod for `job`: its template, a generated name, the controller reference, the
/// job labels (the API puts them on the template; added here too for manual selectors),
/// and for Indexed Jobs the completion index and hostname.
pub fn pod_from_template(job: &Job, index: Option<i32>) -> Pod {
    let name = job.metadata.name.clone().unwrap_or_default();
    let tpl = job
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let tm = tpl.metadata.unwrap_or_default();
    let mut labels = tm.labels.unwrap_or_default();
    let mut annotations = tm.annotations.unwrap_or_default();
    let mut spec = tpl.spec;
    let generate_name = match index {
        Some(i) => {
            labels.insert(COMPLETION_INDEX_KEY.into(), i.to_string());
            annotations.insert(COMPLETION_INDEX_KEY.into(), i.to_string());
            let host = format!("{name}-{i}");
            if let Some(s) = spec.as_mut()
                && s.hostname.is_none()
                && host.len() <= HOSTNAME_MAX_CHARS
            {
                s.hostname = Some(host);
            }
            indexed_generate_name(&name, i)
        }
        None => format!("{name}-"),
    };
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(generate_name),
            namespace: job.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: (!annotations.is_empty()).then_some(annotations),
            finalizers: tm.finalizers,
            owner_references: Some(vec![owner_ref(job)]),
            ..ObjectMeta::default()
        },
        spec,
        status: None,
    }
}

// ---------------------------------------------------------------------------------------
// Pure parts: indexes, failure policy, the plan.

/// Formats sorted indexes as kube does: runs of three or more as `a-b`, others listed:
/// `{0,1,2,4,6,7}` → `"0-2,4,6,7"`.
pub fn format_indexes(indexes: &BTreeSet<i32>) -> String {
    let mut out = String::new();
    let mut it = indexes.iter().copied().peekable();
    while let Some(first) = it.next() {
        let mut last = first;
        while it.peek() == Some(&(last + 1)) {
            last += 1;
            it.next();
        }
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(&first.to_string());
        if last == first + 1 {
            out.push(',');
            out.push_str(&last.to_string());
        } else if last > first {
            out.push('-');
            out.push_str(&last.to_string());
        }
    }
    out
}

/// Parses `completedIndexes` (`"0-2,4"`), keeping indexes below `completions`; malformed
/// parts are skipped (the status is ours, but a user may have written it).
pub fn parse_indexes(s: &str, completions: i32) -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.parse::<i32>(), b.parse::<i32>()),
            None => (part.parse::<i32>(), part.parse::<i32>()),
        };
        if let (Ok(a), Ok(b)) = (a, b) {
            for i in a.max(0)..=b.min(completions.saturating_sub(1)) {
                out.insert(i);
            }
        }
    }
    out
}

/// A pod's completion index, if it carries a valid one.
fn pod_index(p: &Pod) -> Option<i32> {
    let a = p.metadata.annotations.as_ref()?.get(COMPLETION_INDEX_KEY)?;
    a.parse::<i32>().ok().filter(|i| *i >= 0)
}

/// What a podFailurePolicy rule says about a failed pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyVerdict {
    /// Fail the whole Job, with this condition message.
    FailJob(String),
    /// Do not count the failure against backoffLimit.
    Ignore,
    /// Count it (also when no rule matches).
    Count,
}

/// The first rule of `policy` matching the failed pod `p` (kube's
/// `matchPodFailurePolicy`): onExitCodes look at terminated containers with a non-zero exit
/// code (init containers too), onPodConditions at the pod's conditions.
pub fn match_failure_policy(policy: &PodFailurePolicy, p: &Pod) -> PolicyVerdict {
    let key = format!(
        "{}/{}",
        p.metadata.namespace.as_deref().unwrap_or(""),
        p.metadata.name.as_deref().unwrap_or("")
    );
    for (i, rule) in policy.rules.iter().enumerate() {
        let Some(why) = rule_matches(rule, p, &key) else {
            continue;
        };
        return match rule.action.as_str() {
            "FailJob" => {
                PolicyVerdict::FailJob(format!("{why} matching FailJob rule at index {i}"))
            }
            "Ignore" => PolicyVerdict::Ignore,
            _ => PolicyVerdict::Count,
        };
    }
    PolicyVerdict::Count
}

fn rule_matches(rule: &PodFailurePolicyRule, p: &Pod, key: &str) -> Option<String> {
    let status = p.status.as_ref()?;
    if let Some(req) = &rule.on_exit_codes {
        let containers = status
            .init_container_statuses
            .iter()
            .flatten()
            .chain(status.container_statuses.iter().flatten());
        for c in containers {
            if req.container_name.as_ref().is_some_and(|n| *n != c.name) {
                continue;
            }
            let Some(code) = c
                .state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .map(|t| t.exit_code)
            else {
                continue;
            };
            if code == 0 {
                continue;
            }
            let listed = req.values.contains(&code);
            let hit = match req.operator.as_str() {
                "In" => listed,
                "NotIn" => !listed,
                _ => false,
            };
            if hit {
                return Some(format!(
                    "Container {} for pod {key} failed with exit code {code}",
                    c.name
                ));
            }
        }
        return None;
    }
    if let Some(patterns) = &rule.on_pod_conditions {
        for pat in patterns {
            let want = if pat.status.is_empty() {
                "True"
            } else {
                pat.status.as_str()
            };
            if status
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == pat.type_ && c.status == want)
            {
                return Some(format!("Pod {key} has condition {}", pat.type_));
            }
        }
    }
    None
}

/// When a pod finished: its containers' latest finish time, else its Ready condition's
/// last transition, else its creation.
fn finished_at(p: &Pod) -> Option<Timestamp> {
    let st = p.status.as_ref();
    let from_containers = st
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|c| {
            c.state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .and_then(|t| t.finished_at.as_ref())
                .map(|t| t.0)
        })
        .max();
    from_containers
        .or_else(|| {
            st.and_then(|s| s.conditions.as_ref())
                .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
                .and_then(|c| c.last_transition_time.as_ref())
                .map(|t| t.0)
        })
        .or_else(|| p.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// Container restarts of one pod, init containers included.
fn restart_total(p: &Pod) -> i64 {
    p.status
        .iter()
        .flat_map(|s| {
            s.init_container_statuses
                .iter()
                .flatten()
                .chain(s.container_statuses.iter().flatten())
        })
        .map(|c| i64::from(c.restart_count.max(0)))
        .sum()
}

/// Container restarts of pods still running or pending (kube's
/// `pastBackoffLimitOnFailure` counts only those).
fn restarts_of_active(pods: &[&Arc<Pod>]) -> i64 {
    pods.iter()
        .filter(|p| matches!(pods::phase(p), "Running" | "Pending" | ""))
        .map(|p| restart_total(p))
        .sum()
}

fn condition<'a>(status: &'a JobStatus, type_: &str) -> Option<&'a JobCondition> {
    status
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

fn is_true(status: &JobStatus, type_: &str) -> bool {
    condition(status, type_).is_some_and(|c| c.status == "True")
}

/// Whether the Job has finished (Complete or Failed).
pub fn is_finished(job: &Job) -> bool {
    job.status
        .as_ref()
        .is_some_and(|s| is_true(s, CONDITION_COMPLETE) || is_true(s, CONDITION_FAILED))
}

/// When a finished Job finished: completionTime, else the Failed/Complete transition.
pub fn finish_time(job: &Job) -> Option<Timestamp> {
    let s = job.status.as_ref()?;
    if let Some(t) = &s.completion_time {
        return Some(t.0);
    }
    [CONDITION_COMPLETE, CONDITION_FAILED]
        .iter()
        .filter_map(|t| condition(s, t))
        .filter(|c| c.status == "True")
        .find_map(|c| c.last_transition_time.as_ref().map(|t| t.0))
}

/// Sets a condition, keeping its transition time when the status does not change.
fn set_condition(
    status: &mut JobStatus,
    type_: &str,
    on: bool,
    reason: &str,
    msg: &str,
    now: Timestamp,
) {
    let value = if on { "True" } else { "False" };
    let conds = status.conditions.get_or_insert_with(Vec::new);
    let new = JobCondition {
        type_: type_.into(),
        status: value.into(),
        reason: Some(reason.into()),
        message: Some(msg.into()),
        last_probe_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    };
    match conds.iter_mut().find(|c| c.type_ == type_) {
        Some(c) if c.status == value => {
            c.reason = new.reason;
            c.message = new.message;
        }
        Some(c) => *c = new,
        None => conds.push(new),
    }
}

/// What one reconcile of a Job should do.
#[derive(Debug, Default)]
pub struct Plan {
    /// Pods to create: the completion index of each (`None` for NonIndexed Jobs).
    pub create: Vec<Option<i32>>,
    pub delete: Vec<Arc<Pod>>,
    pub status: JobStatus,
    /// Look again after this long (deadline, pod back-off).
    pub requeue: Option<Duration>,
}

fn secs(s: i64) -> Duration {
    Duration::from_secs(s.max(1).unsigned_abs())
}

/// Decides what a Job needs, from its pods, at `now`. `may_act`: whether creates and
/// deletes may be planned (the Job's earlier ones have all been observed).
pub fn plan(job: &Job, owned: &[Arc<Pod>], now: Timestamp, may_act: bool) -> Plan {
    let spec = job.spec.clone().unwrap_or_default();
    let old = job.status.clone().unwrap_or_default();
    let mut st = old.clone();
    let mut out = Plan::default();

    let suspended = spec.suspend == Some(true);
    let indexed = spec.completion_mode.as_deref() == Some("Indexed");
    let completions = spec.completions;
    let parallelism = usize::try_from(spec.parallelism.unwrap_or(1)).unwrap_or(0);
    let backoff_limit = i64::from(spec.backoff_limit.unwrap_or(6).max(0));
    let restart_on_failure = spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        == Some("OnFailure");
    let replace_only_failed = spec.pod_replacement_policy.as_deref() == Some("Failed");

    let active: Vec<&Arc<Pod>> = owned.iter().filter(|p| pods::is_active(p)).collect();
    let terminating: Vec<&Arc<Pod>> = owned
        .iter()
        .filter(|p| {
            p.metadata.deletion_timestamp.is_some()
                && !matches!(pods::phase(p), "Succeeded" | "Failed")
        })
        .collect();
    let succeeded_pods: Vec<&Arc<Pod>> = owned
        .iter()
        .filter(|p| pods::phase(p) == "Succeeded")
        .collect();
    let failed_pods: Vec<&Arc<Pod>> = owned
        .iter()
        .filter(|p| pods::phase(p) == "Failed")
        .collect();

    // Failures, through the pod failure policy.
    let mut fail_job: Option<(String, String)> = None;
    let mut counted_failed = 0i64;
    let mut last_failure: Option<Timestamp> = None;
    for p in &failed_pods {
        let verdict = match &spec.pod_failure_policy {
            Some(policy) => match_failure_policy(policy, p),
            None => PolicyVerdict::Count,
        };
        match verdict {
            PolicyVerdict::FailJob(msg) => {
                fail_job.get_or_insert((REASON_POD_FAILURE_POLICY.into(), msg));
            }
            PolicyVerdict::Ignore => continue,
            PolicyVerdict::Count => {}
        }
        counted_failed += 1;
        last_failure = last_failure.max(finished_at(p));
    }
    let mut failed = counted_failed.max(i64::from(old.failed.unwrap_or(0)));

    // Successes.
    let mut completed = BTreeSet::new();
    let succeeded = if indexed {
        let n = completions.unwrap_or(0);
        completed = parse_indexes(old.completed_indexes.as_deref().unwrap_or(""), n);
        completed.extend(
            succeeded_pods
                .iter()
                .filter_map(|p| pod_index(p))
                .filter(|i| *i < n),
        );
        i64::try_from(completed.len()).unwrap_or(i64::MAX)
    } else {
        i64::try_from(succeeded_pods.len())
            .unwrap_or(i64::MAX)
            .max(i64::from(old.succeeded.unwrap_or(0)))
    };

    // Has the Job failed or succeeded (the interim conditions, then the final ones)?
    let mut failing = is_true(&old, CONDITION_FAILURE_TARGET);
    let mut succeeding = is_true(&old, CONDITION_SUCCESS_CRITERIA_MET);
    if !failing && !succeeding {
        let deadline_left = match (spec.active_deadline_seconds, &old.start_time) {
            (Some(ads), Some(start)) if !suspended => {
                Some(start.0.as_second() + ads - now.as_second())
            }
            _ => None,
        };
        let failure = fail_job.or_else(|| {
            let past_backoff = failed > backoff_limit
                || (restart_on_failure && {
                    let r = restarts_of_active(&active);
                    if backoff_limit == 0 {
                        r > 0
                    } else {
                        r >= backoff_limit
                    }
                });
            if past_backoff {
                Some((REASON_BACKOFF_LIMIT.into(), MESSAGE_BACKOFF_LIMIT.into()))
            } else if deadline_left.is_some_and(|l| l <= 0) {
                Some((REASON_DEADLINE.into(), MESSAGE_DEADLINE.into()))
            } else {
                None
            }
        });
        if let Some((reason, msg)) = failure {
            set_condition(&mut st, CONDITION_FAILURE_TARGET, true, &reason, &msg, now);
            failing = true;
        } else {
            let done = match (indexed, completions) {
                (true, Some(c)) => succeeded >= i64::from(c),
                (false, Some(c)) => succeeded >= i64::from(c),
                (_, None) => succeeded > 0 && active.is_empty(),
            };
            if done {
                set_condition(
                    &mut st,
                    CONDITION_SUCCESS_CRITERIA_MET,
                    true,
                    REASON_COMPLETIONS_REACHED,
                    MESSAGE_COMPLETIONS_REACHED,
                    now,
                );
                succeeding = true;
            } else if let Some(l) = deadline_left {
                out.requeue = Some(secs(l));
            }
        }
    }

    if failing {
        // kube counts every pod that had not finished when the Job failed as failed; counting
        // them now, while they still exist, makes the number independent of whether their
        // Failed phase is seen before they are removed.
        let unfinished = i64::try_from(active.len() + terminating.len()).unwrap_or(i64::MAX);
        failed = failed.max(counted_failed.saturating_add(unfinished));
    }

    let mut deleting: Vec<Arc<Pod>> = Vec::new();
    if failing || succeeding {
        // Finishing: remaining pods go; the final condition once none is left running.
        deleting = active.iter().map(|p| Arc::clone(p)).collect();
        if active.is_empty() && terminating.is_empty() {
            let interim = if failing {
                CONDITION_FAILURE_TARGET
            } else {
                CONDITION_SUCCESS_CRITERIA_MET
            };
            let (reason, msg) = condition(&st, interim)
                .map(|c| {
                    (
                        c.reason.clone().unwrap_or_default(),
                        c.message.clone().unwrap_or_default(),
                    )
                })
                .unwrap_or_default();
            if failing {
                set_condition(&mut st, CONDITION_FAILED, true, &reason, &msg, now);
            } else {
                set_condition(&mut st, CONDITION_COMPLETE, true, &reason, &msg, now);
                st.completion_time = Some(Time(now));
            }
        }
    } else if suspended {
        deleting = active.iter().map(|p| Arc::clone(p)).collect();
        if !is_true(&old, CONDITION_SUSPENDED) {
            set_condition(
                &mut st,
                CONDITION_SUSPENDED,
                true,
                "JobSuspended",
                "Job suspended",
                now,
            );
        }
        // The deadline restarts on resume (kube resets startTime then).
        st.start_time = None;
    } else {
        if is_true(&old, CONDITION_SUSPENDED) {
            set_condition(
                &mut st,
                CONDITION_SUSPENDED,
                false,
                "JobResumed",
                "Job resumed",
                now,
            );
            st.start_time = Some(Time(now));
            if let Some(ads) = spec.active_deadline_seconds {
                out.requeue = Some(secs(ads));
            }
        }
        if st.start_time.is_none() {
            st.start_time = Some(Time(now));
            if let Some(ads) = spec.active_deadline_seconds {
                out.requeue = Some(secs(ads));
            }
        }
        // Replacing failed pods waits out an exponential back-off.
        let backoff_left = match last_failure {
            Some(at) if counted_failed > 0 => {
                let shift = u32::try_from((counted_failed - 1).clamp(0, 20)).unwrap_or(20);
                let wait = JOB_POD_FAILURE_BACKOFF_BASE_SECONDS
                    .saturating_mul(1 << shift)
                    .min(JOB_POD_FAILURE_BACKOFF_MAX_SECONDS);
                at.as_second() + wait - now.as_second()
            }
            _ => 0,
        };
        if indexed {
            let n = completions.unwrap_or(0);
            // Duplicates and out-of-range indexes go (kube keeps the oldest of duplicates).
            let mut seen: BTreeMap<i32, &Arc<Pod>> = BTreeMap::new();
            let mut sorted = active.clone();
            sorted.sort_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
            for p in sorted {
                match pod_index(p) {
                    Some(i) if i < n && !completed.contains(&i) && !seen.contains_key(&i) => {
                        seen.insert(i, p);
                    }
                    _ => deleting.push(Arc::clone(p)),
                }
            }
            let mut occupied: BTreeSet<i32> = seen.keys().copied().collect();
            if replace_only_failed {
                occupied.extend(terminating.iter().filter_map(|p| pod_index(p)));
            }
            let running = seen.len();
            if running > parallelism {
                let mut extra: Vec<&Arc<Pod>> = seen.values().copied().collect();
                extra.sort_by(|a, b| pods::deletion_order(a, b));
                deleting.extend(
                    extra
                        .into_iter()
                        .take(running - parallelism)
                        .map(Arc::clone),
                );
            } else if backoff_left > 0 {
                out.requeue = Some(
                    out.requeue
                        .map_or(secs(backoff_left), |r| r.min(secs(backoff_left))),
                );
            } else {
                // Duplicates being deleted are terminating: they hold a slot only under
                // podReplacementPolicy Failed.
                let mut held = running;
                if replace_only_failed {
                    held += terminating.len() + deleting.len();
                }
                let room = parallelism.saturating_sub(held);
                out.create = (0..n)
                    .filter(|i| !completed.contains(i) && !occupied.contains(i))
                    .take(room.min(JOB_BURST_PODS))
                    .map(Some)
                    .collect();
            }
        } else {
            let mut busy = active.len();
            if replace_only_failed {
                busy += terminating.len();
            }
            let want = match completions {
                Some(c) => usize::try_from((i64::from(c) - succeeded).max(0))
                    .unwrap_or(0)
                    .min(parallelism),
                // Work queue: once one pod succeeded, no new pods; the rest finish.
                None if succeeded > 0 => active.len().min(parallelism),
                None => parallelism,
            };
            if active.len() > want {
                let mut extra = active.clone();
                extra.sort_by(|a, b| pods::deletion_order(a, b));
                deleting.extend(extra.into_iter().take(active.len() - want).map(Arc::clone));
            } else if busy < want {
                if backoff_left > 0 {
                    out.requeue = Some(
                        out.requeue
                            .map_or(secs(backoff_left), |r| r.min(secs(backoff_left))),
                    );
                } else {
                    out.create = vec![None; (want - busy).min(JOB_BURST_PODS)];
                }
            }
        }
    }
    deleting.truncate(JOB_BURST_PODS);
    if !may_act {
        out.create.clear();
        deleting.clear();
    }

    let ready = active.iter().filter(|p| pods::is_ready(p)).count();
    let to_i32 = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    st.active = Some(to_i32(active.len().saturating_sub(deleting.len())));
    st.ready = Some(to_i32(ready));
    st.terminating = Some(to_i32(terminating.len() + deleting.len()));
    st.succeeded = Some(i32::try_from(succeeded).unwrap_or(i32::MAX));
    st.failed = Some(i32::try_from(failed).unwrap_or(i32::MAX));
    st.completed_indexes = (indexed && !completed.is_empty()).then(|| format_indexes(&completed));
    out.delete = deleting;
    out.status = st;
    out
}

/// The status as a merge patch: cleared fields are sent as null so they go.
fn status_patch(s: &JobStatus) -> Value {
    let mut body = serde_json::to_value(s).unwrap_or_else(|_| json!({}));
    if let Some(o) = body.as_object_mut() {
        for k in ["startTime", "completionTime", "completedIndexes"] {
            o.entry(k).or_insert(Value::Null);
        }
    }
    json!({ "status": body })
}

/// The status fields compared to decide whether to write (probe times aside).
fn same_status(a: &JobStatus, b: &JobStatus) -> bool {
    let strip = |s: &JobStatus| {
        let mut s = s.clone();
        for c in s.conditions.iter_mut().flatten() {
            c.last_probe_time = None;
        }
        for v in [
            &mut s.active,
            &mut s.ready,
            &mut s.terminating,
            &mut s.succeeded,
            &mut s.failed,
        ] {
            if *v == Some(0) {
                *v = None;
            }
        }
        s
    };
    strip(a) == strip(b)
}

#[async_trait::async_trait]
impl Reconciler for JobController {
    fn name(&self) -> &'static str {
        "job"
    }

    async fn reconcile(&self, key: &str) -> Result<Action, ReconcileError> {
        let Some(cached) = self.jobs.get(key) else {
            self.expectations.delete(key);
            self.written().remove(key);
            return Ok(Action::Done);
        };
        let job = {
            let mut w = self.written();
            let job = newer_of(cached.clone(), w.get(key));
            if Arc::ptr_eq(&job, &cached) {
                w.remove(key);
            }
            job
        };
        let now = Timestamp::now();
        if is_finished(&job) {
            return self.expire(&job, now).await;
        }
        if job.metadata.deletion_timestamp.is_some() {
            return Ok(Action::Done);
        }
        let owned = self.owned_pods(&job);
        let may_act = self.expectations.satisfied(key);
        let plan = plan(&job, &owned, now, may_act);
        // The status first: a FailureTarget or SuccessCriteriaMet decided here is recorded
        // before the pods it ends are deleted, so no later pass can forget the decision.
        let current = job.status.clone().unwrap_or_default();
        if !same_status(&current, &plan.status) {
            let api: Api<Job> = Api::namespaced(
                self.client.clone(),
                job.metadata.namespace.as_deref().unwrap_or(""),
            );
            let wrote = api
                .patch_status(
                    job.metadata.name.as_deref().unwrap_or(""),
                    &PatchParams::default(),
                    &Patch::Merge(status_patch(&plan.status)),
                )
                .await?;
            self.written().insert(key.to_string(), Arc::new(wrote));
            for (type_, reason, message) in condition_events(&current, &plan.status) {
                let about = ObjectReference {
                    api_version: Some("batch/v1".into()),
                    kind: Some("Job".into()),
                    name: job.metadata.name.clone(),
                    namespace: job.metadata.namespace.clone(),
                    uid: job.metadata.uid.clone(),
                    ..ObjectReference::default()
                };
                record_event(
                    &self.client,
                    about,
                    "job-controller",
                    type_,
                    &reason,
                    message,
                )
                .await;
            }
        }
        let mut failure = None;
        if !plan.delete.is_empty() {
            self.delete_pods(key, plan.delete).await?;
        }
        if !plan.create.is_empty() {
            failure = self.create_pods(key, &job, plan.create).await;
        }
        if let Some(msg) = failure {
            return Err(ReconcileError::Other(format!("creating pods: {msg}")));
        }
        Ok(match plan.requeue {
            Some(d) => Action::RequeueAfter(d),
            None => Action::Done,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(v: Value) -> Pod {
        match serde_json::from_value(v) {
            Ok(p) => p,
            Err(e) => panic!("bad test pod: {e}"),
        }
    }

    fn job(v: Value) -> Job {
        match serde_json::from_value(v) {
            Ok(j) => j,
            Err(e) => panic!("bad test job: {e}"),
        }
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap_or_default()
    }

    #[test]
    fn completed_indexes_are_written_as_kube_writes_them() {
        let cases: [(&[i32], &str); 6] = [
            (&[], ""),
            (&[3], "3"),
            (&[1, 2], "1,2"),
            (&[0, 1, 2, 4], "0-2,4"),
            (&[0, 1, 2, 4, 6, 7], "0-2,4,6,7"),
            (&[1, 3, 4, 5, 7], "1,3-5,7"),
        ];
        for (set, want) in cases {
            let s: BTreeSet<i32> = set.iter().copied().collect();
            assert_eq!(format_indexes(&s), want, "{set:?}");
            assert_eq!(parse_indexes(want, 100), s, "{want}");
        }
        // Out of range and malformed parts are dropped.
        assert_eq!(
            parse_indexes("0-2,x,9,4-3", 5),
            [0, 1, 2].into_iter().collect()
        );
    }

    fn failed_pod(exit_code: i32, container: &str, conditions: Value) -> Pod {
        pod(json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "status": {
                "phase": "Failed",
                "conditions": conditions,
                "containerStatuses": [
                    {"name": "side", "image": "i", "imageID": "", "ready": false,
                     "restartCount": 0, "state": {"terminated": {"exitCode": 0}}},
                    {"name": container, "image": "i", "imageID": "", "ready": false,
                     "restartCount": 0, "state": {"terminated": {"exitCode": exit_code}}}
                ]
            }
        }))
    }

    fn policy(rules: Value) -> PodFailurePolicy {
        match serde_json::from_value(json!({ "rules": rules })) {
            Ok(p) => p,
            Err(e) => panic!("bad test policy: {e}"),
        }
    }

    #[test]
    fn the_first_matching_failure_policy_rule_decides() {
        let p = policy(json!([
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            {"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "In", "values": [42]}},
            {"action": "Count", "onExitCodes": {"operator": "NotIn", "values": [1, 2]}},
            {"action": "Ignore", "onExitCodes": {"operator": "In", "values": [1]}},
        ]));
        let cases = [
            (failed_pod(42, "main", json!([])), PolicyVerdict::FailJob(
                "Container main for pod ns/p failed with exit code 42 matching FailJob rule at index 1".into())),
            // The rule names another container: not matched; 42 is not in [1, 2] → Count.
            (failed_pod(42, "other", json!([])), PolicyVerdict::Count),
            (failed_pod(1, "main", json!([])), PolicyVerdict::Ignore),
            (failed_pod(2, "main", json!([])), PolicyVerdict::Count),
            (failed_pod(1, "main", json!([{"type": "DisruptionTarget", "status": "True"}])), PolicyVerdict::Ignore),
            // Exit code 0 never matches, not even NotIn.
            (failed_pod(0, "main", json!([])), PolicyVerdict::Count),
        ];
        for (i, (pod, want)) in cases.into_iter().enumerate() {
            assert_eq!(match_failure_policy(&p, &pod), want, "case {i}");
        }
    }

    fn base_job(spec: Value) -> Job {
        let mut s = json!({
            "parallelism": 3, "completions": 3, "backoffLimit": 6,
            "completionMode": "NonIndexed",
            "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "u1"}},
            "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "busybox"}]}}
        });
        if let (Some(o), Some(extra)) = (s.as_object_mut(), spec.as_object()) {
            for (k, v) in extra {
                o.insert(k.clone(), v.clone());
            }
        }
        job(json!({
            "metadata": {"name": "j", "namespace": "ns", "uid": "u1"},
            "spec": s,
            "status": {"startTime": "2026-01-01T00:00:00Z"}
        }))
    }

    fn job_pod(name: &str, phase: &str, index: Option<i32>) -> Arc<Pod> {
        let mut annotations = json!({});
        if let Some(i) = index {
            annotations = json!({ COMPLETION_INDEX_KEY: i.to_string() });
        }
        Arc::new(pod(json!({
            "metadata": {"name": name, "namespace": "ns", "annotations": annotations,
                         "creationTimestamp": "2026-01-01T00:00:00Z"},
            "status": {"phase": phase}
        })))
    }

    fn has(st: &JobStatus, type_: &str, reason: &str) -> bool {
        condition(st, type_)
            .is_some_and(|c| c.status == "True" && c.reason.as_deref() == Some(reason))
    }

    #[test]
    fn a_new_job_creates_parallelism_pods_and_completes_when_completions_succeeded() {
        let now = ts("2026-01-01T00:00:05Z");
        let j = base_job(json!({}));
        let p = plan(&j, &[], now, true);
        assert_eq!(p.create, vec![None, None, None]);
        let done: Vec<Arc<Pod>> = (0..3)
            .map(|i| job_pod(&format!("p{i}"), "Succeeded", None))
            .collect();
        let p = plan(&j, &done, now, true);
        assert!(p.create.is_empty());
        assert!(
            has(&p.status, CONDITION_COMPLETE, REASON_COMPLETIONS_REACHED),
            "{:?}",
            p.status
        );
        assert!(has(
            &p.status,
            CONDITION_SUCCESS_CRITERIA_MET,
            REASON_COMPLETIONS_REACHED
        ));
        assert_eq!(p.status.succeeded, Some(3));
        assert!(p.status.completion_time.is_some());
    }

    #[test]
    fn a_work_queue_job_completes_when_one_succeeded_and_all_finished() {
        let now = ts("2026-01-01T00:00:05Z");
        let j = base_job(json!({"completions": null, "parallelism": 2}));
        let one_left = [
            job_pod("a", "Succeeded", None),
            job_pod("b", "Running", None),
        ];
        let p = plan(&j, &one_left, now, true);
        assert!(p.create.is_empty() && p.delete.is_empty(), "{p:?}");
        assert!(!has(
            &p.status,
            CONDITION_COMPLETE,
            REASON_COMPLETIONS_REACHED
        ));
        let all_done = [
            job_pod("a", "Succeeded", None),
            job_pod("b", "Succeeded", None),
        ];
        let p = plan(&j, &all_done, now, true);
        assert!(has(
            &p.status,
            CONDITION_COMPLETE,
            REASON_COMPLETIONS_REACHED
        ));
    }

    #[test]
    fn failures_past_the_backoff_limit_fail_the_job_after_its_pods_are_gone() {
        let now = ts("2026-01-01T00:10:00Z");
        let j = base_job(json!({"backoffLimit": 1}));
        let pods = [
            job_pod("a", "Failed", None),
            job_pod("b", "Failed", None),
            job_pod("c", "Running", None),
        ];
        let p = plan(&j, &pods, now, true);
        assert!(has(
            &p.status,
            CONDITION_FAILURE_TARGET,
            REASON_BACKOFF_LIMIT
        ));
        assert!(!has(&p.status, CONDITION_FAILED, REASON_BACKOFF_LIMIT));
        assert_eq!(p.delete.len(), 1);
        let mut j2 = j.clone();
        j2.status = Some(p.status);
        let p = plan(&j2, &pods[..2], now, true);
        assert!(
            has(&p.status, CONDITION_FAILED, REASON_BACKOFF_LIMIT),
            "{:?}",
            p.status
        );
        // Two failed pods plus the running one the failure deleted (kube: "when the job is
        // considered finished, every non-terminated pod is considered failed").
        assert_eq!(p.status.failed, Some(3));
        assert!(p.status.completion_time.is_none());
    }

    #[test]
    fn a_failed_pod_is_replaced_only_after_its_back_off() {
        let j = base_job(json!({"completions": 1, "parallelism": 1}));
        let mut failed = pod(json!({
            "metadata": {"name": "a", "namespace": "ns"},
            "status": {"phase": "Failed", "containerStatuses": [{"name": "main", "image": "i",
                "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": 1, "finishedAt": "2026-01-01T00:00:00Z"}}}]}
        }));
        failed.metadata.creation_timestamp = None;
        let pods = [Arc::new(failed)];
        let early = plan(&j, &pods, ts("2026-01-01T00:00:04Z"), true);
        assert!(early.create.is_empty());
        assert_eq!(early.requeue, Some(Duration::from_secs(6)));
        let later = plan(&j, &pods, ts("2026-01-01T00:00:10Z"), true);
        assert_eq!(later.create, vec![None]);
    }

    #[test]
    fn restarts_under_on_failure_count_against_the_backoff_limit() {
        let j = base_job(
            json!({"backoffLimit": 2, "completions": 1, "parallelism": 1,
            "template": {"spec": {"restartPolicy": "OnFailure", "containers": [{"name": "main", "image": "b"}]}}}),
        );
        let p = Arc::new(pod(json!({
            "metadata": {"name": "a", "namespace": "ns"},
            "status": {"phase": "Running", "containerStatuses": [{"name": "main", "image": "i",
                "imageID": "", "ready": false, "restartCount": 2}]}
        })));
        let out = plan(&j, &[p], ts("2026-01-01T00:00:30Z"), true);
        assert!(
            has(&out.status, CONDITION_FAILURE_TARGET, REASON_BACKOFF_LIMIT),
            "{:?}",
            out.status
        );
        assert_eq!(out.delete.len(), 1);
        // The running pod the failure deletes counts as failed, before it is gone.
        assert_eq!(out.status.failed, Some(1));
    }

    #[test]
    fn the_active_deadline_fails_the_job_and_deletes_its_pods() {
        let j = base_job(json!({"activeDeadlineSeconds": 10}));
        let pods = [job_pod("a", "Running", None)];
        let before = plan(&j, &pods, ts("2026-01-01T00:00:04Z"), true);
        assert_eq!(before.requeue, Some(Duration::from_secs(6)));
        let after = plan(&j, &pods, ts("2026-01-01T00:00:10Z"), true);
        assert!(has(
            &after.status,
            CONDITION_FAILURE_TARGET,
            REASON_DEADLINE
        ));
        assert_eq!(after.delete.len(), 1);
        assert_eq!(after.status.failed, Some(1));
    }

    #[test]
    fn an_indexed_job_creates_missing_indexes_and_reports_completed_ones() {
        let j = base_job(json!({"completionMode": "Indexed", "completions": 5, "parallelism": 2}));
        let pods = [
            job_pod("a", "Succeeded", Some(0)),
            job_pod("b", "Running", Some(2)),
            job_pod("c", "Succeeded", Some(3)),
            job_pod("dup", "Running", Some(3)),
        ];
        let p = plan(&j, &pods, ts("2026-01-01T00:00:05Z"), true);
        assert_eq!(p.status.completed_indexes.as_deref(), Some("0,3"));
        assert_eq!(p.status.succeeded, Some(2));
        // Index 3 is done: its duplicate goes; one slot free → the lowest missing index.
        assert_eq!(
            p.delete
                .iter()
                .map(|p| p.metadata.name.clone().unwrap_or_default())
                .collect::<Vec<_>>(),
            ["dup"]
        );
        assert_eq!(p.create, vec![Some(1)]);
        let pod = pod_from_template(&j, Some(1));
        assert_eq!(pod.metadata.generate_name.as_deref(), Some("j-1-"));
        assert_eq!(
            pod.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(COMPLETION_INDEX_KEY))
                .map(String::as_str),
            Some("1")
        );
        assert_eq!(
            pod.spec.as_ref().and_then(|s| s.hostname.as_deref()),
            Some("j-1")
        );
        let owner = controller_of(&pod).cloned().unwrap_or_default();
        assert_eq!(
            (owner.kind.as_str(), owner.block_owner_deletion),
            ("Job", Some(true))
        );
    }

    #[test]
    fn a_suspended_job_deletes_its_pods_and_a_resumed_one_restarts_its_clock() {
        let j = base_job(json!({"suspend": true}));
        let pods = [job_pod("a", "Running", None)];
        let p = plan(&j, &pods, ts("2026-01-01T00:00:05Z"), true);
        assert_eq!(p.delete.len(), 1);
        assert!(has(&p.status, CONDITION_SUSPENDED, "JobSuspended"));
        assert!(p.status.start_time.is_none());
        let mut resumed = base_job(json!({"suspend": false}));
        resumed.status = Some(p.status);
        let now = ts("2026-01-01T00:01:00Z");
        let p = plan(&resumed, &[], now, true);
        let c = condition(&p.status, CONDITION_SUSPENDED)
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            (c.status.as_str(), c.reason.as_deref()),
            ("False", Some("JobResumed"))
        );
        assert_eq!(p.status.start_time.map(|t| t.0), Some(now));
        assert_eq!(p.create.len(), 3);
    }

    #[test]
    fn condition_changes_are_reported_as_kube_reports_them() {
        let now = ts("2026-01-01T00:00:05Z");
        let mut old = JobStatus::default();
        let mut new = JobStatus::default();
        set_condition(
            &mut new,
            CONDITION_SUSPENDED,
            true,
            "JobSuspended",
            "Job suspended",
            now,
        );
        assert_eq!(
            condition_events(&old, &new),
            [(
                "Normal",
                "Suspended".to_string(),
                "Job suspended".to_string()
            )]
        );
        old = new.clone();
        set_condition(
            &mut new,
            CONDITION_SUSPENDED,
            false,
            "JobResumed",
            "Job resumed",
            now,
        );
        set_condition(
            &mut new,
            CONDITION_FAILED,
            true,
            REASON_DEADLINE,
            MESSAGE_DEADLINE,
            now,
        );
        assert_eq!(
            condition_events(&old, &new),
            [
                (
                    "Warning",
                    REASON_DEADLINE.to_string(),
                    MESSAGE_DEADLINE.to_string()
                ),
                ("Normal", "Resumed".to_string(), "Job resumed".to_string()),
            ]
        );
        assert!(condition_events(&new, &new).is_empty());
    }

    #[test]
    fn long_job_names_keep_indexed_pod_names_valid() {
        let long = "a".repeat(70);
        let g = indexed_generate_name(&long, 12);
        assert_eq!(g.len(), GENERATED_NAME_PREFIX_MAX_CHARS);
        assert!(g.ends_with("-12-"));
    }
}
