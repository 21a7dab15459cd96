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

    /// After a restore: positions between the restored head and `--above` answer 410 and
    /// new positions start above it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_fence_answers_410_inside_it_and_new_positions_start_above_it() {
        let Some(kv) = fresh_fdb().await else {
            println!("skipped: {SKIP}");
            return;
        };
        tokio::time::timeout(std::time::Duration::from_secs(120), async {
            let log = logbook_store::EventLog::open(kv, logbook_store::LogConfig { partitions: 4 })
                .await
                .expect("open log");
            let req = |kind, name: &str, body: &[u8]| logbook_store::AppendRequest {
                key: logbook_store::ObjectKey::new("pods", "ns", name),
                kind,
                object: body.to_vec(),
                uid: format!("uid-{name}"),
                expect: Default::default(),
                actor: Default::default(),
                verb: "create".into(),
                request_id: format!("req-{name}-{}", body.len()),
            };
            let first = log
                .append(&req(logbook_store::EventType::Added, "a", b"1"))
                .await
                .expect("append");
            // "Clients may hold positions up to ~10 s of cluster versions above the head."
            let above = logbook_store::Position(first.position.0 + (10_000_000u64 << 16));
            let (after, up_to) = log.fence(above).await.expect("fence").expect("a range");
            assert_eq!((after, up_to), (first.position, above));
            let inside = logbook_store::Position(first.position.0 + 1);
            let key = logbook_store::ObjectKey::new("pods", "ns", "a");
            assert!(matches!(
                log.get_as_of(&key, inside).await,
                Err(logbook_store::Error::Compacted { .. })
            ));
            assert!(
                log.get_as_of(&key, first.position)
                    .await
                    .expect("below")
                    .is_some()
            );
            let next = log
                .append(&req(logbook_store::EventType::Added, "b", b"2"))
                .await
                .expect("append after the fence");
            assert!(next.position > above, "{} > {above}", next.position);
        })
        .await
        .expect("finished in 120 s");
    }
}

#[cfg(not(feature = "fdb"))]
#[test]
fn the_foundationdb_conformance_suite_needs_the_fdb_feature() {
    println!(
        "skipped: the FoundationDB conformance suite is built only with `--features fdb` \
         (and runs only when FDB_CLUSTER_FILE names a cluster)"
    );
}
