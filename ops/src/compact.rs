//! `logbook compact`: move a stopped store's retention horizon forward (offline), removing
//! history below it while keeping every object's state at the horizon. Reads below the
//! horizon then answer 410 Expired, as Kubernetes answers compacted resourceVersions.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use logbook_store::Position;

use crate::cli::CompactArgs;

/// How often progress is printed while compacting.
const COMPACT_PROGRESS_INTERVAL_MS: u64 = 1_000;

pub async fn run(args: CompactArgs) -> Result<()> {
    let started = Instant::now();
    let (kv, log) = crate::verify::open_stopped(&args.data_dir).await?;
    let horizon = match args.to {
        Some(rv) => {
            Position::parse(&rv).with_context(|| format!("{rv:?} is not a resourceVersion"))?
        }
        None => log.head().await?,
    };
    let mut last = Instant::now();
    let report = log
        .compact(horizon, |events| {
            if last.elapsed() >= Duration::from_millis(COMPACT_PROGRESS_INTERVAL_MS) {
                eprintln!("compact: {events} events examined");
                last = Instant::now();
            }
        })
        .await?;
    drop(log);
    kv.close();
    println!(
        "compacted to {} in {:.1} s: {} events removed, {} kept as the state at the horizon",
        report.horizon,
        started.elapsed().as_secs_f64(),
        report.removed_events,
        report.kept_events
    );
    Ok(())
}
