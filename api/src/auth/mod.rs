//! Who may do what: the first two steps of the request corridor.
//!
//! Owns: authentication ([`authn`]: client certificates, ServiceAccount and bootstrap
//! tokens, anonymous), impersonation ([`impersonate`]), authorization ([`authorize`]:
//! `system:masters`, then the node authorizer ([`node`]), then RBAC ([`rbac`]) — or
//! everything allowed under [`AuthorizationMode::AlwaysAllow`]), the default roles
//! ([`defaults`]), and the APIs about identity ([`reviews`]: TokenRequest, TokenReview,
//! SelfSubjectReview, the SubjectAccessReview family, OIDC discovery).
//!
//! Must not know: how objects are stored (it reads them through `EventLog` like any
//! handler) or any handler's internals; handlers call in only through [`authorize`].

pub mod authn;
pub mod defaults;
pub mod node;
pub mod rbac;
pub mod reviews;
pub mod tls;

use std::sync::Arc;

use axum::http::HeaderMap;
use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};
use crate::{Api, Identity};
use authn::TokenSigner;
use rbac::ResourceAttrs;

/// The group of the cluster's administrators: allowed everything, by every authorizer.
pub const MASTERS_GROUP: &str = "system:masters";
/// Impersonation headers read at most this many groups or extra values.
pub const IMPERSONATE_VALUES_MAX: usize = 64;

/// How requests are authorized.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AuthorizationMode {
    /// `system:masters`, then the node authorizer, then RBAC (kube's `Node,RBAC`).
    #[default]
    NodeRbac,
    /// Every authenticated request is allowed (for measuring what authorization costs;
    /// never for a cluster).
    AlwaysAllow,
}

/// The server's authentication and authorization settings.
pub struct Auth {
    /// Signs and verifies ServiceAccount tokens; `None`: no ServiceAccount tokens.
    pub signer: Option<TokenSigner>,
    /// Whether requests without credentials are served as `system:anonymous`.
    pub anonymous: bool,
    pub mode: AuthorizationMode,
}

impl Default for Auth {
    fn default() -> Self {
        Auth {
            signer: None,
            anonymous: false,
            mode: AuthorizationMode::NodeRbac,
        }
    }
}

/// Paths served to anyone, authenticated or not: health probes must not need credentials.
pub fn is_open_path(path: &str) -> bool {
    matches!(path, "/healthz" | "/livez" | "/readyz")
}

/// The identity of a remote request: its client certificate, else its bearer token, else
/// anonymous when allowed. `Ok(None)`: no credentials and anonymous is off.
///
/// # Errors
/// 401 for a bad token; a store failure.
pub async fn authenticate(
    api: &Api,
    cert: Option<Result<Identity, ()>>,
    headers: &HeaderMap,
) -> ApiResult<Option<Identity>> {
    if let Some(cert) = cert {
        // A certificate that does not lead to the cluster CA: 401, whatever else was sent.
        let Ok(mut id) = cert else {
            return Err(authn::unauthorized_error());
        };
        if !id.groups.iter().any(|g| g == authn::AUTHENTICATED_GROUP) {
            id.groups.push(authn::AUTHENTICATED_GROUP.to_string());
        }
        return Ok(Some(id));
    }
    match authn::bearer(headers) {
        Some(Ok(token)) => {
            match authn::token_identity(api.auth.signer.as_ref(), &api.log, token, None).await? {
                Some(id) => Ok(Some(id)),
                None => Err(authn::unauthorized_error()),
            }
        }
        Some(Err(e)) => Err(e),
        None if api.auth.anonymous => Ok(Some(Identity::anonymous())),
        None => Ok(None),
    }
}

/// What a request asks to do.
#[derive(Clone, Debug)]
pub enum Request<'a> {
    Resource {
        attrs: ResourceAttrs<'a>,
        /// The request's field selector (the node authorizer reads `spec.nodeName`).
        field_selector: Option<&'a str>,
    },
    Path {
        verb: &'a str,
        path: &'a str,
    },
}

/// A decision, with the reason a denial gives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny(String),
}

/// Decides `req` for `who`, without waiting for the RBAC cache (a denial may be stale by
/// the moments the cache lags the log).
pub(crate) async fn decide_now(
    api: &Api,
    who: &Identity,
    req: &Request<'_>,
) -> ApiResult<Decision> {
    if api.auth.mode == AuthorizationMode::AlwaysAllow
        || who.groups.iter().any(|g| g == MASTERS_GROUP)
    {
        return Ok(Decision::Allow);
    }
    let mut reason = String::new();
    if let Some(node) = node::node_name(&who.user, &who.groups)
        && let Request::Resource {
            attrs,
            field_selector,
        } = req
    {
        match node::decide(api, node, attrs, *field_selector).await? {
            node::NodeDecision::Allow => return Ok(Decision::Allow),
            node::NodeDecision::NoOpinion(why) => reason = why,
        }
    }
    let allowed = match req {
        Request::Resource { attrs, .. } => api.rbac.allows(&who.user, &who.groups, attrs),
        Request::Path { verb, path } => api.rbac.allows_path(&who.user, &who.groups, verb, path),
    };
    Ok(if allowed {
        Decision::Allow
    } else {
        Decision::Deny(reason)
    })
}

/// Decides `req` for `who`. A denial is final only once the RBAC cache has caught up with
/// the log as it was when the request arrived (a binding just written counts).
///
/// # Errors
/// A store failure.
pub async fn decide(api: &Api, who: &Identity, req: &Request<'_>) -> ApiResult<Decision> {
    let d = decide_now(api, who, req).await?;
    if d == Decision::Allow {
        return Ok(d);
    }
    if let Ok(head) = api.log.head().await {
        api.rbac.catch_up(api, head).await;
    }
    decide_now(api, who, req).await
}

fn qualified(group: &str, resource: &str) -> String {
    if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    }
}

/// kube's message for a refused request.
pub fn forbidden(who: &Identity, req: &Request<'_>, reason: &str) -> ApiError {
    let suffix = if reason.is_empty() {
        String::new()
    } else {
        format!(": {reason}")
    };
    match req {
        Request::Path { verb, path } => ApiError::new(
            403,
            "Forbidden",
            format!(
                "forbidden: User \"{}\" cannot {verb} path \"{path}\"{suffix}",
                who.user
            ),
        ),
        Request::Resource { attrs: r, .. } => {
            let q = qualified(r.group, r.resource);
            let subject = if r.name.is_empty() {
                q.clone()
            } else {
                format!("{q} \"{}\"", r.name)
            };
            let res = match r.subresource {
                Some(s) if !s.is_empty() => format!("{}/{s}", r.resource),
                _ => r.resource.to_string(),
            };
            let scope = if r.namespace.is_empty() {
                "at the cluster scope".to_string()
            } else {
                format!("in the namespace \"{}\"", r.namespace)
            };
            let mut e = ApiError::new(
                403,
                "Forbidden",
                format!(
                    "{subject} is forbidden: User \"{}\" cannot {} resource \"{res}\" in API group \"{}\" {scope}{suffix}",
                    who.user, r.verb, r.group
                ),
            );
            e.details = Some(json!({"name": r.name, "group": r.group, "kind": r.resource}));
            e
        }
    }
}

/// Authorizes `req` for `who`: `Ok` when allowed, 403 otherwise.
///
/// # Errors
/// 403 Forbidden; a store failure.
pub async fn authorize(api: &Api, who: &Identity, req: &Request<'_>) -> ApiResult<()> {
    match decide(api, who, req).await? {
        Decision::Allow => Ok(()),
        Decision::Deny(reason) => Err(forbidden(who, req, &reason)),
    }
}

async fn impersonation_allowed(
    api: &Api,
    who: &Identity,
    resource: &'static str,
    group: &'static str,
    ns: String,
    name: String,
) -> ApiResult<()> {
    let req = Request::Resource {
        attrs: ResourceAttrs {
            verb: "impersonate",
            group,
            resource,
            subresource: None,
            namespace: &ns,
            name: &name,
        },
        field_selector: None,
    };
    authorize(api, who, &req).await
}

fn header_values<'h>(headers: &'h HeaderMap, name: &str) -> Vec<&'h str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .take(IMPERSONATE_VALUES_MAX)
        .collect()
}

/// Applies `Impersonate-User`/`-Group`/`-Uid`/`-Extra-*` headers: each impersonated value
/// must be allowed to `who` (verb `impersonate` on users, groups, serviceaccounts, uids or
/// userextras), and the request then runs as the impersonated identity.
///
/// # Errors
/// 403 when an impersonation is not allowed; 400 for groups or extras without a user.
pub async fn impersonate(api: &Api, who: Identity, headers: &HeaderMap) -> ApiResult<Identity> {
    let users = header_values(headers, "impersonate-user");
    let groups = header_values(headers, "impersonate-group");
    let uids = header_values(headers, "impersonate-uid");
    let extras: Vec<(String, &str)> = headers
        .iter()
        .filter_map(|(k, v)| {
            let key = k.as_str().strip_prefix("impersonate-extra-")?;
            Some((key.to_string(), v.to_str().ok()?))
        })
        .take(IMPERSONATE_VALUES_MAX)
        .collect();
    let Some(user) = users.first().copied() else {
        if groups.is_empty() && uids.is_empty() && extras.is_empty() {
            return Ok(who);
        }
        return Err(ApiError::bad_request(
            "impersonating groups, a uid or extra fields requires impersonating a user",
        ));
    };
    let check = |resource: &'static str, group: &'static str, ns: String, name: String| {
        impersonation_allowed(api, &who, resource, group, ns, name)
    };
    let mut groups_out: Vec<String> = Vec::new();
    if let Some(rest) = user.strip_prefix("system:serviceaccount:")
        && let Some((ns, name)) = rest.split_once(':')
    {
        check("serviceaccounts", "", ns.to_string(), name.to_string()).await?;
        if groups.is_empty() {
            groups_out.push("system:serviceaccounts".into());
            groups_out.push(format!("system:serviceaccounts:{ns}"));
        }
    } else {
        check("users", "", String::new(), user.to_string()).await?;
    }
    for g in &groups {
        check("groups", "", String::new(), (*g).to_string()).await?;
        groups_out.push((*g).to_string());
    }
    for u in &uids {
        check(
            "uids",
            "authentication.k8s.io",
            String::new(),
            (*u).to_string(),
        )
        .await?;
    }
    let mut extra = std::collections::BTreeMap::new();
    for (k, v) in &extras {
        let attrs = ResourceAttrs {
            verb: "impersonate",
            group: "authentication.k8s.io",
            resource: "userextras",
            subresource: Some(k.as_str()),
            namespace: "",
            name: v,
        };
        let req = Request::Resource {
            attrs,
            field_selector: None,
        };
        authorize(api, &who, &req).await?;
        extra
            .entry(k.clone())
            .or_insert_with(Vec::new)
            .push((*v).to_string());
    }
    if user != "system:anonymous" && !groups_out.iter().any(|g| g == authn::AUTHENTICATED_GROUP) {
        groups_out.push(authn::AUTHENTICATED_GROUP.to_string());
    }
    Ok(Identity {
        user: user.to_string(),
        uid: uids.first().map(|u| (*u).to_string()).unwrap_or_default(),
        groups: groups_out,
        extra,
        user_agent: who.user_agent.clone(),
        source: who.source.clone(),
        request_id: who.request_id.clone(),
    })
}

/// Applies a JSON merge patch to an object as the server (`system:logbook`).
///
/// # Errors
/// Whatever the patch answers.
pub async fn system_merge_patch(
    api: &Arc<Api>,
    group: &str,
    plural: &str,
    namespace: Option<&str>,
    name: &str,
    patch: &Value,
) -> ApiResult<()> {
    let mut ctx = api.system_ctx(group, plural, namespace)?;
    ctx.target.name = Some(name.to_string());
    ctx.headers.insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/merge-patch+json"),
    );
    let body = serde_json::to_vec(patch).unwrap_or_default();
    crate::handlers::patch(&ctx, body.into()).await.map(|_| ())
}

/// Creates the default roles and bindings that are missing.
///
/// # Errors
/// A store failure.
pub async fn bootstrap(api: &Arc<Api>) -> ApiResult<()> {
    let objects = defaults::cluster_roles()
        .into_iter()
        .map(|o| ("clusterroles", o))
        .chain(
            defaults::cluster_role_bindings()
                .into_iter()
                .map(|o| ("clusterrolebindings", o)),
        );
    for (plural, body) in objects {
        let ctx = api.system_ctx("rbac.authorization.k8s.io", plural, None)?;
        let name = body
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        if api
            .log
            .get(&ctx.key(name))
            .await
            .map_err(crate::error::from_store)?
            .is_some()
        {
            continue;
        }
        match crate::handlers::create(&ctx, serde_json::to_vec(&body).unwrap_or_default().into())
            .await
        {
            Ok(_) => {}
            Err(e) if e.code == 409 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
