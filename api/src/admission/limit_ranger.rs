//! LimitRanger: the LimitRanges of a namespace give its pods' containers default requests
//! and limits (mutating), and bound containers, pods and PersistentVolumeClaims (validating),
//! as kube's plugin of the same name: pods on CREATE only (containers cannot change
//! afterwards), claims on CREATE and UPDATE, never subresources. Messages are kube's.
//!
//! The LimitRanges come from the admission cache ([`super::State::list`]); each item is
//! read with kube's LimitRange defaulting applied (`default` from `max`, `defaultRequest`
//! from `default`, then from `min`), whether or not it was stored with it.

use futures::future::BoxFuture;
use logbook_schema::quantity::Quantity;
use serde_json::{Map, Value, json};

use super::{Attributes, Operation, Plugin, forbidden};
use crate::error::ApiResult;

/// The annotation naming what the plugin set on a pod.
pub const ANNOTATION: &str = "kubernetes.io/limit-ranger";

pub struct LimitRanger;

impl Plugin for LimitRanger {
    fn name(&self) -> &'static str {
        "LimitRanger"
    }

    fn admit<'a>(&'a self, a: &'a mut Attributes<'_>) -> BoxFuture<'a, ApiResult<()>> {
        Box::pin(async move {
            if !(a.is_core("pods")
                && a.operation() == Operation::Create
                && a.subresource().is_empty())
            {
                return Ok(());
            }
            let items = limit_items(a).await?;
            if let Some(pod) = a.object.as_deref_mut() {
                apply_defaults(pod, &items);
            }
            Ok(())
        })
    }

    fn validate<'a>(&'a self, a: &'a Attributes<'_>) -> BoxFuture<'a, ApiResult<()>> {
        Box::pin(async move {
            if !a.subresource().is_empty() {
                return Ok(());
            }
            let pod = a.is_core("pods") && a.operation() == Operation::Create;
            let claim = a.is_core("persistentvolumeclaims")
                && matches!(a.operation(), Operation::Create | Operation::Update);
            if !pod && !claim {
                return Ok(());
            }
            let Some(obj) = a.object() else {
                return Ok(());
            };
            let items = limit_items(a).await?;
            let errors = if pod {
                check_pod(obj, &items)
            } else {
                check_claim(obj, &items)
            };
            match errors.as_slice() {
                [] => Ok(()),
                [one] => Err(forbidden(a, one)),
                many => Err(forbidden(a, &format!("[{}]", many.join(", ")))),
            }
        })
    }
}

/// Every `spec.limits` item of the namespace's LimitRanges, defaulted.
async fn limit_items(a: &Attributes<'_>) -> ApiResult<Vec<Value>> {
    let ranges = a
        .ctx
        .api
        .admission
        .list(&a.ctx.api, "limitranges", a.namespace())
        .await?;
    Ok(ranges
        .iter()
        .filter_map(|r| r.get("spec")?.get("limits")?.as_array())
        .flatten()
        .map(default_item)
        .collect())
}

/// kube's `SetDefaults_LimitRangeItem` for Container items.
pub fn default_item(item: &Value) -> Value {
    let mut item = item.clone();
    if item.get("type").and_then(Value::as_str) != Some("Container") {
        return item;
    }
    let get = |item: &Value, k: &str| item.get(k).and_then(Value::as_object).cloned();
    let max = get(&item, "max").unwrap_or_default();
    let min = get(&item, "min").unwrap_or_default();
    let mut default = get(&item, "default").unwrap_or_default();
    let mut default_request = get(&item, "defaultRequest").unwrap_or_default();
    for (k, v) in &max {
        default.entry(k.clone()).or_insert_with(|| v.clone());
    }
    for (k, v) in default.iter().chain(min.iter()) {
        default_request
            .entry(k.clone())
            .or_insert_with(|| v.clone());
    }
    item["default"] = Value::Object(default);
    item["defaultRequest"] = Value::Object(default_request);
    item
}

/// Fills missing container requests and limits from the Container items' defaults (the
/// first LimitRange to set a resource wins) and records what was set in [`ANNOTATION`].
pub fn apply_defaults(pod: &mut Map<String, Value>, items: &[Value]) {
    let mut notes = Vec::new();
    for item in items
        .iter()
        .filter(|i| i.get("type").and_then(Value::as_str) == Some("Container"))
    {
        let limits = item.get("default").and_then(Value::as_object);
        let requests = item.get("defaultRequest").and_then(Value::as_object);
        let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
            return;
        };
        for (field, what) in [
            ("containers", "container"),
            ("initContainers", "init container"),
        ] {
            let Some(list) = spec.get_mut(field).and_then(Value::as_array_mut) else {
                continue;
            };
            for c in list.iter_mut().filter_map(Value::as_object_mut) {
                let name = c
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                let resources = c.entry("resources").or_insert_with(|| json!({}));
                if !resources.is_object() {
                    *resources = json!({});
                }
                let set_requests = merge(resources, "requests", requests);
                let set_limits = merge(resources, "limits", limits);
                if !set_requests.is_empty() {
                    notes.push(format!(
                        "{} request for {what} {name}",
                        set_requests.join(", ")
                    ));
                }
                if !set_limits.is_empty() {
                    notes.push(format!("{} limit for {what} {name}", set_limits.join(", ")));
                }
            }
        }
    }
    if !notes.is_empty() {
        let meta = crate::object::meta_mut(pod);
        let annotations = meta.entry("annotations").or_insert_with(|| json!({}));
        if !annotations.is_object() {
            *annotations = json!({});
        }
        annotations[ANNOTATION] = json!(format!("LimitRanger plugin set: {}", notes.join("; ")));
    }
}

/// Adds the defaults missing from `resources[field]`; the names set, sorted.
fn merge(resources: &mut Value, field: &str, defaults: Option<&Map<String, Value>>) -> Vec<String> {
    let Some(defaults) = defaults.filter(|d| !d.is_empty()) else {
        return Vec::new();
    };
    let target = resources
        .as_object_mut()
        .map(|r| r.entry(field).or_insert_with(|| json!({})));
    let Some(target) = target else {
        return Vec::new();
    };
    if !target.is_object() {
        *target = json!({});
    }
    let Some(target) = target.as_object_mut() else {
        return Vec::new();
    };
    let mut set = Vec::new();
    for (k, v) in defaults {
        if !target.contains_key(k) {
            target.insert(k.clone(), v.clone());
            set.push(k.clone());
        }
    }
    set.sort();
    set
}

/// A resource list (`requests` or `limits`) as quantities; unparsable entries are left to
/// validation, which refuses them.
fn quantities(list: Option<&Value>) -> Vec<(String, Quantity, String)> {
    list.and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| {
            let text = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                _ => return None,
            };
            Some((k.clone(), Quantity::parse(&text).ok()?, text))
        })
        .collect()
}

fn find<'q>(
    list: &'q [(String, Quantity, String)],
    k: &str,
) -> Option<&'q (String, Quantity, String)> {
    list.iter().find(|(n, _, _)| n == k)
}

/// The min, max and maxLimitRequestRatio of one item against observed requests/limits
/// (kube's minConstraint, maxConstraint, limitRequestRatioConstraint).
fn constrain(
    item: &Value,
    kind: &str,
    requests: &[(String, Quantity, String)],
    limits: &[(String, Quantity, String)],
    errors: &mut Vec<String>,
) {
    for (k, enforced, shown) in quantities(item.get("min")) {
        let req = find(requests, &k);
        let lim = find(limits, &k);
        match req {
            None => errors.push(format!(
                "minimum {k} usage per {kind} is {shown}.  No request is specified"
            )),
            Some((_, q, text)) if q.nanos() < enforced.nanos() => errors.push(format!(
                "minimum {k} usage per {kind} is {shown}, but request is {text}"
            )),
            _ => {
                if let Some((_, q, text)) = lim
                    && q.nanos() < enforced.nanos()
                {
                    errors.push(format!(
                        "minimum {k} usage per {kind} is {shown}, but limit is {text}"
                    ));
                }
            }
        }
    }
    for (k, enforced, shown) in quantities(item.get("max")) {
        let req = find(requests, &k);
        let lim = find(limits, &k);
        match lim {
            None => errors.push(format!(
                "maximum {k} usage per {kind} is {shown}.  No limit is specified"
            )),
            Some((_, q, text)) if q.nanos() > enforced.nanos() => errors.push(format!(
                "maximum {k} usage per {kind} is {shown}, but limit is {text}"
            )),
            _ => {
                if let Some((_, q, text)) = req
                    && q.nanos() > enforced.nanos()
                {
                    errors.push(format!(
                        "maximum {k} usage per {kind} is {shown}, but request is {text}"
                    ));
                }
            }
        }
    }
    for (k, enforced, shown) in quantities(item.get("maxLimitRequestRatio")) {
        let req = find(requests, &k).map(|r| r.1.nanos()).unwrap_or(0);
        let lim = find(limits, &k).map(|l| l.1.nanos()).unwrap_or(0);
        if req == 0 {
            errors.push(format!(
                "{k} max limit to request ratio per {kind} is {shown}, but no request is specified or request is 0"
            ));
        } else if lim == 0 {
            errors.push(format!(
                "{k} max limit to request ratio per {kind} is {shown}, but no limit is specified or limit is 0"
            ));
        } else {
            #[allow(clippy::cast_precision_loss)] // a ratio of quantities, as kube's float64
            let ratio = lim as f64 / req as f64;
            #[allow(clippy::cast_precision_loss)]
            let max = enforced.nanos() as f64 / 1e9;
            if ratio > max + f64::EPSILON {
                errors.push(format!(
                    "{k} max limit to request ratio per {kind} is {shown}, but provided ratio is {ratio:.6}"
                ));
            }
        }
    }
}

fn containers<'p>(pod: &'p Map<String, Value>, field: &str) -> impl Iterator<Item = &'p Value> {
    pod.get("spec")
        .and_then(|s| s.get(field))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// kube's PodValidateLimitFunc: every Container item against each container and init
/// container, every Pod item against the pod's totals (containers summed, the largest init
/// container counted when it is larger).
pub fn check_pod(pod: &Map<String, Value>, items: &[Value]) -> Vec<String> {
    let mut errors = Vec::new();
    for item in items {
        match item.get("type").and_then(Value::as_str) {
            Some("Container") => {
                for c in containers(pod, "containers").chain(containers(pod, "initContainers")) {
                    let requests = quantities(c.pointer("/resources/requests"));
                    let limits = quantities(c.pointer("/resources/limits"));
                    constrain(item, "Container", &requests, &limits, &mut errors);
                }
            }
            Some("Pod") => {
                let requests = pod_totals(pod, "requests");
                let limits = pod_totals(pod, "limits");
                constrain(item, "Pod", &requests, &limits, &mut errors);
            }
            _ => {}
        }
    }
    errors
}

/// A pod's total of `field` per resource: the sum over containers, or the largest init
/// container's when larger (init containers run one at a time).
fn pod_totals(pod: &Map<String, Value>, field: &str) -> Vec<(String, Quantity, String)> {
    let mut totals: Vec<(String, i128)> = Vec::new();
    let path = format!("/resources/{field}");
    for c in containers(pod, "containers") {
        for (k, q, _) in quantities(c.pointer(&path)) {
            match totals.iter_mut().find(|(n, _)| *n == k) {
                Some(t) => t.1 = t.1.saturating_add(q.nanos()),
                None => totals.push((k, q.nanos())),
            }
        }
    }
    for c in containers(pod, "initContainers") {
        for (k, q, _) in quantities(c.pointer(&path)) {
            match totals.iter_mut().find(|(n, _)| *n == k) {
                Some(t) => t.1 = t.1.max(q.nanos()),
                None => totals.push((k, q.nanos())),
            }
        }
    }
    totals
        .into_iter()
        .map(|(k, n)| {
            let q = Quantity::from_nanos(n);
            (k, q, q.to_canonical())
        })
        .collect()
}

/// kube's PersistentVolumeClaimValidateLimitFunc: min and max of the claim's requests.
pub fn check_claim(pvc: &Map<String, Value>, items: &[Value]) -> Vec<String> {
    let mut errors = Vec::new();
    let requests = quantities(
        pvc.get("spec")
            .and_then(|s| s.pointer("/resources/requests")),
    );
    for item in items
        .iter()
        .filter(|i| i.get("type").and_then(Value::as_str) == Some("PersistentVolumeClaim"))
    {
        let kind = "PersistentVolumeClaim";
        for (k, enforced, shown) in quantities(item.get("min")) {
            match find(&requests, &k) {
                None => errors.push(format!(
                    "minimum {k} usage per {kind} is {shown}.  No request is specified"
                )),
                Some((_, q, text)) if q.nanos() < enforced.nanos() => errors.push(format!(
                    "minimum {k} usage per {kind} is {shown}, but request is {text}"
                )),
                _ => {}
            }
        }
        for (k, enforced, shown) in quantities(item.get("max")) {
            match find(&requests, &k) {
                None => errors.push(format!(
                    "maximum {k} usage per {kind} is {shown}.  No request is specified"
                )),
                Some((_, q, text)) if q.nanos() > enforced.nanos() => errors.push(format!(
                    "maximum {k} usage per {kind} is {shown}, but request is {text}"
                )),
                _ => {}
            }
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(containers: Value) -> Map<String, Value> {
        match json!({"metadata": {"name": "p"}, "spec": {"containers": containers}}) {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn defaults_fill_only_what_a_container_lacks_and_are_annotated() {
        let items = vec![default_item(&json!({
            "type": "Container",
            "default": {"cpu": "500m", "memory": "256Mi"},
            "defaultRequest": {"cpu": "100m"},
        }))];
        let mut p = pod(json!([
            {"name": "a"},
            {"name": "b", "resources": {"limits": {"cpu": "1"}, "requests": {"cpu": "1"}}},
        ]));
        apply_defaults(&mut p, &items);
        let c = &p["spec"]["containers"];
        assert_eq!(
            c[0]["resources"],
            json!({"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "500m", "memory": "256Mi"}})
        );
        assert_eq!(
            c[1]["resources"]["limits"],
            json!({"cpu": "1", "memory": "256Mi"})
        );
        assert_eq!(
            p["metadata"]["annotations"][ANNOTATION],
            "LimitRanger plugin set: cpu, memory request for container a; cpu, memory limit for container a; memory request for container b; memory limit for container b"
        );
    }

    #[test]
    fn a_default_limit_comes_from_max_and_a_default_request_from_min() {
        let item = default_item(
            &json!({"type": "Container", "max": {"cpu": "2"}, "min": {"memory": "1Mi"}}),
        );
        assert_eq!(item["default"], json!({"cpu": "2"}));
        assert_eq!(item["defaultRequest"], json!({"cpu": "2", "memory": "1Mi"}));
    }

    #[test]
    fn container_and_pod_constraints_answer_kubes_messages() {
        // (item, containers, expected errors)
        let cases: Vec<(Value, Value, Vec<&str>)> = vec![
            (
                json!({"type": "Container", "max": {"cpu": "1"}}),
                json!([{"name": "a", "resources": {"limits": {"cpu": "2"}, "requests": {"cpu": "2"}}}]),
                vec!["maximum cpu usage per Container is 1, but limit is 2"],
            ),
            (
                json!({"type": "Container", "max": {"cpu": "1"}}),
                json!([{"name": "a"}]),
                vec!["maximum cpu usage per Container is 1.  No limit is specified"],
            ),
            (
                json!({"type": "Container", "min": {"memory": "64Mi"}}),
                json!([{"name": "a", "resources": {"requests": {"memory": "32Mi"}}}]),
                vec!["minimum memory usage per Container is 64Mi, but request is 32Mi"],
            ),
            (
                json!({"type": "Container", "maxLimitRequestRatio": {"cpu": "2"}}),
                json!([{"name": "a", "resources": {"requests": {"cpu": "100m"}, "limits": {"cpu": "500m"}}}]),
                vec![
                    "cpu max limit to request ratio per Container is 2, but provided ratio is 5.000000",
                ],
            ),
            (
                json!({"type": "Container", "maxLimitRequestRatio": {"cpu": "2"}}),
                json!([{"name": "a", "resources": {"requests": {"cpu": "250m"}, "limits": {"cpu": "500m"}}}]),
                vec![],
            ),
            (
                json!({"type": "Pod", "max": {"cpu": "1"}}),
                json!([
                    {"name": "a", "resources": {"limits": {"cpu": "600m"}}},
                    {"name": "b", "resources": {"limits": {"cpu": "600m"}}},
                ]),
                vec!["maximum cpu usage per Pod is 1, but limit is 1200m"],
            ),
            (
                json!({"type": "Container", "min": {"cpu": "100m"}, "max": {"cpu": "1"}}),
                json!([{"name": "a", "resources": {"requests": {"cpu": "200m"}, "limits": {"cpu": "1"}}}]),
                vec![],
            ),
        ];
        for (item, containers, want) in cases {
            let got = check_pod(&pod(containers.clone()), std::slice::from_ref(&item));
            assert_eq!(got, want, "{item} on {containers}");
        }
    }

    #[test]
    fn claims_are_bounded_by_storage_min_and_max() {
        let items = vec![
            json!({"type": "PersistentVolumeClaim", "min": {"storage": "1Gi"}, "max": {"storage": "2Gi"}}),
        ];
        let claim = |size: &str| match json!({"spec": {"resources": {"requests": {"storage": size}}}})
        {
            Value::Object(m) => m,
            _ => unreachable!(),
        };
        assert_eq!(
            check_claim(&claim("500Mi"), &items),
            vec!["minimum storage usage per PersistentVolumeClaim is 1Gi, but request is 500Mi"]
        );
        assert_eq!(
            check_claim(&claim("5Gi"), &items),
            vec!["maximum storage usage per PersistentVolumeClaim is 2Gi, but request is 5Gi"]
        );
        assert!(check_claim(&claim("1536Mi"), &items).is_empty());
    }
}
