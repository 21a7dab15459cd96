//! Name and `metadata` validation, with apimachinery's exact messages.
//!
//! The `is_*` functions return the list of problems with one string (empty = valid), worded
//! like `k8s.io/apimachinery/pkg/util/validation`, because clients and conformance tests
//! match on those sentences. [`validate_object_meta`] turns them into [`Cause`]s for a
//! 422 `Invalid` status, worded like `field.ErrorList` (`Invalid value: "Foo": ...`).
//!
//! Regular expressions are hand-written matchers (the crate takes no regex dependency); each
//! one states the apimachinery pattern it implements.

use serde_json::Value;

use crate::registry::{NameRule, ResourceInfo};

/// Longest DNS-1123 / DNS-1035 label, in characters.
pub const DNS1123_LABEL_CHARS_MAX: usize = 63;
/// Longest DNS-1123 subdomain, in characters.
pub const DNS1123_SUBDOMAIN_CHARS_MAX: usize = 253;
/// Longest name part of a qualified name (label and annotation keys), in characters.
pub const QUALIFIED_NAME_CHARS_MAX: usize = 63;
/// Longest label value, in characters.
pub const LABEL_VALUE_CHARS_MAX: usize = 63;
/// Largest total size of an object's annotations (keys plus values), in bytes.
pub const ANNOTATIONS_BYTES_MAX: usize = 256 * 1024;

const DNS1123_LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const DNS1123_LABEL_ERR: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character";
const DNS1123_SUBDOMAIN_FMT: &str =
    r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const DNS1123_SUBDOMAIN_ERR: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";
const DNS1035_LABEL_FMT: &str = "[a-z]([-a-z0-9]*[a-z0-9])?";
const DNS1035_LABEL_ERR: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character";
const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const QUALIFIED_NAME_ERR: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const LABEL_VALUE_FMT: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
const LABEL_VALUE_ERR: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";

/// One problem with a field, as a `StatusCause` of a 422 `Invalid` response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cause {
    /// `FieldValueInvalid`, `FieldValueRequired`, `FieldValueTooLong`,
    /// `FieldValueNotSupported`, `FieldValueForbidden` or `FieldValueDuplicate`.
    pub reason: String,
    /// The error body, e.g. `Invalid value: "Foo": a lowercase RFC 1123 subdomain ...`.
    pub message: String,
    /// The field path, e.g. `metadata.name`.
    pub field: String,
}

impl Cause {
    /// `Invalid value: <value>: <detail>`; `value` is already rendered (see [`go_quote`]).
    pub fn invalid(field: &str, value: &str, detail: &str) -> Cause {
        Cause {
            reason: "FieldValueInvalid".into(),
            message: format!("Invalid value: {value}: {detail}"),
            field: field.into(),
        }
    }

    /// `Required value` or `Required value: <detail>`.
    pub fn required(field: &str, detail: &str) -> Cause {
        Cause {
            reason: "FieldValueRequired".into(),
            message: with_detail("Required value", detail),
            field: field.into(),
        }
    }

    /// `Forbidden: <detail>`.
    pub fn forbidden(field: &str, detail: &str) -> Cause {
        Cause {
            reason: "FieldValueForbidden".into(),
            message: with_detail("Forbidden", detail),
            field: field.into(),
        }
    }

    /// `Too long: may not be more than <max> bytes`.
    pub fn too_long(field: &str, max_bytes: usize) -> Cause {
        let unit = if max_bytes == 1 { "byte" } else { "bytes" };
        Cause {
            reason: "FieldValueTooLong".into(),
            message: format!("Too long: may not be more than {max_bytes} {unit}"),
            field: field.into(),
        }
    }

    /// `Unsupported value: "x": supported values: "a", "b"`.
    pub fn not_supported(field: &str, value: &str, supported: &[&str]) -> Cause {
        let list: Vec<String> = supported.iter().map(|s| go_quote(s)).collect();
        Cause {
            reason: "FieldValueNotSupported".into(),
            message: format!(
                "Unsupported value: {}: supported values: {}",
                go_quote(value),
                list.join(", ")
            ),
            field: field.into(),
        }
    }

    /// `Not found: "x"`.
    pub fn not_found(field: &str, value: &str) -> Cause {
        Cause {
            reason: "FieldValueNotFound".into(),
            message: format!("Not found: {}", go_quote(value)),
            field: field.into(),
        }
    }

    /// `Duplicate value: <value>`; `value` is already rendered (see [`go_quote`]).
    pub fn duplicate_rendered(field: &str, value: &str) -> Cause {
        Cause {
            reason: "FieldValueDuplicate".into(),
            message: format!("Duplicate value: {value}"),
            field: field.into(),
        }
    }

    /// `Duplicate value: "x"`.
    pub fn duplicate(field: &str, value: &str) -> Cause {
        Cause {
            reason: "FieldValueDuplicate".into(),
            message: format!("Duplicate value: {}", go_quote(value)),
            field: field.into(),
        }
    }
}

impl std::fmt::Display for Cause {
    /// `field: message`, as one element of a Kubernetes `ErrorList`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

fn with_detail(kind: &str, detail: &str) -> String {
    if detail.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {detail}")
    }
}

/// The message of a 422 `Invalid` status, as kube-apiserver words it:
/// `Deployment.apps "web" is invalid: metadata.name: Invalid value: ...` (one cause) or
/// `... is invalid: [cause, cause]` (several).
pub fn invalid_message(info: &ResourceInfo, name: &str, causes: &[Cause]) -> String {
    let kind = if info.group.is_empty() {
        info.kind.clone()
    } else {
        format!("{}.{}", info.kind, info.group)
    };
    let list: Vec<String> = causes.iter().map(Cause::to_string).collect();
    let body = match list.as_slice() {
        [one] => one.clone(),
        _ => format!("[{}]", list.join(", ")),
    };
    format!("{kind} {} is invalid: {body}", go_quote(name))
}

/// A string quoted like Go's `%q` (how apimachinery prints a bad string value).
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A string list printed like Go's `%#v` of a `[]string`: `[]string{"a", "b"}`.
pub(crate) fn go_string_slice(values: &[String]) -> String {
    let quoted: Vec<String> = values.iter().map(|v| go_quote(v)).collect();
    format!("[]string{{{}}}", quoted.join(", "))
}

/// apimachinery's `RegexError`: the message, examples and the pattern used.
fn regex_error(msg: &str, fmt: &str, examples: &[&str]) -> String {
    let mut out = String::from(msg);
    if examples.is_empty() {
        out.push_str(" (regex used for validation is '");
    } else {
        out.push_str(" (e.g. ");
        for (i, example) in examples.iter().enumerate() {
            if i > 0 {
                out.push_str(" or ");
            }
            out.push('\'');
            out.push_str(example);
            out.push_str("', ");
        }
        out.push_str("regex used for validation is '");
    }
    out.push_str(fmt);
    out.push_str("')");
    out
}

fn max_len_error(chars: usize) -> String {
    format!("must be no more than {chars} characters")
}

/// Matches `[a-z0-9]([-a-z0-9]*[a-z0-9])?`.
fn matches_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    match (b.first(), b.last()) {
        (Some(&first), Some(&last)) => {
            alnum(first) && alnum(last) && b.iter().all(|&c| alnum(c) || c == b'-')
        }
        _ => false,
    }
}

/// Matches `[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*`.
fn matches_dns1123_subdomain(s: &str) -> bool {
    s.split('.').all(matches_dns1123_label)
}

/// Matches `[a-z]([-a-z0-9]*[a-z0-9])?`.
fn matches_dns1035_label(s: &str) -> bool {
    s.as_bytes().first().is_some_and(|c| c.is_ascii_lowercase()) && matches_dns1123_label(s)
}

/// Matches `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`.
fn matches_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && b.iter()
                    .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

/// A lowercase RFC 1123 label (namespace names, for example): at most 63 characters.
pub fn is_dns1123_label(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > DNS1123_LABEL_CHARS_MAX {
        errs.push(max_len_error(DNS1123_LABEL_CHARS_MAX));
    }
    if !matches_dns1123_label(s) {
        if matches_dns1123_subdomain(s) {
            // A valid subdomain that is not a label: the length was checked above, so it is dots.
            errs.push("must not contain dots".to_string());
        } else {
            errs.push(regex_error(
                DNS1123_LABEL_ERR,
                DNS1123_LABEL_FMT,
                &["my-name", "123-abc"],
            ));
        }
    }
    errs
}

/// A lowercase RFC 1123 subdomain (most object names): at most 253 characters.
pub fn is_dns1123_subdomain(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > DNS1123_SUBDOMAIN_CHARS_MAX {
        errs.push(max_len_error(DNS1123_SUBDOMAIN_CHARS_MAX));
    }
    if !matches_dns1123_subdomain(s) {
        errs.push(regex_error(
            DNS1123_SUBDOMAIN_ERR,
            DNS1123_SUBDOMAIN_FMT,
            &["example.com"],
        ));
    }
    errs
}

/// A DNS-1035 label (service names): starts with a letter, at most 63 characters.
pub fn is_dns1035_label(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > DNS1123_LABEL_CHARS_MAX {
        errs.push(max_len_error(DNS1123_LABEL_CHARS_MAX));
    }
    if !matches_dns1035_label(s) {
        errs.push(regex_error(
            DNS1035_LABEL_ERR,
            DNS1035_LABEL_FMT,
            &["my-name", "abc-123"],
        ));
    }
    errs
}

/// A qualified name (label, annotation and finalizer keys): `[prefix/]name`, where the
/// optional prefix is a DNS subdomain and the name at most 63 alphanumerics, `-`, `_`, `.`.
pub fn is_qualified_name(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = s.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else {
                errs.extend(
                    is_dns1123_subdomain(prefix)
                        .into_iter()
                        .map(|m| format!("prefix part {m}")),
                );
            }
            *name
        }
        _ => {
            errs.push(format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(
                    QUALIFIED_NAME_ERR,
                    QUALIFIED_NAME_FMT,
                    &["MyName", "my.name", "123-abc"]
                )
            ));
            return errs;
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else if name.len() > QUALIFIED_NAME_CHARS_MAX {
        errs.push(format!(
            "name part {}",
            max_len_error(QUALIFIED_NAME_CHARS_MAX)
        ));
    }
    if !matches_qualified_name_part(name) {
        errs.push(format!(
            "name part {}",
            regex_error(
                QUALIFIED_NAME_ERR,
                QUALIFIED_NAME_FMT,
                &["MyName", "my.name", "123-abc"]
            )
        ));
    }
    errs
}

/// A label value: empty, or at most 63 alphanumerics, `-`, `_`, `.` starting and ending
/// with an alphanumeric.
pub fn is_valid_label_value(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > LABEL_VALUE_CHARS_MAX {
        errs.push(max_len_error(LABEL_VALUE_CHARS_MAX));
    }
    if !s.is_empty() && !matches_qualified_name_part(s) {
        errs.push(regex_error(
            LABEL_VALUE_ERR,
            LABEL_VALUE_FMT,
            &["MyValue", "my_value", "12345"],
        ));
    }
    errs
}

/// A name that is safe as one URL path segment: not `.` or `..`, no `/` or `%`.
pub fn is_valid_path_segment_name(s: &str) -> Vec<String> {
    if s == "." || s == ".." {
        return vec![format!("may not be '{s}'")];
    }
    is_valid_path_segment_prefix(s)
}

fn is_valid_path_segment_prefix(s: &str) -> Vec<String> {
    ["/", "%"]
        .iter()
        .filter(|bad| s.contains(*bad))
        .map(|bad| format!("may not contain '{bad}'"))
        .collect()
}

/// Problems with `name` as a `metadata.name` under `rule` (empty = valid). An empty name is
/// reported by [`validate_object_meta`] as required, not here.
pub fn validate_name(rule: NameRule, name: &str) -> Vec<String> {
    match rule {
        NameRule::Dns1123Subdomain => is_dns1123_subdomain(name),
        NameRule::Dns1123Label => is_dns1123_label(name),
        NameRule::Dns1035Label => is_dns1035_label(name),
        NameRule::PathSegment => is_valid_path_segment_name(name),
    }
}

/// Problems with `prefix` as a `metadata.generateName`: like [`validate_name`], except that
/// a trailing `-` is allowed (a random suffix follows it).
pub fn validate_name_prefix(rule: NameRule, prefix: &str) -> Vec<String> {
    // apimachinery's maskTrailingDash, quirk included: the last *two* bytes become one "a"
    // ("abc-" is judged as "aba").
    let masked;
    let candidate = if prefix.len() > 1 && prefix.ends_with('-') {
        let kept = &prefix.as_bytes()[..prefix.len() - 2];
        masked = format!("{}a", String::from_utf8_lossy(kept));
        masked.as_str()
    } else {
        prefix
    };
    match rule {
        NameRule::PathSegment => is_valid_path_segment_prefix(prefix),
        _ => validate_name(rule, candidate),
    }
}

/// Validates an object's `metadata` the way kube-apiserver's `ValidateObjectMeta` does, for
/// a create or update of the resource `info` describes. Returns the causes of a 422 (empty
/// = valid).
///
/// Checks: `metadata` is an object; `name` is present unless `generateName` is, and valid
/// per [`ResourceInfo::name_rule`]; `generateName` is a valid prefix; `namespace`, when
/// present on a namespaced kind, is a DNS label, and is forbidden on a cluster-scoped kind;
/// `generation` is not negative; label keys are qualified names and values label values;
/// annotation keys are qualified names (case-insensitive) and all annotations together fit
/// in 256 KiB; finalizers are qualified names and not both `orphan` and
/// `foregroundDeletion`; owner references carry `apiVersion`, `kind`, `name`, `uid`, at
/// most one is the controller, and none is a core `Event`.
///
/// The caller fills `metadata.namespace` from the request path first; a missing namespace
/// is not reported.
pub fn validate_object_meta(info: &ResourceInfo, obj: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let meta = match obj.get("metadata") {
        Some(Value::Object(meta)) => meta,
        None | Some(Value::Null) => {
            causes.push(Cause::required("metadata", ""));
            return causes;
        }
        Some(other) => {
            causes.push(Cause::invalid(
                "metadata",
                &render_value(other),
                "must be an object",
            ));
            return causes;
        }
    };

    let name = string_field(meta, "metadata.name", "name", &mut causes);
    let generate_name = string_field(meta, "metadata.generateName", "generateName", &mut causes);
    let namespace = string_field(meta, "metadata.namespace", "namespace", &mut causes);

    if !generate_name.is_empty() {
        for msg in validate_name_prefix(info.name_rule, generate_name) {
            causes.push(Cause::invalid(
                "metadata.generateName",
                &go_quote(generate_name),
                &msg,
            ));
        }
    }
    if name.is_empty() {
        if generate_name.is_empty() {
            causes.push(Cause::required(
                "metadata.name",
                "name or generateName is required",
            ));
        }
    } else {
        for msg in validate_name(info.name_rule, name) {
            causes.push(Cause::invalid("metadata.name", &go_quote(name), &msg));
        }
    }

    if info.namespaced {
        if !namespace.is_empty() {
            for msg in is_dns1123_label(namespace) {
                causes.push(Cause::invalid(
                    "metadata.namespace",
                    &go_quote(namespace),
                    &msg,
                ));
            }
        }
    } else if !namespace.is_empty() {
        causes.push(Cause::forbidden(
            "metadata.namespace",
            "not allowed on this type",
        ));
    }

    if let Some(generation) = meta.get("generation").and_then(Value::as_i64)
        && generation < 0
    {
        causes.push(Cause::invalid(
            "metadata.generation",
            &generation.to_string(),
            "must be greater than or equal to 0",
        ));
    }

    validate_labels(meta.get("labels"), &mut causes);
    validate_annotations(meta.get("annotations"), &mut causes);
    validate_finalizers(meta.get("finalizers"), &mut causes);
    validate_owner_references(meta.get("ownerReferences"), &mut causes);
    causes
}

/// A string member of `metadata`; a present non-string is reported and read as "".
fn string_field<'a>(
    meta: &'a serde_json::Map<String, Value>,
    path: &str,
    key: &str,
    causes: &mut Vec<Cause>,
) -> &'a str {
    match meta.get(key) {
        None | Some(Value::Null) => "",
        Some(Value::String(s)) => s,
        Some(other) => {
            causes.push(Cause::invalid(
                path,
                &render_value(other),
                "must be a string",
            ));
            ""
        }
    }
}

/// A JSON value as apimachinery would print it in a cause: strings quoted, others as JSON.
pub(crate) fn render_value(v: &Value) -> String {
    match v {
        Value::String(s) => go_quote(s),
        other => other.to_string(),
    }
}

/// Iterates a string map in key order (Go's map order is random; ours is stable).
fn string_map<'a>(
    v: Option<&'a Value>,
    path: &str,
    causes: &mut Vec<Cause>,
) -> Vec<(&'a str, &'a str)> {
    let Some(v) = v else { return Vec::new() };
    let map = match v {
        Value::Null => return Vec::new(),
        Value::Object(map) => map,
        other => {
            causes.push(Cause::invalid(
                path,
                &render_value(other),
                "must be a map of string keys to string values",
            ));
            return Vec::new();
        }
    };
    let mut out: Vec<(&str, &str)> = Vec::with_capacity(map.len());
    for (k, value) in map {
        match value {
            Value::String(s) => out.push((k.as_str(), s.as_str())),
            other => causes.push(Cause::invalid(
                path,
                &render_value(other),
                &format!("value of {} must be a string", go_quote(k)),
            )),
        }
    }
    out.sort_unstable();
    out
}

/// A label map at `path` (`metadata.labels`, `spec.selector.matchLabels`): keys are
/// qualified names, values label values.
pub(crate) fn validate_labels_at(v: Option<&Value>, path: &str, causes: &mut Vec<Cause>) {
    for (k, value) in string_map(v, path, causes) {
        for msg in is_qualified_name(k) {
            causes.push(Cause::invalid(path, &go_quote(k), &msg));
        }
        for msg in is_valid_label_value(value) {
            causes.push(Cause::invalid(path, &go_quote(value), &msg));
        }
    }
}

fn validate_labels(v: Option<&Value>, causes: &mut Vec<Cause>) {
    validate_labels_at(v, "metadata.labels", causes);
}

fn validate_annotations(v: Option<&Value>, causes: &mut Vec<Cause>) {
    validate_annotations_at(v, "metadata.annotations", causes);
}

/// An annotation map at `path`: case-insensitive qualified-name keys, 256 KiB in all.
pub(crate) fn validate_annotations_at(v: Option<&Value>, path: &str, causes: &mut Vec<Cause>) {
    let mut total_bytes = 0usize;
    for (k, value) in string_map(v, path, causes) {
        // Annotation keys are qualified names in which case does not matter.
        for msg in is_qualified_name(&k.to_lowercase()) {
            causes.push(Cause::invalid(path, &go_quote(k), &msg));
        }
        total_bytes += k.len() + value.len();
    }
    if total_bytes > ANNOTATIONS_BYTES_MAX {
        causes.push(Cause::too_long(path, ANNOTATIONS_BYTES_MAX));
    }
}

fn validate_finalizers(v: Option<&Value>, causes: &mut Vec<Cause>) {
    const PATH: &str = "metadata.finalizers";
    let items = match v {
        None | Some(Value::Null) => return,
        Some(Value::Array(items)) => items,
        Some(other) => {
            causes.push(Cause::invalid(
                PATH,
                &render_value(other),
                "must be a list of strings",
            ));
            return;
        }
    };
    let mut names = Vec::with_capacity(items.len());
    for item in items {
        match item.as_str() {
            Some(name) => {
                for msg in is_qualified_name(name) {
                    causes.push(Cause::invalid(PATH, &go_quote(name), &msg));
                }
                names.push(name.to_string());
            }
            None => causes.push(Cause::invalid(
                PATH,
                &render_value(item),
                "must be a string",
            )),
        }
    }
    if names.iter().any(|n| n == "orphan") && names.iter().any(|n| n == "foregroundDeletion") {
        causes.push(Cause::invalid(
            PATH,
            &go_string_slice(&names),
            "finalizer orphan and foregroundDeletion cannot be both set",
        ));
    }
}

fn validate_owner_references(v: Option<&Value>, causes: &mut Vec<Cause>) {
    // apimachinery names these fields without the list index.
    const PATH: &str = "metadata.ownerReferences";
    let refs = match v {
        None | Some(Value::Null) => return,
        Some(Value::Array(refs)) => refs,
        Some(other) => {
            causes.push(Cause::invalid(PATH, &render_value(other), "must be a list"));
            return;
        }
    };
    let mut first_controller: Option<String> = None;
    for owner in refs {
        let text = |key: &str| owner.get(key).and_then(Value::as_str).unwrap_or("");
        let api_version = text("apiVersion");
        let kind = text("kind");
        let name = text("name");
        let uid = text("uid");
        let (group, version) = split_api_version(api_version);
        if version.is_empty() {
            causes.push(Cause::invalid(
                &format!("{PATH}.apiVersion"),
                &go_quote(api_version),
                "version must not be empty",
            ));
        }
        if kind.is_empty() {
            causes.push(Cause::invalid(
                &format!("{PATH}.kind"),
                &go_quote(kind),
                "kind must not be empty",
            ));
        }
        if name.is_empty() {
            causes.push(Cause::invalid(
                &format!("{PATH}.name"),
                &go_quote(name),
                "name must not be empty",
            ));
        }
        if uid.is_empty() {
            causes.push(Cause::invalid(
                &format!("{PATH}.uid"),
                &go_quote(uid),
                "uid must not be empty",
            ));
        }
        if group.is_empty() && version == "v1" && kind == "Event" {
            causes.push(Cause::invalid(
                PATH,
                &owner.to_string(),
                "/v1, Kind=Event is disallowed from being an owner",
            ));
        }
        if owner.get("controller").and_then(Value::as_bool) == Some(true) {
            let current = format!("{kind}/{name}");
            match &first_controller {
                Some(first) => causes.push(Cause::invalid(
                    PATH,
                    &Value::Array(refs.clone()).to_string(),
                    &format!(
                        "Only one reference can have Controller set to true. Found \"true\" in references for {first} and {current}"
                    ),
                )),
                None => first_controller = Some(current),
            }
        }
    }
}

/// `"apps/v1"` -> `("apps", "v1")`, `"v1"` -> `("", "v1")`; more than one `/` is no version.
fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        None => ("", api_version),
        Some((group, version)) if !version.contains('/') => (group, version),
        Some(_) => ("", ""),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::registry::Registry;

    const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
    const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";

    fn info(group: &str, version: &str, plural: &str) -> std::sync::Arc<ResourceInfo> {
        Registry::builtin()
            .get(group, version, plural)
            .cloned()
            .unwrap_or_else(|| panic!("{plural} is built in"))
    }

    fn causes(group: &str, plural: &str, obj: Value) -> Vec<Cause> {
        let version = "v1";
        validate_object_meta(&info(group, version, plural), &obj)
    }

    #[test]
    fn dns_names_are_judged_with_apimachinery_messages() {
        assert!(is_dns1123_subdomain("example.com").is_empty());
        assert!(is_dns1123_subdomain("a").is_empty());
        assert_eq!(is_dns1123_subdomain("Foo"), vec![SUBDOMAIN_MSG.to_string()]);
        assert_eq!(is_dns1123_subdomain(""), vec![SUBDOMAIN_MSG.to_string()]);
        assert_eq!(
            is_dns1123_subdomain("a..b"),
            vec![SUBDOMAIN_MSG.to_string()]
        );
        assert_eq!(is_dns1123_subdomain("-a"), vec![SUBDOMAIN_MSG.to_string()]);
        assert_eq!(
            is_dns1123_subdomain(&"a".repeat(254)),
            vec!["must be no more than 253 characters".to_string()]
        );
        assert!(is_dns1123_subdomain(&"a".repeat(253)).is_empty());

        assert!(is_dns1123_label("kube-system").is_empty());
        assert_eq!(
            is_dns1123_label("a.b"),
            vec!["must not contain dots".to_string()]
        );
        assert_eq!(is_dns1123_label("a_b"), vec![LABEL_MSG.to_string()]);
        assert_eq!(
            is_dns1123_label(&"a".repeat(64)),
            vec!["must be no more than 63 characters".to_string()]
        );

        assert!(is_dns1035_label("web").is_empty());
        assert_eq!(
            is_dns1035_label("1web"),
            vec!["a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')".to_string()]
        );
    }

    #[test]
    fn qualified_names_and_label_values_follow_apimachinery() {
        for ok in [
            "app",
            "example.com/App_1",
            "kubernetes.io/pv-protection",
            "a.b-c_d",
        ] {
            assert!(is_qualified_name(ok).is_empty(), "{ok}");
        }
        assert_eq!(
            is_qualified_name("/a"),
            vec!["prefix part must be non-empty".to_string()]
        );
        assert_eq!(
            is_qualified_name("a/").len(),
            2,
            "empty name part: non-empty and regex"
        );
        assert!(
            is_qualified_name("Bad.Prefix/a")[0]
                .starts_with("prefix part a lowercase RFC 1123 subdomain")
        );
        assert!(is_qualified_name("a/b/c")[0].starts_with("a qualified name must consist of"));
        assert_eq!(
            is_qualified_name(&"a".repeat(64)),
            vec!["name part must be no more than 63 characters".to_string()]
        );
        assert!(is_valid_label_value("").is_empty());
        assert!(is_valid_label_value("v1.2_3-x").is_empty());
        assert_eq!(is_valid_label_value("-x").len(), 1);
        assert_eq!(is_valid_label_value(&"a".repeat(64)).len(), 1);
    }

    #[test]
    fn path_segment_names_refuse_dots_slashes_and_percent() {
        assert!(validate_name(NameRule::PathSegment, "system:kube-scheduler").is_empty());
        assert!(validate_name(NameRule::PathSegment, "Any Thing").is_empty());
        assert_eq!(
            validate_name(NameRule::PathSegment, "."),
            vec!["may not be '.'"]
        );
        assert_eq!(
            validate_name(NameRule::PathSegment, ".."),
            vec!["may not be '..'"]
        );
        assert_eq!(
            validate_name(NameRule::PathSegment, "a/b%c"),
            vec!["may not contain '/'", "may not contain '%'"]
        );
        assert!(validate_name_prefix(NameRule::PathSegment, "..").is_empty());
    }

    #[test]
    fn generate_name_prefixes_may_end_with_a_dash() {
        assert!(validate_name_prefix(NameRule::Dns1123Subdomain, "web-").is_empty());
        assert!(validate_name_prefix(NameRule::Dns1035Label, "web-").is_empty());
        assert!(!validate_name_prefix(NameRule::Dns1123Subdomain, "-").is_empty());
        assert!(!validate_name_prefix(NameRule::Dns1123Subdomain, "Web-").is_empty());
        assert!(!validate_name(NameRule::Dns1123Subdomain, "web-").is_empty());
    }

    #[test]
    fn invalid_names_produce_kube_causes() {
        let found = causes(
            "",
            "pods",
            json!({"metadata": {"name": "Foo", "namespace": "default"}}),
        );
        assert_eq!(
            found,
            vec![Cause {
                reason: "FieldValueInvalid".into(),
                message: format!("Invalid value: \"Foo\": {SUBDOMAIN_MSG}"),
                field: "metadata.name".into(),
            }]
        );
        let pods = info("", "v1", "pods");
        assert_eq!(
            invalid_message(&pods, "Foo", &found),
            format!(
                "Pod \"Foo\" is invalid: metadata.name: Invalid value: \"Foo\": {SUBDOMAIN_MSG}"
            )
        );
        let services = causes("", "services", json!({"metadata": {"name": "1web"}}));
        assert_eq!(services.len(), 1);
        assert!(services[0].message.contains("DNS-1035"));
        let namespaces = causes("", "namespaces", json!({"metadata": {"name": "a.b"}}));
        assert_eq!(
            namespaces[0].message,
            "Invalid value: \"a.b\": must not contain dots"
        );
        assert!(
            causes(
                "rbac.authorization.k8s.io",
                "clusterroles",
                json!({"metadata": {"name": "system:admin"}})
            )
            .is_empty()
        );
    }

    #[test]
    fn name_is_required_unless_generate_name_is_set() {
        assert_eq!(
            causes("", "configmaps", json!({"metadata": {}})),
            vec![Cause {
                reason: "FieldValueRequired".into(),
                message: "Required value: name or generateName is required".into(),
                field: "metadata.name".into(),
            }]
        );
        assert!(
            causes(
                "",
                "configmaps",
                json!({"metadata": {"generateName": "cm-"}})
            )
            .is_empty()
        );
        let bad_prefix = causes(
            "",
            "configmaps",
            json!({"metadata": {"generateName": "CM-"}}),
        );
        assert_eq!(bad_prefix.len(), 1);
        assert_eq!(bad_prefix[0].field, "metadata.generateName");
        assert_eq!(causes("", "configmaps", json!({}))[0].field, "metadata");
        assert_eq!(
            causes("", "configmaps", json!({"metadata": 3}))[0].reason,
            "FieldValueInvalid"
        );
    }

    #[test]
    fn namespace_must_be_a_label_and_is_forbidden_on_cluster_kinds() {
        let bad = causes(
            "",
            "configmaps",
            json!({"metadata": {"name": "a", "namespace": "Prod"}}),
        );
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].field, "metadata.namespace");
        assert!(causes("", "configmaps", json!({"metadata": {"name": "a"}})).is_empty());
        assert_eq!(
            causes(
                "",
                "nodes",
                json!({"metadata": {"name": "n1", "namespace": "default"}})
            ),
            vec![Cause {
                reason: "FieldValueForbidden".into(),
                message: "Forbidden: not allowed on this type".into(),
                field: "metadata.namespace".into(),
            }]
        );
    }

    #[test]
    fn labels_and_annotations_are_checked() {
        let found = causes(
            "",
            "configmaps",
            json!({"metadata": {"name": "a", "labels": {"good": "x", "bad key": "v", "k": "-bad"}}}),
        );
        let fields: Vec<&str> = found.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, vec!["metadata.labels", "metadata.labels"]);
        assert!(
            found[0]
                .message
                .starts_with("Invalid value: \"bad key\": name part must consist")
        );
        assert!(
            found[1]
                .message
                .starts_with("Invalid value: \"-bad\": a valid label must be")
        );

        // Annotation keys are case-insensitive qualified names.
        assert!(
            causes(
                "",
                "configmaps",
                json!({"metadata": {"name": "a", "annotations": {"Example.COM/Key": "v"}}})
            )
            .is_empty()
        );
        let big = "x".repeat(ANNOTATIONS_BYTES_MAX);
        assert_eq!(
            causes(
                "",
                "configmaps",
                json!({"metadata": {"name": "a", "annotations": {"k": big}}})
            ),
            vec![Cause {
                reason: "FieldValueTooLong".into(),
                message: "Too long: may not be more than 262144 bytes".into(),
                field: "metadata.annotations".into(),
            }]
        );
    }

    #[test]
    fn finalizers_must_be_qualified_names_and_not_orphan_and_foreground_together() {
        assert!(causes(
            "",
            "persistentvolumes",
            json!({"metadata": {"name": "pv", "finalizers": ["kubernetes.io/pv-protection", "foregroundDeletion"]}})
        )
        .is_empty());
        let bad = causes(
            "",
            "configmaps",
            json!({"metadata": {"name": "a", "finalizers": ["a/b/c"]}}),
        );
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].field, "metadata.finalizers");
        let both = causes(
            "",
            "configmaps",
            json!({"metadata": {"name": "a", "finalizers": ["orphan", "foregroundDeletion"]}}),
        );
        assert_eq!(
            both[0].message,
            "Invalid value: []string{\"orphan\", \"foregroundDeletion\"}: finalizer orphan and foregroundDeletion cannot be both set"
        );
    }

    #[test]
    fn owner_references_need_api_version_kind_name_and_uid() {
        let found = causes(
            "apps",
            "replicasets",
            json!({"metadata": {"name": "rs", "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment"}]}}),
        );
        assert_eq!(
            found,
            vec![
                Cause::invalid(
                    "metadata.ownerReferences.name",
                    "\"\"",
                    "name must not be empty"
                ),
                Cause::invalid(
                    "metadata.ownerReferences.uid",
                    "\"\"",
                    "uid must not be empty"
                ),
            ]
        );
        let two_controllers = causes(
            "",
            "pods",
            json!({"metadata": {"name": "p", "ownerReferences": [
                {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "a", "uid": "1", "controller": true},
                {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "b", "uid": "2", "controller": true}
            ]}}),
        );
        assert_eq!(two_controllers.len(), 1);
        assert!(two_controllers[0].message.ends_with(
            "Only one reference can have Controller set to true. Found \"true\" in references for ReplicaSet/a and ReplicaSet/b"
        ));
        let event_owner = causes(
            "",
            "pods",
            json!({"metadata": {"name": "p", "ownerReferences": [
                {"apiVersion": "v1", "kind": "Event", "name": "e", "uid": "1"}
            ]}}),
        );
        assert!(
            event_owner[0]
                .message
                .ends_with("is disallowed from being an owner")
        );
        let no_version = causes(
            "",
            "pods",
            json!({"metadata": {"name": "p", "ownerReferences": [
                {"apiVersion": "apps/", "kind": "X", "name": "e", "uid": "1"}
            ]}}),
        );
        assert_eq!(
            no_version[0].message,
            "Invalid value: \"apps/\": version must not be empty"
        );
    }

    #[test]
    fn go_quote_escapes_like_go() {
        assert_eq!(go_quote("a\"b\\c\n"), r#""a\"b\\c\n""#);
        assert_eq!(go_quote("\u{1}"), r#""\x01""#);
    }
}
