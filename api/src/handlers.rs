//! The verbs on one resource: get, create, update, patch, delete, deletecollection, and the
//! `status` and `scale` subresources. Generic over the registry entry: adding a resource
//! never adds a handler.

use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use logbook_schema::registry::ResourceInfo;
use logbook_schema::selector::LabelSelector;
use logbook_store::{AppendRequest, EventType, Expect, ObjectKey, Position, StoredObject};
use serde_json::{Map, Value, json};

use crate::admission::{Operation, Review};
use crate::error::{ApiError, ApiResult, from_store};
use crate::object::{decode_stored, encode_stored, meta_mut, meta_str, render_for};
use crate::request::{Query, Target};
use crate::{Api, Identity, strategy};

/// Read-modify-write retries when a concurrent writer got there first and the client gave
/// no resourceVersion precondition (kube's GuaranteedUpdate loops the same way).
pub const UPDATE_RETRIES_MAX: usize = 32;
/// Pause after the n-th lost race of a read-modify-write: n times this, so a busy object's
/// other writer (a controller) gets to finish; at most [`UPDATE_RETRY_PAUSE_MAX_MS`].
pub const UPDATE_RETRY_PAUSE_STEP_MS: u64 = 2;
/// Longest pause between two read-modify-write attempts.
pub const UPDATE_RETRY_PAUSE_MAX_MS: u64 = 50;

/// One request on one resource, resolved.
pub struct Ctx {
    pub api: Arc<Api>,
    pub info: Arc<ResourceInfo>,
    pub target: Target,
    pub query: Query,
    pub identity: Identity,
    pub headers: HeaderMap,
    /// The negotiated response form (object, Table, PartialObjectMetadata).
    pub output: crate::table::Output,
    /// `Warning` headers for the response (e.g. unknown fields under fieldValidation=Warn).
    pub warnings: std::sync::Mutex<Vec<String>>,
}

impl Ctx {
    /// The same request, acting on another resource (an eviction updating a budget).
    pub fn for_resource(&self, info: Arc<ResourceInfo>) -> Ctx {
        Ctx {
            api: self.api.clone(),
            info,
            target: self.target.clone(),
            query: self.query.clone(),
            identity: self.identity.clone(),
            headers: self.headers.clone(),
            // An action on another resource answers as an object, whatever was negotiated.
            output: crate::table::Output::Object,
            warnings: Default::default(),
        }
    }

    pub fn namespace(&self) -> &str {
        if self.info.namespaced {
            self.target.namespace.as_deref().unwrap_or("")
        } else {
            ""
        }
    }

    pub fn key(&self, name: &str) -> ObjectKey {
        ObjectKey::new(self.info.store_resource(), self.namespace(), name)
    }

    fn name(&self) -> &str {
        self.target.name.as_deref().unwrap_or("")
    }

    pub(crate) fn dry_run(&self) -> ApiResult<bool> {
        match self.query.get("dryRun") {
            None | Some("") => Ok(false),
            Some("All") => Ok(true),
            Some(v) => Err(ApiError::invalid_options(
                "DryRun",
                "dryRun",
                v,
                "supported values: \"All\"",
            )),
        }
    }

    fn field_manager(&self) -> ApiResult<String> {
        let fm = match self.query.get("fieldManager") {
            Some(f) => f.to_string(),
            None => self
                .headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(|ua| ua.split('/').next().unwrap_or(ua).to_string())
                .unwrap_or_default(),
        };
        if fm.chars().count() > 128 {
            return Err(ApiError::invalid_options(
                "PatchOptions",
                "fieldManager",
                &fm,
                "must be no more than 128 characters",
            ));
        }
        Ok(fm)
    }

    /// Duplicate fields in a JSON body under the request's fieldValidation: Strict refuses
    /// them (400), Warn reports them in `Warning` headers, Ignore lets the last one win.
    pub(crate) fn check_duplicates(&self, body: &Bytes) -> ApiResult<()> {
        let mode = self.query.get("fieldValidation").unwrap_or("Warn");
        let ct = content_type(&self.headers);
        if mode == "Ignore" || !(ct.is_empty() || ct.ends_with("json")) {
            return Ok(());
        }
        let dupes = crate::duplicates::duplicate_fields(body);
        if dupes.is_empty() {
            return Ok(());
        }
        let list: Vec<String> = dupes
            .iter()
            .map(|f| format!("duplicate field \"{f}\""))
            .collect();
        if mode == "Strict" {
            return Err(ApiError::bad_request(format!(
                "strict decoding error: {}",
                list.join(", ")
            )));
        }
        self.warn(list);
        Ok(())
    }

    /// Decodes into the typed form (dropping unknown fields) and applies the request's
    /// fieldValidation: Strict refuses unknown fields (400), Warn (the default) reports
    /// them in `Warning` headers, Ignore drops them silently.
    fn typed(&self, obj: Map<String, Value>) -> ApiResult<Map<String, Value>> {
        let mode = self.query.get("fieldValidation").unwrap_or("Warn");
        if !matches!(mode, "Ignore" | "Warn" | "Strict" | "") {
            return Err(ApiError::bad_request(format!(
                "fieldValidation must be one of Ignore, Warn or Strict, got {mode:?}"
            )));
        }
        if self.info.custom.is_some() {
            // A custom object: pruned by its schema; what was pruned is unknown.
            let mut obj = obj;
            let unknown = strategy::prune_custom(&self.info, &mut obj);
            return self.report_unknown(mode, obj, unknown);
        }
        if mode == "Ignore" || self.info.check.is_none() {
            return strategy::typed_roundtrip(&self.info, obj);
        }
        let input = Value::Object(obj.clone());
        let typed = strategy::typed_roundtrip(&self.info, obj)?;
        let mut unknown = Vec::new();
        strategy::unknown_fields(&input, &Value::Object(typed.clone()), "", &mut unknown);
        self.report_unknown(mode, typed, unknown)
    }

    /// Unknown fields under the request's fieldValidation mode.
    fn report_unknown(
        &self,
        mode: &str,
        typed: Map<String, Value>,
        unknown: Vec<String>,
    ) -> ApiResult<Map<String, Value>> {
        if mode == "Ignore" {
            return Ok(typed);
        }
        if unknown.is_empty() {
            return Ok(typed);
        }
        if mode == "Strict" {
            let list: Vec<String> = unknown
                .iter()
                .map(|f| format!("unknown field \"{f}\""))
                .collect();
            return Err(ApiError::bad_request(format!(
                "strict decoding error: {}",
                list.join(", ")
            )));
        }
        if let Ok(mut w) = self.warnings.lock() {
            w.extend(
                unknown
                    .into_iter()
                    .map(|f| format!("unknown field \"{f}\"")),
            );
        }
        Ok(typed)
    }

    /// Adds `Warning` headers to the response.
    pub(crate) fn warn(&self, warnings: Vec<String>) {
        if warnings.is_empty() {
            return;
        }
        if let Ok(mut w) = self.warnings.lock() {
            // A retried read-modify-write validates again: warn once.
            for msg in warnings {
                if !w.contains(&msg) {
                    w.push(msg);
                }
            }
        }
    }

    fn actor(&self) -> logbook_store::Actor {
        logbook_store::Actor {
            user: self.identity.user.clone(),
            groups: self.identity.groups.clone(),
            user_agent: self.identity.user_agent.clone(),
            source: self.identity.source.clone(),
        }
    }

    pub(crate) fn not_found(&self, name: &str) -> ApiError {
        ApiError::not_found(&self.info.group, &self.info.plural, name)
    }

    /// Appends one event, mapping object-level store outcomes to Kubernetes errors.
    pub(crate) async fn append(
        &self,
        kind: EventType,
        name: &str,
        obj: &Map<String, Value>,
        uid: &str,
        expect: Expect,
        verb: &str,
    ) -> ApiResult<logbook_store::Event> {
        let fm = self.field_manager()?;
        let verb = if fm.is_empty() {
            verb.to_string()
        } else {
            format!("{verb};fieldManager={fm}")
        };
        let req = AppendRequest {
            key: self.key(name),
            kind,
            object: encode_stored(obj),
            uid: uid.to_string(),
            expect,
            actor: self.actor(),
            verb,
            request_id: if self.identity.request_id.is_empty() {
                uuid::Uuid::new_v4().to_string()
            } else {
                self.identity.request_id.clone()
            },
        };
        let started = std::time::Instant::now();
        let res = self.api.log.append(&req).await;
        self.api.metrics.observe_commit(started.elapsed());
        self.api.admission.note_write(&req.key.resource);
        res.map_err(|e| match e {
            logbook_store::Error::AlreadyExists { .. } => {
                ApiError::already_exists(&self.info.group, &self.info.plural, name)
            }
            logbook_store::Error::NotFound { .. } => self.not_found(name),
            logbook_store::Error::Conflict { .. } => {
                ApiError::modified(&self.info.group, &self.info.plural, name)
            }
            logbook_store::Error::TooLarge { size, limit, .. } => ApiError::new(
                413,
                "RequestEntityTooLarge",
                format!("the object is too large to store: {size} bytes, limit {limit}"),
            ),
            other => from_store(other),
        })
    }

    pub(crate) async fn current(&self, name: &str) -> ApiResult<Option<StoredObject>> {
        self.api.log.get(&self.key(name)).await.map_err(from_store)
    }
}

pub fn json_response(code: StatusCode, body: Vec<u8>) -> Response {
    let mut r = (code, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

pub fn value_response(code: StatusCode, v: &Value) -> Response {
    json_response(code, serde_json::to_vec(v).unwrap_or_default())
}

/// Parses a JSON request body into an object (400 on anything else).
pub fn parse_object(body: &Bytes, what: &str) -> ApiResult<Map<String, Value>> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::bad_request(format!(
            "{what}: the body must be a JSON object"
        ))),
        Err(e) => Err(ApiError::bad_request(format!(
            "{what}: the body is not valid JSON: {e}"
        ))),
    }
}

/// Most YAML aliases (`*ref`) a request body may use: a few are legitimate, thousands are an
/// expansion bomb.
pub const YAML_ALIASES_MAX: usize = 100;
/// Deepest nesting of a YAML request body, in collections.
pub const YAML_DEPTH_MAX: usize = 100;
/// Most YAML nodes (scalars and collections) in one request body.
pub const YAML_NODES_MAX: usize = 200_000;

/// Parses a YAML request body (one document) into a JSON object, within the YAML limits
/// above; the byte size is already bounded by the request body limit.
pub fn parse_yaml_object(body: &Bytes, what: &str) -> ApiResult<Map<String, Value>> {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_aliases = YAML_ALIASES_MAX;
    budget.max_depth = YAML_DEPTH_MAX;
    budget.max_nodes = YAML_NODES_MAX;
    budget.max_documents = 1;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    match serde_saphyr::from_slice_with_options::<Value>(body, options) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::bad_request(format!(
            "{what}: the body must be a YAML mapping"
        ))),
        Err(e) => Err(ApiError::bad_request(format!(
            "{what}: the body is not valid YAML: {}",
            e.to_string().lines().next().unwrap_or("")
        ))),
    }
}

/// Decodes a whole-object body: JSON, YAML, or Kubernetes protobuf (kubectl ≥ 1.32 sends
/// its typed commands' bodies that way) for the built-in kinds. Anything else is 415.
pub fn parse_body(headers: &HeaderMap, body: &Bytes, what: &str) -> ApiResult<Map<String, Value>> {
    let ct = content_type(headers);
    match ct.as_str() {
        "" | "application/json" | "*/*" => parse_object(body, what),
        "application/yaml" | "application/x-yaml" | "text/yaml" => parse_yaml_object(body, what),
        "application/vnd.kubernetes.protobuf" => match logbook_schema::proto::decode_object(body) {
            Ok(Value::Object(m)) => Ok(m),
            Ok(_) => Err(ApiError::bad_request(format!(
                "{what}: the body is not an object"
            ))),
            Err(e) => Err(ApiError::bad_request(format!(
                "{what}: the protobuf body could not be decoded: {e}"
            ))),
        },
        other => Err(ApiError::unsupported_media_type(other)),
    }
}

pub fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// get

pub async fn get(ctx: &Ctx) -> ApiResult<Response> {
    let name = ctx.name();
    let rv = ctx
        .query
        .get("resourceVersion")
        .filter(|r| !r.is_empty() && *r != "0");
    let exact = match ctx.query.get("resourceVersionMatch") {
        None | Some("" | "NotOlderThan") => false,
        Some("Exact") => true,
        Some(other) => {
            return Err(ApiError::invalid_options(
                "GetOptions",
                "resourceVersionMatch",
                other,
                "supported values: \"Exact\", \"NotOlderThan\", \"\"",
            ));
        }
    };
    if let Some(rv) = rv {
        let p = parse_rv(rv)?;
        crate::list::wait_for(&ctx.api, p).await?;
        if exact {
            // The object exactly as of a retained position (Logbook keeps every revision,
            // where kube-apiserver answers only from its watch cache).
            let e = ctx
                .api
                .log
                .get_as_of(&ctx.key(name), p)
                .await
                .map_err(from_store)?
                .ok_or_else(|| ctx.not_found(name))?;
            return Ok(json_response(
                StatusCode::OK,
                crate::table::Renderer::new(ctx).single(&e.object, e.position.0)?,
            ));
        }
    } else if exact {
        return Err(ApiError::invalid_options(
            "GetOptions",
            "resourceVersionMatch",
            "Exact",
            "resourceVersionMatch \"Exact\" is forbidden for resourceVersion \"\" or \"0\"",
        ));
    }
    let cur = ctx
        .current(name)
        .await?
        .ok_or_else(|| ctx.not_found(name))?;
    match ctx.target.subresource.as_deref() {
        Some("scale") => {
            let obj = decode_stored(&cur.object, cur.position.0)?;
            Ok(value_response(StatusCode::OK, &scale_of(ctx, &obj)?))
        }
        _ => Ok(json_response(
            StatusCode::OK,
            crate::table::Renderer::new(ctx).single(&cur.object, cur.position.0)?,
        )),
    }
}

pub fn parse_rv(rv: &str) -> ApiResult<Position> {
    Position::parse(rv).ok_or_else(|| {
        ApiError::bad_request(format!(
            "invalid resource version: {rv:?}: must be a decimal integer"
        ))
    })
}

// ---------------------------------------------------------------------------------------
// create

pub async fn create(ctx: &Ctx, body: Bytes) -> ApiResult<Response> {
    let dry_run = ctx.dry_run()?;
    ctx.field_manager()?;
    let mut obj = parse_body(&ctx.headers, &body, "create")?;
    ctx.check_duplicates(&body)?;
    strategy::check_type(&ctx.info, &mut obj)?;
    let (code, out) = create_object(ctx, obj, dry_run, true).await?;
    Ok(json_response(code, out))
}

/// `track`: record the creator's fields in `managedFields` (an apply has already).
async fn create_object(
    ctx: &Ctx,
    mut obj: Map<String, Value>,
    dry_run: bool,
    track: bool,
) -> ApiResult<(StatusCode, Vec<u8>)> {
    {
        let url_ns = ctx.namespace().to_string();
        let meta = meta_mut(&mut obj);
        if ctx.info.namespaced {
            match meta.get("namespace").and_then(Value::as_str) {
                Some(ns) if !ns.is_empty() && ns != url_ns => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                _ => {
                    meta.insert("namespace".into(), Value::String(url_ns));
                }
            }
        }
    }
    let generated = strategy::generate_name(&mut obj);
    let uid = uuid::Uuid::new_v4().to_string();
    let mut obj = ctx.typed(obj)?;
    // Admission sees the object defaulted, as kube-apiserver's decoder defaults it; the
    // server's own fields (uid, timestamps, status) come after, in the strategy.
    strategy::default(&ctx.info, &mut obj);
    let review = Review::new(
        ctx,
        Operation::Create,
        meta_str(&obj, "name").unwrap_or_default(),
        dry_run,
    );
    review.mutate(Some(&mut obj), None).await?;
    strategy::prepare_create(&ctx.info, &mut obj, &uid);
    // Defaulting after the server's own fields, not before: kube-apiserver defaults again
    // when it reads an object back, so what clients see includes defaults of fields that
    // creation cleared (a claim's `status.phase`).
    strategy::default(&ctx.info, &mut obj);
    if ctx.info.namespaced && meta_str(&obj, "namespace").is_none() {
        // Re-assert after the round trip (a typed decode keeps it, but be explicit).
        let ns = ctx.namespace().to_string();
        meta_mut(&mut obj).insert("namespace".into(), Value::String(ns));
    }
    let warnings = strategy::validate(&ctx.info, &obj)?;
    ctx.warn(warnings);
    if track {
        let fm = ctx.field_manager()?;
        crate::fields::track_update(ctx, &fm, None, &mut obj);
    }
    let mut name = meta_str(&obj, "name").unwrap_or_default().to_string();
    review.validate(Some(&mut obj), None).await?;
    // ResourceQuota, last as in kube: held until the object is written, so creates counted
    // against a quota are serialized (api/src/quota.rs).
    let _admitted = crate::quota::admit_create(ctx, &obj).await?;
    let held = crate::service_alloc::allocate(ctx, &mut obj, None, dry_run).await?;
    if dry_run {
        if ctx.current(&name).await?.is_some() {
            return Err(ApiError::already_exists(
                &ctx.info.group,
                &ctx.info.plural,
                &name,
            ));
        }
        return Ok((
            StatusCode::CREATED,
            serde_json::to_vec(&obj).unwrap_or_default(),
        ));
    }
    to_storage_version(&ctx.info, &mut obj);
    let mut attempts = 0;
    let ev = loop {
        match ctx
            .append(
                EventType::Added,
                &name,
                &obj,
                &uid,
                Expect::default(),
                "create",
            )
            .await
        {
            Ok(ev) => break ev,
            // A generated name that is taken: another suffix (kube-apiserver retries too).
            Err(e)
                if generated
                    && e.reason == "AlreadyExists"
                    && attempts < strategy::GENERATE_NAME_RETRIES_MAX =>
            {
                attempts += 1;
                meta_mut(&mut obj).remove("name");
                strategy::generate_name(&mut obj);
                name = meta_str(&obj, "name").unwrap_or_default().to_string();
            }
            Err(e) => {
                crate::service_alloc::release(ctx, &held).await;
                return Err(e);
            }
        }
    };
    Ok((
        StatusCode::CREATED,
        render_for(&ctx.info, &ev.object, ev.position.0),
    ))
}

// ---------------------------------------------------------------------------------------
// update and patch

/// How a read-modify-write computes the new object from the current one.
enum Change {
    Replace(Map<String, Value>),
    JsonPatch(json_patch::Patch),
    MergePatch(Value),
    StrategicMerge(Value),
    /// Server-side apply: the configuration and `force`.
    Apply(Value, bool),
}

pub async fn update(ctx: &Ctx, body: Bytes) -> ApiResult<Response> {
    let mut obj = parse_body(&ctx.headers, &body, "update")?;
    ctx.check_duplicates(&body)?;
    if ctx.target.subresource.as_deref() == Some("scale") {
        return modify(ctx, Change::Replace(obj), "update").await;
    }
    strategy::check_type(&ctx.info, &mut obj)?;
    if let Some(n) = meta_str(&obj, "name").filter(|n| !n.is_empty())
        && n != ctx.name()
    {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({n}) does not match the name on the URL ({})",
            ctx.name()
        )));
    }
    if let Some(ns) = meta_str(&obj, "namespace").filter(|n| !n.is_empty())
        && ctx.info.namespaced
        && ns != ctx.namespace()
    {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    meta_mut(&mut obj).insert("name".into(), Value::String(ctx.name().to_string()));
    modify(ctx, Change::Replace(obj), "update").await
}

pub async fn patch(ctx: &Ctx, body: Bytes) -> ApiResult<Response> {
    let ct = content_type(&ctx.headers);
    let change = match ct.as_str() {
        "application/json-patch+json" => {
            let p: json_patch::Patch = serde_json::from_slice(&body)
                .map_err(|e| ApiError::bad_request(format!("the JSON patch is malformed: {e}")))?;
            Change::JsonPatch(p)
        }
        "application/merge-patch+json" => {
            let v: Value = serde_json::from_slice(&body).map_err(|e| {
                ApiError::bad_request(format!("the merge patch is not valid JSON: {e}"))
            })?;
            if !v.is_object() {
                return Err(ApiError::bad_request("a merge patch must be a JSON object"));
            }
            ctx.check_duplicates(&body)?;
            Change::MergePatch(v)
        }
        "application/strategic-merge-patch+json" => {
            let v: Value = serde_json::from_slice(&body).map_err(|e| {
                ApiError::bad_request(format!("the strategic merge patch is not valid JSON: {e}"))
            })?;
            if !v.is_object() {
                return Err(ApiError::bad_request(
                    "a strategic merge patch must be a JSON object",
                ));
            }
            ctx.check_duplicates(&body)?;
            Change::StrategicMerge(v)
        }
        "application/apply-patch+yaml" => {
            let cfg = parse_yaml_object(&body, "apply")?;
            let fm = ctx.query.get("fieldManager").unwrap_or("");
            if fm.is_empty() {
                return Err(ApiError::invalid(
                    "PatchOptions",
                    "meta.k8s.io",
                    "",
                    vec![logbook_schema::Cause {
                        reason: "FieldValueRequired".into(),
                        message: "Required value: is required for apply patch".into(),
                        field: "fieldManager".into(),
                    }],
                ));
            }
            let force = match ctx.query.get("force") {
                None | Some("" | "false") => false,
                Some("true") => true,
                Some(v) => {
                    return Err(ApiError::bad_request(format!(
                        "force must be true or false, got {v:?}"
                    )));
                }
            };
            Change::Apply(Value::Object(cfg), force)
        }
        other => return Err(ApiError::unsupported_media_type(other)),
    };
    if !matches!(change, Change::Apply(..)) && ctx.query.get("force").is_some() {
        return Err(ApiError::invalid(
            "PatchOptions",
            "meta.k8s.io",
            "",
            vec![logbook_schema::Cause {
                reason: "FieldValueForbidden".into(),
                message: "Forbidden: may not be specified for non-apply patch".into(),
                field: "force".into(),
            }],
        ));
    }
    modify(ctx, change, "patch").await
}

/// A custom object written through a version other than its storage version is stored as
/// the storage version (conversion strategy None: only `apiVersion` changes).
fn to_storage_version(info: &ResourceInfo, obj: &mut Map<String, Value>) {
    if let Some(v) = info.storage_api_version() {
        obj.insert("apiVersion".into(), Value::String(v.to_string()));
    }
}

/// Applies a JSON patch as kube-apiserver's library does: a `test` of `null` passes on a
/// path that does not exist (kube-rs' `finalizer()` tests `/metadata/finalizers` against
/// null before adding the first finalizer); otherwise RFC 6902. One operation at a time:
/// json-patch 5.0's whole-patch apply panics when it undoes a `move` after a later
/// operation fails (found by `fuzz/fuzz_targets/patches.rs`); a failed patch here leaves
/// `doc` part-way, and the request writes nothing.
///
/// # Errors
/// The first operation that fails.
pub fn apply_json_patch(
    doc: &mut Value,
    p: &json_patch::Patch,
) -> Result<(), json_patch::PatchError> {
    for op in p.iter() {
        if let json_patch::PatchOperation::Test(t) = op
            && t.value.is_null()
            && doc.pointer(t.path.as_str()).is_none()
        {
            continue;
        }
        json_patch::patch(doc, std::slice::from_ref(op))?;
    }
    Ok(())
}

/// The read-modify-write behind update and patch (and the status/scale subresources).
async fn modify(ctx: &Ctx, change: Change, verb: &str) -> ApiResult<Response> {
    let dry_run = ctx.dry_run()?;
    let fm = ctx.field_manager()?;
    let name = ctx.name().to_string();
    let subresource = ctx.target.subresource.as_deref();
    let review = Review::new(ctx, Operation::Update, &name, dry_run);
    for attempt in 0..UPDATE_RETRIES_MAX {
        if attempt > 0 {
            let pause =
                (attempt as u64 * UPDATE_RETRY_PAUSE_STEP_MS).min(UPDATE_RETRY_PAUSE_MAX_MS);
            tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
        }
        let Some(cur) = ctx.current(&name).await? else {
            if let Change::Replace(obj) = &change
                && ctx.info.create_on_update
                && subresource.is_none()
            {
                let (code, out) = create_object(ctx, obj.clone(), dry_run, true).await?;
                return Ok(json_response(code, out));
            }
            if let Change::Apply(cfg, force) = &change
                && subresource.is_none()
            {
                // An apply creates what does not exist yet (201).
                let mut obj = crate::fields::apply(ctx, &fm, None, cfg, *force)?;
                strategy::check_type(&ctx.info, &mut obj)?;
                if meta_str(&obj, "name").is_none_or(str::is_empty) {
                    meta_mut(&mut obj).insert("name".into(), Value::String(name.clone()));
                }
                let (code, out) = create_object(ctx, obj, dry_run, false).await?;
                return Ok(json_response(code, out));
            }
            return Err(ctx.not_found(&name));
        };
        let old = decode_stored(&cur.object, cur.position.0)?;
        // The stored object as the client's version sees it (a custom resource read through
        // a version other than its storage version).
        let mut old_served = old.clone();
        if let Some(v) = ctx.info.served_api_version() {
            old_served.insert("apiVersion".into(), Value::String(v));
        }
        // The object (or Scale) the client's change applies to.
        let (base, is_scale) = if subresource == Some("scale") {
            (scale_of(ctx, &old)?, true)
        } else {
            (Value::Object(old_served.clone()), false)
        };
        let mut changed = match &change {
            Change::Replace(o) => Value::Object(o.clone()),
            Change::JsonPatch(p) => {
                let mut doc = base.clone();
                apply_json_patch(&mut doc, p).map_err(|e| {
                    ApiError::new(
                        422,
                        "Invalid",
                        format!("the JSON patch could not be applied: {e}"),
                    )
                })?;
                doc
            }
            Change::MergePatch(p) => {
                let mut doc = base.clone();
                json_patch::merge(&mut doc, p);
                doc
            }
            Change::Apply(cfg, force) => {
                if is_scale {
                    return Err(ApiError::unsupported_media_type(
                        "application/apply-patch+yaml (on /scale)",
                    ));
                }
                Value::Object(crate::fields::apply(
                    ctx,
                    &fm,
                    Some(&old_served),
                    cfg,
                    *force,
                )?)
            }
            Change::StrategicMerge(p) => {
                let def = logbook_schema::openapi::definition(
                    &ctx.info.group,
                    &ctx.info.version,
                    &ctx.info.kind,
                );
                logbook_schema::patch::strategic_merge_typed(def, &base, p).map_err(|e| {
                    ApiError::new(
                        422,
                        "Invalid",
                        format!("the strategic merge patch could not be applied: {e}"),
                    )
                })?
            }
        };
        let Value::Object(changed_obj) = &mut changed else {
            return Err(ApiError::bad_request(
                "the patched object is not a JSON object",
            ));
        };
        // A resourceVersion in the client's object is a precondition.
        let precondition = match meta_str(changed_obj, "resourceVersion").filter(|r| !r.is_empty())
        {
            Some(rv) => Some(
                parse_rv(rv)
                    .map_err(|_| ApiError::modified(&ctx.info.group, &ctx.info.plural, &name))?,
            ),
            None => None,
        };
        if let Some(p) = precondition
            && p != cur.position
        {
            return Err(ApiError::modified(&ctx.info.group, &ctx.info.plural, &name));
        }
        let applied_managed_fields = match change {
            Change::Apply(..) => changed_obj
                .get("metadata")
                .and_then(|m| m.get("managedFields"))
                .cloned(),
            _ => None,
        };
        let old_scale = if is_scale {
            base.as_object().cloned()
        } else {
            None
        };
        let new = if is_scale {
            // Admission of a `/scale` write sees the Scale, as in kube-apiserver.
            review.mutate(Some(changed_obj), old_scale.as_ref()).await?;
            apply_scale(ctx, &old, changed_obj)?
        } else {
            let mut n = std::mem::take(changed_obj);
            strategy::check_type(&ctx.info, &mut n)?;
            let mut n = ctx.typed(n)?;
            for k in ["name", "namespace"] {
                if let Some(v) = old.get("metadata").and_then(|m| m.get(k)) {
                    meta_mut(&mut n).insert(k.into(), v.clone());
                }
            }
            if let (Some(u), Some(ou)) = (meta_str(&n, "uid"), meta_str(&old, "uid"))
                && !u.is_empty()
                && u != ou
            {
                return Err(ApiError::conflict(
                    &ctx.info.group,
                    &ctx.info.plural,
                    &name,
                    &format!(
                        "Precondition failed: UID in precondition: {u}, UID in object meta: {ou}"
                    ),
                ));
            }
            let status_endpoint = subresource == Some("status");
            if subresource == Some("finalize") {
                review.mutate(Some(&mut n), Some(&old)).await?;
                strategy::prepare_finalize(&old, &n)
            } else {
                if !status_endpoint {
                    strategy::default(&ctx.info, &mut n);
                }
                review.mutate(Some(&mut n), Some(&old)).await?;
                strategy::prepare_update(&ctx.info, &old, n, status_endpoint)
            }
        };
        let mut new = new;
        if subresource == Some("status") {
            strategy::validate_status(&ctx.info, &new)?;
        } else {
            ctx.warn(strategy::validate_update(&ctx.info, &old, &new)?);
        }
        if !is_scale && !matches!(change, Change::Apply(..)) {
            crate::fields::track_update(ctx, &fm, Some(&old), &mut new);
        }
        if let Some(mf) = applied_managed_fields {
            // The status strategy keeps the stored metadata; an apply's ownership is new.
            meta_mut(&mut new).insert("managedFields".into(), mf);
        }
        if is_scale {
            let mut scale = match scale_of(ctx, &new)? {
                Value::Object(m) => m,
                _ => Map::new(),
            };
            review
                .validate(Some(&mut scale), old_scale.as_ref())
                .await?;
        } else {
            review.validate(Some(&mut new), Some(&old)).await?;
        }
        to_storage_version(&ctx.info, &mut new);
        meta_mut(&mut new).remove("resourceVersion");
        let mut old_cmp = old.clone();
        meta_mut(&mut old_cmp).remove("resourceVersion");
        if new == old_cmp && !cur.stale {
            // Nothing changed: no event, the same resourceVersion (as kube does). A stale
            // stored form (sealed under an older key) is written anyway: that unchanged
            // update is how `logbook secrets reencrypt` moves objects to the current key.
            return finish(ctx, is_scale, &cur.object, cur.position.0);
        }
        let remove = strategy::ready_to_remove(&new);
        let held = if is_scale || subresource.is_some() || remove {
            crate::service_alloc::Held::default()
        } else {
            crate::service_alloc::allocate(ctx, &mut new, Some(&old), dry_run).await?
        };
        if dry_run {
            let bytes = encode_stored(&new);
            return finish(ctx, is_scale, &bytes, cur.position.0);
        }
        let kind = if remove {
            EventType::Deleted
        } else {
            EventType::Modified
        };
        let expect = Expect {
            position: Some(cur.position),
            uid: None,
        };
        match ctx.append(kind, &name, &new, &cur.uid, expect, verb).await {
            Ok(ev) => {
                if remove {
                    crate::service_alloc::release_service(ctx, &new).await;
                }
                return finish(ctx, is_scale, &ev.object, ev.position.0);
            }
            Err(e) if e.reason == "Conflict" && precondition.is_none() => {
                crate::service_alloc::release(ctx, &held).await;
                continue;
            }
            Err(e) => {
                crate::service_alloc::release(ctx, &held).await;
                return Err(e);
            }
        }
    }
    Err(ApiError::modified(&ctx.info.group, &ctx.info.plural, &name))
}

fn finish(ctx: &Ctx, is_scale: bool, stored: &[u8], rv: u64) -> ApiResult<Response> {
    if is_scale {
        let obj = decode_stored(stored, rv)?;
        return Ok(value_response(StatusCode::OK, &scale_of(ctx, &obj)?));
    }
    Ok(json_response(
        StatusCode::OK,
        render_for(&ctx.info, stored, rv),
    ))
}

// ---------------------------------------------------------------------------------------
// scale

/// The `autoscaling/v1` Scale of a scalable object.
fn scale_of(ctx: &Ctx, obj: &Map<String, Value>) -> ApiResult<Value> {
    let Some(scale) = &ctx.info.scale else {
        return Err(ApiError::no_route());
    };
    let v = Value::Object(obj.clone());
    let spec_replicas = v
        .pointer(&scale.spec_replicas)
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let status_replicas = v
        .pointer(&scale.status_replicas)
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let no_selector = scale.label_selector.is_empty();
    let selector = match v.pointer(&scale.label_selector).filter(|_| !no_selector) {
        Some(Value::String(sel)) => sel.clone(),
        Some(sel @ Value::Object(m))
            if m.contains_key("matchLabels") || m.contains_key("matchExpressions") =>
        {
            LabelSelector::from_label_selector_json(sel)
                .map(|s| s.to_string())
                .unwrap_or_default()
        }
        Some(Value::Object(m)) if !m.is_empty() => {
            // A plain map selector (ReplicationController).
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        }
        _ => String::new(),
    };
    let meta = obj.get("metadata").cloned().unwrap_or(json!({}));
    let mut scale_meta = json!({});
    for k in [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
    ] {
        if let Some(x) = meta.get(k) {
            scale_meta[k] = x.clone();
        }
    }
    let mut status = json!({"replicas": status_replicas});
    if !selector.is_empty() {
        status["selector"] = Value::String(selector);
    }
    Ok(json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": scale_meta,
        "spec": {"replicas": spec_replicas},
        "status": status,
    }))
}

/// Writes a changed Scale's `spec.replicas` into the parent object.
fn apply_scale(
    ctx: &Ctx,
    old: &Map<String, Value>,
    scale: &Map<String, Value>,
) -> ApiResult<Map<String, Value>> {
    let Some(info) = &ctx.info.scale else {
        return Err(ApiError::no_route());
    };
    let replicas = match scale.get("spec").and_then(|s| s.get("replicas")) {
        None => 0,
        Some(r) => r
            .as_i64()
            .ok_or_else(|| ApiError::bad_request("Scale.spec.replicas must be an integer"))?,
    };
    if replicas < 0 {
        return Err(ApiError::invalid(
            "Scale",
            "autoscaling",
            ctx.name(),
            vec![logbook_schema::validate::Cause {
                reason: "FieldValueInvalid".into(),
                message: format!("Invalid value: {replicas}: must be greater than or equal to 0"),
                field: "spec.replicas".into(),
            }],
        ));
    }
    let mut v = Value::Object(old.clone());
    let mut cur = &mut v;
    for part in info.spec_replicas.trim_start_matches('/').split('/') {
        if !cur.is_object() {
            *cur = json!({});
        }
        cur = cur
            .as_object_mut()
            .map(|m| m.entry(part.to_string()).or_insert(Value::Null))
            .ok_or_else(|| ApiError::internal("scale path"))?;
    }
    *cur = json!(replicas);
    match v {
        Value::Object(m) => Ok(strategy::prepare_update(&ctx.info, old, m, false)),
        _ => Err(ApiError::internal("scale target is not an object")),
    }
}

// ---------------------------------------------------------------------------------------
// delete

/// DeleteOptions from the body and the query.
#[derive(Default)]
pub struct DeleteOptions {
    pub propagation: Option<String>,
    pub grace_period_seconds: Option<i64>,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
    pub dry_run: bool,
}

pub fn delete_options(ctx: &Ctx, body: &Bytes) -> ApiResult<DeleteOptions> {
    let mut o = DeleteOptions {
        dry_run: ctx.dry_run()?,
        ..Default::default()
    };
    if !body.iter().all(u8::is_ascii_whitespace) {
        let v = parse_body(&ctx.headers, body, "DeleteOptions")?;
        if let Some(p) = v.get("propagationPolicy").and_then(Value::as_str) {
            o.propagation = Some(p.to_string());
        }
        o.grace_period_seconds = v.get("gracePeriodSeconds").and_then(Value::as_i64);
        if let Some(pre) = v.get("preconditions") {
            o.precondition_uid = pre.get("uid").and_then(Value::as_str).map(str::to_string);
            o.precondition_rv = pre
                .get("resourceVersion")
                .and_then(Value::as_str)
                .map(str::to_string);
        }
        if let Some(Value::Array(d)) = v.get("dryRun") {
            match d.as_slice() {
                [] => {}
                [x] if x == "All" => o.dry_run = true,
                _ => {
                    return Err(ApiError::invalid_options(
                        "DeleteOptions",
                        "dryRun",
                        &Value::Array(d.clone()).to_string(),
                        "supported values: \"All\"",
                    ));
                }
            }
        }
        if v.get("orphanDependents").and_then(Value::as_bool) == Some(true)
            && o.propagation.is_none()
        {
            o.propagation = Some("Orphan".into());
        }
    }
    if let Some(p) = ctx.query.get("propagationPolicy") {
        o.propagation = Some(p.to_string());
    }
    if let Some(g) = ctx.query.get("gracePeriodSeconds") {
        o.grace_period_seconds = Some(g.parse().map_err(|_| {
            ApiError::bad_request(format!("gracePeriodSeconds must be an integer, got {g:?}"))
        })?);
    }
    if let Some(p) = &o.propagation
        && !matches!(p.as_str(), "Orphan" | "Background" | "Foreground")
    {
        return Err(ApiError::invalid_options(
            "DeleteOptions",
            "propagationPolicy",
            p,
            "supported values: \"Foreground\", \"Background\", \"Orphan\", nil",
        ));
    }
    if let Some(g) = o.grace_period_seconds
        && g < 0
    {
        return Err(ApiError::invalid_options(
            "DeleteOptions",
            "gracePeriodSeconds",
            &g.to_string(),
            "must be greater than or equal to 0",
        ));
    }
    Ok(o)
}

pub async fn delete(ctx: &Ctx, body: Bytes) -> ApiResult<Response> {
    let opts = delete_options(ctx, &body)?;
    let name = ctx.name().to_string();
    let out = delete_one(ctx, &name, &opts).await?;
    Ok(match out {
        Deleted::Gone(stored, rv) if returns_deleted_object(&ctx.info) => {
            json_response(StatusCode::OK, render_for(&ctx.info, &stored, rv))
        }
        Deleted::Gone(_, _) => {
            let uid = String::new();
            value_response(
                StatusCode::OK,
                &json!({
                    "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                    "details": {"name": name, "group": ctx.info.group, "kind": ctx.info.plural, "uid": uid},
                }),
            )
        }
        Deleted::Pending(stored, rv) => {
            json_response(StatusCode::OK, render_for(&ctx.info, &stored, rv))
        }
    })
}

/// Kinds whose DELETE answers with the deleted object rather than a Status (as kube does).
fn returns_deleted_object(info: &ResourceInfo) -> bool {
    info.group.is_empty() && matches!(info.plural.as_str(), "pods" | "services" | "namespaces")
}

pub enum Deleted {
    /// Removed: its last state.
    Gone(Vec<u8>, u64),
    /// Waiting for finalizers: its state now.
    Pending(Vec<u8>, u64),
}

fn verb_of(opts: &DeleteOptions) -> String {
    format!(
        "delete;propagationPolicy={}",
        opts.propagation.as_deref().unwrap_or("Background")
    )
}

fn expect_of(cur: &StoredObject) -> Expect {
    Expect {
        position: Some(cur.position),
        uid: Some(cur.uid.clone()),
    }
}

pub async fn delete_one(ctx: &Ctx, name: &str, opts: &DeleteOptions) -> ApiResult<Deleted> {
    let mut review = Review::new(ctx, Operation::Delete, name, opts.dry_run);
    if let Some(p) = &opts.propagation {
        review.options["propagationPolicy"] = json!(p);
    }
    if let Some(g) = opts.grace_period_seconds {
        review.options["gracePeriodSeconds"] = json!(g);
    }
    for _ in 0..UPDATE_RETRIES_MAX {
        let cur = ctx
            .current(name)
            .await?
            .ok_or_else(|| ctx.not_found(name))?;
        if let Some(u) = &opts.precondition_uid
            && *u != cur.uid
        {
            return Err(ApiError::conflict(
                &ctx.info.group,
                &ctx.info.plural,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {u}, UID in object meta: {}",
                    cur.uid
                ),
            ));
        }
        if let Some(rv) = &opts.precondition_rv
            && *rv != cur.position.to_string()
        {
            return Err(ApiError::conflict(
                &ctx.info.group,
                &ctx.info.plural,
                name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    cur.position
                ),
            ));
        }
        let mut obj = decode_stored(&cur.object, cur.position.0)?;
        if ctx.target.subresource.is_none() {
            // (An eviction's delete was admitted as the eviction.)
            review.mutate(None, Some(&obj)).await?;
            review.validate(None, Some(&obj)).await?;
        }
        if obj
            .get("metadata")
            .and_then(|m| m.get("deletionTimestamp"))
            .is_none()
        {
            // Finalizers a delete adds, as kube-apiserver does: the kind's own cleanup (a
            // CRD's objects), and the garbage collector's — Orphan keeps the dependents (it
            // removes their ownerReferences first), Foreground deletes them before the owner.
            let gc = match opts.propagation.as_deref() {
                Some("Orphan") => Some("orphan"),
                Some("Foreground") => Some("foregroundDeletion"),
                _ => None,
            };
            for f in [ctx.info.delete_finalizer, gc].into_iter().flatten() {
                let list = meta_mut(&mut obj)
                    .entry("finalizers")
                    .or_insert_with(|| Value::Array(Vec::new()));
                if let Some(a) = list.as_array_mut()
                    && !a.iter().any(|x| x.as_str() == Some(f))
                {
                    a.push(Value::String(f.to_string()));
                }
            }
        }
        let verb = verb_of(opts);
        let expect = expect_of(&cur);
        // Pods on a node end gracefully: the object stays, marked, until the node agent has
        // stopped the containers and deletes it with grace 0 (kube's CheckGracefulDelete).
        if ctx.info.group.is_empty() && ctx.info.plural == "pods" {
            match strategy::pod_graceful_delete(&mut obj, opts.grace_period_seconds) {
                strategy::GracefulDelete::Immediate => {}
                strategy::GracefulDelete::Unchanged => {
                    return Ok(Deleted::Pending(cur.object, cur.position.0));
                }
                strategy::GracefulDelete::Marked => {
                    meta_mut(&mut obj).remove("resourceVersion");
                    if opts.dry_run {
                        return Ok(Deleted::Pending(encode_stored(&obj), cur.position.0));
                    }
                    match ctx
                        .append(
                            EventType::Modified,
                            name,
                            &obj,
                            &cur.uid,
                            expect_of(&cur),
                            &verb_of(opts),
                        )
                        .await
                    {
                        Ok(ev) => return Ok(Deleted::Pending(ev.object, ev.position.0)),
                        Err(e) if e.reason == "Conflict" => continue,
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        let (kind, pending) = if strategy::has_finalizers(&obj) {
            if obj
                .get("metadata")
                .and_then(|m| m.get("deletionTimestamp"))
                .is_some()
            {
                // Already being deleted: nothing more to do until the finalizers go.
                return Ok(Deleted::Pending(cur.object, cur.position.0));
            }
            let meta = meta_mut(&mut obj);
            meta.insert(
                "deletionTimestamp".into(),
                Value::String(strategy::now_rfc3339()),
            );
            meta.insert(
                "deletionGracePeriodSeconds".into(),
                json!(opts.grace_period_seconds.unwrap_or(0)),
            );
            if ctx.info.group.is_empty() && ctx.info.plural == "namespaces" {
                // The namespace controller empties it, then releases `spec.finalizers`.
                if let Some(st) = obj
                    .entry("status")
                    .or_insert_with(|| Value::Object(Map::new()))
                    .as_object_mut()
                {
                    st.insert("phase".into(), json!("Terminating"));
                }
            }
            (EventType::Modified, true)
        } else {
            (EventType::Deleted, false)
        };
        meta_mut(&mut obj).remove("resourceVersion");
        if opts.dry_run {
            let bytes = encode_stored(&obj);
            return Ok(if pending {
                Deleted::Pending(bytes, cur.position.0)
            } else {
                Deleted::Gone(bytes, cur.position.0)
            });
        }
        match ctx.append(kind, name, &obj, &cur.uid, expect, &verb).await {
            Ok(ev) if pending => return Ok(Deleted::Pending(ev.object, ev.position.0)),
            Ok(ev) => {
                crate::service_alloc::release_service(ctx, &obj).await;
                return Ok(Deleted::Gone(ev.object, ev.position.0));
            }
            Err(e) if e.reason == "Conflict" => continue,
            Err(e) if e.code == 404 => return Err(e),
            Err(e) => return Err(e),
        }
    }
    Err(ApiError::modified(&ctx.info.group, &ctx.info.plural, name))
}

pub async fn delete_collection(ctx: &Ctx, body: Bytes) -> ApiResult<Response> {
    let opts = delete_options(ctx, &body)?;
    let opts_list = crate::list::ListOptions::parse(ctx)?;
    let (items, _position) = crate::list::collect_all(ctx, &opts_list).await?;
    let mut out = Vec::with_capacity(items.len() * 256 + 128);
    out.extend_from_slice(
        format!(
            "{{\"kind\":\"{}\",\"apiVersion\":\"{}\",\"metadata\":{{}},\"items\":[",
            ctx.info.list_kind(),
            ctx.info.api_version()
        )
        .as_bytes(),
    );
    let mut first = true;
    for item in items {
        match delete_one(ctx, &item.key.name, &opts).await {
            Ok(Deleted::Gone(b, rv) | Deleted::Pending(b, rv)) => {
                if !first {
                    out.push(b',');
                }
                first = false;
                crate::object::render_into_as(
                    &mut out,
                    &b,
                    rv,
                    ctx.info.served_api_version().as_deref(),
                );
            }
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    out.extend_from_slice(b"]}");
    Ok(json_response(StatusCode::OK, out))
}
