//! `logbook bench pod-startup`: pod startup latency with real containers.
//!
//! Starts `logbook serve` (controllers and scheduler in its process) and one real node
//! agent (`logbook node --cri-socket S`, its own process with a node identity) against the
//! given containerd, waits for the Node to be Ready, starts one warm-up pod, then runs two
//! phases of [`BenchPodsArgs::pods`](crate::cli::BenchPodsArgs) busybox pods each:
//! - *paced*: created at `--rate` pods/s (5 by default), as clusterloader2 creates the
//!   latency pods its pod-startup SLO is measured on — the floor applies here;
//! - *burst*: all created at once (the node's worst case);
//!
//! and reports for each:
//! - **startup latency** per pod: from just before its create request to the watch showing
//!   it `Running` with every container ready (Kubernetes' pod startup SLO excludes image
//!   pulls; the images are on the node already): p50, p90, p99, max;
//! - the time from the first create to all Running, and to all deleted again.
//!
//! Progress every second; results as a table on stdout and in `<out>/results.{md,json}`.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::TryStreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::runtime::watcher;
use serde_json::json;

use crate::bench_api::{client, ensure_namespace, start_server};
use crate::cli::BenchPodsArgs;

/// Namespace of the benchmark's pods.
const BENCH_NAMESPACE: &str = "bench";
/// The Node the agent registers.
const BENCH_NODE: &str = "bench-node";
/// How long the node gets to turn Ready, in seconds.
const NODE_READY_TIMEOUT_SECS: u64 = 120;
/// How long the pods get to be all Running (and then all gone), in seconds.
const PODS_TIMEOUT_SECS: u64 = 600;
/// Progress line interval, in milliseconds.
const PROGRESS_INTERVAL_MS: u64 = 1_000;
/// The floor: paced pod startup p99 below this, in seconds (Kubernetes' SLO).
const POD_STARTUP_P99_FLOOR_S: f64 = 5.0;

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((p / 100.0) * (sorted.len() as f64 - 1.0)).ceil() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn running_ready(p: &Pod) -> bool {
    let st = p.status.as_ref();
    st.and_then(|s| s.phase.as_deref()) == Some("Running")
        && st
            .and_then(|s| s.container_statuses.as_ref())
            .is_some_and(|cs| !cs.is_empty() && cs.iter().all(|c| c.ready))
}

fn pod(name: &str) -> Result<Pod> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": BENCH_NAMESPACE, "labels": {"app": "startup"}},
        "spec": {
            "terminationGracePeriodSeconds": 5,
            "containers": [{
                "name": "main", "image": "busybox:1.36",
                "command": ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"],
                "resources": {"requests": {"cpu": "1m", "memory": "4Mi"}},
            }],
        },
    }))?)
}

pub async fn run(args: BenchPodsArgs) -> Result<()> {
    let bin = match &args.server_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe()?,
    };
    println!("starting {} serve", bin.display());
    let server = start_server(&bin, &[])?;
    let data = server
        .kubeconfig
        .parent()
        .context("the kubeconfig's directory")?
        .to_path_buf();
    let node_kc = data.join("bench-node.kubeconfig");
    let out = Command::new(&bin)
        .args([
            "user",
            "add",
            &format!("system:node:{BENCH_NODE}"),
            "--group",
            "system:nodes",
            "--data-dir",
        ])
        .arg(&data)
        .arg("--out")
        .arg(&node_kc)
        .output()?;
    if !out.status.success() {
        bail!(
            "minting the node identity: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    println!("starting the node agent on {}", args.cri_socket.display());
    let _agent = Agent(
        Command::new(&bin)
            .args(["node", "--cri-socket"])
            .arg(&args.cri_socket)
            .args(["--node-name", BENCH_NODE, "--port", "0", "--root-dir"])
            .arg(data.join("node"))
            .arg("--kubeconfig")
            .arg(&node_kc)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the node agent")?,
    );
    let c = client(&server.kubeconfig).await?;
    let nodes: Api<Node> = Api::all(c.clone());
    let t0 = Instant::now();
    loop {
        let ready = nodes.get_opt(BENCH_NODE).await?.is_some_and(|n| {
            n.status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        });
        if ready {
            println!("node Ready after {:.1} s", t0.elapsed().as_secs_f64());
            break;
        }
        if t0.elapsed() > Duration::from_secs(NODE_READY_TIMEOUT_SECS) {
            bail!("the node was not Ready after {NODE_READY_TIMEOUT_SECS} s");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    ensure_namespace(&c, BENCH_NAMESPACE).await?;
    let pods: Api<Pod> = Api::namespaced(c.clone(), BENCH_NAMESPACE);

    // The watch: when each pod was first seen Running and ready.
    let running: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let seen = running.clone();
    let watch = tokio::spawn(async move {
        let w = watcher(
            Api::<Pod>::namespaced(c.clone(), BENCH_NAMESPACE),
            watcher::Config::default(),
        );
        let _ = w
            .try_for_each(|ev| {
                if let watcher::Event::Apply(p) | watcher::Event::InitApply(p) = ev
                    && running_ready(&p)
                    && let (Some(name), Ok(mut m)) = (p.metadata.name.clone(), seen.lock())
                {
                    m.entry(name).or_insert_with(Instant::now);
                }
                futures::future::ready(Ok(()))
            })
            .await;
    });

    // Warm-up: the first sandbox on a fresh runtime pays one-off costs.
    let w0 = Instant::now();
    pods.create(&PostParams::default(), &pod("warmup")?).await?;
    loop {
        if running
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .contains_key("warmup")
        {
            break;
        }
        if w0.elapsed() > Duration::from_secs(PODS_TIMEOUT_SECS) {
            bail!("the warm-up pod never ran");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let warmup_s = w0.elapsed().as_secs_f64();
    println!("warm-up pod Running after {warmup_s:.2} s");

    let n = args.pods;
    let mut results = Vec::new();
    for (label, rate) in [("paced", args.rate), ("burst", 0.0)] {
        let names: Vec<String> = (0..n).map(|i| format!("{label}-{i:04}")).collect();
        let r = phase(&pods, &running, &names, rate, label).await?;
        // Clean up: every pod deleted (the agent stops the containers first).
        let d0 = Instant::now();
        pods.delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels("app=startup"),
        )
        .await
        .context("deleting the pods")?;
        loop {
            let left = pods
                .list(&ListParams::default().labels("app=startup"))
                .await?
                .items
                .len();
            if left == 0 {
                break;
            }
            if d0.elapsed() > Duration::from_secs(PODS_TIMEOUT_SECS) {
                bail!("{left} pods still there after {PODS_TIMEOUT_SECS} s");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        results.push((label, rate, r, d0.elapsed().as_secs_f64()));
    }
    watch.abort();
    let mut md = format!(
        "## Pod startup with real containers (containerd + runc + CNI bridge)\n\n\
{n} busybox pods per phase on one node (`logbook node --cri-socket`), after one warm-up pod\n\
({warmup_s:.2} s). Latency: from just before each create request to the watch showing the\n\
pod Running and ready. *paced*: created at {} pods/s, as clusterloader2 creates its\n\
latency pods (the SLO's method); *burst*: all created at once.\n\n\
| phase | p50 | p90 | p99 | max | first create → all Running | delete all → all gone |\n\
|---|---|---|---|---|---|---|\n",
        args.rate
    );
    let mut json_phases = Vec::new();
    for (label, rate, (lat, all_running_s), deleted_s) in &results {
        let (p50, p90, p99, max) = (
            percentile(lat, 50.0),
            percentile(lat, 90.0),
            percentile(lat, 99.0),
            lat.last().copied().unwrap_or(0.0),
        );
        md.push_str(&format!(
            "| {label} | {p50:.2} s | {p90:.2} s | {p99:.2} s | {max:.2} s | {all_running_s:.2} s | {deleted_s:.2} s |\n"
        ));
        json_phases.push(json!({
            "phase": label, "rate_per_s": rate, "startup_p50_s": p50, "startup_p90_s": p90,
            "startup_p99_s": p99, "startup_max_s": max, "all_running_s": all_running_s,
            "all_deleted_s": deleted_s, "startup_s_sorted": lat,
        }));
        if *label == "paced" && p99 >= POD_STARTUP_P99_FLOOR_S {
            md.push_str(&format!("\nFLOOR MISSED: paced startup p99 {p99:.2} s is not below {POD_STARTUP_P99_FLOOR_S} s\n"));
        }
    }
    md.push_str(&format!(
        "\nFloor (paced): p99 < {POD_STARTUP_P99_FLOOR_S} s.\n"
    ));
    println!("\n{md}");
    std::fs::create_dir_all(&args.out)?;
    std::fs::write(args.out.join("results.md"), &md)?;
    std::fs::write(
        args.out.join("results.json"),
        serde_json::to_vec_pretty(
            &json!({"pods": n, "warmup_s": warmup_s, "phases": json_phases}),
        )?,
    )?;
    println!("results in {}", args.out.display());
    Ok(())
}

/// Creates `names` at `rate` pods/s (0: all at once) and waits until the watch saw each
/// Running and ready; the sorted latencies and the time to all Running.
async fn phase(
    pods: &Api<Pod>,
    running: &Arc<Mutex<HashMap<String, Instant>>>,
    names: &[String],
    rate: f64,
    label: &str,
) -> Result<(Vec<f64>, f64)> {
    let n = names.len();
    let start = Instant::now();
    let creates = names.iter().enumerate().map(|(i, name)| {
        let pods = pods.clone();
        let name = name.clone();
        let offset = if rate > 0.0 {
            Duration::from_secs_f64(i as f64 / rate)
        } else {
            Duration::ZERO
        };
        async move {
            tokio::time::sleep_until(tokio::time::Instant::from_std(start + offset)).await;
            let at = Instant::now();
            pods.create(&PostParams::default(), &pod(&name)?).await?;
            Ok::<_, anyhow::Error>((name, at))
        }
    });
    let creating = tokio::spawn(futures::future::join_all(creates));
    let mut last = Instant::now();
    loop {
        let done = {
            let m = running.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
            names.iter().filter(|n| m.contains_key(*n)).count()
        };
        if last.elapsed() >= Duration::from_millis(PROGRESS_INTERVAL_MS) || done == n {
            println!(
                "{label} t={:>6.1}s  Running {done:>4} / {n}",
                start.elapsed().as_secs_f64()
            );
            last = Instant::now();
        }
        if done == n {
            break;
        }
        if start.elapsed() > Duration::from_secs(PODS_TIMEOUT_SECS) {
            bail!("{label}: only {done} of {n} pods Running after {PODS_TIMEOUT_SECS} s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let all_running_s = start.elapsed().as_secs_f64();
    let mut created = HashMap::new();
    for r in creating.await? {
        let (name, at) = r?;
        created.insert(name, at);
    }
    let m = running.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    let mut lat: Vec<f64> = names
        .iter()
        .filter_map(|n| Some(m.get(n)?.duration_since(*created.get(n)?).as_secs_f64()))
        .collect();
    lat.sort_by(f64::total_cmp);
    Ok((lat, all_running_s))
}
