//! Node configuration (TOML), validated at start-up; errors name the field and value.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ed25519_dalek::VerifyingKey;
use permafrost_core::identity::parse_ed25519_hex;
use permafrost_core::NodeId;
use serde::Deserialize;

use crate::NodeError;

/// The whole node configuration file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's id (must match its certificate and the manifest).
    pub id: NodeId,
    /// Region / failure domain.
    pub region: String,
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Data directory (sled store, sealer state).
    pub data_dir: PathBuf,
    /// Cluster manifest (JSON).
    pub manifest: PathBuf,
    /// Custody-service Ed25519 public keys (hex) whose requests this node accepts.
    pub custody_keys: Vec<String>,
    /// Largest tolerated clock skew, seconds.
    #[serde(default = "default_skew")]
    pub max_clock_skew_secs: u64,
    /// Longest allowed request lifetime, seconds.
    #[serde(default = "default_lifetime")]
    pub max_request_lifetime_secs: u64,
    /// mTLS files (the node's TLS private key is sealed in its store, not here).
    pub tls: NodeTlsConfig,
    /// How secrets are sealed at rest.
    pub sealer: SealerConfig,
    /// Nonce pool bounds.
    #[serde(default)]
    pub nonces: NonceConfig,
    /// Withdrawal policy file (TOML) this node enforces.
    pub policy: PathBuf,
    /// Manual (Vault-style) sealing of key shares.
    #[serde(default)]
    pub seal: SealConfig,
    /// Audit log file (JSON lines); default `<data_dir>/audit.log`.
    pub audit_log: Option<PathBuf>,
}

/// Manual sealing: key shares are sealed under an operator passphrase that
/// never touches the node's disk or config; the node starts sealed and signs
/// nothing until an operator unseals it over mTLS.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealConfig {
    /// Start sealed and require `permafrostctl node unseal`.
    #[serde(default)]
    pub manual: bool,
}

/// mTLS files of a node.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeTlsConfig {
    /// Cluster CA certificate (PEM).
    pub ca_cert: PathBuf,
    /// This node's certificate (PEM), issued by the CA for role `node`.
    pub cert: PathBuf,
}

/// Sealer backend choice.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum SealerConfig {
    /// argon2id-derived key from a passphrase.
    Passphrase {
        /// File holding the passphrase.
        passphrase_file: Option<PathBuf>,
        /// Environment variable holding the passphrase.
        passphrase_env: Option<String>,
        /// `production` (default) or `fast-insecure` (tests and the local demo only).
        #[serde(default)]
        kdf: KdfProfile,
    },
}

/// argon2id cost profile.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum KdfProfile {
    /// 64 MiB, 3 passes.
    #[default]
    Production,
    /// Tiny cost: for tests and throwaway demo clusters only.
    FastInsecure,
}

/// Nonce pool bounds (N6).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NonceConfig {
    /// Most nonces held at once.
    pub max_open: usize,
    /// Seconds before an unused nonce is dropped.
    pub ttl_secs: u64,
}

impl Default for NonceConfig {
    fn default() -> Self {
        Self {
            max_open: 1024,
            ttl_secs: 120,
        }
    }
}

fn default_skew() -> u64 {
    300
}
fn default_lifetime() -> u64 {
    86_400
}

fn invalid(field: &str, value: impl std::fmt::Display, reason: &str) -> NodeError {
    NodeError::Config(format!("{field} = {value}: {reason}"))
}

impl NodeConfig {
    /// Reads and validates a TOML file.
    pub fn load(path: &Path) -> Result<Self, NodeError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| NodeError::Config(format!("cannot read {}: {e}", path.display())))?;
        let config: NodeConfig =
            toml::from_str(&text).map_err(|e| NodeError::Config(format!("{}: {e}", path.display())))?;
        config.validate()?;
        Ok(config)
    }

    /// Cross-field checks.
    pub fn validate(&self) -> Result<(), NodeError> {
        if self.region.trim().is_empty() {
            return Err(invalid("region", "\"\"", "must not be empty"));
        }
        if self.custody_keys.is_empty() {
            return Err(invalid("custody_keys", "[]", "at least one custody public key is required"));
        }
        self.custody_keys()?;
        if self.max_clock_skew_secs > 3600 {
            return Err(invalid("max_clock_skew_secs", self.max_clock_skew_secs, "must be at most 3600"));
        }
        if self.max_request_lifetime_secs == 0 {
            return Err(invalid("max_request_lifetime_secs", 0, "must be positive"));
        }
        if self.nonces.max_open == 0 || self.nonces.max_open > 1_000_000 {
            return Err(invalid("nonces.max_open", self.nonces.max_open, "must be 1..=1000000"));
        }
        if self.nonces.ttl_secs == 0 || self.nonces.ttl_secs > 3600 {
            return Err(invalid("nonces.ttl_secs", self.nonces.ttl_secs, "must be 1..=3600"));
        }
        let SealerConfig::Passphrase {
            passphrase_file,
            passphrase_env,
            ..
        } = &self.sealer;
        if passphrase_file.is_some() == passphrase_env.is_some() {
            return Err(invalid(
                "sealer",
                "passphrase",
                "set exactly one of passphrase_file or passphrase_env",
            ));
        }
        Ok(())
    }

    /// Reads and validates the policy file.
    pub fn load_policy(&self) -> Result<permafrost_core::policy::Policy, NodeError> {
        let text = std::fs::read_to_string(&self.policy)
            .map_err(|e| NodeError::Config(format!("policy = {}: {e}", self.policy.display())))?;
        permafrost_core::policy::Policy::from_toml(&text)
            .map_err(|e| NodeError::Config(format!("policy = {}: {e}", self.policy.display())))
    }

    /// Where the audit log lives.
    pub fn audit_path(&self) -> PathBuf {
        self.audit_log.clone().unwrap_or_else(|| self.data_dir.join("audit.log"))
    }

    /// Parsed custody keys.
    pub fn custody_keys(&self) -> Result<Vec<VerifyingKey>, NodeError> {
        self.custody_keys
            .iter()
            .map(|k| parse_ed25519_hex("custody_keys", k).map_err(|e| NodeError::Config(e.to_string())))
            .collect()
    }
}
