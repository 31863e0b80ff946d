//! Process plumbing shared by the daemons' `main`: tracing set-up and shutdown signals.

/// How log lines are written to stderr.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (for log shippers and SIEMs).
    Json,
}

impl LogFormat {
    /// The format the environment asks for: JSON when `PERMAFROST_LOG_JSON=1`.
    pub fn from_env() -> Self {
        if std::env::var("PERMAFROST_LOG_JSON").as_deref() == Ok("1") {
            LogFormat::Json
        } else {
            LogFormat::Text
        }
    }
}

/// Initializes `tracing` in the format of the environment ([`LogFormat::from_env`]).
pub fn init() {
    init_with(None)
}

/// Initializes `tracing` (level from `RUST_LOG`, default info) in `format`,
/// or, when `None`, the format of the environment: a `--log-format` flag
/// wins over `PERMAFROST_LOG_JSON`.
pub fn init_with(format: Option<LogFormat>) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format.unwrap_or_else(LogFormat::from_env) {
        LogFormat::Json => {
            let _ = builder.json().try_init();
        }
        LogFormat::Text => {
            let _ = builder.try_init();
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
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
    tracing::info!("shutting down");
}
