//! Resource strategies: what the server sets, keeps and checks on create and update,
//! generic over the registry entry. A resource's special cases (a pod's initial status)
//! live here as data-driven branches, never in a handler.

use logbook_schema::defaults;
use logbook_schema::registry::ResourceInfo;
use logbook_schema::structural;
use logbook_schema::validate::{Cause, validate_object_meta};
use logbook_schema::validate_kinds;
use rand::Rng;
use serde_json::{Map, Value, json};

use crate::error::{ApiError, ApiResult};
use crate::object::meta_mut;

/// Characters kube uses for generated name suffixes (no vowels, no confusable digits).
const NAME_SUFFIX_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
/// Length of the random suffix appended to `generateName`.
const NAME_SUFFIX_CHARS: usize = 5;
/// `generateName` is cut to this many characters before the suffix (63 - 5).
const GENERATE_NAME_BASE_CHARS_MAX: usize = 58;

pub fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Checks `kind`/`apiVersion` of a body against the endpoint and fills them when absent.
pub fn check_type(info: &ResourceInfo, obj: &mut Map<String, Value>) -> ApiResult<()> {
    let api_version = info.api_version();
    match obj.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => {
            obj.insert("apiVersion".into(), Value::String(api_version));
        }
        Some(v) if v == api_version => {}
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({api_version})"
            )));
        }
    }
    match obj.get("kind").and_then(Value::as_str) {
        None | Some("") => {
            obj.insert("kind".into(), Value::String(info.kind.clone()));
        }
        Some(k) if k == info.kind => {}
        Some(k) => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                info.kind
            )));
        }
    }
    if !obj.get("metadata").is_none_or(Value::is_object) {
        return Err(ApiError::bad_request(
            "metadata must be an object (json: cannot unmarshal into Go struct field .metadata of type v1.ObjectMeta)",
        ));
    }
    Ok(())
}

/// Decodes the object into its typed form and back: type errors become 400, unknown
/// fields are dropped (as kube-apiserver's decoder does).
pub fn typed_roundtrip(
    info: &ResourceInfo,
    obj: Map<String, Value>,
) -> ApiResult<Map<String, Value>> {
    let Some(check) = info.check else {
        return Ok(obj);
    };
    let v = Value::Object(obj);
    match check(&v) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::bad_request("the object is not a JSON object")),
        Err(msg) => Err(ApiError::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: {msg}",
            info.kind, info.version, info.kind
        ))),
    }
}

/// Fills in what kube-apiserver defaults when a client leaves it out (see
/// `logbook_schema::defaults`). Runs on every write of a whole object, right after the typed
/// decode, as kube-apiserver's decoder does.
pub fn default(info: &ResourceInfo, obj: &mut Map<String, Value>) {
    defaults::apply(info, obj);
    if let Some(schema) = info.custom.as_ref().and_then(|c| c.schema.as_ref()) {
        let mut v = Value::Object(std::mem::take(obj));
        structural::default(schema, &mut v);
        if let Value::Object(m) = v {
            *obj = m;
        }
    }
}

/// Drops the fields of a custom object its schema does not declare (kube's pruning),
/// returning their paths for `fieldValidation`.
pub fn prune_custom(info: &ResourceInfo, obj: &mut Map<String, Value>) -> Vec<String> {
    let Some(schema) = info.custom.as_ref().and_then(|c| c.schema.as_ref()) else {
        return Vec::new();
    };
    let mut v = Value::Object(std::mem::take(obj));
    let pruned = structural::prune(schema, &mut v);
    if let Value::Object(m) = v {
        *obj = m;
    }
    pruned
}

/// Validates an object on its own, as created or as the result of an update: metadata
/// (names, labels, annotations) and the kind's own rules. A 422 lists every cause; the
/// `Ok` value holds warnings for `Warning` headers.
pub fn validate(info: &ResourceInfo, obj: &Map<String, Value>) -> ApiResult<Vec<String>> {
    let v = Value::Object(obj.clone());
    let mut causes: Vec<Cause> = validate_object_meta(info, &v);
    let findings = validate_kinds::validate(info, &v);
    causes.extend(findings.causes);
    causes.extend(validate_crd(info, &v));
    causes.extend(validate_custom(info, &v, None));
    invalid_unless_empty(info, obj, causes)?;
    Ok(findings.warnings)
}

/// A custom object against its CRD's structural schema and `x-kubernetes-validations`
/// (`old` for transition rules).
fn validate_custom(info: &ResourceInfo, obj: &Value, old: Option<&Value>) -> Vec<Cause> {
    let Some(schema) = info.custom.as_ref().and_then(|c| c.schema.as_ref()) else {
        return Vec::new();
    };
    let mut causes = structural::validate(schema, obj);
    // As kube-apiserver: rules are not evaluated over values of the wrong type.
    if causes.iter().any(|c| c.reason == "FieldValueTypeInvalid") {
        causes.push(Cause {
            reason: "FieldValueInvalid".into(),
            message: "Invalid value: \"null\": some validation rules were not checked because the object was invalid; correct the existing errors to complete validation".into(),
            field: "<nil>".into(),
        });
        return causes;
    }
    causes.extend(structural::validate_cel(schema, obj, old));
    causes
}

/// A CustomResourceDefinition: its name, a schema per version, each structural.
fn validate_crd(info: &ResourceInfo, crd: &Value) -> Vec<Cause> {
    if info.group != "apiextensions.k8s.io" || info.plural != "customresourcedefinitions" {
        return Vec::new();
    }
    let mut causes = Vec::new();
    let spec = &crd["spec"];
    let (plural, group) = (
        spec["names"]["plural"].as_str().unwrap_or(""),
        spec["group"].as_str().unwrap_or(""),
    );
    let name = crd["metadata"]["name"].as_str().unwrap_or("");
    if name != format!("{plural}.{group}") {
        causes.push(Cause {
            reason: "FieldValueInvalid".into(),
            message: format!(
                "Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"
            ),
            field: "metadata.name".into(),
        });
    }
    let versions = spec["versions"].as_array().cloned().unwrap_or_default();
    if versions.is_empty() {
        causes.push(Cause {
            reason: "FieldValueInvalid".into(),
            message: "Invalid value: []apiextensions.CustomResourceDefinitionVersion(nil): must have exactly one version marked as storage version".into(),
            field: "spec.versions".into(),
        });
    } else if versions.iter().filter(|v| v["storage"] == true).count() != 1 {
        causes.push(Cause {
            reason: "FieldValueInvalid".into(),
            message: "Invalid value: ...: must have exactly one version marked as storage version"
                .into(),
            field: "spec.versions".into(),
        });
    }
    for (i, v) in versions.iter().enumerate() {
        let prefix = format!("spec.versions[{i}].schema.openAPIV3Schema");
        match v.get("schema").and_then(|x| x.get("openAPIV3Schema")) {
            Some(schema) => causes.extend(structural::check_structural(schema, &prefix)),
            None => causes.push(Cause {
                reason: "FieldValueRequired".into(),
                message: "Required value: schemas are required".into(),
                field: prefix,
            }),
        }
    }
    causes
}

/// Validates an update: the new object on its own ([`validate`]) and the change from the
/// stored one (immutable fields), reported together.
pub fn validate_update(
    info: &ResourceInfo,
    old: &Map<String, Value>,
    new: &Map<String, Value>,
) -> ApiResult<Vec<String>> {
    let (old_v, new_v) = (Value::Object(old.clone()), Value::Object(new.clone()));
    let mut causes: Vec<Cause> = validate_object_meta(info, &new_v);
    let findings = validate_kinds::validate(info, &new_v);
    causes.extend(findings.causes);
    causes.extend(validate_kinds::validate_update(info, &old_v, &new_v));
    causes.extend(validate_crd(info, &new_v));
    causes.extend(validate_custom(info, &new_v, Some(&old_v)));
    invalid_unless_empty(info, new, causes)?;
    Ok(findings.warnings)
}

/// Validates a write through `/status`: only metadata, since the rest of the object is the
/// stored one and a status writer must not be refused for a spec it did not write.
pub fn validate_status(info: &ResourceInfo, obj: &Map<String, Value>) -> ApiResult<()> {
    let causes = validate_object_meta(info, &Value::Object(obj.clone()));
    invalid_unless_empty(info, obj, causes)
}

fn invalid_unless_empty(
    info: &ResourceInfo,
    obj: &Map<String, Value>,
    causes: Vec<Cause>,
) -> ApiResult<()> {
    if causes.is_empty() {
        return Ok(());
    }
    let name = crate::object::meta_str(obj, "name").unwrap_or_default();
    Err(ApiError::invalid(&info.kind, &info.group, name, causes))
}

/// Creates retried with a new suffix when a generated name is taken (kube-apiserver's
/// RetryGenerateName: 7).
pub const GENERATE_NAME_RETRIES_MAX: u32 = 7;

/// Fills `metadata.name` from `generateName` when the name is empty; returns whether it did.
pub fn generate_name(obj: &mut Map<String, Value>) -> bool {
    let meta = meta_mut(obj);
    let has_name = meta
        .get("name")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    if has_name {
        return false;
    }
    let Some(base) = meta
        .get("generateName")
        .and_then(Value::as_str)
        .filter(|g| !g.is_empty())
    else {
        return false;
    };
    let base: String = base.chars().take(GENERATE_NAME_BASE_CHARS_MAX).collect();
    let mut rng = rand::rng();
    let suffix: String = (0..NAME_SUFFIX_CHARS)
        .map(|_| NAME_SUFFIX_ALPHABET[rng.random_range(0..NAME_SUFFIX_ALPHABET.len())] as char)
        .collect();
    meta.insert("name".into(), Value::String(format!("{base}{suffix}")));
    true
}

/// What the server sets on create: uid, creationTimestamp, generation, the initial status,
/// a Job's generated selector.
pub fn prepare_create(info: &ResourceInfo, obj: &mut Map<String, Value>, uid: &str) {
    {
        let meta = meta_mut(obj);
        meta.insert("uid".into(), Value::String(uid.to_string()));
        meta.insert("creationTimestamp".into(), Value::String(now_rfc3339()));
        meta.remove("resourceVersion");
        meta.remove("deletionTimestamp");
        meta.remove("deletionGracePeriodSeconds");
        meta.remove("selfLink");
        if info.has_spec_generation {
            meta.insert("generation".into(), json!(1));
        } else {
            meta.remove("generation");
        }
        if !info.namespaced {
            meta.remove("namespace");
        }
    }
    if info.status_subresource {
        obj.remove("status");
    }
    match (info.group.as_str(), info.plural.as_str()) {
        ("", "pods") => {
            let qos = pod_qos_class(obj.get("spec"));
            obj.insert(
                "status".into(),
                json!({"phase": "Pending", "qosClass": qos}),
            );
        }
        ("", "namespaces") => {
            obj.insert("status".into(), json!({"phase": "Active"}));
        }
        ("batch", "jobs") => defaults::job_on_create(obj, uid),
        ("apiextensions.k8s.io", "customresourcedefinitions") => {
            // As apiextensions-apiserver: a new CRD's status has its (empty) accepted names
            // and its storage version; the CRD controller adds the conditions.
            let storage: Vec<Value> = obj
                .get("spec")
                .and_then(|s| s.get("versions"))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
                .filter_map(|v| v.get("name").cloned())
                .collect();
            obj.insert(
                "status".into(),
                json!({"acceptedNames": {"kind": "", "plural": ""}, "storedVersions": storage}),
            );
        }
        _ => {}
    }
}

/// The QoS class kube assigns a pod from its containers' requests and limits.
fn pod_qos_class(spec: Option<&Value>) -> &'static str {
    let containers = spec
        .and_then(|s| s.get("containers"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut any = false;
    let mut guaranteed = !containers.is_empty();
    for c in &containers {
        let requests = c.pointer("/resources/requests").and_then(Value::as_object);
        let limits = c.pointer("/resources/limits").and_then(Value::as_object);
        if requests.is_some_and(|r| !r.is_empty()) || limits.is_some_and(|l| !l.is_empty()) {
            any = true;
        }
        for res in ["cpu", "memory"] {
            let l = limits.and_then(|l| l.get(res));
            let r = requests.and_then(|r| r.get(res)).or(l);
            if l.is_none() || r != l {
                guaranteed = false;
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// What an update keeps from the stored object: identity, server-owned metadata, the half
/// of the object owned by the other endpoint (status via the main endpoint, everything but
/// status via `/status`), and a Service's allocated cluster IPs and node ports when the
/// client left them out. Bumps `generation` when the spec changed.
pub fn prepare_update(
    info: &ResourceInfo,
    old: &Map<String, Value>,
    mut new: Map<String, Value>,
    status_endpoint: bool,
) -> Map<String, Value> {
    if info.group.is_empty() && info.plural == "namespaces" && !status_endpoint {
        // spec.finalizers changes only through the `finalize` subresource.
        let keep = old.get("spec").and_then(|s| s.get("finalizers")).cloned();
        if let Some(spec) = new
            .entry("spec")
            .or_insert_with(|| Value::Object(Map::new()))
            .as_object_mut()
        {
            match keep {
                Some(f) => spec.insert("finalizers".into(), f),
                None => spec.remove("finalizers"),
            };
        }
    }
    if status_endpoint {
        let mut out = old.clone();
        match new.remove("status") {
            Some(s) => out.insert("status".into(), s),
            None => out.remove("status"),
        };
        return out;
    }
    if info.status_subresource {
        match old.get("status") {
            Some(s) => new.insert("status".into(), s.clone()),
            None => new.remove("status"),
        };
    }
    if info.group.is_empty() && info.plural == "services" {
        defaults::service_keep_allocated(old, &mut new);
    }
    let old_meta = old.get("metadata").and_then(Value::as_object);
    let meta = meta_mut(&mut new);
    for k in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
    ] {
        match old_meta.and_then(|m| m.get(k)) {
            Some(v) => meta.insert(k.into(), v.clone()),
            None => meta.remove(k),
        };
    }
    if info.has_spec_generation && spec_changed(old, &new) {
        let g = old_meta
            .and_then(|m| m.get("generation"))
            .and_then(Value::as_i64)
            .unwrap_or(0);
        meta_mut(&mut new).insert("generation".into(), json!(g + 1));
    }
    new
}

/// Whether anything outside `metadata` and `status` differs.
fn spec_changed(old: &Map<String, Value>, new: &Map<String, Value>) -> bool {
    let skip = |k: &String| k != "metadata" && k != "status";
    let a: Vec<_> = old.iter().filter(|(k, _)| skip(k)).collect();
    let b: Vec<_> = new.iter().filter(|(k, _)| skip(k)).collect();
    a != b
}

/// Whether the object waits only for its finalizers to go: deleting, none left, and no
/// graceful termination still running (a pod's `deletionGracePeriodSeconds` above 0 waits
/// for its node agent).
pub fn ready_to_remove(obj: &Map<String, Value>) -> bool {
    let meta = obj.get("metadata");
    meta.is_some_and(|m| m.get("deletionTimestamp").is_some())
        && meta
            .and_then(|m| m.get("deletionGracePeriodSeconds"))
            .and_then(Value::as_i64)
            .unwrap_or(0)
            <= 0
        && !has_finalizers(obj)
}

/// A pod's grace period when none is given and its spec has none (kube's default).
pub const POD_TERMINATION_GRACE_PERIOD_S: i64 = 30;

/// What a DELETE of a pod does, after [`pod_graceful_delete`].
#[derive(Debug, PartialEq, Eq)]
pub enum GracefulDelete {
    /// No (more) grace: delete now, or wait only for finalizers.
    Immediate,
    /// The pod is now marked: `deletionTimestamp` = now + grace, `deletionGracePeriodSeconds`.
    Marked,
    /// Already terminating with no longer a grace than asked: nothing changes.
    Unchanged,
}

/// kube's `CheckGracefulDelete` for pods: the grace is the request's, else the pod's
/// `terminationGracePeriodSeconds`, else 30 s; an unscheduled pod or one that has finished
/// gets none. A pod already terminating only ever gets a shorter grace.
pub fn pod_graceful_delete(pod: &mut Map<String, Value>, requested: Option<i64>) -> GracefulDelete {
    let spec = pod.get("spec");
    let scheduled = spec
        .and_then(|s| s.get("nodeName"))
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    let finished = matches!(
        pod.get("status")
            .and_then(|s| s.get("phase"))
            .and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    );
    let grace = if !scheduled || finished {
        0
    } else {
        requested
            .or_else(|| {
                spec.and_then(|s| s.get("terminationGracePeriodSeconds"))
                    .and_then(Value::as_i64)
            })
            .unwrap_or(POD_TERMINATION_GRACE_PERIOD_S)
            .max(0)
    };
    let meta = pod.get("metadata");
    let deleting = meta.is_some_and(|m| m.get("deletionTimestamp").is_some());
    let current = meta
        .and_then(|m| m.get("deletionGracePeriodSeconds"))
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let mark = |pod: &mut Map<String, Value>, grace: i64| {
        let at = jiff::Timestamp::now()
            .checked_add(jiff::SignedDuration::from_secs(grace))
            .unwrap_or_else(|_| jiff::Timestamp::now());
        let m = meta_mut(pod);
        m.insert(
            "deletionTimestamp".into(),
            Value::String(at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()),
        );
        m.insert("deletionGracePeriodSeconds".into(), json!(grace));
    };
    if !deleting {
        if grace > 0 {
            mark(pod, grace);
            return GracefulDelete::Marked;
        }
        return GracefulDelete::Immediate;
    }
    if current > 0 && grace < current {
        mark(pod, grace);
        if grace > 0 || has_finalizers(pod) {
            return GracefulDelete::Marked;
        }
        return GracefulDelete::Immediate;
    }
    if current > 0 {
        return GracefulDelete::Unchanged;
    }
    GracefulDelete::Immediate
}

/// Whether something still holds the object on deletion: `metadata.finalizers`, and for a
/// Namespace also `spec.finalizers` (the namespace controller's `kubernetes`, released
/// through the `finalize` subresource once the namespace is empty).
pub fn has_finalizers(obj: &Map<String, Value>) -> bool {
    let non_empty = |v: Option<&Value>| v.and_then(Value::as_array).is_some_and(|f| !f.is_empty());
    non_empty(obj.get("metadata").and_then(|m| m.get("finalizers")))
        || (obj.get("kind").and_then(Value::as_str) == Some("Namespace")
            && non_empty(obj.get("spec").and_then(|s| s.get("finalizers"))))
}

/// A namespace's `finalize` subresource changes only `spec.finalizers`.
pub fn prepare_finalize(old: &Map<String, Value>, new: &Map<String, Value>) -> Map<String, Value> {
    let mut out = old.clone();
    let finalizers = new
        .get("spec")
        .and_then(|s| s.get("finalizers"))
        .cloned()
        .unwrap_or(Value::Array(Vec::new()));
    if let Some(spec) = out
        .entry("spec")
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
    {
        spec.insert("finalizers".into(), finalizers);
    }
    out
}

/// The paths (`spec.foo`) present in `input` but dropped by the typed decode (`output`):
/// fields the type does not have. `null` inputs are absent, not unknown.
pub fn unknown_fields(input: &Value, output: &Value, prefix: &str, out: &mut Vec<String>) {
    match (input, output) {
        (Value::Object(i), Value::Object(o)) => {
            for (k, v) in i {
                if v.is_null() {
                    continue;
                }
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                match o.get(k) {
                    None => out.push(path),
                    Some(ov) => unknown_fields(v, ov, &path, out),
                }
            }
        }
        (Value::Array(i), Value::Array(o)) if i.len() == o.len() => {
            for (n, (a, b)) in i.iter().zip(o).enumerate() {
                unknown_fields(a, b, &format!("{prefix}[{n}]"), out);
            }
        }
        _ => {}
    }
}
