//! `permafrostctl`: parses the command line and runs it; see the library for the commands.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    permafrost_proto::tls::install_crypto_provider();
    let cli = permafrostctl::Cli::parse();
    match permafrostctl::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("permafrostctl: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
