//! What every daemon's `main` shares: the crypto provider, logging, binding
//! the listen address, shutdown on SIGINT/SIGTERM, and the exit code. A
//! daemon's `main` parses its command line and hands its `run` to [`main`].

use std::fmt::Display;
use std::future::Future;
use std::net::SocketAddr;
use std::process::ExitCode;

/// Runs a daemon body after process set-up; prints `name: error` and exits
/// non-zero if it fails.
pub async fn main<E: Display>(name: &str, body: impl Future<Output = Result<(), E>>) -> ExitCode {
    crate::tls::install_crypto_provider();
    crate::logging::init();
    match body.await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Binds the listen address; the error names the setting and the address.
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, crate::ProtoError> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        crate::ProtoError::InvalidConfig {
            field: "listen".into(),
            reason: format!("{addr}: {e}"),
        }
    })?;
    tracing::info!(%addr, "serving");
    Ok(listener)
}

/// Resolves on SIGINT or SIGTERM.
pub use crate::logging::shutdown_signal;
