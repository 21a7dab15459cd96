//! The command line: `logbook <command> ...`, parsed with clap's derive API.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "logbook",
    version,
    about = "Logbook: a Kubernetes-compatible control plane whose state is an append-only event log."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a stopped store: every log record's checksum and hash-chain link, and that the
    /// current state is the newest revision of every object. Exits non-zero naming the first
    /// damaged record.
    Verify(VerifyArgs),
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        target: BenchTarget,
    },
}

#[derive(Debug, Subcommand)]
pub enum BenchTarget {
    /// The committed store benchmark: durable appends, watch fan-out, list, reopen (and etcd
    /// side by side with --etcd). Progress goes to stderr, the Markdown results to stdout.
    Store(BenchStoreArgs),
}

#[derive(Debug, Clone, Args)]
pub struct BenchStoreArgs {
    /// Smoke run: shorter phases and 100,000 events instead of 1,000,000 for the reopen phase.
    #[arg(long)]
    pub quick: bool,
    /// Directory for results.md and results.json (created if missing).
    #[arg(long, default_value = "bench-out")]
    pub out: PathBuf,
    /// Also start a local etcd and measure its puts/s side by side (needs the `etcd` feature).
    #[arg(long)]
    pub etcd: bool,
    /// The etcd server binary (Debian's etcd-server installs /usr/bin/etcd).
    #[arg(long, default_value = "etcd")]
    pub etcd_bin: PathBuf,
    /// Run only these phases (comma separated); all of them by default.
    #[arg(long, value_delimiter = ',', value_enum)]
    pub only: Vec<Phase>,
    /// Where the temporary data directories go (default: the system temp dir). They are
    /// deleted at the end.
    #[arg(long)]
    pub tmp_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Phase {
    Append,
    Fanout,
    List,
    Reopen,
}

#[derive(Debug, Clone, Args)]
pub struct VerifyArgs {
    /// The data directory (as given to `logbook serve`).
    #[arg(long, default_value = "logbook-data")]
    pub data_dir: PathBuf,
    /// Check only the newest N events of the log instead of all of it (what startup does).
    #[arg(long)]
    pub tail: Option<usize>,
}
