//! The APIs about identity and permission. None of them stores anything: each answers a
//! `create` with the object it was sent and a `status` filled in.
//!
//! - `serviceaccounts/token` (TokenRequest): a signed, audience- and time-bound token.
//! - `tokenreviews`, `selfsubjectreviews` (authentication.k8s.io).
//! - `subjectaccessreviews`, `localsubjectaccessreviews`, `selfsubjectaccessreviews`,
//!   `selfsubjectrulesreviews` (authorization.k8s.io): what `kubectl auth can-i` asks.
//! - `/.well-known/openid-configuration` and `/openid/v1/jwks`: OIDC discovery of the
//!   ServiceAccount issuer.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use axum::response::Response;
use bytes::Bytes;
use logbook_schema::registry::{ActionSubresource, Registry, ResourceInfo};
use logbook_store::ObjectKey;
use serde_json::{Map, Value, json};

use super::rbac::{self, ResourceAttrs, strings};
use super::{Decision, Request, authn};
use crate::Identity;
use crate::error::{ApiError, ApiResult, from_store};
use crate::handlers::{Ctx, json_response, parse_body};
use crate::object::decode_stored;

/// The review resources: (group, kind, plural, namespaced).
const REVIEWS: &[(&str, &str, &str, bool)] = &[
    (
        "authentication.k8s.io",
        "TokenReview",
        "tokenreviews",
        false,
    ),
    (
        "authentication.k8s.io",
        "SelfSubjectReview",
        "selfsubjectreviews",
        false,
    ),
    (
        "authorization.k8s.io",
        "SubjectAccessReview",
        "subjectaccessreviews",
        false,
    ),
    (
        "authorization.k8s.io",
        "SelfSubjectAccessReview",
        "selfsubjectaccessreviews",
        false,
    ),
    (
        "authorization.k8s.io",
        "SelfSubjectRulesReview",
        "selfsubjectrulesreviews",
        false,
    ),
    (
        "authorization.k8s.io",
        "LocalSubjectAccessReview",
        "localsubjectaccessreviews",
        true,
    ),
];

/// `serviceaccounts/token`, as kube-apiserver lists it.
pub const TOKEN_ACTION: ActionSubresource = ActionSubresource {
    name: "token",
    group: "authentication.k8s.io",
    version: "v1",
    kind: "TokenRequest",
    verbs: &["create"],
};

/// Adds the review resources and `serviceaccounts/token` to the registry.
pub fn register(reg: &mut Registry) {
    for (group, kind, plural, namespaced) in REVIEWS {
        let mut info = ResourceInfo::new(group, "v1", kind, plural, *namespaced);
        info.verbs = vec!["create".into()];
        reg.add(info);
    }
    if let Some(sa) = reg.get("", "v1", "serviceaccounts") {
        let mut sa = (**sa).clone();
        if sa.action("token").is_none() {
            sa.actions.push(TOKEN_ACTION);
        }
        reg.add(sa);
    }
}

/// Whether a request targets one of the review resources.
pub fn is_review(info: &ResourceInfo) -> bool {
    REVIEWS
        .iter()
        .any(|(g, _, p, _)| info.group == *g && info.plural == *p)
}

fn created(obj: Map<String, Value>) -> Response {
    json_response(
        StatusCode::CREATED,
        serde_json::to_vec(&Value::Object(obj)).unwrap_or_default(),
    )
}

fn user_info(id: &Identity) -> Value {
    let mut u = json!({"username": id.user, "groups": id.groups});
    if !id.uid.is_empty() {
        u["uid"] = json!(id.uid);
    }
    if !id.extra.is_empty() {
        u["extra"] = json!(id.extra);
    }
    u
}

/// Serves a `create` of a review resource.
///
/// # Errors
/// 400 for a malformed body; a store failure.
pub async fn create(ctx: &Ctx, body: Bytes) -> ApiResult<Response> {
    let mut obj = parse_body(&ctx.headers, &body, "create")?;
    let (_, kind, _, _) = REVIEWS
        .iter()
        .find(|(g, _, p, _)| ctx.info.group == *g && ctx.info.plural == *p)
        .copied()
        .ok_or_else(ApiError::no_route)?;
    obj.insert("apiVersion".into(), json!(format!("{}/v1", ctx.info.group)));
    obj.insert("kind".into(), json!(kind));
    let meta = obj.entry("metadata").or_insert_with(|| json!({}));
    if let Some(m) = meta.as_object_mut() {
        m.insert("creationTimestamp".into(), Value::Null);
    }
    let spec = obj.get("spec").cloned().unwrap_or_else(|| json!({}));
    let status = match kind {
        "TokenReview" => token_review(ctx, &spec).await?,
        "SelfSubjectReview" => json!({"userInfo": user_info(&ctx.identity)}),
        "SelfSubjectRulesReview" => rules_review(ctx, &ctx.identity, &spec),
        _ => {
            let who = match kind {
                "SelfSubjectAccessReview" => ctx.identity.clone(),
                _ => subject_of(&spec)?,
            };
            access_review(ctx, &who, kind, &spec).await?
        }
    };
    obj.insert("status".into(), status);
    Ok(created(obj))
}

/// The identity a SubjectAccessReview asks about.
fn subject_of(spec: &Value) -> ApiResult<Identity> {
    let user = spec.get("user").and_then(Value::as_str).unwrap_or("");
    let groups = strings(spec.get("groups"));
    if user.is_empty() && groups.is_empty() {
        return Err(ApiError::invalid(
            "SubjectAccessReview",
            "authorization.k8s.io",
            "",
            vec![logbook_schema::validate::Cause::required(
                "spec.user",
                "at least one of user or group must be specified",
            )],
        ));
    }
    let mut extra = BTreeMap::new();
    if let Some(m) = spec.get("extra").and_then(Value::as_object) {
        for (k, v) in m {
            extra.insert(k.clone(), strings(Some(v)));
        }
    }
    Ok(Identity {
        user: user.to_string(),
        uid: spec
            .get("uid")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        groups,
        extra,
        ..Identity::anonymous()
    })
}

async fn access_review(ctx: &Ctx, who: &Identity, kind: &str, spec: &Value) -> ApiResult<Value> {
    let s = |v: Option<&Value>, k: &str| {
        v.and_then(|v| v.get(k))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let ra = spec.get("resourceAttributes");
    let nra = spec.get("nonResourceAttributes");
    if ra.is_none() && nra.is_none() {
        return Err(ApiError::invalid(
            kind,
            "authorization.k8s.io",
            "",
            vec![logbook_schema::validate::Cause::required(
                "spec.resourceAttributes",
                "exactly one of nonResourceAttributes or resourceAttributes must be specified",
            )],
        ));
    }
    let mut namespace = s(ra, "namespace");
    if kind == "LocalSubjectAccessReview" {
        let path_ns = ctx.namespace().to_string();
        if !namespace.is_empty() && namespace != path_ns {
            return Err(ApiError::bad_request(format!(
                "spec.resourceAttributes.namespace must match namespace: {path_ns}"
            )));
        }
        namespace = path_ns;
    }
    let (verb, group, resource, sub, name, path, path_verb) = (
        s(ra, "verb"),
        s(ra, "group"),
        s(ra, "resource"),
        s(ra, "subresource"),
        s(ra, "name"),
        s(nra, "path"),
        s(nra, "verb"),
    );
    let field_selector = ra
        .and_then(|r| r.pointer("/fieldSelector/rawSelector"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let req = if ra.is_some() {
        Request::Resource {
            attrs: ResourceAttrs {
                verb: &verb,
                group: &group,
                resource: &resource,
                subresource: (!sub.is_empty()).then_some(sub.as_str()),
                namespace: &namespace,
                name: &name,
            },
            field_selector: field_selector.as_deref(),
        }
    } else {
        Request::Path {
            verb: &path_verb,
            path: &path,
        }
    };
    let d = super::decide(&ctx.api, who, &req).await?;
    Ok(match d {
        Decision::Allow => {
            json!({"allowed": true, "reason": "allowed by the cluster's authorization policy"})
        }
        Decision::Deny(reason) => {
            let mut st = json!({"allowed": false});
            if !reason.is_empty() {
                st["reason"] = json!(reason);
            }
            st
        }
    })
}

fn rules_review(ctx: &Ctx, who: &Identity, spec: &Value) -> Value {
    let ns = spec.get("namespace").and_then(Value::as_str).unwrap_or("");
    let sets = ctx.api.rbac.rules_for(&who.user, &who.groups, ns);
    let rules = rbac::flatten(&sets);
    let mut resource_rules = Vec::new();
    let mut non_resource_rules = Vec::new();
    for r in rules {
        if !r.non_resource_urls.is_empty() {
            non_resource_rules
                .push(json!({"verbs": r.verbs, "nonResourceURLs": r.non_resource_urls}));
        }
        if !r.resources.is_empty() {
            let mut v =
                json!({"verbs": r.verbs, "apiGroups": r.api_groups, "resources": r.resources});
            if !r.resource_names.is_empty() {
                v["resourceNames"] = json!(r.resource_names);
            }
            resource_rules.push(v);
        }
    }
    // The node authorizer's grants depend on objects, not on rules: a node's list is
    // incomplete, as kube reports it.
    let incomplete = super::node::node_name(&who.user, &who.groups).is_some();
    json!({"resourceRules": resource_rules, "nonResourceRules": non_resource_rules, "incomplete": incomplete})
}

async fn token_review(ctx: &Ctx, spec: &Value) -> ApiResult<Value> {
    let token = spec.get("token").and_then(Value::as_str).unwrap_or("");
    let asked = strings(spec.get("audiences"));
    let signer = ctx.api.auth.signer.as_ref();
    let audiences: Vec<String> = if asked.is_empty() {
        signer.map(|s| s.api_audiences.clone()).unwrap_or_default()
    } else {
        asked.clone()
    };
    let found = authn::token_identity(signer, &ctx.api.log, token, Some(&audiences)).await?;
    Ok(match found {
        Some(id) => {
            // The audiences the token is valid for, among those asked.
            let valid: Vec<String> = match signer.and_then(|s| s.verify(token, &audiences)) {
                Some(c) => audiences
                    .iter()
                    .filter(|a| c.audiences.contains(a))
                    .cloned()
                    .collect(),
                None => audiences.clone(),
            };
            json!({"authenticated": true, "user": user_info(&id), "audiences": valid})
        }
        None => json!({"authenticated": false, "user": {}, "error": "invalid bearer token"}),
    })
}

/// Serves `POST .../serviceaccounts/<name>/token`: a TokenRequest.
///
/// # Errors
/// 404 for a missing ServiceAccount or bound object, 422 for a lifetime out of bounds,
/// 500 when the server has no signing key.
pub async fn token_request(ctx: &Ctx, body: Bytes) -> ApiResult<Response> {
    let Some(signer) = ctx.api.auth.signer.as_ref() else {
        return Err(ApiError::internal(
            "this server has no service-account signing key",
        ));
    };
    let mut obj = if body.is_empty() {
        Map::new()
    } else {
        parse_body(&ctx.headers, &body, "create")?
    };
    let ns = ctx.namespace().to_string();
    let name = ctx.target.name.clone().unwrap_or_default();
    let Some(sa) = ctx
        .api
        .log
        .get(&ObjectKey::new("serviceaccounts", &ns, &name))
        .await
        .map_err(from_store)?
    else {
        return Err(ApiError::not_found("", "serviceaccounts", &name));
    };
    let sa = decode_stored(&sa.object, sa.position.0)?;
    let sa_uid = sa
        .get("metadata")
        .and_then(|m| m.get("uid"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let spec = obj.get("spec").cloned().unwrap_or_else(|| json!({}));
    let expiration = spec
        .get("expirationSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(authn::TOKEN_EXPIRATION_SECONDS_DEFAULT);
    let invalid = |field: &str, msg: String| {
        ApiError::invalid(
            "TokenRequest",
            "authentication.k8s.io",
            &name,
            vec![logbook_schema::validate::Cause::invalid(
                field,
                &json!(expiration).to_string(),
                &msg,
            )],
        )
    };
    if expiration < authn::TOKEN_EXPIRATION_SECONDS_MIN {
        return Err(invalid(
            "spec.expirationSeconds",
            "may not specify a duration less than 10 minutes".into(),
        ));
    }
    if expiration > authn::TOKEN_EXPIRATION_SECONDS_MAX {
        return Err(invalid(
            "spec.expirationSeconds",
            "may not specify a duration larger than 2^32 seconds".into(),
        ));
    }
    let mut audiences = strings(spec.get("audiences"));
    if audiences.is_empty() {
        audiences = signer.api_audiences.clone();
    }
    let now = jiff::Timestamp::now().as_second();
    let mut k8s = json!({"namespace": ns, "serviceaccount": {"name": name, "uid": sa_uid}});
    if let Some(b) = spec.get("boundObjectRef").filter(|b| !b.is_null()) {
        let kind = b.get("kind").and_then(Value::as_str).unwrap_or("");
        let bname = b.get("name").and_then(Value::as_str).unwrap_or("");
        let (resource, key_ns, claim) = match kind {
            "Pod" => ("pods", ns.as_str(), "pod"),
            "Secret" => ("secrets", ns.as_str(), "secret"),
            "Node" => ("nodes", "", "node"),
            _ => {
                return Err(ApiError::invalid(
                    "TokenRequest",
                    "authentication.k8s.io",
                    &name,
                    vec![logbook_schema::validate::Cause::invalid(
                        "spec.boundObjectRef.kind",
                        kind,
                        "supported values: \"Pod\", \"Secret\", \"Node\"",
                    )],
                ));
            }
        };
        let Some(cur) = ctx
            .api
            .log
            .get(&ObjectKey::new(resource, key_ns, bname))
            .await
            .map_err(from_store)?
        else {
            return Err(ApiError::not_found("", resource, bname));
        };
        let bound = decode_stored(&cur.object, cur.position.0)?;
        let uid = bound
            .get("metadata")
            .and_then(|m| m.get("uid"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if let Some(want) = b
            .get("uid")
            .and_then(Value::as_str)
            .filter(|u| !u.is_empty())
            && want != uid
        {
            return Err(ApiError::conflict(
                "",
                resource,
                bname,
                &format!(
                    "the UID in the bound object reference ({want}) does not match the UID in record ({uid}). The object might have been deleted and then recreated"
                ),
            ));
        }
        k8s[claim] = json!({"name": bname, "uid": uid});
    }
    let exp = now + expiration;
    let claims = json!({"iss": signer.issuer, "aud": audiences, "exp": exp, "iat": now, "nbf": now,
        "jti": uuid::Uuid::new_v4().to_string(),
        "sub": format!("system:serviceaccount:{ns}:{name}"), "kubernetes.io": k8s});
    let token = signer.sign(&claims)?;
    obj.insert("apiVersion".into(), json!("authentication.k8s.io/v1"));
    obj.insert("kind".into(), json!("TokenRequest"));
    obj.insert(
        "metadata".into(),
        json!({"name": name, "namespace": ns, "creationTimestamp": jiff::Timestamp::from_second(now).map(|t| t.to_string()).unwrap_or_default()}),
    );
    let mut spec = spec;
    spec["audiences"] = json!(audiences);
    spec["expirationSeconds"] = json!(expiration);
    obj.insert("spec".into(), spec);
    let expires = jiff::Timestamp::from_second(exp)
        .map(|t| t.to_string())
        .unwrap_or_default();
    obj.insert(
        "status".into(),
        json!({"token": token, "expirationTimestamp": expires}),
    );
    Ok(created(obj))
}

/// `/.well-known/openid-configuration` and `/openid/v1/jwks`, when the server signs
/// ServiceAccount tokens.
pub fn oidc(signer: Option<&authn::TokenSigner>, path: &str) -> Option<Response> {
    let signer = signer?;
    let (body, ct) = match path.trim_end_matches('/') {
        "/.well-known/openid-configuration" => (
            json!({"issuer": signer.issuer,
                "jwks_uri": format!("{}/openid/v1/jwks", signer.issuer.trim_end_matches('/')),
                "response_types_supported": ["id_token"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["ES256"]}),
            "application/json",
        ),
        "/openid/v1/jwks" => (json!({"keys": [signer.jwk()]}), "application/jwk-set+json"),
        _ => return None,
    };
    let mut r = json_response(
        StatusCode::OK,
        serde_json::to_vec(&body).unwrap_or_default(),
    );
    r.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static(ct),
    );
    Some(r)
}
