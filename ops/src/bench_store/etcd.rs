//! etcd side by side: starts a local etcd on loopback with its own temp data dir, measures
//! puts/s of 1 KiB values at the same concurrency levels as the append phase, then stops it.

use std::fs::File;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use etcd_client::{Client, ConnectOptions};
use tokio::task::JoinSet;

use super::report::{AppendLevel, EtcdResult};
use super::{BENCH_WRITERS_COUNTS, Progress, object_bytes};

/// How long etcd may take to start answering, in seconds.
pub const ETCD_START_TIMEOUT_SECS: u64 = 30;
/// Most client connections (gRPC channels) the writers share; writer `w` uses `w % n`.
pub const ETCD_CONNECTIONS_MAX: usize = 8;
/// Timeout of one etcd request, in seconds.
pub const ETCD_REQUEST_TIMEOUT_SECS: u64 = 10;
/// How often the start-up health check retries, in milliseconds.
pub const ETCD_HEALTH_RETRY_MS: u64 = 100;

/// The etcd process; killed (by its pid) and reaped when dropped.
struct EtcdProcess {
    child: Child,
}

impl Drop for EtcdProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_loopback_ports() -> Result<(u16, u16)> {
    // Hold both listeners until both ports are known so they differ.
    let a = TcpListener::bind("127.0.0.1:0")?;
    let b = TcpListener::bind("127.0.0.1:0")?;
    Ok((a.local_addr()?.port(), b.local_addr()?.port()))
}

fn options() -> ConnectOptions {
    ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(ETCD_REQUEST_TIMEOUT_SECS))
        .with_timeout(Duration::from_secs(ETCD_REQUEST_TIMEOUT_SECS))
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

async fn start(bin: &Path, dir: &Path) -> Result<(EtcdProcess, String, String)> {
    let data = dir.join("data");
    std::fs::create_dir_all(dir)?;
    let (client_port, peer_port) = free_loopback_ports()?;
    let client_url = format!("http://127.0.0.1:{client_port}");
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    let log_path = dir.join("etcd.log");
    let log = File::create(&log_path)?;
    let child = Command::new(bin)
        .arg("--name")
        .arg("bench")
        .arg("--data-dir")
        .arg(&data)
        .arg("--listen-client-urls")
        .arg(&client_url)
        .arg("--advertise-client-urls")
        .arg(&client_url)
        .arg("--listen-peer-urls")
        .arg(&peer_url)
        .arg("--initial-advertise-peer-urls")
        .arg(&peer_url)
        .arg("--initial-cluster")
        .arg(format!("bench={peer_url}"))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| {
            format!(
                "starting {} (Debian: apt-get install etcd-server)",
                bin.display()
            )
        })?;
    let mut proc = EtcdProcess { child };
    eprintln!(
        "[etcd] started {} (pid {}) on {client_url}, data in {}",
        bin.display(),
        proc.child.id(),
        data.display()
    );
    let deadline = Instant::now() + Duration::from_secs(ETCD_START_TIMEOUT_SECS);
    loop {
        if let Some(status) = proc.child.try_wait()? {
            bail!(
                "etcd exited during start-up ({status}); its log:\n{}",
                log_tail(&log_path)
            );
        }
        let attempt = async {
            let mut c = Client::connect([client_url.as_str()], Some(options())).await?;
            let s = c.status().await?;
            anyhow::Ok(s.version().to_string())
        };
        match tokio::time::timeout(Duration::from_secs(2), attempt).await {
            Ok(Ok(version)) => return Ok((proc, client_url, version)),
            _ if Instant::now() >= deadline => bail!(
                "etcd did not answer within {ETCD_START_TIMEOUT_SECS} s; its log:\n{}",
                log_tail(&log_path)
            ),
            _ => tokio::time::sleep(Duration::from_millis(ETCD_HEALTH_RETRY_MS)).await,
        }
    }
}

async fn puts(url: &str, writers: usize, duration: Duration) -> Result<AppendLevel> {
    let mut clients = Vec::new();
    for _ in 0..writers.min(ETCD_CONNECTIONS_MAX) {
        clients.push(Client::connect([url], Some(options())).await?);
    }
    let done = Arc::new(AtomicU64::new(0));
    let _progress = Progress::start(format!("etcd x{writers}"), "puts", done.clone(), None);
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = JoinSet::new();
    for w in 0..writers {
        let mut kv = clients[w % clients.len()].kv_client();
        let done = done.clone();
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            let mut i = 0u64;
            while Instant::now() < deadline {
                i += 1;
                let key = format!("/registry/pods/default/etcd-x{writers}-w{w:02}-{i:08}");
                let value = object_bytes(i, w as u64);
                let t = Instant::now();
                kv.put(key, value, None).await?;
                latencies.push(t.elapsed().as_nanos() as u64);
                done.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(latencies)
        });
    }
    let mut latencies = Vec::new();
    while let Some(r) = tasks.join_next().await {
        latencies.extend(r??);
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    Ok(AppendLevel::from_stats(
        writers,
        None,
        latencies.len() as u64,
        elapsed,
        &latencies,
    ))
}

pub async fn bench(bin: &Path, dir: &Path, duration: Duration) -> Result<EtcdResult> {
    let (proc, url, version) = start(bin, dir).await?;
    eprintln!("[etcd] etcd {version} is answering");
    let mut levels = Vec::new();
    for writers in BENCH_WRITERS_COUNTS {
        eprintln!("[etcd] {writers} writer(s) for {} s", duration.as_secs());
        let level = puts(&url, writers, duration).await?;
        eprintln!(
            "[etcd] {writers} writer(s): {:.0} puts/s, p50 {:.2} ms, p99 {:.2} ms",
            level.per_sec, level.p50_ms, level.p99_ms
        );
        levels.push(level);
    }
    drop(proc);
    eprintln!("[etcd] stopped");
    std::fs::remove_dir_all(dir)?;
    Ok(EtcdResult {
        version,
        connections_max: ETCD_CONNECTIONS_MAX,
        levels,
    })
}
