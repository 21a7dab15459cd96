//! ResourceQuota admission: a create that would take a namespace past a quota's `hard`
//! limits is refused (403, kube's `exceeded quota` message), exactly, however many creates
//! race — creates of quota'd resources in one namespace are serialized on this server while
//! usage is counted from the store and the object is written. The quota controller keeps
//! `status.used` (controllers/src/resourcequota.rs); admission does not trust it, because a
//! status computed from a cache may lag the creates just admitted.
//!
//! Counted: `pods`, `count/<resource>[.<group>]` and the legacy object counts (`services`,
//! `configmaps`, `secrets`, `persistentvolumeclaims`, `replicationcontrollers`,
//! `resourcequotas`), `services.nodeports`, `services.loadbalancers`, and a pod's compute
//! (`requests.*`, `limits.*`, bare `cpu`/`memory`/`ephemeral-storage` as requests) and a
//! claim's `requests.storage`. Quota scopes are not applied (every quota counts everything);
//! several API servers over one FoundationDB cluster serialize per server, not across them.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use logbook_schema::quantity::Quantity;
use logbook_store::ListAt;
use serde_json::{Map, Value};

use crate::error::{ApiError, ApiResult, from_store};
use crate::handlers::Ctx;
use crate::object::decode_stored;

/// Objects read per page when counting a namespace's usage.
pub const QUOTA_COUNT_PAGE_ITEMS: usize = 1_000;
/// Objects of one resource counted at most for one admission (beyond: refused as too
/// costly to check, rather than admitted unchecked).
pub const QUOTA_COUNTED_OBJECTS_MAX: usize = 200_000;
/// Quotas of one namespace read at most.
pub const QUOTAS_PER_NAMESPACE_MAX: usize = 100;

/// One lock per namespace that has quotas: creates there are admitted one at a time.
#[derive(Default)]
pub struct NamespaceLocks(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

impl NamespaceLocks {
    fn lock_for(&self, ns: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut m = match self.0.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        m.entry(ns.to_string()).or_default().clone()
    }
}

/// Held while an admitted object is written; dropping it lets the next create be counted.
pub type Admitted = tokio::sync::OwnedMutexGuard<()>;

const NANO: i128 = 1_000_000_000;

fn qty(v: Option<&Value>) -> i128 {
    v.and_then(Value::as_str)
        .and_then(|s| Quantity::parse(s).ok())
        .map_or_else(
            || {
                v.and_then(Value::as_i64)
                    .map_or(0, |n| i128::from(n) * NANO)
            },
            |q| q.nanos(),
        )
}

/// A pod's request or limit of `res`: max(sum over containers, largest init container); a
/// limit without a request counts as the request, as kube defaults it.
fn pod_amount(spec: &Value, kind: &str, res: &str) -> i128 {
    let of = |c: &Value| {
        let r = c.get("resources");
        let v = r.and_then(|r| r.get(kind)).and_then(|m| m.get(res));
        let v = v.or_else(|| {
            (kind == "requests")
                .then(|| r.and_then(|r| r.get("limits")).and_then(|m| m.get(res)))
                .flatten()
        });
        qty(v)
    };
    let list = |k: &str| {
        spec.get(k)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let sum: i128 = list("containers").iter().map(of).sum();
    let init = list("initContainers").iter().map(of).max().unwrap_or(0);
    sum.max(init)
}

/// Whether a container of the pod lacks `kind.res` (for "must specify").
fn missing(spec: &Value, kind: &str, res: &str) -> Vec<String> {
    let mut out = Vec::new();
    for list in ["initContainers", "containers"] {
        for c in spec
            .get(list)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let r = c.get("resources");
            let has = r
                .and_then(|r| r.get(kind))
                .and_then(|m| m.get(res))
                .is_some()
                || (kind == "requests"
                    && r.and_then(|r| r.get("limits"))
                        .and_then(|m| m.get(res))
                        .is_some());
            if !has {
                out.push(
                    c.get("name")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                );
            }
        }
    }
    out
}

/// What one object adds to its namespace's usage, by quota resource name (nano-units).
pub fn usage(group: &str, plural: &str, obj: &Value) -> BTreeMap<String, i128> {
    let mut u = BTreeMap::new();
    let count_name = if group.is_empty() {
        format!("count/{plural}")
    } else {
        format!("count/{plural}.{group}")
    };
    u.insert(count_name, NANO);
    if group.is_empty()
        && matches!(
            plural,
            "pods"
                | "services"
                | "configmaps"
                | "secrets"
                | "persistentvolumeclaims"
                | "replicationcontrollers"
                | "resourcequotas"
        )
    {
        u.insert(plural.to_string(), NANO);
    }
    match (group, plural) {
        ("", "pods") => {
            let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
            for res in ["cpu", "memory", "ephemeral-storage"] {
                let req = pod_amount(&spec, "requests", res);
                let lim = pod_amount(&spec, "limits", res);
                u.insert(format!("requests.{res}"), req);
                u.insert(res.to_string(), req);
                u.insert(format!("limits.{res}"), lim);
            }
        }
        ("", "services") => {
            let ty = obj
                .pointer("/spec/type")
                .and_then(Value::as_str)
                .unwrap_or("ClusterIP");
            let ports = obj
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .map_or(0, Vec::len) as i128;
            if matches!(ty, "NodePort" | "LoadBalancer") {
                u.insert("services.nodeports".into(), ports * NANO);
            }
            if ty == "LoadBalancer" {
                u.insert("services.loadbalancers".into(), NANO);
            }
        }
        ("", "persistentvolumeclaims") => {
            u.insert(
                "requests.storage".into(),
                qty(obj.pointer("/spec/resources/requests/storage")),
            );
        }
        _ => {}
    }
    u
}

fn terminal(pod: &Value) -> bool {
    matches!(
        pod.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    )
}

/// A quota resource as kube prints it.
fn format(name: &str, nanos: i128) -> String {
    let milli = nanos / 1_000_000;
    if name.ends_with("cpu") || name == "cpu" {
        return if milli % 1000 == 0 {
            (milli / 1000).to_string()
        } else {
            format!("{milli}m")
        };
    }
    let whole = nanos / NANO;
    if name.contains("memory") || name.contains("storage") {
        for (suffix, unit) in [
            ("Ti", 1i128 << 40),
            ("Gi", 1 << 30),
            ("Mi", 1 << 20),
            ("Ki", 1 << 10),
        ] {
            if whole != 0 && whole % unit == 0 {
                return format!("{}{suffix}", whole / unit);
            }
        }
    }
    whole.to_string()
}

/// The namespace's current usage of each of `names`, counted from the store.
async fn current(ctx: &Ctx, ns: &str, names: &[String]) -> ApiResult<BTreeMap<String, i128>> {
    // Which store resources to read: one pass per resource.
    let mut resources: Vec<(String, String)> = Vec::new();
    for n in names {
        let (g, p) = match n.strip_prefix("count/") {
            Some(rest) => match rest.split_once('.') {
                Some((p, g)) => (g.to_string(), p.to_string()),
                None => (String::new(), rest.to_string()),
            },
            None if n.starts_with("services.") => (String::new(), "services".into()),
            None if n == "requests.storage" => (String::new(), "persistentvolumeclaims".into()),
            None if matches!(
                n.as_str(),
                "services"
                    | "configmaps"
                    | "secrets"
                    | "persistentvolumeclaims"
                    | "replicationcontrollers"
                    | "resourcequotas"
            ) =>
            {
                (String::new(), n.clone())
            }
            None => (String::new(), "pods".into()),
        };
        if !resources.contains(&(g.clone(), p.clone())) {
            resources.push((g, p));
        }
    }
    let mut used: BTreeMap<String, i128> = names.iter().map(|n| (n.clone(), 0)).collect();
    for (g, p) in resources {
        let store_resource = if g.is_empty() {
            p.clone()
        } else {
            format!("{g}/{p}")
        };
        let mut token: Option<String> = None;
        let mut seen = 0usize;
        loop {
            let page = ctx
                .api
                .log
                .list(
                    &store_resource,
                    Some(ns),
                    ListAt::Latest,
                    QUOTA_COUNT_PAGE_ITEMS,
                    token.as_deref(),
                )
                .await
                .map_err(from_store)?;
            for item in &page.items {
                seen += 1;
                let Ok(o) = decode_stored(&item.object, item.position.0) else {
                    continue;
                };
                let o = Value::Object(o);
                if p == "pods" && g.is_empty() && terminal(&o) {
                    continue;
                }
                for (k, v) in usage(&g, &p, &o) {
                    if let Some(u) = used.get_mut(&k) {
                        *u += v;
                    }
                }
            }
            match page.continue_token {
                Some(t) if seen < QUOTA_COUNTED_OBJECTS_MAX => token = Some(t),
                Some(_) => {
                    return Err(ApiError::new(
                        403,
                        "Forbidden",
                        format!(
                            "{store_resource} in {ns}: more than {QUOTA_COUNTED_OBJECTS_MAX} objects to count for its quota"
                        ),
                    ));
                }
                None => break,
            }
        }
    }
    Ok(used)
}

fn forbidden(ctx: &Ctx, name: &str, why: String) -> ApiError {
    let what = if ctx.info.group.is_empty() {
        ctx.info.plural.clone()
    } else {
        format!("{}.{}", ctx.info.plural, ctx.info.group)
    };
    let subject = if name.is_empty() {
        what
    } else {
        format!("{what} \"{name}\"")
    };
    let mut e = ApiError::new(403, "Forbidden", format!("{subject} is forbidden: {why}"));
    e.details =
        Some(serde_json::json!({"name": name, "group": ctx.info.group, "kind": ctx.info.plural}));
    e
}

/// Admits the create of `obj` against the namespace's quotas. `Some(guard)`: quotas apply,
/// and the guard must be held until the object is written (or the create failed).
///
/// # Errors
/// 403 when a quota would be exceeded or a tracked compute resource is missing; a store
/// failure.
pub async fn admit_create(ctx: &Ctx, obj: &Map<String, Value>) -> ApiResult<Option<Admitted>> {
    let ns = ctx.namespace().to_string();
    if ns.is_empty() {
        return Ok(None);
    }
    let page = ctx
        .api
        .log
        .list(
            "resourcequotas",
            Some(&ns),
            ListAt::Latest,
            QUOTAS_PER_NAMESPACE_MAX,
            None,
        )
        .await
        .map_err(from_store)?;
    if page.items.is_empty() {
        return Ok(None);
    }
    let obj = Value::Object(obj.clone());
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let delta = usage(&ctx.info.group, &ctx.info.plural, &obj);
    let mut quotas: Vec<(String, BTreeMap<String, i128>)> = Vec::new();
    for item in &page.items {
        let Ok(q) = decode_stored(&item.object, item.position.0) else {
            continue;
        };
        let hard: BTreeMap<String, i128> = q
            .get("spec")
            .and_then(|s| s.get("hard"))
            .and_then(Value::as_object)
            .map(|h| {
                h.iter()
                    .filter(|(k, _)| delta.contains_key(*k))
                    .map(|(k, v)| (k.clone(), qty(Some(v))))
                    .collect()
            })
            .unwrap_or_default();
        if !hard.is_empty() {
            quotas.push((item.key.name.clone(), hard));
        }
    }
    if quotas.is_empty() {
        return Ok(None);
    }
    // A quota on a compute resource needs every container to say how much it takes.
    if ctx.info.group.is_empty() && ctx.info.plural == "pods" {
        let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
        for (qname, hard) in &quotas {
            for k in hard.keys() {
                let (kind, res) = match k.split_once('.') {
                    Some((kind @ ("requests" | "limits"), res)) => (kind, res),
                    None if matches!(k.as_str(), "cpu" | "memory" | "ephemeral-storage") => {
                        ("requests", k.as_str())
                    }
                    _ => continue,
                };
                let lacking = missing(&spec, kind, res);
                if !lacking.is_empty() {
                    return Err(forbidden(
                        ctx,
                        &name,
                        format!(
                            "failed quota: {qname}: must specify {kind}.{res} for: {}",
                            lacking.join(",")
                        ),
                    ));
                }
            }
        }
    }
    let guard = ctx.api.quota_locks.lock_for(&ns).lock_owned().await;
    let mut names: Vec<String> = quotas.iter().flat_map(|(_, h)| h.keys().cloned()).collect();
    names.sort();
    names.dedup();
    let used = current(ctx, &ns, &names).await?;
    for (qname, hard) in &quotas {
        let over: Vec<&String> = hard
            .iter()
            .filter(|(k, limit)| {
                used.get(*k).copied().unwrap_or(0) + delta.get(*k).copied().unwrap_or(0) > **limit
            })
            .map(|(k, _)| k)
            .collect();
        if !over.is_empty() {
            let list = |f: &dyn Fn(&String) -> i128| {
                over.iter()
                    .map(|k| format!("{k}={}", format(k, f(k))))
                    .collect::<Vec<_>>()
                    .join(",")
            };
            return Err(forbidden(
                ctx,
                &name,
                format!(
                    "exceeded quota: {qname}, requested: {}, used: {}, limited: {}",
                    list(&|k| delta.get(k).copied().unwrap_or(0)),
                    list(&|k| used.get(k).copied().unwrap_or(0)),
                    list(&|k| hard.get(k).copied().unwrap_or(0)),
                ),
            ));
        }
    }
    Ok(Some(guard))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_pod_uses_its_count_and_its_compute() {
        let pod = json!({"spec": {"containers": [
            {"name": "a", "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"cpu": "1"}}},
            {"name": "b", "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}}}],
            "initContainers": [{"name": "i", "resources": {"requests": {"cpu": "2"}}}]}});
        let u = usage("", "pods", &pod);
        assert_eq!(u["pods"], NANO);
        assert_eq!(u["count/pods"], NANO);
        assert_eq!(
            format("requests.cpu", u["requests.cpu"]),
            "2",
            "the init container's 2 beats 250m+500m"
        );
        assert_eq!(format("requests.memory", u["requests.memory"]), "192Mi");
        assert_eq!(format("limits.cpu", u["limits.cpu"]), "1500m");
        assert_eq!(missing(&pod["spec"], "limits", "memory"), vec!["i", "a"]);
    }

    #[test]
    fn other_objects_count_by_group_qualified_name() {
        let u = usage("apps", "deployments", &json!({}));
        assert_eq!(u.keys().collect::<Vec<_>>(), vec!["count/deployments.apps"]);
        let svc = usage(
            "",
            "services",
            &json!({"spec": {"type": "NodePort", "ports": [{}, {}]}}),
        );
        assert_eq!(svc["services.nodeports"], 2 * NANO);
        assert_eq!(svc["services"], NANO);
    }
}
