//! Every error a client sees is a Kubernetes `Status` with the reason and code that
//! kube-apiserver would send for the same failure.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use logbook_schema::validate::Cause;
use serde_json::{Value, json};

/// An API failure, rendered as a `Status` object.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
    pub retry_after_seconds: Option<u32>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
            retry_after_seconds: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// An error about one named object: details name it as kube does.
    fn about_object(
        code: u16,
        reason: &'static str,
        group: &str,
        resource: &str,
        name: &str,
        message: String,
    ) -> Self {
        let mut e = Self::new(code, reason, message);
        e.details = Some(json!({"name": name, "group": group, "kind": resource}));
        e
    }

    pub fn not_found(group: &str, resource: &str, name: &str) -> Self {
        let message = format!("{} \"{name}\" not found", qualified(group, resource));
        Self::about_object(404, "NotFound", group, resource, name, message)
    }

    /// A create in a namespace being deleted (kube's NamespaceLifecycle admission).
    pub fn namespace_terminating(group: &str, resource: &str, ns: &str) -> Self {
        let message = format!(
            "{} is forbidden: unable to create new content in namespace {ns} because it is being terminated",
            qualified(group, resource)
        );
        let mut e = Self::new(403, "Forbidden", message);
        e.details = Some(json!({
            "group": group, "kind": resource,
            "causes": [{
                "reason": "NamespaceTerminating",
                "message": format!("namespace {ns} is being terminated"),
                "field": "metadata.namespace",
            }],
        }));
        e
    }

    /// A 404 for a path that names no resource at all.
    pub fn no_route() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    pub fn already_exists(group: &str, resource: &str, name: &str) -> Self {
        let message = format!("{} \"{name}\" already exists", qualified(group, resource));
        Self::about_object(409, "AlreadyExists", group, resource, name, message)
    }

    /// The optimistic-concurrency failure, with Kubernetes' exact message (clients match it).
    pub fn conflict(group: &str, resource: &str, name: &str, detail: &str) -> Self {
        let message = format!(
            "Operation cannot be fulfilled on {} \"{name}\": {detail}",
            qualified(group, resource)
        );
        Self::about_object(409, "Conflict", group, resource, name, message)
    }

    pub fn modified(group: &str, resource: &str, name: &str) -> Self {
        Self::conflict(
            group,
            resource,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// 422 Invalid with one cause per bad field. The message names the kind qualified by
    /// its group (`Deployment.apps "web" is invalid: ...`, `Pod "p" is invalid: ...`) and
    /// lists each cause once, as apimachinery's `NewInvalid` does.
    pub fn invalid(kind: &str, group: &str, name: &str, mut causes: Vec<Cause>) -> Self {
        let mut seen = std::collections::HashSet::new();
        causes.retain(|c| seen.insert((c.field.clone(), c.message.clone())));
        let qualified_kind = if group.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}.{group}")
        };
        let summary: Vec<String> = causes
            .iter()
            .map(|c| {
                if c.field.is_empty() {
                    c.message.clone()
                } else {
                    format!("{}: {}", c.field, c.message)
                }
            })
            .collect();
        let message = if summary.len() == 1 {
            format!("{qualified_kind} \"{name}\" is invalid: {}", summary[0])
        } else {
            format!(
                "{qualified_kind} \"{name}\" is invalid: [{}]",
                summary.join(", ")
            )
        };
        let causes: Vec<Value> = causes
            .into_iter()
            .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
            .collect();
        let mut e = Self::new(422, "Invalid", message);
        e.details = Some(json!({"name": name, "group": group, "kind": kind, "causes": causes}));
        e
    }

    /// 422 for a request option combination Kubernetes rejects (kind `ListOptions` etc.).
    pub fn invalid_options(kind: &str, field: &str, value: &str, message: &str) -> Self {
        Self::invalid(
            kind,
            "meta.k8s.io",
            "",
            vec![Cause {
                reason: "FieldValueInvalid".into(),
                message: format!("Invalid value: \"{value}\": {message}"),
                field: field.into(),
            }],
        )
    }

    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    pub fn too_large_rv(message: impl Into<String>) -> Self {
        let mut e = Self::new(504, "Timeout", message);
        e.details = Some(
            json!({"causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}], "retryAfterSeconds": 1}),
        );
        e.retry_after_seconds = Some(1);
        e
    }

    pub fn too_many_requests(message: impl Into<String>) -> Self {
        let mut e = Self::new(429, "TooManyRequests", message);
        e.details = Some(json!({"retryAfterSeconds": 1}));
        e.retry_after_seconds = Some(1);
        e
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }

    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", message)
    }

    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf, application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json, application/apply-patch+yaml (got {content_type:?})"
            ),
        )
    }

    /// The `Status` object for this error.
    pub fn status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.code, self.reason, self.message)
    }
}

fn qualified(group: &str, resource: &str) -> String {
    if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.status()).unwrap_or_default();
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = (code, body).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(s) = self.retry_after_seconds {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp
    }
}

/// Maps a store failure to what kube-apiserver answers for the same condition. Callers map
/// the object-level outcomes (exists / not found / precondition) themselves, with names.
pub fn from_store(e: logbook_store::Error) -> ApiError {
    use logbook_store::Error as E;
    match e {
        E::Compacted { requested, horizon } => {
            ApiError::expired(format!("too old resource version: {requested} ({horizon})"))
        }
        E::FutureRevision { requested, head } => ApiError::too_large_rv(format!(
            "Too large resource version: {requested}, current: {head}"
        )),
        E::Overloaded { what, limit } => {
            ApiError::too_many_requests(format!("too many {what} (limit {limit}); retry later"))
        }
        E::TooLarge { what, size, limit } => ApiError::new(
            413,
            "RequestEntityTooLarge",
            format!("{what} is too large: {size} bytes, limit {limit}"),
        ),
        E::InvalidArgument(m) => ApiError::bad_request(m),
        E::Transform { .. } => {
            // kube-apiserver answers a value it cannot decrypt with 500 InternalError too.
            tracing::error!(error = %e, "stored value cannot be opened");
            ApiError::internal(e.to_string())
        }
        E::TransactionConflict | E::TransactionTooOld => {
            ApiError::too_many_requests("the store is busy (transaction conflicts); retry")
        }
        other => {
            tracing::error!(error = %other, "store failure");
            ApiError::internal(format!("storage error: {other}"))
        }
    }
}
