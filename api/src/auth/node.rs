//! The node authorizer and NodeRestriction: what a node's identity
//! (`system:node:<name>` in `system:nodes`) may do.
//!
//! A node may read the cluster's shared objects (nodes, services, endpoints, namespaces,
//! persistent volumes …), write its own Node and its own Lease in `kube-node-lease`, read
//! and update the pods bound to it (`spec.nodeName`), list and watch pods only with the
//! field selector `spec.nodeName=<itself>` (kube's AuthorizeNodeWithSelectors), and get the
//! Secrets, ConfigMaps, PersistentVolumeClaims and ServiceAccount tokens those pods use.
//! Anything else gets no opinion here, so RBAC decides (and grants nodes nothing by
//! default).

use serde_json::Value;

use crate::Api;
use crate::auth::rbac::ResourceAttrs;
use crate::error::{ApiError, from_store};
use crate::object::decode_stored;
use logbook_store::{ListAt, ObjectKey};

/// The group every node identity is in.
pub const NODES_GROUP: &str = "system:nodes";
/// Pods of one namespace read per page when looking for the pods that use an object.
pub const NODE_GRAPH_PAGE_ITEMS_MAX: usize = 1_000;
/// Pods of one namespace looked at, at most, when deciding whether a node may read an object
/// one of them uses (beyond it, the request is refused rather than served slowly).
pub const NODE_GRAPH_PODS_MAX: usize = 50_000;

/// The node an identity is, if it is one.
pub fn node_name<'a>(user: &'a str, groups: &[String]) -> Option<&'a str> {
    let name = user.strip_prefix("system:node:")?;
    (!name.is_empty() && groups.iter().any(|g| g == NODES_GROUP)).then_some(name)
}

/// What the node authorizer decides.
#[derive(Debug, PartialEq, Eq)]
pub enum NodeDecision {
    Allow,
    /// Not this authorizer's to allow; the reason is kept for the denial message.
    NoOpinion(String),
}

/// Resources every node may read (kube's static node rules).
const READABLE: &[(&str, &str)] = &[
    ("", "nodes"),
    ("", "services"),
    ("", "endpoints"),
    ("", "namespaces"),
    ("", "persistentvolumes"),
    ("discovery.k8s.io", "endpointslices"),
    ("storage.k8s.io", "storageclasses"),
    ("storage.k8s.io", "csidrivers"),
    ("storage.k8s.io", "csinodes"),
    ("storage.k8s.io", "volumeattachments"),
    ("node.k8s.io", "runtimeclasses"),
];

/// Decides a resource request of node `node`.
///
/// # Errors
/// A store failure while reading the pod or the pods that use an object.
pub async fn decide(
    api: &Api,
    node: &str,
    r: &ResourceAttrs<'_>,
    field_selector: Option<&str>,
) -> Result<NodeDecision, ApiError> {
    use NodeDecision::{Allow, NoOpinion};
    let read = matches!(r.verb, "get" | "list" | "watch");
    let sub = r.subresource.unwrap_or("");
    let no = |why: &str| Ok(NoOpinion(format!("node {node:?} {why}")));
    match (r.group, r.resource) {
        ("", "nodes") if read && sub.is_empty() => Ok(Allow),
        ("", "nodes") if matches!(r.verb, "create") && sub.is_empty() => Ok(Allow), // name checked in admission
        ("", "nodes") if matches!(r.verb, "get" | "update" | "patch" | "delete") => {
            if r.name == node {
                Ok(Allow)
            } else {
                no("may only change its own Node object")
            }
        }
        (g, res) if read && sub.is_empty() && READABLE.contains(&(g, res)) => Ok(Allow),
        ("coordination.k8s.io", "leases") if r.namespace == "kube-node-lease" => {
            match r.verb {
                "create" => Ok(Allow), // name checked in admission
                "get" | "update" | "patch" | "delete" if r.name == node => Ok(Allow),
                _ => no("may only use its own Lease in kube-node-lease"),
            }
        }
        ("", "events") | ("events.k8s.io", "events")
            if matches!(r.verb, "create" | "update" | "patch") =>
        {
            Ok(Allow)
        }
        ("authentication.k8s.io", "tokenreviews")
        | ("authorization.k8s.io", "subjectaccessreviews")
            if r.verb == "create" =>
        {
            Ok(Allow)
        }
        ("certificates.k8s.io", "certificatesigningrequests")
            if matches!(r.verb, "create" | "get" | "list" | "watch") =>
        {
            Ok(Allow)
        }
        ("", "pods") => match (r.verb, sub) {
            ("list" | "watch", "") => {
                if selects_node(field_selector, node) {
                    Ok(Allow)
                } else {
                    no(
                        "may only list and watch pods with the field selector spec.nodeName=<its name>",
                    )
                }
            }
            ("get" | "delete", "")
            | ("update" | "patch" | "get", "status")
            | ("create", "eviction") => {
                if pod_node(api, r.namespace, r.name).await?.as_deref() == Some(node) {
                    Ok(Allow)
                } else {
                    no("may only use pods bound to it")
                }
            }
            _ => no("may not do this to pods"),
        },
        ("", "secrets" | "configmaps" | "persistentvolumeclaims")
            if r.verb == "get" || (matches!(r.verb, "list" | "watch") && !r.name.is_empty()) =>
        {
            if used_by_node(api, node, r.namespace, r.resource, r.name).await? {
                Ok(Allow)
            } else {
                no(&format!("has no pod that uses {} {:?}", r.resource, r.name))
            }
        }
        ("", "serviceaccounts") if r.verb == "create" && sub == "token" => {
            if used_by_node(api, node, r.namespace, "serviceaccounts", r.name).await? {
                Ok(Allow)
            } else {
                no(&format!(
                    "has no pod that runs as serviceaccount {:?}",
                    r.name
                ))
            }
        }
        _ => no("is not allowed this by the node authorizer"),
    }
}

/// Whether a field selector pins `spec.nodeName` to `node`.
fn selects_node(field_selector: Option<&str>, node: &str) -> bool {
    field_selector.is_some_and(|fs| {
        fs.split(',').any(|term| {
            let t = term.trim();
            t.strip_prefix("spec.nodeName")
                .and_then(|rest| rest.strip_prefix("==").or_else(|| rest.strip_prefix('=')))
                .is_some_and(|v| v == node)
        })
    })
}

/// The node a pod is bound to, if the pod exists.
async fn pod_node(api: &Api, ns: &str, name: &str) -> Result<Option<String>, ApiError> {
    if name.is_empty() {
        return Ok(None);
    }
    let Some(cur) = api
        .log
        .get(&ObjectKey::new("pods", ns, name))
        .await
        .map_err(from_store)?
    else {
        return Ok(None);
    };
    let pod = decode_stored(&cur.object, cur.position.0)?;
    Ok(pod
        .get("spec")
        .and_then(|s| s.get("nodeName"))
        .and_then(Value::as_str)
        .map(str::to_string))
}

/// Whether a pod bound to `node` in `ns` uses the object `resource`/`name`.
async fn used_by_node(
    api: &Api,
    node: &str,
    ns: &str,
    resource: &str,
    name: &str,
) -> Result<bool, ApiError> {
    if name.is_empty() {
        return Ok(false);
    }
    let mut token: Option<String> = None;
    let mut seen = 0usize;
    loop {
        let page = api
            .log
            .list(
                "pods",
                Some(ns),
                ListAt::Latest,
                NODE_GRAPH_PAGE_ITEMS_MAX,
                token.as_deref(),
            )
            .await
            .map_err(from_store)?;
        for item in &page.items {
            seen += 1;
            let Ok(pod) = decode_stored(&item.object, item.position.0) else {
                continue;
            };
            let pod = Value::Object(pod);
            if pod.pointer("/spec/nodeName").and_then(Value::as_str) == Some(node)
                && pod_uses(&pod, resource, name)
            {
                return Ok(true);
            }
        }
        match page.continue_token {
            Some(t) if seen < NODE_GRAPH_PODS_MAX => token = Some(t),
            _ => return Ok(false),
        }
    }
}

/// Whether `pod` refers to the object `resource`/`name` (volumes, projected sources, env,
/// envFrom, imagePullSecrets, its ServiceAccount).
pub fn pod_uses(pod: &Value, resource: &str, name: &str) -> bool {
    let spec = pod.get("spec").unwrap_or(&Value::Null);
    let is = |v: Option<&Value>| v.and_then(Value::as_str) == Some(name);
    let arr = |v: Option<&Value>| v.and_then(Value::as_array).cloned().unwrap_or_default();
    match resource {
        "serviceaccounts" => {
            let sa = spec
                .get("serviceAccountName")
                .and_then(Value::as_str)
                .unwrap_or("default");
            sa == name
        }
        "persistentvolumeclaims" => arr(spec.get("volumes"))
            .iter()
            .any(|v| is(v.pointer("/persistentVolumeClaim/claimName"))),
        "secrets" | "configmaps" => {
            let (vol, vol_key, proj, key_ref, env_from) = if resource == "secrets" {
                (
                    "secret",
                    "secretName",
                    "secret",
                    "secretKeyRef",
                    "secretRef",
                )
            } else {
                (
                    "configMap",
                    "name",
                    "configMap",
                    "configMapKeyRef",
                    "configMapRef",
                )
            };
            if resource == "secrets"
                && arr(spec.get("imagePullSecrets"))
                    .iter()
                    .any(|s| is(s.get("name")))
            {
                return true;
            }
            for v in arr(spec.get("volumes")) {
                if is(v.get(vol).and_then(|s| s.get(vol_key))) {
                    return true;
                }
                for src in arr(v.pointer("/projected/sources")) {
                    if is(src.get(proj).and_then(|s| s.get("name"))) {
                        return true;
                    }
                }
            }
            for list in ["containers", "initContainers", "ephemeralContainers"] {
                for c in arr(spec.get(list)) {
                    if arr(c.get("env"))
                        .iter()
                        .any(|e| is(e.pointer(&format!("/valueFrom/{key_ref}/name"))))
                    {
                        return true;
                    }
                    if arr(c.get("envFrom"))
                        .iter()
                        .any(|e| is(e.get(env_from).and_then(|s| s.get("name"))))
                    {
                        return true;
                    }
                }
            }
            false
        }
        _ => false,
    }
}

/// NodeRestriction on a create: a node creates only its own Node and its own Lease.
///
/// # Errors
/// 403 when the body names another object.
pub fn check_create(node: &str, group: &str, resource: &str, body: &[u8]) -> Result<(), ApiError> {
    let named = match (group, resource) {
        ("", "nodes") => "Node",
        ("coordination.k8s.io", "leases") => "Lease",
        _ => return Ok(()),
    };
    let obj: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    if name == node {
        Ok(())
    } else {
        Err(ApiError::new(
            403,
            "Forbidden",
            format!(
                "{resource} \"{name}\" is forbidden: node \"{node}\" is not allowed to create a {named} for another node"
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_node_is_named_by_its_user_and_group() {
        assert_eq!(
            node_name("system:node:n1", &["system:nodes".into()]),
            Some("n1")
        );
        assert_eq!(node_name("system:node:n1", &[]), None);
        assert_eq!(node_name("alice", &["system:nodes".into()]), None);
    }

    #[test]
    fn only_a_selector_on_the_node_itself_lets_it_list_pods() {
        assert!(selects_node(Some("spec.nodeName=n1"), "n1"));
        assert!(selects_node(
            Some("status.phase!=Failed,spec.nodeName==n1"),
            "n1"
        ));
        assert!(!selects_node(Some("spec.nodeName=n2"), "n1"));
        assert!(!selects_node(Some("spec.nodeName!=n1"), "n1"));
        assert!(!selects_node(None, "n1"));
    }

    #[test]
    fn a_pod_uses_what_its_volumes_env_and_pull_secrets_name() {
        let pod = json!({"spec": {"serviceAccountName": "bot",
            "imagePullSecrets": [{"name": "pull"}],
            "volumes": [{"name": "a", "secret": {"secretName": "vol-secret"}},
                        {"name": "b", "configMap": {"name": "vol-cm"}},
                        {"name": "c", "projected": {"sources": [{"secret": {"name": "proj-secret"}}]}},
                        {"name": "d", "persistentVolumeClaim": {"claimName": "data"}}],
            "containers": [{"name": "c", "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "env-secret", "key": "k"}}}],
                "envFrom": [{"configMapRef": {"name": "envfrom-cm"}}]}]}});
        for s in ["pull", "vol-secret", "proj-secret", "env-secret"] {
            assert!(pod_uses(&pod, "secrets", s), "{s}");
        }
        assert!(!pod_uses(&pod, "secrets", "vol-cm"));
        for c in ["vol-cm", "envfrom-cm"] {
            assert!(pod_uses(&pod, "configmaps", c), "{c}");
        }
        assert!(pod_uses(&pod, "persistentvolumeclaims", "data"));
        assert!(pod_uses(&pod, "serviceaccounts", "bot"));
        assert!(!pod_uses(&pod, "serviceaccounts", "default"));
    }
}
