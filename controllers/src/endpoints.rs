//! The Endpoints controller (kube-controller-manager's `endpoint` controller): for every
//! Service with a selector, an Endpoints object of the same name listing the matching pods'
//! addresses — ready ones in `addresses`, the others in `notReadyAddresses` — per resolved
//! port set, and its removal when the Service goes.
//!
//! Also home of what both this and the [`crate::endpointslice`] controller need: the
//! [`ServiceIndex`] (pods by label, Services by namespace, so a pod event costs
//! O(Services in its namespace) and a reconcile O(pods the selector can match)), which pods
//! back a Service, and how a Service port resolves against a pod ([`target_port`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service,
    ServicePort,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{DeleteParams, PostParams, Preconditions};
use kube::{Api, Client};

use crate::pods;
use crate::runtime::{Action, Informer, ReconcileError, Reconciler, WorkQueue, key_of};
use crate::selector::Selector;

/// Most addresses (ready plus not ready, summed over subsets) one Endpoints object lists
/// (kube's `maxCapacity`); beyond it the object is truncated and annotated
/// [`OVER_CAPACITY_ANNOTATION`].
pub const ENDPOINTS_ADDRESSES_MAX: usize = 1_000;

pub const OVER_CAPACITY_ANNOTATION: &str = "endpoints.kubernetes.io/over-capacity";
pub const TRIGGER_TIME_ANNOTATION: &str = "endpoints.kubernetes.io/last-change-trigger-time";
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
/// Marks the Endpoints this controller writes (kube ≥ 1.33 sets the same label), so an
/// Endpoints object left behind by a deleted Service is recognised as ours after a restart.
pub const ENDPOINTS_MANAGED_BY_LABEL: &str = "endpoints.kubernetes.io/managed-by";
pub const ENDPOINTS_MANAGER: &str = "endpoint-controller";

// ---------------------------------------------------------------------------------------
// Which pods back a Service.

/// A Service's selector, when it has a non-empty one (Services without one are left to
/// their users).
pub fn selector_of(svc: &Service) -> Option<&BTreeMap<String, String>> {
    svc.spec
        .as_ref()?
        .selector
        .as_ref()
        .filter(|s| !s.is_empty())
}

pub fn is_headless(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None")
}

pub fn publishes_not_ready(svc: &Service) -> bool {
    svc.spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false)
}

/// Finished pods (Succeeded, Failed) and pods without an IP never back a Service; pods being
/// deleted do only when `include_terminating` (kube's `ShouldPodBeInEndpoints`).
pub fn backs_service(p: &Pod, include_terminating: bool) -> bool {
    if matches!(pods::phase(p), "Succeeded" | "Failed") {
        return false;
    }
    if pod_ips(p).is_empty() {
        return false;
    }
    include_terminating || p.metadata.deletion_timestamp.is_none()
}

/// The pod's IPs, primary first (`status.podIPs`, else `status.podIP`).
pub fn pod_ips(p: &Pod) -> Vec<&str> {
    let Some(st) = p.status.as_ref() else {
        return Vec::new();
    };
    let mut ips: Vec<&str> = st
        .pod_ips
        .iter()
        .flatten()
        .map(|i| i.ip.as_str())
        .filter(|i| !i.is_empty())
        .collect();
    if ips.is_empty()
        && let Some(ip) = st.pod_ip.as_deref().filter(|i| !i.is_empty())
    {
        ips.push(ip);
    }
    ips
}

/// `IPv4` or `IPv6`.
pub fn family_of(ip: &str) -> &'static str {
    if ip.contains(':') { "IPv6" } else { "IPv4" }
}

/// The IP families a Service's endpoints are published in: `spec.ipFamilies`, else the
/// family of each pod's primary IP (`None`).
pub fn service_families(svc: &Service) -> Option<Vec<String>> {
    svc.spec
        .as_ref()
        .and_then(|s| s.ip_families.clone())
        .filter(|f| !f.is_empty())
}

/// The pod's IP of `family`, or its primary IP when the Service names no family.
pub fn pod_ip_for<'a>(p: &'a Pod, family: Option<&str>) -> Option<&'a str> {
    let ips = pod_ips(p);
    match family {
        None => ips.first().copied(),
        Some(f) => ips.into_iter().find(|ip| family_of(ip) == f),
    }
}

/// The hostname a pod publishes for a Service: its `spec.hostname` when its `subdomain` is
/// the Service's name (kube's rule for DNS A records of headless Services).
pub fn pod_hostname(p: &Pod, svc: &Service) -> Option<String> {
    let spec = p.spec.as_ref()?;
    let host = spec.hostname.as_ref().filter(|h| !h.is_empty())?;
    (spec.subdomain.as_deref() == svc.metadata.name.as_deref()).then(|| host.clone())
}

pub fn pod_ref(p: &Pod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        name: p.metadata.name.clone(),
        namespace: p.metadata.namespace.clone(),
        uid: p.metadata.uid.clone(),
        ..ObjectReference::default()
    }
}

/// A resolved endpoint port: the Service port's name, protocol and appProtocol with the
/// pod's port number.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortSpec {
    pub name: String,
    pub port: i32,
    pub protocol: String,
    pub app_protocol: Option<String>,
}

impl PortSpec {
    pub fn to_core(&self) -> EndpointPort {
        EndpointPort {
            name: Some(self.name.clone()).filter(|n| !n.is_empty()),
            port: self.port,
            protocol: Some(self.protocol.clone()),
            app_protocol: self.app_protocol.clone(),
        }
    }

    pub fn to_discovery(&self) -> k8s_openapi::api::discovery::v1::EndpointPort {
        k8s_openapi::api::discovery::v1::EndpointPort {
            name: Some(self.name.clone()),
            port: Some(self.port),
            protocol: Some(self.protocol.clone()),
            app_protocol: self.app_protocol.clone(),
        }
    }

    pub fn from_discovery(p: &k8s_openapi::api::discovery::v1::EndpointPort) -> PortSpec {
        PortSpec {
            name: p.name.clone().unwrap_or_default(),
            port: p.port.unwrap_or(0),
            protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
            app_protocol: p.app_protocol.clone(),
        }
    }
}

/// The port a Service port targets on this pod (kube's `FindPort`): an int targetPort as
/// is (none or 0: the Service port), a named one looked up among the pod's container ports
/// (sidecars included) with the same protocol. `None` when the pod has no port of that name.
pub fn target_port(sp: &ServicePort, p: &Pod) -> Option<i32> {
    match &sp.target_port {
        None | Some(IntOrString::Int(0)) => Some(sp.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => {
            let protocol = sp.protocol.as_deref().unwrap_or("TCP");
            let spec = p.spec.as_ref()?;
            let sidecars = spec
                .init_containers
                .iter()
                .flatten()
                .filter(|c| c.restart_policy.as_deref() == Some("Always"));
            spec.containers
                .iter()
                .chain(sidecars)
                .flat_map(|c| c.ports.iter().flatten())
                .find(|cp| {
                    cp.name.as_deref() == Some(name.as_str())
                        && cp.protocol.as_deref().unwrap_or("TCP") == protocol
                })
                .map(|cp| cp.container_port)
        }
    }
}

/// The Service's ports as this pod serves them, in the Service's order; a port the pod
/// cannot serve (a named targetPort it lacks) is left out.
pub fn resolve_ports(svc: &Service, p: &Pod) -> Vec<PortSpec> {
    svc.spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|sp| {
            Some(PortSpec {
                name: sp.name.clone().unwrap_or_default(),
                port: target_port(sp, p)?,
                protocol: sp.protocol.clone().unwrap_or_else(|| "TCP".into()),
                app_protocol: sp.app_protocol.clone(),
            })
        })
        .collect()
}

fn has_ports(svc: &Service) -> bool {
    svc.spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .is_some_and(|p| !p.is_empty())
}

/// What about a pod matters to the Services selecting it; a pod update that changes none of
/// it wakes no Service.
fn endpoint_view(p: &Pod) -> impl PartialEq + use<> {
    let spec = p.spec.as_ref();
    (
        p.metadata.labels.clone(),
        p.metadata.deletion_timestamp.is_some(),
        pod_ips(p).into_iter().map(String::from).collect::<Vec<_>>(),
        pods::phase(p).to_string(),
        pods::is_ready(p),
        spec.and_then(|s| s.node_name.clone()),
        spec.and_then(|s| s.hostname.clone()),
        spec.and_then(|s| s.subdomain.clone()),
    )
}

/// Pods by namespace and label pair, and Services by namespace: the lookups both endpoint
/// controllers make per event, without scanning the caches.
pub struct ServiceIndex {
    pods: Arc<Informer<Pod>>,
    services: Arc<Informer<Service>>,
    state: Mutex<IndexState>,
}

#[derive(Default)]
struct IndexState {
    /// `namespace \0 key \0 value` → pod keys.
    pods_by_label: HashMap<String, HashSet<String>>,
    /// namespace → Service keys.
    services_by_ns: HashMap<String, HashSet<String>>,
}

fn label_slot(ns: &str, k: &str, v: &str) -> String {
    format!("{ns}\0{k}\0{v}")
}

impl ServiceIndex {
    /// Registers the index's handlers; call before the informers start, and before the
    /// controllers register theirs (handlers run in registration order, and the controllers'
    /// reconciles read the index).
    pub fn new(pods: Arc<Informer<Pod>>, services: Arc<Informer<Service>>) -> Arc<Self> {
        let me = Arc::new(ServiceIndex {
            pods: pods.clone(),
            services: services.clone(),
            state: Mutex::new(IndexState::default()),
        });
        let idx = me.clone();
        pods.on_change(move |old, new| idx.update_pod(old, new));
        let idx = me.clone();
        services.on_change(move |old, new| idx.update_service(old, new));
        me
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, IndexState> {
        match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn update_pod(&self, old: Option<&Pod>, new: Option<&Pod>) {
        let slots = |p: &Pod| -> Vec<String> {
            let ns = p.metadata.namespace.as_deref().unwrap_or("");
            p.metadata
                .labels
                .iter()
                .flatten()
                .map(|(k, v)| label_slot(ns, k, v))
                .collect()
        };
        let old_slots = old.map(slots).unwrap_or_default();
        let new_slots = new.map(slots).unwrap_or_default();
        if old.is_some() && new.is_some() && old_slots == new_slots {
            return;
        }
        let mut s = self.lock();
        if let Some(o) = old {
            let key = key_of(o);
            for slot in &old_slots {
                if let Some(set) = s.pods_by_label.get_mut(slot) {
                    set.remove(&key);
                    if set.is_empty() {
                        s.pods_by_label.remove(slot);
                    }
                }
            }
        }
        if let Some(n) = new {
            let key = key_of(n);
            for slot in new_slots {
                s.pods_by_label.entry(slot).or_default().insert(key.clone());
            }
        }
    }

    fn update_service(&self, old: Option<&Service>, new: Option<&Service>) {
        let mut s = self.lock();
        if let (Some(o), None) = (old, new) {
            let ns = o.metadata.namespace.clone().unwrap_or_default();
            if let Some(set) = s.services_by_ns.get_mut(&ns) {
                set.remove(&key_of(o));
                if set.is_empty() {
                    s.services_by_ns.remove(&ns);
                }
            }
        }
        if let Some(n) = new {
            let ns = n.metadata.namespace.clone().unwrap_or_default();
            s.services_by_ns.entry(ns).or_default().insert(key_of(n));
        }
    }

    /// The cached pods in the Service's namespace its selector matches (none without a
    /// selector). Walks only the pods carrying the selector's rarest label pair.
    pub fn pods_of(&self, svc: &Service) -> Vec<Arc<Pod>> {
        let Some(sel) = selector_of(svc) else {
            return Vec::new();
        };
        let ns = svc.metadata.namespace.as_deref().unwrap_or("");
        let keys: Vec<String> = {
            let s = self.lock();
            let mut smallest: Option<&HashSet<String>> = None;
            for (k, v) in sel {
                match s.pods_by_label.get(&label_slot(ns, k, v)) {
                    None => return Vec::new(),
                    Some(set) if smallest.is_none_or(|m| set.len() < m.len()) => {
                        smallest = Some(set);
                    }
                    Some(_) => {}
                }
            }
            smallest
                .map(|s| s.iter().cloned().collect())
                .unwrap_or_default()
        };
        let sel = Selector::from_labels(sel);
        keys.iter()
            .filter_map(|k| self.pods.get(k))
            .filter(|p| sel.matches(p.metadata.labels.as_ref().unwrap_or(&BTreeMap::new())))
            .collect()
    }

    /// Keys of the Services a pod change concerns: those in its namespace whose selector
    /// matches its old or new labels — none when nothing a Service publishes changed.
    pub fn services_for_pod(&self, old: Option<&Pod>, new: Option<&Pod>) -> Vec<String> {
        if let (Some(o), Some(n)) = (old, new)
            && endpoint_view(o) == endpoint_view(n)
        {
            return Vec::new();
        }
        let Some(p) = new.or(old) else {
            return Vec::new();
        };
        let ns = p.metadata.namespace.as_deref().unwrap_or("");
        let keys: Vec<String> = {
            let s = self.lock();
            s.services_by_ns
                .get(ns)
                .map(|set| set.iter().cloned().collect())
                .unwrap_or_default()
        };
        let ol = old.and_then(|p| p.metadata.labels.as_ref());
        let nl = new.and_then(|p| p.metadata.labels.as_ref());
        keys.into_iter()
            .filter(|k| {
                self.services.get(k).is_some_and(|svc| {
                    selector_of(&svc).is_some_and(|sel| {
                        let sel = Selector::from_labels(sel);
                        ol.is_some_and(|l| sel.matches(l)) || nl.is_some_and(|l| sel.matches(l))
                    })
                })
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------
// The Endpoints object, as pure functions.

/// One pod's contribution: its address, whether it is ready, and the ports it serves
/// (`None`: a headless Service without ports, whose addresses carry no port).
type AddressEntry = (EndpointAddress, bool, Vec<Option<PortSpec>>);
/// An address's identity in a subset: its IP and pod uid.
type AddressKey = (String, String);
/// The addresses serving a port, each with whether it is ready.
type AddressSet = Vec<(AddressKey, bool)>;

/// The subsets of a Service's Endpoints from the pods its selector matches.
pub fn endpoint_subsets(svc: &Service, pods: &[Arc<Pod>]) -> Vec<EndpointSubset> {
    let publish = publishes_not_ready(svc);
    let family = service_families(svc).and_then(|f| f.into_iter().next());
    let headless = is_headless(svc);
    let ports_defined = has_ports(svc);
    let mut entries: Vec<AddressEntry> = Vec::new();
    for p in pods {
        if !backs_service(p, publish) {
            continue;
        }
        let Some(ip) = pod_ip_for(p, family.as_deref()) else {
            continue;
        };
        let addr = EndpointAddress {
            ip: ip.to_string(),
            hostname: pod_hostname(p, svc),
            node_name: p.spec.as_ref().and_then(|s| s.node_name.clone()),
            target_ref: Some(pod_ref(p)),
        };
        let ready = publish || pods::is_ready(p);
        let ports: Vec<Option<PortSpec>> = if ports_defined {
            resolve_ports(svc, p).into_iter().map(Some).collect()
        } else if headless {
            vec![None]
        } else {
            Vec::new()
        };
        if !ports.is_empty() {
            entries.push((addr, ready, ports));
        }
    }
    repack(entries)
}

/// kube's `RepackSubsets`: each port maps to the addresses serving it, and ports served by
/// exactly the same addresses share a subset. An address ready anywhere is ready. Addresses
/// sorted by IP, ports by name and number, subsets by their address sets.
fn repack(entries: Vec<AddressEntry>) -> Vec<EndpointSubset> {
    let addr_key = |a: &EndpointAddress| {
        let uid = a
            .target_ref
            .as_ref()
            .and_then(|r| r.uid.clone())
            .unwrap_or_default();
        (a.ip.clone(), uid)
    };
    let mut addrs: HashMap<(String, String), EndpointAddress> = HashMap::new();
    let mut by_port: BTreeMap<Option<PortSpec>, BTreeMap<(String, String), bool>> = BTreeMap::new();
    for (addr, ready, ports) in entries {
        let k = addr_key(&addr);
        for port in ports {
            let r = by_port
                .entry(port)
                .or_default()
                .entry(k.clone())
                .or_insert(ready);
            *r |= ready;
        }
        addrs.entry(k).or_insert(addr);
    }
    let mut by_addrs: BTreeMap<AddressSet, Vec<Option<PortSpec>>> = BTreeMap::new();
    for (port, set) in by_port {
        by_addrs
            .entry(set.into_iter().collect())
            .or_default()
            .push(port);
    }
    by_addrs
        .into_iter()
        .map(|(set, ports)| {
            let (mut ready, mut not_ready) = (Vec::new(), Vec::new());
            for (k, r) in set {
                if let Some(a) = addrs.get(&k) {
                    if r {
                        ready.push(a.clone());
                    } else {
                        not_ready.push(a.clone());
                    }
                }
            }
            let ports: Vec<EndpointPort> = ports.iter().flatten().map(PortSpec::to_core).collect();
            EndpointSubset {
                addresses: Some(ready).filter(|v| !v.is_empty()),
                not_ready_addresses: Some(not_ready).filter(|v| !v.is_empty()),
                ports: Some(ports).filter(|v| !v.is_empty()),
            }
        })
        .collect()
}

/// Cuts the subsets to `max` addresses (kube's `truncateEndpoints`): ready addresses are
/// kept before not-ready ones, and each subset keeps its share of what is cut, rounded up.
/// Returns whether anything was cut.
pub fn truncate_subsets(subsets: &mut [EndpointSubset], max: usize) -> bool {
    let count = |v: &Option<Vec<EndpointAddress>>| v.as_ref().map_or(0, Vec::len);
    let ready: usize = subsets.iter().map(|s| count(&s.addresses)).sum();
    let not_ready: usize = subsets.iter().map(|s| count(&s.not_ready_addresses)).sum();
    if ready + not_ready <= max {
        return false;
    }
    let truncate_ready = ready > max;
    let (room, total) = if truncate_ready {
        (max, ready)
    } else {
        (max - ready, not_ready)
    };
    let mut left = room;
    for s in subsets.iter_mut() {
        let list = if truncate_ready {
            s.not_ready_addresses = None;
            &mut s.addresses
        } else {
            &mut s.not_ready_addresses
        };
        let n = count(list);
        // ceil(n / total * room) in integers.
        let keep = (n * room).div_ceil(total.max(1)).min(left);
        if let Some(v) = list.as_mut() {
            v.truncate(keep);
        }
        if list.as_ref().is_some_and(Vec::is_empty) {
            *list = None;
        }
        left -= keep;
    }
    true
}

/// Labels of a Service's Endpoints: the Service's, the headless marker when it is headless,
/// and this controller's mark.
pub fn endpoints_labels(svc: &Service) -> BTreeMap<String, String> {
    let mut l = svc.metadata.labels.clone().unwrap_or_default();
    l.remove(HEADLESS_LABEL);
    if is_headless(svc) {
        l.insert(HEADLESS_LABEL.into(), String::new());
    }
    l.insert(ENDPOINTS_MANAGED_BY_LABEL.into(), ENDPOINTS_MANAGER.into());
    l
}

/// Subsets with empty lists as absent, for comparing what was written with what is stored.
fn normalized(subsets: Option<&Vec<EndpointSubset>>) -> Vec<EndpointSubset> {
    let none_if_empty = |v: &Option<Vec<EndpointAddress>>| v.clone().filter(|v| !v.is_empty());
    subsets
        .into_iter()
        .flatten()
        .map(|s| EndpointSubset {
            addresses: none_if_empty(&s.addresses),
            not_ready_addresses: none_if_empty(&s.not_ready_addresses),
            ports: s.ports.clone().filter(|v| !v.is_empty()),
        })
        .collect()
}

/// Now, to the second, as kube writes trigger times.
pub fn now_rfc3339() -> String {
    Timestamp::from_second(Timestamp::now().as_second())
        .unwrap_or_else(|_| Timestamp::now())
        .to_string()
}

// ---------------------------------------------------------------------------------------
// The controller.

pub struct EndpointsController {
    client: Client,
    index: Arc<ServiceIndex>,
    services: Arc<Informer<Service>>,
    endpoints: Arc<Informer<Endpoints>>,
    pub queue: Arc<WorkQueue>,
    /// Services whose deletion was seen and not yet handled: their Endpoints go even if a
    /// user wrote them (kube deletes a deleted Service's Endpoints whoever wrote them).
    deleted: Mutex<HashSet<String>>,
}

impl EndpointsController {
    /// Wires the handlers; the informers are started by the caller.
    pub fn new(
        client: Client,
        index: Arc<ServiceIndex>,
        pods: &Informer<Pod>,
        services: Arc<Informer<Service>>,
        endpoints: Arc<Informer<Endpoints>>,
    ) -> Arc<Self> {
        let queue = Arc::new(WorkQueue::default());
        let me = Arc::new(EndpointsController {
            client,
            index: index.clone(),
            services: services.clone(),
            endpoints: endpoints.clone(),
            queue: queue.clone(),
            deleted: Mutex::new(HashSet::new()),
        });
        {
            let weak = Arc::downgrade(&me);
            services.on_change(move |old, new| {
                let Some(me) = weak.upgrade() else { return };
                if let (Some(o), None) = (old, new) {
                    me.lock_deleted().insert(key_of(o));
                }
                if let Some(s) = new.or(old) {
                    me.queue.add(&key_of(s));
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
            // Someone else changed or deleted an Endpoints object: check it against its Service.
            let q = queue.clone();
            endpoints.on_change(move |old, new| {
                if let Some(e) = new.or(old) {
                    q.add(&key_of(e));
                }
            });
        }
        me
    }

    fn lock_deleted(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        match self.deleted.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    async fn delete_endpoints(&self, ep: &Endpoints) -> Result<(), ReconcileError> {
        let api: Api<Endpoints> = Api::namespaced(
            self.client.clone(),
            ep.metadata.namespace.as_deref().unwrap_or(""),
        );
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: ep.metadata.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api
            .delete(ep.metadata.name.as_deref().unwrap_or(""), &dp)
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

#[async_trait::async_trait]
impl Reconciler for EndpointsController {
    fn name(&self) -> &'static str {
        "endpoints"
    }

    async fn reconcile(&self, key: &str) -> Result<Action, ReconcileError> {
        let Some(svc) = self.services.get(key) else {
            let observed = self.lock_deleted().remove(key);
            if let Some(ep) = self.endpoints.get(key) {
                let ours = ep
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(ENDPOINTS_MANAGED_BY_LABEL))
                    == Some(&ENDPOINTS_MANAGER.to_string());
                if observed || ours {
                    self.delete_endpoints(&ep).await?;
                }
            }
            return Ok(Action::Done);
        };
        self.lock_deleted().remove(key);
        if selector_of(&svc).is_none() {
            return Ok(Action::Done);
        }
        let pods = self.index.pods_of(&svc);
        let mut subsets = endpoint_subsets(&svc, &pods);
        let truncated = truncate_subsets(&mut subsets, ENDPOINTS_ADDRESSES_MAX);
        let labels = endpoints_labels(&svc);
        let current = self.endpoints.get(key);
        if let Some(cur) = &current {
            let over = cur
                .metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(OVER_CAPACITY_ANNOTATION));
            if normalized(cur.subsets.as_ref()) == subsets
                && cur.metadata.labels.clone().unwrap_or_default() == labels
                && over == truncated
            {
                return Ok(Action::Done);
            }
        }
        let ns = svc.metadata.namespace.clone().unwrap_or_default();
        let name = svc.metadata.name.clone().unwrap_or_default();
        let mut ep = current.as_deref().cloned().unwrap_or_else(|| Endpoints {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(ns.clone()),
                ..ObjectMeta::default()
            },
            subsets: None,
        });
        ep.metadata.labels = Some(labels);
        let ann = ep.metadata.annotations.get_or_insert_with(BTreeMap::new);
        ann.insert(TRIGGER_TIME_ANNOTATION.into(), now_rfc3339());
        if truncated {
            ann.insert(OVER_CAPACITY_ANNOTATION.into(), "truncated".into());
        } else {
            ann.remove(OVER_CAPACITY_ANNOTATION);
        }
        ep.subsets = Some(subsets);
        let api: Api<Endpoints> = Api::namespaced(self.client.clone(), &ns);
        // A stale cache shows as 409 (AlreadyExists, or a stale resourceVersion): the queue
        // retries with back-off, against the newer object.
        if current.is_some() {
            api.replace(&name, &PostParams::default(), &ep).await?;
        } else {
            api.create(&PostParams::default(), &ep).await?;
        }
        Ok(Action::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, ip: &str, ready: bool, ports: serde_json::Value) -> Arc<Pod> {
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}"), "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": ports}]},
            "status": {"phase": "Running", "podIP": ip,
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]},
        }))
        .expect("a test pod");
        Arc::new(p)
    }

    fn svc(spec: serde_json::Value) -> Service {
        serde_json::from_value(
            json!({"metadata": {"name": "web", "namespace": "ns"}, "spec": spec}),
        )
        .expect("a test service")
    }

    fn ips(v: &Option<Vec<EndpointAddress>>) -> Vec<&str> {
        v.iter().flatten().map(|a| a.ip.as_str()).collect()
    }

    #[test]
    fn ready_pods_are_addresses_and_the_others_not_ready_addresses() {
        let s =
            svc(json!({"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}));
        let pods = vec![
            pod("b", "10.0.0.2", true, json!([])),
            pod("a", "10.0.0.1", true, json!([])),
            pod("c", "10.0.0.3", false, json!([])),
        ];
        let subsets = endpoint_subsets(&s, &pods);
        assert_eq!(subsets.len(), 1);
        assert_eq!(ips(&subsets[0].addresses), ["10.0.0.1", "10.0.0.2"]);
        assert_eq!(ips(&subsets[0].not_ready_addresses), ["10.0.0.3"]);
        let port = &subsets[0].ports.as_ref().expect("ports")[0];
        assert_eq!((port.port, port.protocol.as_deref()), (8080, Some("TCP")));
        let a = &subsets[0].addresses.as_ref().expect("addresses")[0];
        assert_eq!(a.node_name.as_deref(), Some("n1"));
        let r = a.target_ref.as_ref().expect("targetRef");
        assert_eq!(
            (r.kind.as_deref(), r.name.as_deref(), r.uid.as_deref()),
            (Some("Pod"), Some("a"), Some("uid-a"))
        );
    }

    #[test]
    fn publish_not_ready_addresses_makes_every_pod_ready_and_keeps_terminating_ones() {
        let s = svc(json!({"selector": {"app": "web"}, "ports": [{"port": 80}],
            "publishNotReadyAddresses": true}));
        let mut deleting = (*pod("d", "10.0.0.4", false, json!([]))).clone();
        deleting.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::UNIX_EPOCH),
        );
        let pods = vec![
            pod("c", "10.0.0.3", false, json!([])),
            Arc::new(deleting.clone()),
        ];
        let subsets = endpoint_subsets(&s, &pods);
        assert_eq!(ips(&subsets[0].addresses), ["10.0.0.3", "10.0.0.4"]);
        assert!(subsets[0].not_ready_addresses.is_none());
        let plain = svc(json!({"selector": {"app": "web"}, "ports": [{"port": 80}]}));
        let subsets = endpoint_subsets(&plain, &[Arc::new(deleting)]);
        assert!(
            subsets.is_empty(),
            "a pod being deleted is dropped: {subsets:?}"
        );
    }

    #[test]
    fn finished_pods_and_pods_without_an_ip_back_no_service() {
        let s = svc(json!({"selector": {"app": "web"}, "ports": [{"port": 80}]}));
        let mut done = (*pod("a", "10.0.0.1", true, json!([]))).clone();
        if let Some(st) = done.status.as_mut() {
            st.phase = Some("Succeeded".into());
        }
        let no_ip = pod("b", "", true, json!([]));
        assert!(endpoint_subsets(&s, &[Arc::new(done), no_ip]).is_empty());
    }

    #[test]
    fn a_named_target_port_resolves_per_pod_and_a_pod_without_it_gets_no_address_for_it() {
        let s = svc(json!({"selector": {"app": "web"}, "ports": [
            {"name": "http", "port": 80, "targetPort": "web"},
            {"name": "metrics", "port": 9090}]}));
        let pods = vec![
            pod(
                "a",
                "10.0.0.1",
                true,
                json!([{"name": "web", "containerPort": 8080}]),
            ),
            pod(
                "b",
                "10.0.0.2",
                true,
                json!([{"name": "web", "containerPort": 8081}]),
            ),
            pod(
                "c",
                "10.0.0.3",
                true,
                json!([{"name": "other", "containerPort": 7000}]),
            ),
            pod(
                "d",
                "10.0.0.4",
                true,
                json!([{"name": "web", "containerPort": 8080, "protocol": "UDP"}]),
            ),
        ];
        let http = &s
            .spec
            .as_ref()
            .and_then(|s| s.ports.as_ref())
            .expect("ports")[0];
        assert_eq!(target_port(http, &pods[0]), Some(8080));
        assert_eq!(target_port(http, &pods[1]), Some(8081));
        assert_eq!(target_port(http, &pods[2]), None);
        assert_eq!(
            target_port(http, &pods[3]),
            None,
            "the protocol must match too"
        );
        let subsets = endpoint_subsets(&s, &pods);
        type Summary<'a> = Vec<(Vec<&'a str>, Vec<(String, i32)>)>;
        let summary: Summary<'_> = subsets
            .iter()
            .map(|ss| {
                (
                    ips(&ss.addresses),
                    ss.ports
                        .iter()
                        .flatten()
                        .map(|p| (p.name.clone().unwrap_or_default(), p.port))
                        .collect(),
                )
            })
            .collect();
        // Ports served by the same address set share a subset (kube's RepackSubsets).
        assert_eq!(
            summary,
            vec![
                (vec!["10.0.0.1"], vec![("http".to_string(), 8080)]),
                (
                    vec!["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"],
                    vec![("metrics".to_string(), 9090)]
                ),
                (vec!["10.0.0.2"], vec![("http".to_string(), 8081)]),
            ]
        );
    }

    #[test]
    fn ports_served_by_the_same_addresses_are_packed_into_one_subset() {
        let s = svc(json!({"selector": {"app": "web"}, "ports": [
            {"name": "a", "port": 80}, {"name": "b", "port": 443}]}));
        let subsets = endpoint_subsets(
            &s,
            &[
                pod("a", "10.0.0.1", true, json!([])),
                pod("b", "10.0.0.2", false, json!([])),
            ],
        );
        assert_eq!(subsets.len(), 1);
        assert_eq!(subsets[0].ports.as_ref().map(Vec::len), Some(2));
    }

    #[test]
    fn a_headless_service_without_ports_lists_addresses_without_ports() {
        let s = svc(json!({"selector": {"app": "web"}, "clusterIP": "None"}));
        let subsets = endpoint_subsets(&s, &[pod("a", "10.0.0.1", true, json!([]))]);
        assert_eq!(ips(&subsets[0].addresses), ["10.0.0.1"]);
        assert!(subsets[0].ports.is_none());
        let l = endpoints_labels(&s);
        assert_eq!(l.get(HEADLESS_LABEL).map(String::as_str), Some(""));
        let plain = svc(json!({"selector": {"app": "web"}}));
        assert!(endpoint_subsets(&plain, &[pod("a", "10.0.0.1", true, json!([]))]).is_empty());
    }

    #[test]
    fn endpoints_are_truncated_to_capacity_keeping_ready_addresses_first() {
        let addrs = |n: usize, base: usize| -> Option<Vec<EndpointAddress>> {
            Some(
                (0..n)
                    .map(|i| EndpointAddress {
                        ip: format!("10.0.{}.{}", (base + i) / 250, (base + i) % 250),
                        ..EndpointAddress::default()
                    })
                    .collect(),
            )
        };
        let mut subsets = vec![
            EndpointSubset {
                addresses: addrs(600, 0),
                not_ready_addresses: addrs(300, 600),
                ports: None,
            },
            EndpointSubset {
                addresses: addrs(300, 900),
                not_ready_addresses: addrs(300, 1200),
                ports: None,
            },
        ];
        assert!(truncate_subsets(&mut subsets, 1_000));
        let n = |v: &Option<Vec<EndpointAddress>>| v.as_ref().map_or(0, Vec::len);
        assert_eq!(
            (n(&subsets[0].addresses), n(&subsets[1].addresses)),
            (600, 300)
        );
        assert_eq!(
            n(&subsets[0].not_ready_addresses) + n(&subsets[1].not_ready_addresses),
            100
        );
        assert_eq!(
            (
                n(&subsets[0].not_ready_addresses),
                n(&subsets[1].not_ready_addresses)
            ),
            (50, 50)
        );

        let mut ready_only = vec![EndpointSubset {
            addresses: addrs(1_500, 0),
            not_ready_addresses: addrs(10, 2_000),
            ports: None,
        }];
        assert!(truncate_subsets(&mut ready_only, 1_000));
        assert_eq!(
            (
                n(&ready_only[0].addresses),
                n(&ready_only[0].not_ready_addresses)
            ),
            (1_000, 0)
        );
        assert!(
            !truncate_subsets(&mut ready_only, 1_000),
            "at capacity is not over it"
        );
    }
}
