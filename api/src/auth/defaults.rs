//! The roles and bindings every cluster starts with (kube-apiserver's bootstrap policy,
//! trimmed to the resources Logbook serves), and least-privilege roles for Logbook's own
//! components. Created when missing at startup; an existing object is left alone, so an
//! administrator's change to a default role sticks (kube's `autoupdate=false`).

use serde_json::{Value, json};

const AGG: &str = "rbac.authorization.k8s.io/aggregate-to-";
const READ: [&str; 3] = ["get", "list", "watch"];
const WRITE: [&str; 6] = [
    "create",
    "delete",
    "deletecollection",
    "patch",
    "update",
    "get",
];

fn rule(verbs: &[&str], groups: &[&str], resources: &[&str]) -> Value {
    json!({"verbs": verbs, "apiGroups": groups, "resources": resources})
}

fn paths(verbs: &[&str], urls: &[&str]) -> Value {
    json!({"verbs": verbs, "nonResourceURLs": urls})
}

/// The workload resources users read (view) and write (edit), by group.
const WORKLOADS: &[(&str, &[&str])] = &[
    (
        "",
        &[
            "pods",
            "pods/log",
            "pods/status",
            "configmaps",
            "endpoints",
            "persistentvolumeclaims",
            "persistentvolumeclaims/status",
            "replicationcontrollers",
            "replicationcontrollers/scale",
            "replicationcontrollers/status",
            "serviceaccounts",
            "services",
            "services/status",
            "bindings",
            "events",
            "limitranges",
            "resourcequotas",
            "resourcequotas/status",
            "namespaces",
            "namespaces/status",
            "podtemplates",
        ],
    ),
    (
        "apps",
        &[
            "controllerrevisions",
            "daemonsets",
            "daemonsets/status",
            "deployments",
            "deployments/scale",
            "deployments/status",
            "replicasets",
            "replicasets/scale",
            "replicasets/status",
            "statefulsets",
            "statefulsets/scale",
            "statefulsets/status",
        ],
    ),
    (
        "autoscaling",
        &[
            "horizontalpodautoscalers",
            "horizontalpodautoscalers/status",
        ],
    ),
    (
        "batch",
        &["cronjobs", "cronjobs/status", "jobs", "jobs/status"],
    ),
    (
        "policy",
        &["poddisruptionbudgets", "poddisruptionbudgets/status"],
    ),
    (
        "networking.k8s.io",
        &["ingresses", "ingresses/status", "networkpolicies"],
    ),
    ("discovery.k8s.io", &["endpointslices"]),
    ("events.k8s.io", &["events"]),
    ("coordination.k8s.io", &["leases"]),
    ("history.logbook.dev", &["revisions", "changes"]),
];

fn cluster_role(name: &str, labels: Value, rules: Vec<Value>) -> Value {
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": name, "labels": labels,
            "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}},
        "rules": rules})
}

fn aggregated(name: &str, labels: Value, selector: &str) -> Value {
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": name, "labels": labels,
            "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}},
        "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {format!("{AGG}{selector}"): "true"}}]},
        "rules": []})
}

fn binding(name: &str, role: &str, subjects: &[(&str, &str)]) -> Value {
    let subjects: Vec<Value> = subjects
        .iter()
        .map(|(kind, n)| json!({"kind": kind, "apiGroup": "rbac.authorization.k8s.io", "name": n}))
        .collect();
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": name, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
            "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": subjects})
}

/// The default ClusterRoles.
pub fn cluster_roles() -> Vec<Value> {
    let boot = |extra: Value| {
        let mut l = json!({"kubernetes.io/bootstrapping": "rbac-defaults"});
        if let (Some(m), Some(e)) = (l.as_object_mut(), extra.as_object()) {
            m.extend(e.clone());
        }
        l
    };
    let view_rules: Vec<Value> = WORKLOADS
        .iter()
        .map(|(g, rs)| rule(&READ, &[g], rs))
        .collect();
    let mut edit_rules: Vec<Value> = WORKLOADS
        .iter()
        .filter(|(g, _)| *g != "history.logbook.dev")
        .map(|(g, rs)| {
            let rs: Vec<&str> = rs
                .iter()
                .copied()
                .filter(|r| {
                    !r.ends_with("/status") && !r.starts_with("namespaces") && *r != "bindings"
                })
                .collect();
            rule(&WRITE, &[g], &rs)
        })
        .collect();
    edit_rules.push(rule(
        &[
            "get",
            "list",
            "watch",
            "create",
            "delete",
            "deletecollection",
            "patch",
            "update",
        ],
        &[""],
        &["secrets"],
    ));
    edit_rules.push(rule(
        &["create", "get"],
        &[""],
        &[
            "pods/attach",
            "pods/exec",
            "pods/portforward",
            "pods/proxy",
            "services/proxy",
        ],
    ));
    edit_rules.push(rule(
        &["create"],
        &[""],
        &["pods/eviction", "serviceaccounts/token"],
    ));
    edit_rules.push(rule(&["create"], &["policy"], &["pods/eviction"]));
    edit_rules.push(rule(&["impersonate"], &[""], &["serviceaccounts"]));
    let admin_rules = vec![
        rule(
            &[
                "create",
                "delete",
                "deletecollection",
                "get",
                "list",
                "patch",
                "update",
                "watch",
            ],
            &["rbac.authorization.k8s.io"],
            &["roles", "rolebindings"],
        ),
        rule(
            &["create"],
            &["authorization.k8s.io"],
            &["localsubjectaccessreviews"],
        ),
    ];
    let review = rule(
        &["create"],
        &["authorization.k8s.io"],
        &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
    );
    vec![
        cluster_role(
            "cluster-admin",
            boot(json!({})),
            vec![rule(&["*"], &["*"], &["*"]), paths(&["*"], &["*"])],
        ),
        aggregated("admin", boot(json!({})), "admin"),
        aggregated("edit", boot(json!({format!("{AGG}admin"): "true"})), "edit"),
        aggregated("view", boot(json!({format!("{AGG}edit"): "true"})), "view"),
        cluster_role(
            "system:aggregate-to-admin",
            boot(json!({format!("{AGG}admin"): "true"})),
            admin_rules,
        ),
        cluster_role(
            "system:aggregate-to-edit",
            boot(json!({format!("{AGG}edit"): "true"})),
            edit_rules,
        ),
        cluster_role(
            "system:aggregate-to-view",
            boot(json!({format!("{AGG}view"): "true"})),
            view_rules,
        ),
        cluster_role(
            "system:basic-user",
            boot(json!({})),
            vec![
                review,
                rule(
                    &["create"],
                    &["authentication.k8s.io"],
                    &["selfsubjectreviews"],
                ),
            ],
        ),
        cluster_role(
            "system:discovery",
            boot(json!({})),
            vec![paths(
                &["get"],
                &[
                    "/api",
                    "/api/*",
                    "/apis",
                    "/apis/*",
                    "/healthz",
                    "/livez",
                    "/openapi",
                    "/openapi/*",
                    "/readyz",
                    "/version",
                    "/version/",
                ],
            )],
        ),
        cluster_role(
            "system:public-info-viewer",
            boot(json!({})),
            vec![paths(
                &["get"],
                &["/healthz", "/livez", "/readyz", "/version", "/version/"],
            )],
        ),
        cluster_role(
            "system:service-account-issuer-discovery",
            boot(json!({})),
            vec![paths(
                &["get"],
                &[
                    "/.well-known/openid-configuration",
                    "/.well-known/openid-configuration/",
                    "/openid/v1/jwks",
                    "/openid/v1/jwks/",
                ],
            )],
        ),
        cluster_role(
            "system:auth-delegator",
            boot(json!({})),
            vec![
                rule(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
                rule(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["subjectaccessreviews"],
                ),
            ],
        ),
        cluster_role(
            "system:node-bootstrapper",
            boot(json!({})),
            vec![rule(
                &["create", "get", "list", "watch"],
                &["certificates.k8s.io"],
                &["certificatesigningrequests"],
            )],
        ),
        cluster_role(
            "system:monitoring",
            boot(json!({})),
            vec![paths(
                &["get"],
                &[
                    "/healthz",
                    "/healthz/*",
                    "/livez",
                    "/livez/*",
                    "/metrics",
                    "/readyz",
                    "/readyz/*",
                ],
            )],
        ),
        cluster_role(
            "system:kube-scheduler",
            boot(json!({})),
            vec![
                rule(
                    &["create", "patch", "update"],
                    &["", "events.k8s.io"],
                    &["events"],
                ),
                rule(&["create"], &["coordination.k8s.io"], &["leases"]),
                rule(&["get", "update"], &["coordination.k8s.io"], &["leases"]),
                rule(&["get", "list", "watch", "delete"], &[""], &["pods"]),
                rule(&["create"], &[""], &["pods/binding", "bindings"]),
                rule(&["patch", "update"], &[""], &["pods/status"]),
                rule(
                    &READ,
                    &[""],
                    &[
                        "nodes",
                        "namespaces",
                        "services",
                        "replicationcontrollers",
                        "persistentvolumeclaims",
                        "persistentvolumes",
                        "configmaps",
                    ],
                ),
                rule(&READ, &["apps"], &["replicasets", "statefulsets"]),
                rule(&READ, &["policy"], &["poddisruptionbudgets"]),
                rule(
                    &READ,
                    &["storage.k8s.io"],
                    &[
                        "storageclasses",
                        "csinodes",
                        "csidrivers",
                        "csistoragecapacities",
                    ],
                ),
                rule(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
                rule(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["subjectaccessreviews"],
                ),
            ],
        ),
        // One identity for every controller: the garbage collector and the namespace
        // controller read, update and delete objects of every resource; creates are named.
        cluster_role(
            "system:kube-controller-manager",
            boot(json!({})),
            vec![
                rule(
                    &[
                        "get",
                        "list",
                        "watch",
                        "update",
                        "patch",
                        "delete",
                        "deletecollection",
                    ],
                    &["*"],
                    &["*"],
                ),
                rule(
                    &["create"],
                    &[""],
                    &[
                        "pods",
                        "endpoints",
                        "events",
                        "serviceaccounts",
                        "configmaps",
                        "resourcequotas",
                        "persistentvolumeclaims",
                    ],
                ),
                rule(
                    &["create"],
                    &["apps"],
                    &["replicasets", "controllerrevisions"],
                ),
                rule(&["create"], &["batch"], &["jobs"]),
                rule(&["create"], &["discovery.k8s.io"], &["endpointslices"]),
                rule(&["create"], &["events.k8s.io"], &["events"]),
                rule(&["create"], &["coordination.k8s.io"], &["leases"]),
                rule(&["create"], &["", "policy"], &["pods/eviction"]),
                rule(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
                rule(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["subjectaccessreviews"],
                ),
            ],
        ),
        // `logbook serve --simulate-nodes`: one process plays many nodes, so it cannot be
        // one node's identity; it gets what its nodes do, for every node.
        cluster_role(
            "system:logbook:simulated-nodes",
            boot(json!({})),
            vec![
                rule(
                    &[
                        "get", "list", "watch", "create", "update", "patch", "delete",
                    ],
                    &[""],
                    &["nodes", "nodes/status"],
                ),
                rule(
                    &[
                        "get", "list", "watch", "create", "update", "patch", "delete",
                    ],
                    &["coordination.k8s.io"],
                    &["leases"],
                ),
                rule(&["get", "list", "watch", "delete"], &[""], &["pods"]),
                rule(&["update", "patch"], &[""], &["pods/status"]),
                rule(
                    &["create", "patch", "update"],
                    &["", "events.k8s.io"],
                    &["events"],
                ),
                rule(
                    &READ,
                    &[""],
                    &[
                        "configmaps",
                        "secrets",
                        "services",
                        "endpoints",
                        "namespaces",
                    ],
                ),
            ],
        ),
        cluster_role(
            "system:logbook:retention",
            boot(json!({})),
            vec![rule(
                &["get", "create", "update"],
                &["coordination.k8s.io"],
                &["leases"],
            )],
        ),
    ]
}

/// The default ClusterRoleBindings.
pub fn cluster_role_bindings() -> Vec<Value> {
    vec![
        binding(
            "cluster-admin",
            "cluster-admin",
            &[("Group", "system:masters")],
        ),
        binding(
            "system:basic-user",
            "system:basic-user",
            &[("Group", "system:authenticated")],
        ),
        binding(
            "system:discovery",
            "system:discovery",
            &[("Group", "system:authenticated")],
        ),
        binding(
            "system:public-info-viewer",
            "system:public-info-viewer",
            &[
                ("Group", "system:authenticated"),
                ("Group", "system:unauthenticated"),
            ],
        ),
        binding(
            "system:service-account-issuer-discovery",
            "system:service-account-issuer-discovery",
            &[("Group", "system:serviceaccounts")],
        ),
        binding(
            "system:monitoring",
            "system:monitoring",
            &[("Group", "system:monitoring")],
        ),
        binding(
            "system:node-bootstrapper",
            "system:node-bootstrapper",
            &[("Group", "system:bootstrappers")],
        ),
        binding(
            "system:kube-scheduler",
            "system:kube-scheduler",
            &[("User", "system:kube-scheduler")],
        ),
        binding(
            "system:kube-controller-manager",
            "system:kube-controller-manager",
            &[("User", "system:kube-controller-manager")],
        ),
        binding(
            "system:logbook:simulated-nodes",
            "system:logbook:simulated-nodes",
            &[("User", "system:logbook:simulated-nodes")],
        ),
        binding(
            "system:logbook:retention",
            "system:logbook:retention",
            &[("User", "system:logbook:retention")],
        ),
    ]
}
