//! `permafrost-node`: initialize a signer node, or run it.

use clap::{Parser, Subcommand};
use permafrost_node::{
    config::NodeConfig, hygiene, init_and_print, unseal_passphrase_from, SignerNode,
};
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
        /// With `[seal] manual = true`: the file holding the unseal passphrase, set now and
        /// only now (keep it off the node afterwards).
        #[arg(long, value_name = "FILE")]
        unseal_passphrase_file: Option<std::path::PathBuf>,
        /// With `[seal] manual = true`: the environment variable holding the unseal passphrase.
        #[arg(long, value_name = "VAR")]
        unseal_passphrase_env: Option<String>,
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
            Command::Init {
                config,
                unseal_passphrase_file,
                unseal_passphrase_env,
            } => {
                let unseal = unseal_passphrase_from(unseal_passphrase_file, unseal_passphrase_env)?;
                init_and_print(
                    &NodeConfig::load(&config)?,
                    unseal.as_deref().map(|s| s.as_str()),
                )
            }
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
