//! `logbook bench workloads`: the controllers, the scheduler and simulated nodes at scale.
//!
//! Starts `logbook serve --simulate-nodes N` (controllers, scheduler and N simulated nodes in
//! the server's process, as `logbook serve` runs them), waits for every node to be Ready,
//! then creates one Deployment of R replicas and watches its pods:
//! - **pod startup latency**: from a pod's first appearance in the watch to the watch showing
//!   it Running (both ends on this process's clock; Kubernetes' SLO: p99 < 5 s);
//! - **scheduler throughput**: pods bound per second (the watch seeing `spec.nodeName`), over
//!   the whole run and the best 1 s window — in the pipeline (paced by the ReplicaSet's
//!   creates), and on a backlog: a second Deployment of R pending pods for a second
//!   scheduler (`logbook scheduler --scheduler-name bench-scheduler`, its own process over
//!   HTTPS) started once every pod exists;
//! - **lease heartbeats**: every node Lease's largest gap between renewals during the run and
//!   whether any node's Ready condition left True;
//! - the time from create to all Running, and the server's RSS.
//!
//! Progress every 2 s; results as a table on stdout and in `<out>/results.{md,json}`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::TryStreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::PostParams;
use kube::runtime::watcher;
use serde_json::json;

use crate::bench_api::{client, ensure_namespace, rss_kib, start_server};
use crate::cli::BenchWorkloadsArgs;

/// Namespace the benchmark's Deployment lives in.
const BENCH_NAMESPACE: &str = "bench";
/// How long nodes get to register and turn Ready.
const NODES_READY_TIMEOUT_SECS: u64 = 300;
/// How long the Deployment gets to be all Running.
const ROLLOUT_TIMEOUT_SECS: u64 = 1_800;
/// The second scheduler's name in the backlog phase.
const BACKLOG_SCHEDULER: &str = "bench-scheduler";
/// Progress line interval.
const PROGRESS_INTERVAL_MS: u64 = 2_000;

#[derive(Default)]
struct PodTimes {
    seen: Option<Instant>,
    bound: Option<Instant>,
    running: Option<Instant>,
}

#[derive(Default)]
struct Observed {
    pods: HashMap<String, PodTimes>,
    bound: usize,
    running: usize,
}

#[derive(Default)]
struct Heartbeats {
    last: HashMap<String, jiff::Timestamp>,
    max_gap_s: f64,
    renewals: u64,
    not_ready_seen: Vec<String>,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub async fn run(args: BenchWorkloadsArgs) -> Result<()> {
    let (nodes, replicas) = if args.quick {
        (100, 2_000)
    } else {
        (args.nodes, args.replicas)
    };
    let bin = match &args.server_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe()?,
    };
    let mut extra = vec!["--simulate-nodes".to_string(), nodes.to_string()];
    extra.extend(args.server_arg.iter().cloned());
    println!(
        "starting {} serve with {nodes} simulated nodes",
        bin.display()
    );
    let server = start_server(&bin, &extra)?;
    let c = client(&server.kubeconfig).await?;

    // 1. Every node registered and Ready.
    let t0 = Instant::now();
    let node_api: Api<Node> = Api::all(c.clone());
    loop {
        let list = node_api.list(&Default::default()).await?;
        let ready = list.items.iter().filter(|n| node_ready(n)).count();
        if ready >= nodes {
            println!(
                "{ready} nodes Ready after {:.1} s",
                t0.elapsed().as_secs_f64()
            );
            break;
        }
        if t0.elapsed() > Duration::from_secs(NODES_READY_TIMEOUT_SECS) {
            bail!("only {ready} of {nodes} nodes Ready after {NODES_READY_TIMEOUT_SECS} s");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    ensure_namespace(&c, BENCH_NAMESPACE).await?;

    // 2. Watches: pods, leases, nodes.
    let obs = Arc::new(Mutex::new(Observed::default()));
    let hb = Arc::new(Mutex::new(Heartbeats::default()));
    let watches = [
        spawn_pod_watch(c.clone(), obs.clone()),
        spawn_lease_watch(c.clone(), hb.clone()),
        spawn_node_watch(c.clone(), hb.clone()),
    ];
    tokio::time::sleep(Duration::from_secs(1)).await;

    // 3. The Deployment.
    let d: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": BENCH_NAMESPACE},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "nginx", "image": "nginx:1.27",
                    "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}
            }
        }
    }))?;
    let started = Instant::now();
    Api::<Deployment>::namespaced(c.clone(), BENCH_NAMESPACE)
        .create(&PostParams::default(), &d)
        .await
        .context("creating the Deployment")?;
    let mut peak_rss = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(PROGRESS_INTERVAL_MS)).await;
        let (seen, bound, running) = {
            let o = obs.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
            (o.pods.len(), o.bound, o.running)
        };
        let (rss, hwm) = rss_kib(server.pid());
        peak_rss = peak_rss.max(hwm);
        println!(
            "t={:>6.1}s  pods created {seen:>6}  bound {bound:>6}  running {running:>6}  server RSS {} MiB",
            started.elapsed().as_secs_f64(),
            rss / 1024
        );
        if running >= replicas {
            break;
        }
        if started.elapsed() > Duration::from_secs(ROLLOUT_TIMEOUT_SECS) {
            bail!("only {running} of {replicas} pods Running after {ROLLOUT_TIMEOUT_SECS} s");
        }
    }
    let all_running_s = started.elapsed().as_secs_f64();

    // Phase 2, the scheduler alone: a backlog of `replicas` pending pods for a second
    // scheduler (`schedulerName: bench-scheduler`), started as its own process over HTTPS
    // once every pod exists; binds/s from its first binding to its last.
    let backlog = Arc::new(Mutex::new(Observed::default()));
    let backlog_watch = spawn_pod_watch_labelled(c.clone(), backlog.clone(), "app=backlog");
    let mut d2 = d.clone();
    d2.metadata.name = Some("backlog".into());
    if let Some(spec) = d2.spec.as_mut() {
        spec.selector.match_labels = Some([("app".to_string(), "backlog".to_string())].into());
        if let Some(m) = spec.template.metadata.as_mut() {
            m.labels = Some([("app".to_string(), "backlog".to_string())].into());
        }
        if let Some(ps) = spec.template.spec.as_mut() {
            ps.scheduler_name = Some(BACKLOG_SCHEDULER.into());
        }
    }
    Api::<Deployment>::namespaced(c.clone(), BENCH_NAMESPACE)
        .create(&PostParams::default(), &d2)
        .await
        .context("creating the backlog Deployment")?;
    let t_backlog = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(PROGRESS_INTERVAL_MS)).await;
        let seen = backlog
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .pods
            .len();
        println!(
            "backlog t={:>6.1}s  pending pods created {seen:>6}",
            t_backlog.elapsed().as_secs_f64()
        );
        if seen >= replicas {
            break;
        }
        if t_backlog.elapsed() > Duration::from_secs(ROLLOUT_TIMEOUT_SECS) {
            bail!("only {seen} of {replicas} backlog pods created");
        }
    }
    let mut scheduler = std::process::Command::new(&bin)
        .args([
            "scheduler",
            "--scheduler-name",
            BACKLOG_SCHEDULER,
            "--kubeconfig",
        ])
        .arg(&server.kubeconfig)
        .stdout(std::process::Stdio::null())
        .spawn()
        .context("starting logbook scheduler")?;
    let t_sched = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(PROGRESS_INTERVAL_MS)).await;
        let bound = backlog
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .bound;
        println!(
            "scheduler t={:>6.1}s  backlog pods bound {bound:>6}",
            t_sched.elapsed().as_secs_f64()
        );
        if bound >= replicas {
            break;
        }
        if t_sched.elapsed() > Duration::from_secs(ROLLOUT_TIMEOUT_SECS) {
            bail!("only {bound} of {replicas} backlog pods bound");
        }
    }
    let _ = scheduler.kill();
    let _ = scheduler.wait();
    backlog_watch.abort();
    let (backlog_rate, backlog_peak) = {
        let b = backlog.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        rates(b.pods.values().filter_map(|t| t.bound).collect())
    };

    // Leases keep renewing: watch a little longer so every node renews at least once more.
    tokio::time::sleep(Duration::from_secs(11)).await;

    let o = obs.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    let mut startup: Vec<f64> = o
        .pods
        .values()
        .filter_map(|t| Some(t.running?.duration_since(t.seen?).as_secs_f64() * 1000.0))
        .collect();
    startup.sort_by(f64::total_cmp);
    let (bind_rate, bind_peak) = rates(o.pods.values().filter_map(|t| t.bound).collect());
    let h = hb.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    let (rss, hwm) = rss_kib(server.pid());
    let p50 = percentile(&startup, 50.0);
    let p90 = percentile(&startup, 90.0);
    let p99 = percentile(&startup, 99.0);
    let max = startup.last().copied().unwrap_or(0.0);
    let rows = vec![
        ("simulated nodes", format!("{nodes}"), "—".to_string()),
        ("replicas", format!("{replicas}"), "—".to_string()),
        (
            "create → all Running",
            format!("{all_running_s:.1} s"),
            "—".to_string(),
        ),
        (
            "pod startup p50 / p90 / p99 / max",
            format!("{:.0} / {:.0} / {:.0} / {:.0} ms", p50, p90, p99, max),
            format!(
                "p99 < 5,000 ms: {}",
                if p99 < 5_000.0 { "pass" } else { "NOT MET" }
            ),
        ),
        (
            "pipeline: pods bound/s (whole run, best 1 s; paced by creates)",
            format!("{bind_rate:.0} / {bind_peak}"),
            format!(
                "≥ 1,000/s: {}",
                if bind_rate >= 1_000.0 {
                    "pass"
                } else {
                    "NOT MET"
                }
            ),
        ),
        (
            "scheduler on a backlog: pods bound/s (whole run, best 1 s)",
            format!("{backlog_rate:.0} / {backlog_peak}"),
            format!(
                "≥ 1,000/s: {}",
                if backlog_rate >= 1_000.0 {
                    "pass"
                } else {
                    "NOT MET"
                }
            ),
        ),
        (
            "lease renewals seen / largest gap",
            format!("{} / {:.1} s", h.renewals, h.max_gap_s),
            format!(
                "gap < 40 s: {}",
                if h.max_gap_s < 40.0 {
                    "pass"
                } else {
                    "NOT MET"
                }
            ),
        ),
        (
            "nodes seen not Ready",
            format!("{}", h.not_ready_seen.len()),
            format!(
                "0: {}",
                if h.not_ready_seen.is_empty() {
                    "pass"
                } else {
                    "NOT MET"
                }
            ),
        ),
        (
            "server RSS now / peak",
            format!("{} / {} MiB", rss / 1024, peak_rss.max(hwm) / 1024),
            "—".to_string(),
        ),
    ];
    let mut md = String::from("| measure | value | floor |\n|---|---|---|\n");
    for (k, v, f) in &rows {
        md.push_str(&format!("| {k} | {v} | {f} |\n"));
    }
    println!("\n{md}");
    std::fs::create_dir_all(&args.out)?;
    std::fs::write(args.out.join("results.md"), &md)?;
    let j = json!({
        "nodes": nodes, "replicas": replicas, "all_running_s": all_running_s,
        "startup_ms": {"p50": p50, "p90": p90, "p99": p99, "max": max, "count": startup.len()},
        "binds_per_s": bind_rate, "binds_best_1s": bind_peak,
        "backlog_binds_per_s": backlog_rate, "backlog_binds_best_1s": backlog_peak,
        "lease_renewals": h.renewals, "lease_max_gap_s": h.max_gap_s,
        "nodes_not_ready": h.not_ready_seen,
        "server_rss_mib": rss / 1024, "server_peak_rss_mib": peak_rss.max(hwm) / 1024,
    });
    std::fs::write(
        args.out.join("results.json"),
        serde_json::to_string_pretty(&j)?,
    )?;
    for w in watches {
        w.abort();
    }
    println!("results in {}", args.out.display());
    Ok(())
}

/// Events per second from the first to the last, and the most in any 1 s window.
fn rates(mut at: Vec<Instant>) -> (f64, usize) {
    at.sort();
    match (at.first(), at.last()) {
        (Some(a), Some(b)) if b > a => {
            let span = b.duration_since(*a).as_secs_f64();
            let mut peak = 0usize;
            let mut j = 0;
            for i in 0..at.len() {
                while at[i].duration_since(at[j]) > Duration::from_secs(1) {
                    j += 1;
                }
                peak = peak.max(i - j + 1);
            }
            (at.len() as f64 / span, peak)
        }
        _ => (0.0, at.len()),
    }
}

fn node_ready(n: &Node) -> bool {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn spawn_pod_watch(c: kube::Client, obs: Arc<Mutex<Observed>>) -> tokio::task::JoinHandle<()> {
    spawn_pod_watch_labelled(c, obs, "app=web")
}

fn spawn_pod_watch_labelled(
    c: kube::Client,
    obs: Arc<Mutex<Observed>>,
    selector: &str,
) -> tokio::task::JoinHandle<()> {
    let cfg = watcher::Config::default().labels(selector);
    tokio::spawn(async move {
        let api: Api<Pod> = Api::namespaced(c, BENCH_NAMESPACE);
        let mut s = std::pin::pin!(watcher(api, cfg));
        while let Ok(Some(ev)) = s.try_next().await {
            let (watcher::Event::Apply(p) | watcher::Event::InitApply(p)) = ev else {
                continue;
            };
            let now = Instant::now();
            let Ok(mut o) = obs.lock() else { return };
            let name = p.metadata.name.clone().unwrap_or_default();
            let bound = p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some();
            let running = p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
            let t = o.pods.entry(name).or_default();
            t.seen.get_or_insert(now);
            let mut newly_bound = false;
            let mut newly_running = false;
            if bound && t.bound.is_none() {
                t.bound = Some(now);
                newly_bound = true;
            }
            if running && t.running.is_none() {
                t.running = Some(now);
                newly_running = true;
            }
            if newly_bound {
                o.bound += 1;
            }
            if newly_running {
                o.running += 1;
            }
        }
    })
}

fn spawn_lease_watch(c: kube::Client, hb: Arc<Mutex<Heartbeats>>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let api: Api<Lease> = Api::namespaced(c, "kube-node-lease");
        let mut s = std::pin::pin!(watcher(api, watcher::Config::default()));
        while let Ok(Some(ev)) = s.try_next().await {
            let (watcher::Event::Apply(l) | watcher::Event::InitApply(l)) = ev else {
                continue;
            };
            let Some(renew) = l
                .spec
                .as_ref()
                .and_then(|s| s.renew_time.as_ref())
                .map(|t| t.0)
            else {
                continue;
            };
            let Ok(mut h) = hb.lock() else { return };
            let name = l.metadata.name.clone().unwrap_or_default();
            if let Some(prev) = h.last.insert(name, renew)
                && renew > prev
            {
                let gap = (renew - prev).total(jiff::Unit::Second).unwrap_or(0.0);
                h.max_gap_s = h.max_gap_s.max(gap);
                h.renewals += 1;
            }
        }
    })
}

fn spawn_node_watch(c: kube::Client, hb: Arc<Mutex<Heartbeats>>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let api: Api<Node> = Api::all(c);
        let mut s = std::pin::pin!(watcher(api, watcher::Config::default()));
        while let Ok(Some(ev)) = s.try_next().await {
            let (watcher::Event::Apply(n) | watcher::Event::InitApply(n)) = ev else {
                continue;
            };
            if !node_ready(&n) {
                let Ok(mut h) = hb.lock() else { return };
                let name = n.metadata.name.clone().unwrap_or_default();
                if !h.not_ready_seen.contains(&name) {
                    h.not_ready_seen.push(name);
                }
            }
        }
    })
}
