//! Coordinator configuration (TOML), validated at start-up; errors name the field and value.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ed25519_dalek::VerifyingKey;
use permafrost_core::ceremony::{OperatorRegistry, RegistryConfig};
use permafrost_core::identity::parse_ed25519_hex;
use permafrost_proto::tls::TlsFiles;
use serde::Deserialize;

use crate::CoordinatorError;

/// The whole coordinator configuration file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoordinatorConfig {
    /// Coordinator id (matches its certificate).
    pub id: String,
    /// Address to listen on for `Custody` and `Ceremony` calls.
    pub listen: SocketAddr,
    /// Data directory (sled store).
    pub data_dir: PathBuf,
    /// Cluster manifest (JSON).
    pub manifest: PathBuf,
    /// Custody public keys (hex), used only to fail fast; nodes check for themselves.
    pub custody_keys: Vec<String>,
    /// Policy file (TOML), the same the nodes enforce; used to fail fast and to
    /// tell clients what is missing. Nodes decide for themselves.
    pub policy: PathBuf,
    /// Audit log (JSON lines); default `<data_dir>/audit.log`.
    pub audit_log: Option<PathBuf>,
    /// Deadline of one signing or ceremony round, milliseconds.
    #[serde(default = "default_round_timeout")]
    pub round_timeout_ms: u64,
    /// How long `SubmitWithdrawal` waits for a result before answering PENDING, milliseconds.
    #[serde(default = "default_submit_wait")]
    pub submit_wait_ms: u64,
    /// Milliseconds between member health probes; every fourth probe
    /// interval (at least 1 s) the coordinator also looks for refresh
    /// commits some members missed and finishes them (K7).
    #[serde(default = "default_health_interval")]
    pub health_interval_ms: u64,
    /// Withdrawals being driven at once; past it `SubmitWithdrawal` answers
    /// busy (`RESOURCE_EXHAUSTED` with a retry hint) instead of queueing.
    #[serde(default = "default_max_inflight")]
    pub max_inflight_requests: usize,
    /// Signing rounds the coordinator runs on one node at once; further
    /// sessions wait for a slot (and their round deadlines start only then).
    #[serde(default = "default_node_sessions")]
    pub max_sessions_per_node: usize,
    /// mTLS files: CA, and the coordinator's own certificate and key.
    pub tls: TlsFiles,
    /// The operator registry the nodes hold (the same `[operators]` section).
    /// The coordinator checks ceremony specs against it only to fail fast; the
    /// nodes decide for themselves. Clearing an exclusion, the coordinator's
    /// own state, needs it.
    #[serde(default)]
    pub operators: Option<RegistryConfig>,
    /// The admin listener (Prometheus metrics); none by default.
    #[serde(default)]
    pub admin: permafrost_proto::metrics::AdminConfig,
    /// Keep a bank of nonce commitments per node, issued ahead of requests
    /// (one round trip fewer per signature; default on). Off: every
    /// signature asks its signers for fresh commitments first.
    #[serde(default = "default_banked_nonces")]
    pub banked_nonces: bool,
}

fn default_banked_nonces() -> bool {
    true
}

fn default_max_inflight() -> usize {
    4096
}
fn default_node_sessions() -> usize {
    128
}

fn default_round_timeout() -> u64 {
    5_000
}
fn default_submit_wait() -> u64 {
    20_000
}
fn default_health_interval() -> u64 {
    2_000
}

impl CoordinatorConfig {
    /// Reads and validates a TOML file.
    pub fn load(path: &Path) -> Result<Self, CoordinatorError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            CoordinatorError::Config(format!("cannot read {}: {e}", path.display()))
        })?;
        let config: Self = toml::from_str(&text)
            .map_err(|e| CoordinatorError::Config(format!("{}: {e}", path.display())))?;
        config.validate()?;
        Ok(config)
    }

    /// Cross-field checks.
    pub fn validate(&self) -> Result<(), CoordinatorError> {
        let bad = |field: &str, value: &dyn std::fmt::Display, reason: &str| {
            Err(CoordinatorError::Config(format!(
                "{field} = {value}: {reason}"
            )))
        };
        if self.id.is_empty() {
            return bad("id", &"\"\"", "must not be empty");
        }
        if !(100..=600_000).contains(&self.round_timeout_ms) {
            return bad(
                "round_timeout_ms",
                &self.round_timeout_ms,
                "must be 100..=600000",
            );
        }
        if self.submit_wait_ms > 600_000 {
            return bad(
                "submit_wait_ms",
                &self.submit_wait_ms,
                "must be at most 600000",
            );
        }
        if !(100..=60_000).contains(&self.health_interval_ms) {
            return bad(
                "health_interval_ms",
                &self.health_interval_ms,
                "must be 100..=60000",
            );
        }
        if !(1..=1_000_000).contains(&self.max_inflight_requests) {
            return bad(
                "max_inflight_requests",
                &self.max_inflight_requests,
                "must be 1..=1000000",
            );
        }
        if !(1..=100_000).contains(&self.max_sessions_per_node) {
            return bad(
                "max_sessions_per_node",
                &self.max_sessions_per_node,
                "must be 1..=100000",
            );
        }
        self.custody_keys()?;
        self.operator_registry()?;
        self.admin.validate()?;
        Ok(())
    }

    /// The validated operator registry, if the config has one.
    pub fn operator_registry(&self) -> Result<Option<OperatorRegistry>, CoordinatorError> {
        self.operators
            .as_ref()
            .map(|r| {
                r.build().map_err(|e| match e {
                    permafrost_core::CoreError::InvalidField { reason, .. } => {
                        CoordinatorError::Config(reason)
                    }
                    other => CoordinatorError::Config(format!("operators: {other}")),
                })
            })
            .transpose()
    }

    /// Parsed custody keys.
    pub fn custody_keys(&self) -> Result<Vec<VerifyingKey>, CoordinatorError> {
        self.custody_keys
            .iter()
            .map(|k| {
                parse_ed25519_hex("custody_keys", k)
                    .map_err(|e| CoordinatorError::Config(e.to_string()))
            })
            .collect()
    }

    /// Reads and validates the policy file.
    pub fn load_policy(&self) -> Result<permafrost_core::policy::Policy, CoordinatorError> {
        let text = std::fs::read_to_string(&self.policy).map_err(|e| {
            CoordinatorError::Config(format!("policy = {}: {e}", self.policy.display()))
        })?;
        permafrost_core::policy::Policy::from_toml(&text).map_err(|e| {
            CoordinatorError::Config(format!("policy = {}: {e}", self.policy.display()))
        })
    }

    /// How often unfinished refresh commits are looked for (K7).
    pub fn recovery_interval(&self) -> Duration {
        Duration::from_millis(self.health_interval_ms.saturating_mul(4).max(1_000))
    }

    /// Round deadline.
    pub fn round_timeout(&self) -> Duration {
        Duration::from_millis(self.round_timeout_ms)
    }
}
