//! The pod subresources that are actions rather than halves of the object:
//! - `pods/binding` (POST a `Binding`): assigns an unbound pod to a node, once — what a
//!   scheduler does;
//! - `pods/eviction` (POST a `policy/v1` `Eviction`): deletes the pod unless that would
//!   violate its PodDisruptionBudget (429), taking one disruption from the budget's status;
//! - `pods/log`, `exec`, `attach`, `portforward`: served by a node agent; until one serves
//!   the pod's node, a clear Status says so.

use axum::http::StatusCode;
use axum::response::Response;
use bytes::Bytes;
use logbook_schema::LabelSelector;
use logbook_store::{EventType, Expect, ListAt};
use serde_json::{Map, Value, json};

use crate::admission::{Operation, Review};
use crate::error::{ApiError, ApiResult, from_store};
use crate::handlers::{
    Ctx, DeleteOptions, UPDATE_RETRIES_MAX, delete_one, parse_body, value_response,
};
use crate::object::{decode_stored, meta_mut, meta_str};
use crate::strategy::now_rfc3339;

/// PodDisruptionBudgets read to decide one eviction (more in one namespace is refused).
const EVICTION_BUDGETS_SCANNED_MAX: usize = 1_000;

fn success(code: StatusCode) -> Response {
    value_response(
        code,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": code.as_u16()}),
    )
}

/// POST `pods/{name}/binding`.
pub async fn bind(ctx: &Ctx, body: Bytes) -> ApiResult<Response> {
    let binding = parse_body(&ctx.headers, &body, "Binding")?;
    let name = ctx.target.name.clone().unwrap_or_default();
    if let Some(n) = binding
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        && !n.is_empty()
        && n != name
    {
        return Err(ApiError::bad_request(format!(
            "the name of the binding ({n}) does not match the pod ({name})"
        )));
    }
    let node = binding
        .get("target")
        .and_then(|t| t.get("name"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if node.is_empty() {
        return Err(ApiError::invalid(
            "Binding",
            "",
            &name,
            vec![logbook_schema::Cause {
                reason: "FieldValueRequired".into(),
                message: "Required value".into(),
                field: "target.name".into(),
            }],
        ));
    }
    let dry_run = ctx.dry_run()?;
    // Admission sees the Binding, a CREATE of `pods/binding`, as in kube-apiserver.
    let mut binding = binding;
    let review = Review::new(ctx, Operation::Create, &name, dry_run);
    review.mutate(Some(&mut binding), None).await?;
    review.validate(Some(&mut binding), None).await?;
    let annotations = binding
        .get("metadata")
        .and_then(|m| m.get("annotations"))
        .and_then(Value::as_object)
        .cloned();
    for _ in 0..UPDATE_RETRIES_MAX {
        let cur = ctx
            .current(&name)
            .await?
            .ok_or_else(|| ctx.not_found(&name))?;
        let mut pod = decode_stored(&cur.object, cur.position.0)?;
        if meta_str(&pod, "deletionTimestamp").is_some() {
            return Err(ApiError::conflict(
                "",
                "pods/binding",
                &name,
                &format!("pod {name} is being deleted, cannot be assigned to a host"),
            ));
        }
        let bound = pod
            .get("spec")
            .and_then(|s| s.get("nodeName"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if !bound.is_empty() {
            return Err(ApiError::conflict(
                "",
                "pods/binding",
                &name,
                &format!("pod {name} is already assigned to node \"{bound}\""),
            ));
        }
        if let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) {
            spec.insert("nodeName".into(), Value::String(node.clone()));
        }
        if let Some(a) = &annotations {
            let meta = meta_mut(&mut pod);
            let target = meta
                .entry("annotations")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Some(t) = target.as_object_mut() {
                t.extend(a.clone());
            }
        }
        set_scheduled(&mut pod);
        meta_mut(&mut pod).remove("resourceVersion");
        if dry_run {
            return Ok(success(StatusCode::CREATED));
        }
        let expect = Expect {
            position: Some(cur.position),
            uid: None,
        };
        match ctx
            .append(
                EventType::Modified,
                &name,
                &pod,
                &cur.uid,
                expect,
                "create;subresource=binding",
            )
            .await
        {
            Ok(_) => return Ok(success(StatusCode::CREATED)),
            Err(e) if e.reason == "Conflict" => continue,
            Err(e) => return Err(e),
        }
    }
    Err(ApiError::modified("", "pods", &name))
}

/// Sets the pod's `PodScheduled` condition to True, as a binding does.
fn set_scheduled(pod: &mut Map<String, Value>) {
    let status = pod
        .entry("status")
        .or_insert_with(|| Value::Object(Map::new()));
    let Some(status) = status.as_object_mut() else {
        return;
    };
    let conditions = status
        .entry("conditions")
        .or_insert_with(|| Value::Array(Vec::new()));
    let Some(list) = conditions.as_array_mut() else {
        return;
    };
    list.retain(|c| c.get("type").and_then(Value::as_str) != Some("PodScheduled"));
    list.push(json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now_rfc3339()}));
}

/// POST `pods/{name}/eviction`.
pub async fn evict(ctx: &Ctx, body: Bytes) -> ApiResult<Response> {
    let eviction = parse_body(&ctx.headers, &body, "Eviction")?;
    let name = ctx.target.name.clone().unwrap_or_default();
    let mut opts = DeleteOptions {
        dry_run: ctx.dry_run()?,
        ..Default::default()
    };
    if let Some(o) = eviction.get("deleteOptions").and_then(Value::as_object) {
        opts.grace_period_seconds = o.get("gracePeriodSeconds").and_then(Value::as_i64);
        opts.propagation = o
            .get("propagationPolicy")
            .and_then(Value::as_str)
            .map(str::to_string);
        if o.get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|d| !d.is_empty())
        {
            opts.dry_run = true;
        }
        let pre = o.get("preconditions");
        opts.precondition_uid = pre
            .and_then(|p| p.get("uid"))
            .and_then(Value::as_str)
            .map(str::to_string);
        opts.precondition_rv = pre
            .and_then(|p| p.get("resourceVersion"))
            .and_then(Value::as_str)
            .map(str::to_string);
    }
    // Admission sees the Eviction, a CREATE of `pods/eviction`; the delete it causes is not
    // admitted again (kube deletes with ValidateAllObjectFunc).
    let mut eviction = eviction;
    let review = Review::new(ctx, Operation::Create, &name, opts.dry_run);
    review.mutate(Some(&mut eviction), None).await?;
    review.validate(Some(&mut eviction), None).await?;
    let cur = ctx
        .current(&name)
        .await?
        .ok_or_else(|| ctx.not_found(&name))?;
    let pod = decode_stored(&cur.object, cur.position.0)?;
    let phase = pod
        .get("status")
        .and_then(|s| s.get("phase"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    // Terminal or already terminating pods disrupt nothing: delete without a budget.
    let exempt =
        matches!(phase, "Succeeded" | "Failed") || meta_str(&pod, "deletionTimestamp").is_some();
    if !exempt {
        take_disruption(ctx, &name, &pod, opts.dry_run).await?;
    }
    delete_one(ctx, &name, &opts).await?;
    Ok(success(StatusCode::CREATED))
}

/// Checks the pod's PodDisruptionBudget and, when it allows a disruption, records one in
/// its status (compare-and-set on the budget). 429 when it does not.
async fn take_disruption(
    ctx: &Ctx,
    pod_name: &str,
    pod: &Map<String, Value>,
    dry_run: bool,
) -> ApiResult<()> {
    let Some(info) = ctx
        .api
        .registry
        .load()
        .get("policy", "v1", "poddisruptionbudgets")
        .cloned()
    else {
        return Ok(());
    };
    let labels = pod
        .get("metadata")
        .and_then(|m| m.get("labels"))
        .and_then(Value::as_object);
    let ns = ctx.namespace().to_string();
    for _ in 0..UPDATE_RETRIES_MAX {
        let page = ctx
            .api
            .log
            .list(
                &info.store_resource(),
                Some(&ns),
                ListAt::Latest,
                EVICTION_BUDGETS_SCANNED_MAX,
                None,
            )
            .await
            .map_err(from_store)?;
        let mut matching = Vec::new();
        for item in page.items {
            let pdb = decode_stored(&item.object, item.position.0)?;
            let selector = pdb
                .get("spec")
                .and_then(|s| s.get("selector"))
                .cloned()
                .unwrap_or(Value::Null);
            let matches = match LabelSelector::from_label_selector_json(&selector) {
                Ok(sel) => !selector.is_null() && sel.matches(labels),
                Err(_) => false,
            };
            if matches {
                matching.push((item, pdb));
            }
        }
        if matching.len() > 1 {
            return Err(ApiError::internal(
                "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
            ));
        }
        let Some((item, mut pdb)) = matching.pop() else {
            return Ok(());
        };
        let pdb_name = meta_str(&pdb, "name").unwrap_or_default().to_string();
        let generation = pdb
            .get("metadata")
            .and_then(|m| m.get("generation"))
            .and_then(Value::as_i64)
            .unwrap_or(1);
        let status = pdb.get("status").cloned().unwrap_or(Value::Null);
        let observed = status
            .get("observedGeneration")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let allowed = status
            .get("disruptionsAllowed")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if observed < generation || allowed <= 0 {
            let healthy = status
                .get("currentHealthy")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            let desired = status
                .get("desiredHealthy")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            let mut e = ApiError::too_many_requests(
                "Cannot evict pod as it would violate the pod's disruption budget.",
            );
            e.details = Some(json!({
                "causes": [{
                    "reason": "DisruptionBudget",
                    "message": format!("The disruption budget {pdb_name} needs {desired} healthy pods and has {healthy} currently"),
                }],
            }));
            return Err(e);
        }
        if dry_run {
            return Ok(());
        }
        if let Some(st) = pdb.get_mut("status").and_then(Value::as_object_mut) {
            st.insert("disruptionsAllowed".into(), json!(allowed - 1));
            let disrupted = st
                .entry("disruptedPods")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Some(d) = disrupted.as_object_mut() {
                d.insert(pod_name.to_string(), Value::String(now_rfc3339()));
            }
        }
        meta_mut(&mut pdb).remove("resourceVersion");
        let pdb_ctx = ctx.for_resource(info.clone());
        let expect = Expect {
            position: Some(item.position),
            uid: None,
        };
        match pdb_ctx
            .append(
                EventType::Modified,
                &pdb_name,
                &pdb,
                &item.uid,
                expect,
                "update;subresource=status;by=eviction",
            )
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) if e.reason == "Conflict" => continue,
            Err(e) => return Err(e),
        }
    }
    Err(ApiError::too_many_requests(
        "the PodDisruptionBudget kept changing; retry the eviction",
    ))
}

/// GET/POST `pods/{name}/log|exec|attach|portforward`: a node agent serves these.
pub async fn node_stream(ctx: &Ctx, sub: &str) -> ApiResult<Response> {
    let name = ctx.target.name.clone().unwrap_or_default();
    let cur = ctx
        .current(&name)
        .await?
        .ok_or_else(|| ctx.not_found(&name))?;
    let pod = decode_stored(&cur.object, cur.position.0)?;
    if sub != "log" {
        // exec, attach and portforward are CONNECT operations for admission.
        let review = Review::new(ctx, Operation::Connect, &name, false);
        review.mutate(None, None).await?;
        review.validate(None, None).await?;
    }
    let node = pod
        .get("spec")
        .and_then(|s| s.get("nodeName"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    if node.is_empty() {
        return Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    }
    Err(ApiError::new(
        503,
        "ServiceUnavailable",
        format!(
            "pods/{sub} for pod \"{name}\" needs the node agent of node \"{node}\", and no node agent serves it yet"
        ),
    ))
}
