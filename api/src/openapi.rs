//! OpenAPI documents generated from the registry and the built-in definitions
//! (`logbook_schema::openapi`):
//! - `/openapi/v2`: one Swagger 2.0 document for every served resource, as JSON or, when
//!   asked (`application/com.github.proto-openapi.spec.v2@v1.0+protobuf`, what kubectl
//!   1.27–1.33 request for client-side validation and `explain`), as gnostic protobuf;
//! - `/openapi/v3`: the index, and one document per group-version with its paths and
//!   `components.schemas` (references with siblings wrapped in `allOf`, as kube-apiserver
//!   publishes them).
//!
//! Every operation carries `x-kubernetes-action` and `x-kubernetes-group-version-kind` and
//! the query parameters the server honours (`dryRun`, `fieldManager`, `fieldValidation`, …):
//! kubectl ≥ 1.27 finds `fieldValidation` there and validates on the server. Documents are
//! built once per registry content and cached.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use logbook_schema::openapi as defs;
use logbook_schema::registry::{Registry, ResourceInfo};
use serde_json::{Map, Value, json};

use crate::error::ApiError;

/// The media type of the protobuf OpenAPI v2 document as answered. Clients ask for
/// `…spec.v2@v1.0+protobuf`, but `@` is not a token character, so Go's media-type parser
/// (kubectl's) rejects it in a Content-Type; kube-apiserver answers with `.v1.0` too.
pub const OPENAPI_V2_PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// Meta types every document carries (error bodies, delete options, watch events, patches).
const META_DEFINITIONS: [&str; 6] = [
    "io.k8s.apimachinery.pkg.apis.meta.v1.Status",
    "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions",
    "io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent",
    "io.k8s.apimachinery.pkg.apis.meta.v1.Patch",
    "io.k8s.apimachinery.pkg.apis.meta.v1.APIResourceList",
    "io.k8s.apimachinery.pkg.apis.meta.v1.APIGroup",
];

/// Built documents, keyed by the registry's fingerprint.
#[derive(Default)]
pub struct Cache {
    v2: Mutex<Option<(String, Arc<V2>)>>,
    /// v3 documents by group-version path.
    v3: Mutex<std::collections::HashMap<String, Built>>,
}

/// A document's bytes and the registry fingerprint it was built at.
type Built = (String, Arc<Vec<u8>>);

struct V2 {
    json: Vec<u8>,
    protobuf: Vec<u8>,
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

fn respond(content_type: &'static str, body: Vec<u8>) -> Response {
    let mut r = (StatusCode::OK, body).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// Every served group-version, core first.
fn group_versions(reg: &Registry) -> Vec<(String, String)> {
    let mut gvs = vec![(String::new(), "v1".to_string())];
    for g in reg.groups() {
        for v in &g.versions {
            gvs.push((g.group.clone(), v.clone()));
        }
    }
    gvs
}

/// A stable hash of what a set of resources publishes (clients cache documents by it).
fn fingerprint<'a>(resources: impl IntoIterator<Item = &'a Arc<ResourceInfo>>) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for r in resources {
        let line = format!(
            "{}/{}/{}/{}|{}|{}|",
            r.group,
            r.version,
            r.plural,
            r.kind,
            r.verbs.join(","),
            r.custom.as_ref().map_or(0, |c| c.crd_revision)
        );
        for b in line.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016X}")
}

fn all_resources(reg: &Registry) -> Vec<&Arc<ResourceInfo>> {
    group_versions(reg)
        .iter()
        .flat_map(|(g, v)| reg.resources(g, v))
        .collect()
}

pub fn index(reg: &Registry) -> Response {
    let mut paths = Map::new();
    for (g, v) in group_versions(reg) {
        let p = gv_path(&g, &v);
        let url = format!(
            "/openapi/v3/{p}?hash={}",
            fingerprint(reg.resources(&g, &v))
        );
        paths.insert(p, json!({"serverRelativeURL": url}));
    }
    respond(
        "application/json",
        serde_json::to_vec(&json!({"paths": paths})).unwrap_or_default(),
    )
}

/// Which document form parameters are written for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Form {
    V2,
    V3,
}

fn reference(form: Form, name: &str) -> Value {
    match form {
        Form::V2 => json!({"$ref": format!("#/definitions/{name}")}),
        Form::V3 => json!({"$ref": format!("#/components/schemas/{name}")}),
    }
}

fn query_param(form: Form, name: &str) -> Value {
    let description = match name {
        "dryRun" => {
            "When present, indicates that modifications should not be persisted. An invalid or unrecognized dryRun directive will result in an error response and no further processing of the request. Valid values are: - All: all dry run stages will be processed"
        }
        "fieldManager" => {
            "fieldManager is a name associated with the actor or entity that is making these changes."
        }
        "fieldValidation" => {
            "fieldValidation instructs the server on how to handle objects in the request (POST/PUT/PATCH) containing unknown or duplicate fields. Valid values are: - Ignore - Warn - Strict"
        }
        _ => "",
    };
    let ty = match name {
        "limit" | "timeoutSeconds" | "gracePeriodSeconds" => "integer",
        "watch" | "allowWatchBookmarks" | "sendInitialEvents" | "force" => "boolean",
        _ => "string",
    };
    match form {
        Form::V2 => {
            json!({"name": name, "in": "query", "description": description, "type": ty, "uniqueItems": true})
        }
        Form::V3 => {
            json!({"name": name, "in": "query", "description": description, "schema": {"type": ty, "uniqueItems": true}})
        }
    }
}

fn path_param(form: Form, name: &str) -> Value {
    let description = match name {
        "namespace" => "object name and auth scope, such as for teams and projects",
        _ => "name of the resource",
    };
    match form {
        Form::V2 => {
            json!({"name": name, "in": "path", "required": true, "description": description, "type": "string", "uniqueItems": true})
        }
        Form::V3 => {
            json!({"name": name, "in": "path", "required": true, "description": description, "schema": {"type": "string", "uniqueItems": true}})
        }
    }
}

const LIST_PARAMS: [&str; 10] = [
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
];
const WRITE_PARAMS: [&str; 3] = ["dryRun", "fieldManager", "fieldValidation"];
const PATCH_PARAMS: [&str; 4] = ["dryRun", "fieldManager", "fieldValidation", "force"];
const DELETE_PARAMS: [&str; 3] = ["dryRun", "gracePeriodSeconds", "propagationPolicy"];
const DELETE_COLLECTION_PARAMS: [&str; 5] = [
    "dryRun",
    "labelSelector",
    "fieldSelector",
    "gracePeriodSeconds",
    "propagationPolicy",
];
const PATCH_TYPES: [&str; 4] = [
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
];

/// One operation of a path.
struct Op<'a> {
    r: &'a ResourceInfo,
    action: &'static str,
    id: String,
    params: &'static [&'static str],
    /// Definition of the request body, if any.
    body: Option<String>,
    /// Definition of the 200 response.
    response: Option<String>,
    patch: bool,
}

fn render_op(form: Form, op: &Op) -> Value {
    let mut params: Vec<Value> = op.params.iter().map(|p| query_param(form, p)).collect();
    let produces = [
        "application/json",
        "application/yaml",
        "application/vnd.kubernetes.protobuf",
    ];
    let mut out = json!({
        "operationId": op.id,
        "description": format!("{} {}", op.action, op.r.kind),
        "tags": [if op.r.group.is_empty() { "core_v1".to_string() } else { format!("{}_{}", op.r.group.replace('.', "_"), op.r.version) }],
        "x-kubernetes-action": op.action,
        "x-kubernetes-group-version-kind": {"group": op.r.group, "version": op.r.version, "kind": op.r.kind},
    });
    let consumes: Vec<&str> = if op.patch {
        PATCH_TYPES.to_vec()
    } else {
        vec!["*/*"]
    };
    match form {
        Form::V2 => {
            if let Some(b) = &op.body {
                let schema = if op.patch {
                    reference(form, "io.k8s.apimachinery.pkg.apis.meta.v1.Patch")
                } else {
                    reference(form, b)
                };
                params.insert(
                    0,
                    json!({"name": "body", "in": "body", "required": true, "schema": schema}),
                );
            }
            let ok = match &op.response {
                Some(d) => json!({"description": "OK", "schema": reference(form, d)}),
                None => json!({"description": "OK"}),
            };
            out["consumes"] = json!(consumes);
            out["produces"] = json!(produces);
            out["schemes"] = json!(["https"]);
            out["responses"] = json!({"200": ok, "401": {"description": "Unauthorized"}});
        }
        Form::V3 => {
            if let Some(b) = &op.body {
                let schema = if op.patch {
                    reference(form, "io.k8s.apimachinery.pkg.apis.meta.v1.Patch")
                } else {
                    reference(form, b)
                };
                let content: Map<String, Value> = consumes
                    .iter()
                    .map(|c| (c.to_string(), json!({"schema": schema})))
                    .collect();
                out["requestBody"] = json!({"required": true, "content": content});
            }
            let ok = match &op.response {
                Some(d) => {
                    let content: Map<String, Value> = produces
                        .iter()
                        .map(|c| (c.to_string(), json!({"schema": reference(form, d)})))
                        .collect();
                    json!({"description": "OK", "content": content})
                }
                None => json!({"description": "OK"}),
            };
            out["responses"] = json!({"200": ok, "401": {"description": "Unauthorized"}});
        }
    }
    out["parameters"] = Value::Array(params);
    out
}

/// The paths of one resource: collection, item, and its subresources.
fn resource_paths(form: Form, r: &ResourceInfo, paths: &mut Map<String, Value>) {
    let base = format!("/{}", gv_path(&r.group, &r.version));
    let prefix = if r.namespaced {
        format!("{base}/namespaces/{{namespace}}/{}", r.plural)
    } else {
        format!("{base}/{}", r.plural)
    };
    let (def, list_def) = if r.custom.is_some() {
        (
            Some(custom_name(r, &r.kind)),
            Some(custom_name(r, &r.list_kind())),
        )
    } else {
        (
            defs::definition_name(&r.group, &r.version, &r.kind).map(str::to_string),
            defs::definition_name(&r.group, &r.version, &r.list_kind()).map(str::to_string),
        )
    };
    let status = "io.k8s.apimachinery.pkg.apis.meta.v1.Status".to_string();
    let has = |verb: &str| r.verbs.iter().any(|v| v == verb);
    let kind = &r.kind;
    let ns = if r.namespaced { "Namespaced" } else { "" };
    let op = |action, id: String, params, body, response, patch| Op {
        r,
        action,
        id,
        params,
        body,
        response,
        patch,
    };
    let path_params = |with_name: bool| -> Vec<Value> {
        let mut v = Vec::new();
        if with_name {
            v.push(path_param(form, "name"));
        }
        if r.namespaced {
            v.push(path_param(form, "namespace"));
        }
        v
    };

    let mut collection = Map::new();
    if has("list") {
        let o = op(
            "list",
            format!("list{ns}{kind}"),
            &LIST_PARAMS[..],
            None,
            list_def.clone(),
            false,
        );
        collection.insert("get".into(), render_op(form, &o));
    }
    if has("create") {
        let o = op(
            "post",
            format!("create{ns}{kind}"),
            &WRITE_PARAMS[..],
            def.clone(),
            def.clone(),
            false,
        );
        collection.insert("post".into(), render_op(form, &o));
    }
    if has("deletecollection") {
        let o = op(
            "deletecollection",
            format!("deletecollection{ns}{kind}"),
            &DELETE_COLLECTION_PARAMS[..],
            None,
            Some(status.clone()),
            false,
        );
        collection.insert("delete".into(), render_op(form, &o));
    }
    if !collection.is_empty() {
        collection.insert("parameters".into(), Value::Array(path_params(false)));
        paths.insert(prefix.clone(), Value::Object(collection));
    }

    let mut item = Map::new();
    if has("get") {
        let o = op(
            "get",
            format!("read{ns}{kind}"),
            &[][..],
            None,
            def.clone(),
            false,
        );
        item.insert("get".into(), render_op(form, &o));
    }
    if has("update") {
        let o = op(
            "put",
            format!("replace{ns}{kind}"),
            &WRITE_PARAMS[..],
            def.clone(),
            def.clone(),
            false,
        );
        item.insert("put".into(), render_op(form, &o));
    }
    if has("patch") {
        let o = op(
            "patch",
            format!("patch{ns}{kind}"),
            &PATCH_PARAMS[..],
            def.clone(),
            def.clone(),
            true,
        );
        item.insert("patch".into(), render_op(form, &o));
    }
    if has("delete") {
        let o = op(
            "delete",
            format!("delete{ns}{kind}"),
            &DELETE_PARAMS[..],
            None,
            Some(status),
            false,
        );
        item.insert("delete".into(), render_op(form, &o));
    }
    if !item.is_empty() {
        item.insert("parameters".into(), Value::Array(path_params(true)));
        paths.insert(format!("{prefix}/{{name}}"), Value::Object(item));
    }

    for sub in ["status", "scale"] {
        let present = match sub {
            "status" => r.status_subresource,
            _ => r.scale.is_some(),
        };
        if !present {
            continue;
        }
        let sub_def = match sub {
            "status" => def.clone(),
            _ => defs::definition_name("autoscaling", "v1", "Scale").map(str::to_string),
        };
        let title = if sub == "status" { "Status" } else { "Scale" };
        let mut s = Map::new();
        let o = op(
            "get",
            format!("read{ns}{kind}{title}"),
            &[][..],
            None,
            sub_def.clone(),
            false,
        );
        s.insert("get".into(), render_op(form, &o));
        let o = op(
            "put",
            format!("replace{ns}{kind}{title}"),
            &WRITE_PARAMS[..],
            sub_def.clone(),
            sub_def.clone(),
            false,
        );
        s.insert("put".into(), render_op(form, &o));
        let o = op(
            "patch",
            format!("patch{ns}{kind}{title}"),
            &PATCH_PARAMS[..],
            sub_def.clone(),
            sub_def,
            true,
        );
        s.insert("patch".into(), render_op(form, &o));
        s.insert("parameters".into(), Value::Array(path_params(true)));
        paths.insert(format!("{prefix}/{{name}}/{sub}"), Value::Object(s));
    }
}

/// The definitions a set of resources needs: their kinds, list kinds, the scale type, the
/// meta types, and everything those refer to.
fn needed_definitions(resources: &[&Arc<ResourceInfo>]) -> BTreeSet<String> {
    let mut roots: Vec<&str> = META_DEFINITIONS.to_vec();
    if resources.iter().any(|r| r.custom.is_some()) {
        roots.push("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta");
        roots.push("io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta");
    }
    let mut lists = Vec::new();
    for r in resources {
        if let Some(d) = defs::definition_name(&r.group, &r.version, &r.kind) {
            roots.push(d);
        }
        lists.push(r.list_kind());
        if r.scale.is_some() {
            roots.extend(defs::definition_name("autoscaling", "v1", "Scale"));
        }
    }
    for (r, list) in resources.iter().zip(&lists) {
        roots.extend(defs::definition_name(&r.group, &r.version, list));
    }
    defs::closure(roots)
}

/// The definition name kube-apiserver gives a custom kind: the group reversed, the version,
/// the kind (`com.example.stable.v1.CronTab`).
fn custom_name(r: &ResourceInfo, kind: &str) -> String {
    let mut parts: Vec<&str> = r.group.split('.').collect();
    parts.reverse();
    format!("{}.{}.{kind}", parts.join("."), r.version)
}

/// The definitions of a custom resource (its kind and list kind) from its CRD schema, in
/// v2 form (references into `#/definitions`).
fn custom_definitions(r: &ResourceInfo) -> Vec<(String, Value)> {
    let Some(c) = &r.custom else {
        return Vec::new();
    };
    let meta = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";
    let list_meta = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta";
    let mut schema = c
        .schema
        .clone()
        .unwrap_or_else(|| json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}));
    if let Some(m) = schema.as_object_mut() {
        let props = m.entry("properties").or_insert_with(|| json!({}));
        if let Some(p) = props.as_object_mut() {
            p.insert("apiVersion".into(), json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources"}));
            p.insert("kind".into(), json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds"}));
            p.insert("metadata".into(), json!({"$ref": format!("#/definitions/{meta}"), "description": "Standard object's metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"}));
        }
        m.insert(
            "x-kubernetes-group-version-kind".into(),
            json!([{"group": r.group, "version": r.version, "kind": r.kind}]),
        );
    }
    let list = json!({
        "description": format!("{} is a list of {}", r.list_kind(), r.kind),
        "type": "object",
        "required": ["items"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "items": {"type": "array", "items": {"$ref": format!("#/definitions/{}", custom_name(r, &r.kind))}},
            "metadata": {"$ref": format!("#/definitions/{list_meta}")},
        },
        "x-kubernetes-group-version-kind": [{"group": r.group, "version": r.version, "kind": r.list_kind()}],
    });
    vec![
        (custom_name(r, &r.kind), schema),
        (custom_name(r, &r.list_kind()), list),
    ]
}

/// A v2 definition in v3 form: references point into `components/schemas`, and a
/// reference with sibling keys (a description) is wrapped in `allOf`.
fn to_v3(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut out = Map::new();
            let mut wrapped_ref = None;
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("$ref", Value::String(r)) => {
                        let r = format!("#/components/schemas/{}", defs::ref_name(r));
                        if m.len() == 1 {
                            out.insert(k.clone(), Value::String(r));
                        } else {
                            wrapped_ref = Some(r);
                        }
                    }
                    _ => {
                        out.insert(k.clone(), to_v3(x));
                    }
                }
            }
            if let Some(r) = wrapped_ref {
                out.insert("allOf".into(), json!([{"$ref": r}]));
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(to_v3).collect()),
        other => other.clone(),
    }
}

fn info() -> Value {
    json!({
        "title": "Kubernetes",
        "version": format!("v{}.{}.0", crate::KUBERNETES_VERSION.0, crate::KUBERNETES_VERSION.1),
    })
}

/// The v3 document of one group-version.
pub fn group_version_document(reg: &Registry, group: &str, version: &str) -> Option<Value> {
    let resources = reg.resources(group, version);
    if resources.is_empty() {
        return None;
    }
    let mut paths = Map::new();
    for r in &resources {
        resource_paths(Form::V3, r, &mut paths);
    }
    let mut schemas: Map<String, Value> = needed_definitions(&resources)
        .into_iter()
        .filter_map(|n| defs::definitions().get(&n).map(|d| (n, to_v3(d))))
        .collect();
    for r in &resources {
        for (name, d) in custom_definitions(r) {
            schemas.insert(name, to_v3(&d));
        }
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": info(),
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": {"BearerToken": {"type": "apiKey", "name": "authorization", "in": "header", "description": "Bearer Token authentication"}}},
        "security": [{"BearerToken": []}],
    }))
}

/// The v2 document of every served resource.
pub fn v2_document(reg: &Registry) -> Value {
    let resources = all_resources(reg);
    let mut paths = Map::new();
    for r in &resources {
        resource_paths(Form::V2, r, &mut paths);
    }
    let mut definitions: Map<String, Value> = needed_definitions(&resources)
        .into_iter()
        .filter_map(|n| defs::definitions().get(&n).map(|d| (n, d.clone())))
        .collect();
    for r in &resources {
        for (name, d) in custom_definitions(r) {
            definitions.insert(name, d);
        }
    }
    json!({
        "swagger": "2.0",
        "info": info(),
        "paths": paths,
        "definitions": definitions,
        "securityDefinitions": {"BearerToken": {"type": "apiKey", "name": "authorization", "in": "header", "description": "Bearer Token authentication"}},
        "security": [{"BearerToken": []}],
    })
}

fn wants_protobuf(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|mt| {
            mt.trim()
                .to_ascii_lowercase()
                .starts_with("application/com.github.proto-openapi.spec.v2")
        })
}

fn v2(cache: &Cache, reg: &Registry, headers: &HeaderMap) -> Response {
    let key = fingerprint(all_resources(reg));
    let built = {
        let guard = cache.v2.lock().ok();
        guard.and_then(|g| {
            g.as_ref()
                .filter(|(k, _)| *k == key)
                .map(|(_, d)| d.clone())
        })
    };
    let doc = match built {
        Some(d) => d,
        None => {
            let v = v2_document(reg);
            let d = Arc::new(V2 {
                json: serde_json::to_vec(&v).unwrap_or_default(),
                protobuf: crate::openapi_pb::encode_document(&v),
            });
            if let Ok(mut g) = cache.v2.lock() {
                *g = Some((key, d.clone()));
            }
            d
        }
    };
    if wants_protobuf(headers) {
        respond(OPENAPI_V2_PROTOBUF, doc.protobuf.clone())
    } else {
        respond("application/json", doc.json.clone())
    }
}

/// Routes `/openapi/v2`, `/openapi/v3` and `/openapi/v3/<gv path>`.
pub fn route(cache: &Cache, reg: &Registry, headers: &HeaderMap, path: &str) -> Option<Response> {
    if path == "/openapi/v2" || path == "/openapi/v2/" {
        return Some(v2(cache, reg, headers));
    }
    let rest = path.strip_prefix("/openapi/v3")?;
    let rest = rest.trim_matches('/');
    if rest.is_empty() {
        return Some(index(reg));
    }
    let parts: Vec<&str> = rest.split('/').collect();
    let (group, version) = match parts.as_slice() {
        ["api", v] => ("", *v),
        ["apis", g, v] => (*g, *v),
        _ => return Some(ApiError::no_route().into_response()),
    };
    Some(v3(cache, reg, headers, group, version))
}

/// One v3 document, built once per registry content and answered with its hash as ETag
/// (304 when the client already has it), as kube-apiserver does.
fn v3(cache: &Cache, reg: &Registry, headers: &HeaderMap, group: &str, version: &str) -> Response {
    let key = fingerprint(reg.resources(group, version));
    let etag = format!("\"{key}\"");
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag))
    {
        let mut r = StatusCode::NOT_MODIFIED.into_response();
        if let Ok(v) = HeaderValue::from_str(&etag) {
            r.headers_mut().insert(header::ETAG, v);
        }
        return r;
    }
    let path = gv_path(group, version);
    let cached = cache.v3.lock().ok().and_then(|m| {
        m.get(&path)
            .filter(|(k, _)| *k == key)
            .map(|(_, d)| d.clone())
    });
    let body = match cached {
        Some(d) => d,
        None => {
            let Some(doc) = group_version_document(reg, group, version) else {
                return ApiError::no_route().into_response();
            };
            let d = Arc::new(serde_json::to_vec(&doc).unwrap_or_default());
            if let Ok(mut m) = cache.v3.lock() {
                m.insert(path, (key, d.clone()));
            }
            d
        }
    };
    let mut r = respond("application/json", body.as_ref().clone());
    if let Ok(v) = HeaderValue::from_str(&etag) {
        r.headers_mut().insert(header::ETAG, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_kind_has_a_schema_in_its_group_version_document() {
        let reg = Registry::builtin();
        for (g, v) in group_versions(&reg) {
            let doc = group_version_document(&reg, &g, &v).expect("document");
            let schemas = doc["components"]["schemas"].as_object().expect("schemas");
            for r in reg.resources(&g, &v) {
                let found = schemas.values().any(|s| {
                    defs::gvks(s)
                        .iter()
                        .any(|(sg, sv, sk)| *sg == r.group && *sv == r.version && *sk == r.kind)
                });
                assert!(found, "{g}/{v} {} has no schema", r.kind);
            }
            // Every reference resolves inside the document.
            let text = serde_json::to_string(&doc).unwrap_or_default();
            for part in text.split("\"#/components/schemas/").skip(1) {
                let name = part.split('"').next().unwrap_or("");
                assert!(
                    schemas.contains_key(name),
                    "{g}/{v}: dangling reference to {name}"
                );
            }
        }
    }

    #[test]
    fn references_with_a_description_are_wrapped_in_all_of_in_v3() {
        let v = to_v3(&json!({"description": "d", "$ref": "#/definitions/X"}));
        assert_eq!(
            v,
            json!({"description": "d", "allOf": [{"$ref": "#/components/schemas/X"}]})
        );
        let v = to_v3(&json!({"items": {"$ref": "#/definitions/Y"}}));
        assert_eq!(v, json!({"items": {"$ref": "#/components/schemas/Y"}}));
    }
}
