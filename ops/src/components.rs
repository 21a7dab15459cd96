//! The components that make intent true — controllers (and, as they land, the scheduler
//! and simulated nodes) — either in-process beside `logbook serve` (through
//! [`crate::inproc`]) or as their own processes against any API server (a kubeconfig).
//! The same library code runs in both.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use logbook_api::Api;
use logbook_controllers::manager::{self, ControllersConfig};
use logbook_controllers::scheduler::SchedulerConfig;
use tokio::sync::watch;

use logbook_node::simulate::SimConfig;

use crate::cli::{ComponentArgs, NodeArgs, SchedulerArgs, SimShape};

/// The identity the controllers act as (kube-controller-manager's user name).
pub const CONTROLLERS_USER: &str = "system:kube-controller-manager";
/// The identity the scheduler acts as (kube-scheduler's user name).
pub const SCHEDULER_USER: &str = "system:kube-scheduler";

/// Starts the scheduler inside `logbook serve`.
pub fn start_scheduler_in_process(api: &Arc<Api>, shutdown: watch::Receiver<bool>) {
    let client = crate::inproc::client(api, SCHEDULER_USER, &[]);
    tokio::spawn(async move {
        if let Err(e) =
            logbook_controllers::scheduler::run(client, SchedulerConfig::default(), shutdown).await
        {
            tracing::error!("scheduler stopped: {e}");
        }
    });
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
    let client = crate::inproc::client(api, "system:node:simulated", &["system:nodes"]);
    tokio::spawn(async move {
        if let Err(e) = logbook_node::simulate::run(client, cfg, shutdown).await {
            tracing::error!("simulated nodes stopped: {e}");
        }
    });
}

/// `logbook node --simulate N`: runs until SIGTERM/SIGINT.
pub async fn run_node(args: NodeArgs) -> Result<()> {
    let client = client(args.kubeconfig.as_deref()).await?;
    let (tx, rx) = watch::channel(false);
    let cfg = sim_config(args.simulate, &args.shape);
    let task = tokio::spawn(logbook_node::simulate::run(client, cfg, rx));
    println!("logbook node running {} simulated nodes", args.simulate);
    crate::serve::wait_for_signal().await;
    let _ = tx.send(true);
    match task.await {
        Ok(r) => r.map_err(|e| anyhow::anyhow!("simulated nodes: {e}")),
        Err(e) => Err(anyhow::anyhow!("simulated nodes task: {e}")),
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
    let task = tokio::spawn(logbook_controllers::scheduler::run(client, cfg, rx));
    println!("logbook scheduler running as {}", args.scheduler_name);
    crate::serve::wait_for_signal().await;
    let _ = tx.send(true);
    match task.await {
        Ok(r) => r.map_err(|e| anyhow::anyhow!("scheduler: {e}")),
        Err(e) => Err(anyhow::anyhow!("scheduler task: {e}")),
    }
}

/// Starts the controllers inside `logbook serve`, saving their state under the data dir.
pub fn start_in_process(
    api: &Arc<Api>,
    data_dir: &Path,
    root_ca: &str,
    shutdown: watch::Receiver<bool>,
) {
    let client = crate::inproc::client(api, CONTROLLERS_USER, &[]);
    let cfg = ControllersConfig {
        state_dir: Some(data_dir.join("controllers")),
        root_ca: Some(root_ca.to_string()),
    };
    manager::start(client, &cfg, shutdown);
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

/// `logbook controllers`: runs until SIGTERM/SIGINT.
pub async fn run_controllers(args: ComponentArgs) -> Result<()> {
    let client = client(args.kubeconfig.as_deref()).await?;
    std::fs::create_dir_all(&args.state_dir)
        .with_context(|| format!("creating {}", args.state_dir.display()))?;
    let (tx, rx) = watch::channel(false);
    let running = manager::start(
        client,
        &ControllersConfig {
            state_dir: Some(args.state_dir.clone()),
            root_ca: None,
        },
        rx,
    );
    running.wait_synced().await;
    println!(
        "logbook controllers running; state in {}",
        args.state_dir.display()
    );
    crate::serve::wait_for_signal().await;
    let _ = tx.send(true);
    // Informers write their state on shutdown; give them a moment.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    Ok(())
}
