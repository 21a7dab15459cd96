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

pub async fn run(args: VerifyArgs) -> Result<()> {
    let scope = match args.tail {
        Some(n) => VerifyScope::Tail(n),
        None => VerifyScope::Full,
    };
    let started = Instant::now();
    let (kv, log) = open_stopped(&args.data_dir).await?;
    let mut last = Instant::now();
    let report = log
        .verify(scope, |events| {
            if last.elapsed() >= Duration::from_millis(VERIFY_PROGRESS_INTERVAL_MS) {
                eprintln!("verify: {events} events checked");
                last = Instant::now();
            }
        })
        .await
        .context("the store is damaged")?;
    drop(log);
    kv.close();
    println!(
        "verified {} events up to position {} in {:.1} s: checksums, hash chains{}",
        report.events,
        report.head,
        started.elapsed().as_secs_f64(),
        if scope == VerifyScope::Full {
            ", current state"
        } else {
            ""
        }
    );
    Ok(())
}
