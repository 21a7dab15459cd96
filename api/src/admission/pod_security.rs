//! PodSecurity: the Pod Security Standards (privileged, baseline, restricted) chosen by a
//! namespace's `pod-security.kubernetes.io/{enforce,audit,warn}` labels, as
//! kubernetes/pod-security-admission evaluates them, with its messages.
//!
//! - Pods (CREATE, and UPDATE when the spec changes; the `ephemeralcontainers` subresource
//!   too): an `enforce` violation refuses the write (403, `violates PodSecurity
//!   "restricted:latest": ...`); a `warn` violation adds a `Warning` header (`would violate
//!   ...`).
//! - Workloads with a pod template (Deployments, ReplicaSets, StatefulSets, DaemonSets,
//!   Jobs, CronJobs, ReplicationControllers, PodTemplates): warnings only, for the `warn`
//!   level, as kube does (their pods meet `enforce` when a controller creates them).
//! - Namespaces: invalid level or version labels are refused (422); a new `enforce` level warns
//!   about the namespace's existing pods that would violate it (up to
//!   [`NAMESPACE_PODS_CHECKED_MAX`]).
//!
//! Not done: `audit` (Logbook has no audit log yet: the label is accepted and ignored);
//! exemptions (kube exempts nothing by default either); per-version checks (every
//! `-version` is evaluated with the latest checks, the label's text appears in messages).
//! No namespace is exempt by default, `kube-system` included, as in kube.

use futures::future::BoxFuture;
use logbook_schema::validate::Cause;
use serde_json::{Map, Value};

use super::{Attributes, Operation, Plugin, forbidden};
use crate::error::{ApiError, ApiResult};

/// Most pods of a namespace checked against a new `enforce` label (kube checks with a
/// similar bound and a time limit).
pub const NAMESPACE_PODS_CHECKED_MAX: usize = 3_000;

const LABEL_PREFIX: &str = "pod-security.kubernetes.io/";

/// The three Pod Security Standards levels, least restrictive first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Privileged,
    Baseline,
    Restricted,
}

impl Level {
    fn parse(s: &str) -> Option<Level> {
        match s {
            "privileged" => Some(Level::Privileged),
            "baseline" => Some(Level::Baseline),
            "restricted" => Some(Level::Restricted),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Level::Privileged => "privileged",
            Level::Baseline => "baseline",
            Level::Restricted => "restricted",
        }
    }
}

/// One mode's level and version (`restricted:latest`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub level: Level,
    pub version: String,
}

impl Policy {
    fn label(&self) -> String {
        format!("{}:{}", self.level.as_str(), self.version)
    }
}

fn valid_version(v: &str) -> bool {
    v == "latest"
        || v.strip_prefix("v1.")
            .is_some_and(|m| !m.is_empty() && m.bytes().all(|b| b.is_ascii_digit()))
}

/// The policy of one mode from namespace labels (None: the mode's level label is absent,
/// i.e. privileged). As kube's `PolicyToEvaluate`: an invalid enforce level is
/// `restricted`, an invalid warn or audit level `privileged` (they fail open), an invalid
/// version `latest`.
pub fn policy(labels: Option<&Map<String, Value>>, mode: &str) -> Option<Policy> {
    let labels = labels?;
    let level = labels.get(&format!("{LABEL_PREFIX}{mode}"))?;
    let level = match level.as_str().and_then(Level::parse) {
        Some(l) => l,
        None if mode == "enforce" => Level::Restricted,
        None => Level::Privileged,
    };
    let version = labels
        .get(&format!("{LABEL_PREFIX}{mode}-version"))
        .and_then(Value::as_str)
        .filter(|v| valid_version(v))
        .unwrap_or("latest");
    Some(Policy {
        level,
        version: version.to_string(),
    })
}

/// Invalid PodSecurity labels of a namespace (kube refuses the namespace write with 422).
pub fn label_errors(labels: Option<&Map<String, Value>>) -> Vec<Cause> {
    let mut errors = Vec::new();
    for (k, v) in labels.into_iter().flatten() {
        let Some(mode) = k.strip_prefix(LABEL_PREFIX) else {
            continue;
        };
        let v = v.as_str().unwrap_or("");
        let field = format!("metadata.labels[{k}]");
        match mode {
            "enforce" | "audit" | "warn" if Level::parse(v).is_none() => {
                errors.push(Cause::invalid(
                    &field,
                    &format!("{v:?}"),
                    "must be one of privileged, baseline, restricted",
                ))
            }
            "enforce-version" | "audit-version" | "warn-version" if !valid_version(v) => {
                errors.push(Cause::invalid(
                    &field,
                    &format!("{v:?}"),
                    "must be \"latest\" or \"v1.x\"",
                ));
            }
            _ => {}
        }
    }
    errors
}

pub struct PodSecurity;

/// The pod-template resources kube checks for warnings, with the template's path.
const WORKLOADS: &[(&str, &str, &str)] = &[
    ("apps", "deployments", "/spec/template"),
    ("apps", "replicasets", "/spec/template"),
    ("apps", "statefulsets", "/spec/template"),
    ("apps", "daemonsets", "/spec/template"),
    ("batch", "jobs", "/spec/template"),
    ("batch", "cronjobs", "/spec/jobTemplate/spec/template"),
    ("", "replicationcontrollers", "/spec/template"),
    ("", "podtemplates", "/template"),
];

impl Plugin for PodSecurity {
    fn name(&self) -> &'static str {
        "PodSecurity"
    }

    fn validate<'a>(&'a self, a: &'a Attributes<'_>) -> BoxFuture<'a, ApiResult<()>> {
        Box::pin(async move {
            if !matches!(a.operation(), Operation::Create | Operation::Update) {
                return Ok(());
            }
            if a.is_core("namespaces") && a.subresource().is_empty() {
                return validate_namespace(a).await;
            }
            let Some(obj) = a.object() else {
                return Ok(());
            };
            if a.is_core("pods") {
                if !matches!(a.subresource(), "" | "ephemeralcontainers") {
                    return Ok(());
                }
                if a.operation() == Operation::Update
                    && a.subresource().is_empty()
                    && a.old_object.and_then(|o| o.get("spec")) == obj.get("spec")
                {
                    return Ok(());
                }
                let Some(ns) = a.namespace_object().await? else {
                    return Ok(());
                };
                let labels = super::labels(&ns);
                let (meta, spec) = (obj.get("metadata"), obj.get("spec"));
                if let Some(p) = policy(labels, "enforce") {
                    let v = violations(p.level, meta, spec);
                    if !v.is_empty() {
                        return Err(forbidden(
                            a,
                            &format!("violates PodSecurity \"{}\": {}", p.label(), v.join(", ")),
                        ));
                    }
                }
                if let Some(p) = policy(labels, "warn") {
                    let v = violations(p.level, meta, spec);
                    if !v.is_empty() {
                        a.warn(format!(
                            "would violate PodSecurity \"{}\": {}",
                            p.label(),
                            v.join(", ")
                        ));
                    }
                }
                return Ok(());
            }
            let Some((_, _, path)) = WORKLOADS
                .iter()
                .find(|(g, r, _)| *g == a.group() && *r == a.resource())
            else {
                return Ok(());
            };
            if !a.subresource().is_empty() {
                return Ok(());
            }
            let template = Value::Object(obj.clone());
            let Some(template) = template.pointer(path) else {
                return Ok(());
            };
            if a.operation() == Operation::Update
                && a.old_object
                    .map(|o| Value::Object(o.clone()))
                    .as_ref()
                    .and_then(|o| o.pointer(path))
                    == Some(template)
            {
                return Ok(());
            }
            let Some(ns) = a.namespace_object().await? else {
                return Ok(());
            };
            let labels = super::labels(&ns);
            // Workloads are never refused: only the warn level is evaluated, as in kube.
            if let Some(p) = policy(labels, "warn") {
                let v = violations(p.level, template.get("metadata"), template.get("spec"));
                if !v.is_empty() {
                    a.warn(format!(
                        "would violate PodSecurity \"{}\": {}",
                        p.label(),
                        v.join(", ")
                    ));
                }
            }
            Ok(())
        })
    }
}

/// Namespace writes: labels must be valid; a new or stricter `enforce` level warns about
/// existing pods that violate it.
async fn validate_namespace(a: &Attributes<'_>) -> ApiResult<()> {
    let Some(obj) = a.object() else {
        return Ok(());
    };
    let labels = super::labels(obj);
    let errors = label_errors(labels);
    if !errors.is_empty() {
        return Err(ApiError::invalid("Namespace", "", a.name(), errors));
    }
    if a.operation() != Operation::Update {
        return Ok(());
    }
    let Some(new) = policy(labels, "enforce") else {
        return Ok(());
    };
    let old = policy(a.old_object.and_then(super::labels), "enforce");
    if old.as_ref() == Some(&new) || new.level == Level::Privileged {
        return Ok(());
    }
    let page = a
        .ctx
        .api
        .log
        .list(
            "pods",
            Some(a.name()),
            logbook_store::ListAt::Latest,
            NAMESPACE_PODS_CHECKED_MAX,
            None,
        )
        .await
        .map_err(crate::error::from_store)?;
    // Pods with the same reasons are listed together, as kube does.
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for item in &page.items {
        let Ok(pod) = crate::object::decode_stored(&item.object, item.position.0) else {
            continue;
        };
        let reasons = violation_reasons(new.level, pod.get("metadata"), pod.get("spec"));
        if reasons.is_empty() {
            continue;
        }
        let reasons = reasons.join(", ");
        let name = crate::object::meta_str(&pod, "name")
            .unwrap_or("")
            .to_string();
        match groups.iter_mut().find(|(r, _)| *r == reasons) {
            Some((_, names)) => names.push(name),
            None => groups.push((reasons, vec![name])),
        }
    }
    if groups.is_empty() {
        return Ok(());
    }
    a.warn(format!(
        "existing pods in namespace {:?} violate the new PodSecurity enforce level {:?}",
        a.name(),
        new.label()
    ));
    for (reasons, names) in groups {
        let who = match names.len() {
            1 => names[0].clone(),
            n => format!(
                "{} (and {} other {})",
                names[0],
                n - 1,
                pluralize(n - 1, "pod", "pods")
            ),
        };
        a.warn(format!("{who}: {reasons}"));
    }
    Ok(())
}

/// Every container of a pod spec with its kind ("containers", "initContainers",
/// "ephemeralContainers").
fn all_containers(spec: &Value) -> Vec<&Value> {
    ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .filter_map(|f| spec.get(*f).and_then(Value::as_array))
        .flatten()
        .collect()
}

fn cname(c: &Value) -> &str {
    c.get("name").and_then(Value::as_str).unwrap_or("")
}

fn s<'v>(v: &'v Value, path: &str) -> Option<&'v str> {
    v.pointer(path).and_then(Value::as_str)
}

/// `container "a"` / `containers "a", "b"`.
fn containers_phrase(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
    if names.len() == 1 {
        format!("container {}", quoted[0])
    } else {
        format!("containers {}", quoted.join(", "))
    }
}

fn quoted_list(items: &[String]) -> String {
    items
        .iter()
        .map(|i| format!("{i:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn pluralize(n: usize, one: &str, many: &str) -> String {
    if n == 1 { one.into() } else { many.into() }
}

/// Capabilities the baseline level allows containers to add.
const BASELINE_CAPABILITIES: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// Sysctls the baseline level allows.
const SAFE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
];

/// Volume types the restricted level allows.
const RESTRICTED_VOLUMES: &[&str] = &[
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

/// Every volume source field a volume may have (to name a restricted one).
const VOLUME_TYPES: &[&str] = &[
    "awsElasticBlockStore",
    "azureDisk",
    "azureFile",
    "cephfs",
    "cinder",
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "fc",
    "flexVolume",
    "flocker",
    "gcePersistentDisk",
    "gitRepo",
    "glusterfs",
    "hostPath",
    "image",
    "iscsi",
    "nfs",
    "persistentVolumeClaim",
    "photonPersistentDisk",
    "portworxVolume",
    "projected",
    "quobyte",
    "rbd",
    "scaleIO",
    "secret",
    "storageos",
    "vsphereVolume",
];

/// Baseline checks in kube's evaluation order (its check files' order), without the three
/// a restricted check replaces.
const BASELINE_ORDER: &[&str] = &[
    "appArmorProfile",
    "hostNamespaces",
    "hostPorts",
    "privileged",
    "procMount",
    "seLinuxOptions",
    "sysctls",
    "windowsHostProcess",
];
/// Baseline checks evaluated only at the baseline level (kube's `Overlap`), after the rest.
const BASELINE_OVERLAP_ORDER: &[&str] = &[
    "capabilities_baseline",
    "hostPathVolumes",
    "seccompProfile_baseline",
];
/// Restricted checks in kube's order, after the baseline ones.
const RESTRICTED_ORDER: &[&str] = &[
    "allowPrivilegeEscalation",
    "capabilities_restricted",
    "restrictedVolumes",
    "runAsNonRoot",
    "runAsUser",
    "seccompProfile_restricted",
];

/// `pod and containers "a", "b"`: kube's bad setters, joined with " and ".
fn setters(pod: bool, names: &[&str]) -> Option<String> {
    let mut out = Vec::new();
    if pod {
        out.push("pod".to_string());
    }
    if !names.is_empty() {
        out.push(containers_phrase(names));
    }
    (!out.is_empty()).then(|| out.join(" and "))
}

fn sorted_unique(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v.dedup();
    v
}

/// The checks of `level` that fail, as kube's `reason (detail)` strings, in kube's order:
/// the baseline checks, then (restricted) the restricted checks or (baseline) the baseline
/// checks a restricted check replaces.
pub fn violations(level: Level, meta: Option<&Value>, spec: Option<&Value>) -> Vec<String> {
    failed(level, meta, spec)
        .into_iter()
        .map(|(reason, detail)| format!("{reason} ({detail})"))
        .collect()
}

/// The reasons alone of [`violations`] (`privileged, runAsNonRoot != true`), as kube lists
/// existing pods against a new enforce level.
pub fn violation_reasons(level: Level, meta: Option<&Value>, spec: Option<&Value>) -> Vec<String> {
    failed(level, meta, spec)
        .into_iter()
        .map(|(r, _)| r)
        .collect()
}

fn failed(level: Level, meta: Option<&Value>, spec: Option<&Value>) -> Vec<(String, String)> {
    let order: Vec<&str> = match level {
        Level::Privileged => return Vec::new(),
        Level::Baseline => [BASELINE_ORDER, BASELINE_OVERLAP_ORDER].concat(),
        Level::Restricted => [BASELINE_ORDER, RESTRICTED_ORDER].concat(),
    };
    let mut results = evaluate(meta, spec);
    order
        .iter()
        .filter_map(|id| {
            let i = results.iter().position(|(x, _, _)| x == id)?;
            let (_, reason, detail) = results.swap_remove(i);
            Some((reason, detail))
        })
        .collect()
}

/// Every check that fails: (ID, reason, detail).
fn evaluate(meta: Option<&Value>, spec: Option<&Value>) -> Vec<(&'static str, String, String)> {
    let empty = Value::Object(Map::new());
    let spec = spec.unwrap_or(&empty);
    let meta = meta.unwrap_or(&empty);
    let cs = all_containers(spec);
    let mut out: Vec<(&'static str, String, String)> = Vec::new();
    let mut fail = |id: &'static str, reason: &str, detail: String| {
        out.push((id, reason.to_string(), detail));
    };
    let names_where = |f: &dyn Fn(&Value) -> bool| -> Vec<&str> {
        cs.iter().filter(|c| f(c)).map(|c| cname(c)).collect()
    };

    // appArmorProfile
    {
        let ok_type = |t: &str| matches!(t, "RuntimeDefault" | "Localhost");
        let mut bad: Vec<String> = meta
            .get("annotations")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .filter(|(k, _)| k.starts_with("container.apparmor.security.beta.kubernetes.io/"))
            .filter_map(|(k, v)| {
                let v = v.as_str().unwrap_or("");
                (!(v.is_empty() || v == "runtime/default" || v.starts_with("localhost/")))
                    .then(|| format!("{k}={v:?}"))
            })
            .collect();
        if let Some(t) = s(spec, "/securityContext/appArmorProfile/type")
            && !ok_type(t)
        {
            bad.push(format!("pod securityContext.appArmorProfile.type={t:?}"));
        }
        for c in &cs {
            if let Some(t) = s(c, "/securityContext/appArmorProfile/type")
                && !ok_type(t)
            {
                bad.push(format!(
                    "container {:?} securityContext.appArmorProfile.type={t:?}",
                    cname(c)
                ));
            }
        }
        if !bad.is_empty() {
            let bad = sorted_unique(bad);
            let reason = pluralize(
                bad.len(),
                "forbidden AppArmor profile",
                "forbidden AppArmor profiles",
            );
            fail("appArmorProfile", &reason, bad.join(", "));
        }
    }

    // capabilities_baseline
    {
        let mut caps = Vec::new();
        let names = names_where(&|c: &Value| {
            let added: Vec<String> = strs_at(c, "/securityContext/capabilities/add")
                .into_iter()
                .filter(|cap| !BASELINE_CAPABILITIES.contains(cap))
                .map(str::to_string)
                .collect();
            !added.is_empty()
        });
        for c in &cs {
            caps.extend(
                strs_at(c, "/securityContext/capabilities/add")
                    .into_iter()
                    .filter(|cap| !BASELINE_CAPABILITIES.contains(cap))
                    .map(str::to_string),
            );
        }
        if !names.is_empty() {
            fail(
                "capabilities_baseline",
                "non-default capabilities",
                format!(
                    "{} must not include {} in securityContext.capabilities.add",
                    containers_phrase(&names),
                    quoted_list(&sorted_unique(caps))
                ),
            );
        }
    }

    // hostNamespaces
    {
        let d: Vec<&str> = [
            ("hostNetwork", "hostNetwork=true"),
            ("hostPID", "hostPID=true"),
            ("hostIPC", "hostIPC=true"),
        ]
        .into_iter()
        .filter(|(f, _)| spec.get(*f).and_then(Value::as_bool) == Some(true))
        .map(|(_, l)| l)
        .collect();
        if !d.is_empty() {
            fail("hostNamespaces", "host namespaces", d.join(", "));
        }
    }

    let volumes: Vec<&Value> = spec
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .collect();
    // hostPathVolumes
    {
        let names: Vec<String> = volumes
            .iter()
            .filter(|v| v.get("hostPath").is_some_and(|h| !h.is_null()))
            .map(|v| cname(v).to_string())
            .collect();
        if !names.is_empty() {
            fail(
                "hostPathVolumes",
                "hostPath volumes",
                format!(
                    "{} {}",
                    pluralize(names.len(), "volume", "volumes"),
                    quoted_list(&names)
                ),
            );
        }
    }

    // hostPorts
    {
        let host_ports = |c: &Value| -> Vec<String> {
            c.get("ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|p| p.get("hostPort").and_then(Value::as_i64))
                .filter(|p| *p != 0)
                .map(|p| p.to_string())
                .collect()
        };
        let names = names_where(&|c: &Value| !host_ports(c).is_empty());
        let ports = sorted_unique(cs.iter().flat_map(|c| host_ports(c)).collect());
        if !names.is_empty() {
            fail(
                "hostPorts",
                "hostPort",
                format!(
                    "{} {} {} {}",
                    containers_phrase(&names),
                    if names.len() == 1 { "uses" } else { "use" },
                    pluralize(ports.len(), "hostPort", "hostPorts"),
                    ports.join(", ")
                ),
            );
        }
    }

    // privileged
    {
        let names = names_where(&|c: &Value| {
            c.pointer("/securityContext/privileged")
                .and_then(Value::as_bool)
                == Some(true)
        });
        if !names.is_empty() {
            fail(
                "privileged",
                "privileged",
                format!(
                    "{} must not set securityContext.privileged=true",
                    containers_phrase(&names)
                ),
            );
        }
    }

    // procMount
    {
        let bad = |c: &Value| {
            s(c, "/securityContext/procMount")
                .filter(|p| *p != "Default")
                .map(str::to_string)
        };
        let names = names_where(&|c: &Value| bad(c).is_some());
        if !names.is_empty() {
            let values = sorted_unique(cs.iter().filter_map(|c| bad(c)).collect());
            fail(
                "procMount",
                "procMount",
                format!(
                    "{} must not set securityContext.procMount to {}",
                    containers_phrase(&names),
                    quoted_list(&values)
                ),
            );
        }
    }

    // seLinuxOptions
    {
        let mut types = Vec::new();
        let (mut user, mut role) = (false, false);
        let mut bad = |o: Option<&Value>| -> bool {
            let Some(o) = o.filter(|o| o.is_object()) else {
                return false;
            };
            let mut b = false;
            let t = o.get("type").and_then(Value::as_str).unwrap_or("");
            if !matches!(
                t,
                "" | "container_t" | "container_init_t" | "container_kvm_t" | "container_engine_t"
            ) {
                types.push(t.to_string());
                b = true;
            }
            if o.get("user")
                .and_then(Value::as_str)
                .is_some_and(|u| !u.is_empty())
            {
                user = true;
                b = true;
            }
            if o.get("role")
                .and_then(Value::as_str)
                .is_some_and(|r| !r.is_empty())
            {
                role = true;
                b = true;
            }
            b
        };
        let pod = bad(spec.pointer("/securityContext/seLinuxOptions"));
        let mut names = Vec::new();
        for c in &cs {
            if bad(c.pointer("/securityContext/seLinuxOptions")) {
                names.push(cname(c));
            }
        }
        if let Some(who) = setters(pod, &names) {
            let types = sorted_unique(types);
            let mut data = Vec::new();
            if !types.is_empty() {
                data.push(format!(
                    "{} {}",
                    pluralize(types.len(), "type", "types"),
                    quoted_list(&types)
                ));
            }
            if user {
                data.push("user may not be set".to_string());
            }
            if role {
                data.push("role may not be set".to_string());
            }
            fail(
                "seLinuxOptions",
                "seLinuxOptions",
                format!(
                    "{who} set forbidden securityContext.seLinuxOptions: {}",
                    data.join("; ")
                ),
            );
        }
    }

    // seccompProfile_baseline
    {
        let unconfined =
            |v: &Value| s(v, "/securityContext/seccompProfile/type") == Some("Unconfined");
        let names = names_where(&|c: &Value| unconfined(c));
        if let Some(who) = setters(unconfined(spec), &names) {
            fail(
                "seccompProfile_baseline",
                "seccompProfile",
                format!("{who} must not set securityContext.seccompProfile.type to \"Unconfined\""),
            );
        }
    }

    // sysctls
    {
        let bad: Vec<&str> = spec
            .pointer("/securityContext/sysctls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|x| x.get("name").and_then(Value::as_str))
            .filter(|n| !SAFE_SYSCTLS.contains(n))
            .collect();
        if !bad.is_empty() {
            fail("sysctls", "forbidden sysctls", bad.join(", "));
        }
    }

    // windowsHostProcess
    {
        let host = |v: &Value| {
            v.pointer("/securityContext/windowsOptions/hostProcess")
                .and_then(Value::as_bool)
                == Some(true)
        };
        let names = names_where(&|c: &Value| host(c));
        if let Some(who) = setters(host(spec), &names) {
            fail(
                "windowsHostProcess",
                "hostProcess",
                format!("{who} must not set securityContext.windowsOptions.hostProcess=true"),
            );
        }
    }

    // allowPrivilegeEscalation
    {
        let names = names_where(&|c: &Value| {
            c.pointer("/securityContext/allowPrivilegeEscalation")
                .and_then(Value::as_bool)
                != Some(false)
        });
        if !names.is_empty() {
            fail(
                "allowPrivilegeEscalation",
                "allowPrivilegeEscalation != false",
                format!(
                    "{} must set securityContext.allowPrivilegeEscalation=false",
                    containers_phrase(&names)
                ),
            );
        }
    }

    // capabilities_restricted
    {
        let extra = |c: &Value| -> Vec<String> {
            strs_at(c, "/securityContext/capabilities/add")
                .into_iter()
                .filter(|cap| *cap != "NET_BIND_SERVICE")
                .map(str::to_string)
                .collect()
        };
        let no_drop = names_where(&|c: &Value| {
            !strs_at(c, "/securityContext/capabilities/drop").contains(&"ALL")
        });
        let adders = names_where(&|c: &Value| !extra(c).is_empty());
        let mut d = Vec::new();
        if !no_drop.is_empty() {
            d.push(format!(
                "{} must set securityContext.capabilities.drop=[\"ALL\"]",
                containers_phrase(&no_drop)
            ));
        }
        if !adders.is_empty() {
            let caps = sorted_unique(cs.iter().flat_map(|c| extra(c)).collect());
            d.push(format!(
                "{} must not include {} in securityContext.capabilities.add",
                containers_phrase(&adders),
                quoted_list(&caps)
            ));
        }
        if !d.is_empty() {
            fail(
                "capabilities_restricted",
                "unrestricted capabilities",
                d.join("; "),
            );
        }
    }

    // restrictedVolumes
    {
        let mut names = Vec::new();
        let mut types = Vec::new();
        for v in &volumes {
            let Some(o) = v.as_object() else { continue };
            let ty = VOLUME_TYPES
                .iter()
                .find(|t| o.get(**t).is_some_and(|x| !x.is_null()))
                .copied()
                .unwrap_or("unknown");
            if !RESTRICTED_VOLUMES.contains(&ty) {
                names.push(cname(v).to_string());
                types.push(ty.to_string());
            }
        }
        if !names.is_empty() {
            let types = sorted_unique(types);
            fail(
                "restrictedVolumes",
                "restricted volume types",
                format!(
                    "{} {} {} {} {}",
                    pluralize(names.len(), "volume", "volumes"),
                    quoted_list(&names),
                    if names.len() == 1 { "uses" } else { "use" },
                    pluralize(
                        types.len(),
                        "restricted volume type",
                        "restricted volume types"
                    ),
                    quoted_list(&types)
                ),
            );
        }
    }

    // runAsNonRoot
    {
        let pod = spec
            .pointer("/securityContext/runAsNonRoot")
            .and_then(Value::as_bool);
        let explicit = names_where(&|c: &Value| {
            c.pointer("/securityContext/runAsNonRoot")
                .and_then(Value::as_bool)
                == Some(false)
        });
        let implicit = names_where(&|c: &Value| {
            c.pointer("/securityContext/runAsNonRoot")
                .and_then(Value::as_bool)
                .is_none()
                && pod != Some(true)
        });
        if let Some(who) = setters(pod == Some(false), &explicit) {
            fail(
                "runAsNonRoot",
                "runAsNonRoot != true",
                format!("{who} must not set securityContext.runAsNonRoot=false"),
            );
        } else if !implicit.is_empty() {
            fail(
                "runAsNonRoot",
                "runAsNonRoot != true",
                format!(
                    "pod or {} must set securityContext.runAsNonRoot=true",
                    containers_phrase(&implicit)
                ),
            );
        }
    }

    // runAsUser
    {
        let root = |v: &Value| {
            v.pointer("/securityContext/runAsUser")
                .and_then(Value::as_i64)
                == Some(0)
        };
        let names = names_where(&|c: &Value| root(c));
        if let Some(who) = setters(root(spec), &names) {
            fail(
                "runAsUser",
                "runAsUser=0",
                format!("{who} must not set runAsUser=0"),
            );
        }
    }

    // seccompProfile_restricted
    {
        let ok = |t: &str| matches!(t, "RuntimeDefault" | "Localhost");
        let pod_type = s(spec, "/securityContext/seccompProfile/type");
        let pod_bad = pod_type.is_some_and(|t| !ok(t));
        let pod_set = pod_type.is_some_and(ok);
        let mut values: Vec<String> = pod_type
            .filter(|t| !ok(t))
            .map(str::to_string)
            .into_iter()
            .collect();
        let explicit = names_where(&|c: &Value| {
            s(c, "/securityContext/seccompProfile/type").is_some_and(|t| !ok(t))
        });
        values.extend(
            cs.iter()
                .filter_map(|c| s(c, "/securityContext/seccompProfile/type"))
                .filter(|t| !ok(t))
                .map(str::to_string),
        );
        let implicit = names_where(&|c: &Value| {
            c.pointer("/securityContext/seccompProfile")
                .is_none_or(Value::is_null)
                && !pod_set
        });
        if let Some(who) = setters(pod_bad, &explicit) {
            fail(
                "seccompProfile_restricted",
                "seccompProfile",
                format!(
                    "{who} must not set securityContext.seccompProfile.type to {}",
                    quoted_list(&sorted_unique(values))
                ),
            );
        } else if !implicit.is_empty() {
            fail(
                "seccompProfile_restricted",
                "seccompProfile",
                format!(
                    "pod or {} must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\"",
                    containers_phrase(&implicit)
                ),
            );
        }
    }
    out
}

/// The strings of an array at `path`.
fn strs_at<'v>(v: &'v Value, path: &str) -> Vec<&'v str> {
    v.pointer(path)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(level: Level, spec: Value) -> Vec<String> {
        violations(level, Some(&json!({})), Some(&spec))
    }

    fn compliant() -> Value {
        json!({
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "app", "image": "x", "securityContext": {
                "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}],
        })
    }

    #[test]
    fn each_check_answers_kubes_reason_and_detail() {
        // (level, pod spec, expected violations)
        let cases: Vec<(Level, Value, Vec<&str>)> = vec![
            (
                Level::Baseline,
                json!({"containers": [{"name": "a"}]}),
                vec![],
            ),
            (
                Level::Privileged,
                json!({"hostNetwork": true, "containers": [{"name": "a"}]}),
                vec![],
            ),
            (
                Level::Baseline,
                json!({"hostNetwork": true, "hostPID": true, "containers": [{"name": "a", "ports": [{"containerPort": 80, "hostPort": 80}]}]}),
                vec![
                    "host namespaces (hostNetwork=true, hostPID=true)",
                    "hostPort (container \"a\" uses hostPort 80)",
                ],
            ),
            (
                Level::Baseline,
                json!({"containers": [{"name": "a", "securityContext": {"privileged": true}}, {"name": "b", "securityContext": {"privileged": true}}]}),
                vec![
                    "privileged (containers \"a\", \"b\" must not set securityContext.privileged=true)",
                ],
            ),
            (
                Level::Baseline,
                json!({"containers": [{"name": "a", "securityContext": {"capabilities": {"add": ["NET_ADMIN", "CHOWN"]}}}]}),
                vec![
                    "non-default capabilities (container \"a\" must not include \"NET_ADMIN\" in securityContext.capabilities.add)",
                ],
            ),
            (
                Level::Baseline,
                json!({"volumes": [{"name": "v", "hostPath": {"path": "/"}}], "containers": [{"name": "a"}]}),
                vec!["hostPath volumes (volume \"v\")"],
            ),
            (
                Level::Baseline,
                json!({"securityContext": {"seccompProfile": {"type": "Unconfined"}, "sysctls": [{"name": "kernel.msgmax", "value": "1"}]}, "containers": [{"name": "a"}]}),
                vec![
                    "forbidden sysctls (kernel.msgmax)",
                    "seccompProfile (pod must not set securityContext.seccompProfile.type to \"Unconfined\")",
                ],
            ),
            (
                Level::Baseline,
                json!({"containers": [{"name": "a", "securityContext": {"procMount": "Unmasked", "seLinuxOptions": {"type": "spc_t"}}}]}),
                vec![
                    "procMount (container \"a\" must not set securityContext.procMount to \"Unmasked\")",
                    "seLinuxOptions (container \"a\" set forbidden securityContext.seLinuxOptions: type \"spc_t\")",
                ],
            ),
            (Level::Restricted, compliant(), vec![]),
            (
                Level::Restricted,
                json!({"containers": [{"name": "x", "image": "nginx"}]}),
                vec![
                    "allowPrivilegeEscalation != false (container \"x\" must set securityContext.allowPrivilegeEscalation=false)",
                    "unrestricted capabilities (container \"x\" must set securityContext.capabilities.drop=[\"ALL\"])",
                    "runAsNonRoot != true (pod or container \"x\" must set securityContext.runAsNonRoot=true)",
                    "seccompProfile (pod or container \"x\" must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")",
                ],
            ),
            (
                Level::Restricted,
                {
                    let mut p = compliant();
                    p["volumes"] = json!([{"name": "h", "hostPath": {"path": "/"}}]);
                    p["securityContext"]["runAsUser"] = json!(0);
                    p["containers"][0]["securityContext"]["capabilities"]["add"] =
                        json!(["NET_BIND_SERVICE", "SYS_TIME"]);
                    p
                },
                vec![
                    "unrestricted capabilities (container \"app\" must not include \"SYS_TIME\" in securityContext.capabilities.add)",
                    "restricted volume types (volume \"h\" uses restricted volume type \"hostPath\")",
                    "runAsUser=0 (pod must not set runAsUser=0)",
                ],
            ),
        ];
        for (level, spec, want) in cases {
            assert_eq!(check(level, spec.clone()), want, "{level:?} on {spec}");
        }
    }

    #[test]
    fn namespace_labels_choose_the_policy_and_invalid_ones_are_the_strictest() {
        let labels = |v: Value| v.as_object().cloned();
        let l = labels(
            json!({"pod-security.kubernetes.io/enforce": "baseline", "pod-security.kubernetes.io/enforce-version": "v1.30"}),
        );
        assert_eq!(
            policy(l.as_ref(), "enforce"),
            Some(Policy {
                level: Level::Baseline,
                version: "v1.30".into()
            })
        );
        assert_eq!(policy(l.as_ref(), "warn"), None);
        let bad = labels(json!({"pod-security.kubernetes.io/enforce": "strict"}));
        assert_eq!(
            policy(bad.as_ref(), "enforce").map(|p| p.level),
            Some(Level::Restricted)
        );
        let bad_warn = labels(json!({"pod-security.kubernetes.io/warn": "strict",
            "pod-security.kubernetes.io/warn-version": "v2"}));
        assert_eq!(
            policy(bad_warn.as_ref(), "warn"),
            Some(Policy {
                level: Level::Privileged,
                version: "latest".into()
            }),
            "warn fails open"
        );
        assert_eq!(
            label_errors(bad.as_ref())
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            vec![
                "metadata.labels[pod-security.kubernetes.io/enforce]: Invalid value: \"strict\": must be one of privileged, baseline, restricted"
            ]
        );
    }
}
