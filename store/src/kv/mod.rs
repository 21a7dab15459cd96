//! The ordered transactional key-value trait, shaped like FoundationDB's transactions.
//!
//! Everything above this module (the event log, the watch hub) is written against [`Kv`] and
//! [`Transaction`] only; no redb or FoundationDB type crosses this line.
//!
//! Semantics, as in FoundationDB:
//! - A transaction reads at one read version (a consistent snapshot) and sees its own writes.
//! - Reads are serializable by default: they join the transaction's read-conflict set, and
//!   commit fails with [`Error::TransactionConflict`] if a transaction that committed after the
//!   read version wrote into that set. Snapshot reads do not join the set.
//! - Writes are buffered and applied atomically at commit. Atomic operations read-modify-write
//!   at commit time without conflicting.
//! - Versionstamped keys and values get the commit's 10-byte versionstamp substituted at a
//!   given offset.
//! - `commit` returns the commit version and the transaction's versionstamp.
//! - [`Kv::watch`] resolves once a key's value differs from the value it had when the watch
//!   was registered.

pub mod embedded;
#[cfg(feature = "fdb")]
pub mod fdb;
pub mod wal;

use std::future::Future;
use std::pin::Pin;

use async_trait::async_trait;

use crate::error::Result;
use crate::position::Versionstamp;

/// Largest value the KV layer accepts, in bytes. FoundationDB's limit; every backend
/// enforces it, so the embedded store catches what FoundationDB would refuse.
pub const KV_VALUE_BYTES_MAX: usize = 100_000;
/// Largest key the KV layer accepts, in bytes (FoundationDB's limit).
pub const KV_KEY_BYTES_MAX: usize = 10_000;

/// One key and its value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

/// A range read: keys in `[begin, end)`, at most `limit` of them (0 = no limit), ascending
/// unless `reverse`. `snapshot` reads do not add to the read-conflict set.
#[derive(Clone, Debug)]
pub struct RangeRequest {
    pub begin: Vec<u8>,
    pub end: Vec<u8>,
    pub limit: usize,
    pub reverse: bool,
    pub snapshot: bool,
}

impl RangeRequest {
    /// All keys starting with `prefix`.
    pub fn prefix(prefix: &[u8]) -> Self {
        RangeRequest {
            begin: prefix.to_vec(),
            end: prefix_end(prefix),
            limit: 0,
            reverse: false,
            snapshot: false,
        }
    }

    pub fn between(begin: Vec<u8>, end: Vec<u8>) -> Self {
        RangeRequest {
            begin,
            end,
            limit: 0,
            reverse: false,
            snapshot: false,
        }
    }

    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    pub fn reverse(mut self, reverse: bool) -> Self {
        self.reverse = reverse;
        self
    }

    pub fn snapshot(mut self, snapshot: bool) -> Self {
        self.snapshot = snapshot;
        self
    }

    /// The request for the page after `page`: continues past its last key. `None` when the
    /// page was the last one.
    pub fn continue_after(&self, page: &RangePage) -> Option<RangeRequest> {
        if !page.more {
            return None;
        }
        let last = page.kvs.last()?;
        let mut next = self.clone();
        if self.reverse {
            next.end = last.key.clone();
        } else {
            next.begin = key_after(&last.key);
        }
        Some(next)
    }
}

/// One page of a range read. `more` is true when the limit cut the range short.
#[derive(Clone, Debug, Default)]
pub struct RangePage {
    pub kvs: Vec<KeyValue>,
    pub more: bool,
}

/// Atomic read-modify-write operations applied at commit (little-endian integers, as in
/// FoundationDB).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AtomicOp {
    /// Little-endian integer addition, wrapping, to the width of the parameter.
    Add,
    BitAnd,
    BitOr,
    BitXor,
    /// Little-endian unsigned maximum.
    Max,
    /// Little-endian unsigned minimum.
    Min,
    /// Lexicographic byte-string maximum.
    ByteMax,
    /// Lexicographic byte-string minimum.
    ByteMin,
}

/// What a successful commit reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Committed {
    /// The commit version (the read version for a transaction that wrote nothing).
    pub version: u64,
    /// The versionstamp substituted into versionstamped keys and values; `None` for a
    /// transaction that wrote nothing.
    pub versionstamp: Option<Versionstamp>,
}

/// A future that resolves when a watched key changed (or the store closed).
pub type KeyWatch = Pin<Box<dyn Future<Output = Result<()>> + Send>>;

/// A transactional, ordered key-value store.
#[async_trait]
pub trait Kv: Send + Sync + 'static {
    /// Starts a transaction at the latest committed version.
    async fn begin(&self) -> Result<Box<dyn Transaction>>;

    /// Resolves once `key`'s value differs from its value at the time of this call.
    async fn watch(&self, key: &[u8]) -> Result<KeyWatch>;

    /// A short name for logs and metrics ("embedded", "fdb").
    fn backend_name(&self) -> &'static str;

    /// Makes every later commit's version greater than `version` (after restoring a backup,
    /// so new positions do not reuse ones the lost part of the log had handed out).
    ///
    /// # Errors
    /// [`crate::Error::InvalidArgument`] from backends that cannot (the default).
    async fn advance_version(&self, version: u64) -> Result<()> {
        let _ = version;
        Err(crate::Error::InvalidArgument(format!(
            "the {} backend cannot advance its commit version",
            self.backend_name()
        )))
    }
}

/// One transaction. Dropping it without commit discards its writes.
#[async_trait]
pub trait Transaction: Send {
    /// The version this transaction reads at.
    fn read_version(&self) -> u64;

    /// Reads one key, seeing this transaction's own writes.
    async fn get(&mut self, key: &[u8], snapshot: bool) -> Result<Option<Vec<u8>>>;

    /// Reads a range, seeing this transaction's own writes.
    async fn get_range(&mut self, req: &RangeRequest) -> Result<RangePage>;

    fn set(&mut self, key: &[u8], value: &[u8]);

    fn clear(&mut self, key: &[u8]);

    /// Clears every key in `[begin, end)`.
    fn clear_range(&mut self, begin: &[u8], end: &[u8]);

    fn atomic_op(&mut self, key: &[u8], param: &[u8], op: AtomicOp);

    /// Sets a key whose bytes `[offset, offset + 10)` are replaced by the commit versionstamp.
    fn set_versionstamped_key(&mut self, key: &[u8], offset: usize, value: &[u8]);

    /// Sets a value whose bytes `[offset, offset + 10)` are replaced by the commit versionstamp.
    fn set_versionstamped_value(&mut self, key: &[u8], value: &[u8], offset: usize);

    /// Adds `[begin, end)` to the read-conflict set without reading it.
    fn add_read_conflict_range(&mut self, begin: &[u8], end: &[u8]);

    /// Commits atomically and durably: when this returns `Ok`, the writes are on disk.
    async fn commit(self: Box<Self>) -> Result<Committed>;
}

/// The first key greater than every key starting with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte was 0xff: nothing sorts after the prefix but the end of the keyspace.
    vec![0xff; prefix.len() + 1]
}

/// The first key after `key` in byte order.
pub fn key_after(key: &[u8]) -> Vec<u8> {
    let mut k = key.to_vec();
    k.push(0);
    k
}

/// Applies an atomic operation to an existing value, as FoundationDB defines them.
pub fn apply_atomic(existing: Option<&[u8]>, param: &[u8], op: AtomicOp) -> Vec<u8> {
    let n = param.len();
    let widen = |v: Option<&[u8]>| -> Vec<u8> {
        let mut out = vec![0u8; n];
        if let Some(v) = v {
            let m = v.len().min(n);
            out[..m].copy_from_slice(&v[..m]);
        }
        out
    };
    match op {
        AtomicOp::Add => {
            let a = widen(existing);
            let mut out = vec![0u8; n];
            let mut carry = 0u16;
            for i in 0..n {
                let s = u16::from(a[i]) + u16::from(param[i]) + carry;
                out[i] = s as u8;
                carry = s >> 8;
            }
            out
        }
        AtomicOp::BitAnd => match existing {
            None => param.to_vec(),
            Some(_) => widen(existing)
                .iter()
                .zip(param)
                .map(|(a, b)| a & b)
                .collect(),
        },
        AtomicOp::BitOr => widen(existing)
            .iter()
            .zip(param)
            .map(|(a, b)| a | b)
            .collect(),
        AtomicOp::BitXor => widen(existing)
            .iter()
            .zip(param)
            .map(|(a, b)| a ^ b)
            .collect(),
        AtomicOp::Max | AtomicOp::Min => {
            let Some(_) = existing else {
                return param.to_vec();
            };
            let a = widen(existing);
            // Compare as little-endian unsigned integers: most significant byte last.
            let ord = a.iter().rev().cmp(param.iter().rev());
            let keep_existing = match op {
                AtomicOp::Max => ord.is_ge(),
                _ => ord.is_le(),
            };
            if keep_existing { a } else { param.to_vec() }
        }
        AtomicOp::ByteMax => match existing {
            Some(e) if e >= param => e.to_vec(),
            _ => param.to_vec(),
        },
        AtomicOp::ByteMin => match existing {
            Some(e) if e <= param => e.to_vec(),
            _ => param.to_vec(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_is_the_first_key_after_every_key_with_the_prefix() {
        assert_eq!(prefix_end(b"ab"), b"ac".to_vec());
        assert_eq!(prefix_end(&[1, 0xff]), vec![2]);
        assert_eq!(prefix_end(&[0xff, 0xff]), vec![0xff, 0xff, 0xff]);
    }

    #[test]
    fn atomic_ops_follow_foundationdb_semantics() {
        // (existing, param, op, expected)
        type Case = (Option<Vec<u8>>, Vec<u8>, AtomicOp, Vec<u8>);
        let cases: Vec<Case> = vec![
            (None, vec![1, 0], AtomicOp::Add, vec![1, 0]),
            (Some(vec![0xff, 0]), vec![1, 0], AtomicOp::Add, vec![0, 1]),
            (
                Some(vec![0xff, 0xff]),
                vec![1, 0],
                AtomicOp::Add,
                vec![0, 0],
            ),
            (Some(vec![5]), vec![1, 0], AtomicOp::Add, vec![6, 0]),
            (
                Some(vec![0b1100]),
                vec![0b1010],
                AtomicOp::BitAnd,
                vec![0b1000],
            ),
            (None, vec![0b1010], AtomicOp::BitAnd, vec![0b1010]),
            (
                Some(vec![0b1100]),
                vec![0b1010],
                AtomicOp::BitOr,
                vec![0b1110],
            ),
            (
                Some(vec![0b1100]),
                vec![0b1010],
                AtomicOp::BitXor,
                vec![0b0110],
            ),
            (Some(vec![0, 2]), vec![0xff, 1], AtomicOp::Max, vec![0, 2]),
            (
                Some(vec![0, 2]),
                vec![0xff, 1],
                AtomicOp::Min,
                vec![0xff, 1],
            ),
            (None, vec![3], AtomicOp::Min, vec![3]),
            (
                Some(b"b".to_vec()),
                b"a".to_vec(),
                AtomicOp::ByteMax,
                b"b".to_vec(),
            ),
            (
                Some(b"b".to_vec()),
                b"a".to_vec(),
                AtomicOp::ByteMin,
                b"a".to_vec(),
            ),
        ];
        for (existing, param, op, expected) in cases {
            assert_eq!(
                apply_atomic(existing.as_deref(), &param, op),
                expected,
                "{op:?} on {existing:?} with {param:?}"
            );
        }
    }
}
