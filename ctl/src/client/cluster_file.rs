//! `cluster.json`: what a client needs to reach a running cluster (written by
//! `permafrost-sim up`), with paths made absolute on loading.

use std::path::{Path, PathBuf};

use permafrost_proto as pb;
use serde::{Deserialize, Serialize};

use crate::display::tier_name;
use crate::files::read_text;
use crate::CtlError;

/// `cluster.json`: what a client needs to reach a running cluster (paths relative to the file).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClusterFile {
    /// The coordinator's endpoint and the TLS name it presents.
    pub coordinator: CoordinatorRef,
    /// Cluster CA certificate.
    pub ca_cert: PathBuf,
    /// Custody-service credentials.
    pub custody: CustodyCredentials,
    /// Operator credentials.
    pub operator: OperatorCredentials,
    /// Signer nodes (informational).
    #[serde(default)]
    pub nodes: Vec<NodeRef>,
    /// Key groups created so far (informational; the coordinator is the source of truth).
    #[serde(default)]
    pub key_groups: Vec<KeyGroupSummary>,
}

/// Where the coordinator listens.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CoordinatorRef {
    /// `host:port`.
    pub endpoint: String,
    /// DNS name in the coordinator's certificate.
    pub tls_server_name: String,
    /// `host:port` of its Prometheus metrics (plain HTTP, `GET /metrics`), if served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<String>,
}

/// Custody-service certificate, key and request-signing key.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CustodyCredentials {
    /// Client certificate (role custody).
    pub cert: PathBuf,
    /// Its TLS private key.
    pub key: PathBuf,
    /// Ed25519 request-signing seed, hex.
    pub signing_key: PathBuf,
    /// Ed25519 public key, hex (what nodes list in `custody_keys`).
    pub signing_public_key: String,
}

/// Operator certificate and key.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OperatorCredentials {
    /// Client certificate (role operator).
    pub cert: PathBuf,
    /// Its TLS private key.
    pub key: PathBuf,
}

/// A signer node as listed in a cluster file.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeRef {
    /// Node id.
    pub id: String,
    /// Region.
    pub region: String,
    /// `host:port`.
    pub endpoint: String,
    /// `host:port` of its Prometheus metrics (plain HTTP, `GET /metrics`), if served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<String>,
}

/// A key group as reported to people and scripts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyGroupSummary {
    /// Group name.
    pub name: String,
    /// `hot`, `warm` or `cold`.
    pub tier: String,
    /// Signers needed.
    pub threshold: u32,
    /// Member node ids.
    pub members: Vec<String>,
    /// 33-byte SEC1-compressed group key, hex.
    pub group_public_key: String,
    /// `message` or `taproot`.
    #[serde(default)]
    pub scheme: String,
    /// Taproot groups: bitcoin, testnet, signet or regtest.
    #[serde(default)]
    pub network: String,
    /// Taproot groups: the x-only BIP341-tweaked output key, hex.
    #[serde(default)]
    pub output_key: String,
    /// Taproot groups: the key-path P2TR address.
    #[serde(default)]
    pub address: String,
}

impl KeyGroupSummary {
    /// From the wire form.
    pub fn from_wire(g: &pb::KeyGroup) -> Self {
        Self {
            name: g.name.clone(),
            tier: tier_name(g.tier).to_string(),
            threshold: g.threshold,
            members: g.members.clone(),
            group_public_key: hex::encode(&g.group_public_key),
            scheme: g.scheme.clone(),
            network: g.network.clone(),
            output_key: hex::encode(&g.output_key),
            address: g.address.clone(),
        }
    }
}

impl ClusterFile {
    /// Reads a cluster file and makes its paths absolute (relative to the file's directory).
    pub fn load(path: &Path) -> Result<Self, CtlError> {
        let text = read_text(path)?;
        let mut file: ClusterFile = serde_json::from_str(&text).map_err(|e| {
            CtlError::InvalidFile(format!(
                "{} is not a valid cluster file: {e}",
                path.display()
            ))
        })?;
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        for p in [
            &mut file.ca_cert,
            &mut file.custody.cert,
            &mut file.custody.key,
            &mut file.custody.signing_key,
            &mut file.operator.cert,
            &mut file.operator.key,
        ] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        Ok(file)
    }
}
