//! `permafrost-node`: initialize a signer node, or run it.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use permafrost_node::{config::NodeConfig, init, SignerNode};

#[derive(Parser)]
#[command(name = "permafrost-node", about = "Permafrost signer node", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the data dir, sealer state, identity and TLS keys; print the public info (JSON) for the manifest and CA.
    Init {
        #[arg(long)]
        config: PathBuf,
    },
    /// Run the node until SIGINT/SIGTERM.
    Run {
        #[arg(long)]
        config: PathBuf,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    permafrost_proto::tls::install_crypto_provider();
    permafrost_proto::logging::init();
    let command = Cli::parse().command;
    // Before any secret is read: no core dumps, not dumpable, memory locked if allowed (H2).
    if let Err(e) = permafrost_node::hygiene::harden_process() {
        eprintln!("permafrost-node: refusing to start: {e}");
        return std::process::ExitCode::FAILURE;
    }
    let result = match command {
        Command::Init { config } => NodeConfig::load(&config)
            .and_then(|c| init(&c))
            .map(|info| {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&info).unwrap_or_default()
                )
            }),
        Command::Run { config } => {
            match NodeConfig::load(&config).and_then(|c| Ok((SignerNode::open(&c)?, c.listen))) {
                Ok((node, addr)) => match tokio::net::TcpListener::bind(addr).await {
                    Ok(listener) => {
                        tracing::info!(node = %node.id(), %addr, "serving");
                        node.run(listener, permafrost_proto::logging::shutdown_signal())
                            .await
                            .map_err(permafrost_node::NodeError::Unavailable)
                    }
                    Err(e) => Err(permafrost_node::NodeError::Config(format!(
                        "listen = {addr}: {e}"
                    ))),
                },
                Err(e) => Err(e),
            }
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("permafrost-node: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
