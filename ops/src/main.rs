//! `logbook`: the one binary. Wires the crates together; owns configuration and the CLI.

mod bench_api;
mod bench_audit;
mod bench_auth;
mod bench_crd;
mod bench_fairness;
mod bench_history;
mod bench_pods;
mod bench_scale;
mod bench_store;
mod bench_workloads;
mod cli;
mod compact;
mod components;
mod encryption;
mod history_cli;
mod inproc;
mod pki;
mod retention;
mod secrets;
mod serve;
mod verify;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use crate::cli::{AuditAction, BenchTarget, Cli, Command, SecretsAction, UserAction};

// The store allocates many short-lived buffers per request (keys, decoded records); mimalloc
// measured faster than glibc's malloc for that pattern (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_decommits` (`include/mimalloc.h`, enum `mi_option_e`).
const MI_OPTION_PURGE_DECOMMITS: libmimalloc_sys::mi_option_t = 5;

/// Freed memory is purged with `MADV_FREE` (the kernel takes it back when it needs it)
/// instead of being decommitted: a watch fan-out frees and reallocates TLS and chunk buffers
/// all the time, and decommitted pages come back through page faults that zero them
/// (`clear_page_erms` was the top kernel symbol). Measured in BENCHMARKS.md: watch lag p99
/// 109–146 ms → 91–97 ms with 1,000 watches. RSS keeps freed pages until the kernel needs
/// them.
#[allow(unsafe_code)]
fn tune_allocator() {
    // SAFETY: mi_option_set only stores an integer in mimalloc's option table; any value is
    // valid for this option, and it may be called at any time from any thread.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DECOMMITS, 0) };
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tune_allocator();
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
            target: BenchTarget::Auth(args),
        } => bench_auth::run(args).await,
        Command::Bench {
            target: BenchTarget::Fairness(args),
        } => bench_fairness::run(args).await,
        Command::Bench {
            target: BenchTarget::History(args),
        } => bench_history::run(args).await,
        Command::Bench {
            target: BenchTarget::Audit(args),
        } => bench_audit::run(args).await,
        Command::Bench {
            target: BenchTarget::Workloads(args),
        } => bench_workloads::run(args).await,
        Command::Bench {
            target: BenchTarget::Scale(args),
        } => bench_scale::run(args).await,
        Command::Bench {
            target: BenchTarget::PodStartup(args),
        } => bench_pods::run(args).await,
        Command::Verify(args) => verify::run(args).await,
        Command::Fence(args) => serve::fence(args).await,
        Command::Audit {
            action: AuditAction::Verify(args),
        } => verify::run(args).await,
        Command::Serve(args) => serve::run(*args).await,
        Command::Controllers(args) => components::run_controllers(args).await,
        Command::Scheduler(args) => components::run_scheduler(args).await,
        Command::Node(args) => components::run_node(args).await,
        Command::Compact(args) => compact::run(args).await,
        Command::History(args) => {
            match history_cli::main(*args, Some(std::path::Path::new("logbook-data"))).await {
                0 => Ok(()),
                code => std::process::exit(code),
            }
        }
        Command::Secrets {
            action: SecretsAction::Reencrypt(args),
        } => secrets::reencrypt(args).await,
        Command::Secrets {
            action: SecretsAction::KeyUsage(args),
        } => secrets::key_usage(args).await,
        Command::User {
            action: UserAction::Add(args),
        } => {
            let path = pki::add_user(&args.data_dir, &args.name, &args.group, args.out)?;
            println!("user {} added; kubeconfig: {}", args.name, path.display());
            Ok(())
        }
    }
}
