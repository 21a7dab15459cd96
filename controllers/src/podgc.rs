//! Pod garbage collection, as kube-controller-manager's `pod-garbage-collector`:
//!
//! - **Terminated pods** (`Succeeded`/`Failed`) beyond [`TERMINATED_PODS_THRESHOLD`] are
//!   deleted, oldest first, so finished pods do not pile up without bound.
//! - **Orphaned pods**: bound to a node that no longer exists (checked in the cache on two
//!   passes [`ORPHAN_QUARANTINE_S`] apart and then confirmed by a live GET, so a node that is
//!   only re-registering is not mistaken for a deleted one) are marked `DisruptionTarget`
//!   (`DeletionByPodGC`) and force-deleted: no kubelet will ever finish them.
//! - **Terminating pods that were never scheduled** are force-deleted: no kubelet owns
//!   them.
//! - **Terminating pods on a node that is out of service** (Ready not True and tainted
//!   `node.kubernetes.io/out-of-service`, the operator's "this node is gone" mark) are
//!   force-deleted, so their StatefulSet can start them elsewhere.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Node, Pod, PodCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Api, Client};
use serde_json::json;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::runtime::{Informer, key_of};

/// How often pods are collected (kube's `gcCheckPeriod`).
pub const GC_PERIOD_S: u64 = 20;
/// Terminated pods kept at most (kube's `--terminated-pod-gc-threshold`, 12,500).
pub const TERMINATED_PODS_THRESHOLD: usize = 12_500;
/// How long a pod's node must be seen missing before the pod is an orphan.
pub const ORPHAN_QUARANTINE_S: u64 = 40;
/// Deletes in flight at once.
pub const DELETES_INFLIGHT_MAX: usize = 32;
/// Pods deleted per pass at most (the rest wait for the next pass).
pub const DELETES_PER_PASS_MAX: usize = 5_000;

pub const TAINT_OUT_OF_SERVICE: &str = "node.kubernetes.io/out-of-service";

pub struct PodGc {
    client: Client,
    pods: Arc<Informer<Pod>>,
    nodes: Arc<Informer<Node>>,
    /// Nodes seen missing, and since when.
    missing_since: Mutex<HashMap<String, Instant>>,
}

fn node_of(p: &Pod) -> Option<&str> {
    p.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

/// The terminated pods to delete so that at most `threshold` remain: the oldest first.
pub fn terminated_surplus(
    mut terminated: Vec<(Timestamp, String)>,
    threshold: usize,
) -> Vec<String> {
    if terminated.len() <= threshold {
        return Vec::new();
    }
    terminated.sort();
    let n = terminated.len() - threshold;
    terminated.into_iter().take(n).map(|(_, k)| k).collect()
}

impl PodGc {
    pub fn new(client: Client, pods: Arc<Informer<Pod>>, nodes: Arc<Informer<Node>>) -> Arc<Self> {
        Arc::new(Self {
            client,
            pods,
            nodes,
            missing_since: Mutex::new(HashMap::new()),
        })
    }

    /// Collects every [`GC_PERIOD_S`] until `shutdown`; call once the informers are synced.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(Duration::from_secs(GC_PERIOD_S));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.changed() => if *shutdown.borrow() { return },
                _ = tick.tick() => self.pass().await,
            }
        }
    }

    async fn pass(&self) {
        let mut terminated = Vec::new();
        let mut force: Vec<(Arc<Pod>, Option<&'static str>)> = Vec::new();
        let mut missing_now: HashMap<String, Instant> = HashMap::new();
        let mut orphans_by_node: HashMap<String, Vec<Arc<Pod>>> = HashMap::new();
        let out_of_service = |n: &Node| {
            crate::nodelifecycle::stated_health(n) != crate::nodelifecycle::Health::Ready
                && n.spec
                    .as_ref()
                    .and_then(|s| s.taints.as_ref())
                    .is_some_and(|ts| ts.iter().any(|t| t.key == TAINT_OUT_OF_SERVICE))
        };
        for p in self.pods.filter(|_| true) {
            let phase = crate::pods::phase(&p);
            if matches!(phase, "Succeeded" | "Failed") {
                let created = p
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .map_or(Timestamp::UNIX_EPOCH, |t| t.0);
                terminated.push((created, key_of(p.as_ref())));
            }
            let deleting = p.metadata.deletion_timestamp.is_some();
            match node_of(&p) {
                None if deleting => force.push((p.clone(), None)),
                None => {}
                Some(node) => match self.nodes.get(node) {
                    None => orphans_by_node
                        .entry(node.to_string())
                        .or_default()
                        .push(p.clone()),
                    Some(n) if deleting && out_of_service(&n) => {
                        force.push((p.clone(), Some("DeletionByPodGC")))
                    }
                    Some(_) => {}
                },
            }
        }
        // Orphans: their node missing for the whole quarantine and confirmed gone.
        {
            let before = self
                .missing_since
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            let nodes: Api<Node> = Api::all(self.client.clone());
            for (node, pods) in orphans_by_node {
                let since = before.get(&node).copied().unwrap_or_else(Instant::now);
                missing_now.insert(node.clone(), since);
                if since.elapsed() < Duration::from_secs(ORPHAN_QUARANTINE_S) {
                    continue;
                }
                match nodes.get_opt(&node).await {
                    Ok(None) => {
                        tracing::info!(
                            node,
                            pods = pods.len(),
                            "deleting the pods of a node that no longer exists"
                        );
                        force.extend(pods.into_iter().map(|p| (p, Some("DeletionByPodGC"))));
                    }
                    Ok(Some(_)) => {
                        missing_now.remove(&node);
                    }
                    Err(e) => tracing::debug!(node, "checking for an orphans' node failed: {e}"),
                }
            }
            *self
                .missing_since
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = missing_now;
        }
        let surplus = terminated_surplus(terminated, TERMINATED_PODS_THRESHOLD);
        let mut deletes: Vec<(Arc<Pod>, Option<&'static str>, bool)> = surplus
            .iter()
            .filter_map(|k| self.pods.get(k))
            .map(|p| (p, None, false))
            .collect();
        deletes.extend(force.into_iter().map(|(p, r)| (p, r, true)));
        deletes.truncate(DELETES_PER_PASS_MAX);
        let futs: Vec<_> = deletes
            .into_iter()
            .map(|(p, reason, force)| Box::pin(self.delete(p, reason, force)))
            .collect();
        futures::stream::iter(futs)
            .buffer_unordered(DELETES_INFLIGHT_MAX)
            .collect::<Vec<()>>()
            .await;
    }

    async fn delete(&self, p: Arc<Pod>, reason: Option<&'static str>, force: bool) {
        let ns = p.metadata.namespace.clone().unwrap_or_default();
        let name = p.metadata.name.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        if let Some(reason) = reason {
            let mut conditions = p
                .status
                .as_ref()
                .and_then(|s| s.conditions.clone())
                .unwrap_or_default();
            conditions.retain(|c| c.type_ != "DisruptionTarget");
            conditions.push(PodCondition {
                type_: "DisruptionTarget".into(),
                status: "True".into(),
                reason: Some(reason.into()),
                message: Some("PodGC: node no longer exists or is out of service".into()),
                last_transition_time: Some(Time(Timestamp::now())),
                ..Default::default()
            });
            let patch = json!({"status": {"conditions": conditions}});
            let _ = api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await;
        }
        let dp = DeleteParams {
            grace_period_seconds: force.then_some(0),
            preconditions: Some(Preconditions {
                uid: p.metadata.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(&name, &dp).await {
            Ok(_) => tracing::debug!(pod = %format!("{ns}/{name}"), "pod collected"),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => {
                tracing::warn!(pod = %format!("{ns}/{name}"), "collecting a pod failed (next pass retries): {e}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_oldest_terminated_pods_beyond_the_threshold_go() {
        let t = |s: i64| Timestamp::from_second(s).unwrap_or(Timestamp::UNIX_EPOCH);
        let pods = vec![
            (t(30), "c".to_string()),
            (t(10), "a".into()),
            (t(20), "b".into()),
        ];
        assert_eq!(terminated_surplus(pods.clone(), 1), vec!["a", "b"]);
        assert!(terminated_surplus(pods, 3).is_empty());
    }
}
