//! `permafrost-sim`: parses the command line and runs it; see the library.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    permafrost_proto::tls::install_crypto_provider();
    let cli = permafrost_simulations::Cli::parse();
    match permafrost_simulations::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(permafrost_simulations::SimError::Interrupted) => {
            eprintln!("permafrost-sim: interrupted; every daemon was stopped");
            std::process::ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("permafrost-sim: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
