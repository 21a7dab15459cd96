//! History reads for auditors: the change feed (one object's revisions, one user's changes,
//! one resource's, or the whole log) in either direction with a cursor, and the position the
//! log had reached at a moment in time.
//!
//! Each feed reads the narrowest index that answers it (`r` for one object, `u` for one
//! user, `t` for one resource, `l` otherwise) and filters the rest on the decoded events, so
//! "everything alice changed" costs alice's events, not the cluster's.

use super::*;

/// Most index entries one change-feed page examines. A page with filters that match little
/// may end with fewer items than asked and a cursor, as Kubernetes lists may.
pub const CHANGES_SCAN_ENTRIES_MAX: usize = 100_000;
/// Most items one change-feed page returns, whatever the caller asks.
pub const CHANGES_PAGE_ITEMS_MAX: usize = 10_000;
/// Index entries read per step of a change-feed scan.
const CHANGES_BATCH_ENTRIES: usize = 512;
/// Most events the time lookup reads after the newest indexed second before the time (the
/// events of about one second).
pub const TIME_SCAN_EVENTS_MAX: usize = 1_000_000;
/// Events read per step of the time lookup.
const TIME_SCAN_BATCH_EVENTS: usize = 1_024;

/// Which changes a feed returns. Every set field must match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChangeFilter {
    /// The user who made the change.
    pub user: Option<String>,
    /// The store's resource name (e.g. `apps/deployments`).
    pub resource: Option<String>,
    /// Only objects in this namespace ("" for cluster-scoped objects).
    pub namespace: Option<String>,
    /// One object (needs `resource`; `namespace` defaults to "").
    pub name: Option<String>,
    /// The verbs (`create`, `update`, `patch`, `delete`, …); empty = all. An event's verb
    /// matches on its part before the first `;` (the API appends `;fieldManager=…`).
    pub verbs: Vec<String>,
    /// Only changes after this position (exclusive).
    pub after: Position,
    /// Only changes at or before this position.
    pub until: Option<Position>,
}

/// The direction of a feed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    NewestFirst,
    OldestFirst,
}

/// One page of a change feed.
#[derive(Clone, Debug, Default)]
pub struct ChangePage {
    pub events: Vec<Event>,
    /// Present when the feed may hold more: pass it back as `cursor` for the next page.
    pub cursor: Option<Position>,
    /// Index entries examined for this page.
    pub examined: usize,
}

/// Where a feed's candidates come from.
enum Source {
    /// An index whose keys end in a versionstamp: `prefix` + vs.
    Index { prefix: Vec<u8>, kind: IndexKind },
    /// The log itself, every partition.
    Log,
}

#[derive(Clone, Copy)]
enum IndexKind {
    /// `r <res> <ns> <name>`: the key is known.
    Object,
    /// `u <user>`: the value holds res, ns, name.
    User,
    /// `t <res>`: the value holds ns, name.
    Resource,
}

impl ChangeFilter {
    fn source(&self) -> Source {
        if let (Some(res), Some(name)) = (&self.resource, &self.name) {
            let key = ObjectKey::new(res, self.namespace.clone().unwrap_or_default(), name);
            return Source::Index {
                prefix: keys::rev(&key),
                kind: IndexKind::Object,
            };
        }
        if let Some(user) = &self.user {
            return Source::Index {
                prefix: keys::user_log(user),
                kind: IndexKind::User,
            };
        }
        if let Some(res) = &self.resource {
            return Source::Index {
                prefix: keys::res_log(res),
                kind: IndexKind::Resource,
            };
        }
        Source::Log
    }

    /// Whether an object key can match (before reading its event).
    fn key_matches(&self, key: &ObjectKey) -> bool {
        self.resource.as_ref().is_none_or(|r| *r == key.resource)
            && self.namespace.as_ref().is_none_or(|n| *n == key.namespace)
            && self.name.as_ref().is_none_or(|n| *n == key.name)
    }

    fn matches(&self, e: &Event) -> bool {
        self.key_matches(&e.key)
            && self.user.as_ref().is_none_or(|u| *u == e.actor.user)
            && (self.verbs.is_empty() || {
                let verb = e.verb.split(';').next().unwrap_or("");
                self.verbs.iter().any(|v| v == verb)
            })
            && e.position > self.after
            && self.until.is_none_or(|u| e.position <= u)
    }
}

/// One candidate event: where it is, and its object when the index says.
struct Candidate {
    partition: u16,
    position: Position,
    key: Option<ObjectKey>,
}

impl EventLog {
    /// One page of changes matching `filter`, in `order`, continuing after `cursor` (a
    /// previous page's cursor). At most `limit` events (capped at
    /// [`CHANGES_PAGE_ITEMS_MAX`]); at most [`CHANGES_SCAN_ENTRIES_MAX`] entries examined.
    ///
    /// # Errors
    /// Store errors; [`Error::Corrupt`] when an index names a missing event.
    pub async fn changes(
        &self,
        filter: &ChangeFilter,
        order: Order,
        cursor: Option<Position>,
        limit: usize,
    ) -> Result<ChangePage> {
        let mut page = self.changes_stored(filter, order, cursor, limit).await?;
        page.events = self.open_events(std::mem::take(&mut page.events))?;
        Ok(page)
    }

    async fn changes_stored(
        &self,
        filter: &ChangeFilter,
        order: Order,
        cursor: Option<Position>,
        limit: usize,
    ) -> Result<ChangePage> {
        let limit = limit.clamp(1, CHANGES_PAGE_ITEMS_MAX);
        let newest_first = order == Order::NewestFirst;
        // The open interval (lo, hi] still to read.
        let mut lo = filter.after;
        let mut hi = filter.until.unwrap_or(Position(u64::MAX >> 1));
        if let Some(c) = cursor {
            if newest_first {
                hi = hi.min(Position(c.0.saturating_sub(1)));
            } else {
                lo = lo.max(c);
            }
        }
        let source = filter.source();
        let mut tx = self.kv.begin().await?;
        let mut page = ChangePage::default();
        loop {
            if lo >= hi {
                return Ok(page);
            }
            let (batch, exhausted) = self
                .candidates(tx.as_mut(), &source, lo, hi, newest_first)
                .await?;
            let Some(last) = batch.last().map(|c| c.position) else {
                return Ok(page);
            };
            let wanted: Vec<&Candidate> = batch
                .iter()
                .filter(|c| c.key.as_ref().is_none_or(|k| filter.key_matches(k)))
                .collect();
            let places: Vec<(u16, Position)> =
                wanted.iter().map(|c| (c.partition, c.position)).collect();
            let mut events = self.read_events(tx.as_mut(), &places).await?;
            // An object's event appended before the partition count grew is under an older
            // count's partition: look there for what the current count did not find.
            let missing: Vec<(usize, &ObjectKey)> = events
                .iter()
                .zip(&wanted)
                .enumerate()
                .filter_map(|(i, (e, c))| match (e, &c.key) {
                    (None, Some(k)) => Some((i, k)),
                    _ => None,
                })
                .collect();
            if !missing.is_empty() {
                let pairs: Vec<(&ObjectKey, Position)> = missing
                    .iter()
                    .map(|(i, k)| (*k, wanted[*i].position))
                    .collect();
                let found = self.read_events_of(tx.as_mut(), &pairs).await?;
                for ((i, _), f) in missing.iter().zip(found) {
                    events[*i] = f.map(|(_, e)| e);
                }
            }
            // Events in feed order, with the position each one stands for.
            let mut found = wanted.iter().zip(events).peekable();
            for c in &batch {
                page.examined += 1;
                let event = match found.peek() {
                    Some((w, _)) if w.position == c.position => found.next().and_then(|(_, e)| e),
                    _ => None,
                };
                let Some(event) = event else {
                    if c.key.as_ref().is_none_or(|k| filter.key_matches(k))
                        && let Some(k) = &c.key
                    {
                        return Err(Error::Corrupt {
                            location: format!("log position {}", c.position),
                            detail: format!(
                                "a history index names an event of {k} that is missing"
                            ),
                        });
                    }
                    continue;
                };
                if filter.matches(&event) {
                    page.events.push(event);
                    if page.events.len() >= limit {
                        page.cursor = Some(c.position);
                        return Ok(page);
                    }
                }
            }
            if exhausted {
                return Ok(page);
            }
            if page.examined >= CHANGES_SCAN_ENTRIES_MAX {
                page.cursor = Some(last);
                return Ok(page);
            }
            if newest_first {
                hi = Position(last.0.saturating_sub(1));
            } else {
                lo = last;
            }
        }
    }

    /// The next batch of candidates in `(lo, hi]`, in feed order, and whether the range is
    /// exhausted after it.
    async fn candidates(
        &self,
        tx: &mut dyn Transaction,
        source: &Source,
        lo: Position,
        hi: Position,
        newest_first: bool,
    ) -> Result<(Vec<Candidate>, bool)> {
        let bound = |prefix: &[u8], p: Position| {
            let mut k = prefix.to_vec();
            k.extend_from_slice(&p.versionstamp().0);
            k
        };
        match source {
            Source::Index { prefix, kind } => {
                let req = RangeRequest::between(
                    bound(prefix, Position(lo.0 + 1)),
                    bound(prefix, Position(hi.0.saturating_add(1))),
                )
                .limit(CHANGES_BATCH_ENTRIES)
                .reverse(newest_first)
                .snapshot(true);
                let page = tx.get_range(&req).await?;
                let mut out = Vec::with_capacity(page.kvs.len());
                for kv in &page.kvs {
                    let bad = || Error::Corrupt {
                        location: hex(&kv.key),
                        detail: "undecodable history index entry".into(),
                    };
                    let vs = Versionstamp::from_slice(&kv.key[prefix.len()..]).ok_or_else(bad)?;
                    let key = match kind {
                        IndexKind::Object => ObjectKey::decode(&prefix[1..]).map(|(k, _)| k),
                        IndexKind::User => ObjectKey::decode(&kv.value).map(|(k, _)| k),
                        IndexKind::Resource => {
                            let (ns, rest) = keys::pop_str(&kv.value).ok_or_else(bad)?;
                            let (name, _) = keys::pop_str(rest).ok_or_else(bad)?;
                            let res = keys::pop_str(&prefix[1..]).ok_or_else(bad)?.0;
                            Some(ObjectKey::new(
                                String::from_utf8_lossy(&res),
                                String::from_utf8_lossy(&ns),
                                String::from_utf8_lossy(&name),
                            ))
                        }
                    }
                    .ok_or_else(bad)?;
                    out.push(Candidate {
                        partition: key.partition(self.partitions()),
                        position: Position::from_versionstamp(vs),
                        key: Some(key),
                    });
                }
                Ok((out, !page.more))
            }
            Source::Log => {
                let mut out = Vec::new();
                let mut exhausted = true;
                for partition in 0..self.partitions() {
                    let req = RangeRequest::between(
                        keys::log_after(partition, lo),
                        keys::log_after(partition, hi),
                    )
                    .limit(CHANGES_BATCH_ENTRIES)
                    .reverse(newest_first)
                    .snapshot(true);
                    let page = tx.get_range(&req).await?;
                    exhausted &= !page.more;
                    for kv in &page.kvs {
                        if let Some((p, position, 0)) = keys::parse_log_key(&kv.key) {
                            out.push(Candidate {
                                partition: p,
                                position,
                                key: None,
                            });
                        }
                    }
                }
                if self.partitions() > 1 {
                    out.sort_by_key(|c| c.position);
                    if newest_first {
                        out.reverse();
                    }
                    if out.len() > CHANGES_BATCH_ENTRIES {
                        out.truncate(CHANGES_BATCH_ENTRIES);
                        exhausted = false;
                    }
                }
                Ok((out, exhausted))
            }
        }
    }

    /// The event at `position` of the object `key` (`None` when the log has none there, or
    /// it was compacted away).
    pub async fn event(&self, key: &ObjectKey, position: Position) -> Result<Option<Event>> {
        let mut tx = self.kv.begin().await?;
        self.read_event_at(tx.as_mut(), key, position)
            .await?
            .map(|e| self.open_event(e))
            .transpose()
    }

    /// The newest position whose event was stamped at or before `unix_nanos` (ZERO when
    /// none was): "the cluster as of 14:02" as a resourceVersion. Uses the time index to
    /// start at the last indexed second before the time, then reads forward.
    ///
    /// # Errors
    /// Store errors; `TooLarge` when one second holds more than [`TIME_SCAN_EVENTS_MAX`].
    pub async fn position_at_time(&self, unix_nanos: i64) -> Result<Position> {
        let second = u64::try_from(unix_nanos.div_euclid(1_000_000_000)).unwrap_or(0);
        let mut tx = self.kv.begin().await?;
        let horizon = self.read_horizon(tx.as_mut()).await?;
        let page = tx
            .get_range(
                &RangeRequest::between(vec![keys::TIME], keys::time_second(second))
                    .limit(1)
                    .reverse(true)
                    .snapshot(true),
            )
            .await?;
        drop(tx);
        let mut at = match page.kvs.first() {
            Some(kv) => Versionstamp::from_slice(&kv.value)
                .map(Position::from_versionstamp)
                .ok_or_else(|| Error::Corrupt {
                    location: hex(&kv.key),
                    detail: "time index value is not a versionstamp".into(),
                })?,
            None => Position::ZERO,
        }
        .max(horizon);
        let mut read = 0usize;
        loop {
            let (events, more) = self
                .read_log_stored(at, None, TIME_SCAN_BATCH_EVENTS)
                .await?;
            for e in &events {
                if e.timestamp_unix_nanos > unix_nanos {
                    return Ok(at);
                }
                at = e.position;
            }
            read += events.len();
            if !more {
                return Ok(at);
            }
            if read >= TIME_SCAN_EVENTS_MAX {
                return Err(Error::TooLarge {
                    what: "events in one second of the time index",
                    size: read,
                    limit: TIME_SCAN_EVENTS_MAX,
                });
            }
        }
    }
}
