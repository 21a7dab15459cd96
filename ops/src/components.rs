//! The components that make intent true — controllers (and, as they land, the scheduler
//! and simulated nodes) — either in-process beside `logbook serve` (through
//! [`crate::inproc`]) or as their own processes against any API server (a kubeconfig).
//! The same library code runs in both.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use logbook_api::Api;
use logbook_controllers::manager::{self, ControllersConfig};
use logbook_controllers::runtime::leader::{self, LeaderElection};
use logbook_controllers::scheduler::SchedulerConfig;
use tokio::sync::watch;

use logbook_node::simulate::SimConfig;

use crate::cli::{ComponentArgs, NodeArgs, SchedulerArgs, SimShape};

/// The identity the controllers act as (kube-controller-manager's user name).
pub const CONTROLLERS_USER: &str = "system:kube-controller-manager";
/// The identity the scheduler acts as (kube-scheduler's user name).
pub const SCHEDULER_USER: &str = "system:kube-scheduler";

/// The identity simulated nodes act as: one process plays many nodes, so it has a role of
/// its own (`system:logbook:simulated-nodes`) rather than one node's identity.
pub const SIMULATED_NODES_USER: &str = "system:logbook:simulated-nodes";

/// The Lease the controllers elect their leader through (kube-controller-manager's
/// `kube-system/kube-controller-manager`).
pub const CONTROLLERS_LEASE: &str = "logbook-controllers";

/// The Lease schedulers named `name` elect their leader through.
pub fn scheduler_lease(name: &str) -> String {
    if name == "default-scheduler" {
        "logbook-scheduler".to_string()
    } else {
        format!("logbook-scheduler-{name}")
    }
}

/// Runs the scheduler while this process leads `lease` (or always, without election).
fn spawn_scheduler(
    client: kube::Client,
    cfg: SchedulerConfig,
    election: Option<LeaderElection>,
    shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let start = move |client: kube::Client, cfg: SchedulerConfig, rx: watch::Receiver<bool>| {
        tokio::spawn(async move {
            if let Err(e) = logbook_controllers::scheduler::run(client, cfg, rx).await {
                tracing::error!("scheduler stopped: {e}");
            }
        })
    };
    match election {
        None => start(client, cfg, shutdown),
        Some(election) => tokio::spawn(async move {
            let c = client.clone();
            leader::run(c, election, shutdown, move |rx| {
                start(client.clone(), cfg.clone(), rx);
            })
            .await;
        }),
    }
}

/// Starts the scheduler inside `logbook serve`, elected through its Lease (so a `logbook
/// scheduler` process or another API server's scheduler never schedules at the same time).
pub fn start_scheduler_in_process(
    api: &Arc<Api>,
    data_dir: &Path,
    shutdown: watch::Receiver<bool>,
) {
    let client = crate::inproc::client(api, SCHEDULER_USER, &[]);
    let cfg = SchedulerConfig::default();
    let election = LeaderElection::new(&scheduler_lease(&cfg.scheduler_name))
        .with_identity_file(&data_dir.join("scheduler").join("leader-identity"));
    spawn_scheduler(client, cfg, Some(election), shutdown);
}

/// The simulated nodes' configuration from the command line.
pub fn sim_config(nodes: usize, shape: &SimShape) -> SimConfig {
    SimConfig {
        nodes,
        name_prefix: shape.node_name_prefix.clone(),
        cpu_millicores: shape.node_cpu.saturating_mul(1000),
        memory_gib: shape.node_memory_gib,
        pods_per_node_max: shape.node_pods_max,
        ..SimConfig::default()
    }
}

/// Starts simulated nodes inside `logbook serve`, acting as the nodes' group.
pub fn start_nodes_in_process(api: &Arc<Api>, cfg: SimConfig, shutdown: watch::Receiver<bool>) {
    let client = crate::inproc::client(api, SIMULATED_NODES_USER, &[]);
    tokio::spawn(async move {
        if let Err(e) = logbook_node::simulate::run(client, cfg, shutdown).await {
            tracing::error!("simulated nodes stopped: {e}");
        }
    });
}

/// `logbook node --simulate N`: runs until SIGTERM/SIGINT.
pub async fn run_node(args: NodeArgs) -> Result<()> {
    if let Some(socket) = &args.cri_socket {
        return run_node_agent(&args, socket).await;
    }
    let simulate = args.simulate.unwrap_or(0);
    let client = client(args.kubeconfig.as_deref()).await?;
    let (tx, rx) = watch::channel(false);
    let cfg = sim_config(simulate, &args.shape);
    let task = tokio::spawn(logbook_node::simulate::run(client, cfg, rx));
    println!("logbook node running {simulate} simulated nodes");
    crate::serve::wait_for_signal().await;
    let _ = tx.send(true);
    match task.await {
        Ok(r) => r.map_err(|e| anyhow::anyhow!("simulated nodes: {e}")),
        Err(e) => Err(anyhow::anyhow!("simulated nodes task: {e}")),
    }
}

/// `logbook node --cri-socket S`: the real node agent, until SIGTERM/SIGINT. Containers keep
/// running when it stops; the next start adopts them.
async fn run_node_agent(args: &NodeArgs, socket: &Path) -> Result<()> {
    let kube_cfg = match args.kubeconfig.as_deref() {
        Some(p) => {
            let kc = kube::config::Kubeconfig::read_from(p)
                .with_context(|| format!("reading {}", p.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?
        }
        None => kube::Config::infer().await?,
    };
    let cluster_ca_der = kube_cfg.root_cert.clone().unwrap_or_default();
    anyhow::ensure!(
        !cluster_ca_der.is_empty(),
        "the kubeconfig names no certificate authority; the node agent needs it to check the API server's client certificate"
    );
    let client = kube::Client::try_from(kube_cfg)?;
    let node_ip = match &args.node_ip {
        Some(ip) => ip.clone(),
        None => logbook_node::agent::machine::primary_ip().await,
    };
    let cfg = logbook_node::agent::AgentConfig {
        node_name: args
            .node_name
            .clone()
            .unwrap_or_else(logbook_node::agent::machine::hostname),
        cri_socket: socket.to_path_buf(),
        root_dir: args.root_dir.clone(),
        node_ip,
        port: args.port,
        pods_max: args.max_pods,
        kubelet_version: format!(
            "v{}.{}.0-logbook",
            logbook_api::KUBERNETES_VERSION.0,
            logbook_api::KUBERNETES_VERSION.1
        ),
        heartbeat_interval: Duration::from_secs(10),
        status_report_interval: Duration::from_secs(60),
        cluster_ca_der,
    };
    let (tx, rx) = watch::channel(false);
    println!(
        "logbook node agent {} on {} (runtime {}, endpoint {}:{})",
        cfg.node_name,
        cfg.root_dir.display(),
        socket.display(),
        cfg.node_ip,
        cfg.port
    );
    let mut task = tokio::spawn(logbook_node::agent::run(client, cfg, rx));
    let ended = tokio::select! {
        () = crate::serve::wait_for_signal() => None,
        r = &mut task => Some(r),
    };
    let _ = tx.send(true);
    let r = match ended {
        Some(r) => r,
        None => task.await,
    };
    match r {
        Ok(r) => r.map_err(|e| anyhow::anyhow!("node agent: {e}")),
        Err(e) => Err(anyhow::anyhow!("node agent task: {e}")),
    }
}

/// `logbook scheduler`: runs until SIGTERM/SIGINT.
pub async fn run_scheduler(args: SchedulerArgs) -> Result<()> {
    let client = client(args.kubeconfig.as_deref()).await?;
    let (tx, rx) = watch::channel(false);
    let cfg = SchedulerConfig {
        scheduler_name: args.scheduler_name.clone(),
        ..SchedulerConfig::default()
    };
    let election = args
        .leader_elect
        .then(|| LeaderElection::new(&scheduler_lease(&args.scheduler_name)));
    // One ready line (tests and scripts wait for it), saying whom it campaigns as.
    match &election {
        Some(e) => println!(
            "logbook scheduler running as {}; campaigning for lease {}/{} as {}",
            args.scheduler_name, e.namespace, e.lease_name, e.identity
        ),
        None => println!("logbook scheduler running as {}", args.scheduler_name),
    }
    let task = spawn_scheduler(client, cfg, election, rx);
    crate::serve::wait_for_signal().await;
    let _ = tx.send(true);
    task.await
        .map_err(|e| anyhow::anyhow!("scheduler task: {e}"))
}

/// Starts the controllers inside `logbook serve`, saving their state under the data dir,
/// elected through their Lease (a `logbook controllers` process or another API server's
/// controllers never reconcile at the same time).
pub fn start_in_process(
    api: &Arc<Api>,
    data_dir: &Path,
    root_ca: &str,
    node_monitor_grace_period: Option<std::time::Duration>,
    shutdown: watch::Receiver<bool>,
) {
    let client = crate::inproc::client(api, CONTROLLERS_USER, &[]);
    let state_dir = data_dir.join("controllers");
    let election = LeaderElection::new(CONTROLLERS_LEASE)
        .with_identity_file(&state_dir.join("leader-identity"));
    let cfg = ControllersConfig {
        state_dir: Some(state_dir),
        root_ca: Some(root_ca.to_string()),
        node_monitor_grace_period,
    };
    tokio::spawn(leader::run(client.clone(), election, shutdown, move |rx| {
        manager::start(client.clone(), &cfg, rx);
    }));
}

/// A client from `--kubeconfig`, `$KUBECONFIG` or `~/.kube/config`.
pub async fn client(kubeconfig: Option<&Path>) -> Result<kube::Client> {
    let cfg = match kubeconfig {
        Some(p) => {
            let kc = kube::config::Kubeconfig::read_from(p)
                .with_context(|| format!("reading {}", p.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?
        }
        None => kube::Config::infer().await?,
    };
    Ok(kube::Client::try_from(cfg)?)
}

/// `logbook controllers`: runs until SIGTERM/SIGINT. With leader election (the default)
/// it reconciles only while it holds the `logbook-controllers` Lease; a standby waits.
pub async fn run_controllers(args: ComponentArgs) -> Result<()> {
    let client = client(args.kubeconfig.as_deref()).await?;
    std::fs::create_dir_all(&args.state_dir)
        .with_context(|| format!("creating {}", args.state_dir.display()))?;
    let (tx, rx) = watch::channel(false);
    let cfg = ControllersConfig {
        state_dir: Some(args.state_dir.clone()),
        root_ca: None,
        node_monitor_grace_period: args
            .node_monitor_grace_period
            .as_deref()
            .map(crate::retention::parse_duration)
            .transpose()?,
    };
    let start = move |client: kube::Client, rx: watch::Receiver<bool>| {
        let running = manager::start(client, &cfg, rx);
        tokio::spawn(async move {
            running.wait_synced().await;
            tracing::info!("controllers synced and reconciling");
        });
    };
    let dir = args.state_dir.display().to_string();
    let task = if args.leader_elect {
        let election = LeaderElection::new(CONTROLLERS_LEASE)
            .with_identity_file(&args.state_dir.join("leader-identity"));
        // One ready line (tests and scripts wait for it), saying whom it campaigns as.
        println!(
            "logbook controllers running; state in {dir}; campaigning for lease {}/{} as {}",
            election.namespace, election.lease_name, election.identity
        );
        let c = client.clone();
        tokio::spawn(leader::run(c, election, rx, move |rx| {
            start(client.clone(), rx)
        }))
    } else {
        println!("logbook controllers running; state in {dir}");
        start(client, rx);
        tokio::spawn(async {})
    };
    crate::serve::wait_for_signal().await;
    let _ = tx.send(true);
    // The leader releases its Lease; informers write their state on shutdown.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), task).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    Ok(())
}
