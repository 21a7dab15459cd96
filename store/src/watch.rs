//! The watch hub: one tailer per process turns the log into per-resource subscriptions.
//!
//! The tailer waits on the backend's watch of the head key, reads every new event in log
//! order, keeps the newest events of each resource in a bounded ring, and offers each event
//! to the subscribers of its resource with a non-blocking send. A subscriber whose bounded
//! buffer is full is cut off (its stream ends with [`Error::FellBehind`]) so that no
//! subscriber can slow the tailer, let alone a commit.
//!
//! A subscription from position P yields every event after P exactly once, in order: first
//! a backlog (from the ring when it still covers P, else read from the log up to the point
//! where the subscription joined the live fan-out), then live events. When idle it yields
//! bookmarks: "every event of this resource up to here has been delivered".

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::error::{Error, Result};
use crate::keys;
use crate::log::EventLog;
use crate::position::Position;
use crate::record::Event;

/// Bounds of the hub. Every field is a limit with its unit in the name.
#[derive(Clone, Debug)]
pub struct HubConfig {
    /// Events buffered per subscriber; a subscriber with this many undelivered events is cut
    /// off with [`Error::FellBehind`].
    pub subscriber_buffer_events_max: usize,
    /// Newest events kept in memory per resource for subscriptions that start near the head.
    pub ring_events_max: usize,
    /// Events the tailer reads from the log per step.
    pub tail_batch_events_max: usize,
    /// Events a catching-up subscription reads from the log per step.
    pub catchup_page_events_max: usize,
    /// An idle subscription yields a bookmark after this long without events.
    pub bookmark_interval_ms: u64,
    /// The tailer re-reads the log at least this often even if no head watch fired.
    pub tail_poll_interval_ms: u64,
    /// While events keep coming, the tailer reads the log at most this often, so what was
    /// committed in between is fanned out as one batch per subscriber: one wake-up and one
    /// write per watcher per batch instead of per event (1,000 watchers × 1,000 events/s
    /// was 1,000,000 wake-ups/s). The first event after a quiet spell goes out at once.
    pub tail_interval_min_ms: u64,
    /// Most live subscriptions at once; one more is refused with [`Error::Overloaded`].
    pub subscribers_max: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            subscriber_buffer_events_max: 10_000,
            ring_events_max: 20_000,
            tail_batch_events_max: 2_000,
            catchup_page_events_max: 1_000,
            bookmark_interval_ms: 5_000,
            tail_poll_interval_ms: 1_000,
            tail_interval_min_ms: 5,
            subscribers_max: 100_000,
        }
    }
}

/// What a subscription yields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchItem {
    Event(Arc<Event>),
    /// Progress: every event of the subscribed scope up to this position was delivered.
    Bookmark(Position),
}

struct Ring {
    /// Every event of this resource after `floor` is in `events`.
    floor: Position,
    events: VecDeque<Arc<Event>>,
}

/// Events of one resource fanned out together: shared by every subscriber of the resource,
/// each of which takes the ones in its namespace and after its position.
type Batch = Arc<Vec<Arc<Event>>>;

struct SubscriberSlot {
    namespace: Option<String>,
    /// Only events after this are sent live.
    after: Position,
    tx: mpsc::UnboundedSender<Batch>,
    /// Events sent and not yet taken by the subscriber: bounded by
    /// [`HubConfig::subscriber_buffer_events_max`] (the channel itself is not).
    pending: Arc<AtomicUsize>,
    cut: Arc<AtomicBool>,
}

struct HubState {
    applied: Position,
    rings: HashMap<String, Ring>,
    subscribers: HashMap<String, Vec<SubscriberSlot>>,
}

struct HubInner {
    log: EventLog,
    cfg: HubConfig,
    state: Mutex<HubState>,
    applied_tx: watch::Sender<Position>,
}

/// The per-process watch hub. Dropping it stops the tailer; live subscriptions then end.
pub struct WatchHub {
    inner: Arc<HubInner>,
    tailer: tokio::task::JoinHandle<()>,
}

impl Drop for WatchHub {
    fn drop(&mut self) {
        self.tailer.abort();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the hub lock leaves plain data behind; keep serving.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl WatchHub {
    /// Starts the hub at the current head: earlier events are served from the log.
    pub async fn start(log: EventLog, cfg: HubConfig) -> Result<Self> {
        let head = log.head().await?;
        let (applied_tx, _) = watch::channel(head);
        let inner = Arc::new(HubInner {
            log,
            cfg,
            state: Mutex::new(HubState {
                applied: head,
                rings: HashMap::new(),
                subscribers: HashMap::new(),
            }),
            applied_tx,
        });
        let tailer = tokio::spawn(tail(inner.clone()));
        Ok(WatchHub { inner, tailer })
    }

    /// The position up to which every event has been fanned out.
    pub fn applied(&self) -> Position {
        *self.inner.applied_tx.borrow()
    }

    /// Waits until the hub has fanned out every event up to `position`.
    pub async fn wait_applied(&self, position: Position) -> Result<()> {
        let mut rx = self.inner.applied_tx.subscribe();
        rx.wait_for(|p| *p >= position)
            .await
            .map(|_| ())
            .map_err(|_| Error::Closed)
    }

    /// Subscribes to the events of `resource` (in `namespace`, or all) after `from`.
    ///
    /// # Errors
    /// [`Error::Compacted`] when `from` is below the resource's retention horizon.
    pub async fn subscribe(
        &self,
        resource: &str,
        namespace: Option<&str>,
        from: Position,
    ) -> Result<Subscription> {
        self.inner.log.check_readable_from(resource, from).await?;
        let cut = Arc::new(AtomicBool::new(false));
        let pending = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = mpsc::unbounded_channel();
        let mut st = lock(&self.inner.state);
        let applied = st.applied;
        let backlog = if from >= applied {
            Backlog::Done
        } else {
            match st.rings.get(resource) {
                Some(ring) if ring.floor <= from => Backlog::Ring(
                    ring.events
                        .iter()
                        .filter(|e| {
                            e.position > from && namespace.is_none_or(|ns| ns == e.key.namespace)
                        })
                        .cloned()
                        .collect(),
                ),
                _ => Backlog::Log {
                    next: from,
                    until: applied,
                    page: VecDeque::new(),
                },
            }
        };
        let live = |st: &HubState| st.subscribers.values().map(Vec::len).sum::<usize>();
        if live(&st) >= self.inner.cfg.subscribers_max {
            // Forget subscriptions whose receiver is gone before refusing a new one.
            for subs in st.subscribers.values_mut() {
                subs.retain(|s| !s.tx.is_closed());
            }
            if live(&st) >= self.inner.cfg.subscribers_max {
                return Err(Error::Overloaded {
                    what: "watch subscriptions",
                    limit: self.inner.cfg.subscribers_max,
                });
            }
        }
        st.subscribers
            .entry(resource.to_string())
            .or_default()
            .push(SubscriberSlot {
                namespace: namespace.map(str::to_string),
                after: from.max(applied),
                tx,
                pending: pending.clone(),
                cut: cut.clone(),
            });
        drop(st);
        Ok(Subscription {
            inner: self.inner.clone(),
            resource: resource.to_string(),
            namespace: namespace.map(str::to_string),
            backlog,
            live: rx,
            batch: VecDeque::new(),
            pending,
            cut,
            last_delivered: from,
            applied_rx: self.inner.applied_tx.subscribe(),
        })
    }
}

enum Backlog {
    Ring(VecDeque<Arc<Event>>),
    Log {
        next: Position,
        until: Position,
        page: VecDeque<Arc<Event>>,
    },
    Done,
}

/// One subscriber's stream of events and bookmarks.
pub struct Subscription {
    inner: Arc<HubInner>,
    resource: String,
    namespace: Option<String>,
    backlog: Backlog,
    live: mpsc::UnboundedReceiver<Batch>,
    /// The rest of the live batch being delivered.
    batch: VecDeque<Arc<Event>>,
    pending: Arc<AtomicUsize>,
    cut: Arc<AtomicBool>,
    last_delivered: Position,
    applied_rx: watch::Receiver<Position>,
}

impl Subscription {
    /// The position of the last event or bookmark this subscription yielded.
    pub fn last_delivered(&self) -> Position {
        self.last_delivered
    }

    /// The next item if one is ready now (from the backlog already read, or the live
    /// buffer), without waiting or reading the store; `None` when [`Self::next`] would have
    /// to wait. Lets a consumer coalesce what is already queued into one write.
    pub fn try_next(&mut self) -> Option<WatchItem> {
        loop {
            match &mut self.backlog {
                Backlog::Done => break,
                Backlog::Ring(events) => match events.pop_front() {
                    Some(e) => return Some(self.deliver(e)),
                    None => self.backlog = Backlog::Done,
                },
                Backlog::Log { page, .. } => {
                    return page.pop_front().map(|e| self.deliver(e));
                }
            }
        }
        loop {
            if let Some(e) = self.next_in_batch() {
                return Some(self.deliver(e));
            }
            let batch = self.live.try_recv().ok()?;
            self.take(&batch);
        }
    }

    /// The next event of the current live batch that is this subscriber's.
    fn next_in_batch(&mut self) -> Option<Arc<Event>> {
        while let Some(e) = self.batch.pop_front() {
            if e.position > self.last_delivered
                && self
                    .namespace
                    .as_deref()
                    .is_none_or(|ns| ns == e.key.namespace)
            {
                return Some(e);
            }
        }
        None
    }

    /// Makes `batch` the current one and releases its events from the pending count.
    fn take(&mut self, batch: &Batch) {
        self.pending.fetch_sub(batch.len(), Ordering::AcqRel);
        self.batch.extend(batch.iter().cloned());
    }

    /// The next event, or a bookmark after an idle interval.
    ///
    /// # Errors
    /// [`Error::FellBehind`] when this subscriber was cut off for not keeping up (resubscribe
    /// from [`Self::last_delivered`]); [`Error::Closed`] when the hub stopped.
    pub async fn next(&mut self) -> Result<WatchItem> {
        loop {
            match &mut self.backlog {
                Backlog::Done => break,
                Backlog::Ring(events) => match events.pop_front() {
                    Some(e) => return Ok(self.deliver(e)),
                    None => self.backlog = Backlog::Done,
                },
                Backlog::Log { next, until, page } => {
                    if let Some(e) = page.pop_front() {
                        return Ok(self.deliver(e));
                    }
                    if *next >= *until {
                        self.backlog = Backlog::Done;
                        continue;
                    }
                    let (from, to) = (*next, *until);
                    // The resource's own log: catching up costs this resource's events,
                    // not every event written since `from`.
                    let events = self
                        .inner
                        .log
                        .read_resource_log(
                            &self.resource,
                            self.namespace.as_deref(),
                            from,
                            Some(to),
                            self.inner.cfg.catchup_page_events_max,
                        )
                        .await?;
                    let next = events.last().map_or(to, |e| e.position);
                    let page = events.into_iter().map(Arc::new).collect();
                    self.backlog = Backlog::Log {
                        next,
                        until: to,
                        page,
                    };
                }
            }
        }
        let interval = Duration::from_millis(self.inner.cfg.bookmark_interval_ms);
        // Fast path without a timer: a busy subscriber usually has events waiting.
        if let Some(item) = self.try_next() {
            return Ok(item);
        }
        loop {
            match tokio::time::timeout(interval, self.live.recv()).await {
                Ok(Some(batch)) => {
                    self.take(&batch);
                    if let Some(e) = self.next_in_batch() {
                        return Ok(self.deliver(e));
                    }
                }
                Ok(None) => {
                    return if self.cut.load(Ordering::Acquire) {
                        Err(Error::FellBehind {
                            last_delivered: self.last_delivered,
                        })
                    } else {
                        Err(Error::Closed)
                    };
                }
                Err(_idle) => {
                    // Read the applied position before checking the buffer: the tailer sends
                    // to every subscriber before it publishes a position, so an empty buffer
                    // afterwards means every event up to `applied` was delivered.
                    let applied = *self.applied_rx.borrow_and_update();
                    if self.live.is_empty() && applied > self.last_delivered {
                        self.last_delivered = applied;
                        return Ok(WatchItem::Bookmark(applied));
                    }
                    if self.live.is_empty() {
                        return Ok(WatchItem::Bookmark(self.last_delivered));
                    }
                }
            }
        }
    }

    fn deliver(&mut self, e: Arc<Event>) -> WatchItem {
        self.last_delivered = e.position;
        WatchItem::Event(e)
    }
}

async fn tail(inner: Arc<HubInner>) {
    let poll = Duration::from_millis(inner.cfg.tail_poll_interval_ms);
    let min_interval = Duration::from_millis(inner.cfg.tail_interval_min_ms);
    let mut backoff_ms = 10u64;
    loop {
        // Register the head watches before reading, so no commit slips between the two: one
        // per partition head, any of which wakes the tailer.
        let head_watch = match watch_heads(&inner.log).await {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "watch hub: cannot watch the log head; retrying");
                tokio::time::sleep(Duration::from_millis(backoff_ms)).await;
                backoff_ms = (backoff_ms * 2).min(1_000);
                continue;
            }
        };
        loop {
            let applied = lock(&inner.state).applied;
            match inner
                .log
                .read_log(applied, None, inner.cfg.tail_batch_events_max)
                .await
            {
                Ok((events, _)) if events.is_empty() => break,
                Ok((events, full)) => {
                    publish(&inner, events);
                    if !full {
                        // Let the next events gather into one batch (see tail_interval_min_ms).
                        tokio::time::sleep(min_interval).await;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "watch hub: reading the log failed; retrying");
                    tokio::time::sleep(Duration::from_millis(backoff_ms)).await;
                    backoff_ms = (backoff_ms * 2).min(1_000);
                    break;
                }
            }
            backoff_ms = 10;
        }
        let _ = tokio::time::timeout(poll, head_watch).await;
    }
}

/// Resolves when any log partition's head changes.
async fn watch_heads(log: &EventLog) -> Result<crate::kv::KeyWatch> {
    let mut watches = Vec::with_capacity(usize::from(log.partitions()));
    for p in 0..log.partitions() {
        watches.push(log.kv().watch(&keys::head(p)).await?);
    }
    Ok(Box::pin(async move {
        futures::future::select_all(watches).await.0
    }))
}

fn publish(inner: &HubInner, events: Vec<Event>) {
    let mut st = lock(&inner.state);
    let ring_max = inner.cfg.ring_events_max.max(1);
    let buffer_max = inner.cfg.subscriber_buffer_events_max.max(1);
    // This step's events per resource, in log order.
    let mut batches: Vec<(String, Vec<Arc<Event>>)> = Vec::new();
    for e in events {
        if e.position <= st.applied {
            continue;
        }
        let e = Arc::new(e);
        let start = st.applied;
        let ring = st
            .rings
            .entry(e.key.resource.clone())
            .or_insert_with(|| Ring {
                floor: start,
                events: VecDeque::new(),
            });
        ring.events.push_back(e.clone());
        while ring.events.len() > ring_max {
            if let Some(old) = ring.events.pop_front() {
                ring.floor = old.position;
            }
        }
        st.applied = e.position;
        match batches.iter_mut().find(|(r, _)| *r == e.key.resource) {
            Some((_, b)) => b.push(e),
            None => batches.push((e.key.resource.clone(), vec![e])),
        }
    }
    for (resource, events) in batches {
        let Some(subs) = st.subscribers.get_mut(&resource) else {
            continue;
        };
        let batch: Batch = Arc::new(events);
        subs.retain(|s| {
            let wanted = batch.iter().any(|e| {
                e.position > s.after
                    && s.namespace
                        .as_deref()
                        .is_none_or(|ns| ns == e.key.namespace)
            });
            if !wanted {
                return !s.tx.is_closed();
            }
            if s.pending.load(Ordering::Acquire) + batch.len() > buffer_max {
                s.cut.store(true, Ordering::Release);
                return false;
            }
            s.pending.fetch_add(batch.len(), Ordering::AcqRel);
            s.tx.send(batch.clone()).is_ok()
        });
    }
    let applied = st.applied;
    drop(st);
    inner.applied_tx.send_replace(applied);
}
