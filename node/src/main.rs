//! `permafrost-node`: initialize a signer node, or run it.

use clap::{Parser, Subcommand};
use permafrost_node::{config::NodeConfig, hygiene, init_and_print, SignerNode};
use permafrost_proto::daemon::{self, DaemonArgs, Listeners};

#[derive(Parser)]
#[command(name = "permafrost-node", about = "Permafrost signer node", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    args: DaemonArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Create the data dir, sealer state, identity and TLS keys; print the public info (JSON) for the manifest and CA.
    Init {
        #[arg(long)]
        config: std::path::PathBuf,
    },
    /// Run the node until SIGINT/SIGTERM.
    Run {
        #[arg(long)]
        config: std::path::PathBuf,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let Cli { command, args } = Cli::parse();
    daemon::main("permafrost-node", &args, async move {
        // Before any secret is read: no core dumps, not dumpable, memory locked if allowed (H2).
        hygiene::harden_process()?;
        match command {
            Command::Init { config } => init_and_print(&NodeConfig::load(&config)?),
            Command::Run { config } => {
                let config = NodeConfig::load(&config)?;
                let listeners = Listeners::bind(config.listen, &config.admin).await?;
                let node = SignerNode::open(&config)?;
                node.serve(listeners, daemon::shutdown_signal()).await
            }
        }
    })
    .await
}
