//! `logbook`: the one binary. Wires the crates together; owns configuration and the CLI.

mod bench_api;
mod bench_audit;
mod bench_crd;
mod bench_history;
mod bench_store;
mod cli;
mod compact;
mod history_cli;
mod pki;
mod retention;
mod serve;
mod verify;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use crate::cli::{AuditAction, BenchTarget, Cli, Command, UserAction};

// The store allocates many short-lived buffers per request (keys, decoded records); mimalloc
// measured faster than glibc's malloc for that pattern (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
        Command::Bench {
            target: BenchTarget::Api(args),
        } => bench_api::run(args).await,
        Command::Bench {
            target: BenchTarget::Crd(args),
        } => bench_crd::run(args).await,
        Command::Bench {
            target: BenchTarget::History(args),
        } => bench_history::run(args).await,
        Command::Bench {
            target: BenchTarget::Audit(args),
        } => bench_audit::run(args).await,
        Command::Verify(args) => verify::run(args).await,
        Command::Audit {
            action: AuditAction::Verify(args),
        } => verify::run(args).await,
        Command::Serve(args) => serve::run(args).await,
        Command::Compact(args) => compact::run(args).await,
        Command::History(args) => {
            match history_cli::main(*args, Some(std::path::Path::new("logbook-data"))).await {
                0 => Ok(()),
                code => std::process::exit(code),
            }
        }
        Command::User {
            action: UserAction::Add(args),
        } => {
            let path = pki::add_user(&args.data_dir, &args.name, &args.group, args.out)?;
            println!("user {} added; kubeconfig: {}", args.name, path.display());
            Ok(())
        }
    }
}
