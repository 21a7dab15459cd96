//! Per-user shares of the server, in two places:
//!
//! 1. **The connection gate** ([`Gates`]), for users known from their client certificate
//!    (known once per connection, before any request is read): each such user has at most
//!    [`REQUESTS_EXECUTING_PER_USER_MAX`] requests executing. Every other HTTP/2 stream of
//!    the user waits, parked, in that user's own FIFO queue before its task does anything
//!    ([`GatedExecutor`]); a stream that found [`REQUESTS_QUEUED_PER_USER_MAX`] ahead of it
//!    is answered 429 with `Retry-After` when its turn comes, before authentication of the
//!    request, routing, authorization or its body. So a user's backlog, refusals included,
//!    is never runnable in front of another user's work: without the gate, a user at 10×
//!    the server's capacity kept thousands of requests runnable on tokio's
//!    first-come-first-served queues and another user's p50 went from 2 ms to 2.3 s even
//!    though every excess request was refused (`logbook bench fairness`, BENCHMARKS.md).
//!    What is left is the flooding connections' own work (TLS records, HTTP/2 frames),
//!    done on the same cores: FIXME(issue 9): the quiet user's p99 is still tens of times
//!    its baseline under a 10× flood; stop reading a flooding user's connections while its
//!    queue is full. HTTP/1 connections serve one request at a time and wait in
//!    [`Gates::admit`] (429 when the queue is full). A slot is held until the handler
//!    returns its response, so a watch holds one only while it is set up.
//! 2. **The in-flight share** ([`UserShares`]) for every authenticated identity (tokens and
//!    impersonated users too, whom the gate cannot know): at most
//!    [`REQUESTS_INFLIGHT_PER_USER_MAX`] non-watch requests of one user in flight within the
//!    server's [`crate::REQUESTS_INFLIGHT_MAX`]; past that, 429.
//!
//! The server's own in-process components and `system:masters` are exempt from both (kube's
//! API Priority and Fairness gives them the exempt and system priority levels).
//!
//! Simpler than kube's APF, whose per-flow concurrency and queues the gate borrows: one
//! queue per user (no shuffle sharding), no flow schemas or priority levels, every request
//! one seat.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::Identity;

/// Non-watch requests one user may have in flight at once (then 429 for that user).
pub const REQUESTS_INFLIGHT_PER_USER_MAX: usize = 512;

/// Requests of one certificate user executing at once (the connection gate); more wait.
/// 64, not 32: at 32 a single user's 64 concurrent writers were held to 78 % of the
/// creates/s that AlwaysAllow serves (`logbook bench auth`), under the 80 % floor.
pub const REQUESTS_EXECUTING_PER_USER_MAX: usize = 64;
/// Requests of one certificate user waiting for the gate; more are refused with 429.
pub const REQUESTS_QUEUED_PER_USER_MAX: usize = 64;

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
}

/// The connection gate: per certificate user, a bounded number of requests executing and a
/// bounded FIFO queue of waiting ones (see the module header). A user's entry lives while
/// it has requests executing or waiting.
#[derive(Debug)]
pub struct Gates {
    executing_max: AtomicUsize,
    queued_max: AtomicUsize,
    users: Arc<Mutex<HashMap<String, Arc<Gate>>>>,
}

impl Default for Gates {
    fn default() -> Self {
        Gates {
            executing_max: AtomicUsize::new(REQUESTS_EXECUTING_PER_USER_MAX),
            queued_max: AtomicUsize::new(REQUESTS_QUEUED_PER_USER_MAX),
            users: Arc::new(Mutex::new(HashMap::new())),
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
}
