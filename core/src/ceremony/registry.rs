//! The operator registry: operator id → Ed25519 public key, and the quorum
//! (k of m) each lifecycle operation needs, as every node's config names it.

use std::collections::BTreeMap;
use std::fmt;

use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::Operation;
use crate::identity::parse_ed25519_hex;
use crate::CoreError;

/// The `[operators]` section of a node's (or the coordinator's) config.
///
/// ```toml
/// [operators]
/// default_quorum = 2
/// [operators.keys]
/// alice = "<Ed25519 public key, hex>"
/// [operators.quorum]
/// repair = 3
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// Approvals every operation needs unless `quorum` says otherwise.
    pub default_quorum: u16,
    /// Operator id → Ed25519 public key (hex).
    pub keys: BTreeMap<String, String>,
    /// Per-operation quorums that differ from the default.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub quorum: BTreeMap<Operation, u16>,
}

fn config_error(field: String, value: impl fmt::Display, reason: impl fmt::Display) -> CoreError {
    CoreError::invalid("operators", format!("{field} = {value}: {reason}"))
}

/// Whether `id` may name an operator: 1..=64 of `A-Z a-z 0-9 . _ -`.
fn valid_operator_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl RegistryConfig {
    /// Checks every field and builds the registry. The error's reason reads
    /// `operators.<field> = <value>: <why>`.
    pub fn build(&self) -> Result<OperatorRegistry, CoreError> {
        let mut keys = BTreeMap::new();
        let mut seen = BTreeMap::new();
        for (id, hex_key) in &self.keys {
            let field = format!("operators.keys.{id}");
            if !valid_operator_id(id) {
                return Err(config_error(
                    field,
                    format!("{hex_key:?}"),
                    "an operator id is 1..=64 characters of A-Z a-z 0-9 . _ -",
                ));
            }
            let key = parse_ed25519_hex("operator key", hex_key)
                .map_err(|e| config_error(field.clone(), format!("{hex_key:?}"), e))?;
            // One person, one seat: the same key under two ids would count twice.
            if let Some(other) = seen.insert(key.to_bytes(), id.clone()) {
                return Err(config_error(
                    field,
                    format!("{hex_key:?}"),
                    format!("the same key as operators.keys.{other}"),
                ));
            }
            keys.insert(id.clone(), key);
        }
        let m = keys.len();
        if m < 2 {
            return Err(config_error(
                "operators.keys".into(),
                format!("{m} operator(s)"),
                "register at least 2 operators: no ceremony on one say-so",
            ));
        }
        let check = |field: String, k: u16| {
            if k < 2 || usize::from(k) > m {
                Err(config_error(
                    field,
                    k,
                    format!("a quorum must be 2..={m} (the registered operators)"),
                ))
            } else {
                Ok(())
            }
        };
        check("operators.default_quorum".into(), self.default_quorum)?;
        for (op, k) in &self.quorum {
            check(format!("operators.quorum.{op}"), *k)?;
        }
        Ok(OperatorRegistry {
            keys,
            default_quorum: self.default_quorum,
            quorum: self.quorum.clone(),
            hash: Sha256::digest(self.canonical_text()).into(),
        })
    }

    /// A text that names the registry exactly, for its hash (compared across nodes).
    fn canonical_text(&self) -> String {
        let mut text = format!("default_quorum={}\n", self.default_quorum);
        for (id, key) in &self.keys {
            text.push_str(&format!("key {id}={}\n", key.trim().to_ascii_lowercase()));
        }
        for (op, k) in &self.quorum {
            text.push_str(&format!("quorum {op}={k}\n"));
        }
        text
    }
}

/// Registered operators and the quorum each operation needs (k of m).
#[derive(Clone, PartialEq, Eq)]
pub struct OperatorRegistry {
    keys: BTreeMap<String, VerifyingKey>,
    default_quorum: u16,
    quorum: BTreeMap<Operation, u16>,
    hash: [u8; 32],
}

impl fmt::Debug for OperatorRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OperatorRegistry")
            .field("operators", &self.keys.keys().collect::<Vec<_>>())
            .field("default_quorum", &self.default_quorum)
            .field("quorum", &self.quorum)
            .finish()
    }
}

impl OperatorRegistry {
    /// Approvals `operation` needs.
    pub fn quorum(&self, operation: Operation) -> u16 {
        self.quorum
            .get(&operation)
            .copied()
            .unwrap_or(self.default_quorum)
    }

    /// The key of operator `id`, if registered.
    pub fn key(&self, id: &str) -> Option<&VerifyingKey> {
        self.keys.get(id)
    }

    /// Registered operator ids.
    pub fn operators(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// SHA-256 naming this registry (ids, keys and quorums); equal on every node that agrees.
    pub fn hash(&self) -> [u8; 32] {
        self.hash
    }
}
