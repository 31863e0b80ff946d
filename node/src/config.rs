//! Node configuration (TOML), validated at start-up; errors name the field and value.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ed25519_dalek::VerifyingKey;
use permafrost_core::ceremony::{OperatorRegistry, RegistryConfig};
use permafrost_core::identity::parse_ed25519_hex;
use permafrost_core::NodeId;
use permafrost_hsm::SecretSource;
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
    /// Load limits (backpressure).
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Withdrawal policy file (TOML) this node enforces.
    pub policy: PathBuf,
    /// Manual (Vault-style) sealing of key shares.
    #[serde(default)]
    pub seal: SealConfig,
    /// Audit log file (JSON lines); default `<data_dir>/audit.log`.
    pub audit_log: Option<PathBuf>,
    /// Operator registry: operator id → Ed25519 public key, and the quorum
    /// (k of m) each lifecycle operation needs. Without it the node takes
    /// part in no ceremony (it still signs for the groups it holds).
    #[serde(default)]
    pub operators: Option<RegistryConfig>,
    /// The admin listener (Prometheus metrics); none by default.
    #[serde(default)]
    pub admin: permafrost_proto::metrics::AdminConfig,
}

/// Manual sealing: key shares are sealed under an operator passphrase that
/// never touches the node's disk or config; it is set once, at
/// `permafrost-node init --unseal-passphrase-file`, never by a first unseal.
/// The node starts sealed and signs nothing until an operator unseals it over
/// mTLS.
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

/// Sealer backend choice: how the node's identity, TLS key and key shares are sealed at rest.
///
/// Secrets (passphrase, PIN) are never written here, only where to read them from.
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
    /// A sensitive, non-extractable AES-256 key inside a PKCS#11 token (an HSM, or SoftHSM2
    /// for tests). `permafrost-node init` creates the key if the token has none by that
    /// label; `run` only ever uses an existing key.
    Pkcs11 {
        /// The token vendor's PKCS#11 module, e.g. `/usr/lib/softhsm/libsofthsm2.so`.
        module_path: PathBuf,
        /// Label of the initialised token that holds the key (at most 32 bytes).
        token_label: String,
        /// Label of the AES key inside the token.
        #[serde(default = "default_key_label")]
        key_label: String,
        /// File holding the token's user PIN.
        pin_file: Option<PathBuf>,
        /// Environment variable holding the token's user PIN.
        pin_env: Option<String>,
    },
}

fn default_key_label() -> String {
    "permafrost-seal".into()
}

/// PKCS#11 token labels are fixed 32-byte fields (v2.40 §3.2, `CK_TOKEN_INFO.label`).
const MAX_TOKEN_LABEL_BYTES: usize = 32;

impl SealerConfig {
    /// Checks the backend's own fields; errors name the field and value.
    pub fn validate(&self) -> Result<(), NodeError> {
        match self {
            SealerConfig::Passphrase {
                passphrase_file,
                passphrase_env,
                ..
            } => secret_source("passphrase", passphrase_file, passphrase_env).map(drop),
            SealerConfig::Pkcs11 {
                module_path,
                token_label,
                key_label,
                pin_file,
                pin_env,
            } => {
                if module_path.as_os_str().is_empty() {
                    return Err(invalid(
                        "sealer.module_path",
                        "\"\"",
                        "must name the PKCS#11 module",
                    ));
                }
                if token_label.is_empty() || token_label.len() > MAX_TOKEN_LABEL_BYTES {
                    return Err(invalid(
                        "sealer.token_label",
                        format!("{token_label:?}"),
                        "must be 1 to 32 bytes (a PKCS#11 token label)",
                    ));
                }
                if key_label.is_empty() {
                    return Err(invalid("sealer.key_label", "\"\"", "must not be empty"));
                }
                secret_source("pin", pin_file, pin_env).map(drop)
            }
        }
    }
}

/// Where the `what` (passphrase or PIN) comes from: exactly one of `<what>_file` and
/// `<what>_env` must be set, and an environment variable must have a name.
pub(crate) fn secret_source(
    what: &str,
    file: &Option<PathBuf>,
    env: &Option<String>,
) -> Result<SecretSource, NodeError> {
    match (file, env) {
        (Some(path), None) if path.as_os_str().is_empty() => Err(invalid(
            &format!("sealer.{what}_file"),
            "\"\"",
            "must name a file",
        )),
        (Some(path), None) => Ok(SecretSource::File(path.clone())),
        (None, Some(var)) if var.is_empty() => Err(invalid(
            &format!("sealer.{what}_env"),
            "\"\"",
            "must name an environment variable",
        )),
        (None, Some(var)) => Ok(SecretSource::Env(var.clone())),
        (Some(path), Some(var)) => Err(invalid(
            "sealer",
            format!("{what}_file = {} and {what}_env = {var}", path.display()),
            &format!("set exactly one of {what}_file or {what}_env"),
        )),
        (None, None) => Err(invalid(
            "sealer",
            "no source",
            &format!("set exactly one of {what}_file or {what}_env"),
        )),
    }
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
    /// Most banked nonces (issued ahead of any request) one coordinator may
    /// hold on this node for one group.
    #[serde(default = "default_max_banked")]
    pub max_banked: usize,
}

fn default_max_banked() -> usize {
    128
}

impl Default for NonceConfig {
    fn default() -> Self {
        Self {
            max_open: 1024,
            ttl_secs: 120,
            max_banked: default_max_banked(),
        }
    }
}

/// How much work the node takes on at once; past it, callers are told
/// "busy, retry in N ms" (`RESOURCE_EXHAUSTED`) rather than queued behind it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Commit and Sign calls in flight at once, over all key groups.
    pub max_sessions: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self { max_sessions: 512 }
    }
}

fn default_skew() -> u64 {
    300
}
/// Seven days: the node's own outer bound on a request's lifetime. Each
/// group's policy sets its own (`max_lifetime_secs`); at start the node
/// refuses a policy whose lifetime this bound would silently cut.
fn default_lifetime() -> u64 {
    7 * 86_400
}

/// The registry's own error already reads `operators.<field> = <value>: <why>`.
fn registry_error(e: permafrost_core::CoreError) -> NodeError {
    match e {
        permafrost_core::CoreError::InvalidField { reason, .. } => NodeError::Config(reason),
        other => NodeError::Config(format!("operators: {other}")),
    }
}

fn invalid(field: &str, value: impl std::fmt::Display, reason: &str) -> NodeError {
    NodeError::Config(format!("{field} = {value}: {reason}"))
}

impl NodeConfig {
    /// Reads and validates a TOML file.
    pub fn load(path: &Path) -> Result<Self, NodeError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| NodeError::Config(format!("cannot read {}: {e}", path.display())))?;
        let config: NodeConfig = toml::from_str(&text)
            .map_err(|e| NodeError::Config(format!("{}: {e}", path.display())))?;
        config.validate()?;
        Ok(config)
    }

    /// Cross-field checks.
    pub fn validate(&self) -> Result<(), NodeError> {
        if self.region.trim().is_empty() {
            return Err(invalid("region", "\"\"", "must not be empty"));
        }
        if self.custody_keys.is_empty() {
            return Err(invalid(
                "custody_keys",
                "[]",
                "at least one custody public key is required",
            ));
        }
        self.custody_keys()?;
        if self.max_clock_skew_secs > 3600 {
            return Err(invalid(
                "max_clock_skew_secs",
                self.max_clock_skew_secs,
                "must be at most 3600",
            ));
        }
        if self.max_request_lifetime_secs == 0 {
            return Err(invalid("max_request_lifetime_secs", 0, "must be positive"));
        }
        if self.nonces.max_open == 0 || self.nonces.max_open > 1_000_000 {
            return Err(invalid(
                "nonces.max_open",
                self.nonces.max_open,
                "must be 1..=1000000",
            ));
        }
        if self.limits.max_sessions == 0 || self.limits.max_sessions > 100_000 {
            return Err(invalid(
                "limits.max_sessions",
                self.limits.max_sessions,
                "must be 1..=100000",
            ));
        }
        if self.nonces.ttl_secs == 0 || self.nonces.ttl_secs > 3600 {
            return Err(invalid(
                "nonces.ttl_secs",
                self.nonces.ttl_secs,
                "must be 1..=3600",
            ));
        }
        self.operator_registry()?;
        self.admin
            .validate()
            .map_err(|e| NodeError::Config(e.to_string()))?;
        self.sealer.validate()
    }

    /// The validated operator registry, if the config has one.
    pub fn operator_registry(&self) -> Result<Option<OperatorRegistry>, NodeError> {
        self.operators
            .as_ref()
            .map(|r| r.build().map_err(registry_error))
            .transpose()
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
        self.audit_log
            .clone()
            .unwrap_or_else(|| self.data_dir.join("audit.log"))
    }

    /// Parsed custody keys.
    pub fn custody_keys(&self) -> Result<Vec<VerifyingKey>, NodeError> {
        self.custody_keys
            .iter()
            .map(|k| {
                parse_ed25519_hex("custody_keys", k).map_err(|e| NodeError::Config(e.to_string()))
            })
            .collect()
    }
}

#[cfg(test)]
mod sealer_tests {
    use super::*;

    #[derive(Deserialize)]
    struct Wrapper {
        sealer: SealerConfig,
    }

    fn parse(toml_text: &str) -> Result<SealerConfig, String> {
        toml::from_str::<Wrapper>(toml_text)
            .map(|w| w.sealer)
            .map_err(|e| e.to_string())
    }

    fn refusal(toml_text: &str) -> String {
        parse(toml_text)
            .expect("parses")
            .validate()
            .expect_err("must be refused")
            .to_string()
    }

    #[test]
    fn pkcs11_section_parses_with_default_key_label() {
        let sealer = parse(
            r#"[sealer]
kind = "pkcs11"
module_path = "/usr/lib/softhsm/libsofthsm2.so"
token_label = "permafrost-n1"
pin_file = "/etc/permafrost/pin"
"#,
        )
        .expect("parses");
        sealer.validate().expect("valid");
        let SealerConfig::Pkcs11 { key_label, .. } = &sealer else {
            panic!("not pkcs11: {sealer:?}");
        };
        assert_eq!(key_label, "permafrost-seal");
    }

    #[test]
    fn pkcs11_needs_exactly_one_pin_source() {
        let base = "[sealer]\nkind = \"pkcs11\"\nmodule_path = \"/m.so\"\ntoken_label = \"t\"\n";
        let msg = refusal(base);
        assert!(msg.contains("exactly one of pin_file or pin_env"), "{msg}");
        let msg = refusal(&format!("{base}pin_file = \"/p\"\npin_env = \"PIN\"\n"));
        assert!(
            msg.contains("exactly one of pin_file or pin_env") && msg.contains("/p"),
            "{msg}"
        );
        let msg = refusal(&format!("{base}pin_env = \"\"\n"));
        assert!(msg.contains("sealer.pin_env"), "{msg}");
    }

    #[test]
    fn pkcs11_labels_and_module_are_checked_naming_the_field() {
        let with = |module: &str, token: &str, key: &str| {
            format!(
                "[sealer]\nkind = \"pkcs11\"\nmodule_path = \"{module}\"\ntoken_label = \"{token}\"\n\
                 key_label = \"{key}\"\npin_env = \"PIN\"\n"
            )
        };
        let msg = refusal(&with("", "t", "k"));
        assert!(msg.contains("sealer.module_path"), "{msg}");
        let msg = refusal(&with("/m.so", "", "k"));
        assert!(msg.contains("sealer.token_label"), "{msg}");
        let long = "x".repeat(33);
        let msg = refusal(&with("/m.so", &long, "k"));
        assert!(
            msg.contains("sealer.token_label") && msg.contains(&long),
            "{msg}"
        );
        let msg = refusal(&with("/m.so", "t", ""));
        assert!(msg.contains("sealer.key_label"), "{msg}");
    }

    #[test]
    fn passphrase_needs_exactly_one_source() {
        let msg = refusal("[sealer]\nkind = \"passphrase\"\n");
        assert!(
            msg.contains("exactly one of passphrase_file or passphrase_env"),
            "{msg}"
        );
    }

    #[test]
    fn unknown_kind_and_fields_are_refused() {
        let err = parse("[sealer]\nkind = \"enclave\"\n").expect_err("unknown kind");
        assert!(err.contains("enclave"), "{err}");
        let err = parse("[sealer]\nkind = \"pkcs11\"\nmodule_path = \"/m\"\ntoken_label = \"t\"\npin = \"1234\"\n")
            .expect_err("a PIN inline is not a field");
        assert!(err.contains("pin"), "{err}");
    }
}

#[cfg(test)]
mod operator_tests {
    use super::*;

    #[derive(Deserialize)]
    struct Wrapper {
        operators: RegistryConfig,
    }

    fn key(seed: u8) -> String {
        hex::encode(
            ed25519_dalek::SigningKey::from_bytes(&[seed; 32])
                .verifying_key()
                .as_bytes(),
        )
    }

    fn registry(text: &str) -> Result<OperatorRegistry, NodeError> {
        let w: Wrapper = toml::from_str(text).map_err(|e| NodeError::Config(e.to_string()))?;
        w.operators.build().map_err(registry_error)
    }

    #[test]
    fn operators_section_parses_with_per_operation_quorums() {
        let text = format!(
            "[operators]\ndefault_quorum = 2\n[operators.keys]\nalice = \"{}\"\nbob = \"{}\"\ncarol = \"{}\"\n\
             [operators.quorum]\nrepair = 3\n",
            key(1),
            key(2),
            key(3)
        );
        let r = registry(&text).expect("valid");
        use permafrost_core::ceremony::Operation;
        assert_eq!(r.quorum(Operation::Repair), 3);
        assert_eq!(r.quorum(Operation::Create), 2);
    }

    #[test]
    fn operators_errors_name_the_field_and_value() {
        let base = |extra: &str, k: u16| {
            format!(
                "[operators]\ndefault_quorum = {k}\n[operators.keys]\nalice = \"{}\"\n{extra}",
                key(1)
            )
        };
        let msg = registry(&base(&format!("bob = \"{}\"\n", key(1)), 2))
            .expect_err("same key twice")
            .to_string();
        assert!(
            msg.contains("operators.keys.bob") && msg.contains("alice"),
            "{msg}"
        );
        let msg = registry(&base("bob = \"12\"\n", 2))
            .expect_err("short key")
            .to_string();
        assert!(msg.contains("operators.keys.bob = \"12\""), "{msg}");
        let msg = registry(&base(&format!("bob = \"{}\"\n", key(2)), 3))
            .expect_err("3 of 2")
            .to_string();
        assert!(msg.contains("operators.default_quorum = 3"), "{msg}");
        let msg = registry(&base("", 1))
            .expect_err("one operator")
            .to_string();
        assert!(msg.contains("operators.keys"), "{msg}");
        let msg = registry(&format!(
            "{}[operators.quorum]\nshred = 2\n",
            base(&format!("bob = \"{}\"\n", key(2)), 2)
        ))
        .expect_err("unknown operation")
        .to_string();
        assert!(msg.contains("shred"), "{msg}");
    }
}
