//! Prometheus metrics in the text exposition format: requests by verb/resource/code with
//! latency histograms, open watches, commit latency, the log position.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// Latency bucket bounds in seconds (kube-apiserver's request-duration buckets, trimmed).
const LATENCY_BUCKETS_SECONDS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

#[derive(Default, Clone)]
struct Histogram {
    buckets: [u64; LATENCY_BUCKETS_SECONDS.len()],
    count: u64,
    sum_seconds: f64,
}

impl Histogram {
    fn observe(&mut self, secs: f64) {
        for (i, b) in LATENCY_BUCKETS_SECONDS.iter().enumerate() {
            if secs <= *b {
                self.buckets[i] += 1;
            }
        }
        self.count += 1;
        self.sum_seconds += secs;
    }

    fn write(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, b) in LATENCY_BUCKETS_SECONDS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {}",
                self.buckets[i]
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum_seconds);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

#[derive(Default)]
struct Inner {
    /// By (verb, resource, subresource — empty for the resource itself, code).
    requests: BTreeMap<(String, String, String, u16), Histogram>,
    commit: Histogram,
    retention: Retention,
}

/// What the background compactor and checkpoint writer did (store resource names).
#[derive(Default)]
struct Retention {
    runs: u64,
    failures: u64,
    removed_events: BTreeMap<String, u64>,
    horizons: BTreeMap<String, u64>,
    checkpoints_written: u64,
}

/// Shared metrics of one server. Cheap to clone.
#[derive(Clone, Default)]
pub struct Metrics {
    inner: Arc<Mutex<Inner>>,
    watches: Arc<AtomicI64>,
}

impl Metrics {
    pub fn observe_request(
        &self,
        verb: &str,
        resource: &str,
        subresource: &str,
        code: u16,
        took: Duration,
    ) {
        if let Ok(mut g) = self.inner.lock() {
            g.requests
                .entry((
                    verb.to_string(),
                    resource.to_string(),
                    subresource.to_string(),
                    code,
                ))
                .or_default()
                .observe(took.as_secs_f64());
        }
    }

    pub fn observe_commit(&self, took: Duration) {
        if let Ok(mut g) = self.inner.lock() {
            g.commit.observe(took.as_secs_f64());
        }
    }

    /// One pass of the retention compactor over every resource with a finite window.
    pub fn observe_compaction_run(&self, failed: bool) {
        if let Ok(mut g) = self.inner.lock() {
            g.retention.runs += 1;
            g.retention.failures += u64::from(failed);
        }
    }

    /// One resource compacted: events removed and its horizon now.
    pub fn observe_compaction(&self, resource: &str, removed_events: u64, horizon: u64) {
        if let Ok(mut g) = self.inner.lock() {
            *g.retention
                .removed_events
                .entry(resource.to_string())
                .or_default() += removed_events;
            g.retention.horizons.insert(resource.to_string(), horizon);
        }
    }

    pub fn observe_checkpoints(&self, written: u64) {
        if let Ok(mut g) = self.inner.lock() {
            g.retention.checkpoints_written += written;
        }
    }

    pub fn watch_started(&self) {
        self.watches.fetch_add(1, Ordering::Relaxed);
    }

    pub fn watch_ended(&self) {
        self.watches.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn watches(&self) -> i64 {
        self.watches.load(Ordering::Relaxed)
    }

    /// The exposition text; `log_position` is the current log head.
    pub fn render(&self, log_position: u64) -> String {
        let mut out = String::new();
        let Ok(g) = self.inner.lock() else {
            return out;
        };
        out.push_str("# HELP apiserver_request_total Requests by verb, resource and HTTP code.\n");
        out.push_str("# TYPE apiserver_request_total counter\n");
        let labels = |verb: &str, resource: &str, sub: &str, code: u16| {
            // The subresource label only where there is one (`pods/binding`), as an absent
            // Prometheus label reads as empty.
            if sub.is_empty() {
                format!("verb=\"{verb}\",resource=\"{resource}\",code=\"{code}\"")
            } else {
                format!(
                    "verb=\"{verb}\",resource=\"{resource}\",subresource=\"{sub}\",code=\"{code}\""
                )
            }
        };
        for ((verb, resource, sub, code), h) in &g.requests {
            let _ = writeln!(
                out,
                "apiserver_request_total{{{}}} {}",
                labels(verb, resource, sub, *code),
                h.count
            );
        }
        out.push_str("# HELP apiserver_request_duration_seconds Request latency (watches: until the stream starts).\n");
        out.push_str("# TYPE apiserver_request_duration_seconds histogram\n");
        for ((verb, resource, sub, code), h) in &g.requests {
            h.write(
                &mut out,
                "apiserver_request_duration_seconds",
                &labels(verb, resource, sub, *code),
            );
        }
        out.push_str(
            "# HELP logbook_commit_duration_seconds Durable append latency (fsync included).\n",
        );
        out.push_str("# TYPE logbook_commit_duration_seconds histogram\n");
        g.commit
            .write(&mut out, "logbook_commit_duration_seconds", "");
        let r = &g.retention;
        out.push_str("# HELP logbook_compaction_runs_total Passes of the retention compactor.\n# TYPE logbook_compaction_runs_total counter\n");
        let _ = writeln!(out, "logbook_compaction_runs_total {}", r.runs);
        out.push_str("# HELP logbook_compaction_failures_total Compactor passes that failed for some resource.\n# TYPE logbook_compaction_failures_total counter\n");
        let _ = writeln!(out, "logbook_compaction_failures_total {}", r.failures);
        out.push_str("# HELP logbook_compaction_removed_events_total Events removed by retention, by resource.\n# TYPE logbook_compaction_removed_events_total counter\n");
        for (resource, n) in &r.removed_events {
            let _ = writeln!(
                out,
                "logbook_compaction_removed_events_total{{resource=\"{resource}\"}} {n}"
            );
        }
        out.push_str("# HELP logbook_compaction_horizon The retention horizon (oldest readable resourceVersion), by resource.\n# TYPE logbook_compaction_horizon gauge\n");
        for (resource, h) in &r.horizons {
            let _ = writeln!(
                out,
                "logbook_compaction_horizon{{resource=\"{resource}\"}} {h}"
            );
        }
        out.push_str("# HELP logbook_checkpoints_written_total Checkpoints appended to the log.\n# TYPE logbook_checkpoints_written_total counter\n");
        let _ = writeln!(
            out,
            "logbook_checkpoints_written_total {}",
            r.checkpoints_written
        );
        out.push_str("# HELP logbook_watches Open watch streams.\n# TYPE logbook_watches gauge\n");
        let _ = writeln!(out, "logbook_watches {}", self.watches());
        out.push_str("# HELP logbook_log_position The log head (the newest resourceVersion).\n# TYPE logbook_log_position gauge\n");
        let _ = writeln!(out, "logbook_log_position {log_position}");
        out
    }
}
