//! The OpenAPI definitions of the built-in types, as data: Kubernetes v1.33's Swagger 2.0
//! `definitions` for the stable groups (`openapi/definitions.json`, written by
//! `scripts/gen-openapi-defs.py`), with lookups by group/version/kind and the transitive
//! set of definitions a document must carry.
//!
//! The API layer builds `/openapi/v2` and `/openapi/v3` documents from these; the strategic
//! merge patch reads its list strategies from them (`x-kubernetes-patch-strategy`,
//! `x-kubernetes-patch-merge-key`), so kubectl's view of a type and the server's agree.

use std::collections::{BTreeSet, HashMap};
use std::sync::LazyLock;

use serde_json::{Map, Value};

static DEFINITIONS_JSON: &str = include_str!("../openapi/definitions.json");

static DEFINITIONS: LazyLock<Map<String, Value>> = LazyLock::new(|| {
    // The file is generated and checked by this crate's tests; an unreadable file is a
    // build defect, and an empty map keeps the server up (documents without schemas).
    serde_json::from_str(DEFINITIONS_JSON).unwrap_or_default()
});

/// (group, version, kind) → definition name.
static BY_GVK: LazyLock<HashMap<(String, String, String), String>> = LazyLock::new(|| {
    let mut out = HashMap::new();
    for (name, def) in DEFINITIONS.iter() {
        for gvk in gvks(def) {
            out.entry(gvk).or_insert_with(|| name.clone());
        }
    }
    out
});

/// Every definition, by its Swagger name (`io.k8s.api.apps.v1.Deployment`).
pub fn definitions() -> &'static Map<String, Value> {
    &DEFINITIONS
}

/// The group/version/kinds a definition declares (`x-kubernetes-group-version-kind`).
pub fn gvks(def: &Value) -> Vec<(String, String, String)> {
    def.get("x-kubernetes-group-version-kind")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|g| {
                    let s = |k: &str| g.get(k).and_then(Value::as_str).unwrap_or("").to_string();
                    (s("group"), s("version"), s("kind"))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The definition name of a kind, if the built-in definitions have it.
pub fn definition_name(group: &str, version: &str, kind: &str) -> Option<&'static str> {
    BY_GVK
        .get(&(group.to_string(), version.to_string(), kind.to_string()))
        .map(String::as_str)
}

/// The definition of a kind.
pub fn definition(group: &str, version: &str, kind: &str) -> Option<&'static Value> {
    DEFINITIONS.get(definition_name(group, version, kind)?)
}

/// The name a `$ref` points at (`#/definitions/X` or `#/components/schemas/X` → `X`).
pub fn ref_name(reference: &str) -> &str {
    reference.rsplit('/').next().unwrap_or(reference)
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("$ref", Value::String(r)) => out.push(ref_name(r).to_string()),
                    _ => collect_refs(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| collect_refs(x, out)),
        _ => {}
    }
}

/// `roots` and every definition they refer to, transitively (names missing from the
/// definitions are dropped).
pub fn closure<'a>(roots: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo: Vec<String> = roots.into_iter().map(str::to_string).collect();
    while let Some(name) = todo.pop() {
        let Some(def) = DEFINITIONS.get(&name) else {
            continue;
        };
        if !seen.insert(name) {
            continue;
        }
        let mut refs = Vec::new();
        collect_refs(def, &mut refs);
        todo.extend(refs.into_iter().filter(|r| !seen.contains(r)));
    }
    seen
}

/// The property schema of the field at `path` (property names from the root of `def`) as
/// written in its parent — where `x-kubernetes-patch-*` and list-type extensions live —
/// following `$ref`s, array items and map values on the way; `None` when the path leaves
/// the schema.
pub fn field<'a>(def: &'a Value, path: &[&str]) -> Option<&'a Value> {
    let mut cur = def;
    for name in path {
        let mut parent = resolve(cur);
        for _ in 0..4 {
            match parent.get("type").and_then(Value::as_str) {
                Some("array") => parent = resolve(parent.get("items")?),
                Some("object") if parent.get("properties").is_none() => {
                    parent = resolve(parent.get("additionalProperties")?);
                }
                _ => break,
            }
        }
        cur = parent.get("properties")?.get(*name)?;
    }
    Some(cur)
}

/// Follows a `$ref` (also one wrapped in a single-element `allOf`) to its definition.
pub fn resolve(v: &Value) -> &Value {
    let mut v = v;
    for _ in 0..8 {
        let r = v.get("$ref").and_then(Value::as_str).or_else(|| {
            v.get("allOf")
                .and_then(Value::as_array)
                .filter(|a| a.len() == 1)
                .and_then(|a| a[0].get("$ref"))
                .and_then(Value::as_str)
        });
        match r.and_then(|r| DEFINITIONS.get(ref_name(r))) {
            Some(next) => v = next,
            None => break,
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_definitions_cover_the_stable_kinds_with_their_patch_metadata() {
        let pod = definition("", "v1", "Pod").expect("Pod is defined");
        assert_eq!(
            pod["description"].as_str().map(|d| d.starts_with("Pod is")),
            Some(true)
        );
        let containers = field(pod, &["spec", "containers"]).expect("containers");
        assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
        assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
        assert_eq!(
            definition_name("apps", "v1", "Deployment"),
            Some("io.k8s.api.apps.v1.Deployment")
        );
        let ports = field(pod, &["spec", "containers", "ports"]).expect("ports");
        assert_eq!(ports["x-kubernetes-patch-merge-key"], "containerPort");
        assert_eq!(resolve(ports)["type"], "array");
        assert!(field(pod, &["spec", "nope"]).is_none());
        assert!(definition("batch", "v1", "CronJob").is_some());
        assert!(definition("autoscaling", "v2", "HorizontalPodAutoscaler").is_some());
    }

    #[test]
    fn the_closure_of_a_kind_holds_every_definition_it_refers_to() {
        let set = closure(["io.k8s.api.apps.v1.Deployment"]);
        for name in [
            "io.k8s.api.apps.v1.DeploymentSpec",
            "io.k8s.api.core.v1.PodTemplateSpec",
            "io.k8s.api.core.v1.Container",
            "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
            "io.k8s.apimachinery.pkg.util.intstr.IntOrString",
        ] {
            assert!(set.contains(name), "{name} missing from the closure");
        }
        for name in &set {
            let mut refs = Vec::new();
            collect_refs(&definitions()[name], &mut refs);
            for r in refs {
                assert!(set.contains(&r), "{name} refers to {r}, not in the closure");
            }
        }
    }

    #[test]
    fn int_or_string_and_quantity_are_published_as_kube_apiserver_does() {
        let ios = &definitions()["io.k8s.apimachinery.pkg.util.intstr.IntOrString"];
        assert_eq!(ios["type"], "string");
        assert_eq!(ios["format"], "int-or-string");
        assert_eq!(
            definitions()["io.k8s.apimachinery.pkg.api.resource.Quantity"]["type"],
            "string"
        );
    }
}
