//! One scheduling decision: filter a rotating sample of nodes until enough are feasible
//! (kube's `percentageOfNodesToScore`), score those, pick the best (ties at random).
//! Pure over the [`Cache`]; the caller assumes the pod onto the chosen node.

use std::collections::HashMap;
use std::fmt;

use rand::Rng;

use super::cache::{Cache, PodInfo};
use super::filters::{inter_pod_prefilter, run_all, spread_prefilter};
use super::scores::{self, WEIGHTS};

/// Below this many nodes every node is evaluated (kube's `minFeasibleNodesToFind`).
pub const FEASIBLE_NODES_TO_FIND_MIN: usize = 100;
/// kube's adaptive percentage starts here and falls by one per 125 nodes...
pub const NODES_TO_SCORE_BASE_PERCENT: usize = 50;
/// ...down to this floor (`minFeasibleNodesPercentageToFind`).
pub const NODES_TO_SCORE_MIN_PERCENT: usize = 5;

/// How many feasible nodes to find before scoring, out of `all` nodes.
pub fn feasible_nodes_to_find(all: usize) -> usize {
    if all < FEASIBLE_NODES_TO_FIND_MIN {
        return all;
    }
    let percent = NODES_TO_SCORE_BASE_PERCENT
        .saturating_sub(all / 125)
        .max(NODES_TO_SCORE_MIN_PERCENT);
    (all * percent / 100).max(FEASIBLE_NODES_TO_FIND_MIN)
}

/// No node fits: the reasons, counted per node, for the "0/N nodes are available" message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FitError {
    pub nodes: usize,
    pub reasons: HashMap<String, usize>,
}

impl fmt::Display for FitError {
    /// kube-scheduler's wording, with its preemption postscript (this scheduler never
    /// preempts, so preemption is never helpful).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.nodes;
        if n == 0 {
            return write!(f, "no nodes available to schedule pods");
        }
        let mut parts: Vec<String> = self
            .reasons
            .iter()
            .map(|(r, c)| format!("{c} {r}"))
            .collect();
        parts.sort();
        write!(
            f,
            "0/{n} nodes are available: {}. preemption: 0/{n} nodes are available: {n} Preemption is not helpful for scheduling.",
            parts.join(", ")
        )
    }
}

/// Where a pod goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// The node's slab index in the cache.
    pub node: usize,
    /// Nodes the filters ran on.
    pub evaluated: usize,
    /// Of those, how many fit.
    pub feasible: usize,
}

/// Chooses a node for `pod`. `next_start` rotates through the nodes across calls so the
/// sample differs from pod to pod.
///
/// # Errors
/// [`FitError`] when no node passes the filters.
pub fn select_node<R: Rng>(
    cache: &Cache,
    pod: &PodInfo,
    next_start: &mut usize,
    rng: &mut R,
) -> Result<Placement, FitError> {
    let live = cache.live();
    let n = live.len();
    if n == 0 {
        return Err(FitError {
            nodes: 0,
            reasons: HashMap::new(),
        });
    }
    let inter = inter_pod_prefilter(pod, cache);
    let spread = spread_prefilter(pod, cache);
    let want = feasible_nodes_to_find(n);
    let mut feasible = Vec::with_capacity(want);
    let mut reasons: HashMap<String, usize> = HashMap::new();
    let start = *next_start % n;
    let mut processed = 0;
    for k in 0..n {
        let i = live[(start + k) % n];
        processed += 1;
        match run_all(pod, cache.node(i), inter.as_ref(), spread.as_ref()) {
            Ok(()) => {
                feasible.push(i);
                if feasible.len() >= want {
                    break;
                }
            }
            Err(rs) => {
                for r in rs {
                    *reasons.entry(r).or_insert(0) += 1;
                }
            }
        }
    }
    *next_start = (start + processed) % n;
    if feasible.is_empty() {
        return Err(FitError { nodes: n, reasons });
    }
    let placement = |node| Placement {
        node,
        evaluated: processed,
        feasible: feasible.len(),
    };
    if feasible.len() == 1 {
        return Ok(placement(feasible[0]));
    }
    let totals = score(cache, pod, &feasible);
    // The best score, ties broken uniformly at random (reservoir sampling).
    let mut best = feasible[0];
    let mut best_score = i64::MIN;
    let mut ties = 0u32;
    for (k, &s) in totals.iter().enumerate() {
        if s > best_score {
            best_score = s;
            best = feasible[k];
            ties = 1;
        } else if s == best_score {
            ties += 1;
            if rng.random_range(0..ties) == 0 {
                best = feasible[k];
            }
        }
    }
    Ok(placement(best))
}

/// Weighted sum of every score plugin for each candidate.
pub fn score(cache: &Cache, pod: &PodInfo, candidates: &[usize]) -> Vec<i64> {
    let infos: Vec<_> = candidates
        .iter()
        .filter_map(|i| {
            let info = cache.node(*i);
            info.node.as_ref().map(|d| (info, d))
        })
        .collect();
    let mut totals: Vec<i64> = infos
        .iter()
        .map(|(info, node)| {
            WEIGHTS.least_allocated * scores::least_allocated(pod, info, node)
                + WEIGHTS.balanced_allocation * scores::balanced_allocation(pod, info, node)
        })
        .collect();
    let mut add = |raw: &[i64], weight: i64| {
        for (t, s) in totals.iter_mut().zip(raw) {
            *t += weight * s;
        }
    };
    let mut taints: Vec<i64> = infos
        .iter()
        .map(|(_, node)| scores::intolerable_prefer_no_schedule(pod, node))
        .collect();
    scores::normalize_reverse(&mut taints);
    add(&taints, WEIGHTS.taint_toleration);
    if !pod.preferred_node_affinity.is_empty() {
        let mut raw: Vec<i64> = infos
            .iter()
            .map(|(info, node)| scores::preferred_node_affinity(pod, &info.name, node))
            .collect();
        scores::normalize(&mut raw, false);
        add(&raw, WEIGHTS.node_affinity);
    }
    if let Some(st) = scores::inter_pod_prescore(pod, cache) {
        let mut raw: Vec<i64> = infos
            .iter()
            .map(|(_, node)| scores::inter_pod_affinity(&st, node))
            .collect();
        scores::normalize_min_max(&mut raw);
        add(&raw, WEIGHTS.inter_pod_affinity);
    }
    if let Some(st) = scores::spread_prescore(pod, cache, candidates) {
        let raw: Vec<Option<i64>> = infos
            .iter()
            .map(|(info, _)| scores::topology_spread(&st, pod, info))
            .collect();
        add(&scores::normalize_spread(&raw), WEIGHTS.topology_spread);
    }
    totals
}
