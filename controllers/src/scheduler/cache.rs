//! The scheduler's view of the cluster: nodes, the pods assigned to each (confirmed by the
//! watch, or *assumed*: placed here the moment a pod is chosen for a node, before its
//! binding returns, and forgotten if the binding fails), and namespace labels.
//!
//! Everything a filter or score reads is precomputed here when an object arrives
//! ([`PodInfo`], [`NodeData`]), so scheduling one pod allocates little and reads no JSON.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    Container, Node, NodeSelectorTerm, Pod, PodAffinityTerm, PodSpec, Taint, Toleration,
    TopologySpreadConstraint, WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::labels::{Labels, Requirement, Selector};
use super::quantity::{parse_milli, parse_value};

/// `kubernetes.io/hostname`, the per-node topology key.
pub const LABEL_HOSTNAME: &str = "kubernetes.io/hostname";
/// `topology.kubernetes.io/zone`.
pub const LABEL_ZONE: &str = "topology.kubernetes.io/zone";
/// CPU kube-scheduler assumes for scoring when a container requests none (millicores).
pub const DEFAULT_SCORING_CPU_MILLI: i64 = 100;
/// Memory kube-scheduler assumes for scoring when a container requests none (bytes).
pub const DEFAULT_SCORING_MEMORY_BYTES: i64 = 200 * 1024 * 1024;

/// Requested or allocatable resources: CPU in millicores, the rest in whole units.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    pub milli_cpu: i64,
    pub memory: i64,
    pub ephemeral_storage: i64,
    /// Extended and other resources (`nvidia.com/gpu`, `hugepages-2Mi`, …).
    pub scalar: BTreeMap<String, i64>,
}

impl Resources {
    /// Reads a resource list; quantities that do not parse count as zero (the API
    /// validates them) and `pods` is left out (it is a count, not a request).
    pub fn from_list(list: Option<&BTreeMap<String, Quantity>>) -> Self {
        let mut r = Resources::default();
        for (name, q) in list.into_iter().flatten() {
            r.set(name, &q.0);
        }
        r
    }

    fn set(&mut self, name: &str, q: &str) {
        match name {
            "cpu" => self.milli_cpu = parse_milli(q).unwrap_or(0),
            "memory" => self.memory = parse_value(q).unwrap_or(0),
            "ephemeral-storage" => self.ephemeral_storage = parse_value(q).unwrap_or(0),
            "pods" => {}
            _ => {
                self.scalar
                    .insert(name.to_string(), parse_value(q).unwrap_or(0));
            }
        }
    }

    pub fn add(&mut self, o: &Resources) {
        self.milli_cpu = self.milli_cpu.saturating_add(o.milli_cpu);
        self.memory = self.memory.saturating_add(o.memory);
        self.ephemeral_storage = self.ephemeral_storage.saturating_add(o.ephemeral_storage);
        for (k, v) in &o.scalar {
            let e = self.scalar.entry(k.clone()).or_insert(0);
            *e = e.saturating_add(*v);
        }
    }

    pub fn sub(&mut self, o: &Resources) {
        self.milli_cpu = self.milli_cpu.saturating_sub(o.milli_cpu);
        self.memory = self.memory.saturating_sub(o.memory);
        self.ephemeral_storage = self.ephemeral_storage.saturating_sub(o.ephemeral_storage);
        for (k, v) in &o.scalar {
            if let Some(e) = self.scalar.get_mut(k) {
                *e = e.saturating_sub(*v);
            }
        }
        self.scalar.retain(|_, v| *v != 0);
    }

    pub fn max_with(&mut self, o: &Resources) {
        self.milli_cpu = self.milli_cpu.max(o.milli_cpu);
        self.memory = self.memory.max(o.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(o.ephemeral_storage);
        for (k, v) in &o.scalar {
            let e = self.scalar.entry(k.clone()).or_insert(0);
            *e = (*e).max(*v);
        }
    }

    pub fn is_zero(&self) -> bool {
        self.milli_cpu == 0
            && self.memory == 0
            && self.ephemeral_storage == 0
            && self.scalar.values().all(|v| *v == 0)
    }
}

/// A container's requests; a resource with a limit but no request requests its limit (what
/// kube-apiserver's defaulting writes, applied here in case a writer skipped it).
fn container_requests(c: &Container) -> Resources {
    let Some(res) = &c.resources else {
        return Resources::default();
    };
    let mut r = Resources::from_list(res.limits.as_ref());
    for (name, q) in res.requests.iter().flatten() {
        r.set(name, &q.0);
    }
    r
}

/// A container's CPU and memory for scoring: kube's non-zero defaults where none is set.
fn container_scoring(c: &Container) -> Resources {
    let mut r = container_requests(c);
    let has = |name: &str| {
        c.resources.as_ref().is_some_and(|res| {
            res.requests.as_ref().is_some_and(|m| m.contains_key(name))
                || res.limits.as_ref().is_some_and(|m| m.contains_key(name))
        })
    };
    if !has("cpu") {
        r.milli_cpu = DEFAULT_SCORING_CPU_MILLI;
    }
    if !has("memory") {
        r.memory = DEFAULT_SCORING_MEMORY_BYTES;
    }
    r
}

/// The pod's effective request, as kube's `AggregateContainerRequests`: the sum of the
/// containers (and restartable "sidecar" init containers), or the largest init container
/// plus the sidecars started before it, whichever is larger; plus the pod overhead.
pub fn pod_requests(spec: &PodSpec, per_container: fn(&Container) -> Resources) -> Resources {
    let mut reqs = Resources::default();
    for c in &spec.containers {
        reqs.add(&per_container(c));
    }
    let mut sidecars = Resources::default();
    let mut init_max = Resources::default();
    for c in spec.init_containers.iter().flatten() {
        let mut r = per_container(c);
        if c.restart_policy.as_deref() == Some("Always") {
            reqs.add(&r);
            sidecars.add(&r);
            r = sidecars.clone();
        } else {
            r.add(&sidecars);
        }
        init_max.max_with(&r);
    }
    reqs.max_with(&init_max);
    reqs.add(&Resources::from_list(spec.overhead.as_ref()));
    reqs
}

/// One host port a pod uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    pub protocol: String,
    pub ip: String,
    pub port: i32,
}

impl HostPort {
    /// kube's `HostPortInfo` rule: same protocol and port, and the same IP or either one
    /// the wildcard.
    pub fn conflicts(&self, o: &HostPort) -> bool {
        let wild = |ip: &str| ip.is_empty() || ip == "0.0.0.0" || ip == "::";
        self.port == o.port
            && self.protocol == o.protocol
            && (self.ip == o.ip || wild(&self.ip) || wild(&o.ip))
    }
}

/// A compiled pod (anti-)affinity term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AffinityTerm {
    pub selector: Selector,
    pub namespaces: Vec<String>,
    /// `None`: only `namespaces`. `Some(everything)`: every namespace.
    pub namespace_selector: Option<Selector>,
    pub topology_key: String,
}

impl AffinityTerm {
    pub fn compile(t: &PodAffinityTerm, own_ns: &str, own_labels: &Labels) -> Self {
        let mut selector = Selector::from_label_selector(t.label_selector.as_ref());
        if !selector.is_nothing() {
            for k in t.match_label_keys.iter().flatten() {
                if let Some(v) = own_labels.get(k) {
                    selector.require(Requirement::In(k.clone(), vec![v.clone()]));
                }
            }
            for k in t.mismatch_label_keys.iter().flatten() {
                if let Some(v) = own_labels.get(k) {
                    selector.require(Requirement::NotIn(k.clone(), vec![v.clone()]));
                }
            }
        }
        let mut namespaces = t.namespaces.clone().unwrap_or_default();
        let namespace_selector = t
            .namespace_selector
            .as_ref()
            .map(|s| Selector::from_label_selector(Some(s)));
        if namespaces.is_empty() && namespace_selector.is_none() {
            namespaces.push(own_ns.to_string());
        }
        AffinityTerm {
            selector,
            namespaces,
            namespace_selector,
            topology_key: t.topology_key.clone(),
        }
    }

    /// Whether the term selects `pod` (namespace and labels).
    pub fn matches(&self, pod: &PodInfo, namespaces: &HashMap<String, Labels>) -> bool {
        let ns_ok = self.namespaces.contains(&pod.namespace)
            || self.namespace_selector.as_ref().is_some_and(|s| {
                let empty = Labels::new();
                s.matches(namespaces.get(&pod.namespace).unwrap_or(&empty))
            });
        ns_ok && self.selector.matches(&pod.labels)
    }
}

/// How a spread constraint selects the pods it counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpreadSelector {
    /// The constraint's `labelSelector` (with `matchLabelKeys`), in the pod's namespace.
    Labels(Selector),
    /// Pods with the same controller (the system default constraints; kube derives a
    /// selector from the owning workload, which selects the same pods in practice).
    SameOwner(String),
}

/// A compiled topology spread constraint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpreadConstraint {
    pub max_skew: i32,
    pub topology_key: String,
    pub selector: SpreadSelector,
    pub min_domains: i32,
    /// `nodeAffinityPolicy: Honor` (the default): only nodes matching the pod's node
    /// selector and required node affinity count.
    pub honor_node_affinity: bool,
    /// `nodeTaintsPolicy: Honor` (default Ignore): only nodes whose taints the pod tolerates.
    pub honor_node_taints: bool,
    /// `whenUnsatisfiable: DoNotSchedule` (a filter); otherwise ScheduleAnyway (a score).
    pub hard: bool,
}

impl SpreadConstraint {
    /// Whether `pod` (in the same namespace as the constrained pod) is counted.
    pub fn counts(&self, namespace: &str, pod: &PodInfo) -> bool {
        if pod.terminating || pod.namespace != namespace {
            return false;
        }
        match &self.selector {
            SpreadSelector::Labels(s) => s.matches(&pod.labels),
            SpreadSelector::SameOwner(uid) => pod.owner.as_ref().is_some_and(|o| o.uid == *uid),
        }
    }
}

/// A pod's controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub kind: String,
    pub uid: String,
}

/// Everything the scheduler needs from a pod, computed once. Two infos differ exactly when
/// something scheduling reads changed (a status-only update leaves them equal).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodInfo {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub labels: Labels,
    /// `spec.nodeName` (empty while pending).
    pub node_name: String,
    pub scheduler_name: String,
    pub priority: i32,
    pub terminating: bool,
    /// Succeeded or Failed: its resources are released.
    pub finished: bool,
    pub requests: Resources,
    /// CPU and memory with kube's non-zero defaults, for scoring.
    pub scoring_milli_cpu: i64,
    pub scoring_memory: i64,
    pub host_ports: Vec<HostPort>,
    pub owner: Option<Owner>,
    pub node_selector: Labels,
    /// `Some(terms)` when required node affinity is set (an empty list matches no node).
    pub required_node_affinity: Option<Vec<NodeSelectorTerm>>,
    pub preferred_node_affinity: Vec<(i32, NodeSelectorTerm)>,
    pub tolerations: Vec<Toleration>,
    pub required_affinity: Vec<AffinityTerm>,
    pub required_anti_affinity: Vec<AffinityTerm>,
    pub preferred_affinity: Vec<(i32, AffinityTerm)>,
    pub preferred_anti_affinity: Vec<(i32, AffinityTerm)>,
    /// The pod's own spread constraints; when it has none and is owned by a ReplicaSet,
    /// StatefulSet or ReplicationController, kube's system defaults (ScheduleAnyway).
    pub spread: Vec<SpreadConstraint>,
}

impl PodInfo {
    pub fn from_pod(pod: &Pod) -> Self {
        let meta = &pod.metadata;
        let namespace = meta.namespace.clone().unwrap_or_default();
        let labels = meta.labels.clone().unwrap_or_default();
        let default_spec = PodSpec::default();
        let spec = pod.spec.as_ref().unwrap_or(&default_spec);
        let requests = pod_requests(spec, container_requests);
        let scoring = pod_requests(spec, container_scoring);
        let host_ports = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .flat_map(|c| c.ports.iter().flatten())
            .filter_map(|p| {
                let port = p.host_port.filter(|p| *p > 0)?;
                Some(HostPort {
                    protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                    ip: p.host_ip.clone().unwrap_or_default(),
                    port,
                })
            })
            .collect();
        let owner = meta
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true))
            .map(|o| Owner {
                kind: o.kind.clone(),
                uid: o.uid.clone(),
            });
        let affinity = spec.affinity.as_ref();
        let node_aff = affinity.and_then(|a| a.node_affinity.as_ref());
        let pod_aff = affinity.and_then(|a| a.pod_affinity.as_ref());
        let anti_aff = affinity.and_then(|a| a.pod_anti_affinity.as_ref());
        let compile = |ts: Option<&Vec<PodAffinityTerm>>| -> Vec<AffinityTerm> {
            ts.into_iter()
                .flatten()
                .map(|t| AffinityTerm::compile(t, &namespace, &labels))
                .collect()
        };
        let compile_weighted =
            |ts: Option<&Vec<WeightedPodAffinityTerm>>| -> Vec<(i32, AffinityTerm)> {
                ts.into_iter()
                    .flatten()
                    .map(|w| {
                        (
                            w.weight,
                            AffinityTerm::compile(&w.pod_affinity_term, &namespace, &labels),
                        )
                    })
                    .collect()
            };
        let mut spread: Vec<SpreadConstraint> = spec
            .topology_spread_constraints
            .iter()
            .flatten()
            .map(|c| compile_spread(c, &labels))
            .collect();
        if spread.is_empty()
            && let Some(o) = &owner
            && matches!(
                o.kind.as_str(),
                "ReplicaSet" | "StatefulSet" | "ReplicationController"
            )
        {
            spread = system_default_spread(&o.uid);
        }
        PodInfo {
            uid: meta.uid.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
            node_name: spec.node_name.clone().unwrap_or_default(),
            scheduler_name: spec.scheduler_name.clone().unwrap_or_default(),
            priority: spec.priority.unwrap_or(0),
            terminating: meta.deletion_timestamp.is_some(),
            finished: matches!(
                pod.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            ),
            requests,
            scoring_milli_cpu: scoring.milli_cpu,
            scoring_memory: scoring.memory,
            host_ports,
            owner,
            node_selector: spec.node_selector.clone().unwrap_or_default(),
            required_node_affinity: node_aff
                .and_then(|n| {
                    n.required_during_scheduling_ignored_during_execution
                        .as_ref()
                })
                .map(|s| s.node_selector_terms.clone()),
            preferred_node_affinity: node_aff
                .and_then(|n| {
                    n.preferred_during_scheduling_ignored_during_execution
                        .as_ref()
                })
                .into_iter()
                .flatten()
                .map(|p| (p.weight, p.preference.clone()))
                .collect(),
            tolerations: spec.tolerations.clone().unwrap_or_default(),
            required_affinity: compile(pod_aff.and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })),
            required_anti_affinity: compile(anti_aff.and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })),
            preferred_affinity: compile_weighted(pod_aff.and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })),
            preferred_anti_affinity: compile_weighted(anti_aff.and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })),
            spread,
            namespace,
            labels,
        }
    }

    /// Whether the pod has any pod (anti-)affinity term; such pods make every placement
    /// scan the cluster's pods, the others don't.
    pub fn has_pod_affinity(&self) -> bool {
        !(self.required_affinity.is_empty()
            && self.required_anti_affinity.is_empty()
            && self.preferred_affinity.is_empty()
            && self.preferred_anti_affinity.is_empty())
    }
}

fn compile_spread(c: &TopologySpreadConstraint, labels: &Labels) -> SpreadConstraint {
    let mut selector = Selector::from_label_selector(c.label_selector.as_ref());
    if !selector.is_nothing() {
        for k in c.match_label_keys.iter().flatten() {
            if let Some(v) = labels.get(k) {
                selector.require(Requirement::In(k.clone(), vec![v.clone()]));
            }
        }
    }
    SpreadConstraint {
        max_skew: c.max_skew.max(1),
        topology_key: c.topology_key.clone(),
        selector: SpreadSelector::Labels(selector),
        min_domains: c.min_domains.unwrap_or(1).max(1),
        honor_node_affinity: c.node_affinity_policy.as_deref() != Some("Ignore"),
        honor_node_taints: c.node_taints_policy.as_deref() == Some("Honor"),
        hard: c.when_unsatisfiable == "DoNotSchedule",
    }
}

/// kube's system default constraints (`defaultConstraints`): hostname maxSkew 3 and zone
/// maxSkew 5, both ScheduleAnyway.
fn system_default_spread(owner_uid: &str) -> Vec<SpreadConstraint> {
    [(LABEL_HOSTNAME, 3), (LABEL_ZONE, 5)]
        .into_iter()
        .map(|(key, skew)| SpreadConstraint {
            max_skew: skew,
            topology_key: key.to_string(),
            selector: SpreadSelector::SameOwner(owner_uid.to_string()),
            min_domains: 1,
            honor_node_affinity: true,
            honor_node_taints: false,
            hard: false,
        })
        .collect()
}

/// What the filters and scores read from a Node.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeData {
    pub labels: Labels,
    pub taints: Vec<Taint>,
    pub unschedulable: bool,
    pub allocatable: Resources,
    /// `status.allocatable.pods` (0 when absent, as in kube: such a node takes no pods).
    pub allowed_pods: i64,
}

impl NodeData {
    pub fn from_node(node: &Node) -> Self {
        let spec = node.spec.as_ref();
        let alloc = node.status.as_ref().and_then(|s| s.allocatable.as_ref());
        NodeData {
            labels: node.metadata.labels.clone().unwrap_or_default(),
            taints: spec.and_then(|s| s.taints.clone()).unwrap_or_default(),
            unschedulable: spec.and_then(|s| s.unschedulable).unwrap_or(false),
            allocatable: Resources::from_list(alloc),
            allowed_pods: alloc
                .and_then(|a| a.get("pods"))
                .and_then(|q| parse_value(&q.0).ok())
                .unwrap_or(0),
        }
    }
}

/// One node and the pods on it.
#[derive(Debug, Clone, Default)]
pub struct NodeInfo {
    pub name: String,
    /// `None` while pods name a node the cluster does not (or no longer) have.
    pub node: Option<NodeData>,
    pub requested: Resources,
    pub scoring_milli_cpu: i64,
    pub scoring_memory: i64,
    pub pods: HashMap<String, Arc<PodInfo>>,
    pub used_ports: Vec<HostPort>,
    /// Pods per controller uid (the system default spreading counts these).
    pub owner_counts: HashMap<String, u32>,
    /// The pods here with any pod (anti-)affinity term (what a pod without terms of its
    /// own must look at).
    pub affinity_pods: HashMap<String, Arc<PodInfo>>,
    /// Pods here with required anti-affinity terms.
    pub pods_with_required_anti_affinity: usize,
}

impl NodeInfo {
    pub fn new(name: &str, node: Option<NodeData>) -> Self {
        NodeInfo {
            name: name.to_string(),
            node,
            ..NodeInfo::default()
        }
    }

    pub fn add_pod(&mut self, p: Arc<PodInfo>) {
        // Replacing: take the old one's share out first.
        self.remove_pod(&p.uid);
        self.requested.add(&p.requests);
        self.scoring_milli_cpu = self.scoring_milli_cpu.saturating_add(p.scoring_milli_cpu);
        self.scoring_memory = self.scoring_memory.saturating_add(p.scoring_memory);
        self.used_ports.extend(p.host_ports.iter().cloned());
        if let Some(o) = &p.owner {
            *self.owner_counts.entry(o.uid.clone()).or_insert(0) += 1;
        }
        if p.has_pod_affinity() {
            self.affinity_pods.insert(p.uid.clone(), p.clone());
        }
        if !p.required_anti_affinity.is_empty() {
            self.pods_with_required_anti_affinity += 1;
        }
        self.pods.insert(p.uid.clone(), p);
    }

    pub fn remove_pod(&mut self, uid: &str) -> Option<Arc<PodInfo>> {
        let p = self.pods.remove(uid)?;
        self.account_removed(&p);
        Some(p)
    }

    fn account_removed(&mut self, p: &PodInfo) {
        self.requested.sub(&p.requests);
        self.scoring_milli_cpu = self.scoring_milli_cpu.saturating_sub(p.scoring_milli_cpu);
        self.scoring_memory = self.scoring_memory.saturating_sub(p.scoring_memory);
        for hp in &p.host_ports {
            if let Some(i) = self.used_ports.iter().position(|u| u == hp) {
                self.used_ports.swap_remove(i);
            }
        }
        if let Some(o) = &p.owner
            && let Some(c) = self.owner_counts.get_mut(&o.uid)
        {
            *c = c.saturating_sub(1);
            if *c == 0 {
                self.owner_counts.remove(&o.uid);
            }
        }
        self.affinity_pods.remove(&p.uid);
        if !p.required_anti_affinity.is_empty() {
            self.pods_with_required_anti_affinity =
                self.pods_with_required_anti_affinity.saturating_sub(1);
        }
    }

    pub fn label(&self, key: &str) -> Option<&str> {
        self.node.as_ref()?.labels.get(key).map(String::as_str)
    }
}

/// A pod the cache counts on a node.
#[derive(Debug, Clone)]
pub struct CachedPod {
    pub node: String,
    pub info: Arc<PodInfo>,
    /// Placed by this scheduler and not yet seen bound by the watch.
    pub assumed: bool,
}

/// Nodes (in a slab, so a scheduling pass walks them by index without cloning or hashing),
/// the pods on them, and namespace labels.
#[derive(Debug, Default)]
pub struct Cache {
    nodes: Vec<NodeInfo>,
    index: HashMap<String, usize>,
    /// Slab indexes of the nodes that exist, in the order they were added.
    live: Vec<usize>,
    pods: HashMap<String, CachedPod>,
    pub namespaces: HashMap<String, Labels>,
    pods_with_affinity: usize,
    pods_with_required_anti_affinity: usize,
}

impl Cache {
    /// Nodes that exist (the candidates).
    pub fn live(&self) -> &[usize] {
        &self.live
    }

    pub fn node(&self, i: usize) -> &NodeInfo {
        &self.nodes[i]
    }

    pub fn node_by_name(&self, name: &str) -> Option<&NodeInfo> {
        self.index.get(name).map(|i| &self.nodes[*i])
    }

    pub fn pod(&self, uid: &str) -> Option<&CachedPod> {
        self.pods.get(uid)
    }

    pub fn pod_count(&self) -> usize {
        self.pods.len()
    }

    /// Whether any counted pod has a pod (anti-)affinity term.
    pub fn any_pod_affinity(&self) -> bool {
        self.pods_with_affinity > 0
    }

    pub fn any_required_anti_affinity(&self) -> bool {
        self.pods_with_required_anti_affinity > 0
    }

    fn slot(&mut self, name: &str) -> usize {
        if let Some(i) = self.index.get(name) {
            return *i;
        }
        self.nodes.push(NodeInfo::new(name, None));
        let i = self.nodes.len() - 1;
        self.index.insert(name.to_string(), i);
        i
    }

    /// Adds or updates a node; returns whether anything a filter reads changed (a status
    /// heartbeat does not count, so it does not retry unschedulable pods).
    pub fn upsert_node(&mut self, node: &Node) -> bool {
        let name = node.metadata.name.clone().unwrap_or_default();
        let data = NodeData::from_node(node);
        let i = self.slot(&name);
        let info = &mut self.nodes[i];
        if info.node.as_ref() == Some(&data) {
            return false;
        }
        let was_live = info.node.is_some();
        info.node = Some(data);
        if !was_live {
            self.live.push(i);
        }
        true
    }

    pub fn remove_node(&mut self, name: &str) {
        if let Some(i) = self.index.get(name).copied() {
            self.nodes[i].node = None;
            self.live.retain(|l| *l != i);
        }
    }

    /// The names of the nodes that exist (a relist drops the others).
    pub fn node_names(&self) -> Vec<String> {
        self.live
            .iter()
            .map(|i| self.nodes[*i].name.clone())
            .collect()
    }

    /// Counts `info` on `node` (replacing what the cache had for this pod).
    pub fn add_pod(&mut self, node: &str, info: Arc<PodInfo>, assumed: bool) {
        self.remove_pod(&info.uid);
        let i = self.slot(node);
        if info.has_pod_affinity() {
            self.pods_with_affinity += 1;
        }
        if !info.required_anti_affinity.is_empty() {
            self.pods_with_required_anti_affinity += 1;
        }
        self.nodes[i].add_pod(info.clone());
        self.pods.insert(
            info.uid.clone(),
            CachedPod {
                node: node.to_string(),
                info,
                assumed,
            },
        );
    }

    pub fn remove_pod(&mut self, uid: &str) -> Option<CachedPod> {
        let p = self.pods.remove(uid)?;
        if let Some(i) = self.index.get(&p.node) {
            self.nodes[*i].remove_pod(uid);
        }
        if p.info.has_pod_affinity() {
            self.pods_with_affinity = self.pods_with_affinity.saturating_sub(1);
        }
        if !p.info.required_anti_affinity.is_empty() {
            self.pods_with_required_anti_affinity =
                self.pods_with_required_anti_affinity.saturating_sub(1);
        }
        Some(p)
    }

    /// Uids of every counted pod (a relist drops the ones it did not see).
    pub fn pod_uids(&self) -> Vec<String> {
        self.pods.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ResourceRequirements;

    fn container(reqs: &[(&str, &str)], restart: Option<&str>) -> Container {
        Container {
            name: "c".into(),
            resources: Some(ResourceRequirements {
                requests: Some(
                    reqs.iter()
                        .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
                        .collect(),
                ),
                ..Default::default()
            }),
            restart_policy: restart.map(str::to_string),
            ..Default::default()
        }
    }

    #[test]
    fn a_pods_effective_request_is_the_larger_of_its_containers_sum_and_any_init_container_plus_overhead()
     {
        let spec = PodSpec {
            containers: vec![
                container(&[("cpu", "100m"), ("memory", "64Mi")], None),
                container(&[("cpu", "200m")], None),
            ],
            init_containers: Some(vec![container(&[("cpu", "1"), ("memory", "32Mi")], None)]),
            overhead: Some([("cpu".to_string(), Quantity("10m".into()))].into()),
            ..Default::default()
        };
        let r = pod_requests(&spec, container_requests);
        assert_eq!(r.milli_cpu, 1010);
        assert_eq!(r.memory, 64 * 1024 * 1024);
    }

    #[test]
    fn sidecar_init_containers_add_to_the_containers_and_to_later_init_containers() {
        let spec = PodSpec {
            containers: vec![container(&[("cpu", "100m")], None)],
            init_containers: Some(vec![
                container(&[("cpu", "50m")], Some("Always")),
                container(&[("cpu", "500m")], None),
            ]),
            ..Default::default()
        };
        assert_eq!(pod_requests(&spec, container_requests).milli_cpu, 550);
    }

    #[test]
    fn a_container_with_only_limits_requests_its_limits_and_scoring_defaults_fill_the_gaps() {
        let c = Container {
            name: "c".into(),
            resources: Some(ResourceRequirements {
                limits: Some([("cpu".to_string(), Quantity("2".into()))].into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(container_requests(&c).milli_cpu, 2000);
        let s = container_scoring(&c);
        assert_eq!(
            (s.milli_cpu, s.memory),
            (2000, DEFAULT_SCORING_MEMORY_BYTES)
        );
    }

    #[test]
    fn host_ports_conflict_on_the_same_protocol_and_port_unless_both_ips_are_specific_and_differ() {
        let hp = |ip: &str, proto: &str| HostPort {
            protocol: proto.into(),
            ip: ip.into(),
            port: 80,
        };
        assert!(hp("", "TCP").conflicts(&hp("10.0.0.1", "TCP")));
        assert!(hp("10.0.0.1", "TCP").conflicts(&hp("10.0.0.1", "TCP")));
        assert!(!hp("10.0.0.1", "TCP").conflicts(&hp("10.0.0.2", "TCP")));
        assert!(!hp("", "TCP").conflicts(&hp("", "UDP")));
    }

    #[test]
    fn a_pod_seen_again_replaces_its_old_accounting() {
        let mut n = NodeInfo::new("n1", None);
        let pod = |cpu| {
            Arc::new(PodInfo {
                uid: "u1".into(),
                requests: Resources {
                    milli_cpu: cpu,
                    ..Default::default()
                },
                required_anti_affinity: vec![AffinityTerm {
                    selector: Selector::everything(),
                    namespaces: vec!["default".into()],
                    namespace_selector: None,
                    topology_key: LABEL_HOSTNAME.into(),
                }],
                ..Default::default()
            })
        };
        n.add_pod(pod(100));
        n.add_pod(pod(300));
        assert_eq!(n.requested.milli_cpu, 300);
        assert_eq!(
            (
                n.pods.len(),
                n.affinity_pods.len(),
                n.pods_with_required_anti_affinity
            ),
            (1, 1, 1)
        );
        n.remove_pod("u1");
        assert_eq!(
            (
                n.requested.milli_cpu,
                n.affinity_pods.len(),
                n.pods_with_required_anti_affinity
            ),
            (0, 0, 0)
        );
    }

    #[test]
    fn assumed_pods_count_on_their_node_until_forgotten() {
        let mut cache = Cache::default();
        let mut node = Node::default();
        node.metadata.name = Some("n1".into());
        assert!(cache.upsert_node(&node));
        assert!(
            !cache.upsert_node(&node),
            "an identical node is not a change"
        );
        let info = Arc::new(PodInfo {
            uid: "u1".into(),
            requests: Resources {
                milli_cpu: 500,
                ..Default::default()
            },
            ..Default::default()
        });
        cache.add_pod("n1", info, true);
        let n = cache.node_by_name("n1").map(|n| n.requested.milli_cpu);
        assert_eq!(n, Some(500));
        assert!(cache.pod("u1").is_some_and(|p| p.assumed));
        cache.remove_pod("u1");
        let n = cache
            .node_by_name("n1")
            .map(|n| (n.requested.milli_cpu, n.pods.len()));
        assert_eq!(n, Some((0, 0)));
    }
}
