//! CustomResourceDefinitions made servable: a consumer of the CRD log that keeps the
//! registry in step with it.
//! - On start, every stored CRD is registered before the server answers (custom resources
//!   work right after a restart); then the controller follows the CRD watch.
//! - A CRD whose names are free is registered (one resource per served version) and its
//!   status gets `NamesAccepted` and `Established` (True), `acceptedNames` and
//!   `storedVersions`, as apiextensions-apiserver writes them. Names another resource already
//!   uses give `NamesAccepted` False and nothing is served.
//! - A deleted CRD is held by its cleanup finalizer (added by the delete, see
//!   `ResourceInfo::delete_finalizer`); the controller deletes its objects (their own
//!   finalizers respected), then removes the finalizer; the CRD goes and so does its
//!   resource. Terminating CRDs are looked at again every [`CRD_RESYNC_INTERVAL_MS`].

use std::sync::Arc;
use std::time::Duration;

use logbook_schema::registry::{CRD_CLEANUP_FINALIZER, ResourceInfo, resources_of_crd};
use logbook_store::{EventType, Expect, ListAt, Position, WatchItem};
use serde_json::{Map, Value, json};

use crate::Api;
use crate::error::{ApiResult, from_store};
use crate::handlers::{Ctx, DeleteOptions, delete_one};
use crate::object::{decode_stored, meta_mut, meta_str};
use crate::strategy::now_rfc3339;

/// How often terminating CRDs are looked at again (their objects' finalizers may have gone).
pub const CRD_RESYNC_INTERVAL_MS: u64 = 1_000;
/// Objects read per page while deleting a CRD's objects.
const CRD_CLEANUP_PAGE_ITEMS_MAX: usize = 500;
/// Pause before the controller resubscribes after its watch failed.
const CRD_WATCH_RETRY_MS: u64 = 500;

const CRD_GROUP: &str = "apiextensions.k8s.io";
const CRD_PLURAL: &str = "customresourcedefinitions";

fn crd_ctx(api: &Arc<Api>) -> ApiResult<Ctx> {
    api.system_ctx(CRD_GROUP, CRD_PLURAL, None)
}

fn crd_store_resource(api: &Arc<Api>) -> ApiResult<String> {
    Ok(crd_ctx(api)?.info.store_resource())
}

/// Registers every stored CRD, then follows the CRD watch in a task.
///
/// # Errors
/// When the stored CRDs cannot be read.
pub async fn start(api: Arc<Api>) -> ApiResult<tokio::task::JoinHandle<()>> {
    let resource = crd_store_resource(&api)?;
    let (mut crds, position) = stored_crds(&api, &resource).await?;
    // Accepted before, then oldest first: when two CRDs claim the same names, the one that
    // held them keeps them after a restart.
    crds.sort();
    for c in &crds {
        if let Err(e) = reconcile(&api, &c.name).await {
            tracing::warn!(crd = %c.name, error = %e.message, "reconciling a CustomResourceDefinition failed");
        }
    }
    Ok(tokio::spawn(follow(api, resource, position)))
}

/// What the controller needs to know of a stored CRD before reconciling it; ordered as
/// names are handed out (accepted before, then oldest).
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct StoredCrd {
    refused: bool,
    created: String,
    name: String,
}

/// Every stored CRD, read page by page, and the position they were read at.
async fn stored_crds(api: &Arc<Api>, resource: &str) -> ApiResult<(Vec<StoredCrd>, Position)> {
    let mut token: Option<String> = None;
    let mut out = Vec::new();
    loop {
        let page = api
            .log
            .list(
                resource,
                None,
                ListAt::Latest,
                CRD_CLEANUP_PAGE_ITEMS_MAX,
                token.as_deref(),
            )
            .await
            .map_err(from_store)?;
        for item in &page.items {
            let obj = decode_stored(&item.object, item.position.0).ok();
            let created = obj
                .as_ref()
                .and_then(|o| meta_str(o, "creationTimestamp").map(str::to_string))
                .unwrap_or_default();
            let refused = obj
                .as_ref()
                .and_then(|o| o.get("status"))
                .and_then(|st| st.get("conditions"))
                .and_then(Value::as_array)
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c["type"] == "NamesAccepted" && c["status"] == "False")
                });
            out.push(StoredCrd {
                refused,
                created,
                name: item.key.name.clone(),
            });
        }
        match page.continue_token {
            Some(t) => token = Some(t),
            None => return Ok((out, page.position)),
        }
    }
}

async fn follow(api: Arc<Api>, resource: String, mut from: Position) {
    let mut shutdown = api.shutdown.clone();
    loop {
        let mut sub = match api.hub.subscribe(&resource, None, from).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "the CRD controller cannot watch; retrying");
                tokio::time::sleep(Duration::from_millis(CRD_WATCH_RETRY_MS)).await;
                continue;
            }
        };
        let mut resync = tokio::time::interval(Duration::from_millis(CRD_RESYNC_INTERVAL_MS));
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = resync.tick() => {
                    for name in terminating(&api) {
                        if let Err(e) = reconcile(&api, &name).await {
                            tracing::warn!(crd = %name, error = %e.message, "cleaning up a CustomResourceDefinition failed");
                        }
                    }
                }
                item = sub.next() => match item {
                    Ok(WatchItem::Event(e)) => {
                        from = e.position;
                        if let Err(err) = reconcile(&api, &e.key.name).await {
                            tracing::warn!(crd = %e.key.name, error = %err.message, "reconciling a CustomResourceDefinition failed");
                        }
                        if e.kind == EventType::Deleted {
                            // Names a deleted CRD held may now go to one that was refused them.
                            reexamine_refused(&api).await;
                        }
                    }
                    Ok(WatchItem::Bookmark(p)) => from = p,
                    Err(logbook_store::Error::FellBehind { last_delivered }) => {
                        from = last_delivered;
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "the CRD watch ended; resubscribing");
                        tokio::time::sleep(Duration::from_millis(CRD_WATCH_RETRY_MS)).await;
                        break;
                    }
                },
            }
        }
    }
}

/// Reconciles every stored CRD whose names were not accepted.
async fn reexamine_refused(api: &Arc<Api>) {
    let Ok(resource) = crd_store_resource(api) else {
        return;
    };
    let Ok((crds, _)) = stored_crds(api, &resource).await else {
        return;
    };
    for c in crds.iter().filter(|c| c.refused) {
        if let Err(e) = reconcile(api, &c.name).await {
            tracing::warn!(crd = %c.name, error = %e.message, "reconciling a CustomResourceDefinition failed");
        }
    }
}

/// The CRDs whose resources are registered and that are being deleted.
fn terminating(api: &Arc<Api>) -> Vec<String> {
    let reg = api.registry.load();
    let mut out: Vec<String> = reg
        .iter()
        .filter_map(|r| r.custom.as_ref())
        .filter(|c| c.terminating)
        .map(|c| c.crd_name.clone())
        .collect();
    out.sort();
    out.dedup();
    out
}

fn unregister(api: &Arc<Api>, crd_name: &str) {
    api.registry.update(|r| {
        let mine: Vec<(String, String, String)> = r
            .iter()
            .filter(|i| i.custom.as_ref().is_some_and(|c| c.crd_name == crd_name))
            .map(|i| (i.group.clone(), i.version.clone(), i.plural.clone()))
            .collect();
        for (g, v, p) in mine {
            r.remove(&g, &v, &p);
        }
    });
}

/// Brings the registry and the CRD's status in line with the stored CRD.
async fn reconcile(api: &Arc<Api>, name: &str) -> ApiResult<()> {
    let ctx = crd_ctx(api)?;
    let Some(cur) = ctx.current(name).await? else {
        unregister(api, name);
        return Ok(());
    };
    let crd = decode_stored(&cur.object, cur.position.0)?;
    let crd_value = Value::Object(crd.clone());
    let deleting = meta_str(&crd, "deletionTimestamp").is_some();
    let infos = match resources_of_crd(&crd_value, cur.position.0) {
        Ok(i) => i,
        Err(why) => {
            tracing::warn!(crd = name, why, "the CRD cannot be served");
            unregister(api, name);
            return Ok(());
        }
    };
    // Names another resource already holds are not accepted.
    let reg = api.registry.load();
    let other = |r: &&Arc<ResourceInfo>| r.custom.as_ref().is_none_or(|c| c.crd_name != name);
    let conflict = infos.iter().find_map(|i| {
        if reg
            .get(&i.group, &i.version, &i.plural)
            .filter(other)
            .is_some()
        {
            return Some(format!("\"{}\" is already in use", i.plural));
        }
        if reg
            .by_kind(&i.group, &i.version, &i.kind)
            .filter(other)
            .is_some()
        {
            return Some(format!("\"{}\" is already in use", i.kind));
        }
        None
    });
    if let Some(why) = conflict {
        return write_status(&ctx, name, &cur, &crd, Some(&why)).await;
    }
    let infos: Vec<ResourceInfo> = infos
        .into_iter()
        .map(|mut i| {
            if let Some(c) = i.custom.take() {
                let mut c = (*c).clone();
                c.terminating = deleting;
                i.custom = Some(Arc::new(c));
            }
            i
        })
        .collect();
    api.registry.update(|r| {
        let stale: Vec<(String, String, String)> = r
            .iter()
            .filter(|i| i.custom.as_ref().is_some_and(|c| c.crd_name == name))
            .map(|i| (i.group.clone(), i.version.clone(), i.plural.clone()))
            .collect();
        for (g, v, p) in stale {
            r.remove(&g, &v, &p);
        }
        for i in infos.iter().cloned() {
            r.add(i);
        }
    });
    if deleting {
        return clean_up(api, &ctx, name, &cur, crd, &infos).await;
    }
    write_status(&ctx, name, &cur, &crd, None).await
}

/// Sets `acceptedNames`, `storedVersions` and the NamesAccepted/Established conditions,
/// when they differ from what is stored.
async fn write_status(
    ctx: &Ctx,
    name: &str,
    cur: &logbook_store::StoredObject,
    crd: &Map<String, Value>,
    conflict: Option<&str>,
) -> ApiResult<()> {
    let spec = crd.get("spec").cloned().unwrap_or(Value::Null);
    let mut names = spec.get("names").cloned().unwrap_or_else(|| json!({}));
    if let Some(n) = names.as_object_mut()
        && !n.contains_key("singular")
        && let Some(kind) = n.get("kind").and_then(Value::as_str)
    {
        let singular = kind.to_ascii_lowercase();
        n.insert("singular".into(), Value::String(singular));
    }
    let old_status = crd.get("status").cloned().unwrap_or_else(|| json!({}));
    let old_conditions = old_status
        .get("conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let since = |ty: &str, status: &str| -> Value {
        old_conditions
            .iter()
            .find(|c| c["type"] == ty && c["status"] == status)
            .and_then(|c| c.get("lastTransitionTime").cloned())
            .unwrap_or_else(|| Value::String(now_rfc3339()))
    };
    let (accepted, established) = match conflict {
        None => (
            json!({"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": since("NamesAccepted", "True")}),
            json!({"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": since("Established", "True")}),
        ),
        Some(why) => (
            json!({"type": "NamesAccepted", "status": "False", "reason": "NameConflict", "message": why, "lastTransitionTime": since("NamesAccepted", "False")}),
            json!({"type": "Established", "status": "False", "reason": "NotAccepted", "message": "not all names are accepted", "lastTransitionTime": since("Established", "False")}),
        ),
    };
    let mut stored: Vec<Value> = old_status
        .get("storedVersions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if conflict.is_none()
        && let Some(storage) = spec
            .get("versions")
            .and_then(Value::as_array)
            .and_then(|vs| vs.iter().find(|v| v["storage"] == true))
            .and_then(|v| v.get("name"))
            .cloned()
        && !stored.contains(&storage)
    {
        stored.push(storage);
    }
    let status = json!({
        "acceptedNames": if conflict.is_none() { names } else { old_status.get("acceptedNames").cloned().unwrap_or_else(|| json!({"kind": "", "plural": ""})) },
        "conditions": [accepted, established],
        "storedVersions": stored,
    });
    if crd.get("status") == Some(&status) {
        return Ok(());
    }
    let mut next = crd.clone();
    next.insert("status".into(), status);
    meta_mut(&mut next).remove("resourceVersion");
    let expect = Expect {
        position: Some(cur.position),
        uid: None,
    };
    match ctx
        .append(
            EventType::Modified,
            name,
            &next,
            &cur.uid,
            expect,
            "update;subresource=status;by=crd-controller",
        )
        .await
    {
        // A newer CRD: its own event brings us back.
        Err(e) if e.reason == "Conflict" => Ok(()),
        other => other.map(|_| ()),
    }
}

/// Deletes a terminating CRD's objects; once none is left, releases the CRD.
async fn clean_up(
    api: &Arc<Api>,
    ctx: &Ctx,
    name: &str,
    cur: &logbook_store::StoredObject,
    mut crd: Map<String, Value>,
    infos: &[ResourceInfo],
) -> ApiResult<()> {
    let Some(info) = infos.first() else {
        return Ok(());
    };
    let resource = info.store_resource();
    let mut left = 0usize;
    let mut token: Option<String> = None;
    loop {
        let page = api
            .log
            .list(
                &resource,
                None,
                ListAt::Latest,
                CRD_CLEANUP_PAGE_ITEMS_MAX,
                token.as_deref(),
            )
            .await
            .map_err(from_store)?;
        for item in &page.items {
            left += 1;
            let mut obj_ctx = ctx.for_resource(Arc::new(info.clone()));
            obj_ctx.target.namespace = if info.namespaced {
                Some(item.key.namespace.clone())
            } else {
                None
            };
            match delete_one(&obj_ctx, &item.key.name, &DeleteOptions::default()).await {
                Ok(_) => {}
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        match page.continue_token {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    if left > 0 {
        // Deleted now or held by their finalizers: look again at the next resync.
        let remaining = api
            .log
            .list(&resource, None, ListAt::Latest, 1, None)
            .await
            .map_err(from_store)?;
        if !remaining.items.is_empty() {
            return Ok(());
        }
    }
    if let Some(list) = crd
        .get_mut("metadata")
        .and_then(|m| m.get_mut("finalizers"))
        .and_then(Value::as_array_mut)
    {
        list.retain(|f| f.as_str() != Some(CRD_CLEANUP_FINALIZER));
    }
    let done = crate::strategy::ready_to_remove(&crd);
    meta_mut(&mut crd).remove("resourceVersion");
    let expect = Expect {
        position: Some(cur.position),
        uid: None,
    };
    let kind = if done {
        EventType::Deleted
    } else {
        EventType::Modified
    };
    match ctx
        .append(
            kind,
            name,
            &crd,
            &cur.uid,
            expect,
            "update;by=crd-controller",
        )
        .await
    {
        Ok(_) if done => {
            unregister(api, name);
            Ok(())
        }
        Ok(_) => Ok(()),
        Err(e) if e.reason == "Conflict" => Ok(()),
        Err(e) => Err(e),
    }
}
