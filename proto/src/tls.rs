//! Loading the cluster CA and a principal's certificate for mTLS servers and clients.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tonic::transport::{
    Certificate, Channel, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig,
};

/// Paths of the PEM files a principal needs for mTLS.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// Cluster CA certificate.
    pub ca_cert: PathBuf,
    /// This principal's certificate.
    pub cert: PathBuf,
    /// This principal's private key.
    pub key: PathBuf,
}

/// PEM material loaded from [`TlsFiles`].
#[derive(Clone)]
pub struct TlsMaterial {
    ca: Certificate,
    identity: Identity,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsMaterial { .. }")
    }
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {what} {}: {e}", path.display()))
}

impl TlsMaterial {
    /// Reads the three PEM files.
    pub fn load(files: &TlsFiles) -> Result<Self, String> {
        Ok(Self::from_pem(
            &read(&files.ca_cert, "CA certificate")?,
            &read(&files.cert, "certificate")?,
            &read(&files.key, "private key")?,
        ))
    }

    /// Builds from PEM bytes.
    pub fn from_pem(ca: &[u8], cert: &[u8], key: &[u8]) -> Self {
        Self {
            ca: Certificate::from_pem(ca),
            identity: Identity::from_pem(cert, key),
        }
    }

    /// Server side: present our certificate, require a client certificate from the cluster CA.
    pub fn server_config(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(self.identity.clone())
            .client_ca_root(self.ca.clone())
    }

    /// Client side: verify the server as `server_name` under the cluster CA, present our certificate.
    pub fn client_config(&self, server_name: &str) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(self.ca.clone())
            .identity(self.identity.clone())
            .domain_name(server_name)
    }

    /// A lazily connecting channel to `endpoint` (`host:port`).
    pub fn channel(
        &self,
        endpoint: &str,
        server_name: &str,
        timeout: Duration,
    ) -> Result<Channel, String> {
        let ep = Endpoint::from_shared(format!("https://{endpoint}"))
            .map_err(|e| format!("bad endpoint {endpoint:?}: {e}"))?
            .tls_config(self.client_config(server_name))
            .map_err(|e| format!("TLS config for {endpoint}: {e}"))?
            .connect_timeout(timeout)
            .timeout(timeout);
        Ok(ep.connect_lazy())
    }
}

/// Installs the ring crypto provider for rustls once per process; call at the top of every `main` and test.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
