//! The `permafrost-node` command line: `init` a signer node, or `run` it.
//! The binary's `main` only parses it and hands it to [`run`].

use clap::{Parser, Subcommand};
use permafrost_proto::daemon::{self, DaemonArgs, Listeners};

use crate::{config::NodeConfig, hygiene, init_and_print, unseal_passphrase_from, SignerNode};

/// `permafrost-node`'s arguments.
#[derive(Parser)]
#[command(name = "permafrost-node", about = "Permafrost signer node", version)]
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
    /// Create the data dir, sealer state, identity and TLS keys; print the public info (JSON) for the manifest and CA.
    Init {
        /// The daemon's config file (TOML).
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
        /// The daemon's config file (TOML).
        #[arg(long)]
        config: std::path::PathBuf,
    },
}

/// Runs the parsed command line; the process exit code.
pub async fn run(cli: Cli) -> std::process::ExitCode {
    let Cli { command, args } = cli;
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
