//! `permafrost-liar`: a test-only lying signer node for chaos runs; see
//! `permafrost_simulations::chaos::liar`. Never deploy it.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    permafrost_proto::tls::install_crypto_provider();
    let args = permafrost_simulations::chaos::liar::LiarArgs::parse();
    match permafrost_simulations::chaos::liar::run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("permafrost-liar: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
