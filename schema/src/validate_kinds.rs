//! Validation of the built-in kinds beyond `metadata`: pod specs wherever they appear,
//! workloads, services, secrets and configmaps, and the rules an update must follow
//! (immutable fields), with kube-apiserver 1.33's field paths, reasons and messages.
//!
//! [`validate`] checks one object on its own (create, and the new object of an update);
//! [`validate_update`] checks the change from the stored object. Both run after defaulting
//! ([`crate::defaults`]), as kube-apiserver's do, so a required field that has a default is
//! never reported missing. Every problem is returned, none stops the others (except where
//! kube-apiserver itself stops, noted in place).
//!
//! Bad values are printed the way Go's `field.Error` prints them: strings quoted, numbers
//! bare, label maps and selectors as `%#v` (`map[string]string{"app":"web"}`,
//! `v1.LabelSelector{...}`). Larger structs (a whole pod template, a strategy) are printed
//! as JSON instead of Go syntax: a documented difference in wording only.

use serde_json::{Map, Value};

use crate::quantity::Quantity;
use crate::registry::ResourceInfo;
use crate::selector::LabelSelector;
use crate::validate::{
    Cause, go_quote, go_string_slice, is_dns1123_label, is_dns1123_subdomain, is_qualified_name,
    is_valid_label_value, render_value, validate_annotations_at, validate_labels_at,
};

/// Highest TCP/UDP/SCTP port number.
pub const PORT_NUMBER_MAX: i64 = 65_535;
/// Longest IANA service name (a port name), in characters.
pub const PORT_NAME_CHARS_MAX: usize = 15;

const PROTOCOLS: [&str; 3] = ["SCTP", "TCP", "UDP"];
const SELECTOR_MISMATCH: &str = "`selector` does not match template `labels`";
const IMMUTABLE: &str = "field is immutable";
const POD_UPDATABLE_FIELDS: &str = "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

/// What validating one object found: the causes of a 422, and warnings that do not fail
/// the request (kube-apiserver sends them as `Warning` headers).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Findings {
    pub causes: Vec<Cause>,
    pub warnings: Vec<String>,
}

/// Validates the kind-specific part of `obj` (its spec, data, type) as kube-apiserver does
/// on create, and on update for the new object. Kinds without rules here pass.
pub fn validate(info: &ResourceInfo, obj: &Value) -> Findings {
    let mut f = Findings::default();
    match (info.group.as_str(), info.plural.as_str()) {
        ("", "pods") => pod_spec(obj.get("spec"), "spec", &mut f),
        ("", "podtemplates") => pod_template(obj.get("template"), "template", &mut f),
        ("", "replicationcontrollers") => replication_controller(obj, &mut f),
        ("", "services") => service(obj, &mut f),
        ("", "secrets") => secret(obj, &mut f),
        ("", "configmaps") => config_map(obj, &mut f),
        ("apps", "deployments") => deployment(obj, &mut f),
        ("apps", "replicasets") => replica_set(obj, &mut f),
        ("apps", "statefulsets") => stateful_set(obj, &mut f),
        ("apps", "daemonsets") => daemon_set(obj, &mut f),
        ("batch", "jobs") => job(obj, &mut f),
        ("batch", "cronjobs") => cron_job(obj, &mut f),
        (
            "admissionregistration.k8s.io",
            "mutatingwebhookconfigurations" | "validatingwebhookconfigurations",
        ) => webhook_configuration(obj, &mut f.causes),
        _ => {}
    }
    f
}

/// admissionregistration/v1's webhook rules (`validateWebhook`): unique qualified names,
/// `sideEffects` None/NoneOnDryRun, `admissionReviewVersions` including v1, timeouts of
/// 1–30 s, the policies' values, and exactly one of `url` (https) or `service`.
fn webhook_configuration(obj: &Value, causes: &mut Vec<Cause>) {
    let mut names: Vec<&str> = Vec::new();
    let hooks = obj.get("webhooks").and_then(Value::as_array);
    for (i, hook) in hooks.into_iter().flatten().enumerate() {
        let at = |f: &str| format!("webhooks[{i}].{f}");
        let name = str_of(Some(hook), "name");
        if name.is_empty() {
            causes.push(Cause::required(&at("name"), ""));
        } else {
            let mut errs = is_dns1123_subdomain(name);
            if name.split('.').count() < 3 {
                errs.push(
                    "should be a domain with at least three segments separated by dots".into(),
                );
            }
            for e in errs {
                causes.push(Cause::invalid(&at("name"), &go_quote(name), &e));
            }
            if names.contains(&name) {
                causes.push(Cause::duplicate(&at("name"), name));
            }
            names.push(name);
        }
        match hook.get("sideEffects").and_then(Value::as_str) {
            None => causes.push(Cause::required(
                &at("sideEffects"),
                "must specify one of None, NoneOnDryRun",
            )),
            Some("None" | "NoneOnDryRun") => {}
            Some(v) => causes.push(Cause::not_supported(
                &at("sideEffects"),
                v,
                &["None", "NoneOnDryRun"],
            )),
        }
        let versions: Vec<&str> = hook
            .get("admissionReviewVersions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if versions.is_empty() {
            causes.push(Cause::required(
                &at("admissionReviewVersions"),
                "must specify one of v1, v1beta1",
            ));
        } else if !versions.iter().any(|v| matches!(*v, "v1" | "v1beta1")) {
            causes.push(Cause::invalid(
                &at("admissionReviewVersions"),
                &go_string_slice(&versions.iter().map(|v| v.to_string()).collect::<Vec<_>>()),
                "must include at least one of v1, v1beta1",
            ));
        }
        if let Some(t) = hook.get("timeoutSeconds").and_then(Value::as_i64)
            && !(1..=30).contains(&t)
        {
            causes.push(Cause::invalid(
                &at("timeoutSeconds"),
                &t.to_string(),
                "the timeout value must be between 1 and 30 seconds",
            ));
        }
        for (field, allowed) in [
            ("failurePolicy", &["Fail", "Ignore"][..]),
            ("matchPolicy", &["Equivalent", "Exact"][..]),
            ("reinvocationPolicy", &["IfNeeded", "Never"][..]),
        ] {
            if let Some(v) = hook.get(field).and_then(Value::as_str)
                && !allowed.contains(&v)
            {
                causes.push(Cause::not_supported(&at(field), v, allowed));
            }
        }
        let cfg = hook.get("clientConfig");
        let url = cfg.and_then(|c| c.get("url")).and_then(Value::as_str);
        let service = cfg.and_then(|c| c.get("service")).filter(|s| !s.is_null());
        match (url, service) {
            (Some(_), Some(_)) | (None, None) => causes.push(Cause::required(
                &at("clientConfig"),
                "exactly one of url or service is required",
            )),
            (Some(u), None) if !u.starts_with("https://") => causes.push(Cause::invalid(
                &at("clientConfig.url"),
                &go_quote(u),
                "'https' is the only allowed URL scheme",
            )),
            (None, Some(svc)) => {
                for f in ["namespace", "name"] {
                    if str_of(Some(svc), f).is_empty() {
                        causes.push(Cause::required(
                            &at(&format!("clientConfig.service.{f}")),
                            "",
                        ));
                    }
                }
            }
            _ => {}
        }
    }
}

/// Validates the change from `old` to `new` (both whole objects, `new` already defaulted):
/// the fields kube-apiserver refuses to change. `new` on its own is checked by [`validate`].
pub fn validate_update(info: &ResourceInfo, old: &Value, new: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    match (info.group.as_str(), info.plural.as_str()) {
        ("", "pods") => pod_update(old, new, &mut causes),
        ("", "services") => service_update(old, new, &mut causes),
        ("", "secrets") => {
            immutable(new.get("type"), old.get("type"), "type", &mut causes);
            immutable_data(old, new, &["data"], &mut causes);
        }
        ("", "configmaps") => immutable_data(old, new, &["data", "binaryData"], &mut causes),
        ("apps", "deployments" | "replicasets" | "daemonsets") => {
            immutable_selector(old, new, &mut causes);
        }
        ("apps", "statefulsets") => stateful_set_update(old, new, &mut causes),
        ("batch", "jobs") => job_update(old, new, &mut causes),
        _ => {}
    }
    causes
}

// ---------------------------------------------------------------------------------------
// paths and rendering

fn child(base: &str, name: &str) -> String {
    if base.is_empty() {
        name.to_string()
    } else {
        format!("{base}.{name}")
    }
}

fn index(base: &str, i: usize) -> String {
    format!("{base}[{i}]")
}

fn key(base: &str, k: &str) -> String {
    format!("{base}[{k}]")
}

fn str_of<'a>(v: Option<&'a Value>, k: &str) -> &'a str {
    v.and_then(|v| v.get(k))
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn items(v: Option<&Value>) -> &[Value] {
    v.and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// Go's `%#v` of a `map[string]string`: `map[string]string{"a":"b", "c":"d"}`.
fn go_string_map(v: Option<&Value>) -> String {
    let Some(m) = v.and_then(Value::as_object) else {
        return "map[string]string(nil)".into();
    };
    let mut entries: Vec<(&String, &Value)> = m.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    let inner: Vec<String> = entries
        .iter()
        .map(|(k, v)| format!("{}:{}", go_quote(k), go_quote(v.as_str().unwrap_or(""))))
        .collect();
    format!("map[string]string{{{}}}", inner.join(", "))
}

/// Go's `%#v` of a `metav1.LabelSelector`, as in `spec.selector: Invalid value: ...`.
fn go_label_selector(v: Option<&Value>) -> String {
    let Some(sel) = v.filter(|v| !v.is_null()) else {
        return "null".into();
    };
    let exprs = match sel.get("matchExpressions").and_then(Value::as_array) {
        None => "[]v1.LabelSelectorRequirement(nil)".to_string(),
        Some(list) => {
            let inner: Vec<String> = list
                .iter()
                .map(|e| {
                    let values = match e.get("values").and_then(Value::as_array) {
                        None => "[]string(nil)".to_string(),
                        Some(vs) => go_string_slice(
                            &vs.iter()
                                .map(|x| x.as_str().unwrap_or("").to_string())
                                .collect::<Vec<_>>(),
                        ),
                    };
                    format!(
                        "v1.LabelSelectorRequirement{{Key:{}, Operator:{}, Values:{values}}}",
                        go_quote(str_of(Some(e), "key")),
                        go_quote(str_of(Some(e), "operator"))
                    )
                })
                .collect();
            format!("[]v1.LabelSelectorRequirement{{{}}}", inner.join(", "))
        }
    };
    format!(
        "v1.LabelSelector{{MatchLabels:{}, MatchExpressions:{exprs}}}",
        go_string_map(sel.get("matchLabels"))
    )
}

/// A value printed for `Invalid value:` (strings quoted, `null` for absent, else JSON).
fn shown(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "null".into(),
        Some(v) => render_value(v),
    }
}

// ---------------------------------------------------------------------------------------
// shared checks

fn nonnegative(v: Option<&Value>, path: &str, causes: &mut Vec<Cause>) {
    if let Some(n) = v.and_then(Value::as_i64)
        && n < 0
    {
        causes.push(Cause::invalid(
            path,
            &n.to_string(),
            "must be greater than or equal to 0",
        ));
    }
}

fn one_of(v: Option<&Value>, path: &str, supported: &[&str], causes: &mut Vec<Cause>) {
    match v.and_then(Value::as_str) {
        None | Some("") => causes.push(Cause::required(path, "")),
        Some(s) if supported.contains(&s) => {}
        Some(s) => causes.push(Cause::not_supported(path, s, supported)),
    }
}

/// `IsValidPortNum`: 1–65535.
fn port_number(v: Option<&Value>, path: &str, causes: &mut Vec<Cause>) {
    let n = v.and_then(Value::as_i64).unwrap_or(0);
    if !(1..=PORT_NUMBER_MAX).contains(&n) {
        causes.push(Cause::invalid(
            path,
            &n.to_string(),
            "must be between 1 and 65535, inclusive",
        ));
    }
}

/// `IsValidPortName`: an IANA_SVC_NAME.
pub fn is_valid_port_name(name: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if name.len() > PORT_NAME_CHARS_MAX {
        errs.push(format!(
            "must be no more than {PORT_NAME_CHARS_MAX} characters"
        ));
    }
    let charset_ok = !name.is_empty()
        && name
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-');
    if !charset_ok {
        errs.push("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".into());
    } else if !name.bytes().any(|c| c.is_ascii_lowercase()) {
        errs.push("must contain at least one letter (a-z)".into());
    }
    if name.contains("--") {
        errs.push("must not contain consecutive hyphens".into());
    }
    if name.starts_with('-') || name.ends_with('-') {
        errs.push("must not begin or end with a hyphen".into());
    }
    errs
}

/// A port given as a number or an IANA name (`targetPort`).
fn port_num_or_name(v: Option<&Value>, path: &str, causes: &mut Vec<Cause>) {
    match v {
        Some(Value::String(s)) => {
            for msg in is_valid_port_name(s) {
                causes.push(Cause::invalid(path, &go_quote(s), &msg));
            }
        }
        Some(n @ Value::Number(_)) => port_number(Some(n), path, causes),
        _ => {}
    }
}

fn dns_label(name: &str, path: &str, causes: &mut Vec<Cause>) {
    for msg in is_dns1123_label(name) {
        causes.push(Cause::invalid(path, &go_quote(name), &msg));
    }
}

/// `ValidateLabelSelector`: matchLabels are labels, each expression has a known operator,
/// values exactly when the operator needs them, a qualified-name key, label-value values.
fn label_selector(sel: Option<&Value>, path: &str, causes: &mut Vec<Cause>) {
    let Some(sel) = sel.filter(|s| !s.is_null()) else {
        return;
    };
    validate_labels_at(sel.get("matchLabels"), &child(path, "matchLabels"), causes);
    for (i, expr) in items(sel.get("matchExpressions")).iter().enumerate() {
        let p = index(&child(path, "matchExpressions"), i);
        let values = items(expr.get("values"));
        match str_of(Some(expr), "operator") {
            "In" | "NotIn" if values.is_empty() => causes.push(Cause::required(
                &child(&p, "values"),
                "must be specified when `operator` is 'In' or 'NotIn'",
            )),
            "Exists" | "DoesNotExist" if !values.is_empty() => causes.push(Cause::forbidden(
                &child(&p, "values"),
                "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
            )),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => causes.push(Cause::invalid(
                &child(&p, "operator"),
                &go_quote(other),
                "not a valid selector operator",
            )),
        }
        let k = str_of(Some(expr), "key");
        for msg in is_qualified_name(k) {
            causes.push(Cause::invalid(&child(&p, "key"), &go_quote(k), &msg));
        }
        for (j, v) in values.iter().enumerate() {
            let v = v.as_str().unwrap_or("");
            for msg in is_valid_label_value(v) {
                causes.push(Cause::invalid(
                    &index(&child(&p, "values"), j),
                    &go_quote(v),
                    &msg,
                ));
            }
        }
    }
}

fn selector_is_empty(sel: &Value) -> bool {
    let n = |k: &str| {
        sel.get(k)
            .map(|v| match v {
                Value::Object(m) => m.len(),
                Value::Array(a) => a.len(),
                _ => 0,
            })
            .unwrap_or(0)
    };
    n("matchLabels") + n("matchExpressions") == 0
}

/// The template-labels check every controller makes: its selector must select its pods.
/// An unparseable selector was reported by [`label_selector`] and is not matched.
fn template_matches_selector(
    sel: Option<&Value>,
    template: Option<&Value>,
    template_path: &str,
    causes: &mut Vec<Cause>,
) {
    let labels_v = template
        .and_then(|t| t.get("metadata"))
        .and_then(|m| m.get("labels"));
    let Ok(selector) = LabelSelector::from_label_selector_json(sel.unwrap_or(&Value::Null)) else {
        return;
    };
    if selector.is_empty() && !selector.is_nothing() {
        return;
    }
    if !selector.matches(labels_v.and_then(Value::as_object)) {
        causes.push(Cause::invalid(
            &child(template_path, "metadata.labels"),
            &go_string_map(labels_v),
            SELECTOR_MISMATCH,
        ));
    }
}

fn immutable(new: Option<&Value>, old: Option<&Value>, path: &str, causes: &mut Vec<Cause>) {
    let norm = |v: Option<&Value>| v.filter(|v| !v.is_null()).cloned();
    if norm(new) != norm(old) {
        causes.push(Cause::invalid(path, &shown(new), IMMUTABLE));
    }
}

fn immutable_selector(old: &Value, new: &Value, causes: &mut Vec<Cause>) {
    let (o, n) = (old.pointer("/spec/selector"), new.pointer("/spec/selector"));
    if o.filter(|v| !v.is_null()) != n.filter(|v| !v.is_null()) {
        causes.push(Cause::invalid(
            "spec.selector",
            &go_label_selector(n),
            IMMUTABLE,
        ));
    }
}

// ---------------------------------------------------------------------------------------
// pods

/// `ValidatePodTemplateSpec`: the template's labels and annotations, then its pod spec.
fn pod_template(template: Option<&Value>, path: &str, f: &mut Findings) {
    let Some(t) = template.filter(|t| !t.is_null()) else {
        f.causes.push(Cause::required(path, ""));
        return;
    };
    let meta = t.get("metadata");
    let meta_path = child(path, "metadata");
    validate_labels_at(
        meta.and_then(|m| m.get("labels")),
        &child(&meta_path, "labels"),
        &mut f.causes,
    );
    validate_annotations_at(
        meta.and_then(|m| m.get("annotations")),
        &child(&meta_path, "annotations"),
        &mut f.causes,
    );
    pod_spec(t.get("spec"), &child(path, "spec"), f);
}

/// `ValidatePodSpec`, the parts clients meet: containers, ports, resources, volumes and
/// the pod-level enums.
fn pod_spec(spec: Option<&Value>, path: &str, f: &mut Findings) {
    let empty = Value::Object(Map::new());
    let spec = spec.filter(|s| s.is_object()).unwrap_or(&empty);
    let volumes = volumes(spec.get("volumes"), &child(path, "volumes"), &mut f.causes);

    let containers_path = child(path, "containers");
    let containers = items(spec.get("containers"));
    if containers.is_empty() {
        f.causes.push(Cause::required(&containers_path, ""));
    }
    let mut names: Vec<String> = Vec::new();
    let init_path = child(path, "initContainers");
    for (list, list_path) in [
        (items(spec.get("initContainers")), &init_path),
        (containers, &containers_path),
    ] {
        for (i, c) in list.iter().enumerate() {
            let p = index(list_path, i);
            container(c, &p, &volumes, &mut names, &mut f.causes);
        }
    }
    duplicate_port_warnings(spec, path, &mut f.warnings);

    one_of(
        spec.get("restartPolicy"),
        &child(path, "restartPolicy"),
        &["Always", "OnFailure", "Never"],
        &mut f.causes,
    );
    one_of(
        spec.get("dnsPolicy"),
        &child(path, "dnsPolicy"),
        &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"],
        &mut f.causes,
    );
    if let Some(n) = spec.get("activeDeadlineSeconds").and_then(Value::as_i64)
        && !(1..=i64::from(i32::MAX)).contains(&n)
    {
        f.causes.push(Cause::invalid(
            &child(path, "activeDeadlineSeconds"),
            &n.to_string(),
            "must be between 1 and 2147483647, inclusive",
        ));
    }
    validate_labels_at(
        spec.get("nodeSelector"),
        &child(path, "nodeSelector"),
        &mut f.causes,
    );
}

/// Volume names (required, DNS labels, unique); returns the names for volumeMounts.
fn volumes(list: Option<&Value>, path: &str, causes: &mut Vec<Cause>) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for (i, v) in items(list).iter().enumerate() {
        let p = child(&index(path, i), "name");
        let name = str_of(Some(v), "name");
        if name.is_empty() {
            causes.push(Cause::required(&p, ""));
            continue;
        }
        dns_label(name, &p, causes);
        if names.iter().any(|n| n == name) {
            causes.push(Cause::duplicate(&p, name));
        } else {
            names.push(name.to_string());
        }
    }
    names
}

fn container(
    c: &Value,
    path: &str,
    volumes: &[String],
    names: &mut Vec<String>,
    causes: &mut Vec<Cause>,
) {
    let name_path = child(path, "name");
    let name = str_of(Some(c), "name");
    if name.is_empty() {
        causes.push(Cause::required(&name_path, ""));
    } else {
        dns_label(name, &name_path, causes);
        if names.iter().any(|n| n == name) {
            causes.push(Cause::duplicate(&name_path, name));
        } else {
            names.push(name.to_string());
        }
    }
    if str_of(Some(c), "image").is_empty() {
        causes.push(Cause::required(&child(path, "image"), ""));
    }
    one_of(
        c.get("imagePullPolicy"),
        &child(path, "imagePullPolicy"),
        &["Always", "IfNotPresent", "Never"],
        causes,
    );
    one_of(
        c.get("terminationMessagePolicy"),
        &child(path, "terminationMessagePolicy"),
        &["File", "FallbackToLogsOnError"],
        causes,
    );
    container_ports(c.get("ports"), &child(path, "ports"), causes);
    for (i, env) in items(c.get("env")).iter().enumerate() {
        let p = child(&index(&child(path, "env"), i), "name");
        let n = str_of(Some(env), "name");
        if n.is_empty() {
            causes.push(Cause::required(&p, ""));
        } else if n.contains('=') || !n.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            causes.push(Cause::invalid(
                &p,
                &go_quote(n),
                "a valid environment variable name must consist only of printable ASCII characters other than '='",
            ));
        }
    }
    for (i, m) in items(c.get("volumeMounts")).iter().enumerate() {
        let p = index(&child(path, "volumeMounts"), i);
        let n = str_of(Some(m), "name");
        if n.is_empty() {
            causes.push(Cause::required(&child(&p, "name"), ""));
        } else if !volumes.iter().any(|v| v == n) {
            causes.push(Cause::not_found(&child(&p, "name"), n));
        }
        if str_of(Some(m), "mountPath").is_empty() {
            causes.push(Cause::required(&child(&p, "mountPath"), ""));
        }
    }
    resources(c.get("resources"), &child(path, "resources"), causes);
}

fn container_ports(ports: Option<&Value>, path: &str, causes: &mut Vec<Cause>) {
    let mut names: Vec<&str> = Vec::new();
    for (i, p) in items(ports).iter().enumerate() {
        let pp = index(path, i);
        let name = str_of(Some(p), "name");
        if !name.is_empty() {
            let errs = is_valid_port_name(name);
            if !errs.is_empty() {
                for msg in errs {
                    causes.push(Cause::invalid(&child(&pp, "name"), &go_quote(name), &msg));
                }
            } else if names.contains(&name) {
                causes.push(Cause::duplicate(&child(&pp, "name"), name));
            } else {
                names.push(name);
            }
        }
        match p.get("containerPort").and_then(Value::as_i64).unwrap_or(0) {
            0 => causes.push(Cause::required(&child(&pp, "containerPort"), "")),
            _ => port_number(p.get("containerPort"), &child(&pp, "containerPort"), causes),
        }
        if p.get("hostPort").and_then(Value::as_i64).unwrap_or(0) != 0 {
            port_number(p.get("hostPort"), &child(&pp, "hostPort"), causes);
        }
        protocol(p.get("protocol"), &child(&pp, "protocol"), causes);
    }
}

fn protocol(v: Option<&Value>, path: &str, causes: &mut Vec<Cause>) {
    one_of(v, path, &PROTOCOLS, causes);
}

/// kube-apiserver allows the same containerPort and protocol twice in a pod but warns:
/// `spec.containers[0].ports[1]: duplicate port definition with spec.containers[0].ports[0]`.
fn duplicate_port_warnings(spec: &Value, path: &str, warnings: &mut Vec<String>) {
    let mut seen: Vec<((i64, String, String), String)> = Vec::new();
    for (ci, c) in items(spec.get("containers")).iter().enumerate() {
        for (pi, p) in items(c.get("ports")).iter().enumerate() {
            let at = index(&child(&index(&child(path, "containers"), ci), "ports"), pi);
            let k = (
                p.get("containerPort").and_then(Value::as_i64).unwrap_or(0),
                str_of(Some(p), "protocol").to_string(),
                str_of(Some(p), "hostIP").to_string(),
            );
            match seen.iter().find(|(s, _)| *s == k) {
                Some((_, first)) => {
                    warnings.push(format!("{at}: duplicate port definition with {first}"));
                }
                None => seen.push((k, at)),
            }
        }
    }
}

/// Resource names and quantities, and `requests` ≤ `limits` (equal for resources that
/// cannot be overcommitted: hugepages and extended resources).
fn resources(r: Option<&Value>, path: &str, causes: &mut Vec<Cause>) {
    let Some(r) = r else { return };
    let limits_path = child(path, "limits");
    let requests_path = child(path, "requests");
    let limits = quantities(r.get("limits"), &limits_path, causes);
    let requests = quantities(r.get("requests"), &requests_path, causes);
    for (name, raw, q) in &requests {
        let overcommit = matches!(name.as_str(), "cpu" | "memory" | "ephemeral-storage");
        match limits.iter().find(|(n, _, _)| n == name) {
            Some((_, limit_raw, limit)) => {
                if !overcommit && q.cmp_value(limit) != std::cmp::Ordering::Equal {
                    causes.push(Cause::invalid(
                        &requests_path,
                        &go_quote(raw),
                        &format!("must be equal to {name} limit of {limit_raw}"),
                    ));
                } else if q.cmp_value(limit) == std::cmp::Ordering::Greater {
                    causes.push(Cause::invalid(
                        &requests_path,
                        &go_quote(raw),
                        &format!("must be less than or equal to {name} limit of {limit_raw}"),
                    ));
                }
            }
            None if !overcommit => causes.push(Cause::required(
                &limits_path,
                "Limit must be set for non overcommitable resources",
            )),
            None => {}
        }
    }
}

/// The entries of a `ResourceList`, parsed; bad names and quantities are reported.
fn quantities(
    list: Option<&Value>,
    path: &str,
    causes: &mut Vec<Cause>,
) -> Vec<(String, String, Quantity)> {
    let mut out = Vec::new();
    let Some(m) = list.and_then(Value::as_object) else {
        return out;
    };
    for (name, v) in m {
        let p = key(path, name);
        if !name.contains('/') {
            if !matches!(name.as_str(), "cpu" | "memory" | "ephemeral-storage")
                && !name.starts_with("hugepages-")
            {
                causes.push(Cause::invalid(
                    &p,
                    &go_quote(name),
                    "must be a standard resource for containers",
                ));
            }
        } else {
            for msg in is_qualified_name(name) {
                causes.push(Cause::invalid(&p, &go_quote(name), &msg));
            }
        }
        let raw = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            other => other.to_string(),
        };
        match Quantity::parse(&raw) {
            Ok(q) if q.is_negative() => causes.push(Cause::invalid(
                &p,
                &go_quote(&raw),
                "must be greater than or equal to 0",
            )),
            Ok(q) => out.push((name.clone(), raw, q)),
            Err(msg) => causes.push(Cause::invalid(&p, &go_quote(&raw), msg)),
        }
    }
    out
}

fn pod_update(old: &Value, new: &Value, causes: &mut Vec<Cause>) {
    let (Some(old_spec), Some(new_spec)) = (
        old.get("spec").and_then(Value::as_object),
        new.get("spec").and_then(Value::as_object),
    ) else {
        return;
    };
    for list in ["containers", "initContainers"] {
        if items(old_spec.get(list)).len() != items(new_spec.get(list)).len() {
            // kube-apiserver stops here: nothing else can be compared.
            causes.push(Cause::forbidden(
                &format!("spec.{list}"),
                "pod updates may not add or remove containers",
            ));
            return;
        }
    }
    let old_deadline = old_spec
        .get("activeDeadlineSeconds")
        .and_then(Value::as_i64);
    match new_spec
        .get("activeDeadlineSeconds")
        .and_then(Value::as_i64)
    {
        Some(n) if old_deadline.is_some_and(|o| o < n) => {
            causes.push(Cause::invalid(
                "spec.activeDeadlineSeconds",
                &n.to_string(),
                "must be less than or equal to previous value",
            ));
            return;
        }
        None if old_deadline.is_some() => {
            causes.push(Cause::invalid(
                "spec.activeDeadlineSeconds",
                "null",
                "must not update from a positive integer to nil value",
            ));
        }
        _ => {}
    }

    // What may change is copied from the old spec; anything left different is forbidden.
    let mut munged = new_spec.clone();
    for list in ["containers", "initContainers"] {
        let old_list = items(old_spec.get(list));
        if let Some(Value::Array(cs)) = munged.get_mut(list) {
            for (c, o) in cs.iter_mut().zip(old_list) {
                if let (Some(c), Some(image)) = (c.as_object_mut(), o.get("image")) {
                    c.insert("image".into(), image.clone());
                }
            }
        }
    }
    copy_field(&mut munged, old_spec, "activeDeadlineSeconds");
    let old_tolerations = items(old_spec.get("tolerations"));
    let new_tolerations = items(new_spec.get("tolerations"));
    let only_added = old_tolerations.iter().all(|o| {
        new_tolerations.iter().any(|n| {
            let mut o = o.clone();
            if let Some(om) = o.as_object_mut() {
                match n.get("tolerationSeconds") {
                    Some(s) => om.insert("tolerationSeconds".into(), s.clone()),
                    None => om.remove("tolerationSeconds"),
                };
            }
            &o == n
        })
    });
    if !only_added {
        causes.push(Cause::forbidden(
            "spec.tolerations",
            "existing toleration can not be modified except its tolerationSeconds",
        ));
    }
    // Reported above either way: not part of the "other fields" comparison.
    copy_field(&mut munged, old_spec, "tolerations");
    let old_grace = old_spec
        .get("terminationGracePeriodSeconds")
        .and_then(Value::as_i64);
    if old_grace.is_some_and(|g| g < 0)
        && new_spec
            .get("terminationGracePeriodSeconds")
            .and_then(Value::as_i64)
            == Some(1)
    {
        copy_field(&mut munged, old_spec, "terminationGracePeriodSeconds");
    }
    // Scheduling gates may only be removed.
    let old_gates = items(old_spec.get("schedulingGates"));
    if items(new_spec.get("schedulingGates"))
        .iter()
        .all(|g| old_gates.contains(g))
    {
        copy_field(&mut munged, old_spec, "schedulingGates");
    }
    if &munged != old_spec {
        let detail = format!("{POD_UPDATABLE_FIELDS}\n{}", spec_diff(old_spec, &munged));
        causes.push(Cause::forbidden("spec", &detail));
    }
}

fn copy_field(to: &mut Map<String, Value>, from: &Map<String, Value>, k: &str) {
    match from.get(k) {
        Some(v) => to.insert(k.to_string(), v.clone()),
        None => to.remove(k),
    };
}

/// The fields of two specs that differ, one `-`/`+` line pair each (kube-apiserver prints
/// a Go `cmp.Diff`; this says the same in JSON).
fn spec_diff(old: &Map<String, Value>, new: &Map<String, Value>) -> String {
    let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut out = String::new();
    for k in keys {
        let (o, n) = (old.get(k), new.get(k));
        if o != n {
            out.push_str(&format!("- {k}: {}\n+ {k}: {}\n", shown(o), shown(n)));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// workloads

/// What ReplicaSets, Deployments, StatefulSets, DaemonSets and ReplicationControllers ask of
/// their template beyond a valid pod: pods that restart always and have no deadline.
fn controller_template(template: Option<&Value>, path: &str, kind: &str, f: &mut Findings) {
    pod_template(template, path, f);
    let Some(spec) = template.and_then(|t| t.get("spec")) else {
        return;
    };
    let policy = str_of(Some(spec), "restartPolicy");
    if !policy.is_empty() && policy != "Always" {
        f.causes.push(Cause::not_supported(
            &child(path, "spec.restartPolicy"),
            policy,
            &["Always"],
        ));
    }
    if spec
        .get("activeDeadlineSeconds")
        .is_some_and(|v| !v.is_null())
    {
        f.causes.push(Cause::forbidden(
            &child(path, "spec.activeDeadlineSeconds"),
            &format!("activeDeadlineSeconds in {kind} is not Supported"),
        ));
    }
}

/// A required, non-empty, well-formed `spec.selector` that selects the template's labels.
fn required_selector(spec: Option<&Value>, what: &str, causes: &mut Vec<Cause>) {
    let sel = spec
        .and_then(|s| s.get("selector"))
        .filter(|s| !s.is_null());
    match sel {
        None => causes.push(Cause::required("spec.selector", "")),
        Some(sel) => {
            label_selector(Some(sel), "spec.selector", causes);
            if selector_is_empty(sel) {
                causes.push(Cause::invalid(
                    "spec.selector",
                    &go_label_selector(Some(sel)),
                    &format!("empty selector is invalid for {what}"),
                ));
            }
        }
    }
    if let Some(sel) = sel {
        template_matches_selector(
            Some(sel),
            spec.and_then(|s| s.get("template")),
            "spec.template",
            causes,
        );
    }
}

fn deployment(obj: &Value, f: &mut Findings) {
    let spec = obj.get("spec");
    nonnegative(
        spec.and_then(|s| s.get("replicas")),
        "spec.replicas",
        &mut f.causes,
    );
    required_selector(spec, "deployment", &mut f.causes);
    controller_template(
        spec.and_then(|s| s.get("template")),
        "spec.template",
        "ReplicaSet",
        f,
    );
    let strategy = spec.and_then(|s| s.get("strategy"));
    match str_of(strategy, "type") {
        "Recreate" => {
            if strategy
                .and_then(|s| s.get("rollingUpdate"))
                .is_some_and(|r| !r.is_null())
            {
                f.causes.push(Cause::forbidden(
                    "spec.strategy.rollingUpdate",
                    "may not be specified when strategy `type` is 'Recreate'",
                ));
            }
        }
        "RollingUpdate" => rolling_update(
            strategy.and_then(|s| s.get("rollingUpdate")),
            "spec.strategy.rollingUpdate",
            &mut f.causes,
        ),
        other => f.causes.push(Cause::not_supported(
            "spec.strategy.type",
            other,
            &["Recreate", "RollingUpdate"],
        )),
    }
    for k in [
        "minReadySeconds",
        "revisionHistoryLimit",
        "progressDeadlineSeconds",
    ] {
        nonnegative(
            spec.and_then(|s| s.get(k)),
            &format!("spec.{k}"),
            &mut f.causes,
        );
    }
    let min_ready = spec
        .and_then(|s| s.get("minReadySeconds"))
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if let Some(deadline) = spec
        .and_then(|s| s.get("progressDeadlineSeconds"))
        .and_then(Value::as_i64)
        && deadline <= min_ready
    {
        f.causes.push(Cause::invalid(
            "spec.progressDeadlineSeconds",
            &deadline.to_string(),
            "must be greater than minReadySeconds",
        ));
    }
}

/// An int-or-percent: a non-negative count or a percentage up to 100%; the value and
/// whether it is zero.
fn int_or_percent(v: Option<&Value>, path: &str, causes: &mut Vec<Cause>) -> bool {
    match v {
        Some(Value::Number(n)) => {
            let n = n.as_i64().unwrap_or(0);
            if n < 0 {
                causes.push(Cause::invalid(
                    path,
                    &n.to_string(),
                    "must be greater than or equal to 0",
                ));
            }
            n == 0
        }
        Some(Value::String(s)) => {
            let Some(digits) = s
                .strip_suffix('%')
                .filter(|d| !d.is_empty() && d.bytes().all(|c| c.is_ascii_digit()))
            else {
                causes.push(Cause::invalid(
                    path,
                    &go_quote(s),
                    "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')",
                ));
                return false;
            };
            let pct: u64 = digits.parse().unwrap_or(u64::MAX);
            if pct > 100 {
                causes.push(Cause::invalid(
                    path,
                    &go_quote(s),
                    "must not be greater than 100%",
                ));
            }
            pct == 0
        }
        _ => true,
    }
}

fn rolling_update(ru: Option<&Value>, path: &str, causes: &mut Vec<Cause>) {
    let Some(ru) = ru.filter(|r| !r.is_null()) else {
        causes.push(Cause::required(
            path,
            "this should be defaulted and never be nil",
        ));
        return;
    };
    let unavailable_path = child(path, "maxUnavailable");
    let unavailable_zero = int_or_percent(ru.get("maxUnavailable"), &unavailable_path, causes);
    let surge_zero = int_or_percent(ru.get("maxSurge"), &child(path, "maxSurge"), causes);
    if unavailable_zero && surge_zero {
        causes.push(Cause::invalid(
            &unavailable_path,
            &shown(ru.get("maxUnavailable")),
            "may not be 0 when `maxSurge` is 0",
        ));
    }
}

fn replica_set(obj: &Value, f: &mut Findings) {
    let spec = obj.get("spec");
    nonnegative(
        spec.and_then(|s| s.get("replicas")),
        "spec.replicas",
        &mut f.causes,
    );
    nonnegative(
        spec.and_then(|s| s.get("minReadySeconds")),
        "spec.minReadySeconds",
        &mut f.causes,
    );
    // kube-apiserver says "deployment" here too.
    required_selector(spec, "deployment", &mut f.causes);
    controller_template(
        spec.and_then(|s| s.get("template")),
        "spec.template",
        "ReplicaSet",
        f,
    );
}

fn stateful_set(obj: &Value, f: &mut Findings) {
    let spec = obj.get("spec");
    match str_of(spec, "podManagementPolicy") {
        "" => f
            .causes
            .push(Cause::required("spec.podManagementPolicy", "")),
        "OrderedReady" | "Parallel" => {}
        other => f.causes.push(Cause::invalid(
            "spec.podManagementPolicy",
            &go_quote(other),
            "must be 'OrderedReady' or 'Parallel'",
        )),
    }
    let strategy = spec.and_then(|s| s.get("updateStrategy"));
    match str_of(strategy, "type") {
        "" => f.causes.push(Cause::required("spec.updateStrategy", "")),
        "OnDelete" => {
            if let Some(ru) = strategy
                .and_then(|s| s.get("rollingUpdate"))
                .filter(|r| !r.is_null())
            {
                f.causes.push(Cause::invalid(
                    "spec.updateStrategy.rollingUpdate",
                    &shown(Some(ru)),
                    "only allowed for updateStrategy 'RollingUpdate'",
                ));
            }
        }
        "RollingUpdate" => nonnegative(
            strategy.and_then(|s| s.pointer("/rollingUpdate/partition")),
            "spec.updateStrategy.rollingUpdate.partition",
            &mut f.causes,
        ),
        _ => f.causes.push(Cause::invalid(
            "spec.updateStrategy",
            &shown(strategy),
            "must be 'RollingUpdate' or 'OnDelete'",
        )),
    }
    for k in ["replicas", "minReadySeconds"] {
        nonnegative(
            spec.and_then(|s| s.get(k)),
            &format!("spec.{k}"),
            &mut f.causes,
        );
    }
    required_selector(spec, "statefulset", &mut f.causes);
    controller_template(
        spec.and_then(|s| s.get("template")),
        "spec.template",
        "StatefulSet",
        f,
    );
}

fn stateful_set_update(old: &Value, new: &Value, causes: &mut Vec<Cause>) {
    const MUTABLE: [&str; 7] = [
        "replicas",
        "ordinals",
        "template",
        "updateStrategy",
        "revisionHistoryLimit",
        "persistentVolumeClaimRetentionPolicy",
        "minReadySeconds",
    ];
    let strip = |v: &Value| -> Map<String, Value> {
        let mut m = v
            .get("spec")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        for k in MUTABLE {
            m.remove(k);
        }
        m.retain(|_, v| !v.is_null());
        m
    };
    if strip(old) != strip(new) {
        causes.push(Cause::forbidden(
            "spec",
            "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
        ));
    }
}

fn daemon_set(obj: &Value, f: &mut Findings) {
    let spec = obj.get("spec");
    let sel = spec
        .and_then(|s| s.get("selector"))
        .filter(|s| !s.is_null());
    label_selector(sel, "spec.selector", &mut f.causes);
    // A missing selector selects nothing, so it "does not match" (kube's wording).
    template_matches_selector(
        sel,
        spec.and_then(|s| s.get("template")),
        "spec.template",
        &mut f.causes,
    );
    if let Some(sel) = sel
        && selector_is_empty(sel)
    {
        f.causes.push(Cause::invalid(
            "spec.selector",
            &go_label_selector(Some(sel)),
            "empty selector is invalid for daemonset",
        ));
    }
    controller_template(
        spec.and_then(|s| s.get("template")),
        "spec.template",
        "DaemonSet",
        f,
    );
    let strategy = spec.and_then(|s| s.get("updateStrategy"));
    match str_of(strategy, "type") {
        "OnDelete" => {}
        "RollingUpdate" => {
            let ru = strategy
                .and_then(|s| s.get("rollingUpdate"))
                .filter(|r| !r.is_null());
            match ru {
                None => f
                    .causes
                    .push(Cause::required("spec.updateStrategy.rollingUpdate", "")),
                Some(ru) => {
                    rolling_update(Some(ru), "spec.updateStrategy.rollingUpdate", &mut f.causes)
                }
            }
        }
        other => f.causes.push(Cause::not_supported(
            "spec.updateStrategy.type",
            other,
            &["RollingUpdate", "OnDelete"],
        )),
    }
    for k in ["minReadySeconds", "revisionHistoryLimit"] {
        nonnegative(
            spec.and_then(|s| s.get(k)),
            &format!("spec.{k}"),
            &mut f.causes,
        );
    }
}

fn replication_controller(obj: &Value, f: &mut Findings) {
    let spec = obj.get("spec");
    nonnegative(
        spec.and_then(|s| s.get("minReadySeconds")),
        "spec.minReadySeconds",
        &mut f.causes,
    );
    let sel = spec.and_then(|s| s.get("selector"));
    let sel_map = sel.and_then(Value::as_object).filter(|m| !m.is_empty());
    match sel_map {
        None => f.causes.push(Cause::required("spec.selector", "")),
        Some(m) => {
            validate_labels_at(sel, "spec.selector", &mut f.causes);
            let template = spec.and_then(|s| s.get("template"));
            let labels = template
                .and_then(|t| t.get("metadata"))
                .and_then(|m| m.get("labels"));
            if let Ok(selector) = LabelSelector::from_set(m)
                && !selector.matches(labels.and_then(Value::as_object))
            {
                f.causes.push(Cause::invalid(
                    "spec.template.metadata.labels",
                    &go_string_map(labels),
                    SELECTOR_MISMATCH,
                ));
            }
        }
    }
    nonnegative(
        spec.and_then(|s| s.get("replicas")),
        "spec.replicas",
        &mut f.causes,
    );
    controller_template(
        spec.and_then(|s| s.get("template")),
        "spec.template",
        "ReplicationController",
        f,
    );
}

/// What a Job (or a CronJob's job template) asks of its pods: a valid template whose
/// restartPolicy is OnFailure or Never (the defaulted Always is reported as missing).
fn job_template(template: Option<&Value>, path: &str, f: &mut Findings) {
    pod_template(template, path, f);
    let policy_path = child(path, "spec.restartPolicy");
    match str_of(template.and_then(|t| t.get("spec")), "restartPolicy") {
        "" | "Always" => f.causes.push(Cause::required(
            &policy_path,
            "valid values: \"OnFailure\", \"Never\"",
        )),
        "OnFailure" | "Never" => {}
        other => f.causes.push(Cause::not_supported(
            &policy_path,
            other,
            &["OnFailure", "Never"],
        )),
    }
}

fn job(obj: &Value, f: &mut Findings) {
    let spec = obj.get("spec");
    for k in ["parallelism", "completions", "backoffLimit"] {
        nonnegative(
            spec.and_then(|s| s.get(k)),
            &format!("spec.{k}"),
            &mut f.causes,
        );
    }
    if let Some(n) = spec
        .and_then(|s| s.get("activeDeadlineSeconds"))
        .and_then(Value::as_i64)
        && n <= 0
    {
        f.causes.push(Cause::invalid(
            "spec.activeDeadlineSeconds",
            &n.to_string(),
            "must be greater than 0",
        ));
    }
    let sel = spec
        .and_then(|s| s.get("selector"))
        .filter(|s| !s.is_null());
    match sel {
        None => f.causes.push(Cause::required("spec.selector", "")),
        Some(sel) => label_selector(Some(sel), "spec.selector", &mut f.causes),
    }
    let template = spec.and_then(|s| s.get("template"));
    if sel.is_some() {
        template_matches_selector(sel, template, "spec.template", &mut f.causes);
    }
    let manual = spec
        .and_then(|s| s.get("manualSelector"))
        .and_then(Value::as_bool)
        == Some(true);
    if !manual {
        let meta = obj.get("metadata");
        let expected = [
            ("controller-uid", str_of(meta, "uid")),
            ("job-name", str_of(meta, "name")),
            (
                crate::defaults::JOB_CONTROLLER_UID_LABEL,
                str_of(meta, "uid"),
            ),
            (crate::defaults::JOB_NAME_LABEL, str_of(meta, "name")),
        ];
        let labels = template
            .and_then(|t| t.get("metadata"))
            .and_then(|m| m.get("labels"));
        for (k, want) in expected {
            let p = key("spec.template.metadata.labels", k);
            match labels.and_then(|l| l.get(k)).and_then(Value::as_str) {
                None => f.causes.push(Cause::required(&p, want)),
                Some(v) if v != want => f.causes.push(Cause::invalid(
                    &p,
                    &go_string_map(labels),
                    &format!("must be '{want}'"),
                )),
                Some(_) => {}
            }
        }
    }
    job_template(template, "spec.template", f);
}

fn job_update(old: &Value, new: &Value, causes: &mut Vec<Cause>) {
    for k in [
        "completions",
        "completionMode",
        "podFailurePolicy",
        "backoffLimitPerIndex",
        "managedBy",
        "successPolicy",
    ] {
        let (o, n) = (
            old.pointer(&format!("/spec/{k}")),
            new.pointer(&format!("/spec/{k}")),
        );
        immutable(n, o, &format!("spec.{k}"), causes);
    }
    let (o, n) = (old.pointer("/spec/selector"), new.pointer("/spec/selector"));
    if o.filter(|v| !v.is_null()) != n.filter(|v| !v.is_null()) {
        causes.push(Cause::invalid(
            "spec.selector",
            &go_label_selector(n),
            IMMUTABLE,
        ));
    }
    // A suspended Job's pods may still be placed differently (scheduling directives and
    // template labels/annotations); otherwise the template is fixed.
    let old_t = old
        .pointer("/spec/template")
        .cloned()
        .unwrap_or(Value::Null);
    let new_t = new
        .pointer("/spec/template")
        .cloned()
        .unwrap_or(Value::Null);
    let suspended = old.pointer("/spec/suspend").and_then(Value::as_bool) == Some(true);
    let mut munged = new_t.clone();
    if suspended {
        for p in [
            "/spec/nodeSelector",
            "/spec/tolerations",
            "/spec/affinity",
            "/spec/schedulingGates",
            "/metadata/labels",
            "/metadata/annotations",
        ] {
            let (parent, field) = p.rsplit_once('/').unwrap_or(("", p));
            let from = old_t.pointer(p).cloned();
            if let Some(m) = munged.pointer_mut(parent).and_then(Value::as_object_mut) {
                match from {
                    Some(v) => m.insert(field.to_string(), v),
                    None => m.remove(field),
                };
            }
        }
    }
    if munged != old_t {
        causes.push(Cause::invalid(
            "spec.template",
            &shown(Some(&new_t)),
            IMMUTABLE,
        ));
    }
}

/// A CronJob's name at most (its Jobs append `-<minutes since epoch>`, 11 characters, and
/// must stay a 63-character label value).
pub const CRONJOB_NAME_CHARS_MAX: usize = 52;

/// Whether `schedule` has the shape of a standard cron schedule: five fields of digits,
/// names, `*`, `?`, `,`, `-`, `/`, or one of the `@` macros (the controller parses it fully).
fn cron_schedule_shape(schedule: &str) -> Result<(), &'static str> {
    if schedule.contains("TZ") {
        return Err("cannot use TZ or CRON_TZ in schedule, use timeZone field instead");
    }
    let s = schedule.trim();
    if s.starts_with('@') {
        return match s {
            "@yearly" | "@annually" | "@monthly" | "@weekly" | "@daily" | "@midnight"
            | "@hourly" => Ok(()),
            _ => Err("unrecognized descriptor"),
        };
    }
    let fields: Vec<&str> = s.split_whitespace().collect();
    if fields.len() != 5 {
        return Err("expected exactly 5 fields");
    }
    let ok = fields.iter().all(|f| {
        f.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '*' | '?' | ',' | '-' | '/'))
    });
    if ok {
        Ok(())
    } else {
        Err("invalid character in schedule")
    }
}

/// An IANA time zone name the server can load (kube's `time.LoadLocation`, minus `Local`).
fn time_zone_known(tz: &str) -> bool {
    let shape = !tz.is_empty()
        && tz != "Local"
        && !tz.starts_with('/')
        && !tz.split('/').any(|p| p == ".." || p == "." || p.is_empty())
        && tz
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '-' | '+'));
    shape
        && (tz == "UTC"
            || [
                "/usr/share/zoneinfo",
                "/usr/lib/zoneinfo",
                "/usr/share/lib/zoneinfo",
            ]
            .iter()
            .any(|d| std::path::Path::new(d).join(tz).is_file()))
}

fn cron_job(obj: &Value, f: &mut Findings) {
    let spec = obj.get("spec");
    let schedule = str_of(spec, "schedule");
    if schedule.is_empty() {
        f.causes.push(Cause::required("spec.schedule", ""));
    } else if let Err(why) = cron_schedule_shape(schedule) {
        f.causes
            .push(Cause::invalid("spec.schedule", &go_quote(schedule), why));
    }
    if let Some(tz) = spec.and_then(|s| s.get("timeZone")).and_then(Value::as_str)
        && !time_zone_known(tz)
    {
        f.causes.push(Cause::invalid(
            "spec.timeZone",
            &go_quote(tz),
            "unknown time zone",
        ));
    }
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    if name.len() > CRONJOB_NAME_CHARS_MAX {
        f.causes.push(Cause::invalid(
            "metadata.name",
            &go_quote(name),
            "must be no more than 52 characters",
        ));
    }
    one_of(
        spec.and_then(|s| s.get("concurrencyPolicy")),
        "spec.concurrencyPolicy",
        &["Allow", "Forbid", "Replace"],
        &mut f.causes,
    );
    for k in ["successfulJobsHistoryLimit", "failedJobsHistoryLimit"] {
        nonnegative(
            spec.and_then(|s| s.get(k)),
            &format!("spec.{k}"),
            &mut f.causes,
        );
    }
    let job_spec = spec.and_then(|s| s.pointer("/jobTemplate/spec"));
    job_template(
        job_spec.and_then(|s| s.get("template")),
        "spec.jobTemplate.spec.template",
        f,
    );
}

// ---------------------------------------------------------------------------------------
// services

fn service(obj: &Value, f: &mut Findings) {
    let causes = &mut f.causes;
    let spec = obj.get("spec");
    let kind = str_of(spec, "type");
    let cluster_ip = str_of(spec, "clusterIP");
    let headless = cluster_ip == "None";
    let ports = items(spec.and_then(|s| s.get("ports")));

    const TYPES: [&str; 4] = ["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
    if !TYPES.contains(&kind) {
        causes.push(Cause::not_supported("spec.type", kind, &TYPES));
    }
    if kind == "ExternalName" {
        let name = str_of(spec, "externalName");
        if name.is_empty() {
            causes.push(Cause::required("spec.externalName", ""));
        } else {
            for msg in is_dns1123_subdomain(name.trim_end_matches('.')) {
                causes.push(Cause::invalid("spec.externalName", &go_quote(name), &msg));
            }
        }
    } else if ports.is_empty() && !headless {
        causes.push(Cause::required("spec.ports", ""));
    }

    let require_name = ports.len() > 1;
    let mut names: Vec<&str> = Vec::new();
    let mut seen: Vec<(&str, i64)> = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        let pp = index("spec.ports", i);
        let name = str_of(Some(p), "name");
        if name.is_empty() {
            if require_name {
                causes.push(Cause::required(&child(&pp, "name"), ""));
            }
        } else {
            dns_label(name, &child(&pp, "name"), causes);
            if names.contains(&name) {
                causes.push(Cause::duplicate(&child(&pp, "name"), name));
            } else {
                names.push(name);
            }
        }
        port_number(p.get("port"), &child(&pp, "port"), causes);
        protocol(p.get("protocol"), &child(&pp, "protocol"), causes);
        port_num_or_name(p.get("targetPort"), &child(&pp, "targetPort"), causes);
        let node_port = p.get("nodePort").and_then(Value::as_i64).unwrap_or(0);
        if node_port != 0 {
            if kind == "ClusterIP" {
                causes.push(Cause::forbidden(
                    &child(&pp, "nodePort"),
                    "may not be used when `type` is 'ClusterIP'",
                ));
            } else {
                port_number(p.get("nodePort"), &child(&pp, "nodePort"), causes);
            }
        }
        let k = (
            str_of(Some(p), "protocol"),
            p.get("port").and_then(Value::as_i64).unwrap_or(0),
        );
        if seen.contains(&k) {
            causes.push(Cause::duplicate_rendered(
                &pp,
                &format!(
                    "core.ServicePort{{Name:\"\", Protocol:{}, AppProtocol:(*string)(nil), Port:{}, TargetPort:intstr.IntOrString{{Type:0, IntVal:0, StrVal:\"\"}}, NodePort:0}}",
                    go_quote(k.0),
                    k.1
                ),
            ));
        } else {
            seen.push(k);
        }
    }
    validate_labels_at(
        spec.and_then(|s| s.get("selector")),
        "spec.selector",
        causes,
    );
    one_of(
        spec.and_then(|s| s.get("sessionAffinity")),
        "spec.sessionAffinity",
        &["ClientIP", "None"],
        causes,
    );
    for (i, ip) in items(spec.and_then(|s| s.get("clusterIPs")))
        .iter()
        .enumerate()
    {
        let ip = ip.as_str().unwrap_or("");
        if ip != "None" && ip.parse::<std::net::IpAddr>().is_err() {
            causes.push(Cause::invalid(
                &index("spec.clusterIPs", i),
                &go_quote(ip),
                "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
            ));
        }
    }
    if !cluster_ip.is_empty()
        && cluster_ip != "None"
        && cluster_ip.parse::<std::net::IpAddr>().is_err()
        && items(spec.and_then(|s| s.get("clusterIPs"))).is_empty()
    {
        causes.push(Cause::invalid(
            "spec.clusterIP",
            &go_quote(cluster_ip),
            "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
        ));
    }
    for k in ["externalTrafficPolicy", "internalTrafficPolicy"] {
        let v = str_of(spec, k);
        if !v.is_empty() && v != "Cluster" && v != "Local" {
            causes.push(Cause::not_supported(
                &format!("spec.{k}"),
                v,
                &["Cluster", "Local"],
            ));
        }
    }
}

fn service_update(old: &Value, new: &Value, causes: &mut Vec<Cause>) {
    let is_external = |v: &Value| str_of(v.get("spec"), "type") == "ExternalName";
    if is_external(old) || is_external(new) {
        return;
    }
    let first = |v: &Value| {
        items(v.pointer("/spec/clusterIPs"))
            .first()
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| {
                Some(str_of(v.get("spec"), "clusterIP").to_string()).filter(|s| !s.is_empty())
            })
    };
    if let Some(old_ip) = first(old)
        && first(new).is_some_and(|new_ip| new_ip != old_ip)
    {
        let ips: Vec<String> = match new.pointer("/spec/clusterIPs").and_then(Value::as_array) {
            Some(list) if !list.is_empty() => list
                .iter()
                .map(|v| v.as_str().unwrap_or("").to_string())
                .collect(),
            _ => vec![str_of(new.get("spec"), "clusterIP").to_string()],
        };
        causes.push(Cause::invalid(
            "spec.clusterIPs[0]",
            &go_string_slice(&ips),
            "may not change once set",
        ));
    }
}

// ---------------------------------------------------------------------------------------
// secrets and configmaps

/// `IsConfigMapKey`: the key of a configmap or secret entry.
pub fn is_config_map_key(k: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if k.len() > crate::validate::DNS1123_SUBDOMAIN_CHARS_MAX {
        errs.push("must be no more than 253 characters".into());
    }
    if k.is_empty()
        || !k
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
    {
        errs.push("a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')".into());
    }
    if k == "." {
        errs.push("must not be '.'".into());
    } else if k == ".." {
        errs.push("must not be '..'".into());
    } else if k.starts_with("..") {
        errs.push("must not start with '..'".into());
    }
    errs
}

fn data_keys(v: Option<&Value>, path: &str, causes: &mut Vec<Cause>) {
    let Some(m) = v.and_then(Value::as_object) else {
        return;
    };
    for k in m.keys() {
        for msg in is_config_map_key(k) {
            causes.push(Cause::invalid(&key(path, k), &go_quote(k), &msg));
        }
    }
}

fn config_map(obj: &Value, f: &mut Findings) {
    data_keys(obj.get("data"), "data", &mut f.causes);
    data_keys(obj.get("binaryData"), "binaryData", &mut f.causes);
    if let (Some(data), Some(binary)) = (
        obj.get("data").and_then(Value::as_object),
        obj.get("binaryData").and_then(Value::as_object),
    ) {
        for k in data.keys().filter(|k| binary.contains_key(*k)) {
            f.causes.push(Cause::invalid(
                &key("data", k),
                &go_quote(k),
                "duplicate of key present in binaryData",
            ));
        }
    }
}

fn secret(obj: &Value, f: &mut Findings) {
    let data = obj.get("data");
    data_keys(data, "data", &mut f.causes);
    let has = |k: &str| data.and_then(|d| d.get(k)).is_some();
    let required_keys: &[&str] = match str_of(Some(obj), "type") {
        "kubernetes.io/tls" => &["tls.crt", "tls.key"],
        "kubernetes.io/dockerconfigjson" => &[".dockerconfigjson"],
        "kubernetes.io/dockercfg" => &[".dockercfg"],
        "kubernetes.io/ssh-auth" => &["ssh-privatekey"],
        _ => &[],
    };
    for k in required_keys {
        if !has(k) {
            f.causes.push(Cause::required(&key("data", k), ""));
        }
    }
    if str_of(Some(obj), "type") == "kubernetes.io/service-account-token"
        && str_of(
            obj.pointer("/metadata/annotations"),
            "kubernetes.io/service-account.name",
        )
        .is_empty()
    {
        f.causes.push(Cause::required(
            "metadata.annotations[kubernetes.io/service-account.name]",
            "",
        ));
    }
}

/// Once `immutable: true` is stored, neither it nor the data may change.
fn immutable_data(old: &Value, new: &Value, fields: &[&str], causes: &mut Vec<Cause>) {
    if old.get("immutable").and_then(Value::as_bool) != Some(true) {
        return;
    }
    const WHY: &str = "field is immutable when `immutable` is set";
    if new.get("immutable").and_then(Value::as_bool) != Some(true) {
        causes.push(Cause::forbidden("immutable", WHY));
    }
    for k in fields {
        let norm = |v: Option<&Value>| {
            v.and_then(Value::as_object)
                .filter(|m| !m.is_empty())
                .cloned()
        };
        if norm(old.get(*k)) != norm(new.get(*k)) {
            causes.push(Cause::forbidden(k, WHY));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test that panics has failed
mod tests;
