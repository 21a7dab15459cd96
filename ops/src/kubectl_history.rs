//! `kubectl-history`: the kubectl plugin. kubectl runs it for `kubectl history …` when it is
//! on PATH; it is `logbook history` under another name (the code is `history_cli.rs`).

#[path = "history_cli.rs"]
mod history_cli;

use clap::Parser;

/// The command line (kubectl passes everything after `history`).
#[derive(Debug, Parser)]
#[command(
    name = "kubectl-history",
    bin_name = "kubectl history",
    version,
    about = "Every revision of an object, who made it, and the cluster as of any moment (Logbook's history API)."
)]
struct Cli {
    #[command(flatten)]
    args: history_cli::HistoryArgs,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // Like kubectl, the plugin finds its cluster through the kubeconfig only.
    match history_cli::main(Cli::parse().args, None).await {
        0 => std::process::ExitCode::SUCCESS,
        _ => std::process::ExitCode::FAILURE,
    }
}
