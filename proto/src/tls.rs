//! Loading the cluster CA and a principal's certificate for mTLS servers and clients.

use crate::ProtoError;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;

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
    /// The same PEM again, for the rustls server config `server::serve` builds itself.
    pem: Arc<PemFiles>,
}

struct PemFiles {
    ca: Vec<u8>,
    cert: Vec<u8>,
    key: Vec<u8>,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsMaterial { .. }")
    }
}

fn read(path: &Path, what: &'static str) -> Result<Vec<u8>, ProtoError> {
    std::fs::read(path).map_err(|e| ProtoError::File {
        what,
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

impl TlsMaterial {
    /// Reads the three PEM files.
    pub fn load(files: &TlsFiles) -> Result<Self, ProtoError> {
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
            pem: Arc::new(PemFiles {
                ca: ca.to_vec(),
                cert: cert.to_vec(),
                key: key.to_vec(),
            }),
        }
    }

    /// Server side as a rustls config, for servers that run the TLS handshake
    /// themselves (`server::serve` does, to bound and time it): our certificate,
    /// a client certificate from the cluster CA required, ALPN `h2`. Same policy
    /// as [`Self::server_config`], with the ring provider named explicitly so no
    /// process-level provider is needed.
    pub fn rustls_server_config(&self) -> Result<Arc<rustls::ServerConfig>, ProtoError> {
        let bad =
            |what: &str, e: &dyn std::fmt::Display| ProtoError::Credentials(format!("{what}: {e}"));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(&self.pem.ca) {
            let ca = ca.map_err(|e| bad("CA certificate PEM", &e))?;
            roots.add(ca).map_err(|e| bad("CA certificate", &e))?;
        }
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| bad("client certificate verifier", &e))?;
        let chain = CertificateDer::pem_slice_iter(&self.pem.cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad("certificate PEM", &e))?;
        let key =
            PrivateKeyDer::from_pem_slice(&self.pem.key).map_err(|e| bad("private key PEM", &e))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| bad("TLS versions", &e))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .map_err(|e| bad("certificate and key", &e))?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
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
    ) -> Result<Channel, ProtoError> {
        let ep = Endpoint::from_shared(format!("https://{endpoint}"))
            .map_err(|e| ProtoError::InvalidConfig {
                field: "endpoint".into(),
                reason: format!("{endpoint:?}: {e}"),
            })?
            .tls_config(self.client_config(server_name))
            .map_err(|e| ProtoError::Credentials(format!("TLS config for {endpoint}: {e}")))?
            // Explicit although tonic defaults to it: Nagle plus delayed ACK
            // stalls small request/response pairs by ~40 ms.
            .tcp_nodelay(true)
            .connect_timeout(timeout)
            .timeout(timeout);
        Ok(ep.connect_lazy())
    }
}

/// Installs the ring crypto provider for rustls once per process; call at the top of every `main` and test.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
