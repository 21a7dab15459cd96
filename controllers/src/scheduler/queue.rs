//! The scheduling queue: pending pods in three places, as in kube-scheduler.
//! - *active*: ready to schedule, highest priority first, then oldest;
//! - *backoff*: failed recently, ready again after 1 s doubling per attempt up to 10 s;
//! - *unschedulable*: no node fit; moved back on a cluster change ([`move_all_unschedulable`])
//!   or after [`UNSCHEDULABLE_FLUSH_INTERVAL_SECONDS`].
//!
//! A pod being bound is *in flight*: out of every queue until its binding answers.
//!
//! [`move_all_unschedulable`]: SchedulingQueue::move_all_unschedulable

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::cache::PodInfo;

/// First back-off after a failed attempt, in seconds; doubles per attempt.
pub const BACKOFF_INITIAL_SECONDS: u64 = 1;
/// Longest back-off, in seconds.
pub const BACKOFF_MAX_SECONDS: u64 = 10;
/// An unschedulable pod is retried at least this often, cluster changes or not.
pub const UNSCHEDULABLE_FLUSH_INTERVAL_SECONDS: u64 = 60;
/// Pending pods tracked at once; beyond it new pods are refused (counted) until a relist.
pub const PENDING_PODS_MAX: usize = 1_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Active,
    Backoff,
    Unschedulable,
    InFlight,
}

#[derive(Debug, Clone)]
pub struct Queued {
    pub pod: Arc<PodInfo>,
    pub state: State,
    pub attempts: u32,
    /// Identifies the one heap entry that is current (older ones are skipped when popped).
    seq: u64,
    last_failure: Option<Instant>,
    unschedulable_since: Option<Instant>,
    /// The last PodScheduled=False message written, so an unchanged one is not rewritten.
    pub last_message: Option<String>,
}

/// Pending pods by uid, with the active and back-off heaps over them.
#[derive(Debug, Default)]
pub struct SchedulingQueue {
    pods: HashMap<String, Queued>,
    /// (priority, oldest first, uid); entries whose seq is stale are skipped.
    active: BinaryHeap<(i32, Reverse<u64>, String)>,
    backoff: BinaryHeap<Reverse<(Instant, u64, String)>>,
    seq: u64,
}

pub fn backoff_duration(attempts: u32) -> Duration {
    let exp = attempts.saturating_sub(1).min(16);
    Duration::from_secs((BACKOFF_INITIAL_SECONDS << exp).min(BACKOFF_MAX_SECONDS))
}

impl SchedulingQueue {
    pub fn len(&self) -> usize {
        self.pods.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }

    pub fn get(&self, uid: &str) -> Option<&Queued> {
        self.pods.get(uid)
    }

    pub fn get_mut(&mut self, uid: &str) -> Option<&mut Queued> {
        self.pods.get_mut(uid)
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn push_active(&mut self, uid: &str) {
        let seq = self.next_seq();
        if let Some(q) = self.pods.get_mut(uid) {
            q.state = State::Active;
            q.seq = seq;
            self.active
                .push((q.pod.priority, Reverse(seq), uid.to_string()));
        }
    }

    fn push_backoff(&mut self, uid: &str, ready: Instant) {
        let seq = self.next_seq();
        if let Some(q) = self.pods.get_mut(uid) {
            q.state = State::Backoff;
            q.seq = seq;
            self.backoff.push(Reverse((ready, seq, uid.to_string())));
        }
    }

    /// Adds a new pending pod (active), or updates a known one; `retry` moves an
    /// unschedulable pod back (its spec or labels changed). Returns false when the queue is
    /// full.
    pub fn add_or_update(&mut self, pod: Arc<PodInfo>, retry: bool, now: Instant) -> bool {
        let uid = pod.uid.clone();
        if let Some(q) = self.pods.get_mut(&uid) {
            q.pod = pod;
            if retry && q.state == State::Unschedulable {
                self.requeue(&uid, now);
            }
            return true;
        }
        if self.pods.len() >= PENDING_PODS_MAX {
            return false;
        }
        self.pods.insert(
            uid.clone(),
            Queued {
                pod,
                state: State::Active,
                attempts: 0,
                seq: 0,
                last_failure: None,
                unschedulable_since: None,
                last_message: None,
            },
        );
        self.push_active(&uid);
        true
    }

    /// Back to backoff while its back-off runs, else active.
    fn requeue(&mut self, uid: &str, now: Instant) {
        let Some(q) = self.pods.get(uid) else { return };
        let ready = q
            .last_failure
            .map(|t| t + backoff_duration(q.attempts))
            .unwrap_or(now);
        if ready > now {
            self.push_backoff(uid, ready);
        } else {
            self.push_active(uid);
        }
    }

    pub fn remove(&mut self, uid: &str) -> Option<Queued> {
        self.pods.remove(uid)
    }

    /// Moves due back-off entries to active, then takes the best active pod (now in flight).
    pub fn pop(&mut self, now: Instant) -> Option<Arc<PodInfo>> {
        while let Some(Reverse((ready, seq, _))) = self.backoff.peek() {
            if *ready > now {
                break;
            }
            let seq = *seq;
            let Some(Reverse((_, _, uid))) = self.backoff.pop() else {
                break;
            };
            if self
                .pods
                .get(&uid)
                .is_some_and(|q| q.seq == seq && q.state == State::Backoff)
            {
                self.push_active(&uid);
            }
        }
        while let Some((_, Reverse(seq), uid)) = self.active.pop() {
            if let Some(q) = self.pods.get_mut(&uid)
                && q.seq == seq
                && q.state == State::Active
            {
                q.state = State::InFlight;
                return Some(q.pod.clone());
            }
        }
        None
    }

    /// No node fit: park the pod until the cluster changes.
    pub fn unschedulable(&mut self, uid: &str, now: Instant) {
        if let Some(q) = self.pods.get_mut(uid) {
            q.attempts = q.attempts.saturating_add(1);
            q.last_failure = Some(now);
            q.unschedulable_since = Some(now);
            q.state = State::Unschedulable;
        }
    }

    /// The binding failed (an error, not a misfit): retry after the back-off.
    pub fn bind_failed(&mut self, uid: &str, now: Instant) {
        let Some(q) = self.pods.get_mut(uid) else {
            return;
        };
        q.attempts = q.attempts.saturating_add(1);
        q.last_failure = Some(now);
        let ready = now + backoff_duration(q.attempts);
        self.push_backoff(uid, ready);
    }

    /// A cluster change may let unschedulable pods fit: move them all back.
    pub fn move_all_unschedulable(&mut self, now: Instant) {
        self.move_unschedulable_if(now, |_| true);
    }

    /// Moves back the unschedulable pods a change may help (`helps`).
    pub fn move_unschedulable_if(&mut self, now: Instant, helps: impl Fn(&PodInfo) -> bool) {
        let uids: Vec<String> = self
            .pods
            .iter()
            .filter(|(_, q)| q.state == State::Unschedulable && helps(&q.pod))
            .map(|(u, _)| u.clone())
            .collect();
        for uid in uids {
            self.requeue(&uid, now);
        }
    }

    /// Moves pods unschedulable for longer than the flush interval back.
    pub fn flush_unschedulable(&mut self, now: Instant) {
        let limit = Duration::from_secs(UNSCHEDULABLE_FLUSH_INTERVAL_SECONDS);
        let uids: Vec<String> = self
            .pods
            .iter()
            .filter(|(_, q)| {
                q.state == State::Unschedulable
                    && q.unschedulable_since
                        .is_some_and(|t| now.duration_since(t) >= limit)
            })
            .map(|(u, _)| u.clone())
            .collect();
        for uid in uids {
            self.requeue(&uid, now);
        }
    }

    /// When the earliest back-off ends.
    pub fn next_backoff(&self) -> Option<Instant> {
        self.backoff.peek().map(|Reverse((t, _, _))| *t)
    }

    /// Whether a pod is ready to pop now.
    pub fn has_active(&self) -> bool {
        !self.active.is_empty()
    }

    /// Every pending uid (a relist drops those it did not see).
    pub fn uids(&self) -> Vec<String> {
        self.pods.keys().cloned().collect()
    }

    /// Drops stale heap entries once they outnumber the pods (bounds the heaps).
    pub fn compact(&mut self) {
        if self.active.len() + self.backoff.len() <= 2 * self.pods.len() + 1024 {
            return;
        }
        let pods = &self.pods;
        self.active.retain(|(_, Reverse(seq), uid)| {
            pods.get(uid)
                .is_some_and(|q| q.seq == *seq && q.state == State::Active)
        });
        self.backoff.retain(|Reverse((_, seq, uid))| {
            pods.get(uid)
                .is_some_and(|q| q.seq == *seq && q.state == State::Backoff)
        });
    }
}
