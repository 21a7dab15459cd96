//! The results of `logbook bench store`: JSON as measured, and the Markdown report.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use super::{
    FLOOR_APPENDS_PER_SEC_AT_64_WRITERS, FLOOR_FANOUT_LAG_P99_MS, FLOOR_LIST_100K_TOTAL_MS,
    FLOOR_REOPEN_TO_SERVING_MS, GOAL_ETCD_RATIO_AT_64_WRITERS, Names, nanos_to_ms, percentile,
};

#[derive(Debug, Default, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub cpu_model: String,
    pub kernel: String,
    /// /proc/loadavg when the run started and when it ended: other work on the machine
    /// competes for its 2 cores and shows here.
    pub loadavg_start: String,
    pub loadavg_end: String,
    /// `git describe --always --dirty` of the work tree the benchmark ran in, if any.
    pub source: String,
}

fn source() -> String {
    std::process::Command::new("git")
        .args(["describe", "--always", "--dirty", "--exclude", "*"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

impl Machine {
    pub fn detect() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")
                    .map(|r| r.trim_start_matches([' ', '\t', ':']).to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        Machine {
            cores: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(0),
            cpu_model,
            kernel,
            loadavg_start: loadavg(),
            loadavg_end: String::new(),
            source: source(),
        }
    }
}

/// One concurrency level of durable writes (Logbook appends or etcd puts).
#[derive(Debug, Clone, Serialize)]
pub struct AppendLevel {
    pub writers: usize,
    /// The name pattern of the objects written (Logbook only; etcd keys its data by revision).
    pub names: Option<Names>,
    pub writes: u64,
    pub seconds: f64,
    pub per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl AppendLevel {
    pub fn from_stats(
        writers: usize,
        names: Option<Names>,
        writes: u64,
        elapsed: Duration,
        sorted_latencies_ns: &[u64],
    ) -> AppendLevel {
        AppendLevel {
            writers,
            names,
            writes,
            seconds: elapsed.as_secs_f64(),
            per_sec: writes as f64 / elapsed.as_secs_f64(),
            p50_ms: nanos_to_ms(percentile(sorted_latencies_ns, 50.0)),
            p99_ms: nanos_to_ms(percentile(sorted_latencies_ns, 99.0)),
            max_ms: nanos_to_ms(sorted_latencies_ns.last().copied().unwrap_or(0)),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct EtcdResult {
    pub version: String,
    pub connections_max: usize,
    pub levels: Vec<AppendLevel>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FanoutResult {
    pub subscribers: usize,
    pub events: u64,
    pub events_acked: u64,
    pub write_errors: u64,
    pub target_rate_per_sec: u64,
    pub achieved_rate_per_sec: f64,
    pub deliveries: u64,
    /// Receive time minus the time the writer saw the append acknowledged.
    pub lag_p50_ms: f64,
    pub lag_p99_ms: f64,
    pub lag_max_ms: f64,
    /// Deliveries that arrived before the writer task saw its ack (counted as 0 lag).
    pub delivered_before_ack: u64,
    /// Receive time minus the time the append was started (includes the durable commit).
    pub lag_from_send_p50_ms: f64,
    pub lag_from_send_p99_ms: f64,
    pub lag_from_send_max_ms: f64,
    pub subscribers_complete_in_order: usize,
    pub missing: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub unknown: u64,
    pub bookmarks: u64,
    pub errors: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ListResult {
    pub objects: u64,
    pub pages: usize,
    pub load_appends_per_sec: f64,
    pub walks_total_ms: Vec<f64>,
    pub median_total_ms: f64,
    pub page_median_ms: f64,
    pub page_max_ms: f64,
    /// One walk with a write (to another resource) before each page after the first: those
    /// pages read as of the list's position through the revision index.
    pub with_writes_total_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReopenResult {
    pub events: u64,
    pub data_file_bytes: u64,
    pub load_appends_per_sec: f64,
    pub kv_open_ms: f64,
    pub log_open_ms: f64,
    pub tail_verify_ms: f64,
    pub tail_verify_events: u64,
    pub head_ms: f64,
    pub to_serving_ms: f64,
    pub full_verify_ms: f64,
    pub full_verify_events: u64,
    /// Open of a copy taken before the clean close (what `kill -9` leaves) to serving.
    pub crash_to_serving_ms: f64,
}

#[derive(Debug, Default, Serialize)]
pub struct Results {
    pub machine: Machine,
    pub quick: bool,
    pub object_bytes: usize,
    pub appends: Vec<AppendLevel>,
    pub etcd: Option<EtcdResult>,
    pub fanout: Option<FanoutResult>,
    pub list: Option<ListResult>,
    pub reopen: Option<ReopenResult>,
}

fn pass(ok: bool) -> &'static str {
    if ok { "pass" } else { "**FAIL**" }
}

fn int(x: f64) -> String {
    let s = format!("{:.0}", x);
    let neg = s.starts_with('-');
    let digits: Vec<char> = s.trim_start_matches('-').chars().collect();
    let mut out = String::new();
    for (i, c) in digits.iter().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(*c);
    }
    if neg { format!("-{out}") } else { out }
}

impl Results {
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let m = &self.machine;
        let _ = writeln!(
            s,
            "# logbook bench store{}\n",
            if self.quick { " (--quick)" } else { "" }
        );
        let _ = writeln!(
            s,
            "Source: {}. Machine: {} cores, {}, Linux {}. Load average (1/5/15 min) at start {}, at end {}. Objects: {} bytes, resource `pods`, distinct names.\n",
            m.source,
            m.cores,
            m.cpu_model,
            m.kernel,
            m.loadavg_start,
            m.loadavg_end,
            self.object_bytes
        );

        if !self.appends.is_empty() {
            let _ = writeln!(
                s,
                "## Durable appends (one event per transaction, acknowledged after fsync)\n"
            );
            let etcd = self.etcd.as_ref();
            let _ = writeln!(
                s,
                "| writers | names | Logbook appends/s | p50 ms | p99 ms | etcd puts/s | etcd p50 ms | etcd p99 ms | Logbook / etcd |"
            );
            let _ = writeln!(
                s,
                "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
            );
            for a in &self.appends {
                let names = a.names.map_or("-", Names::as_str);
                let (e_rate, e_p50, e_p99, ratio) =
                    match etcd.and_then(|e| e.levels.iter().find(|l| l.writers == a.writers)) {
                        Some(e) => (
                            int(e.per_sec),
                            format!("{:.2}", e.p50_ms),
                            format!("{:.2}", e.p99_ms),
                            format!("{:.2}x", a.per_sec / e.per_sec),
                        ),
                        None => ("-".into(), "-".into(), "-".into(), "-".into()),
                    };
                let _ = writeln!(
                    s,
                    "| {} | {names} | {} | {:.2} | {:.2} | {e_rate} | {e_p50} | {e_p99} | {ratio} |",
                    a.writers,
                    int(a.per_sec),
                    a.p50_ms,
                    a.p99_ms
                );
            }
            let _ = writeln!(
                s,
                "\nEach row: a fresh store, {:.0} s. Sequential names sort after every existing object (one counter shared by the writers); scattered names land at random places among them, as Kubernetes names with random suffixes do. etcd keys its storage by revision, so its puts do not depend on the names.",
                self.appends[0].seconds.round()
            );
            if let Some(e) = etcd {
                let _ = writeln!(
                    s,
                    "etcd {} on loopback, its own temp data dir, at most {} client connections shared by the writers; each put its own request.",
                    e.version, e.connections_max
                );
            }
            let _ = writeln!(s);
        }

        if let Some(f) = &self.fanout {
            let _ = writeln!(s, "## Watch fan-out\n");
            let _ = writeln!(
                s,
                "| subscribers | events | write rate /s | lag p50 ms | lag p99 ms | lag max ms | complete, once, in order | cut off or errors |"
            );
            let _ = writeln!(
                s,
                "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
            );
            let _ = writeln!(
                s,
                "| {} | {} | {:.0} (target {}) | {:.2} | {:.2} | {:.2} | {} of {} | {} |",
                int(f.subscribers as f64),
                int(f.events as f64),
                f.achieved_rate_per_sec,
                f.target_rate_per_sec,
                f.lag_p50_ms,
                f.lag_p99_ms,
                f.lag_max_ms,
                int(f.subscribers_complete_in_order as f64),
                int(f.subscribers as f64),
                f.subscribers - f.subscribers_complete_in_order
            );
            let _ = writeln!(
                s,
                "\nLag = received minus append acknowledged. From the start of the append (including the durable commit): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms. {} deliveries; missing {}, duplicates {}, out of order {}; {} deliveries arrived before the writer saw the ack (counted as 0).",
                f.lag_from_send_p50_ms,
                f.lag_from_send_p99_ms,
                f.lag_from_send_max_ms,
                int(f.deliveries as f64),
                f.missing,
                f.duplicates,
                f.out_of_order,
                f.delivered_before_ack
            );
            if !f.errors.is_empty() {
                let _ = writeln!(s, "\nSubscriber errors: {}", f.errors.join("; "));
            }
            let _ = writeln!(s);
        }

        if let Some(l) = &self.list {
            let _ = writeln!(
                s,
                "## List of current objects (paginated, {} pages)\n",
                l.pages
            );
            let _ = writeln!(
                s,
                "| objects | total ms (median of {}) | each walk ms | per page ms (median) | slowest page ms |",
                l.walks_total_ms.len()
            );
            let _ = writeln!(s, "| ---: | ---: | ---: | ---: | ---: |");
            let walks: Vec<String> = l.walks_total_ms.iter().map(|w| format!("{w:.0}")).collect();
            let _ = writeln!(
                s,
                "| {} | {:.0} | {} | {:.1} | {:.1} |",
                int(l.objects as f64),
                l.median_total_ms,
                walks.join(", "),
                l.page_median_ms,
                l.page_max_ms
            );
            let _ = writeln!(
                s,
                "\nLoaded with 64 writers at {} appends/s. The walks above read the current-state projection (nothing is written while they run). One more walk with a write to another resource before each page after the first, so those pages read as of the list's position through the revision index: {:.0} ms listing.\n",
                int(l.load_appends_per_sec),
                l.with_writes_total_ms
            );
        }

        if let Some(r) = &self.reopen {
            let _ = writeln!(s, "## Reopen\n");
            let _ = writeln!(
                s,
                "| events in log | data file | Embedded::open ms | EventLog::open ms | verify tail ms | head ms | to serving ms | after kill -9: to serving ms | full verify ms |"
            );
            let _ = writeln!(
                s,
                "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
            );
            let _ = writeln!(
                s,
                "| {} | {:.2} GiB | {:.1} | {:.1} | {:.1} | {:.2} | {:.1} | {:.1} | {} |",
                int(r.events as f64),
                r.data_file_bytes as f64 / (1u64 << 30) as f64,
                r.kv_open_ms,
                r.log_open_ms,
                r.tail_verify_ms,
                r.head_ms,
                r.to_serving_ms,
                r.crash_to_serving_ms,
                int(r.full_verify_ms)
            );
            let _ = writeln!(
                s,
                "\nLoaded with 64 writers at {} appends/s. Tail verify: the newest {} events. Page cache warm (same machine, just written).\n",
                int(r.load_appends_per_sec),
                r.tail_verify_events
            );
        }

        let _ = writeln!(s, "## Floors\n");
        let _ = writeln!(s, "| check | floor | measured | result |");
        let _ = writeln!(s, "| --- | ---: | ---: | --- |");
        for a in self.appends.iter().filter(|a| a.writers == 64) {
            let names = a.names.map_or("-", Names::as_str);
            let _ = writeln!(
                s,
                "| durable appends/s, 64 writers, {names} names | >= {} | {} | {} |",
                int(FLOOR_APPENDS_PER_SEC_AT_64_WRITERS),
                int(a.per_sec),
                pass(a.per_sec >= FLOOR_APPENDS_PER_SEC_AT_64_WRITERS)
            );
            if let Some(e) = self
                .etcd
                .as_ref()
                .and_then(|e| e.levels.iter().find(|l| l.writers == 64))
            {
                let ratio = a.per_sec / e.per_sec;
                let _ = writeln!(
                    s,
                    "| Logbook / etcd, 64 writers, {names} names (goal) | >= {GOAL_ETCD_RATIO_AT_64_WRITERS:.1}x | {ratio:.2}x | {} |",
                    pass(ratio >= GOAL_ETCD_RATIO_AT_64_WRITERS)
                );
            }
        }
        if let Some(f) = &self.fanout {
            let ok = f.lag_p99_ms < FLOOR_FANOUT_LAG_P99_MS
                && f.subscribers_complete_in_order == f.subscribers;
            let _ = writeln!(
                s,
                "| watch lag p99, {} subscribers, every event once in order | < {FLOOR_FANOUT_LAG_P99_MS:.0} ms | {:.2} ms | {} |",
                int(f.subscribers as f64),
                f.lag_p99_ms,
                pass(ok)
            );
        }
        if let Some(l) = &self.list {
            let _ = writeln!(
                s,
                "| list {} objects | < {FLOOR_LIST_100K_TOTAL_MS:.0} ms | {:.0} ms | {} |",
                int(l.objects as f64),
                l.median_total_ms,
                pass(l.median_total_ms < FLOOR_LIST_100K_TOTAL_MS)
            );
        }
        if let Some(r) = &self.reopen {
            let _ = writeln!(
                s,
                "| reopen {} events to serving | < {FLOOR_REOPEN_TO_SERVING_MS:.0} ms | {:.0} ms | {} |",
                int(r.events as f64),
                r.to_serving_ms,
                pass(r.to_serving_ms < FLOOR_REOPEN_TO_SERVING_MS)
            );
            let _ = writeln!(
                s,
                "| reopen {} events to serving after kill -9 | < {FLOOR_REOPEN_TO_SERVING_MS:.0} ms | {:.0} ms | {} |",
                int(r.events as f64),
                r.crash_to_serving_ms,
                pass(r.crash_to_serving_ms < FLOOR_REOPEN_TO_SERVING_MS)
            );
        }
        s
    }
}
