//! OpenAPI v3 discovery, generated from the registry: the `/openapi/v3` index and one
//! document per group-version listing every resource path and its operations, each tagged
//! with `x-kubernetes-group-version-kind` and the query parameters the server honours
//! (`dryRun`, `fieldManager`, `fieldValidation`). That is what kubectl ≥ 1.27 reads to
//! decide that the server validates fields itself (`--validate=strict` then sends
//! `fieldValidation=Strict` instead of validating client-side). Component schemas arrive
//! with the kubectl issue (explain, client-side apply).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use logbook_schema::registry::{Registry, ResourceInfo};
use serde_json::{Map, Value, json};

use crate::error::ApiError;

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

fn respond(v: &Value) -> Response {
    let mut r = (StatusCode::OK, serde_json::to_vec(v).unwrap_or_default()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// A stable hash of a group-version's document (clients cache by it).
fn doc_hash(reg: &Registry, group: &str, version: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for r in reg.resources(group, version) {
        for b in format!("{}/{}/{}|", r.plural, r.kind, r.verbs.join(",")).bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016X}")
}

pub fn index(reg: &Registry) -> Response {
    let mut paths = Map::new();
    let mut gvs = vec![(String::new(), "v1".to_string())];
    for g in reg.groups() {
        for v in &g.versions {
            gvs.push((g.group.clone(), v.clone()));
        }
    }
    for (g, v) in gvs {
        let p = gv_path(&g, &v);
        let url = format!("/openapi/v3/{p}?hash={}", doc_hash(reg, &g, &v));
        paths.insert(p, json!({"serverRelativeURL": url}));
    }
    respond(&json!({"paths": paths}))
}

fn param(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "query", "description": description, "schema": {"type": "string", "uniqueItems": true}})
}

fn operation(r: &ResourceInfo, action: &str, id: &str, params: &[&str]) -> Value {
    let parameters: Vec<Value> = params
        .iter()
        .map(|p| param(p, &format!("the {p} parameter")))
        .collect();
    json!({
        "operationId": id,
        "parameters": parameters,
        "responses": {"200": {"description": "OK"}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": r.group, "version": r.version, "kind": r.kind},
    })
}

pub fn group_version(reg: &Registry, group: &str, version: &str) -> Response {
    let resources = reg.resources(group, version);
    if resources.is_empty() {
        return ApiError::no_route().into_response();
    }
    let base = format!("/{}", gv_path(group, version));
    let mut paths = Map::new();
    let write_params = ["dryRun", "fieldManager", "fieldValidation"];
    for r in resources {
        let prefix = if r.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}", r.plural)
        } else {
            format!("{base}/{}", r.plural)
        };
        let id = |verb: &str| format!("{verb}{}", r.kind);
        let mut collection = Map::new();
        if r.verbs.iter().any(|v| v == "list") {
            collection.insert(
                "get".into(),
                operation(
                    r,
                    "list",
                    &id("list"),
                    &[
                        "labelSelector",
                        "fieldSelector",
                        "limit",
                        "continue",
                        "resourceVersion",
                        "resourceVersionMatch",
                        "watch",
                        "sendInitialEvents",
                        "timeoutSeconds",
                        "allowWatchBookmarks",
                    ],
                ),
            );
        }
        if r.verbs.iter().any(|v| v == "create") {
            collection.insert(
                "post".into(),
                operation(r, "post", &id("create"), &write_params),
            );
        }
        if r.verbs.iter().any(|v| v == "deletecollection") {
            collection.insert(
                "delete".into(),
                operation(
                    r,
                    "deletecollection",
                    &id("deletecollection"),
                    &[
                        "dryRun",
                        "labelSelector",
                        "fieldSelector",
                        "gracePeriodSeconds",
                        "propagationPolicy",
                    ],
                ),
            );
        }
        paths.insert(prefix.clone(), Value::Object(collection));
        let mut item = Map::new();
        item.insert("get".into(), operation(r, "get", &id("read"), &[]));
        if r.verbs.iter().any(|v| v == "update") {
            item.insert(
                "put".into(),
                operation(r, "put", &id("replace"), &write_params),
            );
        }
        if r.verbs.iter().any(|v| v == "patch") {
            item.insert(
                "patch".into(),
                operation(
                    r,
                    "patch",
                    &id("patch"),
                    &["dryRun", "fieldManager", "fieldValidation", "force"],
                ),
            );
        }
        if r.verbs.iter().any(|v| v == "delete") {
            item.insert(
                "delete".into(),
                operation(
                    r,
                    "delete",
                    &id("delete"),
                    &["dryRun", "gracePeriodSeconds", "propagationPolicy"],
                ),
            );
        }
        paths.insert(format!("{prefix}/{{name}}"), Value::Object(item));
        for sub in ["status", "scale"] {
            let has = match sub {
                "status" => r.status_subresource,
                _ => r.scale.is_some(),
            };
            if has {
                let mut s = Map::new();
                s.insert(
                    "get".into(),
                    operation(r, "get", &id(&format!("read{sub}")), &[]),
                );
                s.insert(
                    "put".into(),
                    operation(r, "put", &id(&format!("replace{sub}")), &write_params),
                );
                s.insert(
                    "patch".into(),
                    operation(
                        r,
                        "patch",
                        &id(&format!("patch{sub}")),
                        &["dryRun", "fieldManager", "fieldValidation", "force"],
                    ),
                );
                paths.insert(format!("{prefix}/{{name}}/{sub}"), Value::Object(s));
            }
        }
    }
    respond(&json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": format!("v{}.{}.0", crate::KUBERNETES_VERSION.0, crate::KUBERNETES_VERSION.1)},
        "paths": paths,
        "components": {"schemas": {}},
    }))
}

/// Routes `/openapi/v3` and `/openapi/v3/<gv path>`.
pub fn route(reg: &Registry, path: &str) -> Option<Response> {
    let rest = path.strip_prefix("/openapi/v3")?;
    let rest = rest.trim_matches('/');
    if rest.is_empty() {
        return Some(index(reg));
    }
    let parts: Vec<&str> = rest.split('/').collect();
    Some(match parts.as_slice() {
        ["api", v] => group_version(reg, "", v),
        ["apis", g, v] => group_version(reg, g, v),
        _ => ApiError::no_route().into_response(),
    })
}
