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
//! - A checkpoint does not hold up writers. It runs on its own thread while the committer
//!   goes on: new records go to the other of two log files, and batches committed meanwhile
//!   are published to readers from an in-memory overlay ([`Pending`]) above the redb
//!   snapshot, since redb's write lock is the checkpoint's. When the checkpoint is durable,
//!   its log file is emptied and the overlay is folded into redb (one non-durable commit).
//!   Before, every write waited for each checkpoint's fsync: 9 ms (p50) to 25 ms, four
//!   times a second under load, which was most of a quiet client's p99.

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
/// The second write-ahead log file: records go to one file while a checkpoint empties the
/// other. Opening replays both, in version order.
pub const WAL_SECOND_FILE_NAME: &str = "logbook.wal.1";

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
    /// Most keys the overlay of batches committed during a checkpoint holds; past it the
    /// committer waits for the checkpoint (and folds the overlay) before the next batch.
    pub overlay_keys_max: usize,
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
            overlay_keys_max: 65_536,
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
    /// Batches committed while a checkpoint holds redb's write lock (see the module header).
    pending: Mutex<Option<Arc<Pending>>>,
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
        let wal_paths = [
            cfg.dir.join(WAL_FILE_NAME),
            cfg.dir.join(WAL_SECOND_FILE_NAME),
        ];
        let (version, [wal, wal_spare]) = guarded("replaying the write-ahead log", || {
            replay_wal(&db, &wal_paths)
        })?;
        if !marker.exists() {
            std::fs::write(&marker, b"logbook store\n")?;
            std::fs::File::open(&marker)?.sync_all()?;
            std::fs::File::open(&cfg.dir)?.sync_all()?;
        }
        let shared = Arc::new(Shared {
            db: Arc::new(db),
            watchers: Mutex::new(Vec::new()),
            pending: Mutex::new(None),
            failed: AtomicBool::new(false),
        });
        let (tx, rx) = mpsc::channel(cfg.commit_queue_txns_max.max(1));
        let committer_shared = shared.clone();
        let handle = std::thread::Builder::new()
            .name("logbook-committer".into())
            .spawn(move || {
                Committer::new(committer_shared, cfg, version, wal, wal_spare).run(rx)
            })?;
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

    fn read_snapshot(&self) -> Result<Snapshot> {
        guarded("starting a read", || self.read_snapshot_unguarded())
    }

    /// A redb read transaction, its version and the overlay above it, if any. The overlay is
    /// taken before the redb snapshot: the committer folds an overlay into redb before it
    /// drops it, so the pair never misses a batch; an overlay the snapshot already holds
    /// (redb's version has reached it) is left out.
    fn read_snapshot_unguarded(&self) -> Result<Snapshot> {
        let pending = self
            .shared
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let rtx = self.shared.db.begin_read().map_err(Error::backend)?;
        let version = {
            let sys = rtx.open_table(SYS).map_err(Error::backend)?;
            sys.get(SYS_VERSION)
                .map_err(Error::backend)?
                .map(|g| g.value())
                .unwrap_or(0)
        };
        let pending = pending.filter(|p| p.version > version);
        let version = pending.as_ref().map_or(version, |p| p.version);
        Ok((rtx, version, pending))
    }
}

/// Brings the redb file up to date with the write-ahead log: replays every record newer than
/// the file's committed version from both log files (in version order: a crash during a
/// checkpoint leaves older records in one file and newer ones in the other), makes the
/// result durable and empties the log. Returns the committed version and the two log files,
/// open for appending (records go to the first).
fn replay_wal(db: &redb::Database, wal_paths: &[PathBuf; 2]) -> Result<(u64, [std::fs::File; 2])> {
    let mut records = Vec::new();
    for wal_path in wal_paths {
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
        records.extend(contents.records);
    }
    records.sort_by_key(|(v, _)| *v);
    let location = wal_paths[0].display().to_string();
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
        if let Some((first, _)) = records.iter().find(|(v, _)| *v > version)
            && *first > version + 1
        {
            return Err(Error::Corrupt {
                location,
                detail: format!(
                    "the log starts at version {first} but the data file ends at {version}: versions in between are lost"
                ),
            });
        }
        for (v, ops) in &records {
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
    let open = |path: &PathBuf| -> Result<std::fs::File> {
        let wal = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        wal.set_len(0)?;
        wal.sync_all()?;
        Ok(wal)
    };
    Ok((version, [open(&wal_paths[0])?, open(&wal_paths[1])?]))
}

/// A read's view: a redb read transaction, its version, and the overlay above it.
type Snapshot = (redb::ReadTransaction, u64, Option<Arc<Pending>>);

/// Batches committed while a checkpoint holds redb's write lock, as readers see them above
/// the redb snapshot: each key's newest value (`None`: deleted) and the ranges cleared (keys
/// set after a clear are in `entries`).
#[derive(Clone, Debug, Default)]
struct Pending {
    version: u64,
    entries: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    cleared: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Pending {
    fn in_cleared(&self, key: &[u8]) -> bool {
        self.cleared
            .iter()
            .any(|(b, e)| b.as_slice() <= key && key < e.as_slice())
    }

    /// `Some(value)` when the overlay decides `key` (`Some(None)`: deleted), `None` when the
    /// redb snapshot does.
    fn get(&self, key: &[u8]) -> Option<Option<Vec<u8>>> {
        match self.entries.get(key) {
            Some(v) => Some(v.clone()),
            None if self.in_cleared(key) => Some(None),
            None => None,
        }
    }

    fn apply(&mut self, op: &WalOp) {
        match op {
            WalOp::Put(k, v) => {
                self.entries.insert(k.clone(), Some(v.clone()));
            }
            WalOp::Delete(k) => {
                self.entries.insert(k.clone(), None);
            }
            WalOp::DeleteRange(b, e) => {
                if b >= e {
                    return;
                }
                let inside: Vec<Vec<u8>> = self
                    .entries
                    .range::<[u8], _>((
                        Bound::Included(b.as_slice()),
                        Bound::Excluded(e.as_slice()),
                    ))
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in inside {
                    self.entries.remove(&k);
                }
                self.cleared.push((b.clone(), e.clone()));
            }
        }
    }
}

/// A key of the overlay and its value (`None`: deleted).
type OverlayEntry = (Vec<u8>, Option<Vec<u8>>);

/// A redb range merged with the overlay above it, in the range's direction.
struct PendingMerge<'a> {
    db: std::iter::Peekable<Box<dyn Iterator<Item = Result<OwnedEntry>> + 'a>>,
    overlay: std::iter::Peekable<std::vec::IntoIter<OverlayEntry>>,
    pending: Arc<Pending>,
    reverse: bool,
}

impl Iterator for PendingMerge<'_> {
    type Item = Result<OwnedEntry>;

    fn next(&mut self) -> Option<Self::Item> {
        use std::cmp::Ordering as Order;
        loop {
            let order = match (self.db.peek(), self.overlay.peek()) {
                (None, None) => return None,
                (Some(Err(_)), _) => return self.db.next(),
                (Some(Ok(_)), None) => Order::Less,
                (None, Some(_)) => Order::Greater,
                (Some(Ok((dk, _))), Some((ok, _))) => {
                    let o = dk.cmp(ok);
                    if self.reverse { o.reverse() } else { o }
                }
            };
            match order {
                Order::Less => match self.db.next()? {
                    Ok((k, _)) if self.pending.in_cleared(&k) => continue,
                    other => return Some(other),
                },
                Order::Greater | Order::Equal => {
                    if order == Order::Equal {
                        self.db.next();
                    }
                    match self.overlay.next()? {
                        (k, Some(v)) => return Some(Ok((k, v))),
                        (_, None) => continue,
                    }
                }
            }
        }
    }
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
        let (rtx, read_version, pending) = self.read_snapshot()?;
        let table = rtx.open_table(KV).map_err(Error::backend)?;
        Ok(Box::new(EmbeddedTx {
            commits: self.commits.clone(),
            _rtx: rtx,
            table,
            pending,
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
    /// Batches committed during a checkpoint, above `table`.
    pending: Option<Arc<Pending>>,
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
        if let Some(pending) = &self.pending {
            let in_range = pending.entries.range::<[u8], _>((
                Bound::Included(req.begin.as_slice()),
                Bound::Excluded(req.end.as_slice()),
            ));
            let entries: Vec<OverlayEntry> = if req.reverse {
                in_range
                    .rev()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            } else {
                in_range.map(|(k, v)| (k.clone(), v.clone())).collect()
            };
            db_iter = Box::new(PendingMerge {
                db: db_iter.peekable(),
                overlay: entries.into_iter().peekable(),
                pending: pending.clone(),
                reverse: req.reverse,
            });
        }
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
        if let Some(decided) = self.pending.as_ref().and_then(|p| p.get(key)) {
            return Ok(decided);
        }
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
    /// The log file records go to now.
    wal: std::fs::File,
    /// The other log file: empty, or being emptied by a running checkpoint (then `None`).
    wal_spare: Option<std::fs::File>,
    /// Bytes in `wal`.
    wal_bytes: u64,
    last_checkpoint: Instant,
    /// Versions above this are durable only in the WAL so far.
    checkpointed: u64,
    /// The running checkpoint, if any.
    checkpoint: Option<RunningCheckpoint>,
    /// While a checkpoint runs: the overlay readers see and the ops to fold into redb.
    overlay: Option<(Arc<Pending>, Vec<WalOp>)>,
}

/// A checkpoint on its own thread: the version it makes durable, and its outcome (the log
/// file it emptied).
struct RunningCheckpoint {
    version: u64,
    started: Instant,
    done: std::sync::mpsc::Receiver<Result<std::fs::File>>,
}

/// Where a group commit's resolved mutations go: a redb write transaction, or (during a
/// checkpoint) the overlay.
trait Target {
    /// The current value of `key`, earlier mutations of the batch included.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;
    fn apply(&mut self, op: &WalOp) -> Result<()>;
}

struct RedbTarget<'a, 'b>(&'a mut redb::Table<'b, &'static [u8], &'static [u8]>);

impl Target for RedbTarget<'_, '_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self
            .0
            .get(key)
            .map_err(Error::backend)?
            .map(|g| g.value().to_vec()))
    }

    fn apply(&mut self, op: &WalOp) -> Result<()> {
        apply_op(self.0, op)
    }
}

struct OverlayTarget<'a> {
    pending: &'a mut Pending,
    base: &'a redb::ReadOnlyTable<&'static [u8], &'static [u8]>,
    ops: Vec<WalOp>,
}

impl Target for OverlayTarget<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if let Some(decided) = self.pending.get(key) {
            return Ok(decided);
        }
        Ok(self
            .base
            .get(key)
            .map_err(Error::backend)?
            .map(|g| g.value().to_vec()))
    }

    fn apply(&mut self, op: &WalOp) -> Result<()> {
        self.pending.apply(op);
        self.ops.push(op.clone());
        Ok(())
    }
}

/// A resolved group commit, before its log record is written.
enum Staged {
    Redb(Box<redb::WriteTransaction>),
    Overlay(Pending, Vec<WalOp>),
}

fn substitute(bytes: &mut [u8], offset: usize, vs: &Versionstamp) {
    bytes[offset..offset + 10].copy_from_slice(&vs.0);
}

impl Committer {
    fn new(
        shared: Arc<Shared>,
        cfg: EmbeddedConfig,
        version: u64,
        wal: std::fs::File,
        wal_spare: std::fs::File,
    ) -> Self {
        Committer {
            shared,
            cfg,
            version,
            history: VecDeque::new(),
            history_floor: version,
            wal,
            wal_spare: Some(wal_spare),
            wal_bytes: 0,
            last_checkpoint: Instant::now(),
            checkpointed: version,
            checkpoint: None,
            overlay: None,
        }
    }

    fn run(mut self, mut rx: mpsc::Receiver<CommitRequest>) {
        let mut held: Option<CommitRequest> = None;
        loop {
            let first = match held.take() {
                Some(r) => r,
                None => match rx.try_recv() {
                    Ok(r) => r,
                    Err(_) => {
                        // Idle: fold a finished checkpoint's overlay before sleeping.
                        self.finish_checkpoint(false);
                        match rx.blocking_recv() {
                            Some(r) => r,
                            None => break,
                        }
                    }
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
            self.finish_checkpoint(false);
            let overlay_full = self
                .overlay
                .as_ref()
                .is_some_and(|(p, _)| p.entries.len() >= self.cfg.overlay_keys_max);
            if overlay_full {
                self.finish_checkpoint(true);
            }
            self.commit_batch(batch);
            if self.checkpoint_due() {
                self.start_checkpoint();
            }
        }
        self.finish_checkpoint(true);
        if self.checkpointed < self.version && !self.shared.failed.load(Ordering::Acquire) {
            self.start_checkpoint();
            self.finish_checkpoint(true);
        }
        tracing::debug!("committer stopped: every sender is gone");
    }

    fn checkpoint_due(&self) -> bool {
        self.checkpoint.is_none()
            && self.checkpointed < self.version
            && (self.wal_bytes >= self.cfg.checkpoint_wal_bytes_max
                || self.last_checkpoint.elapsed()
                    >= Duration::from_millis(self.cfg.checkpoint_interval_ms))
    }

    /// Starts making the redb file durable up to `self.version` on its own thread; records
    /// go to the other log file from now on, and batches to the overlay until it is done.
    fn start_checkpoint(&mut self) {
        let Some(spare) = self.wal_spare.take() else {
            return;
        };
        let old = std::mem::replace(&mut self.wal, spare);
        self.wal_bytes = 0;
        let (tx, done) = std::sync::mpsc::channel();
        let (db, version) = (self.shared.db.clone(), self.version);
        let spawned = std::thread::Builder::new()
            .name("logbook-checkpoint".into())
            .spawn(move || {
                let r = guarded("taking a checkpoint", || {
                    checkpoint_redb(&db, version)?;
                    // Records up to `version` are now redundant; a crash before this
                    // truncation only makes the next open skip them.
                    old.set_len(0)?;
                    old.sync_all()?;
                    Ok(old)
                });
                // The database is released before the committer hears back, so a store
                // closed right after can be opened again at once.
                drop(db);
                let _ = tx.send(r);
            });
        match spawned {
            Ok(_) => {
                self.checkpoint = Some(RunningCheckpoint {
                    version,
                    started: Instant::now(),
                    done,
                });
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot start a checkpoint thread; the store refuses writes until reopened");
                self.shared.failed.store(true, Ordering::Release);
            }
        }
    }

    /// Collects a finished checkpoint (waiting for it when `wait`) and folds the overlay of
    /// the batches committed meanwhile into redb.
    fn finish_checkpoint(&mut self, wait: bool) {
        let Some(running) = &self.checkpoint else {
            return;
        };
        let outcome = if wait {
            running.done.recv().unwrap_or(Err(Error::Closed))
        } else {
            match running.done.try_recv() {
                Ok(r) => r,
                Err(std::sync::mpsc::TryRecvError::Empty) => return,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => Err(Error::Closed),
            }
        };
        let Some(running) = self.checkpoint.take() else {
            return;
        };
        match outcome {
            Ok(emptied) => {
                self.wal_spare = Some(emptied);
                self.checkpointed = running.version;
                self.last_checkpoint = Instant::now();
                tracing::debug!(
                    took_us = running.started.elapsed().as_micros() as u64,
                    version = running.version,
                    "checkpoint"
                );
            }
            Err(e) => {
                tracing::error!(error = %e, "checkpoint failed; the store refuses writes until reopened");
                self.shared.failed.store(true, Ordering::Release);
            }
        }
        let Some((pending, ops)) = self.overlay.take() else {
            return;
        };
        let folded = guarded("folding the overlay into the database", || {
            let mut wtx = self.shared.db.begin_write().map_err(Error::backend)?;
            wtx.set_durability(redb::Durability::None)
                .map_err(Error::backend)?;
            {
                let mut table = wtx.open_table(KV).map_err(Error::backend)?;
                for op in &ops {
                    apply_op(&mut table, op)?;
                }
                let mut sys = wtx.open_table(SYS).map_err(Error::backend)?;
                sys.insert(SYS_VERSION, pending.version)
                    .map_err(Error::backend)?;
            }
            wtx.commit().map_err(Error::backend)
        });
        match folded {
            // redb holds the overlay now: readers stop using it (see read_snapshot).
            Ok(()) => {
                *self
                    .shared
                    .pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = None
            }
            Err(e) => {
                // Readers keep the overlay; the log has every batch for the next open.
                tracing::error!(error = %e, "folding the overlay failed; the store refuses writes until reopened");
                self.shared.failed.store(true, Ordering::Release);
            }
        }
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

    /// Checks each request of `batch` against the history and the batch so far, and resolves
    /// the survivors' mutations into `target`.
    fn resolve_batch(
        &self,
        batch: Vec<CommitRequest>,
        version: u64,
        target: &mut dyn Target,
        accepted: &mut Vec<(oneshot::Sender<Result<Committed>>, Committed)>,
        writes: &mut WriteSet,
        wal_payload: &mut Vec<u8>,
    ) -> Result<()> {
        let mut order: u16 = 0;
        for req in batch {
            if let Err(e) = self.check(&req, writes) {
                let _ = req.reply.send(Err(e));
                continue;
            }
            let vs = Versionstamp::new(version, order);
            order = order.wrapping_add(1);
            for m in req.mutations {
                apply(target, m, &vs, writes, wal_payload)?;
            }
            accepted.push((
                req.reply,
                Committed {
                    version,
                    versionstamp: Some(vs),
                },
            ));
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
        let result = guarded("applying a group commit", || -> Result<Staged> {
            if self.checkpoint.is_some() {
                // redb's write lock is the checkpoint's: resolve against the overlay above
                // the latest redb state, into a copy of the overlay published once durable.
                let rtx = self.shared.db.begin_read().map_err(Error::backend)?;
                let base = rtx.open_table(KV).map_err(Error::backend)?;
                let mut next = match &self.overlay {
                    Some((p, _)) => Pending::clone(p),
                    None => Pending::default(),
                };
                let mut target = OverlayTarget {
                    pending: &mut next,
                    base: &base,
                    ops: Vec::new(),
                };
                self.resolve_batch(
                    batch,
                    version,
                    &mut target,
                    &mut accepted,
                    &mut writes,
                    &mut wal_payload,
                )?;
                let ops = target.ops;
                next.version = version;
                return Ok(Staged::Overlay(next, ops));
            }
            let mut wtx = self.shared.db.begin_write().map_err(Error::backend)?;
            // Durability comes from the write-ahead record written before this commit; the
            // redb file catches up at the next checkpoint.
            wtx.set_durability(redb::Durability::None)
                .map_err(Error::backend)?;
            {
                let mut table = wtx.open_table(KV).map_err(Error::backend)?;
                self.resolve_batch(
                    batch,
                    version,
                    &mut RedbTarget(&mut table),
                    &mut accepted,
                    &mut writes,
                    &mut wal_payload,
                )?;
                let mut sys = wtx.open_table(SYS).map_err(Error::backend)?;
                sys.insert(SYS_VERSION, version).map_err(Error::backend)?;
            }
            Ok(Staged::Redb(Box::new(wtx)))
        });
        let committed = result.and_then(|staged| {
            if accepted.is_empty() {
                return match staged {
                    Staged::Redb(wtx) => wtx.abort().map_err(Error::backend),
                    Staged::Overlay(..) => Ok(()),
                };
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
            let r = match staged {
                Staged::Redb(wtx) => wtx.commit().map_err(Error::backend),
                Staged::Overlay(next, ops) => {
                    let next = Arc::new(next);
                    *self
                        .shared
                        .pending
                        .lock()
                        .unwrap_or_else(|p| p.into_inner()) = Some(next.clone());
                    let mut all = self.overlay.take().map(|(_, o)| o).unwrap_or_default();
                    all.extend(ops);
                    self.overlay = Some((next, all));
                    Ok(())
                }
            };
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

/// Makes the redb file durable with `version` as its committed version (a checkpoint).
fn checkpoint_redb(db: &redb::Database, version: u64) -> Result<()> {
    let mut wtx = db.begin_write().map_err(Error::backend)?;
    wtx.set_durability(redb::Durability::Immediate)
        .map_err(Error::backend)?;
    // Save the allocator state with the checkpoint, so that opening after a crash does
    // not walk the whole file to rebuild it (one such commit a second is cheap).
    wtx.set_quick_repair(true);
    {
        let mut sys = wtx.open_table(SYS).map_err(Error::backend)?;
        sys.insert(SYS_VERSION, version).map_err(Error::backend)?;
    }
    wtx.commit().map_err(Error::backend)
}

/// Resolves one mutation (versionstamp substituted, atomic op evaluated against the batch's
/// state), applies it, records its write-conflict range and appends it to the WAL record.
fn apply(
    target: &mut dyn Target,
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
            let existing = target.get(&k)?;
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
    target.apply(&op)?;
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
