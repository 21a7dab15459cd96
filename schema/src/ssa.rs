//! Server-side apply and field ownership, as pure functions: what kube-apiserver's field
//! manager (k8s.io/apimachinery `util/managedfields`, over sigs.k8s.io/structured-merge-diff)
//! does to an object and its `metadata.managedFields`.
//!
//! - [`apply`] — an Apply patch (`application/apply-patch+yaml`): merges the applied
//!   configuration into the live object, gives the manager exactly the fields it applied,
//!   removes fields it applied last time and no longer does (unless another manager owns
//!   them), and refuses to change a field another manager owns ([`Conflicts`], a 409)
//!   unless `force` (then the field changes hands).
//! - [`update`] — every other write (create, PUT, JSON/merge/strategic PATCH, subresource
//!   writes): the fields the write changed become the writer's (operation `Update`) and
//!   leave every other manager's set. Never fails, never conflicts.
//! - [`Schema`] — what the merge asks about a path: list types (`atomic`, `set`, `map`
//!   with keys), map types (`atomic`, `granular`), declared struct fields. Implemented by
//!   [`OpenApiSchema`] (a built-in kind's definition, or a CRD's `openAPIV3Schema`) and
//!   [`Deduced`] (no schema: lists atomic, maps granular).
//! - [`fieldpath`] — field sets and their `FieldsV1` JSON.
//!
//! Paths given to a [`Schema`] are field names from the object root with list items
//! skipped (`["spec", "containers", "image"]`), as in [`crate::patch`].
//!
//! Differences from kube-apiserver 1.33, on purpose or for lack of the machinery:
//! - One API version per kind: sets recorded at another `apiVersion` are compared as if
//!   their paths were the same in both (kube converts objects between versions first).
//! - The client-side-apply interplay (`kubectl.kubernetes.io/last-applied-configuration`,
//!   the last-applied updater and manager) is not done here.
//! - On create, an `Update` manager's set also holds struct fields that the Go zero value
//!   would have carried (`f:spec` gets a `.`): kube compares against a typed empty object,
//!   this module against nothing.
//! - Unions (`x-kubernetes-unions`) are not normalized (kube has that feature off too).
//! - Apply does not default the merged object: the API layer defaults after, as it does
//!   for every write.

pub mod fieldpath;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::{Map, Value, json};

pub use fieldpath::{FieldSet, FieldsError, PATH_ELEMENTS_MAX, Path, PathElement};

/// The most `Update` entries `managedFields` keeps (kube's `DefaultMaxUpdateManagers`):
/// past it, the oldest are merged into one [`ANCIENT_CHANGES_MANAGER`] entry per API
/// version.
pub const UPDATE_MANAGERS_MAX: usize = 10;

/// The manager that takes every existing field when an object without `managedFields` is
/// first applied to, so the applier sees conflicts instead of silently owning them.
pub const BEFORE_FIRST_APPLY_MANAGER: &str = "before-first-apply";

/// The bucket entry old `Update` entries merge into past [`UPDATE_MANAGERS_MAX`].
pub const ANCIENT_CHANGES_MANAGER: &str = "ancient-changes";

/// Paths no manager owns (kube's strip-meta manager): type meta and server-set metadata.
const STRIPPED_PATHS: &[&[&str]] = &[
    &["apiVersion"],
    &["kind"],
    &["metadata"],
    &["metadata", "name"],
    &["metadata", "namespace"],
    &["metadata", "creationTimestamp"],
    &["metadata", "selfLink"],
    &["metadata", "uid"],
    &["metadata", "clusterName"],
    &["metadata", "generation"],
    &["metadata", "managedFields"],
    &["metadata", "resourceVersion"],
];

// ---------------------------------------------------------------------------------------
// Type information
// ---------------------------------------------------------------------------------------

/// How a list merges and is owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListType {
    /// Replaced and owned as a whole.
    Atomic,
    /// Items are scalars (or whole values), owned one by one: `v:<value>`.
    Set,
    /// Items are objects identified by these key fields: `k:{...}`.
    Map(Vec<String>),
}

/// How an object (struct or map) merges and is owned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapType {
    /// Replaced and owned as a whole (`x-kubernetes-map-type: atomic`).
    Atomic,
    /// Each field or key separately.
    Granular,
}

/// What the merge needs to know about a path (field names from the root, list items
/// skipped). Paths the schema does not know get the deduced answers: atomic lists,
/// granular maps, no declared fields.
pub trait Schema {
    /// The list type of the list at `path`.
    fn list_type(&self, path: &[&str]) -> ListType;
    /// The map type of the object at `path` (the root is `[]`).
    fn map_type(&self, path: &[&str]) -> MapType;
    /// Whether the last element of `path` is a declared field of a struct (rather than a
    /// key of a map, or unknown). Declared fields with children are not themselves owned;
    /// map keys are.
    fn is_field(&self, path: &[&str]) -> bool;
    /// The value a map-list item takes for a key field it omits (the schema's default).
    fn key_default(&self, path: &[&str], key: &str) -> Option<Value> {
        let _ = (path, key);
        None
    }
}

/// No schema at all (a custom resource without one, `x-kubernetes-preserve-unknown-fields`):
/// lists are atomic, maps granular, nothing is a declared field.
#[derive(Debug, Clone, Copy, Default)]
pub struct Deduced;

impl Schema for Deduced {
    fn list_type(&self, _: &[&str]) -> ListType {
        ListType::Atomic
    }
    fn map_type(&self, _: &[&str]) -> MapType {
        MapType::Granular
    }
    fn is_field(&self, _: &[&str]) -> bool {
        false
    }
}

/// Type information from an OpenAPI schema: a built-in kind's definition (Swagger 2.0 with
/// `$ref`s into [`crate::openapi`]) or a CRD version's `openAPIV3Schema` (inline).
#[derive(Debug, Clone, Copy)]
pub struct OpenApiSchema<'a> {
    root: &'a Value,
    /// Built-in kinds: lists without `x-kubernetes-list-type` follow their patch strategy
    /// (a merge key makes a one-key map-list, `merge` alone a set), as kube's schema
    /// conversion does; CRD lists without a list type are atomic.
    builtin: bool,
}

impl OpenApiSchema<'static> {
    /// The schema of a built-in kind, if [`crate::openapi`] defines it.
    pub fn builtin(group: &str, version: &str, kind: &str) -> Option<OpenApiSchema<'static>> {
        crate::openapi::definition(group, version, kind).map(|root| OpenApiSchema {
            root,
            builtin: true,
        })
    }
}

impl<'a> OpenApiSchema<'a> {
    /// The schema of a custom resource version (`spec.versions[].schema.openAPIV3Schema`).
    /// `metadata` is typed as `ObjectMeta` whatever the CRD says, as kube-apiserver does.
    pub fn crd(open_api_v3_schema: &'a Value) -> OpenApiSchema<'a> {
        OpenApiSchema {
            root: open_api_v3_schema,
            builtin: false,
        }
    }

    /// The schema of the field at `path` as written in its parent, and whether it is a
    /// declared property (rather than `additionalProperties`).
    fn lookup(&self, path: &[&str]) -> Option<(&'a Value, bool)> {
        let (mut cur, rest): (&'a Value, &[&str]) = match path.split_first() {
            Some((&"metadata", rest)) if !self.builtin => (
                crate::openapi::definitions()
                    .get("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta")?,
                rest,
            ),
            Some((&("apiVersion" | "kind"), [])) if !self.builtin => {
                return Some((&STRING_SCHEMA, true));
            }
            _ => (self.root, path),
        };
        let mut declared = true;
        for name in rest {
            let parent = unwrap_arrays(crate::openapi::resolve(cur));
            if let Some(p) = parent.get("properties").and_then(|p| p.get(*name)) {
                cur = p;
                declared = true;
            } else if let Some(ap @ Value::Object(_)) = parent.get("additionalProperties") {
                cur = ap;
                declared = false;
            } else {
                return None;
            }
        }
        Some((cur, declared))
    }
}

/// What `apiVersion` and `kind` are in every custom resource (kube adds them).
static STRING_SCHEMA: Value = Value::Null;

fn unwrap_arrays(mut v: &Value) -> &Value {
    for _ in 0..4 {
        match (v.get("type").and_then(Value::as_str), v.get("items")) {
            (Some("array"), Some(items)) => v = crate::openapi::resolve(items),
            _ => break,
        }
    }
    v
}

fn ext<'v>(prop: &'v Value, name: &str) -> Option<&'v Value> {
    prop.get(name)
        .or_else(|| crate::openapi::resolve(prop).get(name))
}

impl Schema for OpenApiSchema<'_> {
    fn list_type(&self, path: &[&str]) -> ListType {
        let Some((prop, _)) = self.lookup(path) else {
            return ListType::Atomic;
        };
        match ext(prop, "x-kubernetes-list-type").and_then(Value::as_str) {
            Some("set") => return ListType::Set,
            Some("map") => {
                let keys: Vec<String> = ext(prop, "x-kubernetes-list-map-keys")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default();
                return if keys.is_empty() {
                    ListType::Atomic
                } else {
                    ListType::Map(keys)
                };
            }
            Some(_) => return ListType::Atomic,
            None => {}
        }
        if !self.builtin {
            return ListType::Atomic;
        }
        let merge = ext(prop, "x-kubernetes-patch-strategy")
            .and_then(Value::as_str)
            .is_some_and(|s| s.split(',').any(|s| s == "merge"));
        match (
            merge,
            ext(prop, "x-kubernetes-patch-merge-key").and_then(Value::as_str),
        ) {
            (true, Some(key)) => ListType::Map(vec![key.to_string()]),
            (true, None) => ListType::Set,
            _ => ListType::Atomic,
        }
    }

    fn map_type(&self, path: &[&str]) -> MapType {
        let prop = if path.is_empty() {
            Some(self.root)
        } else {
            self.lookup(path).map(|(p, _)| p)
        };
        match prop
            .and_then(|p| ext(p, "x-kubernetes-map-type"))
            .and_then(Value::as_str)
        {
            Some("atomic") => MapType::Atomic,
            _ => MapType::Granular,
        }
    }

    fn is_field(&self, path: &[&str]) -> bool {
        self.lookup(path).is_some_and(|(_, declared)| declared)
    }

    fn key_default(&self, path: &[&str], key: &str) -> Option<Value> {
        let (prop, _) = self.lookup(path)?;
        let item = unwrap_arrays(crate::openapi::resolve(prop));
        if let Some(d) = item
            .get("properties")
            .and_then(|p| p.get(key))
            .and_then(|k| k.get("default"))
        {
            return Some(d.clone());
        }
        // kube 1.33 publishes `default: "TCP"` for every `protocol` list-map key (container,
        // service and endpoint ports); the definitions this crate carries lost defaults.
        (self.builtin && key == "protocol").then(|| json!("TCP"))
    }
}

// ---------------------------------------------------------------------------------------
// Errors and conflicts
// ---------------------------------------------------------------------------------------

/// One field another manager owns that an apply would change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The owning manager's name.
    pub manager: String,
    /// Its operation: `Apply` or `Update`.
    pub operation: Operation,
    /// Its API version (only shown for `Update` owners, as kube does).
    pub api_version: String,
    /// Its subresource (`status`), if any.
    pub subresource: Option<String>,
    /// The field.
    pub path: Path,
}

impl Conflict {
    /// kube's rendering of the owner: `"m"`, `"m" with subresource "status"`,
    /// `"m" using apps/v1`.
    pub fn owner(&self) -> String {
        let mut s = crate::validate::go_quote(&self.manager);
        if let Some(sub) = &self.subresource {
            s.push_str(&format!(
                " with subresource {}",
                crate::validate::go_quote(sub)
            ));
        }
        if self.operation == Operation::Update {
            s.push_str(&format!(" using {}", self.api_version));
        }
        s
    }

    /// The cause message: `conflict with "m" using apps/v1`.
    pub fn message(&self) -> String {
        format!("conflict with {}", self.owner())
    }

    /// The cause field: `.spec.replicas`.
    pub fn field(&self) -> String {
        self.path.to_string()
    }
}

/// The conflicts of a refused apply, sorted by owner then field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflicts(pub Vec<Conflict>);

impl Conflicts {
    /// kube-apiserver's message: `Apply failed with 1 conflict: conflict with "m" using
    /// apps/v1: .spec.replicas`, or for several, one `conflicts with <owner>:` line per
    /// owner followed by `- <field>` lines.
    pub fn message(&self) -> String {
        if let [c] = self.0.as_slice() {
            return format!(
                "Apply failed with 1 conflict: {}: {}",
                c.message(),
                c.field()
            );
        }
        let mut lines = Vec::new();
        let mut last_owner: Option<String> = None;
        for c in &self.0 {
            let owner = c.owner();
            if last_owner.as_ref() != Some(&owner) {
                lines.push(format!("conflicts with {owner}:"));
                last_owner = Some(owner);
            }
            lines.push(format!("- {}", c.field()));
        }
        format!(
            "Apply failed with {} conflicts: {}",
            self.0.len(),
            lines.join("\n")
        )
    }

    /// The whole 409 `Status` kube-apiserver answers (`reason: Conflict`, one cause of type
    /// `FieldManagerConflict` per field).
    pub fn status(&self) -> Value {
        let causes: Vec<Value> = self
            .0
            .iter()
            .map(|c| {
                json!({
                    "type": "FieldManagerConflict",
                    "message": c.message(),
                    "field": c.field(),
                })
            })
            .collect();
        json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message(),
            "reason": "Conflict",
            "details": { "causes": causes },
            "code": 409,
        })
    }
}

/// Why an apply was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// Fields other managers own would change: 409 with [`Conflicts::status`].
    #[error("{}", .0.message())]
    Conflicts(Conflicts),
    /// The applied configuration itself is wrong (not an object, another `apiVersion`,
    /// `metadata.managedFields` set): 400 BadRequest.
    #[error("{0}")]
    BadRequest(String),
    /// The configuration or the live object cannot be merged (duplicate map-list keys,
    /// items of the wrong shape, undecodable `managedFields` on the live object, nesting
    /// past [`PATH_ELEMENTS_MAX`]): kube-apiserver answers these with a 500.
    #[error("{0}")]
    Internal(String),
}

// ---------------------------------------------------------------------------------------
// managedFields entries
// ---------------------------------------------------------------------------------------

/// The operation of a `managedFields` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operation {
    /// A server-side apply.
    Apply,
    /// Any other write.
    Update,
}

impl Operation {
    /// `Apply` / `Update`.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Apply => "Apply",
            Operation::Update => "Update",
        }
    }
}

/// One decoded `metadata.managedFields` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedFieldsEntry {
    /// `manager`.
    pub manager: String,
    /// `operation`.
    pub operation: Operation,
    /// `apiVersion`: the version the fields are expressed in.
    pub api_version: String,
    /// `time` (RFC 3339, seconds), when the manager last changed the object.
    pub time: Option<String>,
    /// `subresource`, if the writes came through one.
    pub subresource: Option<String>,
    /// `fieldsV1`.
    pub fields: FieldSet,
}

impl ManagedFieldsEntry {
    /// kube's manager identifier: entries with the same one are the same manager. Appliers
    /// are one manager across API versions; updaters one per version.
    fn id(&self) -> ManagerId {
        ManagerId {
            manager: self.manager.clone(),
            operation: self.operation,
            api_version: match self.operation {
                Operation::Apply => String::new(),
                Operation::Update => self.api_version.clone(),
            },
            subresource: self.subresource.clone().unwrap_or_default(),
        }
    }

    fn to_json(&self) -> Value {
        let mut m = Map::new();
        if !self.manager.is_empty() {
            m.insert("manager".into(), json!(self.manager));
        }
        m.insert("operation".into(), json!(self.operation.as_str()));
        m.insert("apiVersion".into(), json!(self.api_version));
        if let Some(t) = &self.time {
            m.insert("time".into(), json!(t));
        }
        m.insert("fieldsType".into(), json!("FieldsV1"));
        m.insert("fieldsV1".into(), self.fields.to_fields_v1());
        if let Some(s) = &self.subresource {
            m.insert("subresource".into(), json!(s));
        }
        Value::Object(m)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct ManagerId {
    manager: String,
    operation: Operation,
    api_version: String,
    subresource: String,
}

impl ManagerId {
    /// The JSON kube uses as the identifier (and sorts conflicts by).
    fn key(&self) -> String {
        let mut m = Map::new();
        if !self.manager.is_empty() {
            m.insert("manager".into(), json!(self.manager));
        }
        m.insert("operation".into(), json!(self.operation.as_str()));
        let mut s = Value::Object(m).to_string();
        // Go marshals ManagedFieldsEntry fields in declaration order: manager, operation,
        // apiVersion, …, subresource.
        s.pop();
        if !self.api_version.is_empty() {
            s.push_str(&format!(",\"apiVersion\":{}", json!(self.api_version)));
        }
        if !self.subresource.is_empty() {
            s.push_str(&format!(",\"subresource\":{}", json!(self.subresource)));
        }
        s.push('}');
        s
    }
}

type Managed = BTreeMap<ManagerId, ManagedFieldsEntry>;

/// Decodes an object's `metadata.managedFields` (absent or null: no entries).
///
/// # Errors
/// An entry that is not an object, an operation other than `Apply`/`Update`, an empty
/// `apiVersion`, a `fieldsType` other than `FieldsV1`, or a malformed `fieldsV1` — the
/// checks kube-apiserver makes.
pub fn managed_fields(obj: &Value) -> Result<Vec<ManagedFieldsEntry>, String> {
    decode_entries(obj.pointer("/metadata/managedFields"))
}

/// By manager identifier; a later entry with the same identifier replaces an earlier one.
fn decode_managed(list: Option<&Value>) -> Result<Managed, String> {
    Ok(decode_entries(list)?
        .into_iter()
        .map(|e| (e.id(), e))
        .collect())
}

fn decode_entries(list: Option<&Value>) -> Result<Vec<ManagedFieldsEntry>, String> {
    let mut out = Vec::new();
    let entries = match list {
        None | Some(Value::Null) => return Ok(out),
        Some(Value::Array(a)) => a,
        Some(_) => return Err("managedFields must be a list".into()),
    };
    for (i, e) in entries.iter().enumerate() {
        let Value::Object(e) = e else {
            return Err(format!("managed fields entry {i} must be an object"));
        };
        let s = |k: &str| e.get(k).and_then(Value::as_str);
        let operation = match s("operation") {
            Some("Apply") => Operation::Apply,
            Some("Update") => Operation::Update,
            _ => return Err("operation must be `Apply` or `Update`".into()),
        };
        let api_version = s("apiVersion").unwrap_or("");
        if api_version.is_empty() {
            return Err("apiVersion must not be empty".into());
        }
        match s("fieldsType") {
            Some("FieldsV1") => {}
            None | Some("") => {
                return Err(format!("missing fieldsType in managed fields entry {i}"));
            }
            Some(other) => {
                return Err(format!(
                    "invalid fieldsType {other:?} in managed fields entry {i}"
                ));
            }
        }
        let fields = match e.get("fieldsV1") {
            None | Some(Value::Null) => FieldSet::new(),
            Some(v) => {
                FieldSet::from_fields_v1(v).map_err(|err| format!("error decoding set: {err}"))?
            }
        };
        let entry = ManagedFieldsEntry {
            manager: s("manager").unwrap_or("").to_string(),
            operation,
            api_version: api_version.to_string(),
            time: s("time").map(str::to_string),
            subresource: s("subresource")
                .filter(|s| !s.is_empty())
                .map(str::to_string),
            fields,
        };
        out.push(entry);
    }
    Ok(out)
}

/// kube's order: operation, time, manager, apiVersion, subresource. Times are RFC 3339 in
/// UTC (`Z`), so their string order is their time order.
fn encode_managed(managed: &Managed) -> Option<Value> {
    if managed.is_empty() {
        return None;
    }
    let mut entries: Vec<&ManagedFieldsEntry> = managed.values().collect();
    entries.sort_by(|p, q| {
        (
            p.operation,
            p.time.as_deref().unwrap_or(""),
            &p.manager,
            &p.api_version,
            &p.subresource,
        )
            .cmp(&(
                q.operation,
                q.time.as_deref().unwrap_or(""),
                &q.manager,
                &q.api_version,
                &q.subresource,
            ))
    });
    Some(Value::Array(
        entries
            .into_iter()
            .map(ManagedFieldsEntry::to_json)
            .collect(),
    ))
}

// ---------------------------------------------------------------------------------------
// The writes
// ---------------------------------------------------------------------------------------

/// Who writes, and how: the request's side of an [`apply`] or [`update`].
#[derive(Debug, Clone, Copy)]
pub struct Writer<'a> {
    /// The field manager (`?fieldManager=`, else derived from the user agent by the API).
    pub manager: &'a str,
    /// The group/version the request addressed (`apps/v1`, `v1`).
    pub api_version: &'a str,
    /// `status`, `scale`… for subresource writes.
    pub subresource: Option<&'a str>,
    /// The request time, RFC 3339 with seconds (`2025-01-02T03:04:05Z`).
    pub now: &'a str,
    /// Fields this write may not own (kube's reset fields: `status` for writes to the main
    /// resource of a kind with a status subresource; the spec for `/status`). They are left
    /// out of the writer's set and out of the comparison; the API layer still resets their
    /// values as its strategy does.
    pub ignored: Option<&'a FieldSet>,
}

impl Writer<'_> {
    fn id(&self, operation: Operation) -> ManagerId {
        ManagerId {
            manager: self.manager.to_string(),
            operation,
            api_version: match operation {
                Operation::Apply => String::new(),
                Operation::Update => self.api_version.to_string(),
            },
            subresource: self.subresource.unwrap_or("").to_string(),
        }
    }

    fn entry(
        &self,
        operation: Operation,
        fields: FieldSet,
        time: Option<String>,
    ) -> ManagedFieldsEntry {
        ManagedFieldsEntry {
            manager: self.manager.to_string(),
            operation,
            api_version: self.api_version.to_string(),
            time,
            subresource: self.subresource.map(str::to_string),
            fields,
        }
    }
}

/// Server-side apply: `applied` merged into `live` (`None`: the apply creates the object),
/// with the new `metadata.managedFields`.
///
/// # Errors
/// [`ApplyError::Conflicts`] when, without `force`, the apply would change fields another
/// manager owns; [`ApplyError::BadRequest`] for a configuration of another `apiVersion` or
/// with `metadata.managedFields`; [`ApplyError::Internal`] when the objects cannot be
/// merged (see there).
pub fn apply(
    live: Option<&Value>,
    applied: &Value,
    writer: &Writer<'_>,
    force: bool,
    schema: &dyn Schema,
) -> Result<Value, ApplyError> {
    let Value::Object(config) = applied else {
        return Err(ApplyError::BadRequest(
            "the apply configuration must be an object".into(),
        ));
    };
    let patch_version = config
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    if patch_version != writer.api_version {
        return Err(ApplyError::BadRequest(format!(
            "Incorrect version specified in apply patch. Specified patch version: {patch_version}, expected: {}",
            writer.api_version
        )));
    }
    if applied
        .pointer("/metadata/managedFields")
        .is_some_and(|m| !m.is_null())
    {
        return Err(ApplyError::BadRequest(
            "metadata.managedFields must be nil".into(),
        ));
    }
    let mut managed = decode_managed(live.and_then(|l| l.pointer("/metadata/managedFields")))
        .map_err(|e| ApplyError::Internal(format!("failed to decode managed fields: {e}")))?;
    let live = live.map(without_managed_fields);
    let internal = ApplyError::Internal;

    // An object nobody has applied to, or written since tracking began: its fields go to
    // one Update entry first, so the applier conflicts with them instead of taking them.
    if managed.is_empty()
        && let Some(l) = &live
    {
        let before = Writer {
            manager: BEFORE_FIRST_APPLY_MANAGER,
            ..*writer
        };
        managed = update_managed(None, l, managed, &before, schema).map_err(internal)?;
    }

    let id = writer.id(Operation::Apply);
    let merged = merge(
        live.as_ref(),
        Some(applied),
        schema,
        &mut Vec::new(),
        &mut Vec::new(),
    )
    .map_err(internal)?
    .unwrap_or_else(|| json!({}));
    let mut set = to_field_set(applied, schema, true).map_err(internal)?;
    if let Some(ignored) = writer.ignored {
        set = set.recursive_difference(ignored);
    }
    let last = managed.remove(&id);
    let previous_time = last.as_ref().and_then(|e| e.time.clone());
    managed.insert(
        id.clone(),
        writer.entry(Operation::Apply, set, previous_time),
    );
    let merged = match &last {
        Some(last) if !last.fields.is_empty() => {
            prune(&merged, &managed, &last.fields, schema).map_err(internal)?
        }
        _ => merged,
    };
    let mut managed = take_changes(
        live.as_ref(),
        &merged,
        managed,
        &id,
        force,
        writer.ignored,
        schema,
    )?;
    let changed = live.as_ref() != Some(&merged);
    if changed && let Some(e) = managed.get_mut(&id) {
        e.time = Some(writer.now.to_string());
    }
    strip_meta(&mut managed, &id);
    let mut out = if changed {
        merged
    } else {
        live.unwrap_or(merged)
    };
    set_managed_fields(&mut out, encode_managed(&managed));
    Ok(out)
}

/// What a non-apply write (create, update, patch, subresource write) does to
/// `managedFields`: `new` (the object about to be stored; `old` is the stored one, `None`
/// on create) with the fields the write changed owned by the writer (operation `Update`).
///
/// The managed fields come from `new` when the client sent valid, non-empty ones (clients
/// may edit them), are cleared when it sent `[]` or `[{}]`, and otherwise come from `old`;
/// subresource writes always take `old`'s. An existing object without managed fields stays
/// without until it is applied to (kube-apiserver's before-first-apply rule). Never fails:
/// on an internal error the object keeps `old`'s managed fields.
pub fn update(old: Option<&Value>, new: &Value, writer: &Writer<'_>, schema: &dyn Schema) -> Value {
    let mut out = new.clone();
    if !out.get("metadata").is_some_and(Value::is_object) {
        return out;
    }
    let old_managed = || {
        decode_managed(old.and_then(|o| o.pointer("/metadata/managedFields"))).unwrap_or_default()
    };
    let sent = new.pointer("/metadata/managedFields");
    let managed = if writer.subresource.is_some() {
        old_managed()
    } else if is_reset(sent) {
        Managed::new()
    } else {
        match decode_managed(sent) {
            Ok(m) if !m.is_empty() => m,
            _ => old_managed(),
        }
    };
    let new_bare = without_managed_fields(new);
    if managed.is_empty() && old.is_some() {
        set_managed_fields(&mut out, None);
        return out;
    }
    let old_bare = old.map(without_managed_fields);
    match update_managed(old_bare.as_ref(), &new_bare, managed, writer, schema) {
        Ok(m) => set_managed_fields(&mut out, encode_managed(&m)),
        Err(_) => set_managed_fields(
            &mut out,
            old.and_then(|o| o.pointer("/metadata/managedFields"))
                .cloned(),
        ),
    }
    out
}

/// `[]` or `[{}]`: the client asks for managed fields to be reset.
fn is_reset(sent: Option<&Value>) -> bool {
    match sent {
        Some(Value::Array(a)) => match a.as_slice() {
            [] => true,
            [Value::Object(e)] => e.is_empty(),
            _ => false,
        },
        _ => false,
    }
}

/// The Update path of kube's field manager: the changed fields go to the writer's Update
/// entry (merged with what it had), leave everyone else's; then the entry count is capped.
fn update_managed(
    old: Option<&Value>,
    new: &Value,
    mut managed: Managed,
    writer: &Writer<'_>,
    schema: &dyn Schema,
) -> Result<Managed, String> {
    let cmp = compare(old, Some(new), schema)?.exclude(writer.ignored);
    for e in managed.values_mut() {
        // Force: an update takes the fields it changed from their owners.
        e.fields = e
            .fields
            .difference(&cmp.modified.union(&cmp.added))
            .difference(&cmp.removed);
    }
    managed.retain(|_, e| !e.fields.is_empty());
    let mut current = cmp.modified.union(&cmp.added).difference(&cmp.removed);
    if let Some(ignored) = writer.ignored {
        current = current.recursive_difference(ignored);
    }
    current = current.difference(&stripped_set());
    if !current.is_empty() {
        let id = writer.id(Operation::Update);
        let fields = match managed.remove(&id) {
            Some(prev) => current.union(&prev.fields),
            None => current,
        };
        managed.insert(
            id,
            writer.entry(Operation::Update, fields, Some(writer.now.to_string())),
        );
    }
    cap_update_managers(&mut managed);
    Ok(managed)
}

/// The applier keeps exactly its new set; every other manager loses the fields the merge
/// removed, and — with `force` — the fields it changed; without `force` those are
/// conflicts.
fn take_changes(
    live: Option<&Value>,
    merged: &Value,
    mut managed: Managed,
    applier: &ManagerId,
    force: bool,
    ignored: Option<&FieldSet>,
    schema: &dyn Schema,
) -> Result<Managed, ApplyError> {
    let cmp = compare(live, Some(merged), schema)
        .map_err(ApplyError::Internal)?
        .exclude(ignored);
    let changed = cmp.modified.union(&cmp.added);
    let mut conflicts = Vec::new();
    for (id, e) in &managed {
        if id == applier {
            continue;
        }
        for path in e.fields.intersection(&changed).paths() {
            conflicts.push((
                id.key(),
                Conflict {
                    manager: e.manager.clone(),
                    operation: e.operation,
                    api_version: e.api_version.clone(),
                    subresource: e.subresource.clone(),
                    path,
                },
            ));
        }
    }
    if !force && !conflicts.is_empty() {
        // Sorted by owner (kube sorts its message by manager identifier), paths in set order.
        conflicts.sort_by(|a, b| a.0.cmp(&b.0));
        return Err(ApplyError::Conflicts(Conflicts(
            conflicts.into_iter().map(|(_, c)| c).collect(),
        )));
    }
    for (id, e) in managed.iter_mut() {
        if id == applier {
            continue;
        }
        e.fields = e.fields.difference(&changed).difference(&cmp.removed);
    }
    managed.retain(|_, e| !e.fields.is_empty());
    Ok(managed)
}

fn stripped_set() -> FieldSet {
    let paths: Vec<Path> = STRIPPED_PATHS.iter().map(|p| Path::fields(p)).collect();
    FieldSet::from_paths(&paths)
}

/// No manager owns type meta or server-set metadata.
fn strip_meta(managed: &mut Managed, id: &ManagerId) {
    if let Some(e) = managed.get_mut(id) {
        e.fields = e.fields.difference(&stripped_set());
        if e.fields.is_empty() {
            managed.remove(id);
        }
    }
}

/// Past [`UPDATE_MANAGERS_MAX`] Update entries, the oldest merge into one
/// [`ANCIENT_CHANGES_MANAGER`] entry per API version (kube's cap-managers manager).
fn cap_update_managers(managed: &mut Managed) {
    let mut updaters: Vec<ManagerId> = managed
        .iter()
        .filter(|(_, e)| e.operation == Operation::Update)
        .map(|(id, _)| id.clone())
        .collect();
    if updaters.len() <= UPDATE_MANAGERS_MAX {
        return;
    }
    let time =
        |m: &Managed, id: &ManagerId| m.get(id).and_then(|e| e.time.clone()).unwrap_or_default();
    updaters.sort_by_key(|id| (time(managed, id), id.key()));
    let mut first_of_version: HashMap<String, ManagerId> = HashMap::new();
    let mut length = updaters.len();
    for id in updaters {
        if length <= UPDATE_MANAGERS_MAX {
            break;
        }
        let Some(entry) = managed.get(&id).cloned() else {
            continue;
        };
        let version = entry.api_version.clone();
        let bucket = ManagerId {
            manager: ANCIENT_CHANGES_MANAGER.into(),
            operation: Operation::Update,
            api_version: version.clone(),
            subresource: String::new(),
        };
        match first_of_version.get(&version) {
            Some(first) => {
                if !managed.contains_key(&bucket)
                    && let Some(mut f) = managed.remove(first)
                {
                    f.manager = ANCIENT_CHANGES_MANAGER.into();
                    f.subresource = None;
                    managed.insert(bucket.clone(), f);
                }
                managed.remove(&id);
                if let Some(b) = managed.get_mut(&bucket) {
                    b.fields = entry.fields.union(&b.fields);
                    b.time = entry.time.clone();
                }
                length -= 1;
            }
            None => {
                first_of_version.insert(version, id);
            }
        }
    }
}

fn without_managed_fields(obj: &Value) -> Value {
    let mut out = obj.clone();
    set_managed_fields(&mut out, None);
    out
}

fn set_managed_fields(obj: &mut Value, entries: Option<Value>) {
    let Some(Value::Object(meta)) = obj.get_mut("metadata") else {
        return;
    };
    match entries {
        Some(e) => {
            meta.insert("managedFields".into(), e);
        }
        None => {
            meta.remove("managedFields");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Walks over objects
// ---------------------------------------------------------------------------------------

fn too_deep(path: &[PathElement]) -> Result<(), String> {
    if path.len() > PATH_ELEMENTS_MAX {
        return Err(format!(
            "{}: the object nests deeper than {PATH_ELEMENTS_MAX} path elements",
            Path(path.to_vec())
        ));
    }
    Ok(())
}

/// The path element of a list item.
fn item_element(
    schema: &dyn Schema,
    names: &[&str],
    list_type: &ListType,
    index: usize,
    item: &Value,
) -> Result<PathElement, String> {
    match list_type {
        ListType::Atomic => Ok(PathElement::Index(index)),
        ListType::Set => Ok(PathElement::value(item)),
        ListType::Map(keys) => {
            let Value::Object(m) = item else {
                return Err(if item.is_null() {
                    "associative list with keys may not have a null element".into()
                } else {
                    "associative list with keys may not have non-map elements".into()
                });
            };
            let mut fields: Map<String, Value> = Map::new();
            for key in keys {
                if let Some(v) = m.get(key) {
                    fields.insert(key.clone(), v.clone());
                } else if let Some(d) = schema.key_default(names, key) {
                    fields.insert(key.clone(), d);
                }
            }
            Ok(PathElement::key(
                fields.iter().map(|(k, v)| (k.as_str(), v)),
            ))
        }
    }
}

/// The items of a list with their path elements; a repeated element is an error when
/// `strict`, else its later occurrences are skipped.
fn index_items<'v>(
    schema: &dyn Schema,
    names: &[&str],
    path: &[PathElement],
    list_type: &ListType,
    items: &'v [Value],
    strict: bool,
) -> Result<Vec<(PathElement, &'v Value)>, String> {
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let pe = item_element(schema, names, list_type, i, item)
            .map_err(|e| format!("{}: element {i}: {e}", Path(path.to_vec())))?;
        if !seen.insert(pe.clone()) {
            if strict {
                return Err(format!(
                    "{}: duplicate entries for key {pe}",
                    Path(path.to_vec())
                ));
            }
            continue;
        }
        out.push((pe, item));
    }
    Ok(out)
}

/// The fields a value sets (structured-merge-diff's `ToFieldSet`): scalars, atomic lists
/// and maps, list items, map keys, and declared fields that are null or empty.
fn to_field_set(v: &Value, schema: &dyn Schema, strict: bool) -> Result<FieldSet, String> {
    let mut set = FieldSet::new();
    tfs(
        v,
        schema,
        strict,
        &mut Vec::new(),
        &mut Vec::new(),
        &mut set,
    )?;
    Ok(set)
}

fn tfs<'a>(
    v: &'a Value,
    schema: &dyn Schema,
    strict: bool,
    names: &mut Vec<&'a str>,
    path: &mut Vec<PathElement>,
    set: &mut FieldSet,
) -> Result<(), String> {
    too_deep(path)?;
    match v {
        Value::Object(m) => {
            if !path.is_empty() && schema.map_type(names) == MapType::Atomic {
                set.insert(path);
                return Ok(());
            }
            for (k, child) in m {
                names.push(k);
                path.push(PathElement::Field(k.clone()));
                tfs(child, schema, strict, names, path, set)?;
                let empty = match child {
                    Value::Null => true,
                    Value::Object(c) => c.is_empty(),
                    Value::Array(c) => c.is_empty(),
                    _ => false,
                };
                if empty || !schema.is_field(names) {
                    set.insert(path);
                }
                path.pop();
                names.pop();
            }
        }
        Value::Array(items) => {
            let lt = schema.list_type(names);
            if lt == ListType::Atomic {
                set.insert(path);
                return Ok(());
            }
            for (pe, item) in index_items(schema, names, path, &lt, items, strict)? {
                path.push(pe);
                tfs(item, schema, strict, names, path, set)?;
                set.insert(path);
                path.pop();
            }
        }
        _ => set.insert(path),
    }
    Ok(())
}

/// Makes the declared struct fields on the set's paths members, so removing them removes
/// the whole field (structured-merge-diff's `EnsureNamedFieldsAreMembers`).
fn ensure_named_fields_are_members(set: &FieldSet, schema: &dyn Schema) -> FieldSet {
    set.with_fields_as_members(&mut Vec::new(), &|names: &[String]| {
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        schema.is_field(&names)
    })
}

/// Removes the members of `set` from `v` (whole subtrees), descending along its children.
/// An object or list that removal leaves empty goes too (the root becomes `{}`).
fn remove_items(v: &Value, set: &FieldSet, schema: &dyn Schema) -> Value {
    remove_inner(v, set, schema, &mut Vec::new()).unwrap_or_else(|| json!({}))
}

fn remove_inner<'a>(
    v: &'a Value,
    set: &FieldSet,
    schema: &dyn Schema,
    names: &mut Vec<&'a str>,
) -> Option<Value> {
    match v {
        Value::Object(m) => {
            if m.is_empty() || (!names.is_empty() && schema.map_type(names) == MapType::Atomic) {
                return Some(v.clone());
            }
            let mut out = Map::new();
            for (k, child) in m {
                let pe = PathElement::Field(k.clone());
                if set.has_member(&pe) {
                    continue;
                }
                let kept = match set.child(&pe) {
                    Some(sub) => {
                        names.push(k);
                        let r = remove_inner(child, sub, schema, names);
                        names.pop();
                        r
                    }
                    None => Some(child.clone()),
                };
                if let Some(kept) = kept {
                    out.insert(k.clone(), kept);
                }
            }
            (!out.is_empty()).then_some(Value::Object(out))
        }
        Value::Array(items) => {
            let lt = schema.list_type(names);
            if items.is_empty() || lt == ListType::Atomic {
                return Some(v.clone());
            }
            let mut out = Vec::new();
            for (i, item) in items.iter().enumerate() {
                let Ok(pe) = item_element(schema, names, &lt, i, item) else {
                    out.push(item.clone());
                    continue;
                };
                if set.has_member(&pe) {
                    continue;
                }
                match set.child(&pe) {
                    Some(sub) => {
                        let r = remove_inner(item, sub, schema, names);
                        out.push(r.unwrap_or_else(|| json!({})));
                    }
                    None => out.push(item.clone()),
                }
            }
            (!out.is_empty()).then_some(Value::Array(out))
        }
        scalar => Some(scalar.clone()),
    }
}

/// Removes what the applier applied last time and no longer applies, unless some manager
/// (the applier's new set included) still owns it; a struct field goes only when nobody
/// owns anything below it. structured-merge-diff's `prune`, step by step.
fn prune(
    merged: &Value,
    managed: &Managed,
    last: &FieldSet,
    schema: &dyn Schema,
) -> Result<Value, String> {
    let ensure = |s: &FieldSet| ensure_named_fields_are_members(s, schema);
    let last = ensure(last);
    let pruned = remove_items(merged, &last, schema);
    // Add back what anyone owns.
    let owned = managed
        .values()
        .fold(FieldSet::new(), |acc, e| acc.union(&e.fields));
    let merged_set = ensure(&to_field_set(merged, schema, false)?);
    let pruned_set = ensure(&to_field_set(&pruned, schema, false)?);
    let remove = merged_set.difference(&pruned_set.union(&ensure(&owned)));
    let pruned = remove_items(merged, &remove, schema);
    // Remove only what the applier owned: unowned fields and items stay.
    let pruned_set = ensure(&to_field_set(&pruned, schema, false)?);
    let remove = merged_set.difference(&pruned_set).intersection(&last);
    Ok(remove_items(merged, &remove, schema))
}

/// `rhs` merged into `lhs`: granular maps key by key, set- and map-lists item by item,
/// everything else (scalars, atomic maps and lists, changes of type) replaced by `rhs`.
fn merge<'a>(
    lhs: Option<&'a Value>,
    rhs: Option<&'a Value>,
    schema: &dyn Schema,
    names: &mut Vec<&'a str>,
    path: &mut Vec<PathElement>,
) -> Result<Option<Value>, String> {
    too_deep(path)?;
    let (l, r) = match (lhs, rhs) {
        (None, None) => return Ok(None),
        (Some(l), None) => return Ok(Some(l.clone())),
        (None, Some(r)) => (&Value::Null, r),
        (Some(l), Some(r)) => (l, r),
    };
    let lhs_missing = lhs.is_none();
    match r {
        Value::Object(rm) => {
            let lm = match l {
                Value::Object(lm) if !lhs_missing => Some(lm),
                _ => None,
            };
            let both_empty = rm.is_empty() && lm.is_none_or(Map::is_empty);
            if both_empty || (!path.is_empty() && schema.map_type(names) == MapType::Atomic) {
                return Ok(Some(r.clone()));
            }
            let mut out = lm.cloned().unwrap_or_default();
            for (k, rv) in rm {
                names.push(k);
                path.push(PathElement::Field(k.clone()));
                let m = merge(lm.and_then(|lm| lm.get(k)), Some(rv), schema, names, path)?;
                path.pop();
                names.pop();
                match m {
                    Some(m) => {
                        out.insert(k.clone(), m);
                    }
                    None => {
                        out.remove(k);
                    }
                }
            }
            Ok(Some(Value::Object(out)))
        }
        Value::Array(ra) => {
            let la = match l {
                Value::Array(la) if !lhs_missing => Some(la.as_slice()),
                _ => None,
            };
            let lt = schema.list_type(names);
            let both_empty = ra.is_empty() && la.is_none_or(<[Value]>::is_empty);
            if lt == ListType::Atomic || both_empty {
                return Ok(Some(r.clone()));
            }
            merge_list(la.unwrap_or(&[]), ra, &lt, schema, names, path).map(Some)
        }
        _ => Ok(Some(r.clone())),
    }
}

/// Items in both lists take the applied order; items only in the live list keep their
/// place among them (structured-merge-diff's ordering).
fn merge_list<'a>(
    la: &'a [Value],
    ra: &'a [Value],
    lt: &ListType,
    schema: &dyn Schema,
    names: &mut Vec<&'a str>,
    path: &mut Vec<PathElement>,
) -> Result<Value, String> {
    let rhs = index_items(schema, names, path, lt, ra, true)?;
    let lhs = index_items(schema, names, path, lt, la, true)?;
    let rmap: HashMap<&PathElement, &Value> = rhs.iter().map(|(pe, v)| (pe, *v)).collect();
    let lmap: HashMap<&PathElement, &Value> = lhs.iter().map(|(pe, v)| (pe, *v)).collect();
    let mut shared = rhs
        .iter()
        .map(|(pe, _)| pe)
        .filter(|pe| lmap.contains_key(pe));
    let mut next_shared = shared.next();
    let mut out = Vec::with_capacity(la.len().max(ra.len()));
    let mut item = |pe: &PathElement,
                    l: Option<&'a Value>,
                    r: Option<&'a Value>,
                    names: &mut Vec<&'a str>,
                    path: &mut Vec<PathElement>|
     -> Result<(), String> {
        path.push(pe.clone());
        let m = merge(l, r, schema, names, path)?;
        path.pop();
        if let Some(m) = m {
            out.push(m);
        }
        Ok(())
    };
    let (mut li, mut ri) = (0, 0);
    while li < lhs.len() || ri < rhs.len() {
        if li < lhs.len() && ri < rhs.len() {
            let pe = &lhs[li].0;
            if *pe == rhs[ri].0 {
                item(pe, Some(lhs[li].1), Some(rhs[ri].1), names, path)?;
                li += 1;
                ri += 1;
                next_shared = shared.next();
                continue;
            }
            if rmap.contains_key(pe) && next_shared.is_some_and(|n| n != pe) {
                // A shared item, but not the next one in the applied order.
                li += 1;
                continue;
            }
        }
        if li < lhs.len() {
            let pe = &lhs[li].0;
            if !rmap.contains_key(pe) {
                item(pe, Some(lhs[li].1), None, names, path)?;
                li += 1;
                continue;
            }
        }
        if ri < rhs.len() {
            let pe = &rhs[ri].0;
            item(pe, lmap.get(pe).copied(), Some(rhs[ri].1), names, path)?;
            ri += 1;
            if next_shared == Some(pe) {
                next_shared = shared.next();
            }
        }
    }
    Ok(Value::Array(out))
}

/// What changed between two objects, as field sets.
#[derive(Debug, Default)]
struct Comparison {
    added: FieldSet,
    removed: FieldSet,
    modified: FieldSet,
}

impl Comparison {
    fn exclude(self, ignored: Option<&FieldSet>) -> Comparison {
        match ignored {
            None => self,
            Some(i) => Comparison {
                added: self.added.recursive_difference(i),
                removed: self.removed.recursive_difference(i),
                modified: self.modified.recursive_difference(i),
            },
        }
    }
}

/// structured-merge-diff's `Compare`: leaves (scalars, atomic maps and lists, empty ones)
/// added, removed or modified, plus every non-leaf node that appeared or disappeared.
fn compare(
    old: Option<&Value>,
    new: Option<&Value>,
    schema: &dyn Schema,
) -> Result<Comparison, String> {
    let mut c = Comparison::default();
    cmp(old, new, schema, &mut Vec::new(), &mut Vec::new(), &mut c)?;
    Ok(c)
}

fn cmp<'a>(
    l: Option<&'a Value>,
    r: Option<&'a Value>,
    schema: &dyn Schema,
    names: &mut Vec<&'a str>,
    path: &mut Vec<PathElement>,
    c: &mut Comparison,
) -> Result<(), String> {
    too_deep(path)?;
    let Some(shape) = r.or(l) else {
        return Ok(());
    };
    let same_kind = match (l, r) {
        (Some(a), Some(b)) => std::mem::discriminant(a) == std::mem::discriminant(b),
        _ => true,
    };
    let leaf = |c: &mut Comparison, path: &[PathElement]| match (l, r) {
        (None, _) => c.added.insert(path),
        (_, None) => c.removed.insert(path),
        (Some(a), Some(b)) if a != b => c.modified.insert(path),
        _ => {}
    };
    let is_root = path.is_empty();
    match shape {
        Value::Object(_) if same_kind => {
            let lm = l.and_then(Value::as_object);
            let rm = r.and_then(Value::as_object);
            let both_empty = lm.is_none_or(Map::is_empty) && rm.is_none_or(Map::is_empty);
            if !is_root && (both_empty || schema.map_type(names) == MapType::Atomic) {
                leaf(c, path);
                return Ok(());
            }
            let mut keys: Vec<&'a String> = lm.map(|m| m.keys().collect()).unwrap_or_default();
            if let Some(rm) = rm {
                keys.extend(
                    rm.keys()
                        .filter(|k| !lm.is_some_and(|lm| lm.contains_key(*k))),
                );
            }
            for k in keys {
                names.push(k);
                path.push(PathElement::Field(k.clone()));
                cmp(
                    lm.and_then(|m| m.get(k)),
                    rm.and_then(|m| m.get(k)),
                    schema,
                    names,
                    path,
                    c,
                )?;
                path.pop();
                names.pop();
            }
        }
        Value::Array(_) if same_kind => {
            let la = l
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            let ra = r
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            let lt = schema.list_type(names);
            if lt == ListType::Atomic || (la.is_empty() && ra.is_empty()) {
                leaf(c, path);
                return Ok(());
            }
            let lhs = index_items(schema, names, path, &lt, la, false)?;
            let rhs = index_items(schema, names, path, &lt, ra, false)?;
            let lmap: HashMap<&PathElement, &Value> = lhs.iter().map(|(pe, v)| (pe, *v)).collect();
            let rmap: HashMap<&PathElement, &Value> = rhs.iter().map(|(pe, v)| (pe, *v)).collect();
            for (pe, rv) in &rhs {
                path.push(pe.clone());
                cmp(lmap.get(pe).copied(), Some(rv), schema, names, path, c)?;
                path.pop();
            }
            for (pe, lv) in &lhs {
                if !rmap.contains_key(pe) {
                    path.push(pe.clone());
                    cmp(Some(lv), None, schema, names, path, c)?;
                    path.pop();
                }
            }
        }
        _ => {
            leaf(c, path);
            return Ok(());
        }
    }
    if !is_root {
        match (l, r) {
            (None, _) => c.added.insert(path),
            (_, None) => c.removed.insert(path),
            _ => {}
        }
    }
    Ok(())
}
