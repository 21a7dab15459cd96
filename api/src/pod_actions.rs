//! The pod subresources that are actions rather than halves of the object:
//! - `pods/binding` (POST a `Binding`): assigns an unbound pod to a node, once — what a
//!   scheduler does;
//! - `pods/eviction` (POST a `policy/v1` `Eviction`): deletes the pod unless that would
//!   violate its PodDisruptionBudget (429), taking one disruption from the budget's status;
//! - `pods/log`, `exec`, `attach`, `portforward` ([`node_stream`]): served by the node agent
//!   of the pod's node, as kube-apiserver has kubelets serve them. This module decides what
//!   to ask: it validates the log options, picks the container (the one asked for, else the
//!   pod's only one), finds the pod's Node and builds the kubelet path
//!   (`/containerLogs/{ns}/{pod}/{container}`, `/exec/…`, `/attach/…`,
//!   `/portForward/{ns}/{pod}`); [`node_proxy`] dials the node agent (client certificate,
//!   pinned serving certificate) and streams or splices the answer.

use std::sync::Arc;

use axum::http::{Method, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use hyper::upgrade::OnUpgrade;
use logbook_schema::LabelSelector;
use logbook_store::{EventType, Expect, ListAt};
use serde_json::{Map, Value, json};

use crate::admission::{Operation, Review};
use crate::error::{ApiError, ApiResult, from_store};
use crate::fairness::InProgress;
use crate::handlers::{
    Ctx, DeleteOptions, UPDATE_RETRIES_MAX, delete_one, parse_body, value_response,
};
use crate::node_proxy::{self, NodeEndpoint};
use crate::object::{decode_stored, meta_mut, meta_str};
use crate::request::Query;
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

/// What a node stream needs of its request besides the [`Ctx`].
pub struct StreamRequest {
    pub method: Method,
    /// The request's query as sent: exec's `command` repeats, in order.
    pub raw_query: Option<String>,
    /// The client connection's upgrade (exec, attach, portforward), when it has one.
    pub on_upgrade: Option<OnUpgrade>,
    /// The client connection's requests in progress (see [`node_proxy::UpgradeClient`]).
    pub in_progress: Option<Arc<InProgress>>,
}

/// GET/POST `pods/{name}/log|exec|attach|portforward`: proxied to the node agent of the
/// pod's node (kube-apiserver's `LogLocation`, `streamLocation`, `PortForwardLocation`).
///
/// # Errors
/// 400 for bad log options, a missing or unknown container, or an unbound pod; 422 for
/// log options kube's validation refuses; 404 for a missing pod; 503 when the pod's node is
/// missing or cannot be reached securely; and the failures of [`NodeProxy::logs`](node_proxy::NodeProxy::logs) and
/// [`NodeProxy::upgrade`](node_proxy::NodeProxy::upgrade).
pub async fn node_stream(ctx: &Ctx, sub: &str, req: StreamRequest) -> ApiResult<Response> {
    let name = ctx.target.name.clone().unwrap_or_default();
    // Log options are decoded and validated before the pod is read, as kube does.
    let log_query = if sub == "log" {
        Some(log_options(&ctx.query, &name)?)
    } else {
        None
    };
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
    let container = match sub {
        "portforward" => String::new(),
        _ => pick_container(&pod, &name, ctx.query.get("container"))?,
    };
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
    let ep = node_endpoint(ctx, node, sub, &name).await?;
    let ns = ctx.namespace();
    let proxy = &ctx.api.node_proxy;
    let shutdown = ctx.api.shutdown.clone();
    let with_query = |path: String, query: String| {
        if query.is_empty() {
            path
        } else {
            format!("{path}?{query}")
        }
    };
    let client = node_proxy::UpgradeClient {
        method: req.method,
        headers: ctx.headers.clone(),
        on_upgrade: req.on_upgrade,
        in_progress: req.in_progress,
    };
    let raw = req.raw_query.as_deref();
    match sub {
        "log" => {
            let path = format!("/containerLogs/{ns}/{name}/{container}");
            let path = with_query(path, log_query.unwrap_or_default());
            proxy.logs(&ep, &path, shutdown).await
        }
        "exec" | "attach" => {
            let path = format!("/{sub}/{ns}/{name}/{container}");
            let path = with_query(path, query_without(raw, Some("container")));
            proxy.upgrade(&ep, &path, client, shutdown).await
        }
        "portforward" => {
            let path = with_query(
                format!("/portForward/{ns}/{name}"),
                query_without(raw, None),
            );
            proxy.upgrade(&ep, &path, client, shutdown).await
        }
        _ => Err(ApiError::no_route()),
    }
}

/// The node agent's endpoint from the pod's Node. A missing Node is 503: no node agent can
/// serve the pod until one registers it.
async fn node_endpoint(ctx: &Ctx, node: &str, sub: &str, pod: &str) -> ApiResult<NodeEndpoint> {
    let missing = || {
        ApiError::new(
            503,
            "ServiceUnavailable",
            format!(
                "pods/{sub} for pod \"{pod}\" needs the node agent of node \"{node}\", and there is no Node \"{node}\""
            ),
        )
    };
    let Some(info) = ctx.api.registry.load().get("", "v1", "nodes").cloned() else {
        return Err(missing());
    };
    let cur = ctx
        .for_resource(info)
        .current(node)
        .await?
        .ok_or_else(missing)?;
    NodeEndpoint::from_node(&decode_stored(&cur.object, cur.position.0)?)
}

/// The container a log, exec or attach request is for, as kube-apiserver's
/// `validateContainer`: the one asked for, which must be one of the pod's containers (init
/// and ephemeral ones included); else the pod's only container.
fn pick_container(
    pod: &Map<String, Value>,
    pod_name: &str,
    asked: Option<&str>,
) -> ApiResult<String> {
    let names_of = |field: &str| -> Vec<String> {
        pod.get("spec")
            .and_then(|s| s.get(field))
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .filter_map(|c| c.get("name").and_then(Value::as_str))
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    let containers = names_of("containers");
    // kube's VisitContainers order: init, regular, ephemeral.
    let all: Vec<String> = names_of("initContainers")
        .into_iter()
        .chain(containers.iter().cloned())
        .chain(names_of("ephemeralContainers"))
        .collect();
    match asked.filter(|c| !c.is_empty()) {
        Some(c) if all.iter().any(|n| n == c) => Ok(c.to_string()),
        Some(c) => Err(ApiError::bad_request(format!(
            "container {c} is not valid for pod {pod_name}"
        ))),
        None => match containers.as_slice() {
            [only] => Ok(only.clone()),
            [] => Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {pod_name}"
            ))),
            _ => Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {pod_name}, choose one of: [{}]",
                all.join(" ")
            ))),
        },
    }
}

/// The query of a `/containerLogs` request from a `pods/log` request's `PodLogOptions`,
/// decoded and validated as kube-apiserver does: a malformed number or time is 400
/// BadRequest, a value out of bounds is 422 Invalid (`ValidatePodLogOptions`).
fn log_options(query: &Query, pod_name: &str) -> ApiResult<String> {
    // apimachinery's query conversion: a present flag is true unless "0" or "false".
    let flag = |k: &str| {
        query
            .get(k)
            .is_some_and(|v| v != "0" && !v.eq_ignore_ascii_case("false"))
    };
    let int = |k: &str| -> ApiResult<Option<i64>> {
        let Some(v) = query.get(k) else {
            return Ok(None);
        };
        v.parse::<i64>().map(Some).map_err(|e| {
            let why = match e.kind() {
                std::num::IntErrorKind::PosOverflow | std::num::IntErrorKind::NegOverflow => {
                    "value out of range"
                }
                _ => "invalid syntax",
            };
            ApiError::bad_request(format!("strconv.ParseInt: parsing {v:?}: {why}"))
        })
    };
    let (tail_lines, limit_bytes, since_seconds) =
        (int("tailLines")?, int("limitBytes")?, int("sinceSeconds")?);
    let since_time =
        match query.get("sinceTime") {
            None | Some("" | "null") => None,
            Some(v) => Some(v.parse::<jiff::Timestamp>().map_err(|e| {
                ApiError::bad_request(format!("parsing time {v:?} as RFC 3339: {e}"))
            })?),
        };
    let cause = |reason: &str, field: &str, message: String| logbook_schema::Cause {
        reason: reason.into(),
        message,
        field: field.into(),
    };
    let mut causes = Vec::new();
    if let Some(n) = tail_lines.filter(|n| *n < 0) {
        causes.push(cause(
            "FieldValueInvalid",
            "tailLines",
            format!("Invalid value: {n}: must be greater than or equal to 0"),
        ));
    }
    if let Some(n) = limit_bytes.filter(|n| *n < 1) {
        causes.push(cause(
            "FieldValueInvalid",
            "limitBytes",
            format!("Invalid value: {n}: must be greater than 0"),
        ));
    }
    match (since_seconds, since_time) {
        (Some(_), Some(_)) => causes.push(cause(
            "FieldValueForbidden",
            "",
            "Forbidden: at most one of `sinceTime` or `sinceSeconds` may be specified".into(),
        )),
        (Some(n), None) if n < 1 => causes.push(cause(
            "FieldValueInvalid",
            "sinceSeconds",
            format!("Invalid value: {n}: must be greater than 0"),
        )),
        _ => {}
    }
    if !causes.is_empty() {
        return Err(ApiError::invalid("PodLogOptions", "", pod_name, causes));
    }
    let mut out = form_urlencoded::Serializer::new(String::new());
    if flag("follow") {
        out.append_pair("follow", "true");
    }
    if let Some(n) = limit_bytes {
        out.append_pair("limitBytes", &n.to_string());
    }
    if flag("previous") {
        out.append_pair("previous", "true");
    }
    if let Some(n) = since_seconds {
        out.append_pair("sinceSeconds", &n.to_string());
    }
    if let Some(t) = since_time {
        out.append_pair("sinceTime", &t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
    }
    if let Some(n) = tail_lines {
        out.append_pair("tailLines", &n.to_string());
    }
    if flag("timestamps") {
        out.append_pair("timestamps", "true");
    }
    Ok(out.finish())
}

/// `raw` (a query string) without the parameter `drop`, its other parameters in order.
fn query_without(raw: Option<&str>, drop: Option<&str>) -> String {
    let mut out = form_urlencoded::Serializer::new(String::new());
    for (k, v) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        if drop != Some(&*k) {
            out.append_pair(&k, &v);
        }
    }
    out.finish()
}
