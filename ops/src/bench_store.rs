//! `logbook bench store`: the committed store benchmark.
//!
//! Phases, each on a fresh embedded store in a temporary directory:
//! 1. durable appends/s with 1, 16 and 64 concurrent writers (latency p50/p99);
//! 2. watch fan-out: 1,000 subscribers, a writer paced at 1,000 events/s, delivery lag;
//! 3. a paginated list of 100,000 current objects;
//! 4. reopen with 1,000,000 events in the log: time to serving, and a full verify;
//! 5. with `--etcd`: the same appends as etcd puts against a local etcd, side by side.
//!
//! Progress goes to stderr; the Markdown report to stdout and `<out>/results.md`, the raw
//! numbers to `<out>/results.json`.

#[cfg(feature = "etcd")]
mod etcd;
mod report;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use logbook_store::{
    Actor, AppendRequest, Embedded, EmbeddedConfig, EventLog, EventType, Expect, HubConfig, ListAt,
    LogConfig, ObjectKey, Position, VerifyScope, WatchHub, WatchItem,
};
use tokio::task::JoinSet;

use crate::cli::{BenchStoreArgs, Phase};
use report::{AppendLevel, FanoutResult, ListResult, Machine, ReopenResult, Results};

/// Size of every object written, in bytes.
pub const BENCH_OBJECT_BYTES: usize = 1024;
/// The resource every object belongs to.
pub const BENCH_RESOURCE: &str = "pods";
/// The namespace every object is in.
pub const BENCH_NAMESPACE: &str = "default";
/// The resource written between list pages (so the pods list stays as loaded).
pub const BENCH_OTHER_RESOURCE: &str = "configmaps";
/// The concurrent-writer levels of the append phase (and of etcd's puts).
pub const BENCH_WRITERS_COUNTS: [usize; 3] = [1, 16, 64];
/// How long each append level runs, in seconds.
pub const BENCH_APPEND_DURATION_SECS: u64 = 5;
/// How long each append level runs with `--quick`, in seconds.
pub const BENCH_APPEND_QUICK_DURATION_SECS: u64 = 2;
/// Watch subscribers in the fan-out phase.
pub const BENCH_SUBSCRIBERS_COUNT: usize = 1_000;
/// The paced write rate of the fan-out phase, in events per second.
pub const BENCH_FANOUT_RATE_EVENTS_PER_SEC: u64 = 1_000;
/// How long the fan-out writer runs, in seconds.
pub const BENCH_FANOUT_DURATION_SECS: u64 = 10;
/// How long the fan-out writer runs with `--quick`, in seconds.
pub const BENCH_FANOUT_QUICK_DURATION_SECS: u64 = 3;
/// How long subscribers may take after the writer finished before they count as short.
pub const BENCH_FANOUT_DRAIN_SECS: u64 = 30;
/// Current objects the list phase lists.
pub const BENCH_LIST_OBJECTS_COUNT: u64 = 100_000;
/// Full paginated list walks timed (the report gives each and their median).
pub const BENCH_LIST_WALKS_COUNT: usize = 3;
/// Events in the log before the reopen phase closes and reopens it.
pub const BENCH_REOPEN_EVENTS_COUNT: u64 = 1_000_000;
/// Events in the log for the reopen phase with `--quick`.
pub const BENCH_REOPEN_QUICK_EVENTS_COUNT: u64 = 100_000;
/// Events the start-up verify checks (`VerifyScope::Tail`).
pub const BENCH_REOPEN_TAIL_EVENTS_COUNT: usize = 1_000;
/// Concurrent writers used to load the list and reopen phases.
pub const BENCH_LOAD_WRITERS_COUNT: usize = 64;
/// How often progress is printed on stderr, in milliseconds.
pub const BENCH_PROGRESS_INTERVAL_MS: u64 = 1_000;

/// Floors from the issue.
pub const FLOOR_APPENDS_PER_SEC_AT_64_WRITERS: f64 = 20_000.0;
pub const FLOOR_FANOUT_LAG_P99_MS: f64 = 50.0;
pub const FLOOR_LIST_100K_TOTAL_MS: f64 = 300.0;
pub const FLOOR_REOPEN_TO_SERVING_MS: f64 = 5_000.0;
/// Goal: Logbook appends/s over etcd puts/s at 64 writers.
pub const GOAL_ETCD_RATIO_AT_64_WRITERS: f64 = 2.0;

fn wants(args: &BenchStoreArgs, phase: Phase) -> bool {
    args.only.is_empty() || args.only.contains(&phase)
}

pub async fn run(args: BenchStoreArgs) -> Result<()> {
    if args.etcd && !cfg!(feature = "etcd") {
        bail!(
            "this logbook was built without the `etcd` feature: build with `--features etcd` (scripts/bench-store.sh does)"
        );
    }
    let tmp = match &args.tmp_dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            tempfile::Builder::new()
                .prefix("logbook-bench-")
                .tempdir_in(d)?
        }
        None => tempfile::Builder::new()
            .prefix("logbook-bench-")
            .tempdir()?,
    };
    eprintln!(
        "logbook bench store: data under {} (deleted at the end){}",
        tmp.path().display(),
        if args.quick { "; --quick" } else { "" }
    );
    let mut results = Results {
        machine: Machine::detect(),
        quick: args.quick,
        object_bytes: BENCH_OBJECT_BYTES,
        ..Results::default()
    };

    if wants(&args, Phase::Append) {
        let secs = if args.quick {
            BENCH_APPEND_QUICK_DURATION_SECS
        } else {
            BENCH_APPEND_DURATION_SECS
        };
        for names in [Names::Sequential, Names::Scattered] {
            for writers in BENCH_WRITERS_COUNTS {
                let dir = tmp.path().join(format!("append-{writers}-{names:?}"));
                results
                    .appends
                    .push(bench_appends(&dir, writers, names, Duration::from_secs(secs)).await?);
                std::fs::remove_dir_all(&dir)?;
            }
        }
    }
    #[cfg(feature = "etcd")]
    if args.etcd {
        let secs = if args.quick {
            BENCH_APPEND_QUICK_DURATION_SECS
        } else {
            BENCH_APPEND_DURATION_SECS
        };
        results.etcd = Some(
            etcd::bench(
                &args.etcd_bin,
                &tmp.path().join("etcd"),
                Duration::from_secs(secs),
            )
            .await?,
        );
    }
    if wants(&args, Phase::Fanout) {
        let secs = if args.quick {
            BENCH_FANOUT_QUICK_DURATION_SECS
        } else {
            BENCH_FANOUT_DURATION_SECS
        };
        let dir = tmp.path().join("fanout");
        results.fanout = Some(bench_fanout(&dir, secs).await?);
        std::fs::remove_dir_all(&dir)?;
    }
    if wants(&args, Phase::List) {
        let dir = tmp.path().join("list");
        results.list = Some(bench_list(&dir).await?);
        std::fs::remove_dir_all(&dir)?;
    }
    if wants(&args, Phase::Reopen) {
        let events = if args.quick {
            BENCH_REOPEN_QUICK_EVENTS_COUNT
        } else {
            BENCH_REOPEN_EVENTS_COUNT
        };
        let dir = tmp.path().join("reopen");
        results.reopen = Some(bench_reopen(&dir, events).await?);
        std::fs::remove_dir_all(&dir)?;
    }

    results.machine.loadavg_end = report::loadavg();
    let md = results.markdown();
    print!("{md}");
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    std::fs::write(args.out.join("results.md"), &md)?;
    std::fs::write(
        args.out.join("results.json"),
        serde_json::to_string_pretty(&results)? + "\n",
    )?;
    eprintln!(
        "wrote {} and {}",
        args.out.join("results.md").display(),
        args.out.join("results.json").display()
    );
    tmp.close()?;
    Ok(())
}

/// One embedded store and its log.
struct Store {
    kv: Embedded,
    log: EventLog,
}

impl Store {
    async fn open(dir: &Path) -> Result<Store> {
        let kv = Embedded::open(EmbeddedConfig::new(dir))
            .with_context(|| format!("opening a store in {}", dir.display()))?;
        let log = EventLog::open(Arc::new(kv.clone()), LogConfig::default()).await?;
        Ok(Store { kv, log })
    }

    /// Drops the log and stops the committer (waits for it).
    async fn close(self) -> Result<()> {
        let Store { kv, log } = self;
        drop(log);
        tokio::task::spawn_blocking(move || kv.close()).await?;
        Ok(())
    }
}

/// 1 KiB of object bytes: `a` and `b` (little-endian u64s) first, then filler derived from `a`.
fn object_bytes(a: u64, b: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(BENCH_OBJECT_BYTES);
    v.extend_from_slice(&a.to_le_bytes());
    v.extend_from_slice(&b.to_le_bytes());
    let mut x = a.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while v.len() < BENCH_OBJECT_BYTES {
        // xorshift64: cheap bytes that do not compress.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let take = (BENCH_OBJECT_BYTES - v.len()).min(8);
        v.extend_from_slice(&x.to_le_bytes()[..take]);
    }
    v
}

fn read_u64(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

fn add_request(name: String, object: Vec<u8>) -> AppendRequest {
    AppendRequest {
        uid: format!("uid-{name}"),
        key: ObjectKey::new(BENCH_RESOURCE, BENCH_NAMESPACE, name),
        kind: EventType::Added,
        object,
        expect: Expect::default(),
        actor: Actor {
            user: "bench".into(),
            groups: Vec::new(),
            ..Default::default()
        },
        verb: "create".into(),
        request_id: String::new(),
    }
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[u64], pct: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((pct / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn nanos_to_ms(n: u64) -> f64 {
    n as f64 / 1e6
}

/// Prints `label: N <what>, R/s` on stderr every [`BENCH_PROGRESS_INTERVAL_MS`] until dropped.
pub struct Progress {
    handle: tokio::task::JoinHandle<()>,
}

impl Progress {
    pub fn start(
        label: String,
        what: &'static str,
        counter: Arc<AtomicU64>,
        total: Option<u64>,
    ) -> Progress {
        let handle = tokio::spawn(async move {
            let started = Instant::now();
            let mut tick = tokio::time::interval(Duration::from_millis(BENCH_PROGRESS_INTERVAL_MS));
            tick.tick().await;
            let mut last = 0u64;
            loop {
                tick.tick().await;
                let n = counter.load(Ordering::Relaxed);
                let of = total.map(|t| format!(" of {t}")).unwrap_or_default();
                eprintln!(
                    "  {label}: {n}{of} {what} after {:.0} s ({} in the last second)",
                    started.elapsed().as_secs_f64(),
                    n - last
                );
                last = n;
            }
        });
        Progress { handle }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

/// How long or how much the writers write.
#[derive(Clone, Copy)]
enum Budget {
    /// Each writer appends new objects until the time is up.
    For(Duration),
    /// The writers append this many objects between them.
    Count(u64),
}

struct WriteStats {
    appends: u64,
    elapsed: Duration,
    /// Sorted append latencies, in nanoseconds.
    latencies_ns: Vec<u64>,
}

/// Where new names land in the key space.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Names {
    /// `<label>-<n>` with `n` one counter shared by all writers: every new object sorts
    /// after the previous ones (appends at the right edge of the object and revision trees).
    Sequential,
    /// `<hash(n)>-<n>`: every new object lands at a random place among the existing ones,
    /// like Kubernetes names with random suffixes across many owners.
    Scattered,
}

impl Names {
    pub fn as_str(self) -> &'static str {
        match self {
            Names::Sequential => "sequential",
            Names::Scattered => "scattered",
        }
    }

    fn name(self, label: &str, n: u64) -> String {
        match self {
            Names::Sequential => format!("{}-{n:010}", label.replace(' ', "-")),
            Names::Scattered => format!("{:016x}-{n}", splitmix64(n)),
        }
    }
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Runs `writers` tasks, each looping `log.append` of `Added` events of new names.
async fn write(
    log: &EventLog,
    label: &str,
    writers: usize,
    names: Names,
    budget: Budget,
) -> Result<WriteStats> {
    let done = Arc::new(AtomicU64::new(0));
    let next = Arc::new(AtomicU64::new(0));
    let total = match budget {
        Budget::Count(n) => Some(n),
        Budget::For(_) => None,
    };
    let _progress = Progress::start(label.to_string(), "appends", done.clone(), total);
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for w in 0..writers {
        let (log, done, next) = (log.clone(), done.clone(), next.clone());
        let label = label.to_string();
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let more = match budget {
                    Budget::For(d) => started.elapsed() < d,
                    Budget::Count(n) => i < n,
                };
                if !more {
                    break;
                }
                let name = names.name(&label, i);
                let req = add_request(name, object_bytes(i, w as u64));
                let t = Instant::now();
                log.append(&req)
                    .await
                    .with_context(|| format!("append of {}", req.key))?;
                latencies.push(t.elapsed().as_nanos() as u64);
                done.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(latencies)
        });
    }
    let mut latencies_ns = Vec::new();
    while let Some(r) = tasks.join_next().await {
        latencies_ns.extend(r??);
    }
    let elapsed = started.elapsed();
    latencies_ns.sort_unstable();
    Ok(WriteStats {
        appends: latencies_ns.len() as u64,
        elapsed,
        latencies_ns,
    })
}

async fn bench_appends(
    dir: &Path,
    writers: usize,
    names: Names,
    duration: Duration,
) -> Result<AppendLevel> {
    eprintln!(
        "[append] {writers} writer(s), {names:?} names, for {} s",
        duration.as_secs()
    );
    let store = Store::open(dir).await?;
    let stats = write(
        &store.log,
        &format!("append x{writers}"),
        writers,
        names,
        Budget::For(duration),
    )
    .await?;
    let head = store.log.head().await?;
    store.close().await?;
    let level = AppendLevel::from_stats(
        writers,
        Some(names),
        stats.appends,
        stats.elapsed,
        &stats.latencies_ns,
    );
    eprintln!(
        "[append] {writers} writer(s), {names:?} names: {:.0} appends/s, p50 {:.2} ms, p99 {:.2} ms (head {head})",
        level.per_sec, level.p50_ms, level.p99_ms
    );
    Ok(level)
}

#[derive(Default)]
struct SubscriberOutcome {
    /// Receive time of each event (nanos since the shared start), indexed by sequence number;
    /// `u64::MAX` where the event never arrived.
    received_ns: Vec<u64>,
    events: u64,
    duplicates: u64,
    out_of_order: u64,
    unknown: u64,
    bookmarks: u64,
    error: Option<String>,
}

async fn bench_fanout(dir: &Path, secs: u64) -> Result<FanoutResult> {
    let n = (BENCH_FANOUT_RATE_EVENTS_PER_SEC * secs) as usize;
    eprintln!(
        "[fanout] {BENCH_SUBSCRIBERS_COUNT} subscribers, {n} events at {BENCH_FANOUT_RATE_EVENTS_PER_SEC}/s"
    );
    let store = Store::open(dir).await?;
    let hub = WatchHub::start(store.log.clone(), HubConfig::default()).await?;
    let head = store.log.head().await?;
    let t0 = Instant::now();
    let now_ns = move || t0.elapsed().as_nanos() as u64;
    let acked_ns: Arc<Vec<AtomicU64>> =
        Arc::new((0..n).map(|_| AtomicU64::new(u64::MAX)).collect());
    let sent_ns: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(u64::MAX)).collect());
    let delivered = Arc::new(AtomicU64::new(0));
    let drain_deadline =
        tokio::time::Instant::now() + Duration::from_secs(secs + BENCH_FANOUT_DRAIN_SECS);

    let mut subscribers = JoinSet::new();
    for _ in 0..BENCH_SUBSCRIBERS_COUNT {
        let mut sub = hub.subscribe(BENCH_RESOURCE, None, head).await?;
        let delivered = delivered.clone();
        subscribers.spawn(async move {
            let mut out = SubscriberOutcome {
                received_ns: vec![u64::MAX; n],
                ..SubscriberOutcome::default()
            };
            let mut last = head;
            while out.events < n as u64 {
                let item = match tokio::time::timeout_at(drain_deadline, sub.next()).await {
                    Err(_) => {
                        out.error = Some(format!("timed out with {} of {n} events", out.events));
                        break;
                    }
                    Ok(Err(e)) => {
                        out.error = Some(e.to_string());
                        break;
                    }
                    Ok(Ok(item)) => item,
                };
                let at = now_ns();
                match item {
                    WatchItem::Bookmark(_) => out.bookmarks += 1,
                    WatchItem::Event(e) => {
                        if e.position <= last {
                            out.out_of_order += 1;
                        }
                        last = e.position;
                        match read_u64(&e.object, 0)
                            .map(|s| s as usize)
                            .filter(|s| *s < n)
                        {
                            Some(seq) if out.received_ns[seq] == u64::MAX => {
                                out.received_ns[seq] = at
                            }
                            Some(_) => out.duplicates += 1,
                            None => out.unknown += 1,
                        }
                        out.events += 1;
                        delivered.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            out
        });
    }

    // The paced writer: append i is started at start + i / rate, whatever earlier appends do.
    let written = Arc::new(AtomicU64::new(0));
    let write_errors = Arc::new(AtomicU64::new(0));
    let progress_stop = Arc::new(AtomicBool::new(false));
    let progress = {
        let (written, delivered, stop) =
            (written.clone(), delivered.clone(), progress_stop.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(BENCH_PROGRESS_INTERVAL_MS));
            tick.tick().await;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let d = delivered.load(Ordering::Relaxed);
                eprintln!(
                    "  fanout: {} of {n} events written, {d} deliveries ({:.1}% of {})",
                    written.load(Ordering::Relaxed),
                    100.0 * d as f64 / (n * BENCH_SUBSCRIBERS_COUNT) as f64,
                    n * BENCH_SUBSCRIBERS_COUNT
                );
            }
        })
    };
    let interval = Duration::from_nanos(1_000_000_000 / BENCH_FANOUT_RATE_EVENTS_PER_SEC);
    let write_start = tokio::time::Instant::now();
    let mut appends = JoinSet::new();
    for i in 0..n {
        tokio::time::sleep_until(write_start + interval * i as u32).await;
        let (log, acked_ns, sent_ns, written, write_errors) = (
            store.log.clone(),
            acked_ns.clone(),
            sent_ns.clone(),
            written.clone(),
            write_errors.clone(),
        );
        appends.spawn(async move {
            let sent = now_ns();
            sent_ns[i].store(sent, Ordering::Relaxed);
            let req = add_request(format!("fanout-{i:08}"), object_bytes(i as u64, sent));
            match log.append(&req).await {
                Ok(_) => {
                    acked_ns[i].store(now_ns(), Ordering::Relaxed);
                    written.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    if write_errors.fetch_add(1, Ordering::Relaxed) == 0 {
                        eprintln!("  fanout: append failed: {e}");
                    }
                }
            }
        });
    }
    while appends.join_next().await.is_some() {}
    let write_secs = write_start.elapsed().as_secs_f64();

    let mut outcomes = Vec::with_capacity(BENCH_SUBSCRIBERS_COUNT);
    while let Some(r) = subscribers.join_next().await {
        outcomes.push(r?);
    }
    progress_stop.store(true, Ordering::Relaxed);
    progress.abort();
    drop(hub);
    store.close().await?;

    let acked: Vec<u64> = acked_ns.iter().map(|a| a.load(Ordering::Relaxed)).collect();
    let sent: Vec<u64> = sent_ns.iter().map(|a| a.load(Ordering::Relaxed)).collect();
    let mut lag_ack = Vec::with_capacity(n * BENCH_SUBSCRIBERS_COUNT);
    let mut lag_send = Vec::with_capacity(n * BENCH_SUBSCRIBERS_COUNT);
    let mut before_ack = 0u64;
    let mut complete = 0usize;
    let mut errors = Vec::new();
    let (mut duplicates, mut out_of_order, mut unknown, mut bookmarks, mut missing) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    for o in &outcomes {
        let mut got_all =
            o.error.is_none() && o.duplicates == 0 && o.out_of_order == 0 && o.unknown == 0;
        for (seq, &r) in o.received_ns.iter().enumerate() {
            if r == u64::MAX {
                missing += 1;
                got_all = false;
                continue;
            }
            if acked[seq] != u64::MAX {
                if r < acked[seq] {
                    before_ack += 1;
                }
                lag_ack.push(r.saturating_sub(acked[seq]));
            }
            lag_send.push(r.saturating_sub(sent[seq]));
        }
        if got_all {
            complete += 1;
        }
        duplicates += o.duplicates;
        out_of_order += o.out_of_order;
        unknown += o.unknown;
        bookmarks += o.bookmarks;
        if let Some(e) = &o.error {
            errors.push(e.clone());
        }
    }
    lag_ack.sort_unstable();
    lag_send.sort_unstable();
    errors.sort();
    errors.dedup();
    let result = FanoutResult {
        subscribers: BENCH_SUBSCRIBERS_COUNT,
        events: n as u64,
        events_acked: written.load(Ordering::Relaxed),
        write_errors: write_errors.load(Ordering::Relaxed),
        target_rate_per_sec: BENCH_FANOUT_RATE_EVENTS_PER_SEC,
        achieved_rate_per_sec: n as f64 / write_secs,
        deliveries: lag_send.len() as u64,
        lag_p50_ms: nanos_to_ms(percentile(&lag_ack, 50.0)),
        lag_p99_ms: nanos_to_ms(percentile(&lag_ack, 99.0)),
        lag_max_ms: nanos_to_ms(lag_ack.last().copied().unwrap_or(0)),
        delivered_before_ack: before_ack,
        lag_from_send_p50_ms: nanos_to_ms(percentile(&lag_send, 50.0)),
        lag_from_send_p99_ms: nanos_to_ms(percentile(&lag_send, 99.0)),
        lag_from_send_max_ms: nanos_to_ms(lag_send.last().copied().unwrap_or(0)),
        subscribers_complete_in_order: complete,
        missing,
        duplicates,
        out_of_order,
        unknown,
        bookmarks,
        errors: errors.into_iter().take(5).collect(),
    };
    eprintln!(
        "[fanout] lag p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; {} of {} subscribers got every event once, in order",
        result.lag_p50_ms, result.lag_p99_ms, result.lag_max_ms, complete, BENCH_SUBSCRIBERS_COUNT
    );
    Ok(result)
}

async fn bench_list(dir: &Path) -> Result<ListResult> {
    eprintln!(
        "[list] loading {BENCH_LIST_OBJECTS_COUNT} objects with {BENCH_LOAD_WRITERS_COUNT} writers"
    );
    let store = Store::open(dir).await?;
    let load = write(
        &store.log,
        "list load",
        BENCH_LOAD_WRITERS_COUNT,
        Names::Sequential,
        Budget::Count(BENCH_LIST_OBJECTS_COUNT),
    )
    .await?;
    let load_per_sec = load.appends as f64 / load.elapsed.as_secs_f64();
    eprintln!(
        "[list] loaded in {:.1} s ({load_per_sec:.0} appends/s); walking the list {BENCH_LIST_WALKS_COUNT} times",
        load.elapsed.as_secs_f64()
    );
    let mut walks_ms = Vec::new();
    let mut page_ms = Vec::new();
    let mut pages = 0;
    for walk in 0..BENCH_LIST_WALKS_COUNT {
        let started = Instant::now();
        let mut token: Option<String> = None;
        let mut items = 0u64;
        let mut walk_pages = 0;
        let mut position: Option<Position> = None;
        loop {
            let t = Instant::now();
            let page = store
                .log
                .list(BENCH_RESOURCE, None, ListAt::Latest, 0, token.as_deref())
                .await?;
            page_ms.push(t.elapsed().as_secs_f64() * 1e3);
            walk_pages += 1;
            items += page.items.len() as u64;
            ensure!(
                position.is_none_or(|p| p == page.position),
                "list pages read different positions"
            );
            position = Some(page.position);
            match page.continue_token {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        let ms = started.elapsed().as_secs_f64() * 1e3;
        ensure!(
            items == BENCH_LIST_OBJECTS_COUNT,
            "the list returned {items} objects, expected {BENCH_LIST_OBJECTS_COUNT}"
        );
        eprintln!(
            "  list walk {}: {items} objects in {walk_pages} pages, {ms:.1} ms",
            walk + 1
        );
        walks_ms.push(ms);
        pages = walk_pages;
    }
    let with_writes_ms = list_walk_with_writes(&store.log).await?;
    store.close().await?;
    let mut sorted = walks_ms.clone();
    sorted.sort_by(f64::total_cmp);
    page_ms.sort_by(f64::total_cmp);
    let result = ListResult {
        objects: BENCH_LIST_OBJECTS_COUNT,
        pages,
        load_appends_per_sec: load_per_sec,
        walks_total_ms: walks_ms,
        median_total_ms: sorted[sorted.len() / 2],
        page_median_ms: page_ms[page_ms.len() / 2],
        page_max_ms: page_ms.last().copied().unwrap_or(0.0),
        with_writes_total_ms: with_writes_ms,
    };
    eprintln!(
        "[list] median {:.1} ms for {} objects ({} pages, {:.1} ms per page)",
        result.median_total_ms, result.objects, result.pages, result.page_median_ms
    );
    Ok(result)
}

/// One more walk, with an append to another resource before every page after the first: the
/// head then moves past the list's position, so pages after the first read the list as of
/// that position (the revision index) instead of the current-state projection. Only the list
/// calls are timed.
async fn list_walk_with_writes(log: &EventLog) -> Result<f64> {
    let mut token: Option<String> = None;
    let mut items = 0u64;
    let mut listing = Duration::ZERO;
    for i in 0u64.. {
        if token.is_some() {
            let mut req = add_request(format!("between-pages-{i}"), object_bytes(i, 0));
            req.key.resource = BENCH_OTHER_RESOURCE.into();
            log.append(&req).await?;
        }
        let t = Instant::now();
        let page = log
            .list(BENCH_RESOURCE, None, ListAt::Latest, 0, token.as_deref())
            .await?;
        listing += t.elapsed();
        items += page.items.len() as u64;
        match page.continue_token {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    ensure!(
        items == BENCH_LIST_OBJECTS_COUNT,
        "the list with writes between pages returned {items} objects, expected {BENCH_LIST_OBJECTS_COUNT}"
    );
    let ms = listing.as_secs_f64() * 1e3;
    eprintln!("  list walk with a write between pages: {items} objects, {ms:.1} ms listing");
    Ok(ms)
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        std::fs::copy(entry.path(), to.join(entry.file_name()))?;
    }
    Ok(())
}

async fn bench_reopen(dir: &Path, events: u64) -> Result<ReopenResult> {
    eprintln!("[reopen] writing {events} events with {BENCH_LOAD_WRITERS_COUNT} writers");
    let store = Store::open(dir).await?;
    let load = write(
        &store.log,
        "reopen load",
        BENCH_LOAD_WRITERS_COUNT,
        Names::Sequential,
        Budget::Count(events),
    )
    .await?;
    let load_per_sec = load.appends as f64 / load.elapsed.as_secs_f64();
    let head_before = store.log.head().await?;
    // What `kill -9` would leave: the store is idle (every append acknowledged), so a copy of
    // its directory now is the redb file as of the last checkpoint plus non-durable commits
    // in the page cache, and the write-ahead log since that checkpoint.
    let crash_image = dir.with_file_name("reopen-crash-image");
    copy_dir(dir, &crash_image)?;
    store.close().await?;
    let file_bytes = std::fs::metadata(Embedded::data_file(dir))?.len();
    eprintln!(
        "[reopen] wrote {events} events in {:.1} s ({load_per_sec:.0} appends/s), data file {:.2} GiB; closed, reopening",
        load.elapsed.as_secs_f64(),
        file_bytes as f64 / (1u64 << 30) as f64
    );

    let t = Instant::now();
    let kv = Embedded::open(EmbeddedConfig::new(dir))?;
    let kv_open = t.elapsed();
    let log = EventLog::open(Arc::new(kv.clone()), LogConfig::default()).await?;
    let log_open = t.elapsed();
    let tail = log
        .verify(VerifyScope::Tail(BENCH_REOPEN_TAIL_EVENTS_COUNT), |_| {})
        .await?;
    let verified = t.elapsed();
    let head = log.head().await?;
    let serving = t.elapsed();
    ensure!(
        head == head_before,
        "head after reopen is {head}, before close it was {head_before}"
    );
    eprintln!(
        "[reopen] serving after {:.1} ms (tail verify checked {} events); running a full verify",
        serving.as_secs_f64() * 1e3,
        tail.events
    );

    let t = Instant::now();
    let mut last_print = Instant::now();
    let full = log
        .verify(VerifyScope::Full, |checked| {
            if last_print.elapsed() >= Duration::from_millis(BENCH_PROGRESS_INTERVAL_MS) {
                eprintln!("  full verify: {checked} of {events} events checked");
                last_print = Instant::now();
            }
        })
        .await?;
    let full_ms = t.elapsed().as_secs_f64() * 1e3;
    ensure!(
        full.events == events,
        "full verify checked {} events, expected {events}",
        full.events
    );
    Store { kv, log }.close().await?;

    eprintln!("[reopen] opening the copy taken before close, as after kill -9");
    let t = Instant::now();
    let kv = Embedded::open(EmbeddedConfig::new(&crash_image))?;
    let log = EventLog::open(Arc::new(kv.clone()), LogConfig::default()).await?;
    log.verify(VerifyScope::Tail(BENCH_REOPEN_TAIL_EVENTS_COUNT), |_| {})
        .await?;
    let crash_head = log.head().await?;
    let crash_to_serving = t.elapsed();
    ensure!(
        crash_head == head_before,
        "after the crash image reopened the head is {crash_head}, every acknowledged append reached {head_before}"
    );
    Store { kv, log }.close().await?;
    std::fs::remove_dir_all(&crash_image)?;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let result = ReopenResult {
        events,
        data_file_bytes: file_bytes,
        load_appends_per_sec: load_per_sec,
        kv_open_ms: ms(kv_open),
        log_open_ms: ms(log_open - kv_open),
        tail_verify_ms: ms(verified - log_open),
        tail_verify_events: tail.events,
        head_ms: ms(serving - verified),
        to_serving_ms: ms(serving),
        full_verify_ms: full_ms,
        full_verify_events: full.events,
        crash_to_serving_ms: ms(crash_to_serving),
    };
    eprintln!(
        "[reopen] full verify of {} events: {:.0} ms",
        full.events, full_ms
    );
    Ok(result)
}
