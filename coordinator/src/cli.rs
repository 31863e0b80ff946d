//! The `permafrost-coordinator` command line (`run --config FILE`). The
//! binary's `main` only parses it and hands it to [`run`].

use clap::{Parser, Subcommand};
use permafrost_proto::daemon::{self, DaemonArgs, Listeners};

use crate::{config::CoordinatorConfig, Coordinator};

/// `permafrost-coordinator`'s arguments.
#[derive(Parser)]
#[command(
    name = "permafrost-coordinator",
    about = "Permafrost coordinator (untrusted for safety)",
    version
)]
pub struct Cli {
    #[command(subcommand)]
    /// The subcommand.
    pub command: Command,
    /// Logging and the other flags every daemon takes.
    #[command(flatten)]
    pub args: DaemonArgs,
}

/// What to do.
#[derive(Subcommand)]
pub enum Command {
    /// Run until SIGINT/SIGTERM.
    Run {
        /// The daemon's config file (TOML).
        #[arg(long)]
        config: std::path::PathBuf,
    },
}

/// Runs the parsed command line; the process exit code.
pub async fn run(cli: Cli) -> std::process::ExitCode {
    let Cli { command, args } = cli;
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
