//! Filters: whether a pod may run on a node. Each is a pure function over the pod's
//! [`PodInfo`] and the node's [`NodeInfo`]; a failure is kube-scheduler's reason string,
//! counted per reason in the "0/N nodes are available" message.
//!
//! Run in kube's default order (NodeUnschedulable, NodeName, TaintToleration, NodeAffinity,
//! NodePorts, NodeResourcesFit, PodTopologySpread, InterPodAffinity); a node's first failing
//! filter gives its reasons.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Taint, Toleration};

use super::cache::{Cache, NodeData, NodeInfo, PodInfo};
use super::labels::node_selector_terms_match;

pub const ERR_UNSCHEDULABLE: &str = "node(s) were unschedulable";
pub const ERR_NODE_NAME: &str = "node(s) didn't match the requested node name";
pub const ERR_NODE_AFFINITY: &str = "node(s) didn't match Pod's node affinity/selector";
pub const ERR_NODE_PORTS: &str = "node(s) didn't have free ports for the requested pod ports";
pub const ERR_TOO_MANY_PODS: &str = "Too many pods";
pub const ERR_EXISTING_ANTI_AFFINITY: &str =
    "node(s) didn't satisfy existing pods anti-affinity rules";
pub const ERR_ANTI_AFFINITY: &str = "node(s) didn't match pod anti-affinity rules";
pub const ERR_AFFINITY: &str = "node(s) didn't match pod affinity rules";
pub const ERR_SPREAD: &str = "node(s) didn't match pod topology spread constraints";
pub const ERR_SPREAD_LABEL: &str =
    "node(s) didn't match pod topology spread constraints (missing required label)";
/// The taint a node's `spec.unschedulable` stands for.
pub const TAINT_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";

/// A node's reasons for refusing a pod (usually one).
pub type Reasons = Vec<String>;

fn fail(reason: &str) -> Result<(), Reasons> {
    Err(vec![reason.to_string()])
}

/// Whether one toleration tolerates a taint (kube's `Toleration.ToleratesTaint`).
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = t.effect.as_deref()
        && !effect.is_empty()
        && effect != taint.effect
    {
        return false;
    }
    let key = t.key.as_deref().unwrap_or_default();
    match t.operator.as_deref().unwrap_or("Equal") {
        "Exists" => key.is_empty() || key == taint.key,
        "Equal" | "" => {
            key == taint.key
                && t.value.as_deref().unwrap_or_default()
                    == taint.value.as_deref().unwrap_or_default()
        }
        _ => false,
    }
}

pub fn tolerated(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| tolerates(t, taint))
}

/// NodeUnschedulable: a cordoned node takes only pods tolerating its unschedulable taint.
pub fn node_unschedulable(pod: &PodInfo, node: &NodeData) -> Result<(), Reasons> {
    if !node.unschedulable {
        return Ok(());
    }
    let taint = Taint {
        key: TAINT_UNSCHEDULABLE.into(),
        effect: "NoSchedule".into(),
        ..Default::default()
    };
    if tolerated(&pod.tolerations, &taint) {
        Ok(())
    } else {
        fail(ERR_UNSCHEDULABLE)
    }
}

/// NodeName: a pod naming a node runs only there (pending pods name none).
pub fn node_name(pod: &PodInfo, node_name: &str) -> Result<(), Reasons> {
    if !pod.node_name.is_empty() && pod.node_name != node_name {
        return fail(ERR_NODE_NAME);
    }
    Ok(())
}

/// TaintToleration: every NoSchedule and NoExecute taint must be tolerated.
pub fn taint_toleration(pod: &PodInfo, node: &NodeData) -> Result<(), Reasons> {
    let untolerated = node.taints.iter().find(|t| {
        matches!(t.effect.as_str(), "NoSchedule" | "NoExecute") && !tolerated(&pod.tolerations, t)
    });
    match untolerated {
        Some(t) => Err(vec![format!(
            "node(s) had untolerated taint {{{}: {}}}",
            t.key,
            t.value.as_deref().unwrap_or_default()
        )]),
        None => Ok(()),
    }
}

/// Whether the node satisfies the pod's nodeSelector and required node affinity.
pub fn matches_node_affinity(pod: &PodInfo, node_name: &str, node: &NodeData) -> bool {
    pod.node_selector
        .iter()
        .all(|(k, v)| node.labels.get(k) == Some(v))
        && pod
            .required_node_affinity
            .as_ref()
            .is_none_or(|terms| node_selector_terms_match(terms, node_name, &node.labels))
}

/// NodeAffinity: nodeSelector (all labels equal) and required node affinity (terms ORed,
/// expressions ANDed).
pub fn node_affinity(pod: &PodInfo, node_name: &str, node: &NodeData) -> Result<(), Reasons> {
    if matches_node_affinity(pod, node_name, node) {
        Ok(())
    } else {
        fail(ERR_NODE_AFFINITY)
    }
}

/// NodePorts: no requested host port may be in use on the node.
pub fn node_ports(pod: &PodInfo, info: &NodeInfo) -> Result<(), Reasons> {
    let clash = pod
        .host_ports
        .iter()
        .any(|p| info.used_ports.iter().any(|u| u.conflicts(p)));
    if clash { fail(ERR_NODE_PORTS) } else { Ok(()) }
}

/// NodeResourcesFit: pod count, then every requested resource against what is left;
/// reports every insufficient resource, as kube does.
pub fn resources_fit(pod: &PodInfo, info: &NodeInfo, node: &NodeData) -> Result<(), Reasons> {
    let mut reasons = Vec::new();
    if i64::try_from(info.pods.len())
        .unwrap_or(i64::MAX)
        .saturating_add(1)
        > node.allowed_pods
    {
        reasons.push(ERR_TOO_MANY_PODS.to_string());
    }
    let r = &pod.requests;
    let a = &node.allocatable;
    let u = &info.requested;
    let short = |want: i64, used: i64, have: i64| want > 0 && have < used.saturating_add(want);
    if short(r.milli_cpu, u.milli_cpu, a.milli_cpu) {
        reasons.push("Insufficient cpu".into());
    }
    if short(r.memory, u.memory, a.memory) {
        reasons.push("Insufficient memory".into());
    }
    if short(
        r.ephemeral_storage,
        u.ephemeral_storage,
        a.ephemeral_storage,
    ) {
        reasons.push("Insufficient ephemeral-storage".into());
    }
    for (name, want) in &r.scalar {
        let used = u.scalar.get(name).copied().unwrap_or(0);
        let have = a.scalar.get(name).copied().unwrap_or(0);
        if short(*want, used, have) {
            reasons.push(format!("Insufficient {name}"));
        }
    }
    if reasons.is_empty() {
        Ok(())
    } else {
        Err(reasons)
    }
}

/// A topology domain: a label key and value.
type Pair = (String, String);

/// InterPodAffinity's per-pod state: counts per topology domain, computed once from every
/// pod in the cache (kube's PreFilter).
#[derive(Debug, Default)]
pub struct InterPodState {
    /// Domains where an existing pod's required anti-affinity selects the incoming pod.
    existing_anti: HashMap<Pair, u32>,
    /// Domains holding pods that match all of the incoming pod's required affinity terms.
    affinity: HashMap<Pair, u32>,
    /// Domains holding pods matching one of its required anti-affinity terms.
    anti: HashMap<Pair, u32>,
    /// The incoming pod matches all its own affinity terms (the first of a group may go
    /// anywhere).
    self_affine: bool,
}

/// Builds [`InterPodState`]; `None` when there is nothing to check (the common case: no
/// required terms on the pod and no pod with required anti-affinity in the cluster).
pub fn inter_pod_prefilter(pod: &PodInfo, cache: &Cache) -> Option<InterPodState> {
    let own_terms = !pod.required_affinity.is_empty() || !pod.required_anti_affinity.is_empty();
    if !own_terms && !cache.any_required_anti_affinity() {
        return None;
    }
    let ns = &cache.namespaces;
    let mut st = InterPodState {
        self_affine: pod.required_affinity.iter().all(|t| t.matches(pod, ns)),
        ..Default::default()
    };
    for &i in cache.live() {
        let info = cache.node(i);
        let Some(node) = &info.node else { continue };
        if !own_terms && info.pods_with_required_anti_affinity == 0 {
            continue;
        }
        // A pod without terms of its own only meets the terms of existing pods.
        let pods = if own_terms {
            info.pods.values()
        } else {
            info.affinity_pods.values()
        };
        for existing in pods {
            for t in &existing.required_anti_affinity {
                if let Some(v) = node.labels.get(&t.topology_key)
                    && t.matches(pod, ns)
                {
                    *st.existing_anti
                        .entry((t.topology_key.clone(), v.clone()))
                        .or_insert(0) += 1;
                }
            }
            if !own_terms {
                continue;
            }
            if !pod.required_affinity.is_empty()
                && pod
                    .required_affinity
                    .iter()
                    .all(|t| t.matches(existing, ns))
            {
                for t in &pod.required_affinity {
                    if let Some(v) = node.labels.get(&t.topology_key) {
                        *st.affinity
                            .entry((t.topology_key.clone(), v.clone()))
                            .or_insert(0) += 1;
                    }
                }
            }
            for t in &pod.required_anti_affinity {
                if let Some(v) = node.labels.get(&t.topology_key)
                    && t.matches(existing, ns)
                {
                    *st.anti
                        .entry((t.topology_key.clone(), v.clone()))
                        .or_insert(0) += 1;
                }
            }
        }
    }
    Some(st)
}

fn count_at(map: &HashMap<Pair, u32>, key: &str, node: &NodeData) -> u32 {
    if map.is_empty() {
        return 0;
    }
    node.labels
        .get(key)
        .and_then(|v| map.get(&(key.to_string(), v.clone())))
        .copied()
        .unwrap_or(0)
}

/// InterPodAffinity (required), checked in kube's order: the pod's affinity, its
/// anti-affinity, then existing pods' anti-affinity.
pub fn inter_pod_affinity(
    st: &InterPodState,
    pod: &PodInfo,
    node: &NodeData,
) -> Result<(), Reasons> {
    let mut pods_exist = true;
    for t in &pod.required_affinity {
        if !node.labels.contains_key(&t.topology_key) {
            return fail(ERR_AFFINITY);
        }
        if count_at(&st.affinity, &t.topology_key, node) == 0 {
            pods_exist = false;
        }
    }
    let first_of_group = st.affinity.is_empty() && st.self_affine;
    if !(pods_exist || first_of_group) {
        return fail(ERR_AFFINITY);
    }
    if pod
        .required_anti_affinity
        .iter()
        .any(|t| count_at(&st.anti, &t.topology_key, node) > 0)
    {
        return fail(ERR_ANTI_AFFINITY);
    }
    let existing_hit = st
        .existing_anti
        .iter()
        .any(|((k, v), c)| *c > 0 && node.labels.get(k) == Some(v));
    if existing_hit {
        return fail(ERR_EXISTING_ANTI_AFFINITY);
    }
    Ok(())
}

/// Whether a node counts for a spread constraint's domains (node inclusion policies).
pub fn spread_includes(
    c: &super::cache::SpreadConstraint,
    pod: &PodInfo,
    name: &str,
    node: &NodeData,
) -> bool {
    (!c.honor_node_affinity || matches_node_affinity(pod, name, node))
        && (!c.honor_node_taints
            || node.taints.iter().all(|t| {
                !matches!(t.effect.as_str(), "NoSchedule" | "NoExecute")
                    || tolerated(&pod.tolerations, t)
            }))
}

/// PodTopologySpread's per-pod state for its DoNotSchedule constraints.
#[derive(Debug, Default)]
pub struct SpreadState {
    /// Indexes into `pod.spread` of the hard constraints.
    hard: Vec<usize>,
    /// Per hard constraint: matching pods per domain value (every eligible domain listed).
    counts: Vec<HashMap<String, u32>>,
    /// Per hard constraint: the global minimum (0 when fewer domains than minDomains).
    min: Vec<i64>,
}

/// Builds [`SpreadState`]; `None` when the pod has no DoNotSchedule constraint.
pub fn spread_prefilter(pod: &PodInfo, cache: &Cache) -> Option<SpreadState> {
    let hard: Vec<usize> = (0..pod.spread.len())
        .filter(|i| pod.spread[*i].hard)
        .collect();
    if hard.is_empty() {
        return None;
    }
    let mut counts: Vec<HashMap<String, u32>> = vec![HashMap::new(); hard.len()];
    for &i in cache.live() {
        let info = cache.node(i);
        let Some(node) = &info.node else { continue };
        // Only nodes carrying every constraint's key count.
        if !hard
            .iter()
            .all(|c| node.labels.contains_key(&pod.spread[*c].topology_key))
        {
            continue;
        }
        for (slot, &ci) in hard.iter().enumerate() {
            let c = &pod.spread[ci];
            if !spread_includes(c, pod, &info.name, node) {
                continue;
            }
            let Some(value) = node.labels.get(&c.topology_key) else {
                continue;
            };
            let n = info
                .pods
                .values()
                .filter(|p| c.counts(&pod.namespace, p))
                .count();
            *counts[slot].entry(value.clone()).or_insert(0) += u32::try_from(n).unwrap_or(u32::MAX);
        }
    }
    let min = hard
        .iter()
        .zip(&counts)
        .map(|(ci, m)| {
            let domains = i64::try_from(m.len()).unwrap_or(i64::MAX);
            if domains < i64::from(pod.spread[*ci].min_domains) {
                0
            } else {
                m.values().copied().min().map(i64::from).unwrap_or(0)
            }
        })
        .collect();
    Some(SpreadState { hard, counts, min })
}

/// PodTopologySpread (DoNotSchedule): placing the pod here keeps every skew within
/// maxSkew.
pub fn topology_spread(st: &SpreadState, pod: &PodInfo, node: &NodeData) -> Result<(), Reasons> {
    for &ci in &st.hard {
        if !node.labels.contains_key(&pod.spread[ci].topology_key) {
            return fail(ERR_SPREAD_LABEL);
        }
    }
    for (slot, &ci) in st.hard.iter().enumerate() {
        let c = &pod.spread[ci];
        let Some(value) = node.labels.get(&c.topology_key) else {
            return fail(ERR_SPREAD_LABEL);
        };
        let self_match = i64::from(c.counts(&pod.namespace, pod));
        let here = i64::from(st.counts[slot].get(value).copied().unwrap_or(0));
        if here + self_match - st.min[slot] > i64::from(c.max_skew) {
            return fail(ERR_SPREAD);
        }
    }
    Ok(())
}

/// Every filter in kube's order, with the prefilter states computed for this pod.
pub fn run_all(
    pod: &PodInfo,
    info: &NodeInfo,
    inter: Option<&InterPodState>,
    spread: Option<&SpreadState>,
) -> Result<(), Reasons> {
    let Some(node) = &info.node else {
        return fail("node(s) not found");
    };
    node_unschedulable(pod, node)?;
    node_name(pod, &info.name)?;
    taint_toleration(pod, node)?;
    node_affinity(pod, &info.name, node)?;
    node_ports(pod, info)?;
    resources_fit(pod, info, node)?;
    if let Some(st) = spread {
        topology_spread(st, pod, node)?;
    }
    if let Some(st) = inter {
        inter_pod_affinity(st, pod, node)?;
    }
    Ok(())
}
