//! Owner indexes: which cached objects a controller owns, without scanning the cache.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Resource;

use super::informer::key_of;

/// The object's controlling owner reference, if it has one.
pub fn controller_of<K: Resource>(o: &K) -> Option<&OwnerReference> {
    o.meta()
        .owner_references
        .as_ref()?
        .iter()
        .find(|r| r.controller == Some(true))
}

/// Object keys by the uid of their controlling owner; objects without a controller are
/// filed under `orphans/<namespace>` (controllers adopt from there).
#[derive(Default)]
pub struct OwnerIndex {
    /// Keys are shared (`Arc<str>`): a ReplicaSet of 30,000 pods reads its whole set on
    /// every status computation.
    by_owner: Mutex<HashMap<String, HashSet<Arc<str>>>>,
}

fn slot<K: Resource>(o: &K) -> String {
    match controller_of(o) {
        Some(r) => r.uid.clone(),
        None => format!("orphans/{}", o.meta().namespace.as_deref().unwrap_or("")),
    }
}

impl OwnerIndex {
    /// Applies an informer change (wire it with `informer.on_change`).
    pub fn update<K: Resource>(&self, old: Option<&K>, new: Option<&K>) {
        let mut m = match self.by_owner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if let Some(o) = old {
            let s = slot(o);
            if let Some(set) = m.get_mut(&s) {
                set.remove(key_of(o).as_str());
                if set.is_empty() {
                    m.remove(&s);
                }
            }
        }
        if let Some(n) = new {
            m.entry(slot(n)).or_default().insert(Arc::from(key_of(n)));
        }
    }

    /// Keys of the objects controlled by the owner with this uid.
    pub fn owned_by(&self, uid: &str) -> Vec<Arc<str>> {
        let m = match self.by_owner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        m.get(uid)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Keys of the objects in `ns` that have no controller.
    pub fn orphans_in(&self, ns: &str) -> Vec<Arc<str>> {
        self.owned_by(&format!("orphans/{ns}"))
    }
}
