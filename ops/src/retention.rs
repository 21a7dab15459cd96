//! Retention policy and the background tasks `logbook serve` runs for it: the compactor
//! (per-resource windows) and the checkpoint writer (tamper evidence).
//!
//! A policy names resources as kubectl does, `PLURAL[.GROUP]` (`leases.coordination.k8s.io`,
//! `events`, `events.events.k8s.io`), and is keyed internally by the store's resource
//! string, `GROUP/PLURAL` or `PLURAL` for the core group (`ResourceInfo::store_resource`, the
//! string the API passes to the store in every `ObjectKey`).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Result, bail};
use logbook_api::Metrics;
use logbook_store::{CompactTo, EventLog};

/// How often the compactor runs by default (`--retention-interval`).
pub const RETENTION_COMPACT_INTERVAL_MS: u64 = 60_000;
/// How often checkpoints are written by default (`--checkpoint-interval`), for every
/// resource with events since its last checkpoint. Retention only removes events below a
/// resource's newest checkpoint at or below its horizon, so this also bounds how far removal
/// lags behind a window.
pub const CHECKPOINT_INTERVAL_MS: u64 = 10_000;
/// The window of Leases and Events unless configured: kube-apiserver keeps Events 1 h, and
/// Lease renewals are high-volume, low-value history.
pub const SHORT_RETENTION_WINDOW_MS: u64 = 3_600_000;

/// Per-resource windows; a resource not named keeps every revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Store resource string → window (`None`: forever).
    pub windows: BTreeMap<String, Option<Duration>>,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        let short = Some(Duration::from_millis(SHORT_RETENTION_WINDOW_MS));
        RetentionPolicy {
            windows: [
                ("coordination.k8s.io/leases", short),
                ("events", short),
                ("events.k8s.io/events", short),
            ]
            .into_iter()
            .map(|(r, w)| (r.to_string(), w))
            .collect(),
        }
    }
}

impl RetentionPolicy {
    /// The default policy with `RESOURCE=DURATION` overrides applied in order.
    ///
    /// # Errors
    /// A malformed entry, named.
    pub fn from_args(entries: &[String]) -> Result<Self> {
        let mut p = RetentionPolicy::default();
        for entry in entries {
            let Some((resource, duration)) = entry.split_once('=') else {
                bail!(
                    "--retention {entry:?}: expected RESOURCE=DURATION (e.g. leases.coordination.k8s.io=1h)"
                );
            };
            let resource = store_resource(resource.trim())
                .map_err(|e| anyhow::anyhow!("--retention {entry:?}: {e}"))?;
            let window = parse_window(duration.trim())
                .map_err(|e| anyhow::anyhow!("--retention {entry:?}: {e}"))?;
            p.windows.insert(resource, window);
        }
        Ok(p)
    }
}

/// `leases.coordination.k8s.io` → `coordination.k8s.io/leases`; `events` → `events`.
pub fn store_resource(name: &str) -> Result<String> {
    let valid = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    };
    if !valid(name) {
        bail!("{name:?} is not a resource name like leases.coordination.k8s.io or events");
    }
    Ok(match name.split_once('.') {
        Some((plural, group)) if !plural.is_empty() && !group.is_empty() => {
            format!("{group}/{plural}")
        }
        Some(_) => bail!("{name:?} is not a resource name like leases.coordination.k8s.io"),
        None => name.to_string(),
    })
}

/// `forever`, or a number with a unit: `ms`, `s`, `m`, `h`, `d` (`90s`, `30m`, `1h`).
pub fn parse_window(s: &str) -> Result<Option<Duration>> {
    if s == "forever" {
        return Ok(None);
    }
    Ok(Some(parse_duration(s)?))
}

/// A number with a unit: `ms`, `s`, `m`, `h`, `d`.
pub fn parse_duration(s: &str) -> Result<Duration> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let (n, unit) = s.split_at(digits);
    let Ok(n) = n.parse::<u64>() else {
        bail!("{s:?} is not a duration like 30m, 1h or forever");
    };
    let ms_per = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => bail!("{s:?}: the unit must be ms, s, m, h or d"),
    };
    let Some(ms) = n.checked_mul(ms_per) else {
        bail!("{s:?} is too long");
    };
    Ok(Duration::from_millis(ms))
}

fn now_unix_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// One compactor pass: every resource with a finite window is compacted to its newest
/// event older than the window.
pub async fn compact_once(log: &EventLog, policy: &RetentionPolicy, metrics: &Metrics) {
    let mut failed = false;
    for (resource, window) in &policy.windows {
        let Some(window) = window else { continue };
        let cutoff_unix_nanos = now_unix_nanos().saturating_sub(window.as_nanos() as i64);
        match log
            .compact_resource(resource, CompactTo::OlderThan { cutoff_unix_nanos }, |_| {})
            .await
        {
            Ok(report) => {
                metrics.observe_compaction(resource, report.removed_events, report.horizon.0);
                if report.removed_events > 0 {
                    tracing::info!(
                        resource,
                        removed = report.removed_events,
                        kept = report.kept_events,
                        horizon = %report.horizon,
                        "retention: compacted"
                    );
                }
            }
            Err(e) => {
                failed = true;
                tracing::warn!(resource, error = %e, "retention: compaction failed; retrying next pass");
            }
        }
    }
    metrics.observe_compaction_run(failed);
}

/// Starts the compactor and the checkpoint writer; they run until the process exits.
pub fn spawn_tasks(
    log: EventLog,
    policy: RetentionPolicy,
    compact_interval: Duration,
    checkpoint_interval: Duration,
    metrics: Metrics,
) {
    let (_keep, forever) = tokio::sync::watch::channel(false);
    spawn_tasks_until(
        log,
        policy,
        compact_interval,
        checkpoint_interval,
        metrics,
        forever,
    );
    // The sender is dropped here: `changed()` then never resolves, and the tasks run for
    // the life of the process.
}

/// [`spawn_tasks`], stopping when `stop` becomes true (leadership lost, shutdown).
pub fn spawn_tasks_until(
    log: EventLog,
    policy: RetentionPolicy,
    compact_interval: Duration,
    checkpoint_interval: Duration,
    metrics: Metrics,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let (clog, cmetrics, mut cstop) = (log.clone(), metrics.clone(), stop.clone());
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(checkpoint_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if !tick_or_stop(&mut tick, &mut cstop).await {
                return;
            }
            match clog.write_checkpoints().await {
                Ok(n) => cmetrics.observe_checkpoints(n),
                Err(e) => tracing::warn!(error = %e, "checkpoints: writing failed; retrying"),
            }
        }
    });
    if policy.windows.values().all(Option::is_none) {
        return;
    }
    let mut stop = stop;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(compact_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if !tick_or_stop(&mut tick, &mut stop).await {
                return;
            }
            compact_once(&log, &policy, &metrics).await;
        }
    });
}

/// Waits for the next tick; `false` when `stop` became true first. A closed `stop` channel
/// (its sender gone) never stops the tasks.
async fn tick_or_stop(
    tick: &mut tokio::time::Interval,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> bool {
    if *stop.borrow() {
        return false;
    }
    tokio::select! {
        _ = tick.tick() => true,
        changed = stop.changed() => match changed {
            Ok(()) => !*stop.borrow(),
            // The sender is gone: run on (and wait for the tick that was interrupted).
            Err(_) => {
                tick.tick().await;
                true
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_entries_name_resources_as_kubectl_does_and_map_to_store_names() {
        /// An entry, and the store resource and window in ms it means (`Err`: refused).
        type Case<'a> = (&'a str, Result<(&'a str, Option<u64>), ()>);
        let cases: &[Case] = &[
            (
                "leases.coordination.k8s.io=2s",
                Ok(("coordination.k8s.io/leases", Some(2_000))),
            ),
            ("events=30m", Ok(("events", Some(1_800_000)))),
            (
                "events.events.k8s.io=forever",
                Ok(("events.k8s.io/events", None)),
            ),
            (
                "deployments.apps=1d",
                Ok(("apps/deployments", Some(86_400_000))),
            ),
            ("pods", Err(())),
            ("pods=1y", Err(())),
            ("Pods=1h", Err(())),
            (".apps=1h", Err(())),
            ("pods=h", Err(())),
        ];
        for (entry, want) in cases {
            let got = RetentionPolicy::from_args(&[entry.to_string()]);
            match want {
                Ok((resource, ms)) => {
                    let p = got.unwrap_or_else(|e| panic!("{entry}: {e}"));
                    assert_eq!(
                        p.windows.get(*resource).copied(),
                        Some(ms.map(Duration::from_millis)),
                        "{entry}"
                    );
                }
                Err(()) => assert!(got.is_err(), "{entry} should be refused"),
            }
        }
    }

    #[test]
    fn the_default_keeps_everything_but_leases_and_events_for_an_hour() {
        let p = RetentionPolicy::default();
        let hour = Some(Duration::from_secs(3600));
        assert_eq!(p.windows.get("coordination.k8s.io/leases"), Some(&hour));
        assert_eq!(p.windows.get("events"), Some(&hour));
        assert_eq!(p.windows.get("events.k8s.io/events"), Some(&hour));
        assert_eq!(p.windows.len(), 3);
    }
}
