//! Connection flags: how to reach the coordinator ([`ConnectionArgs`], and
//! [`ApproveConnectionArgs`] for `approve`) or one node ([`NodeConnectionArgs`]).
//! [`crate::client::connection`] resolves them into a `Connection`.

use std::path::PathBuf;

use permafrost_core::NodeId;

use crate::client::{ClientRole, DEFAULT_CALL_TIMEOUT};

/// Connection flags shared by every command that talks to the coordinator.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ConnectionArgs {
    /// A cluster.json (from `permafrost-sim up`) giving the endpoint and credentials.
    #[arg(long, value_name = "FILE")]
    pub cluster: Option<PathBuf>,
    /// Which credential of --cluster to use (default: operator for ceremony commands, custody for withdrawals).
    #[arg(long = "as", value_enum, value_name = "ROLE")]
    pub as_role: Option<ClientRole>,
    /// Coordinator `host:port` (overrides --cluster).
    #[arg(long, value_name = "HOST:PORT")]
    pub coordinator: Option<String>,
    /// DNS name in the coordinator's certificate, e.g. coord-1.coordinator.permafrost.
    #[arg(long, value_name = "NAME")]
    pub server_name: Option<String>,
    /// Cluster CA certificate (PEM).
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM) of role custody or operator.
    #[arg(long, value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// Client private key (PEM).
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Deadline of one call, seconds.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_CALL_TIMEOUT.as_secs())]
    pub timeout: u64,
}

/// Connection flags of the commands that talk straight to one signer node
/// (`NodeAdmin`, operator certificate), never through the coordinator.
#[derive(Clone, Debug, clap::Args)]
pub struct NodeConnectionArgs {
    /// Node id, e.g. n1; the node must present the certificate name <ID>.node.permafrost.
    #[arg(long, value_name = "ID")]
    pub node: NodeId,
    /// A cluster.json (from `permafrost-sim up`) giving the node's endpoint and the operator credential.
    #[arg(long, value_name = "FILE")]
    pub cluster: Option<PathBuf>,
    /// The node's `host:port` (overrides --cluster).
    #[arg(long, value_name = "HOST:PORT")]
    pub endpoint: Option<String>,
    /// Cluster CA certificate (PEM).
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Operator client certificate (PEM).
    #[arg(long, value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// Operator client private key (PEM).
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Deadline of one call, seconds.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub timeout: u64,
}

/// The connection flags of [`ConnectionArgs`] for `approve`, where `--key` is
/// the approver key, so the client TLS key is `--tls-key`.
#[derive(Debug, clap::Args)]
pub struct ApproveConnectionArgs {
    /// A cluster.json (from `permafrost-sim up`) giving the endpoint and credentials.
    #[arg(long, value_name = "FILE")]
    pub cluster: Option<PathBuf>,
    /// Which credential of --cluster to use (default: custody).
    #[arg(long = "as", value_enum, value_name = "ROLE")]
    pub as_role: Option<ClientRole>,
    /// Coordinator `host:port` (overrides --cluster).
    #[arg(long, value_name = "HOST:PORT")]
    pub coordinator: Option<String>,
    /// DNS name in the coordinator's certificate, e.g. coord-1.coordinator.permafrost.
    #[arg(long, value_name = "NAME")]
    pub server_name: Option<String>,
    /// Cluster CA certificate (PEM).
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM) of role custody.
    #[arg(long, value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// Client TLS private key (PEM).
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Deadline of one call, seconds.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_CALL_TIMEOUT.as_secs())]
    pub timeout: u64,
}

impl From<ApproveConnectionArgs> for ConnectionArgs {
    fn from(a: ApproveConnectionArgs) -> Self {
        ConnectionArgs {
            cluster: a.cluster,
            as_role: a.as_role,
            coordinator: a.coordinator,
            server_name: a.server_name,
            ca: a.ca,
            cert: a.cert,
            key: a.tls_key,
            timeout: a.timeout,
        }
    }
}
