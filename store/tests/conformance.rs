//! The backend conformance suite, run against the embedded backend.

use std::sync::Arc;

use logbook_store::kv::Kv;
use logbook_store::{Embedded, EmbeddedConfig};

async fn fresh_embedded() -> Arc<dyn Kv> {
    // The directory is leaked on purpose: it must outlive the store the test holds.
    let dir = tempfile::tempdir().expect("tempdir").keep();
    Arc::new(Embedded::open(EmbeddedConfig::new(dir)).expect("open")) as Arc<dyn Kv>
}

logbook_store::kv_conformance_tests!(fresh_embedded());

/// The same suite with a checkpoint due after every batch, so that most commits and reads go
/// through the overlay a running checkpoint leaves (store/src/kv/embedded.rs).
mod during_checkpoints {
    use super::*;

    async fn checkpointing_embedded() -> Arc<dyn Kv> {
        let dir = tempfile::tempdir().expect("tempdir").keep();
        let mut cfg = EmbeddedConfig::new(dir);
        cfg.checkpoint_interval_ms = 0;
        Arc::new(Embedded::open(cfg).expect("open")) as Arc<dyn Kv>
    }

    logbook_store::kv_conformance_tests!(checkpointing_embedded());
}
