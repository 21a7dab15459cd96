//! `logbook bench scale`: Kubernetes' published scale envelope on one machine — 5,000
//! nodes and 150,000 pods — with the embedded store.
//!
//! Starts `logbook serve` (controllers and scheduler in-process, as it runs by default) and
//! the simulated nodes as two `logbook node --simulate` processes over HTTPS (so the
//! server's RSS is the server's): `nodes - silent` nodes, and `silent` nodes named
//! `silent-*` that the benchmark later kills at once. Then:
//! 1. **ramp**: Deployments totalling `pods` replicas, until every pod is available;
//! 2. **steady**: `STEADY_WINDOW_S` of the cluster at rest, where the load is the node Leases
//!    (5,000 renewals per 10 s) and node statuses;
//! 3. **silence**: SIGKILL of the silent nodes' process; how long the node lifecycle
//!    controller takes to mark all of them `Unknown` (its grace period is 50 s, so that is
//!    the floor), how many got the NoExecute taint (rate-limited per zone, so few), and that
//!    no healthy node was touched.
//!
//! In every phase: the p99 latency of mutating API calls per (verb, resource), from the
//! server's own `apiserver_request_duration_seconds` histogram (the difference between
//! snapshots at the phase's ends; a p99 is reported as the bucket bound it falls under), and
//! of a probe — this process PATCHing one ConfigMap every `PROBE_INTERVAL_MS` over HTTPS
//! and timing it end to end. Kubernetes' SLO: mutating calls p99 ≤ 1 s.
//!
//! Progress every 5 s; results as a table on stdout and in `<out>/results.{md,json}`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::TryStreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Node};
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde_json::json;

use crate::bench_api::{client, ensure_namespace, rss_kib, start_server};
use crate::cli::BenchScaleArgs;

const BENCH_NAMESPACE: &str = "scale";
/// Replicas per Deployment in the ramp.
const REPLICAS_PER_DEPLOYMENT: usize = 5_000;
/// How long nodes get to register and turn Ready.
const NODES_READY_TIMEOUT_S: u64 = 600;
/// How long the ramp may take.
const RAMP_TIMEOUT_S: u64 = 3_600;
/// The steady phase's length.
const STEADY_WINDOW_S: u64 = 60;
/// How long the silent nodes get to be marked Unknown (grace 50 s + passes).
const SILENCE_TIMEOUT_S: u64 = 300;
/// After the last silent node is Unknown, how long the taint rate limiter is watched.
const TAINT_WATCH_S: u64 = 30;
/// The probe's PATCH interval.
const PROBE_INTERVAL_MS: u64 = 100;
const PROGRESS_INTERVAL_MS: u64 = 5_000;
const MUTATING_VERBS: [&str; 4] = ["create", "update", "patch", "delete"];

/// One snapshot of the server's request histograms: (verb, resource) → bucket counts by
/// upper bound (cumulative, as exposed), with `+Inf` as `f64::INFINITY`.
type Histograms = BTreeMap<(String, String), BTreeMap<u64, u64>>;

fn bound_key(le: f64) -> u64 {
    if le.is_infinite() {
        u64::MAX
    } else {
        (le * 1e6) as u64
    }
}

async fn histograms(c: &kube::Client) -> Result<Histograms> {
    let req = http::Request::get("/metrics").body(Vec::new())?;
    let text = c.request_text(req).await?;
    let mut out: Histograms = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("apiserver_request_duration_seconds_bucket{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let mut verb = "";
        let mut resource = String::new();
        let mut le = f64::NAN;
        for kv in labels.split(',') {
            let Some((k, v)) = kv.split_once('=') else {
                continue;
            };
            let v = v.trim_matches('"');
            match k {
                "verb" => verb = v,
                "resource" => resource.insert_str(0, v),
                "subresource" => {
                    resource.push('/');
                    resource.push_str(v);
                }
                "le" => {
                    le = if v == "+Inf" {
                        f64::INFINITY
                    } else {
                        v.parse().unwrap_or(f64::NAN)
                    }
                }
                _ => {}
            }
        }
        if !MUTATING_VERBS.contains(&verb) || le.is_nan() {
            continue;
        }
        let n: u64 = value.trim().parse().unwrap_or(0);
        *out.entry((verb.to_string(), resource))
            .or_default()
            .entry(bound_key(le))
            .or_default() += n;
    }
    Ok(out)
}

/// Per (verb, resource): calls in the window and the bucket bound under which 99% fell.
fn p99_between(before: &Histograms, after: &Histograms) -> Vec<(String, u64, f64)> {
    let mut rows = Vec::new();
    for ((verb, resource), buckets) in after {
        let prev = before.get(&(verb.clone(), resource.clone()));
        let delta: Vec<(u64, u64)> = buckets
            .iter()
            .map(|(b, n)| {
                (
                    *b,
                    n - prev.and_then(|p| p.get(b)).copied().unwrap_or(0).min(*n),
                )
            })
            .collect();
        let total = delta.last().map_or(0, |(_, n)| *n);
        if total == 0 {
            continue;
        }
        let want = (total as f64 * 0.99).ceil() as u64;
        let bound = delta
            .iter()
            .find(|(_, n)| *n >= want)
            .map_or(f64::INFINITY, |(b, _)| {
                if *b == u64::MAX {
                    f64::INFINITY
                } else {
                    *b as f64 / 1e6
                }
            });
        rows.push((format!("{verb} {resource}"), total, bound));
    }
    rows.sort_by_key(|r| std::cmp::Reverse(r.1));
    rows
}

#[derive(Default)]
struct Probe {
    latencies_ms: Vec<f64>,
    errors: u64,
}

impl Probe {
    fn take(&mut self) -> (Vec<f64>, u64) {
        let mut l = std::mem::take(&mut self.latencies_ms);
        l.sort_by(f64::total_cmp);
        (l, std::mem::take(&mut self.errors))
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn spawn_probe(c: kube::Client, probe: Arc<Mutex<Probe>>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let api: Api<ConfigMap> = Api::namespaced(c, BENCH_NAMESPACE);
        let mut tick = tokio::time::interval(Duration::from_millis(PROBE_INTERVAL_MS));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut i: u64 = 0;
        loop {
            tick.tick().await;
            i += 1;
            let patch = json!({"data": {"i": i.to_string()}});
            let t = Instant::now();
            let r = api
                .patch("probe", &PatchParams::default(), &Patch::Merge(&patch))
                .await;
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            let Ok(mut p) = probe.lock() else { return };
            match r {
                Ok(_) => p.latencies_ms.push(ms),
                Err(_) => p.errors += 1,
            }
        }
    })
}

/// What the node watch saw.
#[derive(Default)]
struct NodeView {
    ready: HashSet<String>,
    unknown_at: HashMap<String, Instant>,
    no_execute: HashSet<String>,
    /// Nodes other than the silent ones that left Ready at any time.
    healthy_disturbed: HashSet<String>,
}

fn ready_status(n: &Node) -> &str {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .map_or("", |c| c.status.as_str())
}

fn spawn_node_watch(c: kube::Client, view: Arc<Mutex<NodeView>>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let api: Api<Node> = Api::all(c);
        let mut s = std::pin::pin!(watcher(api, watcher::Config::default()));
        while let Ok(Some(ev)) = s.try_next().await {
            let (watcher::Event::Apply(n) | watcher::Event::InitApply(n)) = ev else {
                continue;
            };
            let name = n.metadata.name.clone().unwrap_or_default();
            let Ok(mut v) = view.lock() else { return };
            let status = ready_status(&n).to_string();
            if status == "True" {
                v.ready.insert(name.clone());
            } else if v.ready.remove(&name) && !name.starts_with("silent") {
                v.healthy_disturbed.insert(name.clone());
            }
            if status == "Unknown" {
                v.unknown_at
                    .entry(name.clone())
                    .or_insert_with(Instant::now);
            }
            let tainted = n
                .spec
                .as_ref()
                .and_then(|s| s.taints.as_ref())
                .is_some_and(|t| t.iter().any(|t| t.effect == "NoExecute"));
            if tainted {
                v.no_execute.insert(name);
            }
        }
    })
}

fn spawn_nodes(
    bin: &std::path::Path,
    kubeconfig: &std::path::Path,
    n: usize,
    prefix: &str,
) -> Result<std::process::Child> {
    std::process::Command::new(bin)
        .args([
            "node",
            "--simulate",
            &n.to_string(),
            "--node-name-prefix",
            prefix,
        ])
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .stdout(std::process::Stdio::null())
        .spawn()
        .with_context(|| format!("starting logbook node --simulate {n}"))
}

struct Phase {
    name: String,
    seconds: f64,
    server: Vec<(String, u64, f64)>,
    probe_ms: (f64, f64, f64),
    probe_count: usize,
    probe_errors: u64,
}

pub async fn run(args: BenchScaleArgs) -> Result<()> {
    let (nodes, pods, silent) = if args.quick {
        (300, 9_000, 30)
    } else {
        (args.nodes, args.pods, args.silent)
    };
    if silent >= nodes {
        bail!("--silent must be fewer than --nodes");
    }
    let bin = match &args.server_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe()?,
    };
    let mut extra: Vec<String> = Vec::new();
    extra.extend(args.server_arg.iter().cloned());
    println!("starting {} serve", bin.display());
    let server = start_server(&bin, &extra)?;
    let c = client(&server.kubeconfig).await?;
    ensure_namespace(&c, BENCH_NAMESPACE).await?;
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "probe"}, "data": {"i": "0"}}))?;
    Api::<ConfigMap>::namespaced(c.clone(), BENCH_NAMESPACE)
        .create(&PostParams::default(), &cm)
        .await?;

    let view = Arc::new(Mutex::new(NodeView::default()));
    let node_watch = spawn_node_watch(c.clone(), view.clone());
    let probe = Arc::new(Mutex::new(Probe::default()));
    let probe_task = spawn_probe(c.clone(), probe.clone());
    let mut peak_rss = 0u64;

    // 0. Nodes.
    let t0 = Instant::now();
    let mut healthy_nodes = spawn_nodes(&bin, &server.kubeconfig, nodes - silent, "sim-node")?;
    let mut silent_nodes = spawn_nodes(&bin, &server.kubeconfig, silent, "silent")?;
    loop {
        tokio::time::sleep(Duration::from_millis(PROGRESS_INTERVAL_MS)).await;
        let ready = view
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .ready
            .len();
        let (rss, _) = rss_kib(server.pid());
        println!(
            "nodes t={:>6.1}s  Ready {ready:>5}/{nodes}  server RSS {} MiB",
            t0.elapsed().as_secs_f64(),
            rss / 1024
        );
        if ready >= nodes {
            break;
        }
        if t0.elapsed() > Duration::from_secs(NODES_READY_TIMEOUT_S) {
            bail!("only {ready} of {nodes} nodes Ready after {NODES_READY_TIMEOUT_S} s");
        }
    }
    let nodes_ready_s = t0.elapsed().as_secs_f64();
    let _ = probe.lock().map(|mut p| p.take());
    let mut phases = Vec::new();
    let mut snap = histograms(&c).await?;
    let phase_end = |name: String,
                     started: Instant,
                     before: &Histograms,
                     after: &Histograms|
     -> Result<Phase> {
        let (lat, errors) = probe
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .take();
        Ok(Phase {
            name,
            seconds: started.elapsed().as_secs_f64(),
            server: p99_between(before, after),
            probe_ms: (
                percentile(&lat, 50.0),
                percentile(&lat, 99.0),
                lat.last().copied().unwrap_or(0.0),
            ),
            probe_count: lat.len(),
            probe_errors: errors,
        })
    };

    // 1. Ramp.
    let t_ramp = Instant::now();
    let deployments = pods.div_ceil(REPLICAS_PER_DEPLOYMENT);
    let dapi: Api<Deployment> = Api::namespaced(c.clone(), BENCH_NAMESPACE);
    for i in 0..deployments {
        let replicas = REPLICAS_PER_DEPLOYMENT.min(pods - i * REPLICAS_PER_DEPLOYMENT);
        let d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": format!("app-{i:02}")},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": format!("app-{i:02}")}},
                "template": {
                    "metadata": {"labels": {"app": format!("app-{i:02}")}},
                    "spec": {"containers": [{"name": "main", "image": "nginx:1.27",
                        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}
                }
            }
        }))?;
        dapi.create(&PostParams::default(), &d)
            .await
            .context("creating a Deployment")?;
    }
    loop {
        tokio::time::sleep(Duration::from_millis(PROGRESS_INTERVAL_MS)).await;
        let list = dapi.list(&ListParams::default()).await?;
        let available: i64 = list
            .items
            .iter()
            .map(|d| {
                i64::from(
                    d.status
                        .as_ref()
                        .and_then(|s| s.available_replicas)
                        .unwrap_or(0),
                )
            })
            .sum();
        let (rss, hwm) = rss_kib(server.pid());
        peak_rss = peak_rss.max(hwm);
        println!(
            "ramp t={:>6.1}s  pods available {available:>7}/{pods}  server RSS {} MiB",
            t_ramp.elapsed().as_secs_f64(),
            rss / 1024
        );
        if available >= pods as i64 {
            break;
        }
        if t_ramp.elapsed() > Duration::from_secs(RAMP_TIMEOUT_S) {
            bail!("only {available} of {pods} pods available after {RAMP_TIMEOUT_S} s");
        }
    }
    let after = histograms(&c).await?;
    phases.push(phase_end(
        "ramp: 0 → all pods available".into(),
        t_ramp,
        &snap,
        &after,
    )?);
    snap = after;

    // 2. Steady.
    let t_steady = Instant::now();
    while t_steady.elapsed() < Duration::from_secs(STEADY_WINDOW_S) {
        tokio::time::sleep(Duration::from_millis(PROGRESS_INTERVAL_MS)).await;
        let (rss, hwm) = rss_kib(server.pid());
        peak_rss = peak_rss.max(hwm);
        println!(
            "steady t={:>5.1}s  server RSS {} MiB",
            t_steady.elapsed().as_secs_f64(),
            rss / 1024
        );
    }
    let steady_rss = rss_kib(server.pid()).0;
    let after = histograms(&c).await?;
    phases.push(phase_end(
        "steady: leases and statuses only".into(),
        t_steady,
        &snap,
        &after,
    )?);
    snap = after;

    // 3. Silence.
    let t_kill = Instant::now();
    silent_nodes.kill().context("killing the silent nodes")?;
    let _ = silent_nodes.wait();
    let (first_unknown, all_unknown) = loop {
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        let v = view.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        let times: Vec<Instant> = v
            .unknown_at
            .iter()
            .filter(|(n, _)| n.starts_with("silent"))
            .map(|(_, t)| *t)
            .collect();
        if t_kill.elapsed().as_secs().is_multiple_of(5) {
            println!(
                "silence t={:>5.1}s  silent nodes Unknown {:>4}/{silent}",
                t_kill.elapsed().as_secs_f64(),
                times.len()
            );
        }
        if times.len() >= silent {
            let first = times.iter().min().copied().unwrap_or(t_kill);
            let last = times.iter().max().copied().unwrap_or(t_kill);
            break (
                first.duration_since(t_kill).as_secs_f64(),
                last.duration_since(t_kill).as_secs_f64(),
            );
        }
        if t_kill.elapsed() > Duration::from_secs(SILENCE_TIMEOUT_S) {
            bail!(
                "only {} of {silent} silent nodes Unknown after {SILENCE_TIMEOUT_S} s",
                times.len()
            );
        }
    };
    tokio::time::sleep(Duration::from_secs(TAINT_WATCH_S)).await;
    let after = histograms(&c).await?;
    phases.push(phase_end(
        format!("silence: {silent} nodes stop at once"),
        t_kill,
        &snap,
        &after,
    )?);
    let (tainted, disturbed) = {
        let v = view.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        (v.no_execute.len(), v.healthy_disturbed.len())
    };
    let (rss, hwm) = rss_kib(server.pid());
    peak_rss = peak_rss.max(hwm);
    let (nodes_rss, _) = rss_kib(healthy_nodes.id());
    let _ = healthy_nodes.kill();
    let _ = healthy_nodes.wait();
    probe_task.abort();
    node_watch.abort();

    // Report.
    let mut md = String::new();
    md.push_str(&format!(
        "{nodes} simulated nodes ({silent} silenced), {pods} pods; nodes Ready after {nodes_ready_s:.0} s\n\n"
    ));
    md.push_str("| phase | length | mutating calls (server) | worst p99 (server, by bucket) | probe PATCH p50 / p99 / max | floor p99 < 1 s |\n|---|---|---|---|---|---|\n");
    let mut worst_overall = 0.0f64;
    for p in &phases {
        let calls: u64 = p.server.iter().map(|r| r.1).sum();
        let worst = p.server.iter().map(|r| r.2).fold(0.0, f64::max);
        let worst_name = p
            .server
            .iter()
            .find(|r| r.2 == worst)
            .map_or("", |r| r.0.as_str());
        worst_overall = worst_overall.max(worst).max(p.probe_ms.1 / 1000.0);
        let pass = worst <= 1.0 && p.probe_ms.1 < 1000.0;
        md.push_str(&format!(
            "| {} | {:.0} s | {calls} | ≤ {worst} s ({worst_name}) | {:.0} / {:.0} / {:.0} ms ({} calls, {} errors) | {} |\n",
            p.name, p.seconds, p.probe_ms.0, p.probe_ms.1, p.probe_ms.2, p.probe_count, p.probe_errors,
            if pass { "pass" } else { "NOT MET" }
        ));
    }
    md.push_str("\n| measure | value |\n|---|---|\n");
    md.push_str(&format!("| silent nodes: first / last marked Unknown after the kill | {first_unknown:.1} / {all_unknown:.1} s (grace period 50 s, monitor every 5 s) |\n"));
    md.push_str(&format!("| nodes with a NoExecute taint {TAINT_WATCH_S} s after the last Unknown | {tainted} (rate-limited: 0.1 node/s per zone) |\n"));
    md.push_str(&format!(
        "| healthy nodes that left Ready | {disturbed} |\n"
    ));
    md.push_str(&format!(
        "| server RSS steady / end / peak | {} / {} / {} MiB |\n",
        steady_rss / 1024,
        rss / 1024,
        peak_rss / 1024
    ));
    md.push_str(&format!(
        "| node-simulator process RSS ({} nodes) | {} MiB |\n",
        nodes - silent,
        nodes_rss / 1024
    ));
    md.push_str("\nMutating calls by (verb, resource), p99 by bucket bound:\n\n| phase | verb resource | calls | p99 ≤ |\n|---|---|---|---|\n");
    for p in &phases {
        for (name, calls, b) in p.server.iter().take(8) {
            md.push_str(&format!("| {} | {name} | {calls} | {b} s |\n", p.name));
        }
    }
    println!("\n{md}");
    std::fs::create_dir_all(&args.out)?;
    std::fs::write(args.out.join("results.md"), &md)?;
    let j = json!({
        "nodes": nodes, "silent": silent, "pods": pods, "nodes_ready_s": nodes_ready_s,
        "phases": phases.iter().map(|p| json!({
            "name": p.name, "seconds": p.seconds,
            "server_p99_s": p.server.iter().map(|(n, c, b)| json!({"call": n, "count": c, "p99_le_s": b})).collect::<Vec<_>>(),
            "probe_ms": {"p50": p.probe_ms.0, "p99": p.probe_ms.1, "max": p.probe_ms.2, "count": p.probe_count, "errors": p.probe_errors},
        })).collect::<Vec<_>>(),
        "silent_first_unknown_s": first_unknown, "silent_all_unknown_s": all_unknown,
        "no_execute_tainted": tainted, "healthy_disturbed": disturbed,
        "server_rss_mib": {"steady": steady_rss / 1024, "end": rss / 1024, "peak": peak_rss / 1024},
        "node_sim_rss_mib": nodes_rss / 1024,
        "worst_p99_s": worst_overall,
    });
    std::fs::write(
        args.out.join("results.json"),
        serde_json::to_string_pretty(&j)?,
    )?;
    println!("results in {}", args.out.display());
    Ok(())
}
