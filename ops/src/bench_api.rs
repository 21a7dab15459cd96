//! `logbook bench api`: the committed API benchmark. Starts `logbook serve` as a separate
//! process on a temporary data directory and drives it over HTTPS with kube-rs clients.
//!
//! Phases:
//! 1. 100,000 pod creates with 64 concurrent clients: creates/s;
//! 2. LIST those pods whole (consistent read) and in 500-item pages;
//! 3. the server's RSS with the 100,000 pods stored and listed;
//!    then a Table LIST (what `kubectl get pods` asks for) of 10,000 pods;
//! 4. create latency at half the phase-1 rate (paced on 64 connections);
//! 5. GET latency at 1,000 requests/s;
//! 6. 1,000 concurrent pod watches while 1,000 pods/s are written: delivery lag.
//!
//! Progress goes to stderr; the Markdown report to stdout and `<out>/results.md`, the raw
//! numbers to `<out>/results.json`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::AsyncBufReadExt;
use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::bench_store::{nanos_to_ms, percentile};
use crate::cli::BenchApiArgs;

/// Concurrent clients of the create-throughput phase.
pub const BENCH_API_WRITERS_COUNT: usize = 64;
/// Seconds each timed phase runs (`--quick`: the second value).
pub const BENCH_API_PHASE_SECS: (u64, u64) = (10, 3);
/// Target rate of the GET phase, requests per second.
pub const BENCH_API_GET_RATE_PER_SEC: u64 = 1_000;
/// Pods stored for the list and RSS phases (`--quick`: the second value).
pub const BENCH_API_LIST_PODS_COUNT: (usize, usize) = (100_000, 20_000);
/// Page size of the paged list.
pub const BENCH_API_PAGE_ITEMS: usize = 500;
/// Full consistent lists timed.
pub const BENCH_API_LIST_RUNS_COUNT: usize = 3;
/// Pods in the namespace whose Table LIST is timed.
pub const BENCH_API_TABLE_PODS_COUNT: usize = 10_000;
/// The `Accept` header kubectl sends for `kubectl get`.
pub(crate) const KUBECTL_TABLE_ACCEPT: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
/// Concurrent watches of the fan-out phase (`--quick`: the second value).
pub const BENCH_API_WATCHES_COUNT: (usize, usize) = (1_000, 200);
/// Write rate during the watch phase, pods per second.
pub const BENCH_API_WATCH_RATE_PER_SEC: u64 = 1_000;
/// Seconds the server gets to start.
const SERVER_START_TIMEOUT_SECS: u64 = 60;

pub(crate) struct ServerProc {
    child: Child,
    pid: u32,
    _tmp: tempfile::TempDir,
    pub(crate) kubeconfig: std::path::PathBuf,
}

impl ServerProc {
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn start_server(bin: &std::path::Path, extra: &[String]) -> Result<ServerProc> {
    start_server_in(bin, tempfile::tempdir()?, extra)
}

/// Starts the server with its data in `<tmp>/data` (which may already hold a store).
pub(crate) fn start_server_in(
    bin: &std::path::Path,
    tmp: tempfile::TempDir,
    extra: &[String],
) -> Result<ServerProc> {
    let data = tmp.path().join("data");
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut child = Command::new(bin)
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(&data)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let stdout = child.stdout.take().context("stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(l)) = lines.next() {
            let _ = tx.send(l);
        }
        for _ in lines {}
    });
    let line = rx
        .recv_timeout(Duration::from_secs(SERVER_START_TIMEOUT_SECS))
        .context("the server did not start")?;
    if !line.contains("logbook serving on") {
        bail!("unexpected server output: {line}");
    }
    let pid = child.id();
    Ok(ServerProc {
        child,
        pid,
        _tmp: tmp,
        kubeconfig: data.join("kubeconfig"),
    })
}

pub(crate) async fn client(kubeconfig: &std::path::Path) -> Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    Ok(kube::Client::try_from(cfg)?)
}

fn pod(name: &str, sent_ns: u128) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "bench", "tier": "load"}, "annotations": {"bench/sent-ns": sent_ns.to_string()}},
        "spec": {"containers": [{"name": "main", "image": "registry.example/bench:1.0", "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}, "ports": [{"containerPort": 8080}]}], "restartPolicy": "Always"}
    }))
    .unwrap_or_default()
}

fn now_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

async fn create(c: &kube::Client, ns: &str, name: &str) -> Result<Duration> {
    let started = Instant::now();
    let req = http::Request::post(format!("/api/v1/namespaces/{ns}/pods"))
        .header("content-type", "application/json")
        .body(pod(name, now_ns()))?;
    c.request_text(req).await?;
    Ok(started.elapsed())
}

pub(crate) async fn ensure_namespace(c: &kube::Client, ns: &str) -> Result<()> {
    let body = serde_json::to_vec(
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
    )?;
    let req = http::Request::post("/api/v1/namespaces")
        .header("content-type", "application/json")
        .body(body)?;
    match c.request_text(req).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The `bench/sent-ns` annotation of one watch event line.
fn sent_ns(line: &[u8]) -> Option<u128> {
    const MARKER: &[u8] = b"\"bench/sent-ns\":\"";
    let i = memchr::memmem::find(line, MARKER)? + MARKER.len();
    let digits = line[i..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&line[i..i + digits]).ok()?.parse().ok()
}

pub(crate) fn rss_kib(pid: u32) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

pub(crate) struct Lat {
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) max_ms: f64,
    pub(crate) count: usize,
}

pub(crate) fn lat(mut v: Vec<u64>) -> Lat {
    v.sort_unstable();
    Lat {
        p50_ms: nanos_to_ms(percentile(&v, 50.0)),
        p99_ms: nanos_to_ms(percentile(&v, 99.0)),
        max_ms: nanos_to_ms(v.last().copied().unwrap_or(0)),
        count: v.len(),
    }
}

pub(crate) fn lat_json(l: &Lat) -> Value {
    json!({"p50_ms": l.p50_ms, "p99_ms": l.p99_ms, "max_ms": l.max_ms, "count": l.count})
}

/// Creates pods with `writers` concurrent clients for `secs` (or until `total` when set).
pub(crate) async fn create_storm(
    c: &kube::Client,
    ns: &str,
    prefix: &str,
    writers: usize,
    secs: Option<u64>,
    total: Option<usize>,
) -> Result<(usize, Duration, Vec<u64>)> {
    let next = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut set = JoinSet::new();
    for _ in 0..writers {
        let (c, ns, prefix, next, stop) = (
            c.clone(),
            ns.to_string(),
            prefix.to_string(),
            next.clone(),
            stop.clone(),
        );
        set.spawn(async move {
            let mut lats = Vec::new();
            loop {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                if total.is_some_and(|t| i as usize >= t) {
                    break;
                }
                let d = create(&c, &ns, &format!("{prefix}-{i}")).await?;
                lats.push(d.as_nanos() as u64);
            }
            anyhow::Ok(lats)
        });
    }
    let progress = {
        let next = next.clone();
        let stop = stop.clone();
        let prefix = prefix.to_string();
        tokio::spawn(async move {
            let mut last = 0;
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let n = next.load(Ordering::Relaxed);
                eprintln!("  {prefix}: {n} created ({}/s)", n - last);
                last = n;
                if secs.is_some_and(|s| started.elapsed() >= Duration::from_secs(s)) {
                    stop.store(true, Ordering::Relaxed);
                }
            }
        })
    };
    let mut all = Vec::new();
    while let Some(r) = set.join_next().await {
        all.extend(r??);
    }
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed();
    progress.abort();
    Ok((all.len(), elapsed, all))
}

/// Runs `op` at `rate` per second for `secs` on `workers` connections: operation k is due
/// at `start + k / rate`; its latency counts from when it was due, so a server that falls
/// behind is charged for the queueing (no coordinated omission) while the number of
/// connections stays fixed (no handshake storms in the load generator).
pub(crate) async fn paced<F, Fut>(rate: u64, secs: u64, workers: usize, op: F) -> Result<Vec<u64>>
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send + 'static,
{
    let op = Arc::new(op);
    let n = rate * secs;
    let start = tokio::time::Instant::now() + Duration::from_millis(100);
    let mut set = JoinSet::new();
    for w in 0..workers as u64 {
        let op = op.clone();
        set.spawn(async move {
            let mut lats = Vec::new();
            let mut k = w;
            while k < n {
                let due = start + Duration::from_nanos(k * 1_000_000_000 / rate.max(1));
                tokio::time::sleep_until(due).await;
                op(k).await?;
                lats.push(due.elapsed().as_nanos() as u64);
                k += workers as u64;
            }
            anyhow::Ok(lats)
        });
    }
    let mut out = Vec::with_capacity(n as usize);
    while let Some(r) = set.join_next().await {
        out.extend(r??);
    }
    Ok(out)
}

pub async fn run(args: BenchApiArgs) -> Result<()> {
    let bin = match &args.server_bin {
        Some(b) => b.clone(),
        None => std::env::current_exe()?,
    };
    let secs = if args.quick {
        BENCH_API_PHASE_SECS.1
    } else {
        BENCH_API_PHASE_SECS.0
    };
    let list_pods = if args.quick {
        BENCH_API_LIST_PODS_COUNT.1
    } else {
        BENCH_API_LIST_PODS_COUNT.0
    };
    let watches = if args.quick {
        BENCH_API_WATCHES_COUNT.1
    } else {
        BENCH_API_WATCHES_COUNT.0
    };
    std::fs::create_dir_all(&args.out)?;
    let server = start_server(&bin, &args.server_arg)?;
    let c = client(&server.kubeconfig).await?;
    ensure_namespace(&c, "bench").await?;
    ensure_namespace(&c, "watch").await?;
    ensure_namespace(&c, "list").await?;
    ensure_namespace(&c, "table").await?;

    eprintln!("phase 1: {list_pods} pod creates with {BENCH_API_WRITERS_COUNT} concurrent clients");
    let (n, elapsed, lats) = create_storm(
        &c,
        "list",
        "fill",
        BENCH_API_WRITERS_COUNT,
        None,
        Some(list_pods),
    )
    .await?;
    let creates_per_sec = n as f64 / elapsed.as_secs_f64();
    let storm_lat = lat(lats);
    eprintln!("  {creates_per_sec:.0} creates/s");

    eprintln!("phase 2: LIST the {list_pods} pods, whole and in {BENCH_API_PAGE_ITEMS}-item pages");
    let mut full_ms = Vec::new();
    let mut full_count = 0;
    for run in 0..BENCH_API_LIST_RUNS_COUNT {
        let started = Instant::now();
        let text = c
            .request_text(http::Request::get("/api/v1/namespaces/list/pods").body(Vec::new())?)
            .await?;
        let took = started.elapsed();
        let v: Value = serde_json::from_str(&text)?;
        full_count = v["items"].as_array().map_or(0, Vec::len);
        eprintln!(
            "  full list {run}: {full_count} pods, {} bytes, {:.0} ms",
            text.len(),
            took.as_secs_f64() * 1e3
        );
        full_ms.push(took.as_secs_f64() * 1e3);
    }
    let mut page_lats = Vec::new();
    let mut token: Option<String> = None;
    let walk_started = Instant::now();
    let mut paged = 0;
    loop {
        let mut path = format!("/api/v1/namespaces/list/pods?limit={BENCH_API_PAGE_ITEMS}");
        if let Some(t) = &token {
            path.push_str(&format!("&continue={t}"));
        }
        let started = Instant::now();
        let text = c
            .request_text(http::Request::get(path).body(Vec::new())?)
            .await?;
        page_lats.push(started.elapsed().as_nanos() as u64);
        let v: Value = serde_json::from_str(&text)?;
        paged += v["items"].as_array().map_or(0, Vec::len);
        token = v["metadata"]["continue"]
            .as_str()
            .filter(|t| !t.is_empty())
            .map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    let walk_ms = walk_started.elapsed().as_secs_f64() * 1e3;
    let page_lat = lat(page_lats);
    eprintln!(
        "  paged walk: {paged} pods in {walk_ms:.0} ms, page p99 {:.1} ms",
        page_lat.p99_ms
    );

    let (rss, hwm) = rss_kib(server.pid);
    eprintln!(
        "phase 3: server RSS {} MiB (peak {} MiB) with {list_pods} pods",
        rss / 1024,
        hwm / 1024
    );

    eprintln!("phase 3b: Table LIST of {BENCH_API_TABLE_PODS_COUNT} pods (kubectl get pods)");
    create_storm(
        &c,
        "table",
        "row",
        BENCH_API_WRITERS_COUNT,
        None,
        Some(BENCH_API_TABLE_PODS_COUNT),
    )
    .await?;
    let mut table_ms = Vec::new();
    let mut table_rows = 0;
    for run in 0..BENCH_API_LIST_RUNS_COUNT {
        let started = Instant::now();
        let text = c
            .request_text(
                http::Request::get("/api/v1/namespaces/table/pods")
                    .header("accept", KUBECTL_TABLE_ACCEPT)
                    .body(Vec::new())?,
            )
            .await?;
        let took = started.elapsed();
        let v: Value = serde_json::from_str(&text)?;
        table_rows = v["rows"].as_array().map_or(0, Vec::len);
        eprintln!(
            "  table list {run}: {table_rows} rows, {} bytes, {:.0} ms",
            text.len(),
            took.as_secs_f64() * 1e3
        );
        table_ms.push(took.as_secs_f64() * 1e3);
    }
    table_ms.sort_by(f64::total_cmp);
    let median_table = table_ms.get(table_ms.len() / 2).copied().unwrap_or(0.0);

    let half = (creates_per_sec / 2.0).max(1.0) as u64;
    eprintln!(
        "phase 4: creates paced at {half}/s for {secs} s on {BENCH_API_WRITERS_COUNT} connections"
    );
    let cc = c.clone();
    let half_lat = lat(paced(half, secs, BENCH_API_WRITERS_COUNT, move |i| {
        let c = cc.clone();
        async move { create(&c, "bench", &format!("paced-{i}")).await.map(|_| ()) }
    })
    .await?);
    eprintln!("  p99 {:.1} ms", half_lat.p99_ms);

    eprintln!("phase 5: GET at {BENCH_API_GET_RATE_PER_SEC}/s for {secs} s");
    let cc = c.clone();
    let existing = n.max(1) as u64;
    let get_lat = lat(paced(BENCH_API_GET_RATE_PER_SEC, secs, 16, move |i| {
        let c = cc.clone();
        async move {
            let req = http::Request::get(format!(
                "/api/v1/namespaces/list/pods/fill-{}",
                (i * 7919) % existing
            ))
            .body(Vec::new())?;
            c.request_text(req).await?;
            Ok(())
        }
    })
    .await?);
    eprintln!("  p99 {:.2} ms", get_lat.p99_ms);

    eprintln!(
        "phase 6: {watches} watches while writing {BENCH_API_WATCH_RATE_PER_SEC} pods/s for {secs} s"
    );
    let start_rv = {
        let v: Value = serde_json::from_str(
            &c.request_text(
                http::Request::get("/api/v1/namespaces/watch/pods?limit=1").body(Vec::new())?,
            )
            .await?,
        )?;
        v["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or("0")
            .to_string()
    };
    let expected = (BENCH_API_WATCH_RATE_PER_SEC * secs) as usize;
    let mut watchers = JoinSet::new();
    let connected = Arc::new(AtomicU64::new(0));
    for _ in 0..watches {
        let c = client(&server.kubeconfig).await?;
        let rv = start_rv.clone();
        let connected = connected.clone();
        watchers.spawn(async move {
            let req = http::Request::get(format!(
                "/api/v1/namespaces/watch/pods?watch=true&resourceVersion={rv}&timeoutSeconds=600"
            ))
            .body(Vec::new())?;
            let mut stream = c.request_stream(req).await?;
            connected.fetch_add(1, Ordering::Relaxed);
            let mut lags = Vec::with_capacity(expected);
            // Raw bytes, no per-line String: the 1,000 watchers share the 2 cores with the
            // server, so the load generator must stay light to measure the server.
            let mut pending: Vec<u8> = Vec::new();
            while lags.len() < expected {
                let buf = stream.fill_buf().await?;
                if buf.is_empty() {
                    break;
                }
                let now = now_ns();
                pending.extend_from_slice(buf);
                let n = buf.len();
                stream.consume_unpin(n);
                let mut start = 0;
                while let Some(nl) = memchr::memchr(b'\n', &pending[start..]) {
                    if let Some(sent) = sent_ns(&pending[start..start + nl]) {
                        lags.push(now.saturating_sub(sent) as u64);
                    }
                    start += nl + 1;
                }
                pending.drain(..start);
            }
            anyhow::Ok(lags)
        });
    }
    while connected.load(Ordering::Relaxed) < watches as u64 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cc = c.clone();
    paced(BENCH_API_WATCH_RATE_PER_SEC, secs, 16, move |i| {
        let c = cc.clone();
        async move { create(&c, "watch", &format!("w-{i}")).await.map(|_| ()) }
    })
    .await?;
    let mut lags = Vec::new();
    let mut short = 0;
    let drain = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(r) = watchers.join_next().await {
            let l = r??;
            if l.len() < expected {
                short += 1;
            }
            lags.extend(l);
        }
        anyhow::Ok(())
    })
    .await;
    if drain.is_err() {
        eprintln!("  some watchers had not received every event after 60 s");
    }
    let watch_lat = lat(lags);
    let delivered = watch_lat.count;
    eprintln!(
        "  delivered {delivered} of {} events, lag p99 {:.1} ms",
        expected * watches,
        watch_lat.p99_ms
    );

    let results = json!({
        "creates_per_sec_64_clients": creates_per_sec,
        "create_latency_under_storm": lat_json(&storm_lat),
        "create_latency_at_half_rate": lat_json(&half_lat),
        "half_rate_per_sec": half,
        "get_latency_at_1000_per_sec": lat_json(&get_lat),
        "list_pods": full_count,
        "full_list_ms": full_ms,
        "page_500_latency": lat_json(&page_lat),
        "paged_walk_ms": walk_ms,
        "table_list_rows": table_rows,
        "table_list_ms": table_ms,
        "server_rss_mib": rss as f64 / 1024.0,
        "server_peak_rss_mib": hwm as f64 / 1024.0,
        "watches": watches,
        "watch_events_expected": expected * watches,
        "watch_events_delivered": delivered,
        "watchers_short": short,
        "watch_lag": lat_json(&watch_lat),
    });
    let mut sorted_full = full_ms.clone();
    sorted_full.sort_by(f64::total_cmp);
    let median_full = sorted_full
        .get(sorted_full.len() / 2)
        .copied()
        .unwrap_or(0.0);
    let check = |ok: bool| if ok { "pass" } else { "FAIL" };
    let md = format!(
        "| measure | result | floor | |\n|---|---|---|---|\n\
| pod creates/s, 64 clients | {creates_per_sec:.0} | ≥ 5,000 | {} |\n\
| create p99 at half rate ({half}/s) | {:.1} ms (p50 {:.1}) | < 50 ms | {} |\n\
| GET p99 at 1,000/s | {:.2} ms (p50 {:.2}) | < 5 ms | {} |\n\
| LIST {full_count} pods, consistent, full (median of {}) | {median_full:.0} ms | < 1,500 ms | {} |\n\
| LIST 500-item page p99 ({} pages) | {:.1} ms (max {:.1}) | < 50 ms | {} |\n\
| Table LIST {table_rows} pods (kubectl get pods, median of {}) | {median_table:.0} ms | < 300 ms | {} |\n\
| server RSS with {full_count} pods | {} MiB (peak {} MiB) | < 1,024 MiB | {} |\n\
| watch delivery lag p99, {watches} watches, 1,000 pods/s | {:.1} ms (p50 {:.1}, max {:.1}); {delivered}/{} delivered | < 100 ms | {} |\n",
        check(creates_per_sec >= 5000.0),
        half_lat.p99_ms,
        half_lat.p50_ms,
        check(half_lat.p99_ms < 50.0),
        get_lat.p99_ms,
        get_lat.p50_ms,
        check(get_lat.p99_ms < 5.0),
        BENCH_API_LIST_RUNS_COUNT,
        check(median_full < 1500.0),
        page_lat.count,
        page_lat.p99_ms,
        page_lat.max_ms,
        check(page_lat.p99_ms < 50.0),
        BENCH_API_LIST_RUNS_COUNT,
        check(median_table < 300.0 && table_rows == BENCH_API_TABLE_PODS_COUNT),
        rss / 1024,
        hwm / 1024,
        check(rss < 1024 * 1024),
        watch_lat.p99_ms,
        watch_lat.p50_ms,
        watch_lat.max_ms,
        expected * watches,
        check(watch_lat.p99_ms < 100.0 && delivered == expected * watches),
    );
    println!("{md}");
    std::fs::write(args.out.join("results.md"), &md)?;
    std::fs::write(
        args.out.join("results.json"),
        serde_json::to_string_pretty(&results)?,
    )?;
    Ok(())
}
