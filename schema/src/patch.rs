//! Strategic merge patch for the built-in types: a JSON merge patch in which lists that
//! Kubernetes tags `patchStrategy:"merge"` merge element by element on their
//! `patchMergeKey` instead of being replaced, plus the SMP directives (`$patch`,
//! `$retainKeys`, `$deleteFromPrimitiveList/<f>`, `$setElementOrder/<f>`).
//!
//! The merge keys are data: for a built-in kind, the `x-kubernetes-patch-strategy` and
//! `x-kubernetes-patch-merge-key` of its OpenAPI definition ([`crate::openapi`]), the same
//! metadata kubectl computes its patches from; without a definition, the table in
//! [`list_strategy`], keyed by the field path with list indices removed. Lists without a
//! merge strategy replace, as RFC 7396 does.

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

/// The strategy of the list at `path` from the OpenAPI definition of the patched kind.
pub fn schema_list_strategy(def: &'static Value, path: &[&str]) -> Option<ListStrategy> {
    let prop = crate::openapi::field(def, path)?;
    let strategy = prop.get("x-kubernetes-patch-strategy")?.as_str()?;
    if !strategy.split(',').any(|s| s == "merge") {
        return None;
    }
    Some(
        match prop
            .get("x-kubernetes-patch-merge-key")
            .and_then(Value::as_str)
        {
            Some(key) => ListStrategy::MergeOnKey(key),
            None => ListStrategy::MergeScalars,
        },
    )
}

/// Where list strategies come from for one patch.
#[derive(Clone, Copy)]
enum Strategies {
    Schema(&'static Value),
    Table,
}

impl Strategies {
    fn of(self, path: &[&str]) -> Option<ListStrategy> {
        match self {
            Strategies::Schema(def) => schema_list_strategy(def, path),
            Strategies::Table => list_strategy(path),
        }
    }
}

/// Applies a strategic merge patch to an object of the kind whose OpenAPI definition is
/// `def` (its list strategies come from there); with `None`, from [`list_strategy`].
///
/// # Errors
/// A patch that is not an object, or a directive with a value of the wrong shape.
pub fn strategic_merge_typed(
    def: Option<&'static Value>,
    original: &Value,
    patch: &Value,
) -> Result<Value, PatchError> {
    let strategies = def.map_or(Strategies::Table, Strategies::Schema);
    merge_root(strategies, original, patch)
}

/// Applies a strategic merge patch to `original`, with the list strategies of
/// [`list_strategy`].
///
/// # Errors
/// A patch that is not an object, or a directive with a value of the wrong shape.
pub fn strategic_merge(original: &Value, patch: &Value) -> Result<Value, PatchError> {
    merge_root(Strategies::Table, original, patch)
}

fn merge_root(st: Strategies, original: &Value, patch: &Value) -> Result<Value, PatchError> {
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
    Ok(merge_map(st, base, p, &mut path)?.map_or(Value::Object(Map::new()), Value::Object))
}

/// Merges `patch` into `base`; `None` when a `$patch: delete` removes the whole map.
fn merge_map<'a>(
    st: Strategies,
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
                merge_map(st, b, pv, path)?.map(Value::Object)
            }
            (old, Value::Array(pl)) => Some(merge_list(st, old, pl, path)?),
            (_, Value::Object(pv)) => merge_map(st, Map::new(), pv, path)?.map(Value::Object),
            (_, other) => Some(other.clone()),
        };
        path.pop();
        if let Some(m) = merged {
            base.insert(k.clone(), m);
        }
    }
    for (field, order) in orders {
        path.push(field);
        let key = match st.of(path) {
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

fn merge_list(
    st: Strategies,
    old: Option<Value>,
    patch: &[Value],
    path: &[&str],
) -> Result<Value, PatchError> {
    let old = match old {
        Some(Value::Array(a)) => a,
        _ => Vec::new(),
    };
    match st.of(path) {
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
                        match merge_map(st, base, pm, &mut sub)? {
                            Some(m) => out[i] = Value::Object(m),
                            None => {
                                out.remove(i);
                            }
                        }
                    }
                    None => {
                        if let Some(m) = merge_map(st, Map::new(), pm, &mut sub)? {
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

    /// (what, kind as group/version/kind, original, patch, expected)
    type TypedCase = (
        &'static str,
        (&'static str, &'static str, &'static str),
        Value,
        Value,
        Value,
    );

    fn typed_cases() -> Vec<TypedCase> {
        let pod = ("", "v1", "Pod");
        let deploy = ("apps", "v1", "Deployment");
        let svc = ("", "v1", "Service");
        vec![
            (
                "pod volumes merge on name",
                pod,
                json!({"spec": {"volumes": [{"name": "a", "emptyDir": {}}, {"name": "b", "emptyDir": {}}]}}),
                json!({"spec": {"volumes": [{"name": "b", "configMap": {"name": "cm"}, "emptyDir": null}]}}),
                json!({"spec": {"volumes": [{"name": "a", "emptyDir": {}}, {"name": "b", "configMap": {"name": "cm"}}]}}),
            ),
            (
                "tolerations have no merge key and are replaced",
                pod,
                json!({"spec": {"tolerations": [{"key": "a", "operator": "Exists"}]}}),
                json!({"spec": {"tolerations": [{"key": "b", "operator": "Exists"}]}}),
                json!({"spec": {"tolerations": [{"key": "b", "operator": "Exists"}]}}),
            ),
            (
                "a deployment's template containers merge on name, their ports on containerPort",
                deploy,
                json!({"spec": {"template": {"spec": {"containers": [{"name": "n", "image": "a", "ports": [{"containerPort": 80}, {"containerPort": 443}]}]}}}}),
                json!({"spec": {"template": {"spec": {"containers": [{"name": "n", "ports": [{"containerPort": 443, "$patch": "delete"}]}]}}}}),
                json!({"spec": {"template": {"spec": {"containers": [{"name": "n", "image": "a", "ports": [{"containerPort": 80}]}]}}}}),
            ),
            (
                "kubectl apply's removal of a container with $setElementOrder",
                deploy,
                json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "2"}]}}}}),
                json!({"spec": {"template": {"spec": {"$setElementOrder/containers": [{"name": "a"}], "containers": [{"name": "a", "image": "3"}, {"name": "b", "$patch": "delete"}]}}}}),
                json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "3"}]}}}}),
            ),
            (
                "a deployment strategy switch clears rollingUpdate with $retainKeys",
                deploy,
                json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}}),
                json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": null}}}),
                json!({"spec": {"strategy": {"type": "Recreate"}}}),
            ),
            (
                "service ports merge on port",
                svc,
                json!({"spec": {"ports": [{"port": 80, "name": "http"}, {"port": 443}]}}),
                json!({"spec": {"ports": [{"port": 443, "name": "https"}]}}),
                json!({"spec": {"ports": [{"port": 80, "name": "http"}, {"port": 443, "name": "https"}]}}),
            ),
            (
                "labels are a map: keys merge, null deletes",
                deploy,
                json!({"metadata": {"labels": {"a": "1", "b": "2"}}}),
                json!({"metadata": {"labels": {"a": null, "c": "3"}}}),
                json!({"metadata": {"labels": {"b": "2", "c": "3"}}}),
            ),
            (
                "finalizers merge as a set",
                pod,
                json!({"metadata": {"finalizers": ["x"]}}),
                json!({"metadata": {"finalizers": ["y"]}}),
                json!({"metadata": {"finalizers": ["x", "y"]}}),
            ),
            (
                "container args have no strategy and are replaced",
                pod,
                json!({"spec": {"containers": [{"name": "a", "args": ["1", "2"]}]}}),
                json!({"spec": {"containers": [{"name": "a", "args": ["3"]}]}}),
                json!({"spec": {"containers": [{"name": "a", "args": ["3"]}]}}),
            ),
            (
                "env with $patch replace on the list replaces it",
                pod,
                json!({"spec": {"containers": [{"name": "a", "env": [{"name": "X"}, {"name": "Y"}]}]}}),
                json!({"spec": {"containers": [{"name": "a", "env": [{"$patch": "replace"}, {"name": "Z"}]}]}}),
                json!({"spec": {"containers": [{"name": "a", "env": [{"name": "Z"}]}]}}),
            ),
        ]
    }

    #[test]
    fn typed_strategic_merge_patches_read_their_strategies_from_the_openapi_schema() {
        for (what, (g, v, k), original, patch, expected) in typed_cases() {
            let def = crate::openapi::definition(g, v, k);
            assert!(def.is_some(), "{what}: {k} has a definition");
            let got = strategic_merge_typed(def, &original, &patch).unwrap();
            assert_eq!(got, expected, "{what}");
        }
    }

    #[test]
    fn the_schema_and_the_table_agree_on_the_common_merge_keys() {
        let pod = crate::openapi::definition("", "v1", "Pod").unwrap();
        for path in [
            &["spec", "containers"][..],
            &["spec", "containers", "env"],
            &["spec", "containers", "ports"],
            &["spec", "containers", "volumeMounts"],
            &["spec", "volumes"],
            &["spec", "imagePullSecrets"],
            &["metadata", "ownerReferences"],
            &["status", "conditions"],
        ] {
            assert_eq!(
                schema_list_strategy(pod, path),
                list_strategy(path),
                "{path:?}"
            );
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
