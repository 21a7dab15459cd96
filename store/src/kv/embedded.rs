//! The embedded backend: the [`Kv`] trait on redb, with optimistic concurrency and group commit.
//!
//! Shape:
//! - Reads run on redb MVCC read transactions; the committed version is stored in the same
//!   redb commit as the data, so a read transaction knows its read version exactly.
//! - Writes are buffered in the transaction and sent to one committer thread. The committer
//!   drains every request waiting in its bounded queue into one redb write transaction
//!   (group commit), checks each request's read-conflict ranges against the writes of every
//!   batch committed after its read version (FoundationDB's resolver, kept for
//!   [`EmbeddedConfig::conflict_window_ms`]), applies the survivors with their versionstamps,
//!   appends the batch's resolved mutations to the write-ahead log and fsyncs it, and only
//!   then commits the batch to redb (without an fsync) and answers the writers.
//! - A checkpoint (a durable redb commit) every [`EmbeddedConfig::checkpoint_interval_ms`]
//!   makes the redb file complete and empties the log; opening replays what the file lacks
//!   (see [`super::wal`]). redb commits are atomic (checksummed commit slots), so a crash
//!   leaves the last checkpoint plus the log.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::Write;
use std::ops::Bound;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{mpsc, oneshot};

use super::wal::{self, WalOp};
use super::{
    AtomicOp, Committed, KeyValue, KeyWatch, Kv, RangePage, RangeRequest, Transaction,
    apply_atomic, key_after,
};
use crate::error::{Error, Result};
use crate::position::{POSITION_VERSION_MAX, Versionstamp};

const KV: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");
const SYS: TableDefinition<&str, u64> = TableDefinition::new("sys");
const SYS_VERSION: &str = "committed_version";

/// The name of the database file inside the data directory.
pub const DATA_FILE_NAME: &str = "logbook.redb";
/// Written once the database file holds an initialised store: a data directory with this
/// marker and a missing or empty database file has lost its data, and must not be mistaken
/// for a new store.
pub const INIT_MARKER_FILE_NAME: &str = "logbook.initialized";
/// The write-ahead log inside the data directory (see [`super::wal`]).
pub const WAL_FILE_NAME: &str = "logbook.wal";

pub use super::{KV_KEY_BYTES_MAX, KV_VALUE_BYTES_MAX};

/// Tunables of the embedded backend. Every field is a bound with its unit in the name.
#[derive(Clone, Debug)]
pub struct EmbeddedConfig {
    /// The data directory; the database is `<dir>/logbook.redb`.
    pub dir: PathBuf,
    /// Most transactions one group commit applies (one redb commit, one fsync).
    pub commit_batch_txns_max: usize,
    /// Most transactions waiting for the committer; writers wait for room beyond it.
    pub commit_queue_txns_max: usize,
    /// How long committed write sets are kept for conflict checks; a transaction whose read
    /// version is older gets [`Error::TransactionTooOld`] (FoundationDB: 5 s).
    pub conflict_window_ms: u64,
    /// Most committed batches kept for conflict checks, whatever their age.
    pub conflict_history_batches_max: usize,
    /// redb's page cache, in bytes.
    pub cache_bytes: usize,
    /// Verify every page checksum on open (slower open; refuses a damaged file instead of
    /// trusting it). redb always verifies after an unclean shutdown.
    pub check_integrity_on_open: bool,
    /// The redb file is made durable (a checkpoint) at least this often; in between, group
    /// commits are durable through the write-ahead log alone.
    pub checkpoint_interval_ms: u64,
    /// A checkpoint is also taken once the write-ahead log holds this many bytes.
    pub checkpoint_wal_bytes_max: u64,
    /// A group commit stops taking transactions once their mutations add up to this many
    /// bytes (bounds one write-ahead record).
    pub commit_batch_bytes_max: usize,
}

impl EmbeddedConfig {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        EmbeddedConfig {
            dir: dir.into(),
            commit_batch_txns_max: 1024,
            commit_queue_txns_max: 8192,
            conflict_window_ms: 5_000,
            conflict_history_batches_max: 100_000,
            cache_bytes: 512 * 1024 * 1024,
            check_integrity_on_open: false,
            checkpoint_interval_ms: 250,
            checkpoint_wal_bytes_max: 256 * 1024 * 1024,
            commit_batch_bytes_max: 64 * 1024 * 1024,
        }
    }
}

enum Mutation {
    Set(Vec<u8>, Vec<u8>),
    Clear(Vec<u8>),
    ClearRange(Vec<u8>, Vec<u8>),
    Atomic(Vec<u8>, Vec<u8>, AtomicOp),
    VersionstampedKey(Vec<u8>, usize, Vec<u8>),
    VersionstampedValue(Vec<u8>, Vec<u8>, usize),
}

impl Mutation {
    fn bytes(&self) -> usize {
        match self {
            Mutation::Set(k, v) | Mutation::Atomic(k, v, _) | Mutation::ClearRange(k, v) => {
                k.len() + v.len()
            }
            Mutation::VersionstampedKey(k, _, v) | Mutation::VersionstampedValue(k, v, _) => {
                k.len() + v.len()
            }
            Mutation::Clear(k) => k.len(),
        }
    }
}

struct CommitRequest {
    read_version: u64,
    read_conflicts: Vec<(Vec<u8>, Vec<u8>)>,
    mutations: Vec<Mutation>,
    /// Key and value bytes of `mutations`, for the batch bound.
    bytes: usize,
    reply: oneshot::Sender<Result<Committed>>,
}

struct KeyWatcher {
    key: Vec<u8>,
    fire: oneshot::Sender<()>,
}

struct Shared {
    db: Arc<Db>,
    watchers: Mutex<Vec<KeyWatcher>>,
    failed: AtomicBool,
}

/// The embedded backend. Cheap to clone; the committer stops when the last clone is dropped.
#[derive(Clone)]
pub struct Embedded {
    shared: Arc<Shared>,
    commits: mpsc::Sender<CommitRequest>,
    committer: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
}

impl Embedded {
    /// Opens (or creates) the database in `cfg.dir`.
    ///
    /// # Errors
    /// [`Error::Corrupt`] when the file is damaged beyond what redb's crash recovery repairs;
    /// [`Error::Io`] when the directory cannot be used.
    pub fn open(cfg: EmbeddedConfig) -> Result<Self> {
        std::fs::create_dir_all(&cfg.dir)?;
        let path = cfg.dir.join(DATA_FILE_NAME);
        let marker = cfg.dir.join(INIT_MARKER_FILE_NAME);
        let file_len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if marker.exists() && file_len == 0 {
            return Err(Error::Corrupt {
                location: path.display().to_string(),
                detail:
                    "the data directory was initialised but its database file is missing or empty"
                        .into(),
            });
        }
        let db = Db(Some(guarded("opening the database file", || {
            open_database(&path, &cfg)
        })?));
        let wal_path = cfg.dir.join(WAL_FILE_NAME);
        let (version, wal) = guarded("replaying the write-ahead log", || {
            replay_wal(&db, &wal_path)
        })?;
        if !marker.exists() {
            std::fs::write(&marker, b"logbook store\n")?;
            std::fs::File::open(&marker)?.sync_all()?;
            std::fs::File::open(&cfg.dir)?.sync_all()?;
        }
        let shared = Arc::new(Shared {
            db: Arc::new(db),
            watchers: Mutex::new(Vec::new()),
            failed: AtomicBool::new(false),
        });
        let (tx, rx) = mpsc::channel(cfg.commit_queue_txns_max.max(1));
        let committer_shared = shared.clone();
        let handle = std::thread::Builder::new()
            .name("logbook-committer".into())
            .spawn(move || Committer::new(committer_shared, cfg, version, wal).run(rx))?;
        Ok(Embedded {
            shared,
            commits: tx,
            committer: Arc::new(Mutex::new(Some(handle))),
        })
    }

    /// The path of the database file for a data directory.
    pub fn data_file(dir: &Path) -> PathBuf {
        dir.join(DATA_FILE_NAME)
    }

    /// Stops the committer after the requests already queued, and waits for it. Other
    /// clones see [`Error::Closed`] afterwards.
    pub fn close(self) {
        let Embedded {
            shared,
            commits,
            committer,
        } = self;
        drop(commits);
        drop(shared);
        // Other clones may still hold senders; then the committer lives on with them.
        if let Ok(mut guard) = committer.lock()
            && Arc::strong_count(&committer) == 1
            && let Some(h) = guard.take()
        {
            let _ = h.join();
        }
    }

    fn read_snapshot(&self) -> Result<(redb::ReadTransaction, u64)> {
        guarded("starting a read", || self.read_snapshot_unguarded())
    }

    fn read_snapshot_unguarded(&self) -> Result<(redb::ReadTransaction, u64)> {
        let rtx = self.shared.db.begin_read().map_err(Error::backend)?;
        let version = {
            let sys = rtx.open_table(SYS).map_err(Error::backend)?;
            sys.get(SYS_VERSION)
                .map_err(Error::backend)?
                .map(|g| g.value())
                .unwrap_or(0)
        };
        Ok((rtx, version))
    }
}

/// Brings the redb file up to date with the write-ahead log: replays every record newer than
/// the file's committed version, makes the result durable and empties the log. Returns the
/// committed version and the log, open for appending.
fn replay_wal(db: &redb::Database, wal_path: &Path) -> Result<(u64, std::fs::File)> {
    let location = wal_path.display().to_string();
    let bytes = match std::fs::read(wal_path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    let contents = wal::read(&location, &bytes)?;
    if contents.valid_bytes < bytes.len() as u64 {
        tracing::warn!(
            wal = %location,
            dropped_bytes = bytes.len() as u64 - contents.valid_bytes,
            "dropping the torn tail of the write-ahead log (a write cut short by a crash, never acknowledged)"
        );
    }
    let mut wtx = db.begin_write().map_err(Error::backend)?;
    wtx.set_durability(redb::Durability::Immediate)
        .map_err(Error::backend)?;
    wtx.set_quick_repair(true);
    let mut replayed = 0usize;
    let version = {
        let mut table = wtx.open_table(KV).map_err(Error::backend)?;
        let mut sys = wtx.open_table(SYS).map_err(Error::backend)?;
        let mut version = sys
            .get(SYS_VERSION)
            .map_err(Error::backend)?
            .map(|g| g.value())
            .unwrap_or(0);
        if let Some((first, _)) = contents.records.first()
            && *first > version + 1
        {
            return Err(Error::Corrupt {
                location,
                detail: format!(
                    "the log starts at version {first} but the data file ends at {version}: versions in between are lost"
                ),
            });
        }
        for (v, ops) in &contents.records {
            if *v <= version {
                continue;
            }
            for op in ops {
                apply_op(&mut table, op)?;
            }
            version = *v;
            replayed += 1;
        }
        sys.insert(SYS_VERSION, version).map_err(Error::backend)?;
        version
    };
    wtx.commit().map_err(Error::backend)?;
    if replayed > 0 {
        tracing::info!(records = replayed, version, "replayed the write-ahead log");
    }
    let wal = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(wal_path)?;
    wal.set_len(0)?;
    wal.sync_all()?;
    Ok((version, wal))
}

/// A key and value copied out of redb.
type OwnedEntry = (Vec<u8>, Vec<u8>);
/// One item of a redb range over the KV table.
type RedbEntry<'a> = std::result::Result<
    (
        redb::AccessGuard<'a, &'static [u8]>,
        redb::AccessGuard<'a, &'static [u8]>,
    ),
    redb::StorageError,
>;

/// Runs a redb call, turning a panic into [`Error::Corrupt`]. redb trusts the pages it reads
/// (it checks their checksums only when repairing), so a damaged page can make it index out
/// of bounds; a damaged file must give the caller an error, never take the server down.
/// The redb database, dropped under `catch_unwind`: redb's close runs a last write, and on a
/// file damaged enough to have panicked inside [`guarded`] that write panics again (a
/// poisoned lock) — which, from a destructor, would take the process down instead of
/// leaving the damage reported as [`Error::Corrupt`].
struct Db(Option<redb::Database>);

impl std::ops::Deref for Db {
    type Target = redb::Database;
    fn deref(&self) -> &redb::Database {
        match &self.0 {
            Some(db) => db,
            None => unreachable!("the database is taken only by drop"),
        }
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Some(db) = self.0.take()
            && std::panic::catch_unwind(AssertUnwindSafe(move || drop(db))).is_err()
        {
            tracing::error!("closing the damaged database file panicked inside redb; ignored");
        }
    }
}

fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    match std::panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(panic) => {
            let detail = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("panic");
            Err(Error::Corrupt {
                location: format!("the database file, while {what}"),
                detail: format!("damaged data: {detail}"),
            })
        }
    }
}

fn open_database(path: &Path, cfg: &EmbeddedConfig) -> Result<redb::Database> {
    let mut builder = redb::Builder::new();
    builder
        .set_cache_size(cfg.cache_bytes)
        .set_check_integrity_on_open(cfg.check_integrity_on_open);
    builder.set_repair_callback(|session| {
        tracing::warn!(
            progress = session.progress(),
            "repairing the database after an unclean shutdown"
        );
    });
    // redb may panic on some damaged files instead of returning Corrupted; a damaged file
    // must become an error that names the file, never a crash of the server.
    let opened = std::panic::catch_unwind(AssertUnwindSafe(|| builder.create(path)));
    match opened {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(e)) => Err(Error::Corrupt {
            location: path.display().to_string(),
            detail: e.to_string(),
        }),
        Err(_) => Err(Error::Corrupt {
            location: path.display().to_string(),
            detail: "the database file is damaged (redb refused to open it)".into(),
        }),
    }
}

#[async_trait]
impl Kv for Embedded {
    async fn begin(&self) -> Result<Box<dyn Transaction>> {
        let (rtx, read_version) = self.read_snapshot()?;
        let table = rtx.open_table(KV).map_err(Error::backend)?;
        Ok(Box::new(EmbeddedTx {
            commits: self.commits.clone(),
            _rtx: rtx,
            table,
            read_version,
            overlay: BTreeMap::new(),
            cleared: Vec::new(),
            mutations: Vec::new(),
            read_conflicts: Vec::new(),
            invalid: None,
        }))
    }

    async fn watch(&self, key: &[u8]) -> Result<KeyWatch> {
        let (tx, rx) = oneshot::channel();
        {
            let mut w = self.shared.watchers.lock().map_err(|_| Error::Closed)?;
            // Anything committed after this point fires the watch (the committer takes this
            // lock after each commit); a commit racing with registration fires it spuriously,
            // which FoundationDB allows too: callers re-read after a watch fires.
            w.retain(|w| !w.fire.is_closed());
            w.push(KeyWatcher {
                key: key.to_vec(),
                fire: tx,
            });
        }
        Ok(Box::pin(async move { rx.await.map_err(|_| Error::Closed) }))
    }

    fn backend_name(&self) -> &'static str {
        "embedded"
    }
}

#[derive(Clone)]
enum Overlay {
    Value(Vec<u8>),
    Cleared,
    Atomic(Vec<(Vec<u8>, AtomicOp)>),
}

struct EmbeddedTx {
    commits: mpsc::Sender<CommitRequest>,
    _rtx: redb::ReadTransaction,
    table: redb::ReadOnlyTable<&'static [u8], &'static [u8]>,
    read_version: u64,
    overlay: BTreeMap<Vec<u8>, Overlay>,
    cleared: Vec<(Vec<u8>, Vec<u8>)>,
    mutations: Vec<Mutation>,
    read_conflicts: Vec<(Vec<u8>, Vec<u8>)>,
    invalid: Option<Error>,
}

impl EmbeddedTx {
    /// A range read merged with this transaction's own writes (no conflict bookkeeping).
    fn read_range(&self, req: &RangeRequest) -> Result<RangePage> {
        let mut page = RangePage::default();
        if req.begin >= req.end {
            return Ok(page);
        }
        let limit = if req.limit == 0 {
            usize::MAX
        } else {
            req.limit
        };
        let range = (
            Bound::Included(req.begin.as_slice()),
            Bound::Excluded(req.end.as_slice()),
        );
        let db_range = self.table.range::<&[u8]>(range).map_err(Error::backend)?;
        let mut db_iter: Box<dyn Iterator<Item = Result<OwnedEntry>>> = {
            let map = |r: RedbEntry<'_>| {
                r.map(|(k, v)| (k.value().to_vec(), v.value().to_vec()))
                    .map_err(Error::backend)
            };
            if req.reverse {
                Box::new(db_range.rev().map(map))
            } else {
                Box::new(db_range.map(map))
            }
        };
        let ov_range = self.overlay.range::<[u8], _>((
            Bound::Included(req.begin.as_slice()),
            Bound::Excluded(req.end.as_slice()),
        ));
        let ov_keys: Vec<Vec<u8>> = if req.reverse {
            ov_range.rev().map(|(k, _)| k.clone()).collect()
        } else {
            ov_range.map(|(k, _)| k.clone()).collect()
        };
        let mut ov_iter = ov_keys.into_iter().peekable();
        let mut db_next = db_iter.next().transpose()?;
        let before = |a: &[u8], b: &[u8]| if req.reverse { a > b } else { a < b };
        while page.kvs.len() < limit {
            let take_db = match (&db_next, ov_iter.peek()) {
                (None, None) => break,
                (Some(_), None) => Some(true),
                (None, Some(_)) => Some(false),
                (Some((dk, _)), Some(ok)) if dk == ok => None,
                (Some((dk, _)), Some(ok)) => Some(before(dk, ok)),
            };
            let (key, value) = match take_db {
                Some(true) => {
                    let Some((k, v)) = db_next.take() else { break };
                    db_next = db_iter.next().transpose()?;
                    let resolved = if self.in_cleared_range(&k) {
                        None
                    } else {
                        Some(v)
                    };
                    (k, resolved)
                }
                Some(false) => {
                    let Some(k) = ov_iter.next() else { break };
                    let v = self.resolve(&k, None);
                    (k, v)
                }
                None => {
                    let Some((k, v)) = db_next.take() else { break };
                    db_next = db_iter.next().transpose()?;
                    ov_iter.next();
                    let resolved = self.resolve(&k, Some(v));
                    (k, resolved)
                }
            };
            if let Some(value) = value {
                page.kvs.push(KeyValue { key, value });
            }
        }
        if page.kvs.len() >= limit {
            page.more = db_next.is_some() || ov_iter.peek().is_some();
        }
        Ok(page)
    }

    fn in_cleared_range(&self, key: &[u8]) -> bool {
        self.cleared
            .iter()
            .any(|(b, e)| b.as_slice() <= key && key < e.as_slice())
    }

    fn base_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        guarded("reading a key", || {
            Ok(self
                .table
                .get(key)
                .map_err(Error::backend)?
                .map(|g| g.value().to_vec()))
        })
    }

    /// The value of `key` as this transaction sees it, given its stored value `base`.
    fn resolve(&self, key: &[u8], base: Option<Vec<u8>>) -> Option<Vec<u8>> {
        match self.overlay.get(key) {
            Some(Overlay::Value(v)) => Some(v.clone()),
            Some(Overlay::Cleared) => None,
            Some(Overlay::Atomic(ops)) => {
                let mut v = if self.in_cleared_range(key) {
                    None
                } else {
                    base
                };
                for (param, op) in ops {
                    v = Some(apply_atomic(v.as_deref(), param, *op));
                }
                v
            }
            None if self.in_cleared_range(key) => None,
            None => base,
        }
    }

    fn check_key(&mut self, key: &[u8]) {
        if key.len() > KV_KEY_BYTES_MAX && self.invalid.is_none() {
            self.invalid = Some(Error::TooLarge {
                what: "key",
                size: key.len(),
                limit: KV_KEY_BYTES_MAX,
            });
        }
    }

    fn check_value(&mut self, value: &[u8]) {
        if value.len() > KV_VALUE_BYTES_MAX && self.invalid.is_none() {
            self.invalid = Some(Error::TooLarge {
                what: "value",
                size: value.len(),
                limit: KV_VALUE_BYTES_MAX,
            });
        }
    }
}

#[async_trait]
impl Transaction for EmbeddedTx {
    fn read_version(&self) -> u64 {
        self.read_version
    }

    async fn get(&mut self, key: &[u8], snapshot: bool) -> Result<Option<Vec<u8>>> {
        if !snapshot {
            self.read_conflicts.push((key.to_vec(), key_after(key)));
        }
        let base = match self.overlay.get(key) {
            Some(Overlay::Value(_)) | Some(Overlay::Cleared) => None,
            _ => self.base_get(key)?,
        };
        Ok(self.resolve(key, base))
    }

    async fn get_range(&mut self, req: &RangeRequest) -> Result<RangePage> {
        let page = guarded("reading a range", || self.read_range(req))?;
        if !req.snapshot {
            let conflict = match (page.more, page.kvs.last()) {
                (true, Some(last)) if req.reverse => (last.key.clone(), req.end.clone()),
                (true, Some(last)) => (req.begin.clone(), key_after(&last.key)),
                _ => (req.begin.clone(), req.end.clone()),
            };
            self.read_conflicts.push(conflict);
        }
        Ok(page)
    }

    fn set(&mut self, key: &[u8], value: &[u8]) {
        self.check_key(key);
        self.check_value(value);
        self.overlay
            .insert(key.to_vec(), Overlay::Value(value.to_vec()));
        self.mutations
            .push(Mutation::Set(key.to_vec(), value.to_vec()));
    }

    fn clear(&mut self, key: &[u8]) {
        self.check_key(key);
        self.overlay.insert(key.to_vec(), Overlay::Cleared);
        self.mutations.push(Mutation::Clear(key.to_vec()));
    }

    fn clear_range(&mut self, begin: &[u8], end: &[u8]) {
        if begin >= end {
            return;
        }
        let doomed: Vec<Vec<u8>> = self
            .overlay
            .range::<[u8], _>((Bound::Included(begin), Bound::Excluded(end)))
            .map(|(k, _)| k.clone())
            .collect();
        for k in doomed {
            self.overlay.remove(&k);
        }
        self.cleared.push((begin.to_vec(), end.to_vec()));
        self.mutations
            .push(Mutation::ClearRange(begin.to_vec(), end.to_vec()));
    }

    fn atomic_op(&mut self, key: &[u8], param: &[u8], op: AtomicOp) {
        self.check_key(key);
        self.check_value(param);
        let entry = self
            .overlay
            .entry(key.to_vec())
            .or_insert_with(|| Overlay::Atomic(Vec::new()));
        match entry {
            Overlay::Value(v) => *v = apply_atomic(Some(v), param, op),
            Overlay::Cleared => *entry = Overlay::Value(apply_atomic(None, param, op)),
            Overlay::Atomic(ops) => ops.push((param.to_vec(), op)),
        }
        self.mutations
            .push(Mutation::Atomic(key.to_vec(), param.to_vec(), op));
    }

    fn set_versionstamped_key(&mut self, key: &[u8], offset: usize, value: &[u8]) {
        self.check_key(key);
        self.check_value(value);
        if offset + 10 > key.len() && self.invalid.is_none() {
            self.invalid = Some(Error::InvalidArgument(format!(
                "versionstamp offset {offset} outside a key of {} bytes",
                key.len()
            )));
        }
        self.mutations.push(Mutation::VersionstampedKey(
            key.to_vec(),
            offset,
            value.to_vec(),
        ));
    }

    fn set_versionstamped_value(&mut self, key: &[u8], value: &[u8], offset: usize) {
        self.check_key(key);
        self.check_value(value);
        if offset + 10 > value.len() && self.invalid.is_none() {
            self.invalid = Some(Error::InvalidArgument(format!(
                "versionstamp offset {offset} outside a value of {} bytes",
                value.len()
            )));
        }
        // The value is unreadable inside this transaction until commit, as in FoundationDB.
        self.overlay.remove(key);
        self.mutations.push(Mutation::VersionstampedValue(
            key.to_vec(),
            value.to_vec(),
            offset,
        ));
    }

    fn add_read_conflict_range(&mut self, begin: &[u8], end: &[u8]) {
        self.read_conflicts.push((begin.to_vec(), end.to_vec()));
    }

    async fn commit(self: Box<Self>) -> Result<Committed> {
        let me = *self;
        if let Some(e) = me.invalid {
            return Err(e);
        }
        if me.mutations.is_empty() {
            return Ok(Committed {
                version: me.read_version,
                versionstamp: None,
            });
        }
        let (reply, answer) = oneshot::channel();
        let bytes = me.mutations.iter().map(Mutation::bytes).sum();
        let req = CommitRequest {
            read_version: me.read_version,
            read_conflicts: me.read_conflicts,
            mutations: me.mutations,
            bytes,
            reply,
        };
        me.commits.send(req).await.map_err(|_| Error::Closed)?;
        answer.await.map_err(|_| Error::Closed)?
    }
}

/// The keys and ranges one group commit wrote: what later transactions' reads are checked
/// against. Points are kept sorted so a read range is checked with one ordered lookup.
#[derive(Default)]
struct WriteSet {
    points: BTreeSet<Vec<u8>>,
    ranges: Vec<(Vec<u8>, Vec<u8>)>,
}

impl WriteSet {
    /// True when a write falls into the read range `[b, e)`.
    fn intersects(&self, b: &[u8], e: &[u8]) -> bool {
        if b >= e {
            return false;
        }
        self.points
            .range::<[u8], _>((Bound::Included(b), Bound::Excluded(e)))
            .next()
            .is_some()
            || self
                .ranges
                .iter()
                .any(|(rb, re)| b < re.as_slice() && rb.as_slice() < e)
    }

    fn contains(&self, k: &[u8]) -> bool {
        self.points.contains(k)
            || self
                .ranges
                .iter()
                .any(|(b, e)| b.as_slice() <= k && k < e.as_slice())
    }
}

struct BatchWrites {
    version: u64,
    at: Instant,
    writes: WriteSet,
}

/// Expired conflict-history batches freed per group commit (see `expire_history`).
const HISTORY_EXPIRY_BATCHES_PER_COMMIT_MAX: usize = 64;

/// Group commits slower than this are logged at info with where the time went.
const SLOW_BATCH_LOG_MS: u64 = 20;

struct Committer {
    shared: Arc<Shared>,
    cfg: EmbeddedConfig,
    version: u64,
    history: VecDeque<BatchWrites>,
    /// Every batch with a version above this is in `history`.
    history_floor: u64,
    wal: std::fs::File,
    wal_bytes: u64,
    last_checkpoint: Instant,
    /// Versions above this are durable only in the WAL so far.
    checkpointed: u64,
}

fn substitute(bytes: &mut [u8], offset: usize, vs: &Versionstamp) {
    bytes[offset..offset + 10].copy_from_slice(&vs.0);
}

impl Committer {
    fn new(shared: Arc<Shared>, cfg: EmbeddedConfig, version: u64, wal: std::fs::File) -> Self {
        Committer {
            shared,
            cfg,
            version,
            history: VecDeque::new(),
            history_floor: version,
            wal,
            wal_bytes: 0,
            last_checkpoint: Instant::now(),
            checkpointed: version,
        }
    }

    fn run(mut self, mut rx: mpsc::Receiver<CommitRequest>) {
        let mut held: Option<CommitRequest> = None;
        loop {
            let first = match held.take() {
                Some(r) => r,
                None => match rx.blocking_recv() {
                    Some(r) => r,
                    None => break,
                },
            };
            let mut bytes = first.bytes;
            let mut batch = vec![first];
            while batch.len() < self.cfg.commit_batch_txns_max {
                match rx.try_recv() {
                    Ok(r) if bytes + r.bytes > self.cfg.commit_batch_bytes_max => {
                        held = Some(r);
                        break;
                    }
                    Ok(r) => {
                        bytes += r.bytes;
                        batch.push(r);
                    }
                    Err(_) => break,
                }
            }
            if self.shared.failed.load(Ordering::Acquire) {
                for r in batch {
                    let _ = r.reply.send(Err(Error::Closed));
                }
                continue;
            }
            self.commit_batch(batch);
            if self.checkpoint_due()
                && let Err(e) = self.checkpoint()
            {
                tracing::error!(error = %e, "checkpoint failed; the store refuses writes until reopened");
                self.shared.failed.store(true, Ordering::Release);
            }
        }
        if self.checkpointed < self.version
            && let Err(e) = self.checkpoint()
        {
            tracing::warn!(error = %e, "final checkpoint failed; the write-ahead log will be replayed on open");
        }
        tracing::debug!("committer stopped: every sender is gone");
    }

    fn checkpoint_due(&self) -> bool {
        self.checkpointed < self.version
            && (self.wal_bytes >= self.cfg.checkpoint_wal_bytes_max
                || self.last_checkpoint.elapsed()
                    >= Duration::from_millis(self.cfg.checkpoint_interval_ms))
    }

    /// Makes the redb file durable up to `self.version`, then empties the WAL.
    fn checkpoint(&mut self) -> Result<()> {
        guarded("taking a checkpoint", || self.checkpoint_unguarded())
    }

    fn checkpoint_unguarded(&mut self) -> Result<()> {
        let started = Instant::now();
        let mut wtx = self.shared.db.begin_write().map_err(Error::backend)?;
        wtx.set_durability(redb::Durability::Immediate)
            .map_err(Error::backend)?;
        // Save the allocator state with the checkpoint, so that opening after a crash does
        // not walk the whole file to rebuild it (one such commit a second is cheap).
        wtx.set_quick_repair(true);
        {
            let mut sys = wtx.open_table(SYS).map_err(Error::backend)?;
            sys.insert(SYS_VERSION, self.version)
                .map_err(Error::backend)?;
        }
        wtx.commit().map_err(Error::backend)?;
        // Records up to `version` are now redundant; a crash before this truncation only
        // makes the next open skip them.
        self.wal.set_len(0)?;
        self.wal.sync_all()?;
        self.wal_bytes = 0;
        self.checkpointed = self.version;
        self.last_checkpoint = Instant::now();
        tracing::debug!(
            took_us = started.elapsed().as_micros() as u64,
            version = self.version,
            "checkpoint"
        );
        Ok(())
    }

    /// Drops conflict history older than the window, at most
    /// [`HISTORY_EXPIRY_BATCHES_PER_COMMIT_MAX`] batches per commit (beyond the count cap):
    /// after a burst and an idle pause the whole burst expires at once, and freeing it in
    /// one go held the next commit for 34–65 ms (measured). Keeping expired batches a little
    /// longer is safe: a transaction checked against more history is checked conservatively.
    fn expire_history(&mut self, now: Instant) {
        let window = Duration::from_millis(self.cfg.conflict_window_ms);
        let mut expired = 0;
        while let Some(front) = self.history.front() {
            let over_count = self.history.len() > self.cfg.conflict_history_batches_max;
            if over_count
                || (expired < HISTORY_EXPIRY_BATCHES_PER_COMMIT_MAX
                    && now.duration_since(front.at) > window)
            {
                expired += 1;
                self.history_floor = front.version;
                self.history.pop_front();
            } else {
                break;
            }
        }
    }

    fn check(&self, req: &CommitRequest, batch_writes: &WriteSet) -> Result<()> {
        if req.read_version < self.history_floor {
            return Err(Error::TransactionTooOld);
        }
        let newer = self
            .history
            .iter()
            .rev()
            .take_while(|b| b.version > req.read_version);
        for batch in newer {
            if req
                .read_conflicts
                .iter()
                .any(|(b, e)| batch.writes.intersects(b, e))
            {
                return Err(Error::TransactionConflict);
            }
        }
        if req
            .read_conflicts
            .iter()
            .any(|(b, e)| batch_writes.intersects(b, e))
        {
            return Err(Error::TransactionConflict);
        }
        Ok(())
    }

    fn commit_batch(&mut self, batch: Vec<CommitRequest>) {
        let now = Instant::now();
        self.expire_history(now);
        let version = self.version + 1;
        if version > POSITION_VERSION_MAX {
            for r in batch {
                let _ = r.reply.send(Err(Error::InvalidArgument(
                    "commit version beyond the position horizon".into(),
                )));
            }
            return;
        }
        let mut accepted: Vec<(oneshot::Sender<Result<Committed>>, Committed)> =
            Vec::with_capacity(batch.len());
        let mut writes = WriteSet::default();
        let mut wal_payload: Vec<u8> = Vec::new();
        let result = guarded(
            "applying a group commit",
            || -> Result<redb::WriteTransaction> {
                let mut wtx = self.shared.db.begin_write().map_err(Error::backend)?;
                // Durability comes from the write-ahead record written before this commit; the
                // redb file catches up at the next checkpoint.
                wtx.set_durability(redb::Durability::None)
                    .map_err(Error::backend)?;
                {
                    let mut table = wtx.open_table(KV).map_err(Error::backend)?;
                    let mut order: u16 = 0;
                    for req in batch {
                        if let Err(e) = self.check(&req, &writes) {
                            let _ = req.reply.send(Err(e));
                            continue;
                        }
                        let vs = Versionstamp::new(version, order);
                        order = order.wrapping_add(1);
                        for m in req.mutations {
                            apply(&mut table, m, &vs, &mut writes, &mut wal_payload)?;
                        }
                        accepted.push((
                            req.reply,
                            Committed {
                                version,
                                versionstamp: Some(vs),
                            },
                        ));
                    }
                    let mut sys = wtx.open_table(SYS).map_err(Error::backend)?;
                    sys.insert(SYS_VERSION, version).map_err(Error::backend)?;
                }
                Ok(wtx)
            },
        );
        let committed = result.and_then(|wtx| {
            if accepted.is_empty() {
                return wtx.abort().map_err(Error::backend);
            }
            // A write is acknowledged only once it is on disk: the record is fsynced before
            // the batch becomes visible to any reader.
            let record = wal::frame(version, &wal_payload);
            let prepared = now.elapsed();
            self.wal.write_all(&record)?;
            let written = now.elapsed();
            self.wal.sync_data()?;
            let synced = now.elapsed();
            self.wal_bytes += record.len() as u64;
            let r = wtx.commit().map_err(Error::backend);
            let total = now.elapsed();
            if total >= Duration::from_millis(SLOW_BATCH_LOG_MS) {
                tracing::info!(
                    txns = accepted.len(),
                    wal_bytes = record.len(),
                    apply_us = prepared.as_micros() as u64,
                    wal_write_us = (written - prepared).as_micros() as u64,
                    wal_fsync_us = (synced - written).as_micros() as u64,
                    redb_commit_us = (total - synced).as_micros() as u64,
                    since_checkpoint_ms = self.last_checkpoint.elapsed().as_millis() as u64,
                    "slow group commit"
                );
            }
            r
        });
        if let Err(e) = committed {
            // redb refuses further writes after a failed commit; so do we, until reopened.
            tracing::error!(error = %e, "group commit failed; the store refuses writes until reopened");
            self.shared.failed.store(true, Ordering::Release);
            let msg = e.to_string();
            for (reply, _) in accepted {
                let _ = reply.send(Err(Error::Backend(msg.clone().into())));
            }
            return;
        }
        if accepted.is_empty() {
            return;
        }
        self.version = version;
        self.fire_watches(&writes);
        self.history.push_back(BatchWrites {
            version,
            at: now,
            writes,
        });
        for (reply, c) in accepted {
            let _ = reply.send(Ok(c));
        }
    }

    fn fire_watches(&self, writes: &WriteSet) {
        let Ok(mut watchers) = self.shared.watchers.lock() else {
            return;
        };
        if watchers.is_empty() {
            return;
        }
        let all = std::mem::take(&mut *watchers);
        for w in all {
            let hit = writes.contains(&w.key);
            if hit {
                let _ = w.fire.send(());
            } else if !w.fire.is_closed() {
                watchers.push(w);
            }
        }
    }
}

/// Resolves one mutation (versionstamp substituted, atomic op evaluated against the batch's
/// state), applies it, records its write-conflict range and appends it to the WAL record.
fn apply(
    table: &mut redb::Table<&[u8], &[u8]>,
    m: Mutation,
    vs: &Versionstamp,
    writes: &mut WriteSet,
    wal_payload: &mut Vec<u8>,
) -> Result<()> {
    let op = match m {
        Mutation::Set(k, v) => WalOp::Put(k, v),
        Mutation::Clear(k) => WalOp::Delete(k),
        Mutation::ClearRange(b, e) => WalOp::DeleteRange(b, e),
        Mutation::Atomic(k, param, op) => {
            let existing = table
                .get(k.as_slice())
                .map_err(Error::backend)?
                .map(|g| g.value().to_vec());
            let v = apply_atomic(existing.as_deref(), &param, op);
            WalOp::Put(k, v)
        }
        Mutation::VersionstampedKey(mut k, offset, v) => {
            substitute(&mut k, offset, vs);
            WalOp::Put(k, v)
        }
        Mutation::VersionstampedValue(k, mut v, offset) => {
            substitute(&mut v, offset, vs);
            WalOp::Put(k, v)
        }
    };
    apply_op(table, &op)?;
    wal::push_op(wal_payload, &op);
    match op {
        WalOp::Put(k, _) | WalOp::Delete(k) => {
            writes.points.insert(k);
        }
        WalOp::DeleteRange(b, e) => writes.ranges.push((b, e)),
    }
    Ok(())
}

/// Applies one resolved mutation: at commit and when replaying the WAL.
fn apply_op(table: &mut redb::Table<&[u8], &[u8]>, op: &WalOp) -> Result<()> {
    match op {
        WalOp::Put(k, v) => {
            table
                .insert(k.as_slice(), v.as_slice())
                .map_err(Error::backend)?;
        }
        WalOp::Delete(k) => {
            table.remove(k.as_slice()).map_err(Error::backend)?;
        }
        WalOp::DeleteRange(b, e) => {
            table
                .retain_in::<&[u8], _>(
                    (Bound::Included(b.as_slice()), Bound::Excluded(e.as_slice())),
                    |_, _| false,
                )
                .map_err(Error::backend)?;
        }
    }
    Ok(())
}
