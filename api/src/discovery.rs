//! Discovery: the legacy documents (`/api`, `/apis`, `/api/v1`, `/apis/<g>/<v>`) and
//! aggregated discovery (apidiscovery.k8s.io v2 and v2beta1), all generated from the
//! registry.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use logbook_schema::registry::{Registry, ResourceInfo};
use serde_json::{Value, json};

use crate::error::ApiError;

/// The aggregated-discovery version a client asked for in Accept, if any.
pub fn aggregated_version(headers: &HeaderMap) -> Option<&'static str> {
    let accept = headers.get(header::ACCEPT)?.to_str().ok()?;
    for part in accept.split(',') {
        let p = part.replace(' ', "");
        if p.contains("as=APIGroupDiscoveryList") && p.contains("g=apidiscovery.k8s.io") {
            if p.contains("v=v2beta1") {
                return Some("v2beta1");
            }
            if p.contains("v=v2") {
                return Some("v2");
            }
        }
    }
    None
}

fn respond(v: &Value, content_type: Option<String>) -> Response {
    let mut r = (StatusCode::OK, serde_json::to_vec(v).unwrap_or_default()).into_response();
    let ct = content_type.unwrap_or_else(|| "application/json".into());
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&ct).unwrap_or(HeaderValue::from_static("application/json")),
    );
    r
}

fn aggregated(reg: &Registry, core: bool, version: &str) -> Response {
    let mut items = Vec::new();
    if core {
        items.push(group_discovery(reg, "", &["v1".to_string()]));
    } else {
        for g in reg.groups() {
            items.push(group_discovery(reg, &g.group, &g.versions));
        }
    }
    let doc = json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": format!("apidiscovery.k8s.io/{version}"),
        "metadata": {},
        "items": items,
    });
    respond(
        &doc,
        Some(format!(
            "application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList"
        )),
    )
}

fn group_discovery(reg: &Registry, group: &str, versions: &[String]) -> Value {
    let versions: Vec<Value> = versions
        .iter()
        .map(|v| {
            let resources: Vec<Value> = reg
                .resources(group, v)
                .into_iter()
                .map(|r| resource_discovery(r))
                .collect();
            json!({"version": v, "resources": resources, "freshness": "Current"})
        })
        .collect();
    json!({"metadata": {"name": group, "creationTimestamp": null}, "versions": versions})
}

fn resource_discovery(r: &ResourceInfo) -> Value {
    let mut subresources = Vec::new();
    if r.status_subresource {
        subresources.push(json!({
            "subresource": "status",
            "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
            "verbs": ["get", "patch", "update"],
        }));
    }
    if r.scale.is_some() {
        subresources.push(json!({
            "subresource": "scale",
            "responseKind": {"group": "autoscaling", "version": "v1", "kind": "Scale"},
            "verbs": ["get", "patch", "update"],
        }));
    }
    for a in &r.actions {
        subresources.push(json!({
            "subresource": a.name,
            "responseKind": {"group": a.group, "version": a.version, "kind": a.kind},
            "verbs": a.verbs,
        }));
    }
    subresources.sort_by(|a, b| a["subresource"].as_str().cmp(&b["subresource"].as_str()));
    let mut v = json!({
        "resource": r.plural,
        "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
        "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": r.singular,
        "verbs": r.verbs,
    });
    if !r.short_names.is_empty() {
        v["shortNames"] = json!(r.short_names);
    }
    if !r.categories.is_empty() {
        v["categories"] = json!(r.categories);
    }
    if !subresources.is_empty() {
        v["subresources"] = Value::Array(subresources);
    }
    v
}

pub fn core_versions(reg: &Registry, headers: &HeaderMap, server_address: &str) -> Response {
    if let Some(v) = aggregated_version(headers) {
        return aggregated(reg, true, v);
    }
    respond(
        &json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
        }),
        None,
    )
}

fn api_group(reg: &Registry, group: &str, versions: &[String]) -> Value {
    let _ = reg;
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    json!({
        "name": group,
        "versions": vs,
        "preferredVersion": vs.first().cloned().unwrap_or(Value::Null),
    })
}

pub fn groups(reg: &Registry, headers: &HeaderMap) -> Response {
    if let Some(v) = aggregated_version(headers) {
        return aggregated(reg, false, v);
    }
    let groups: Vec<Value> = reg
        .groups()
        .iter()
        .map(|g| api_group(reg, &g.group, &g.versions))
        .collect();
    respond(
        &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
        None,
    )
}

pub fn group(reg: &Registry, group: &str) -> Response {
    match reg.groups().into_iter().find(|g| g.group == group) {
        Some(g) => {
            let mut v = api_group(reg, &g.group, &g.versions);
            v["kind"] = json!("APIGroup");
            v["apiVersion"] = json!("v1");
            respond(&v, None)
        }
        None => ApiError::no_route().into_response(),
    }
}

pub fn resource_list(reg: &Registry, group: &str, version: &str) -> Response {
    let infos = reg.resources(group, version);
    if infos.is_empty() {
        return ApiError::no_route().into_response();
    }
    let mut resources = Vec::new();
    for r in infos {
        let mut v = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": r.verbs,
            "storageVersionHash": storage_version_hash(r),
        });
        if !r.short_names.is_empty() {
            v["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            v["categories"] = json!(r.categories);
        }
        resources.push(v);
        if r.status_subresource {
            resources.push(json!({
                "name": format!("{}/status", r.plural), "singularName": "", "namespaced": r.namespaced,
                "kind": r.kind, "verbs": ["get", "patch", "update"],
            }));
        }
        if r.scale.is_some() {
            resources.push(json!({
                "name": format!("{}/scale", r.plural), "singularName": "", "namespaced": r.namespaced,
                "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"],
            }));
        }
        for a in &r.actions {
            let mut v = json!({
                "name": format!("{}/{}", r.plural, a.name), "singularName": "", "namespaced": r.namespaced,
                "kind": a.kind, "verbs": a.verbs,
            });
            if a.group != r.group || a.version != r.version {
                v["group"] = json!(a.group);
                v["version"] = json!(a.version);
            }
            resources.push(v);
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    respond(
        &json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
        None,
    )
}

/// A stable short hash of the storage identity (clients only compare it for equality).
fn storage_version_hash(r: &ResourceInfo) -> String {
    // FNV-1a over "group/version/kind", rendered as base64-ish hex (kube uses 8 bytes b64).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in format!("{}/{}/{}", r.group, r.version, r.kind).bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")[..11].to_string()
}
