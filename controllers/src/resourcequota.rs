//! The ResourceQuota status controller: keeps each quota's `status.hard` (its spec) and
//! `status.used` (what the namespace holds now) current, which `kubectl describe quota`
//! and `kubectl get quota` show — as kube-controller-manager's `resourcequota` controller.
//!
//! Counted per resource named in `spec.hard`:
//! - from the pods cache (pods that have not finished): `pods`, `count/pods`, `cpu` /
//!   `requests.cpu`, `memory` / `requests.memory`, `limits.cpu`, `limits.memory`,
//!   `ephemeral-storage` / `requests.ephemeral-storage`, `limits.ephemeral-storage` (a pod's
//!   request is the larger of its containers' sum and any one init container, plus its
//!   overhead, as kube's `PodRequests`);
//! - by listing the namespace: `services`, `services.loadbalancers`, `services.nodeports`,
//!   `persistentvolumeclaims`, `requests.storage`, and `count/<resource>[.<group>]` (with the
//!   short forms `configmaps`, `secrets`, `replicationcontrollers`, `resourcequotas`).
//!
//! Recomputed when the quota changes, when a pod in its namespace changes (gathered for
//! [`POD_CHANGES_BATCH_MS`]) and every [`RESYNC_S`] for what is counted by listing.
//! Admission (refusing what would exceed a quota) belongs to the API server, not here.
//! Scopes and scope selectors are not applied (every object counts).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Container, PersistentVolumeClaim, Pod, ResourceQuota, ResourceQuotaStatus, Service,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{DynamicObject, ListParams, PostParams};
use kube::{Api, Client};

use crate::discovery::Resources;
use crate::runtime::{Action, Informer, ReconcileError, Reconciler, WorkQueue, key_of};
use crate::scheduler::quantity::{parse_milli, parse_value};

/// How long pod changes in a namespace are gathered before its quotas are recomputed.
pub const POD_CHANGES_BATCH_MS: u64 = 1_000;
/// How often every quota is recomputed (for what is counted by listing).
pub const RESYNC_S: u64 = 10;
/// Objects per page when counting by listing.
pub const COUNT_PAGE_OBJECTS: u32 = 500;

pub struct ResourceQuotaController {
    client: Client,
    quotas: Arc<Informer<ResourceQuota>>,
    pods: Arc<Informer<Pod>>,
    resources: Arc<Resources>,
    pub queue: Arc<WorkQueue>,
}

impl ResourceQuotaController {
    /// Wires the handlers; the informers are started by the caller.
    pub fn new(
        client: Client,
        quotas: Arc<Informer<ResourceQuota>>,
        pods: &Arc<Informer<Pod>>,
        resources: Arc<Resources>,
    ) -> Arc<Self> {
        let queue = Arc::new(WorkQueue::default());
        {
            let q = queue.clone();
            quotas.on_change(move |_, new| {
                if let Some(n) = new {
                    q.add(&key_of(n));
                }
            });
        }
        {
            let q = queue.clone();
            let quotas = quotas.clone();
            pods.on_change(move |old, new| {
                let Some(p) = new.or(old) else { return };
                let ns = p.metadata.namespace.as_deref().unwrap_or("");
                for quota in quotas.in_namespace(ns) {
                    q.add_after(
                        &key_of(quota.as_ref()),
                        Duration::from_millis(POD_CHANGES_BATCH_MS),
                    );
                }
            });
        }
        Arc::new(Self {
            client,
            quotas,
            pods: pods.clone(),
            resources,
            queue,
        })
    }

    /// How many objects of `id` (`<plural>` or `<plural>.<group>`) the namespace holds.
    async fn count(&self, ns: &str, id: &str) -> Result<Option<i64>, ReconcileError> {
        let Some(r) = self
            .resources
            .deletable()
            .await?
            .into_iter()
            .find(|r| r.id() == id && r.namespaced)
        else {
            return Ok(None);
        };
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), ns, &r.ar);
        let mut lp = ListParams::default().limit(COUNT_PAGE_OBJECTS);
        let mut n = 0i64;
        loop {
            let page = api.list_metadata(&lp).await?;
            n += page.items.len() as i64;
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(c) => lp = lp.continue_token(&c),
                None => return Ok(Some(n)),
            }
        }
    }
}

/// The resource names a pod's usage answers, and their values (milli-units for cpu).
fn pod_usage(pods: &[Arc<Pod>]) -> BTreeMap<&'static str, i64> {
    let mut out: BTreeMap<&'static str, i64> = BTreeMap::new();
    for p in pods {
        if matches!(crate::pods::phase(p), "Succeeded" | "Failed") {
            continue;
        }
        *out.entry("pods").or_default() += 1;
        let Some(spec) = p.spec.as_ref() else {
            continue;
        };
        for (kind, names) in [
            (
                "requests",
                [
                    "requests.cpu",
                    "requests.memory",
                    "requests.ephemeral-storage",
                ],
            ),
            (
                "limits",
                ["limits.cpu", "limits.memory", "limits.ephemeral-storage"],
            ),
        ] {
            for (res, name) in ["cpu", "memory", "ephemeral-storage"]
                .into_iter()
                .zip(names)
            {
                let v = pod_amount(&spec.containers, spec.init_containers.as_deref(), kind, res)
                    + spec
                        .overhead
                        .as_ref()
                        .and_then(|o| o.get(res))
                        .map_or(0, |q| amount(res, q));
                *out.entry(name).or_default() += v;
            }
        }
    }
    out
}

fn amount(res: &str, q: &Quantity) -> i64 {
    if res == "cpu" {
        parse_milli(&q.0).unwrap_or(0)
    } else {
        parse_value(&q.0).unwrap_or(0)
    }
}

/// max(sum over containers, largest init container) of one request or limit.
fn pod_amount(containers: &[Container], init: Option<&[Container]>, kind: &str, res: &str) -> i64 {
    let of = |c: &Container| {
        let r = c.resources.as_ref();
        let m = if kind == "requests" {
            r.and_then(|r| r.requests.as_ref())
        } else {
            r.and_then(|r| r.limits.as_ref())
        };
        // A limit without a request is the request, as kube defaults it.
        let m = m.or_else(|| {
            (kind == "requests")
                .then(|| r.and_then(|r| r.limits.as_ref()))
                .flatten()
        });
        m.and_then(|m| m.get(res)).map_or(0, |q| amount(res, q))
    };
    let sum: i64 = containers.iter().map(of).sum();
    let init_max = init.unwrap_or_default().iter().map(of).max().unwrap_or(0);
    sum.max(init_max)
}

/// A quantity as kube prints sums: cpu in whole cores or millicores; bytes with the largest
/// binary suffix that divides them.
pub fn format_quantity(res: &str, v: i64) -> String {
    if res.ends_with("cpu") {
        return if v % 1000 == 0 {
            (v / 1000).to_string()
        } else {
            format!("{v}m")
        };
    }
    if v == 0 || !(res.contains("memory") || res.contains("storage")) {
        return v.to_string();
    }
    for (suffix, unit) in [
        ("Ti", 1i64 << 40),
        ("Gi", 1 << 30),
        ("Mi", 1 << 20),
        ("Ki", 1 << 10),
    ] {
        if v % unit == 0 {
            return format!("{}{suffix}", v / unit);
        }
    }
    v.to_string()
}

/// The resource to count by listing for a quota name, if it is one.
fn counted_by_listing(name: &str) -> Option<String> {
    match name {
        "configmaps" | "secrets" | "replicationcontrollers" | "resourcequotas" => {
            Some(name.to_string())
        }
        _ => name
            .strip_prefix("count/")
            .filter(|r| *r != "pods")
            .map(str::to_string),
    }
}

#[async_trait::async_trait]
impl Reconciler for ResourceQuotaController {
    fn name(&self) -> &'static str {
        "resourcequota"
    }

    async fn reconcile(&self, key: &str) -> Result<Action, ReconcileError> {
        let Some(quota) = self.quotas.get(key) else {
            return Ok(Action::Done);
        };
        let ns = quota.metadata.namespace.clone().unwrap_or_default();
        let name = quota.metadata.name.clone().unwrap_or_default();
        let hard = quota
            .spec
            .as_ref()
            .and_then(|s| s.hard.clone())
            .unwrap_or_default();
        let pods = self.pods.in_namespace(&ns);
        let usage = pod_usage(&pods);
        let needs = |names: &[&str]| hard.keys().any(|k| names.contains(&k.as_str()));
        let services = if needs(&["services", "services.loadbalancers", "services.nodeports"]) {
            Api::<Service>::namespaced(self.client.clone(), &ns)
                .list(&ListParams::default())
                .await?
                .items
        } else {
            Vec::new()
        };
        let claims = if needs(&["persistentvolumeclaims", "requests.storage"]) {
            Api::<PersistentVolumeClaim>::namespaced(self.client.clone(), &ns)
                .list(&ListParams::default())
                .await?
                .items
        } else {
            Vec::new()
        };
        let mut used = BTreeMap::new();
        for res in hard.keys() {
            let v = match res.as_str() {
                "pods" | "count/pods" => usage.get("pods").copied().unwrap_or(0),
                "cpu" | "requests.cpu" => usage.get("requests.cpu").copied().unwrap_or(0),
                "memory" | "requests.memory" => usage.get("requests.memory").copied().unwrap_or(0),
                "ephemeral-storage" | "requests.ephemeral-storage" => usage
                    .get("requests.ephemeral-storage")
                    .copied()
                    .unwrap_or(0),
                "limits.cpu" | "limits.memory" | "limits.ephemeral-storage" => {
                    usage.get(res.as_str()).copied().unwrap_or(0)
                }
                "services" | "count/services" => services.len() as i64,
                "services.loadbalancers" => services
                    .iter()
                    .filter(|s| {
                        s.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("LoadBalancer")
                    })
                    .count() as i64,
                "services.nodeports" => services
                    .iter()
                    .filter(|s| {
                        matches!(
                            s.spec.as_ref().and_then(|s| s.type_.as_deref()),
                            Some("NodePort" | "LoadBalancer")
                        )
                    })
                    .map(|s| {
                        s.spec
                            .as_ref()
                            .and_then(|s| s.ports.as_ref())
                            .map_or(0, |p| p.iter().filter(|p| p.node_port.is_some()).count())
                            as i64
                    })
                    .sum(),
                "persistentvolumeclaims" | "count/persistentvolumeclaims" => claims.len() as i64,
                "requests.storage" => claims
                    .iter()
                    .filter_map(|c| {
                        c.spec
                            .as_ref()?
                            .resources
                            .as_ref()?
                            .requests
                            .as_ref()?
                            .get("storage")
                    })
                    .map(|q| parse_value(&q.0).unwrap_or(0))
                    .sum(),
                other => match counted_by_listing(other) {
                    Some(id) => match self.count(&ns, &id).await? {
                        Some(n) => n,
                        None => continue,
                    },
                    None => continue,
                },
            };
            used.insert(res.clone(), Quantity(format_quantity(res, v)));
        }
        let status = ResourceQuotaStatus {
            hard: Some(hard),
            used: Some(used),
        };
        if quota.status.as_ref() != Some(&status) {
            let mut obj = (*quota).clone();
            obj.status = Some(status);
            Api::<ResourceQuota>::namespaced(self.client.clone(), &ns)
                .replace_status(&name, &PostParams::default(), &obj)
                .await?;
        }
        Ok(Action::RequeueAfter(Duration::from_secs(RESYNC_S)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_print_as_kube_prints_them() {
        assert_eq!(format_quantity("requests.cpu", 1500), "1500m");
        assert_eq!(format_quantity("limits.cpu", 2000), "2");
        assert_eq!(format_quantity("requests.memory", 192 << 20), "192Mi");
        assert_eq!(format_quantity("requests.memory", 1000), "1000");
        assert_eq!(format_quantity("pods", 3), "3");
    }

    #[test]
    fn a_pod_requests_its_containers_sum_or_its_largest_init_container() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {
                "initContainers": [{"name": "i", "resources": {"requests": {"cpu": "2"}}}],
                "containers": [
                    {"name": "a", "resources": {"requests": {"cpu": "500m", "memory": "64Mi"}}},
                    {"name": "b", "resources": {"limits": {"cpu": "250m", "memory": "64Mi"}}}
                ]
            }
        }))
        .unwrap_or_default();
        let u = pod_usage(&[Arc::new(pod)]);
        assert_eq!(u.get("pods"), Some(&1));
        assert_eq!(u.get("requests.cpu"), Some(&2000));
        assert_eq!(u.get("requests.memory"), Some(&(128 << 20)));
        assert_eq!(u.get("limits.memory"), Some(&(64 << 20)));
    }
}
