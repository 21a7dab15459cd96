//! The history API group `history.logbook.dev/v1`: every retained revision of an object and
//! the change feed of a namespace or the cluster, as Kubernetes-style lists; and `asOf`,
//! which turns a time into the resourceVersion of the cluster at that moment.
//!
//! Two list-only resources, served from the log's history indexes (no objects are stored):
//! - `revisions` — one object's revisions, newest first: `?resource=deployments.apps&name=web`
//!   (namespaced path for namespaced objects, cluster path for cluster-scoped ones);
//! - `changes` — the change feed: in a namespace (namespaced path) or everywhere (cluster
//!   path), filtered by `user`, `resource`, `name`, `verb` (comma-separated), `since` /
//!   `until` (RFC 3339 times, or durations before now such as `168h`), `after` (a
//!   resourceVersion, exclusive); `order=oldest` reads forward (exports), default newest first.
//!
//! Both page with `limit` / `continue` like any list. Each item names the change (position,
//! time, verb, who: user, groups, user agent, source address, request id), its object, and
//! the change as an RFC 6902 JSON patch from the previous revision (from `{}` for a create).
//! A caller sees the changes of the objects it may `get` (RBAC, as for a GET of the object)
//! and no others: a Secret's values show only to readers of that Secret.

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::Response;
use logbook_schema::registry::{Registry, ResourceInfo};
use logbook_store::{ChangeFilter, Event, EventType, ObjectKey, Order, Position};
use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult, from_store};
use crate::handlers::{Ctx, json_response, parse_rv};
use crate::request::Query;
use crate::table::Output;

/// The API group of the history resources.
pub const GROUP: &str = "history.logbook.dev";
/// Its only version.
pub const VERSION: &str = "v1";
/// Items a history list returns when the caller sets no `limit` (a history can be millions of
/// events; an unbounded answer is never what a person wants).
pub const HISTORY_PAGE_ITEMS_DEFAULT: usize = 500;

/// Adds `revisions` and `changes` to the registry (discovery then lists them).
pub fn register(reg: &mut Registry) {
    for (kind, plural) in [("Revision", "revisions"), ("Change", "changes")] {
        let mut info = ResourceInfo::new(GROUP, VERSION, kind, plural, true);
        info.verbs = vec!["list".into()];
        reg.add(info);
    }
}

/// Whether a request targets the history group.
pub fn is_history(info: &ResourceInfo) -> bool {
    info.group == GROUP
}

/// Rewrites `asOf=<time>` into `resourceVersion=<position>&resourceVersionMatch=Exact` (for a
/// watch: `resourceVersion=<position>`, replaying from that moment), before the request is
/// served like any other.
///
/// # Errors
/// 400 for an unparsable time or one combined with `resourceVersion`.
pub async fn resolve_as_of(api: &crate::Api, query: &mut Query, watch: bool) -> ApiResult<()> {
    let Some(as_of) = query
        .get("asOf")
        .filter(|s| !s.is_empty())
        .map(str::to_string)
    else {
        return Ok(());
    };
    if query.get("resourceVersion").is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::bad_request(
            "asOf and resourceVersion are mutually exclusive",
        ));
    }
    // Times are shown to the microsecond: a time copied from a change includes that change.
    let nanos = parse_time(&as_of, "asOf")?.saturating_add(999);
    let p = api.log.position_at_time(nanos).await.map_err(from_store)?;
    // Before the first event the cluster was empty: position 1 lists nothing (0 would mean
    // "any", which Exact refuses).
    query
        .0
        .insert("resourceVersion".into(), p.0.max(1).to_string());
    if !watch {
        query
            .0
            .insert("resourceVersionMatch".into(), "Exact".into());
    }
    Ok(())
}

/// A time parameter: an RFC 3339 timestamp, or a duration before now (`90m`, `168h`).
fn parse_time(s: &str, what: &str) -> ApiResult<i64> {
    if let Ok(t) = s.parse::<jiff::Timestamp>() {
        return i64::try_from(t.as_nanosecond())
            .map_err(|_| ApiError::bad_request(format!("{what}: {s:?} is out of range")));
    }
    if let Ok(d) = s.parse::<jiff::SignedDuration>() {
        let now = jiff::Timestamp::now().as_nanosecond();
        return i64::try_from(now - d.as_nanos())
            .map_err(|_| ApiError::bad_request(format!("{what}: {s:?} is out of range")));
    }
    Err(ApiError::bad_request(format!(
        "{what}: {s:?} is neither an RFC 3339 time (2026-11-20T14:02:00Z) nor a duration (168h)"
    )))
}

/// The resource a `resource` parameter names: `deployments.apps`, `deployments`, `deploy`,
/// `deployment`, `Deployment`, or `deployments.v1.apps` — kubectl's forms.
pub fn resolve_resource(reg: &Registry, s: &str) -> ApiResult<Arc<ResourceInfo>> {
    let (name, group) = match s.split_once('.') {
        Some((n, g)) => {
            // `deployments.v1.apps`: drop the version.
            let g = match g.split_once('.') {
                Some((v, rest)) if reg.iter().any(|i| i.version == v && i.group == rest) => rest,
                _ => g,
            };
            (n, Some(g))
        }
        None => (s, None),
    };
    let lower = name.to_ascii_lowercase();
    let named = |i: &ResourceInfo| {
        i.plural == lower
            || i.singular == lower
            || i.kind.eq_ignore_ascii_case(name)
            || i.short_names.contains(&lower)
    };
    let mut found: Vec<&Arc<ResourceInfo>> = reg
        .iter()
        .filter(|i| !is_history(i) && named(i) && group.is_none_or(|g| i.group == g))
        .collect();
    // Without a group, the core group wins (kubectl's `events` are core events).
    if group.is_none() && found.iter().any(|i| i.group.is_empty()) {
        found.retain(|i| i.group.is_empty());
    }
    found.sort_by_key(|i| (i.group.clone(), i.version.clone()));
    found.dedup_by_key(|i| (i.group.clone(), i.plural.clone()));
    match found.as_slice() {
        [one] => Ok(Arc::clone(one)),
        [] => Err(ApiError::bad_request(format!(
            "resource {s:?}: the server doesn't have a resource type {s:?}"
        ))),
        many => Err(ApiError::bad_request(format!(
            "resource {s:?} is ambiguous: {}",
            many.iter()
                .map(|i| format!("{}.{}", i.plural, i.group))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// Whether the caller may `get` the object an event is about: the history shows an object's
/// revisions only to those who may read the object itself (RBAC and the node authorizer,
/// as for a GET), so a Secret's values, like every other object's, show only to readers of
/// that Secret. Decisions are kept per object for one page.
async fn may_read(
    ctx: &Ctx,
    seen: &mut std::collections::HashMap<ObjectKey, bool>,
    key: &ObjectKey,
) -> ApiResult<bool> {
    if let Some(d) = seen.get(key) {
        return Ok(*d);
    }
    let (group, plural) = match key.resource.split_once('/') {
        Some((g, p)) => (g, p),
        None => ("", key.resource.as_str()),
    };
    let ask = crate::auth::Request::Resource {
        attrs: crate::auth::rbac::ResourceAttrs {
            verb: "get",
            group,
            resource: plural,
            subresource: None,
            namespace: &key.namespace,
            name: &key.name,
        },
        field_selector: None,
    };
    let d = crate::auth::decide_now(&ctx.api, &ctx.identity, &ask).await?
        == crate::auth::Decision::Allow;
    seen.insert(key.clone(), d);
    Ok(d)
}

/// Serves a list of `revisions` or `changes`.
pub async fn list(ctx: &Ctx) -> ApiResult<Response> {
    let q = &ctx.query;
    let reg = ctx.api.registry.load();
    let mut filter = ChangeFilter::default();
    let resource = match q.get("resource").filter(|s| !s.is_empty()) {
        Some(r) => Some(resolve_resource(&reg, r)?),
        None => None,
    };
    filter.resource = resource.as_ref().map(|r| r.store_resource());
    filter.name = q.get("name").filter(|s| !s.is_empty()).map(str::to_string);
    filter.user = q.get("user").filter(|s| !s.is_empty()).map(str::to_string);
    filter.verbs = q
        .get("verb")
        .map(|v| {
            v.split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    filter.namespace = ctx.target.namespace.clone();
    let revisions = ctx.info.plural == "revisions";
    if revisions {
        let (Some(res), Some(_)) = (&resource, &filter.name) else {
            return Err(ApiError::bad_request(
                "revisions: the resource and name parameters are required (?resource=deployments.apps&name=web)",
            ));
        };
        if res.namespaced != filter.namespace.is_some() {
            return Err(ApiError::bad_request(format!(
                "revisions of {} are listed {}",
                res.plural,
                if res.namespaced {
                    "in a namespace (/apis/history.logbook.dev/v1/namespaces/NS/revisions)"
                } else {
                    "without a namespace (/apis/history.logbook.dev/v1/revisions)"
                }
            )));
        }
    }
    if filter.name.is_some() && resource.is_none() {
        return Err(ApiError::bad_request(
            "the name parameter needs the resource parameter",
        ));
    }
    if let Some(res) = &resource
        && !res.namespaced
        && filter.namespace.is_some()
    {
        // Cluster-scoped objects have no namespace: a namespaced feed of them is empty.
        filter.namespace = Some(String::new());
    }
    if filter.name.is_some() && filter.namespace.is_none() {
        filter.namespace = Some(String::new());
    }
    if let Some(after) = q.get("after").filter(|s| !s.is_empty()) {
        filter.after = parse_rv(after)?;
    }
    if let Some(since) = q.get("since").filter(|s| !s.is_empty()) {
        let t = parse_time(since, "since")?;
        let p = ctx
            .api
            .log
            .position_at_time(t.saturating_sub(1))
            .await
            .map_err(from_store)?;
        filter.after = filter.after.max(p);
    }
    if let Some(until) = q.get("until").filter(|s| !s.is_empty()) {
        let t = parse_time(until, "until")?;
        let p = ctx.api.log.position_at_time(t).await.map_err(from_store)?;
        filter.until = Some(p);
    }
    let order = match q.get("order") {
        None | Some("" | "newest") => Order::NewestFirst,
        Some("oldest") => Order::OldestFirst,
        Some(other) => {
            return Err(ApiError::invalid_options(
                "ListOptions",
                "order",
                other,
                "supported values: \"newest\", \"oldest\"",
            ));
        }
    };
    let limit = match q.get("limit").filter(|s| !s.is_empty()) {
        None => HISTORY_PAGE_ITEMS_DEFAULT,
        Some(l) => match l.parse::<i64>() {
            Ok(n) if n <= 0 => HISTORY_PAGE_ITEMS_DEFAULT,
            Ok(n) => usize::try_from(n).unwrap_or(usize::MAX),
            Err(_) => {
                return Err(ApiError::bad_request(format!(
                    "limit must be an integer, got {l:?}"
                )));
            }
        },
    };
    let cursor =
        match q.get("continue").filter(|s| !s.is_empty()) {
            None => None,
            Some(c) => Some(Position::parse(c).ok_or_else(|| {
                ApiError::bad_request("continue key is not valid: malformed token")
            })?),
        };
    let head = ctx.api.log.head().await.map_err(from_store)?;
    let page = ctx
        .api
        .log
        .changes(&filter, order, cursor, limit)
        .await
        .map_err(from_store)?;
    let mut readable = std::collections::HashMap::new();
    let mut items = Vec::with_capacity(page.events.len());
    for (i, e) in page.events.iter().enumerate() {
        if !may_read(ctx, &mut readable, &e.key).await? {
            continue;
        }
        // The previous revision: often the next item of a newest-first page of one object.
        let prev = match e.prev_position {
            None => None,
            Some(p) => match page
                .events
                .get(i + 1)
                .filter(|n| n.position == p && n.key == e.key)
            {
                Some(n) => Some(n.object.clone()),
                None => ctx
                    .api
                    .log
                    .event(&e.key, p)
                    .await
                    .map_err(from_store)?
                    .map(|ev| ev.object),
            },
        };
        items.push(item(&reg, &ctx.info.kind, e, prev.as_deref()));
    }
    let mut metadata = json!({"resourceVersion": head.0.to_string()});
    if let Some(c) = page.cursor {
        metadata["continue"] = json!(c.0.to_string());
    }
    let body = match ctx.output {
        Output::Table { version, .. } => table(version.api_version(), metadata, &items),
        _ => json!({
            "apiVersion": format!("{GROUP}/{VERSION}"),
            "kind": format!("{}List", ctx.info.kind),
            "metadata": metadata,
            "items": items,
        }),
    };
    Ok(json_response(
        StatusCode::OK,
        serde_json::to_vec(&body).unwrap_or_default(),
    ))
}

fn time_of(unix_nanos: i64) -> String {
    jiff::Timestamp::from_nanosecond(i128::from(unix_nanos))
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
        .unwrap_or_default()
}

/// One change as the API shows it.
fn item(reg: &Registry, kind: &str, e: &Event, prev: Option<&[u8]>) -> Value {
    let parse = |b: &[u8]| serde_json::from_slice::<Value>(b).unwrap_or(Value::Null);
    let mut obj = parse(&e.object);
    let mut before = prev.map_or_else(|| json!({}), parse);
    for o in [&mut obj, &mut before] {
        if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
            // Every write rewrites managedFields' times: noise in an auditor's diff.
            m.remove("managedFields");
        }
    }
    let patch = serde_json::to_value(json_patch::diff(&before, &obj)).unwrap_or(Value::Null);
    let (group, plural) = match e.key.resource.split_once('/') {
        Some((g, p)) => (g.to_string(), p.to_string()),
        None => (String::new(), e.key.resource.clone()),
    };
    let api_version = obj
        .get("apiVersion")
        .cloned()
        .or_else(|| {
            reg.iter()
                .find(|i| i.group == group && i.plural == plural)
                .map(|i| json!(i.api_version()))
        })
        .unwrap_or(Value::Null);
    let object_kind = obj.get("kind").cloned().unwrap_or(Value::Null);
    let time = time_of(e.timestamp_unix_nanos);
    let mut metadata = json!({
        "name": e.position.0.to_string(),
        "creationTimestamp": time.get(..19).map(|s| format!("{s}Z")).unwrap_or_default(),
    });
    if !e.key.namespace.is_empty() {
        metadata["namespace"] = json!(e.key.namespace);
    }
    let (ip, _) = e
        .actor
        .source
        .rsplit_once(':')
        .unwrap_or((&e.actor.source, ""));
    let mut out = json!({
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "kind": kind,
        "metadata": metadata,
        "revision": e.position.0.to_string(),
        "time": time,
        "type": match e.kind {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        },
        "verb": e.verb.split(';').next().unwrap_or(""),
        "user": {"username": e.actor.user, "groups": e.actor.groups},
        "userAgent": e.actor.user_agent,
        "sourceIP": ip.trim_start_matches('[').trim_end_matches(']'),
        "requestID": e.request_id,
        "object": {
            "apiVersion": api_version,
            "kind": object_kind,
            "group": group,
            "resource": plural,
            "namespace": e.key.namespace,
            "name": e.key.name,
            "uid": e.uid,
        },
        "patch": patch,
    });
    if let Some(p) = e.prev_position {
        out["previousRevision"] = json!(p.0.to_string());
    }
    if let Some((_, m)) = e.verb.split_once(";fieldManager=") {
        out["fieldManager"] = json!(m);
    }
    out
}

/// The list as a `meta.k8s.io` Table (what `kubectl get revisions.history.logbook.dev` asks).
fn table(api_version: &str, metadata: Value, items: &[Value]) -> Value {
    let col = |name: &str, ty: &str, desc: &str, priority: u8| json!({"name": name, "type": ty, "format": "", "description": desc, "priority": priority});
    let rows: Vec<Value> = items
        .iter()
        .map(|i| {
            let s = |p: &str| i.pointer(p).cloned().unwrap_or(json!(""));
            json!({
                "cells": [
                    s("/revision"), s("/time"), s("/verb"), s("/user/username"),
                    format!("{}/{}", s("/object/resource").as_str().unwrap_or(""), s("/object/name").as_str().unwrap_or("")),
                    summary(i.get("patch")),
                    s("/userAgent"),
                ],
                "object": {"kind": "PartialObjectMetadata", "apiVersion": api_version, "metadata": i.get("metadata")},
            })
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": api_version,
        "metadata": metadata,
        "columnDefinitions": [
            col("Revision", "string", "The resourceVersion this change made.", 0),
            col("Time", "string", "When the change was made.", 0),
            col("Verb", "string", "The API verb.", 0),
            col("User", "string", "Who made the change.", 0),
            col("Object", "string", "resource/name of the changed object.", 0),
            col("Change", "string", "The paths the change touched.", 0),
            col("User-Agent", "string", "The client that made the change.", 1),
        ],
        "rows": rows,
    })
}

/// A one-line summary of a JSON patch: its paths, at most a few, with `+`/`-`/`~`.
pub fn summary(patch: Option<&Value>) -> String {
    /// Paths a summary lists before "…".
    const SUMMARY_PATHS_MAX: usize = 4;
    let ops = patch.and_then(Value::as_array).cloned().unwrap_or_default();
    let mut parts: Vec<String> = ops
        .iter()
        .take(SUMMARY_PATHS_MAX)
        .map(|op| {
            let sign = match op.get("op").and_then(Value::as_str) {
                Some("add") => "+",
                Some("remove") => "-",
                _ => "~",
            };
            format!(
                "{sign}{}",
                op.get("path").and_then(Value::as_str).unwrap_or("")
            )
        })
        .collect();
    if ops.len() > SUMMARY_PATHS_MAX {
        parts.push(format!("(+{} more)", ops.len() - SUMMARY_PATHS_MAX));
    }
    parts.join(" ")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test that panics has failed
mod tests {
    use super::*;

    #[test]
    fn resource_parameters_resolve_the_way_kubectl_names_resources() {
        let mut reg = Registry::builtin();
        register(&mut reg);
        for (s, want) in [
            ("deployments.apps", "apps/deployments"),
            ("deployments", "apps/deployments"),
            ("deploy", "apps/deployments"),
            ("Deployment", "apps/deployments"),
            ("deployments.v1.apps", "apps/deployments"),
            ("pods", "pods"),
            ("po", "pods"),
            ("events", "events"),
            ("events.events.k8s.io", "events.k8s.io/events"),
            ("leases.coordination.k8s.io", "coordination.k8s.io/leases"),
            ("hpa", "autoscaling/horizontalpodautoscalers"),
        ] {
            assert_eq!(
                resolve_resource(&reg, s).unwrap().store_resource(),
                want,
                "{s}"
            );
        }
        assert_eq!(resolve_resource(&reg, "nonsense").unwrap_err().code, 400);
        assert_eq!(resolve_resource(&reg, "revisions").unwrap_err().code, 400);
    }

    #[test]
    fn times_parse_as_rfc3339_or_as_durations_before_now() {
        assert_eq!(
            parse_time("2026-11-20T14:02:00Z", "t").unwrap(),
            1_795_183_320_000_000_000
        );
        let now = jiff::Timestamp::now().as_nanosecond();
        let week = parse_time("168h", "t").unwrap();
        let diff = now - i128::from(week);
        assert!(
            (diff - 168 * 3_600_000_000_000).abs() < 60_000_000_000,
            "{diff}"
        );
        assert_eq!(parse_time("yesterday", "t").unwrap_err().code, 400);
    }
}
