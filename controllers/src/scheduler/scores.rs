//! Scores: how much a pod prefers each feasible node, 0..=100 per plugin after
//! normalization, summed with kube's default weights ([`WEIGHTS`]). Raw scores are pure
//! functions of the pod and one node; normalizations see every evaluated node.

use std::collections::HashMap;

use super::cache::{Cache, LABEL_HOSTNAME, NodeData, NodeInfo, PodInfo, SpreadConstraint};
use k8s_openapi::api::core::v1::Toleration;

use super::filters::{spread_includes, tolerates};
use super::labels::node_selector_term_matches;

/// The highest score a plugin gives a node.
pub const MAX_NODE_SCORE: i64 = 100;

/// kube's default plugin weights.
pub struct Weights {
    pub least_allocated: i64,
    pub balanced_allocation: i64,
    pub taint_toleration: i64,
    pub node_affinity: i64,
    pub inter_pod_affinity: i64,
    pub topology_spread: i64,
}

pub const WEIGHTS: Weights = Weights {
    least_allocated: 1,
    balanced_allocation: 1,
    taint_toleration: 3,
    node_affinity: 2,
    inter_pod_affinity: 2,
    topology_spread: 2,
};

/// Weight kube gives an existing pod's *required* affinity term when scoring
/// (`hardPodAffinityWeight`).
pub const HARD_POD_AFFINITY_WEIGHT: i64 = 1;

fn least_requested(requested: i64, capacity: i64) -> i64 {
    if capacity <= 0 || requested > capacity {
        return 0;
    }
    (capacity - requested) * MAX_NODE_SCORE / capacity
}

/// NodeResourcesFit, LeastAllocated over CPU and memory (weight 1 each), with the pod's
/// non-zero requests added.
pub fn least_allocated(pod: &PodInfo, info: &NodeInfo, node: &NodeData) -> i64 {
    let cpu = least_requested(
        info.scoring_milli_cpu.saturating_add(pod.scoring_milli_cpu),
        node.allocatable.milli_cpu,
    );
    let mem = least_requested(
        info.scoring_memory.saturating_add(pod.scoring_memory),
        node.allocatable.memory,
    );
    (cpu + mem) / 2
}

/// NodeResourcesBalancedAllocation: 100 × (1 − the standard deviation of the CPU and
/// memory fractions requested).
pub fn balanced_allocation(pod: &PodInfo, info: &NodeInfo, node: &NodeData) -> i64 {
    let fraction = |req: i64, cap: i64| {
        if cap <= 0 {
            1.0
        } else {
            (req as f64 / cap as f64).min(1.0)
        }
    };
    let cpu = fraction(
        info.scoring_milli_cpu.saturating_add(pod.scoring_milli_cpu),
        node.allocatable.milli_cpu,
    );
    let mem = fraction(
        info.scoring_memory.saturating_add(pod.scoring_memory),
        node.allocatable.memory,
    );
    let std = (cpu - mem).abs() / 2.0;
    ((1.0 - std) * MAX_NODE_SCORE as f64) as i64
}

/// TaintToleration (raw): PreferNoSchedule taints the pod does not tolerate (fewer is
/// better; see [`normalize_reverse`]).
pub fn intolerable_prefer_no_schedule(pod: &PodInfo, node: &NodeData) -> i64 {
    let prefer = |t: &&Toleration| {
        matches!(
            t.effect.as_deref(),
            None | Some("") | Some("PreferNoSchedule")
        )
    };
    node.taints
        .iter()
        .filter(|taint| {
            taint.effect == "PreferNoSchedule"
                && !pod
                    .tolerations
                    .iter()
                    .filter(prefer)
                    .any(|t| tolerates(t, taint))
        })
        .count() as i64
}

/// NodeAffinity (raw): the weights of the preferred terms the node matches.
pub fn preferred_node_affinity(pod: &PodInfo, name: &str, node: &NodeData) -> i64 {
    pod.preferred_node_affinity
        .iter()
        .filter(|(_, t)| node_selector_term_matches(t, name, &node.labels))
        .map(|(w, _)| i64::from(*w))
        .sum()
}

/// kube's `DefaultNormalizeScore`: scale to 0..=100 by the maximum; `reverse` for "lower
/// is better".
pub fn normalize(scores: &mut [i64], reverse: bool) {
    let max = scores.iter().copied().max().unwrap_or(0);
    if max <= 0 {
        if reverse {
            scores.iter_mut().for_each(|s| *s = MAX_NODE_SCORE);
        }
        return;
    }
    for s in scores.iter_mut() {
        let v = *s * MAX_NODE_SCORE / max;
        *s = if reverse { MAX_NODE_SCORE - v } else { v };
    }
}

pub fn normalize_reverse(scores: &mut [i64]) {
    normalize(scores, true);
}

/// InterPodAffinity (preferred) per-pod state: a score per topology domain.
#[derive(Debug, Default)]
pub struct InterPodScoreState {
    by_key: HashMap<String, HashMap<String, i64>>,
}

/// Builds the state from every pod in the cache; `None` when neither the pod nor any
/// existing pod has an affinity term (the common case costs nothing).
pub fn inter_pod_prescore(pod: &PodInfo, cache: &Cache) -> Option<InterPodScoreState> {
    let own = !pod.preferred_affinity.is_empty() || !pod.preferred_anti_affinity.is_empty();
    if !own && !cache.any_pod_affinity() {
        return None;
    }
    let ns = &cache.namespaces;
    let mut st = InterPodScoreState::default();
    let mut add = |key: &str, node: &NodeData, w: i64| {
        if let Some(v) = node.labels.get(key) {
            *st.by_key
                .entry(key.to_string())
                .or_default()
                .entry(v.clone())
                .or_insert(0) += w;
        }
    };
    for &i in cache.live() {
        let info = cache.node(i);
        let Some(node) = &info.node else { continue };
        // A pod without terms of its own only meets the terms of existing pods.
        let pods = if own {
            info.pods.values()
        } else {
            info.affinity_pods.values()
        };
        for existing in pods {
            for (w, t) in &pod.preferred_affinity {
                if t.matches(existing, ns) {
                    add(&t.topology_key, node, i64::from(*w));
                }
            }
            for (w, t) in &pod.preferred_anti_affinity {
                if t.matches(existing, ns) {
                    add(&t.topology_key, node, -i64::from(*w));
                }
            }
            for t in &existing.required_affinity {
                if t.matches(pod, ns) {
                    add(&t.topology_key, node, HARD_POD_AFFINITY_WEIGHT);
                }
            }
            for (w, t) in &existing.preferred_affinity {
                if t.matches(pod, ns) {
                    add(&t.topology_key, node, i64::from(*w));
                }
            }
            for (w, t) in &existing.preferred_anti_affinity {
                if t.matches(pod, ns) {
                    add(&t.topology_key, node, -i64::from(*w));
                }
            }
        }
    }
    Some(st)
}

/// InterPodAffinity (raw): the sum of the node's domains' scores.
pub fn inter_pod_affinity(st: &InterPodScoreState, node: &NodeData) -> i64 {
    st.by_key
        .iter()
        .filter_map(|(k, m)| node.labels.get(k).and_then(|v| m.get(v)))
        .sum()
}

/// kube's InterPodAffinity normalization: (s − min) × 100 / (max − min), or 0.
pub fn normalize_min_max(scores: &mut [i64]) {
    let max = scores.iter().copied().max().unwrap_or(0);
    let min = scores.iter().copied().min().unwrap_or(0);
    let diff = max - min;
    for s in scores.iter_mut() {
        *s = if diff > 0 {
            (*s - min) * MAX_NODE_SCORE / diff
        } else {
            0
        };
    }
}

/// PodTopologySpread (ScheduleAnyway) per-pod state.
#[derive(Debug, Default)]
pub struct SpreadScoreState<'a> {
    /// Indexes into `pod.spread` of the soft constraints.
    soft: Vec<usize>,
    /// Per soft constraint: matching pods per domain (unused for hostname: counted on the
    /// node itself).
    counts: Vec<HashMap<&'a str, i64>>,
    /// Per soft constraint: ln(number of domains among the evaluated nodes + 2).
    weight: Vec<f64>,
}

/// Builds the state. `candidates` are the feasible nodes being scored (they size the
/// domains); every node that passes the constraints' inclusion policies contributes counts.
pub fn spread_prescore<'a>(
    pod: &PodInfo,
    cache: &'a Cache,
    candidates: &[usize],
) -> Option<SpreadScoreState<'a>> {
    let soft: Vec<usize> = (0..pod.spread.len())
        .filter(|i| !pod.spread[*i].hard)
        .collect();
    if soft.is_empty() {
        return None;
    }
    let has_all_keys = |node: &NodeData| {
        soft.iter()
            .all(|c| node.labels.contains_key(&pod.spread[*c].topology_key))
    };
    let mut weight = Vec::with_capacity(soft.len());
    for &ci in &soft {
        let key = &pod.spread[ci].topology_key;
        let nodes = candidates
            .iter()
            .filter_map(|i| cache.node(*i).node.as_ref())
            .filter(|n| has_all_keys(n));
        // Hostnames are one per node: count nodes instead of comparing names (sorting
        // hundreds of near-identical names per pod was the scheduler's top cost at 1,000
        // nodes).
        let domains = if key == LABEL_HOSTNAME {
            nodes.count()
        } else {
            nodes
                .filter_map(|n| n.labels.get(key).map(String::as_str))
                .collect::<std::collections::HashSet<&str>>()
                .len()
        };
        weight.push((domains as f64 + 2.0).ln());
    }
    let mut counts = vec![HashMap::new(); soft.len()];
    let needs_domain_counts = soft
        .iter()
        .any(|c| pod.spread[*c].topology_key != LABEL_HOSTNAME);
    // The system default spreading (pods of the same controller, ScheduleAnyway) counts
    // over the sampled candidates only: kube counts over every node, but walking all 1,000
    // nodes per pod was half the scheduler's time, and for a soft preference the sample's
    // counts are the same proportions. Constraints users wrote count over every node.
    let only_defaults = soft.iter().all(|c| {
        matches!(
            pod.spread[*c].selector,
            super::cache::SpreadSelector::SameOwner(_)
        )
    });
    let nodes: &[usize] = if only_defaults {
        candidates
    } else {
        cache.live()
    };
    if needs_domain_counts {
        for &i in nodes {
            let info = cache.node(i);
            let Some(node) = &info.node else { continue };
            if !has_all_keys(node) {
                continue;
            }
            for (slot, &ci) in soft.iter().enumerate() {
                let c = &pod.spread[ci];
                if c.topology_key == LABEL_HOSTNAME || !spread_includes(c, pod, &info.name, node) {
                    continue;
                }
                if let Some(v) = node.labels.get(&c.topology_key) {
                    *counts[slot].entry(v.as_str()).or_insert(0) += count_on_node(c, pod, info);
                }
            }
        }
    }
    Some(SpreadScoreState {
        soft,
        counts,
        weight,
    })
}

fn count_on_node(c: &SpreadConstraint, pod: &PodInfo, info: &NodeInfo) -> i64 {
    match &c.selector {
        super::cache::SpreadSelector::SameOwner(uid) => {
            // The index counts terminating pods too; close enough for a soft preference.
            i64::from(info.owner_counts.get(uid).copied().unwrap_or(0))
        }
        super::cache::SpreadSelector::Labels(_) => info
            .pods
            .values()
            .filter(|p| c.counts(&pod.namespace, p))
            .count() as i64,
    }
}

/// PodTopologySpread (raw, lower is better); `None` for a node missing a topology key
/// (it scores 0 after normalization).
pub fn topology_spread(st: &SpreadScoreState<'_>, pod: &PodInfo, info: &NodeInfo) -> Option<i64> {
    let node = info.node.as_ref()?;
    let mut score = 0.0;
    for (slot, &ci) in st.soft.iter().enumerate() {
        let c = &pod.spread[ci];
        let value = node.labels.get(&c.topology_key)?;
        let cnt = if c.topology_key == LABEL_HOSTNAME {
            count_on_node(c, pod, info)
        } else {
            st.counts[slot].get(value.as_str()).copied().unwrap_or(0)
        };
        score += cnt as f64 * st.weight[slot] + f64::from(c.max_skew - 1);
    }
    Some(score.round() as i64)
}

/// kube's PodTopologySpread normalization: 100 × (max + min − s) / max; nodes missing a
/// key score 0.
pub fn normalize_spread(raw: &[Option<i64>]) -> Vec<i64> {
    let present = raw.iter().flatten();
    let max = present.clone().copied().max().unwrap_or(0);
    let min = present.copied().min().unwrap_or(0);
    raw.iter()
        .map(|s| match s {
            None => 0,
            Some(_) if max == 0 => MAX_NODE_SCORE,
            Some(s) => MAX_NODE_SCORE * (max + min - s) / max,
        })
        .collect()
}
