//! Table-driven tests: each case is an object (defaulted first, as the API does) and the
//! exact `field: message` lines kube-apiserver would answer with.

use serde_json::{Value, json};

use super::*;
use crate::registry::Registry;

fn info(group: &str, plural: &str) -> ResourceInfo {
    Registry::builtin()
        .get(group, "v1", plural)
        .map(|i| (**i).clone())
        .unwrap()
}

/// Defaults `obj` like the API layer, then validates it.
fn check(group: &str, plural: &str, obj: Value) -> Findings {
    let info = info(group, plural);
    let mut m = obj.as_object().unwrap().clone();
    crate::defaults::apply(&info, &mut m);
    validate(&info, &Value::Object(m))
}

fn lines(causes: &[Cause]) -> Vec<String> {
    causes.iter().map(Cause::to_string).collect()
}

fn pod(spec: Value) -> Value {
    json!({"metadata": {"name": "p", "namespace": "default"}, "spec": spec})
}

fn deployment(spec: Value) -> Value {
    json!({"metadata": {"name": "d"}, "spec": spec})
}

fn web_template() -> Value {
    json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}})
}

const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";

#[test]
fn invalid_objects_get_kube_apiservers_causes() {
    let cases: Vec<(&str, &str, &str, Value, Vec<String>)> = vec![
        (
            "a valid pod",
            "",
            "pods",
            pod(json!({"containers": [{"name": "c", "image": "nginx", "ports": [{"containerPort": 80, "name": "http"}]}]})),
            vec![],
        ),
        (
            "no containers",
            "",
            "pods",
            pod(json!({"containers": []})),
            vec!["spec.containers: Required value".into()],
        ),
        (
            "no spec at all",
            "",
            "pods",
            json!({"metadata": {"name": "p"}}),
            vec!["spec.containers: Required value".into()],
        ),
        (
            "a container without name and image",
            "",
            "pods",
            pod(json!({"containers": [{}]})),
            vec![
                "spec.containers[0].name: Required value".into(),
                "spec.containers[0].image: Required value".into(),
            ],
        ),
        (
            "a bad and a duplicate container name",
            "",
            "pods",
            pod(json!({"containers": [{"name": "Web", "image": "x"}, {"name": "a", "image": "x"}], "initContainers": [{"name": "a", "image": "x"}]})),
            vec![
                format!("spec.containers[0].name: Invalid value: \"Web\": {LABEL_MSG}"),
                "spec.containers[1].name: Duplicate value: \"a\"".into(),
            ],
        ),
        (
            "ports out of range, unnamed, with bad names and protocols",
            "",
            "pods",
            pod(json!({"containers": [{"name": "c", "image": "x", "ports": [
                {"containerPort": 70000, "name": "HTTP"},
                {"containerPort": 0, "protocol": "ICMP"},
                {"containerPort": 81, "name": "a", "hostPort": 99999},
                {"containerPort": 82, "name": "a"},
                {"containerPort": 83, "name": "123"}
            ]}]})),
            vec![
                "spec.containers[0].ports[0].name: Invalid value: \"HTTP\": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".into(),
                "spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive".into(),
                "spec.containers[0].ports[1].containerPort: Required value".into(),
                "spec.containers[0].ports[1].protocol: Unsupported value: \"ICMP\": supported values: \"SCTP\", \"TCP\", \"UDP\"".into(),
                "spec.containers[0].ports[2].hostPort: Invalid value: 99999: must be between 1 and 65535, inclusive".into(),
                "spec.containers[0].ports[3].name: Duplicate value: \"a\"".into(),
                "spec.containers[0].ports[4].name: Invalid value: \"123\": must contain at least one letter (a-z)".into(),
            ],
        ),
        (
            "pod-level enums",
            "",
            "pods",
            pod(json!({"restartPolicy": "Sometimes", "dnsPolicy": "Google", "containers": [{"name": "c", "image": "x", "imagePullPolicy": "Maybe"}]})),
            vec![
                "spec.containers[0].imagePullPolicy: Unsupported value: \"Maybe\": supported values: \"Always\", \"IfNotPresent\", \"Never\"".into(),
                "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\"".into(),
                "spec.dnsPolicy: Unsupported value: \"Google\": supported values: \"ClusterFirstWithHostNet\", \"ClusterFirst\", \"Default\", \"None\"".into(),
            ],
        ),
        (
            "requests above limits, bad quantities, unknown resource names",
            "",
            "pods",
            pod(json!({"containers": [{"name": "c", "image": "x", "resources": {
                "limits": {"cpu": "500m", "memory": "1Gi"},
                "requests": {"cpu": "1", "memory": "-1", "gpu": "1x"}
            }}]})),
            vec![
                "spec.containers[0].resources.requests[gpu]: Invalid value: \"gpu\": must be a standard resource for containers".into(),
                "spec.containers[0].resources.requests[gpu]: Invalid value: \"1x\": quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'".into(),
                "spec.containers[0].resources.requests[memory]: Invalid value: \"-1\": must be greater than or equal to 0".into(),
                "spec.containers[0].resources.requests: Invalid value: \"1\": must be less than or equal to cpu limit of 500m".into(),
            ],
        ),
        (
            "volume mounts name volumes that exist",
            "",
            "pods",
            pod(json!({"volumes": [{"name": "data"}, {"name": "data"}], "containers": [{"name": "c", "image": "x",
                "volumeMounts": [{"name": "data", "mountPath": "/d"}, {"name": "other"}],
                "env": [{"name": ""}, {"name": "A=B"}]}]})),
            vec![
                "spec.volumes[1].name: Duplicate value: \"data\"".into(),
                "spec.containers[0].env[0].name: Required value".into(),
                "spec.containers[0].env[1].name: Invalid value: \"A=B\": a valid environment variable name must consist only of printable ASCII characters other than '='".into(),
                "spec.containers[0].volumeMounts[1].name: Not found: \"other\"".into(),
                "spec.containers[0].volumeMounts[1].mountPath: Required value".into(),
            ],
        ),
        (
            "a valid deployment",
            "apps",
            "deployments",
            deployment(json!({"selector": {"matchLabels": {"app": "web"}}, "template": web_template()})),
            vec![],
        ),
        (
            "a deployment whose selector misses its template",
            "apps",
            "deployments",
            deployment(json!({"selector": {"matchLabels": {"app": "other"}}, "template": web_template()})),
            vec!["spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"web\"}: `selector` does not match template `labels`".into()],
        ),
        (
            "a deployment without selector, negative replicas, bad strategy",
            "apps",
            "deployments",
            deployment(json!({"replicas": -1, "strategy": {"type": "BlueGreen"}, "template": web_template()})),
            vec![
                "spec.replicas: Invalid value: -1: must be greater than or equal to 0".into(),
                "spec.selector: Required value".into(),
                "spec.strategy.type: Unsupported value: \"BlueGreen\": supported values: \"Recreate\", \"RollingUpdate\"".into(),
            ],
        ),
        (
            "an empty selector and a template that does not restart",
            "apps",
            "deployments",
            deployment(json!({"selector": {}, "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x"}]}}})),
            vec![
                "spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string(nil), MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: empty selector is invalid for deployment".into(),
                "spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\"".into(),
            ],
        ),
        (
            "selector expressions are checked",
            "apps",
            "deployments",
            deployment(json!({"selector": {"matchExpressions": [
                {"key": "app", "operator": "In"},
                {"key": "app", "operator": "Exists", "values": ["x"]},
                {"key": "bad key", "operator": "Like", "values": []}
            ]}, "template": web_template()})),
            vec![
                "spec.selector.matchExpressions[0].values: Required value: must be specified when `operator` is 'In' or 'NotIn'".into(),
                "spec.selector.matchExpressions[1].values: Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'".into(),
                "spec.selector.matchExpressions[2].operator: Invalid value: \"Like\": not a valid selector operator".into(),
                "spec.selector.matchExpressions[2].key: Invalid value: \"bad key\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')".into(),
            ],
        ),
        (
            "rolling update bounds",
            "apps",
            "deployments",
            deployment(json!({"selector": {"matchLabels": {"app": "web"}}, "template": web_template(),
                "strategy": {"rollingUpdate": {"maxUnavailable": 0, "maxSurge": "0%"}}})),
            vec!["spec.strategy.rollingUpdate.maxUnavailable: Invalid value: 0: may not be 0 when `maxSurge` is 0".into()],
        ),
        (
            "a replicaset that selects other pods",
            "apps",
            "replicasets",
            deployment(json!({"selector": {"matchLabels": {"app": "db"}}, "template": web_template()})),
            vec!["spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"web\"}: `selector` does not match template `labels`".into()],
        ),
        (
            "a statefulset with an empty selector",
            "apps",
            "statefulsets",
            deployment(json!({"selector": {"matchLabels": {}}, "template": web_template()})),
            vec!["spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string{}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: empty selector is invalid for statefulset".into()],
        ),
        (
            "a daemonset without selector selects nothing",
            "apps",
            "daemonsets",
            deployment(json!({"template": web_template()})),
            vec!["spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"web\"}: `selector` does not match template `labels`".into()],
        ),
        (
            "a replicationcontroller's selector defaults from its template",
            "",
            "replicationcontrollers",
            deployment(json!({"template": web_template()})),
            vec![],
        ),
        (
            "a job template must not restart always",
            "batch",
            "jobs",
            json!({"metadata": {"name": "j", "uid": "u"}, "spec": {"manualSelector": true,
                "selector": {"matchLabels": {"app": "web"}}, "template": web_template()}}),
            vec!["spec.template.spec.restartPolicy: Required value: valid values: \"OnFailure\", \"Never\"".into()],
        ),
        (
            "a job without selector",
            "batch",
            "jobs",
            json!({"metadata": {"name": "j", "uid": "u"}, "spec": {"manualSelector": true, "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x"}]}}}}),
            vec!["spec.selector: Required value".into()],
        ),
        (
            "a cronjob without schedule",
            "batch",
            "cronjobs",
            json!({"metadata": {"name": "cj"}, "spec": {"jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "OnFailure", "containers": [{"name": "c", "image": "x"}]}}}}}}),
            vec!["spec.schedule: Required value".into()],
        ),
        (
            "a cronjob with TZ in its schedule, an unknown zone and a long name",
            "batch",
            "cronjobs",
            json!({"metadata": {"name": "a".repeat(53)}, "spec": {"schedule": "TZ=UTC */5 * * * *", "timeZone": "Mars/Olympus",
                "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "OnFailure", "containers": [{"name": "c", "image": "x"}]}}}}}}),
            vec![
                "spec.schedule: Invalid value: \"TZ=UTC */5 * * * *\": cannot use TZ or CRON_TZ in schedule, use timeZone field instead".into(),
                "spec.timeZone: Invalid value: \"Mars/Olympus\": unknown time zone".into(),
                format!("metadata.name: Invalid value: \"{}\": must be no more than 52 characters", "a".repeat(53)),
            ],
        ),
        (
            "a cronjob with four fields",
            "batch",
            "cronjobs",
            json!({"metadata": {"name": "cj"}, "spec": {"schedule": "* * * *", "timeZone": "Etc/UTC",
                "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "OnFailure", "containers": [{"name": "c", "image": "x"}]}}}}}}),
            vec!["spec.schedule: Invalid value: \"* * * *\": expected exactly 5 fields".into()],
        ),
        (
            "a valid service",
            "",
            "services",
            json!({"metadata": {"name": "s"}, "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "name": "http"}, {"port": 443, "name": "https", "targetPort": "https"}]}}),
            vec![],
        ),
        (
            "a service without ports",
            "",
            "services",
            json!({"metadata": {"name": "s"}, "spec": {}}),
            vec!["spec.ports: Required value".into()],
        ),
        (
            "headless and ExternalName services need no ports",
            "",
            "services",
            json!({"metadata": {"name": "s"}, "spec": {"clusterIP": "None"}}),
            vec![],
        ),
        (
            "an ExternalName service needs its name",
            "",
            "services",
            json!({"metadata": {"name": "s"}, "spec": {"type": "ExternalName"}}),
            vec!["spec.externalName: Required value".into()],
        ),
        (
            "service ports: names, numbers, duplicates, node ports",
            "",
            "services",
            json!({"metadata": {"name": "s"}, "spec": {"type": "Balanced", "ports": [
                {"port": 80, "name": "web"}, {"port": 80, "name": "web", "nodePort": 30000},
                {"port": 0, "targetPort": "Bad_Name"}
            ]}}),
            vec![
                "spec.type: Unsupported value: \"Balanced\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\"".into(),
                "spec.ports[1].name: Duplicate value: \"web\"".into(),
                "spec.ports[1]: Duplicate value: core.ServicePort{Name:\"\", Protocol:\"TCP\", AppProtocol:(*string)(nil), Port:80, TargetPort:intstr.IntOrString{Type:0, IntVal:0, StrVal:\"\"}, NodePort:0}".into(),
                "spec.ports[2].name: Required value".into(),
                "spec.ports[2].port: Invalid value: 0: must be between 1 and 65535, inclusive".into(),
                "spec.ports[2].targetPort: Invalid value: \"Bad_Name\": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".into(),
            ],
        ),
        (
            "a ClusterIP service may not ask for a node port",
            "",
            "services",
            json!({"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80, "nodePort": 30000}]}}),
            vec!["spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'".into()],
        ),
        (
            "secret and configmap keys",
            "",
            "secrets",
            json!({"metadata": {"name": "s"}, "data": {"ok.key": "eA==", "bad key": "eA==", "..x": "eA=="}}),
            vec![
                "data[..x]: Invalid value: \"..x\": must not start with '..'".into(),
                "data[bad key]: Invalid value: \"bad key\": a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')".into(),
            ],
        ),
        (
            "a TLS secret needs its certificate and key",
            "",
            "secrets",
            json!({"metadata": {"name": "s"}, "type": "kubernetes.io/tls", "data": {"tls.crt": "eA=="}}),
            vec!["data[tls.key]: Required value".into()],
        ),
        (
            "a configmap key may not be in data and binaryData",
            "",
            "configmaps",
            json!({"metadata": {"name": "c"}, "data": {"a": "x"}, "binaryData": {"a": "eA=="}}),
            vec!["data[a]: Invalid value: \"a\": duplicate of key present in binaryData".into()],
        ),
    ];
    for (name, group, plural, obj, want) in cases {
        let found = check(group, plural, obj);
        assert_eq!(lines(&found.causes), want, "{name}");
    }
}

#[test]
fn a_job_gets_a_selector_for_its_own_pods_and_passes() {
    let info = info("batch", "jobs");
    let mut m = json!({"metadata": {"name": "pi", "uid": "u-1"}, "spec": {"template": {"spec": {
        "restartPolicy": "Never", "containers": [{"name": "c", "image": "perl"}]}}}})
    .as_object()
    .unwrap()
    .clone();
    crate::defaults::apply(&info, &mut m);
    crate::defaults::job_on_create(&mut m, "u-1");
    assert_eq!(
        validate(&info, &Value::Object(m.clone())),
        Findings::default()
    );

    // A template label that contradicts the generated one is refused.
    let labels = m
        .get_mut("spec")
        .and_then(|s| s.pointer_mut("/template/metadata/labels"))
        .and_then(Value::as_object_mut)
        .unwrap();
    labels.insert("job-name".into(), json!("other"));
    let got = lines(&validate(&info, &Value::Object(m)).causes);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].starts_with(
            "spec.template.metadata.labels[job-name]: Invalid value: map[string]string{"
        ) && got[0].ends_with(": must be 'pi'"),
        "{got:?}"
    );
}

#[test]
fn duplicate_container_ports_are_a_warning_not_an_error() {
    let found = check(
        "",
        "pods",
        pod(json!({"containers": [
            {"name": "a", "image": "x", "ports": [{"containerPort": 80}]},
            {"name": "b", "image": "x", "ports": [{"containerPort": 80}, {"containerPort": 80, "protocol": "UDP"}]}
        ]})),
    );
    assert_eq!(found.causes, vec![]);
    assert_eq!(
        found.warnings,
        vec![
            "spec.containers[1].ports[0]: duplicate port definition with spec.containers[0].ports[0]"
        ]
    );
}

/// An update case: name, group, plural, old object, new object, expected causes.
type UpdateCase = (
    &'static str,
    &'static str,
    &'static str,
    Value,
    Value,
    Vec<String>,
);

/// Defaults both objects and checks the update rules.
fn check_update(group: &str, plural: &str, old: Value, new: Value) -> Vec<String> {
    let info = info(group, plural);
    let default = |v: Value| {
        let mut m = v.as_object().unwrap().clone();
        crate::defaults::apply(&info, &mut m);
        Value::Object(m)
    };
    lines(&validate_update(&info, &default(old), &default(new)))
}

#[test]
fn updates_may_not_change_immutable_fields() {
    let web = || {
        deployment(json!({"selector": {"matchLabels": {"app": "web"}}, "template": web_template()}))
    };
    let base_pod = || {
        pod(
            json!({"containers": [{"name": "c", "image": "nginx:1"}], "activeDeadlineSeconds": 60,
        "tolerations": [{"key": "k", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 10}]}),
        )
    };
    let cases: Vec<UpdateCase> = vec![
        (
            "a deployment's template and replicas may change",
            "apps",
            "deployments",
            web(),
            deployment(json!({"replicas": 5, "selector": {"matchLabels": {"app": "web"}}, "template": {
                "metadata": {"labels": {"app": "web", "v": "2"}}, "spec": {"containers": [{"name": "c", "image": "nginx:2"}]}}})),
            vec![],
        ),
        (
            "a deployment's selector may not",
            "apps",
            "deployments",
            web(),
            deployment(json!({"selector": {"matchLabels": {"app": "web2"}}, "template": web_template()})),
            vec!["spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string{\"app\":\"web2\"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: field is immutable".into()],
        ),
        (
            "nor a daemonset's",
            "apps",
            "daemonsets",
            web(),
            deployment(json!({"selector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["web"]}]}, "template": web_template()})),
            vec!["spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string(nil), MatchExpressions:[]v1.LabelSelectorRequirement{v1.LabelSelectorRequirement{Key:\"app\", Operator:\"In\", Values:[]string{\"web\"}}}}: field is immutable".into()],
        ),
        (
            "a statefulset may change only its mutable fields",
            "apps",
            "statefulsets",
            deployment(json!({"serviceName": "a", "selector": {"matchLabels": {"app": "web"}}, "template": web_template()})),
            deployment(json!({"serviceName": "b", "replicas": 3, "selector": {"matchLabels": {"app": "web"}}, "template": web_template()})),
            vec!["spec: Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden".into()],
        ),
        (
            "a pod's image, shorter deadline and added tolerations may change",
            "",
            "pods",
            base_pod(),
            pod(json!({"containers": [{"name": "c", "image": "nginx:2"}], "activeDeadlineSeconds": 30,
                "tolerations": [{"key": "k", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5},
                                {"key": "new", "operator": "Exists"}]})),
            vec![],
        ),
        (
            "a pod's container name may not",
            "",
            "pods",
            base_pod(),
            pod(json!({"containers": [{"name": "d", "image": "nginx:1"}], "activeDeadlineSeconds": 60,
                "tolerations": [{"key": "k", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 10}]})),
            vec![format!("spec: Forbidden: {POD_UPDATABLE_FIELDS}\n- containers: [{{\"image\":\"nginx:1\",\"imagePullPolicy\":\"IfNotPresent\",\"name\":\"c\",\"resources\":{{}},\"terminationMessagePath\":\"/dev/termination-log\",\"terminationMessagePolicy\":\"File\"}}]\n+ containers: [{{\"image\":\"nginx:1\",\"imagePullPolicy\":\"IfNotPresent\",\"name\":\"d\",\"resources\":{{}},\"terminationMessagePath\":\"/dev/termination-log\",\"terminationMessagePolicy\":\"File\"}}]\n")],
        ),
        (
            "nor its number of containers",
            "",
            "pods",
            base_pod(),
            pod(json!({"containers": [{"name": "c", "image": "nginx:1"}, {"name": "d", "image": "x"}]})),
            vec!["spec.containers: Forbidden: pod updates may not add or remove containers".into()],
        ),
        (
            "a pod's deadline may not grow or go",
            "",
            "pods",
            base_pod(),
            pod(json!({"containers": [{"name": "c", "image": "nginx:1"}], "activeDeadlineSeconds": 120,
                "tolerations": [{"key": "k", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 10}]})),
            vec!["spec.activeDeadlineSeconds: Invalid value: 120: must be less than or equal to previous value".into()],
        ),
        (
            "existing tolerations may not change",
            "",
            "pods",
            base_pod(),
            pod(json!({"containers": [{"name": "c", "image": "nginx:1"}], "activeDeadlineSeconds": 60, "tolerations": []})),
            vec!["spec.tolerations: Forbidden: existing toleration can not be modified except its tolerationSeconds".into()],
        ),
        (
            "a job's template is fixed while it runs",
            "batch",
            "jobs",
            json!({"metadata": {"name": "j"}, "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x"}]}}}}),
            json!({"metadata": {"name": "j"}, "spec": {"selector": {"matchLabels": {"a": "c"}}, "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "y"}]}}}}),
            vec![
                "spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string{\"a\":\"c\"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: field is immutable".into(),
                "spec.template: Invalid value: {\"spec\":{\"containers\":[{\"image\":\"y\",\"imagePullPolicy\":\"Always\",\"name\":\"c\",\"resources\":{},\"terminationMessagePath\":\"/dev/termination-log\",\"terminationMessagePolicy\":\"File\"}],\"dnsPolicy\":\"ClusterFirst\",\"restartPolicy\":\"Never\",\"schedulerName\":\"default-scheduler\",\"securityContext\":{},\"terminationGracePeriodSeconds\":30}}: field is immutable".into(),
            ],
        ),
        (
            "a suspended job's pods may be placed elsewhere",
            "batch",
            "jobs",
            json!({"metadata": {"name": "j"}, "spec": {"suspend": true, "template": {"spec": {"containers": [{"name": "c", "image": "x"}]}}}}),
            json!({"metadata": {"name": "j"}, "spec": {"suspend": true, "template": {"spec": {"nodeSelector": {"zone": "a"}, "containers": [{"name": "c", "image": "x"}]}}}}),
            vec![],
        ),
        (
            "a service's cluster IP may not change once set",
            "",
            "services",
            json!({"metadata": {"name": "s"}, "spec": {"clusterIP": "10.0.0.1", "ports": [{"port": 80}]}}),
            json!({"metadata": {"name": "s"}, "spec": {"clusterIP": "10.0.0.2", "ports": [{"port": 80}]}}),
            vec!["spec.clusterIPs[0]: Invalid value: []string{\"10.0.0.2\"}: may not change once set".into()],
        ),
        (
            "an immutable configmap keeps its data",
            "",
            "configmaps",
            json!({"metadata": {"name": "c"}, "immutable": true, "data": {"a": "1"}}),
            json!({"metadata": {"name": "c"}, "data": {"a": "2"}}),
            vec![
                "immutable: Forbidden: field is immutable when `immutable` is set".into(),
                "data: Forbidden: field is immutable when `immutable` is set".into(),
            ],
        ),
        (
            "a mutable secret's data may change, its type not",
            "",
            "secrets",
            json!({"metadata": {"name": "s"}, "data": {"a": "eA=="}}),
            json!({"metadata": {"name": "s"}, "type": "example.com/x", "data": {"a": "eQ=="}}),
            vec!["type: Invalid value: \"example.com/x\": field is immutable".into()],
        ),
    ];
    for (name, group, plural, old, new, want) in cases {
        assert_eq!(check_update(group, plural, old, new), want, "{name}");
    }
}

#[test]
fn port_names_follow_iana_svc_name() {
    let cases: &[(&str, usize)] = &[
        ("http", 0),
        ("h2c", 0),
        ("a-b", 0),
        ("", 1),
        ("1234", 1),
        ("a--b", 1),
        ("-ab", 1),
        ("abcdefghijklmnop", 1),
        ("UP", 1),
    ];
    for (name, errs) in cases {
        assert_eq!(is_valid_port_name(name).len(), *errs, "{name:?}");
    }
}

#[test]
fn webhook_configurations_are_defaulted_and_checked_as_kube_does() {
    let g = "admissionregistration.k8s.io";
    let hook = |extra: Value| {
        let mut h = json!({"name": "a.b.c", "sideEffects": "None", "admissionReviewVersions": ["v1"],
            "clientConfig": {"url": "https://example.com/x"}});
        for (k, v) in extra.as_object().unwrap() {
            h[k] = v.clone();
        }
        json!({"metadata": {"name": "w"}, "webhooks": [h]})
    };
    // (case, object, expected causes)
    let cases: Vec<(&str, Value, Vec<&str>)> = vec![
        ("valid", hook(json!({})), vec![]),
        (
            "no side effects",
            hook(json!({"sideEffects": null})),
            vec!["webhooks[0].sideEffects: Required value: must specify one of None, NoneOnDryRun"],
        ),
        (
            "side effects Some",
            hook(json!({"sideEffects": "Some"})),
            vec![
                "webhooks[0].sideEffects: Unsupported value: \"Some\": supported values: \"None\", \"NoneOnDryRun\"",
            ],
        ),
        (
            "a timeout past 30 s",
            hook(json!({"timeoutSeconds": 31})),
            vec![
                "webhooks[0].timeoutSeconds: Invalid value: 31: the timeout value must be between 1 and 30 seconds",
            ],
        ),
        (
            "http",
            hook(json!({"clientConfig": {"url": "http://example.com"}})),
            vec![
                "webhooks[0].clientConfig.url: Invalid value: \"http://example.com\": 'https' is the only allowed URL scheme",
            ],
        ),
        (
            "two segments",
            hook(json!({"name": "a.b"})),
            vec![
                "webhooks[0].name: Invalid value: \"a.b\": should be a domain with at least three segments separated by dots",
            ],
        ),
    ];
    for (case, obj, want) in cases {
        let got = check(g, "validatingwebhookconfigurations", obj);
        assert_eq!(lines(&got.causes), want, "{case}");
    }
    let i = info(g, "mutatingwebhookconfigurations");
    let mut m = hook(json!({})).as_object().unwrap().clone();
    crate::defaults::apply(&i, &mut m);
    let h = &m["webhooks"][0];
    assert_eq!(
        (
            &h["failurePolicy"],
            &h["matchPolicy"],
            &h["timeoutSeconds"],
            &h["reinvocationPolicy"]
        ),
        (
            &json!("Fail"),
            &json!("Equivalent"),
            &json!(10),
            &json!("Never")
        )
    );
}
