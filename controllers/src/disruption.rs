//! The disruption controller: keeps every PodDisruptionBudget's `status` true — how many
//! of its pods are healthy, how many must stay healthy, and so how many disruptions it
//! allows now — which the API's `pods/eviction` reads (and decrements) to say yes or 429.
//!
//! As kube's controller: `minAvailable` as a number counts the matching pods; a percentage
//! `minAvailable` or any `maxUnavailable` counts the replicas their controllers ask for
//! (ReplicaSet, or the Deployment owning it; StatefulSet; ReplicationController). A pod the
//! eviction API recorded in `disruptedPods` counts as gone until it is deleted or
//! [`DISRUPTED_POD_TIMEOUT_S`] passes.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, ReplicationController};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::PostParams;
use kube::{Api, Client};

use crate::runtime::{
    Action, Informer, ReconcileError, Reconciler, WorkQueue, controller_of, key_of,
};
use crate::selector::Selector;

/// How long a pod the eviction API recorded as disrupted counts as gone while it still
/// exists (kube's `DeletionTimeout`, 2 minutes).
pub const DISRUPTED_POD_TIMEOUT_S: i64 = 120;
/// How long pod changes are gathered before a budget's status is recomputed.
pub const STATUS_BATCH_MS: u64 = 200;

pub struct DisruptionController {
    client: Client,
    pdbs: Arc<Informer<PodDisruptionBudget>>,
    pods: Arc<Informer<Pod>>,
    pub queue: Arc<WorkQueue>,
}

impl DisruptionController {
    /// Wires the handlers; the informers are started by the caller.
    pub fn new(
        client: Client,
        pdbs: Arc<Informer<PodDisruptionBudget>>,
        pods: &Arc<Informer<Pod>>,
    ) -> Arc<Self> {
        let queue = Arc::new(WorkQueue::default());
        {
            let q = queue.clone();
            pdbs.on_change(move |_, new| {
                if let Some(n) = new {
                    q.add(&key_of(n));
                }
            });
        }
        {
            let q = queue.clone();
            let budgets = pdbs.clone();
            pods.on_change(move |old, new| {
                // Budgets selecting the pod before or after the change.
                for p in [old, new].into_iter().flatten() {
                    let ns = p.metadata.namespace.as_deref().unwrap_or("");
                    let labels = p.metadata.labels.clone().unwrap_or_default();
                    for b in budgets.in_namespace(ns) {
                        if selector_of(&b).is_some_and(|s| s.matches(&labels)) {
                            q.add_after(
                                &key_of(b.as_ref()),
                                Duration::from_millis(STATUS_BATCH_MS),
                            );
                        }
                    }
                }
            });
        }
        Arc::new(Self {
            client,
            pdbs,
            pods: pods.clone(),
            queue,
        })
    }

    /// The replicas the controller of `pod` asks for, by its uid (kube's finders).
    async fn scale_of(&self, pod: &Pod) -> Result<Option<(String, i32)>, ReconcileError> {
        let Some(r) = controller_of(pod) else {
            return Ok(None);
        };
        let ns = pod.metadata.namespace.as_deref().unwrap_or("");
        let c = self.client.clone();
        let found = match (r.api_version.as_str(), r.kind.as_str()) {
            ("apps/v1", "ReplicaSet") => {
                let Some(rs) = Api::<ReplicaSet>::namespaced(c.clone(), ns)
                    .get_opt(&r.name)
                    .await?
                else {
                    return Ok(None);
                };
                match controller_of(&rs) {
                    Some(d) if d.kind == "Deployment" && d.api_version == "apps/v1" => {
                        Api::<Deployment>::namespaced(c, ns)
                            .get_opt(&d.name)
                            .await?
                            .map(|d| {
                                (
                                    d.metadata.uid.clone().unwrap_or_default(),
                                    d.spec.and_then(|s| s.replicas).unwrap_or(1),
                                )
                            })
                    }
                    _ => Some((
                        rs.metadata.uid.clone().unwrap_or_default(),
                        rs.spec.and_then(|s| s.replicas).unwrap_or(1),
                    )),
                }
            }
            ("apps/v1", "StatefulSet") => Api::<StatefulSet>::namespaced(c, ns)
                .get_opt(&r.name)
                .await?
                .map(|s| {
                    (
                        s.metadata.uid.clone().unwrap_or_default(),
                        s.spec.and_then(|s| s.replicas).unwrap_or(1),
                    )
                }),
            ("v1", "ReplicationController") => Api::<ReplicationController>::namespaced(c, ns)
                .get_opt(&r.name)
                .await?
                .map(|s| {
                    (
                        s.metadata.uid.clone().unwrap_or_default(),
                        s.spec.and_then(|s| s.replicas).unwrap_or(1),
                    )
                }),
            _ => None,
        };
        Ok(found.filter(|(uid, _)| !uid.is_empty()))
    }
}

fn selector_of(b: &PodDisruptionBudget) -> Option<Selector> {
    b.spec
        .as_ref()?
        .selector
        .as_ref()
        .map(Selector::from_label_selector)
}

/// An int-or-percent of `total`, rounded up (kube's `GetScaledValueFromIntOrPercent`).
pub fn scaled_up(v: &IntOrString, total: i32) -> Option<i32> {
    match v {
        IntOrString::Int(i) => Some(*i),
        IntOrString::String(s) => {
            let pct: i64 = s.strip_suffix('%')?.parse().ok()?;
            Some(((pct * i64::from(total) + 99) / 100) as i32)
        }
    }
}

/// What a budget needs: (expected pods, desired healthy) from the spec, the matching pods'
/// count and their controllers' total scale (`None` when a percentage needs a scale that
/// could not be found).
pub fn expectations(
    min_available: Option<&IntOrString>,
    max_unavailable: Option<&IntOrString>,
    matching: i32,
    scale: Option<i32>,
) -> Option<(i32, i32)> {
    match (max_unavailable, min_available) {
        (Some(mu), _) => {
            let expected = scale?;
            let mu = scaled_up(mu, expected)?;
            Some((expected, (expected - mu).max(0)))
        }
        (None, Some(IntOrString::Int(n))) => Some((matching, *n)),
        (None, Some(pct)) => {
            let expected = scale?;
            Some((expected, scaled_up(pct, expected)?))
        }
        (None, None) => Some((matching, 0)),
    }
}

#[async_trait::async_trait]
impl Reconciler for DisruptionController {
    fn name(&self) -> &'static str {
        "disruption"
    }

    async fn reconcile(&self, key: &str) -> Result<Action, ReconcileError> {
        let Some(pdb) = self.pdbs.get(key) else {
            return Ok(Action::Done);
        };
        let ns = pdb.metadata.namespace.clone().unwrap_or_default();
        let name = pdb.metadata.name.clone().unwrap_or_default();
        let spec = pdb.spec.clone().unwrap_or_default();
        let pods: Vec<Arc<Pod>> = match selector_of(&pdb) {
            Some(sel) => self
                .pods
                .in_namespace(&ns)
                .into_iter()
                .filter(|p| sel.matches(p.metadata.labels.as_ref().unwrap_or(&BTreeMap::new())))
                .collect(),
            None => Vec::new(),
        };
        let now = Timestamp::now();
        // Disrupted pods: still there, not yet deleting, recorded less than the timeout ago.
        let old = pdb.status.clone().unwrap_or_default();
        let mut disrupted = BTreeMap::new();
        let mut next_expiry: Option<i64> = None;
        for (pod_name, at) in old.disrupted_pods.clone().unwrap_or_default() {
            let age = now.as_second() - at.0.as_second();
            let live = pods.iter().any(|p| {
                p.metadata.name.as_deref() == Some(pod_name.as_str())
                    && p.metadata.deletion_timestamp.is_none()
            });
            if live && age < DISRUPTED_POD_TIMEOUT_S {
                next_expiry = Some(next_expiry.map_or(DISRUPTED_POD_TIMEOUT_S - age, |e: i64| {
                    e.min(DISRUPTED_POD_TIMEOUT_S - age)
                }));
                disrupted.insert(pod_name, at);
            }
        }
        let healthy = pods
            .iter()
            .filter(|p| {
                p.metadata.deletion_timestamp.is_none()
                    && crate::pods::is_ready(p)
                    && !disrupted.contains_key(p.metadata.name.as_deref().unwrap_or(""))
            })
            .count() as i32;
        let needs_scale = spec.max_unavailable.is_some()
            || matches!(spec.min_available, Some(IntOrString::String(_)));
        let mut scale_error = None;
        let scale = if needs_scale {
            let mut seen = HashSet::new();
            let mut total = 0;
            for p in &pods {
                match self.scale_of(p).await {
                    Ok(Some((uid, n))) => {
                        if seen.insert(uid) {
                            total += n;
                        }
                    }
                    Ok(None) => {
                        scale_error = Some(format!(
                            "found no controller with a scale for pod {}",
                            p.metadata.name.as_deref().unwrap_or("")
                        ));
                    }
                    Err(e) => return Err(e),
                }
            }
            if scale_error.is_some() {
                None
            } else {
                Some(total)
            }
        } else {
            None
        };
        let computed = expectations(
            spec.min_available.as_ref(),
            spec.max_unavailable.as_ref(),
            pods.len() as i32,
            scale,
        );
        let (expected, desired, allowed, condition) = match computed {
            Some((expected, desired)) => {
                let allowed = (healthy - desired).max(0);
                let c = if allowed > 0 {
                    ("True", "SufficientPods", String::new())
                } else {
                    ("False", "InsufficientPods", String::new())
                };
                (expected, desired, allowed, c)
            }
            None => (
                0,
                0,
                0,
                (
                    "False",
                    "SyncFailed",
                    scale_error.unwrap_or_else(|| "invalid budget".into()),
                ),
            ),
        };
        let (cstatus, reason, message) = condition;
        let prev = old
            .conditions
            .as_ref()
            .and_then(|cs| cs.iter().find(|c| c.type_ == "DisruptionAllowed"));
        let transition = match prev {
            Some(c) if c.status == cstatus => c.last_transition_time.clone(),
            _ => Time(now),
        };
        let generation = pdb.metadata.generation;
        let status = PodDisruptionBudgetStatus {
            current_healthy: healthy,
            desired_healthy: desired,
            expected_pods: expected,
            disruptions_allowed: allowed,
            disrupted_pods: (!disrupted.is_empty()).then_some(disrupted),
            observed_generation: generation,
            conditions: Some(vec![Condition {
                type_: "DisruptionAllowed".into(),
                status: cstatus.into(),
                reason: reason.into(),
                message,
                last_transition_time: transition,
                observed_generation: generation,
            }]),
        };
        let unchanged = old.current_healthy == status.current_healthy
            && old.desired_healthy == status.desired_healthy
            && old.expected_pods == status.expected_pods
            && old.disruptions_allowed == status.disruptions_allowed
            && old.observed_generation == status.observed_generation
            && old.disrupted_pods.as_ref().map(BTreeMap::len)
                == status.disrupted_pods.as_ref().map(BTreeMap::len)
            && old
                .conditions
                .as_ref()
                .and_then(|c| c.first())
                .map(|c| (&c.status, &c.reason))
                == status
                    .conditions
                    .as_ref()
                    .and_then(|c| c.first())
                    .map(|c| (&c.status, &c.reason));
        if !unchanged {
            let api: Api<PodDisruptionBudget> = Api::namespaced(self.client.clone(), &ns);
            // A replace carrying the resourceVersion: a compare-and-set against evictions,
            // which write the same status (and a removed disruptedPods entry stays removed).
            let mut obj = (*pdb).clone();
            obj.status = Some(status);
            api.replace_status(&name, &PostParams::default(), &obj)
                .await?;
        }
        Ok(match next_expiry {
            Some(s) => Action::RequeueAfter(Duration::from_secs(s.max(1) as u64)),
            None => Action::Done,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_number_min_available_counts_the_matching_pods() {
        assert_eq!(
            expectations(Some(&IntOrString::Int(2)), None, 3, None),
            Some((3, 2))
        );
    }

    #[test]
    fn percentages_and_max_unavailable_count_the_controllers_scale_rounding_up() {
        let pct = IntOrString::String("50%".into());
        assert_eq!(expectations(Some(&pct), None, 2, Some(5)), Some((5, 3)));
        assert_eq!(
            expectations(None, Some(&IntOrString::Int(1)), 2, Some(4)),
            Some((4, 3))
        );
        assert_eq!(expectations(None, Some(&pct), 2, Some(5)), Some((5, 2)));
        assert_eq!(expectations(Some(&pct), None, 2, None), None);
    }
}
