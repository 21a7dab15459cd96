//! A pod's status as Kubernetes reports it, computed from what the runtime says about its
//! sandbox and containers (pure; the worker gathers the inputs).
//!
//! Phase follows kubelet's `getPhase`: Pending while an init container has not succeeded or
//! a container has never started; Running while a container runs or will be restarted;
//! Succeeded/Failed when every container stopped for good under the restart policy.

use std::collections::HashMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Container, Pod};
use serde_json::{Value, json};

use crate::simulate::objects::time;

/// One container instance as the runtime reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    pub id: String,
    pub attempt: u32,
    pub state: State,
    pub image: String,
    pub image_id: String,
    pub created_at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    Created,
    Running {
        started_at: Timestamp,
    },
    Exited {
        exit_code: i32,
        reason: String,
        message: String,
        started_at: Option<Timestamp>,
        finished_at: Timestamp,
    },
}

impl Observed {
    pub fn exited(&self) -> Option<i32> {
        match &self.state {
            State::Exited { exit_code, .. } => Some(*exit_code),
            _ => None,
        }
    }
    pub fn running(&self) -> bool {
        matches!(self.state, State::Running { .. })
    }
}

/// Everything about one container the status needs.
#[derive(Clone, Debug, Default)]
pub struct ContainerView {
    /// The latest instance.
    pub current: Option<Observed>,
    /// The instance before it (lastState).
    pub previous: Option<Observed>,
    /// Why it is not running, when the agent holds it back (image pull, back-off, config).
    pub waiting: Option<(String, String)>,
    /// Readiness (running, started, readiness probe passing).
    pub ready: bool,
    /// Startup probe passed (or none).
    pub started: bool,
}

/// The inputs of one status computation.
pub struct Inputs<'a> {
    pub pod: &'a Pod,
    pub init: &'a HashMap<String, ContainerView>,
    pub containers: &'a HashMap<String, ContainerView>,
    pub sandbox_ready: bool,
    pub pod_ips: &'a [String],
    pub host_ip: &'a str,
    pub start_time: Timestamp,
    /// The pod is being deleted and its containers were stopped.
    pub terminated_for_deletion: bool,
}

fn restart_policy(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always")
}

/// Whether a container that exited with `code` is restarted under the pod's policy.
pub fn restarts(pod: &Pod, code: i32) -> bool {
    match restart_policy(pod) {
        "Never" => false,
        "OnFailure" => code != 0,
        _ => true,
    }
}

/// Whether an init container that exited with `code` is run again.
pub fn init_restarts(pod: &Pod, code: i32) -> bool {
    code != 0 && restart_policy(pod) != "Never"
}

fn container_id(id: &str) -> String {
    format!("containerd://{id}")
}

fn state_json(o: &Observed) -> Value {
    match &o.state {
        State::Created => json!({"waiting": {"reason": "ContainerCreating"}}),
        State::Running { started_at } => json!({"running": {"startedAt": time(*started_at)}}),
        State::Exited {
            exit_code,
            reason,
            message,
            started_at,
            finished_at,
        } => {
            let mut t = json!({
                "exitCode": exit_code,
                "reason": if reason.is_empty() { if *exit_code == 0 { "Completed" } else { "Error" } } else { reason.as_str() },
                "finishedAt": time(*finished_at),
                "containerID": container_id(&o.id),
            });
            if let Some(s) = started_at {
                t["startedAt"] = json!(time(*s));
            }
            if !message.is_empty() {
                t["message"] = json!(message);
            }
            json!({ "terminated": t })
        }
    }
}

fn container_status(pod: &Pod, c: &Container, v: &ContainerView, init: bool) -> Value {
    let image = c.image.clone().unwrap_or_default();
    let restart_count = v.current.as_ref().map_or(0, |o| o.attempt);
    let mut s = json!({
        "name": c.name,
        "image": image,
        "imageID": "",
        "ready": v.ready,
        "restartCount": restart_count,
        "started": false,
        "state": {"waiting": {"reason": "ContainerCreating"}},
        "lastState": {},
    });
    if let Some(o) = &v.current {
        s["containerID"] = json!(container_id(&o.id));
        s["imageID"] = json!(o.image_id);
        s["state"] = state_json(o);
        s["started"] = json!(o.running() && v.started);
        // An exited container that will be restarted waits; its exit moves to lastState.
        if let (Some(code), Some((reason, message))) = (o.exited(), &v.waiting) {
            let will_restart = if init {
                init_restarts(pod, code)
            } else {
                restarts(pod, code)
            };
            if will_restart {
                s["lastState"] = state_json(o);
                s["state"] = json!({"waiting": {"reason": reason, "message": message}});
            }
        } else if let Some(p) = &v.previous {
            s["lastState"] = state_json(p);
        }
    }
    if v.current.is_none()
        && let Some((reason, message)) = &v.waiting
    {
        let mut w = json!({ "reason": reason });
        if !message.is_empty() {
            w["message"] = json!(message);
        }
        s["state"] = json!({ "waiting": w });
    }
    s
}

/// `Pending`, `Running`, `Succeeded` or `Failed`.
pub fn phase(i: &Inputs<'_>) -> &'static str {
    let spec = i.pod.spec.as_ref();
    let inits = spec
        .and_then(|s| s.init_containers.as_deref())
        .unwrap_or(&[]);
    for c in inits {
        let v = i.init.get(&c.name);
        match v
            .and_then(|v| v.current.as_ref())
            .and_then(Observed::exited)
        {
            Some(0) => {}
            Some(code) if !init_restarts(i.pod, code) => return "Failed",
            _ => return "Pending",
        }
    }
    let containers = spec.map(|s| s.containers.as_slice()).unwrap_or(&[]);
    let (mut running, mut waiting, mut stopped, mut succeeded, mut failed) = (0, 0, 0, 0, 0);
    for c in containers {
        match i.containers.get(&c.name).and_then(|v| v.current.as_ref()) {
            Some(o) if o.running() => running += 1,
            Some(o) => match o.exited() {
                Some(code) => {
                    stopped += 1;
                    if code == 0 {
                        succeeded += 1;
                    } else {
                        failed += 1;
                    }
                }
                None => waiting += 1,
            },
            None => waiting += 1,
        }
    }
    if waiting > 0 {
        return "Pending";
    }
    if running > 0 {
        return "Running";
    }
    if stopped == 0 {
        return "Pending";
    }
    match restart_policy(i.pod) {
        _ if i.terminated_for_deletion => {
            if failed > 0 {
                "Failed"
            } else {
                "Succeeded"
            }
        }
        "Always" => "Running",
        "OnFailure" if failed > 0 => "Running",
        "Never" if failed > 0 => "Failed",
        _ if succeeded == stopped => "Succeeded",
        _ => "Failed",
    }
}

fn cond(kind: &str, ok: bool, now: Timestamp, prev: &Pod, reason: Option<&str>) -> Value {
    let status = if ok { "True" } else { "False" };
    // Keep the transition time while the status holds.
    let since = prev
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == kind))
        .filter(|c| c.status == status)
        .and_then(|c| c.last_transition_time.as_ref())
        .map_or_else(
            || time(now),
            |t| t.0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        );
    let mut c =
        json!({"type": kind, "status": status, "lastProbeTime": null, "lastTransitionTime": since});
    if let (false, Some(r)) = (ok, reason) {
        c["reason"] = json!(r);
    }
    c
}

/// The pod's full status.
pub fn pod_status(i: &Inputs<'_>, now: Timestamp) -> Value {
    let spec = i.pod.spec.as_ref();
    let inits = spec
        .and_then(|s| s.init_containers.as_deref())
        .unwrap_or(&[]);
    let containers = spec.map(|s| s.containers.as_slice()).unwrap_or(&[]);
    let empty = ContainerView::default();
    let init_statuses: Vec<Value> = inits
        .iter()
        .map(|c| container_status(i.pod, c, i.init.get(&c.name).unwrap_or(&empty), true))
        .collect();
    let statuses: Vec<Value> = containers
        .iter()
        .map(|c| container_status(i.pod, c, i.containers.get(&c.name).unwrap_or(&empty), false))
        .collect();
    let phase = phase(i);
    let initialized = inits.iter().all(|c| {
        i.init
            .get(&c.name)
            .and_then(|v| v.current.as_ref())
            .and_then(Observed::exited)
            == Some(0)
    });
    let all_ready = !containers.is_empty()
        && containers
            .iter()
            .all(|c| i.containers.get(&c.name).is_some_and(|v| v.ready));
    // A finished pod's containers are not ready (kubelet: PodCompleted).
    let terminal = matches!(phase, "Succeeded" | "Failed");
    let ready_reason = if terminal {
        "PodCompleted"
    } else {
        "ContainersNotReady"
    };
    let ready = all_ready && !terminal;
    let scheduled = i
        .pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled"))
        .and_then(|c| serde_json::to_value(c).ok())
        .unwrap_or_else(|| cond("PodScheduled", true, now, i.pod, None));
    let conditions = vec![
        cond(
            "PodReadyToStartContainers",
            i.sandbox_ready,
            now,
            i.pod,
            None,
        ),
        cond(
            "Initialized",
            initialized,
            now,
            i.pod,
            Some(if terminal {
                "PodCompleted"
            } else {
                "ContainersNotInitialized"
            }),
        ),
        cond("Ready", ready, now, i.pod, Some(ready_reason)),
        cond("ContainersReady", ready, now, i.pod, Some(ready_reason)),
        scheduled,
    ];
    let mut s = json!({
        "phase": phase,
        "conditions": conditions,
        "hostIP": i.host_ip,
        "hostIPs": [{"ip": i.host_ip}],
        "startTime": time(i.start_time),
        "containerStatuses": statuses,
        "qosClass": qos_class(i.pod),
    });
    if !init_statuses.is_empty() {
        s["initContainerStatuses"] = json!(init_statuses);
    }
    if let Some(ip) = i.pod_ips.first() {
        s["podIP"] = json!(ip);
        s["podIPs"] = json!(
            i.pod_ips
                .iter()
                .map(|ip| json!({"ip": ip}))
                .collect::<Vec<_>>()
        );
    }
    s
}

/// Guaranteed, Burstable or BestEffort (from requests and limits of cpu and memory).
pub fn qos_class(pod: &Pod) -> &'static str {
    let Some(spec) = pod.spec.as_ref() else {
        return "BestEffort";
    };
    let all = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    let (mut any, mut guaranteed) = (false, true);
    for c in all {
        let r = c.resources.as_ref();
        let req = r.and_then(|r| r.requests.as_ref());
        let lim = r.and_then(|r| r.limits.as_ref());
        for res in ["cpu", "memory"] {
            let q = req.and_then(|m| m.get(res));
            let l = lim.and_then(|m| m.get(res));
            if q.is_some() || l.is_some() {
                any = true;
            }
            match (q, l) {
                (Some(q), Some(l)) if q == l => {}
                (None, Some(_)) => {}
                _ => guaranteed = false,
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(policy: &str, containers: &[&str], inits: &[&str]) -> Pod {
        let c = |n: &&str| json!({"name": n, "image": "busybox"});
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "default", "uid": "u"},
            "spec": {
                "restartPolicy": policy,
                "containers": containers.iter().map(c).collect::<Vec<_>>(),
                "initContainers": inits.iter().map(c).collect::<Vec<_>>(),
            },
        }))
        .expect("pod")
    }

    fn obs(attempt: u32, state: State) -> Observed {
        Observed {
            id: format!("id{attempt}"),
            attempt,
            state,
            image: "busybox".into(),
            image_id: "sha256:1".into(),
            created_at: Timestamp::UNIX_EPOCH,
        }
    }

    fn running() -> State {
        State::Running {
            started_at: Timestamp::UNIX_EPOCH,
        }
    }

    fn exited(code: i32) -> State {
        State::Exited {
            exit_code: code,
            reason: String::new(),
            message: String::new(),
            started_at: Some(Timestamp::UNIX_EPOCH),
            finished_at: Timestamp::UNIX_EPOCH,
        }
    }

    fn view(o: Option<Observed>, ready: bool) -> ContainerView {
        ContainerView {
            current: o,
            ready,
            started: true,
            ..ContainerView::default()
        }
    }

    fn status(p: &Pod, init: &[(&str, ContainerView)], cs: &[(&str, ContainerView)]) -> Value {
        let init: HashMap<_, _> = init
            .iter()
            .map(|(n, v)| (n.to_string(), v.clone()))
            .collect();
        let cs: HashMap<_, _> = cs.iter().map(|(n, v)| (n.to_string(), v.clone())).collect();
        let i = Inputs {
            pod: p,
            init: &init,
            containers: &cs,
            sandbox_ready: true,
            pod_ips: &["10.88.0.5".to_string()],
            host_ip: "192.168.1.2",
            start_time: Timestamp::UNIX_EPOCH,
            terminated_for_deletion: false,
        };
        pod_status(&i, Timestamp::UNIX_EPOCH)
    }

    #[test]
    fn a_running_ready_container_makes_the_pod_running_and_ready() {
        let p = pod("Always", &["a"], &[]);
        let s = status(&p, &[], &[("a", view(Some(obs(0, running())), true))]);
        assert_eq!(s["phase"], "Running");
        assert_eq!(s["podIP"], "10.88.0.5");
        assert_eq!(s["containerStatuses"][0]["ready"], true);
        assert_eq!(s["containerStatuses"][0]["containerID"], "containerd://id0");
        let ready = s["conditions"]
            .as_array()
            .expect("conditions")
            .iter()
            .find(|c| c["type"] == "Ready")
            .expect("Ready")
            .clone();
        assert_eq!(ready["status"], "True");
    }

    #[test]
    fn a_pod_waits_in_pending_until_its_init_containers_succeed() {
        let p = pod("Always", &["a"], &["i1", "i2"]);
        let s = status(
            &p,
            &[
                ("i1", view(Some(obs(0, exited(0))), false)),
                ("i2", view(Some(obs(0, running())), false)),
            ],
            &[],
        );
        assert_eq!(s["phase"], "Pending");
        let init = s["conditions"]
            .as_array()
            .expect("c")
            .iter()
            .find(|c| c["type"] == "Initialized")
            .expect("I")
            .clone();
        assert_eq!(init["status"], "False");
        assert_eq!(
            s["initContainerStatuses"][0]["state"]["terminated"]["reason"],
            "Completed"
        );
    }

    #[test]
    fn a_failed_init_container_fails_a_never_restarting_pod() {
        let p = pod("Never", &["a"], &["i1"]);
        let s = status(&p, &[("i1", view(Some(obs(0, exited(3))), false))], &[]);
        assert_eq!(s["phase"], "Failed");
    }

    #[test]
    fn exited_containers_finish_the_pod_by_restart_policy() {
        let ok = [("a", view(Some(obs(0, exited(0))), false))];
        let bad = [("a", view(Some(obs(0, exited(1))), false))];
        assert_eq!(
            status(&pod("Never", &["a"], &[]), &[], &ok)["phase"],
            "Succeeded"
        );
        assert_eq!(
            status(&pod("Never", &["a"], &[]), &[], &bad)["phase"],
            "Failed"
        );
        assert_eq!(
            status(&pod("OnFailure", &["a"], &[]), &[], &ok)["phase"],
            "Succeeded"
        );
        assert_eq!(
            status(&pod("OnFailure", &["a"], &[]), &[], &bad)["phase"],
            "Running"
        );
        assert_eq!(
            status(&pod("Always", &["a"], &[]), &[], &ok)["phase"],
            "Running"
        );
    }

    #[test]
    fn a_crash_looping_container_waits_with_its_last_exit_in_last_state() {
        let p = pod("Always", &["a"], &[]);
        let mut v = view(Some(obs(3, exited(2))), false);
        v.waiting = Some((
            "CrashLoopBackOff".into(),
            "back-off 40s restarting failed container=a".into(),
        ));
        let s = status(&p, &[], &[("a", v)]);
        let c = &s["containerStatuses"][0];
        assert_eq!(c["restartCount"], 3);
        assert_eq!(c["state"]["waiting"]["reason"], "CrashLoopBackOff");
        assert_eq!(c["lastState"]["terminated"]["exitCode"], 2);
        assert_eq!(c["lastState"]["terminated"]["reason"], "Error");
        assert_eq!(s["phase"], "Running");
    }

    #[test]
    fn a_container_held_back_by_its_image_reports_why() {
        let p = pod("Always", &["a"], &[]);
        let v = ContainerView {
            waiting: Some(("ErrImagePull".into(), "no such image".into())),
            ..ContainerView::default()
        };
        let s = status(&p, &[], &[("a", v)]);
        assert_eq!(s["phase"], "Pending");
        assert_eq!(
            s["containerStatuses"][0]["state"]["waiting"]["reason"],
            "ErrImagePull"
        );
    }

    #[test]
    fn qos_class_follows_requests_and_limits() {
        let mut p = pod("Always", &["a"], &[]);
        assert_eq!(qos_class(&p), "BestEffort");
        let c = &mut p.spec.as_mut().expect("spec").containers[0];
        c.resources = serde_json::from_value(json!({"limits": {"cpu": "1", "memory": "1Gi"}})).ok();
        assert_eq!(qos_class(&p), "Guaranteed");
        let c = &mut p.spec.as_mut().expect("spec").containers[0];
        c.resources = serde_json::from_value(json!({"requests": {"cpu": "100m"}})).ok();
        assert_eq!(qos_class(&p), "Burstable");
    }
}
