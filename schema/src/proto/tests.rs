//! The decoder against an oracle: objects built as k8s-pb structs, encoded by prost (the
//! same bytes as Go's generated marshallers for the fields set), wrapped in the envelope
//! kubectl sends, decoded here and compared with the JSON kube-apiserver would hold.

use std::collections::BTreeMap;

use k8s_pb::api::apps::v1 as apps;
use k8s_pb::api::core::v1 as core;
use k8s_pb::apimachinery::pkg::api::resource::Quantity;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime::{RawExtension, TypeMeta, Unknown};
use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
use prost::Message as _;
use serde_json::{Value, json};

use super::*;

/// The body kubectl sends: magic, then runtime.Unknown around the object's message.
fn envelope(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
    let unknown = Unknown {
        type_meta: Some(TypeMeta {
            api_version: Some(api_version.to_owned()),
            kind: Some(kind.to_owned()),
        }),
        raw: Some(raw),
        // Go writes both strings, empty.
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut body = PROTOBUF_MAGIC.to_vec();
    body.extend(unknown.encode_to_vec());
    body
}

fn body<M: prost::Message>(api_version: &str, kind: &str, object: &M) -> Vec<u8> {
    envelope(api_version, kind, object.encode_to_vec())
}

fn decoded(body: &[u8]) -> Value {
    match decode_object(body) {
        Ok(v) => v,
        Err(e) => panic!("decode failed: {e}"),
    }
}

fn s(v: &str) -> Option<String> {
    Some(v.to_owned())
}

fn map<V: Clone>(pairs: &[(&str, V)]) -> BTreeMap<String, V> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

fn strs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn quantity(v: &str) -> Quantity {
    Quantity { string: s(v) }
}

fn int_or_int(v: i32) -> Option<IntOrString> {
    Some(IntOrString {
        r#type: Some(0),
        int_val: Some(v),
        str_val: Some(String::new()),
    })
}

fn int_or_str(v: &str) -> Option<IntOrString> {
    Some(IntOrString {
        r#type: Some(1),
        int_val: Some(0),
        str_val: s(v),
    })
}

/// ObjectMeta as Go writes it: every non-pointer field, zero values included.
fn go_meta(name: &str, namespace: &str) -> Option<meta::ObjectMeta> {
    Some(meta::ObjectMeta {
        name: s(name),
        generate_name: s(""),
        namespace: s(namespace),
        self_link: s(""),
        uid: s(""),
        resource_version: s(""),
        generation: Some(0),
        creation_timestamp: Some(meta::Time::default()),
        ..Default::default()
    })
}

#[test]
fn configmap_from_kubectl_create_decodes_to_kube_json() {
    let cm = core::ConfigMap {
        metadata: go_meta("settings", "default").map(|m| meta::ObjectMeta {
            labels: strs(&[("app", "web"), ("empty", "")]),
            ..m
        }),
        data: map(&[("a.conf", "x=1\n".to_owned()), ("blank", String::new())]),
        binary_data: map(&[("blob", vec![0u8, 1, 2, 255])]),
        immutable: None,
    };
    assert_eq!(
        decoded(&body("v1", "ConfigMap", &cm)),
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            // "" strings and the zero creationTimestamp go; generation 0 stays (the
            // server's create strategy owns it).
            "metadata": {"name": "settings", "namespace": "default", "generation": 0,
                         "labels": {"app": "web", "empty": ""}},
            "data": {"a.conf": "x=1\n", "blank": ""},
            "binaryData": {"blob": "AAEC/w=="},
        })
    );
}

#[test]
fn secret_bytes_become_standard_base64_and_string_data_stays_text() {
    let secret = core::Secret {
        metadata: go_meta("db", "prod"),
        immutable: Some(true),
        data: map(&[("password", b"s3cr3t!?".to_vec()), ("empty", Vec::new())]),
        string_data: map(&[("user", "admin".to_owned())]),
        r#type: s("Opaque"),
    };
    assert_eq!(
        decoded(&body("v1", "Secret", &secret)),
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "db", "namespace": "prod", "generation": 0},
            "immutable": true,
            "data": {"password": "czNjcjN0IT8=", "empty": ""},
            "stringData": {"user": "admin"},
            "type": "Opaque",
        })
    );
}

fn sample_pod() -> core::Pod {
    let container = core::Container {
        name: s("web"),
        image: s("nginx:1.27"),
        command: vec!["nginx".to_owned(), String::new()],
        ports: vec![
            core::ContainerPort {
                name: s("http"),
                host_port: Some(0),
                container_port: Some(80),
                protocol: s("TCP"),
                host_ip: s(""),
            },
            core::ContainerPort {
                container_port: Some(443),
                ..Default::default()
            },
        ],
        env: vec![core::EnvVar {
            name: s("PASSWORD"),
            value: s(""),
            value_from: Some(core::EnvVarSource {
                secret_key_ref: Some(core::SecretKeySelector {
                    local_object_reference: Some(core::LocalObjectReference { name: s("db") }),
                    key: s("password"),
                    optional: Some(false),
                }),
                ..Default::default()
            }),
        }],
        resources: Some(core::ResourceRequirements {
            limits: map(&[("cpu", quantity("500m")), ("memory", quantity("128Mi"))]),
            requests: map(&[("cpu", quantity("250m"))]),
            claims: vec![],
        }),
        liveness_probe: Some(core::Probe {
            handler: Some(core::ProbeHandler {
                http_get: Some(core::HttpGetAction {
                    path: s("/healthz"),
                    port: int_or_int(8080),
                    host: s(""),
                    scheme: s("HTTP"),
                    http_headers: vec![],
                }),
                ..Default::default()
            }),
            initial_delay_seconds: Some(3),
            period_seconds: Some(10),
            ..Default::default()
        }),
        readiness_probe: Some(core::Probe {
            handler: Some(core::ProbeHandler {
                tcp_socket: Some(core::TcpSocketAction {
                    port: int_or_str("http"),
                    host: s(""),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        volume_mounts: vec![core::VolumeMount {
            name: s("conf"),
            mount_path: s("/etc/nginx/conf.d"),
            read_only: Some(true),
            ..Default::default()
        }],
        image_pull_policy: s("IfNotPresent"),
        stdin: Some(false),
        ..Default::default()
    };
    core::Pod {
        metadata: Some(meta::ObjectMeta {
            name: s("web-0"),
            namespace: s("default"),
            labels: strs(&[("run", "web")]),
            creation_timestamp: Some(meta::Time {
                seconds: Some(1_704_164_645),
                nanos: Some(0),
            }),
            ..Default::default()
        }),
        spec: Some(core::PodSpec {
            containers: vec![container],
            volumes: vec![core::Volume {
                name: s("conf"),
                volume_source: Some(core::VolumeSource {
                    config_map: Some(core::ConfigMapVolumeSource {
                        local_object_reference: Some(core::LocalObjectReference {
                            name: s("nginx-conf"),
                        }),
                        default_mode: Some(0o644),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            }],
            restart_policy: s("Always"),
            dns_policy: s("ClusterFirst"),
            security_context: Some(core::PodSecurityContext {
                supplemental_groups: vec![1000, 2000],
                ..Default::default()
            }),
            ..Default::default()
        }),
        status: Some(core::PodStatus::default()),
    }
}

fn sample_pod_json() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "web-0",
            "namespace": "default",
            "labels": {"run": "web"},
            "creationTimestamp": "2024-01-02T03:04:05Z",
        },
        "spec": {
            "containers": [{
                "name": "web",
                "image": "nginx:1.27",
                // Elements of a repeated string are kept even when empty.
                "command": ["nginx", ""],
                "ports": [
                    {"name": "http", "hostPort": 0, "containerPort": 80, "protocol": "TCP"},
                    {"containerPort": 443},
                ],
                "env": [{
                    "name": "PASSWORD",
                    // LocalObjectReference is inline: `name` sits beside `key`.
                    "valueFrom": {"secretKeyRef": {"name": "db", "key": "password", "optional": false}},
                }],
                "resources": {
                    "limits": {"cpu": "500m", "memory": "128Mi"},
                    "requests": {"cpu": "250m"},
                },
                // ProbeHandler is inline: httpGet sits beside the probe's numbers.
                "livenessProbe": {
                    "httpGet": {"path": "/healthz", "port": 8080, "scheme": "HTTP"},
                    "initialDelaySeconds": 3,
                    "periodSeconds": 10,
                },
                "readinessProbe": {"tcpSocket": {"port": "http"}},
                "volumeMounts": [{"name": "conf", "mountPath": "/etc/nginx/conf.d", "readOnly": true}],
                "imagePullPolicy": "IfNotPresent",
                "stdin": false,
            }],
            // VolumeSource is inline: configMap sits beside the volume's name.
            "volumes": [{"name": "conf", "configMap": {"name": "nginx-conf", "defaultMode": 420}}],
            "restartPolicy": "Always",
            "dnsPolicy": "ClusterFirst",
            "securityContext": {"supplementalGroups": [1000, 2000]},
        },
        "status": {},
    })
}

#[test]
fn pod_with_ports_quantities_probes_and_inline_structs_decodes_to_kube_json() {
    assert_eq!(
        decoded(&body("v1", "Pod", &sample_pod())),
        sample_pod_json()
    );
}

#[test]
fn deployment_keeps_zero_replicas_and_renders_intstr_percentages() {
    let deployment = apps::Deployment {
        metadata: go_meta("web", "default"),
        spec: Some(apps::DeploymentSpec {
            replicas: Some(0),
            selector: Some(meta::LabelSelector {
                match_labels: strs(&[("app", "web")]),
                match_expressions: vec![meta::LabelSelectorRequirement {
                    key: s("tier"),
                    operator: s("In"),
                    values: vec!["front".to_owned()],
                }],
            }),
            template: Some(core::PodTemplateSpec {
                metadata: Some(meta::ObjectMeta {
                    labels: strs(&[("app", "web")]),
                    creation_timestamp: Some(meta::Time::default()),
                    ..Default::default()
                }),
                spec: Some(core::PodSpec {
                    containers: vec![core::Container {
                        name: s("nginx"),
                        image: s("nginx"),
                        resources: Some(core::ResourceRequirements::default()),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            }),
            strategy: Some(apps::DeploymentStrategy {
                r#type: s("RollingUpdate"),
                rolling_update: Some(apps::RollingUpdateDeployment {
                    max_unavailable: int_or_int(0),
                    max_surge: int_or_str("25%"),
                }),
            }),
            min_ready_seconds: Some(0),
            paused: Some(false),
            ..Default::default()
        }),
        status: Some(apps::DeploymentStatus::default()),
    };
    assert_eq!(
        decoded(&body("apps/v1", "Deployment", &deployment)),
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "generation": 0},
            "spec": {
                "replicas": 0,
                "selector": {
                    "matchLabels": {"app": "web"},
                    "matchExpressions": [{"key": "tier", "operator": "In", "values": ["front"]}],
                },
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "nginx", "image": "nginx", "resources": {}}]},
                },
                "strategy": {
                    "type": "RollingUpdate",
                    "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"},
                },
                "minReadySeconds": 0,
                "paused": false,
            },
            "status": {},
        })
    );
}

#[test]
fn service_ports_render_integer_target_ports() {
    let service = core::Service {
        metadata: go_meta("web", "default"),
        spec: Some(core::ServiceSpec {
            ports: vec![core::ServicePort {
                name: s("80-8080"),
                protocol: s("TCP"),
                port: Some(80),
                target_port: int_or_int(8080),
                node_port: Some(0),
                app_protocol: None,
            }],
            selector: strs(&[("app", "web")]),
            cluster_ip: s(""),
            r#type: s("ClusterIP"),
            ..Default::default()
        }),
        status: Some(core::ServiceStatus {
            load_balancer: Some(core::LoadBalancerStatus::default()),
            conditions: vec![],
        }),
    };
    assert_eq!(
        decoded(&body("v1", "Service", &service)),
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "namespace": "default", "generation": 0},
            "spec": {
                "ports": [{"name": "80-8080", "protocol": "TCP", "port": 80, "targetPort": 8080, "nodePort": 0}],
                "selector": {"app": "web"},
                "type": "ClusterIP",
            },
            "status": {"loadBalancer": {}},
        })
    );
}

#[test]
fn namespace_and_job_from_kubectl_create_decode() {
    let ns = core::Namespace {
        metadata: go_meta("team-a", ""),
        spec: Some(core::NamespaceSpec::default()),
        status: Some(core::NamespaceStatus::default()),
    };
    assert_eq!(
        decoded(&body("v1", "Namespace", &ns)),
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a", "generation": 0},
               "spec": {}, "status": {}})
    );
    let job = k8s_pb::api::batch::v1::Job {
        metadata: go_meta("pi", "default"),
        spec: Some(k8s_pb::api::batch::v1::JobSpec {
            backoff_limit: Some(4),
            template: Some(core::PodTemplateSpec {
                metadata: None,
                spec: Some(core::PodSpec {
                    restart_policy: s("Never"),
                    containers: vec![core::Container {
                        name: s("pi"),
                        image: s("perl"),
                        args: vec!["-e".to_owned(), "print 1".to_owned()],
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }),
        status: None,
    };
    assert_eq!(
        decoded(&body("batch/v1", "Job", &job)),
        json!({"apiVersion": "batch/v1", "kind": "Job",
               "metadata": {"name": "pi", "namespace": "default", "generation": 0},
               "spec": {"backoffLimit": 4, "template": {"spec": {"restartPolicy": "Never",
                   "containers": [{"name": "pi", "image": "perl", "args": ["-e", "print 1"]}]}}}})
    );
}

#[test]
fn micro_time_keeps_microseconds_and_raw_extension_is_embedded_json() {
    let event = core::Event {
        metadata: Some(meta::ObjectMeta {
            name: s("e1"),
            ..Default::default()
        }),
        involved_object: Some(core::ObjectReference {
            kind: s("Pod"),
            name: s("web-0"),
            ..Default::default()
        }),
        reason: s("Started"),
        count: Some(1),
        event_time: Some(meta::MicroTime {
            seconds: Some(1_704_164_645),
            nanos: Some(123_456_789),
        }),
        first_timestamp: Some(meta::Time {
            seconds: Some(1_704_164_645),
            nanos: Some(999_999_999),
        }),
        ..Default::default()
    };
    assert_eq!(
        decoded(&body("v1", "Event", &event)),
        json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e1"},
               "involvedObject": {"kind": "Pod", "name": "web-0"}, "reason": "Started", "count": 1,
               "eventTime": "2024-01-02T03:04:05.123456Z", "firstTimestamp": "2024-01-02T03:04:05Z"})
    );

    let revision = apps::ControllerRevision {
        metadata: Some(meta::ObjectMeta {
            name: s("web-1"),
            ..Default::default()
        }),
        data: Some(RawExtension {
            raw: Some(br#"{"spec":{"replicas":2}}"#.to_vec()),
        }),
        revision: Some(1),
    };
    assert_eq!(
        decoded(&body("apps/v1", "ControllerRevision", &revision)),
        json!({"apiVersion": "apps/v1", "kind": "ControllerRevision", "metadata": {"name": "web-1"},
               "data": {"spec": {"replicas": 2}}, "revision": 1})
    );
    let bad = apps::ControllerRevision {
        data: Some(RawExtension {
            raw: Some(b"{not json".to_vec()),
        }),
        ..Default::default()
    };
    assert!(decode_object(&body("apps/v1", "ControllerRevision", &bad)).is_err());
}

#[test]
fn eviction_and_delete_options_decode_under_every_version_they_are_sent_with() {
    let options = meta::DeleteOptions {
        grace_period_seconds: Some(0),
        preconditions: Some(meta::Preconditions {
            uid: s("1234"),
            resource_version: None,
        }),
        propagation_policy: s("Foreground"),
        dry_run: vec!["All".to_owned()],
        ..Default::default()
    };
    let want = |api_version: &str| {
        json!({"apiVersion": api_version, "kind": "DeleteOptions", "gracePeriodSeconds": 0,
               "preconditions": {"uid": "1234"}, "propagationPolicy": "Foreground", "dryRun": ["All"]})
    };
    for api_version in ["meta.k8s.io/v1", "v1", "apps/v1", "batch/v1"] {
        assert_eq!(
            decoded(&body(api_version, "DeleteOptions", &options)),
            want(api_version)
        );
    }
    let eviction = k8s_pb::api::policy::v1::Eviction {
        metadata: Some(meta::ObjectMeta {
            name: s("web-0"),
            namespace: s("default"),
            ..Default::default()
        }),
        delete_options: Some(options),
    };
    assert_eq!(
        decoded(&body("policy/v1", "Eviction", &eviction)),
        json!({"apiVersion": "policy/v1", "kind": "Eviction",
               "metadata": {"name": "web-0", "namespace": "default"},
               "deleteOptions": {"gracePeriodSeconds": 0, "preconditions": {"uid": "1234"},
                                 "propagationPolicy": "Foreground", "dryRun": ["All"]}})
    );
}

#[test]
fn csr_extra_values_are_plain_arrays_and_request_is_base64() {
    use k8s_pb::api::certificates::v1 as certs;
    let csr = certs::CertificateSigningRequest {
        metadata: Some(meta::ObjectMeta {
            name: s("alice"),
            ..Default::default()
        }),
        spec: Some(certs::CertificateSigningRequestSpec {
            request: Some(b"-----BEGIN".to_vec()),
            signer_name: s("kubernetes.io/kube-apiserver-client"),
            usages: vec!["client auth".to_owned()],
            extra: map(&[(
                "scopes",
                certs::ExtraValue {
                    items: vec!["a".to_owned(), "b".to_owned()],
                },
            )]),
            ..Default::default()
        }),
        status: None,
    };
    assert_eq!(
        decoded(&body(
            "certificates.k8s.io/v1",
            "CertificateSigningRequest",
            &csr
        )),
        json!({"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
               "metadata": {"name": "alice"},
               "spec": {"request": "LS0tLS1CRUdJTg==", "signerName": "kubernetes.io/kube-apiserver-client",
                        "usages": ["client auth"], "extra": {"scopes": ["a", "b"]}}})
    );
}

#[test]
fn unknown_tags_are_skipped_and_packed_numbers_are_accepted() {
    let pod = core::Pod {
        metadata: Some(meta::ObjectMeta {
            name: s("p"),
            ..Default::default()
        }),
        spec: Some(core::PodSpec {
            security_context: Some(core::PodSecurityContext::default()),
            ..Default::default()
        }),
        status: None,
    };
    let mut raw = pod.encode_to_vec();
    // Field 99 (a varint), field 98 (bytes) and field 97 (fixed32): unknown to 1.33.
    raw.extend([
        0x98, 0x06, 0x2a, 0x92, 0x06, 0x02, 0x01, 0x02, 0x8d, 0x06, 1, 2, 3, 4,
    ]);
    assert_eq!(
        decoded(&envelope("v1", "Pod", raw)),
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"securityContext": {}}})
    );

    // PodSecurityContext.supplementalGroups (tag 4) packed: [1000, 2000].
    let ctx = [0x22, 0x04, 0xe8, 0x07, 0xd0, 0x0f];
    let spec = [&[0x72, ctx.len() as u8][..], &ctx[..]].concat(); // PodSpec.securityContext = 14
    let pod = [&[0x12, spec.len() as u8][..], &spec[..]].concat(); // Pod.spec = 2
    assert_eq!(
        decoded(&envelope("v1", "Pod", pod)),
        json!({"apiVersion": "v1", "kind": "Pod", "spec": {"securityContext": {"supplementalGroups": [1000, 2000]}}})
    );
}

#[test]
fn fields_newer_than_kubernetes_1_33_are_skipped_as_1_33_skips_them() {
    let pod = core::Pod {
        spec: Some(core::PodSpec {
            hostname: s("web"),
            hostname_override: s("not-in-1.33"),
            ..Default::default()
        }),
        ..Default::default()
    };
    assert_eq!(
        decoded(&body("v1", "Pod", &pod)),
        json!({"apiVersion": "v1", "kind": "Pod", "spec": {"hostname": "web"}})
    );
}

#[test]
fn a_field_seen_twice_merges_like_proto2() {
    let first = core::Pod {
        metadata: Some(meta::ObjectMeta {
            name: s("a"),
            labels: strs(&[("x", "1")]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let second = core::Pod {
        metadata: Some(meta::ObjectMeta {
            namespace: s("ns"),
            labels: strs(&[("y", "2")]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let raw = [first.encode_to_vec(), second.encode_to_vec()].concat();
    assert_eq!(
        decoded(&envelope("v1", "Pod", raw)),
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "a", "namespace": "ns", "labels": {"x": "1", "y": "2"}}})
    );
}

#[test]
fn wrong_magic_empty_body_and_missing_type_are_errors() {
    let good = body("v1", "Pod", &sample_pod());
    let mut wrong = good.clone();
    if let Some(b) = wrong.get_mut(3) {
        *b = b'!';
    }
    assert!(decode_object(&wrong).is_err());
    assert!(decode_object(b"{\"kind\":\"Pod\"}").is_err());
    assert!(decode_object(&[]).is_err());
    assert!(decode_object(&PROTOBUF_MAGIC).is_err());
    assert!(decode_object(&envelope("", "Pod", vec![])).is_err());
    assert!(decode_object(&envelope("v1", "", vec![])).is_err());
}

#[test]
fn unknown_kinds_are_errors_and_knows_says_so() {
    for (api_version, kind) in [
        ("example.com/v1", "Widget"),
        ("v1", "Widget"),
        ("apps/v1beta1", "Deployment"),
    ] {
        assert!(!knows(api_version, kind), "{api_version} {kind}");
        let err = decode_object(&envelope(api_version, kind, vec![]));
        assert!(err.is_err(), "{api_version} {kind}");
    }
    for (api_version, kind) in [
        ("v1", "Pod"),
        ("v1", "ConfigMap"),
        ("apps/v1", "Deployment"),
        ("batch/v1", "CronJob"),
        ("policy/v1", "Eviction"),
        ("meta.k8s.io/v1", "DeleteOptions"),
        ("autoscaling/v2", "HorizontalPodAutoscaler"),
        ("v1", "Status"),
    ] {
        assert!(knows(api_version, kind), "{api_version} {kind}");
    }
    assert!(known_kinds().count() > 60);
}

#[test]
fn wrong_wire_types_are_errors() {
    // Pod.metadata (field 1) sent as a varint.
    assert!(decode_object(&envelope("v1", "Pod", vec![0x08, 0x01])).is_err());
    // ObjectMeta.generation (field 7, int64) sent as bytes.
    let meta_bytes = [0x3a, 0x01, 0x00];
    let pod = [&[0x0a, meta_bytes.len() as u8][..], &meta_bytes[..]].concat();
    assert!(decode_object(&envelope("v1", "Pod", pod)).is_err());
    // IntOrString with an impossible type.
    let rolling = apps::RollingUpdateDeployment {
        max_surge: Some(IntOrString {
            r#type: Some(7),
            int_val: None,
            str_val: None,
        }),
        max_unavailable: None,
    };
    let deployment = apps::Deployment {
        spec: Some(apps::DeploymentSpec {
            strategy: Some(apps::DeploymentStrategy {
                r#type: None,
                rolling_update: Some(rolling),
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    assert!(decode_object(&body("apps/v1", "Deployment", &deployment)).is_err());
}

#[test]
fn every_truncation_of_a_valid_body_is_an_error_never_a_panic() {
    let raw = sample_pod().encode_to_vec();
    let full = envelope("v1", "Pod", raw.clone());
    assert!(decode_object(&full).is_ok());
    // The envelope is magic, typeMeta, raw, contentEncoding, contentType: cutting anywhere
    // inside typeMeta or raw leaves a length that runs past the end.
    let raw_end = full.len() - 4; // two empty strings follow raw: 2 bytes each
    let raw_header = 1 + prost::encoding::encoded_len_varint(raw.len() as u64);
    let raw_key = raw_end - raw.len() - raw_header;
    for len in 0..full.len() {
        let result = decode_object(full.get(..len).unwrap_or_default());
        // At `raw_key` the body ends cleanly after typeMeta: an object with no fields.
        let cut_inside_a_field = len < raw_key || (len > raw_key && len < raw_end);
        if cut_inside_a_field {
            assert!(
                result.is_err(),
                "a body cut to {len} of {} bytes decoded",
                full.len()
            );
        }
    }
    // Cutting the object's own message (not the envelope) anywhere is also an error,
    // except at a field boundary, where what remains is a shorter valid message.
    for len in 0..raw.len() {
        let _ = decode_object(&envelope(
            "v1",
            "Pod",
            raw.get(..len).unwrap_or_default().to_vec(),
        ));
    }
}

#[test]
fn flipped_bytes_never_panic() {
    let full = body("v1", "Pod", &sample_pod());
    for i in 0..full.len() {
        for mask in [0x01u8, 0x80, 0xff, 0x7f] {
            let mut broken = full.clone();
            if let Some(b) = broken.get_mut(i) {
                *b ^= mask;
            }
            let _ = decode_object(&broken);
        }
    }
}

#[test]
fn nesting_beyond_the_bound_is_rejected() {
    // No built-in message nests itself, so depth can only grow through the schema; the
    // bound is checked where each message starts.
    let pod = table::message("k8s.io.api.core.v1.Pod");
    let mut out = Map::new();
    let result = pod.map(|m| decode::decode_into(m, &[], 0, NESTING_DEPTH_MAX + 1, &mut out));
    assert!(matches!(result, Some(Err(_))));
    let result = pod.map(|m| decode::decode_into(m, &[], 0, NESTING_DEPTH_MAX, &mut out));
    assert!(matches!(result, Some(Ok(()))));
}
