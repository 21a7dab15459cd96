//! Node registration and heartbeats: create (or adopt) each Node, write its status, keep its
//! Lease renewed, and re-post its status every `node_status_report_interval` — or at the next
//! heartbeat when the Node's Ready condition was changed by someone else (the node lifecycle
//! controller marking it `Unknown` during a partition), as kubelet does.

use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::task::JoinSet;

use super::objects::{lease_object, micro_time, node_name, node_object, node_status};
use super::{Error, Result, SimConfig};

/// Nodes registered at once (each is three requests in a row).
const REGISTRATIONS_INFLIGHT_MAX: usize = 64;
/// Attempts to register one node before `run` gives up with `Error::Register`.
const REGISTER_ATTEMPTS_MAX: u32 = 8;
/// The first retry delay of a failed registration or renewal; doubles per attempt.
const RETRY_DELAY_FIRST_MS: u64 = 200;
/// Lease renewals (and status reports) in flight at once; a tick that finds them all busy
/// waits, so a slow server slows the heartbeats instead of piling up requests.
const RENEWALS_INFLIGHT_MAX: usize = 64;
/// kubelet's default Lease duration.
const LEASE_DURATION_S: i32 = 40;
const LEASE_NAMESPACE: &str = "kube-node-lease";

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

fn decode<T: serde::de::DeserializeOwned>(v: serde_json::Value, what: &'static str) -> Result<T> {
    serde_json::from_value(v).map_err(|source| Error::Build { what, source })
}

/// Registers every node, `REGISTRATIONS_INFLIGHT_MAX` at a time.
pub(super) async fn register_all(
    client: &kube::Client,
    cfg: &SimConfig,
    boot: Timestamp,
) -> Result<()> {
    futures::stream::iter(0..cfg.nodes)
        .map(|i| register_retrying(client, cfg, i, boot))
        .buffer_unordered(REGISTRATIONS_INFLIGHT_MAX)
        .try_for_each(|_uid| async { Ok(()) })
        .await
}

async fn register_retrying(
    client: &kube::Client,
    cfg: &SimConfig,
    i: usize,
    boot: Timestamp,
) -> Result<String> {
    let mut delay = Duration::from_millis(RETRY_DELAY_FIRST_MS);
    let mut attempt = 1;
    loop {
        match register(client, cfg, i, boot).await {
            Ok(uid) => return Ok(uid),
            Err(RegisterError::Build(e)) => return Err(e),
            Err(RegisterError::Api(source)) if attempt >= REGISTER_ATTEMPTS_MAX => {
                return Err(Error::Register {
                    node: node_name(cfg, i),
                    source,
                });
            }
            Err(RegisterError::Api(e)) => {
                tracing::warn!(node = node_name(cfg, i), attempt, error = %e, "registering a simulated node failed; retrying");
                tokio::time::sleep(delay).await;
                delay = delay.saturating_mul(2);
                attempt += 1;
            }
        }
    }
}

enum RegisterError {
    Build(Error),
    Api(kube::Error),
}

impl From<kube::Error> for RegisterError {
    fn from(e: kube::Error) -> Self {
        Self::Api(e)
    }
}

/// Creates node `i` (or adopts it if it exists), writes its status, creates or renews its
/// Lease; returns the Node's UID.
async fn register(
    client: &kube::Client,
    cfg: &SimConfig,
    i: usize,
    boot: Timestamp,
) -> Result<String, RegisterError> {
    let name = node_name(cfg, i);
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = decode(node_object(cfg, i), "Node").map_err(RegisterError::Build)?;
    let created = match nodes.create(&PostParams::default(), &node).await {
        Ok(n) => n,
        Err(e) if is_status(&e, 409) => {
            tracing::debug!(node = name, "adopting an existing node");
            nodes.get(&name).await?
        }
        Err(e) => return Err(e.into()),
    };
    let uid = created.metadata.uid.unwrap_or_default();
    let now = Timestamp::now();
    let status = json!({"status": node_status(cfg, i, now, boot)});
    nodes
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
        .await?;
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let lease: Lease = decode(lease_object(&name, &uid, LEASE_DURATION_S, now), "Lease")
        .map_err(RegisterError::Build)?;
    match leases.create(&PostParams::default(), &lease).await {
        Ok(_) => {}
        Err(e) if is_status(&e, 409) => {
            // Adopted: take the Lease over (holder, owner) and renew it.
            let patch = serde_json::to_value(&lease).map_err(|source| {
                RegisterError::Build(Error::Build {
                    what: "Lease",
                    source,
                })
            })?;
            leases
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
        }
        Err(e) => return Err(e.into()),
    }
    Ok(uid)
}

/// Indexes of this process's nodes whose Ready condition someone else changed (the node
/// lifecycle controller marks a silent node `Unknown`): they re-post their status on their
/// next heartbeat, as kubelet does when the Node it reads differs from what it reports.
pub(super) type Stale = Arc<std::sync::Mutex<std::collections::HashSet<usize>>>;

/// Watches this process's Nodes and marks those whose Ready is not `True` as stale.
pub(super) async fn watch_own_nodes(
    client: kube::Client,
    cfg: SimConfig,
    stale: Stale,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    use kube::runtime::{WatchStreamExt, watcher};
    let index: std::collections::HashMap<String, usize> =
        (0..cfg.nodes).map(|i| (node_name(&cfg, i), i)).collect();
    let api: Api<Node> = Api::all(client);
    let events = watcher::watcher(api, watcher::Config::default()).default_backoff();
    let mut events = std::pin::pin!(events);
    loop {
        tokio::select! {
            () = super::shutdown_requested(&mut shutdown) => return,
            ev = events.next() => match ev {
                Some(Ok(watcher::Event::Apply(n) | watcher::Event::InitApply(n))) => {
                    let Some(i) = n.metadata.name.as_ref().and_then(|name| index.get(name)) else {
                        continue;
                    };
                    let ready = n
                        .status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
                    if !ready {
                        stale.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(*i);
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => tracing::debug!(error = %e, "the node watch failed; it resumes after a back-off"),
                None => return,
            },
        }
    }
}

/// One heartbeat: renew node `i`'s Lease, and post its status when `report` is set. A Lease
/// or Node that someone deleted is recreated.
async fn beat(client: kube::Client, cfg: Arc<SimConfig>, i: usize, boot: Timestamp, report: bool) {
    let name = node_name(&cfg, i);
    let now = Timestamp::now();
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let patch = json!({"spec": {"renewTime": micro_time(now), "holderIdentity": name, "leaseDurationSeconds": LEASE_DURATION_S}});
    let renewed = leases
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await;
    let status_result = if report {
        let nodes: Api<Node> = Api::all(client.clone());
        let status = json!({"status": node_status(&cfg, i, now, boot)});
        nodes
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .map(drop)
    } else {
        Ok(())
    };
    let gone = matches!(&renewed, Err(e) if is_status(e, 404))
        || matches!(&status_result, Err(e) if is_status(e, 404));
    if gone {
        tracing::info!(
            node = name,
            "a simulated node or its lease was deleted; registering it again"
        );
        if let Err(e) = register_retrying(&client, &cfg, i, boot).await {
            tracing::warn!(node = name, error = %e, "re-registering a simulated node failed; next heartbeat retries");
        }
        return;
    }
    for (what, r) in [
        ("renewing the lease", renewed.map(drop)),
        ("reporting node status", status_result),
    ] {
        if let Err(e) = r {
            tracing::warn!(node = name, error = %e, "{what} of a simulated node failed; the next heartbeat retries");
        }
    }
}

/// Renews every node's Lease once per `heartbeat_interval`, one node every
/// `interval / nodes` (an even rate, no bursts), and re-posts node statuses every
/// `node_status_report_interval`, until shutdown.
pub(super) async fn heartbeat(
    client: kube::Client,
    cfg: SimConfig,
    boot: Timestamp,
    stale: Stale,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let n = cfg.nodes;
    if n == 0 {
        super::shutdown_requested(&mut shutdown).await;
        return;
    }
    let spacing = (cfg.heartbeat_interval / u32::try_from(n).unwrap_or(u32::MAX))
        .max(Duration::from_micros(100));
    let rounds_per_report = (cfg.node_status_report_interval.as_secs_f64()
        / cfg.heartbeat_interval.as_secs_f64())
    .ceil()
    .max(1.0) as u64;
    let cfg = Arc::new(cfg);
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + spacing, spacing);
    // Burst: a late tick (a busy machine) fires at once, so renewals keep to their schedule
    // instead of drifting later every round (Delay stretched 10 s rounds to 40 s under load).
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut inflight = JoinSet::new();
    let mut beat_index: u64 = 0;
    loop {
        tokio::select! {
            biased;
            () = super::shutdown_requested(&mut shutdown) => break,
            Some(done) = inflight.join_next(), if !inflight.is_empty() => {
                if let Err(e) = done {
                    tracing::error!(error = %e, "a heartbeat task failed");
                }
            }
            _ = ticks.tick(), if inflight.len() < RENEWALS_INFLIGHT_MAX => {
                let i = (beat_index % n as u64) as usize;
                let round = beat_index / n as u64 + 1;
                beat_index += 1;
                let was_stale = stale
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .remove(&i);
                let report = was_stale || round.is_multiple_of(rounds_per_report);
                inflight.spawn(beat(client.clone(), cfg.clone(), i, boot, report));
            }
        }
    }
    inflight.abort_all();
}
