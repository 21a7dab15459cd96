//! The namespace controller: a namespace being deleted (`status.phase: Terminating`) is
//! emptied — every namespaced resource discovery lists, custom resources included, deleted
//! by collection — and once nothing is left, its `kubernetes` finalizer is released through
//! the `finalize` subresource, and the API server removes it. While content remains (objects
//! held by their own finalizers), the `NamespaceContentRemaining` and
//! `NamespaceFinalizersRemaining` conditions say what, as kube's controller reports them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Namespace, NamespaceCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::discovery::verbs;
use kube::{Api, Client};
use serde_json::json;

use crate::discovery::Resources;
use crate::runtime::{Action, Informer, ReconcileError, Reconciler, WorkQueue, key_of};

/// How soon a namespace whose content is still going is looked at again.
pub const NAMESPACE_RECHECK_MS: u64 = 1_000;
/// The finalizer this controller owns in `spec.finalizers`.
pub const FINALIZER: &str = "kubernetes";

pub struct NamespaceController {
    client: Client,
    resources: Arc<Resources>,
    pub namespaces: Arc<Informer<Namespace>>,
    pub queue: Arc<WorkQueue>,
}

impl NamespaceController {
    pub fn new(
        client: Client,
        resources: Arc<Resources>,
        namespaces: Arc<Informer<Namespace>>,
    ) -> Arc<Self> {
        let queue = Arc::new(WorkQueue::default());
        let q = queue.clone();
        namespaces.on_change(move |_, new| {
            if let Some(n) = new
                && n.metadata.deletion_timestamp.is_some()
            {
                q.add(&key_of(n));
            }
        });
        Arc::new(NamespaceController {
            client,
            resources,
            namespaces,
            queue,
        })
    }
}

fn condition(
    t: &str,
    status: bool,
    reason: &str,
    message: String,
    now: Timestamp,
) -> NamespaceCondition {
    NamespaceCondition {
        type_: t.into(),
        status: if status { "True" } else { "False" }.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_transition_time: Some(Time(now)),
    }
}

#[async_trait::async_trait]
impl Reconciler for NamespaceController {
    fn name(&self) -> &'static str {
        "namespace"
    }

    async fn reconcile(&self, name: &str) -> Result<Action, ReconcileError> {
        let Some(ns) = self.namespaces.get(name) else {
            return Ok(Action::Done);
        };
        if ns.metadata.deletion_timestamp.is_none() {
            return Ok(Action::Done);
        }
        let holds = ns
            .spec
            .as_ref()
            .and_then(|s| s.finalizers.as_ref())
            .is_some_and(|f| f.iter().any(|x| x == FINALIZER));
        if !holds {
            return Ok(Action::Done);
        }
        // Delete everything, then count what is left (objects held by finalizers).
        let mut remaining: BTreeMap<String, usize> = BTreeMap::new();
        let mut finalizers: BTreeMap<String, usize> = BTreeMap::new();
        for r in self.resources.deletable().await? {
            if !r.namespaced {
                continue;
            }
            let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), name, &r.ar);
            if r.supports(verbs::DELETE_COLLECTION) {
                match api
                    .delete_collection(&DeleteParams::background(), &ListParams::default())
                    .await
                {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if matches!(s.code, 404 | 405) => {}
                    Err(e) => return Err(e.into()),
                }
            } else {
                for o in api.list_metadata(&ListParams::default()).await?.items {
                    let n = o.metadata.name.unwrap_or_default();
                    match api.delete(&n, &DeleteParams::background()).await {
                        Ok(_) => {}
                        Err(kube::Error::Api(s)) if matches!(s.code, 404 | 409) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            let left = api.list_metadata(&ListParams::default()).await?.items;
            if !left.is_empty() {
                *remaining.entry(r.id()).or_default() += left.len();
                for o in &left {
                    for f in o.metadata.finalizers.iter().flatten() {
                        *finalizers.entry(f.clone()).or_default() += 1;
                    }
                }
            }
        }
        let nsapi: Api<Namespace> = Api::all(self.client.clone());
        if remaining.is_empty() {
            let mut body = (*ns).clone();
            if let Some(spec) = body.spec.as_mut() {
                spec.finalizers = Some(
                    spec.finalizers
                        .iter()
                        .flatten()
                        .filter(|f| *f != FINALIZER)
                        .cloned()
                        .collect(),
                );
            }
            match nsapi
                .replace_subresource::<Namespace>("finalize", name, &PostParams::default(), &body)
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
            return Ok(Action::Done);
        }
        let now = Timestamp::now();
        let describe = |m: &BTreeMap<String, usize>, unit: &str| {
            m.iter()
                .map(|(k, v)| format!("{k} has {v} {unit}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let conds = vec![
            condition(
                "NamespaceContentRemaining",
                true,
                "SomeResourcesRemain",
                format!(
                    "Some resources are remaining: {}",
                    describe(&remaining, "resource instances")
                ),
                now,
            ),
            condition(
                "NamespaceFinalizersRemaining",
                !finalizers.is_empty(),
                if finalizers.is_empty() {
                    "ContentHasNoFinalizers"
                } else {
                    "SomeFinalizersRemain"
                },
                if finalizers.is_empty() {
                    "All content-preserving finalizers finished".into()
                } else {
                    format!(
                        "Some content in the namespace has finalizers remaining: {}",
                        describe(&finalizers, "resource instances")
                    )
                },
                now,
            ),
        ];
        let same = ns
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|old| {
                conds.iter().all(|c| {
                    old.iter().any(|o| {
                        o.type_ == c.type_ && o.status == c.status && o.message == c.message
                    })
                })
            });
        if !same {
            nsapi
                .patch_status(
                    name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"status": {"phase": "Terminating", "conditions": conds}})),
                )
                .await?;
        }
        Ok(Action::RequeueAfter(Duration::from_millis(
            NAMESPACE_RECHECK_MS,
        )))
    }
}
