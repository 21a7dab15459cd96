//! `logbook`: the one binary. Wires the crates together; owns configuration and the CLI.

mod bench_store;
mod cli;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use crate::cli::{BenchTarget, Cli, Command};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Bench {
            target: BenchTarget::Store(args),
        } => bench_store::run(args).await,
    }
}
