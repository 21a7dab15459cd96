//! The columns `kubectl get` shows, as data: for each built-in kind the columns
//! kube-apiserver 1.33's printers define (priority 0 for the default view, 1 for `-o wide`)
//! and a pure function from the object (JSON) and the current time to the row's cells.
//!
//! Kinds without a printer in kube-apiserver get its default table (`Name`, `Created At`
//! as an RFC 3339 string: kubectl shows `NAME  CREATED AT`); custom resources get the
//! apiextensions default (`Name`, `Age` of type `date`). Column descriptions are references
//! into the OpenAPI definitions, resolved once by [`Docs`].
//!
//! Cells follow `pkg/printers/internalversion/printers.go`. Where kube-apiserver would have
//! defaulted a field Logbook may not have (a Service's `type`, a port's `protocol`), the
//! printer assumes kube's default so the row reads the same.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

/// Where a column's description comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Doc {
    Text(&'static str),
    /// A property's description in an OpenAPI definition: `(definition, property)`.
    Field(&'static str, &'static str),
}

/// One column of a Table (`meta.k8s.io/v1` TableColumnDefinition).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Column {
    pub name: &'static str,
    /// `string`, `integer`, `boolean` or `date`.
    pub kind: &'static str,
    /// `name` for the column holding the object's name, else empty.
    pub format: &'static str,
    pub doc: Doc,
    /// 0: always shown; 1: shown by `-o wide`.
    pub priority: i32,
}

/// `type: Completed` row condition kube-apiserver sets on finished pods.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completed {
    pub reason: &'static str,
    pub message: &'static str,
}

/// One row: its cells (strings, integers, booleans) in column order.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub cells: Vec<Value>,
    pub completed: Option<Completed>,
}

impl Row {
    fn of(cells: Vec<Value>) -> Row {
        Row {
            cells,
            completed: None,
        }
    }
}

/// The Table of one kind: columns and the function computing a row.
#[derive(Debug)]
pub struct Printer {
    /// A stable name (the kind, or `default` / `custom`), for caches and tests.
    pub id: &'static str,
    pub columns: &'static [Column],
    /// The row of an object at `now` (Unix seconds).
    pub row: fn(&Value, i64) -> Row,
}

const META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";

const fn col(name: &'static str, kind: &'static str, doc: Doc, priority: i32) -> Column {
    Column {
        name,
        kind,
        format: "",
        doc,
        priority,
    }
}

const fn f(def: &'static str, prop: &'static str) -> Doc {
    Doc::Field(def, prop)
}

const fn t(text: &'static str) -> Doc {
    Doc::Text(text)
}

const NAME: Column = Column {
    name: "Name",
    kind: "string",
    format: "name",
    doc: Doc::Field(META, "name"),
    priority: 0,
};
const AGE: Column = col("Age", "string", f(META, "creationTimestamp"), 0);
const CONTAINERS: Column = col(
    "Containers",
    "string",
    t("Names of each container in the template."),
    1,
);
const IMAGES: Column = col(
    "Images",
    "string",
    t("Images referenced by each container in the template."),
    1,
);

macro_rules! d {
    ($def:literal, $prop:literal) => {
        Doc::Field($def, $prop)
    };
}

/// The printer for a kind; `custom` says the resource is a custom resource (no typed
/// check), which gets the apiextensions default columns.
pub fn printer_for(group: &str, kind: &str, custom: bool) -> &'static Printer {
    if custom {
        return &CUSTOM;
    }
    PRINTERS
        .iter()
        .find(|(g, k, _)| *g == group && *k == kind)
        .map(|(_, _, p)| *p)
        .unwrap_or(&DEFAULT)
}

/// Every printer, for building caches of their column definitions.
pub fn all() -> impl Iterator<Item = &'static Printer> {
    PRINTERS
        .iter()
        .map(|(_, _, p)| *p)
        .chain([&DEFAULT, &CUSTOM])
}

static PRINTERS: &[(&str, &str, &Printer)] = &[
    ("", "Pod", &POD),
    ("", "PodTemplate", &POD_TEMPLATE),
    ("", "ReplicationController", &REPLICATION_CONTROLLER),
    ("", "Service", &SERVICE),
    ("", "Endpoints", &ENDPOINTS),
    ("", "Node", &NODE),
    ("", "Event", &EVENT),
    ("events.k8s.io", "Event", &EVENT),
    ("", "Namespace", &NAMESPACE),
    ("", "Secret", &SECRET),
    ("", "ConfigMap", &CONFIG_MAP),
    ("", "ServiceAccount", &SERVICE_ACCOUNT),
    ("", "PersistentVolume", &PERSISTENT_VOLUME),
    ("", "PersistentVolumeClaim", &PERSISTENT_VOLUME_CLAIM),
    ("", "ResourceQuota", &RESOURCE_QUOTA),
    ("apps", "Deployment", &DEPLOYMENT),
    ("apps", "ReplicaSet", &REPLICA_SET),
    ("apps", "StatefulSet", &STATEFUL_SET),
    ("apps", "DaemonSet", &DAEMON_SET),
    ("apps", "ControllerRevision", &CONTROLLER_REVISION),
    ("batch", "Job", &JOB),
    ("batch", "CronJob", &CRON_JOB),
    ("autoscaling", "HorizontalPodAutoscaler", &HPA),
    ("policy", "PodDisruptionBudget", &PDB),
    ("networking.k8s.io", "Ingress", &INGRESS),
    ("networking.k8s.io", "IngressClass", &INGRESS_CLASS),
    ("networking.k8s.io", "NetworkPolicy", &NETWORK_POLICY),
    ("discovery.k8s.io", "EndpointSlice", &ENDPOINT_SLICE),
    ("coordination.k8s.io", "Lease", &LEASE),
    ("rbac.authorization.k8s.io", "RoleBinding", &ROLE_BINDING),
    (
        "rbac.authorization.k8s.io",
        "ClusterRoleBinding",
        &CLUSTER_ROLE_BINDING,
    ),
    ("scheduling.k8s.io", "PriorityClass", &PRIORITY_CLASS),
    ("storage.k8s.io", "StorageClass", &STORAGE_CLASS),
    ("storage.k8s.io", "VolumeAttachment", &VOLUME_ATTACHMENT),
    ("storage.k8s.io", "CSIDriver", &CSI_DRIVER),
    ("storage.k8s.io", "CSINode", &CSI_NODE),
    ("node.k8s.io", "RuntimeClass", &RUNTIME_CLASS),
    ("certificates.k8s.io", "CertificateSigningRequest", &CSR),
];

// ---------------------------------------------------------------------------------------
// Column descriptions

/// Column descriptions resolved from the OpenAPI definitions kube-apiserver 1.33 serves.
pub struct Docs {
    definitions: Value,
}

impl Docs {
    /// Parses the embedded definitions (once per process: the API layer caches the
    /// rendered column definitions).
    pub fn load() -> Docs {
        Docs {
            definitions: serde_json::from_str(include_str!("../openapi/definitions.json"))
                .unwrap_or(Value::Null),
        }
    }

    pub fn describe(&self, doc: Doc) -> String {
        match doc {
            Doc::Text(s) => s.to_string(),
            Doc::Field(def, prop) => self
                .definitions
                .get(def)
                .and_then(|d| d.get("properties"))
                .and_then(|p| p.get(prop))
                .and_then(|p| p.get("description"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
        }
    }

    /// The `columnDefinitions` array of a Table for `printer`.
    pub fn column_definitions(&self, printer: &Printer) -> Value {
        Value::Array(
            printer
                .columns
                .iter()
                .map(|c| {
                    json!({
                        "name": c.name,
                        "type": c.kind,
                        "format": c.format,
                        "description": self.describe(c.doc),
                        "priority": c.priority,
                    })
                })
                .collect(),
        )
    }
}

// ---------------------------------------------------------------------------------------
// Reading the object

fn get<'a>(v: &'a Value, ptr: &str) -> Option<&'a Value> {
    v.pointer(ptr)
}

fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    get(v, ptr).and_then(Value::as_str).unwrap_or("")
}

fn i(v: &Value, ptr: &str) -> i64 {
    get(v, ptr).and_then(Value::as_i64).unwrap_or(0)
}

fn b(v: &Value, ptr: &str) -> Option<bool> {
    get(v, ptr).and_then(Value::as_bool)
}

fn arr<'a>(v: &'a Value, ptr: &str) -> &'a [Value] {
    get(v, ptr)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn obj<'a>(v: &'a Value, ptr: &str) -> Option<&'a Map<String, Value>> {
    get(v, ptr).and_then(Value::as_object)
}

fn len(v: &Value, ptr: &str) -> i64 {
    match get(v, ptr) {
        Some(Value::Array(a)) => a.len() as i64,
        Some(Value::Object(m)) => m.len() as i64,
        _ => 0,
    }
}

fn name(v: &Value) -> Value {
    Value::String(s(v, "/metadata/name").to_string())
}

fn age(v: &Value, now: i64) -> Value {
    Value::String(since(s(v, "/metadata/creationTimestamp"), now))
}

fn text(s: impl Into<String>) -> Value {
    Value::String(s.into())
}

fn or<'a>(s: &'a str, default: &'a str) -> &'a str {
    if s.is_empty() { default } else { s }
}

/// A quantity or int-or-string as kubectl prints it.
fn scalar(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        _ => String::new(),
    }
}

fn bool_ptr(v: Option<bool>) -> Value {
    text(match v {
        Some(true) => "True",
        Some(false) => "False",
        None => "<unset>",
    })
}

// ---------------------------------------------------------------------------------------
// Time

/// Seconds since the Unix epoch of an RFC 3339 timestamp (`2024-05-01T10:00:00Z`, with
/// optional fraction and offset). `None` when it is not one.
pub fn parse_timestamp(ts: &str) -> Option<i64> {
    let b = ts.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = ts.get(r)?;
        if !s.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if b[13] != b':' || b[16] != b':' || !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return None;
    }
    let mut rest = &ts[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && matches!(rest.as_bytes()[0], b'+' | b'-') => {
            let oh: i64 = rest.get(1..3)?.parse().ok()?;
            let om: i64 = rest.get(4..6)?.parse().ok()?;
            let o = oh * 3600 + om * 60;
            if rest.starts_with('-') { -o } else { o }
        }
        _ => return None,
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + mi * 60 + sec - offset)
}

/// apimachinery's `duration.HumanDuration` of a whole number of seconds: `45s`, `5m30s`,
/// `3h20m`, `2d4h`, `400d`, `3y20d`.
pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    }
    if seconds < 0 {
        return "0s".into();
    }
    if seconds < 120 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// The age of a timestamp at `now` (kube's `translateTimestampSince`): `<unknown>` when
/// unset.
pub fn since(ts: &str, now: i64) -> String {
    match parse_timestamp(ts) {
        Some(t) => human_duration(now - t),
        None => "<unknown>".into(),
    }
}

// ---------------------------------------------------------------------------------------
// Shared formatting

/// `labels.FormatLabels`: `a=b,c=d` sorted by key, `<none>` when empty.
fn format_labels(m: Option<&Map<String, Value>>) -> String {
    let sorted: BTreeMap<&str, String> = m
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.as_str(), scalar(Some(v))))
        .collect();
    if sorted.is_empty() {
        return "<none>".into();
    }
    sorted
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// A `metav1.LabelSelector` as a selector string (requirements sorted by key); empty for
/// none.
fn selector_string(sel: Option<&Value>) -> String {
    let Some(sel) = sel.filter(|s| s.is_object()) else {
        return String::new();
    };
    let mut reqs: Vec<(String, String)> = Vec::new();
    if let Some(m) = sel.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in m {
            reqs.push((k.clone(), format!("{k}={}", scalar(Some(v)))));
        }
    }
    for e in sel
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = s(e, "/key");
        let mut values: Vec<String> = arr(e, "/values").iter().map(|v| scalar(Some(v))).collect();
        values.sort();
        let r = match s(e, "/operator") {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_string(),
            "DoesNotExist" => format!("!{key}"),
            _ => return "<invalid>".into(),
        };
        reqs.push((key.to_string(), r));
    }
    reqs.sort_by(|a, b| a.0.cmp(&b.0));
    reqs.into_iter().map(|r| r.1).collect::<Vec<_>>().join(",")
}

/// `metav1.FormatLabelSelector`: the selector string, `<none>` when it selects nothing or
/// everything.
fn format_label_selector(sel: Option<&Value>) -> String {
    let s = selector_string(sel);
    if s.is_empty() { "<none>".into() } else { s }
}

/// Container names and images, comma-separated.
fn containers(v: &Value, ptr: &str) -> (Value, Value) {
    let cs = arr(v, ptr);
    let names: Vec<&str> = cs.iter().map(|c| s(c, "/name")).collect();
    let images: Vec<&str> = cs.iter().map(|c| s(c, "/image")).collect();
    (text(names.join(",")), text(images.join(",")))
}

/// "3 + 2 more..." lists of at most `max` items.
fn list_with_more(list: &[String], count: usize, max: usize, empty: &str) -> String {
    let ret = list.join(",");
    if count > max {
        return format!("{ret} + {} more...", count - max);
    }
    if ret.is_empty() { empty.into() } else { ret }
}

fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn access_modes(modes: &[Value]) -> String {
    let has = |m: &str| modes.iter().any(|v| v.as_str() == Some(m));
    let mut out = Vec::new();
    for (mode, short) in [
        ("ReadWriteOnce", "RWO"),
        ("ReadOnlyMany", "ROX"),
        ("ReadWriteMany", "RWX"),
        ("ReadWriteOncePod", "RWOP"),
    ] {
        if has(mode) {
            out.push(short);
        }
    }
    out.join(",")
}

// ---------------------------------------------------------------------------------------
// The default tables

static DEFAULT: Printer = Printer {
    id: "default",
    columns: &[
        NAME,
        col("Created At", "date", f(META, "creationTimestamp"), 0),
    ],
    row: default_row,
};

fn default_row(v: &Value, _now: i64) -> Row {
    // kube formats the creation time as RFC 3339 in UTC, seconds precision.
    let ts = s(v, "/metadata/creationTimestamp");
    let cell = match parse_timestamp(ts) {
        Some(secs) => format_rfc3339(secs),
        None => "0001-01-01T00:00:00Z".into(),
    };
    Row::of(vec![name(v), text(cell)])
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn format_rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let tod = secs.rem_euclid(86_400);
    // Civil date from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        tod / 3600,
        tod % 3600 / 60,
        tod % 60
    )
}

static CUSTOM: Printer = Printer {
    id: "custom",
    columns: &[NAME, col("Age", "date", f(META, "creationTimestamp"), 0)],
    row: |v, now| Row::of(vec![name(v), age(v, now)]),
};

// ---------------------------------------------------------------------------------------
// core/v1

static POD: Printer = Printer {
    id: "Pod",
    columns: &[
        NAME,
        col(
            "Ready",
            "string",
            t("The aggregate readiness state of this pod for accepting traffic."),
            0,
        ),
        col(
            "Status",
            "string",
            t("The aggregate status of the containers in this pod."),
            0,
        ),
        col(
            "Restarts",
            "string",
            t(
                "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
            ),
            0,
        ),
        AGE,
        col(
            "IP",
            "string",
            d!("io.k8s.api.core.v1.PodStatus", "podIP"),
            1,
        ),
        col(
            "Node",
            "string",
            d!("io.k8s.api.core.v1.PodSpec", "nodeName"),
            1,
        ),
        col(
            "Nominated Node",
            "string",
            d!("io.k8s.api.core.v1.PodStatus", "nominatedNodeName"),
            1,
        ),
        col(
            "Readiness Gates",
            "string",
            d!("io.k8s.api.core.v1.PodSpec", "readinessGates"),
            1,
        ),
    ],
    row: pod_row,
};

fn condition_true(conditions: &[Value], kind: &str) -> bool {
    conditions
        .iter()
        .find(|c| s(c, "/type") == kind)
        .is_some_and(|c| s(c, "/status") == "True")
}

/// The later of two optional timestamps (as seconds).
fn later(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

fn pod_row(pod: &Value, now: i64) -> Row {
    let phase = s(pod, "/status/phase");
    let mut reason = or(s(pod, "/status/reason"), phase).to_string();
    let conditions = arr(pod, "/status/conditions");
    if conditions
        .iter()
        .any(|c| s(c, "/type") == "PodScheduled" && s(c, "/reason") == "SchedulingGated")
    {
        reason = "SchedulingGated".into();
    }
    let completed = match phase {
        "Succeeded" => Some(Completed {
            reason: "Succeeded",
            message: "The pod has completed successfully.",
        }),
        "Failed" => Some(Completed {
            reason: "Failed",
            message: "The pod failed.",
        }),
        _ => None,
    };

    let init_specs = arr(pod, "/spec/initContainers");
    let restartable = |name: &str| {
        init_specs
            .iter()
            .any(|c| s(c, "/name") == name && s(c, "/restartPolicy") == "Always")
    };
    let total = arr(pod, "/spec/containers").len()
        + init_specs
            .iter()
            .filter(|c| s(c, "/restartPolicy") == "Always")
            .count();
    let mut ready = 0usize;
    let mut restarts = 0i64;
    let mut sidecar_restarts = 0i64;
    let mut last_restart: Option<i64> = None;
    let mut last_sidecar_restart: Option<i64> = None;
    let finished = |c: &Value| parse_timestamp(s(c, "/lastState/terminated/finishedAt"));

    let mut initializing = false;
    for (idx, c) in arr(pod, "/status/initContainerStatuses").iter().enumerate() {
        restarts += i(c, "/restartCount");
        last_restart = later(last_restart, finished(c));
        let sidecar = restartable(s(c, "/name"));
        if sidecar {
            sidecar_restarts += i(c, "/restartCount");
            last_sidecar_restart = later(last_sidecar_restart, finished(c));
        }
        let terminated = get(c, "/state/terminated").filter(|t| t.is_object());
        let waiting_reason = s(c, "/state/waiting/reason");
        if terminated.is_some_and(|t| i(t, "/exitCode") == 0) {
            continue;
        }
        if sidecar && b(c, "/started") == Some(true) {
            if b(c, "/ready") == Some(true) {
                ready += 1;
            }
            continue;
        }
        if let Some(t) = terminated {
            reason = match s(t, "/reason") {
                "" if i(t, "/signal") != 0 => format!("Init:Signal:{}", i(t, "/signal")),
                "" => format!("Init:ExitCode:{}", i(t, "/exitCode")),
                r => format!("Init:{r}"),
            };
        } else if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" {
            reason = format!("Init:{waiting_reason}");
        } else {
            reason = format!("Init:{idx}/{}", init_specs.len());
        }
        initializing = true;
        break;
    }

    if !initializing || condition_true(conditions, "Initialized") {
        restarts = sidecar_restarts;
        last_restart = last_sidecar_restart;
        let mut has_running = false;
        for c in arr(pod, "/status/containerStatuses").iter().rev() {
            restarts += i(c, "/restartCount");
            last_restart = later(last_restart, finished(c));
            let waiting = s(c, "/state/waiting/reason");
            let terminated = get(c, "/state/terminated").filter(|t| t.is_object());
            if !waiting.is_empty() {
                reason = waiting.to_string();
            } else if let Some(t) = terminated {
                reason = match s(t, "/reason") {
                    "" if i(t, "/signal") != 0 => format!("Signal:{}", i(t, "/signal")),
                    "" => format!("ExitCode:{}", i(t, "/exitCode")),
                    r => r.to_string(),
                };
            } else if b(c, "/ready") == Some(true)
                && get(c, "/state/running").is_some_and(Value::is_object)
            {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            reason = if condition_true(conditions, "Ready") {
                "Running".into()
            } else {
                "NotReady".into()
            };
        }
    }

    let deleting = !s(pod, "/metadata/deletionTimestamp").is_empty();
    if deleting && s(pod, "/status/reason") == "NodeLost" {
        reason = "Unknown".into();
    } else if deleting && !matches!(phase, "Failed" | "Succeeded") {
        reason = "Terminating".into();
    }

    let restarts_cell = match last_restart {
        Some(t) if restarts != 0 => format!("{restarts} ({} ago)", human_duration(now - t)),
        _ => restarts.to_string(),
    };
    let ip = arr(pod, "/status/podIPs")
        .first()
        .map(|p| s(p, "/ip"))
        .unwrap_or("");
    let gates = arr(pod, "/spec/readinessGates");
    let gates_cell = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let true_count = gates
            .iter()
            .filter(|g| {
                let kind = s(g, "/conditionType");
                conditions
                    .iter()
                    .find(|c| s(c, "/type") == kind)
                    .is_some_and(|c| s(c, "/status") == "True")
            })
            .count();
        format!("{true_count}/{}", gates.len())
    };
    Row {
        cells: vec![
            name(pod),
            text(format!("{ready}/{total}")),
            text(reason),
            text(restarts_cell),
            age(pod, now),
            text(or(ip, "<none>")),
            text(or(s(pod, "/spec/nodeName"), "<none>")),
            text(or(s(pod, "/status/nominatedNodeName"), "<none>")),
            text(gates_cell),
        ],
        completed,
    }
}

static POD_TEMPLATE: Printer = Printer {
    id: "PodTemplate",
    columns: &[
        NAME,
        col(
            "Containers",
            "string",
            t("Names of each container in the template."),
            0,
        ),
        col(
            "Images",
            "string",
            t("Images referenced by each container in the template."),
            0,
        ),
        col(
            "Pod Labels",
            "string",
            t("The labels for the pod template."),
            0,
        ),
    ],
    row: |v, _| {
        let (names, images) = containers(v, "/template/spec/containers");
        Row::of(vec![
            name(v),
            names,
            images,
            text(format_labels(obj(v, "/template/metadata/labels"))),
        ])
    },
};

static REPLICATION_CONTROLLER: Printer = Printer {
    id: "ReplicationController",
    columns: &[
        NAME,
        col(
            "Desired",
            "integer",
            d!("io.k8s.api.core.v1.ReplicationControllerSpec", "replicas"),
            0,
        ),
        col(
            "Current",
            "integer",
            d!("io.k8s.api.core.v1.ReplicationControllerStatus", "replicas"),
            0,
        ),
        col(
            "Ready",
            "integer",
            d!(
                "io.k8s.api.core.v1.ReplicationControllerStatus",
                "readyReplicas"
            ),
            0,
        ),
        AGE,
        CONTAINERS,
        IMAGES,
        col(
            "Selector",
            "string",
            d!("io.k8s.api.core.v1.ReplicationControllerSpec", "selector"),
            1,
        ),
    ],
    row: |v, now| {
        let (names, images) = containers(v, "/spec/template/spec/containers");
        Row::of(vec![
            name(v),
            json!(i(v, "/spec/replicas")),
            json!(i(v, "/status/replicas")),
            json!(i(v, "/status/readyReplicas")),
            age(v, now),
            names,
            images,
            text(format_labels(obj(v, "/spec/selector"))),
        ])
    },
};

static SERVICE: Printer = Printer {
    id: "Service",
    columns: &[
        NAME,
        col(
            "Type",
            "string",
            d!("io.k8s.api.core.v1.ServiceSpec", "type"),
            0,
        ),
        col(
            "Cluster-IP",
            "string",
            d!("io.k8s.api.core.v1.ServiceSpec", "clusterIP"),
            0,
        ),
        col(
            "External-IP",
            "string",
            d!("io.k8s.api.core.v1.ServiceSpec", "externalIPs"),
            0,
        ),
        col(
            "Port(s)",
            "string",
            d!("io.k8s.api.core.v1.ServiceSpec", "ports"),
            0,
        ),
        AGE,
        col(
            "Selector",
            "string",
            d!("io.k8s.api.core.v1.ServiceSpec", "selector"),
            1,
        ),
    ],
    row: service_row,
};

fn service_row(v: &Value, now: i64) -> Row {
    // kube defaults `type` to ClusterIP and `protocol` to TCP before anything prints.
    let kind = or(s(v, "/spec/type"), "ClusterIP");
    let cluster_ip = arr(v, "/spec/clusterIPs")
        .first()
        .and_then(Value::as_str)
        .unwrap_or_else(|| s(v, "/spec/clusterIP"));
    let external_ips: Vec<&str> = arr(v, "/spec/externalIPs")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let external = match kind {
        "ClusterIP" | "NodePort" if external_ips.is_empty() => "<none>".to_string(),
        "ClusterIP" | "NodePort" => external_ips.join(","),
        "LoadBalancer" => {
            let mut seen = BTreeSet::new();
            let mut all: Vec<String> = Vec::new();
            for ing in arr(v, "/status/loadBalancer/ingress") {
                let a = or(s(ing, "/ip"), s(ing, "/hostname"));
                if !a.is_empty() && seen.insert(a.to_string()) {
                    all.push(a.to_string());
                }
            }
            all.extend(external_ips.iter().map(|s| s.to_string()));
            if all.is_empty() {
                "<pending>".into()
            } else {
                all.join(",")
            }
        }
        "ExternalName" => s(v, "/spec/externalName").to_string(),
        _ => "<unknown>".into(),
    };
    let ports: Vec<String> = arr(v, "/spec/ports")
        .iter()
        .map(|p| {
            let proto = or(s(p, "/protocol"), "TCP");
            match i(p, "/nodePort") {
                n if n > 0 => format!("{}:{n}/{proto}", i(p, "/port")),
                _ => format!("{}/{proto}", i(p, "/port")),
            }
        })
        .collect();
    Row::of(vec![
        name(v),
        text(kind),
        text(or(cluster_ip, "<none>")),
        text(external),
        text(if ports.is_empty() {
            "<none>".to_string()
        } else {
            ports.join(",")
        }),
        age(v, now),
        text(format_labels(obj(v, "/spec/selector"))),
    ])
}

static ENDPOINTS: Printer = Printer {
    id: "Endpoints",
    columns: &[
        NAME,
        col(
            "Endpoints",
            "string",
            d!("io.k8s.api.core.v1.Endpoints", "subsets"),
            0,
        ),
        AGE,
    ],
    row: |v, now| Row::of(vec![name(v), text(format_endpoints(v)), age(v, now)]),
};

fn format_endpoints(v: &Value) -> String {
    let subsets = arr(v, "/subsets");
    if subsets.is_empty() {
        return "<none>".into();
    }
    const MAX: usize = 3;
    let mut list = Vec::new();
    let mut count = 0;
    for ss in subsets {
        let addrs = arr(ss, "/addresses");
        let ports = arr(ss, "/ports");
        if ports.is_empty() {
            count += addrs.len();
            for a in addrs.iter().take(MAX.saturating_sub(list.len())) {
                list.push(s(a, "/ip").to_string());
            }
            continue;
        }
        for p in ports {
            count += addrs.len();
            for a in addrs.iter().take(MAX.saturating_sub(list.len())) {
                list.push(join_host_port(s(a, "/ip"), i(p, "/port")));
            }
        }
    }
    list_with_more(&list, count, MAX, "")
}

static NODE: Printer = Printer {
    id: "Node",
    columns: &[
        NAME,
        col("Status", "string", t("The status of the node"), 0),
        col("Roles", "string", t("The roles of the node"), 0),
        AGE,
        col(
            "Version",
            "string",
            d!("io.k8s.api.core.v1.NodeSystemInfo", "kubeletVersion"),
            0,
        ),
        col(
            "Internal-IP",
            "string",
            d!("io.k8s.api.core.v1.NodeStatus", "addresses"),
            1,
        ),
        col(
            "External-IP",
            "string",
            d!("io.k8s.api.core.v1.NodeStatus", "addresses"),
            1,
        ),
        col(
            "OS-Image",
            "string",
            d!("io.k8s.api.core.v1.NodeSystemInfo", "osImage"),
            1,
        ),
        col(
            "Kernel-Version",
            "string",
            d!("io.k8s.api.core.v1.NodeSystemInfo", "kernelVersion"),
            1,
        ),
        col(
            "Container-Runtime",
            "string",
            d!(
                "io.k8s.api.core.v1.NodeSystemInfo",
                "containerRuntimeVersion"
            ),
            1,
        ),
    ],
    row: node_row,
};

fn node_row(v: &Value, now: i64) -> Row {
    let mut status = Vec::new();
    if let Some(c) = arr(v, "/status/conditions")
        .iter()
        .rev()
        .find(|c| s(c, "/type") == "Ready")
    {
        status.push(if s(c, "/status") == "True" {
            "Ready"
        } else {
            "NotReady"
        });
    }
    if status.is_empty() {
        status.push("Unknown");
    }
    if b(v, "/spec/unschedulable") == Some(true) {
        status.push("SchedulingDisabled");
    }
    let mut roles = BTreeSet::new();
    for (k, val) in obj(v, "/metadata/labels").into_iter().flatten() {
        if let Some(role) = k.strip_prefix("node-role.kubernetes.io/") {
            if !role.is_empty() {
                roles.insert(role.to_string());
            }
        } else if k == "kubernetes.io/role" {
            let r = scalar(Some(val));
            if !r.is_empty() {
                roles.insert(r);
            }
        }
    }
    let roles = if roles.is_empty() {
        "<none>".to_string()
    } else {
        roles.into_iter().collect::<Vec<_>>().join(",")
    };
    let address = |kind: &str| {
        arr(v, "/status/addresses")
            .iter()
            .find(|a| s(a, "/type") == kind)
            .map(|a| s(a, "/address").to_string())
            .unwrap_or_else(|| "<none>".into())
    };
    let info = |field: &str| text(or(s(v, &format!("/status/nodeInfo/{field}")), "<unknown>"));
    Row::of(vec![
        name(v),
        text(status.join(",")),
        text(roles),
        age(v, now),
        text(s(v, "/status/nodeInfo/kubeletVersion")),
        text(address("InternalIP")),
        text(address("ExternalIP")),
        info("osImage"),
        info("kernelVersion"),
        info("containerRuntimeVersion"),
    ])
}

static EVENT: Printer = Printer {
    id: "Event",
    columns: &[
        col(
            "Last Seen",
            "string",
            d!("io.k8s.api.core.v1.Event", "lastTimestamp"),
            0,
        ),
        col("Type", "string", d!("io.k8s.api.core.v1.Event", "type"), 0),
        col(
            "Reason",
            "string",
            d!("io.k8s.api.core.v1.Event", "reason"),
            0,
        ),
        col(
            "Object",
            "string",
            d!("io.k8s.api.core.v1.Event", "involvedObject"),
            0,
        ),
        col(
            "Subobject",
            "string",
            d!("io.k8s.api.core.v1.ObjectReference", "fieldPath"),
            1,
        ),
        col(
            "Source",
            "string",
            d!("io.k8s.api.core.v1.Event", "source"),
            1,
        ),
        col(
            "Message",
            "string",
            d!("io.k8s.api.core.v1.Event", "message"),
            0,
        ),
        col(
            "First Seen",
            "string",
            d!("io.k8s.api.core.v1.Event", "firstTimestamp"),
            1,
        ),
        col(
            "Count",
            "string",
            d!("io.k8s.api.core.v1.Event", "count"),
            1,
        ),
        Column {
            name: "Name",
            kind: "string",
            format: "name",
            doc: Doc::Field(META, "name"),
            priority: 1,
        },
    ],
    row: event_row,
};

/// Core and events.k8s.io Events share kube's internal type, hence one printer; the
/// events.k8s.io field names are read when the core ones are absent.
fn event_row(v: &Value, now: i64) -> Row {
    let pick = |core: &str, events: &str| -> &str { or(s(v, core), s(v, events)) };
    let first_ts = pick("/firstTimestamp", "/deprecatedFirstTimestamp");
    let first = if first_ts.is_empty() {
        since(s(v, "/eventTime"), now)
    } else {
        since(first_ts, now)
    };
    let last_ts = pick("/lastTimestamp", "/deprecatedLastTimestamp");
    let mut last = if last_ts.is_empty() {
        first.clone()
    } else {
        since(last_ts, now)
    };
    let mut count = get(v, "/count")
        .or_else(|| get(v, "/deprecatedCount"))
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if let Some(series) = get(v, "/series").filter(|s| s.is_object()) {
        last = since(s(series, "/lastObservedTime"), now);
        count = i(series, "/count");
    } else if count == 0 {
        count = 1;
    }
    let involved = get(v, "/involvedObject")
        .or_else(|| get(v, "/regarding"))
        .cloned()
        .unwrap_or(Value::Null);
    let kind = s(&involved, "/kind").to_lowercase();
    let target = match s(&involved, "/name") {
        "" => kind,
        n => format!("{kind}/{n}"),
    };
    let component = or(
        pick("/source/component", "/deprecatedSource/component"),
        s(v, "/reportingController"),
    );
    let instance = or(
        pick("/source/host", "/deprecatedSource/host"),
        s(v, "/reportingInstance"),
    );
    let source = if instance.is_empty() {
        component.to_string()
    } else {
        format!("{component}, {instance}")
    };
    Row::of(vec![
        text(last),
        text(s(v, "/type")),
        text(s(v, "/reason")),
        text(target),
        text(s(&involved, "/fieldPath")),
        text(source),
        text(pick("/message", "/note").trim()),
        text(first),
        json!(count),
        name(v),
    ])
}

static NAMESPACE: Printer = Printer {
    id: "Namespace",
    columns: &[
        NAME,
        col("Status", "string", t("The status of the namespace"), 0),
        AGE,
    ],
    row: |v, now| Row::of(vec![name(v), text(s(v, "/status/phase")), age(v, now)]),
};

static SECRET: Printer = Printer {
    id: "Secret",
    columns: &[
        NAME,
        col("Type", "string", d!("io.k8s.api.core.v1.Secret", "type"), 0),
        col("Data", "string", d!("io.k8s.api.core.v1.Secret", "data"), 0),
        AGE,
    ],
    row: |v, now| {
        Row::of(vec![
            name(v),
            text(s(v, "/type")),
            json!(len(v, "/data")),
            age(v, now),
        ])
    },
};

static CONFIG_MAP: Printer = Printer {
    id: "ConfigMap",
    columns: &[
        NAME,
        col(
            "Data",
            "string",
            d!("io.k8s.api.core.v1.ConfigMap", "data"),
            0,
        ),
        AGE,
    ],
    row: |v, now| {
        Row::of(vec![
            name(v),
            json!(len(v, "/data") + len(v, "/binaryData")),
            age(v, now),
        ])
    },
};

static SERVICE_ACCOUNT: Printer = Printer {
    id: "ServiceAccount",
    columns: &[
        NAME,
        col(
            "Secrets",
            "string",
            d!("io.k8s.api.core.v1.ServiceAccount", "secrets"),
            0,
        ),
        AGE,
    ],
    row: |v, now| Row::of(vec![name(v), json!(len(v, "/secrets")), age(v, now)]),
};

static PERSISTENT_VOLUME: Printer = Printer {
    id: "PersistentVolume",
    columns: &[
        NAME,
        col(
            "Capacity",
            "string",
            d!("io.k8s.api.core.v1.PersistentVolumeSpec", "capacity"),
            0,
        ),
        col(
            "Access Modes",
            "string",
            d!("io.k8s.api.core.v1.PersistentVolumeSpec", "accessModes"),
            0,
        ),
        col(
            "Reclaim Policy",
            "string",
            d!(
                "io.k8s.api.core.v1.PersistentVolumeSpec",
                "persistentVolumeReclaimPolicy"
            ),
            0,
        ),
        col(
            "Status",
            "string",
            d!("io.k8s.api.core.v1.PersistentVolumeStatus", "phase"),
            0,
        ),
        col(
            "Claim",
            "string",
            d!("io.k8s.api.core.v1.PersistentVolumeSpec", "claimRef"),
            0,
        ),
        col("StorageClass", "string", t("StorageClass of the pv"), 0),
        col(
            "VolumeAttributesClass",
            "string",
            t("VolumeAttributesClass of the pv"),
            0,
        ),
        col(
            "Reason",
            "string",
            d!("io.k8s.api.core.v1.PersistentVolumeStatus", "reason"),
            0,
        ),
        AGE,
        col(
            "VolumeMode",
            "string",
            d!("io.k8s.api.core.v1.PersistentVolumeSpec", "volumeMode"),
            1,
        ),
    ],
    row: |v, now| {
        let claim = match get(v, "/spec/claimRef").filter(|c| c.is_object()) {
            Some(c) => format!("{}/{}", s(c, "/namespace"), s(c, "/name")),
            None => String::new(),
        };
        Row::of(vec![
            name(v),
            text(scalar(get(v, "/spec/capacity/storage"))),
            text(access_modes(arr(v, "/spec/accessModes"))),
            text(s(v, "/spec/persistentVolumeReclaimPolicy")),
            text(terminating_or(v, s(v, "/status/phase"))),
            text(claim),
            text(storage_class(v)),
            text(or(s(v, "/spec/volumeAttributesClassName"), "<unset>")),
            text(s(v, "/status/reason")),
            age(v, now),
            text(or(s(v, "/spec/volumeMode"), "<unset>")),
        ])
    },
};

fn terminating_or<'a>(v: &Value, phase: &'a str) -> &'a str {
    if s(v, "/metadata/deletionTimestamp").is_empty() {
        phase
    } else {
        "Terminating"
    }
}

/// `spec.storageClassName`, else the beta annotation kube still reads.
fn storage_class(v: &Value) -> String {
    if let Some(a) = get(v, "/metadata/annotations")
        .and_then(|a| a.get("volume.beta.kubernetes.io/storage-class"))
        .and_then(Value::as_str)
    {
        return a.to_string();
    }
    s(v, "/spec/storageClassName").to_string()
}

static PERSISTENT_VOLUME_CLAIM: Printer = Printer {
    id: "PersistentVolumeClaim",
    columns: &[
        NAME,
        col(
            "Status",
            "string",
            d!("io.k8s.api.core.v1.PersistentVolumeClaimStatus", "phase"),
            0,
        ),
        col(
            "Volume",
            "string",
            d!("io.k8s.api.core.v1.PersistentVolumeClaimSpec", "volumeName"),
            0,
        ),
        col(
            "Capacity",
            "string",
            d!("io.k8s.api.core.v1.PersistentVolumeClaimStatus", "capacity"),
            0,
        ),
        col(
            "Access Modes",
            "string",
            d!(
                "io.k8s.api.core.v1.PersistentVolumeClaimStatus",
                "accessModes"
            ),
            0,
        ),
        col("StorageClass", "string", t("StorageClass of the pvc"), 0),
        col(
            "VolumeAttributesClass",
            "string",
            t("VolumeAttributesClass of the pvc"),
            0,
        ),
        AGE,
        col(
            "VolumeMode",
            "string",
            d!("io.k8s.api.core.v1.PersistentVolumeClaimSpec", "volumeMode"),
            1,
        ),
    ],
    row: |v, now| {
        let bound = !s(v, "/spec/volumeName").is_empty();
        let (capacity, modes) = if bound {
            (
                scalar(get(v, "/status/capacity/storage")),
                access_modes(arr(v, "/status/accessModes")),
            )
        } else {
            (String::new(), String::new())
        };
        Row::of(vec![
            name(v),
            text(terminating_or(v, s(v, "/status/phase"))),
            text(s(v, "/spec/volumeName")),
            text(capacity),
            text(modes),
            text(storage_class(v)),
            text(or(s(v, "/spec/volumeAttributesClassName"), "<unset>")),
            age(v, now),
            text(or(s(v, "/spec/volumeMode"), "<unset>")),
        ])
    },
};

static RESOURCE_QUOTA: Printer = Printer {
    id: "ResourceQuota",
    columns: &[
        NAME,
        AGE,
        col(
            "Request",
            "string",
            t("Request represents a minimum amount of cpu/memory that a container may consume."),
            0,
        ),
        col(
            "Limit",
            "string",
            t(
                "Limits control the maximum amount of cpu/memory that a container may use independent of contention on the node.",
            ),
            0,
        ),
    ],
    row: |v, now| {
        let hard: BTreeMap<&String, &Value> =
            obj(v, "/status/hard").into_iter().flatten().collect();
        let used = obj(v, "/status/used");
        let (mut requests, mut limits) = (Vec::new(), Vec::new());
        for (res, h) in hard {
            let u = used.and_then(|u| u.get(res.as_str()));
            let entry = format!("{res}: {}/{}", or(&scalar(u), "0"), scalar(Some(h)));
            if res.split('.').count() > 1 && res.starts_with("limits.") {
                limits.push(entry);
            } else {
                requests.push(entry);
            }
        }
        Row::of(vec![
            name(v),
            age(v, now),
            text(requests.join(", ")),
            text(limits.join(", ")),
        ])
    },
};

// ---------------------------------------------------------------------------------------
// apps/v1

static DEPLOYMENT: Printer = Printer {
    id: "Deployment",
    columns: &[
        NAME,
        col(
            "Ready",
            "string",
            t("Number of the pod with ready state"),
            0,
        ),
        col(
            "Up-to-date",
            "string",
            d!("io.k8s.api.apps.v1.DeploymentStatus", "updatedReplicas"),
            0,
        ),
        col(
            "Available",
            "string",
            d!("io.k8s.api.apps.v1.DeploymentStatus", "availableReplicas"),
            0,
        ),
        AGE,
        CONTAINERS,
        IMAGES,
        col(
            "Selector",
            "string",
            d!("io.k8s.api.apps.v1.DeploymentSpec", "selector"),
            1,
        ),
    ],
    row: |v, now| {
        let (names, images) = containers(v, "/spec/template/spec/containers");
        Row::of(vec![
            name(v),
            text(format!(
                "{}/{}",
                i(v, "/status/readyReplicas"),
                i(v, "/spec/replicas")
            )),
            json!(i(v, "/status/updatedReplicas")),
            json!(i(v, "/status/availableReplicas")),
            age(v, now),
            names,
            images,
            text(selector_string(get(v, "/spec/selector"))),
        ])
    },
};

static REPLICA_SET: Printer = Printer {
    id: "ReplicaSet",
    columns: &[
        NAME,
        col(
            "Desired",
            "integer",
            d!("io.k8s.api.apps.v1.ReplicaSetSpec", "replicas"),
            0,
        ),
        col(
            "Current",
            "integer",
            d!("io.k8s.api.apps.v1.ReplicaSetStatus", "replicas"),
            0,
        ),
        col(
            "Ready",
            "integer",
            d!("io.k8s.api.apps.v1.ReplicaSetStatus", "readyReplicas"),
            0,
        ),
        AGE,
        CONTAINERS,
        IMAGES,
        col(
            "Selector",
            "string",
            d!("io.k8s.api.apps.v1.ReplicaSetSpec", "selector"),
            1,
        ),
    ],
    row: |v, now| {
        let (names, images) = containers(v, "/spec/template/spec/containers");
        Row::of(vec![
            name(v),
            json!(i(v, "/spec/replicas")),
            json!(i(v, "/status/replicas")),
            json!(i(v, "/status/readyReplicas")),
            age(v, now),
            names,
            images,
            text(format_label_selector(get(v, "/spec/selector"))),
        ])
    },
};

static STATEFUL_SET: Printer = Printer {
    id: "StatefulSet",
    columns: &[
        NAME,
        col(
            "Ready",
            "string",
            t("Number of the pod with ready state"),
            0,
        ),
        AGE,
        CONTAINERS,
        IMAGES,
    ],
    row: |v, now| {
        let (names, images) = containers(v, "/spec/template/spec/containers");
        Row::of(vec![
            name(v),
            text(format!(
                "{}/{}",
                i(v, "/status/readyReplicas"),
                i(v, "/spec/replicas")
            )),
            age(v, now),
            names,
            images,
        ])
    },
};

static DAEMON_SET: Printer = Printer {
    id: "DaemonSet",
    columns: &[
        NAME,
        col(
            "Desired",
            "integer",
            d!(
                "io.k8s.api.apps.v1.DaemonSetStatus",
                "desiredNumberScheduled"
            ),
            0,
        ),
        col(
            "Current",
            "integer",
            d!(
                "io.k8s.api.apps.v1.DaemonSetStatus",
                "currentNumberScheduled"
            ),
            0,
        ),
        col(
            "Ready",
            "integer",
            d!("io.k8s.api.apps.v1.DaemonSetStatus", "numberReady"),
            0,
        ),
        col(
            "Up-to-date",
            "integer",
            d!(
                "io.k8s.api.apps.v1.DaemonSetStatus",
                "updatedNumberScheduled"
            ),
            0,
        ),
        col(
            "Available",
            "integer",
            d!("io.k8s.api.apps.v1.DaemonSetStatus", "numberAvailable"),
            0,
        ),
        col(
            "Node Selector",
            "string",
            d!("io.k8s.api.core.v1.PodSpec", "nodeSelector"),
            0,
        ),
        AGE,
        CONTAINERS,
        IMAGES,
        col(
            "Selector",
            "string",
            d!("io.k8s.api.apps.v1.DaemonSetSpec", "selector"),
            1,
        ),
    ],
    row: |v, now| {
        let (names, images) = containers(v, "/spec/template/spec/containers");
        Row::of(vec![
            name(v),
            json!(i(v, "/status/desiredNumberScheduled")),
            json!(i(v, "/status/currentNumberScheduled")),
            json!(i(v, "/status/numberReady")),
            json!(i(v, "/status/updatedNumberScheduled")),
            json!(i(v, "/status/numberAvailable")),
            text(format_labels(obj(v, "/spec/template/spec/nodeSelector"))),
            age(v, now),
            names,
            images,
            text(format_label_selector(get(v, "/spec/selector"))),
        ])
    },
};

static CONTROLLER_REVISION: Printer = Printer {
    id: "ControllerRevision",
    columns: &[
        NAME,
        col("Controller", "string", t("Controller of the object"), 0),
        col(
            "Revision",
            "string",
            d!("io.k8s.api.apps.v1.ControllerRevision", "revision"),
            0,
        ),
        AGE,
    ],
    row: |v, now| {
        let controller = arr(v, "/metadata/ownerReferences")
            .iter()
            .find(|o| b(o, "/controller") == Some(true))
            .map(|o| {
                let group = s(o, "/apiVersion")
                    .rsplit_once('/')
                    .map(|(g, _)| g)
                    .unwrap_or("");
                let kind = s(o, "/kind");
                let gk = if group.is_empty() {
                    kind.to_string()
                } else {
                    format!("{kind}.{group}")
                };
                format!("{}/{}", gk.to_lowercase(), s(o, "/name"))
            })
            .unwrap_or_else(|| "<none>".into());
        Row::of(vec![
            name(v),
            text(controller),
            json!(i(v, "/revision")),
            age(v, now),
        ])
    },
};

// ---------------------------------------------------------------------------------------
// batch/v1

static JOB: Printer = Printer {
    id: "Job",
    columns: &[
        NAME,
        col("Status", "string", t("Status of the job."), 0),
        col(
            "Completions",
            "string",
            d!("io.k8s.api.batch.v1.JobStatus", "succeeded"),
            0,
        ),
        col(
            "Duration",
            "string",
            t("Time required to complete the job."),
            0,
        ),
        AGE,
        CONTAINERS,
        IMAGES,
        col(
            "Selector",
            "string",
            d!("io.k8s.api.batch.v1.JobSpec", "selector"),
            1,
        ),
    ],
    row: job_row,
};

fn job_row(v: &Value, now: i64) -> Row {
    let succeeded = i(v, "/status/succeeded");
    let completions = match get(v, "/spec/completions").and_then(Value::as_i64) {
        Some(c) => format!("{succeeded}/{c}"),
        None => match i(v, "/spec/parallelism") {
            p if p > 1 => format!("{succeeded}/1 of {p}"),
            _ => format!("{succeeded}/1"),
        },
    };
    let start = parse_timestamp(s(v, "/status/startTime"));
    let end = parse_timestamp(s(v, "/status/completionTime"));
    let duration = match (start, end) {
        (None, _) => String::new(),
        (Some(st), None) => human_duration(now - st),
        (Some(st), Some(e)) => human_duration(e - st),
    };
    let conditions = arr(v, "/status/conditions");
    let status = if condition_true(conditions, "Complete") {
        "Complete"
    } else if condition_true(conditions, "Failed") {
        "Failed"
    } else if !s(v, "/metadata/deletionTimestamp").is_empty() {
        "Terminating"
    } else if condition_true(conditions, "Suspended") {
        "Suspended"
    } else if condition_true(conditions, "FailureTarget") {
        "FailureTarget"
    } else {
        "Running"
    };
    let (names, images) = containers(v, "/spec/template/spec/containers");
    Row::of(vec![
        name(v),
        text(status),
        text(completions),
        text(duration),
        age(v, now),
        names,
        images,
        text(format_label_selector(get(v, "/spec/selector"))),
    ])
}

static CRON_JOB: Printer = Printer {
    id: "CronJob",
    columns: &[
        NAME,
        col(
            "Schedule",
            "string",
            d!("io.k8s.api.batch.v1.CronJobSpec", "schedule"),
            0,
        ),
        col(
            "Timezone",
            "string",
            d!("io.k8s.api.batch.v1.CronJobSpec", "timeZone"),
            0,
        ),
        col(
            "Suspend",
            "boolean",
            d!("io.k8s.api.batch.v1.CronJobSpec", "suspend"),
            0,
        ),
        col(
            "Active",
            "integer",
            d!("io.k8s.api.batch.v1.CronJobStatus", "active"),
            0,
        ),
        col(
            "Last Schedule",
            "string",
            d!("io.k8s.api.batch.v1.CronJobStatus", "lastScheduleTime"),
            0,
        ),
        AGE,
        CONTAINERS,
        IMAGES,
        col(
            "Selector",
            "string",
            d!("io.k8s.api.batch.v1.JobSpec", "selector"),
            1,
        ),
    ],
    row: |v, now| {
        let last = match s(v, "/status/lastScheduleTime") {
            "" => "<none>".to_string(),
            ts => since(ts, now),
        };
        let (names, images) = containers(v, "/spec/jobTemplate/spec/template/spec/containers");
        Row::of(vec![
            name(v),
            text(s(v, "/spec/schedule")),
            text(or(s(v, "/spec/timeZone"), "<none>")),
            bool_ptr(b(v, "/spec/suspend")),
            json!(len(v, "/status/active")),
            text(last),
            age(v, now),
            names,
            images,
            text(format_label_selector(get(
                v,
                "/spec/jobTemplate/spec/selector",
            ))),
        ])
    },
};

// ---------------------------------------------------------------------------------------
// autoscaling, policy

static HPA: Printer = Printer {
    id: "HorizontalPodAutoscaler",
    columns: &[
        NAME,
        col(
            "Reference",
            "string",
            d!(
                "io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerSpec",
                "scaleTargetRef"
            ),
            0,
        ),
        col(
            "Targets",
            "string",
            d!(
                "io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerSpec",
                "metrics"
            ),
            0,
        ),
        col(
            "MinPods",
            "string",
            d!(
                "io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerSpec",
                "minReplicas"
            ),
            0,
        ),
        col(
            "MaxPods",
            "string",
            d!(
                "io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerSpec",
                "maxReplicas"
            ),
            0,
        ),
        col(
            "Replicas",
            "string",
            d!(
                "io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerStatus",
                "currentReplicas"
            ),
            0,
        ),
        AGE,
    ],
    row: |v, now| {
        let reference = format!(
            "{}/{}",
            s(v, "/spec/scaleTargetRef/kind"),
            s(v, "/spec/scaleTargetRef/name")
        );
        let min = match get(v, "/spec/minReplicas").and_then(Value::as_i64) {
            Some(m) => m.to_string(),
            None => "<unset>".into(),
        };
        Row::of(vec![
            name(v),
            text(reference),
            text(hpa_targets(v)),
            text(min),
            json!(i(v, "/spec/maxReplicas")),
            json!(i(v, "/status/currentReplicas")),
            age(v, now),
        ])
    },
};

/// The Targets cell of an HPA, autoscaling/v2 or v1 (whose CPU target kube converts to a
/// Resource metric).
fn hpa_targets(v: &Value) -> String {
    let v1_target = get(v, "/spec/targetCPUUtilizationPercentage").and_then(Value::as_i64);
    if let Some(target) = v1_target.filter(|_| get(v, "/spec/metrics").is_none()) {
        let current =
            match get(v, "/status/currentCPUUtilizationPercentage").and_then(Value::as_i64) {
                Some(c) => format!("{c}%"),
                None => "<unknown>".into(),
            };
        return format!("cpu: {current}/{target}%");
    }
    let specs = arr(v, "/spec/metrics");
    if specs.is_empty() {
        return "<none>".into();
    }
    let statuses = arr(v, "/status/currentMetrics");
    const MAX: usize = 2;
    let mut list = Vec::new();
    for (idx, spec) in specs.iter().enumerate() {
        let st = statuses.get(idx);
        let quantity = |p: &str| st.map(|x| scalar(get(x, p))).filter(|x| !x.is_empty());
        let unknown = || "<unknown>".to_string();
        let entry = match s(spec, "/type") {
            source @ ("External" | "Object") => {
                let field = if source == "External" {
                    "external"
                } else {
                    "object"
                };
                let target = format!("/{field}/target");
                if let Some(avg) = get(spec, &format!("{target}/averageValue")) {
                    let cur =
                        quantity(&format!("/{field}/current/averageValue")).unwrap_or_else(unknown);
                    format!("{cur}/{} (avg)", scalar(Some(avg)))
                } else {
                    let cur = quantity(&format!("/{field}/current/value")).unwrap_or_else(unknown);
                    format!("{cur}/{}", scalar(get(spec, &format!("{target}/value"))))
                }
            }
            "Pods" => {
                let cur = quantity("/pods/current/averageValue").unwrap_or_else(unknown);
                format!("{cur}/{}", scalar(get(spec, "/pods/target/averageValue")))
            }
            source @ ("Resource" | "ContainerResource") => {
                let field = if source == "Resource" {
                    "resource"
                } else {
                    "containerResource"
                };
                let rname = s(spec, &format!("/{field}/name"));
                if let Some(avg) = get(spec, &format!("/{field}/target/averageValue")) {
                    let cur =
                        quantity(&format!("/{field}/current/averageValue")).unwrap_or_else(unknown);
                    format!("{rname}: {cur}/{}", scalar(Some(avg)))
                } else {
                    let cur = st
                        .and_then(|x| get(x, &format!("/{field}/current/averageUtilization")))
                        .and_then(Value::as_i64)
                        .map(|c| format!("{c}%"))
                        .unwrap_or_else(unknown);
                    let target = get(spec, &format!("/{field}/target/averageUtilization"))
                        .and_then(Value::as_i64)
                        .map(|t| format!("{t}%"))
                        .unwrap_or_else(|| "<auto>".into());
                    format!("{rname}: {cur}/{target}")
                }
            }
            _ => "<unknown type>".into(),
        };
        list.push(entry);
    }
    let count = list.len();
    if count > MAX {
        list.truncate(MAX);
        return format!("{} + {} more...", list.join(", "), count - MAX);
    }
    list.join(", ")
}

static PDB: Printer = Printer {
    id: "PodDisruptionBudget",
    columns: &[
        NAME,
        col(
            "Min Available",
            "string",
            t("The minimum number of pods that must be available."),
            0,
        ),
        col(
            "Max Unavailable",
            "string",
            t("The maximum number of pods that may be unavailable."),
            0,
        ),
        col(
            "Allowed Disruptions",
            "integer",
            t("Calculated number of pods that may be disrupted at this time."),
            0,
        ),
        AGE,
    ],
    row: |v, now| {
        let int_or_na = |p: &str| match get(v, p) {
            None | Some(Value::Null) => "N/A".to_string(),
            x => scalar(x),
        };
        Row::of(vec![
            name(v),
            text(int_or_na("/spec/minAvailable")),
            text(int_or_na("/spec/maxUnavailable")),
            json!(i(v, "/status/disruptionsAllowed")),
            age(v, now),
        ])
    },
};

// ---------------------------------------------------------------------------------------
// networking, discovery, coordination

static INGRESS: Printer = Printer {
    id: "Ingress",
    columns: &[
        NAME,
        col(
            "Class",
            "string",
            t(
                "The name of the IngressClass resource that should be used for additional configuration",
            ),
            0,
        ),
        col(
            "Hosts",
            "string",
            t("Hosts that incoming requests are matched against before the ingress rule"),
            0,
        ),
        col(
            "Address",
            "string",
            t("Address is a list containing ingress points for the load-balancer"),
            0,
        ),
        col(
            "Ports",
            "string",
            t("Ports of TLS configurations that open"),
            0,
        ),
        AGE,
    ],
    row: |v, now| {
        let rules = arr(v, "/spec/rules");
        const MAX: usize = 3;
        let hosts: Vec<String> = rules
            .iter()
            .take(MAX)
            .map(|r| s(r, "/host"))
            .filter(|h| !h.is_empty())
            .map(str::to_string)
            .collect();
        let hosts = if hosts.is_empty() {
            "*".to_string()
        } else if rules.len() > MAX {
            format!("{} + {} more...", hosts.join(","), rules.len() - MAX)
        } else {
            hosts.join(",")
        };
        let mut seen = BTreeSet::new();
        let mut address = Vec::new();
        for ing in arr(v, "/status/loadBalancer/ingress") {
            let a = or(s(ing, "/ip"), s(ing, "/hostname"));
            if !a.is_empty() && seen.insert(a) {
                address.push(a);
            }
        }
        let ports = if arr(v, "/spec/tls").is_empty() {
            "80"
        } else {
            "80, 443"
        };
        Row::of(vec![
            name(v),
            text(or(s(v, "/spec/ingressClassName"), "<none>")),
            text(hosts),
            text(address.join(",")),
            text(ports),
            age(v, now),
        ])
    },
};

static INGRESS_CLASS: Printer = Printer {
    id: "IngressClass",
    columns: &[
        NAME,
        col(
            "Controller",
            "string",
            t("Controller that is responsible for handling this class"),
            0,
        ),
        col(
            "Parameters",
            "string",
            t("A reference to a resource with additional parameters"),
            0,
        ),
        AGE,
    ],
    row: |v, now| {
        let params = match get(v, "/spec/parameters").filter(|p| p.is_object()) {
            None => "<none>".to_string(),
            Some(p) => {
                let mut out = s(p, "/kind").to_string();
                if let Some(g) = get(p, "/apiGroup").and_then(Value::as_str) {
                    out = format!("{out}.{g}");
                }
                format!("{out}/{}", s(p, "/name"))
            }
        };
        Row::of(vec![
            name(v),
            text(s(v, "/spec/controller")),
            text(params),
            age(v, now),
        ])
    },
};

static NETWORK_POLICY: Printer = Printer {
    id: "NetworkPolicy",
    columns: &[
        NAME,
        col(
            "Pod-Selector",
            "string",
            d!("io.k8s.api.networking.v1.NetworkPolicySpec", "podSelector"),
            0,
        ),
        AGE,
    ],
    row: |v, now| {
        Row::of(vec![
            name(v),
            text(format_label_selector(get(v, "/spec/podSelector"))),
            age(v, now),
        ])
    },
};

static ENDPOINT_SLICE: Printer = Printer {
    id: "EndpointSlice",
    columns: &[
        NAME,
        col(
            "AddressType",
            "string",
            d!("io.k8s.api.discovery.v1.EndpointSlice", "addressType"),
            0,
        ),
        col(
            "Ports",
            "string",
            d!("io.k8s.api.discovery.v1.EndpointSlice", "ports"),
            0,
        ),
        col(
            "Endpoints",
            "string",
            d!("io.k8s.api.discovery.v1.EndpointSlice", "endpoints"),
            0,
        ),
        AGE,
    ],
    row: |v, now| {
        const MAX: usize = 3;
        let ports = arr(v, "/ports");
        let port_list: Vec<String> = ports
            .iter()
            .take(MAX)
            .map(|p| match get(p, "/port").and_then(Value::as_i64) {
                Some(n) => n.to_string(),
                None => match get(p, "/name").and_then(Value::as_str) {
                    Some(n) => n.to_string(),
                    None => "*".into(),
                },
            })
            .collect();
        let addrs: Vec<&str> = arr(v, "/endpoints")
            .iter()
            .flat_map(|e| arr(e, "/addresses"))
            .filter_map(Value::as_str)
            .collect();
        let addr_list: Vec<String> = addrs.iter().take(MAX).map(|a| a.to_string()).collect();
        Row::of(vec![
            name(v),
            text(s(v, "/addressType")),
            text(list_with_more(&port_list, ports.len(), MAX, "<unset>")),
            text(list_with_more(&addr_list, addrs.len(), MAX, "<unset>")),
            age(v, now),
        ])
    },
};

static LEASE: Printer = Printer {
    id: "Lease",
    columns: &[
        NAME,
        col(
            "Holder",
            "string",
            d!("io.k8s.api.coordination.v1.LeaseSpec", "holderIdentity"),
            0,
        ),
        AGE,
    ],
    row: |v, now| {
        Row::of(vec![
            name(v),
            text(s(v, "/spec/holderIdentity")),
            age(v, now),
        ])
    },
};

// ---------------------------------------------------------------------------------------
// rbac, scheduling, storage, node, certificates

static ROLE_BINDING: Printer = Printer {
    id: "RoleBinding",
    columns: &[
        NAME,
        col(
            "Role",
            "string",
            d!("io.k8s.api.rbac.v1.RoleBinding", "roleRef"),
            0,
        ),
        AGE,
        col("Users", "string", t("Users in the roleBinding"), 1),
        col("Groups", "string", t("Groups in the roleBinding"), 1),
        col(
            "ServiceAccounts",
            "string",
            t("ServiceAccounts in the roleBinding"),
            1,
        ),
    ],
    row: binding_row,
};

static CLUSTER_ROLE_BINDING: Printer = Printer {
    id: "ClusterRoleBinding",
    columns: &[
        NAME,
        col(
            "Role",
            "string",
            d!("io.k8s.api.rbac.v1.ClusterRoleBinding", "roleRef"),
            0,
        ),
        AGE,
        col("Users", "string", t("Users in the clusterRoleBinding"), 1),
        col("Groups", "string", t("Groups in the clusterRoleBinding"), 1),
        col(
            "ServiceAccounts",
            "string",
            t("ServiceAccounts in the clusterRoleBinding"),
            1,
        ),
    ],
    row: binding_row,
};

fn binding_row(v: &Value, now: i64) -> Row {
    let (mut users, mut groups, mut sas) = (Vec::new(), Vec::new(), Vec::new());
    for sub in arr(v, "/subjects") {
        let n = s(sub, "/name");
        match s(sub, "/kind") {
            "User" => users.push(n.to_string()),
            "Group" => groups.push(n.to_string()),
            "ServiceAccount" => sas.push(format!("{}:{n}", s(sub, "/namespace"))),
            _ => {}
        }
    }
    Row::of(vec![
        name(v),
        text(format!(
            "{}/{}",
            s(v, "/roleRef/kind"),
            s(v, "/roleRef/name")
        )),
        age(v, now),
        text(users.join(", ")),
        text(groups.join(", ")),
        text(sas.join(", ")),
    ])
}

static PRIORITY_CLASS: Printer = Printer {
    id: "PriorityClass",
    columns: &[
        NAME,
        col(
            "Value",
            "integer",
            d!("io.k8s.api.scheduling.v1.PriorityClass", "value"),
            0,
        ),
        col(
            "Global-Default",
            "boolean",
            d!("io.k8s.api.scheduling.v1.PriorityClass", "globalDefault"),
            0,
        ),
        AGE,
        col(
            "PreemptionPolicy",
            "string",
            d!("io.k8s.api.scheduling.v1.PriorityClass", "preemptionPolicy"),
            0,
        ),
    ],
    row: |v, now| {
        Row::of(vec![
            name(v),
            json!(i(v, "/value")),
            json!(b(v, "/globalDefault").unwrap_or(false)),
            age(v, now),
            text(s(v, "/preemptionPolicy")),
        ])
    },
};

static STORAGE_CLASS: Printer = Printer {
    id: "StorageClass",
    columns: &[
        NAME,
        col(
            "Provisioner",
            "string",
            d!("io.k8s.api.storage.v1.StorageClass", "provisioner"),
            0,
        ),
        col(
            "ReclaimPolicy",
            "string",
            d!("io.k8s.api.storage.v1.StorageClass", "reclaimPolicy"),
            0,
        ),
        col(
            "VolumeBindingMode",
            "string",
            d!("io.k8s.api.storage.v1.StorageClass", "volumeBindingMode"),
            0,
        ),
        col(
            "AllowVolumeExpansion",
            "string",
            d!("io.k8s.api.storage.v1.StorageClass", "allowVolumeExpansion"),
            0,
        ),
        AGE,
    ],
    row: |v, now| {
        let annotation = |k: &str| {
            get(v, "/metadata/annotations")
                .and_then(|a| a.get(k))
                .and_then(Value::as_str)
                == Some("true")
        };
        let mut n = s(v, "/metadata/name").to_string();
        if annotation("storageclass.kubernetes.io/is-default-class")
            || annotation("storageclass.beta.kubernetes.io/is-default-class")
        {
            n.push_str(" (default)");
        }
        Row::of(vec![
            text(n),
            text(s(v, "/provisioner")),
            text(or(s(v, "/reclaimPolicy"), "Delete")),
            text(or(s(v, "/volumeBindingMode"), "Immediate")),
            json!(b(v, "/allowVolumeExpansion").unwrap_or(false)),
            age(v, now),
        ])
    },
};

static VOLUME_ATTACHMENT: Printer = Printer {
    id: "VolumeAttachment",
    columns: &[
        NAME,
        Column {
            name: "Attacher",
            kind: "string",
            format: "name",
            doc: d!("io.k8s.api.storage.v1.VolumeAttachmentSpec", "attacher"),
            priority: 0,
        },
        col(
            "PV",
            "string",
            d!(
                "io.k8s.api.storage.v1.VolumeAttachmentSource",
                "persistentVolumeName"
            ),
            0,
        ),
        col(
            "Node",
            "string",
            d!("io.k8s.api.storage.v1.VolumeAttachmentSpec", "nodeName"),
            0,
        ),
        col(
            "Attached",
            "boolean",
            d!("io.k8s.api.storage.v1.VolumeAttachmentStatus", "attached"),
            0,
        ),
        AGE,
    ],
    row: |v, now| {
        Row::of(vec![
            name(v),
            text(s(v, "/spec/attacher")),
            text(s(v, "/spec/source/persistentVolumeName")),
            text(s(v, "/spec/nodeName")),
            json!(b(v, "/status/attached").unwrap_or(false)),
            age(v, now),
        ])
    },
};

static CSI_DRIVER: Printer = Printer {
    id: "CSIDriver",
    columns: &[
        NAME,
        col(
            "AttachRequired",
            "boolean",
            d!("io.k8s.api.storage.v1.CSIDriverSpec", "attachRequired"),
            0,
        ),
        col(
            "PodInfoOnMount",
            "boolean",
            d!("io.k8s.api.storage.v1.CSIDriverSpec", "podInfoOnMount"),
            0,
        ),
        col(
            "StorageCapacity",
            "boolean",
            d!("io.k8s.api.storage.v1.CSIDriverSpec", "storageCapacity"),
            0,
        ),
        col(
            "TokenRequests",
            "string",
            d!("io.k8s.api.storage.v1.CSIDriverSpec", "tokenRequests"),
            0,
        ),
        col(
            "RequiresRepublish",
            "boolean",
            d!("io.k8s.api.storage.v1.CSIDriverSpec", "requiresRepublish"),
            0,
        ),
        col(
            "Modes",
            "string",
            d!(
                "io.k8s.api.storage.v1.CSIDriverSpec",
                "volumeLifecycleModes"
            ),
            0,
        ),
        AGE,
    ],
    row: |v, now| {
        let modes: Vec<&str> = arr(v, "/spec/volumeLifecycleModes")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let tokens = match get(v, "/spec/tokenRequests").and_then(Value::as_array) {
            None => "<unset>".to_string(),
            Some(t) => t
                .iter()
                .map(|x| s(x, "/audience"))
                .collect::<Vec<_>>()
                .join(","),
        };
        Row::of(vec![
            name(v),
            json!(b(v, "/spec/attachRequired").unwrap_or(true)),
            json!(b(v, "/spec/podInfoOnMount").unwrap_or(false)),
            json!(b(v, "/spec/storageCapacity").unwrap_or(false)),
            text(tokens),
            json!(b(v, "/spec/requiresRepublish").unwrap_or(false)),
            text(if modes.is_empty() {
                "<none>".to_string()
            } else {
                modes.join(",")
            }),
            age(v, now),
        ])
    },
};

static CSI_NODE: Printer = Printer {
    id: "CSINode",
    columns: &[
        NAME,
        col(
            "Drivers",
            "integer",
            t("Drivers indicates the number of CSI drivers registered on the node"),
            0,
        ),
        AGE,
    ],
    row: |v, now| Row::of(vec![name(v), json!(len(v, "/spec/drivers")), age(v, now)]),
};

static RUNTIME_CLASS: Printer = Printer {
    id: "RuntimeClass",
    columns: &[
        NAME,
        // kube-apiserver looks this description up on ObjectMeta, where it is empty.
        col("Handler", "string", t(""), 0),
        AGE,
    ],
    row: |v, now| Row::of(vec![name(v), text(s(v, "/handler")), age(v, now)]),
};

static CSR: Printer = Printer {
    id: "CertificateSigningRequest",
    columns: &[
        NAME,
        AGE,
        col(
            "SignerName",
            "string",
            d!(
                "io.k8s.api.certificates.v1.CertificateSigningRequestSpec",
                "signerName"
            ),
            0,
        ),
        col(
            "Requestor",
            "string",
            d!(
                "io.k8s.api.certificates.v1.CertificateSigningRequestSpec",
                "request"
            ),
            0,
        ),
        col(
            "RequestedDuration",
            "string",
            d!(
                "io.k8s.api.certificates.v1.CertificateSigningRequestSpec",
                "expirationSeconds"
            ),
            0,
        ),
        col(
            "Condition",
            "string",
            d!(
                "io.k8s.api.certificates.v1.CertificateSigningRequestStatus",
                "conditions"
            ),
            0,
        ),
    ],
    row: |v, now| {
        let has = |kind: &str| {
            arr(v, "/status/conditions")
                .iter()
                .any(|c| s(c, "/type") == kind)
        };
        let mut status = if has("Denied") {
            "Denied".to_string()
        } else if has("Approved") {
            "Approved".to_string()
        } else {
            "Pending".to_string()
        };
        if has("Failed") {
            status.push_str(",Failed");
        }
        if !s(v, "/status/certificate").is_empty() {
            status.push_str(",Issued");
        }
        let duration = match get(v, "/spec/expirationSeconds").and_then(Value::as_i64) {
            Some(secs) => human_duration(secs),
            None => "<none>".into(),
        };
        Row::of(vec![
            name(v),
            age(v, now),
            text(or(s(v, "/spec/signerName"), "<none>")),
            text(s(v, "/spec/username")),
            text(duration),
            text(status),
        ])
    },
};

#[cfg(test)]
mod tests;

// ---------------------------------------------------------------------------------------
// custom resources with additionalPrinterColumns

/// The `columnDefinitions` of a custom resource with `additionalPrinterColumns`: `Name`,
/// then each declared column, as apiextensions-apiserver publishes them.
pub fn custom_column_definitions(printer_columns: &[Value]) -> Value {
    let mut defs = vec![serde_json::json!({
        "name": "Name", "type": "string", "format": "name",
        "description": "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names",
        "priority": 0,
    })];
    for c in printer_columns {
        let field = |k: &str| c.get(k).cloned().unwrap_or(Value::String(String::new()));
        defs.push(serde_json::json!({
            "name": field("name"),
            "type": field("type"),
            "format": field("format"),
            "description": field("description"),
            "priority": c.get("priority").and_then(Value::as_i64).unwrap_or(0),
        }));
    }
    Value::Array(defs)
}

/// The value at a printer column's `jsonPath` (`.spec.x`, `.status.list[0].y`): the subset
/// of JSONPath CRDs use for columns. `None` when the path leads nowhere.
pub fn json_path<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    let path = path.trim().trim_start_matches('{').trim_end_matches('}');
    let mut cur = obj;
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (field, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !field.is_empty() {
            cur = cur.get(field)?;
        }
        while let Some(end) = rest.find(']') {
            let index = rest.get(1..end)?.trim_matches(['\'', '"']);
            cur = match index.parse::<usize>() {
                Ok(i) => cur.get(i)?,
                Err(_) => cur.get(index)?,
            };
            rest = &rest[end + 1..];
        }
    }
    Some(cur)
}

/// A custom resource's row: its name, then each column's value (a `date` column as an age,
/// as apiextensions-apiserver converts it; a missing value as null).
pub fn custom_row(printer_columns: &[Value], obj: &Value, now: i64) -> Vec<Value> {
    let mut cells = vec![name(obj)];
    for c in printer_columns {
        let path = c.get("jsonPath").and_then(Value::as_str).unwrap_or("");
        let ty = c.get("type").and_then(Value::as_str).unwrap_or("string");
        let cell = match json_path(obj, path) {
            None | Some(Value::Null) => Value::Null,
            Some(Value::String(ts)) if ty == "date" => Value::String(since(ts, now)),
            Some(v @ (Value::Array(_) | Value::Object(_))) => {
                Value::String(serde_json::to_string(v).unwrap_or_default())
            }
            Some(v) => v.clone(),
        };
        cells.push(cell);
    }
    cells
}

#[cfg(test)]
mod custom_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn custom_printer_columns_follow_their_json_paths() {
        let cols = vec![
            json!({"name": "Spec", "type": "string", "jsonPath": ".spec.cronSpec"}),
            json!({"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"}),
            json!({"name": "First", "type": "string", "jsonPath": ".status.items[0].name"}),
            json!({"name": "Missing", "type": "string", "jsonPath": ".status.nope"}),
            json!({"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}),
        ];
        let obj = json!({"metadata": {"name": "c", "creationTimestamp": "2026-11-22T10:00:00Z"},
            "spec": {"cronSpec": "* * * * */5", "replicas": 3},
            "status": {"items": [{"name": "a"}, {"name": "b"}]}});
        let now = parse_timestamp("2026-11-22T10:05:00Z").unwrap_or(0);
        assert_eq!(
            custom_row(&cols, &obj, now),
            vec![
                json!("c"),
                json!("* * * * */5"),
                json!(3),
                json!("a"),
                Value::Null,
                json!("5m")
            ]
        );
        let defs = custom_column_definitions(&cols);
        assert_eq!(defs[0]["name"], "Name");
        assert_eq!(defs[2]["type"], "integer");
        assert_eq!(defs.as_array().map(Vec::len), Some(6));
    }
}
