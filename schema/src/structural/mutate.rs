//! Structural defaulting and pruning (`schema/defaulting` and `schema/pruning`).

use serde_json::Value;

use super::{additional_schema, embedded, items, nullable, preserves_unknown, props};

/// Applies the schema's `default`s to `obj` in place, as kube-apiserver's structural
/// defaulting does: a property that is absent, or null where the property is not
/// `nullable`, takes its default; the same for null array items and null
/// `additionalProperties` values. Defaults are applied recursively, also inside defaulted
/// values. Afterwards nulls of non-nullable fields without a default are dropped
/// (`PruneNonNullableNullsWithoutDefaults`, which kube runs in the same step).
pub fn default(schema: &Value, obj: &mut Value) {
    apply_defaults(schema, obj);
    prune_nulls(schema, obj);
}

fn non_nullable_null(v: &Value, s: Option<&Value>) -> bool {
    v.is_null() && s.is_some_and(|s| !nullable(s))
}

fn apply_defaults(s: &Value, x: &mut Value) {
    match x {
        Value::Object(m) => {
            if let Some(ps) = props(s) {
                for (k, p) in ps {
                    let Some(d) = p.get("default") else { continue };
                    match m.get(k) {
                        None => {
                            m.insert(k.clone(), d.clone());
                        }
                        Some(v) if non_nullable_null(v, Some(p)) => {
                            m.insert(k.clone(), d.clone());
                        }
                        Some(_) => {}
                    }
                }
            }
            let ap = additional_schema(s);
            for (k, v) in m.iter_mut() {
                if let Some(p) = props(s).and_then(|ps| ps.get(k)) {
                    apply_defaults(p, v);
                } else if let Some(ap) = ap {
                    if non_nullable_null(v, Some(ap))
                        && let Some(d) = ap.get("default")
                    {
                        *v = d.clone();
                    }
                    apply_defaults(ap, v);
                }
            }
        }
        Value::Array(a) => {
            if let Some(item) = items(s) {
                for v in a.iter_mut() {
                    if non_nullable_null(v, Some(item))
                        && let Some(d) = item.get("default")
                    {
                        *v = d.clone();
                    }
                    apply_defaults(item, v);
                }
            }
        }
        _ => {}
    }
}

/// Drops `null` values of object fields that are neither nullable nor defaulted (and null
/// items of such arrays are left alone, as in kube).
fn prune_nulls(s: &Value, x: &mut Value) {
    match x {
        Value::Object(m) => {
            let ap = additional_schema(s);
            m.retain(|k, v| {
                let sub = props(s).and_then(|ps| ps.get(k)).or(ap);
                !(v.is_null() && sub.is_some_and(|p| !nullable(p) && p.get("default").is_none()))
            });
            for (k, v) in m.iter_mut() {
                if let Some(sub) = props(s).and_then(|ps| ps.get(k)).or(ap) {
                    prune_nulls(sub, v);
                }
            }
        }
        Value::Array(a) => {
            if let Some(item) = items(s) {
                for v in a {
                    prune_nulls(item, v);
                }
            }
        }
        _ => {}
    }
}

/// Drops every field the schema does not specify, unless a node has
/// `x-kubernetes-preserve-unknown-fields`, and returns the dropped fields' paths, sorted
/// (`spec.foo`, `spec.items[0].bar`): kube's `unknown field "spec.foo"` warnings.
///
/// The root is an embedded resource: its `apiVersion` and `kind` (strings) and `metadata`
/// (an object) are kept and not descended into (pruning metadata to `ObjectMeta` is the API
/// layer's job); so are those of every `x-kubernetes-embedded-resource`.
pub fn prune(schema: &Value, obj: &mut Value) -> Vec<String> {
    let mut root = schema.clone();
    if let Value::Object(m) = &mut root {
        m.insert("x-kubernetes-embedded-resource".into(), Value::Bool(true));
    }
    let mut pruned = Vec::new();
    prune_at(Some(&root), obj, "", &mut pruned);
    pruned.sort();
    pruned
}

fn join(parent: &str, k: &str) -> String {
    if parent.is_empty() {
        k.to_string()
    } else {
        format!("{parent}.{k}")
    }
}

fn prune_at(s: Option<&Value>, x: &mut Value, path: &str, pruned: &mut Vec<String>) {
    if let Some(s) = s
        && preserves_unknown(s)
    {
        skip_prune(s, x, path, pruned);
        return;
    }
    match x {
        Value::Object(m) => {
            let Some(s) = s else {
                let keys: Vec<String> = m.keys().cloned().collect();
                for k in keys {
                    pruned.push(join(path, &k));
                }
                m.clear();
                return;
            };
            let keys: Vec<String> = m.keys().cloned().collect();
            for k in keys {
                if embedded(s) && kept_type_meta(&k, m.get(&k)) {
                    continue;
                }
                let p = join(path, &k);
                if let Some(prop) = props(s).and_then(|ps| ps.get(&k)) {
                    if let Some(v) = m.get_mut(&k) {
                        prune_at(Some(prop), v, &p, pruned);
                    }
                } else if s.get("additionalProperties").is_some() {
                    let ap = additional_schema(s);
                    if let Some(v) = m.get_mut(&k) {
                        prune_at(ap, v, &p, pruned);
                    }
                } else {
                    let meta_at_root =
                        path.is_empty() && matches!(k.as_str(), "apiVersion" | "kind" | "metadata");
                    if !meta_at_root {
                        pruned.push(p);
                    }
                    m.remove(&k);
                }
            }
        }
        Value::Array(a) => {
            let item = s.and_then(items);
            for (i, v) in a.iter_mut().enumerate() {
                let p = if s.is_some() {
                    format!("{path}[{i}]")
                } else {
                    path.to_string()
                };
                prune_at(item, v, &p, pruned);
            }
        }
        _ => {}
    }
}

/// An embedded resource's `apiVersion`/`kind` (when strings) and `metadata` (when an
/// object) are kept as they are.
fn kept_type_meta(k: &str, v: Option<&Value>) -> bool {
    match k {
        "apiVersion" | "kind" => v.is_some_and(Value::is_string),
        "metadata" => v.is_some_and(Value::is_object),
        _ => false,
    }
}

/// Below `x-kubernetes-preserve-unknown-fields`: unknown fields stay, specified ones are
/// still pruned by their own schemas.
fn skip_prune(s: &Value, x: &mut Value, path: &str, pruned: &mut Vec<String>) {
    match x {
        Value::Object(m) => {
            for (k, v) in m.iter_mut() {
                if embedded(s) && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                let p = join(path, k);
                if let Some(prop) = props(s).and_then(|ps| ps.get(k)) {
                    prune_at(Some(prop), v, &p, pruned);
                } else if s.get("additionalProperties").is_some() {
                    prune_at(additional_schema(s), v, &p, pruned);
                }
            }
        }
        Value::Array(a) => {
            if let Some(item) = items(s) {
                for (i, v) in a.iter_mut().enumerate() {
                    skip_prune(item, v, &format!("{path}[{i}]"), pruned);
                }
            }
        }
        _ => {}
    }
}
