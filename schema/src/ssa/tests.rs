//! The documented server-side apply behaviours as tables: each case is a sequence of
//! writes, and after each one the object and the whole ownership table are asserted.

use super::*;

/// One write.
enum Op {
    /// Server-side apply of a configuration.
    Apply {
        manager: &'static str,
        force: bool,
        config: Value,
    },
    /// A non-apply write: the live object with this JSON merge patch (RFC 7396) applied.
    Update { manager: &'static str, patch: Value },
}

/// What a write must produce.
enum Expect {
    /// The object (without `managedFields`) and the owners: (manager, operation, paths).
    Object(Value, Vec<(&'static str, &'static str, Vec<&'static str>)>),
    /// Refused with these conflicts: (owner as kube prints it, field).
    Conflicts(Vec<(&'static str, &'static str)>),
}

struct Case {
    name: &'static str,
    schema: &'static dyn Schema,
    /// The object the case starts from, if any (without managedFields).
    live: Option<Value>,
    steps: Vec<(Op, Expect)>,
}

fn deployment() -> &'static dyn Schema {
    static S: std::sync::LazyLock<OpenApiSchema<'static>> = std::sync::LazyLock::new(|| {
        OpenApiSchema::builtin("apps", "v1", "Deployment").expect("Deployment is defined")
    });
    &*S
}

fn configmap() -> &'static dyn Schema {
    static S: std::sync::LazyLock<OpenApiSchema<'static>> = std::sync::LazyLock::new(|| {
        OpenApiSchema::builtin("", "v1", "ConfigMap").expect("ConfigMap is defined")
    });
    &*S
}

static DEDUCED: Deduced = Deduced;

fn merge_patch(target: &Value, patch: &Value) -> Value {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            let mut out = t.clone();
            for (k, v) in p {
                if v.is_null() {
                    out.remove(k);
                } else {
                    let merged = merge_patch(t.get(k).unwrap_or(&Value::Null), v);
                    out.insert(k.clone(), merged);
                }
            }
            Value::Object(out)
        }
        (_, p) => p.clone(),
    }
}

fn owners(obj: &Value) -> Vec<(String, String, Vec<String>)> {
    managed_fields(obj)
        .expect("managedFields decode")
        .into_iter()
        .map(|e| {
            (
                e.manager.clone(),
                e.operation.as_str().to_string(),
                e.fields.paths().iter().map(ToString::to_string).collect(),
            )
        })
        .collect()
}

fn run(case: &Case) {
    let mut live = case.live.clone();
    for (i, (op, expect)) in case.steps.iter().enumerate() {
        let now = format!("2025-01-01T00:00:{:02}Z", i + 10);
        let at = format!("case {:?}, step {i}", case.name);
        let result = match op {
            Op::Apply {
                manager,
                force,
                config,
            } => {
                let api_version = config["apiVersion"].as_str().unwrap_or("v1");
                let w = Writer {
                    manager,
                    api_version,
                    subresource: None,
                    now: &now,
                    ignored: None,
                };
                apply(live.as_ref(), config, &w, *force, case.schema)
            }
            Op::Update { manager, patch } => {
                let base = live.clone().unwrap_or(Value::Null);
                let new = merge_patch(&base, patch);
                let api_version = new["apiVersion"].as_str().unwrap_or("v1").to_string();
                let w = Writer {
                    manager,
                    api_version: &api_version,
                    subresource: None,
                    now: &now,
                    ignored: None,
                };
                Ok(update(live.as_ref(), &new, &w, case.schema))
            }
        };
        match (expect, result) {
            (Expect::Object(want, want_owners), Ok(got)) => {
                assert_eq!(&without_managed_fields(&got), want, "{at}: object");
                let want_owners: Vec<(String, String, Vec<String>)> = want_owners
                    .iter()
                    .map(|(m, op, paths)| {
                        (
                            m.to_string(),
                            op.to_string(),
                            paths.iter().map(ToString::to_string).collect(),
                        )
                    })
                    .collect();
                assert_eq!(owners(&got), want_owners, "{at}: owners");
                live = Some(got);
            }
            (Expect::Conflicts(want), Err(ApplyError::Conflicts(c))) => {
                let got: Vec<(String, String)> =
                    c.0.iter().map(|c| (c.owner(), c.field())).collect();
                let want: Vec<(String, String)> = want
                    .iter()
                    .map(|(o, f)| (o.to_string(), f.to_string()))
                    .collect();
                assert_eq!(got, want, "{at}: conflicts");
            }
            (Expect::Object(..), Err(e)) => panic!("{at}: refused: {e}"),
            (Expect::Conflicts(_), Ok(got)) => panic!("{at}: expected conflicts, got {got}"),
            (Expect::Conflicts(_), Err(e)) => panic!("{at}: expected conflicts, got {e}"),
        }
    }
}

fn apply_op(manager: &'static str, config: Value) -> Op {
    Op::Apply {
        manager,
        force: false,
        config,
    }
}

fn force_op(manager: &'static str, config: Value) -> Op {
    Op::Apply {
        manager,
        force: true,
        config,
    }
}

fn cm(data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": data})
}

fn deploy(spec: Value) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": spec})
}

#[test]
fn server_side_apply_follows_kube_apiserver_case_by_case() {
    let cases = vec![
        Case {
            name: "an apply creates the object and owns exactly the fields it applied",
            schema: deployment(),
            live: None,
            steps: vec![(
                apply_op(
                    "kubectl",
                    deploy(
                        json!({"replicas": 1, "selector": {"matchLabels": {"app": "a"}},
                        "template": {"metadata": {"labels": {"app": "a"}},
                            "spec": {"containers": [{"name": "nginx", "image": "nginx:1",
                                "ports": [{"containerPort": 80}]}]}}}),
                    ),
                ),
                Expect::Object(
                    deploy(
                        json!({"replicas": 1, "selector": {"matchLabels": {"app": "a"}},
                        "template": {"metadata": {"labels": {"app": "a"}},
                            "spec": {"containers": [{"name": "nginx", "image": "nginx:1",
                                "ports": [{"containerPort": 80}]}]}}}),
                    ),
                    vec![(
                        "kubectl",
                        "Apply",
                        vec![
                            ".spec.replicas",
                            ".spec.selector",
                            ".spec.template.metadata.labels.app",
                            ".spec.template.spec.containers[name=\"nginx\"]",
                            ".spec.template.spec.containers[name=\"nginx\"].image",
                            ".spec.template.spec.containers[name=\"nginx\"].name",
                            ".spec.template.spec.containers[name=\"nginx\"].ports[containerPort=80,protocol=\"TCP\"]",
                            ".spec.template.spec.containers[name=\"nginx\"].ports[containerPort=80,protocol=\"TCP\"].containerPort",
                        ],
                    )],
                ),
            )],
        },
        Case {
            name: "two appliers of the same value share the field; a different value conflicts; force moves it",
            schema: configmap(),
            live: None,
            steps: vec![
                (
                    apply_op("a", cm(json!({"x": "1", "y": "1"}))),
                    Expect::Object(
                        cm(json!({"x": "1", "y": "1"})),
                        vec![("a", "Apply", vec![".data.x", ".data.y"])],
                    ),
                ),
                (
                    apply_op("b", cm(json!({"x": "1"}))),
                    // A no-op apply records no time, so b's entry sorts first, as in kube.
                    Expect::Object(
                        cm(json!({"x": "1", "y": "1"})),
                        vec![
                            ("b", "Apply", vec![".data.x"]),
                            ("a", "Apply", vec![".data.x", ".data.y"]),
                        ],
                    ),
                ),
                (
                    apply_op("b", cm(json!({"x": "2", "y": "2"}))),
                    Expect::Conflicts(vec![("\"a\"", ".data.x"), ("\"a\"", ".data.y")]),
                ),
                (
                    force_op("b", cm(json!({"x": "2"}))),
                    Expect::Object(
                        cm(json!({"x": "2", "y": "1"})),
                        vec![
                            ("a", "Apply", vec![".data.y"]),
                            ("b", "Apply", vec![".data.x"]),
                        ],
                    ),
                ),
            ],
        },
        Case {
            name: "a field the manager stops applying is removed unless another manager owns it",
            schema: configmap(),
            live: None,
            steps: vec![
                (
                    apply_op("a", cm(json!({"x": "1", "y": "1", "z": "1"}))),
                    Expect::Object(
                        cm(json!({"x": "1", "y": "1", "z": "1"})),
                        vec![("a", "Apply", vec![".data.x", ".data.y", ".data.z"])],
                    ),
                ),
                (
                    apply_op("b", cm(json!({"y": "1"}))),
                    Expect::Object(
                        cm(json!({"x": "1", "y": "1", "z": "1"})),
                        vec![
                            ("b", "Apply", vec![".data.y"]),
                            ("a", "Apply", vec![".data.x", ".data.y", ".data.z"]),
                        ],
                    ),
                ),
                (
                    apply_op("a", cm(json!({"x": "1"}))),
                    Expect::Object(
                        cm(json!({"x": "1", "y": "1"})),
                        vec![
                            ("b", "Apply", vec![".data.y"]),
                            ("a", "Apply", vec![".data.x"]),
                        ],
                    ),
                ),
                (
                    apply_op(
                        "a",
                        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}),
                    ),
                    Expect::Object(cm(json!({"y": "1"})), vec![("b", "Apply", vec![".data.y"])]),
                ),
            ],
        },
        Case {
            name: "map-lists merge by key and each applier's items are its own",
            schema: deployment(),
            live: None,
            steps: vec![
                (
                    apply_op(
                        "a",
                        deploy(
                            json!({"template": {"spec": {"containers": [{"name": "x", "image": "x:1"}]}}}),
                        ),
                    ),
                    Expect::Object(
                        deploy(
                            json!({"template": {"spec": {"containers": [{"name": "x", "image": "x:1"}]}}}),
                        ),
                        vec![(
                            "a",
                            "Apply",
                            vec![
                                ".spec.template.spec.containers[name=\"x\"]",
                                ".spec.template.spec.containers[name=\"x\"].image",
                                ".spec.template.spec.containers[name=\"x\"].name",
                            ],
                        )],
                    ),
                ),
                (
                    apply_op(
                        "b",
                        deploy(
                            json!({"template": {"spec": {"containers": [{"name": "y", "image": "y:1"}]}}}),
                        ),
                    ),
                    Expect::Object(
                        deploy(
                            json!({"template": {"spec": {"containers": [{"name": "x", "image": "x:1"}, {"name": "y", "image": "y:1"}]}}}),
                        ),
                        vec![
                            (
                                "a",
                                "Apply",
                                vec![
                                    ".spec.template.spec.containers[name=\"x\"]",
                                    ".spec.template.spec.containers[name=\"x\"].image",
                                    ".spec.template.spec.containers[name=\"x\"].name",
                                ],
                            ),
                            (
                                "b",
                                "Apply",
                                vec![
                                    ".spec.template.spec.containers[name=\"y\"]",
                                    ".spec.template.spec.containers[name=\"y\"].image",
                                    ".spec.template.spec.containers[name=\"y\"].name",
                                ],
                            ),
                        ],
                    ),
                ),
                (
                    apply_op(
                        "b",
                        deploy(
                            json!({"template": {"spec": {"containers": [{"name": "x", "image": "x:2"}]}}}),
                        ),
                    ),
                    Expect::Conflicts(vec![(
                        "\"a\"",
                        ".spec.template.spec.containers[name=\"x\"].image",
                    )]),
                ),
                (
                    apply_op("a", deploy(json!({"replicas": 2}))),
                    Expect::Object(
                        deploy(
                            json!({"replicas": 2, "template": {"spec": {"containers": [{"name": "y", "image": "y:1"}]}}}),
                        ),
                        vec![
                            (
                                "b",
                                "Apply",
                                vec![
                                    ".spec.template.spec.containers[name=\"y\"]",
                                    ".spec.template.spec.containers[name=\"y\"].image",
                                    ".spec.template.spec.containers[name=\"y\"].name",
                                ],
                            ),
                            ("a", "Apply", vec![".spec.replicas"]),
                        ],
                    ),
                ),
            ],
        },
        Case {
            name: "set-lists merge item by item",
            schema: configmap(),
            live: None,
            steps: vec![
                (
                    apply_op(
                        "a",
                        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "finalizers": ["f/a"]}}),
                    ),
                    Expect::Object(
                        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "finalizers": ["f/a"]}}),
                        vec![("a", "Apply", vec![".metadata.finalizers[=\"f/a\"]"])],
                    ),
                ),
                (
                    apply_op(
                        "b",
                        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "finalizers": ["f/b"]}}),
                    ),
                    Expect::Object(
                        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "finalizers": ["f/a", "f/b"]}}),
                        vec![
                            ("a", "Apply", vec![".metadata.finalizers[=\"f/a\"]"]),
                            ("b", "Apply", vec![".metadata.finalizers[=\"f/b\"]"]),
                        ],
                    ),
                ),
                (
                    apply_op(
                        "a",
                        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}),
                    ),
                    Expect::Object(
                        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "finalizers": ["f/b"]}}),
                        vec![("b", "Apply", vec![".metadata.finalizers[=\"f/b\"]"])],
                    ),
                ),
            ],
        },
        Case {
            name: "atomic lists are owned and replaced as a whole",
            schema: deployment(),
            live: None,
            steps: vec![
                (
                    apply_op(
                        "a",
                        deploy(
                            json!({"template": {"spec": {"containers": [{"name": "x", "args": ["1", "2"]}]}}}),
                        ),
                    ),
                    Expect::Object(
                        deploy(
                            json!({"template": {"spec": {"containers": [{"name": "x", "args": ["1", "2"]}]}}}),
                        ),
                        vec![(
                            "a",
                            "Apply",
                            vec![
                                ".spec.template.spec.containers[name=\"x\"]",
                                ".spec.template.spec.containers[name=\"x\"].args",
                                ".spec.template.spec.containers[name=\"x\"].name",
                            ],
                        )],
                    ),
                ),
                (
                    apply_op(
                        "b",
                        deploy(
                            json!({"template": {"spec": {"containers": [{"name": "x", "args": ["3"]}]}}}),
                        ),
                    ),
                    Expect::Conflicts(vec![(
                        "\"a\"",
                        ".spec.template.spec.containers[name=\"x\"].args",
                    )]),
                ),
                (
                    force_op(
                        "b",
                        deploy(
                            json!({"template": {"spec": {"containers": [{"name": "x", "args": ["3"]}]}}}),
                        ),
                    ),
                    Expect::Object(
                        deploy(
                            json!({"template": {"spec": {"containers": [{"name": "x", "args": ["3"]}]}}}),
                        ),
                        vec![
                            (
                                "a",
                                "Apply",
                                vec![
                                    ".spec.template.spec.containers[name=\"x\"]",
                                    ".spec.template.spec.containers[name=\"x\"].name",
                                ],
                            ),
                            (
                                "b",
                                "Apply",
                                vec![
                                    ".spec.template.spec.containers[name=\"x\"]",
                                    ".spec.template.spec.containers[name=\"x\"].args",
                                    ".spec.template.spec.containers[name=\"x\"].name",
                                ],
                            ),
                        ],
                    ),
                ),
            ],
        },
        Case {
            name: "granular maps merge key by key; atomic maps conflict as a whole",
            schema: deployment(),
            live: None,
            steps: vec![
                (
                    apply_op(
                        "a",
                        json!({"apiVersion": "apps/v1", "kind": "Deployment",
                        "metadata": {"name": "d", "labels": {"a": "1"}},
                        "spec": {"selector": {"matchLabels": {"app": "a"}}}}),
                    ),
                    Expect::Object(
                        json!({"apiVersion": "apps/v1", "kind": "Deployment",
                            "metadata": {"name": "d", "labels": {"a": "1"}},
                            "spec": {"selector": {"matchLabels": {"app": "a"}}}}),
                        vec![("a", "Apply", vec![".metadata.labels.a", ".spec.selector"])],
                    ),
                ),
                (
                    apply_op(
                        "b",
                        json!({"apiVersion": "apps/v1", "kind": "Deployment",
                        "metadata": {"name": "d", "labels": {"b": "1"}},
                        "spec": {"selector": {"matchLabels": {"app": "a", "tier": "web"}}}}),
                    ),
                    Expect::Conflicts(vec![("\"a\"", ".spec.selector")]),
                ),
                (
                    apply_op(
                        "b",
                        json!({"apiVersion": "apps/v1", "kind": "Deployment",
                        "metadata": {"name": "d", "labels": {"b": "1"}}}),
                    ),
                    Expect::Object(
                        json!({"apiVersion": "apps/v1", "kind": "Deployment",
                            "metadata": {"name": "d", "labels": {"a": "1", "b": "1"}},
                            "spec": {"selector": {"matchLabels": {"app": "a"}}}}),
                        vec![
                            ("a", "Apply", vec![".metadata.labels.a", ".spec.selector"]),
                            ("b", "Apply", vec![".metadata.labels.b"]),
                        ],
                    ),
                ),
            ],
        },
        Case {
            name: "an update takes the fields it changes and the applier then conflicts with it",
            schema: deployment(),
            live: None,
            steps: vec![
                (
                    apply_op("kubectl", deploy(json!({"replicas": 3}))),
                    Expect::Object(
                        deploy(json!({"replicas": 3})),
                        vec![("kubectl", "Apply", vec![".spec.replicas"])],
                    ),
                ),
                (
                    Op::Update {
                        manager: "hpa",
                        patch: json!({"spec": {"replicas": 5}}),
                    },
                    Expect::Object(
                        deploy(json!({"replicas": 5})),
                        vec![("hpa", "Update", vec![".spec.replicas"])],
                    ),
                ),
                (
                    apply_op("kubectl", deploy(json!({"replicas": 3}))),
                    Expect::Conflicts(vec![("\"hpa\" using apps/v1", ".spec.replicas")]),
                ),
                (
                    apply_op("kubectl", deploy(json!({"replicas": 5}))),
                    Expect::Object(
                        deploy(json!({"replicas": 5})),
                        vec![
                            ("kubectl", "Apply", vec![".spec.replicas"]),
                            ("hpa", "Update", vec![".spec.replicas"]),
                        ],
                    ),
                ),
                (
                    Op::Update {
                        manager: "hpa",
                        patch: json!({"spec": {"paused": true}}),
                    },
                    Expect::Object(
                        deploy(json!({"replicas": 5, "paused": true})),
                        vec![
                            ("kubectl", "Apply", vec![".spec.replicas"]),
                            ("hpa", "Update", vec![".spec.paused", ".spec.replicas"]),
                        ],
                    ),
                ),
                (
                    Op::Update {
                        manager: "edit",
                        patch: json!({"spec": {"paused": null}}),
                    },
                    Expect::Object(
                        deploy(json!({"replicas": 5})),
                        vec![
                            ("kubectl", "Apply", vec![".spec.replicas"]),
                            ("hpa", "Update", vec![".spec.replicas"]),
                        ],
                    ),
                ),
            ],
        },
        Case {
            name: "a create records every field it sets and updates of nothing record nothing",
            schema: configmap(),
            live: None,
            steps: vec![
                (
                    Op::Update {
                        manager: "kubectl-create",
                        patch: cm(json!({"x": "1"})),
                    },
                    Expect::Object(
                        cm(json!({"x": "1"})),
                        vec![("kubectl-create", "Update", vec![".data", ".data.x"])],
                    ),
                ),
                (
                    Op::Update {
                        manager: "other",
                        patch: json!({}),
                    },
                    Expect::Object(
                        cm(json!({"x": "1"})),
                        vec![("kubectl-create", "Update", vec![".data", ".data.x"])],
                    ),
                ),
            ],
        },
        Case {
            name: "an object without managed fields is tracked from its first apply, its fields owned by before-first-apply",
            schema: configmap(),
            live: Some(cm(json!({"x": "1"}))),
            steps: vec![
                (
                    Op::Update {
                        manager: "kubectl-edit",
                        patch: json!({"data": {"y": "1"}}),
                    },
                    Expect::Object(cm(json!({"x": "1", "y": "1"})), vec![]),
                ),
                (
                    apply_op("a", cm(json!({"x": "2"}))),
                    Expect::Conflicts(vec![("\"before-first-apply\" using v1", ".data.x")]),
                ),
                (
                    apply_op("a", cm(json!({"z": "1"}))),
                    Expect::Object(
                        cm(json!({"x": "1", "y": "1", "z": "1"})),
                        vec![
                            ("a", "Apply", vec![".data.z"]),
                            (
                                "before-first-apply",
                                "Update",
                                vec![".data", ".data.x", ".data.y"],
                            ),
                        ],
                    ),
                ),
            ],
        },
        Case {
            name: "without a schema lists are atomic and maps granular, every key owned",
            schema: &DEDUCED,
            live: None,
            steps: vec![
                (
                    apply_op(
                        "a",
                        json!({"apiVersion": "x.io/v1", "kind": "X", "metadata": {"name": "x"},
                        "spec": {"list": [1, 2], "map": {"k": "v"}}}),
                    ),
                    Expect::Object(
                        json!({"apiVersion": "x.io/v1", "kind": "X", "metadata": {"name": "x"},
                            "spec": {"list": [1, 2], "map": {"k": "v"}}}),
                        vec![(
                            "a",
                            "Apply",
                            vec![".spec", ".spec.list", ".spec.map", ".spec.map.k"],
                        )],
                    ),
                ),
                (
                    apply_op(
                        "b",
                        json!({"apiVersion": "x.io/v1", "kind": "X", "metadata": {"name": "x"},
                        "spec": {"map": {"j": "w"}}}),
                    ),
                    Expect::Object(
                        json!({"apiVersion": "x.io/v1", "kind": "X", "metadata": {"name": "x"},
                            "spec": {"list": [1, 2], "map": {"j": "w", "k": "v"}}}),
                        vec![
                            (
                                "a",
                                "Apply",
                                vec![".spec", ".spec.list", ".spec.map", ".spec.map.k"],
                            ),
                            ("b", "Apply", vec![".spec", ".spec.map", ".spec.map.j"]),
                        ],
                    ),
                ),
                (
                    apply_op(
                        "a",
                        json!({"apiVersion": "x.io/v1", "kind": "X", "metadata": {"name": "x"},
                        "spec": {"list": [3]}}),
                    ),
                    Expect::Object(
                        json!({"apiVersion": "x.io/v1", "kind": "X", "metadata": {"name": "x"},
                            "spec": {"list": [3], "map": {"j": "w"}}}),
                        vec![
                            ("b", "Apply", vec![".spec", ".spec.map", ".spec.map.j"]),
                            ("a", "Apply", vec![".spec", ".spec.list"]),
                        ],
                    ),
                ),
            ],
        },
    ];
    for case in &cases {
        run(case);
    }
}

#[test]
fn a_crd_schema_gives_list_and_map_types_and_metadata_is_object_meta() {
    let crd = json!({"type": "object", "properties": {
    "spec": {"type": "object", "properties": {
        "ports": {"type": "array", "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name"],
            "items": {"type": "object", "properties": {"name": {"type": "string"}, "port": {"type": "integer"}}}},
        "tags": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
        "args": {"type": "array", "items": {"type": "string"}},
        "ref": {"type": "object", "x-kubernetes-map-type": "atomic", "properties": {"name": {"type": "string"}}},
        "extra": {"type": "object", "additionalProperties": {"type": "string"}},
    }}}});
    let s = OpenApiSchema::crd(&crd);
    let cases: &[(&[&str], ListType)] = &[
        (&["spec", "ports"], ListType::Map(vec!["name".into()])),
        (&["spec", "tags"], ListType::Set),
        (&["spec", "args"], ListType::Atomic),
        (&["spec", "unknown"], ListType::Atomic),
        (&["metadata", "finalizers"], ListType::Set),
    ];
    for (path, want) in cases {
        assert_eq!(&s.list_type(path), want, "{path:?}");
    }
    assert_eq!(s.map_type(&["spec", "ref"]), MapType::Atomic);
    assert_eq!(s.map_type(&["spec", "extra"]), MapType::Granular);
    assert!(s.is_field(&["spec", "ref"]));
    assert!(!s.is_field(&["spec", "extra", "k"]));
    assert!(s.is_field(&["metadata", "labels"]));
    assert!(!s.is_field(&["metadata", "labels", "app"]));

    let obj = json!({"apiVersion": "x.io/v1", "kind": "X", "metadata": {"name": "x", "labels": {"app": "a"}},
        "spec": {"ports": [{"name": "http", "port": 80}], "tags": ["t"], "ref": {"name": "r"}, "extra": {"k": "v"}}});
    let w = Writer {
        manager: "m",
        api_version: "x.io/v1",
        subresource: None,
        now: "2025-01-01T00:00:00Z",
        ignored: None,
    };
    let out = apply(None, &obj, &w, false, &s).expect("applies");
    let got: Vec<String> = managed_fields(&out).expect("decodes")[0]
        .fields
        .paths()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        got,
        [
            ".metadata.labels.app",
            ".spec.extra.k",
            ".spec.ports[name=\"http\"]",
            ".spec.ports[name=\"http\"].name",
            ".spec.ports[name=\"http\"].port",
            ".spec.ref",
            ".spec.tags[=\"t\"]",
        ]
    );
}

#[test]
fn builtin_lists_without_a_list_type_fall_back_to_their_patch_merge_key() {
    let def = json!({"type": "object", "properties": {
        "keyed": {"type": "array", "x-kubernetes-patch-strategy": "merge", "x-kubernetes-patch-merge-key": "id",
            "items": {"type": "object"}},
        "merged": {"type": "array", "x-kubernetes-patch-strategy": "merge", "items": {"type": "string"}},
        "plain": {"type": "array", "items": {"type": "string"}}}});
    let builtin = OpenApiSchema {
        root: &def,
        builtin: true,
    };
    let crd = OpenApiSchema::crd(&def);
    let cases: &[(&[&str], ListType, ListType)] = &[
        (
            &["keyed"],
            ListType::Map(vec!["id".into()]),
            ListType::Atomic,
        ),
        (&["merged"], ListType::Set, ListType::Atomic),
        (&["plain"], ListType::Atomic, ListType::Atomic),
    ];
    for (path, want_builtin, want_crd) in cases {
        assert_eq!(&builtin.list_type(path), want_builtin, "builtin {path:?}");
        assert_eq!(&crd.list_type(path), want_crd, "crd {path:?}");
    }
}

#[test]
fn fields_v1_round_trips_through_the_set() {
    let cases = [
        json!({}),
        json!({"f:data": {"f:x": {}}}),
        json!({"f:metadata": {"f:labels": {".": {}, "f:app": {}}}}),
        json!({"f:spec": {"f:containers": {"k:{\"name\":\"nginx\"}": {".": {}, "f:image": {}, "f:name": {},
            "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}}}}}}),
        json!({"f:metadata": {"f:finalizers": {"v:\"a\"": {}, "v:\"b\"": {}}}}),
        json!({"f:list": {"i:0": {}, "i:10": {"f:a": {}}}}),
    ];
    for doc in cases {
        let set = FieldSet::from_fields_v1(&doc).expect("decodes");
        assert_eq!(set.to_fields_v1(), doc, "{doc}");
    }
    // Key fields in another order, spacing, and unknown prefixes are normalised away.
    let loose = json!({"f:ports": {"k:{ \"protocol\": \"TCP\", \"containerPort\": 80 }": {}}, "x:future": {}});
    assert_eq!(
        FieldSet::from_fields_v1(&loose)
            .expect("decodes")
            .to_fields_v1(),
        json!({"f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {}}})
    );
    for bad in [
        json!([]),
        json!({"k:[1]": {}}),
        json!({"i:x": {}}),
        json!({"f:a": 1}),
    ] {
        assert!(
            FieldSet::from_fields_v1(&bad).is_err(),
            "{bad} must be refused"
        );
    }
    let mut deep = json!({});
    for _ in 0..=PATH_ELEMENTS_MAX + 1 {
        deep = json!({ "f:a": deep });
    }
    assert!(
        FieldSet::from_fields_v1(&deep).is_err(),
        "past PATH_ELEMENTS_MAX"
    );
}

#[test]
fn set_operations_follow_structured_merge_diff() {
    let p = |names: &[&str]| Path::fields(names);
    let a = FieldSet::from_paths(&[p(&["a"]), p(&["a", "b"]), p(&["c", "d"])]);
    let b = FieldSet::from_paths(&[p(&["a"]), p(&["c", "e"])]);
    let strs = |s: &FieldSet| {
        s.paths()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(strs(&a.union(&b)), [".a", ".a.b", ".c.d", ".c.e"]);
    assert_eq!(strs(&a.difference(&b)), [".a.b", ".c.d"]);
    assert_eq!(strs(&a.recursive_difference(&b)), [".c.d"]);
    assert_eq!(strs(&a.intersection(&b)), [".a"]);
    assert!(a.has(&p(&["a", "b"]).0));
    assert!(!a.has(&p(&["c"]).0));
    assert!(FieldSet::new().is_empty());
}

#[test]
fn conflicts_render_as_kube_apiserver_s_409() {
    let c = |manager: &str, operation, path: &[&str]| Conflict {
        manager: manager.into(),
        operation,
        api_version: "apps/v1".into(),
        subresource: None,
        path: Path::fields(path),
    };
    let one = Conflicts(vec![c(
        "kubectl-client-side-apply",
        Operation::Update,
        &["spec", "replicas"],
    )]);
    assert_eq!(
        one.message(),
        "Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\" using apps/v1: .spec.replicas"
    );
    assert_eq!(
        one.status(),
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\" using apps/v1: .spec.replicas",
            "reason": "Conflict", "code": 409,
            "details": {"causes": [{"type": "FieldManagerConflict",
                "message": "conflict with \"kubectl-client-side-apply\" using apps/v1", "field": ".spec.replicas"}]}})
    );
    let two = Conflicts(vec![
        c("a", Operation::Apply, &["spec", "replicas"]),
        c("a", Operation::Apply, &["spec", "paused"]),
        Conflict {
            subresource: Some("status".into()),
            ..c("b", Operation::Update, &["status", "x"])
        },
    ]);
    assert_eq!(
        two.message(),
        "Apply failed with 3 conflicts: conflicts with \"a\":\n- .spec.replicas\n- .spec.paused\nconflicts with \"b\" with subresource \"status\" using apps/v1:\n- .status.x"
    );
}

fn writer<'a>(manager: &'a str, now: &'a str) -> Writer<'a> {
    Writer {
        manager,
        api_version: "v1",
        subresource: None,
        now,
        ignored: None,
    }
}

#[test]
fn apply_refuses_another_version_and_managed_fields_in_the_configuration() {
    let w = writer("m", "2025-01-01T00:00:00Z");
    let cases = [
        (
            json!({"apiVersion": "v2", "kind": "ConfigMap", "metadata": {"name": "c"}}),
            "Incorrect version specified in apply patch. Specified patch version: v2, expected: v1",
        ),
        (
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "managedFields": []}}),
            "metadata.managedFields must be nil",
        ),
        (json!([]), "the apply configuration must be an object"),
    ];
    for (config, want) in cases {
        match apply(None, &config, &w, false, configmap()) {
            Err(ApplyError::BadRequest(m)) => assert_eq!(m, want),
            other => panic!("{config}: {other:?}"),
        }
    }
    let dup = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
        "spec": {"template": {"spec": {"containers": [{"name": "a"}, {"name": "a"}]}}}});
    let w = Writer {
        api_version: "apps/v1",
        ..w
    };
    match apply(None, &dup, &w, false, deployment()) {
        Err(ApplyError::Internal(m)) => assert_eq!(
            m,
            ".spec.template.spec.containers: duplicate entries for key [name=\"a\"]"
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn managed_fields_entries_carry_kube_apiserver_s_shape_and_time() {
    let first = apply(
        None,
        &cm(json!({"x": "1"})),
        &writer("a", "2025-01-01T00:00:01Z"),
        false,
        configmap(),
    )
    .expect("applies");
    assert_eq!(
        first["metadata"]["managedFields"],
        json!([{"manager": "a", "operation": "Apply", "apiVersion": "v1", "time": "2025-01-01T00:00:01Z",
            "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {"f:x": {}}}}])
    );
    // A no-op apply keeps the time; an update through a subresource records it.
    let same = apply(
        Some(&first),
        &cm(json!({"x": "1"})),
        &writer("a", "2025-01-01T00:00:02Z"),
        false,
        configmap(),
    )
    .expect("applies");
    assert_eq!(same, first);
    let mut new = first.clone();
    new["data"]["x"] = json!("2");
    let status = Writer {
        subresource: Some("status"),
        ..writer("ctl", "2025-01-01T00:00:03Z")
    };
    let out = update(Some(&first), &new, &status, configmap());
    // `a` lost its only field to `ctl`, and an entry with an empty set is dropped.
    assert_eq!(
        out["metadata"]["managedFields"],
        json!([{"manager": "ctl", "operation": "Update", "apiVersion": "v1", "time": "2025-01-01T00:00:03Z",
            "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {"f:x": {}}}, "subresource": "status"}])
    );
}

#[test]
fn clients_reset_managed_fields_with_an_empty_list_and_keep_them_by_omitting_them() {
    let live = apply(
        None,
        &cm(json!({"x": "1"})),
        &writer("a", "2025-01-01T00:00:01Z"),
        false,
        configmap(),
    )
    .expect("applies");
    let mut omitted = live.clone();
    omitted["metadata"]
        .as_object_mut()
        .expect("metadata")
        .remove("managedFields");
    omitted["data"]["y"] = json!("1");
    let kept = update(
        Some(&live),
        &omitted,
        &writer("u", "2025-01-01T00:00:02Z"),
        configmap(),
    );
    assert_eq!(
        owners(&kept).len(),
        2,
        "live's entries kept and the writer's added"
    );
    for reset in [json!([]), json!([{}])] {
        let mut new = live.clone();
        new["metadata"]["managedFields"] = reset.clone();
        let out = update(
            Some(&live),
            &new,
            &writer("u", "2025-01-01T00:00:02Z"),
            configmap(),
        );
        assert!(
            out["metadata"].get("managedFields").is_none(),
            "{reset} resets"
        );
    }
}

#[test]
fn update_entries_past_the_cap_merge_into_ancient_changes() {
    let mut obj = cm(json!({}));
    let mut live: Option<Value> = None;
    for i in 0..=UPDATE_MANAGERS_MAX {
        obj["data"][format!("k{i}")] = json!("v");
        let manager = format!("m{i:02}");
        let now = format!("2025-01-01T00:00:{i:02}Z");
        let out = update(live.as_ref(), &obj, &writer(&manager, &now), configmap());
        live = Some(out);
    }
    let got = owners(live.as_ref().expect("written"));
    assert_eq!(got.len(), UPDATE_MANAGERS_MAX);
    // The bucket carries the time of the newest entry merged into it (m01's).
    assert_eq!(got[0].0, ANCIENT_CHANGES_MANAGER);
    assert_eq!(got[1].0, "m02", "the others are kept, in time order");
    let ancient = got
        .iter()
        .find(|o| o.0 == ANCIENT_CHANGES_MANAGER)
        .expect("bucket");
    assert_eq!(ancient.2, [".data", ".data.k0", ".data.k1"]);
}

#[test]
fn ignored_fields_are_neither_owned_nor_compared() {
    let ignored = FieldSet::from_paths(&[Path::fields(&["status"])]);
    let w = Writer {
        ignored: Some(&ignored),
        ..writer("a", "2025-01-01T00:00:01Z")
    };
    let obj = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"x": "1"}, "status": {"s": 1}});
    let out = apply(None, &obj, &w, false, &DEDUCED).expect("applies");
    let got: Vec<String> = managed_fields(&out).expect("decodes")[0]
        .fields
        .paths()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(got, [".data", ".data.x"]);
}
