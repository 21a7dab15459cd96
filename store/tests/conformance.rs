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
