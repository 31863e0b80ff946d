//! The config files a layout writes, in the shape `permafrost-node`
//! (node/src/config.rs) and `permafrost-coordinator` (coordinator/src/config.rs)
//! read them; scalars before tables, absent sections left out so the daemon's
//! own defaults apply.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use permafrost_core::ceremony::RegistryConfig;
use serde::{Deserialize, Serialize};

use crate::SimError;

/// A node's `[sealer]` section: how it seals its identity, TLS key and shares.
///
/// Secrets are never part of it, only where the node reads them from. A
/// relative file is relative to the node's directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum SealerSpec {
    /// A key derived from a passphrase.
    Passphrase {
        /// File holding the passphrase.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        passphrase_file: Option<PathBuf>,
        /// Environment variable holding the passphrase.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        passphrase_env: Option<String>,
        /// `production` (the node's default) or `fast-insecure`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        kdf: Option<String>,
    },
    /// A non-extractable key in a PKCS#11 token.
    Pkcs11 {
        /// The token vendor's PKCS#11 module.
        module_path: PathBuf,
        /// Label of the token.
        token_label: String,
        /// Label of the key in the token (the node's default when `None`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key_label: Option<String>,
        /// File holding the user PIN.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pin_file: Option<PathBuf>,
        /// Environment variable holding the user PIN.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pin_env: Option<String>,
    },
}

/// The KDF profile of throwaway clusters (tests, demo, chaos, bench).
const FAST_INSECURE: &str = "fast-insecure";

impl SealerSpec {
    /// A passphrase read from `file`, with the fast test-only KDF.
    pub fn fast_passphrase_file(file: impl Into<PathBuf>) -> Self {
        SealerSpec::Passphrase {
            passphrase_file: Some(file.into()),
            passphrase_env: None,
            kdf: Some(FAST_INSECURE.into()),
        }
    }

    /// A passphrase read from the environment variable `var`, with the fast test-only KDF.
    pub fn fast_passphrase_env(var: impl Into<String>) -> Self {
        SealerSpec::Passphrase {
            passphrase_file: None,
            passphrase_env: Some(var.into()),
            kdf: Some(FAST_INSECURE.into()),
        }
    }

    /// The same with every relative file made relative to `dir`.
    pub(super) fn resolved(&self, dir: &Path) -> Self {
        let mut sealer = self.clone();
        match &mut sealer {
            SealerSpec::Passphrase {
                passphrase_file, ..
            } => resolve(passphrase_file, dir),
            SealerSpec::Pkcs11 { pin_file, .. } => resolve(pin_file, dir),
        }
        sealer
    }
}

fn resolve(file: &mut Option<PathBuf>, dir: &Path) {
    if let Some(path) = file {
        *path = dir.join(&*path);
    }
}

/// Node config as `permafrost-node` reads it.
#[derive(Serialize)]
pub(super) struct NodeToml<'a> {
    pub(super) id: &'a str,
    pub(super) region: &'a str,
    pub(super) listen: SocketAddr,
    pub(super) data_dir: PathBuf,
    pub(super) manifest: PathBuf,
    pub(super) policy: PathBuf,
    pub(super) custody_keys: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) seal: Option<SealToml>,
    pub(super) tls: NodeTlsToml,
    pub(super) sealer: SealerSpec,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) operators: Option<&'a RegistryConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) admin: Option<AdminToml>,
}

/// The `[seal]` section: written only for a node that starts sealed.
#[derive(Serialize)]
pub(super) struct SealToml {
    pub(super) manual: bool,
}

/// The `[admin]` section of both daemons: where they serve Prometheus metrics.
#[derive(Serialize)]
pub(super) struct AdminToml {
    pub(super) metrics_listen: SocketAddr,
}

#[derive(Serialize)]
pub(super) struct NodeTlsToml {
    pub(super) ca_cert: PathBuf,
    pub(super) cert: PathBuf,
}

/// Coordinator config as `permafrost-coordinator` reads it.
#[derive(Serialize)]
pub(super) struct CoordinatorToml<'a> {
    pub(super) id: &'a str,
    pub(super) listen: SocketAddr,
    pub(super) data_dir: PathBuf,
    pub(super) manifest: PathBuf,
    pub(super) policy: PathBuf,
    pub(super) custody_keys: &'a [String],
    pub(super) health_interval_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) round_timeout_ms: Option<u64>,
    pub(super) tls: CoordinatorTlsToml,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) operators: Option<&'a RegistryConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) admin: Option<AdminToml>,
}

#[derive(Serialize)]
pub(super) struct CoordinatorTlsToml {
    pub(super) ca_cert: PathBuf,
    pub(super) cert: PathBuf,
    pub(super) key: PathBuf,
}

/// `value` as TOML, naming `what` if it cannot be written.
pub(super) fn text<T: Serialize>(value: &T, what: &str) -> Result<String, SimError> {
    toml::to_string(value).map_err(|e| SimError::Setup(format!("cannot write {what}: {e}")))
}
