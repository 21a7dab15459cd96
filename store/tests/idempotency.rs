//! Appends are idempotent under a commit whose outcome is unknown (FoundationDB's
//! `commit_unknown_result`): the retry finds the event the first attempt wrote instead of
//! writing it twice, and writes it when the first attempt did not land. The faults are
//! injected by a wrapper around the real embedded backend that reports `CommitUnknown`
//! after committing (or instead of committing) one writing transaction.

mod common;

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use logbook_store::kv::{AtomicOp, Committed, KeyWatch, Kv, RangePage, RangeRequest, Transaction};
use logbook_store::{Embedded, EmbeddedConfig, Error, EventLog, EventType, LogConfig, ObjectKey};

#[derive(Clone, Copy, Debug)]
enum Fault {
    /// The commit happens; the caller hears "unknown".
    CommittedButUnknown,
    /// The commit does not happen; the caller hears "unknown".
    LostAndUnknown,
}

struct Faulty {
    inner: Embedded,
    next_write: Arc<Mutex<Option<Fault>>>,
}

struct FaultyTx {
    inner: Box<dyn Transaction>,
    wrote: bool,
    next_write: Arc<Mutex<Option<Fault>>>,
}

#[async_trait]
impl Kv for Faulty {
    async fn begin(&self) -> logbook_store::Result<Box<dyn Transaction>> {
        Ok(Box::new(FaultyTx {
            inner: self.inner.begin().await?,
            wrote: false,
            next_write: self.next_write.clone(),
        }))
    }
    async fn watch(&self, key: &[u8]) -> logbook_store::Result<KeyWatch> {
        self.inner.watch(key).await
    }
    fn backend_name(&self) -> &'static str {
        "faulty-embedded"
    }
}

#[async_trait]
impl Transaction for FaultyTx {
    fn read_version(&self) -> u64 {
        self.inner.read_version()
    }
    async fn get(&mut self, key: &[u8], snapshot: bool) -> logbook_store::Result<Option<Vec<u8>>> {
        self.inner.get(key, snapshot).await
    }
    async fn get_range(&mut self, req: &RangeRequest) -> logbook_store::Result<RangePage> {
        self.inner.get_range(req).await
    }
    fn set(&mut self, key: &[u8], value: &[u8]) {
        self.wrote = true;
        self.inner.set(key, value);
    }
    fn clear(&mut self, key: &[u8]) {
        self.wrote = true;
        self.inner.clear(key);
    }
    fn clear_range(&mut self, begin: &[u8], end: &[u8]) {
        self.wrote = true;
        self.inner.clear_range(begin, end);
    }
    fn atomic_op(&mut self, key: &[u8], param: &[u8], op: AtomicOp) {
        self.wrote = true;
        self.inner.atomic_op(key, param, op);
    }
    fn set_versionstamped_key(&mut self, key: &[u8], offset: usize, value: &[u8]) {
        self.wrote = true;
        self.inner.set_versionstamped_key(key, offset, value);
    }
    fn set_versionstamped_value(&mut self, key: &[u8], value: &[u8], offset: usize) {
        self.wrote = true;
        self.inner.set_versionstamped_value(key, value, offset);
    }
    fn add_read_conflict_range(&mut self, begin: &[u8], end: &[u8]) {
        self.inner.add_read_conflict_range(begin, end);
    }
    async fn commit(self: Box<Self>) -> logbook_store::Result<Committed> {
        let fault = if self.wrote {
            self.next_write.lock().expect("lock").take()
        } else {
            None
        };
        match fault {
            None => self.inner.commit().await,
            Some(Fault::CommittedButUnknown) => {
                self.inner.commit().await?;
                Err(Error::CommitUnknown)
            }
            Some(Fault::LostAndUnknown) => Err(Error::CommitUnknown),
        }
    }
}

async fn faulty_log() -> (tempfile::TempDir, EventLog, Arc<Mutex<Option<Fault>>>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let inner = Embedded::open(EmbeddedConfig::new(dir.path())).expect("open");
    let next_write = Arc::new(Mutex::new(None));
    let kv = Faulty {
        inner,
        next_write: next_write.clone(),
    };
    let log = EventLog::open(Arc::new(kv) as Arc<dyn Kv>, LogConfig::default())
        .await
        .expect("open log");
    (dir, log, next_write)
}

async fn run_with(fault: Fault) {
    let (_dir, log, next_write) = faulty_log().await;
    let key = ObjectKey::new("pods", "ns", "p");
    log.append(&common::req(EventType::Added, "ns", "p", b"v1"))
        .await
        .expect("create");
    *next_write.lock().expect("lock") = Some(fault);
    let mut update = common::req(EventType::Modified, "ns", "p", b"v2");
    update.request_id = "req-unique-update".into();
    let current = log.get(&key).await.expect("get").expect("present");
    update.expect.position = Some(current.position);
    let written = log
        .append(&update)
        .await
        .expect("an unknown commit outcome is resolved, not reported");
    assert!(
        next_write.lock().expect("lock").is_none(),
        "the fault was injected"
    );
    let revisions = log.revisions(&key).await.expect("revisions");
    let objects: Vec<&[u8]> = revisions.iter().map(|e| e.object.as_slice()).collect();
    assert_eq!(
        objects,
        vec![b"v1".as_slice(), b"v2"],
        "the update is in the log exactly once ({fault:?})"
    );
    assert_eq!(revisions[1].position, written.position);
    assert_eq!(log.head().await.expect("head"), written.position);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_append_whose_first_commit_landed_returns_that_event_instead_of_writing_twice() {
    tokio::time::timeout(
        std::time::Duration::from_secs(30),
        run_with(Fault::CommittedButUnknown),
    )
    .await
    .expect("finished in 30 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_append_whose_first_commit_was_lost_writes_the_event_once() {
    tokio::time::timeout(
        std::time::Duration::from_secs(30),
        run_with(Fault::LostAndUnknown),
    )
    .await
    .expect("finished in 30 s");
}

/// Seals with a fresh "nonce" per call, as encryption does: a retry that sealed again would
/// write (and look for) different bytes.
#[derive(Debug, Default)]
struct FreshNonce(std::sync::atomic::AtomicU64);

impl logbook_store::ValueTransformer for FreshNonce {
    fn seal(
        &self,
        _key: &ObjectKey,
        plain: &[u8],
    ) -> Result<Vec<u8>, logbook_store::TransformError> {
        let n = self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut out = n.to_be_bytes().to_vec();
        out.extend_from_slice(plain);
        Ok(out)
    }

    fn open(
        &self,
        _key: &ObjectKey,
        stored: &[u8],
    ) -> Result<logbook_store::Opened, logbook_store::TransformError> {
        Ok(logbook_store::Opened {
            plain: stored.get(8..).unwrap_or_default().to_vec(),
            stale: false,
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_append_of_a_sealed_object_reuses_its_sealed_bytes_and_finds_the_landed_commit() {
    tokio::time::timeout(std::time::Duration::from_secs(30), async {
        let (_dir, log, next_write) = faulty_log().await;
        let mut t = logbook_store::ValueTransforms::new();
        t.insert("pods", Arc::new(FreshNonce::default()));
        let log = log.with_value_transforms(t);
        let key = ObjectKey::new("pods", "ns", "p");
        log.append(&common::req(EventType::Added, "ns", "p", b"v1"))
            .await
            .expect("create");
        *next_write.lock().expect("lock") = Some(Fault::CommittedButUnknown);
        let mut update = common::req(EventType::Modified, "ns", "p", b"v2");
        update.request_id = "req-sealed-update".into();
        update.expect.position = Some(log.get(&key).await.expect("get").expect("present").position);
        let written = log
            .append(&update)
            .await
            .expect("the landed commit is found: the retry compares the same sealed bytes");
        assert_eq!(written.object, b"v2");
        let revisions = log.revisions(&key).await.expect("revisions");
        let objects: Vec<&[u8]> = revisions.iter().map(|e| e.object.as_slice()).collect();
        assert_eq!(
            objects,
            vec![b"v1".as_slice(), b"v2"],
            "written exactly once"
        );
    })
    .await
    .expect("finished in 30 s");
}
