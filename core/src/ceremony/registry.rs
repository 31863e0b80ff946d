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
            let field = format!("operators.keys.{}", crate::error::preview(id));
            if !valid_operator_id(id) {
                return Err(config_error(
                    field,
                    format!("{:?}", crate::error::preview(hex_key)),
                    "an operator id is 1..=64 characters of A-Z a-z 0-9 . _ -",
                ));
            }
            let key = parse_ed25519_hex("operator key", hex_key).map_err(|e| {
                config_error(
                    field.clone(),
                    format!("{:?}", crate::error::preview(hex_key)),
                    e,
                )
            })?;
            // One person, one seat: the same key under two ids would count twice.
            if let Some(other) = seen.insert(key.to_bytes(), id.clone()) {
                return Err(config_error(
                    field,
                    format!("{:?}", crate::error::preview(hex_key)),
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
    pub(crate) fn canonical_text(&self) -> String {
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

/// What a change-registry spec installs for its group, bound to the registry
/// it replaces: the group's registry sequence moves from `seq − 1` to `seq`,
/// and only from the registry whose hash is `previous`. Sequences only grow,
/// so an old change can never be replayed to bring back a registry the
/// operators since replaced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryChange {
    /// The group's registry sequence after the change: 1 for the first change
    /// (0 is the registry in the nodes' config, which a group starts with).
    pub seq: u64,
    /// [`OperatorRegistry::hash`] of the registry in force before, hex in files.
    #[serde(with = "super::hex_bytes")]
    pub previous: Vec<u8>,
    /// The new registry.
    pub registry: RegistryConfig,
}

impl RegistryChange {
    /// Its bytes in a spec's encoding (field 13): `u64be seq || previous (32)
    /// || canonical text of the new registry` (docs/ceremony-spec.md).
    pub fn encode(&self) -> Vec<u8> {
        let text = self.registry.canonical_text();
        let mut out = Vec::with_capacity(8 + self.previous.len() + text.len());
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.previous);
        out.extend_from_slice(text.as_bytes());
        out
    }

    /// Shape checks: a sequence after 0, a 32-byte previous hash, and a new
    /// registry that builds, written in its canonical form (lower-case keys),
    /// so the encoding names exactly what the file shows.
    pub fn validate(&self) -> Result<OperatorRegistry, CoreError> {
        if self.seq == 0 {
            return Err(CoreError::invalid(
                "registry.seq",
                "0 is the config's registry; a change starts at 1",
            ));
        }
        if self.previous.len() != 32 {
            return Err(CoreError::invalid(
                "registry.previous",
                format!(
                    "{} bytes, expected a 32-byte registry hash",
                    self.previous.len()
                ),
            ));
        }
        for (id, key) in &self.registry.keys {
            if key.as_str() != key.trim().to_ascii_lowercase() {
                return Err(CoreError::invalid(
                    "registry.keys",
                    format!(
                        "{:?}'s key must be written in lower-case hex without spaces",
                        crate::error::preview(id)
                    ),
                ));
            }
        }
        self.registry.build()
    }

    /// Checks that this change follows the registry a node holds for the
    /// group now (sequence `current_seq`, hash `current`), naming both when
    /// it does not.
    pub fn follows(&self, current_seq: u64, current: &[u8; 32]) -> Result<(), CoreError> {
        if self.seq != current_seq.saturating_add(1) {
            return Err(CoreError::refused(format!(
                "the change is registry {} of the group; this node holds registry {current_seq}, \
                 so only {} can follow",
                self.seq,
                current_seq.saturating_add(1)
            )));
        }
        if self.previous.as_slice() != current.as_slice() {
            return Err(CoreError::refused(format!(
                "the change replaces registry {}…; the one in force here is {}…",
                hex::encode(self.previous.get(..8).unwrap_or(&self.previous)),
                hex::encode(&current[..8])
            )));
        }
        Ok(())
    }
}

/// Checks that `changes` are the chain of registry changes of `group` (of
/// the key `group_key`), sequences 1, 2, … in order, each naming the registry
/// before it and approved by that registry's quorum as of when its operators
/// dated it, trusted from where it passes through `base`, this daemon's own
/// config registry: at the start (a config never edited), or at the registry
/// some change installed (a config edited to it afterwards), and checked
/// link by link from there. Returns the last sequence and the registry in
/// force after it (`base` and 0 for an empty chain).
///
/// What a node that does not hold the group yet (a repair's replacement), or
/// a coordinator reading a member's chain, takes the group's registry from.
pub fn verify_chain(
    base: &OperatorRegistry,
    group: &crate::GroupName,
    group_key: &[u8],
    changes: &[super::SignedSpec],
) -> Result<(u64, OperatorRegistry), CoreError> {
    let link = |i: usize| -> Result<(&RegistryChange, OperatorRegistry), CoreError> {
        let spec = &changes[i].spec;
        let change = spec
            .registry
            .as_ref()
            .filter(|_| {
                spec.operation == Operation::ChangeRegistry
                    && &spec.group == group
                    && spec.group_key.as_deref() == Some(group_key)
            })
            .ok_or_else(|| {
                CoreError::refused(format!(
                    "registry chain: change {} is not a registry change of {group} and its key",
                    i + 1
                ))
            })?;
        let built = change
            .validate()
            .map_err(|e| CoreError::refused(format!("registry chain, change {}: {e}", i + 1)))?;
        Ok((change, built))
    };
    let mut links = Vec::with_capacity(changes.len());
    for i in 0..changes.len() {
        links.push(link(i)?);
    }
    let anchor = base.hash();
    // Where the chain passes through this daemon's own registry.
    let start = match links.iter().rposition(|(_, built)| built.hash() == anchor) {
        Some(k) => k + 1,
        None if links.is_empty() => 0,
        None => links
            .iter()
            .position(|(c, _)| c.previous.as_slice() == anchor.as_slice())
            .ok_or_else(|| {
                CoreError::refused(format!(
                    "registry chain of {group}: no change replaces or installs this daemon's \
                     own registry ({}…), so nothing vouches for it",
                    &hex::encode(anchor)[..16]
                ))
            })?,
    };
    let mut current = base.clone();
    for (i, (change, built)) in links.into_iter().enumerate().skip(start) {
        change
            .follows(i as u64, &current.hash())
            .map_err(|e| CoreError::refused(format!("registry chain, change {}: {e}", i + 1)))?;
        super::verify_quorum(&changes[i], &current, changes[i].spec.created_at, 0)
            .map_err(|e| CoreError::refused(format!("registry chain, change {}: {e}", i + 1)))?;
        current = built;
    }
    Ok((changes.len() as u64, current))
}
