//! The FoundationDB backend (cargo feature `fdb`): the [`Kv`] trait over a FoundationDB 7.3
//! cluster, so many stateless `logbook serve` processes can share one store.
//!
//! Owns: booting the client's network thread (once per process), opening the database from a
//! cluster file, the directory-layer prefix every key lives under, and the translation of the
//! trait's operations and errors to FoundationDB's. It must not know the log's key layout:
//! it only prefixes keys (and shifts versionstamp offsets by the prefix length).
//!
//! FoundationDB is the model the trait was cut from, so most operations map one to one:
//! reads at the transaction's read version with read-your-writes, serializable reads that
//! join the conflict set (snapshot reads do not), atomic ops, versionstamped keys and values
//! (the offset travels as a 4-byte little-endian suffix, API ≥ 520), watches.
//!
//! Errors: `not_committed` (1020) → [`Error::TransactionConflict`], `transaction_too_old`
//! (1007) → [`Error::TransactionTooOld`], `commit_unknown_result` (1021) and every other
//! "maybe committed" error → [`Error::CommitUnknown`] (the log's appends are idempotent under
//! it, see `EventLog::append`), other retryable errors → [`Error::Unavailable`]; the rest are
//! [`Error::Backend`].

#![allow(unsafe_code)] // one audited call: booting the FoundationDB client (see `network`)

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use foundationdb::directory::{Directory, DirectoryLayer};
use foundationdb::options::{MutationType, StreamingMode};
use foundationdb::{Database, FdbError, RangeOption};

use super::{
    AtomicOp, Committed, KV_KEY_BYTES_MAX, KV_VALUE_BYTES_MAX, KeyValue, KeyWatch, Kv, RangePage,
    RangeRequest, Transaction,
};
use crate::error::{Error, Result};
use crate::position::{POSITION_VERSION_MAX, Versionstamp};

/// Commits are refused once the cluster's read version is within this many versions of the
/// position horizon ([`POSITION_VERSION_MAX`]): about 100 s of versions at FoundationDB's
/// 10^6 versions/s, so no commit can land past the horizon between the check and the commit.
pub const HORIZON_MARGIN_VERSIONS: u64 = 100_000_000;

/// Where a Logbook store lives in a FoundationDB cluster.
#[derive(Clone, Debug)]
pub struct FdbConfig {
    /// The cluster file; `None` uses FoundationDB's default search (`FDB_CLUSTER_FILE`, then
    /// `/etc/foundationdb/fdb.cluster`).
    pub cluster_file: Option<PathBuf>,
    /// The directory-layer path of this store: `["logbook", name]`. Several stores (or test
    /// runs) share a cluster under different names.
    pub name: String,
}

impl FdbConfig {
    /// The store `name` in the cluster named by `cluster_file`.
    pub fn new(cluster_file: Option<PathBuf>, name: impl Into<String>) -> Self {
        FdbConfig {
            cluster_file,
            name: name.into(),
        }
    }
}

/// The client network thread, started once per process and never stopped (the process exit
/// ends it).
static NETWORK: OnceLock<()> = OnceLock::new();

fn network() {
    NETWORK.get_or_init(|| {
        // SAFETY: `boot` must run at most once per process and before any other call into
        // the client; the OnceLock guarantees both for every path that opens a database. The
        // guard is leaked so the network thread lives as long as the process.
        let guard = unsafe { foundationdb::boot() };
        std::mem::forget(guard);
    });
}

/// A store in a FoundationDB cluster. Cheap to clone (one database handle).
#[derive(Clone)]
pub struct Fdb {
    db: Arc<Database>,
    prefix: Arc<[u8]>,
}

impl Fdb {
    /// Boots the client if needed, opens the database and creates or opens the store's
    /// directory.
    ///
    /// # Errors
    /// The cluster file cannot be read, the cluster cannot be reached, or the directory layer
    /// refuses the path.
    pub async fn open(cfg: FdbConfig) -> Result<Self> {
        network();
        let path = cfg
            .cluster_file
            .as_ref()
            .map(|p| p.to_string_lossy().into_owned());
        let db = Database::new(path.as_deref()).map_err(fdb_error)?;
        let dir = DirectoryLayer::default();
        let segments = vec!["logbook".to_string(), cfg.name.clone()];
        let mut attempts = 0u32;
        let prefix = loop {
            attempts += 1;
            let tx = db.create_trx().map_err(fdb_error)?;
            let out = match dir.create_or_open(&tx, &segments, None, None).await {
                Ok(out) => out,
                Err(e) if attempts < OPEN_ATTEMPTS_MAX => {
                    tracing::warn!(error = ?e, "fdb: opening the store directory failed; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
                Err(e) => {
                    return Err(Error::Backend(
                        format!("fdb directory {segments:?}: {e:?}").into(),
                    ));
                }
            };
            let prefix = out
                .bytes()
                .map_err(|e| Error::Backend(format!("fdb directory bytes: {e:?}").into()))?
                .to_vec();
            match tx.commit().await {
                Ok(_) => break prefix,
                Err(e) if attempts < OPEN_ATTEMPTS_MAX && e.is_retryable() => continue,
                Err(e) => return Err(fdb_error(*e)),
            }
        };
        tracing::info!(directory = ?segments, prefix_bytes = prefix.len(), "fdb store open");
        Ok(Fdb {
            db: Arc::new(db),
            prefix: prefix.into(),
        })
    }

    /// Removes every key of this store (tests clean up their directories with this).
    ///
    /// # Errors
    /// FoundationDB errors.
    pub async fn destroy(&self) -> Result<()> {
        let tx = self.db.create_trx().map_err(fdb_error)?;
        let end = prefixed_end(&self.prefix);
        tx.clear_range(&self.prefix, &end);
        tx.commit().await.map_err(|e| fdb_error(*e))?;
        Ok(())
    }
}

/// Attempts at creating or opening the store's directory before giving up.
const OPEN_ATTEMPTS_MAX: u32 = 20;

fn prefixed_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    end.push(0xff);
    end
}

fn fdb_error(e: FdbError) -> Error {
    match e.code() {
        1020 => Error::TransactionConflict,
        1007 => Error::TransactionTooOld,
        // Keys and values are checked before they reach FoundationDB; what is left is a
        // transaction over 10 MB, which the log's batch sizes are meant to prevent.
        2101..=2103 => Error::Backend(format!("fdb refused a write as too large ({e})").into()),
        _ if e.is_maybe_committed() => Error::CommitUnknown,
        _ if e.is_retryable() => Error::Unavailable(format!("fdb error {}: {e}", e.code())),
        _ => Error::Backend(format!("fdb error {}: {e}", e.code()).into()),
    }
}

#[async_trait]
impl Kv for Fdb {
    async fn begin(&self) -> Result<Box<dyn Transaction>> {
        let tx = self.db.create_trx().map_err(fdb_error)?;
        let rv = tx.get_read_version().await.map_err(fdb_error)?;
        Ok(Box::new(FdbTx {
            tx,
            prefix: self.prefix.clone(),
            read_version: u64::try_from(rv).unwrap_or(0),
            wrote: false,
            invalid: None,
        }))
    }

    async fn watch(&self, key: &[u8]) -> Result<KeyWatch> {
        let tx = self.db.create_trx().map_err(fdb_error)?;
        let mut k = self.prefix.to_vec();
        k.extend_from_slice(key);
        let fired = tx.watch(&k);
        // A watch is registered when its transaction commits (read-only here).
        tx.commit().await.map_err(|e| fdb_error(*e))?;
        Ok(Box::pin(async move { fired.await.map_err(fdb_error) }))
    }

    fn backend_name(&self) -> &'static str {
        "fdb"
    }

    /// What `fdbcli advanceversion` does: writes the special key
    /// `\xff\xff/management/min_required_commit_version` (the version as decimal text) until
    /// the cluster's read version is past it (the cluster recovers to get there).
    async fn advance_version(&self, version: u64) -> Result<()> {
        let target = i64::try_from(version)
            .map_err(|_| Error::InvalidArgument(format!("version {version} is beyond i64")))?;
        for _ in 0..ADVANCE_VERSION_ATTEMPTS_MAX {
            let tx = self.db.create_trx().map_err(fdb_error)?;
            tx.set_option(foundationdb::options::TransactionOption::SpecialKeySpaceEnableWrites)
                .map_err(fdb_error)?;
            let rv = tx.get_read_version().await.map_err(fdb_error)?;
            if rv > target {
                return Ok(());
            }
            tx.set(
                b"\xff\xff/management/min_required_commit_version",
                target.to_string().as_bytes(),
            );
            if let Err(e) = tx.commit().await {
                tracing::info!(error = %*e, "fdb: advancing the version; retrying");
            }
            tokio::time::sleep(std::time::Duration::from_millis(ADVANCE_VERSION_WAIT_MS)).await;
        }
        Err(Error::Unavailable(format!(
            "the cluster's version did not pass {version} after {ADVANCE_VERSION_ATTEMPTS_MAX} attempts"
        )))
    }
}

/// Attempts at advancing the cluster's version (each may trigger a recovery).
const ADVANCE_VERSION_ATTEMPTS_MAX: u32 = 60;
/// Wait between them, in milliseconds.
const ADVANCE_VERSION_WAIT_MS: u64 = 1_000;

struct FdbTx {
    tx: foundationdb::Transaction,
    prefix: Arc<[u8]>,
    read_version: u64,
    wrote: bool,
    /// The first invalid write (too large, bad offset): reported by `commit`, as the
    /// embedded backend does, since writes themselves are infallible.
    invalid: Option<Error>,
}

impl FdbTx {
    fn k(&self, key: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.prefix.len() + key.len());
        out.extend_from_slice(&self.prefix);
        out.extend_from_slice(key);
        out
    }

    fn check(&mut self, key: &[u8], value: Option<&[u8]>) {
        if self.invalid.is_some() {
            return;
        }
        if key.len() > KV_KEY_BYTES_MAX {
            self.invalid = Some(Error::TooLarge {
                what: "key",
                size: key.len(),
                limit: KV_KEY_BYTES_MAX,
            });
        } else if let Some(v) = value
            && v.len() > KV_VALUE_BYTES_MAX
        {
            self.invalid = Some(Error::TooLarge {
                what: "value",
                size: v.len(),
                limit: KV_VALUE_BYTES_MAX,
            });
        }
    }

    fn offset_suffix(offset: usize) -> [u8; 4] {
        u32::try_from(offset).unwrap_or(u32::MAX).to_le_bytes()
    }
}

#[async_trait]
impl Transaction for FdbTx {
    fn read_version(&self) -> u64 {
        self.read_version
    }

    async fn get(&mut self, key: &[u8], snapshot: bool) -> Result<Option<Vec<u8>>> {
        let v = self
            .tx
            .get(&self.k(key), snapshot)
            .await
            .map_err(fdb_error)?;
        Ok(v.map(|s| s.to_vec()))
    }

    async fn get_range(&mut self, req: &RangeRequest) -> Result<RangePage> {
        let mut opt = RangeOption::from((self.k(&req.begin), self.k(&req.end)));
        opt.limit = (req.limit > 0).then_some(req.limit);
        opt.reverse = req.reverse;
        opt.mode = StreamingMode::WantAll;
        let mut out = Vec::new();
        let mut iteration = 1;
        loop {
            let page = self
                .tx
                .get_range(&opt, iteration, req.snapshot)
                .await
                .map_err(fdb_error)?;
            for kv in page.iter() {
                out.push(KeyValue {
                    key: kv
                        .key()
                        .get(self.prefix.len()..)
                        .unwrap_or_default()
                        .to_vec(),
                    value: kv.value().to_vec(),
                });
            }
            let more = page.more();
            if req.limit > 0 && out.len() >= req.limit {
                return Ok(RangePage { kvs: out, more });
            }
            match opt.next_range(&page) {
                Some(next) => {
                    opt = next;
                    iteration += 1;
                }
                None => {
                    return Ok(RangePage {
                        kvs: out,
                        more: false,
                    });
                }
            }
        }
    }

    fn set(&mut self, key: &[u8], value: &[u8]) {
        self.check(key, Some(value));
        self.wrote = true;
        self.tx.set(&self.k(key), value);
    }

    fn clear(&mut self, key: &[u8]) {
        self.check(key, None);
        self.wrote = true;
        self.tx.clear(&self.k(key));
    }

    fn clear_range(&mut self, begin: &[u8], end: &[u8]) {
        self.wrote = true;
        self.tx.clear_range(&self.k(begin), &self.k(end));
    }

    fn atomic_op(&mut self, key: &[u8], param: &[u8], op: AtomicOp) {
        self.check(key, Some(param));
        self.wrote = true;
        let t = match op {
            AtomicOp::Add => MutationType::Add,
            AtomicOp::BitAnd => MutationType::BitAnd,
            AtomicOp::BitOr => MutationType::BitOr,
            AtomicOp::BitXor => MutationType::BitXor,
            AtomicOp::Max => MutationType::Max,
            AtomicOp::Min => MutationType::Min,
            AtomicOp::ByteMax => MutationType::ByteMax,
            AtomicOp::ByteMin => MutationType::ByteMin,
        };
        self.tx.atomic_op(&self.k(key), param, t);
    }

    fn set_versionstamped_key(&mut self, key: &[u8], offset: usize, value: &[u8]) {
        self.check(key, Some(value));
        if offset + 10 > key.len() && self.invalid.is_none() {
            self.invalid = Some(Error::InvalidArgument(format!(
                "versionstamp offset {offset} outside a {}-byte key",
                key.len()
            )));
            return;
        }
        self.wrote = true;
        let mut k = self.k(key);
        k.extend_from_slice(&Self::offset_suffix(offset + self.prefix.len()));
        self.tx
            .atomic_op(&k, value, MutationType::SetVersionstampedKey);
    }

    fn set_versionstamped_value(&mut self, key: &[u8], value: &[u8], offset: usize) {
        self.check(key, Some(value));
        if offset + 10 > value.len() && self.invalid.is_none() {
            self.invalid = Some(Error::InvalidArgument(format!(
                "versionstamp offset {offset} outside a {}-byte value",
                value.len()
            )));
            return;
        }
        self.wrote = true;
        let mut v = value.to_vec();
        v.extend_from_slice(&Self::offset_suffix(offset));
        self.tx
            .atomic_op(&self.k(key), &v, MutationType::SetVersionstampedValue);
    }

    fn add_read_conflict_range(&mut self, begin: &[u8], end: &[u8]) {
        let (b, e) = (self.k(begin), self.k(end));
        if let Err(err) =
            self.tx
                .add_conflict_range(&b, &e, foundationdb::options::ConflictRangeType::Read)
            && self.invalid.is_none()
        {
            self.invalid = Some(fdb_error(err));
        }
    }

    async fn commit(self: Box<Self>) -> Result<Committed> {
        let me = *self;
        if let Some(e) = me.invalid {
            return Err(e);
        }
        if !me.wrote {
            return Ok(Committed {
                version: me.read_version,
                versionstamp: None,
            });
        }
        if me.read_version > POSITION_VERSION_MAX.saturating_sub(HORIZON_MARGIN_VERSIONS) {
            return Err(Error::Backend(
                format!(
                    "the cluster's version {} is at the position horizon ({POSITION_VERSION_MAX}); \
                     see ARCHITECTURE.md (Positions)",
                    me.read_version
                )
                .into(),
            ));
        }
        // The versionstamp future must exist before the commit; it resolves after it.
        let stamp = me.tx.get_versionstamp();
        let committed = me.tx.commit().await.map_err(|e| fdb_error(*e))?;
        let version = committed.committed_version().map_err(fdb_error)?;
        let stamp = stamp.await.map_err(fdb_error)?;
        let vs = Versionstamp::from_slice(&stamp).ok_or_else(|| {
            Error::Backend(format!("fdb returned a {}-byte versionstamp", stamp.len()).into())
        })?;
        Ok(Committed {
            version: u64::try_from(version).unwrap_or(0),
            versionstamp: Some(vs),
        })
    }
}
