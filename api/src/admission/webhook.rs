//! MutatingAdmissionWebhook and ValidatingAdmissionWebhook: `admissionregistration.k8s.io/v1`
//! webhook configurations, called over HTTPS with an `admission.k8s.io/v1` AdmissionReview.
//!
//! - Configurations come from the admission cache ([`super::State::list`]): never a store
//!   list per request; a write through this server is seen by the next request, a write
//!   through another replica within [`super::CONFIG_CACHE_TTL_MS`].
//! - Matching: `rules` (operations, apiGroups, apiVersions, resources with `*`, `*/*`,
//!   `pods/*`, `*/status` forms, scope), `matchPolicy` (Equivalent: another version of the
//!   same stored resource matches too), `namespaceSelector` (the namespace's labels; a
//!   Namespace's own labels; cluster-scoped objects always match), `objectSelector` (the
//!   object's or the old object's labels). Webhook configurations themselves are never
//!   sent to webhooks (so a broken webhook cannot lock its own fix out), as in kube.
//! - Calls: `clientConfig.url`, or `clientConfig.service`, resolved through the Service's
//!   Endpoints to the first ready address and the matching port (a ClusterIP routes
//!   nowhere inside Logbook). TLS verifies the server against `caBundle` (the server
//!   name is the URL's host, or `<service>.<namespace>.svc`); without a `caBundle` the call
//!   fails (no system trust store is loaded) and `failurePolicy` decides. One connection
//!   per call (HTTP/1.1), at most [`WEBHOOK_CALLS_INFLIGHT_MAX`] in flight, bounded by
//!   `timeoutSeconds` (default 10, at most [`WEBHOOK_TIMEOUT_SECONDS_MAX`]) for the whole
//!   call, the response by [`WEBHOOK_RESPONSE_BYTES_MAX`].
//! - Responses: the request `uid` must be echoed; `allowed: false` refuses with the
//!   webhook's status (code default 403, message `admission webhook "name" denied the
//!   request: ...`); `warnings` become `Warning` headers; a mutating webhook's `JSONPatch`
//!   is applied and the result decoded into the kind again. A failed call (connection,
//!   TLS, timeout, malformed response) refuses with 500 `failed calling webhook` under
//!   `failurePolicy: Fail` (the default) and is skipped under `Ignore`.
//! - Dry run: webhooks whose `sideEffects` is not `None`/`NoneOnDryRun` refuse dry-run
//!   requests with 400, as kube does.
//! - Order: mutating webhooks one after another, configurations by name, webhooks in
//!   their order; validating webhooks all at once. `reinvocationPolicy: IfNeeded` is not
//!   honoured (each mutating webhook is called once); `matchConditions` (CEL) are not
//!   evaluated.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use futures::future::BoxFuture;
use http_body_util::BodyExt;
use logbook_schema::selector::LabelSelector;
use serde_json::{Map, Value, json};

use super::{Attributes, Plugin};
use crate::error::{ApiError, ApiResult};

/// Webhook calls this server makes at once; more wait (within their timeout).
pub const WEBHOOK_CALLS_INFLIGHT_MAX: usize = 256;
/// A webhook's `timeoutSeconds` when unset (kube's default).
pub const WEBHOOK_TIMEOUT_SECONDS_DEFAULT: u64 = 10;
/// The largest `timeoutSeconds` honoured (kube's validation maximum).
pub const WEBHOOK_TIMEOUT_SECONDS_MAX: u64 = 30;
/// The largest AdmissionReview response read from a webhook, in bytes.
pub const WEBHOOK_RESPONSE_BYTES_MAX: usize = 3 * 1024 * 1024;

const MUTATING: &str = "admissionregistration.k8s.io/mutatingwebhookconfigurations";
const VALIDATING: &str = "admissionregistration.k8s.io/validatingwebhookconfigurations";

pub struct MutatingAdmissionWebhook;
pub struct ValidatingAdmissionWebhook;

impl Plugin for MutatingAdmissionWebhook {
    fn name(&self) -> &'static str {
        "MutatingAdmissionWebhook"
    }

    fn admit<'a>(&'a self, a: &'a mut Attributes<'_>) -> BoxFuture<'a, ApiResult<()>> {
        Box::pin(async move {
            if exempt(a) {
                return Ok(());
            }
            let hooks = matching(a, MUTATING).await?;
            for hook in hooks {
                let Some(response) = call(a, &hook).await? else {
                    continue;
                };
                let Some(patch) = response.get("patch").and_then(Value::as_str) else {
                    continue;
                };
                let name = hook_name(&hook).to_string();
                apply_patch(a, &name, patch)?;
            }
            Ok(())
        })
    }
}

impl Plugin for ValidatingAdmissionWebhook {
    fn name(&self) -> &'static str {
        "ValidatingAdmissionWebhook"
    }

    fn validate<'a>(&'a self, a: &'a Attributes<'_>) -> BoxFuture<'a, ApiResult<()>> {
        Box::pin(async move {
            if exempt(a) {
                return Ok(());
            }
            let hooks = matching(a, VALIDATING).await?;
            let results = futures::future::join_all(hooks.iter().map(|h| call(a, h))).await;
            for r in results {
                r?;
            }
            Ok(())
        })
    }
}

/// Webhook configurations are not admitted by webhooks.
fn exempt(a: &Attributes<'_>) -> bool {
    a.group() == "admissionregistration.k8s.io"
}

fn hook_name(hook: &Value) -> &str {
    hook.get("name").and_then(Value::as_str).unwrap_or("")
}

/// The webhooks of every configuration of `resource` that match the request, in order.
async fn matching(a: &Attributes<'_>, resource: &str) -> ApiResult<Vec<Value>> {
    let configs = a.ctx.api.admission.list(&a.ctx.api, resource, "").await?;
    if configs.is_empty() {
        return Ok(Vec::new());
    }
    let mut configs: Vec<&Map<String, Value>> = configs.iter().collect();
    configs.sort_by_key(|c| crate::object::meta_str(c, "name").unwrap_or("").to_string());
    let mut out = Vec::new();
    for c in configs {
        for hook in c
            .get("webhooks")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if rules_match(a, hook) && selectors_match(a, hook).await? {
                out.push(hook.clone());
            }
        }
    }
    Ok(out)
}

fn strs(v: Option<&Value>) -> Vec<&str> {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

/// What a rule is matched against.
pub struct RuleTarget<'a> {
    pub operation: &'a str,
    pub group: &'a str,
    pub version: &'a str,
    pub resource: &'a str,
    pub subresource: &'a str,
    pub namespaced: bool,
}

/// Whether any rule of the webhook matches the request (kube's RuleMatcher). With
/// `matchPolicy: Equivalent` (the default) another version of the same stored resource
/// matches too.
pub fn rules_match(a: &Attributes<'_>, hook: &Value) -> bool {
    let equivalent = hook.get("matchPolicy").and_then(Value::as_str) != Some("Exact");
    let target = RuleTarget {
        operation: a.operation().as_str(),
        group: a.group(),
        version: a.version(),
        resource: a.resource(),
        subresource: a.subresource(),
        namespaced: a.ctx.info.namespaced,
    };
    let registry = a.ctx.api.registry.load();
    let same_resource = |v: &str| {
        equivalent
            && registry
                .get(a.group(), v, a.resource())
                .is_some_and(|i| i.store_resource() == a.ctx.info.store_resource())
    };
    strs_rules(hook)
        .iter()
        .any(|rule| rule_matches(rule, &target, &same_resource))
}

/// One rule against a request; `equivalent_version` says whether another version of the
/// rule names the same stored resource.
pub fn rule_matches(
    rule: &Value,
    t: &RuleTarget<'_>,
    equivalent_version: &dyn Fn(&str) -> bool,
) -> bool {
    let op_ok = strs(rule.get("operations"))
        .iter()
        .any(|o| *o == "*" || *o == t.operation);
    let group_ok = strs(rule.get("apiGroups"))
        .iter()
        .any(|g| *g == "*" || *g == t.group);
    let version_ok = strs(rule.get("apiVersions"))
        .iter()
        .any(|v| *v == "*" || *v == t.version || equivalent_version(v));
    // `pods` is the resource only, `pods/*` the resource and its subresources, `*/status`
    // every status subresource, `*` every resource, `*/*` everything (kube's splitResource).
    let resource_ok = strs(rule.get("resources")).iter().any(|r| {
        let (res, sub) = r.split_once('/').unwrap_or((r, ""));
        (res == "*" || res == t.resource) && (sub == "*" || sub == t.subresource)
    });
    let scope_ok = match rule.get("scope").and_then(Value::as_str).unwrap_or("*") {
        "Cluster" => !t.namespaced,
        "Namespaced" => t.namespaced,
        _ => true,
    };
    op_ok && group_ok && version_ok && resource_ok && scope_ok
}

fn strs_rules(hook: &Value) -> Vec<&Value> {
    hook.get("rules")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .collect()
}

fn selector(hook: &Value, field: &str) -> Option<LabelSelector> {
    match hook.get(field) {
        None | Some(Value::Null) => Some(LabelSelector::everything()),
        Some(v) => LabelSelector::from_label_selector_json(v).ok(),
    }
}

/// namespaceSelector and objectSelector. An unparsable selector matches nothing.
async fn selectors_match(a: &Attributes<'_>, hook: &Value) -> ApiResult<bool> {
    let Some(objects) = selector(hook, "objectSelector") else {
        return Ok(false);
    };
    if !objects.is_empty() {
        let any = [a.object(), a.old_object]
            .into_iter()
            .flatten()
            .any(|o| objects.matches(super::labels(o)));
        if !any {
            return Ok(false);
        }
    }
    let Some(namespaces) = selector(hook, "namespaceSelector") else {
        return Ok(false);
    };
    if namespaces.is_empty() {
        return Ok(true);
    }
    if a.is_core("namespaces") {
        let o = a.object().or(a.old_object);
        return Ok(namespaces.matches(o.and_then(super::labels)));
    }
    if !a.ctx.info.namespaced {
        return Ok(true);
    }
    let ns = a.namespace_object().await?;
    Ok(namespaces.matches(ns.as_deref().and_then(super::labels)))
}

/// The AdmissionReview request for this webhook call.
fn review(a: &Attributes<'_>, uid: &str) -> Value {
    let (kind_group, kind_version, kind) = if a.subresource() == "scale" {
        ("autoscaling", "v1", "Scale")
    } else {
        (a.group(), a.version(), a.kind())
    };
    let kind = json!({"group": kind_group, "version": kind_version, "kind": kind});
    let resource = json!({"group": a.group(), "version": a.version(), "resource": a.resource()});
    let mut request = json!({
        "uid": uid,
        "kind": kind,
        "resource": resource,
        "requestKind": kind,
        "requestResource": resource,
        "name": a.name(),
        "operation": a.operation().as_str(),
        "userInfo": user_info(&a.ctx.identity),
        "object": a.object().map_or(Value::Null, |o| Value::Object(o.clone())),
        "oldObject": a.old_object.map_or(Value::Null, |o| Value::Object(o.clone())),
        "dryRun": a.dry_run(),
        "options": a.review.options,
    });
    if !a.subresource().is_empty() {
        request["subResource"] = json!(a.subresource());
        request["requestSubResource"] = json!(a.subresource());
    }
    if !a.namespace().is_empty() {
        request["namespace"] = json!(a.namespace());
    }
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request})
}

/// kube's `authentication/v1` UserInfo of the requester (uid and extra only when known).
fn user_info(id: &crate::Identity) -> Value {
    let mut u = json!({"username": id.user, "groups": id.groups});
    if !id.uid.is_empty() {
        u["uid"] = json!(id.uid);
    }
    if !id.extra.is_empty() {
        u["extra"] = json!(id.extra);
    }
    u
}

/// Calls one webhook. `Ok(Some(response))` when it allowed the request, `Ok(None)` when a
/// failed call is ignored (`failurePolicy: Ignore`); a denial or a failed call under
/// `Fail` is the error.
async fn call(a: &Attributes<'_>, hook: &Value) -> ApiResult<Option<Map<String, Value>>> {
    let name = hook_name(hook);
    let side_effects = hook
        .get("sideEffects")
        .and_then(Value::as_str)
        .unwrap_or("Unknown");
    if a.dry_run() && !matches!(side_effects, "None" | "NoneOnDryRun") {
        return Err(ApiError::bad_request(format!(
            "admission webhook {name:?} does not support dry run"
        )));
    }
    let timeout = hook
        .get("timeoutSeconds")
        .and_then(Value::as_u64)
        .unwrap_or(WEBHOOK_TIMEOUT_SECONDS_DEFAULT)
        .clamp(1, WEBHOOK_TIMEOUT_SECONDS_MAX);
    let uid = uuid::Uuid::new_v4().to_string();
    let body = serde_json::to_vec(&review(a, &uid)).unwrap_or_default();
    let outcome = tokio::time::timeout(
        Duration::from_secs(timeout),
        post(a, hook.get("clientConfig").unwrap_or(&Value::Null), body),
    )
    .await
    .unwrap_or_else(|_| Err(format!("context deadline exceeded (timeout {timeout}s)")))
    .and_then(|bytes| parse_response(&bytes, &uid));
    let response = match outcome {
        Ok(r) => r,
        Err(why) => {
            if hook.get("failurePolicy").and_then(Value::as_str) == Some("Ignore") {
                tracing::warn!(webhook = name, error = %why, "failed calling webhook; ignored");
                return Ok(None);
            }
            return Err(ApiError::internal(format!(
                "Internal error occurred: failed calling webhook {name:?}: failed to call webhook: {why}"
            )));
        }
    };
    for w in strs(response.get("warnings")) {
        a.warn(w.to_string());
    }
    if response.get("allowed").and_then(Value::as_bool) == Some(true) {
        return Ok(Some(response));
    }
    Err(denied(name, response.get("status")))
}

/// kube's `ToStatusErr`: the webhook's status, its message prefixed with who denied.
fn denied(name: &str, status: Option<&Value>) -> ApiError {
    let empty = json!({});
    let status = status.unwrap_or(&empty);
    let message = status.get("message").and_then(Value::as_str).unwrap_or("");
    let reason = status.get("reason").and_then(Value::as_str).unwrap_or("");
    let denied_by = format!("admission webhook {name:?} denied the request");
    let message = if !message.is_empty() {
        format!("{denied_by}: {message}")
    } else if !reason.is_empty() {
        format!("{denied_by}: {reason}")
    } else {
        format!("{denied_by} without explanation")
    };
    let code = status
        .get("code")
        .and_then(Value::as_u64)
        .and_then(|c| u16::try_from(c).ok())
        .filter(|c| (400..600).contains(c))
        .unwrap_or(403);
    let reason = match reason {
        "BadRequest" => "BadRequest",
        "Unauthorized" => "Unauthorized",
        "Forbidden" => "Forbidden",
        "NotFound" => "NotFound",
        "AlreadyExists" => "AlreadyExists",
        "Conflict" => "Conflict",
        "Invalid" => "Invalid",
        "TooManyRequests" => "TooManyRequests",
        "InternalError" => "InternalError",
        "ServiceUnavailable" => "ServiceUnavailable",
        _ if code == 403 => "Forbidden",
        _ => "",
    };
    let mut e = ApiError::new(code, reason, message);
    if let Some(d) = status.get("details") {
        e.details = Some(d.clone());
    }
    e
}

fn parse_response(bytes: &[u8], uid: &str) -> Result<Map<String, Value>, String> {
    let v: Value = serde_json::from_slice(bytes)
        .map_err(|e| format!("the response is not an AdmissionReview: {e}"))?;
    if v.get("apiVersion").and_then(Value::as_str) != Some("admission.k8s.io/v1")
        || v.get("kind").and_then(Value::as_str) != Some("AdmissionReview")
    {
        return Err(
            "expected webhook response of admission.k8s.io/v1, Kind=AdmissionReview".into(),
        );
    }
    let Some(Value::Object(r)) = v.get("response") else {
        return Err("webhook response was absent".into());
    };
    let got = r.get("uid").and_then(Value::as_str).unwrap_or("");
    if got != uid {
        return Err(format!("expected response.uid={uid:?}, got {got:?}"));
    }
    Ok(r.clone())
}

/// Applies a mutating webhook's base64 JSONPatch to the object.
fn apply_patch(a: &mut Attributes<'_>, name: &str, patch: &str) -> ApiResult<()> {
    let fail = |why: String| {
        ApiError::internal(format!(
            "Internal error occurred: failed calling webhook {name:?}: {why}"
        ))
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(patch)
        .map_err(|e| fail(format!("the patch is not base64: {e}")))?;
    let patch: json_patch::Patch = serde_json::from_slice(&bytes)
        .map_err(|e| fail(format!("the patch is not a JSON patch: {e}")))?;
    let scale = a.subresource() == "scale";
    let info = a.ctx.info.clone();
    let Some(obj) = a.object.as_deref_mut() else {
        return Ok(());
    };
    let mut doc = Value::Object(std::mem::take(obj));
    let res = json_patch::patch(&mut doc, &patch);
    let Value::Object(patched) = doc else {
        return Err(fail("the patched object is not an object".into()));
    };
    if let Err(e) = res {
        *obj = patched;
        return Err(fail(format!("the patch could not be applied: {e}")));
    }
    // The patched object is decoded into its kind again, as kube does.
    *obj = if scale {
        patched
    } else {
        crate::strategy::typed_roundtrip(&info, patched)?
    };
    Ok(())
}

/// Where a webhook is reached: the host to connect to, the TLS server name, the path.
struct Endpoint {
    connect: String,
    server_name: String,
    host_header: String,
    path: String,
}

async fn endpoint(a: &Attributes<'_>, cfg: &Value) -> Result<Endpoint, String> {
    if let Some(url) = cfg.get("url").and_then(Value::as_str) {
        let uri: axum::http::Uri = url.parse().map_err(|e| format!("bad url {url:?}: {e}"))?;
        if uri.scheme_str() != Some("https") {
            return Err(format!("url {url:?} must be https"));
        }
        let host = uri.host().ok_or("the url has no host")?.to_string();
        let port = uri.port_u16().unwrap_or(443);
        let bare = host.trim_matches(['[', ']']).to_string();
        return Ok(Endpoint {
            connect: format!("{host}:{port}"),
            server_name: bare,
            host_header: format!("{host}:{port}"),
            path: uri
                .path_and_query()
                .map_or_else(|| "/".into(), |p| p.as_str().to_string()),
        });
    }
    let svc = cfg
        .get("service")
        .ok_or("clientConfig has neither url nor service")?;
    let ns = svc.get("namespace").and_then(Value::as_str).unwrap_or("");
    let name = svc.get("name").and_then(Value::as_str).unwrap_or("");
    let port = svc.get("port").and_then(Value::as_i64).unwrap_or(443);
    let path = svc.get("path").and_then(Value::as_str).unwrap_or("/");
    let get = |plural: &'static str| {
        let key = logbook_store::ObjectKey::new(plural, ns, name);
        async move {
            let cur = a
                .ctx
                .api
                .log
                .get(&key)
                .await
                .map_err(|e| format!("reading {plural} {ns}/{name}: {e}"))?
                .ok_or_else(|| format!("service \"{name}\" not found"))?;
            crate::object::decode_stored(&cur.object, cur.position.0)
                .map_err(|e| e.message)
                .map(Value::Object)
        }
    };
    let service = get("services").await?;
    let sport = service
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|p| p.get("port").and_then(Value::as_i64) == Some(port))
        .ok_or_else(|| format!("service \"{name}\" has no port {port}"))?
        .clone();
    let endpoints = get("endpoints").await?;
    let subset = endpoints
        .pointer("/subsets/0")
        .ok_or_else(|| format!("service \"{name}\" has no ready endpoints"))?;
    let ip = subset
        .pointer("/addresses/0/ip")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("service \"{name}\" has no ready endpoints"))?;
    let port_name = sport.get("name").and_then(Value::as_str).unwrap_or("");
    let target = subset
        .get("ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|p| p.get("name").and_then(Value::as_str).unwrap_or("") == port_name)
        .and_then(|p| p.get("port").and_then(Value::as_i64))
        .or_else(|| sport.get("targetPort").and_then(Value::as_i64))
        .unwrap_or(port);
    let connect = if ip.contains(':') {
        format!("[{ip}]:{target}")
    } else {
        format!("{ip}:{target}")
    };
    Ok(Endpoint {
        connect,
        server_name: format!("{name}.{ns}.svc"),
        host_header: format!("{name}.{ns}.svc:{port}"),
        path: path.to_string(),
    })
}

fn tls_config(cfg: &Value) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(b64) = cfg.get("caBundle").and_then(Value::as_str) {
        let pem = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| format!("caBundle is not base64: {e}"))?;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            let cert = cert.map_err(|e| format!("caBundle: {e}"))?;
            roots.add(cert).map_err(|e| format!("caBundle: {e}"))?;
        }
    }
    if roots.is_empty() {
        return Err("no caBundle to verify the webhook's certificate with".into());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// POSTs the review; the response body, read within [`WEBHOOK_RESPONSE_BYTES_MAX`].
async fn post(a: &Attributes<'_>, cfg: &Value, body: Vec<u8>) -> Result<Vec<u8>, String> {
    let _permit = a
        .ctx
        .api
        .admission
        .webhook_calls
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| "shutting down".to_string())?;
    let ep = endpoint(a, cfg).await?;
    let tls = tls_config(cfg)?;
    let url = format!("https://{}{}", ep.host_header, ep.path);
    let post_err = |e: &dyn std::fmt::Display| format!("Post {url:?}: {e}");
    let tcp = tokio::net::TcpStream::connect(&ep.connect)
        .await
        .map_err(|e| post_err(&e))?;
    let _ = tcp.set_nodelay(true);
    let server_name = rustls::pki_types::ServerName::try_from(ep.server_name.clone())
        .map_err(|e| post_err(&e))?;
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(server_name, tcp)
        .await
        .map_err(|e| post_err(&e))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| post_err(&e))?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = hyper::Request::post(ep.path.as_str())
        .header(hyper::header::HOST, ep.host_header.as_str())
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(hyper::header::ACCEPT, "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .map_err(|e| post_err(&e))?;
    let result = async {
        let resp = sender.send_request(req).await.map_err(|e| post_err(&e))?;
        let status = resp.status();
        let body = http_body_util::Limited::new(resp.into_body(), WEBHOOK_RESPONSE_BYTES_MAX)
            .collect()
            .await
            .map_err(|e| post_err(&e))?
            .to_bytes();
        if !status.is_success() {
            return Err(format!(
                "Post {url:?}: the server answered {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(256)])
            ));
        }
        Ok(body.to_vec())
    }
    .await;
    driver.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_match_operations_groups_versions_resource_forms_and_scope() {
        let pod_create = RuleTarget {
            operation: "CREATE",
            group: "",
            version: "v1",
            resource: "pods",
            subresource: "",
            namespaced: true,
        };
        let pod_status = RuleTarget {
            operation: "UPDATE",
            subresource: "status",
            ..pod_create
        };
        let node = RuleTarget {
            operation: "CREATE",
            resource: "nodes",
            namespaced: false,
            ..pod_create
        };
        let rule = |ops: &[&str], resources: &[&str], scope: &str| {
            json!({"operations": ops, "apiGroups": [""], "apiVersions": ["v1"],
                "resources": resources, "scope": scope})
        };
        let no = |_: &str| false;
        // (rule, target, matches)
        let cases: Vec<(Value, &RuleTarget<'_>, bool)> = vec![
            (rule(&["CREATE"], &["pods"], "*"), &pod_create, true),
            (rule(&["UPDATE"], &["pods"], "*"), &pod_create, false),
            (rule(&["*"], &["pods"], "*"), &pod_status, false),
            (rule(&["*"], &["pods/status"], "*"), &pod_status, true),
            (rule(&["*"], &["pods/*"], "*"), &pod_status, true),
            (rule(&["*"], &["pods/*"], "*"), &pod_create, true),
            (rule(&["*"], &["*/status"], "*"), &pod_status, true),
            (rule(&["*"], &["*"], "*"), &pod_status, false),
            (rule(&["*"], &["*/*"], "*"), &pod_status, true),
            (rule(&["*"], &["*"], "Namespaced"), &node, false),
            (rule(&["*"], &["*"], "Cluster"), &node, true),
            (rule(&["*"], &["*"], "Cluster"), &pod_create, false),
            (
                json!({"operations": ["*"], "apiGroups": ["apps"], "apiVersions": ["*"], "resources": ["*"]}),
                &pod_create,
                false,
            ),
            (
                json!({"operations": ["*"], "apiGroups": ["*"], "apiVersions": ["v2"], "resources": ["*"]}),
                &pod_create,
                false,
            ),
        ];
        for (r, t, want) in cases {
            assert_eq!(
                rule_matches(&r, t, &no),
                want,
                "{r} on {}/{}",
                t.resource,
                t.subresource
            );
        }
        let v2 = json!({"operations": ["*"], "apiGroups": ["*"], "apiVersions": ["v2"], "resources": ["*"]});
        assert!(
            rule_matches(&v2, &pod_create, &|v| v == "v2"),
            "an equivalent version matches"
        );
    }

    #[test]
    fn a_denial_carries_the_webhooks_code_and_message_prefixed_with_its_name() {
        let e = denied(
            "x.example.com",
            Some(&json!({"code": 422, "message": "no", "reason": "Invalid"})),
        );
        assert_eq!((e.code, e.reason), (422, "Invalid"));
        assert_eq!(
            e.message,
            "admission webhook \"x.example.com\" denied the request: no"
        );
        let e = denied("x.example.com", None);
        assert_eq!((e.code, e.reason), (403, "Forbidden"));
        assert_eq!(
            e.message,
            "admission webhook \"x.example.com\" denied the request without explanation"
        );
    }

    #[test]
    fn a_response_must_echo_the_request_uid() {
        let ok = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "response": {"uid": "u1", "allowed": true}});
        assert!(parse_response(ok.to_string().as_bytes(), "u1").is_ok());
        let err = parse_response(ok.to_string().as_bytes(), "u2").expect_err("uid mismatch");
        assert!(err.contains("expected response.uid=\"u2\""), "{err}");
        assert!(parse_response(b"not json", "u1").is_err());
    }
}
