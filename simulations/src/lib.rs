//! `permafrost-sim`: runs a real Permafrost cluster on this machine — every
//! signer node and the coordinator as its own OS process over mTLS gRPC — for
//! a one-shot demo (`demo`), as a long-running local cluster (`up`), or under
//! seeded chaos with lost, slow, partitioned and lying nodes (`chaos`), or
//! measured against in-process FROST under load (`bench`).

pub mod bench;
pub mod chaos;
pub mod cluster;
pub mod daemons;
pub mod demo;
pub mod layout;
pub mod progress;
pub mod prom_text;
pub mod up;

use std::future::Future;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};
use permafrostctl::CtlError;

/// Errors of the simulations, named for who is at fault.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// Certificates, key files or a call to the coordinator failed.
    #[error(transparent)]
    Ctl(#[from] CtlError),
    /// The local environment is not ready (binaries missing, directory in use, a port not free).
    #[error("{0}")]
    Setup(String),
    /// A file could not be read or written.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// A daemon exited while it should be running.
    #[error("{name} exited ({status}); last lines of {}:\n{tail}", .log.display())]
    DaemonExited {
        /// Daemon name (node id or coordinator id).
        name: String,
        /// Exit status.
        status: String,
        /// Its log file.
        log: PathBuf,
        /// The end of its log.
        tail: String,
    },
    /// The cluster did not reach the expected state in time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The cluster produced a result that does not check out.
    #[error("verification failed: {0}")]
    Verification(String),
    /// SIGINT or SIGTERM arrived; every daemon was stopped.
    #[error("interrupted; every daemon was stopped")]
    Interrupted,
}

impl SimError {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        SimError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Command line of `permafrost-sim`.
#[derive(Debug, Parser)]
#[command(
    name = "permafrost-sim",
    about = "Permafrost local cluster launcher",
    version
)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: SimCommand,
}

/// Commands.
#[derive(Debug, Subcommand)]
pub enum SimCommand {
    /// Build a 5-node cluster from nothing, create warm-1 and cold-1, sign a warm withdrawal, tear down.
    Demo {
        /// Write {"key_groups": [...], "signatures": [...]} here.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
        /// Build the cluster in this (empty or new) directory instead of a temporary one.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Keep the temporary directory (configs, data, logs) afterwards.
        #[arg(long)]
        keep: bool,
        /// Directory holding permafrost-node and permafrost-coordinator (default: next to permafrost-sim).
        #[arg(long, value_name = "DIR")]
        bin_dir: Option<PathBuf>,
    },
    /// Build the same cluster in DIR (or restart the one there) and run it until Ctrl-C.
    Up {
        /// Cluster directory; clients use DIR/cluster.json, written once the cluster is ready.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Directory holding permafrost-node and permafrost-coordinator (default: next to permafrost-sim).
        #[arg(long, value_name = "DIR")]
        bin_dir: Option<PathBuf>,
    },
    /// Seeded chaos runs on fresh local clusters; prints runs, signed, refused, safety violations, latency.
    Chaos(chaos::ChaosArgs),
    /// Latency, throughput, ceremonies, memory and store commits of the real cluster, side by side with in-process FROST.
    Bench(Box<bench::BenchArgs>),
}

/// Runs one command.
pub async fn run(cli: Cli) -> Result<(), SimError> {
    match cli.command {
        SimCommand::Demo {
            json,
            dir,
            keep,
            bin_dir,
        } => demo::demo(demo::DemoOptions {
            json,
            dir,
            keep,
            bin_dir,
        })
        .await
        .map(|_| ()),
        SimCommand::Up { dir, bin_dir } => up::up(&dir, bin_dir.as_deref()).await,
        SimCommand::Chaos(args) => chaos::command(args).await,
        SimCommand::Bench(args) => bench::command(*args).await,
    }
}

/// Runs `work` unless SIGINT/SIGTERM comes first; then `work` is dropped,
/// which stops any daemons it owns.
pub async fn interruptible<T>(
    work: impl Future<Output = Result<T, SimError>>,
) -> Result<T, SimError> {
    tokio::select! {
        _ = shutdown_signal() => Err(SimError::Interrupted),
        result = work => result,
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn cli_parses() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
