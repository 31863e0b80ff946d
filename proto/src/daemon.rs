//! What every daemon's `main` shares: the crypto provider, logging, binding
//! the listen addresses, shutdown on SIGINT/SIGTERM, and the exit code. A
//! daemon's `main` parses its command line and hands its `run` to [`main`].

use std::fmt::Display;
use std::future::Future;
use std::net::SocketAddr;
use std::process::ExitCode;

use tokio::net::TcpListener;

pub use crate::logging::LogFormat;
use crate::metrics::AdminConfig;

/// Command-line flags every daemon takes, before or after its subcommand.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct DaemonArgs {
    /// Log format on stderr. Default: `json` when PERMAFROST_LOG_JSON=1, else `text`.
    #[arg(long, global = true, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
}

/// Runs a daemon body after process set-up; prints `name: error` and exits
/// non-zero if it fails.
pub async fn main<E: Display>(
    name: &str,
    args: &DaemonArgs,
    body: impl Future<Output = Result<(), E>>,
) -> ExitCode {
    crate::tls::install_crypto_provider();
    crate::logging::init_with(args.log_format);
    match body.await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Binds the listen address; the error names the setting and the address.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, crate::ProtoError> {
    let listener = bind_setting("listen", addr).await?;
    tracing::info!(%addr, "serving");
    Ok(listener)
}

async fn bind_setting(field: &str, addr: SocketAddr) -> Result<TcpListener, crate::ProtoError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| crate::ProtoError::InvalidConfig {
            field: field.into(),
            reason: format!("{addr}: {e}"),
        })?;
    Ok(listener)
}

/// The sockets a daemon serves on: its gRPC port, and its admin (metrics)
/// port when the config has one.
#[derive(Debug)]
pub struct Listeners {
    /// mTLS gRPC.
    pub grpc: TcpListener,
    /// Plain-HTTP Prometheus metrics (`admin.metrics_listen`).
    pub metrics: Option<TcpListener>,
}

impl Listeners {
    /// Just a gRPC listener (tests, and daemons without an admin listener).
    pub fn grpc(grpc: TcpListener) -> Self {
        Self {
            grpc,
            metrics: None,
        }
    }

    /// Binds `listen` and, if configured, `admin.metrics_listen`.
    pub async fn bind(listen: SocketAddr, admin: &AdminConfig) -> Result<Self, crate::ProtoError> {
        admin.validate()?;
        let grpc = bind(listen).await?;
        let metrics = match admin.metrics_listen {
            Some(addr) => Some(bind_setting("admin.metrics_listen", addr).await?),
            None => None,
        };
        Ok(Self { grpc, metrics })
    }
}

/// Resolves on SIGINT or SIGTERM.
pub use crate::logging::shutdown_signal;
