//! The controller runtime, in kube-runtime's shape: informers (list+watch → cache →
//! handlers) feed a work queue of object keys; workers take keys and call a reconciler,
//! which answers with an [`Action`]; failures are retried with per-key back-off.

pub mod adopt;
pub mod expectations;
pub mod index;
pub mod informer;
pub mod leader;
pub mod queue;

use std::sync::Arc;
use std::time::Duration;

pub use index::{OwnerIndex, controller_of};
pub use informer::{Informer, key_of};
pub use queue::WorkQueue;

/// What a reconcile asks for next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing until the object or something it watches changes.
    Done,
    /// Check again after this long (e.g. when a pod becomes available after minReadySeconds).
    RequeueAfter(Duration),
}

/// A reconcile failure: the key is retried with back-off.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Other(String),
}

impl ReconcileError {
    /// The API's status code, when the failure is an API error.
    pub fn code(&self) -> Option<u16> {
        match self {
            ReconcileError::Kube(kube::Error::Api(s)) => Some(s.code),
            _ => None,
        }
    }
}

#[async_trait::async_trait]
pub trait Reconciler: Send + Sync + 'static {
    /// The controller's name (logs).
    fn name(&self) -> &'static str;
    /// Brings the object with this key (`namespace/name` or `name`) to its desired state.
    async fn reconcile(&self, key: &str) -> Result<Action, ReconcileError>;
}

/// Runs `workers` workers over `queue` until it is shut down.
pub fn spawn_workers<R: Reconciler>(queue: Arc<WorkQueue>, reconciler: Arc<R>, workers: usize) {
    for _ in 0..workers.max(1) {
        let q = Arc::clone(&queue);
        let r = Arc::clone(&reconciler);
        tokio::spawn(async move {
            while let Some(key) = q.get().await {
                match r.reconcile(&key).await {
                    Ok(Action::Done) => q.forget(&key),
                    Ok(Action::RequeueAfter(d)) => {
                        q.forget(&key);
                        q.add_after(&key, d);
                    }
                    Err(e) => {
                        // 409s are ordinary (a stale cache); the retry sees the newer object.
                        if e.code() == Some(409) {
                            tracing::debug!(controller = r.name(), %key, "conflict: {e}");
                        } else {
                            tracing::warn!(controller = r.name(), %key, "reconcile failed: {e}");
                        }
                        q.add_rate_limited(&key);
                    }
                }
                q.done(&key);
            }
        });
    }
}
