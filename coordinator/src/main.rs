//! `permafrost-coordinator run --config FILE`: the coordinator daemon.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use permafrost_coordinator::{config::CoordinatorConfig, Coordinator};

#[derive(Parser)]
#[command(
    name = "permafrost-coordinator",
    about = "Permafrost coordinator (untrusted for safety)",
    version
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run until SIGINT/SIGTERM.
    Run {
        #[arg(long)]
        config: PathBuf,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    permafrost_proto::tls::install_crypto_provider();
    permafrost_proto::logging::init();
    let Command::Run { config } = Cli::parse().command;
    let result = async {
        let config = CoordinatorConfig::load(&config).map_err(|e| e.to_string())?;
        let addr = config.listen;
        let coord = Coordinator::open(config).map_err(|e| e.to_string())?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("listen = {addr}: {e}"))?;
        tracing::info!(%addr, "coordinator serving");
        coord
            .run(listener, permafrost_proto::logging::shutdown_signal())
            .await
    }
    .await;
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("permafrost-coordinator: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
