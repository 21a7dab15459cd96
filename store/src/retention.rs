//! Per-resource retention and checkpoints.
//!
//! Retention: [`EventLog::compact_resource`] moves one resource's horizon (`m horizon <res>`)
//! and removes that resource's history below it, keeping each object's state at the horizon
//! (so current objects are never removed). Other resources' history is untouched.
//!
//! Checkpoints: [`EventLog::write_checkpoints`] appends, per resource, a digest chained to
//! that resource's previous checkpoint over the resource's events since it:
//! `digest = sha256(prev_digest || for each event: position u64 BE || event hash)`, stored
//! under `k <res> <versionstamp of the last covered position>`. The chain is per resource so
//! that retention of one resource never leaves another's checkpoints unverifiable, and
//! compaction only removes events no retained checkpoint covers (see
//! [`EventLog::release_checkpoints`]): every retained checkpoint stays verifiable.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::keys::{self, ObjectKey};
use crate::kv::{RangeRequest, Transaction, prefix_end};
use crate::log::{APPEND_RETRIES_MAX, COMPACT_BATCH_EVENTS_MAX, CompactReport, EventLog, hex};
use crate::position::{Position, Versionstamp};
use crate::record::EventType;

/// Most events one checkpoint covers (one transaction reads them all; keeps it far below
/// FoundationDB's 10 MB / 5 s limits). A longer stretch gets several checkpoints.
pub const CHECKPOINT_EVENTS_MAX: usize = 4_096;

/// How far a resource's history is compacted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompactTo {
    /// Exactly this horizon.
    Horizon(Position),
    /// The newest event of the resource written at or before this time (Unix nanoseconds):
    /// the resource's log is walked from its horizon and stops at the first newer event.
    OlderThan { cutoff_unix_nanos: i64 },
}

/// One checkpoint of one resource's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub resource: String,
    /// The previous checkpoint's position (or where the chain starts: a horizon, or 0).
    pub prev_position: Position,
    /// The previous checkpoint's digest (zeros where the chain starts).
    pub prev_digest: [u8; 32],
    /// The last position covered.
    pub position: Position,
    /// How many events of the resource lie in `(prev_position, position]`.
    pub events: u64,
    pub digest: [u8; 32],
    pub timestamp_unix_nanos: i64,
}

/// The stored form of a checkpoint (MessagePack, field order is the format: append only).
#[derive(Serialize, Deserialize)]
struct CheckpointRecord {
    v: u8,
    prev_position: u64,
    #[serde(with = "serde_bytes")]
    prev_digest: Vec<u8>,
    position: u64,
    events: u64,
    #[serde(with = "serde_bytes")]
    digest: Vec<u8>,
    timestamp_unix_nanos: i64,
}

const CHECKPOINT_FORMAT_V1: u8 = 1;

/// Feeds one event into a checkpoint digest.
pub fn checkpoint_step(h: &mut Sha256, position: Position, event_hash: &[u8; 32]) {
    h.update(position.0.to_be_bytes());
    h.update(event_hash);
}

/// A hasher for a checkpoint's range, seeded with the previous checkpoint's digest.
pub fn checkpoint_hasher(prev_digest: &[u8; 32]) -> Sha256 {
    let mut h = Sha256::new();
    h.update(prev_digest);
    h
}

fn encode_checkpoint(c: &Checkpoint) -> Result<Vec<u8>> {
    rmp_serde::to_vec(&CheckpointRecord {
        v: CHECKPOINT_FORMAT_V1,
        prev_position: c.prev_position.0,
        prev_digest: c.prev_digest.to_vec(),
        position: c.position.0,
        events: c.events,
        digest: c.digest.to_vec(),
        timestamp_unix_nanos: c.timestamp_unix_nanos,
    })
    .map_err(|e| Error::InvalidArgument(e.to_string()))
}

/// Decodes the checkpoint stored under `key`, checking that the key names its position.
pub fn decode_checkpoint(key: &[u8], value: &[u8]) -> Result<Checkpoint> {
    let bad = |detail: String| Error::Corrupt {
        location: format!("checkpoint key {}", hex(key)),
        detail,
    };
    let (resource, rest) = keys::pop_str(key.get(1..).unwrap_or_default())
        .ok_or_else(|| bad("undecodable key".into()))?;
    let resource = String::from_utf8(resource).map_err(|_| bad("resource not UTF-8".into()))?;
    let vs = Versionstamp::from_slice(rest).ok_or_else(|| bad("short key".into()))?;
    let r: CheckpointRecord =
        rmp_serde::from_slice(value).map_err(|e| bad(format!("undecodable record: {e}")))?;
    let to32 = |v: &[u8]| <[u8; 32]>::try_from(v).ok();
    let (Some(prev_digest), Some(digest)) = (to32(&r.prev_digest), to32(&r.digest)) else {
        return Err(bad("digest fields are not 32 bytes".into()));
    };
    if r.v != CHECKPOINT_FORMAT_V1 || Position::from_versionstamp(vs).0 != r.position {
        return Err(bad(format!(
            "format {} at position {} under the key of position {}",
            r.v,
            r.position,
            Position::from_versionstamp(vs)
        )));
    }
    Ok(Checkpoint {
        resource,
        prev_position: Position(r.prev_position),
        prev_digest,
        position: Position(r.position),
        events: r.events,
        digest,
        timestamp_unix_nanos: r.timestamp_unix_nanos,
    })
}

fn now_unix_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// `t <res> <vs(p)>`.
fn res_log_at(resource: &str, p: Position) -> Vec<u8> {
    let mut k = keys::res_log(resource);
    k.extend_from_slice(&p.versionstamp().0);
    k
}

/// Decodes resource-log entries into (object, position).
fn res_log_entries(
    resource: &str,
    kvs: &[crate::kv::KeyValue],
) -> Result<Vec<(ObjectKey, Position)>> {
    let prefix_len = keys::res_log(resource).len();
    kvs.iter()
        .map(|kv| {
            let bad = || Error::Corrupt {
                location: hex(&kv.key),
                detail: "undecodable resource-log entry".into(),
            };
            let vs = Versionstamp::from_slice(kv.key.get(prefix_len..).ok_or_else(bad)?)
                .ok_or_else(bad)?;
            let (ns, rest) = keys::pop_str(&kv.value).ok_or_else(bad)?;
            let (name, _) = keys::pop_str(rest).ok_or_else(bad)?;
            let ns = String::from_utf8(ns).map_err(|_| bad())?;
            let name = String::from_utf8(name).map_err(|_| bad())?;
            Ok((
                ObjectKey::new(resource, ns, name),
                Position::from_versionstamp(vs),
            ))
        })
        .collect()
}

impl EventLog {
    /// Every resource that has a log (`t <res>`), by a skip scan: one range read per
    /// resource, whatever its size.
    pub async fn resources(&self) -> Result<Vec<String>> {
        let mut tx = self.kv.begin().await?;
        let mut out = Vec::new();
        let mut begin = vec![keys::RES_LOG];
        let end = prefix_end(&[keys::RES_LOG]);
        loop {
            let page = tx
                .get_range(
                    &RangeRequest::between(begin.clone(), end.clone())
                        .limit(1)
                        .snapshot(true),
                )
                .await?;
            let Some(kv) = page.kvs.first() else { break };
            let (res, _) = keys::pop_str(&kv.key[1..]).ok_or_else(|| Error::Corrupt {
                location: hex(&kv.key),
                detail: "undecodable resource-log key".into(),
            })?;
            let res = String::from_utf8(res).map_err(|_| Error::Corrupt {
                location: hex(&kv.key),
                detail: "resource is not UTF-8".into(),
            })?;
            begin = prefix_end(&keys::res_log(&res));
            out.push(res);
        }
        Ok(out)
    }

    /// The retained checkpoints of `resource`, oldest first.
    pub async fn checkpoints(&self, resource: &str) -> Result<Vec<Checkpoint>> {
        self.checkpoints_under(&keys::checkpoint_scope(resource))
            .await
    }

    /// Every retained checkpoint of every resource, ordered by resource then position.
    pub async fn all_checkpoints(&self) -> Result<Vec<Checkpoint>> {
        self.checkpoints_under(&[keys::CHECKPOINT]).await
    }

    async fn checkpoints_under(&self, prefix: &[u8]) -> Result<Vec<Checkpoint>> {
        let mut tx = self.kv.begin().await?;
        let mut req = RangeRequest::prefix(prefix).snapshot(true);
        let mut out = Vec::new();
        loop {
            let page = tx.get_range(&req).await?;
            for kv in &page.kvs {
                out.push(decode_checkpoint(&kv.key, &kv.value)?);
            }
            match req.continue_after(&page) {
                Some(next) => req = next,
                None => break,
            }
        }
        Ok(out)
    }

    /// Writes checkpoints for every resource with events newer than its last checkpoint;
    /// returns how many were written.
    ///
    /// Safe to run on several servers at once: each checkpoint's transaction reads the
    /// previous checkpoint and the resource's horizon serializably, so two writers extending
    /// the same chain (or a compaction moving the horizon) conflict and one retries.
    pub async fn write_checkpoints(&self) -> Result<u64> {
        let mut written = 0;
        for resource in self.resources().await? {
            while self.write_checkpoint(&resource).await?.is_some() {
                written += 1;
            }
        }
        Ok(written)
    }

    /// Writes one checkpoint of `resource` covering up to [`CHECKPOINT_EVENTS_MAX`] of its
    /// events after its previous checkpoint; `None` when there are none.
    pub async fn write_checkpoint(&self, resource: &str) -> Result<Option<Checkpoint>> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self.try_write_checkpoint(resource).await {
                Err(e) if e.is_retryable() && attempts < APPEND_RETRIES_MAX => continue,
                other => return other,
            }
        }
    }

    async fn try_write_checkpoint(&self, resource: &str) -> Result<Option<Checkpoint>> {
        let mut tx = self.kv.begin().await?;
        // Serializable: a compaction moving the horizon, or another writer extending the
        // chain, conflicts with this transaction.
        let horizon = self
            .read_resource_horizon(tx.as_mut(), resource, false)
            .await?;
        let scope = keys::checkpoint_scope(resource);
        let newest = tx
            .get_range(
                &RangeRequest::prefix(&scope)
                    .limit(1)
                    .reverse(true)
                    .snapshot(false),
            )
            .await?;
        // A new chain starts at the horizon: events at or below it may be removed by
        // retention, so no checkpoint may cover them.
        let (prev_position, prev_digest) = match newest.kvs.first() {
            Some(kv) => {
                let c = decode_checkpoint(&kv.key, &kv.value)?;
                (c.position, c.digest)
            }
            None => (horizon, [0u8; 32]),
        };
        let Some(begin) = prev_position.0.checked_add(1) else {
            return Ok(None);
        };
        let page = tx
            .get_range(
                &RangeRequest::between(
                    res_log_at(resource, Position(begin)),
                    prefix_end(&keys::res_log(resource)),
                )
                .limit(CHECKPOINT_EVENTS_MAX)
                .snapshot(true),
            )
            .await?;
        let wanted = res_log_entries(resource, &page.kvs)?;
        let Some(&(_, last)) = wanted.last() else {
            return Ok(None);
        };
        let places: Vec<(&ObjectKey, Position)> = wanted.iter().map(|(k, p)| (k, *p)).collect();
        let events: Vec<Option<crate::record::Event>> = self
            .read_events_of(tx.as_mut(), &places)
            .await?
            .into_iter()
            .map(|e| e.map(|(_, e)| e))
            .collect();
        let mut h = checkpoint_hasher(&prev_digest);
        for ((key, p), e) in wanted.iter().zip(&events) {
            let e = e.as_ref().ok_or_else(|| Error::Corrupt {
                location: format!("log position {p}"),
                detail: format!("the resource log names an event of {key} that is missing"),
            })?;
            checkpoint_step(&mut h, *p, &e.hash);
        }
        let c = Checkpoint {
            resource: resource.to_string(),
            prev_position,
            prev_digest,
            position: last,
            events: wanted.len() as u64,
            digest: h.finalize().into(),
            timestamp_unix_nanos: now_unix_nanos(),
        };
        tx.set(&keys::checkpoint(resource, last), &encode_checkpoint(&c)?);
        tx.commit().await?;
        Ok(Some(c))
    }

    /// Removes the checkpoints of `resource` that compaction to `horizon` makes
    /// unverifiable, and returns the bound at or below which its events may be removed,
    /// with the number of checkpoints removed.
    ///
    /// The bound is the newest checkpoint position at or below `horizon` (or where the chain
    /// starts, or `horizon` when the resource has no checkpoints): events above it are
    /// covered by a checkpoint that stays, so they stay too. Every retained checkpoint then
    /// covers only retained events and verifies.
    pub async fn release_checkpoints(
        &self,
        resource: &str,
        horizon: Position,
    ) -> Result<(Position, u64)> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let mut tx = self.kv.begin().await?;
            let scope = keys::checkpoint_scope(resource);
            let first = tx
                .get_range(&RangeRequest::prefix(&scope).limit(1).snapshot(false))
                .await?;
            let Some(first) = first.kvs.first() else {
                return Ok((horizon, 0));
            };
            let first = decode_checkpoint(&first.key, &first.value)?;
            let below = tx
                .get_range(
                    &RangeRequest::between(
                        scope.clone(),
                        keys::checkpoint(resource, Position(horizon.0.saturating_add(1))),
                    )
                    .reverse(true)
                    .limit(1)
                    .snapshot(false),
                )
                .await?;
            let bound = match below.kvs.first() {
                Some(kv) => decode_checkpoint(&kv.key, &kv.value)?.position,
                None => first.prev_position.min(horizon),
            };
            // Count what goes (a range read of keys only would do; checkpoints are few).
            let gone = tx
                .get_range(
                    &RangeRequest::between(
                        scope.clone(),
                        keys::checkpoint(resource, Position(bound.0.saturating_add(1))),
                    )
                    .snapshot(true),
                )
                .await?
                .kvs
                .len() as u64;
            tx.clear_range(
                &scope,
                &keys::checkpoint(resource, Position(bound.0.saturating_add(1))),
            );
            match tx.commit().await {
                Ok(_) => return Ok((bound, gone)),
                Err(e) if e.is_retryable() && attempts < APPEND_RETRIES_MAX => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// [`Self::release_checkpoints`] for every resource that has checkpoints.
    pub(crate) async fn release_all_checkpoints(
        &self,
        horizon: Position,
    ) -> Result<HashMap<String, Position>> {
        let mut resources: Vec<String> = Vec::new();
        for c in self.all_checkpoints().await? {
            if resources.last() != Some(&c.resource) {
                resources.push(c.resource);
            }
        }
        let mut bounds = HashMap::new();
        for r in resources {
            let (bound, _) = self.release_checkpoints(&r, horizon).await?;
            bounds.insert(r, bound);
        }
        Ok(bounds)
    }

    /// Compacts one resource's history: moves its horizon (`m horizon <res>`; reads of the
    /// resource below it then answer [`Error::Compacted`]), then walks the resource's log
    /// from its start in transactions of [`COMPACT_BATCH_EVENTS_MAX`] events and removes
    /// each event superseded by a newer revision of its object at or below the horizon, or
    /// that is a deletion. Each object's state at the horizon stays, so current objects are
    /// never removed; other resources are untouched. Events covered by a retained checkpoint
    /// stay too (see [`Self::release_checkpoints`]) until a later run.
    ///
    /// `progress` gets the number of events examined after each batch.
    ///
    /// # Errors
    /// `InvalidArgument` for a horizon beyond the head.
    pub async fn compact_resource(
        &self,
        resource: &str,
        to: CompactTo,
        mut progress: impl FnMut(u64),
    ) -> Result<CompactReport> {
        let current = self.resource_horizon(resource).await?;
        let target = match to {
            CompactTo::Horizon(h) => h,
            CompactTo::OlderThan { cutoff_unix_nanos } => {
                let mut h = current;
                'walk: loop {
                    let events = self
                        .read_resource_log_stored(
                            resource,
                            None,
                            h,
                            None,
                            COMPACT_BATCH_EVENTS_MAX,
                            true,
                        )
                        .await?;
                    for e in &events {
                        if e.timestamp_unix_nanos > cutoff_unix_nanos {
                            break 'walk;
                        }
                        h = e.position;
                    }
                    if events.len() < COMPACT_BATCH_EVENTS_MAX {
                        break;
                    }
                }
                h
            }
        };
        // Move the horizon first: from then on no reader asks for a state of this resource
        // below it, so removing entries there never shows a reader half-compacted history.
        let mut attempts = 0;
        let horizon = loop {
            attempts += 1;
            let mut tx = self.kv.begin().await?;
            let head = self.read_head(tx.as_mut()).await?;
            if target > head {
                return Err(Error::InvalidArgument(format!(
                    "compaction horizon {target} is beyond the head {head}"
                )));
            }
            let key = keys::resource_horizon(resource);
            let own = match tx.get(&key, false).await? {
                Some(v) => Position(crate::log::decode_u64("meta horizon of a resource", &v)?),
                None => Position::ZERO,
            };
            if target > own {
                tx.set(&key, &target.0.to_be_bytes());
            }
            match tx.commit().await {
                Ok(_) => break target.max(current),
                Err(e) if e.is_retryable() && attempts < APPEND_RETRIES_MAX => continue,
                Err(e) => return Err(e),
            }
        };
        let (bound, removed_checkpoints) = self.release_checkpoints(resource, horizon).await?;
        let mut report = CompactReport {
            horizon,
            removed_checkpoints,
            ..CompactReport::default()
        };
        if bound == Position::ZERO {
            return Ok(report);
        }
        let end = res_log_at(resource, Position(bound.0.saturating_add(1)));
        let mut begin = keys::res_log(resource);
        let mut examined = 0u64;
        loop {
            let mut tx = self.kv.begin().await?;
            let page = tx
                .get_range(
                    &RangeRequest::between(begin.clone(), end.clone())
                        .limit(COMPACT_BATCH_EVENTS_MAX)
                        .snapshot(true),
                )
                .await?;
            let wanted = res_log_entries(resource, &page.kvs)?;
            let places: Vec<(&ObjectKey, Position)> = wanted.iter().map(|(k, p)| (k, *p)).collect();
            let events = self.read_events_of(tx.as_mut(), &places).await?;
            for ((key, p), found) in wanted.iter().zip(&events) {
                let Some((partition, e)) = found else {
                    return Err(Error::Corrupt {
                        location: format!("log position {p}"),
                        detail: format!(
                            "the resource log of {resource} names an event of {key} that is missing"
                        ),
                    });
                };
                if self
                    .superseded_or_deleted(tx.as_mut(), key, *p, e.kind, horizon)
                    .await?
                {
                    Self::clear_event_entries(tx.as_mut(), *partition, e);
                    report.removed_events += 1;
                } else {
                    report.kept_events += 1;
                }
            }
            tx.commit().await?;
            examined += wanted.len() as u64;
            progress(examined);
            match wanted.last() {
                Some(&(_, last)) if page.more => begin = res_log_at(resource, Position(last.0 + 1)),
                _ => break,
            }
        }
        Ok(report)
    }

    /// True when the revision of `key` at `p` is not the object's state at `horizon`: a newer
    /// revision exists at or below it, or this revision is a deletion.
    pub(crate) async fn superseded_or_deleted(
        &self,
        tx: &mut dyn Transaction,
        key: &ObjectKey,
        p: Position,
        kind: EventType,
        horizon: Position,
    ) -> Result<bool> {
        if kind == EventType::Deleted {
            return Ok(true);
        }
        let mut from = keys::rev(key);
        from.extend_from_slice(&Position(p.0.saturating_add(1)).versionstamp().0);
        let mut to = keys::rev(key);
        to.extend_from_slice(&Position(horizon.0.saturating_add(1)).versionstamp().0);
        if from >= to {
            return Ok(false);
        }
        let newer = tx
            .get_range(&RangeRequest::between(from, to).limit(1).snapshot(true))
            .await?;
        Ok(!newer.kvs.is_empty())
    }

    /// The per-resource horizons that were ever set (`m horizon <res>`), by resource.
    pub async fn resource_horizons(&self) -> Result<HashMap<String, Position>> {
        let mut tx = self.kv.begin().await?;
        let mut begin = keys::META_HORIZON.to_vec();
        begin.push(0);
        let end = prefix_end(keys::META_HORIZON);
        let page = tx
            .get_range(&RangeRequest::between(begin, end).snapshot(true))
            .await?;
        let mut out = HashMap::new();
        for kv in page.kvs {
            let rest = &kv.key[keys::META_HORIZON.len()..];
            let Some((res, _)) = keys::pop_str(rest) else {
                continue;
            };
            let Ok(res) = String::from_utf8(res) else {
                continue;
            };
            out.insert(
                res,
                Position(crate::log::decode_u64(
                    "meta horizon of a resource",
                    &kv.value,
                )?),
            );
        }
        Ok(out)
    }
}
