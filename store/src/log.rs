//! The event log and its projections, on any [`Kv`] backend.
//!
//! One append is one transaction: read the object's current state (preconditions), write the
//! event under a versionstamped log key, replace the current-state record, add the revision
//! index entry and move the head. Reads: the current object, a consistent paginated list, the
//! log from a position, every revision of one object, and any object or list as of a
//! retained position.

mod history;

pub use history::{
    CHANGES_PAGE_ITEMS_MAX, CHANGES_SCAN_ENTRIES_MAX, ChangeFilter, ChangePage, Order,
    TIME_SCAN_EVENTS_MAX,
};

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};
use crate::keys::{self, ObjectKey};
use crate::kv::{Kv, RangeRequest, Transaction, prefix_end};
use crate::position::{Position, VERSIONSTAMP_PLACEHOLDER, Versionstamp};
use crate::record::{
    self, Actor, Event, EventType, NewEvent, OBJECT_BYTES_MAX, ObjectRef, RECORD_CHUNKS_MAX,
    StoredObject,
};
use crate::transform::ValueTransforms;

/// The on-disk format this code writes and reads.
pub const STORE_FORMAT_VERSION: u64 = 1;
/// How often an append retries after a transaction conflict before giving up.
pub const APPEND_RETRIES_MAX: u32 = 64;
/// `read_log` over several partitions reads each up to this many times its even share of
/// the limit, so an uneven spread still fills most of a batch in one pass.
pub const READ_LOG_SHARE_FACTOR: usize = 2;
/// ... and at least this many events per partition.
pub const READ_LOG_SHARE_MIN_EVENTS: usize = 64;
/// First back-off after a retryable error that is not a conflict (a commit with an unknown
/// outcome, a busy FoundationDB), doubled per attempt, in milliseconds.
pub const APPEND_BACKOFF_BASE_MS: u64 = 5;
/// Longest back-off between append attempts, in milliseconds.
pub const APPEND_BACKOFF_MAX_MS: u64 = 500;
/// Keys fetched per range read when scanning (a page, not a limit on results).
pub const SCAN_PAGE_KVS: usize = 2048;
/// Most revisions one history page returns.
pub const REVISIONS_PAGE_ITEMS_MAX: usize = 10_000;
/// Largest page a list returns, whatever the caller asks (DESIGN.md §4).
pub const LIST_PAGE_ITEMS_MAX: usize = 10_000;

/// Preconditions for an update or delete: both must match the current object when set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Expect {
    pub position: Option<Position>,
    pub uid: Option<String>,
}

/// One write: `Added` requires the object to be absent, `Modified` and `Deleted` require it
/// present (and matching `expect`).
#[derive(Clone, Debug)]
pub struct AppendRequest {
    pub key: ObjectKey,
    pub kind: EventType,
    /// The object after the change; for `Deleted`, its final state.
    pub object: Vec<u8>,
    /// The object's uid; used by `Added` (updates and deletes keep the stored uid).
    pub uid: String,
    pub expect: Expect,
    pub actor: Actor,
    pub verb: String,
    pub request_id: String,
}

/// Which state a list reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListAt {
    /// The latest committed state.
    Latest,
    /// Exactly the state as of this retained position.
    Exact(Position),
}

/// One page of a list.
#[derive(Clone, Debug)]
pub struct ListPage {
    pub items: Vec<StoredObject>,
    /// The position the whole list (every page) is read at.
    pub position: Position,
    /// Present when more items follow; pass it back to get them.
    pub continue_token: Option<String>,
}

/// How much of the log [`EventLog::verify`] checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VerifyScope {
    Full,
    /// The newest `n` events of each partition.
    Tail(usize),
}

/// What a verification saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Events checked (hash and chain link).
    pub events: u64,
    pub head: Position,
    /// Distinct objects whose chains were checked.
    pub objects: u64,
    /// Checkpoints re-derived (a full check only).
    pub checkpoints: u64,
}

/// What a compaction did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactReport {
    /// The new horizon: reads below it answer [`Error::Compacted`].
    pub horizon: Position,
    /// Events removed (superseded at the horizon, or deleted objects).
    pub removed_events: u64,
    /// Events at or below the horizon kept because they are an object's state there (or
    /// covered by a retained checkpoint).
    pub kept_events: u64,
    /// Checkpoints removed because they covered removed events.
    pub removed_checkpoints: u64,
}

/// Events one compaction transaction examines (keeps transactions far below FoundationDB's
/// 10 MB / 5 s limits).
pub const COMPACT_BATCH_EVENTS_MAX: usize = 512;

/// Configuration that only matters when a store is created.
#[derive(Clone, Debug)]
pub struct LogConfig {
    /// Log partitions for a new store (an existing store keeps its own).
    pub partitions: u16,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { partitions: 1 }
    }
}

/// The event log over a [`Kv`] backend. Cheap to clone.
#[derive(Clone)]
pub struct EventLog {
    pub(crate) kv: Arc<dyn Kv>,
    parts: Arc<Partitions>,
    /// Per-resource value transformers (see [`crate::transform`]); empty unless set with
    /// [`EventLog::with_value_transforms`].
    transforms: Arc<ValueTransforms>,
}

/// The log's partition count and every count it had before (it only grows). An event's
/// partition is `hash(key) mod count` for the count in force when it was appended, so a
/// read tries the current count first, then the older ones; a replica that missed a growth
/// re-reads them from the store (the tailer does on every pass).
struct Partitions {
    current: std::sync::atomic::AtomicU16,
    older: std::sync::RwLock<Vec<u16>>,
}

fn decode_partition_history(v: &[u8]) -> Vec<u16> {
    v.chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect()
}

fn now_unix_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

pub(crate) fn decode_u64(location: &str, bytes: &[u8]) -> Result<u64> {
    let arr: [u8; 8] = bytes.try_into().map_err(|_| Error::Corrupt {
        location: location.into(),
        detail: "not an 8-byte integer".into(),
    })?;
    Ok(u64::from_be_bytes(arr))
}

/// `[rev(key)+00, rev(key)+01)`: exactly the revision entries of one object (a
/// versionstamp's first byte is 0 below the position horizon).
fn rev_range(key: &ObjectKey) -> (Vec<u8>, Vec<u8>) {
    let p = keys::rev(key);
    let mut b = p.clone();
    b.push(0);
    let mut e = p;
    e.push(1);
    (b, e)
}

fn transform_error(key: &ObjectKey, e: crate::transform::TransformError) -> Error {
    Error::Transform {
        key: key.to_string(),
        detail: e.0,
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    v: u8,
    position: u64,
    resource: String,
    namespace: Option<String>,
    after_namespace: String,
    after_name: String,
}

/// Reads `[begin, end)` page by page and calls `f` with each group of consecutive keys that
/// share their first `key.len() - suffix` bytes. `f` returns `false` to stop; the scan then
/// returns `true` ("stopped with more to read"), else `false` at the end of the range.
pub(crate) async fn scan_groups(
    tx: &mut dyn Transaction,
    begin: Vec<u8>,
    end: Vec<u8>,
    suffix: usize,
    snapshot: bool,
    mut f: impl FnMut(&[u8], Vec<(Vec<u8>, Vec<u8>)>) -> Result<bool>,
) -> Result<bool> {
    let mut req = RangeRequest::between(begin, end)
        .limit(SCAN_PAGE_KVS)
        .snapshot(snapshot);
    let mut group: Option<Vec<u8>> = None;
    let mut parts: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    loop {
        let page = tx.get_range(&req).await?;
        let next = req.continue_after(&page);
        for kv in page.kvs {
            if kv.key.len() < suffix {
                return Err(Error::Corrupt {
                    location: hex(&kv.key),
                    detail: "key shorter than its layout".into(),
                });
            }
            let prefix = &kv.key[..kv.key.len() - suffix];
            if group.as_deref() != Some(prefix) {
                if let Some(g) = group.take()
                    && !f(&g, std::mem::take(&mut parts))?
                {
                    return Ok(true);
                }
                group = Some(prefix.to_vec());
            }
            parts.push((kv.key, kv.value));
        }
        match next {
            Some(n) => req = n,
            None => break,
        }
    }
    // The last group decides too: a callback that stops here leaves it unconsumed, so the
    // caller must hear "more" (a page boundary right before the last object once lost it).
    if let Some(g) = group
        && !f(&g, parts)?
    {
        return Ok(true);
    }
    Ok(false)
}

/// Up to `max` whole events of the log range `[begin, end)`, and whether more follow.
pub(crate) async fn scan_events(
    tx: &mut dyn Transaction,
    begin: Vec<u8>,
    end: Vec<u8>,
    max: usize,
) -> Result<(Vec<Event>, bool)> {
    let mut events: Vec<Event> = Vec::new();
    let more = scan_groups(tx, begin, end, 2, true, |prefix, parts| {
        if events.len() >= max {
            return Ok(false);
        }
        events.push(event_from_parts(prefix, &parts)?);
        Ok(true)
    })
    .await?;
    Ok((events, more))
}

pub(crate) fn join_parts(
    location: &dyn std::fmt::Display,
    parts: &[(Vec<u8>, Vec<u8>)],
) -> Result<Vec<u8>> {
    let indexed: Vec<(u16, &[u8])> = parts
        .iter()
        .map(|(k, v)| {
            let n = k.len();
            (u16::from_be_bytes([k[n - 2], k[n - 1]]), v.as_slice())
        })
        .collect();
    record::join_chunks(location, &indexed)
}

fn object_ref(key_bytes: &[u8], value: &[u8]) -> Result<ObjectRef> {
    let (key, _) = ObjectKey::decode(&key_bytes[1..]).ok_or_else(|| Error::Corrupt {
        location: hex(key_bytes),
        detail: "undecodable object key".into(),
    })?;
    record::decode_object(key, value)
}

/// Bounds of the cursor [`EventLog::resolve`] reads events with, in keys per range read.
const RESOLVE_PAGE_KVS_MIN: usize = 1;
const RESOLVE_PAGE_KVS_MAX: usize = 1024;

fn missing(r: &ObjectRef) -> Error {
    Error::Corrupt {
        location: format!("object {}", r.key),
        detail: format!(
            "current state points at log position {}, which is missing",
            r.position
        ),
    }
}

/// The current state a pointer names, checked against the event it points at.
fn stored(r: ObjectRef, e: Event) -> Result<StoredObject> {
    if e.hash != r.hash || e.key != r.key {
        return Err(Error::Corrupt {
            location: format!("object {}", r.key),
            detail: format!(
                "current state points at log position {}, which holds another revision",
                r.position
            ),
        });
    }
    Ok(StoredObject::from_event(e))
}

pub(crate) fn event_from_parts(prefix: &[u8], parts: &[(Vec<u8>, Vec<u8>)]) -> Result<Event> {
    let vs =
        Versionstamp::from_slice(&prefix[keys::LOG_VS_OFFSET..]).ok_or_else(|| Error::Corrupt {
            location: hex(prefix),
            detail: "short log key".into(),
        })?;
    let position = Position::checked_from_versionstamp(vs).ok_or_else(|| Error::Corrupt {
        location: hex(prefix),
        detail: "log key holds a version past the position horizon".into(),
    })?;
    let bytes = join_parts(&format!("log position {position}"), parts)?;
    record::decode_event(position, &bytes)
}

impl EventLog {
    /// Opens the log on a backend, initialising a new store.
    ///
    /// # Errors
    /// [`Error::Corrupt`] when the store was written by an unknown format version.
    pub async fn open(kv: Arc<dyn Kv>, cfg: LogConfig) -> Result<Self> {
        for _ in 0..APPEND_RETRIES_MAX {
            let mut tx = kv.begin().await?;
            let format = tx.get(keys::META_FORMAT, false).await?;
            let (partitions, older) = match format {
                Some(f) => {
                    let v = decode_u64("meta format", &f)?;
                    if v != STORE_FORMAT_VERSION {
                        return Err(Error::Corrupt {
                            location: "meta format".into(),
                            detail: format!(
                                "store format {v}; this build reads {STORE_FORMAT_VERSION}"
                            ),
                        });
                    }
                    let p = tx.get(keys::META_PARTITIONS, false).await?.ok_or_else(|| {
                        Error::Corrupt {
                            location: "meta partitions".into(),
                            detail: "missing".into(),
                        }
                    })?;
                    let stored = decode_u64("meta partitions", &p)? as u16;
                    let mut older = decode_partition_history(
                        &tx.get(keys::META_PARTITION_HISTORY, false)
                            .await?
                            .unwrap_or_default(),
                    );
                    if cfg.partitions > stored {
                        // Growth: new events spread over more partitions; the old count is
                        // remembered so events appended under it are still found.
                        older.push(stored);
                        let bytes: Vec<u8> = older.iter().flat_map(|c| c.to_be_bytes()).collect();
                        tx.set(keys::META_PARTITION_HISTORY, &bytes);
                        tx.set(
                            keys::META_PARTITIONS,
                            &u64::from(cfg.partitions).to_be_bytes(),
                        );
                        tracing::info!(from = stored, to = cfg.partitions, "log partitions grown");
                        (cfg.partitions, older)
                    } else {
                        (stored, older)
                    }
                }
                None => {
                    let partitions = cfg.partitions.max(1);
                    tx.set(keys::META_FORMAT, &STORE_FORMAT_VERSION.to_be_bytes());
                    tx.set(keys::META_PARTITIONS, &u64::from(partitions).to_be_bytes());
                    tx.set(keys::META_HORIZON, &0u64.to_be_bytes());
                    (partitions, Vec::new())
                }
            };
            match tx.commit().await {
                Ok(_) => {
                    return Ok(EventLog {
                        kv,
                        parts: Arc::new(Partitions {
                            current: std::sync::atomic::AtomicU16::new(partitions),
                            older: std::sync::RwLock::new(older),
                        }),
                        transforms: Arc::new(ValueTransforms::default()),
                    });
                }
                Err(e) if e.is_retryable() => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::TransactionConflict)
    }

    /// Re-reads the partition count and its history (another replica may have grown it);
    /// whether anything changed.
    pub(crate) async fn refresh_partitions(&self, tx: &mut dyn Transaction) -> Result<bool> {
        let Some(p) = tx.get(keys::META_PARTITIONS, true).await? else {
            return Ok(false);
        };
        let current = decode_u64("meta partitions", &p)? as u16;
        if current == self.partitions() {
            return Ok(false);
        }
        let older = decode_partition_history(
            &tx.get(keys::META_PARTITION_HISTORY, true)
                .await?
                .unwrap_or_default(),
        );
        *self.parts.older.write().unwrap_or_else(|p| p.into_inner()) = older;
        self.parts
            .current
            .store(current, std::sync::atomic::Ordering::Release);
        Ok(true)
    }

    /// Whether the partition count ever grew: an object's events may then be spread over
    /// several partitions, so a scan partition by partition meets them out of order.
    pub(crate) fn has_grown(&self) -> bool {
        !self
            .parts
            .older
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    /// The partitions an event of `key` may be in: under the current count first, then
    /// under each older one, newest first.
    fn partition_candidates(&self, key: &ObjectKey) -> Vec<u16> {
        let mut out = vec![key.partition(self.partitions())];
        let older = self.parts.older.read().unwrap_or_else(|p| p.into_inner());
        for &c in older.iter().rev() {
            let p = key.partition(c);
            if !out.contains(&p) {
                out.push(p);
            }
        }
        out
    }

    /// The events of `wanted` (object, position), with the partition each was found in:
    /// read in bulk under the current count, then, for what was not there, under the older
    /// counts (and, once, after re-reading them from the store).
    pub(crate) async fn read_events_of(
        &self,
        tx: &mut dyn Transaction,
        wanted: &[(&ObjectKey, Position)],
    ) -> Result<Vec<Option<(u16, Event)>>> {
        let primary: Vec<(u16, Position)> = wanted
            .iter()
            .map(|(k, p)| (k.partition(self.partitions()), *p))
            .collect();
        let mut out: Vec<Option<(u16, Event)>> = self
            .read_events(tx, &primary)
            .await?
            .into_iter()
            .zip(&primary)
            .map(|(e, (part, _))| e.map(|e| (*part, e)))
            .collect();
        for attempt in 0..2 {
            if out.iter().all(Option::is_some) {
                break;
            }
            if attempt == 1 && !self.refresh_partitions(tx).await? {
                break;
            }
            for (i, slot) in out.iter_mut().enumerate() {
                if slot.is_some() {
                    continue;
                }
                let (key, position) = wanted[i];
                for part in self.partition_candidates(key) {
                    if attempt == 0 && part == primary[i].0 {
                        continue;
                    }
                    if let Some(e) = self.read_event_in(tx, part, position).await? {
                        *slot = Some((part, e));
                        break;
                    }
                }
            }
        }
        Ok(out)
    }

    /// Fences the positions above the current head up to `up_to`: after restoring a backup,
    /// resourceVersions up to `up_to` may have been handed out by the lost part of the log.
    /// First every later commit gets a version above `up_to` ([`Kv::advance_version`]), then
    /// the range (head, up_to] is recorded, and reads at a position inside it answer
    /// [`Error::Compacted`] (410: the client relists) instead of silently missing events.
    /// Returns the fenced range, or `None` when `up_to` is not above the head.
    ///
    /// # Errors
    /// The backend cannot advance its version, or store errors.
    pub async fn fence(&self, up_to: Position) -> Result<Option<(Position, Position)>> {
        let head = self.head().await?;
        if up_to <= head {
            return Ok(None);
        }
        self.kv
            .advance_version(up_to.versionstamp().version().saturating_add(1))
            .await?;
        for _ in 0..APPEND_RETRIES_MAX {
            let mut tx = self.kv.begin().await?;
            let head = self.read_head(tx.as_mut()).await?;
            let mut value = tx.get(keys::META_FENCES, false).await?.unwrap_or_default();
            value.extend_from_slice(&head.0.to_be_bytes());
            value.extend_from_slice(&up_to.0.to_be_bytes());
            tx.set(keys::META_FENCES, &value);
            match tx.commit().await {
                Ok(_) => return Ok(Some((head, up_to))),
                Err(e) if e.is_retryable() => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::TransactionConflict)
    }

    /// The fenced ranges (after, up to], oldest first.
    pub async fn fences(&self) -> Result<Vec<(Position, Position)>> {
        let mut tx = self.kv.begin().await?;
        self.read_fences(tx.as_mut()).await
    }

    async fn read_fences(&self, tx: &mut dyn Transaction) -> Result<Vec<(Position, Position)>> {
        let Some(v) = tx.get(keys::META_FENCES, true).await? else {
            return Ok(Vec::new());
        };
        if v.len() % 16 != 0 {
            return Err(Error::Corrupt {
                location: "meta fences".into(),
                detail: format!("{} bytes, not pairs of u64", v.len()),
            });
        }
        Ok(v.chunks_exact(16)
            .map(|c| {
                let (a, b) = c.split_at(8);
                let n = |x: &[u8]| u64::from_be_bytes(x.try_into().unwrap_or([0; 8]));
                (Position(n(a)), Position(n(b)))
            })
            .collect())
    }

    /// [`Error::Compacted`] when `at` lies inside a fenced range (see [`Self::fence`]).
    pub(crate) async fn check_fences(&self, tx: &mut dyn Transaction, at: Position) -> Result<()> {
        for (after, up_to) in self.read_fences(tx).await? {
            if after < at && at <= up_to {
                return Err(Error::Compacted {
                    requested: at,
                    horizon: up_to,
                });
            }
        }
        Ok(())
    }

    /// Whether a read of `resource` may start at `at`: not below its retention horizon and
    /// not inside a fence. Returns the horizon.
    ///
    /// # Errors
    /// [`Error::Compacted`] otherwise.
    pub async fn check_readable_from(&self, resource: &str, at: Position) -> Result<Position> {
        let mut tx = self.kv.begin().await?;
        self.check_readable_in(tx.as_mut(), resource, at).await
    }

    /// [`EventLog::check_readable_from`] within the transaction `tx`.
    async fn check_readable_in(
        &self,
        tx: &mut dyn Transaction,
        resource: &str,
        at: Position,
    ) -> Result<Position> {
        let horizon = self.read_resource_horizon(tx, resource, true).await?;
        if at < horizon {
            return Err(Error::Compacted {
                requested: at,
                horizon,
            });
        }
        self.check_fences(tx, at).await?;
        Ok(horizon)
    }

    /// The backend under this log (for watches on the head key).
    pub fn kv(&self) -> &Arc<dyn Kv> {
        &self.kv
    }

    /// The current partition count (new events spread over this many).
    pub fn partitions(&self) -> u16 {
        self.parts
            .current
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// This log with `transforms` applied to the objects of their resources: sealed when
    /// appended, opened by every public read (see [`crate::transform`]). Set it before the
    /// log is cloned or shared: clones made earlier keep the set they had.
    pub fn with_value_transforms(mut self, transforms: ValueTransforms) -> Self {
        self.transforms = Arc::new(transforms);
        self
    }

    /// An event as readers see it: its object opened by its resource's transformer.
    pub(crate) fn open_event(&self, mut e: Event) -> Result<Event> {
        if let Some(t) = self.transforms.get(&e.key.resource) {
            e.object = t
                .open(&e.key, &e.object)
                .map_err(|err| transform_error(&e.key, err))?
                .plain;
        }
        Ok(e)
    }

    fn open_events(&self, events: Vec<Event>) -> Result<Vec<Event>> {
        if self.transforms.is_empty() {
            return Ok(events);
        }
        events.into_iter().map(|e| self.open_event(e)).collect()
    }

    fn open_stored(&self, mut s: StoredObject) -> Result<StoredObject> {
        if let Some(t) = self.transforms.get(&s.key.resource) {
            let opened = t
                .open(&s.key, &s.object)
                .map_err(|err| transform_error(&s.key, err))?;
            s.object = opened.plain;
            s.stale = opened.stale;
        }
        Ok(s)
    }

    fn open_page(&self, mut page: ListPage) -> Result<ListPage> {
        if self.transforms.is_empty() {
            return Ok(page);
        }
        page.items = std::mem::take(&mut page.items)
            .into_iter()
            .map(|s| self.open_stored(s))
            .collect::<Result<_>>()?;
        Ok(page)
    }

    /// Appends one event and updates the projections, atomically and durably. An object of
    /// a resource with a value transformer is sealed first; the returned event carries the
    /// object as given.
    ///
    /// # Errors
    /// `AlreadyExists` (Added on a present object), `NotFound` (Modified/Deleted on an
    /// absent one), `Conflict` (an `expect` field differs), `TooLarge` (object above
    /// [`OBJECT_BYTES_MAX`]), `Transform` (the object could not be sealed).
    pub async fn append(&self, req: &AppendRequest) -> Result<Event> {
        if req.object.len() > OBJECT_BYTES_MAX {
            return Err(Error::TooLarge {
                what: "object",
                size: req.object.len(),
                limit: OBJECT_BYTES_MAX,
            });
        }
        let Some(t) = self.transforms.get(&req.key.resource) else {
            return self.append_stored(req).await;
        };
        // Sealed once, before any attempt: every retry writes, and `committed_already`
        // compares, the same stored bytes (a fresh nonce per attempt would never match).
        let sealed = AppendRequest {
            key: req.key.clone(),
            kind: req.kind,
            object: t
                .seal(&req.key, &req.object)
                .map_err(|e| transform_error(&req.key, e))?,
            uid: req.uid.clone(),
            expect: req.expect.clone(),
            actor: req.actor.clone(),
            verb: req.verb.clone(),
            request_id: req.request_id.clone(),
        };
        let mut event = self.append_stored(&sealed).await?;
        event.object = req.object.clone();
        Ok(event)
    }

    /// [`Self::append`] of an object already in its stored form.
    async fn append_stored(&self, req: &AppendRequest) -> Result<Event> {
        let mut attempts = 0;
        let mut maybe_committed = false;
        loop {
            attempts += 1;
            if maybe_committed && let Some(e) = self.committed_already(req).await? {
                return Ok(e);
            }
            match self.try_append(req).await {
                Err(e) if e.is_retryable() && attempts < APPEND_RETRIES_MAX => {
                    if matches!(e, Error::CommitUnknown) {
                        maybe_committed = true;
                    }
                    if matches!(e, Error::CommitUnknown | Error::Unavailable(_)) {
                        let shift = attempts.min(7);
                        tokio::time::sleep(std::time::Duration::from_millis(
                            (APPEND_BACKOFF_BASE_MS << shift).min(APPEND_BACKOFF_MAX_MS),
                        ))
                        .await;
                    }
                    continue;
                }
                other => return other,
            }
        }
    }

    /// After a commit with an unknown outcome: the event that commit would have written, if
    /// it is the object's newest revision (same request id, kind and object bytes). Request
    /// ids are unique per API request, and one request never writes the same bytes to one
    /// object twice, so a match is that commit.
    async fn committed_already(&self, req: &AppendRequest) -> Result<Option<Event>> {
        if req.request_id.is_empty() {
            return Ok(None);
        }
        let mut tx = self.kv.begin().await?;
        let (b, e) = rev_range(&req.key);
        let newest = tx
            .get_range(&RangeRequest::between(b, e).limit(1).reverse(true))
            .await?;
        let Some(vs) = newest
            .kvs
            .first()
            .and_then(|kv| Versionstamp::from_slice(&kv.key[kv.key.len().saturating_sub(10)..]))
        else {
            return Ok(None);
        };
        let position = Position::from_versionstamp(vs);
        let event = self.read_event_at(tx.as_mut(), &req.key, position).await?;
        Ok(event.filter(|e| {
            e.request_id == req.request_id && e.kind == req.kind && e.object == req.object
        }))
    }

    async fn try_append(&self, req: &AppendRequest) -> Result<Event> {
        let mut tx = self.kv.begin().await?;
        let current = self.read_object_ref(tx.as_mut(), &req.key, false).await?;
        let key_str = || req.key.to_string();
        match (&current, req.kind) {
            (Some(_), EventType::Added) => return Err(Error::AlreadyExists { key: key_str() }),
            (None, EventType::Modified | EventType::Deleted) => {
                return Err(Error::NotFound { key: key_str() });
            }
            _ => {}
        }
        if let Some(cur) = &current {
            if let Some(p) = req.expect.position
                && p != cur.position
            {
                return Err(Error::Conflict {
                    key: key_str(),
                    detail: format!("expected position {p}, current is {}", cur.position),
                });
            }
            if let Some(uid) = &req.expect.uid
                && uid != &cur.uid
            {
                return Err(Error::Conflict {
                    key: key_str(),
                    detail: format!("expected uid {uid}, current is {}", cur.uid),
                });
            }
        }
        let uid = match &current {
            Some(cur) => cur.uid.clone(),
            None => req.uid.clone(),
        };
        let timestamp_unix_nanos = now_unix_nanos();
        let prev_hash = current.as_ref().map_or([0u8; 32], |c| c.hash);
        let new_event = NewEvent {
            kind: req.kind,
            key: &req.key,
            uid: &uid,
            object: &req.object,
            prev_position: current.as_ref().map(|c| c.position),
            actor: &req.actor,
            verb: &req.verb,
            request_id: &req.request_id,
            timestamp_unix_nanos,
            prev_hash,
        };
        let (event_bytes, hash) = record::encode_event(&new_event)?;
        let partition = req.key.partition(self.partitions());

        // The event, under l <partition> <versionstamp> <chunk>.
        let log_prefix = keys::log_event(partition, Versionstamp(VERSIONSTAMP_PLACEHOLDER));
        let mut n_chunks = 0;
        for (i, chunk) in record::chunks(&event_bytes) {
            tx.set_versionstamped_key(
                &keys::with_chunk(&log_prefix, i),
                keys::LOG_VS_OFFSET,
                chunk,
            );
            n_chunks += 1;
        }
        if n_chunks > RECORD_CHUNKS_MAX {
            return Err(Error::TooLarge {
                what: "event record",
                size: event_bytes.len(),
                limit: RECORD_CHUNKS_MAX * record::VALUE_CHUNK_BYTES_MAX,
            });
        }

        // The current-state projection: a pointer to this event.
        let obj_key = keys::obj(&req.key);
        if req.kind == EventType::Deleted {
            tx.clear(&obj_key);
        } else {
            let pointer = record::encode_object(&uid, &hash, &req.request_id)?;
            tx.set_versionstamped_value(&obj_key, &pointer, record::OBJECT_VS_OFFSET);
        }

        // The revision index and the head.
        let mut rev_key = keys::rev(&req.key);
        let rev_vs_offset = rev_key.len();
        rev_key.extend_from_slice(&VERSIONSTAMP_PLACEHOLDER);
        tx.set_versionstamped_key(&rev_key, rev_vs_offset, &[req.kind as u8]);
        let mut res_key = keys::res_log(&req.key.resource);
        let res_vs_offset = res_key.len();
        res_key.extend_from_slice(&VERSIONSTAMP_PLACEHOLDER);
        tx.set_versionstamped_key(&res_key, res_vs_offset, &keys::res_log_value(&req.key));
        tx.set_versionstamped_value(&keys::head(partition), &VERSIONSTAMP_PLACEHOLDER, 0);
        // The history indexes: the user's log and the second this event was stamped in.
        let mut user_key = keys::user_log(&req.actor.user);
        let user_vs_offset = user_key.len();
        user_key.extend_from_slice(&VERSIONSTAMP_PLACEHOLDER);
        tx.set_versionstamped_key(&user_key, user_vs_offset, &keys::user_log_value(&req.key));
        let second = u64::try_from(timestamp_unix_nanos / 1_000_000_000).unwrap_or(0);
        tx.set_versionstamped_value(&keys::time_second(second), &VERSIONSTAMP_PLACEHOLDER, 0);
        let delta: i64 = match req.kind {
            EventType::Added => 1,
            EventType::Deleted => -1,
            EventType::Modified => 0,
        };
        if delta != 0 {
            let count_key = keys::count_scope(&req.key.resource, Some(req.key.namespace.as_str()));
            tx.atomic_op(&count_key, &delta.to_le_bytes(), crate::kv::AtomicOp::Add);
        }

        let committed = tx.commit().await?;
        let vs = committed
            .versionstamp
            .ok_or_else(|| Error::InvalidArgument("commit wrote nothing".into()))?;
        Ok(Event {
            position: Position::from_versionstamp(vs),
            kind: req.kind,
            key: req.key.clone(),
            uid,
            object: req.object.clone(),
            prev_position: current.as_ref().map(|c| c.position),
            actor: req.actor.clone(),
            verb: req.verb.clone(),
            request_id: req.request_id.clone(),
            timestamp_unix_nanos,
            prev_hash,
            hash,
        })
    }

    async fn read_object_ref(
        &self,
        tx: &mut dyn Transaction,
        key: &ObjectKey,
        snapshot: bool,
    ) -> Result<Option<ObjectRef>> {
        match tx.get(&keys::obj(key), snapshot).await? {
            None => Ok(None),
            Some(v) => Ok(Some(record::decode_object(key.clone(), &v)?)),
        }
    }

    /// Reads the events the pointers name and returns the objects, in pointer order.
    async fn resolve(
        &self,
        tx: &mut dyn Transaction,
        refs: Vec<ObjectRef>,
    ) -> Result<Vec<StoredObject>> {
        let wanted: Vec<(&ObjectKey, Position)> =
            refs.iter().map(|r| (&r.key, r.position)).collect();
        let events = self.read_events_of(tx, &wanted).await?;
        refs.into_iter()
            .zip(events)
            .map(|(r, e)| match e {
                Some((_, e)) => stored(r, e),
                None => Err(missing(&r)),
            })
            .collect()
    }

    /// Reads the events at `wanted` (partition, position), answering in the same order
    /// (`None` where the log has no such event).
    ///
    /// The events are read in log order with an adaptive range cursor: where the wanted
    /// positions are dense in the log (a resource written in bulk) it reads pages of
    /// consecutive entries; where they are sparse it shrinks to point reads.
    pub(crate) async fn read_events(
        &self,
        tx: &mut dyn Transaction,
        wanted: &[(u16, Position)],
    ) -> Result<Vec<Option<Event>>> {
        let mut order: Vec<usize> = (0..wanted.len()).collect();
        order.sort_unstable_by_key(|&i| wanted[i]);
        let mut events: Vec<Option<Event>> = vec![None; wanted.len()];
        let mut page_kvs = RESOLVE_PAGE_KVS_MIN;
        let mut next = 0;
        while next < order.len() {
            let (partition, position) = wanted[order[next]];
            let begin = keys::with_chunk(&keys::log_event(partition, position.versionstamp()), 0);
            let end = prefix_end(&keys::log_partition(partition));
            let page = tx
                .get_range(
                    &RangeRequest::between(begin, end)
                        .limit(page_kvs)
                        .snapshot(true),
                )
                .await?;
            let (mut seen, mut taken) = (0usize, 0usize);
            for kv in &page.kvs {
                let Some((p_part, at, chunk)) = keys::parse_log_key(&kv.key) else {
                    break;
                };
                let Some(&idx) = order.get(next) else { break };
                let (want_part, want_at) = wanted[idx];
                if p_part != want_part || at > want_at {
                    break; // re-seek to the next wanted position
                }
                seen += 1;
                if at < want_at || chunk != 0 {
                    continue;
                }
                let event = if kv.value.len() < record::VALUE_CHUNK_BYTES_MAX {
                    Some(record::decode_event(at, &kv.value)?)
                } else {
                    self.read_event_in(tx, want_part, at).await?
                };
                events[idx] = event;
                taken += 1;
                next += 1;
            }
            if taken == 0 {
                // The wanted position is not in the log: answer None for it and move on.
                next += 1;
            }
            page_kvs = if taken * 2 >= seen {
                (page_kvs * 2).min(RESOLVE_PAGE_KVS_MAX)
            } else {
                (page_kvs / 4).max(RESOLVE_PAGE_KVS_MIN)
            };
        }
        Ok(events)
    }

    pub(crate) async fn read_head(&self, tx: &mut dyn Transaction) -> Result<Position> {
        // Every partition's head (and a pre-partition-heads store's single head).
        let heads = tx
            .get_range(&RangeRequest::prefix(keys::META_HEAD).snapshot(true))
            .await?;
        let mut head = Position::ZERO;
        for kv in heads.kvs {
            let vs = Versionstamp::from_slice(&kv.value).ok_or_else(|| Error::Corrupt {
                location: "meta head".into(),
                detail: "not a versionstamp".into(),
            })?;
            head = head.max(Position::from_versionstamp(vs));
        }
        Ok(head)
    }

    pub(crate) async fn read_horizon(&self, tx: &mut dyn Transaction) -> Result<Position> {
        match tx.get(keys::META_HORIZON, true).await? {
            None => Ok(Position::ZERO),
            Some(v) => Ok(Position(decode_u64("meta horizon", &v)?)),
        }
    }

    /// The horizon of one resource: the larger of the whole log's and the resource's own
    /// (`m horizon <res>`, moved by per-resource retention). `snapshot: false` makes the
    /// read conflict with a concurrent move (what a checkpoint writer needs).
    pub(crate) async fn read_resource_horizon(
        &self,
        tx: &mut dyn Transaction,
        resource: &str,
        snapshot: bool,
    ) -> Result<Position> {
        let global = match tx.get(keys::META_HORIZON, snapshot).await? {
            None => Position::ZERO,
            Some(v) => Position(decode_u64("meta horizon", &v)?),
        };
        let own = match tx.get(&keys::resource_horizon(resource), snapshot).await? {
            None => Position::ZERO,
            Some(v) => Position(decode_u64("meta horizon of a resource", &v)?),
        };
        Ok(global.max(own))
    }

    /// Removes one event from the log and from every index that names it: its log chunks,
    /// its revision entry (`r`), its resource-log entry (`t`) and its user-log entry (`u`).
    /// Every index an append writes per event is cleared here, and only here, so compaction
    /// cannot forget one.
    pub(crate) fn clear_event_entries(tx: &mut dyn Transaction, partition: u16, e: &Event) {
        let vs = e.position.versionstamp();
        let log_prefix = keys::log_event(partition, vs);
        tx.clear_range(&log_prefix, &prefix_end(&log_prefix));
        let mut rev_key = keys::rev(&e.key);
        rev_key.extend_from_slice(&vs.0);
        tx.clear(&rev_key);
        let mut res_key = keys::res_log(&e.key.resource);
        res_key.extend_from_slice(&vs.0);
        tx.clear(&res_key);
        let mut user_key = keys::user_log(&e.actor.user);
        user_key.extend_from_slice(&vs.0);
        tx.clear(&user_key);
        // `x <second>` keys stay: one per second of activity, and a lookup that lands on a
        // removed event reads the log forward from there, which is still right.
    }

    /// The position of the newest event (ZERO for an empty log).
    pub async fn head(&self) -> Result<Position> {
        let mut tx = self.kv.begin().await?;
        self.read_head(tx.as_mut()).await
    }

    /// How many objects of `resource` exist now (in `namespace`, or all): an O(namespaces)
    /// read of counters kept by every append, for estimates such as `remainingItemCount`.
    pub async fn count(&self, resource: &str, namespace: Option<&str>) -> Result<u64> {
        let mut tx = self.kv.begin().await?;
        let scope = keys::count_scope(resource, namespace);
        let mut total: i64 = 0;
        let mut req = RangeRequest::prefix(&scope);
        req.snapshot = true;
        loop {
            let page = tx.get_range(&req).await?;
            for kv in &page.kvs {
                let mut b = [0u8; 8];
                let n = kv.value.len().min(8);
                b[..n].copy_from_slice(&kv.value[..n]);
                total = total.saturating_add(i64::from_le_bytes(b));
            }
            match page.kvs.last() {
                Some(kv) if page.more => req.begin = crate::kv::key_after(&kv.key),
                _ => break,
            }
        }
        Ok(u64::try_from(total).unwrap_or(0))
    }

    /// Positions below this are compacted in the whole log: reads there answer
    /// [`Error::Compacted`].
    pub async fn horizon(&self) -> Result<Position> {
        let mut tx = self.kv.begin().await?;
        self.read_horizon(tx.as_mut()).await
    }

    /// Positions below this are compacted for `resource` (the larger of the whole log's
    /// horizon and the resource's own): reads of it there answer [`Error::Compacted`].
    pub async fn resource_horizon(&self, resource: &str) -> Result<Position> {
        let mut tx = self.kv.begin().await?;
        self.read_resource_horizon(tx.as_mut(), resource, true)
            .await
    }

    /// The current state of one object.
    ///
    /// # Errors
    /// `Transform` when its stored form cannot be opened.
    pub async fn get(&self, key: &ObjectKey) -> Result<Option<StoredObject>> {
        let mut tx = self.kv.begin().await?;
        let Some(r) = self.read_object_ref(tx.as_mut(), key, true).await? else {
            return Ok(None);
        };
        self.resolve(tx.as_mut(), vec![r])
            .await?
            .pop()
            .map(|s| self.open_stored(s))
            .transpose()
    }

    async fn check_retained(
        &self,
        tx: &mut dyn Transaction,
        resource: &str,
        at: Position,
    ) -> Result<Position> {
        self.check_readable_in(tx, resource, at).await?;
        let head = self.read_head(tx).await?;
        if at > head {
            return Err(Error::FutureRevision {
                requested: at,
                head,
            });
        }
        Ok(head)
    }

    /// Lists the objects of `resource` (in `namespace`, or all), one page of at most `limit`
    /// items (0 = [`LIST_PAGE_ITEMS_MAX`]). Every page of one list reads the same position:
    /// the first page fixes it and the continue token carries it.
    ///
    /// # Errors
    /// `InvalidArgument` for a token that is not ours or belongs to another list;
    /// `Compacted` when the token's position fell below the retention horizon; `Transform`
    /// when an item's stored form cannot be opened.
    pub async fn list(
        &self,
        resource: &str,
        namespace: Option<&str>,
        at: ListAt,
        limit: usize,
        continue_token: Option<&str>,
    ) -> Result<ListPage> {
        let page = self
            .list_stored(resource, namespace, at, limit, continue_token)
            .await?;
        self.open_page(page)
    }

    async fn list_stored(
        &self,
        resource: &str,
        namespace: Option<&str>,
        at: ListAt,
        limit: usize,
        continue_token: Option<&str>,
    ) -> Result<ListPage> {
        let limit = if limit == 0 {
            LIST_PAGE_ITEMS_MAX
        } else {
            limit.min(LIST_PAGE_ITEMS_MAX)
        };
        let mut tx = self.kv.begin().await?;
        let head = self.read_head(tx.as_mut()).await?;
        let (position, after) = match continue_token {
            Some(t) => {
                let tok = self.parse_token(t, resource, namespace)?;
                (
                    Position(tok.position),
                    Some(ObjectKey::new(
                        resource,
                        tok.after_namespace,
                        tok.after_name,
                    )),
                )
            }
            None => match at {
                ListAt::Latest => (head, None),
                ListAt::Exact(p) => (p, None),
            },
        };
        if position == head {
            // Nothing was written since: the current-state projection is the answer.
            let begin = match &after {
                Some(k) => crate::kv::key_after(&keys::obj(k)),
                None => keys::obj_scope(resource, namespace),
            };
            let end = prefix_end(&keys::obj_scope(resource, namespace));
            let mut refs = Vec::new();
            let more = scan_groups(tx.as_mut(), begin, end, 0, true, |key, parts| {
                if refs.len() >= limit {
                    return Ok(false);
                }
                for (_, value) in &parts {
                    let r = object_ref(key, value)?;
                    if r.key.resource == resource
                        && namespace.is_none_or(|ns| ns == r.key.namespace)
                    {
                        refs.push(r);
                    }
                }
                Ok(true)
            })
            .await?;
            let items = self.resolve(tx.as_mut(), refs).await?;
            return Ok(self.page(items, position, more, resource, namespace));
        }
        self.check_retained(tx.as_mut(), resource, position).await?;
        self.list_as_of(tx.as_mut(), resource, namespace, position, after, limit)
            .await
    }

    fn page(
        &self,
        items: Vec<StoredObject>,
        position: Position,
        more: bool,
        resource: &str,
        namespace: Option<&str>,
    ) -> ListPage {
        let continue_token = match (more, items.last()) {
            (true, Some(last)) => {
                let tok = ContinueToken {
                    v: 1,
                    position: position.0,
                    resource: resource.to_string(),
                    namespace: namespace.map(str::to_string),
                    after_namespace: last.key.namespace.clone(),
                    after_name: last.key.name.clone(),
                };
                rmp_serde::to_vec(&tok).ok().map(|b| hex(&b))
            }
            _ => None,
        };
        ListPage {
            items,
            position,
            continue_token,
        }
    }

    fn parse_token(
        &self,
        t: &str,
        resource: &str,
        namespace: Option<&str>,
    ) -> Result<ContinueToken> {
        let bad = || Error::InvalidArgument("continue token is not valid for this list".into());
        let bytes = unhex(t).ok_or_else(bad)?;
        let tok: ContinueToken = rmp_serde::from_slice(&bytes).map_err(|_| bad())?;
        if tok.v != 1 || tok.resource != resource || tok.namespace.as_deref() != namespace {
            return Err(bad());
        }
        Ok(tok)
    }

    async fn list_as_of(
        &self,
        tx: &mut dyn Transaction,
        resource: &str,
        namespace: Option<&str>,
        at: Position,
        after: Option<ObjectKey>,
        limit: usize,
    ) -> Result<ListPage> {
        let scope = keys::rev_scope(resource, namespace);
        let end = prefix_end(&scope);
        let begin = match &after {
            Some(k) => {
                let mut b = keys::rev(k);
                b.push(1);
                b
            }
            None => scope,
        };
        // The newest revision at or below `at` of each object that existed then.
        let mut picked: Vec<(ObjectKey, Position)> = Vec::new();
        let more = scan_groups(tx, begin, end, 10, true, |prefix, parts| {
            let Some((key, _)) = ObjectKey::decode(&prefix[1..]) else {
                return Err(Error::Corrupt {
                    location: hex(prefix),
                    detail: "undecodable revision key".into(),
                });
            };
            if key.resource != resource || namespace.is_some_and(|ns| ns != key.namespace) {
                return Ok(true);
            }
            let mut best: Option<(Position, u8)> = None;
            for (k, v) in &parts {
                let vs =
                    Versionstamp::from_slice(&k[k.len() - 10..]).ok_or_else(|| Error::Corrupt {
                        location: hex(k),
                        detail: "short revision key".into(),
                    })?;
                let p = Position::from_versionstamp(vs);
                if p <= at {
                    best = Some((p, v.first().copied().unwrap_or(0)));
                }
            }
            if let Some((p, kind)) = best
                && EventType::from_byte(kind) != Some(EventType::Deleted)
            {
                if picked.len() >= limit {
                    return Ok(false);
                }
                picked.push((key, p));
            }
            Ok(true)
        })
        .await?;
        let mut items = Vec::with_capacity(picked.len());
        for (key, p) in picked {
            let e = self
                .read_event_at(tx, &key, p)
                .await?
                .ok_or_else(|| Error::Corrupt {
                    location: format!("log position {p}"),
                    detail: format!("revision index of {key} points at a missing event"),
                })?;
            items.push(StoredObject {
                key,
                position: e.position,
                uid: e.uid,
                object: e.object,
                hash: e.hash,
                request_id: e.request_id,
                stale: false,
            });
        }
        Ok(self.page(items, at, more, resource, namespace))
    }

    pub(crate) async fn read_event_at(
        &self,
        tx: &mut dyn Transaction,
        key: &ObjectKey,
        p: Position,
    ) -> Result<Option<Event>> {
        Ok(self
            .read_events_of(tx, &[(key, p)])
            .await?
            .pop()
            .flatten()
            .map(|(_, e)| e))
    }

    pub(crate) async fn read_event_in(
        &self,
        tx: &mut dyn Transaction,
        partition: u16,
        p: Position,
    ) -> Result<Option<Event>> {
        let prefix = keys::log_event(partition, p.versionstamp());
        // Most events fit one chunk: a point read, without a range scan.
        let first = tx.get(&keys::with_chunk(&prefix, 0), true).await?;
        match first {
            None => return Ok(None),
            Some(chunk) if chunk.len() < record::VALUE_CHUNK_BYTES_MAX => {
                return record::decode_event(p, &chunk).map(Some);
            }
            Some(_) => {}
        }
        let end = prefix_end(&prefix);
        let mut found = None;
        scan_groups(tx, prefix, end, 2, true, |prefix, parts| {
            found = Some(event_from_parts(prefix, &parts)?);
            Ok(false)
        })
        .await?;
        Ok(found)
    }

    /// The events of one resource (in `namespace`, or all) after `after` up to `until`
    /// (inclusive, or the head), at most `limit` (0 = no limit), in log order. Reads the
    /// resource's own log, so its cost does not grow with other resources' traffic.
    ///
    /// # Errors
    /// [`Error::Compacted`] when `after` is below the horizon; `Transform` when an event's
    /// object cannot be opened.
    pub async fn read_resource_log(
        &self,
        resource: &str,
        namespace: Option<&str>,
        after: Position,
        until: Option<Position>,
        limit: usize,
    ) -> Result<Vec<Event>> {
        let events = self
            .read_resource_log_stored(resource, namespace, after, until, limit, true)
            .await?;
        self.open_events(events)
    }

    /// Every retained event of `resource` after `after` (exclusive; ZERO for all, including
    /// the events kept at the retention horizon), at most `limit`, in log order, with the
    /// objects **in their stored form** (not opened by the resource's value transformer).
    /// For tools that inspect the stored form, such as which key sealed each revision;
    /// never for serving objects.
    pub async fn read_resource_log_unopened(
        &self,
        resource: &str,
        after: Position,
        limit: usize,
    ) -> Result<Vec<Event>> {
        self.read_resource_log_stored(resource, None, after, None, limit, false)
            .await
    }

    /// [`Self::read_resource_log`] with the objects in their stored form (retention's walk:
    /// it must not need a key to remove what an old key sealed).
    pub(crate) async fn read_resource_log_stored(
        &self,
        resource: &str,
        namespace: Option<&str>,
        after: Position,
        until: Option<Position>,
        limit: usize,
        check_horizon: bool,
    ) -> Result<Vec<Event>> {
        let mut tx = self.kv.begin().await?;
        if check_horizon {
            self.check_readable_in(tx.as_mut(), resource, after).await?;
        }
        let max = if limit == 0 { usize::MAX } else { limit };
        let prefix = keys::res_log(resource);
        let at = |p: Position| {
            let mut k = prefix.clone();
            k.extend_from_slice(&p.versionstamp().0);
            k
        };
        let begin = match after.0.checked_add(1) {
            Some(n) => at(Position(n)),
            None => return Ok(Vec::new()),
        };
        let end = match until.and_then(|u| u.0.checked_add(1)) {
            Some(n) => at(Position(n)),
            None => prefix_end(&prefix),
        };
        let mut wanted: Vec<(ObjectKey, Position)> = Vec::new();
        scan_groups(tx.as_mut(), begin, end, 0, true, |k, parts| {
            if wanted.len() >= max {
                return Ok(false);
            }
            let bad = || Error::Corrupt {
                location: hex(k),
                detail: "undecodable resource-log entry".into(),
            };
            let vs = Versionstamp::from_slice(&k[prefix.len()..]).ok_or_else(bad)?;
            let Some((_, value)) = parts.first() else {
                return Ok(true);
            };
            let (ns, rest) = keys::pop_str(value).ok_or_else(bad)?;
            let (name, _) = keys::pop_str(rest).ok_or_else(bad)?;
            let ns = String::from_utf8(ns).map_err(|_| bad())?;
            if namespace.is_none_or(|want| want == ns) {
                let name = String::from_utf8(name).map_err(|_| bad())?;
                wanted.push((
                    ObjectKey::new(resource, ns, name),
                    Position::from_versionstamp(vs),
                ));
            }
            Ok(true)
        })
        .await?;
        let places: Vec<(&ObjectKey, Position)> = wanted.iter().map(|(k, p)| (k, *p)).collect();
        let events: Vec<Option<Event>> = self
            .read_events_of(tx.as_mut(), &places)
            .await?
            .into_iter()
            .map(|e| e.map(|(_, e)| e))
            .collect();
        wanted
            .into_iter()
            .zip(events)
            .map(|((key, p), e)| {
                e.ok_or_else(|| Error::Corrupt {
                    location: format!("log position {p}"),
                    detail: format!(
                        "the resource log of {resource} names an event of {key} that is missing"
                    ),
                })
            })
            .collect()
    }

    /// Events after `after` (exclusive) up to `until` (inclusive, or the head), at most
    /// `limit` (0 = no limit), in log order, merged across partitions, and whether more
    /// follow. One read transaction, so the result is a gap-free prefix of what follows
    /// `after`: on FoundationDB every commit at or below its read version is visible to it.
    ///
    /// With several partitions each is read up to a share of `limit` (not all of it, which
    /// would read `partitions` times what is returned); the merge then ends at the lowest
    /// last position among the partitions cut short, below which nothing can be missing.
    ///
    /// # Errors
    /// `Compacted` below the horizon; `Transform` when an event's object cannot be opened.
    pub async fn read_log(
        &self,
        after: Position,
        until: Option<Position>,
        limit: usize,
    ) -> Result<(Vec<Event>, bool)> {
        let (events, more) = self.read_log_stored(after, until, limit).await?;
        Ok((self.open_events(events)?, more))
    }

    /// [`Self::read_log`] with the objects in their stored form.
    pub(crate) async fn read_log_stored(
        &self,
        after: Position,
        until: Option<Position>,
        limit: usize,
    ) -> Result<(Vec<Event>, bool)> {
        let mut tx = self.kv.begin().await?;
        let horizon = self.read_horizon(tx.as_mut()).await?;
        if after < horizon {
            return Err(Error::Compacted {
                requested: after,
                horizon,
            });
        }
        // Another replica may have grown the partition count: read them all.
        self.refresh_partitions(tx.as_mut()).await?;
        let partitions = self.partitions();
        let max = if limit == 0 { usize::MAX } else { limit };
        let n = usize::from(partitions.max(1));
        let share = if n == 1 {
            max
        } else {
            max.div_ceil(n)
                .saturating_mul(READ_LOG_SHARE_FACTOR)
                .max(READ_LOG_SHARE_MIN_EVENTS)
                .min(max)
        };
        let mut merged: Vec<Event> = Vec::new();
        // The lowest last position of a partition that may hold more than was read.
        let mut cutoff: Option<Position> = None;
        for partition in 0..partitions {
            let begin = keys::log_after(partition, after);
            let end = match until {
                Some(u) => keys::log_after(partition, u),
                None => prefix_end(&keys::log_partition(partition)),
            };
            let (events, more) = scan_events(tx.as_mut(), begin, end, share).await?;
            if more && let Some(last) = events.last() {
                cutoff = Some(cutoff.map_or(last.position, |c| c.min(last.position)));
            }
            merged.extend(events);
        }
        if n > 1 {
            merged.sort_by_key(|e| e.position);
        }
        let mut more = false;
        if let Some(c) = cutoff {
            merged.retain(|e| e.position <= c);
            more = true;
        }
        if merged.len() > max {
            merged.truncate(max);
            more = true;
        }
        Ok((merged, more))
    }

    /// Every retained revision of one object, oldest first: at most
    /// [`REVISIONS_PAGE_ITEMS_MAX`] of them. Longer histories are read with
    /// [`Self::revisions_page`].
    ///
    /// # Errors
    /// `TooLarge` when the object has more revisions than one page holds.
    pub async fn revisions(&self, key: &ObjectKey) -> Result<Vec<Event>> {
        let (events, more) = self
            .revisions_page(key, Position::ZERO, REVISIONS_PAGE_ITEMS_MAX)
            .await?;
        if more {
            return Err(Error::TooLarge {
                what: "revision history",
                size: REVISIONS_PAGE_ITEMS_MAX + 1,
                limit: REVISIONS_PAGE_ITEMS_MAX,
            });
        }
        Ok(events)
    }

    /// One page of an object's retained revisions after `after`, oldest first: at most
    /// `limit` (capped at [`REVISIONS_PAGE_ITEMS_MAX`]), and whether more follow. Continue
    /// from the last event's position.
    pub async fn revisions_page(
        &self,
        key: &ObjectKey,
        after: Position,
        limit: usize,
    ) -> Result<(Vec<Event>, bool)> {
        let limit = limit.clamp(1, REVISIONS_PAGE_ITEMS_MAX);
        let mut tx = self.kv.begin().await?;
        let (b, e) = rev_range(key);
        let begin = match after.0.checked_add(1) {
            Some(n) if after > Position::ZERO => {
                let mut k = keys::rev(key);
                k.extend_from_slice(&Position(n).versionstamp().0);
                k
            }
            _ => b,
        };
        let page = tx
            .get_range(&RangeRequest::between(begin, e).limit(limit).snapshot(true))
            .await?;
        let wanted: Vec<(&ObjectKey, Position)> = page
            .kvs
            .iter()
            .filter_map(|kv| Versionstamp::from_slice(&kv.key[kv.key.len() - 10..]))
            .map(|vs| (key, Position::from_versionstamp(vs)))
            .collect();
        let events = self.read_events_of(tx.as_mut(), &wanted).await?;
        let out = wanted
            .into_iter()
            .zip(events)
            .map(|((_, p), e)| {
                e.map(|(_, e)| e).ok_or_else(|| Error::Corrupt {
                    location: format!("log position {p}"),
                    detail: format!("revision index of {key} points at a missing event"),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((self.open_events(out)?, page.more))
    }

    /// The object as of position `at`: the newest revision at or below it, or `None` if the
    /// object did not exist then (absent or deleted).
    pub async fn get_as_of(&self, key: &ObjectKey, at: Position) -> Result<Option<Event>> {
        let mut tx = self.kv.begin().await?;
        self.check_retained(tx.as_mut(), &key.resource, at).await?;
        let (b, _) = rev_range(key);
        let mut end = keys::rev(key);
        end.extend_from_slice(&Position(at.0.saturating_add(1)).versionstamp().0);
        let page = tx
            .get_range(
                &RangeRequest::between(b, end)
                    .limit(1)
                    .reverse(true)
                    .snapshot(true),
            )
            .await?;
        let Some(kv) = page.kvs.first() else {
            return Ok(None);
        };
        if EventType::from_byte(kv.value.first().copied().unwrap_or(0)) == Some(EventType::Deleted)
        {
            return Ok(None);
        }
        let vs = Versionstamp::from_slice(&kv.key[kv.key.len() - 10..]).ok_or_else(|| {
            Error::Corrupt {
                location: hex(&kv.key),
                detail: "short revision key".into(),
            }
        })?;
        self.read_event_at(tx.as_mut(), key, Position::from_versionstamp(vs))
            .await?
            .map(|e| self.open_event(e))
            .transpose()
    }

    /// Removes history at or below `horizon` that no read at or above it can need: every
    /// revision superseded by a newer one at or below the horizon, and every revision of an
    /// object whose newest such revision is a deletion. Each object's state at the horizon
    /// (so its current state) stays. Reads below the horizon then answer
    /// [`Error::Compacted`], as Kubernetes answers compacted resourceVersions with 410.
    ///
    /// Runs in batches of [`COMPACT_BATCH_EVENTS_MAX`] events per transaction, concurrently
    /// with writes; `progress` gets the number of events examined after each batch.
    ///
    /// # Errors
    /// `InvalidArgument` for a horizon beyond the head.
    pub async fn compact(
        &self,
        horizon: Position,
        mut progress: impl FnMut(u64),
    ) -> Result<CompactReport> {
        // Move the horizon first: from now on no reader asks for a state below it, so removing
        // entries there can never show a reader half-compacted history.
        let mut attempts = 0;
        loop {
            attempts += 1;
            let mut tx = self.kv.begin().await?;
            let head = self.read_head(tx.as_mut()).await?;
            if horizon > head {
                return Err(Error::InvalidArgument(format!(
                    "compaction horizon {horizon} is beyond the head {head}"
                )));
            }
            let current = tx
                .get(keys::META_HORIZON, false)
                .await?
                .map(|v| decode_u64("meta horizon", &v))
                .transpose()?
                .unwrap_or(0);
            if horizon.0 > current {
                tx.set(keys::META_HORIZON, &horizon.0.to_be_bytes());
            }
            match tx.commit().await {
                Ok(_) => break,
                Err(e) if e.is_retryable() && attempts < APPEND_RETRIES_MAX => continue,
                Err(e) => return Err(e),
            }
        }
        // Checkpoints covering what goes are removed first; events a retained checkpoint
        // covers stay (the bound per resource), so every retained checkpoint verifies.
        let bounds = self.release_all_checkpoints(horizon).await?;
        let mut report = CompactReport {
            horizon,
            ..CompactReport::default()
        };
        let mut examined = 0u64;
        for partition in 0..self.partitions() {
            let mut begin = keys::log_partition(partition);
            let end = keys::log_after(partition, horizon);
            loop {
                let mut tx = self.kv.begin().await?;
                let (events, more) = scan_events(
                    tx.as_mut(),
                    begin.clone(),
                    end.clone(),
                    COMPACT_BATCH_EVENTS_MAX,
                )
                .await?;
                for e in &events {
                    let bound = bounds.get(&e.key.resource).copied().unwrap_or(horizon);
                    if e.position > bound
                        || !self
                            .superseded_or_deleted(tx.as_mut(), &e.key, e.position, e.kind, horizon)
                            .await?
                    {
                        report.kept_events += 1;
                        continue;
                    }
                    Self::clear_event_entries(tx.as_mut(), partition, e);
                    report.removed_events += 1;
                }
                tx.commit().await?;
                examined += events.len() as u64;
                progress(examined);
                match (more, events.last()) {
                    (true, Some(last)) => begin = keys::log_after(partition, last.position),
                    _ => break,
                }
            }
        }
        Ok(report)
    }
}
