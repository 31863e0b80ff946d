//! `permafrost-coordinator run --config FILE`: the coordinator daemon ([`permafrost_coordinator::cli`]).

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    permafrost_coordinator::cli::run(permafrost_coordinator::cli::Cli::parse()).await
}
