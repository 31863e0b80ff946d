//! `permafrost-node`: initialize a signer node, or run it ([`permafrost_node::cli`]).

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    permafrost_node::cli::run(permafrost_node::cli::Cli::parse()).await
}
