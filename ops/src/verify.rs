//! `logbook verify`: an offline check of a store's log and projections, with progress.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use logbook_store::{EmbeddedConfig, VerifyScope};

use crate::cli::VerifyArgs;

/// How often progress is printed while verifying.
const VERIFY_PROGRESS_INTERVAL_MS: u64 = 1_000;

/// Opens the store in `data_dir` for an offline tool (the server must be stopped).
///
/// # Errors
/// No store there, or the store refuses to open.
pub async fn open_stopped(
    data_dir: &std::path::Path,
) -> Result<(logbook_store::Embedded, logbook_store::EventLog)> {
    anyhow::ensure!(
        data_dir
            .join(logbook_store::kv::embedded::DATA_FILE_NAME)
            .exists(),
        "{} holds no Logbook store",
        data_dir.display()
    );
    let kv = logbook_store::Embedded::open(EmbeddedConfig::new(data_dir))
        .with_context(|| format!("opening {}", data_dir.display()))?;
    let log = logbook_store::EventLog::open(
        std::sync::Arc::new(kv.clone()),
        logbook_store::LogConfig::default(),
    )
    .await?;
    Ok((kv, log))
}

/// What one verification saw, for the summary table.
pub struct Summary {
    pub report: logbook_store::VerifyReport,
    pub elapsed: Duration,
}

impl Summary {
    pub fn events_per_second(&self) -> f64 {
        self.report.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The summary table (Markdown, readable in a terminal).
    pub fn table(&self) -> String {
        format!(
            "| events | objects | checkpoints | head | elapsed | events/s |\n|---:|---:|---:|---:|---:|---:|\n| {} | {} | {} | {} | {:.2} s | {:.0} |\n",
            self.report.events,
            self.report.objects,
            self.report.checkpoints,
            self.report.head,
            self.elapsed.as_secs_f64(),
            self.events_per_second()
        )
    }
}

/// Verifies the store of `log` within `scope`, printing progress (events checked, events/s)
/// to stderr at least every [`VERIFY_PROGRESS_INTERVAL_MS`].
///
/// # Errors
/// The first broken link, as the store names it (position and object, or checkpoint).
pub async fn verify_with_progress(
    log: &logbook_store::EventLog,
    scope: VerifyScope,
) -> Result<Summary> {
    let started = Instant::now();
    let mut last = Instant::now();
    let report = log
        .verify(scope, |events| {
            if last.elapsed() >= Duration::from_millis(VERIFY_PROGRESS_INTERVAL_MS) {
                let secs = started.elapsed().as_secs_f64().max(1e-9);
                eprintln!(
                    "verify: {events} events checked, {:.0} events/s",
                    events as f64 / secs
                );
                last = Instant::now();
            }
        })
        .await
        .context("verification failed: the store is damaged or was altered")?;
    Ok(Summary {
        report,
        elapsed: started.elapsed(),
    })
}

/// `logbook verify` and `logbook audit verify`: one code path.
pub async fn run(args: VerifyArgs) -> Result<()> {
    let scope = match args.tail {
        Some(n) => VerifyScope::Tail(n),
        None => VerifyScope::Full,
    };
    let (kv, log) = open_stopped(&args.data_dir).await?;
    let result = verify_with_progress(&log, scope).await;
    drop(log);
    kv.close();
    let summary = result?;
    println!(
        "verified {} events up to position {} in {:.1} s: checksums, event hashes, hash chains{}",
        summary.report.events,
        summary.report.head,
        summary.elapsed.as_secs_f64(),
        if scope == VerifyScope::Full {
            ", checkpoints, current state"
        } else {
            ""
        }
    );
    print!("{}", summary.table());
    Ok(())
}
