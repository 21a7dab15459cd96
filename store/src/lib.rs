//! logbook-store: the ground truth of Logbook.
//!
//! Owns the ordered transactional KV trait ([`kv::Kv`]) and its backends (embedded: redb
//! plus a write-ahead log; FoundationDB behind the `fdb` feature, in `kv::fdb`), the event log
//! and its projections ([`EventLog`]: current-state pointers, revision index, per-resource
//! log; reads as of any retained position; compaction), per-resource retention and
//! checkpoint chains ([`retention`]), verification ([`audit`]), and the watch hub
//! ([`WatchHub`]) that turns the log into subscriptions, and per-resource value transformers
//! ([`transform`]: how Secrets are kept encrypted in the log).
//!
//! Where to start reading: [`kv`] for the storage contract, [`log`] for what one append
//! writes, [`watch`] for how subscribers get every event exactly once.
//!
//! # Invariants
//! - Knows no Kubernetes kinds or semantics: it stores keys, events and bytes. A resource
//!   is an opaque string, an object an opaque byte string. Which resources are encrypted is
//!   the caller's choice ([`transform`]); the store only applies a resource's transformer.
//! - An object of a resource with a value transformer is sealed before its event is written
//!   and opened by every public read; internal paths (compaction, retention, checkpoints,
//!   verify) work on the sealed bytes and never need a key.
//! - The log is the only state that cannot be rebuilt; the current-state, revision and
//!   per-resource projections are written in the same transaction as the event they derive
//!   from. Object bytes live only in the log.
//! - A position (`resourceVersion`) names exactly one event; positions increase strictly in
//!   log order (one event per transaction, position from the commit versionstamp).
//! - A write is acknowledged only after it is durable.
//! - No watcher slows a commit: subscribers have bounded buffers and are cut off when full.
//! - Code above [`kv`] never sees a redb (or FoundationDB) type.

pub mod audit;
pub mod error;
pub mod keys;
pub mod kv;
pub mod log;
pub mod position;
pub mod record;
pub mod retention;
pub mod testing;
pub mod transform;
pub mod watch;

pub use error::{Error, Result};
pub use keys::ObjectKey;
pub use kv::embedded::{Embedded, EmbeddedConfig};
pub use log::{
    AppendRequest, CHANGES_PAGE_ITEMS_MAX, ChangeFilter, ChangePage, CompactReport, EventLog,
    Expect, ListAt, ListPage, LogConfig, Order, VerifyReport, VerifyScope,
};
pub use position::Position;
pub use record::{Actor, Event, EventType, StoredObject};
pub use retention::{Checkpoint, CompactTo};
pub use transform::{Opened, TransformError, ValueTransformer, ValueTransforms};
pub use watch::{HubConfig, Subscription, WatchHub, WatchItem};

use std::sync::Arc;
use std::time::Instant;

/// Opens the embedded store in `dir` the way a server starts: open the database (redb
/// repairs an unclean shutdown), open the log, and verify it within `scope`, logging
/// progress. Mid-log damage inside the scope stops startup with [`Error::Corrupt`] naming
/// the position.
///
/// # Errors
/// Whatever [`Embedded::open`], [`EventLog::open`] or [`EventLog::verify`] report.
pub async fn open_embedded(
    cfg: EmbeddedConfig,
    scope: VerifyScope,
) -> Result<(Embedded, EventLog, VerifyReport)> {
    let started = Instant::now();
    let kv = Embedded::open(cfg)?;
    let log = EventLog::open(
        Arc::new(kv.clone()) as Arc<dyn kv::Kv>,
        LogConfig::default(),
    )
    .await?;
    let mut last_log = Instant::now();
    let report = log
        .verify(scope, |events| {
            if last_log.elapsed().as_secs() >= 1 {
                tracing::info!(events, "verifying the log");
                last_log = Instant::now();
            }
        })
        .await?;
    tracing::info!(events = report.events, head = %report.head, elapsed_ms = started.elapsed().as_millis() as u64, "store open and verified");
    Ok((kv, log, report))
}
