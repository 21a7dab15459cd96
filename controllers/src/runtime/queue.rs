//! The work queue: client-go's semantics (a key is queued at most once; a key being worked
//! on is not handed to a second worker, and is queued again when it finishes if it was
//! added meanwhile), delayed adds, and per-key exponential back-off for failures.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// Distinct keys a queue holds (queued plus delayed). Keys are object names and a key is
/// held once however often it is added, so this bounds memory only against a runaway
/// producer; a dropped key is counted ([`WorkQueue::dropped`]) and comes back with the next
/// change to its object.
pub const QUEUE_KEYS_MAX: usize = 1_000_000;
/// First retry delay after a failed reconcile (client-go: 5 ms).
pub const RETRY_BACKOFF_BASE_MS: u64 = 5;
/// Longest retry delay: the back-off doubles per consecutive failure up to this.
pub const RETRY_BACKOFF_MAX_MS: u64 = 60_000;

#[derive(Default)]
struct State {
    queue: VecDeque<String>,
    /// Keys waiting in `queue` or to be re-queued once their worker is done.
    dirty: HashSet<String>,
    processing: HashSet<String>,
    delayed: BinaryHeap<Reverse<(Instant, String)>>,
    /// The earliest deadline each delayed key has; a later `add_after` of the same key is
    /// folded into it (no duplicate heap entries).
    delayed_at: HashMap<String, Instant>,
    failures: HashMap<String, u32>,
    shut_down: bool,
}

/// A bounded, de-duplicating work queue of object keys.
#[derive(Default)]
pub struct WorkQueue {
    state: Mutex<State>,
    notify: Notify,
    dropped: AtomicU64,
}

impl WorkQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Queues `key` unless it is queued already.
    pub fn add(&self, key: &str) {
        let mut s = self.lock();
        if !self.add_locked(&mut s, key) {
            return;
        }
        drop(s);
        self.notify.notify_one();
    }

    fn add_locked(&self, s: &mut State, key: &str) -> bool {
        if s.shut_down || s.dirty.contains(key) {
            return false;
        }
        if s.dirty.len() + s.delayed.len() >= QUEUE_KEYS_MAX {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        s.dirty.insert(key.to_string());
        if !s.processing.contains(key) {
            s.queue.push_back(key.to_string());
        }
        true
    }

    /// Queues `key` after `delay`.
    pub fn add_after(&self, key: &str, delay: Duration) {
        if delay.is_zero() {
            return self.add(key);
        }
        let mut s = self.lock();
        if s.shut_down {
            return;
        }
        let at = Instant::now() + delay;
        if s.delayed_at.get(key).is_some_and(|t| *t <= at) {
            return;
        }
        if s.dirty.len() + s.delayed.len() >= QUEUE_KEYS_MAX {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        s.delayed_at.insert(key.to_string(), at);
        s.delayed.push(Reverse((at, key.to_string())));
        drop(s);
        // A waiting worker recomputes its deadline.
        self.notify.notify_one();
    }

    /// Queues `key` after its back-off, which doubles with each consecutive failure.
    pub fn add_rate_limited(&self, key: &str) {
        let failures = {
            let mut s = self.lock();
            let n = s.failures.entry(key.to_string()).or_insert(0);
            *n = n.saturating_add(1);
            *n
        };
        self.add_after(key, backoff(failures));
    }

    /// Clears `key`'s failure count (after a successful reconcile).
    pub fn forget(&self, key: &str) {
        self.lock().failures.remove(key);
    }

    /// The next key to work on; waits for one. `None` once the queue is shut down.
    pub async fn get(&self) -> Option<String> {
        loop {
            let notified = self.notify.notified();
            let deadline = {
                let mut s = self.lock();
                if s.shut_down {
                    return None;
                }
                let now = Instant::now();
                while let Some(Reverse((at, _))) = s.delayed.peek() {
                    if *at > now {
                        break;
                    }
                    if let Some(Reverse((at, key))) = s.delayed.pop() {
                        // A superseded entry (an earlier deadline was set later) is skipped.
                        if s.delayed_at.get(&key) == Some(&at) {
                            s.delayed_at.remove(&key);
                            self.add_locked(&mut s, &key);
                        }
                    }
                }
                if let Some(key) = s.queue.pop_front() {
                    s.dirty.remove(&key);
                    s.processing.insert(key.clone());
                    if !s.queue.is_empty() {
                        // Wake another worker for the rest.
                        self.notify.notify_one();
                    }
                    return Some(key);
                }
                s.delayed.peek().map(|Reverse((at, _))| *at)
            };
            match deadline {
                Some(at) => {
                    tokio::select! {
                        () = notified => {}
                        () = tokio::time::sleep_until(at) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    /// Marks `key` finished; it is queued again if it was added while being worked on.
    pub fn done(&self, key: &str) {
        let mut s = self.lock();
        s.processing.remove(key);
        if s.dirty.contains(key) {
            s.queue.push_back(key.to_string());
            drop(s);
            self.notify.notify_one();
        }
    }

    /// Stops handing out keys; waiting workers get `None`.
    pub fn shut_down(&self) {
        self.lock().shut_down = true;
        self.notify.notify_waiters();
    }

    /// Keys queued now (not counting delayed ones or those being worked on).
    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keys dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// The delay before retry number `failures` (1 = the first retry).
pub fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(30);
    let ms = RETRY_BACKOFF_BASE_MS.saturating_mul(1u64 << exp);
    Duration::from_millis(ms.min(RETRY_BACKOFF_MAX_MS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_key_added_twice_is_handed_out_once() {
        let q = WorkQueue::default();
        q.add("a");
        q.add("a");
        q.add("b");
        assert_eq!(q.get().await.as_deref(), Some("a"));
        assert_eq!(q.get().await.as_deref(), Some("b"));
        assert!(q.is_empty());
    }

    #[tokio::test]
    async fn a_key_added_while_being_worked_on_comes_back_after_done() {
        let q = WorkQueue::default();
        q.add("a");
        let k = q.get().await;
        assert_eq!(k.as_deref(), Some("a"));
        q.add("a");
        assert!(
            q.is_empty(),
            "not handed to a second worker while in progress"
        );
        q.done("a");
        assert_eq!(q.get().await.as_deref(), Some("a"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_delayed_key_arrives_after_its_delay() {
        let q = WorkQueue::default();
        q.add_after("a", Duration::from_secs(2));
        let start = Instant::now();
        assert_eq!(q.get().await.as_deref(), Some("a"));
        assert!(start.elapsed() >= Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_delayed_twice_arrives_once_at_the_earlier_deadline() {
        let q = WorkQueue::default();
        q.add_after("a", Duration::from_secs(5));
        q.add_after("a", Duration::from_secs(1));
        q.add_after("a", Duration::from_secs(3));
        let start = Instant::now();
        assert_eq!(q.get().await.as_deref(), Some("a"));
        assert!(start.elapsed() < Duration::from_secs(2));
        q.done("a");
        let again = tokio::time::timeout(Duration::from_secs(10), q.get()).await;
        assert!(again.is_err(), "no second delivery: {again:?}");
    }

    #[test]
    fn the_backoff_doubles_and_stops_at_its_cap() {
        assert_eq!(backoff(1), Duration::from_millis(5));
        assert_eq!(backoff(2), Duration::from_millis(10));
        assert_eq!(backoff(5), Duration::from_millis(80));
        assert_eq!(backoff(40), Duration::from_millis(RETRY_BACKOFF_MAX_MS));
    }

    #[tokio::test]
    async fn shutting_down_releases_waiting_workers() {
        let q = std::sync::Arc::new(WorkQueue::default());
        let q2 = q.clone();
        let h = tokio::spawn(async move { q2.get().await });
        tokio::task::yield_now().await;
        q.shut_down();
        let got = tokio::time::timeout(Duration::from_secs(5), h).await;
        assert!(matches!(got, Ok(Ok(None))));
    }
}
