//! The EndpointSlice controller (kube-controller-manager's `endpointslice` controller): for
//! every Service with a selector, `discovery.k8s.io/v1` EndpointSlices listing the matching
//! pods — one endpoint per pod and IP family with its ready/serving/terminating conditions —
//! at most [`ENDPOINTS_PER_SLICE_MAX`] per slice, one set of slices per address type and
//! resolved port list, owned by the Service.
//!
//! Planning ([`plan_slices`]) is a pure function from the desired endpoints and the existing
//! slices to creates, updates and deletes, minimising churn as kube's reconciler does:
//! endpoints stay in the slice that holds them, newcomers fill slices already being
//! rewritten before a new slice is made, and a slice about to be deleted is reused instead
//! of creating one.
//!
//! Slices are created with `generateName`, so a reconcile on a cache that has not yet seen
//! the last writes could create duplicates: the [`Tracker`] records every write's
//! resourceVersion and a Service is reconciled again only once its informer has caught up
//! (or [`SLICE_EXPECTATIONS_TIMEOUT_MS`] passed).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{DeleteParams, PostParams, Preconditions};
use kube::{Api, Client};

use crate::endpoints::{
    HEADLESS_LABEL, PortSpec, ServiceIndex, TRIGGER_TIME_ANNOTATION, backs_service, family_of,
    is_headless, now_rfc3339, pod_hostname, pod_ip_for, pod_ref, publishes_not_ready,
    resolve_ports, selector_of, service_families,
};
use crate::pods;
use crate::runtime::{
    Action, Informer, ReconcileError, Reconciler, WorkQueue, controller_of, key_of,
};

/// Endpoints per slice (kube's default `--max-endpoints-per-slice`).
pub const ENDPOINTS_PER_SLICE_MAX: usize = 100;
/// Slice writes in flight at once for one Service.
pub const SLICE_WRITES_INFLIGHT_MAX: usize = 16;
/// How long a Service waits for its informer to show its last slice writes before it is
/// reconciled anyway (a relist can skip the exact resourceVersion a write returned).
pub const SLICE_EXPECTATIONS_TIMEOUT_MS: u64 = 10_000;
/// Delay before re-checking a Service whose slice writes the cache has not shown yet (the
/// slice events usually queue it sooner).
pub const SLICE_CACHE_WAIT_MS: u64 = 1_000;

pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
pub const SLICE_MANAGER: &str = "endpointslice-controller.k8s.io";

/// What slices are grouped by: endpoints of one address type serving one resolved port list.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupKey {
    pub address_type: String,
    pub ports: Vec<PortSpec>,
}

/// An endpoint's identity across reconciles: its address and pod.
fn endpoint_id(e: &Endpoint) -> (String, String) {
    (
        e.addresses.first().cloned().unwrap_or_default(),
        e.target_ref
            .as_ref()
            .and_then(|r| r.uid.clone())
            .unwrap_or_default(),
    )
}

/// The endpoints a Service should publish, by group, each group sorted by address. Pods
/// being deleted stay, with `terminating` (kube publishes them for graceful draining);
/// `ready` is false for them unless `publishNotReadyAddresses`.
pub fn desired_endpoints(svc: &Service, pods: &[Arc<Pod>]) -> BTreeMap<GroupKey, Vec<Endpoint>> {
    let publish = publishes_not_ready(svc);
    let families: Vec<Option<String>> = match service_families(svc) {
        Some(f) => f.into_iter().map(Some).collect(),
        None => vec![None],
    };
    let mut out: BTreeMap<GroupKey, Vec<Endpoint>> = BTreeMap::new();
    for p in pods {
        if !backs_service(p, true) {
            continue;
        }
        let ports = resolve_ports(svc, p);
        let terminating = p.metadata.deletion_timestamp.is_some();
        let serving = publish || pods::is_ready(p);
        let ready = publish || (serving && !terminating);
        for fam in &families {
            let Some(ip) = pod_ip_for(p, fam.as_deref()) else {
                continue;
            };
            let key = GroupKey {
                address_type: family_of(ip).to_string(),
                ports: ports.clone(),
            };
            out.entry(key).or_default().push(Endpoint {
                addresses: vec![ip.to_string()],
                conditions: Some(EndpointConditions {
                    ready: Some(ready),
                    serving: Some(serving),
                    terminating: Some(terminating),
                }),
                hostname: pod_hostname(p, svc),
                node_name: p.spec.as_ref().and_then(|s| s.node_name.clone()),
                target_ref: Some(pod_ref(p)),
                ..Endpoint::default()
            });
        }
    }
    for eps in out.values_mut() {
        eps.sort_by_key(endpoint_id);
    }
    out
}

/// An existing slice as planning sees it.
#[derive(Debug, Clone)]
pub struct Existing {
    pub key: GroupKey,
    pub endpoints: Vec<Endpoint>,
    /// Labels and owner as they should be (else the slice is rewritten even if its
    /// endpoints are right).
    pub meta_ok: bool,
}

/// Writes that bring the slices to the desired state. Indexes point into `existing`.
#[derive(Debug, Default)]
pub struct Plan {
    pub creates: Vec<(GroupKey, Vec<Endpoint>)>,
    pub updates: Vec<(usize, GroupKey, Vec<Endpoint>)>,
    pub deletes: Vec<usize>,
}

/// Plans the slices for `desired` given `existing` (see the module header for the rules).
/// With nothing to publish, one empty slice of `placeholder`'s type is kept (kube's
/// placeholder slice), so a selected-but-empty Service is visible as such.
pub fn plan_slices(
    desired: &BTreeMap<GroupKey, Vec<Endpoint>>,
    existing: &[Existing],
    max: usize,
    placeholder: &GroupKey,
) -> Plan {
    let max = max.max(1);
    let mut plan = Plan::default();
    if desired.values().all(Vec::is_empty) {
        let keep = existing
            .iter()
            .position(|e| e.endpoints.is_empty() && e.key == *placeholder)
            .or_else(|| {
                existing
                    .iter()
                    .position(|e| e.key.address_type == placeholder.address_type)
            });
        match keep {
            Some(i) => {
                let e = &existing[i];
                if !e.endpoints.is_empty() || e.key != *placeholder || !e.meta_ok {
                    plan.updates.push((i, placeholder.clone(), Vec::new()));
                }
            }
            None => plan.creates.push((placeholder.clone(), Vec::new())),
        }
        plan.deletes = (0..existing.len()).filter(|i| Some(*i) != keep).collect();
        return plan;
    }
    for (gk, eps) in desired {
        let mut remaining: HashMap<(String, String), &Endpoint> =
            eps.iter().map(|e| (endpoint_id(e), e)).collect();
        let mut changed: Vec<(usize, Vec<Endpoint>)> = Vec::new();
        let mut unchanged: Vec<usize> = Vec::new();
        for (i, e) in existing.iter().enumerate().filter(|(_, e)| e.key == *gk) {
            let mut kept = Vec::new();
            for ep in &e.endpoints {
                if kept.len() >= max {
                    break;
                }
                if let Some(d) = remaining.remove(&endpoint_id(ep)) {
                    kept.push(d.clone());
                }
            }
            if kept.is_empty() {
                plan.deletes.push(i);
            } else if kept != e.endpoints || !e.meta_ok {
                changed.push((i, kept));
            } else {
                unchanged.push(i);
            }
        }
        let mut left: Vec<Endpoint> = eps
            .iter()
            .filter(|e| remaining.contains_key(&endpoint_id(e)))
            .cloned()
            .collect();
        // Newcomers go first into slices that are being rewritten anyway.
        for (_, kept) in &mut changed {
            let take = (max - kept.len().min(max)).min(left.len());
            kept.extend(left.drain(..take));
        }
        while left.len() >= max {
            plan.creates.push((gk.clone(), left.drain(..max).collect()));
        }
        if !left.is_empty() {
            // The rest fits in the fullest unchanged slice with room for all of it, else a
            // new slice: one write either way.
            let fit = unchanged
                .iter()
                .copied()
                .filter(|i| existing[*i].endpoints.len() + left.len() <= max)
                .max_by_key(|i| existing[*i].endpoints.len());
            match fit {
                Some(i) => {
                    let mut eps = existing[i].endpoints.clone();
                    eps.append(&mut left);
                    changed.push((i, eps));
                }
                None => plan.creates.push((gk.clone(), std::mem::take(&mut left))),
            }
        }
        for (i, eps) in changed {
            plan.updates.push((i, gk.clone(), eps));
        }
    }
    for (i, e) in existing.iter().enumerate() {
        if !desired.contains_key(&e.key) {
            plan.deletes.push(i);
        }
    }
    // A slice that would be deleted is rewritten instead of creating one (the address type
    // of a slice cannot change).
    let creates = std::mem::take(&mut plan.creates);
    for (gk, eps) in creates {
        match plan
            .deletes
            .iter()
            .position(|&i| existing[i].key.address_type == gk.address_type)
        {
            Some(pos) => {
                let i = plan.deletes.remove(pos);
                plan.updates.push((i, gk, eps));
            }
            None => plan.creates.push((gk, eps)),
        }
    }
    plan.deletes.sort_unstable();
    plan
}

/// Labels of a Service's slices: the Service's, the headless marker, the service name and
/// this controller's mark.
pub fn slice_labels(svc: &Service) -> BTreeMap<String, String> {
    let mut l = svc.metadata.labels.clone().unwrap_or_default();
    for k in [SERVICE_NAME_LABEL, MANAGED_BY_LABEL, HEADLESS_LABEL] {
        l.remove(k);
    }
    if is_headless(svc) {
        l.insert(HEADLESS_LABEL.into(), String::new());
    }
    l.insert(
        SERVICE_NAME_LABEL.into(),
        svc.metadata.name.clone().unwrap_or_default(),
    );
    l.insert(MANAGED_BY_LABEL.into(), SLICE_MANAGER.into());
    l
}

fn service_owner_ref(svc: &Service) -> OwnerReference {
    OwnerReference {
        api_version: "v1".into(),
        kind: "Service".into(),
        name: svc.metadata.name.clone().unwrap_or_default(),
        uid: svc.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The key of the Service a slice belongs to, when this controller manages it.
pub fn service_key_of_slice(s: &EndpointSlice) -> Option<String> {
    let l = s.metadata.labels.as_ref()?;
    if l.get(MANAGED_BY_LABEL).map(String::as_str) != Some(SLICE_MANAGER) {
        return None;
    }
    let svc = l.get(SERVICE_NAME_LABEL)?;
    Some(format!(
        "{}/{svc}",
        s.metadata.namespace.as_deref().unwrap_or("")
    ))
}

/// Slice writes not yet seen by the informer, per Service key: slice name → the
/// resourceVersion written (`None`: deleted).
#[derive(Default)]
pub struct Tracker {
    pending: Mutex<PendingWrites>,
}

/// Service key → (when last written, slice name → resourceVersion written or `None`).
type PendingWrites = HashMap<String, (Instant, HashMap<String, Option<String>>)>;

impl Tracker {
    fn lock(&self) -> std::sync::MutexGuard<'_, PendingWrites> {
        match self.pending.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn expect(&self, svc: &str, slice: &str, rv: Option<String>) {
        let mut m = self.lock();
        let e = m
            .entry(svc.to_string())
            .or_insert_with(|| (Instant::now(), HashMap::new()));
        e.0 = Instant::now();
        e.1.insert(slice.to_string(), rv);
    }

    /// The informer shows `slice` at `rv` (`None`: gone).
    fn observe(&self, svc: &str, slice: &str, rv: Option<&str>) {
        let mut m = self.lock();
        if let Some((_, slices)) = m.get_mut(svc) {
            if slices.get(slice).is_some_and(|want| want.as_deref() == rv) {
                slices.remove(slice);
            }
            if slices.is_empty() {
                m.remove(svc);
            }
        }
    }

    /// Whether the cache shows every write made for this Service (or they timed out).
    pub fn satisfied(&self, svc: &str) -> bool {
        let mut m = self.lock();
        match m.get(svc) {
            None => true,
            Some((at, _))
                if at.elapsed() > Duration::from_millis(SLICE_EXPECTATIONS_TIMEOUT_MS) =>
            {
                m.remove(svc);
                true
            }
            Some(_) => false,
        }
    }

    fn forget(&self, svc: &str) {
        self.lock().remove(svc);
    }
}

pub struct EndpointSliceController {
    client: Client,
    index: Arc<ServiceIndex>,
    services: Arc<Informer<Service>>,
    slices: Arc<Informer<EndpointSlice>>,
    /// Service key → keys of the slices this controller manages for it.
    by_service: Mutex<HashMap<String, HashSet<String>>>,
    tracker: Tracker,
    pub queue: Arc<WorkQueue>,
}

/// A slice write's outcome: the slice's name and its resourceVersion (`None`: deleted).
type WriteResult = Result<(String, Option<String>), kube::Error>;

impl EndpointSliceController {
    /// Wires the handlers; the informers are started by the caller.
    pub fn new(
        client: Client,
        index: Arc<ServiceIndex>,
        pods: &Informer<Pod>,
        services: Arc<Informer<Service>>,
        slices: Arc<Informer<EndpointSlice>>,
    ) -> Arc<Self> {
        let queue = Arc::new(WorkQueue::default());
        let me = Arc::new(EndpointSliceController {
            client,
            index: index.clone(),
            services: services.clone(),
            slices: slices.clone(),
            by_service: Mutex::new(HashMap::new()),
            tracker: Tracker::default(),
            queue: queue.clone(),
        });
        {
            let q = queue.clone();
            services.on_change(move |old, new| {
                if let Some(s) = new.or(old) {
                    q.add(&key_of(s));
                }
            });
        }
        {
            let q = queue.clone();
            pods.on_change(move |old, new| {
                for k in index.services_for_pod(old, new) {
                    q.add(&k);
                }
            });
        }
        {
            let weak = Arc::downgrade(&me);
            slices.on_change(move |old, new| {
                if let Some(me) = weak.upgrade() {
                    me.slice_changed(old, new);
                }
            });
        }
        me
    }

    fn lock_index(&self) -> std::sync::MutexGuard<'_, HashMap<String, HashSet<String>>> {
        match self.by_service.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn slice_changed(&self, old: Option<&EndpointSlice>, new: Option<&EndpointSlice>) {
        let old_svc = old.and_then(service_key_of_slice);
        let new_svc = new.and_then(service_key_of_slice);
        {
            let mut idx = self.lock_index();
            if let (Some(o), Some(svc)) = (old, &old_svc)
                && let Some(set) = idx.get_mut(svc)
            {
                set.remove(&key_of(o));
                if set.is_empty() {
                    idx.remove(svc);
                }
            }
            if let (Some(n), Some(svc)) = (new, &new_svc) {
                idx.entry(svc.clone()).or_default().insert(key_of(n));
            }
        }
        if let Some(s) = new.or(old) {
            let name = s.metadata.name.as_deref().unwrap_or("");
            let rv = new.and_then(|n| n.metadata.resource_version.as_deref());
            for svc in old_svc.iter().chain(new_svc.iter()) {
                self.tracker.observe(svc, name, rv);
            }
        }
        // Someone else's change (or our own, seen back): check the Service again.
        for svc in old_svc.into_iter().chain(new_svc) {
            self.queue.add(&svc);
        }
    }

    fn slices_of(&self, svc_key: &str) -> Vec<Arc<EndpointSlice>> {
        let keys: Vec<String> = self
            .lock_index()
            .get(svc_key)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        let mut v: Vec<Arc<EndpointSlice>> =
            keys.iter().filter_map(|k| self.slices.get(k)).collect();
        v.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        v
    }

    /// Records a successful write, unless the cache shows it already.
    fn expect(&self, svc_key: &str, ns: &str, name: &str, rv: Option<String>) {
        self.tracker.expect(svc_key, name, rv.clone());
        let cached = self.slices.get(&format!("{ns}/{name}"));
        let seen = cached
            .as_ref()
            .and_then(|s| s.metadata.resource_version.clone());
        if seen == rv {
            self.tracker.observe(svc_key, name, rv.as_deref());
        }
    }

    /// Sends the writes, at most [`SLICE_WRITES_INFLIGHT_MAX`] at once, creates first so no
    /// endpoint disappears in between; every success is tracked, the first failure returned.
    async fn write(
        &self,
        svc_key: &str,
        ns: &str,
        creates: Vec<EndpointSlice>,
        updates: Vec<EndpointSlice>,
        deletes: Vec<Arc<EndpointSlice>>,
    ) -> Result<(), ReconcileError> {
        let api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), ns);
        let mut first_err: Option<kube::Error> = None;
        let mut record = |results: Vec<WriteResult>| {
            for r in results {
                match r {
                    Ok((name, rv)) => self.expect(svc_key, ns, &name, rv),
                    Err(e) => {
                        first_err.get_or_insert(e);
                    }
                }
            }
        };
        let created: Vec<WriteResult> = futures::stream::iter(creates)
            .map(|s| {
                let api = api.clone();
                async move {
                    let s = api.create(&PostParams::default(), &s).await?;
                    Ok((
                        s.metadata.name.unwrap_or_default(),
                        s.metadata.resource_version,
                    ))
                }
            })
            .buffer_unordered(SLICE_WRITES_INFLIGHT_MAX)
            .collect()
            .await;
        record(created);
        let updated: Vec<WriteResult> = futures::stream::iter(updates)
            .map(|s| {
                let api = api.clone();
                async move {
                    let name = s.metadata.name.clone().unwrap_or_default();
                    let s = api.replace(&name, &PostParams::default(), &s).await?;
                    Ok((name, s.metadata.resource_version))
                }
            })
            .buffer_unordered(SLICE_WRITES_INFLIGHT_MAX)
            .collect()
            .await;
        record(updated);
        let deleted: Vec<WriteResult> = futures::stream::iter(deletes)
            .map(|s| {
                let api = api.clone();
                async move {
                    let name = s.metadata.name.clone().unwrap_or_default();
                    let dp = DeleteParams {
                        preconditions: Some(Preconditions {
                            uid: s.metadata.uid.clone(),
                            resource_version: None,
                        }),
                        ..DeleteParams::default()
                    };
                    match api.delete(&name, &dp).await {
                        Ok(_) => Ok((name, None)),
                        Err(kube::Error::Api(st)) if st.code == 404 => Ok((name, None)),
                        Err(e) => Err(e),
                    }
                }
            })
            .buffer_unordered(SLICE_WRITES_INFLIGHT_MAX)
            .collect()
            .await;
        record(deleted);
        match first_err {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }
}

#[async_trait::async_trait]
impl Reconciler for EndpointSliceController {
    fn name(&self) -> &'static str {
        "endpointslice"
    }

    async fn reconcile(&self, key: &str) -> Result<Action, ReconcileError> {
        if !self.tracker.satisfied(key) {
            return Ok(Action::RequeueAfter(Duration::from_millis(
                SLICE_CACHE_WAIT_MS,
            )));
        }
        let slices = self.slices_of(key);
        let ns = key.split_once('/').map_or("", |(ns, _)| ns).to_string();
        let Some(svc) = self.services.get(key) else {
            // The garbage collector would remove them too (they are owned); kube's controller
            // does not wait for it either.
            if slices.is_empty() {
                self.tracker.forget(key);
            }
            self.write(key, &ns, Vec::new(), Vec::new(), slices).await?;
            return Ok(Action::Done);
        };
        // Without a selector, slices are the user's business; ExternalName Services have no
        // endpoints (kube leaves both alone).
        let external = svc.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("ExternalName");
        if selector_of(&svc).is_none() || external {
            return Ok(Action::Done);
        }
        let uid = svc.metadata.uid.clone().unwrap_or_default();
        let (owned, foreign): (Vec<_>, Vec<_>) = slices
            .into_iter()
            .partition(|s| controller_of(s.as_ref()).is_some_and(|r| r.uid == uid));
        let labels = slice_labels(&svc);
        let owner = service_owner_ref(&svc);
        let existing: Vec<Existing> = owned
            .iter()
            .map(|s| Existing {
                key: GroupKey {
                    address_type: s.address_type.clone(),
                    ports: s
                        .ports
                        .iter()
                        .flatten()
                        .map(PortSpec::from_discovery)
                        .collect(),
                },
                endpoints: s.endpoints.clone(),
                meta_ok: s.metadata.labels.as_ref() == Some(&labels)
                    && s.metadata.owner_references.as_deref() == Some(std::slice::from_ref(&owner)),
            })
            .collect();
        let pods = self.index.pods_of(&svc);
        let desired = desired_endpoints(&svc, &pods);
        let placeholder = GroupKey {
            address_type: service_families(&svc)
                .and_then(|f| f.into_iter().next())
                .unwrap_or_else(|| "IPv4".into()),
            ports: Vec::new(),
        };
        let plan = plan_slices(&desired, &existing, ENDPOINTS_PER_SLICE_MAX, &placeholder);
        let now = now_rfc3339();
        let fill = |mut s: EndpointSlice, gk: GroupKey, eps: Vec<Endpoint>| {
            s.metadata.labels = Some(labels.clone());
            s.metadata.owner_references = Some(vec![owner.clone()]);
            s.metadata
                .annotations
                .get_or_insert_with(BTreeMap::new)
                .insert(TRIGGER_TIME_ANNOTATION.into(), now.clone());
            s.address_type = gk.address_type;
            s.ports = Some(gk.ports.iter().map(PortSpec::to_discovery).collect());
            s.endpoints = eps;
            s
        };
        let name = svc.metadata.name.clone().unwrap_or_default();
        let creates: Vec<EndpointSlice> = plan
            .creates
            .into_iter()
            .map(|(gk, eps)| {
                let blank = EndpointSlice {
                    metadata: ObjectMeta {
                        generate_name: Some(format!("{name}-")),
                        namespace: Some(ns.clone()),
                        ..ObjectMeta::default()
                    },
                    ..EndpointSlice::default()
                };
                fill(blank, gk, eps)
            })
            .collect();
        let updates: Vec<EndpointSlice> = plan
            .updates
            .into_iter()
            .map(|(i, gk, eps)| fill(owned[i].as_ref().clone(), gk, eps))
            .collect();
        let mut deletes: Vec<Arc<EndpointSlice>> =
            plan.deletes.iter().map(|&i| owned[i].clone()).collect();
        deletes.extend(foreign);
        if creates.is_empty() && updates.is_empty() && deletes.is_empty() {
            return Ok(Action::Done);
        }
        self.write(key, &ns, creates, updates, deletes).await?;
        Ok(Action::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ObjectReference;
    use serde_json::json;

    fn ep(i: usize) -> Endpoint {
        Endpoint {
            addresses: vec![format!("10.0.{}.{}", i / 250, i % 250)],
            conditions: Some(EndpointConditions {
                ready: Some(true),
                serving: Some(true),
                terminating: Some(false),
            }),
            target_ref: Some(ObjectReference {
                kind: Some("Pod".into()),
                uid: Some(format!("uid-{i}")),
                ..ObjectReference::default()
            }),
            ..Endpoint::default()
        }
    }

    fn group(port: i32) -> GroupKey {
        GroupKey {
            address_type: "IPv4".into(),
            ports: vec![PortSpec {
                name: "http".into(),
                port,
                protocol: "TCP".into(),
                app_protocol: None,
            }],
        }
    }

    fn placeholder() -> GroupKey {
        GroupKey {
            address_type: "IPv4".into(),
            ports: Vec::new(),
        }
    }

    fn desired(port: i32, range: std::ops::Range<usize>) -> BTreeMap<GroupKey, Vec<Endpoint>> {
        let mut eps: Vec<Endpoint> = range.map(ep).collect();
        eps.sort_by_key(endpoint_id);
        BTreeMap::from([(group(port), eps)])
    }

    fn existing(port: i32, range: std::ops::Range<usize>) -> Existing {
        Existing {
            key: group(port),
            endpoints: range.map(ep).collect(),
            meta_ok: true,
        }
    }

    #[test]
    fn endpoints_are_split_into_slices_of_at_most_one_hundred() {
        let plan = plan_slices(
            &desired(80, 0..250),
            &[],
            ENDPOINTS_PER_SLICE_MAX,
            &placeholder(),
        );
        let sizes: Vec<usize> = plan.creates.iter().map(|(_, e)| e.len()).collect();
        assert_eq!(sizes, [100, 100, 50]);
        assert!(plan.updates.is_empty() && plan.deletes.is_empty());
    }

    #[test]
    fn an_unchanged_set_of_slices_needs_no_writes() {
        let have = [existing(80, 0..100), existing(80, 100..150)];
        let plan = plan_slices(&desired(80, 0..150), &have, 100, &placeholder());
        assert!(
            plan.creates.is_empty() && plan.updates.is_empty() && plan.deletes.is_empty(),
            "{plan:?}"
        );
    }

    #[test]
    fn a_removed_endpoint_updates_its_slice_in_place_and_a_new_one_joins_a_slice_with_room() {
        let have = [existing(80, 0..100), existing(80, 100..150)];
        // Endpoint 5 goes; endpoint 150 arrives: it fills the slice being rewritten anyway.
        let mut want = desired(80, 0..151);
        if let Some(v) = want.get_mut(&group(80)) {
            v.retain(|e| endpoint_id(e).1 != "uid-5");
        }
        let plan = plan_slices(&want, &have, 100, &placeholder());
        assert!(
            plan.creates.is_empty() && plan.deletes.is_empty(),
            "{plan:?}"
        );
        assert_eq!(plan.updates.len(), 1);
        let (i, _, eps) = &plan.updates[0];
        assert_eq!((*i, eps.len()), (0, 100));
        assert_eq!(endpoint_id(&eps[99]).1, "uid-150");
    }

    #[test]
    fn newcomers_go_into_the_fullest_slice_that_takes_them_all() {
        let have = [existing(80, 0..30), existing(80, 30..120 - 10)];
        let plan = plan_slices(&desired(80, 0..115), &have, 100, &placeholder());
        assert!(
            plan.creates.is_empty() && plan.deletes.is_empty(),
            "{plan:?}"
        );
        assert_eq!(plan.updates.len(), 1);
        assert_eq!((plan.updates[0].0, plan.updates[0].2.len()), (1, 85));
    }

    #[test]
    fn a_slice_of_other_ports_is_reused_for_a_new_port_group_and_empty_slices_are_deleted() {
        let have = [existing(80, 0..10), existing(8080, 10..20)];
        let plan = plan_slices(&desired(9090, 0..20), &have, 100, &placeholder());
        assert!(plan.creates.is_empty(), "{plan:?}");
        assert_eq!(plan.updates.len(), 1);
        assert_eq!(
            (plan.updates[0].1.clone(), plan.updates[0].2.len()),
            (group(9090), 20)
        );
        assert_eq!(plan.deletes.len(), 1);
    }

    #[test]
    fn a_service_without_endpoints_keeps_one_empty_placeholder_slice() {
        let plan = plan_slices(&BTreeMap::new(), &[], 100, &placeholder());
        assert_eq!(plan.creates.len(), 1);
        assert!(plan.creates[0].1.is_empty());
        let have = [existing(80, 0..10), existing(80, 10..20)];
        let plan = plan_slices(&BTreeMap::new(), &have, 100, &placeholder());
        assert!(plan.creates.is_empty());
        assert_eq!(plan.updates.len(), 1);
        assert_eq!(plan.deletes.len(), 1);
    }

    fn pod(
        name: &str,
        ip: &str,
        ready: bool,
        deleting: bool,
        port_name: &str,
        port: i32,
    ) -> Arc<Pod> {
        let mut v = json!({
            "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}"), "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": [{"name": port_name, "containerPort": port}]}]},
            "status": {"phase": "Running", "podIP": ip,
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]},
        });
        if deleting {
            v["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        }
        Arc::new(serde_json::from_value(v).expect("a test pod"))
    }

    #[test]
    fn endpoint_conditions_follow_readiness_and_termination_and_named_ports_split_groups() {
        let svc: Service = serde_json::from_value(json!({"metadata": {"name": "web", "namespace": "ns"},
            "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "web"}]}}))
        .expect("a test service");
        let pods = vec![
            pod("a", "10.0.0.1", true, false, "web", 8080),
            pod("b", "10.0.0.2", false, false, "web", 8080),
            pod("c", "10.0.0.3", true, true, "web", 8080),
            pod("d", "10.0.0.4", true, false, "web", 9000),
            pod("e", "fd00::5", true, false, "web", 8080),
        ];
        let d = desired_endpoints(&svc, &pods);
        type Summary = Vec<(String, i32, Vec<(String, bool, bool, bool)>)>;
        let summary: Summary = d
            .iter()
            .map(|(gk, eps)| {
                (
                    gk.address_type.clone(),
                    gk.ports[0].port,
                    eps.iter()
                        .map(|e| {
                            let c = e.conditions.clone().unwrap_or_default();
                            (
                                e.addresses[0].clone(),
                                c.ready == Some(true),
                                c.serving == Some(true),
                                c.terminating == Some(true),
                            )
                        })
                        .collect(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (
                    "IPv4".into(),
                    8080,
                    vec![
                        ("10.0.0.1".into(), true, true, false),
                        ("10.0.0.2".into(), false, false, false),
                        ("10.0.0.3".into(), false, true, true),
                    ]
                ),
                (
                    "IPv4".into(),
                    9000,
                    vec![("10.0.0.4".into(), true, true, false)]
                ),
                (
                    "IPv6".into(),
                    8080,
                    vec![("fd00::5".into(), true, true, false)]
                ),
            ]
        );
        let labels = slice_labels(&svc);
        assert_eq!(
            labels.get(SERVICE_NAME_LABEL).map(String::as_str),
            Some("web")
        );
        assert_eq!(
            labels.get(MANAGED_BY_LABEL).map(String::as_str),
            Some(SLICE_MANAGER)
        );
    }
}
