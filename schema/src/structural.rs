//! Structural schemas of CustomResourceDefinitions, as kube-apiserver 1.33 applies them.
//!
//! A CRD version's `openAPIV3Schema` is plain JSON here (`serde_json::Value`), read where it
//! is used; nothing is converted into typed structs. Five pure functions, in the order a
//! write takes them:
//! - [`check_structural`] — at CRD create/update: is the schema structural, are its
//!   extensions consistent, do its defaults validate and survive pruning, do its CEL rules
//!   compile ([`check_cel`]). Field paths start at a prefix the caller names
//!   (`spec.versions[0].schema.openAPIV3Schema`).
//! - [`prune`] — drop the fields the schema does not specify (the unknown-field paths feed
//!   `fieldValidation=Warn|Strict`).
//! - [`default`] — fill in `default`s where fields are absent (or null and not nullable).
//! - [`validate`] — the OpenAPI value validations of kube-openapi, embedded-resource
//!   metadata and `x-kubernetes-list-type` uniqueness, with kube's paths and messages.
//! - [`validate_cel`] — `x-kubernetes-validations` rules (`self`, `oldSelf`), evaluated with
//!   the `cel` crate under a cost bound (see `cel.rs` for what is and is not bounded).
//!
//! Messages follow kube-apiserver 1.33 (apimachinery `field.Error` bodies, kube-openapi's
//! `... in body must be of type integer: "string"`); each deliberate difference is said
//! where it is made.

use serde_json::{Map, Value};

use crate::validate::{Cause, go_quote};

mod cel;
mod check;
mod mutate;
mod validation;

#[cfg(test)]
mod tests;

pub use cel::{
    CEL_EXPRESSION_BYTES_MAX, CEL_EXPRESSION_NODES_MAX, CEL_RULE_COST_MAX, CEL_TOTAL_COST_MAX,
    check_cel, validate_cel,
};
pub use check::check_structural;
pub use mutate::{default, prune};
pub use validation::{PATTERN_REGEX_BYTES_MAX, validate};

// ---- schema accessors -------------------------------------------------------------------

fn props(s: &Value) -> Option<&Map<String, Value>> {
    s.get("properties").and_then(Value::as_object)
}

fn type_of(s: &Value) -> &str {
    s.get("type").and_then(Value::as_str).unwrap_or("")
}

fn flag(s: &Value, key: &str) -> bool {
    s.get(key).and_then(Value::as_bool).unwrap_or(false)
}

fn preserves_unknown(s: &Value) -> bool {
    flag(s, "x-kubernetes-preserve-unknown-fields")
}

fn int_or_string(s: &Value) -> bool {
    flag(s, "x-kubernetes-int-or-string")
}

fn embedded(s: &Value) -> bool {
    flag(s, "x-kubernetes-embedded-resource")
}

fn nullable(s: &Value) -> bool {
    flag(s, "nullable")
}

/// The schema of `additionalProperties` when it is a schema (not a bool).
fn additional_schema(s: &Value) -> Option<&Value> {
    s.get("additionalProperties").filter(|v| v.is_object())
}

fn items(s: &Value) -> Option<&Value> {
    s.get("items").filter(|v| v.is_object())
}

fn str_list(s: &Value, key: &str) -> Vec<String> {
    s.get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

// ---- paths ------------------------------------------------------------------------------

/// `parent.child` as apimachinery's `field.Path.Child` renders it.
fn child(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}.{name}")
    }
}

/// `parent[key]` as `field.Path.Key` (and `.Index`) render it.
fn key(parent: &str, k: &str) -> String {
    format!("{parent}[{k}]")
}

// ---- Go renderings of values --------------------------------------------------------------

/// A float as Go's `%v` prints it (`strconv.FormatFloat(f, 'g', -1, 64)`): `10`, `1.5`,
/// `1e+06`, `1e-05`.
fn go_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    if f == 0.0 {
        return "0".into();
    }
    // Rust's `{:e}` gives the shortest round-trip digits: `1.234567e6`.
    let e = format!("{f:e}");
    let (mantissa, exp) = e.split_once('e').unwrap_or((&e, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..6).contains(&exp) {
        // Go switches to %e when the exponent is < -4 or >= the precision, which is 6 for
        // the shortest form.
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", exp.abs());
    }
    let s = format!("{f}");
    s.strip_suffix(".0").map(str::to_string).unwrap_or(s)
}

/// A JSON number as Go prints the value decoded from it (`int64` or `float64`, `%v`).
fn go_number(n: &serde_json::Number) -> String {
    if let Some(i) = n.as_i64() {
        i.to_string()
    } else if let Some(u) = n.as_u64() {
        u.to_string()
    } else {
        go_float(n.as_f64().unwrap_or(0.0))
    }
}

/// A JSON value as apimachinery's `field.Error` prints a bad value: strings quoted, numbers
/// and bools bare, null as `"null"`, objects and arrays in Go's `%#v`.
fn go_value(v: &Value) -> String {
    match v {
        Value::Null => go_quote("null"),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => go_number(n),
        Value::String(s) => go_quote(s),
        Value::Array(_) | Value::Object(_) => go_sharp_v(v),
    }
}

/// Go's `%#v` of a value decoded from JSON into `interface{}`.
fn go_sharp_v(v: &Value) -> String {
    match v {
        Value::Null => "interface {}(nil)".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => go_number(n),
        Value::String(s) => go_quote(s),
        Value::Array(a) => {
            let parts: Vec<String> = a.iter().map(go_sharp_v).collect();
            format!("[]interface {{}}{{{}}}", parts.join(", "))
        }
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .iter()
                .map(|k| format!("{}:{}", go_quote(k), go_sharp_v(&m[k.as_str()])))
                .collect();
            format!("map[string]interface {{}}{{{}}}", parts.join(", "))
        }
    }
}

/// The JSON type name kube-openapi reports for a value (`integer` for whole numbers).
fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// JSON equality with numbers compared by value (`1` equals `1.0`, as Go's decoded
/// `int64`/`float64` compare in kube-openapi's enum check).
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(i), Some(j)) => i == j,
            _ => x.as_f64() == y.as_f64(),
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_eq(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

fn type_invalid(field: &str, value: &str, detail: &str) -> Cause {
    Cause {
        reason: "FieldValueTypeInvalid".into(),
        message: format!("Invalid value: {value}: {detail}"),
        field: field.into(),
    }
}

fn too_many(field: &str, actual: usize, max: u64) -> Cause {
    let unit = if max == 1 { "item" } else { "items" };
    Cause {
        reason: "FieldValueTooMany".into(),
        message: format!("Too many: {actual}: must have at most {max} {unit}"),
        field: field.into(),
    }
}

fn not_supported_values(field: &str, value: &Value, supported: &[Value]) -> Cause {
    let list: Vec<String> = supported
        .iter()
        .map(|v| match v {
            Value::String(s) => go_quote(s),
            other => go_quote(&other.to_string()),
        })
        .collect();
    Cause {
        reason: "FieldValueNotSupported".into(),
        message: format!(
            "Unsupported value: {}: supported values: {}",
            go_value(value),
            list.join(", ")
        ),
        field: field.into(),
    }
}
