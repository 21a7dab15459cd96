//! Leader election through a `coordination.k8s.io/v1` Lease, as client-go's
//! `leaderelection` package does it, so that two copies of a component (two
//! `logbook controllers` processes, two schedulers, controllers in two API servers over one
//! store) never reconcile at once.
//!
//! - A candidate takes the Lease when it does not exist, or when the holder has not renewed
//!   it for `lease_duration` **as measured by the candidate's own clock** from the moment it
//!   last saw the record change (client-go's `observedTime`): no trust in clocks of other
//!   machines is needed.
//! - Every write is a compare-and-set on the Lease's resourceVersion, so of two candidates
//!   at most one wins a round.
//! - The leader renews every `retry_period`; when it has not managed to renew for
//!   `renew_deadline` (< `lease_duration`), it stops leading before anyone else may start:
//!   the work it started is told to stop and it campaigns again.
//! - On shutdown the leader releases the Lease (empty holder, 1 s duration), so a standby
//!   takes over at once instead of after `lease_duration`.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tokio::time::Instant;

/// kube-controller-manager's defaults (`--leader-elect-lease-duration` etc.).
pub const LEASE_DURATION_S: u64 = 15;
pub const RENEW_DEADLINE_S: u64 = 10;
pub const RETRY_PERIOD_S: u64 = 2;
/// The namespace component Leases live in.
pub const LEASE_NAMESPACE: &str = "kube-system";

#[derive(Debug, Clone)]
pub struct LeaderElection {
    /// The Lease's name, one per component (`logbook-controllers`, `logbook-scheduler`).
    pub lease_name: String,
    pub namespace: String,
    /// Who this candidate is (`<host>_<random>`): unique per process.
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl LeaderElection {
    /// kube's defaults for a component's Lease, with a fresh identity.
    pub fn new(lease_name: &str) -> Self {
        Self {
            lease_name: lease_name.to_string(),
            namespace: LEASE_NAMESPACE.to_string(),
            identity: identity(),
            lease_duration: Duration::from_secs(LEASE_DURATION_S),
            renew_deadline: Duration::from_secs(RENEW_DEADLINE_S),
            retry_period: Duration::from_secs(RETRY_PERIOD_S),
        }
    }
}

impl LeaderElection {
    /// Keeps the identity in `path` (read, or written the first time), so that a process
    /// restarted on the same state directory is the same candidate and takes its own Lease
    /// back at once instead of waiting `lease_duration` for itself.
    pub fn with_identity_file(mut self, path: &std::path::Path) -> Self {
        match std::fs::read_to_string(path) {
            Ok(id) if !id.trim().is_empty() => self.identity = id.trim().to_string(),
            _ => {
                if let Some(dir) = path.parent() {
                    let _ = std::fs::create_dir_all(dir);
                }
                if let Err(e) = std::fs::write(path, &self.identity) {
                    tracing::warn!(path = %path.display(), "saving the leader identity failed: {e}");
                }
            }
        }
        self
    }
}

/// `<hostname>_<16 random hex digits>`, as client-go's `<hostname>_<uuid>`.
pub fn identity() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string());
    format!("{host}_{:016x}", rand::random::<u64>())
}

fn micro_now() -> MicroTime {
    MicroTime(Timestamp::now())
}

/// What one attempt to take or keep the Lease found.
#[derive(Debug, PartialEq, Eq)]
enum Attempt {
    Held,
    HeldByOther,
}

struct Candidate {
    api: Api<Lease>,
    cfg: LeaderElection,
    /// The last record seen (holder, renewTime, resourceVersion) and when it was first seen.
    observed: Option<(String, Instant)>,
}

impl Candidate {
    /// One round of client-go's `tryAcquireOrRenew`.
    async fn try_acquire_or_renew(&mut self) -> Result<Attempt, kube::Error> {
        let now = micro_now();
        let name = &self.cfg.lease_name;
        let duration_s = i32::try_from(self.cfg.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let current = match self.api.get_opt(name).await? {
            Some(l) => l,
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        namespace: Some(self.cfg.namespace.clone()),
                        ..Default::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.cfg.identity.clone()),
                        lease_duration_seconds: Some(duration_s),
                        acquire_time: Some(now.clone()),
                        renew_time: Some(now),
                        lease_transitions: Some(0),
                        ..Default::default()
                    }),
                };
                self.api.create(&PostParams::default(), &lease).await?;
                self.observed = None;
                return Ok(Attempt::Held);
            }
        };
        let spec = current.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let record = format!(
            "{holder}|{:?}|{}",
            spec.renew_time.as_ref().map(|t| t.0),
            current.metadata.resource_version.as_deref().unwrap_or("")
        );
        let seen_at = match &self.observed {
            Some((r, at)) if *r == record => *at,
            _ => {
                let at = Instant::now();
                self.observed = Some((record, at));
                at
            }
        };
        let held_by_me = holder == self.cfg.identity;
        // The holder's own duration counts (a released Lease says 1 s).
        let their_duration = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(self.cfg.lease_duration, Duration::from_secs);
        if !held_by_me && !holder.is_empty() && seen_at.elapsed() < their_duration {
            return Ok(Attempt::HeldByOther);
        }
        let mut lease = current;
        let mut s = spec;
        if !held_by_me {
            s.acquire_time = Some(now.clone());
            s.lease_transitions = Some(s.lease_transitions.unwrap_or(0) + 1);
        }
        s.holder_identity = Some(self.cfg.identity.clone());
        s.lease_duration_seconds = Some(duration_s);
        s.renew_time = Some(now);
        lease.spec = Some(s);
        // Replace carries the resourceVersion: a concurrent writer makes this a 409.
        self.api
            .replace(name, &PostParams::default(), &lease)
            .await?;
        self.observed = None;
        Ok(Attempt::Held)
    }

    /// Gives the Lease up (client-go's ReleaseOnCancel) if this candidate still holds it.
    async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.cfg.lease_name).await else {
            return;
        };
        let mut s = lease.spec.clone().unwrap_or_default();
        if s.holder_identity.as_deref() != Some(self.cfg.identity.as_str()) {
            return;
        }
        s.holder_identity = Some(String::new());
        s.lease_duration_seconds = Some(1);
        s.renew_time = Some(micro_now());
        lease.spec = Some(s);
        if let Err(e) = self
            .api
            .replace(&self.cfg.lease_name, &PostParams::default(), &lease)
            .await
        {
            tracing::warn!(
                lease = self.cfg.lease_name,
                "releasing the lease failed: {e}"
            );
        }
    }
}

/// Campaigns for the Lease until `shutdown`; each time this candidate becomes leader it
/// calls `lead` with a receiver that flips when leadership ends (lost or shutdown). Work
/// started by `lead` must stop when that receiver flips.
pub async fn run<F>(
    client: kube::Client,
    cfg: LeaderElection,
    mut shutdown: watch::Receiver<bool>,
    mut lead: F,
) where
    F: FnMut(watch::Receiver<bool>),
{
    let mut c = Candidate {
        api: Api::namespaced(client, &cfg.namespace),
        cfg,
        observed: None,
    };
    loop {
        // Campaign.
        loop {
            if *shutdown.borrow() {
                return;
            }
            match c.try_acquire_or_renew().await {
                Ok(Attempt::Held) => break,
                Ok(Attempt::HeldByOther) => {}
                Err(e) => {
                    tracing::debug!(lease = c.cfg.lease_name, "campaign round failed: {e}")
                }
            }
            tokio::select! {
                () = tokio::time::sleep(jittered(c.cfg.retry_period)) => {}
                _ = shutdown.changed() => {}
            }
        }
        tracing::info!(
            lease = c.cfg.lease_name,
            identity = c.cfg.identity,
            "became leader"
        );
        let (tx, rx) = watch::channel(false);
        lead(rx);
        // Lead: renew every retry period; stop when renewals fail for renew_deadline.
        let mut last_renewed = Instant::now();
        let lost = loop {
            tokio::select! {
                () = tokio::time::sleep(c.cfg.retry_period) => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                break false;
            }
            match c.try_acquire_or_renew().await {
                Ok(Attempt::Held) => last_renewed = Instant::now(),
                Ok(Attempt::HeldByOther) => break true,
                Err(e) => {
                    tracing::warn!(lease = c.cfg.lease_name, "renewing the lease failed: {e}");
                    if last_renewed.elapsed() >= c.cfg.renew_deadline {
                        break true;
                    }
                }
            }
            if last_renewed.elapsed() >= c.cfg.renew_deadline {
                break true;
            }
        };
        let _ = tx.send(true);
        if !lost {
            c.release().await;
            return;
        }
        tracing::warn!(
            lease = c.cfg.lease_name,
            identity = c.cfg.identity,
            "lost leadership; stopped leading and campaigning again"
        );
    }
}

/// client-go waits `retry_period` plus up to 20% jitter between campaign rounds.
fn jittered(d: Duration) -> Duration {
    d + d.mul_f64(rand::random::<f64>() * 0.2)
}
