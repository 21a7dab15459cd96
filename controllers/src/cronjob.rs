//! The CronJob controller (batch/v1): creates a Job from `spec.jobTemplate` at each time
//! `spec.schedule` names, and keeps the CronJob's status and history.
//!
//! Owns: the Jobs named `<cronjob>-<scheduled time in minutes since the epoch>` (annotation
//! `batch.kubernetes.io/cronjob-scheduled-timestamp`, a controller ownerReference),
//! `concurrencyPolicy` (Allow, Forbid: skip while a Job runs, Replace: delete the running
//! ones first), `startingDeadlineSeconds` (a missed time older than that is skipped), the
//! missed-schedule count (more than [`MISSED_SCHEDULES_WARN_MAX`] → a warning, as kube),
//! history pruning to `successfulJobsHistoryLimit` / `failedJobsHistoryLimit` (oldest
//! first), `suspend`, and `status.active` / `lastScheduleTime` / `lastSuccessfulTime`.
//! Schedules and zones are parsed by [`crate::cron`]; the reconcile asks to be woken at the
//! next scheduled time ([`Action::RequeueAfter`]), so no timer polls.
//!
//! Like kube-controller-manager's cronjob controller (v2): level-triggered on the CronJob,
//! the Jobs it owns (a Job finishing leaves `status.active` at once) and the clock. A Job
//! that `status.active` names but the cache does not know is looked up live before it is
//! dropped, so a lagging Job cache never forgets a Job this controller just created.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use k8s_openapi::api::batch::v1::{CronJob, CronJobStatus, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::{Api, Client};
use serde_json::{Value, json};

use crate::cron::{self, Schedule};
use crate::job;
use crate::runtime::{
    Action, Informer, OwnerIndex, ReconcileError, Reconciler, WorkQueue, controller_of, key_of,
};

/// More missed start times than this since the last one are reported (kube: 100).
pub const MISSED_SCHEDULES_WARN_MAX: usize = 100;
/// How far past a scheduled time the controller wakes, so the time is surely in the past
/// when it looks (kube: nextScheduleDelta).
pub const SCHEDULE_WAKE_DELAY_MS: u64 = 100;
/// Windows searched back from now for the most recent missed time, shortest first: the
/// walk through a window is at most one firing per minute of it, and no schedule is asked
/// for more than [`MISSED_SCHEDULES_WARN_MAX`] + one window's worth of times.
pub const MISSED_SEARCH_WINDOWS_SECONDS: [i64; 5] =
    [3_600, 86_400, 32 * 86_400, 367 * 86_400, 5 * 367 * 86_400];
/// Annotation on each Job: the time it was scheduled for (RFC 3339 in the CronJob's zone).
pub const SCHEDULED_TIMESTAMP_ANNOTATION: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

pub struct CronJobController {
    client: Client,
    pub cronjobs: Arc<Informer<CronJob>>,
    jobs: Arc<Informer<Job>>,
    jobs_by_owner: Arc<OwnerIndex>,
    pub queue: Arc<WorkQueue>,
}

fn cronjob_key_of_owner(j: &Job) -> Option<String> {
    let r = controller_of(j)?;
    (r.kind == "CronJob" && r.api_version == "batch/v1").then(|| {
        format!(
            "{}/{}",
            j.metadata.namespace.as_deref().unwrap_or(""),
            r.name
        )
    })
}

impl CronJobController {
    /// Wires the handlers; the informers are started by the caller.
    pub fn new(
        client: Client,
        cronjobs: Arc<Informer<CronJob>>,
        jobs: Arc<Informer<Job>>,
        jobs_by_owner: Arc<OwnerIndex>,
    ) -> Arc<Self> {
        let queue = Arc::new(WorkQueue::default());
        {
            let q = queue.clone();
            cronjobs.on_change(move |_, new| {
                if let Some(n) = new {
                    q.add(&key_of(n));
                }
            });
        }
        {
            let q = queue.clone();
            jobs.on_change(move |old, new| {
                for j in [old, new].into_iter().flatten() {
                    if let Some(k) = cronjob_key_of_owner(j) {
                        q.add(&k);
                    }
                }
            });
        }
        Arc::new(CronJobController {
            client,
            cronjobs,
            jobs,
            jobs_by_owner,
            queue,
        })
    }

    /// Records a core/v1 Event about the CronJob; best effort.
    async fn event(&self, cj: &CronJob, type_: &str, reason: &str, message: String) {
        let about = ObjectReference {
            api_version: Some("batch/v1".into()),
            kind: Some("CronJob".into()),
            name: cj.metadata.name.clone(),
            namespace: cj.metadata.namespace.clone(),
            uid: cj.metadata.uid.clone(),
            ..ObjectReference::default()
        };
        job::record_event(
            &self.client,
            about,
            "cronjob-controller",
            type_,
            reason,
            message,
        )
        .await;
    }

    /// Whether a Job exists, asked of the API (the cache may not have seen it yet).
    async fn job_exists(&self, ns: &str, name: &str) -> Result<bool, ReconcileError> {
        let api: Api<Job> = Api::namespaced(self.client.clone(), ns);
        match api.get_opt(name).await {
            Ok(j) => Ok(j.is_some()),
            Err(e) => Err(e.into()),
        }
    }

    async fn delete_job(&self, ns: &str, name: &str) -> Result<(), ReconcileError> {
        let api: Api<Job> = Api::namespaced(self.client.clone(), ns);
        let dp = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..DeleteParams::default()
        };
        match api.delete(name, &dp).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes the oldest finished Jobs beyond the history limits.
    async fn prune(&self, cj: &CronJob, jobs: &[Arc<Job>]) -> Result<(), ReconcileError> {
        let spec = cj.spec.as_ref();
        let limits = [
            (
                job::CONDITION_COMPLETE,
                spec.and_then(|s| s.successful_jobs_history_limit)
                    .unwrap_or(3),
            ),
            (
                job::CONDITION_FAILED,
                spec.and_then(|s| s.failed_jobs_history_limit).unwrap_or(1),
            ),
        ];
        let ns = cj.metadata.namespace.as_deref().unwrap_or("");
        for (kind, limit) in limits {
            let mut done: Vec<&Arc<Job>> = jobs
                .iter()
                .filter(|j| finished_as(j) == Some(kind) && j.metadata.deletion_timestamp.is_none())
                .collect();
            let keep = usize::try_from(limit).unwrap_or(0);
            if done.len() <= keep {
                continue;
            }
            done.sort_by_key(|j| start_of(j));
            let extra = done.len() - keep;
            for j in done.into_iter().take(extra) {
                let name = j.metadata.name.as_deref().unwrap_or("");
                self.delete_job(ns, name).await?;
                self.event(
                    cj,
                    "Normal",
                    "SuccessfulDelete",
                    format!("Deleted job {name}"),
                )
                .await;
            }
        }
        Ok(())
    }
}

/// `Complete` or `Failed` for a finished Job.
fn finished_as(j: &Job) -> Option<&'static str> {
    let conds = j.status.as_ref()?.conditions.as_ref()?;
    [job::CONDITION_COMPLETE, job::CONDITION_FAILED]
        .into_iter()
        .find(|t| conds.iter().any(|c| c.type_ == *t && c.status == "True"))
}

/// When a Job started (its status, else its creation): history is pruned oldest first.
fn start_of(j: &Job) -> Option<Timestamp> {
    j.status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .or(j.metadata.creation_timestamp.as_ref())
        .map(|t| t.0)
}

/// The name of the Job for the time `t` (kube: `<name>-<minutes since epoch>`).
pub fn job_name(cronjob: &str, t: Timestamp) -> String {
    format!("{cronjob}-{}", t.as_second().div_euclid(60))
}

/// `t` as RFC 3339 in `tz` (`Z` for UTC), as the scheduled-timestamp annotation carries it.
pub fn rfc3339_in(t: Timestamp, tz: &TimeZone) -> String {
    let z = t.to_zoned(tz.clone());
    if z.offset().seconds() == 0 {
        z.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
    } else {
        z.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string()
    }
}

/// The Job for scheduled time `t`: the template's metadata and spec, the annotation, the
/// controller reference.
pub fn job_for(cj: &CronJob, t: Timestamp, tz: &TimeZone) -> Job {
    let tpl = cj
        .spec
        .as_ref()
        .map(|s| s.job_template.clone())
        .unwrap_or_default();
    let tm = tpl.metadata.unwrap_or_default();
    let mut annotations = tm.annotations.unwrap_or_default();
    annotations.insert(SCHEDULED_TIMESTAMP_ANNOTATION.into(), rfc3339_in(t, tz));
    let name = cj.metadata.name.clone().unwrap_or_default();
    Job {
        metadata: ObjectMeta {
            name: Some(job_name(&name, t)),
            namespace: cj.metadata.namespace.clone(),
            labels: tm.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![OwnerReference {
                api_version: "batch/v1".into(),
                kind: "CronJob".into(),
                name,
                uid: cj.metadata.uid.clone().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..ObjectMeta::default()
        },
        spec: tpl.spec,
        status: None,
    }
}

fn job_ref(j: &Job) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        name: j.metadata.name.clone(),
        namespace: j.metadata.namespace.clone(),
        uid: j.metadata.uid.clone(),
        resource_version: j.metadata.resource_version.clone(),
        ..ObjectReference::default()
    }
}

/// The scheduled times in `(earliest, now]`: how many (counted up to
/// `MISSED_SCHEDULES_WARN_MAX + 1`) and the most recent.
pub fn missed(
    sched: &Schedule,
    tz: &TimeZone,
    earliest: Timestamp,
    now: Timestamp,
) -> (usize, Option<Timestamp>) {
    let mut count = 0;
    let mut t = earliest;
    let mut last = None;
    while count <= MISSED_SCHEDULES_WARN_MAX {
        match sched.next_after(t, tz) {
            Some(n) if n <= now => {
                count += 1;
                last = Some(n);
                t = n;
            }
            _ => return (count, last),
        }
    }
    // Many missed: walk the most recent window that holds one.
    for w in MISSED_SEARCH_WINDOWS_SECONDS {
        let from = Timestamp::from_second(now.as_second() - w)
            .unwrap_or(earliest)
            .max(earliest);
        let mut t = from;
        let mut found = None;
        while let Some(n) = sched.next_after(t, tz).filter(|n| *n <= now) {
            found = Some(n);
            t = n;
        }
        if found.is_some() {
            return (count, found);
        }
    }
    (count, last)
}

/// What is due for a CronJob at a given time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Due {
    /// No scheduled time passed since the last one (within startingDeadlineSeconds).
    Nothing,
    /// The most recent time's Job was started already.
    Started,
    /// The most recent time is older than startingDeadlineSeconds: skipped.
    TooLate(Timestamp),
    /// concurrencyPolicy Forbid while a Job runs: skipped until it finishes.
    Forbidden(Timestamp),
    /// Start the Job for this time; under Replace, delete the running ones first.
    Run { at: Timestamp, replace: bool },
}

/// The scheduling decision and how many times were missed (capped just past
/// [`MISSED_SCHEDULES_WARN_MAX`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub due: Due,
    pub missed: usize,
}

/// Decides what is due for `cj` at `now` (kube's `mostRecentScheduleTime` and the checks
/// after it): the most recent scheduled time since the last one (or since creation), no
/// earlier than `now - startingDeadlineSeconds`. `active` is the CronJob's running Jobs;
/// `job_exists` says whether a Job of that name is known.
pub fn decide(
    cj: &CronJob,
    sched: &Schedule,
    tz: &TimeZone,
    active: &[ObjectReference],
    now: Timestamp,
    job_exists: impl Fn(&str) -> bool,
) -> Decision {
    let spec = cj.spec.clone().unwrap_or_default();
    let last = cj
        .status
        .as_ref()
        .and_then(|s| s.last_schedule_time.as_ref())
        .map(|t| t.0);
    let created = cj.metadata.creation_timestamp.as_ref().map_or(now, |t| t.0);
    let mut earliest = last.unwrap_or(created);
    if let Some(sds) = spec.starting_deadline_seconds
        && let Ok(floor) = Timestamp::from_second(now.as_second().saturating_sub(sds))
    {
        earliest = earliest.max(floor);
    }
    let (missed, most_recent) = missed(sched, tz, earliest, now);
    let Some(t) = most_recent else {
        return Decision {
            due: Due::Nothing,
            missed,
        };
    };
    let name = job_name(cj.metadata.name.as_deref().unwrap_or(""), t);
    let policy = spec.concurrency_policy.as_deref().unwrap_or("Allow");
    let due = if spec
        .starting_deadline_seconds
        .is_some_and(|sds| t.as_second().saturating_add(sds) < now.as_second())
    {
        Due::TooLate(t)
    } else if last.is_some_and(|l| l >= t)
        || active
            .iter()
            .any(|r| r.name.as_deref() == Some(name.as_str()))
        || job_exists(&name)
    {
        Due::Started
    } else if policy == "Forbid" && !active.is_empty() {
        Due::Forbidden(t)
    } else {
        Due::Run {
            at: t,
            replace: policy == "Replace" && !active.is_empty(),
        }
    };
    Decision { due, missed }
}

fn until(t: Timestamp, now: Timestamp) -> Duration {
    let ms = t
        .as_millisecond()
        .saturating_sub(now.as_millisecond())
        .max(0);
    Duration::from_millis(ms.unsigned_abs() + SCHEDULE_WAKE_DELAY_MS)
}

#[async_trait::async_trait]
impl Reconciler for CronJobController {
    fn name(&self) -> &'static str {
        "cronjob"
    }

    async fn reconcile(&self, key: &str) -> Result<Action, ReconcileError> {
        let Some(cj) = self.cronjobs.get(key) else {
            return Ok(Action::Done);
        };
        if cj.metadata.deletion_timestamp.is_some() {
            return Ok(Action::Done);
        }
        let ns = cj.metadata.namespace.clone().unwrap_or_default();
        let spec = cj.spec.clone().unwrap_or_default();
        let now = Timestamp::now();
        let uid = cj.metadata.uid.as_deref().unwrap_or("");
        let keys = self.jobs_by_owner.owned_by(uid);
        let jobs = self.jobs.get_many(keys.iter().map(AsRef::as_ref));
        let old = cj.status.clone().unwrap_or_default();
        let mut status = old.clone();
        let mut active = old.active.clone().unwrap_or_default();

        // Finished Jobs leave the active list; a Complete one moves lastSuccessfulTime.
        for j in &jobs {
            let Some(done) = finished_as(j) else { continue };
            let before = active.len();
            active.retain(|r| r.uid != j.metadata.uid);
            if active.len() != before {
                let name = j.metadata.name.clone().unwrap_or_default();
                self.event(
                    &cj,
                    "Normal",
                    "SawCompletedJob",
                    format!("Saw completed job: {name}, condition: {done}"),
                )
                .await;
            }
            if done == job::CONDITION_COMPLETE
                && let Some(t) = j.status.as_ref().and_then(|s| s.completion_time.clone())
                && status
                    .last_successful_time
                    .as_ref()
                    .is_none_or(|l| l.0 < t.0)
            {
                status.last_successful_time = Some(t);
            }
        }
        // References to Jobs that are gone (asked of the API: the cache may lag a create).
        let mut kept = Vec::with_capacity(active.len());
        for r in active {
            let cached = jobs.iter().any(|j| j.metadata.uid == r.uid);
            let name = r.name.clone().unwrap_or_default();
            if cached || self.job_exists(&ns, &name).await? {
                kept.push(r);
            }
        }
        let mut active = kept;

        self.prune(&cj, &jobs).await?;

        let mut requeue = None;
        if spec.suspend != Some(true) {
            let parsed = Schedule::parse(&spec.schedule)
                .map_err(|e| e.to_string())
                .and_then(|s| cron::zone(spec.time_zone.as_deref()).map(|z| (s, z)));
            match parsed {
                Err(msg) => {
                    tracing::warn!(cronjob = key, "{msg}");
                    self.event(&cj, "Warning", "InvalidSchedule", msg).await;
                }
                Ok((sched, tz)) => {
                    let decision = decide(&cj, &sched, &tz, &active, now, |name| {
                        jobs.iter()
                            .any(|j| j.metadata.name.as_deref() == Some(name))
                    });
                    if decision.missed > MISSED_SCHEDULES_WARN_MAX {
                        let msg = format!(
                            "too many missed start times: > {MISSED_SCHEDULES_WARN_MAX}. Set or decrease .spec.startingDeadlineSeconds or check clock skew"
                        );
                        tracing::warn!(cronjob = key, "{msg}");
                        self.event(&cj, "Warning", "TooManyMissedTimes", msg).await;
                    }
                    match decision.due {
                        Due::Nothing | Due::Started => {}
                        Due::TooLate(t) => {
                            self.event(
                                &cj,
                                "Warning",
                                "MissSchedule",
                                format!(
                                    "Missed scheduled time to start a job: {}",
                                    rfc3339_in(t, &tz)
                                ),
                            )
                            .await;
                        }
                        Due::Forbidden(_) => {
                            tracing::debug!(
                                cronjob = key,
                                "not starting a job: the previous one runs and concurrencyPolicy is Forbid"
                            );
                        }
                        Due::Run { at: t, replace } => {
                            let name = job_name(cj.metadata.name.as_deref().unwrap_or(""), t);
                            if replace {
                                for r in std::mem::take(&mut active) {
                                    let n = r.name.clone().unwrap_or_default();
                                    self.delete_job(&ns, &n).await?;
                                    self.event(
                                        &cj,
                                        "Normal",
                                        "SuccessfulDelete",
                                        format!("Deleted job {n}"),
                                    )
                                    .await;
                                }
                            }
                            let api: Api<Job> = Api::namespaced(self.client.clone(), &ns);
                            let made = match api
                                .create(&PostParams::default(), &job_for(&cj, t, &tz))
                                .await
                            {
                                Ok(j) => {
                                    self.event(
                                        &cj,
                                        "Normal",
                                        "SuccessfulCreate",
                                        format!("Created job {name}"),
                                    )
                                    .await;
                                    Some(j)
                                }
                                Err(kube::Error::Api(s)) if s.code == 409 => {
                                    api.get_opt(&name).await?
                                }
                                Err(e) => {
                                    self.event(
                                        &cj,
                                        "Warning",
                                        "FailedCreate",
                                        format!("Error creating job: {e}"),
                                    )
                                    .await;
                                    return Err(e.into());
                                }
                            };
                            if let Some(j) = made {
                                let owned = controller_of(&j).is_some_and(|r| {
                                    Some(r.uid.as_str()) == cj.metadata.uid.as_deref()
                                });
                                if owned
                                    && finished_as(&j).is_none()
                                    && !active.iter().any(|r| r.uid == j.metadata.uid)
                                {
                                    active.push(job_ref(&j));
                                }
                            }
                            status.last_schedule_time = Some(Time(t));
                        }
                    }
                    if let Some(next) = sched.next_after(now, &tz) {
                        requeue = Some(until(next, now));
                    }
                }
            }
        }

        status.active = (!active.is_empty()).then_some(active);
        if status != old {
            let api: Api<CronJob> = Api::namespaced(self.client.clone(), &ns);
            api.patch_status(
                cj.metadata.name.as_deref().unwrap_or(""),
                &PatchParams::default(),
                &Patch::Merge(status_patch(&status)),
            )
            .await?;
        }
        Ok(requeue.map_or(Action::Done, Action::RequeueAfter))
    }
}

fn status_patch(s: &CronJobStatus) -> Value {
    let mut body = serde_json::to_value(s).unwrap_or_else(|_| json!({}));
    if let Some(o) = body.as_object_mut() {
        o.entry("active").or_insert(Value::Null);
    }
    json!({ "status": body })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap_or_default()
    }

    fn sched(s: &str) -> Schedule {
        match Schedule::parse(s) {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        }
    }

    fn cronjob(spec: Value, status: Value) -> CronJob {
        let mut s = json!({"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": {}}}});
        if let (Some(o), Some(extra)) = (s.as_object_mut(), spec.as_object()) {
            for (k, v) in extra {
                o.insert(k.clone(), v.clone());
            }
        }
        match serde_json::from_value(json!({
            "metadata": {"name": "cj", "namespace": "ns", "uid": "u",
                         "creationTimestamp": "2026-01-01T09:00:00Z"},
            "spec": s, "status": status,
        })) {
            Ok(c) => c,
            Err(e) => panic!("bad test cronjob: {e}"),
        }
    }

    fn running() -> Vec<ObjectReference> {
        vec![ObjectReference {
            name: Some("cj-old".into()),
            ..ObjectReference::default()
        }]
    }

    #[test]
    fn the_most_recent_missed_time_runs_unless_started_forbidden_or_past_its_deadline() {
        let every5 = sched("*/5 * * * *");
        let tz = TimeZone::UTC;
        let now = ts("2026-01-01T10:05:30Z");
        let ten_05 = ts("2026-01-01T10:05:00Z");
        let last = json!({"lastScheduleTime": "2026-01-01T10:00:00Z"});
        let none = |_: &str| false;
        // (spec, status, active Jobs, expected)
        let cases = [
            (
                json!({}),
                last.clone(),
                vec![],
                Due::Run {
                    at: ten_05,
                    replace: false,
                },
            ),
            (
                json!({}),
                json!({"lastScheduleTime": "2026-01-01T10:05:00Z"}),
                vec![],
                Due::Nothing,
            ),
            (
                json!({"concurrencyPolicy": "Allow"}),
                last.clone(),
                running(),
                Due::Run {
                    at: ten_05,
                    replace: false,
                },
            ),
            (
                json!({"concurrencyPolicy": "Forbid"}),
                last.clone(),
                running(),
                Due::Forbidden(ten_05),
            ),
            (
                json!({"concurrencyPolicy": "Forbid"}),
                last.clone(),
                vec![],
                Due::Run {
                    at: ten_05,
                    replace: false,
                },
            ),
            (
                json!({"concurrencyPolicy": "Replace"}),
                last.clone(),
                running(),
                Due::Run {
                    at: ten_05,
                    replace: true,
                },
            ),
            // 10:05 is 30 s old: a 10 s starting deadline skips it, 60 s does not.
            (
                json!({"startingDeadlineSeconds": 10}),
                last.clone(),
                vec![],
                Due::Nothing,
            ),
            (
                json!({"startingDeadlineSeconds": 60}),
                last.clone(),
                vec![],
                Due::Run {
                    at: ten_05,
                    replace: false,
                },
            ),
            // Never scheduled: counted from creation (09:00).
            (
                json!({}),
                json!({}),
                vec![],
                Due::Run {
                    at: ten_05,
                    replace: false,
                },
            ),
        ];
        for (i, (spec, status, active, want)) in cases.into_iter().enumerate() {
            let cj = cronjob(spec, status);
            assert_eq!(
                decide(&cj, &every5, &tz, &active, now, none).due,
                want,
                "case {i}"
            );
        }
        // The Job of that time exists already (the status write was lost).
        let cj = cronjob(json!({}), last);
        let d = decide(&cj, &every5, &tz, &[], now, |n| n == job_name("cj", ten_05));
        assert_eq!(d.due, Due::Started);
        // A CronJob created a day ago and never run has missed too many times.
        let d = decide(
            &cronjob(json!({"schedule": "* * * * *"}), json!({})),
            &sched("* * * * *"),
            &tz,
            &[],
            ts("2026-01-02T10:00:00Z"),
            none,
        );
        assert_eq!(d.missed, MISSED_SCHEDULES_WARN_MAX + 1);
        assert_eq!(
            d.due,
            Due::Run {
                at: ts("2026-01-02T10:00:00Z"),
                replace: false
            }
        );
    }

    #[test]
    fn job_names_count_minutes_since_the_epoch() {
        assert_eq!(
            job_name("hello", ts("2026-01-01T00:01:00Z")),
            "hello-29453761"
        );
        assert_eq!(
            rfc3339_in(ts("2026-01-01T00:01:00Z"), &TimeZone::UTC),
            "2026-01-01T00:01:00Z"
        );
        let berlin = cron::zone(Some("Europe/Berlin")).unwrap_or(TimeZone::UTC);
        assert_eq!(
            rfc3339_in(ts("2026-01-01T00:01:00Z"), &berlin),
            "2026-01-01T01:01:00+01:00"
        );
    }

    #[test]
    fn missed_times_give_the_most_recent_and_a_capped_count() {
        let every_minute = sched("* * * * *");
        let tz = TimeZone::UTC;
        let now = ts("2026-01-01T00:10:30Z");
        assert_eq!(
            missed(&every_minute, &tz, ts("2026-01-01T00:10:00Z"), now),
            (0, None)
        );
        assert_eq!(
            missed(&every_minute, &tz, ts("2026-01-01T00:07:00Z"), now),
            (3, Some(ts("2026-01-01T00:10:00Z")))
        );
        // A day of missed minutes: the count stops past the warning limit, the most recent
        // time is still found.
        let (count, last) = missed(&every_minute, &tz, ts("2025-12-31T00:00:00Z"), now);
        assert_eq!(count, MISSED_SCHEDULES_WARN_MAX + 1);
        assert_eq!(last, Some(ts("2026-01-01T00:10:00Z")));
        let yearly = sched("@yearly");
        let (count, last) = missed(&yearly, &tz, ts("1900-01-01T00:00:00Z"), now);
        assert_eq!(count, MISSED_SCHEDULES_WARN_MAX + 1);
        assert_eq!(last, Some(ts("2026-01-01T00:00:00Z")));
    }
}
