//! Helpers shared by the store's integration tests.
#![allow(dead_code)] // each test binary uses its own subset

use std::sync::Arc;

use logbook_store::kv::Kv;
use logbook_store::{
    Actor, AppendRequest, Embedded, EmbeddedConfig, EventLog, EventType, Expect, LogConfig,
    ObjectKey,
};

/// A fresh store for one test. The backend is the embedded one unless
/// `LOGBOOK_TEST_STORE=fdb` (a build with `--features fdb` and `FDB_CLUSTER_FILE` naming a
/// cluster): then every test that uses [`fresh`] runs against FoundationDB, each in its own
/// directory. `LOGBOOK_TEST_LOG_PARTITIONS` sets the log's partition count (embedded
/// default 1, FoundationDB default 4), so the partition merge is exercised on both.
pub struct Store {
    /// The embedded store's directory (none on FoundationDB).
    pub dir: Option<tempfile::TempDir>,
    pub kv: Arc<dyn Kv>,
    pub log: EventLog,
}

impl Store {
    /// Appends one pod event built by [`req`]; panics if the store refuses it.
    pub async fn write(
        &self,
        kind: EventType,
        ns: &str,
        name: &str,
        object: &[u8],
    ) -> logbook_store::Event {
        self.log
            .append(&req(kind, ns, name, object))
            .await
            .expect("append")
    }
}

pub async fn open_in(dir: &std::path::Path) -> (Embedded, EventLog) {
    let kv = Embedded::open(EmbeddedConfig::new(dir)).expect("open embedded store");
    let log = EventLog::open(Arc::new(kv.clone()) as Arc<dyn Kv>, log_config(1))
        .await
        .expect("open log");
    (kv, log)
}

fn log_config(default_partitions: u16) -> LogConfig {
    let partitions = std::env::var("LOGBOOK_TEST_LOG_PARTITIONS")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(default_partitions);
    LogConfig { partitions }
}

pub async fn fresh() -> Store {
    if std::env::var("LOGBOOK_TEST_STORE").as_deref() == Ok("fdb") {
        return fresh_fdb().await;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (kv, log) = open_in(dir.path()).await;
    Store {
        dir: Some(dir),
        kv: Arc::new(kv),
        log,
    }
}

#[cfg(feature = "fdb")]
async fn fresh_fdb() -> Store {
    use logbook_store::kv::fdb::{Fdb, FdbConfig};
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let name = format!(
        "test-{}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let cluster_file = std::env::var_os("FDB_CLUSTER_FILE").map(std::path::PathBuf::from);
    let kv = Fdb::open(FdbConfig::new(cluster_file, name))
        .await
        .expect("open the FoundationDB store (is FDB_CLUSTER_FILE right?)");
    let kv: Arc<dyn Kv> = Arc::new(kv);
    let log = EventLog::open(kv.clone(), log_config(4))
        .await
        .expect("open log");
    Store { dir: None, kv, log }
}

#[cfg(not(feature = "fdb"))]
async fn fresh_fdb() -> Store {
    panic!("LOGBOOK_TEST_STORE=fdb needs a build with `--features fdb`")
}

pub fn req(kind: EventType, ns: &str, name: &str, object: &[u8]) -> AppendRequest {
    AppendRequest {
        key: ObjectKey::new("pods", ns, name),
        kind,
        object: object.to_vec(),
        uid: format!("uid-{ns}-{name}"),
        expect: Expect::default(),
        actor: Actor {
            user: "tester".into(),
            groups: vec!["system:masters".into()],
            ..Default::default()
        },
        verb: match kind {
            EventType::Added => "create",
            EventType::Modified => "update",
            EventType::Deleted => "delete",
        }
        .into(),
        request_id: format!("req-{name}"),
    }
}
