//! `logbook serve`: the control plane on the embedded store, over HTTPS.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use logbook_api::Api;
use logbook_schema::registry::Registry;
use logbook_store::{EmbeddedConfig, HubConfig, VerifyScope, WatchHub};

use crate::cli::{ServeArgs, StoreArgs, StoreKind};
use crate::pki;

/// The Lease (in kube-system) whose holder runs retention and checkpoints when several
/// replicas share a FoundationDB store.
const RETENTION_LEASE: &str = "logbook-retention";
/// The identity retention works under (recorded in the Lease).
const RETENTION_USER: &str = "system:logbook:retention";

/// Newest events per partition checked at startup (a full check is `logbook verify`).
const STARTUP_VERIFY_TAIL_EVENTS: usize = 10_000;
/// Newest events checked at startup on FoundationDB, over all partitions together (one read
/// transaction, which FoundationDB ends after 5 s).
const STARTUP_VERIFY_TAIL_EVENTS_FDB: usize = 2_000;

/// Opens the store `--store` names and verifies the newest events of each partition.
async fn open_store(
    args: &ServeArgs,
) -> Result<(logbook_store::EventLog, logbook_store::VerifyReport)> {
    match args.store.kind {
        StoreKind::Embedded => {
            let (_kv, log, report) = logbook_store::open_embedded(
                EmbeddedConfig::new(&args.data_dir),
                VerifyScope::Tail(STARTUP_VERIFY_TAIL_EVENTS),
            )
            .await
            .with_context(|| format!("opening the store in {}", args.data_dir.display()))?;
            Ok((log, report))
        }
        StoreKind::Fdb => {
            let log = open_fdb(&args.store).await?;
            Ok((log.clone(), verify_fdb_tail(&log).await?))
        }
    }
}

/// Opens the log in the FoundationDB store `--fdb-*` name.
#[cfg(feature = "fdb")]
pub async fn open_fdb(args: &StoreArgs) -> Result<logbook_store::EventLog> {
    use logbook_store::kv::fdb::{Fdb, FdbConfig};
    let kv = Fdb::open(FdbConfig::new(
        args.fdb_cluster_file.clone(),
        args.fdb_directory.clone(),
    ))
    .await
    .context("opening the FoundationDB store")?;
    let log = logbook_store::EventLog::open(
        Arc::new(kv) as Arc<dyn logbook_store::kv::Kv>,
        logbook_store::LogConfig {
            partitions: args.fdb_log_partitions.max(1),
        },
    )
    .await
    .context("opening the log in FoundationDB")?;
    if log.partitions() > args.fdb_log_partitions.max(1) {
        tracing::warn!(
            stored = log.partitions(),
            asked = args.fdb_log_partitions,
            "the store keeps its larger partition count (partitions never shrink)"
        );
    }
    Ok(log)
}

#[cfg(not(feature = "fdb"))]
pub async fn open_fdb(_args: &StoreArgs) -> Result<logbook_store::EventLog> {
    anyhow::bail!(
        "--store fdb: this logbook was built without FoundationDB support; build it with \
         `cargo build --release -p logbook --features fdb` (needs libclang-dev, and libfdb_c \
         from a FoundationDB 7.3 client package to link)"
    )
}

/// `logbook fence`: see [`logbook_store::EventLog::fence`].
pub async fn fence(args: crate::cli::FenceArgs) -> Result<()> {
    let above = logbook_store::Position::parse(&args.above)
        .with_context(|| format!("--above {:?} is not a resourceVersion", args.above))?;
    anyhow::ensure!(
        args.store.kind == StoreKind::Fdb,
        "fence works on --store fdb: the embedded store cannot advance its commit version"
    );
    let log = open_fdb(&args.store).await?;
    eprintln!(
        "advancing the cluster's version past resourceVersion {above} (the cluster recovers; this takes seconds)"
    );
    match log.fence(above).await.context("fencing")? {
        Some((after, up_to)) => println!(
            "fenced: resourceVersions after {after} up to {up_to} now answer 410; new ones start above {up_to}"
        ),
        None => println!("nothing to fence: the log's head is already at or above {above}"),
    }
    Ok(())
}

/// The startup check on FoundationDB: one read transaction checks the newest events of
/// every partition, and FoundationDB ends transactions after 5 s, so the tail is smaller
/// there, and running out of time is not damage: the replica starts and says so (`logbook
/// verify` checks everything offline).
async fn verify_fdb_tail(log: &logbook_store::EventLog) -> Result<logbook_store::VerifyReport> {
    let per_partition = (STARTUP_VERIFY_TAIL_EVENTS_FDB / usize::from(log.partitions())).max(1);
    match log.verify(VerifyScope::Tail(per_partition), |_| {}).await {
        Ok(r) => Ok(r),
        Err(logbook_store::Error::TransactionTooOld) => {
            tracing::warn!(
                "the startup check of the newest events ran past FoundationDB's 5 s \
                 transaction limit; starting without it"
            );
            Ok(logbook_store::VerifyReport {
                head: log.head().await.context("reading the log head")?,
                ..Default::default()
            })
        }
        Err(e) => Err(e).context("verifying the newest events"),
    }
}

pub async fn run(args: ServeArgs) -> Result<()> {
    let policy = crate::retention::RetentionPolicy::from_args(&args.retention)?;
    let interval = |arg: &Option<String>, default_ms: u64, flag: &str| match arg {
        Some(s) => crate::retention::parse_duration(s).with_context(|| flag.to_string()),
        None => Ok(std::time::Duration::from_millis(default_ms)),
    };
    let compact_interval = interval(
        &args.retention_interval,
        crate::retention::RETENTION_COMPACT_INTERVAL_MS,
        "--retention-interval",
    )?;
    let checkpoint_interval = interval(
        &args.checkpoint_interval,
        crate::retention::CHECKPOINT_INTERVAL_MS,
        "--checkpoint-interval",
    )?;
    anyhow::ensure!(
        !compact_interval.is_zero() && !checkpoint_interval.is_zero(),
        "--retention-interval and --checkpoint-interval must be longer than zero"
    );
    pki::private_dir(&args.data_dir)?;
    let listen: SocketAddr = args.listen;
    let mut hosts = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    if let Ok(h) = std::fs::read_to_string("/etc/hostname") {
        let h = h.trim();
        if !h.is_empty() {
            hosts.push(h.to_string());
        }
    }
    if !listen.ip().is_unspecified() {
        hosts.push(listen.ip().to_string());
    }
    hosts.extend(args.advertise_address.iter().cloned());
    let pki = pki::ensure(&args.data_dir, &hosts)?;
    let (tls, client_verifier) = pki::server_config(&pki)?;

    // Secrets are sealed before their events are written (docs/security.md).
    let transforms =
        crate::encryption::for_serve(&args.data_dir, args.encryption_provider_config.as_deref())?;
    let (log, report) = open_store(&args).await?;
    let log = log.with_value_transforms(transforms);
    let hub = WatchHub::start(log.clone(), HubConfig::default()).await?;
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let port = listener.local_addr()?.port();
    let advertised = args
        .advertise_address
        .first()
        .cloned()
        .unwrap_or_else(|| "127.0.0.1".to_string());
    let ranges = logbook_api::service_alloc::Ranges::parse(
        &args.service_cluster_ip_range,
        &args.service_node_port_range,
    )
    .map_err(|e| anyhow::anyhow!("--service-cluster-ip-range/--service-node-port-range: {e}"))?;
    let auth = auth_settings(&args, &pki)?;
    let api = Api::new(
        log.clone(),
        hub,
        Registry::builtin(),
        shutdown_rx.clone(),
        format!("{advertised}:{port}"),
        ranges,
        auth,
    );
    api.node_proxy
        .set_client_certificate(&pki.kubelet_client_cert_pem, &pki.kubelet_client_key_pem)
        .context("the API server's client certificate for node agents")?;
    if let Some(n) = args.requests_inflight_per_user {
        api.shares.set_max(n);
        // A lower share also bounds the gate's executing slots, with a queue as long.
        api.gates.set_limits(
            n.min(logbook_api::fairness::REQUESTS_EXECUTING_PER_USER_MAX),
            n.min(logbook_api::fairness::REQUESTS_QUEUED_PER_USER_MAX),
        );
    }
    api.bootstrap()
        .await
        .map_err(|e| anyhow::anyhow!("bootstrapping namespaces: {e}"))?;
    logbook_api::crd::start(Arc::clone(&api))
        .await
        .map_err(|e| anyhow::anyhow!("registering the stored CustomResourceDefinitions: {e}"))?;
    if !args.no_controllers {
        let grace = args
            .node_monitor_grace_period
            .as_deref()
            .map(crate::retention::parse_duration)
            .transpose()?;
        crate::components::start_in_process(
            &api,
            &args.data_dir,
            &pki.ca_pem,
            grace,
            shutdown_rx.clone(),
        );
    }
    if args.simulate_nodes > 0 {
        crate::components::start_nodes_in_process(
            &api,
            crate::components::sim_config(args.simulate_nodes, &args.sim_shape),
            shutdown_rx.clone(),
        );
    }
    if !args.no_scheduler {
        crate::components::start_scheduler_in_process(&api, &args.data_dir, shutdown_rx.clone());
    }
    if args.store.kind == StoreKind::Fdb {
        // Many replicas share the store: one of them (the holder of a Lease) does retention
        // and checkpoints, so the work is not repeated by every replica.
        let election = logbook_controllers::runtime::leader::LeaderElection::new(RETENTION_LEASE)
            .with_identity_file(&args.data_dir.join("retention").join("leader-identity"));
        let client = crate::inproc::client(&api, RETENTION_USER, &[]);
        let metrics = api.metrics.clone();
        let shutdown = shutdown_rx.clone();
        tokio::spawn(logbook_controllers::runtime::leader::run(
            client,
            election,
            shutdown,
            move |stop| {
                crate::retention::spawn_tasks_until(
                    log.clone(),
                    policy.clone(),
                    compact_interval,
                    checkpoint_interval,
                    metrics.clone(),
                    stop,
                );
            },
        ));
    } else {
        crate::retention::spawn_tasks(
            log,
            policy,
            compact_interval,
            checkpoint_interval,
            api.metrics.clone(),
        );
    }
    let host = if advertised.contains(':') {
        format!("[{advertised}]")
    } else {
        advertised
    };
    let kubeconfig =
        pki::write_kubeconfig(&args.data_dir, &pki, &format!("https://{host}:{port}"))?;
    // One line on stdout that scripts and tests wait for.
    println!(
        "logbook serving on https://{host}:{port} (log head {}); kubeconfig: {}",
        report.head,
        kubeconfig.display()
    );
    let shutdown = async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        let _ = shutdown_tx.send(true);
    };
    let mut options = logbook_api::ServeOptions {
        client_verifier: Some(client_verifier),
        ..Default::default()
    };
    if let Some(t) = &args.http1_header_read_timeout {
        options.http1_header_read_timeout =
            crate::retention::parse_duration(t).context("--http1-header-read-timeout")?;
    }
    logbook_api::serve(Arc::clone(&api), listener, tls, options, shutdown).await?;
    eprintln!("logbook stopped");
    Ok(())
}

/// Authentication and authorization from the flags and the PKI's service-account key.
fn auth_settings(args: &ServeArgs, pki: &pki::Pki) -> Result<logbook_api::auth::Auth> {
    use logbook_api::auth::{Auth, AuthorizationMode, authn::TokenSigner};
    let mode = match args.authorization_mode.as_str() {
        "Node,RBAC" | "RBAC,Node" | "RBAC" => AuthorizationMode::NodeRbac,
        "AlwaysAllow" => AuthorizationMode::AlwaysAllow,
        other => anyhow::bail!("--authorization-mode {other:?}: expected Node,RBAC or AlwaysAllow"),
    };
    let signer = TokenSigner::from_pkcs8(
        &pki.service_account_key_der,
        &args.service_account_issuer,
        args.api_audiences.clone(),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(Auth {
        signer: Some(signer),
        anonymous: args.anonymous_auth,
        mode,
    })
}

pub(crate) async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers, run until killed.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
