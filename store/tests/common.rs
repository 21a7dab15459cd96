//! Helpers shared by the store's integration tests.
#![allow(dead_code)] // each test binary uses its own subset

use std::sync::Arc;

use logbook_store::kv::Kv;
use logbook_store::{
    Actor, AppendRequest, Embedded, EmbeddedConfig, EventLog, EventType, Expect, LogConfig,
    ObjectKey,
};

pub struct Store {
    pub dir: tempfile::TempDir,
    pub kv: Embedded,
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
    let log = EventLog::open(Arc::new(kv.clone()) as Arc<dyn Kv>, LogConfig::default())
        .await
        .expect("open log");
    (kv, log)
}

pub async fn fresh() -> Store {
    let dir = tempfile::tempdir().expect("tempdir");
    let (kv, log) = open_in(dir.path()).await;
    Store { dir, kv, log }
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
