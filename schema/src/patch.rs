//! Strategic merge patch for the built-in types: a JSON merge patch in which lists that
//! Kubernetes tags `patchStrategy:"merge"` merge element by element on their
//! `patchMergeKey` instead of being replaced, plus the SMP directives (`$patch`,
//! `$retainKeys`, `$deleteFromPrimitiveList/<f>`, `$setElementOrder/<f>`).
//!
//! The merge keys are data ([`list_strategy`]), keyed by the field path with list indices
//! removed. Fields not in the table replace, as RFC 7396 does.

use serde_json::{Map, Value};

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PatchError(pub String);

/// How a list field merges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListStrategy {
    /// Elements are objects merged on this key.
    MergeOnKey(&'static str),
    /// A list of scalars merged as a set (e.g. `metadata.finalizers`).
    MergeScalars,
}

/// The strategy of the list at `path` (field names from the object root, no indices), as
/// the Go types' `patchStrategy`/`patchMergeKey` tags declare it.
pub fn list_strategy(path: &[&str]) -> Option<ListStrategy> {
    use ListStrategy::{MergeOnKey, MergeScalars};
    let field = *path.last()?;
    let parent = path.len().checked_sub(2).map(|i| path[i]);
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "imagePullSecrets"
        | "resourceClaims"
        | "schedulingGates"
        | "env" => MergeOnKey("name"),
        "volumeMounts" => MergeOnKey("mountPath"),
        "volumeDevices" => MergeOnKey("devicePath"),
        "ports"
            if matches!(
                parent,
                Some("containers" | "initContainers" | "ephemeralContainers")
            ) =>
        {
            MergeOnKey("containerPort")
        }
        "ports" if path == ["spec", "ports"] => MergeOnKey("port"),
        "hostAliases" => MergeOnKey("ip"),
        "podIPs" | "hostIPs" if parent == Some("status") => MergeOnKey("ip"),
        "ownerReferences" if parent == Some("metadata") => MergeOnKey("uid"),
        "finalizers" if parent == Some("metadata") => MergeScalars,
        "conditions" if parent == Some("status") => MergeOnKey("type"),
        "addresses" if path == ["status", "addresses"] => MergeOnKey("type"),
        "topologySpreadConstraints" => MergeOnKey("topologyKey"),
        "secrets" if path == ["secrets"] => MergeOnKey("name"),
        _ => return None,
    })
}

/// Applies a strategic merge patch to `original`.
///
/// # Errors
/// A patch that is not an object, or a directive with a value of the wrong shape.
pub fn strategic_merge(original: &Value, patch: &Value) -> Result<Value, PatchError> {
    let Value::Object(p) = patch else {
        return Err(PatchError(
            "a strategic merge patch must be a JSON object".into(),
        ));
    };
    let base = match original {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    let mut path = Vec::new();
    Ok(merge_map(base, p, &mut path)?.map_or(Value::Object(Map::new()), Value::Object))
}

/// Merges `patch` into `base`; `None` when a `$patch: delete` removes the whole map.
fn merge_map<'a>(
    mut base: Map<String, Value>,
    patch: &'a Map<String, Value>,
    path: &mut Vec<&'a str>,
) -> Result<Option<Map<String, Value>>, PatchError> {
    match patch.get("$patch").and_then(Value::as_str) {
        Some("delete") => return Ok(None),
        Some("replace") => {
            let mut out = Map::new();
            for (k, v) in patch {
                if !k.starts_with('$') {
                    out.insert(k.clone(), strip_directives(v));
                }
            }
            return Ok(Some(out));
        }
        Some("merge") | None => {}
        Some(other) => return Err(PatchError(format!("unknown patch type: {other}"))),
    }
    let mut orders: Vec<(&str, &Vec<Value>)> = Vec::new();
    for (k, v) in patch {
        if k == "$patch" || k == "$retainKeys" {
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            let Value::Array(remove) = v else {
                return Err(PatchError(format!("{k} must be a list")));
            };
            if let Some(Value::Array(list)) = base.get_mut(field) {
                list.retain(|x| !remove.contains(x));
            }
            continue;
        }
        if let Some(field) = k.strip_prefix("$setElementOrder/") {
            let Value::Array(order) = v else {
                return Err(PatchError(format!("{k} must be a list")));
            };
            orders.push((field, order));
            continue;
        }
        if v.is_null() {
            base.remove(k);
            continue;
        }
        path.push(k.as_str());
        let merged = match (base.remove(k), v) {
            (Some(Value::Object(b)), Value::Object(pv)) => {
                merge_map(b, pv, path)?.map(Value::Object)
            }
            (old, Value::Array(pl)) => Some(merge_list(old, pl, path)?),
            (_, Value::Object(pv)) => merge_map(Map::new(), pv, path)?.map(Value::Object),
            (_, other) => Some(other.clone()),
        };
        path.pop();
        if let Some(m) = merged {
            base.insert(k.clone(), m);
        }
    }
    for (field, order) in orders {
        path.push(field);
        let key = match list_strategy(path) {
            Some(ListStrategy::MergeOnKey(key)) => Some(key),
            _ => None,
        };
        path.pop();
        if let Some(Value::Array(list)) = base.get_mut(field) {
            reorder(list, order, key);
        }
    }
    if let Some(retain) = patch.get("$retainKeys") {
        let Value::Array(keep) = retain else {
            return Err(PatchError("$retainKeys must be a list".into()));
        };
        base.retain(|k, _| keep.iter().any(|x| x.as_str() == Some(k.as_str())));
    }
    Ok(Some(base))
}

fn merge_list(old: Option<Value>, patch: &[Value], path: &[&str]) -> Result<Value, PatchError> {
    let old = match old {
        Some(Value::Array(a)) => a,
        _ => Vec::new(),
    };
    match list_strategy(path) {
        None => Ok(Value::Array(patch.iter().map(strip_directives).collect())),
        Some(ListStrategy::MergeScalars) => {
            let mut out = old;
            for v in patch {
                if !out.contains(v) {
                    out.push(v.clone());
                }
            }
            Ok(Value::Array(out))
        }
        Some(ListStrategy::MergeOnKey(key)) => {
            // `[{"$patch": "replace"}, ...]` replaces the whole list.
            if patch
                .iter()
                .any(|e| e.get("$patch").and_then(Value::as_str) == Some("replace"))
            {
                return Ok(Value::Array(
                    patch
                        .iter()
                        .filter(|e| e.get("$patch").is_none())
                        .map(strip_directives)
                        .collect(),
                ));
            }
            let mut out = old;
            for pe in patch {
                let Value::Object(pm) = pe else {
                    return Err(PatchError(format!(
                        "the elements of {} must be objects",
                        path.join(".")
                    )));
                };
                let Some(kv) = pm.get(key) else {
                    return Err(PatchError(format!(
                        "map: {pe} does not contain declared merge key: {key}"
                    )));
                };
                let pos = out.iter().position(|o| o.get(key) == Some(kv));
                if pm.get("$patch").and_then(Value::as_str) == Some("delete") {
                    if let Some(i) = pos {
                        out.remove(i);
                    }
                    continue;
                }
                let mut sub: Vec<&str> = path.to_vec();
                match pos {
                    Some(i) => {
                        let base = match out[i].take() {
                            Value::Object(m) => m,
                            _ => Map::new(),
                        };
                        match merge_map(base, pm, &mut sub)? {
                            Some(m) => out[i] = Value::Object(m),
                            None => {
                                out.remove(i);
                            }
                        }
                    }
                    None => {
                        if let Some(m) = merge_map(Map::new(), pm, &mut sub)? {
                            out.push(Value::Object(m));
                        }
                    }
                }
            }
            Ok(Value::Array(out))
        }
    }
}

/// Orders `list` as `order` lists its elements (by merge key, or by value for scalars);
/// elements not named keep their relative order after the named ones.
fn reorder(list: &mut [Value], order: &[Value], key: Option<&str>) {
    let id = |v: &Value| -> Value {
        match key {
            Some(k) => v.get(k).cloned().unwrap_or(Value::Null),
            None => v.clone(),
        }
    };
    let rank = |v: &Value| {
        let i = id(v);
        order
            .iter()
            .position(|o| match key {
                Some(k) => o.get(k) == Some(&i),
                None => *o == i,
            })
            .unwrap_or(usize::MAX)
    };
    list.sort_by_key(|v| rank(v));
}

/// A patch value as plain data: directives removed.
fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test that panics has failed
mod tests {
    use super::*;
    use serde_json::json;

    /// (what, original, patch, expected)
    fn cases() -> Vec<(&'static str, Value, Value, Value)> {
        vec![
            (
                "scalars merge like a merge patch and null deletes",
                json!({"a": 1, "b": {"c": 2, "d": 3}}),
                json!({"a": 5, "b": {"c": null, "e": 4}}),
                json!({"a": 5, "b": {"d": 3, "e": 4}}),
            ),
            (
                "containers merge on name",
                json!({"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]}}),
                json!({"spec": {"containers": [{"name": "b", "image": "z"}]}}),
                json!({"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "z"}]}}),
            ),
            (
                "a new container is appended",
                json!({"spec": {"containers": [{"name": "a"}]}}),
                json!({"spec": {"containers": [{"name": "c", "image": "q"}]}}),
                json!({"spec": {"containers": [{"name": "a"}, {"name": "c", "image": "q"}]}}),
            ),
            (
                "$patch delete removes one element",
                json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}]}}),
                json!({"spec": {"containers": [{"name": "a", "$patch": "delete"}]}}),
                json!({"spec": {"containers": [{"name": "b"}]}}),
            ),
            (
                "container env merges on name inside a container",
                json!({"spec": {"containers": [{"name": "a", "env": [{"name": "X", "value": "1"}]}]}}),
                json!({"spec": {"containers": [{"name": "a", "env": [{"name": "Y", "value": "2"}]}]}}),
                json!({"spec": {"containers": [{"name": "a", "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]}]}}),
            ),
            (
                "lists without a strategy are replaced",
                json!({"spec": {"containers": [{"name": "a", "args": ["1", "2"]}]}}),
                json!({"spec": {"containers": [{"name": "a", "args": ["3"]}]}}),
                json!({"spec": {"containers": [{"name": "a", "args": ["3"]}]}}),
            ),
            (
                "finalizers merge as a set and can be deleted from",
                json!({"metadata": {"finalizers": ["a", "b"]}}),
                json!({"metadata": {"finalizers": ["c"], "$deleteFromPrimitiveList/finalizers": ["a"]}}),
                json!({"metadata": {"finalizers": ["b", "c"]}}),
            ),
            (
                "$patch replace on a map replaces it",
                json!({"spec": {"selector": {"a": "1", "b": "2"}}}),
                json!({"spec": {"selector": {"$patch": "replace", "c": "3"}}}),
                json!({"spec": {"selector": {"c": "3"}}}),
            ),
            (
                "$retainKeys drops the keys not listed",
                json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}}),
                json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}),
                json!({"spec": {"strategy": {"type": "Recreate"}}}),
            ),
            (
                "$setElementOrder orders merged elements",
                json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}]}}),
                json!({"spec": {"$setElementOrder/containers": [{"name": "b"}, {"name": "a"}], "containers": [{"name": "a", "image": "i"}]}}),
                json!({"spec": {"containers": [{"name": "b"}, {"name": "a", "image": "i"}]}}),
            ),
            (
                "service ports merge on port",
                json!({"spec": {"ports": [{"port": 80, "name": "http"}, {"port": 443}]}}),
                json!({"spec": {"ports": [{"port": 80, "targetPort": 8080}]}}),
                json!({"spec": {"ports": [{"port": 80, "name": "http", "targetPort": 8080}, {"port": 443}]}}),
            ),
        ]
    }

    #[test]
    fn strategic_merge_patches_follow_the_go_type_tags() {
        for (what, original, patch, expected) in cases() {
            let got = strategic_merge(&original, &patch).unwrap();
            assert_eq!(got, expected, "{what}");
        }
    }

    #[test]
    fn a_merge_list_element_without_its_key_is_an_error() {
        let err = strategic_merge(
            &json!({"spec": {"containers": []}}),
            &json!({"spec": {"containers": [{"image": "x"}]}}),
        );
        assert!(err.is_err());
    }
}
