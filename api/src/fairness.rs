//! Per-user shares of the requests in flight: one user (a client certificate's name) may
//! hold at most [`REQUESTS_INFLIGHT_PER_USER_MAX`] of the server's
//! [`crate::REQUESTS_INFLIGHT_MAX`] non-watch slots at once; past that the user gets 429 with
//! `Retry-After` while everyone else keeps being served. The server's own in-process
//! components and `system:masters` are exempt (kube's API Priority and Fairness gives them
//! the exempt and system priority levels).
//!
//! Simpler than kube's APF: no queues, no shuffle sharding, no per-flow-schema priority
//! levels; a user over its share is refused at once rather than queued.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::Identity;

/// Non-watch requests one user may have in flight at once (then 429 for that user).
pub const REQUESTS_INFLIGHT_PER_USER_MAX: usize = 512;

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
        if who.source == IN_PROCESS_SOURCE || who.groups.iter().any(|g| g == EXEMPT_GROUP) {
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
}
