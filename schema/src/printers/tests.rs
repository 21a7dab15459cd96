//! One table of objects and the cells kube-apiserver 1.33 prints for them, one checker.

#![allow(clippy::unwrap_used)] // a test that panics has failed

use serde_json::{Value, json};

use super::*;

/// "now" in every case: 2025-01-01T12:00:00Z.
fn now() -> i64 {
    parse_timestamp("2025-01-01T12:00:00Z").unwrap()
}

/// `minutes` before now, as a timestamp.
fn ago(seconds: i64) -> String {
    format_rfc3339(now() - seconds)
}

struct Case {
    what: &'static str,
    group: &'static str,
    kind: &'static str,
    object: Value,
    /// Every cell, wide columns included, as JSON.
    cells: Value,
}

fn pod(status: Value) -> Value {
    json!({
        "metadata": {"name": "p", "creationTimestamp": ago(300)},
        "spec": {"containers": [{"name": "a", "image": "x"}]},
        "status": status,
    })
}

fn pod_cells(ready: &str, status: &str, restarts: &str) -> Value {
    json!([
        "p", ready, status, restarts, "5m", "<none>", "<none>", "<none>", "<none>"
    ])
}

fn cases() -> Vec<Case> {
    let running = json!({"running": {"startedAt": ago(200)}});
    vec![
        Case {
            what: "a pod nobody scheduled is Pending",
            group: "",
            kind: "Pod",
            object: pod(json!({"phase": "Pending"})),
            cells: pod_cells("0/1", "Pending", "0"),
        },
        Case {
            what: "a pod whose container waits shows the waiting reason",
            group: "",
            kind: "Pod",
            object: pod(json!({"phase": "Pending", "containerStatuses": [
                {"name": "a", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}}
            ]})),
            cells: pod_cells("0/1", "ContainerCreating", "0"),
        },
        Case {
            what: "a pod with a ready running container is Running, with IP and node wide",
            group: "",
            kind: "Pod",
            object: json!({
                "metadata": {"name": "p", "creationTimestamp": ago(300)},
                "spec": {"containers": [{"name": "a"}, {"name": "b"}], "nodeName": "n1",
                         "readinessGates": [{"conditionType": "example.com/gate"}]},
                "status": {"phase": "Running", "podIPs": [{"ip": "10.0.0.7"}],
                  "conditions": [{"type": "Ready", "status": "True"}, {"type": "example.com/gate", "status": "True"}],
                  "containerStatuses": [
                    {"name": "a", "ready": true, "restartCount": 0, "state": running.clone()},
                    {"name": "b", "ready": false, "restartCount": 0, "state": running.clone()}
                ]}
            }),
            cells: json!([
                "p", "1/2", "Running", "0", "5m", "10.0.0.7", "n1", "<none>", "1/1"
            ]),
        },
        Case {
            what: "a pod whose containers all exited 0 is Completed",
            group: "",
            kind: "Pod",
            object: pod(json!({"phase": "Succeeded", "containerStatuses": [
                {"name": "a", "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}
            ]})),
            cells: pod_cells("0/1", "Completed", "0"),
        },
        Case {
            what: "a crash-looping pod counts restarts and says when the last one was",
            group: "",
            kind: "Pod",
            object: pod(json!({"phase": "Running", "containerStatuses": [
                {"name": "a", "ready": false, "restartCount": 4,
                 "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                 "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(90)}}}
            ]})),
            cells: pod_cells("0/1", "CrashLoopBackOff", "4 (90s ago)"),
        },
        Case {
            what: "a container killed by a signal without a reason shows the signal",
            group: "",
            kind: "Pod",
            object: pod(json!({"phase": "Failed", "containerStatuses": [
                {"name": "a", "restartCount": 0, "state": {"terminated": {"exitCode": 137, "signal": 9}}}
            ]})),
            cells: pod_cells("0/1", "Signal:9", "0"),
        },
        Case {
            what: "a pod being deleted is Terminating",
            group: "",
            kind: "Pod",
            object: json!({
                "metadata": {"name": "p", "creationTimestamp": ago(300), "deletionTimestamp": ago(1)},
                "spec": {"containers": [{"name": "a"}]},
                "status": {"phase": "Running", "containerStatuses": [
                    {"name": "a", "ready": true, "restartCount": 0, "state": running.clone()}]}
            }),
            cells: pod_cells("1/1", "Terminating", "0"),
        },
        Case {
            what: "a pod deleted on a lost node is Unknown",
            group: "",
            kind: "Pod",
            object: json!({
                "metadata": {"name": "p", "creationTimestamp": ago(300), "deletionTimestamp": ago(1)},
                "spec": {"containers": [{"name": "a"}]},
                "status": {"phase": "Running", "reason": "NodeLost"}
            }),
            cells: pod_cells("0/1", "Unknown", "0"),
        },
        Case {
            what: "a pod running its first init container is Init:0/1",
            group: "",
            kind: "Pod",
            object: json!({
                "metadata": {"name": "p", "creationTimestamp": ago(300)},
                "spec": {"initContainers": [{"name": "i"}], "containers": [{"name": "a"}]},
                "status": {"phase": "Pending",
                  "initContainerStatuses": [{"name": "i", "restartCount": 0, "state": running.clone()}],
                  "containerStatuses": [{"name": "a", "restartCount": 0, "state": {"waiting": {"reason": "PodInitializing"}}}]}
            }),
            cells: pod_cells("0/1", "Init:0/1", "0"),
        },
        Case {
            what: "a failing init container shows Init: and its reason",
            group: "",
            kind: "Pod",
            object: json!({
                "metadata": {"name": "p", "creationTimestamp": ago(300)},
                "spec": {"initContainers": [{"name": "i"}], "containers": [{"name": "a"}]},
                "status": {"phase": "Pending",
                  "initContainerStatuses": [{"name": "i", "restartCount": 2, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}
            }),
            cells: pod_cells("0/1", "Init:CrashLoopBackOff", "2"),
        },
        Case {
            what: "a started sidecar counts as a container and as ready",
            group: "",
            kind: "Pod",
            object: json!({
                "metadata": {"name": "p", "creationTimestamp": ago(300)},
                "spec": {"initContainers": [{"name": "s", "restartPolicy": "Always"}], "containers": [{"name": "a"}]},
                "status": {"phase": "Running", "conditions": [{"type": "Initialized", "status": "True"}, {"type": "Ready", "status": "True"}],
                  "initContainerStatuses": [{"name": "s", "ready": true, "started": true, "restartCount": 0, "state": running.clone()}],
                  "containerStatuses": [{"name": "a", "ready": true, "restartCount": 0, "state": running.clone()}]}
            }),
            cells: pod_cells("2/2", "Running", "0"),
        },
        Case {
            what: "a scheduling-gated pod says so",
            group: "",
            kind: "Pod",
            object: pod(
                json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]}),
            ),
            cells: pod_cells("0/1", "SchedulingGated", "0"),
        },
        Case {
            what: "a deployment shows ready/desired, up-to-date, available and wide containers",
            group: "apps",
            kind: "Deployment",
            object: json!({
                "metadata": {"name": "web", "creationTimestamp": ago(3 * 3600 + 20 * 60)},
                "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "tier", "operator": "In", "values": ["b", "a"]}]},
                         "template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:1.25"}, {"name": "side", "image": "busybox"}]}}},
                "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}
            }),
            cells: json!([
                "web",
                "2/3",
                3,
                2,
                "3h20m",
                "nginx,side",
                "nginx:1.25,busybox",
                "app=web,tier in (a,b)"
            ]),
        },
        Case {
            what: "a replicaset shows desired, current and ready as integers",
            group: "apps",
            kind: "ReplicaSet",
            object: json!({
                "metadata": {"name": "web-1", "creationTimestamp": ago(2 * 86400)},
                "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}}, "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}},
                "status": {"replicas": 2, "readyReplicas": 1}
            }),
            cells: json!(["web-1", 2, 2, 1, "2d", "c", "i", "app=web"]),
        },
        Case {
            what: "a statefulset shows ready/desired",
            group: "apps",
            kind: "StatefulSet",
            object: json!({"metadata": {"name": "db", "creationTimestamp": ago(59)},
                "spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "pg", "image": "postgres"}]}}},
                "status": {"readyReplicas": 3}}),
            cells: json!(["db", "3/3", "59s", "pg", "postgres"]),
        },
        Case {
            what: "a daemonset shows its node selector",
            group: "apps",
            kind: "DaemonSet",
            object: json!({"metadata": {"name": "agent", "creationTimestamp": ago(600)},
                "spec": {"selector": {"matchLabels": {"app": "agent"}}, "template": {"spec": {"nodeSelector": {"kubernetes.io/os": "linux"}, "containers": [{"name": "a", "image": "b"}]}}},
                "status": {"desiredNumberScheduled": 2, "currentNumberScheduled": 2, "numberReady": 1, "updatedNumberScheduled": 2, "numberAvailable": 1}}),
            cells: json!([
                "agent",
                2,
                2,
                1,
                2,
                1,
                "kubernetes.io/os=linux",
                "10m",
                "a",
                "b",
                "app=agent"
            ]),
        },
        Case {
            what: "a completed job shows Complete, completions and its duration",
            group: "batch",
            kind: "Job",
            object: json!({"metadata": {"name": "pi", "creationTimestamp": ago(3600)},
                "spec": {"completions": 1, "selector": {"matchLabels": {"job-name": "pi"}}, "template": {"spec": {"containers": [{"name": "pi", "image": "perl"}]}}},
                "status": {"succeeded": 1, "startTime": ago(3600), "completionTime": ago(3600 - 75),
                           "conditions": [{"type": "Complete", "status": "True"}]}}),
            cells: json!([
                "pi",
                "Complete",
                "1/1",
                "75s",
                "60m",
                "pi",
                "perl",
                "job-name=pi"
            ]),
        },
        Case {
            what: "a cronjob shows schedule, timezone, suspend and last schedule",
            group: "batch",
            kind: "CronJob",
            object: json!({"metadata": {"name": "nightly", "creationTimestamp": ago(8 * 86400)},
                "spec": {"schedule": "0 3 * * *", "suspend": false, "jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}}}},
                "status": {"lastScheduleTime": ago(9 * 3600)}}),
            cells: json!([
                "nightly",
                "0 3 * * *",
                "<none>",
                "False",
                0,
                "9h",
                "8d",
                "c",
                "i",
                "<none>"
            ]),
        },
        Case {
            what: "a service shows type, cluster IP, ports with node ports, and its selector wide",
            group: "",
            kind: "Service",
            object: json!({"metadata": {"name": "web", "creationTimestamp": ago(30)},
                "spec": {"type": "NodePort", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                         "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}],
                         "selector": {"app": "web"}}}),
            cells: json!([
                "web",
                "NodePort",
                "10.96.0.10",
                "<none>",
                "80:30080/TCP,53/UDP",
                "30s",
                "app=web"
            ]),
        },
        Case {
            what: "a service without type or protocol reads as kube's defaults",
            group: "",
            kind: "Service",
            object: json!({"metadata": {"name": "plain", "creationTimestamp": ago(30)}, "spec": {"ports": [{"port": 443}]}}),
            cells: json!([
                "plain",
                "ClusterIP",
                "<none>",
                "<none>",
                "443/TCP",
                "30s",
                "<none>"
            ]),
        },
        Case {
            what: "a load balancer without an address is pending",
            group: "",
            kind: "Service",
            object: json!({"metadata": {"name": "lb", "creationTimestamp": ago(30)}, "spec": {"type": "LoadBalancer", "clusterIP": "10.0.0.1"}}),
            cells: json!([
                "lb",
                "LoadBalancer",
                "10.0.0.1",
                "<pending>",
                "<none>",
                "30s",
                "<none>"
            ]),
        },
        Case {
            what: "endpoints list at most three addresses",
            group: "",
            kind: "Endpoints",
            object: json!({"metadata": {"name": "web", "creationTimestamp": ago(30)},
                "subsets": [{"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}, {"ip": "fd00::3"}, {"ip": "10.0.0.4"}], "ports": [{"port": 80}]}]}),
            cells: json!([
                "web",
                "10.0.0.1:80,10.0.0.2:80,[fd00::3]:80 + 1 more...",
                "30s"
            ]),
        },
        Case {
            what: "a ready cordoned control-plane node",
            group: "",
            kind: "Node",
            object: json!({"metadata": {"name": "n1", "creationTimestamp": ago(400 * 86400),
                    "labels": {"node-role.kubernetes.io/control-plane": "", "node-role.kubernetes.io/etcd": ""}},
                "spec": {"unschedulable": true},
                "status": {"conditions": [{"type": "Ready", "status": "True"}],
                    "addresses": [{"type": "InternalIP", "address": "192.168.1.2"}],
                    "nodeInfo": {"kubeletVersion": "v1.33.0", "osImage": "Debian"}}}),
            cells: json!([
                "n1",
                "Ready,SchedulingDisabled",
                "control-plane,etcd",
                "400d",
                "v1.33.0",
                "192.168.1.2",
                "<none>",
                "Debian",
                "<unknown>",
                "<unknown>"
            ]),
        },
        Case {
            what: "a namespace shows its phase",
            group: "",
            kind: "Namespace",
            object: json!({"metadata": {"name": "default", "creationTimestamp": ago(3 * 365 * 86400 + 20 * 86400)}, "status": {"phase": "Active"}}),
            cells: json!(["default", "Active", "3y20d"]),
        },
        Case {
            what: "a configmap counts data and binaryData",
            group: "",
            kind: "ConfigMap",
            object: json!({"metadata": {"name": "cm", "creationTimestamp": ago(5)}, "data": {"a": "1", "b": "2"}, "binaryData": {"c": "AA=="}}),
            cells: json!(["cm", 3, "5s"]),
        },
        Case {
            what: "a secret shows its type and key count",
            group: "",
            kind: "Secret",
            object: json!({"metadata": {"name": "s", "creationTimestamp": ago(7 * 60 + 5)}, "type": "Opaque", "data": {"a": "MQ=="}}),
            cells: json!(["s", "Opaque", 1, "7m5s"]),
        },
        Case {
            what: "a core event shows last seen, object and message",
            group: "",
            kind: "Event",
            object: json!({"metadata": {"name": "p.1", "creationTimestamp": ago(60)},
                "involvedObject": {"kind": "Pod", "name": "p", "fieldPath": "spec.containers{a}"},
                "type": "Normal", "reason": "Pulled", "message": " pulled \n", "source": {"component": "kubelet", "host": "n1"},
                "firstTimestamp": ago(600), "lastTimestamp": ago(60), "count": 3}),
            cells: json!([
                "60s",
                "Normal",
                "Pulled",
                "pod/p",
                "spec.containers{a}",
                "kubelet, n1",
                "pulled",
                "10m",
                3,
                "p.1"
            ]),
        },
        Case {
            what: "an events.k8s.io event reads its own field names",
            group: "events.k8s.io",
            kind: "Event",
            object: json!({"metadata": {"name": "e", "creationTimestamp": ago(60)},
                "regarding": {"kind": "Node", "name": "n1"}, "type": "Warning", "reason": "Boom", "note": "it broke",
                "eventTime": "2025-01-01T11:59:00.000000Z", "reportingController": "ctl"}),
            cells: json!([
                "60s", "Warning", "Boom", "node/n1", "", "ctl", "it broke", "60s", 1, "e"
            ]),
        },
        Case {
            what: "a role binding names its role and subjects wide",
            group: "rbac.authorization.k8s.io",
            kind: "RoleBinding",
            object: json!({"metadata": {"name": "rb", "creationTimestamp": ago(30)},
                "roleRef": {"kind": "Role", "name": "reader"},
                "subjects": [{"kind": "User", "name": "jane"}, {"kind": "ServiceAccount", "namespace": "ns", "name": "bot"}]}),
            cells: json!(["rb", "Role/reader", "30s", "jane", "", "ns:bot"]),
        },
        Case {
            what: "a kind without a printer gets the default Name and Created At",
            group: "rbac.authorization.k8s.io",
            kind: "ClusterRole",
            object: json!({"metadata": {"name": "admin", "creationTimestamp": "2024-03-04T05:06:07Z"}}),
            cells: json!(["admin", "2024-03-04T05:06:07Z"]),
        },
        Case {
            what: "a storage class marked default says so in its name",
            group: "storage.k8s.io",
            kind: "StorageClass",
            object: json!({"metadata": {"name": "std", "creationTimestamp": ago(30),
                "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}}, "provisioner": "csi.example.com"}),
            cells: json!([
                "std (default)",
                "csi.example.com",
                "Delete",
                "Immediate",
                false,
                "30s"
            ]),
        },
        Case {
            what: "a bound claim shows its volume, capacity and access modes",
            group: "",
            kind: "PersistentVolumeClaim",
            object: json!({"metadata": {"name": "data", "creationTimestamp": ago(30)},
                "spec": {"volumeName": "pv1", "storageClassName": "std"},
                "status": {"phase": "Bound", "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany", "ReadWriteOnce"]}}),
            cells: json!([
                "data", "Bound", "pv1", "1Gi", "RWO,RWX", "std", "<unset>", "30s", "<unset>"
            ]),
        },
        Case {
            what: "an hpa on cpu utilisation",
            group: "autoscaling",
            kind: "HorizontalPodAutoscaler",
            object: json!({"metadata": {"name": "h", "creationTimestamp": ago(30)},
                "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "minReplicas": 1, "maxReplicas": 5,
                    "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]},
                "status": {"currentReplicas": 2}}),
            cells: json!([
                "h",
                "Deployment/web",
                "cpu: <unknown>/80%",
                "1",
                5,
                2,
                "30s"
            ]),
        },
        Case {
            what: "a pod disruption budget prints N/A for what it does not set",
            group: "policy",
            kind: "PodDisruptionBudget",
            object: json!({"metadata": {"name": "pdb", "creationTimestamp": ago(30)}, "spec": {"minAvailable": "50%"}, "status": {"disruptionsAllowed": 1}}),
            cells: json!(["pdb", "50%", "N/A", 1, "30s"]),
        },
        Case {
            what: "an ingress lists hosts, address and ports",
            group: "networking.k8s.io",
            kind: "Ingress",
            object: json!({"metadata": {"name": "ing", "creationTimestamp": ago(30)},
                "spec": {"ingressClassName": "nginx", "rules": [{"host": "a.example"}, {"host": "b.example"}], "tls": [{}]},
                "status": {"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}}}),
            cells: json!([
                "ing",
                "nginx",
                "a.example,b.example",
                "1.2.3.4",
                "80, 443",
                "30s"
            ]),
        },
        Case {
            what: "a lease shows its holder",
            group: "coordination.k8s.io",
            kind: "Lease",
            object: json!({"metadata": {"name": "l", "creationTimestamp": ago(30)}, "spec": {"holderIdentity": "me"}}),
            cells: json!(["l", "me", "30s"]),
        },
        Case {
            what: "a priority class shows value and global default",
            group: "scheduling.k8s.io",
            kind: "PriorityClass",
            object: json!({"metadata": {"name": "high", "creationTimestamp": ago(30)}, "value": 1000, "globalDefault": true, "preemptionPolicy": "Never"}),
            cells: json!(["high", 1000, true, "30s", "Never"]),
        },
        Case {
            what: "an object without a creation time is <unknown> old",
            group: "",
            kind: "ConfigMap",
            object: json!({"metadata": {"name": "cm"}}),
            cells: json!(["cm", 0, "<unknown>"]),
        },
    ]
}

#[test]
fn every_printed_row_has_the_cells_kube_apiserver_prints() {
    let mut failures = Vec::new();
    for c in cases() {
        let printer = printer_for(c.group, c.kind, false);
        let row = (printer.row)(&c.object, now());
        assert_eq!(
            row.cells.len(),
            printer.columns.len(),
            "{}: one cell per column",
            c.what
        );
        if Value::Array(row.cells.clone()) != c.cells {
            failures.push(format!(
                "{}:\n  want {}\n  got  {}",
                c.what,
                c.cells,
                Value::Array(row.cells)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn ages_are_formatted_like_apimachinery_human_duration() {
    let cases: &[(i64, &str)] = &[
        (-5, "<invalid>"),
        (-1, "0s"),
        (0, "0s"),
        (59, "59s"),
        (119, "119s"),
        (120, "2m"),
        (125, "2m5s"),
        (599, "9m59s"),
        (600, "10m"),
        (179 * 60 + 59, "179m"),
        (3 * 3600, "3h"),
        (3 * 3600 + 20 * 60, "3h20m"),
        (8 * 3600, "8h"),
        (47 * 3600, "47h"),
        (2 * 86400, "2d"),
        (2 * 86400 + 5 * 3600, "2d5h"),
        (8 * 86400, "8d"),
        (729 * 86400, "729d"),
        (2 * 365 * 86400, "2y"),
        (3 * 365 * 86400 + 4 * 86400, "3y4d"),
        (9 * 365 * 86400, "9y"),
    ];
    for (secs, want) in cases {
        assert_eq!(human_duration(*secs), *want, "{secs} s");
    }
}

#[test]
fn timestamps_parse_with_fractions_and_offsets_and_format_back() {
    let base = parse_timestamp("2024-02-29T23:59:59Z").unwrap();
    assert_eq!(format_rfc3339(base), "2024-02-29T23:59:59Z");
    assert_eq!(parse_timestamp("2024-02-29T23:59:59.123456Z"), Some(base));
    assert_eq!(parse_timestamp("2024-03-01T01:59:59+02:00"), Some(base));
    assert_eq!(parse_timestamp("1970-01-01T00:00:00Z"), Some(0));
    for bad in [
        "",
        "yesterday",
        "2024-13-01T00:00:00Z",
        "2024-01-01T00:00:00",
    ] {
        assert_eq!(parse_timestamp(bad), None, "{bad:?}");
    }
}

#[test]
fn finished_pods_carry_the_completed_row_condition() {
    let row = (POD.row)(&pod(json!({"phase": "Succeeded"})), now());
    assert_eq!(row.completed.map(|c| c.reason), Some("Succeeded"));
    let row = (POD.row)(&pod(json!({"phase": "Failed"})), now());
    assert_eq!(row.completed.map(|c| c.reason), Some("Failed"));
    let row = (POD.row)(&pod(json!({"phase": "Running"})), now());
    assert_eq!(row.completed, None);
}

#[test]
fn column_descriptions_resolve_from_the_openapi_definitions() {
    let docs = Docs::load();
    for printer in all() {
        let defs = docs.column_definitions(printer);
        for (col, def) in printer.columns.iter().zip(defs.as_array().unwrap()) {
            if let Doc::Field(d, p) = col.doc {
                assert!(
                    !def["description"].as_str().unwrap().is_empty(),
                    "{}: {} has no description at {d}.{p}",
                    printer.id,
                    col.name
                );
            }
        }
    }
    let pod = docs.column_definitions(&POD);
    assert_eq!(pod[0]["name"], "Name");
    assert_eq!(pod[0]["format"], "name");
    assert_eq!(pod[5]["priority"], 1);
}

#[test]
fn custom_resources_get_name_and_a_date_typed_age() {
    let p = printer_for("example.com", "Widget", true);
    assert_eq!(p.columns[1].name, "Age");
    assert_eq!(p.columns[1].kind, "date");
    let row = (p.row)(
        &json!({"metadata": {"name": "w", "creationTimestamp": ago(45)}}),
        now(),
    );
    assert_eq!(row.cells, vec![json!("w"), json!("45s")]);
}
