//! `logbook bench fairness`: does a noisy user at 10× the server's capacity leave another
//! user's latency alone (issue 9: "other users' p99 stays within 2× of baseline")?
//!
//! Starts `logbook serve --no-controllers --no-scheduler` as a child process and makes two
//! ordinary users with client certificates (`logbook user add`), both bound to `edit`:
//!
//! 1. **capacity**: the noisy user's workload (small ConfigMap creates) closed-loop with
//!    [`BENCH_FAIRNESS_CAPACITY_CLIENTS_COUNT`] concurrent requests: the saturation
//!    throughput, creates/s (a client refused with 429 waits a moment and goes on, so a
//!    per-user share smaller than the concurrency is measured, not failed);
//! 2. **baseline**: the quiet user alone, paced at [`BENCH_FAIRNESS_QUIET_RATE_PER_SEC`]
//!    (alternately a GET of an existing ConfigMap and a small create; latency counted from
//!    when each request was due, so a stalled server is charged for it): p50/p99;
//! 3. **under noise**: the same quiet load while the noisy user offers
//!    [`BENCH_FAIRNESS_NOISE_FACTOR`]× the capacity open-loop through
//!    [`BENCH_FAIRNESS_NOISY_CONNECTIONS_COUNT`] kube-rs clients (HTTP/1.1: each opens a
//!    connection per outstanding request; at most [`BENCH_FAIRNESS_NOISY_INFLIGHT_MAX`]
//!    outstanding, requests due past that are counted as not sent). Most of the offer
//!    should be held back (the server stops reading the noisy user's idle connections while
//!    its queue is full) or refused with 429.
//!
//! The noisy load generator runs on its own runtime and threads so its tasks never queue in
//! front of the quiet client's. Both clients share the machine's cores with the server, as
//! on any single-machine benchmark. No client retries (kube-rs's 429 retry is off).
//!
//! Progress goes to stderr; the Markdown table to stdout and `<out>/results.md`, the raw
//! numbers to `<out>/results.json` (`tests/tests/fairness.rs` reads them).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::bench_api::{Lat, ensure_namespace, lat, lat_json, paced, start_server};
use crate::cli::BenchApiArgs;

/// Length of the capacity, baseline and under-noise phases, seconds (full, `--quick`).
pub const BENCH_FAIRNESS_PHASE_SECS: (u64, u64) = (10, 3);
/// The quiet user's paced request rate.
pub const BENCH_FAIRNESS_QUIET_RATE_PER_SEC: u64 = 50;
/// Connections (and concurrent workers) of the quiet user.
pub const BENCH_FAIRNESS_QUIET_CONNECTIONS_COUNT: usize = 4;
/// Concurrent closed-loop requests that measure the noisy workload's saturation throughput.
pub const BENCH_FAIRNESS_CAPACITY_CLIENTS_COUNT: usize = 64;
/// Offered noisy load as a multiple of the measured capacity.
pub const BENCH_FAIRNESS_NOISE_FACTOR: u64 = 10;
/// kube-rs clients (connection pools) the noisy user spreads its requests over.
pub const BENCH_FAIRNESS_NOISY_CONNECTIONS_COUNT: usize = 16;
/// Noisy requests outstanding at once; requests due past that are not sent (counted).
pub const BENCH_FAIRNESS_NOISY_INFLIGHT_MAX: usize = 4_096;
/// How long the noise runs before the quiet user's measurement starts: the noisy user's
/// kube-rs clients speak HTTP/1.1, one connection per outstanding request, so the flood
/// first opens thousands of TLS connections; the measurement starts once that burst of
/// handshakes is over (at 1 s it was not: the quiet user's first half second under noise
/// saw 10–130 ms).
const NOISE_RAMP_MS: u64 = 3_000;
/// How long a capacity client waits after a 429 (its user's share is full).
const CAPACITY_RETRY_MS: u64 = 10;
/// ConfigMaps the quiet user's GETs read.
const QUIET_SEED_COUNT: u64 = 20;

/// A kube-rs client for `kubeconfig` without retries (a 429 must be seen, not retried).
async fn client_no_retry(kubeconfig: &Path) -> Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let mut cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    cfg.default_retry = false;
    Ok(kube::Client::try_from(cfg)?)
}

fn config_map(name: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "labels": {"app": "bench-fairness"}},
        "data": {"key": "value"}}))
    .unwrap_or_default()
}

/// Creates ConfigMap `name` in `ns`; the response's status code (0: no response).
async fn create(c: &kube::Client, ns: &str, name: &str) -> u16 {
    let Ok(req) = http::Request::post(format!("/api/v1/namespaces/{ns}/configmaps"))
        .header("content-type", "application/json")
        .body(config_map(name))
    else {
        return 0;
    };
    code(c.request_text(req).await)
}

fn code<T>(r: Result<T, kube::Error>) -> u16 {
    match r {
        Ok(_) => 200,
        Err(kube::Error::Api(st)) => st.code,
        Err(_) => 0,
    }
}

/// Makes user `name` (a client certificate, `logbook user add`) and binds it to `edit`.
async fn make_user(bin: &Path, data: &Path, admin: &kube::Client, name: &str) -> Result<PathBuf> {
    let out = data.join(format!("{name}.kubeconfig"));
    let status = std::process::Command::new(bin)
        .args(["user", "add", name, "--group", "bench-users", "--data-dir"])
        .arg(data)
        .arg("--out")
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .status()?;
    if !status.success() {
        bail!("logbook user add {name} failed");
    }
    let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": format!("bench-{name}-edit")},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
        "subjects": [{"kind": "User", "name": name, "apiGroup": "rbac.authorization.k8s.io"}]});
    let req = http::Request::post("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings")
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&binding)?)?;
    admin.request_text(req).await?;
    Ok(out)
}

/// The noisy user's workload closed-loop: creates/s at saturation.
async fn capacity(c: &kube::Client, secs: u64) -> Result<f64> {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let next = Arc::new(AtomicU64::new(0));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..BENCH_FAIRNESS_CAPACITY_CLIENTS_COUNT {
        let (c, stop, done, failed, next) = (
            c.clone(),
            stop.clone(),
            done.clone(),
            failed.clone(),
            next.clone(),
        );
        set.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let i = next.fetch_add(1, Ordering::Relaxed);
                match create(&c, "noisy", &format!("cap-{i}")).await {
                    200 => {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    // Over the user's share: closed loop within it.
                    429 => tokio::time::sleep(Duration::from_millis(CAPACITY_RETRY_MS)).await,
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
    }
    // Warm-up second, then measure.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (d0, t0) = (done.load(Ordering::Relaxed), Instant::now());
    for _ in 0..secs {
        tokio::time::sleep(Duration::from_secs(1)).await;
        eprintln!("  {} creates", done.load(Ordering::Relaxed) - d0);
    }
    let rate = (done.load(Ordering::Relaxed) - d0) as f64 / t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    while set.join_next().await.is_some() {}
    let f = failed.load(Ordering::Relaxed);
    if f > 0 {
        bail!("{f} of the noisy user's creates failed while measuring capacity");
    }
    Ok(rate)
}

/// What the noisy user sent and got.
#[derive(Default, Debug)]
struct NoiseCounts {
    sent: AtomicU64,
    ok: AtomicU64,
    refused: AtomicU64,
    other: AtomicU64,
    not_sent: AtomicU64,
}

/// Offers `rate` creates/s open-loop until `stop`, on its own runtime and threads.
fn start_noise(
    kubeconfig: PathBuf,
    rate: u64,
    stop: Arc<AtomicBool>,
    counts: Arc<NoiseCounts>,
) -> std::thread::JoinHandle<Result<()>> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("noisy")
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let mut clients = Vec::new();
            for _ in 0..BENCH_FAIRNESS_NOISY_CONNECTIONS_COUNT {
                clients.push(client_no_retry(&kubeconfig).await?);
            }
            let slots = Arc::new(tokio::sync::Semaphore::new(
                BENCH_FAIRNESS_NOISY_INFLIGHT_MAX,
            ));
            let start = Instant::now();
            let mut due_sent = 0u64;
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
                while due_sent < due {
                    let k = due_sent;
                    due_sent += 1;
                    let Ok(permit) = slots.clone().try_acquire_owned() else {
                        counts.not_sent.fetch_add(1, Ordering::Relaxed);
                        continue;
                    };
                    let c = clients[(k as usize) % clients.len()].clone();
                    let counts = counts.clone();
                    counts.sent.fetch_add(1, Ordering::Relaxed);
                    tokio::spawn(async move {
                        let code = create(&c, "noisy", &format!("n-{k}")).await;
                        drop(permit);
                        let n = match code {
                            200..=299 => &counts.ok,
                            429 => &counts.refused,
                            _ => &counts.other,
                        };
                        n.fetch_add(1, Ordering::Relaxed);
                    });
                }
            }
            // Let outstanding requests finish before the runtime drops them.
            let _ = tokio::time::timeout(
                Duration::from_secs(30),
                slots.acquire_many(BENCH_FAIRNESS_NOISY_INFLIGHT_MAX as u32),
            )
            .await;
            anyhow::Ok(())
        })
    })
}

/// The quiet user's paced load for `secs`: latencies and requests that did not succeed.
async fn quiet(c: &kube::Client, phase: &str, secs: u64) -> Result<(Lat, u64)> {
    let failed = Arc::new(AtomicU64::new(0));
    let (cc, f, phase) = (c.clone(), failed.clone(), phase.to_string());
    let lats = paced(
        BENCH_FAIRNESS_QUIET_RATE_PER_SEC,
        secs,
        BENCH_FAIRNESS_QUIET_CONNECTIONS_COUNT,
        move |k| {
            let (c, f, phase) = (cc.clone(), f.clone(), phase.clone());
            async move {
                let code = if k % 2 == 0 {
                    let req = http::Request::get(format!(
                        "/api/v1/namespaces/quiet/configmaps/seed-{}",
                        (k / 2) % QUIET_SEED_COUNT
                    ))
                    .body(Vec::new())?;
                    code(c.request_text(req).await)
                } else {
                    create(&c, "quiet", &format!("{phase}-{k}")).await
                };
                if code != 200 {
                    f.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            }
        },
    )
    .await?;
    Ok((lat(lats), failed.load(Ordering::Relaxed)))
}

pub async fn run(args: BenchApiArgs) -> Result<()> {
    let bin = match &args.server_bin {
        Some(b) => b.clone(),
        None => std::env::current_exe()?,
    };
    let secs = if args.quick {
        BENCH_FAIRNESS_PHASE_SECS.1
    } else {
        BENCH_FAIRNESS_PHASE_SECS.0
    };
    std::fs::create_dir_all(&args.out)?;
    let mut server_args = vec!["--no-controllers".to_string(), "--no-scheduler".to_string()];
    server_args.extend(args.server_arg.iter().cloned());
    let server = start_server(&bin, &server_args)?;
    let data = server.kubeconfig.parent().context("a data directory")?;
    let admin = crate::bench_api::client(&server.kubeconfig).await?;
    ensure_namespace(&admin, "quiet").await?;
    ensure_namespace(&admin, "noisy").await?;
    let quiet_kc = make_user(&bin, data, &admin, "quiet-user").await?;
    let noisy_kc = make_user(&bin, data, &admin, "noisy-user").await?;
    let quiet_c = client_no_retry(&quiet_kc).await?;
    let noisy_c = client_no_retry(&noisy_kc).await?;
    // RBAC follows the log; wait until both users are allowed.
    let deadline = Instant::now() + Duration::from_secs(10);
    while create(&quiet_c, "quiet", "seed-0").await != 200
        || create(&noisy_c, "noisy", "probe").await != 200
    {
        if Instant::now() > deadline {
            bail!("the bench users were not allowed to create ConfigMaps within 10 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for i in 1..QUIET_SEED_COUNT {
        if create(&quiet_c, "quiet", &format!("seed-{i}")).await != 200 {
            bail!("seeding the quiet user's ConfigMaps failed");
        }
    }

    eprintln!(
        "phase 1: capacity, noisy user closed-loop with {BENCH_FAIRNESS_CAPACITY_CLIENTS_COUNT} concurrent creates for {secs} s"
    );
    let cap = capacity(&noisy_c, secs).await?;
    eprintln!("  capacity {cap:.0} creates/s");

    eprintln!(
        "phase 2: baseline, quiet user alone at {BENCH_FAIRNESS_QUIET_RATE_PER_SEC}/s for {secs} s"
    );
    // A short warm-up of the quiet connections first.
    quiet(&quiet_c, "warm", 1).await?;
    let (base, base_failed) = quiet(&quiet_c, "base", secs).await?;
    eprintln!(
        "  p50 {:.2} ms, p99 {:.2} ms, {base_failed} failed",
        base.p50_ms, base.p99_ms
    );

    let offered = (cap * BENCH_FAIRNESS_NOISE_FACTOR as f64).max(1.0) as u64;
    eprintln!(
        "phase 3: the quiet user again while the noisy user offers {offered} creates/s ({BENCH_FAIRNESS_NOISE_FACTOR}x capacity)"
    );
    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new(NoiseCounts::default());
    let noise = start_noise(noisy_kc.clone(), offered, stop.clone(), counts.clone());
    tokio::time::sleep(Duration::from_millis(NOISE_RAMP_MS)).await;
    let before = (
        counts.sent.load(Ordering::Relaxed),
        counts.ok.load(Ordering::Relaxed),
        counts.refused.load(Ordering::Relaxed),
        counts.other.load(Ordering::Relaxed),
        counts.not_sent.load(Ordering::Relaxed),
    );
    let noise_started = Instant::now();
    let progress = {
        let counts = counts.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                eprintln!(
                    "  noisy: {} sent, {} 2xx, {} 429, {} other, {} not sent",
                    counts.sent.load(Ordering::Relaxed),
                    counts.ok.load(Ordering::Relaxed),
                    counts.refused.load(Ordering::Relaxed),
                    counts.other.load(Ordering::Relaxed),
                    counts.not_sent.load(Ordering::Relaxed)
                );
            }
        })
    };
    let measured = quiet(&quiet_c, "noise", secs).await;
    let window = noise_started.elapsed().as_secs_f64();
    let during = (
        counts.sent.load(Ordering::Relaxed) - before.0,
        counts.ok.load(Ordering::Relaxed) - before.1,
        counts.refused.load(Ordering::Relaxed) - before.2,
        counts.other.load(Ordering::Relaxed) - before.3,
        counts.not_sent.load(Ordering::Relaxed) - before.4,
    );
    stop.store(true, Ordering::Relaxed);
    progress.abort();
    let noise_result = tokio::task::spawn_blocking(move || noise.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the noisy load generator panicked"))?;
    noise_result?;
    let (noisy_lat, noisy_failed) = measured?;
    eprintln!(
        "  p50 {:.2} ms, p99 {:.2} ms, {noisy_failed} failed",
        noisy_lat.p50_ms, noisy_lat.p99_ms
    );
    let ratio = noisy_lat.p99_ms / base.p99_ms.max(f64::MIN_POSITIVE);
    let sent_per_sec = during.0 as f64 / window;

    let md = format!(
        "| quiet user ({BENCH_FAIRNESS_QUIET_RATE_PER_SEC} req/s) | p50 ms | p99 ms | max ms | requests | failed |\n\
         |---|---|---|---|---|---|\n\
         | baseline (alone) | {:.2} | {:.2} | {:.2} | {} | {base_failed} |\n\
         | under noise | {:.2} | {:.2} | {:.2} | {} | {noisy_failed} |\n\
         | ratio under noise / baseline | {:.2} | **{ratio:.2}** | | | |\n\n\
         | noisy user | value |\n|---|---|\n\
         | capacity (closed loop, {BENCH_FAIRNESS_CAPACITY_CLIENTS_COUNT} concurrent) | {cap:.0} creates/s |\n\
         | offered ({BENCH_FAIRNESS_NOISE_FACTOR}x capacity) | {offered} creates/s |\n\
         | sent during the quiet measurement | {} ({sent_per_sec:.0}/s; {} not sent, {BENCH_FAIRNESS_NOISY_INFLIGHT_MAX} outstanding max) |\n\
         | answered 2xx | {} |\n\
         | answered 429 | {} |\n\
         | other outcomes | {} |\n",
        base.p50_ms,
        base.p99_ms,
        base.max_ms,
        base.count,
        noisy_lat.p50_ms,
        noisy_lat.p99_ms,
        noisy_lat.max_ms,
        noisy_lat.count,
        noisy_lat.p50_ms / base.p50_ms.max(f64::MIN_POSITIVE),
        during.0,
        during.4,
        during.1,
        during.2,
        during.3,
    );
    println!("{md}");
    std::fs::write(args.out.join("results.md"), &md)?;
    let results: Value = json!({
        "secs": secs,
        "quiet_rate_per_sec": BENCH_FAIRNESS_QUIET_RATE_PER_SEC,
        "quiet_baseline": lat_json(&base),
        "quiet_baseline_failed": base_failed,
        "quiet_under_noise": lat_json(&noisy_lat),
        "quiet_under_noise_failed": noisy_failed,
        "p99_ratio": ratio,
        "noisy_capacity_per_sec": cap,
        "noisy_offered_per_sec": offered,
        "noisy_sent": during.0,
        "noisy_sent_per_sec": sent_per_sec,
        "noisy_not_sent": during.4,
        "noisy_2xx": during.1,
        "noisy_429": during.2,
        "noisy_other": during.3,
    });
    std::fs::write(
        args.out.join("results.json"),
        serde_json::to_vec_pretty(&results)?,
    )?;
    drop(server);
    Ok(())
}
