//! Defaulting of the built-in kinds: the fields kube-apiserver fills in when a client leaves
//! them out, so that `kubectl get -o yaml` shows what it shows against kube-apiserver 1.33.
//!
//! Kubernetes applies these while decoding a request (`pkg/apis/*/v1/defaults.go` and the
//! declarative `+default` markers), before the resource strategy and validation run; the API
//! layer calls [`apply`] at the same point. Every function here fills only what is absent
//! (or, for strings, empty — Go cannot tell the two apart) and never fails: a value of the
//! wrong shape is left for validation to report.
//!
//! Two things kube-apiserver does in resource strategies rather than in defaulting live here
//! too, because they are as visible: a Job's generated selector and pod-template labels
//! ([`job_on_create`]), and a Secret's `stringData` folded into `data` ([`apply`]).
//! What admission plugins add (a pod's service account, default tolerations, priority) and
//! what allocators add (a Service's clusterIP and nodePorts) is not done here.

use base64::Engine;
use serde_json::{Map, Value, json};

use crate::registry::ResourceInfo;

/// `terminationGracePeriodSeconds` when a pod spec leaves it out, in seconds.
pub const TERMINATION_GRACE_PERIOD_SECONDS_DEFAULT: i64 = 30;
/// `sessionAffinityConfig.clientIP.timeoutSeconds` for `ClientIP` affinity, in seconds.
pub const CLIENT_IP_AFFINITY_SECONDS_DEFAULT: i64 = 10_800;
/// File mode of secret, configMap, downwardAPI and projected volumes (0644).
pub const VOLUME_DEFAULT_MODE: i64 = 0o644;
/// The label kube-apiserver puts on every namespace, holding its name.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// The labels a Job's pods carry (and its generated selector uses), new and legacy names.
pub const JOB_CONTROLLER_UID_LABEL: &str = "batch.kubernetes.io/controller-uid";
pub const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";
const JOB_LEGACY_CONTROLLER_UID_LABEL: &str = "controller-uid";
const JOB_LEGACY_NAME_LABEL: &str = "job-name";

/// Fills the defaults of the kind `info` describes into `obj` (a whole object, after the
/// typed round trip). Kinds without defaults are left as they are.
pub fn apply(info: &ResourceInfo, obj: &mut Map<String, Value>) {
    match (info.group.as_str(), info.plural.as_str()) {
        ("", "pods") => pod(obj),
        ("", "podtemplates") => {
            if let Some(t) = obj_at(obj, "template") {
                pod_template(t);
            }
        }
        ("", "replicationcontrollers") => replication_controller(obj),
        ("", "services") => service(obj),
        ("", "secrets") => secret(obj),
        ("", "namespaces") => namespace(obj),
        ("", "endpoints") => endpoints(obj),
        ("", "persistentvolumes") => persistent_volume(obj),
        ("", "persistentvolumeclaims") => persistent_volume_claim(obj),
        ("apps", "deployments") => deployment(obj),
        ("apps", "replicasets") => replica_set(obj),
        ("apps", "statefulsets") => stateful_set(obj),
        ("apps", "daemonsets") => daemon_set(obj),
        ("batch", "jobs") => job(obj),
        ("batch", "cronjobs") => cron_job(obj),
        ("admissionregistration.k8s.io", "mutatingwebhookconfigurations") => webhooks(obj, true),
        ("admissionregistration.k8s.io", "validatingwebhookconfigurations") => {
            webhooks(obj, false);
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------
// helpers

/// The object at `key`, created as `{}` when absent or null; `None` when it holds
/// something else (validation reports that).
fn obj_at<'a>(m: &'a mut Map<String, Value>, key: &str) -> Option<&'a mut Map<String, Value>> {
    let slot = m.entry(key.to_string()).or_insert(Value::Null);
    if slot.is_null() {
        *slot = json!({});
    }
    slot.as_object_mut()
}

/// The object at `key` only when it is already there.
fn existing_obj<'a>(
    m: &'a mut Map<String, Value>,
    key: &str,
) -> Option<&'a mut Map<String, Value>> {
    m.get_mut(key).and_then(Value::as_object_mut)
}

/// Each object of the list at `key` (absent or not a list: none).
fn each_obj<'a>(
    m: &'a mut Map<String, Value>,
    key: &str,
) -> impl Iterator<Item = &'a mut Map<String, Value>> {
    m.get_mut(key)
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object_mut)
}

/// Sets `key` when it is absent or null.
fn default_value(m: &mut Map<String, Value>, key: &str, v: Value) {
    if m.get(key).is_none_or(Value::is_null) {
        m.insert(key.to_string(), v);
    }
}

/// Sets a string `key` when it is absent, null or empty.
fn default_str(m: &mut Map<String, Value>, key: &str, v: &str) {
    if m.get(key)
        .is_none_or(|x| x.is_null() || x.as_str() == Some(""))
    {
        m.insert(key.to_string(), Value::String(v.to_string()));
    }
}

fn str_at<'a>(m: &'a Map<String, Value>, key: &str) -> &'a str {
    m.get(key).and_then(Value::as_str).unwrap_or("")
}

/// A label map's entries, when it has any.
fn non_empty_map(v: Option<&Value>) -> Option<Map<String, Value>> {
    v.and_then(Value::as_object)
        .filter(|m| !m.is_empty())
        .cloned()
}

// ---------------------------------------------------------------------------------------
// pods and pod templates

fn pod(obj: &mut Map<String, Value>) {
    let Some(spec) = obj_at(obj, "spec") else {
        return;
    };
    // Pod-only (not in templates): requests default to limits, service links on.
    for key in ["containers", "initContainers"] {
        for c in each_obj(spec, key) {
            requests_from_limits(c);
        }
    }
    default_value(spec, "enableServiceLinks", json!(true));
    if spec.get("hostNetwork").and_then(Value::as_bool) == Some(true) {
        for key in ["containers", "initContainers"] {
            for c in each_obj(spec, key) {
                for p in each_obj(c, "ports") {
                    let container_port = p.get("containerPort").cloned().unwrap_or(json!(0));
                    if p.get("hostPort").and_then(Value::as_i64).unwrap_or(0) == 0 {
                        p.insert("hostPort".into(), container_port);
                    }
                }
            }
        }
    }
    pod_spec(spec);
}

/// A container's `resources.requests` takes each limit it does not state (pods only).
fn requests_from_limits(c: &mut Map<String, Value>) {
    let Some(resources) = existing_obj(c, "resources") else {
        return;
    };
    let Some(limits) = resources.get("limits").and_then(Value::as_object).cloned() else {
        return;
    };
    let Some(requests) = obj_at(resources, "requests") else {
        return;
    };
    for (k, v) in limits {
        requests.entry(k).or_insert(v);
    }
}

/// A `PodTemplateSpec` (`{metadata, spec}`) wherever one appears.
fn pod_template(template: &mut Map<String, Value>) {
    if let Some(spec) = obj_at(template, "spec") {
        pod_spec(spec);
    }
}

fn pod_spec(spec: &mut Map<String, Value>) {
    default_str(spec, "dnsPolicy", "ClusterFirst");
    default_str(spec, "restartPolicy", "Always");
    default_value(spec, "securityContext", json!({}));
    default_value(
        spec,
        "terminationGracePeriodSeconds",
        json!(TERMINATION_GRACE_PERIOD_SECONDS_DEFAULT),
    );
    default_str(spec, "schedulerName", "default-scheduler");
    for key in ["containers", "initContainers", "ephemeralContainers"] {
        for c in each_obj(spec, key) {
            container(c);
        }
    }
    for v in each_obj(spec, "volumes") {
        volume(v);
    }
}

fn container(c: &mut Map<String, Value>) {
    if c.get("imagePullPolicy")
        .is_none_or(|p| p.is_null() || p.as_str() == Some(""))
    {
        let policy = if image_tag(str_at(c, "image")) == "latest" {
            "Always"
        } else {
            "IfNotPresent"
        };
        c.insert("imagePullPolicy".into(), json!(policy));
    }
    default_str(c, "terminationMessagePath", "/dev/termination-log");
    default_str(c, "terminationMessagePolicy", "File");
    // Not a default in Kubernetes but a struct Go always serialises: every container
    // shows `resources: {}`.
    default_value(c, "resources", json!({}));
    for p in each_obj(c, "ports") {
        default_str(p, "protocol", "TCP");
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = existing_obj(c, probe) {
            probe_defaults(p);
        }
    }
    for env in each_obj(c, "env") {
        if let Some(field_ref) =
            existing_obj(env, "valueFrom").and_then(|v| existing_obj(v, "fieldRef"))
        {
            default_str(field_ref, "apiVersion", "v1");
        }
    }
}

fn probe_defaults(p: &mut Map<String, Value>) {
    for (key, v) in [
        ("timeoutSeconds", 1),
        ("periodSeconds", 10),
        ("successThreshold", 1),
        ("failureThreshold", 3),
    ] {
        if p.get(key).and_then(Value::as_i64).unwrap_or(0) == 0 {
            p.insert(key.into(), json!(v));
        }
    }
    if let Some(http) = existing_obj(p, "httpGet") {
        default_str(http, "path", "/");
        default_str(http, "scheme", "HTTP");
    }
}

/// The tag `ParseImageName` finds: the explicit tag, "" with a digest and no tag, else
/// `latest`.
fn image_tag(image: &str) -> &str {
    if image.is_empty() {
        return "";
    }
    let (name, digest) = match image.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (image, None),
    };
    let last = name.rsplit('/').next().unwrap_or(name);
    match last.split_once(':') {
        Some((_, tag)) => tag,
        None if digest.is_some() => "",
        None => "latest",
    }
}

fn volume(v: &mut Map<String, Value>) {
    let has_source = v.iter().any(|(k, x)| k != "name" && !x.is_null());
    if !has_source {
        v.insert("emptyDir".into(), json!({}));
    }
    for source in ["secret", "configMap", "downwardAPI", "projected"] {
        if let Some(s) = existing_obj(v, source) {
            default_value(s, "defaultMode", json!(VOLUME_DEFAULT_MODE));
        }
    }
    if let Some(h) = existing_obj(v, "hostPath") {
        default_value(h, "type", json!(""));
    }
}

// ---------------------------------------------------------------------------------------
// workloads

fn deployment(obj: &mut Map<String, Value>) {
    let Some(spec) = obj_at(obj, "spec") else {
        return;
    };
    default_value(spec, "replicas", json!(1));
    if let Some(strategy) = obj_at(spec, "strategy") {
        default_str(strategy, "type", "RollingUpdate");
        if str_at(strategy, "type") == "RollingUpdate"
            && let Some(ru) = obj_at(strategy, "rollingUpdate")
        {
            default_value(ru, "maxUnavailable", json!("25%"));
            default_value(ru, "maxSurge", json!("25%"));
        }
    }
    default_value(spec, "revisionHistoryLimit", json!(10));
    default_value(spec, "progressDeadlineSeconds", json!(600));
    if let Some(t) = obj_at(spec, "template") {
        pod_template(t);
    }
}

fn replica_set(obj: &mut Map<String, Value>) {
    let Some(spec) = obj_at(obj, "spec") else {
        return;
    };
    default_value(spec, "replicas", json!(1));
    if let Some(t) = obj_at(spec, "template") {
        pod_template(t);
    }
}

fn stateful_set(obj: &mut Map<String, Value>) {
    let Some(spec) = obj_at(obj, "spec") else {
        return;
    };
    default_str(spec, "podManagementPolicy", "OrderedReady");
    if let Some(us) = obj_at(spec, "updateStrategy") {
        if us
            .get("type")
            .is_none_or(|t| t.is_null() || t.as_str() == Some(""))
        {
            us.insert("type".into(), json!("RollingUpdate"));
            default_value(us, "rollingUpdate", json!({}));
        }
        if str_at(us, "type") == "RollingUpdate"
            && let Some(ru) = existing_obj(us, "rollingUpdate")
        {
            default_value(ru, "partition", json!(0));
        }
    }
    if let Some(policy) = obj_at(spec, "persistentVolumeClaimRetentionPolicy") {
        default_str(policy, "whenDeleted", "Retain");
        default_str(policy, "whenScaled", "Retain");
    }
    default_value(spec, "replicas", json!(1));
    default_value(spec, "revisionHistoryLimit", json!(10));
    if let Some(t) = obj_at(spec, "template") {
        pod_template(t);
    }
    for pvc in each_obj(spec, "volumeClaimTemplates") {
        persistent_volume_claim(pvc);
    }
}

fn daemon_set(obj: &mut Map<String, Value>) {
    let Some(spec) = obj_at(obj, "spec") else {
        return;
    };
    if let Some(us) = obj_at(spec, "updateStrategy") {
        default_str(us, "type", "RollingUpdate");
        if str_at(us, "type") == "RollingUpdate"
            && let Some(ru) = obj_at(us, "rollingUpdate")
        {
            default_value(ru, "maxUnavailable", json!(1));
            default_value(ru, "maxSurge", json!(0));
        }
    }
    default_value(spec, "revisionHistoryLimit", json!(10));
    if let Some(t) = obj_at(spec, "template") {
        pod_template(t);
    }
}

fn replication_controller(obj: &mut Map<String, Value>) {
    let template_labels = obj
        .get("spec")
        .and_then(|s| s.get("template"))
        .and_then(|t| t.get("metadata"))
        .and_then(|m| m.get("labels"))
        .and_then(Value::as_object)
        .cloned();
    if let Some(labels) = template_labels {
        if let Some(spec) = obj_at(obj, "spec")
            && spec
                .get("selector")
                .and_then(Value::as_object)
                .is_none_or(Map::is_empty)
        {
            spec.insert("selector".into(), Value::Object(labels.clone()));
        }
        if let Some(meta) = obj_at(obj, "metadata")
            && meta
                .get("labels")
                .and_then(Value::as_object)
                .is_none_or(Map::is_empty)
        {
            meta.insert("labels".into(), Value::Object(labels));
        }
    }
    let Some(spec) = obj_at(obj, "spec") else {
        return;
    };
    default_value(spec, "replicas", json!(1));
    if let Some(t) = existing_obj(spec, "template") {
        pod_template(t);
    }
}

fn job(obj: &mut Map<String, Value>) {
    let template_labels = obj
        .get("spec")
        .and_then(|s| s.get("template"))
        .and_then(|t| t.get("metadata"))
        .and_then(|m| m.get("labels"));
    if let Some(labels) = non_empty_map(template_labels)
        && let Some(meta) = obj_at(obj, "metadata")
        && meta
            .get("labels")
            .and_then(Value::as_object)
            .is_none_or(Map::is_empty)
    {
        meta.insert("labels".into(), Value::Object(labels));
    }
    let Some(spec) = obj_at(obj, "spec") else {
        return;
    };
    if spec.get("completions").is_none_or(Value::is_null)
        && spec.get("parallelism").is_none_or(Value::is_null)
    {
        spec.insert("completions".into(), json!(1));
    }
    default_value(spec, "parallelism", json!(1));
    default_value(spec, "backoffLimit", json!(6));
    default_str(spec, "completionMode", "NonIndexed");
    default_value(spec, "suspend", json!(false));
    let replacement = if spec.get("podFailurePolicy").is_some_and(|p| !p.is_null()) {
        "Failed"
    } else {
        "TerminatingOrFailed"
    };
    default_str(spec, "podReplacementPolicy", replacement);
    if let Some(t) = obj_at(spec, "template") {
        pod_template(t);
    }
}

/// What a Job's strategy sets on create, beyond defaulting: unless `manualSelector` is
/// true, the pod template gets the job-name and controller-uid labels (new and legacy
/// names; values the user gave are kept, and a mismatch fails validation) and the selector
/// selects `batch.kubernetes.io/controller-uid`. The Job's own labels, when empty, become
/// the template's (kube-apiserver re-defaults on read, so users see them).
pub fn job_on_create(obj: &mut Map<String, Value>, uid: &str) {
    let name = obj
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let Some(spec) = existing_obj(obj, "spec") else {
        return;
    };
    if spec.get("manualSelector").and_then(Value::as_bool) == Some(true) {
        return;
    }
    let Some(labels) = obj_at(spec, "template")
        .and_then(|t| obj_at(t, "metadata"))
        .and_then(|m| obj_at(m, "labels"))
    else {
        return;
    };
    for key in [JOB_LEGACY_NAME_LABEL, JOB_NAME_LABEL] {
        labels.entry(key).or_insert_with(|| json!(name));
    }
    for key in [JOB_LEGACY_CONTROLLER_UID_LABEL, JOB_CONTROLLER_UID_LABEL] {
        labels.entry(key).or_insert_with(|| json!(uid));
    }
    let template_labels = labels.clone();
    if let Some(match_labels) = obj_at(spec, "selector").and_then(|s| obj_at(s, "matchLabels")) {
        match_labels
            .entry(JOB_CONTROLLER_UID_LABEL)
            .or_insert_with(|| json!(uid));
    }
    if let Some(meta) = obj_at(obj, "metadata")
        && non_empty_map(meta.get("labels")).is_none()
    {
        meta.insert("labels".into(), Value::Object(template_labels));
    }
}

fn cron_job(obj: &mut Map<String, Value>) {
    let Some(spec) = obj_at(obj, "spec") else {
        return;
    };
    default_str(spec, "concurrencyPolicy", "Allow");
    default_value(spec, "suspend", json!(false));
    default_value(spec, "successfulJobsHistoryLimit", json!(3));
    default_value(spec, "failedJobsHistoryLimit", json!(1));
    if let Some(t) = existing_obj(spec, "jobTemplate")
        .and_then(|jt| existing_obj(jt, "spec"))
        .and_then(|js| existing_obj(js, "template"))
    {
        pod_template(t);
    }
}

// ---------------------------------------------------------------------------------------
// services, secrets, namespaces, storage

fn service(obj: &mut Map<String, Value>) {
    let Some(spec) = obj_at(obj, "spec") else {
        return;
    };
    default_str(spec, "sessionAffinity", "None");
    match str_at(spec, "sessionAffinity") {
        "None" => {
            spec.remove("sessionAffinityConfig");
        }
        "ClientIP" => {
            let has_timeout = spec
                .get("sessionAffinityConfig")
                .and_then(|c| c.get("clientIP"))
                .and_then(|c| c.get("timeoutSeconds"))
                .is_some_and(|t| !t.is_null());
            if !has_timeout {
                spec.insert(
                    "sessionAffinityConfig".into(),
                    json!({"clientIP": {"timeoutSeconds": CLIENT_IP_AFFINITY_SECONDS_DEFAULT}}),
                );
            }
        }
        _ => {}
    }
    default_str(spec, "type", "ClusterIP");
    for p in each_obj(spec, "ports") {
        default_str(p, "protocol", "TCP");
        let unset = match p.get("targetPort") {
            None | Some(Value::Null) => true,
            Some(Value::Number(n)) => n.as_i64() == Some(0),
            Some(Value::String(s)) => s.is_empty(),
            Some(_) => false,
        };
        if unset && let Some(port) = p.get("port").cloned() {
            p.insert("targetPort".into(), port);
        }
    }
    let kind = str_at(spec, "type").to_string();
    let external = kind == "NodePort"
        || kind == "LoadBalancer"
        || spec
            .get("externalIPs")
            .and_then(Value::as_array)
            .is_some_and(|ips| !ips.is_empty());
    if external {
        default_str(spec, "externalTrafficPolicy", "Cluster");
    }
    if matches!(kind.as_str(), "ClusterIP" | "NodePort" | "LoadBalancer") {
        default_str(spec, "internalTrafficPolicy", "Cluster");
        // What the IP allocator records for a single-stack IPv4 cluster; the address
        // itself is the allocator's to choose.
        default_value(spec, "ipFamilies", json!(["IPv4"]));
        default_str(spec, "ipFamilyPolicy", "SingleStack");
    }
    if kind == "LoadBalancer" {
        default_value(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
    // A clusterIP given alone is also the first of clusterIPs.
    let cluster_ip = str_at(spec, "clusterIP").to_string();
    if !cluster_ip.is_empty()
        && spec
            .get("clusterIPs")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty)
    {
        spec.insert("clusterIPs".into(), json!([cluster_ip]));
    }
}

/// On a Service update, what the client left out but the server allocated is kept: the
/// cluster IPs and each port's nodePort (matched by port number and protocol), as
/// kube-apiserver's service REST does, so `kubectl replace` of the original manifest works.
pub fn service_keep_allocated(old: &Map<String, Value>, new: &mut Map<String, Value>) {
    let (Some(old_spec), Some(new_spec)) = (
        old.get("spec").and_then(Value::as_object),
        new.get_mut("spec").and_then(Value::as_object_mut),
    ) else {
        return;
    };
    let needs_ip = |s: &Map<String, Value>| str_at(s, "type") != "ExternalName";
    if needs_ip(old_spec) && needs_ip(new_spec) {
        if str_at(new_spec, "clusterIP").is_empty()
            && let Some(ip) = old_spec.get("clusterIP").filter(|v| !v.is_null())
        {
            new_spec.insert("clusterIP".into(), ip.clone());
        }
        if new_spec
            .get("clusterIPs")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty)
            && let Some(ips) = old_spec.get("clusterIPs").filter(|v| !v.is_null())
        {
            new_spec.insert("clusterIPs".into(), ips.clone());
        }
    }
    let old_ports: Vec<Map<String, Value>> = old_spec
        .get("ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| p.as_object().cloned())
        .collect();
    let new_type = str_at(new_spec, "type").to_string();
    if new_type != "NodePort" && new_type != "LoadBalancer" {
        return;
    }
    for p in each_obj(new_spec, "ports") {
        if p.get("nodePort").and_then(Value::as_i64).unwrap_or(0) != 0 {
            continue;
        }
        let same = old_ports.iter().find(|o| {
            o.get("port") == p.get("port") && str_at(o, "protocol") == str_at(p, "protocol")
        });
        if let Some(node_port) = same
            .and_then(|o| o.get("nodePort"))
            .filter(|v| !v.is_null())
        {
            p.insert("nodePort".into(), node_port.clone());
        }
    }
}

fn secret(obj: &mut Map<String, Value>) {
    default_str(obj, "type", "Opaque");
    // The internal Secret has no stringData: converting to it writes each entry into
    // data (base64 on the wire), overriding a data entry of the same key.
    if let Some(Value::Object(string_data)) = obj.remove("stringData") {
        let Some(data) = obj_at(obj, "data") else {
            return;
        };
        for (k, v) in string_data {
            if let Some(s) = v.as_str() {
                let encoded = base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
                data.insert(k, Value::String(encoded));
            }
        }
    }
}

fn namespace(obj: &mut Map<String, Value>) {
    let name = obj
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if !name.is_empty()
        && let Some(labels) = obj_at(obj, "metadata").and_then(|m| obj_at(m, "labels"))
    {
        labels.insert(NAMESPACE_NAME_LABEL.into(), Value::String(name));
    }
    if let Some(spec) = obj_at(obj, "spec")
        && spec
            .get("finalizers")
            .and_then(Value::as_array)
            .is_none_or(|f| !f.iter().any(|x| x == "kubernetes"))
    {
        let mut finalizers = spec
            .get("finalizers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        finalizers.push(json!("kubernetes"));
        spec.insert("finalizers".into(), Value::Array(finalizers));
    }
}

/// admissionregistration/v1's webhook defaults (`SetDefaults_ValidatingWebhook` and
/// `SetDefaults_MutatingWebhook`).
fn webhooks(obj: &mut Map<String, Value>, mutating: bool) {
    for hook in each_obj(obj, "webhooks") {
        default_str(hook, "failurePolicy", "Fail");
        default_str(hook, "matchPolicy", "Equivalent");
        default_value(hook, "namespaceSelector", json!({}));
        default_value(hook, "objectSelector", json!({}));
        default_value(hook, "timeoutSeconds", json!(10));
        if mutating {
            default_str(hook, "reinvocationPolicy", "Never");
        }
        for rule in each_obj(hook, "rules") {
            default_str(rule, "scope", "*");
        }
        if let Some(svc) = hook
            .get_mut("clientConfig")
            .and_then(|c| c.get_mut("service"))
            .and_then(Value::as_object_mut)
        {
            default_value(svc, "port", json!(443));
        }
    }
}

fn endpoints(obj: &mut Map<String, Value>) {
    for subset in each_obj(obj, "subsets") {
        for p in each_obj(subset, "ports") {
            default_str(p, "protocol", "TCP");
        }
    }
}

fn persistent_volume(obj: &mut Map<String, Value>) {
    if let Some(spec) = obj_at(obj, "spec") {
        default_str(spec, "persistentVolumeReclaimPolicy", "Retain");
        default_str(spec, "volumeMode", "Filesystem");
    }
    if let Some(status) = obj_at(obj, "status") {
        default_str(status, "phase", "Pending");
    }
}

fn persistent_volume_claim(obj: &mut Map<String, Value>) {
    if let Some(spec) = obj_at(obj, "spec") {
        default_str(spec, "volumeMode", "Filesystem");
    }
    if let Some(status) = obj_at(obj, "status") {
        default_str(status, "phase", "Pending");
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test that panics has failed
mod tests {
    use super::*;
    use crate::registry::Registry;

    fn defaulted(group: &str, plural: &str, obj: Value) -> Value {
        let registry = Registry::builtin();
        let info = registry.get(group, "v1", plural).unwrap();
        let mut m = obj.as_object().unwrap().clone();
        apply(info, &mut m);
        Value::Object(m)
    }

    /// One case: a kind, an input, and the values expected at JSON pointers afterwards
    /// (`Value::Null` = absent).
    struct Case {
        name: &'static str,
        group: &'static str,
        plural: &'static str,
        input: Value,
        expect: Vec<(&'static str, Value)>,
    }

    fn pod_spec_in(path: &str) -> Vec<(String, Value)> {
        vec![
            (format!("{path}/restartPolicy"), json!("Always")),
            (format!("{path}/dnsPolicy"), json!("ClusterFirst")),
            (format!("{path}/schedulerName"), json!("default-scheduler")),
            (format!("{path}/terminationGracePeriodSeconds"), json!(30)),
            (format!("{path}/securityContext"), json!({})),
            (
                format!("{path}/containers/0/terminationMessagePath"),
                json!("/dev/termination-log"),
            ),
            (
                format!("{path}/containers/0/terminationMessagePolicy"),
                json!("File"),
            ),
            (format!("{path}/containers/0/resources"), json!({})),
            (
                format!("{path}/containers/0/imagePullPolicy"),
                json!("IfNotPresent"),
            ),
        ]
    }

    fn template(labels: Value) -> Value {
        json!({"metadata": {"labels": labels}, "spec": {"containers": [{"name": "c", "image": "nginx:1.25"}]}})
    }

    #[test]
    fn every_kind_gets_kube_apiservers_defaults() {
        let cases = vec![
            Case {
                name: "pod",
                group: "",
                plural: "pods",
                input: json!({"metadata": {"name": "p"}, "spec": {"containers": [
                    {"name": "c", "image": "nginx:1.25", "ports": [{"containerPort": 80}],
                     "resources": {"limits": {"cpu": "1"}}}
                ]}}),
                expect: vec![
                    ("/spec/enableServiceLinks", json!(true)),
                    ("/spec/containers/0/ports/0/protocol", json!("TCP")),
                    ("/spec/containers/0/resources/requests/cpu", json!("1")),
                ],
            },
            Case {
                name: "deployment",
                group: "apps",
                plural: "deployments",
                input: json!({"metadata": {"name": "d"}, "spec": {"template": template(json!({"a": "b"}))}}),
                expect: vec![
                    ("/spec/replicas", json!(1)),
                    ("/spec/strategy/type", json!("RollingUpdate")),
                    ("/spec/strategy/rollingUpdate/maxUnavailable", json!("25%")),
                    ("/spec/strategy/rollingUpdate/maxSurge", json!("25%")),
                    ("/spec/revisionHistoryLimit", json!(10)),
                    ("/spec/progressDeadlineSeconds", json!(600)),
                    // Pod-only defaults do not reach templates.
                    ("/spec/template/spec/enableServiceLinks", Value::Null),
                ],
            },
            Case {
                name: "deployment with Recreate gets no rollingUpdate",
                group: "apps",
                plural: "deployments",
                input: json!({"spec": {"strategy": {"type": "Recreate"}, "template": template(json!({}))}}),
                expect: vec![("/spec/strategy/rollingUpdate", Value::Null)],
            },
            Case {
                name: "replicaset",
                group: "apps",
                plural: "replicasets",
                input: json!({"spec": {"template": template(json!({}))}}),
                expect: vec![("/spec/replicas", json!(1))],
            },
            Case {
                name: "statefulset",
                group: "apps",
                plural: "statefulsets",
                input: json!({"spec": {"template": template(json!({})),
                    "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {}}]}}),
                expect: vec![
                    ("/spec/replicas", json!(1)),
                    ("/spec/podManagementPolicy", json!("OrderedReady")),
                    ("/spec/updateStrategy/type", json!("RollingUpdate")),
                    ("/spec/updateStrategy/rollingUpdate/partition", json!(0)),
                    ("/spec/revisionHistoryLimit", json!(10)),
                    (
                        "/spec/persistentVolumeClaimRetentionPolicy",
                        json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
                    ),
                    (
                        "/spec/volumeClaimTemplates/0/spec/volumeMode",
                        json!("Filesystem"),
                    ),
                    (
                        "/spec/volumeClaimTemplates/0/status/phase",
                        json!("Pending"),
                    ),
                ],
            },
            Case {
                name: "statefulset OnDelete gets no partition",
                group: "apps",
                plural: "statefulsets",
                input: json!({"spec": {"updateStrategy": {"type": "OnDelete"}, "template": template(json!({}))}}),
                expect: vec![("/spec/updateStrategy/rollingUpdate", Value::Null)],
            },
            Case {
                name: "daemonset",
                group: "apps",
                plural: "daemonsets",
                input: json!({"spec": {"template": template(json!({}))}}),
                expect: vec![
                    ("/spec/updateStrategy/type", json!("RollingUpdate")),
                    (
                        "/spec/updateStrategy/rollingUpdate/maxUnavailable",
                        json!(1),
                    ),
                    ("/spec/updateStrategy/rollingUpdate/maxSurge", json!(0)),
                    ("/spec/revisionHistoryLimit", json!(10)),
                ],
            },
            Case {
                name: "job",
                group: "batch",
                plural: "jobs",
                input: json!({"metadata": {"name": "j"}, "spec": {"template": template(json!({"x": "y"}))}}),
                expect: vec![
                    ("/spec/parallelism", json!(1)),
                    ("/spec/completions", json!(1)),
                    ("/spec/backoffLimit", json!(6)),
                    ("/spec/completionMode", json!("NonIndexed")),
                    ("/spec/suspend", json!(false)),
                    ("/spec/podReplacementPolicy", json!("TerminatingOrFailed")),
                    ("/spec/manualSelector", Value::Null),
                    ("/metadata/labels", json!({"x": "y"})),
                ],
            },
            Case {
                name: "job with parallelism only keeps completions unset",
                group: "batch",
                plural: "jobs",
                input: json!({"spec": {"parallelism": 3, "template": template(json!({}))}}),
                expect: vec![
                    ("/spec/parallelism", json!(3)),
                    ("/spec/completions", Value::Null),
                ],
            },
            Case {
                name: "cronjob",
                group: "batch",
                plural: "cronjobs",
                input: json!({"spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": template(json!({}))}}}}),
                expect: vec![
                    ("/spec/concurrencyPolicy", json!("Allow")),
                    ("/spec/suspend", json!(false)),
                    ("/spec/successfulJobsHistoryLimit", json!(3)),
                    ("/spec/failedJobsHistoryLimit", json!(1)),
                    (
                        "/spec/jobTemplate/spec/template/spec/dnsPolicy",
                        json!("ClusterFirst"),
                    ),
                    // JobSpec defaults belong to Job objects, not to CronJob templates.
                    ("/spec/jobTemplate/spec/backoffLimit", Value::Null),
                ],
            },
            Case {
                name: "replicationcontroller takes selector and labels from its template",
                group: "",
                plural: "replicationcontrollers",
                input: json!({"metadata": {"name": "rc"}, "spec": {"template": template(json!({"app": "a"}))}}),
                expect: vec![
                    ("/spec/replicas", json!(1)),
                    ("/spec/selector", json!({"app": "a"})),
                    ("/metadata/labels", json!({"app": "a"})),
                ],
            },
            Case {
                name: "service",
                group: "",
                plural: "services",
                input: json!({"spec": {"ports": [{"port": 80}, {"port": 443, "targetPort": "https"}]}}),
                expect: vec![
                    ("/spec/type", json!("ClusterIP")),
                    ("/spec/sessionAffinity", json!("None")),
                    ("/spec/ports/0/protocol", json!("TCP")),
                    ("/spec/ports/0/targetPort", json!(80)),
                    ("/spec/ports/1/targetPort", json!("https")),
                    ("/spec/ipFamilies", json!(["IPv4"])),
                    ("/spec/ipFamilyPolicy", json!("SingleStack")),
                    ("/spec/internalTrafficPolicy", json!("Cluster")),
                    ("/spec/externalTrafficPolicy", Value::Null),
                    ("/spec/clusterIP", Value::Null),
                ],
            },
            Case {
                name: "nodeport service",
                group: "",
                plural: "services",
                input: json!({"spec": {"type": "NodePort", "ports": [{"port": 80}]}}),
                expect: vec![("/spec/externalTrafficPolicy", json!("Cluster"))],
            },
            Case {
                name: "loadbalancer service",
                group: "",
                plural: "services",
                input: json!({"spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}}),
                expect: vec![
                    ("/spec/externalTrafficPolicy", json!("Cluster")),
                    ("/spec/allocateLoadBalancerNodePorts", json!(true)),
                ],
            },
            Case {
                name: "externalname service gets no IP families",
                group: "",
                plural: "services",
                input: json!({"spec": {"type": "ExternalName", "externalName": "example.com"}}),
                expect: vec![
                    ("/spec/ipFamilies", Value::Null),
                    ("/spec/internalTrafficPolicy", Value::Null),
                ],
            },
            Case {
                name: "clientip affinity gets its timeout",
                group: "",
                plural: "services",
                input: json!({"spec": {"sessionAffinity": "ClientIP", "ports": [{"port": 80}]}}),
                expect: vec![(
                    "/spec/sessionAffinityConfig/clientIP/timeoutSeconds",
                    json!(10800),
                )],
            },
            Case {
                name: "secret",
                group: "",
                plural: "secrets",
                input: json!({"metadata": {"name": "s"}, "stringData": {"a": "hi"}, "data": {"b": "eA=="}}),
                expect: vec![
                    ("/type", json!("Opaque")),
                    ("/data/a", json!("aGk=")),
                    ("/data/b", json!("eA==")),
                    ("/stringData", Value::Null),
                ],
            },
            Case {
                name: "namespace",
                group: "",
                plural: "namespaces",
                input: json!({"metadata": {"name": "prod", "labels": {"kubernetes.io/metadata.name": "wrong"}}}),
                expect: vec![
                    (
                        "/metadata/labels/kubernetes.io~1metadata.name",
                        json!("prod"),
                    ),
                    ("/spec/finalizers", json!(["kubernetes"])),
                ],
            },
            Case {
                name: "configmap has no defaults",
                group: "",
                plural: "configmaps",
                input: json!({"metadata": {"name": "c"}}),
                expect: vec![("/data", Value::Null), ("/spec", Value::Null)],
            },
        ];
        for case in cases {
            let out = defaulted(case.group, case.plural, case.input);
            for (pointer, want) in &case.expect {
                let got = out.pointer(pointer).cloned().unwrap_or(Value::Null);
                assert_eq!(&got, want, "{}: {pointer} in {out:#}", case.name);
            }
        }
    }

    #[test]
    fn pod_templates_are_defaulted_wherever_they_appear() {
        let cases: Vec<(&str, &str, Value, &str)> = vec![
            (
                "",
                "pods",
                json!({"spec": template(json!({}))["spec"]}),
                "/spec",
            ),
            (
                "",
                "podtemplates",
                json!({"template": template(json!({}))}),
                "/template/spec",
            ),
            (
                "apps",
                "deployments",
                json!({"spec": {"template": template(json!({}))}}),
                "/spec/template/spec",
            ),
            (
                "batch",
                "jobs",
                json!({"spec": {"template": template(json!({}))}}),
                "/spec/template/spec",
            ),
        ];
        for (group, plural, input, path) in cases {
            let out = defaulted(group, plural, input);
            for (pointer, want) in pod_spec_in(path) {
                assert_eq!(
                    out.pointer(&pointer),
                    Some(&want),
                    "{plural}: {pointer} in {out:#}"
                );
            }
        }
    }

    #[test]
    fn image_pull_policy_follows_the_tag() {
        let cases = [
            ("nginx", "Always"),
            ("nginx:latest", "Always"),
            ("nginx:1.25", "IfNotPresent"),
            ("localhost:5000/nginx", "Always"),
            ("localhost:5000/nginx:v1", "IfNotPresent"),
            ("nginx@sha256:abcd", "IfNotPresent"),
            ("nginx:latest@sha256:abcd", "Always"),
            ("", "IfNotPresent"),
        ];
        for (image, want) in cases {
            let out = defaulted(
                "",
                "pods",
                json!({"spec": {"containers": [{"name": "c", "image": image}]}}),
            );
            assert_eq!(
                out.pointer("/spec/containers/0/imagePullPolicy"),
                Some(&json!(want)),
                "{image:?}"
            );
        }
    }

    #[test]
    fn given_values_are_never_overwritten() {
        let out = defaulted(
            "apps",
            "deployments",
            json!({"spec": {"replicas": 0, "revisionHistoryLimit": 2,
                "strategy": {"rollingUpdate": {"maxSurge": 1}},
                "template": {"spec": {"restartPolicy": "Never", "containers": [
                    {"name": "c", "image": "x", "imagePullPolicy": "Never"}]}}}}),
        );
        assert_eq!(out["spec"]["replicas"], 0);
        assert_eq!(out["spec"]["revisionHistoryLimit"], 2);
        assert_eq!(out["spec"]["strategy"]["rollingUpdate"]["maxSurge"], 1);
        assert_eq!(
            out["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"],
            "25%"
        );
        assert_eq!(out["spec"]["template"]["spec"]["restartPolicy"], "Never");
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"],
            "Never"
        );
    }

    #[test]
    fn probes_and_volumes_get_their_defaults() {
        let out = defaulted(
            "",
            "pods",
            json!({"spec": {"containers": [{"name": "c", "image": "x",
                "livenessProbe": {"httpGet": {"port": 80}},
                "env": [{"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}],
                "volumes": [{"name": "a"}, {"name": "b", "secret": {"secretName": "s"}}]}}),
        );
        let probe = &out["spec"]["containers"][0]["livenessProbe"];
        assert_eq!(
            (
                &probe["timeoutSeconds"],
                &probe["periodSeconds"],
                &probe["successThreshold"],
                &probe["failureThreshold"],
                &probe["httpGet"]["path"],
                &probe["httpGet"]["scheme"]
            ),
            (
                &json!(1),
                &json!(10),
                &json!(1),
                &json!(3),
                &json!("/"),
                &json!("HTTP")
            )
        );
        assert_eq!(
            out["spec"]["containers"][0]["env"][0]["valueFrom"]["fieldRef"]["apiVersion"],
            "v1"
        );
        assert_eq!(out["spec"]["volumes"][0]["emptyDir"], json!({}));
        assert_eq!(out["spec"]["volumes"][1]["secret"]["defaultMode"], 420);
    }

    #[test]
    fn a_job_selects_its_own_pods_by_uid() {
        let mut job =
            json!({"metadata": {"name": "pi"}, "spec": {"template": template(Value::Null)}})
                .as_object()
                .unwrap()
                .clone();
        job_on_create(&mut job, "u-1");
        let job = Value::Object(job);
        assert_eq!(
            job["spec"]["selector"],
            json!({"matchLabels": {"batch.kubernetes.io/controller-uid": "u-1"}})
        );
        let want_labels = json!({
            "batch.kubernetes.io/controller-uid": "u-1",
            "batch.kubernetes.io/job-name": "pi",
            "controller-uid": "u-1",
            "job-name": "pi",
        });
        assert_eq!(job["spec"]["template"]["metadata"]["labels"], want_labels);
        assert_eq!(job["metadata"]["labels"], want_labels);

        let mut manual = json!({"metadata": {"name": "m"}, "spec": {"manualSelector": true,
            "selector": {"matchLabels": {"a": "b"}}, "template": template(json!({"a": "b"}))}})
        .as_object()
        .unwrap()
        .clone();
        let before = manual.clone();
        job_on_create(&mut manual, "u-2");
        assert_eq!(manual, before, "a manual selector is left alone");
    }

    #[test]
    fn a_service_update_keeps_what_was_allocated() {
        let old = json!({"spec": {"type": "NodePort", "clusterIP": "10.0.0.5", "clusterIPs": ["10.0.0.5"],
            "ports": [{"port": 80, "protocol": "TCP", "nodePort": 30080}]}});
        let mut new =
            json!({"spec": {"type": "NodePort", "ports": [{"port": 80, "protocol": "TCP"}]}})
                .as_object()
                .unwrap()
                .clone();
        service_keep_allocated(old.as_object().unwrap(), &mut new);
        let new = Value::Object(new);
        assert_eq!(new["spec"]["clusterIP"], "10.0.0.5");
        assert_eq!(new["spec"]["clusterIPs"], json!(["10.0.0.5"]));
        assert_eq!(new["spec"]["ports"][0]["nodePort"], 30080);
    }
}
