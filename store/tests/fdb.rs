//! The backend conformance suite against FoundationDB: runs when the store is built with
//! `--features fdb` and `FDB_CLUSTER_FILE` names a reachable cluster; otherwise every test
//! prints a skip line and passes. The log, watch and property tests run against
//! FoundationDB too with `LOGBOOK_TEST_STORE=fdb` (see docs/fdb.md, "Testing against a
//! cluster", for the one command).

#[cfg(feature = "fdb")]
mod on_fdb {
    use std::sync::Arc;

    use logbook_store::kv::Kv;
    use logbook_store::kv::fdb::{Fdb, FdbConfig};

    const SKIP: &str = "FDB_CLUSTER_FILE is not set: no FoundationDB cluster to test against";

    /// A fresh directory in the cluster per test, or `None` without a cluster file.
    async fn fresh_fdb() -> Option<Arc<dyn Kv>> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let cluster_file = std::env::var_os("FDB_CLUSTER_FILE")?;
        let name = format!(
            "conformance-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let kv = Fdb::open(FdbConfig::new(Some(cluster_file.into()), name))
            .await
            .expect("open the FoundationDB store named by FDB_CLUSTER_FILE");
        // A directory left by an earlier run of the same pid and number starts empty.
        kv.destroy().await.expect("clear the test directory");
        Some(Arc::new(kv) as Arc<dyn Kv>)
    }

    logbook_store::kv_conformance_tests!(optional fresh_fdb(), SKIP);
}

#[cfg(not(feature = "fdb"))]
#[test]
fn the_foundationdb_conformance_suite_needs_the_fdb_feature() {
    println!(
        "skipped: the FoundationDB conformance suite is built only with `--features fdb` \
         (and runs only when FDB_CLUSTER_FILE names a cluster)"
    );
}
