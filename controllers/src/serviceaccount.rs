//! The ServiceAccount controller: every namespace that is not being deleted has a `default`
//! ServiceAccount (re-created if deleted) and, when the cluster CA is known, the
//! `kube-root-ca.crt` ConfigMap that pods use to trust the API server (kube's
//! root-ca-cert-publisher).

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

use crate::runtime::{Action, Informer, ReconcileError, Reconciler, WorkQueue, key_of};

pub const ROOT_CA_CONFIGMAP: &str = "kube-root-ca.crt";

pub struct ServiceAccountController {
    client: Client,
    namespaces: Arc<Informer<Namespace>>,
    accounts: Arc<Informer<ServiceAccount>>,
    /// The cluster CA certificate (PEM) published into every namespace.
    root_ca: Option<String>,
    pub queue: Arc<WorkQueue>,
}

impl ServiceAccountController {
    pub fn new(
        client: Client,
        namespaces: Arc<Informer<Namespace>>,
        accounts: Arc<Informer<ServiceAccount>>,
        root_ca: Option<String>,
    ) -> Arc<Self> {
        let queue = Arc::new(WorkQueue::default());
        {
            let q = queue.clone();
            namespaces.on_change(move |old, new| {
                if let (None, Some(n)) = (old, new) {
                    q.add(&key_of(n));
                }
            });
        }
        {
            let q = queue.clone();
            accounts.on_change(move |old, new| {
                if let (Some(o), None) = (old, new)
                    && o.metadata.name.as_deref() == Some("default")
                {
                    q.add(o.metadata.namespace.as_deref().unwrap_or(""));
                }
            });
        }
        Arc::new(ServiceAccountController {
            client,
            namespaces,
            accounts,
            root_ca,
            queue,
        })
    }
}

#[async_trait::async_trait]
impl Reconciler for ServiceAccountController {
    fn name(&self) -> &'static str {
        "serviceaccount"
    }

    async fn reconcile(&self, ns: &str) -> Result<Action, ReconcileError> {
        let Some(n) = self.namespaces.get(ns) else {
            return Ok(Action::Done);
        };
        if n.metadata.deletion_timestamp.is_some() {
            return Ok(Action::Done);
        }
        let ignore = |r: Result<(), kube::Error>| match r {
            // Exists already, or the namespace started terminating meanwhile.
            Err(kube::Error::Api(s)) if matches!(s.code, 403 | 404 | 409) => Ok(()),
            other => other,
        };
        if self.accounts.get(&format!("{ns}/default")).is_none() {
            let sa = ServiceAccount {
                metadata: ObjectMeta {
                    name: Some("default".into()),
                    namespace: Some(ns.to_string()),
                    ..ObjectMeta::default()
                },
                ..ServiceAccount::default()
            };
            ignore(
                Api::<ServiceAccount>::namespaced(self.client.clone(), ns)
                    .create(&PostParams::default(), &sa)
                    .await
                    .map(|_| ()),
            )?;
        }
        if let Some(ca) = &self.root_ca {
            let api = Api::<ConfigMap>::namespaced(self.client.clone(), ns);
            match api.get_opt(ROOT_CA_CONFIGMAP).await? {
                None => {
                    let cm = ConfigMap {
                        metadata: ObjectMeta {
                            name: Some(ROOT_CA_CONFIGMAP.into()),
                            namespace: Some(ns.to_string()),
                            annotations: Some(BTreeMap::from([(
                                "kubernetes.io/description".to_string(),
                                "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.".to_string(),
                            )])),
                            ..ObjectMeta::default()
                        },
                        data: Some(BTreeMap::from([("ca.crt".to_string(), ca.clone())])),
                        ..ConfigMap::default()
                    };
                    ignore(api.create(&PostParams::default(), &cm).await.map(|_| ()))?;
                }
                Some(cm) if cm.data.as_ref().and_then(|d| d.get("ca.crt")) != Some(ca) => {
                    api.patch(
                        ROOT_CA_CONFIGMAP,
                        &PatchParams::default(),
                        &Patch::Merge(json!({"data": {"ca.crt": ca}})),
                    )
                    .await?;
                }
                Some(_) => {}
            }
        }
        Ok(Action::Done)
    }
}
