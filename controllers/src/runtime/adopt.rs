//! Adoption: an owner claims the orphans its selector matches by adding itself as their
//! controller (the claim step of kube's `ControllerRefManager`).
//!
//! The patch carries the orphan's `uid` as a precondition, so a same-named object created
//! meanwhile is never claimed; 404, 409 and 422 mean the orphan went away or someone else
//! claimed it first, and are not errors.
//!
//! Callers must not act on their cache in the pass that adopted something: the cache does
//! not show the adopted objects as owned yet, and a controller that counted without them
//! would create replacements for objects it had just adopted. [`settle_after`] is the
//! `Action` such a pass returns; the adoption's own watch events requeue the owner sooner.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use serde_json::json;

use super::{Action, ReconcileError};

/// How long a pass that adopted objects waits before looking again, if the adoption's own
/// watch events have not requeued the owner first (milliseconds).
pub const ADOPTION_RECHECK_MS: u64 = 1_000;

/// The next step after a pass that adopted something.
#[must_use]
pub fn settle_after() -> Action {
    Action::RequeueAfter(Duration::from_millis(ADOPTION_RECHECK_MS))
}

/// Makes `owner` the controller of each of `orphans` (the caller has checked they match its
/// selector and are not being deleted); returns the adopted objects as the API wrote them.
///
/// # Errors
/// API errors other than the orphan being gone, changed or claimed meanwhile.
pub async fn adopt<K>(
    api: &Api<K>,
    owner: &OwnerReference,
    orphans: impl IntoIterator<Item = Arc<K>>,
) -> Result<Vec<K>, ReconcileError>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let mut adopted = Vec::new();
    for o in orphans {
        let meta = o.meta();
        let mut refs = meta.owner_references.clone().unwrap_or_default();
        refs.retain(|r| r.uid != owner.uid);
        refs.push(owner.clone());
        let patch = json!({"metadata": {"ownerReferences": refs, "uid": meta.uid}});
        // A JSON merge patch replaces the whole list, which works for every kind (custom
        // resources have no strategic merge).
        match api
            .patch(
                meta.name.as_deref().unwrap_or(""),
                &PatchParams::default(),
                &Patch::Merge(patch),
            )
            .await
        {
            Ok(a) => adopted.push(a),
            Err(kube::Error::Api(s)) if matches!(s.code, 404 | 409 | 422) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(adopted)
}
