//! Field ownership on every write: the request side of `logbook_schema::ssa`.
//! - every create, update and patch records what its field manager changed in
//!   `metadata.managedFields` (operation `Update`);
//! - a server-side apply (`application/apply-patch+yaml`) merges the applied configuration
//!   with the live object, answering 409 with `FieldManagerConflict` causes when it would
//!   change fields another manager owns (unless `force=true`).
//!
//! Type information comes from the kind's OpenAPI definition (built-ins) or its CRD schema.

use logbook_schema::registry::ResourceInfo;
use logbook_schema::ssa::{
    self, ApplyError, Deduced, FieldSet, OpenApiSchema, Path, Schema, Writer,
};
use serde_json::{Map, Value};

use crate::error::{ApiError, ApiResult};
use crate::handlers::Ctx;
use crate::strategy::now_rfc3339;

/// The type information of a resource, borrowed from its registry entry.
fn with_schema<T>(info: &ResourceInfo, f: impl FnOnce(&dyn Schema) -> T) -> T {
    if let Some(c) = &info.custom {
        return match &c.schema {
            Some(s) => f(&OpenApiSchema::crd(s)),
            None => f(&Deduced),
        };
    }
    match OpenApiSchema::builtin(&info.group, &info.version, &info.kind) {
        Some(s) => f(&s),
        None => f(&Deduced),
    }
}

/// The fields a write may not own: `status` on the main resource of a kind with a status
/// subresource, `spec` through `/status` (kube's reset fields).
fn ignored(info: &ResourceInfo, subresource: Option<&str>) -> Option<FieldSet> {
    match subresource {
        Some("status") => Some(FieldSet::from_paths([&Path::fields(&["spec"])])),
        None if info.status_subresource => Some(FieldSet::from_paths([&Path::fields(&["status"])])),
        _ => None,
    }
}

/// Records a non-apply write's changes in `new`'s `managedFields`.
pub fn track_update(
    ctx: &Ctx,
    manager: &str,
    old: Option<&Map<String, Value>>,
    new: &mut Map<String, Value>,
) {
    let now = now_rfc3339();
    let api_version = ctx.info.api_version();
    let ignored = ignored(&ctx.info, ctx.target.subresource.as_deref());
    let writer = Writer {
        manager,
        api_version: &api_version,
        subresource: ctx.target.subresource.as_deref(),
        now: &now,
        ignored: ignored.as_ref(),
    };
    let old_v = old.map(|o| Value::Object(o.clone()));
    let new_v = Value::Object(std::mem::take(new));
    let tracked = with_schema(&ctx.info, |schema| {
        ssa::update(old_v.as_ref(), &new_v, &writer, schema)
    });
    *new = match tracked {
        Value::Object(m) => m,
        _ => match new_v {
            Value::Object(m) => m,
            _ => Map::new(),
        },
    };
}

/// A server-side apply of `applied` onto `live` (`None`: the apply creates the object).
///
/// # Errors
/// 409 Conflict with `FieldManagerConflict` causes; 400 for a configuration of another
/// version or kind; 500 when the objects cannot be merged (as kube-apiserver answers).
pub fn apply(
    ctx: &Ctx,
    manager: &str,
    live: Option<&Map<String, Value>>,
    applied: &Value,
    force: bool,
) -> ApiResult<Map<String, Value>> {
    if let Some(kind) = applied.get("kind").and_then(Value::as_str)
        && kind != ctx.info.kind
    {
        return Err(ApiError::bad_request(format!(
            "Incorrect kind specified in apply patch. Specified patch kind: {kind}, expected: {}",
            ctx.info.kind
        )));
    }
    let now = now_rfc3339();
    let api_version = ctx.info.api_version();
    let ignored = ignored(&ctx.info, ctx.target.subresource.as_deref());
    let writer = Writer {
        manager,
        api_version: &api_version,
        subresource: ctx.target.subresource.as_deref(),
        now: &now,
        ignored: ignored.as_ref(),
    };
    let live_v = live.map(|o| Value::Object(o.clone()));
    let merged = with_schema(&ctx.info, |schema| {
        ssa::apply(live_v.as_ref(), applied, &writer, force, schema)
    });
    match merged {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::internal(
            "server-side apply produced a non-object",
        )),
        Err(ApplyError::Conflicts(c)) => {
            let status = c.status();
            let mut e = ApiError::new(409, "Conflict", c.message());
            e.details = status.get("details").cloned();
            Err(e)
        }
        Err(ApplyError::BadRequest(m)) => Err(ApiError::bad_request(m)),
        Err(ApplyError::Internal(m)) => Err(ApiError::internal(m)),
    }
}
