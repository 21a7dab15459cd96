//! NamespaceLifecycle: objects are created only in a namespace that exists and is not being
//! deleted, and the namespaces every cluster needs cannot be deleted (kube's plugin of the
//! same name, which also runs in the mutating phase so nothing else is called first).

use futures::future::BoxFuture;
use serde_json::Value;

use super::{Attributes, Operation, Plugin, forbidden};
use crate::error::{ApiError, ApiResult};

/// Namespaces that may not be deleted (kube's immortal namespaces).
pub const IMMORTAL_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public"];

pub struct NamespaceLifecycle;

impl Plugin for NamespaceLifecycle {
    fn name(&self) -> &'static str {
        "NamespaceLifecycle"
    }

    fn admit<'a>(&'a self, a: &'a mut Attributes<'_>) -> BoxFuture<'a, ApiResult<()>> {
        Box::pin(async move {
            if a.operation() == Operation::Delete
                && a.is_core("namespaces")
                && a.subresource().is_empty()
                && IMMORTAL_NAMESPACES.contains(&a.name())
            {
                return Err(forbidden(a, "this namespace may not be deleted"));
            }
            if a.operation() != Operation::Create
                || !a.ctx.info.namespaced
                || !a.subresource().is_empty()
            {
                return Ok(());
            }
            let ns = a.namespace().to_string();
            match a.namespace_object().await? {
                None => Err(ApiError::not_found("", "namespaces", &ns)),
                Some(obj) if terminating(&obj) => Err(ApiError::namespace_terminating(
                    a.group(),
                    a.resource(),
                    &ns,
                )),
                Some(_) => Ok(()),
            }
        })
    }
}

/// Whether a namespace object is being deleted.
pub fn terminating(ns: &serde_json::Map<String, Value>) -> bool {
    ns.get("metadata")
        .and_then(|m| m.get("deletionTimestamp"))
        .is_some_and(|t| !t.is_null())
}
