//! Unit tests of the filters, scores, selection and queue, on pods and nodes built as JSON
//! (the shape users write).

#![allow(clippy::unwrap_used)] // a test that panics has failed; the message says where

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};
use rand::SeedableRng;
use rand::rngs::SmallRng;
use serde_json::{Value, json};
use tokio::time::{Duration, Instant};

use super::algorithm::{FitError, feasible_nodes_to_find, select_node};
use super::cache::{Cache, NodeData, NodeInfo, PodInfo};
use super::filters::{self, *};
use super::queue::{SchedulingQueue, State, backoff_duration};
use super::scores;

fn node_json(name: &str, cpu: &str, mem: &str, labels: Value, spec: Value) -> Node {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": spec,
        "status": {"allocatable": {"cpu": cpu, "memory": mem, "pods": "110", "example.com/gpu": "2"}},
    }))
    .unwrap()
}

fn node(name: &str) -> Node {
    node_json(
        name,
        "4",
        "8Gi",
        json!({"kubernetes.io/hostname": name}),
        json!({}),
    )
}

fn pod_json(name: &str, labels: Value, spec: Value) -> Pod {
    let mut spec = spec;
    if spec.get("containers").is_none() {
        spec["containers"] = json!([{"name": "c", "image": "i"}]);
    }
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"), "labels": labels},
        "spec": spec,
    }))
    .unwrap()
}

fn info(p: &Pod) -> PodInfo {
    PodInfo::from_pod(p)
}

fn requesting(name: &str, cpu: &str, mem: &str) -> PodInfo {
    info(&pod_json(
        name,
        json!({}),
        json!({"containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": cpu, "memory": mem}}}]}),
    ))
}

fn node_info(n: &Node) -> NodeInfo {
    NodeInfo::new(
        n.metadata.name.as_deref().unwrap(),
        Some(NodeData::from_node(n)),
    )
}

fn data(n: &Node) -> NodeData {
    NodeData::from_node(n)
}

fn reason(r: Result<(), Reasons>) -> String {
    r.err().map(|v| v.join(", ")).unwrap_or_default()
}

// ---- NodeResourcesFit ----

#[test]
fn a_pod_requesting_more_cpu_than_allocatable_does_not_fit() {
    let n = node("n1");
    let r = resources_fit(&requesting("p", "5", "1Gi"), &node_info(&n), &data(&n));
    assert_eq!(reason(r), "Insufficient cpu");
}

#[test]
fn a_pod_fits_in_what_the_pods_already_on_the_node_leave() {
    let n = node("n1");
    let mut ni = node_info(&n);
    ni.add_pod(Arc::new(requesting("a", "3", "1Gi")));
    assert!(resources_fit(&requesting("p", "1", "1Gi"), &ni, &data(&n)).is_ok());
    let r = resources_fit(&requesting("p", "1500m", "7.5Gi"), &ni, &data(&n));
    assert_eq!(reason(r), "Insufficient cpu, Insufficient memory");
}

#[test]
fn extended_resources_and_ephemeral_storage_are_checked_like_cpu() {
    let n = node("n1");
    let p = info(&pod_json(
        "p",
        json!({}),
        json!({"containers": [{"name": "c", "image": "i", "resources": {
            "requests": {"example.com/gpu": "3", "ephemeral-storage": "1Gi"},
            "limits": {"example.com/gpu": "3"}}}]}),
    ));
    let r = resources_fit(&p, &node_info(&n), &data(&n));
    assert_eq!(
        reason(r),
        "Insufficient ephemeral-storage, Insufficient example.com/gpu"
    );
}

#[test]
fn a_node_at_its_pod_limit_has_too_many_pods() {
    let n = node_json("n1", "4", "8Gi", json!({}), json!({}));
    let mut d = data(&n);
    d.allowed_pods = 1;
    let mut ni = node_info(&n);
    ni.add_pod(Arc::new(requesting("a", "0", "0")));
    assert_eq!(
        reason(resources_fit(&requesting("p", "0", "0"), &ni, &d)),
        ERR_TOO_MANY_PODS
    );
}

// ---- NodeUnschedulable, NodeName ----

#[test]
fn an_unschedulable_node_takes_only_pods_tolerating_its_taint() {
    let n = node_json("n1", "4", "8Gi", json!({}), json!({"unschedulable": true}));
    let plain = info(&pod_json("p", json!({}), json!({})));
    assert_eq!(
        reason(node_unschedulable(&plain, &data(&n))),
        ERR_UNSCHEDULABLE
    );
    let tolerant = info(&pod_json(
        "q",
        json!({}),
        json!({"tolerations": [{"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}]}),
    ));
    assert!(node_unschedulable(&tolerant, &data(&n)).is_ok());
}

#[test]
fn a_pod_naming_a_node_fits_only_that_node() {
    let p = info(&pod_json("p", json!({}), json!({"nodeName": "n2"})));
    assert_eq!(reason(filters::node_name(&p, "n1")), ERR_NODE_NAME);
    assert!(filters::node_name(&p, "n2").is_ok());
}

// ---- TaintToleration ----

#[test]
fn untolerated_no_schedule_and_no_execute_taints_refuse_the_pod_naming_the_taint() {
    let n = node_json(
        "n1",
        "4",
        "8Gi",
        json!({}),
        json!({"taints": [{"key": "soft", "effect": "PreferNoSchedule"}, {"key": "dedicated", "value": "gpu", "effect": "NoExecute"}]}),
    );
    let plain = info(&pod_json("p", json!({}), json!({})));
    assert_eq!(
        reason(taint_toleration(&plain, &data(&n))),
        "node(s) had untolerated taint {dedicated: gpu}"
    );
    let cases = [
        (
            json!([{"key": "dedicated", "operator": "Equal", "value": "gpu"}]),
            true,
        ),
        (
            json!([{"key": "dedicated", "value": "gpu", "effect": "NoExecute"}]),
            true,
        ),
        (json!([{"key": "dedicated", "value": "cpu"}]), false),
        (json!([{"key": "dedicated", "operator": "Exists"}]), true),
        (
            json!([{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}]),
            false,
        ),
        (json!([{"operator": "Exists"}]), true),
    ];
    for (tolerations, fits) in cases {
        let p = info(&pod_json(
            "q",
            json!({}),
            json!({"tolerations": tolerations.clone()}),
        ));
        assert_eq!(
            taint_toleration(&p, &data(&n)).is_ok(),
            fits,
            "{tolerations}"
        );
    }
}

// ---- NodeAffinity ----

#[test]
fn node_selector_and_required_node_affinity_must_both_match() {
    let n = node_json(
        "n1",
        "4",
        "8Gi",
        json!({"disk": "ssd", "zone": "a"}),
        json!({}),
    );
    let p = |spec: Value| info(&pod_json("p", json!({}), spec));
    assert!(
        node_affinity(
            &p(json!({"nodeSelector": {"disk": "ssd"}})),
            "n1",
            &data(&n)
        )
        .is_ok()
    );
    assert_eq!(
        reason(node_affinity(
            &p(json!({"nodeSelector": {"disk": "hdd"}})),
            "n1",
            &data(&n)
        )),
        ERR_NODE_AFFINITY
    );
    let affinity = |terms: Value| json!({"nodeSelector": {"disk": "ssd"}, "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}});
    let zone_b =
        json!([{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]}]);
    assert!(node_affinity(&p(affinity(zone_b)), "n1", &data(&n)).is_err());
    let zone_b_or_name = json!([
        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]},
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}
    ]);
    assert!(node_affinity(&p(affinity(zone_b_or_name)), "n1", &data(&n)).is_ok());
}

// ---- NodePorts ----

#[test]
fn a_host_port_in_use_on_the_node_refuses_the_pod() {
    let n = node("n1");
    let with_port = |name: &str, port: i32| {
        info(&pod_json(
            name,
            json!({}),
            json!({"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80, "hostPort": port}]}]}),
        ))
    };
    let mut ni = node_info(&n);
    ni.add_pod(Arc::new(with_port("a", 8080)));
    assert_eq!(
        reason(node_ports(&with_port("p", 8080), &ni)),
        ERR_NODE_PORTS
    );
    assert!(node_ports(&with_port("p", 8081), &ni).is_ok());
    ni.remove_pod("uid-a");
    assert!(
        node_ports(&with_port("p", 8080), &ni).is_ok(),
        "a removed pod frees its port"
    );
}

// ---- InterPodAffinity (required) ----

fn cache_with(nodes: &[Node], pods: &[(&str, Pod)]) -> Cache {
    let mut c = Cache::default();
    for n in nodes {
        c.upsert_node(n);
    }
    for (node, p) in pods {
        c.add_pod(node, Arc::new(info(p)), false);
    }
    c
}

fn zoned(name: &str, zone: &str) -> Node {
    node_json(
        name,
        "4",
        "8Gi",
        json!({"kubernetes.io/hostname": name, "topology.kubernetes.io/zone": zone}),
        json!({}),
    )
}

fn anti_affinity(key: &str) -> Value {
    json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": key}]}}})
}

fn inter_pod(cache: &Cache, p: &PodInfo, node: &str) -> Result<(), Reasons> {
    let st = inter_pod_prefilter(p, cache).unwrap();
    inter_pod_affinity(
        &st,
        p,
        cache.node_by_name(node).unwrap().node.as_ref().unwrap(),
    )
}

#[test]
fn required_anti_affinity_keeps_a_pod_out_of_a_domain_holding_a_matching_pod() {
    let c = cache_with(
        &[zoned("n1", "a"), zoned("n2", "a"), zoned("n3", "b")],
        &[("n1", pod_json("w1", json!({"app": "web"}), json!({})))],
    );
    let p = info(&pod_json(
        "w2",
        json!({"app": "web"}),
        anti_affinity("kubernetes.io/hostname"),
    ));
    assert_eq!(reason(inter_pod(&c, &p, "n1")), ERR_ANTI_AFFINITY);
    assert!(inter_pod(&c, &p, "n2").is_ok());
    let p = info(&pod_json(
        "w2",
        json!({"app": "web"}),
        anti_affinity("topology.kubernetes.io/zone"),
    ));
    assert_eq!(reason(inter_pod(&c, &p, "n2")), ERR_ANTI_AFFINITY);
    assert!(inter_pod(&c, &p, "n3").is_ok());
}

#[test]
fn an_existing_pods_required_anti_affinity_refuses_the_pods_it_selects() {
    let c = cache_with(
        &[zoned("n1", "a"), zoned("n2", "b")],
        &[(
            "n1",
            pod_json(
                "guard",
                json!({"app": "db"}),
                anti_affinity("kubernetes.io/hostname"),
            ),
        )],
    );
    let web = info(&pod_json("w", json!({"app": "web"}), json!({})));
    assert_eq!(
        reason(inter_pod(&c, &web, "n1")),
        ERR_EXISTING_ANTI_AFFINITY
    );
    assert!(inter_pod(&c, &web, "n2").is_ok());
    let other = info(&pod_json("o", json!({"app": "other"}), json!({})));
    assert!(inter_pod(&c, &other, "n1").is_ok());
}

#[test]
fn required_affinity_needs_a_matching_pod_in_the_domain_unless_the_pod_is_the_first_of_its_group() {
    let affinity = json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "cache"}}, "topologyKey": "topology.kubernetes.io/zone"}]}}});
    let empty = cache_with(&[zoned("n1", "a"), zoned("n2", "b")], &[]);
    let first = info(&pod_json("c1", json!({"app": "cache"}), affinity.clone()));
    assert!(
        inter_pod(&empty, &first, "n1").is_ok(),
        "the first pod of a self-affine group goes anywhere"
    );
    let stranger = info(&pod_json("x", json!({"app": "web"}), affinity.clone()));
    assert_eq!(reason(inter_pod(&empty, &stranger, "n1")), ERR_AFFINITY);
    let c = cache_with(
        &[zoned("n1", "a"), zoned("n2", "b")],
        &[("n1", pod_json("c1", json!({"app": "cache"}), json!({})))],
    );
    assert!(inter_pod(&c, &stranger, "n1").is_ok());
    assert_eq!(reason(inter_pod(&c, &stranger, "n2")), ERR_AFFINITY);
}

#[test]
fn affinity_terms_select_pods_in_their_namespaces_or_by_namespace_selector() {
    let mut other_ns = pod_json("w1", json!({"app": "web"}), json!({}));
    other_ns.metadata.namespace = Some("prod".into());
    let mut c = cache_with(&[zoned("n1", "a")], &[("n1", other_ns)]);
    c.namespaces.insert(
        "prod".into(),
        [("env".to_string(), "prod".to_string())].into(),
    );
    let own_ns = info(&pod_json(
        "w2",
        json!({"app": "web"}),
        anti_affinity("kubernetes.io/hostname"),
    ));
    assert!(
        inter_pod(&c, &own_ns, "n1").is_ok(),
        "terms default to the pod's own namespace"
    );
    let by_selector = info(&pod_json(
        "w3",
        json!({"app": "web"}),
        json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "web"}}, "namespaceSelector": {"matchLabels": {"env": "prod"}},
             "topologyKey": "kubernetes.io/hostname"}]}}}),
    ));
    assert_eq!(reason(inter_pod(&c, &by_selector, "n1")), ERR_ANTI_AFFINITY);
}

// ---- PodTopologySpread (DoNotSchedule) ----

fn spread_pod(name: &str, extra: Value) -> PodInfo {
    let mut c = json!({"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
        "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "web"}}});
    if let (Some(c), Some(e)) = (c.as_object_mut(), extra.as_object()) {
        c.extend(e.clone());
    }
    info(&pod_json(
        name,
        json!({"app": "web"}),
        json!({"topologySpreadConstraints": [c]}),
    ))
}

fn spread(cache: &Cache, p: &PodInfo, node: &str) -> Result<(), Reasons> {
    let st = spread_prefilter(p, cache).unwrap();
    topology_spread(
        &st,
        p,
        cache.node_by_name(node).unwrap().node.as_ref().unwrap(),
    )
}

#[test]
fn topology_spread_refuses_a_domain_that_would_exceed_max_skew() {
    let web = |n: &str| pod_json(n, json!({"app": "web"}), json!({}));
    let c = cache_with(
        &[zoned("n1", "a"), zoned("n2", "b"), node("bare")],
        &[("n1", web("w1")), ("n2", web("w2")), ("n1", web("w3"))],
    );
    let p = spread_pod("p", json!({}));
    assert_eq!(reason(spread(&c, &p, "n1")), ERR_SPREAD);
    assert!(spread(&c, &p, "n2").is_ok());
    assert_eq!(
        reason(spread(&c, &p, "bare")),
        ERR_SPREAD_LABEL,
        "only nodes with the key count"
    );
}

#[test]
fn min_domains_treats_missing_domains_as_empty() {
    let web = |n: &str| pod_json(n, json!({"app": "web"}), json!({}));
    let c = cache_with(
        &[zoned("n1", "a"), zoned("n2", "b")],
        &[("n1", web("w1")), ("n2", web("w2"))],
    );
    assert!(spread(&c, &spread_pod("p", json!({})), "n1").is_ok());
    let p = spread_pod("p", json!({"minDomains": 3}));
    assert_eq!(
        reason(spread(&c, &p, "n1")),
        ERR_SPREAD,
        "global minimum is 0 with 2 < 3 domains"
    );
}

#[test]
fn node_affinity_policy_honor_leaves_out_nodes_the_pod_cannot_use() {
    let web = |n: &str| pod_json(n, json!({"app": "web"}), json!({}));
    let mut b = zoned("n2", "b");
    b.metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("pool".into(), "other".into());
    let mut a = zoned("n1", "a");
    a.metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("pool".into(), "mine".into());
    let c = cache_with(&[a, b], &[("n1", web("w1"))]);
    let constraint = json!({"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
        "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "web"}}});
    let p = |policy: &str| {
        let mut c = constraint.clone();
        c["nodeAffinityPolicy"] = json!(policy);
        info(&pod_json(
            "p",
            json!({"app": "web"}),
            json!({"nodeSelector": {"pool": "mine"}, "topologySpreadConstraints": [c]}),
        ))
    };
    assert!(
        spread(&c, &p("Honor"), "n1").is_ok(),
        "zone b is not the pod's, so a is the minimum"
    );
    assert_eq!(reason(spread(&c, &p("Ignore"), "n1")), ERR_SPREAD);
}

#[test]
fn match_label_keys_narrow_the_spread_selector_to_the_pods_own_values() {
    let v = |n: &str, rev: &str| pod_json(n, json!({"app": "web", "rev": rev}), json!({}));
    let c = cache_with(
        &[zoned("n1", "a"), zoned("n2", "b")],
        &[("n1", v("o1", "old")), ("n1", v("o2", "old"))],
    );
    let mut p = pod_json(
        "p",
        json!({"app": "web", "rev": "new"}),
        json!({"topologySpreadConstraints": [
        {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule",
         "labelSelector": {"matchLabels": {"app": "web"}}, "matchLabelKeys": ["rev"]}]}),
    );
    assert!(
        spread(&c, &info(&p), "n1").is_ok(),
        "old revision pods are not counted"
    );
    p.spec
        .as_mut()
        .unwrap()
        .topology_spread_constraints
        .as_mut()
        .unwrap()[0]
        .match_label_keys = None;
    assert!(spread(&c, &info(&p), "n1").is_err());
}

// ---- Scores ----

#[test]
fn least_allocated_prefers_the_emptier_node() {
    let n = node("n1");
    let empty = node_info(&n);
    let mut busy = node_info(&n);
    busy.add_pod(Arc::new(requesting("a", "2", "4Gi")));
    let p = requesting("p", "1", "1Gi");
    let (e, b) = (
        scores::least_allocated(&p, &empty, &data(&n)),
        scores::least_allocated(&p, &busy, &data(&n)),
    );
    assert!(e > b, "{e} > {b}");
    assert_eq!(e, (75 + 87) / 2);
}

#[test]
fn balanced_allocation_prefers_equal_cpu_and_memory_fractions() {
    let n = node("n1"); // 4 cpu, 8Gi
    let ni = node_info(&n);
    let balanced = scores::balanced_allocation(&requesting("p", "2", "4Gi"), &ni, &data(&n));
    let skewed = scores::balanced_allocation(&requesting("p", "2", "100Mi"), &ni, &data(&n));
    assert_eq!(balanced, 100);
    assert!(skewed < balanced);
}

#[test]
fn prefer_no_schedule_taints_lower_a_nodes_score_unless_tolerated() {
    let tainted = node_json(
        "n1",
        "4",
        "8Gi",
        json!({}),
        json!({"taints": [{"key": "k", "effect": "PreferNoSchedule"}]}),
    );
    let plain = info(&pod_json("p", json!({}), json!({})));
    let mut raw = vec![
        scores::intolerable_prefer_no_schedule(&plain, &data(&tainted)),
        scores::intolerable_prefer_no_schedule(&plain, &data(&node("n2"))),
    ];
    scores::normalize_reverse(&mut raw);
    assert_eq!(raw, vec![0, 100]);
    let tolerant = info(&pod_json(
        "q",
        json!({}),
        json!({"tolerations": [{"key": "k", "operator": "Exists"}]}),
    ));
    assert_eq!(
        scores::intolerable_prefer_no_schedule(&tolerant, &data(&tainted)),
        0
    );
}

#[test]
fn preferred_node_affinity_adds_the_weights_of_matching_terms() {
    let n = node_json(
        "n1",
        "4",
        "8Gi",
        json!({"disk": "ssd", "zone": "a"}),
        json!({}),
    );
    let p = info(&pod_json(
        "p",
        json!({}),
        json!({"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 10, "preference": {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}},
        {"weight": 5, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]}}]}}}),
    ));
    assert_eq!(scores::preferred_node_affinity(&p, "n1", &data(&n)), 10);
}

#[test]
fn preferred_pod_affinity_raises_domains_with_matching_pods_and_anti_affinity_lowers_them() {
    let c = cache_with(
        &[zoned("n1", "a"), zoned("n2", "b")],
        &[("n1", pod_json("c1", json!({"app": "cache"}), json!({})))],
    );
    let term = json!({"weight": 50, "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "cache"}}, "topologyKey": "topology.kubernetes.io/zone"}});
    let near = info(&pod_json(
        "p",
        json!({}),
        json!({"affinity": {"podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [term.clone()]}}}),
    ));
    let far = info(&pod_json(
        "q",
        json!({}),
        json!({"affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [term]}}}),
    ));
    let raw = |p: &PodInfo| {
        let st = scores::inter_pod_prescore(p, &c).unwrap();
        ["n1", "n2"].map(|n| {
            scores::inter_pod_affinity(&st, c.node_by_name(n).unwrap().node.as_ref().unwrap())
        })
    };
    assert_eq!(raw(&near), [50, 0]);
    assert_eq!(raw(&far), [-50, 0]);
    let mut s = raw(&far).to_vec();
    scores::normalize_min_max(&mut s);
    assert_eq!(s, vec![0, 100]);
}

#[test]
fn replica_set_pods_spread_by_default_over_hostnames() {
    let owned = |name: &str| {
        let mut p = pod_json(name, json!({"app": "web"}), json!({}));
        p.metadata.owner_references = Some(vec![serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "rs-uid", "controller": true})).unwrap()]);
        p
    };
    let c = cache_with(
        &[zoned("n1", "a"), zoned("n2", "a")],
        &[("n1", owned("w1")), ("n1", owned("w2"))],
    );
    let p = info(&owned("w3"));
    assert_eq!(p.spread.len(), 2, "system default constraints apply");
    let all: Vec<usize> = c.live().to_vec();
    let st = scores::spread_prescore(&p, &c, &all).unwrap();
    let raw: Vec<Option<i64>> = ["n1", "n2"]
        .iter()
        .map(|n| scores::topology_spread(&st, &p, c.node_by_name(n).unwrap()))
        .collect();
    let norm = scores::normalize_spread(&raw);
    assert!(norm[1] > norm[0], "the empty node scores higher: {norm:?}");
}

// ---- Selection ----

#[test]
fn the_number_of_nodes_to_score_adapts_to_the_cluster_size() {
    assert_eq!(feasible_nodes_to_find(50), 50);
    assert_eq!(feasible_nodes_to_find(100), 100);
    assert_eq!(feasible_nodes_to_find(1_000), 420);
    assert_eq!(feasible_nodes_to_find(5_000), 500);
    assert_eq!(feasible_nodes_to_find(100_000), 5_000);
}

#[test]
fn select_node_picks_the_fitting_node_and_reports_every_misfit_in_kubes_words() {
    let tainted = node_json(
        "t",
        "4",
        "8Gi",
        json!({}),
        json!({"taints": [{"key": "k", "value": "v", "effect": "NoSchedule"}]}),
    );
    let mut c = cache_with(&[tainted, node("small1"), node("small2")], &[]);
    let mut rng = SmallRng::seed_from_u64(1);
    let mut start = 0;
    let big = requesting("big", "8", "1Gi");
    let err = select_node(&c, &big, &mut start, &mut rng).unwrap_err();
    assert_eq!(
        err.to_string(),
        "0/3 nodes are available: 1 node(s) had untolerated taint {k: v}, 2 Insufficient cpu. \
         preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
    );
    c.upsert_node(&node_json("huge", "16", "64Gi", json!({}), json!({})));
    let p = select_node(&c, &big, &mut start, &mut rng).unwrap();
    assert_eq!(c.node(p.node).name, "huge");
}

#[test]
fn with_no_nodes_the_message_says_so() {
    let e = FitError {
        nodes: 0,
        reasons: Default::default(),
    };
    assert_eq!(e.to_string(), "no nodes available to schedule pods");
}

#[test]
fn assumed_pods_keep_concurrent_placements_from_overcommitting_a_node() {
    let mut c = cache_with(&[node("n1"), node("n2")], &[]);
    let mut rng = SmallRng::seed_from_u64(7);
    let mut start = 0;
    // Each node has 4 CPUs: eight 1-CPU pods fit, the ninth does not.
    for i in 0..8 {
        let p = Arc::new(requesting(&format!("p{i}"), "1", "1Mi"));
        let pl = select_node(&c, &p, &mut start, &mut rng).unwrap();
        let name = c.node(pl.node).name.clone();
        c.add_pod(&name, p, true);
    }
    assert!(select_node(&c, &requesting("p9", "1", "1Mi"), &mut start, &mut rng).is_err());
    c.remove_pod("uid-p0"); // a failed binding is forgotten
    assert!(select_node(&c, &requesting("p9", "1", "1Mi"), &mut start, &mut rng).is_ok());
}

#[test]
fn large_clusters_evaluate_only_a_sample_of_nodes() {
    let nodes: Vec<Node> = (0..1_000).map(|i| node(&format!("n{i}"))).collect();
    let c = cache_with(&nodes, &[]);
    let mut rng = SmallRng::seed_from_u64(3);
    let mut start = 0;
    let p = select_node(&c, &requesting("p", "100m", "1Mi"), &mut start, &mut rng).unwrap();
    assert_eq!((p.evaluated, p.feasible), (420, 420));
    assert_eq!(start, 420, "the next pod starts where this one stopped");
}

// ---- Queue ----

#[test]
fn back_off_starts_at_one_second_and_doubles_to_ten() {
    let secs: Vec<u64> = (1..=6).map(|a| backoff_duration(a).as_secs()).collect();
    assert_eq!(secs, vec![1, 2, 4, 8, 10, 10]);
}

#[tokio::test(start_paused = true)]
async fn unschedulable_pods_wait_for_a_cluster_change_then_their_back_off() {
    let mut q = SchedulingQueue::default();
    let now = Instant::now();
    let hi = Arc::new(PodInfo {
        uid: "hi".into(),
        priority: 10,
        ..Default::default()
    });
    let lo = Arc::new(PodInfo {
        uid: "lo".into(),
        ..Default::default()
    });
    q.add_or_update(lo, false, now);
    q.add_or_update(hi, false, now);
    assert_eq!(
        q.pop(now).map(|p| p.uid.clone()),
        Some("hi".into()),
        "higher priority first"
    );
    q.unschedulable("hi", now);
    assert_eq!(q.pop(now).map(|p| p.uid.clone()), Some("lo".into()));
    assert!(q.pop(now).is_none());
    let later = now + Duration::from_millis(500);
    q.move_all_unschedulable(later);
    assert_eq!(q.get("hi").map(|p| p.state), Some(State::Backoff));
    assert!(q.pop(later).is_none(), "still backing off");
    assert_eq!(
        q.pop(now + Duration::from_secs(1)).map(|p| p.uid.clone()),
        Some("hi".into())
    );
    q.unschedulable("hi", now);
    q.flush_unschedulable(now + Duration::from_secs(59));
    assert_eq!(q.get("hi").map(|p| p.state), Some(State::Unschedulable));
    q.flush_unschedulable(now + Duration::from_secs(60));
    assert_ne!(
        q.get("hi").map(|p| p.state),
        Some(State::Unschedulable),
        "retried after 60 s"
    );
}
