//! `permafrost-coordinator run --config FILE`: the coordinator daemon.

use clap::{Parser, Subcommand};
use permafrost_coordinator::{config::CoordinatorConfig, Coordinator};
use permafrost_proto::daemon::{self, DaemonArgs, Listeners};

#[derive(Parser)]
#[command(
    name = "permafrost-coordinator",
    about = "Permafrost coordinator (untrusted for safety)",
    version
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    args: DaemonArgs,
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
    let Cli { command, args } = Cli::parse();
    let Command::Run { config } = command;
    daemon::main("permafrost-coordinator", &args, async move {
        let config = CoordinatorConfig::load(&config)?;
        let listeners = Listeners::bind(config.listen, &config.admin).await?;
        Coordinator::open(config)?
            .serve(listeners, daemon::shutdown_signal())
            .await
    })
    .await
}
