//! Value transformers: what the log stores for an object instead of its bytes, per resource.
//!
//! The store knows no kinds, so it does not decide what to encrypt: whoever opens the log
//! registers a [`ValueTransformer`] for a resource string (the binary registers its
//! encryption for `secrets`), and the log applies it at exactly two places:
//! - [`crate::EventLog::append`] seals the object once, before its retry loop, so the event,
//!   the write-ahead log, the database pages and every copy made later (compaction moves
//!   nothing but whole events) hold only the sealed bytes, and a retry after an unknown
//!   commit outcome compares the same sealed bytes;
//! - every public read of the log (get, list, the log and resource-log reads the watch hub
//!   uses, revisions, reads as of a position, change feeds) opens them.
//!
//! Internal paths that only move or check events (compaction, retention, checkpoints,
//! `verify`, which re-derives hashes from the stored bytes) never open them, so a value
//! whose key is gone can still be compacted away and verified.

use std::collections::HashMap;
use std::sync::Arc;

use crate::keys::ObjectKey;

/// Why a value could not be sealed or opened: a sentence for an operator, which must name
/// the key id involved and never contain the value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TransformError(pub String);

/// An object's bytes after [`ValueTransformer::open`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Opened {
    pub plain: Vec<u8>,
    /// The stored form is not what [`ValueTransformer::seal`] would write now (an older key,
    /// or no encryption): an unchanged update should still be written, which is how
    /// re-encryption rewrites objects.
    pub stale: bool,
}

/// Turns an object's bytes into their stored form and back. Implementations bind the stored
/// form to the object (`key`), so one object's stored bytes cannot be passed off as
/// another's.
pub trait ValueTransformer: Send + Sync + std::fmt::Debug {
    /// The stored form of `plain`, for object `key`.
    ///
    /// # Errors
    /// When the value cannot be sealed (e.g. no random nonce could be drawn).
    fn seal(&self, key: &ObjectKey, plain: &[u8]) -> Result<Vec<u8>, TransformError>;

    /// The object's bytes from their stored form.
    ///
    /// # Errors
    /// When the stored form names a key this transformer does not hold, or fails its
    /// authentication (altered, or sealed for another object). Never returns garbage.
    fn open(&self, key: &ObjectKey, stored: &[u8]) -> Result<Opened, TransformError>;
}

/// The transformers of a log, by the store's resource string (e.g. `secrets`). Resources
/// without one are stored as they are.
#[derive(Clone, Debug, Default)]
pub struct ValueTransforms {
    by_resource: HashMap<String, Arc<dyn ValueTransformer>>,
}

impl ValueTransforms {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `t` for every object of `resource` (replacing an earlier one).
    pub fn insert(&mut self, resource: impl Into<String>, t: Arc<dyn ValueTransformer>) {
        self.by_resource.insert(resource.into(), t);
    }

    pub fn is_empty(&self) -> bool {
        self.by_resource.is_empty()
    }

    /// The transformer of `resource`, if any.
    pub fn get(&self, resource: &str) -> Option<&Arc<dyn ValueTransformer>> {
        if self.by_resource.is_empty() {
            return None;
        }
        self.by_resource.get(resource)
    }

    /// The resources that have a transformer.
    pub fn resources(&self) -> impl Iterator<Item = &str> {
        self.by_resource.keys().map(String::as_str)
    }
}
