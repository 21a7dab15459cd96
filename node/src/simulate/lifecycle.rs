//! A pod's simulated life as a pure state machine over time: running, exited and backing
//! off, done. `step(now)` applies every transition due by `now`; `next_deadline()` says when
//! the next one is due, so the kubelet loop needs one timer per pod and no sleeping task.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::{Container, Pod};

use super::{EXIT_CODE_ANNOTATION, RUN_SECONDS_ANNOTATION};

/// The first crash back-off; it doubles with each restart up to `CRASH_BACKOFF_MAX_S`.
const CRASH_BACKOFF_FIRST_S: u64 = 10;
/// kubelet's cap on the crash-loop back-off.
const CRASH_BACKOFF_MAX_S: u64 = 300;
/// The most transitions one `step` applies (a late timer catching up on a pod that exited,
/// backed off and restarted meanwhile); the rest wait for the next timer.
const STEP_TRANSITIONS_MAX: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

#[derive(Clone, Debug)]
pub(super) struct ContainerShape {
    pub name: String,
    pub image: String,
    /// A readinessProbe's initialDelaySeconds (zero without a probe).
    pub ready_delay: Duration,
}

/// What the simulation keeps of a pod's spec: just enough to write its status.
#[derive(Clone, Debug)]
pub(super) struct PodShape {
    pub name: String,
    pub uid: String,
    pub containers: Vec<ContainerShape>,
    pub init_containers: Vec<ContainerShape>,
    pub policy: RestartPolicy,
    /// When and how the containers exit: (run time, exit code); `None` runs forever.
    pub exit: Option<(Duration, i32)>,
}

fn container_shape(c: &Container) -> ContainerShape {
    let delay = c
        .readiness_probe
        .as_ref()
        .and_then(|p| p.initial_delay_seconds)
        .map_or(0, |s| u64::try_from(s).unwrap_or(0));
    ContainerShape {
        name: c.name.clone(),
        image: c.image.clone().unwrap_or_default(),
        ready_delay: Duration::from_secs(delay),
    }
}

impl PodShape {
    pub(super) fn of(pod: &Pod, default_run: Duration) -> Self {
        let spec = pod.spec.as_ref();
        let policy = match spec.and_then(|s| s.restart_policy.as_deref()) {
            Some("Never") => RestartPolicy::Never,
            Some("OnFailure") => RestartPolicy::OnFailure,
            _ => RestartPolicy::Always,
        };
        let name = pod.metadata.name.clone().unwrap_or_default();
        Self {
            exit: exit_plan(
                &name,
                pod.metadata.annotations.as_ref(),
                policy,
                default_run,
            ),
            name,
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            containers: spec.map_or_else(Vec::new, |s| {
                s.containers.iter().map(container_shape).collect()
            }),
            init_containers: spec
                .and_then(|s| s.init_containers.as_ref())
                .map_or_else(Vec::new, |cs| cs.iter().map(container_shape).collect()),
            policy,
        }
    }
}

/// The run time and exit code the annotations ask for (see the module docs of
/// `simulate`); invalid values are logged and the defaults apply.
pub(super) fn exit_plan(
    pod: &str,
    annotations: Option<&BTreeMap<String, String>>,
    policy: RestartPolicy,
    default_run: Duration,
) -> Option<(Duration, i32)> {
    let get = |key: &str| annotations.and_then(|a| a.get(key)).map(|v| v.trim());
    let code = get(EXIT_CODE_ANNOTATION).and_then(|v| match v.parse::<i32>() {
        Ok(c) => Some(c),
        Err(_) => {
            tracing::warn!(
                pod,
                value = v,
                "{EXIT_CODE_ANNOTATION} is not an integer; ignored"
            );
            None
        }
    });
    let run = get(RUN_SECONDS_ANNOTATION)
        .and_then(|v| {
            match v
                .parse::<f64>()
                .ok()
                .and_then(|s| Duration::try_from_secs_f64(s).ok())
            {
                Some(d) => Some(d),
                None => {
                    tracing::warn!(
                        pod,
                        value = v,
                        "{RUN_SECONDS_ANNOTATION} is not a non-negative number of seconds; ignored"
                    );
                    None
                }
            }
        })
        .unwrap_or(default_run);
    match policy {
        RestartPolicy::Always => code.map(|c| (run, c)),
        RestartPolicy::Never | RestartPolicy::OnFailure => Some((run, code.unwrap_or(0))),
    }
}

/// How long a container waits before restart number `restarts + 1`: 10 s, 20 s, 40 s…
/// capped at 300 s (kubelet's crash-loop back-off).
pub(super) fn crash_backoff(restarts: u32) -> Duration {
    let secs = CRASH_BACKOFF_FIRST_S.saturating_mul(1u64 << restarts.min(16));
    Duration::from_secs(secs.min(CRASH_BACKOFF_MAX_S))
}

pub(super) fn after(t: Timestamp, d: Duration) -> Timestamp {
    SignedDuration::try_from(d)
        .ok()
        .and_then(|d| t.checked_add(d).ok())
        .unwrap_or(t)
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Exit {
    pub code: i32,
    pub started: Timestamp,
    pub finished: Timestamp,
    /// The restart count of the run that exited (names its container ID).
    pub restart: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Life {
    /// Containers running since `since`.
    Running { since: Timestamp },
    /// Exited (`SimPod::last`), waiting to restart at `until` (CrashLoopBackOff).
    BackOff { until: Timestamp },
    /// Terminated for good: Succeeded (code 0) or Failed.
    Done(Exit),
}

#[derive(Clone, Debug)]
pub(super) struct SimPod {
    pub shape: PodShape,
    /// The pod's startTime.
    pub start: Timestamp,
    pub life: Life,
    pub restarts: u32,
    /// The last exit of a run that was restarted (lastState.terminated).
    pub last: Option<Exit>,
    /// The pod has a deletionTimestamp: its containers are stopped, the pod is to be deleted.
    pub terminating: bool,
    /// Whether the status last written said Ready (a readiness delay passing is a change).
    pub ready_reported: bool,
}

impl SimPod {
    pub(super) fn new(shape: PodShape, now: Timestamp) -> Self {
        Self::adopt(shape, now, now, 0)
    }

    /// A pod already running (the simulation restarted): its start, current run and
    /// restart count as its status says.
    pub(super) fn adopt(
        shape: PodShape,
        start: Timestamp,
        since: Timestamp,
        restarts: u32,
    ) -> Self {
        Self {
            shape,
            start,
            life: Life::Running { since },
            restarts,
            last: None,
            terminating: false,
            ready_reported: false,
        }
    }

    /// A pod that had already finished: nothing more happens to it.
    pub(super) fn finished(shape: PodShape, start: Timestamp, code: i32) -> Self {
        let exit = Exit {
            code,
            started: start,
            finished: start,
            restart: 0,
        };
        Self {
            life: Life::Done(exit),
            ..Self::new(shape, start)
        }
    }

    pub(super) fn container_ready_at(&self, c: &ContainerShape, since: Timestamp) -> Timestamp {
        after(since, c.ready_delay)
    }

    /// When a run started at `since` has every container ready.
    pub(super) fn ready_at(&self, since: Timestamp) -> Timestamp {
        self.shape
            .containers
            .iter()
            .map(|c| self.container_ready_at(c, since))
            .max()
            .unwrap_or(since)
    }

    pub(super) fn all_ready(&self, now: Timestamp) -> bool {
        matches!(self.life, Life::Running { since } if now >= self.ready_at(since))
    }

    pub(super) fn phase(&self) -> &'static str {
        match &self.life {
            Life::Done(e) if e.code == 0 => "Succeeded",
            Life::Done(_) => "Failed",
            _ => "Running",
        }
    }

    fn transition(&mut self, now: Timestamp) -> bool {
        match self.life {
            Life::Running { since } => {
                let Some((run, code)) = self.shape.exit else {
                    return false;
                };
                let end = after(since, run);
                if now < end {
                    return false;
                }
                let exit = Exit {
                    code,
                    started: since,
                    finished: end,
                    restart: self.restarts,
                };
                let restart = match self.shape.policy {
                    RestartPolicy::Never => false,
                    RestartPolicy::OnFailure => code != 0,
                    RestartPolicy::Always => true,
                };
                if restart {
                    self.life = Life::BackOff {
                        until: after(end, crash_backoff(self.restarts)),
                    };
                    self.last = Some(exit);
                } else {
                    self.life = Life::Done(exit);
                }
                true
            }
            Life::BackOff { until } if now >= until => {
                self.restarts = self.restarts.saturating_add(1);
                self.life = Life::Running { since: until };
                true
            }
            Life::BackOff { .. } | Life::Done(_) => false,
        }
    }

    /// Applies the transitions due by `now`; true if the status to report changed.
    pub(super) fn step(&mut self, now: Timestamp) -> bool {
        let mut changed = false;
        for _ in 0..STEP_TRANSITIONS_MAX {
            if !self.transition(now) {
                break;
            }
            changed = true;
        }
        changed || self.all_ready(now) != self.ready_reported
    }

    /// When `step` next has something to do.
    #[cfg(test)]
    pub(super) fn next_deadline(&self) -> Option<Timestamp> {
        self.next_deadline_after(None)
    }

    /// The earliest deadline later than `floor` (all of them without one).
    pub(super) fn next_deadline_after(&self, floor: Option<Timestamp>) -> Option<Timestamp> {
        let candidates = match &self.life {
            Life::Running { since } => [
                self.shape.exit.map(|(run, _)| after(*since, run)),
                (!self.ready_reported).then(|| self.ready_at(*since)),
            ],
            Life::BackOff { until } => [Some(*until), None],
            Life::Done(_) => [None, None],
        };
        candidates
            .into_iter()
            .flatten()
            .filter(|t| floor.is_none_or(|f| *t > f))
            .min()
    }

    /// The pod is being deleted: stop its containers (exit 0, as after SIGTERM) now.
    pub(super) fn terminate(&mut self, now: Timestamp) {
        self.terminating = true;
        match &self.life {
            Life::Running { since } => {
                self.life = Life::Done(Exit {
                    code: 0,
                    started: *since,
                    finished: now,
                    restart: self.restarts,
                });
            }
            Life::BackOff { .. } => {
                let exit = self.last.clone().unwrap_or(Exit {
                    code: 0,
                    started: now,
                    finished: now,
                    restart: self.restarts,
                });
                self.life = Life::Done(exit);
            }
            Life::Done(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a test that panics has failed; the message says where

    use super::*;
    use serde_json::json;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    fn pod(policy: &str, annotations: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "default", "uid": "u1", "annotations": annotations},
            "spec": {"restartPolicy": policy, "containers": [
                {"name": "web", "image": "nginx"},
                {"name": "slow", "image": "busybox", "readinessProbe": {"initialDelaySeconds": 5, "exec": {"command": ["true"]}}},
            ], "initContainers": [{"name": "init", "image": "busybox"}]},
        }))
        .unwrap()
    }

    fn sim(policy: &str, annotations: serde_json::Value) -> SimPod {
        SimPod::new(
            PodShape::of(&pod(policy, annotations), Duration::from_secs(1)),
            t(0),
        )
    }

    #[test]
    fn a_pod_with_restart_policy_never_and_exit_code_0_ends_succeeded() {
        let mut p = sim("Never", json!({}));
        assert_eq!(p.next_deadline(), Some(t(1)));
        assert!(p.step(t(1)));
        assert_eq!(p.phase(), "Succeeded");
        assert_eq!(p.next_deadline(), None);
    }

    #[test]
    fn a_pod_with_restart_policy_never_and_exit_code_1_ends_failed() {
        let mut p = sim(
            "Never",
            json!({"sim.logbook.dev/exit-code": "1", "sim.logbook.dev/run-seconds": "2.5"}),
        );
        assert!(!p.step(t(2)) || p.phase() == "Running");
        p.step(t(3));
        assert_eq!(p.phase(), "Failed");
        assert_eq!(
            p.life,
            Life::Done(Exit {
                code: 1,
                started: t(0),
                finished: after(t(2), Duration::from_millis(500)),
                restart: 0
            })
        );
    }

    #[test]
    fn a_pod_with_restart_policy_on_failure_crash_loops_with_doubling_back_off() {
        let mut p = sim("OnFailure", json!({"sim.logbook.dev/exit-code": "3"}));
        p.step(t(1));
        assert_eq!(p.life, Life::BackOff { until: t(11) });
        assert_eq!(p.last.as_ref().map(|e| e.code), Some(3));
        p.step(t(11));
        assert_eq!(
            (p.restarts, p.life.clone()),
            (1, Life::Running { since: t(11) })
        );
        p.step(t(12));
        assert_eq!(
            p.life,
            Life::BackOff { until: t(32) },
            "second back-off is 20 s"
        );
        // A late timer catches up on every transition due.
        p.step(t(100));
        assert_eq!(p.restarts, 3);
    }

    #[test]
    fn an_always_pod_runs_forever_unless_told_to_exit() {
        let mut p = sim("Always", json!({}));
        assert!(!p.step(t(0)), "nothing changes before the readiness delay");
        assert!(!p.all_ready(t(0)), "the probed container is not ready yet");
        assert_eq!(p.next_deadline(), Some(t(5)), "the readiness delay");
        assert!(p.step(t(5)));
        p.ready_reported = p.all_ready(t(5));
        assert_eq!(p.next_deadline(), None);
        assert!(!p.step(t(10_000)));
        let mut q = sim("Always", json!({"sim.logbook.dev/exit-code": "0"}));
        q.step(t(1));
        assert!(
            matches!(q.life, Life::BackOff { .. }),
            "Always restarts even after exit 0"
        );
    }

    #[test]
    fn crash_back_off_doubles_from_10_s_and_caps_at_300_s() {
        let got: Vec<u64> = (0..8).map(|r| crash_backoff(r).as_secs()).collect();
        assert_eq!(got, [10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(crash_backoff(u32::MAX).as_secs(), 300);
    }

    #[test]
    fn invalid_annotations_are_ignored() {
        let a: BTreeMap<String, String> = [
            (EXIT_CODE_ANNOTATION.to_string(), "x".to_string()),
            (RUN_SECONDS_ANNOTATION.to_string(), "-1".to_string()),
        ]
        .into();
        let d = Duration::from_secs(1);
        assert_eq!(
            exit_plan("p", Some(&a), RestartPolicy::Never, d),
            Some((d, 0))
        );
        assert_eq!(exit_plan("p", Some(&a), RestartPolicy::Always, d), None);
        let ok: BTreeMap<String, String> =
            [(RUN_SECONDS_ANNOTATION.to_string(), " 0.25 ".to_string())].into();
        assert_eq!(
            exit_plan("p", Some(&ok), RestartPolicy::OnFailure, d),
            Some((Duration::from_millis(250), 0))
        );
    }

    #[test]
    fn a_terminating_running_pod_reports_its_containers_terminated() {
        let mut p = sim("Always", json!({}));
        p.terminate(t(7));
        assert!(p.terminating);
        assert_eq!(
            p.life,
            Life::Done(Exit {
                code: 0,
                started: t(0),
                finished: t(7),
                restart: 0
            })
        );
    }

    #[test]
    fn the_status_of_a_running_pod_is_what_a_kubelet_posts() {
        let mut p = sim("Always", json!({}));
        p.step(t(0));
        let ip = "10.64.0.2".parse().unwrap();
        let s =
            super::super::objects::pod_status(&p, "172.16.0.10".parse().unwrap(), Some(ip), t(1));
        assert_eq!(s["phase"], "Running");
        assert_eq!(s["podIPs"], json!([{"ip": "10.64.0.2"}]));
        assert_eq!(s["hostIP"], "172.16.0.10");
        let cs = s["containerStatuses"].as_array().unwrap();
        assert_eq!(cs[0]["ready"], true);
        assert_eq!(cs[1]["ready"], false, "readiness delay not over");
        assert_eq!(
            cs[0]["state"]["running"]["startedAt"],
            "2023-11-14T22:13:20Z"
        );
        assert!(
            cs[0]["containerID"]
                .as_str()
                .unwrap()
                .starts_with("logbook-sim://")
        );
        assert_eq!(
            s["initContainerStatuses"][0]["state"]["terminated"]["reason"],
            "Completed"
        );
        let ready = s["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .unwrap();
        assert_eq!(ready["status"], "False");
        let at6 =
            super::super::objects::pod_status(&p, "172.16.0.10".parse().unwrap(), Some(ip), t(6));
        let ready = at6["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .unwrap();
        assert_eq!(
            (
                ready["status"].as_str(),
                ready["lastTransitionTime"].as_str()
            ),
            (Some("True"), Some("2023-11-14T22:13:25Z"))
        );
        let typed: k8s_openapi::api::core::v1::PodStatus = serde_json::from_value(at6).unwrap();
        assert_eq!(typed.container_statuses.unwrap().len(), 2);
    }

    #[test]
    fn a_crash_looping_container_waits_with_its_last_exit_recorded() {
        let mut p = sim("OnFailure", json!({"sim.logbook.dev/exit-code": "2"}));
        p.step(t(1));
        let s = super::super::objects::pod_status(&p, "172.16.0.10".parse().unwrap(), None, t(2));
        let c = &s["containerStatuses"][0];
        assert_eq!(c["state"]["waiting"]["reason"], "CrashLoopBackOff");
        assert_eq!(c["lastState"]["terminated"]["exitCode"], 2);
        assert_eq!(c["restartCount"], 0);
        assert_eq!(s["phase"], "Running");
        assert!(s.get("podIP").is_none());
    }
}
