//! `permafrost-coordinator run --config FILE`: the coordinator daemon.

use clap::{Parser, Subcommand};
use permafrost_coordinator::{config::CoordinatorConfig, Coordinator};
use permafrost_proto::daemon;

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
        config: std::path::PathBuf,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let Command::Run { config } = Cli::parse().command;
    daemon::main("permafrost-coordinator", async move {
        let config = CoordinatorConfig::load(&config)?;
        let listener = daemon::bind(config.listen).await?;
        Coordinator::open(config)?
            .run(listener, daemon::shutdown_signal())
            .await
    })
    .await
}
