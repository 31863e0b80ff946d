//! A [`Connection`]: where a server is and which credential to present,
//! resolved from the connection flags (explicit flags win over a cluster
//! file), and the mTLS channel and service clients opened from it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use permafrost_core::Role;
use permafrost_proto::tls::{TlsFiles, TlsMaterial};
use permafrost_proto::{
    ceremony_client::CeremonyClient, custody_client::CustodyClient,
    node_admin_client::NodeAdminClient,
};
use tonic::transport::{Channel, Endpoint};

use super::ClusterFile;
use crate::cli::{ConnectionArgs, NodeConnectionArgs};
use crate::error::error_chain;
use crate::CtlError;

/// How long to wait for a TCP + TLS connection to the coordinator.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default deadline of one call; a DKG ceremony or a signing with retries can take a while.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// Which credential of a cluster file to present.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ClientRole {
    /// The custody service (withdrawals).
    Custody,
    /// A key-ceremony operator (key groups, cluster status).
    Operator,
}

/// Everything needed to open an mTLS channel to the coordinator.
#[derive(Clone, Debug)]
pub struct Connection {
    /// `host:port`.
    pub endpoint: String,
    /// Name verified in the coordinator's certificate.
    pub server_name: String,
    /// CA, client certificate and key.
    pub tls: TlsFiles,
    /// Deadline of one call.
    pub timeout: Duration,
    /// The cluster file it came from, if any.
    pub cluster: Option<ClusterFile>,
}

/// Collects flag values (explicit flag first, then the cluster file) and
/// remembers which are missing, so one error can name them all.
#[derive(Default)]
struct FlagPicker {
    missing: Vec<&'static str>,
}

impl FlagPicker {
    fn pick(
        &mut self,
        flag: &'static str,
        explicit: Option<String>,
        from_file: Option<String>,
    ) -> String {
        let v = explicit.or(from_file);
        if v.is_none() {
            self.missing.push(flag);
        }
        v.unwrap_or_default()
    }
}

fn path_text(p: &Option<PathBuf>) -> Option<String> {
    p.as_ref().map(|p| p.display().to_string())
}

fn call_timeout(secs: u64) -> Result<Duration, CtlError> {
    if secs == 0 {
        return Err(CtlError::InvalidInput(
            "--timeout must be at least 1 second".into(),
        ));
    }
    Ok(Duration::from_secs(secs))
}

impl ConnectionArgs {
    /// Resolves flags (explicit flags win over the cluster file) into a connection as `default_role`.
    pub fn resolve(&self, default_role: ClientRole) -> Result<Connection, CtlError> {
        let cluster = self.cluster.as_deref().map(ClusterFile::load).transpose()?;
        let role = self.as_role.unwrap_or(default_role);
        if self.as_role.is_some() && cluster.is_none() {
            return Err(CtlError::InvalidInput(
                "--as only selects a credential from --cluster FILE".into(),
            ));
        }
        let (c_cert, c_key) = match (&cluster, role) {
            (Some(c), ClientRole::Custody) => {
                (Some(c.custody.cert.clone()), Some(c.custody.key.clone()))
            }
            (Some(c), ClientRole::Operator) => {
                (Some(c.operator.cert.clone()), Some(c.operator.key.clone()))
            }
            (None, _) => (None, None),
        };
        let mut flags = FlagPicker::default();
        let endpoint = flags.pick(
            "--coordinator",
            self.coordinator.clone(),
            cluster.as_ref().map(|c| c.coordinator.endpoint.clone()),
        );
        let server_name = flags.pick(
            "--server-name",
            self.server_name.clone(),
            cluster
                .as_ref()
                .map(|c| c.coordinator.tls_server_name.clone()),
        );
        let ca = flags.pick(
            "--ca",
            path_text(&self.ca),
            cluster.as_ref().map(|c| c.ca_cert.display().to_string()),
        );
        let cert = flags.pick("--cert", path_text(&self.cert), path_text(&c_cert));
        let key = flags.pick("--key", path_text(&self.key), path_text(&c_key));
        if !flags.missing.is_empty() {
            return Err(CtlError::InvalidInput(format!(
                "no way to reach the coordinator: give --cluster FILE, or all of --coordinator, --server-name, --ca, --cert, --key (missing: {})",
                flags.missing.join(", ")
            )));
        }
        Ok(Connection {
            endpoint,
            server_name,
            tls: TlsFiles {
                ca_cert: ca.into(),
                cert: cert.into(),
                key: key.into(),
            },
            timeout: call_timeout(self.timeout)?,
            cluster,
        })
    }
}
impl NodeConnectionArgs {
    /// Resolves flags (explicit flags win over the cluster file) into an
    /// operator connection to the node's own endpoint.
    pub fn resolve(&self) -> Result<Connection, CtlError> {
        let cluster = self.cluster.as_deref().map(ClusterFile::load).transpose()?;
        let listed = match (&cluster, &self.endpoint) {
            (Some(c), None) => {
                let node = c.nodes.iter().find(|n| n.id == self.node.as_str());
                if node.is_none() {
                    let known: Vec<&str> = c.nodes.iter().map(|n| n.id.as_str()).collect();
                    return Err(CtlError::InvalidInput(format!(
                        "node {} is not listed in --cluster (known nodes: {}); give --endpoint HOST:PORT",
                        self.node,
                        if known.is_empty() { "none".to_string() } else { known.join(", ") }
                    )));
                }
                node.map(|n| n.endpoint.clone())
            }
            _ => None,
        };
        let mut flags = FlagPicker::default();
        let endpoint = flags.pick("--endpoint", self.endpoint.clone(), listed);
        let ca = flags.pick(
            "--ca",
            path_text(&self.ca),
            cluster.as_ref().map(|c| c.ca_cert.display().to_string()),
        );
        let cert = flags.pick(
            "--cert",
            path_text(&self.cert),
            cluster
                .as_ref()
                .map(|c| c.operator.cert.display().to_string()),
        );
        let key = flags.pick(
            "--key",
            path_text(&self.key),
            cluster
                .as_ref()
                .map(|c| c.operator.key.display().to_string()),
        );
        if !flags.missing.is_empty() {
            return Err(CtlError::InvalidInput(format!(
                "no way to reach node {}: give --cluster FILE, or all of --endpoint, --ca, --cert, --key (missing: {})",
                self.node,
                flags.missing.join(", ")
            )));
        }
        Ok(Connection {
            endpoint,
            server_name: crate::pki::server_name(Role::Node, self.node.as_str()),
            tls: TlsFiles {
                ca_cert: ca.into(),
                cert: cert.into(),
                key: key.into(),
            },
            timeout: call_timeout(self.timeout)?,
            cluster,
        })
    }
}

impl Connection {
    /// Connection to a cluster described by a cluster file, presenting `role`'s credential.
    pub fn from_cluster(path: &Path, role: ClientRole) -> Result<Self, CtlError> {
        ConnectionArgs {
            cluster: Some(path.to_path_buf()),
            as_role: Some(role),
            timeout: DEFAULT_CALL_TIMEOUT.as_secs(),
            ..ConnectionArgs::default()
        }
        .resolve(role)
    }

    /// A lazily connecting mTLS channel (errors surface on the first call, with their cause).
    pub fn channel(&self) -> Result<Channel, CtlError> {
        let tls = TlsMaterial::load(&self.tls).map_err(|e| CtlError::InvalidFile(e.to_string()))?;
        let endpoint = Endpoint::from_shared(format!("https://{}", self.endpoint))
            .map_err(|e| CtlError::InvalidInput(format!("endpoint {:?}: {e}", self.endpoint)))?
            .tls_config(tls.client_config(&self.server_name))
            .map_err(|e| {
                CtlError::InvalidFile(format!(
                    "TLS settings for {}: {}",
                    self.endpoint,
                    error_chain(&e)
                ))
            })?
            // Explicit although tonic defaults to it: Nagle stalls small calls ~40 ms.
            .tcp_nodelay(true)
            .connect_timeout(CONNECT_TIMEOUT.min(self.timeout))
            .timeout(self.timeout);
        Ok(endpoint.connect_lazy())
    }

    /// Client of the `Custody` service (needs a custody certificate).
    pub fn custody(&self) -> Result<CustodyClient<Channel>, CtlError> {
        Ok(CustodyClient::new(self.channel()?))
    }

    /// Client of the `Ceremony` service (needs an operator certificate).
    pub fn ceremony(&self) -> Result<CeremonyClient<Channel>, CtlError> {
        Ok(CeremonyClient::new(self.channel()?))
    }

    /// Client of a node's `NodeAdmin` service (needs an operator certificate and a node connection).
    pub fn node_admin(&self) -> Result<NodeAdminClient<Channel>, CtlError> {
        Ok(NodeAdminClient::new(self.channel()?))
    }

    /// What a failed `call` on this connection becomes; see [`CtlError::from_status`].
    pub(crate) fn failed(&self, call: &'static str) -> impl FnOnce(tonic::Status) -> CtlError + '_ {
        move |status| CtlError::from_status(call, &self.endpoint, status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use permafrost_core::NodeId;

    #[test]
    fn connection_names_missing_flags() {
        let err = ConnectionArgs {
            coordinator: Some("127.0.0.1:1".into()),
            timeout: 5,
            ..ConnectionArgs::default()
        }
        .resolve(ClientRole::Operator)
        .expect_err("incomplete");
        let text = err.to_string();
        let missing = text
            .split("missing:")
            .nth(1)
            .expect("lists what is missing");
        assert!(
            missing.contains("--server-name")
                && missing.contains("--ca")
                && !missing.contains("--coordinator")
        );
    }

    fn cluster_file(dir: &Path) -> PathBuf {
        let path = dir.join("cluster.json");
        let json = serde_json::json!({
            "coordinator": {"endpoint": "127.0.0.1:1", "tls_server_name": "coord-1.coordinator.permafrost"},
            "ca_cert": "ca.pem",
            "custody": {"cert": "c.pem", "key": "c.key", "signing_key": "s.key", "signing_public_key": "00"},
            "operator": {"cert": "o.pem", "key": "o.key"},
            "nodes": [{"id": "n1", "region": "eu", "endpoint": "127.0.0.1:7001"}]
        });
        std::fs::write(&path, json.to_string()).expect("write");
        path
    }

    fn node_args(node: &str, cluster: Option<PathBuf>) -> NodeConnectionArgs {
        NodeConnectionArgs {
            node: NodeId::new(node).expect("id"),
            cluster,
            endpoint: None,
            ca: None,
            cert: None,
            key: None,
            timeout: 5,
        }
    }

    #[test]
    fn node_connection_uses_the_node_endpoint_name_and_operator_credential() {
        let dir = tempfile::tempdir().expect("tempdir");
        let conn = node_args("n1", Some(cluster_file(dir.path())))
            .resolve()
            .expect("resolves");
        assert_eq!(conn.endpoint, "127.0.0.1:7001");
        assert_eq!(conn.server_name, "n1.node.permafrost");
        assert_eq!(conn.tls.cert, dir.path().join("o.pem"));
        assert_eq!(conn.tls.key, dir.path().join("o.key"));
    }

    #[test]
    fn node_connection_names_unknown_nodes_and_missing_flags() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = node_args("n9", Some(cluster_file(dir.path())))
            .resolve()
            .expect_err("unknown node")
            .to_string();
        assert!(
            err.contains("n9") && err.contains("known nodes: n1"),
            "{err}"
        );
        let err = node_args("n1", None)
            .resolve()
            .expect_err("no flags")
            .to_string();
        assert!(
            err.contains("--endpoint") && err.contains("--cert"),
            "{err}"
        );
    }
}
