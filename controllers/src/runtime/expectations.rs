//! Expectations (client-go's `ControllerExpectations`): after a controller creates or
//! deletes pods, it waits to *see* those changes in its cache before acting on the count
//! again, so a lagging cache never makes it create or delete twice.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long unobserved expectations hold before the controller acts anyway (client-go: 5 min).
pub const EXPECTATIONS_TIMEOUT_SECONDS: u64 = 300;

#[derive(Default)]
struct Pending {
    adds: i64,
    deletes: HashSet<String>,
    set_at: Option<Instant>,
}

#[derive(Default)]
pub struct Expectations {
    by_owner: Mutex<HashMap<String, Pending>>,
}

impl Expectations {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pending>> {
        match self.by_owner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Whether the owner's earlier creates and deletes have all been observed (or timed out).
    pub fn satisfied(&self, owner: &str) -> bool {
        let m = self.lock();
        match m.get(owner) {
            None => true,
            Some(p) => {
                (p.adds <= 0 && p.deletes.is_empty())
                    || p.set_at.is_some_and(|t| {
                        t.elapsed() > Duration::from_secs(EXPECTATIONS_TIMEOUT_SECONDS)
                    })
            }
        }
    }

    /// Records that `n` creates are about to be sent.
    pub fn expect_creations(&self, owner: &str, n: usize) {
        let mut m = self.lock();
        let p = m.entry(owner.to_string()).or_default();
        p.adds = i64::try_from(n).unwrap_or(i64::MAX);
        p.set_at = Some(Instant::now());
    }

    /// Records that these pods are about to be deleted.
    pub fn expect_deletions(&self, owner: &str, pods: impl IntoIterator<Item = String>) {
        let mut m = self.lock();
        let p = m.entry(owner.to_string()).or_default();
        p.deletes = pods.into_iter().collect();
        p.set_at = Some(Instant::now());
    }

    /// A create was seen in the cache, or failed (it will never be seen).
    pub fn creation_observed(&self, owner: &str) {
        if let Some(p) = self.lock().get_mut(owner) {
            p.adds -= 1;
        }
    }

    /// A deletion of `pod` was seen, or failed.
    pub fn deletion_observed(&self, owner: &str, pod: &str) {
        if let Some(p) = self.lock().get_mut(owner) {
            p.deletes.remove(pod);
        }
    }

    /// Forgets an owner that is gone.
    pub fn delete(&self, owner: &str) {
        self.lock().remove(owner);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expectations_are_satisfied_once_every_create_and_delete_is_observed() {
        let e = Expectations::default();
        assert!(e.satisfied("ns/rs"));
        e.expect_creations("ns/rs", 2);
        assert!(!e.satisfied("ns/rs"));
        e.creation_observed("ns/rs");
        assert!(!e.satisfied("ns/rs"));
        e.creation_observed("ns/rs");
        assert!(e.satisfied("ns/rs"));
        e.expect_deletions("ns/rs", ["ns/p1".to_string()]);
        assert!(!e.satisfied("ns/rs"));
        e.deletion_observed("ns/rs", "ns/p1");
        e.deletion_observed("ns/rs", "ns/p1");
        assert!(e.satisfied("ns/rs"));
    }
}
