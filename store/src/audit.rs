//! Verification of the log: tamper evidence re-derived from the stored bytes.
//!
//! One pass over the log in position order re-derives every event hash from the stored
//! bytes, every per-object chain link (a chain may start at a compacted horizon), and every
//! checkpoint digest (per resource, chained; see [`crate::retention`]). A full check also
//! compares the current-state projection with the newest revision of every object.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::keys::{self, ObjectKey};
use crate::kv::{RangeRequest, Transaction, prefix_end};
use crate::log::{EventLog, SCAN_PAGE_KVS, VerifyReport, VerifyScope, hex, join_parts};
use crate::position::{Position, Versionstamp};
use crate::record::{self, Event};
use crate::retention::{Checkpoint, checkpoint_hasher, checkpoint_step};

fn broken(e: &Event, detail: impl Into<String>) -> Error {
    Error::Corrupt {
        location: format!("log position {}, object {}", e.position, e.key),
        detail: detail.into(),
    }
}

/// One resource's retained checkpoints and the digest being re-derived.
struct Chain {
    checkpoints: Vec<Checkpoint>,
    next: usize,
    hasher: Option<Sha256>,
    events: u64,
}

impl Chain {
    fn finish_current(&mut self) -> Result<()> {
        let Some(c) = self.checkpoints.get(self.next) else {
            return Ok(());
        };
        let digest: [u8; 32] = self
            .hasher
            .take()
            .unwrap_or_else(|| checkpoint_hasher(&c.prev_digest))
            .finalize()
            .into();
        if digest != c.digest || self.events != c.events {
            return Err(Error::Corrupt {
                location: format!(
                    "checkpoint of {} at log position {}",
                    c.resource, c.position
                ),
                detail: format!(
                    "the log's {} events of {} in ({}, {}] do not give the recorded digest ({} events)",
                    self.events, c.resource, c.prev_position, c.position, c.events
                ),
            });
        }
        self.next += 1;
        self.events = 0;
        Ok(())
    }

    fn feed(&mut self, position: Position, hash: &[u8; 32]) -> Result<()> {
        while let Some(c) = self.checkpoints.get(self.next) {
            if position <= c.prev_position {
                return Ok(()); // before the chain starts (compacted, or not yet covered)
            }
            if position > c.position {
                self.finish_current()?;
                continue;
            }
            let h = self
                .hasher
                .get_or_insert_with(|| checkpoint_hasher(&c.prev_digest));
            checkpoint_step(h, position, hash);
            self.events += 1;
            return Ok(());
        }
        Ok(())
    }
}

/// Every resource's checkpoint chain, checked link by link before any event is read.
struct Checkpoints {
    chains: HashMap<String, Chain>,
    total: u64,
}

impl Checkpoints {
    fn new(all: Vec<Checkpoint>, horizon_of: impl Fn(&str) -> Position) -> Result<Self> {
        let total = all.len() as u64;
        let mut by_resource: HashMap<String, Vec<Checkpoint>> = HashMap::new();
        for c in all {
            by_resource.entry(c.resource.clone()).or_default().push(c);
        }
        let mut chains = HashMap::new();
        for (resource, cs) in by_resource {
            let horizon = horizon_of(&resource);
            if let Some(first) = cs.first()
                && first.prev_position > horizon
            {
                return Err(Error::Corrupt {
                    location: format!(
                        "checkpoint of {resource} at log position {}",
                        first.position
                    ),
                    detail: format!(
                        "the chain starts after position {} but the resource's horizon is {horizon}: earlier checkpoints are missing",
                        first.prev_position
                    ),
                });
            }
            for pair in cs.windows(2) {
                let (a, b) = (&pair[0], &pair[1]);
                if b.prev_position != a.position || b.prev_digest != a.digest {
                    return Err(Error::Corrupt {
                        location: format!(
                            "checkpoint of {resource} at log position {}",
                            b.position
                        ),
                        detail: format!(
                            "does not link to the previous retained checkpoint at {} (it names {})",
                            a.position, b.prev_position
                        ),
                    });
                }
            }
            chains.insert(
                resource,
                Chain {
                    checkpoints: cs,
                    next: 0,
                    hasher: None,
                    events: 0,
                },
            );
        }
        Ok(Checkpoints { chains, total })
    }

    fn feed(&mut self, resource: &str, position: Position, hash: &[u8; 32]) -> Result<()> {
        match self.chains.get_mut(resource) {
            Some(chain) => chain.feed(position, hash),
            None => Ok(()),
        }
    }

    fn finish(mut self) -> Result<u64> {
        // Report the lowest broken checkpoint first.
        let mut resources: Vec<&String> = self.chains.keys().collect();
        resources.sort();
        let resources: Vec<String> = resources.into_iter().cloned().collect();
        for r in resources {
            if let Some(chain) = self.chains.get_mut(&r) {
                while chain.next < chain.checkpoints.len() {
                    chain.finish_current()?;
                }
            }
        }
        Ok(self.total)
    }
}

impl EventLog {
    /// Which object the log's entry at `position` belongs to, from the resource logs (used
    /// to name the object when the event itself no longer decodes).
    async fn object_at(&self, position: Position) -> Option<ObjectKey> {
        let resources = self.resources().await.ok()?;
        let mut tx = self.kv.begin().await.ok()?;
        for r in resources {
            let mut k = keys::res_log(&r);
            k.extend_from_slice(&position.versionstamp().0);
            if let Ok(Some(v)) = tx.get(&k, true).await {
                let (ns, rest) = keys::pop_str(&v)?;
                let (name, _) = keys::pop_str(rest)?;
                return Some(ObjectKey::new(
                    r,
                    String::from_utf8(ns).ok()?,
                    String::from_utf8(name).ok()?,
                ));
            }
        }
        None
    }

    /// Checks the log: every record's framing and checksum, every event's hash (re-derived
    /// from the stored bytes), every per-object hash-chain link (a chain may start at a
    /// compacted horizon, nowhere else), that the head names the newest event, and on a
    /// full check every checkpoint digest and that the current state is the newest revision
    /// of every object. Calls `progress` with the number of events checked every
    /// [`SCAN_PAGE_KVS`] keys.
    ///
    /// # Errors
    /// [`Error::Corrupt`] naming the first broken link: its log position and object, or the
    /// checkpoint.
    pub async fn verify(
        &self,
        scope: VerifyScope,
        mut progress: impl FnMut(u64),
    ) -> Result<VerifyReport> {
        let global_horizon = self.horizon().await?;
        let own_horizons = self.resource_horizons().await?;
        let horizon_of = |r: &str| {
            own_horizons
                .get(r)
                .copied()
                .unwrap_or(Position::ZERO)
                .max(global_horizon)
        };
        let mut checkpoints = match scope {
            VerifyScope::Full => Some(Checkpoints::new(self.all_checkpoints().await?, horizon_of)?),
            VerifyScope::Tail(_) => None,
        };
        // Several partitions interleave positions: their checkpoint feeds are sorted first.
        let mut deferred: Vec<(String, Position, [u8; 32])> = Vec::new();
        let mut tx = self.kv.begin().await?;
        let head = self.read_head(tx.as_mut()).await?;
        let mut report = VerifyReport {
            head,
            ..VerifyReport::default()
        };
        let mut newest = Position::ZERO;
        // The newest revision seen per object, to check chain links.
        let mut last_hash: HashMap<ObjectKey, (Position, [u8; 32])> = HashMap::new();
        // After a growth one object's revisions may sit in several partitions, so the scan
        // meets them out of order: each link is then checked by reading its previous event.
        let grown = self.has_grown();
        for partition in 0..self.partitions() {
            let pprefix = keys::log_partition(partition);
            let end = prefix_end(&pprefix);
            let mut begin = match scope {
                VerifyScope::Full => pprefix.clone(),
                VerifyScope::Tail(n) => tail_start(tx.as_mut(), &pprefix, &end, n).await?,
            };
            loop {
                let (events, more) =
                    match scan_verified(tx.as_mut(), begin.clone(), end.clone()).await {
                        Ok(r) => r,
                        Err(Error::Corrupt { location, detail }) => {
                            return Err(self.name_object(location, detail).await);
                        }
                        Err(e) => return Err(e),
                    };
                let had_events = !events.is_empty();
                if let Some((last, _)) = events.last() {
                    begin = keys::log_after(partition, last.position);
                }
                for (ev, hash_ok) in events {
                    let e = &ev;
                    if !hash_ok {
                        return Err(broken(e, "event hash does not match its stored bytes"));
                    }
                    let seen = if grown { None } else { last_hash.get(&e.key) };
                    let expected_prev = match (e.prev_position, seen) {
                        (None, _) => Some([0u8; 32]),
                        (Some(p), Some((seen_p, h))) if *seen_p == p => Some(*h),
                        (Some(p), Some((seen_p, _))) => {
                            return Err(broken(
                                e,
                                format!(
                                    "previous revision is {p} but the log's previous revision of the object is {seen_p}"
                                ),
                            ));
                        }
                        (Some(p), None) => {
                            match self.read_event_at(tx.as_mut(), &e.key, p).await? {
                                Some(prev) => Some(prev.hash),
                                // The chain may start at a compacted horizon, nowhere else.
                                None if p < horizon_of(&e.key.resource) => None,
                                None if scope != VerifyScope::Full => None,
                                None => {
                                    return Err(broken(
                                        e,
                                        format!(
                                            "previous revision {p} is missing above the horizon {}",
                                            horizon_of(&e.key.resource)
                                        ),
                                    ));
                                }
                            }
                        }
                    };
                    if let Some(h) = expected_prev
                        && h != e.prev_hash
                    {
                        return Err(broken(
                            e,
                            "hash chain broken: does not link to the previous revision",
                        ));
                    }
                    if let Some(c) = checkpoints.as_mut() {
                        if self.partitions() == 1 {
                            c.feed(&e.key.resource, e.position, &e.hash)?;
                        } else {
                            deferred.push((e.key.resource.clone(), e.position, e.hash));
                        }
                    }
                    newest = newest.max(e.position);
                    report.events += 1;
                    // Each event is the previous revision of the next one of its object, also
                    // within this page (moved in: no clone of the key per event).
                    let entry = (ev.position, ev.hash);
                    match last_hash.get_mut(&ev.key) {
                        Some(slot) if slot.0 < entry.0 => *slot = entry,
                        Some(_) => {}
                        None => {
                            last_hash.insert(ev.key, entry);
                        }
                    }
                }
                progress(report.events);
                if !more || !had_events {
                    break;
                }
            }
        }
        if let Some(mut c) = checkpoints {
            deferred.sort_by_key(|d| d.1);
            for (r, p, h) in &deferred {
                c.feed(r, *p, h)?;
            }
            report.checkpoints = c.finish()?;
        }
        report.objects = last_hash.len() as u64;
        if scope == VerifyScope::Full {
            self.check_current_state(tx.as_mut(), &last_hash).await?;
        }
        // The head's own event may be compacted away (a deletion at or below a horizon).
        let head_compacted =
            newest < head && (head <= global_horizon || own_horizons.values().any(|h| head <= *h));
        if newest != head
            && !head_compacted
            && !(newest == Position::ZERO && scope != VerifyScope::Full)
        {
            return Err(Error::Corrupt {
                location: format!("log position {head}"),
                detail: format!(
                    "the head names position {head} but the newest event is at {newest}"
                ),
            });
        }
        Ok(report)
    }

    /// Adds the object a damaged log entry belongs to, when the resource logs know it.
    async fn name_object(&self, location: String, detail: String) -> Error {
        let position = location
            .strip_prefix("log position ")
            .and_then(|p| p.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|p| p.parse::<u64>().ok());
        let location = match position {
            Some(p) => match self.object_at(Position(p)).await {
                Some(key) => format!("log position {p}, object {key}"),
                None => location,
            },
            None => location,
        };
        Error::Corrupt { location, detail }
    }

    /// The current-state projection must be the fold of the log: every object record
    /// decodes, and names the newest revision of its object.
    async fn check_current_state(
        &self,
        tx: &mut dyn Transaction,
        last_hash: &HashMap<ObjectKey, (Position, [u8; 32])>,
    ) -> Result<()> {
        let begin = vec![keys::OBJ];
        let end = prefix_end(&begin);
        let mut bad: Option<Error> = None;
        crate::log::scan_groups(tx, begin, end, 0, true, |key, parts| {
            let Some((_, value)) = parts.first() else {
                return Ok(true);
            };
            let (okey, _) = ObjectKey::decode(&key[1..]).ok_or_else(|| Error::Corrupt {
                location: hex(key),
                detail: "undecodable object key".into(),
            })?;
            let o = record::decode_object(okey, value)?;
            match last_hash.get(&o.key) {
                Some((p, h)) if *p == o.position && *h == o.hash => Ok(true),
                _ => {
                    bad = Some(Error::Corrupt {
                        location: format!("log position {}, object {}", o.position, o.key),
                        detail: "the current state is not the newest revision in the log".into(),
                    });
                    Ok(false)
                }
            }
        })
        .await?;
        match bad {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// The first key of the newest `n` events of a partition.
async fn tail_start(
    tx: &mut dyn Transaction,
    pprefix: &[u8],
    end: &[u8],
    n: usize,
) -> Result<Vec<u8>> {
    // Walk back n events from the end, chunk keys included.
    let page = tx
        .get_range(
            &RangeRequest::between(pprefix.to_vec(), end.to_vec())
                .limit(n.saturating_mul(2).max(1))
                .reverse(true)
                .snapshot(true),
        )
        .await?;
    let mut starts: Vec<Vec<u8>> = page
        .kvs
        .iter()
        .filter(|kv| kv.key.ends_with(&[0, 0]))
        .map(|kv| kv.key.clone())
        .collect();
    starts.truncate(n.max(1));
    Ok(starts.pop().unwrap_or_else(|| pprefix.to_vec()))
}

/// One page (about [`SCAN_PAGE_KVS`] keys) of whole events from `begin`, each decoded with
/// its stored-bytes hash re-derived, and whether more follow.
async fn scan_verified(
    tx: &mut dyn Transaction,
    begin: Vec<u8>,
    end: Vec<u8>,
) -> Result<(Vec<(Event, bool)>, bool)> {
    let mut out = Vec::new();
    let more = crate::log::scan_groups(tx, begin, end, 2, true, |prefix, parts| {
        if out.len() >= SCAN_PAGE_KVS {
            return Ok(false);
        }
        let vs = Versionstamp::from_slice(&prefix[keys::LOG_VS_OFFSET..]).ok_or_else(|| {
            Error::Corrupt {
                location: hex(prefix),
                detail: "short log key".into(),
            }
        })?;
        let position = Position::checked_from_versionstamp(vs).ok_or_else(|| Error::Corrupt {
            location: hex(prefix),
            detail: "log key holds a version past the position horizon".into(),
        })?;
        let decoded = if parts.len() == 1 {
            record::decode_event_verified(position, &parts[0].1)?
        } else {
            let bytes = join_parts(&format!("log position {position}"), &parts)?;
            record::decode_event_verified(position, &bytes)?
        };
        out.push(decoded);
        Ok(true)
    })
    .await?;
    Ok((out, more))
}
