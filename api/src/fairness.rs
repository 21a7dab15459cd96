//! Per-user shares of the server, so that one user's flood does not become every user's
//! latency:
//!
//! 1. **The connection gate** ([`Gates`]), for users known from their client certificate
//!    (known once per connection, before any request is read): each such user has at most
//!    [`REQUESTS_EXECUTING_PER_USER_MAX`] requests executing and a FIFO queue of
//!    [`REQUESTS_QUEUED_PER_USER_MAX`] waiting. HTTP/2 streams wait, parked, before their
//!    task does anything ([`GatedExecutor`]); HTTP/1 requests wait in [`Gates::admit`].
//!    A request that finds the queue full is answered 429 with `Retry-After` before
//!    authentication, routing, authorization or its body. A slot is held until the handler
//!    returns its response, so a watch holds one only while it is set up.
//! 2. **Backpressure** ([`GatedIo`]): while a user's queue is full, its idle connections
//!    are not read (for at most [`READ_GATE_WAIT_MAX_MS`], then the next request is read
//!    and refused if there is still no room). The flood stays in the client's sockets
//!    instead of costing the server a TLS record, a parse and a 429 each: with refusals
//!    alone, a user at 10× capacity made the server answer 26,000 429s/s and another
//!    user's p99 was 49–160× its baseline.
//! 3. **Priority** ([`Gates::run`]): a light user's request (fewer than
//!    [`LIGHT_USER_EXECUTING_MAX`] executing, none waiting) runs ahead of heavy users'
//!    requests: while one executes, heavy requests step aside at their await points
//!    ([`StepAside`], bounded), and while light users are active heavy users share
//!    [`HEAVY_LANE_CONTENDED_MAX`] lanes, so the runnable work queued in front of a light
//!    request stays short. tokio has no task priorities; this is one. Uncontended, a heavy
//!    user has all its slots (a single user's bulk load is not slowed).
//! 4. **The in-flight share** ([`UserShares`]) for every authenticated identity (tokens and
//!    impersonated users too, whom the gate cannot know): at most
//!    [`REQUESTS_INFLIGHT_PER_USER_MAX`] non-watch requests of one user in flight within the
//!    server's [`crate::REQUESTS_INFLIGHT_MAX`]; past that, 429.
//!
//! The server's own in-process components and `system:masters` are exempt from all of it
//! (kube's API Priority and Fairness gives them the exempt and system priority levels).
//! Token users are not gated per connection (their identity is known only per request),
//! so 2 and 3 do not apply to them yet.
//!
//! Simpler than kube's APF, whose per-flow concurrency and queues the gate borrows: one
//! queue per user (no shuffle sharding), no flow schemas or priority levels, every request
//! one seat.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;

use crate::Identity;

/// Non-watch requests one user may have in flight at once (then 429 for that user).
pub const REQUESTS_INFLIGHT_PER_USER_MAX: usize = 512;

/// Requests of one certificate user executing at once (the connection gate); more wait.
/// 64, not 32: at 32 a single user's 64 concurrent writers were held to 78 % of the
/// creates/s that AlwaysAllow serves (`logbook bench auth`), under the 80 % floor.
pub const REQUESTS_EXECUTING_PER_USER_MAX: usize = 64;
/// Requests of one certificate user waiting for the gate; more are refused with 429.
pub const REQUESTS_QUEUED_PER_USER_MAX: usize = 64;

/// A certificate user with fewer requests than this executing (and none waiting) is light:
/// while one of its requests executes, heavy users' requests step aside ([`StepAside`]).
pub const LIGHT_USER_EXECUTING_MAX: usize = 8;
/// A certificate user with this many requests executing, or any waiting, is heavy.
pub const HEAVY_USER_EXECUTING_MIN: usize = 16;
/// While light users are active ([`CONTENDED_WINDOW_MS`]), heavy users' requests that start
/// executing share this many lanes (all heavy users together), so the work runnable in
/// front of a light request stays short; uncontended, a heavy user has all its slots.
pub const HEAVY_LANE_CONTENDED_MAX: usize = 4;
/// Users whose last light request a gate remembers (for [`CONTENDED_WINDOW_MS`]); past it,
/// new users are not remembered until old entries expire.
pub const LIGHT_USERS_RECENT_MAX: usize = 1_024;
/// How long after another user's last light request a heavy user still counts as
/// contended, ms.
pub const CONTENDED_WINDOW_MS: u64 = 1_000;
/// How long a heavy user's request steps aside at once, at most, milliseconds (it resumes
/// earlier when no light request is executing any more).
pub const HEAVY_STEP_ASIDE_MS: u64 = 5;
/// How many times one heavy request steps aside, at most; then it runs like any other. This
/// bounds how much a heavy user is slowed, and any priority inversion (a light request
/// waiting on something a heavy one holds) to `HEAVY_STEP_ASIDE_MS` × this.
pub const HEAVY_STEP_ASIDE_COUNT_MAX: u32 = 20;
/// How often an idle connection whose reading waits for room in its user's queue looks at
/// the queue again, milliseconds, besides being woken when a request leaves it (this only
/// recovers a wakeup lost to a connection that closed; it never reads into a full queue).
pub const READ_GATE_RECHECK_MS: u64 = 250;
/// How long an idle connection waits to read while its user's queue is full, at most,
/// milliseconds; then its next request is read and, if the queue is still full, refused
/// with 429. Like the time kube's API Priority and Fairness lets a request wait in its
/// queue (15 s there), shorter so a flooding client learns to back off soon.
pub const READ_GATE_WAIT_MAX_MS: u64 = 5_000;
/// Connections of one user whose wakers a gate keeps (the oldest past this rely on their
/// recheck timer).
pub const READERS_PARKED_PER_USER_MAX: usize = 4_096;
/// Heavy requests parked while light ones execute whose wakers are kept (past this all are
/// woken and the list starts again).
const STEPPING_ASIDE_PARKED_MAX: usize = 65_536;

/// The group whose members are never limited per user.
const EXEMPT_GROUP: &str = "system:masters";
/// The `source` of the server's own in-process components.
const IN_PROCESS_SOURCE: &str = "in-process";

/// Counts of requests in flight per user.
#[derive(Debug)]
pub struct UserShares {
    max: std::sync::atomic::AtomicUsize,
    counts: Arc<Mutex<HashMap<String, usize>>>,
}

impl Default for UserShares {
    fn default() -> Self {
        UserShares {
            max: std::sync::atomic::AtomicUsize::new(REQUESTS_INFLIGHT_PER_USER_MAX),
            counts: Arc::new(Mutex::new(HashMap::new())),
        }
    }
}

/// A slot held by one request; released when dropped.
#[derive(Debug)]
pub struct Share {
    user: Option<String>,
    counts: Arc<Mutex<HashMap<String, usize>>>,
}

impl Drop for Share {
    fn drop(&mut self) {
        let Some(user) = self.user.take() else { return };
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = counts.get_mut(&user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&user);
            }
        }
    }
}

impl UserShares {
    /// Sets the per-user limit (tests lower it).
    pub fn set_max(&self, max: usize) {
        self.max
            .store(max.max(1), std::sync::atomic::Ordering::Relaxed);
    }

    /// The per-user limit in force.
    pub fn max(&self) -> usize {
        self.max.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A slot for this request, or `None` when its user already holds its whole share.
    pub fn acquire(&self, who: &Identity) -> Option<Share> {
        if is_exempt(who) {
            return Some(Share {
                user: None,
                counts: self.counts.clone(),
            });
        }
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = counts.entry(who.user.clone()).or_insert(0);
        if *n >= self.max() {
            return None;
        }
        *n += 1;
        Some(Share {
            user: Some(who.user.clone()),
            counts: self.counts.clone(),
        })
    }
}

/// Whether `who` is exempt from every per-user limit.
pub fn is_exempt(who: &Identity) -> bool {
    who.source == IN_PROCESS_SOURCE || who.groups.iter().any(|g| g == EXEMPT_GROUP)
}

/// One user's gate: its executing slots and how many requests wait for one.
#[derive(Debug)]
struct Gate {
    slots: Arc<Semaphore>,
    queued: AtomicUsize,
    /// The user's connections whose reading waits for room in its queue ([`GatedIo`]),
    /// oldest first; one is woken per request leaving the queue.
    readers: Mutex<VecDeque<(Waker, Arc<AtomicBool>)>>,
    /// The executing bound this gate was made with.
    executing_max: usize,
    /// The user's light requests executing now (see [`Gates::run`]).
    light_executing: AtomicUsize,
}

impl Gate {
    /// Requests of the user executing now.
    fn executing(&self) -> usize {
        self.executing_max
            .saturating_sub(self.slots.available_permits())
    }

    /// Whether the user wants more than a light share: requests waiting for a slot, or at
    /// least [`HEAVY_USER_EXECUTING_MIN`] executing.
    fn is_heavy(&self) -> bool {
        self.queued.load(Ordering::Relaxed) > 0 || self.executing() >= HEAVY_USER_EXECUTING_MIN
    }

    /// Wakes the connection that has waited longest to read (a request left the queue).
    fn wake_reader(&self) {
        let next = self
            .readers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front();
        if let Some((w, parked)) = next {
            parked.store(false, Ordering::Release);
            w.wake();
        }
    }

    /// Registers a connection that waits to read, once (`parked` is its flag).
    fn park_reader(&self, waker: &Waker, parked: &Arc<AtomicBool>) {
        if parked.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut readers = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        if readers.len() >= READERS_PARKED_PER_USER_MAX {
            // The oldest falls back on its recheck timer.
            if let Some((_, p)) = readers.pop_front() {
                p.store(false, Ordering::Release);
            }
        }
        readers.push_back((waker.clone(), parked.clone()));
    }
}

/// The connection gate: per certificate user, a bounded number of requests executing and a
/// bounded FIFO queue of waiting ones (see the module header). A user's entry lives while
/// it has requests executing or waiting.
#[derive(Debug)]
pub struct Gates {
    executing_max: AtomicUsize,
    queued_max: AtomicUsize,
    users: Arc<Mutex<HashMap<String, Arc<Gate>>>>,
    light: Arc<Light>,
}

/// Light requests executing, and the heavy ones stepping aside until they are done.
#[derive(Debug)]
struct Light {
    executing: AtomicUsize,
    parked: Mutex<Vec<Waker>>,
    /// Per user, when one of its light requests last started or ended, ms since `epoch`.
    recent: Mutex<HashMap<String, u64>>,
    epoch: Instant,
    /// Heavy requests' lane while the server is contended ([`HEAVY_LANE_CONTENDED_MAX`]).
    heavy_lane: Arc<Semaphore>,
}

impl Default for Light {
    fn default() -> Self {
        Light {
            executing: AtomicUsize::new(0),
            parked: Mutex::new(Vec::new()),
            recent: Mutex::new(HashMap::new()),
            epoch: Instant::now(),
            heavy_lane: Arc::new(Semaphore::new(HEAVY_LANE_CONTENDED_MAX)),
        }
    }
}

impl Light {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn touch(&self, user: &str) {
        let now = self.now_ms();
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() >= LIGHT_USERS_RECENT_MAX {
            recent.retain(|_, t| now.saturating_sub(*t) < CONTENDED_WINDOW_MS);
        }
        if recent.len() < LIGHT_USERS_RECENT_MAX || recent.contains_key(user) {
            recent.insert(user.to_string(), now);
        }
    }

    /// Light requests of users other than the one `gate` belongs to, executing now.
    fn others_executing(&self, gate: &Gate) -> bool {
        self.executing.load(Ordering::Acquire) > gate.light_executing.load(Ordering::Acquire)
    }

    /// Whether users other than `user` are active with light requests: one executing, or
    /// one ended within [`CONTENDED_WINDOW_MS`]. A user is never contended by itself (a
    /// single user's bulk load, light while it ramps up, keeps all its slots).
    fn contended_for(&self, user: &str, gate: &Gate) -> bool {
        self.others_executing(gate) || {
            let now = self.now_ms();
            self.recent
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .any(|(u, t)| u != user && now.saturating_sub(*t) < CONTENDED_WINDOW_MS)
        }
    }

    fn park(&self, waker: &Waker) {
        let mut parked = self.parked.lock().unwrap_or_else(|p| p.into_inner());
        if parked.len() >= STEPPING_ASIDE_PARKED_MAX {
            parked.drain(..).for_each(Waker::wake);
        }
        parked.push(waker.clone());
    }
}

/// Counts one light request (of the user of `gate`) as executing until dropped.
#[derive(Debug)]
pub struct LightGuard {
    light: Arc<Light>,
    gate: Arc<Gate>,
    user: String,
}

impl LightGuard {
    fn new(light: Arc<Light>, gate: Arc<Gate>, user: &str) -> Self {
        gate.light_executing.fetch_add(1, Ordering::AcqRel);
        light.executing.fetch_add(1, Ordering::AcqRel);
        light.touch(user);
        LightGuard {
            light,
            gate,
            user: user.to_string(),
        }
    }
}

impl Drop for LightGuard {
    fn drop(&mut self) {
        self.light.touch(&self.user);
        // The total first, so that others_executing never counts this user's own request.
        self.light.executing.fetch_sub(1, Ordering::AcqRel);
        self.gate.light_executing.fetch_sub(1, Ordering::AcqRel);
        // Heavy requests stepping aside look again (they go on unless another user's light
        // request is still executing).
        let parked =
            std::mem::take(&mut *self.light.parked.lock().unwrap_or_else(|p| p.into_inner()));
        parked.into_iter().for_each(Waker::wake);
    }
}

impl Default for Gates {
    fn default() -> Self {
        Gates {
            executing_max: AtomicUsize::new(REQUESTS_EXECUTING_PER_USER_MAX),
            queued_max: AtomicUsize::new(REQUESTS_QUEUED_PER_USER_MAX),
            users: Arc::new(Mutex::new(HashMap::new())),
            light: Arc::default(),
        }
    }
}

/// A request's executing slot at the gate; released when dropped.
#[derive(Debug)]
pub struct Ticket {
    permit: Option<OwnedSemaphorePermit>,
    user: String,
    gate: Arc<Gate>,
    users: Arc<Mutex<HashMap<String, Arc<Gate>>>>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        drop(self.permit.take());
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        // Nobody else holds this gate (the map's reference and ours): forget the user.
        if Arc::strong_count(&self.gate) == 2 {
            users.remove(&self.user);
        }
    }
}

tokio::task_local! {
    /// The gate's turn of the HTTP/2 stream this task serves (set by [`GatedExecutor`]).
    static TURN: std::cell::RefCell<Option<(Ticket, bool)>>;
}

/// The turn [`GatedExecutor`] took for the current task's stream, if any.
pub fn take_turn() -> Option<(Ticket, bool)> {
    TURN.try_with(|t| t.borrow_mut().take()).ok().flatten()
}

/// Spawns each HTTP/2 stream of a connection; a gated user's stream first waits for its
/// turn ([`Gates::turn`]) and runs with it in [`take_turn`].
#[derive(Clone, Debug)]
pub struct GatedExecutor {
    pub gates: Arc<Gates>,
    /// The connection's certificate user, unless exempt.
    pub user: Option<Arc<str>>,
}

impl<F> hyper::rt::Executor<F> for GatedExecutor
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        let Some(user) = self.user.clone() else {
            tokio::spawn(fut);
            return;
        };
        let gates = self.gates.clone();
        tokio::spawn(async move {
            let turn = gates.turn(&user).await;
            TURN.scope(std::cell::RefCell::new(turn), fut).await
        });
    }
}

/// Counts a request as waiting at a gate until dropped (also when its client goes away).
struct Waiting<'a>(&'a Gate);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.queued.fetch_sub(1, Ordering::Relaxed);
        self.0.wake_reader();
    }
}

impl Gates {
    /// Sets the executing and queued bounds per user (tests and `--requests-inflight-per-user`
    /// lower them); gates made earlier keep theirs.
    pub fn set_limits(&self, executing: usize, queued: usize) {
        self.executing_max
            .store(executing.max(1), Ordering::Relaxed);
        self.queued_max.store(queued, Ordering::Relaxed);
    }

    /// The executing bound per user.
    pub fn executing_max(&self) -> usize {
        self.executing_max.load(Ordering::Relaxed)
    }

    /// One HTTP/2 stream's turn: waits, parked, in `user`'s FIFO queue until one of the
    /// user's executing slots is free, refusals included, so a user's backlog (even of
    /// requests to refuse) is never runnable in front of another user's work. The flag
    /// says the stream found the queue full when it arrived: it is to be answered 429 as
    /// soon as it runs.
    pub async fn turn(&self, user: &str) -> Option<(Ticket, bool)> {
        let gate = self.gate(user);
        let queued = gate.queued.fetch_add(1, Ordering::Relaxed);
        let waiting = Waiting(&gate);
        let refuse = queued >= self.queued_max.load(Ordering::Relaxed);
        let permit = gate.slots.clone().acquire_owned().await.ok();
        drop(waiting);
        Some((
            Ticket {
                permit: Some(permit?),
                user: user.to_string(),
                gate,
                users: self.users.clone(),
            },
            refuse,
        ))
    }

    fn gate(&self, user: &str) -> Arc<Gate> {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        users
            .entry(user.to_string())
            .or_insert_with(|| {
                Arc::new(Gate {
                    slots: Arc::new(Semaphore::new(self.executing_max())),
                    queued: AtomicUsize::new(0),
                    readers: Mutex::new(VecDeque::new()),
                    light_executing: AtomicUsize::new(0),
                    executing_max: self.executing_max(),
                })
            })
            .clone()
    }

    /// An executing slot for one request of `user`, after waiting in the user's queue if
    /// its slots are taken.
    ///
    /// # Errors
    /// `Err(queued)` when the user's queue is full: the request is to be refused.
    pub async fn admit(&self, user: &str) -> Result<Ticket, usize> {
        let gate = self.gate(user);
        let ticket = |permit, gate| Ticket {
            permit: Some(permit),
            user: user.to_string(),
            gate,
            users: self.users.clone(),
        };
        if let Ok(p) = gate.slots.clone().try_acquire_owned() {
            return Ok(ticket(p, gate));
        }
        let queued = gate.queued.fetch_add(1, Ordering::Relaxed);
        let waiting = Waiting(&gate);
        if queued >= self.queued_max.load(Ordering::Relaxed) {
            drop(waiting);
            // The entry may now be unused: a ticket-less refusal cleans up like a ticket.
            drop(Ticket {
                permit: None,
                user: user.to_string(),
                gate,
                users: self.users.clone(),
            });
            return Err(queued);
        }
        let permit = gate.slots.clone().acquire_owned().await;
        drop(waiting);
        match permit {
            Ok(p) => Ok(ticket(p, gate)),
            // The semaphore is never closed.
            Err(_) => Err(queued),
        }
    }
}

impl Gates {
    /// Runs a gated request's `work` at its user's priority: a light user's request counts
    /// as light while it runs; a heavy user's steps aside for light ones ([`StepAside`]).
    pub async fn run<F: Future>(&self, ticket: &Ticket, work: F) -> F::Output {
        let gate = &ticket.gate;
        if gate.queued.load(Ordering::Relaxed) == 0 && gate.executing() <= LIGHT_USER_EXECUTING_MAX
        {
            let _light = LightGuard::new(self.light.clone(), gate.clone(), &ticket.user);
            work.await
        } else {
            let _lane = if self.light.contended_for(&ticket.user, gate) {
                self.light.heavy_lane.clone().acquire_owned().await.ok()
            } else {
                None
            };
            StepAside {
                work: Box::pin(work),
                gate: gate.clone(),
                light: self.light.clone(),
                pause: None,
                count: 0,
            }
            .await
        }
    }

    /// Whether an idle connection of `user` is to wait before reading another request:
    /// the user's queue is full.
    fn queue_is_full(&self, user: &str) -> Option<Arc<Gate>> {
        let gate = self
            .users
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(user)
            .cloned()?;
        (gate.queued.load(Ordering::Relaxed) >= self.queued_max.load(Ordering::Relaxed))
            .then_some(gate)
    }
}

/// A heavy user's request: before each step, while a light request is executing and its
/// user is still heavy, it waits (at most [`HEAVY_STEP_ASIDE_MS`] at a time and
/// [`HEAVY_STEP_ASIDE_COUNT_MAX`] times), so on a saturated server the cores go to light
/// users' requests first. tokio has no task priorities; this is one, at await points.
pub struct StepAside<F: Future> {
    work: Pin<Box<F>>,
    gate: Arc<Gate>,
    light: Arc<Light>,
    pause: Option<Pin<Box<Sleep>>>,
    count: u32,
}

impl<F: Future> Future for StepAside<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        if this.light.others_executing(&this.gate) && this.gate.is_heavy() {
            if this.pause.is_none() && this.count < HEAVY_STEP_ASIDE_COUNT_MAX {
                this.count += 1;
                this.pause = Some(Box::pin(tokio::time::sleep(Duration::from_millis(
                    HEAVY_STEP_ASIDE_MS,
                ))));
            }
            if let Some(pause) = this.pause.as_mut()
                && pause.as_mut().poll(cx).is_pending()
            {
                this.light.park(cx.waker());
                // A light request may have finished before the waker was parked.
                if this.light.others_executing(&this.gate) {
                    return Poll::Pending;
                }
            }
        }
        this.pause = None;
        this.work.as_mut().poll(cx)
    }
}

/// A connection's requests in progress (handlers not yet returned); while there are
/// none, [`GatedIo`] may hold back reading.
#[derive(Debug, Default)]
pub struct InProgress(AtomicUsize);

/// Counts one request as in progress on its connection until dropped.
#[derive(Debug)]
pub struct InProgressGuard(Arc<InProgress>);

impl InProgress {
    /// Counts a request that has started on the connection.
    pub fn start(self: &Arc<Self>) -> InProgressGuard {
        self.0.fetch_add(1, Ordering::AcqRel);
        InProgressGuard(self.clone())
    }
}

impl Drop for InProgressGuard {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A gated user's connection: while nothing is in progress on it and the user's queue is
/// full, it does not read, so a flood stays in the client's socket (TCP backpressure)
/// instead of costing the server a parse and a 429 each. It reads again when a request
/// leaves the queue (the longest-waiting connection first; the queue is looked at again
/// every [`READ_GATE_RECHECK_MS`] too), or after [`READ_GATE_WAIT_MAX_MS`], when a request
/// that still finds the queue full gets its 429 with `Retry-After`; so do requests read in
/// one go past the queue's room (HTTP/2 frames, pipelined HTTP/1). A connection with a request in progress always reads (that request's body, or
/// HTTP/2 frames), so the gate never holds up work it admitted. Writes pass through.
pub struct GatedIo<T> {
    inner: T,
    gate: Option<ReadGate>,
}

/// What [`GatedIo`] needs to know whether to read.
pub struct ReadGate {
    /// The server's gates.
    pub gates: Arc<Gates>,
    /// The connection's certificate user.
    pub user: Arc<str>,
    /// The connection's requests in progress.
    pub in_progress: Arc<InProgress>,
    recheck: Option<Pin<Box<Sleep>>>,
    /// When this connection's wait to read ends ([`READ_GATE_WAIT_MAX_MS`]).
    deadline: Option<Pin<Box<Sleep>>>,
    /// Whether this connection is in its user's list of waiting readers.
    parked: Arc<AtomicBool>,
}

impl<T> GatedIo<T> {
    /// Wraps `inner`; `gate` is `None` for connections that are not gated.
    pub fn new(inner: T, gate: Option<(Arc<Gates>, Arc<str>, Arc<InProgress>)>) -> Self {
        GatedIo {
            inner,
            gate: gate.map(|(gates, user, in_progress)| ReadGate {
                gates,
                user,
                in_progress,
                recheck: None,
                deadline: None,
                parked: Arc::default(),
            }),
        }
    }
}

impl ReadGate {
    /// Whether reading is to wait now (the waker is then registered).
    fn must_wait(&mut self, cx: &mut Context<'_>) -> bool {
        let gate = if self.in_progress.0.load(Ordering::Acquire) > 0 {
            None
        } else {
            self.gates.queue_is_full(&self.user)
        };
        let Some(gate) = gate else {
            (self.recheck, self.deadline) = (None, None);
            return false;
        };
        let deadline = self.deadline.get_or_insert_with(|| {
            Box::pin(tokio::time::sleep(Duration::from_millis(
                READ_GATE_WAIT_MAX_MS,
            )))
        });
        if deadline.as_mut().poll(cx).is_ready() {
            // Waited long enough: the next request is read, and refused if still no room.
            (self.recheck, self.deadline) = (None, None);
            return false;
        }
        // The timer only recovers a lost wakeup (a woken connection that closed): when it
        // fires the queue is looked at again, and reading still waits while it is full.
        loop {
            let recheck = self.recheck.get_or_insert_with(|| {
                Box::pin(tokio::time::sleep(Duration::from_millis(
                    READ_GATE_RECHECK_MS,
                )))
            });
            if recheck.as_mut().poll(cx).is_pending() {
                break;
            }
            self.recheck = None;
        }
        gate.park_reader(cx.waker(), &self.parked);
        // The queue may have drained before the waker was parked.
        self.gates.queue_is_full(&self.user).is_some()
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for GatedIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if let Some(gate) = this.gate.as_mut()
            && gate.must_wait(cx)
        {
            return Poll::Pending;
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for GatedIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, groups: &[&str]) -> Identity {
        Identity {
            user: name.into(),
            groups: groups.iter().map(|g| (*g).to_string()).collect(),
            source: "127.0.0.1:1".into(),
            ..Identity::anonymous()
        }
    }

    #[test]
    fn a_user_over_its_share_is_refused_while_others_and_exempt_users_are_not() {
        let shares = UserShares::default();
        shares.set_max(2);
        let alice = user("alice", &[]);
        let held: Vec<Share> = (0..2).filter_map(|_| shares.acquire(&alice)).collect();
        assert_eq!(held.len(), 2);
        assert!(
            shares.acquire(&alice).is_none(),
            "a third request of alice is refused"
        );
        assert!(
            shares.acquire(&user("bob", &[])).is_some(),
            "bob is not affected"
        );
        let admins: Vec<Share> = (0..10)
            .filter_map(|_| shares.acquire(&user("root", &["system:masters"])))
            .collect();
        assert_eq!(admins.len(), 10, "system:masters is exempt");
        drop(held);
        assert!(
            shares.acquire(&alice).is_some(),
            "released slots are reusable"
        );
    }

    #[tokio::test]
    async fn a_users_requests_past_its_executing_slots_wait_and_past_its_queue_are_refused() {
        let gates = Gates::default();
        gates.set_limits(2, 1);
        let running = [
            gates.admit("alice").await.expect("slot 1"),
            gates.admit("alice").await.expect("slot 2"),
        ];
        let third = gates.admit("alice");
        tokio::pin!(third);
        assert!(
            futures::poll!(third.as_mut()).is_pending(),
            "the third request waits"
        );
        assert_eq!(
            gates.admit("alice").await.map(|_| ()),
            Err(1),
            "the fourth finds the queue full"
        );
        assert!(gates.admit("bob").await.is_ok(), "bob has his own slots");
        drop(running);
        assert!(third.await.is_ok(), "the waiting request gets a freed slot");
        assert!(
            gates.users.lock().map(|u| u.is_empty()).unwrap_or(false),
            "idle users are forgotten"
        );
    }

    /// Enough executing slots of `user` to make it heavy.
    async fn heavy_slots(gates: &Gates, user: &str) -> Vec<Ticket> {
        let mut heavy = Vec::new();
        for _ in 0..HEAVY_USER_EXECUTING_MIN {
            heavy.push(gates.admit(user).await.expect("a slot"));
        }
        heavy
    }

    #[tokio::test]
    async fn a_heavy_users_request_steps_aside_while_a_light_one_executes() {
        use std::sync::atomic::AtomicBool;
        let gates = Gates::default();
        gates.set_limits(HEAVY_USER_EXECUTING_MIN, 4);
        let heavy = heavy_slots(&gates, "noisy").await;
        let light = gates.admit("quiet").await.expect("a slot");
        let (release, released) = (
            Arc::new(tokio::sync::Notify::new()),
            Arc::new(AtomicBool::new(false)),
        );
        let quiet_work = {
            let (release, released) = (release.clone(), released.clone());
            async move {
                release.notified().await;
                released.store(true, Ordering::SeqCst);
            }
        };
        let quiet = gates.run(&light, quiet_work);
        tokio::pin!(quiet);
        assert!(
            futures::poll!(quiet.as_mut()).is_pending(),
            "the light request executes"
        );
        let ran_during_light = Arc::new(AtomicBool::new(false));
        let noisy = {
            let (ran, released) = (ran_during_light.clone(), released.clone());
            gates.run(&heavy[0], async move {
                if !released.load(Ordering::SeqCst) {
                    ran.store(true, Ordering::SeqCst);
                }
            })
        };
        tokio::pin!(noisy);
        assert!(
            futures::poll!(noisy.as_mut()).is_pending(),
            "the heavy request waits while the light one executes"
        );
        release.notify_one();
        quiet.await;
        tokio::time::timeout(Duration::from_secs(5), noisy)
            .await
            .expect("the heavy request runs once the light one is done");
        assert!(!ran_during_light.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn a_heavy_request_steps_aside_a_bounded_number_of_times() {
        let gates = Gates::default();
        gates.set_limits(HEAVY_USER_EXECUTING_MIN, 4);
        let heavy = heavy_slots(&gates, "noisy").await;
        let light = gates.admit("quiet").await.expect("a slot");
        // A light request that never finishes (one waiting on the heavy one, say).
        let stuck = gates.run(&light, std::future::pending::<()>());
        tokio::pin!(stuck);
        assert!(futures::poll!(stuck.as_mut()).is_pending());
        let started = std::time::Instant::now();
        tokio::time::timeout(Duration::from_secs(5), gates.run(&heavy[0], async {}))
            .await
            .expect("the heavy request ran after its bounded pauses");
        let bound =
            Duration::from_millis(HEAVY_STEP_ASIDE_MS * u64::from(HEAVY_STEP_ASIDE_COUNT_MAX));
        assert!(started.elapsed() < bound * 3, "{:?}", started.elapsed());
    }

    /// Gates of one executing slot and one queued place per user, both taken by `noisy`:
    /// the slot's ticket and the queued request's task.
    async fn noisy_with_a_full_queue() -> (
        Arc<Gates>,
        Ticket,
        tokio::task::JoinHandle<Result<(), usize>>,
    ) {
        let gates = Arc::new(Gates::default());
        gates.set_limits(1, 1);
        let executing = gates.admit("noisy").await.expect("the slot");
        let queued = {
            let gates = gates.clone();
            tokio::spawn(async move { gates.admit("noisy").await.map(|_| ()) })
        };
        while gates.queue_is_full("noisy").is_none() {
            tokio::task::yield_now().await;
        }
        (gates, executing, queued)
    }

    #[tokio::test]
    async fn an_idle_connection_reads_only_while_its_users_queue_has_room() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (gates, executing, queued) = noisy_with_a_full_queue().await;
        let (client, server) = tokio::io::duplex(64);
        let in_progress = Arc::new(InProgress::default());
        let mut io = GatedIo::new(
            server,
            Some((gates.clone(), "noisy".into(), in_progress.clone())),
        );
        let mut client = client;
        client.write_all(b"GET").await.expect("write");
        let mut buf = [0u8; 3];
        assert!(
            tokio::time::timeout(Duration::from_millis(100), io.read_exact(&mut buf))
                .await
                .is_err(),
            "the idle connection does not read while the queue is full"
        );
        // A request in progress on the connection always reads (its body, say).
        let guard = in_progress.start();
        tokio::time::timeout(Duration::from_secs(5), io.read_exact(&mut buf))
            .await
            .expect("reads with a request in progress")
            .expect("read");
        drop(guard);
        client.write_all(b"GET").await.expect("write");
        let read = tokio::spawn(async move {
            let mut buf = [0u8; 3];
            io.read_exact(&mut buf).await.map(|_| buf)
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!read.is_finished(), "still waiting for room");
        drop(executing);
        assert!(queued.await.expect("join").is_ok());
        let got = tokio::time::timeout(Duration::from_secs(5), read)
            .await
            .expect("woken when the queue drained")
            .expect("join")
            .expect("read");
        assert_eq!(&got, b"GET");
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_waits_to_read_for_a_bounded_time() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (gates, _executing, _queued) = noisy_with_a_full_queue().await;
        let (mut client, server) = tokio::io::duplex(64);
        let mut io = GatedIo::new(
            server,
            Some((gates.clone(), "noisy".into(), Arc::default())),
        );
        client.write_all(b"GET").await.expect("write");
        let started = tokio::time::Instant::now();
        let mut buf = [0u8; 3];
        io.read_exact(&mut buf).await.expect("read");
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(READ_GATE_WAIT_MAX_MS)
                && waited
                    < Duration::from_millis(READ_GATE_WAIT_MAX_MS + READ_GATE_RECHECK_MS + 100),
            "read after {waited:?}"
        );
    }

    #[tokio::test]
    async fn a_users_heavy_requests_never_step_aside_for_its_own_light_ones() {
        let gates = Gates::default();
        gates.set_limits(HEAVY_USER_EXECUTING_MIN + 1, 4);
        let own_light = gates.admit("bulk").await.expect("a slot");
        let quiet = gates.run(&own_light, std::future::pending::<()>());
        tokio::pin!(quiet);
        assert!(
            futures::poll!(quiet.as_mut()).is_pending(),
            "a light request of bulk executes"
        );
        let heavy = heavy_slots(&gates, "bulk").await;
        let work = gates.run(&heavy[0], async {});
        tokio::pin!(work);
        assert!(
            futures::poll!(work.as_mut()).is_ready(),
            "bulk's heavy request runs at once: bulk is not contended by itself"
        );
    }
}
