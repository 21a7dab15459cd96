//! Simulated nodes, like kwok: Nodes that register, heartbeat and run pods without any
//! container runtime, so that users and benchmarks see a realistic cluster.
//!
//! [`run`] registers [`SimConfig::nodes`] Nodes (`<prefix>-0007`, labels, capacity,
//! conditions, addresses, nodeInfo, a podCIDR each), keeps one Lease per node renewed in
//! `kube-node-lease` (renewals spread evenly over the heartbeat interval), and plays a
//! kubelet's part for every pod bound to one of them: it reports the pod Running with a pod
//! IP from the node's podCIDR, completes run-to-completion pods, crash-loops containers that
//! are told to fail, and finishes graceful deletions.
//!
//! Where to read: `objects.rs` builds every object and status as pure functions (tested
//! there); `lifecycle.rs` is a pod's simulated life as a pure state machine; `nodes.rs`
//! registers nodes and renews leases; `pods.rs` is the single pod watch and the loop that
//! writes statuses (one timer heap for delayed work, bounded concurrent writes).
//!
//! # Pod annotations
//! - `sim.logbook.dev/run-seconds` (decimal seconds, default [`SimConfig::run_time`]): how
//!   long containers run before they exit. Applies to `restartPolicy` `Never`/`OnFailure`
//!   pods, and to `Always` pods that also carry `exit-code`.
//! - `sim.logbook.dev/exit-code` (integer, default 0): the containers' exit code. `Never`:
//!   0 → `Succeeded`, else `Failed`. `OnFailure`: 0 → `Succeeded`, else the containers
//!   restart with back-off (10 s, 20 s, 40 s… capped at 300 s; `CrashLoopBackOff` while
//!   waiting). `Always`: without the annotation the pod runs forever; with it, containers
//!   exit after the run time and restart with the same back-off, whatever the code.
//!
//! Invalid annotation values are logged and ignored (the default applies).
//!
//! A container with a `readinessProbe` reports `ready: false` until its
//! `initialDelaySeconds` have passed since it started.

mod lifecycle;
mod nodes;
pub(crate) mod objects;
mod pods;

use std::time::Duration;

pub use objects::SIM_NODES_MAX;
pub use pods::STATUS_WRITES_INFLIGHT_MAX;

/// Annotation: how long a pod's containers run before they exit (decimal seconds).
pub const RUN_SECONDS_ANNOTATION: &str = "sim.logbook.dev/run-seconds";
/// Annotation: the exit code a pod's containers exit with.
pub const EXIT_CODE_ANNOTATION: &str = "sim.logbook.dev/exit-code";
/// Label every simulated Node carries (`type=logbook-simulated`), as kwok's `type=kwok`.
pub const SIMULATED_LABEL: (&str, &str) = ("type", "logbook-simulated");

/// What to simulate. `Default` gives kwok-like defaults; only `nodes` usually changes.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// How many nodes to register (at most [`SIM_NODES_MAX`]).
    pub nodes: usize,
    /// Node names are `<name_prefix>-<index>`, the index zero-padded to a fixed width.
    pub name_prefix: String,
    /// How often each node's Lease is renewed; renewals are spread evenly over it.
    pub heartbeat_interval: Duration,
    /// How often each node's status is re-posted (kubelet's nodeStatusReportFrequency).
    pub node_status_report_interval: Duration,
    /// `topology.kubernetes.io/zone`, assigned round-robin. Must not be empty.
    pub zones: Vec<String>,
    /// `topology.kubernetes.io/region`.
    pub region: String,
    /// `node.kubernetes.io/instance-type`.
    pub instance_type: String,
    /// Capacity: CPU in millicores (allocatable reserves 100m).
    pub cpu_millicores: u64,
    /// Capacity: memory in GiB (allocatable reserves 1 GiB + 100 MiB eviction threshold).
    pub memory_gib: u64,
    /// Capacity: pods per node (allocatable is the same, as with kubelet).
    pub pods_per_node_max: u32,
    /// Capacity: ephemeral storage in GiB (allocatable is 90%, as kubelet's eviction).
    pub ephemeral_storage_gib: u64,
    /// nodeInfo.kubeletVersion (and kubeProxyVersion).
    pub kubelet_version: String,
    /// How long run-to-completion containers run unless the run-seconds annotation says.
    pub run_time: Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            nodes: 1,
            name_prefix: "sim-node".into(),
            heartbeat_interval: Duration::from_secs(10),
            node_status_report_interval: Duration::from_secs(300),
            zones: vec!["zone-a".into(), "zone-b".into(), "zone-c".into()],
            region: "sim-region".into(),
            instance_type: "logbook-sim.8xlarge".into(),
            cpu_millicores: 32_000,
            memory_gib: 256,
            pods_per_node_max: 110,
            ephemeral_storage_gib: 200,
            kubelet_version: "v1.33.0".into(),
            run_time: Duration::from_secs(1),
        }
    }
}

/// Why the simulation stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid simulation config: {0}")]
    Config(String),
    #[error("could not register node {node}")]
    Register {
        node: String,
        #[source]
        source: kube::Error,
    },
    #[error("a built {what} does not decode as its Kubernetes type")]
    Build {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Registers the nodes, then heartbeats them and runs their pods until `shutdown` is true
/// (or its sender is dropped).
///
/// # Errors
/// [`Error::Config`] for an unusable config; [`Error::Register`] when a node cannot be
/// registered after retries (the API is down or refuses it). Once registered, API errors
/// are logged and retried, never returned.
pub async fn run(
    client: kube::Client,
    cfg: SimConfig,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<()> {
    objects::check_config(&cfg)?;
    let boot = jiff::Timestamp::now();
    tracing::info!(nodes = cfg.nodes, prefix = %cfg.name_prefix, "registering simulated nodes");
    tokio::select! {
        r = nodes::register_all(&client, &cfg, boot) => r?,
        () = shutdown_requested(&mut shutdown) => return Ok(()),
    }
    tracing::info!(nodes = cfg.nodes, "simulated nodes registered");
    let stale = nodes::Stale::default();
    let own = nodes::watch_own_nodes(client.clone(), cfg.clone(), stale.clone(), shutdown.clone());
    let heartbeats = nodes::heartbeat(client.clone(), cfg.clone(), boot, stale, shutdown.clone());
    let kubelet = pods::Kubelet::new(client, &cfg).run(shutdown);
    tokio::join!(own, heartbeats, kubelet);
    Ok(())
}

/// Resolves when the shutdown flag is true or its sender is gone.
async fn shutdown_requested(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    // `wait_for` errs only when the sender is dropped: that is a shutdown too.
    let _ = shutdown.wait_for(|stop| *stop).await;
}
