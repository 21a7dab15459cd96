//! The real node agent (kubelet's role) over the Container Runtime Interface: [`run`]
//! registers the machine as a Node, keeps its Lease and conditions current, runs the pods
//! bound to it as containers (`worker.rs`, one task per pod), and serves logs, exec, attach
//! and port-forward to the API server (`server.rs`).
//!
//! Where to read: `pods.rs` (the pod watch and workers), `worker.rs` (one pod's sync),
//! `status.rs` (pod status, pure), `spec.rs` (pod spec → CRI configs, pure),
//! `volumes.rs`, `probe.rs`, `logs.rs`, `node.rs` (Node and Lease), `machine.rs`.

pub mod logs;
pub mod machine;
pub mod node;
pub mod pods;
pub mod probe;
pub mod server;
pub mod spec;
pub mod status;
pub mod volumes;
pub mod worker;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::cri::Cri;

/// How long the agent waits for the runtime to answer at start, in seconds.
pub const RUNTIME_WAIT_S: u64 = 60;

/// What `logbook node --cri-socket …` runs.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// The Node's name (the kubeconfig's identity must be `system:node:<name>`).
    pub node_name: String,
    /// The CRI runtime's unix socket.
    pub cri_socket: PathBuf,
    /// Where pod volumes, logs and the serving certificate live.
    pub root_dir: PathBuf,
    /// The address the API server reaches the agent at (InternalIP).
    pub node_ip: String,
    /// The agent's HTTPS port (kubelet's 10250; 0 picks a free one).
    pub port: u16,
    /// Pods the node accepts at most (capacity `pods`).
    pub pods_max: u32,
    /// Reported as `nodeInfo.kubeletVersion`.
    pub kubelet_version: String,
    /// Lease renewal period.
    pub heartbeat_interval: Duration,
    /// Node status is re-posted at least this often (and at once when a condition changes).
    pub status_report_interval: Duration,
    /// The cluster CA certificates (DER): the API server's client certificate must chain
    /// to one of them.
    pub cluster_ca_der: Vec<Vec<u8>>,
}

/// Runs the agent until `shutdown` flips.
///
/// # Errors
/// The runtime never answered, the endpoint could not be bound, or the Node could not be
/// registered.
pub async fn run(
    client: kube::Client,
    cfg: AgentConfig,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut cfg = cfg;
    std::fs::create_dir_all(&cfg.root_dir)?;
    // Port 0: any free port, published on the Node like a fixed one.
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", cfg.port)).await?;
    cfg.port = listener.local_addr()?.port();
    let cfg = Arc::new(cfg);
    let cri = Cri::connect(&cfg.cri_socket)?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(RUNTIME_WAIT_S);
    let version = loop {
        match cri.version().await {
            Ok(v) => break v,
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::info!(error = %e, "waiting for the container runtime");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => anyhow::bail!(
                "the container runtime at {} did not answer: {e}",
                cfg.cri_socket.display()
            ),
        }
    };
    let (cert, key, sha) =
        server::serving_cert(&cfg.root_dir.join("pki"), &cfg.node_name, &cfg.node_ip)?;
    let tls = server::tls_config(&cert, &key, &cfg.cluster_ca_der)?;

    let machine = machine::read_machine(&cfg.root_dir).await;
    let mut rt = node::RuntimeInfo {
        name: version.runtime_name.clone(),
        version: version.runtime_version.clone(),
        ..node::RuntimeInfo::default()
    };
    runtime_ready(&cri, &mut rt).await;
    let mut transitions = node::Transitions::default();
    let status = node::node_status(
        &cfg,
        &machine,
        &rt,
        &mut transitions,
        jiff::Timestamp::now(),
    );
    let allocatable: HashMap<String, String> = status["allocatable"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("0").to_string()))
                .collect()
        })
        .unwrap_or_default();
    let uid = loop {
        match node::register(&client, &cfg, &sha, status.clone()).await {
            Ok(uid) => break uid,
            Err(e) => {
                tracing::warn!(error = %e, "registering the node failed; retrying");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(2)) => {}
                    _ = shutdown.changed() => return Ok(()),
                }
            }
        }
    };
    tracing::info!(node = cfg.node_name, runtime = %format!("{} {}", rt.name, rt.version), "node registered");

    let index: pods::PodIndex = Arc::default();
    let server_state = Arc::new(server::ServerState {
        cri: cri.clone(),
        pods: index.clone(),
        sessions: Arc::new(tokio::sync::Semaphore::new(server::STREAM_SESSIONS_MAX)),
    });
    let server = tokio::spawn(server::serve(listener, tls, server_state, shutdown.clone()));
    let heartbeat = tokio::spawn(heartbeat(
        client.clone(),
        cfg.clone(),
        cri.clone(),
        rt,
        transitions,
        uid,
        shutdown.clone(),
    ));
    let resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let shared = Arc::new(worker::Shared {
        cfg: cfg.clone(),
        client,
        cri,
        dns: spec::dns_config(&resolv, &k8s_openapi::api::core::v1::Pod::default()),
        allocatable,
        pull_failures: std::sync::Mutex::default(),
        events: Arc::new(tokio::sync::Semaphore::new(worker::EVENTS_INFLIGHT_MAX)),
        starts: Arc::new(tokio::sync::Semaphore::new(worker::CRI_STARTS_INFLIGHT_MAX)),
    });
    pods::run(shared, index, shutdown.clone()).await;
    let _ = shutdown.changed().await;
    heartbeat.abort();
    server.abort();
    Ok(())
}

async fn runtime_ready(cri: &Cri, rt: &mut node::RuntimeInfo) {
    match cri.status().await {
        Ok(s) => {
            let conds = s.status.map(|s| s.conditions).unwrap_or_default();
            let bad: Vec<String> = conds
                .iter()
                .filter(|c| !c.status)
                .map(|c| format!("{}: {} {}", c.r#type, c.reason, c.message))
                .collect();
            rt.ready = bad.is_empty() && !conds.is_empty();
            rt.message = bad.join("; ");
        }
        Err(e) => {
            rt.ready = false;
            rt.message = e.to_string();
        }
    }
}

async fn heartbeat(
    client: kube::Client,
    cfg: Arc<AgentConfig>,
    cri: Cri,
    mut rt: node::RuntimeInfo,
    mut transitions: node::Transitions,
    mut uid: String,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut last_report = tokio::time::Instant::now();
    let mut last_statuses = transitions.statuses();
    loop {
        tokio::select! {
            () = tokio::time::sleep(cfg.heartbeat_interval) => {}
            _ = shutdown.changed() => return,
        }
        if let Err(e) = node::renew_lease(&client, &cfg.node_name, &uid).await {
            tracing::warn!(error = %e, "renewing the node lease failed");
        }
        runtime_ready(&cri, &mut rt).await;
        let m = machine::read_machine(&cfg.root_dir).await;
        let status = node::node_status(&cfg, &m, &rt, &mut transitions, jiff::Timestamp::now());
        let statuses = transitions.statuses();
        if statuses != last_statuses || last_report.elapsed() >= cfg.status_report_interval {
            match node::post_status(&client, &cfg.node_name, status.clone()).await {
                Ok(()) => {
                    last_report = tokio::time::Instant::now();
                    last_statuses = statuses;
                }
                Err(e) if node::is_not_found(&e) => {
                    tracing::info!("the Node was deleted; registering again");
                    if let Ok((_, _, sha)) = server::serving_cert(
                        &cfg.root_dir.join("pki"),
                        &cfg.node_name,
                        &cfg.node_ip,
                    ) && let Ok(u) = node::register(&client, &cfg, &sha, status).await
                    {
                        uid = u;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "posting the node status failed"),
            }
        }
    }
}
