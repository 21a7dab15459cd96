//! What controllers ask of pods: active, ready, available, and which to delete first.

use std::cmp::Ordering;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;

/// Neither finished nor being deleted (client-go's `IsPodActive`).
pub fn is_active(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none() && !matches!(phase(p), "Succeeded" | "Failed")
}

pub fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// The Ready condition's status and last transition time.
fn ready_condition(p: &Pod) -> Option<(bool, Option<Timestamp>)> {
    let c = p
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")?;
    Some((
        c.status == "True",
        c.last_transition_time.as_ref().map(|t| t.0),
    ))
}

pub fn is_ready(p: &Pod) -> bool {
    ready_condition(p).is_some_and(|(r, _)| r)
}

/// Ready for at least `min_ready_seconds` at `now`. `Err(wait)` when ready but not yet
/// available: the seconds left.
pub fn availability(p: &Pod, min_ready_seconds: i64, now: Timestamp) -> Result<(), Option<i64>> {
    match ready_condition(p) {
        Some((true, since)) => {
            if min_ready_seconds <= 0 {
                return Ok(());
            }
            let Some(since) = since else { return Ok(()) };
            let ready_for = now.as_second() - since.as_second();
            if ready_for >= min_ready_seconds {
                Ok(())
            } else {
                Err(Some(min_ready_seconds - ready_for))
            }
        }
        _ => Err(None),
    }
}

pub fn is_available(p: &Pod, min_ready_seconds: i64, now: Timestamp) -> bool {
    availability(p, min_ready_seconds, now).is_ok()
}

fn created(p: &Pod) -> i64 {
    p.metadata
        .creation_timestamp
        .as_ref()
        .map_or(0, |t| t.0.as_second())
}

fn restarts(p: &Pod) -> i32 {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map_or(0, |cs| {
            cs.iter().map(|c| c.restart_count).max().unwrap_or(0)
        })
}

/// Deletion order when scaling down (client-go's `ActivePods` ranking): unscheduled before
/// scheduled, pending before unknown before running, not ready before ready, more restarts
/// first, newer before older.
pub fn deletion_order(a: &Pod, b: &Pod) -> Ordering {
    let scheduled = |p: &Pod| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some();
    let phase_rank = |p: &Pod| match phase(p) {
        "Pending" | "" => 0,
        "Unknown" => 1,
        _ => 2,
    };
    scheduled(a)
        .cmp(&scheduled(b))
        .then(phase_rank(a).cmp(&phase_rank(b)))
        .then(is_ready(a).cmp(&is_ready(b)))
        .then(restarts(b).cmp(&restarts(a)))
        .then(created(b).cmp(&created(a)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> Pod {
        match serde_json::from_value(v) {
            Ok(p) => p,
            Err(e) => panic!("bad test pod: {e}"),
        }
    }

    #[test]
    fn unscheduled_and_not_ready_pods_are_deleted_first() {
        let running = pod(
            json!({"metadata":{"name":"a"},"spec":{"containers":[],"nodeName":"n"},
            "status":{"phase":"Running","conditions":[{"type":"Ready","status":"True"}]}}),
        );
        let pending = pod(
            json!({"metadata":{"name":"b"},"spec":{"containers":[]},"status":{"phase":"Pending"}}),
        );
        let mut v = [&running, &pending];
        v.sort_by(|a, b| deletion_order(a, b));
        assert_eq!(v[0].metadata.name.as_deref(), Some("b"));
    }

    #[test]
    fn a_pod_is_available_only_after_min_ready_seconds() {
        let p = pod(json!({"metadata":{"name":"a"},"spec":{"containers":[]},
            "status":{"conditions":[{"type":"Ready","status":"True","lastTransitionTime":"2026-01-01T00:00:00Z"}]}}));
        let t0: Timestamp = "2026-01-01T00:00:05Z".parse().unwrap_or_default();
        assert!(is_available(&p, 0, t0));
        assert_eq!(availability(&p, 10, t0), Err(Some(5)));
        let t1: Timestamp = "2026-01-01T00:00:10Z".parse().unwrap_or_default();
        assert!(is_available(&p, 10, t1));
    }
}
