//! Key-lifecycle ceremonies authorized by an operator quorum (THREATS X5–X7,
//! DESIGN §1 "No ceremony on one say-so").
//!
//! Every lifecycle operation — create a group, refresh it, repair (replace) a
//! member, remove a member, retire the group, clear an exclusion — is a
//! [`LifecycleSpec`] with a canonical, versioned, domain-separated encoding
//! (docs/ceremony-spec.md). `k` distinct operators of the
//! [`OperatorRegistry`] sign its digest. Every node checks the quorum itself
//! ([`verify_quorum`]) and then the spec against its own record of the group
//! ([`QuorumApproved::as_newcomer`], [`QuorumApproved::at_current_epoch`],
//! [`QuorumApproved::already_applied`]). Only those make an
//! [`AuthorizedCeremony`], and the ceremony steps of [`crate::dkg`] and
//! [`crate::repair`] take one, so a step that skipped the check does not
//! compile. The coordinator only relays the signed spec.

use std::collections::BTreeSet;
use std::fmt;

use ed25519_dalek::{Signer, SigningKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{CoreError, GroupName, NodeId, Tier};

mod authorize;
mod registry;

pub use authorize::{verify_quorum, AuthorizedCeremony, HeldGroup, QuorumApproved, Standing};
pub use registry::{verify_chain, OperatorRegistry, RegistryChange, RegistryConfig};

/// The only encoding version this build writes and accepts.
pub const SPEC_VERSION: u16 = 1;
/// Domain separation of the spec encoding.
const SPEC_DOMAIN: &[u8] = b"PERMAFROST/CEREMONY-SPEC";
/// Domain separation of an operator's approval (never a withdrawal approval's).
const APPROVAL_DOMAIN: &[u8] = b"PERMAFROST/CEREMONY-APPROVAL/v1";
/// Longest a spec may be valid: a quorum's say-so does not last for ever.
pub const MAX_SPEC_LIFETIME_SECS: u64 = 7 * 86_400;
/// Length of a SEC1-compressed group key.
const GROUP_KEY_BYTES: usize = 33;

/// What a lifecycle spec does. The codes are part of the encoding; never renumber.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Operation {
    /// A new group by DKG.
    Create,
    /// Proactive refresh: new shares, same key, members and threshold.
    Refresh,
    /// A lost member's share rebuilt on a replacement node.
    Repair,
    /// A member leaves the group.
    RemoveMember,
    /// The group stops signing for good.
    Retire,
    /// An excluded member may sign again.
    ClearExclusion,
    /// The group's operator registry or its quorums change.
    ChangeRegistry,
}

impl Operation {
    /// Every operation, in code order.
    pub const ALL: [Operation; 7] = [
        Operation::Create,
        Operation::Refresh,
        Operation::Repair,
        Operation::RemoveMember,
        Operation::Retire,
        Operation::ClearExclusion,
        Operation::ChangeRegistry,
    ];

    /// One-byte code in the encoding.
    pub fn code(self) -> u8 {
        match self {
            Operation::Create => 1,
            Operation::Refresh => 2,
            Operation::Repair => 3,
            Operation::RemoveMember => 4,
            Operation::Retire => 5,
            Operation::ClearExclusion => 6,
            Operation::ChangeRegistry => 7,
        }
    }

    /// Inverse of [`Operation::code`].
    pub fn from_code(code: u8) -> Result<Self, CoreError> {
        Self::ALL
            .into_iter()
            .find(|op| op.code() == code)
            .ok_or_else(|| CoreError::invalid("operation", format!("unknown code {code}")))
    }

    /// Name as written in specs and config.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "create",
            Operation::Refresh => "refresh",
            Operation::Repair => "repair",
            Operation::RemoveMember => "remove-member",
            Operation::Retire => "retire",
            Operation::ClearExclusion => "clear-exclusion",
            Operation::ChangeRegistry => "change-registry",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Operation {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self, CoreError> {
        Self::ALL
            .into_iter()
            .find(|op| op.as_str() == s)
            .ok_or_else(|| {
                CoreError::invalid(
                    "operation",
                    format!(
                        "{:?}; one of {}",
                        crate::error::preview(s),
                        Self::ALL.map(Operation::as_str).join(", ")
                    ),
                )
            })
    }
}

/// Digest of a spec's canonical encoding: what operators sign.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SpecDigest(pub [u8; 32]);

impl SpecDigest {
    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for SpecDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpecDigest({})", self.to_hex())
    }
}

impl fmt::Display for SpecDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// One lifecycle operation on one key group, as operators approve it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LifecycleSpec {
    /// Encoding version ([`SPEC_VERSION`]).
    pub version: u16,
    /// What it does.
    pub operation: Operation,
    /// Chosen by the proposer; makes two proposals of the same change distinct.
    pub proposal_id: String,
    /// The key group.
    pub group: GroupName,
    /// Its tier (after the operation).
    pub tier: Tier,
    /// The group's current epoch; 0 for create (the group does not exist yet).
    pub epoch: u64,
    /// The group's current 33-byte key; absent exactly for create.
    #[serde(default, with = "opt_hex")]
    pub group_key: Option<Vec<u8>>,
    /// The full membership after the operation, in identifier order.
    pub members: Vec<NodeId>,
    /// Signers needed after the operation.
    pub threshold: u16,
    /// Repair: the lost member; remove-member: the member removed;
    /// clear-exclusion: the excluded member.
    #[serde(default)]
    pub subject: Option<NodeId>,
    /// Repair: the node that takes the lost member's place (and identifier).
    #[serde(default)]
    pub replacement: Option<NodeId>,
    /// When it was proposed, Unix seconds.
    pub created_at: u64,
    /// After this (Unix seconds) no node acts on it.
    pub expires_at: u64,
    /// Change-registry: the group's new operator registry (absent for every
    /// other operation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<RegistryChange>,
}

fn field(out: &mut Vec<u8>, tag: u8, value: &[u8]) {
    out.push(tag);
    out.extend_from_slice(&(value.len() as u32).to_be_bytes());
    out.extend_from_slice(value);
}

impl LifecycleSpec {
    /// The canonical encoding (docs/ceremony-spec.md): fields in tag order, each once, length-prefixed.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(SPEC_DOMAIN);
        out.extend_from_slice(&self.version.to_be_bytes());
        field(&mut out, 1, &[self.operation.code()]);
        field(&mut out, 2, self.proposal_id.as_bytes());
        field(&mut out, 3, self.group.as_str().as_bytes());
        field(&mut out, 4, &[self.tier.code()]);
        field(&mut out, 5, &self.epoch.to_be_bytes());
        field(&mut out, 6, self.group_key.as_deref().unwrap_or_default());
        let mut members = Vec::new();
        for m in &self.members {
            members.extend_from_slice(&(m.as_str().len() as u32).to_be_bytes());
            members.extend_from_slice(m.as_str().as_bytes());
        }
        field(&mut out, 7, &members);
        field(&mut out, 8, &self.threshold.to_be_bytes());
        field(
            &mut out,
            9,
            self.subject
                .as_ref()
                .map(NodeId::as_str)
                .unwrap_or("")
                .as_bytes(),
        );
        field(
            &mut out,
            10,
            self.replacement
                .as_ref()
                .map(NodeId::as_str)
                .unwrap_or("")
                .as_bytes(),
        );
        field(&mut out, 11, &self.created_at.to_be_bytes());
        field(&mut out, 12, &self.expires_at.to_be_bytes());
        // Only a change-registry has field 13, so every other spec's
        // encoding (and digest) is what it was before the field existed.
        if let Some(change) = &self.registry {
            field(&mut out, 13, &change.encode());
        }
        out
    }

    /// SHA-256 of [`LifecycleSpec::encode`].
    pub fn digest(&self) -> SpecDigest {
        SpecDigest(Sha256::digest(self.encode()).into())
    }

    /// Shape checks: what every node refuses before looking at its own records.
    pub fn validate(&self) -> Result<(), CoreError> {
        if self.version != SPEC_VERSION {
            return Err(CoreError::invalid(
                "version",
                format!(
                    "{}; this build reads version {SPEC_VERSION} only",
                    self.version
                ),
            ));
        }
        let id = &self.proposal_id;
        if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(CoreError::invalid(
                "proposal_id",
                format!(
                    "{:?} must be 1..=64 printable ASCII characters without spaces",
                    crate::error::preview(id)
                ),
            ));
        }
        let n = self.members.len();
        if !(2..=255).contains(&n) {
            return Err(CoreError::invalid(
                "members",
                format!("{n} members, need 2..=255"),
            ));
        }
        let mut seen = BTreeSet::new();
        if let Some(m) = self.members.iter().find(|m| !seen.insert(*m)) {
            return Err(CoreError::invalid("members", format!("{m} listed twice")));
        }
        if self.threshold < 2 || usize::from(self.threshold) > n {
            return Err(CoreError::invalid(
                "threshold",
                format!("{} with {n} members, need 2..={n}", self.threshold),
            ));
        }
        if self.expires_at <= self.created_at {
            return Err(CoreError::invalid(
                "expires_at",
                format!(
                    "{} is not after created_at {}",
                    self.expires_at, self.created_at
                ),
            ));
        }
        if self.expires_at - self.created_at > MAX_SPEC_LIFETIME_SECS {
            return Err(CoreError::invalid(
                "expires_at",
                format!(
                    "valid for {} s; at most {MAX_SPEC_LIFETIME_SECS} s",
                    self.expires_at - self.created_at
                ),
            ));
        }
        if let Some(key) = &self.group_key {
            if key.len() != GROUP_KEY_BYTES {
                return Err(CoreError::invalid(
                    "group_key",
                    format!("{} bytes, expected {GROUP_KEY_BYTES}", key.len()),
                ));
            }
        }
        match (&self.registry, self.operation) {
            (Some(change), Operation::ChangeRegistry) => {
                change.validate()?;
            }
            (None, Operation::ChangeRegistry) => {
                return Err(CoreError::invalid(
                    "registry",
                    "a change-registry spec must name the new registry",
                ))
            }
            (Some(_), op) => {
                return Err(CoreError::invalid(
                    "registry",
                    format!("{op} takes no registry; only change-registry does"),
                ))
            }
            (None, _) => {}
        }
        self.validate_operation()
    }

    /// What each operation needs of the optional fields.
    fn validate_operation(&self) -> Result<(), CoreError> {
        let existing = |spec: &Self| -> Result<(), CoreError> {
            if spec.epoch == 0 {
                return Err(CoreError::invalid(
                    "epoch",
                    format!(
                        "0 is for create; {} acts on an existing group",
                        spec.operation
                    ),
                ));
            }
            if spec.group_key.is_none() {
                return Err(CoreError::invalid(
                    "group_key",
                    format!("{} must name the group's current key", spec.operation),
                ));
            }
            Ok(())
        };
        let none = |what: &'static str, v: &Option<NodeId>, op: Operation| match v {
            Some(v) => Err(CoreError::invalid(
                what,
                format!("{v}: {op} takes no {what}"),
            )),
            None => Ok(()),
        };
        let subject = |spec: &Self| {
            spec.subject.clone().ok_or_else(|| {
                CoreError::invalid(
                    "subject",
                    format!("{} must name its member", spec.operation),
                )
            })
        };
        match self.operation {
            Operation::Create => {
                if self.epoch != 0 {
                    return Err(CoreError::invalid(
                        "epoch",
                        format!("{}: a new group has no epoch yet (0)", self.epoch),
                    ));
                }
                if self.group_key.is_some() {
                    return Err(CoreError::invalid(
                        "group_key",
                        "a new group has no key yet",
                    ));
                }
                none("subject", &self.subject, self.operation)?;
                none("replacement", &self.replacement, self.operation)
            }
            Operation::Refresh | Operation::Retire | Operation::ChangeRegistry => {
                existing(self)?;
                none("subject", &self.subject, self.operation)?;
                none("replacement", &self.replacement, self.operation)
            }
            Operation::Repair => {
                existing(self)?;
                let lost = subject(self)?;
                let replacement = self.replacement.clone().ok_or_else(|| {
                    CoreError::invalid("replacement", "a repair must name the replacement node")
                })?;
                if self.members.contains(&lost) {
                    return Err(CoreError::invalid(
                        "subject",
                        format!("the lost member {lost} is still in the resulting membership"),
                    ));
                }
                if !self.members.contains(&replacement) {
                    return Err(CoreError::invalid(
                        "replacement",
                        format!("{replacement} is not in the resulting membership"),
                    ));
                }
                Ok(())
            }
            Operation::RemoveMember => {
                existing(self)?;
                let removed = subject(self)?;
                if self.members.contains(&removed) {
                    return Err(CoreError::invalid(
                        "subject",
                        format!("{removed} is still in the resulting membership"),
                    ));
                }
                none("replacement", &self.replacement, self.operation)
            }
            Operation::ClearExclusion => {
                existing(self)?;
                let node = subject(self)?;
                if !self.members.contains(&node) {
                    return Err(CoreError::invalid(
                        "subject",
                        format!("{node} is not a member of {}", self.group),
                    ));
                }
                none("replacement", &self.replacement, self.operation)
            }
        }
    }
}

/// One operator's signature over a spec's digest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorApproval {
    /// The operator's id in the registry.
    pub operator: String,
    /// Ed25519 signature over [`approval_message`], hex in files.
    #[serde(with = "hex_bytes")]
    pub signature: Vec<u8>,
}

/// What an operator signs: the domain, the spec digest and their own id, so an
/// approval can neither count for another operator nor as a withdrawal approval.
pub fn approval_message(digest: &SpecDigest, operator: &str) -> Vec<u8> {
    let mut m = Vec::with_capacity(APPROVAL_DOMAIN.len() + 32 + 4 + operator.len());
    m.extend_from_slice(APPROVAL_DOMAIN);
    m.extend_from_slice(&digest.0);
    m.extend_from_slice(&(operator.len() as u32).to_be_bytes());
    m.extend_from_slice(operator.as_bytes());
    m
}

/// `operator`'s approval of `spec` with `key`.
pub fn approve(spec: &LifecycleSpec, operator: &str, key: &SigningKey) -> OperatorApproval {
    OperatorApproval {
        operator: operator.to_string(),
        signature: key
            .sign(&approval_message(&spec.digest(), operator))
            .to_bytes()
            .to_vec(),
    }
}

/// A spec with the approvals gathered for it, as the coordinator relays it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedSpec {
    /// The spec.
    pub spec: LifecycleSpec,
    /// Operator approvals of its digest.
    pub approvals: Vec<OperatorApproval>,
}

impl SignedSpec {
    /// Adds `operator`'s approval, replacing an earlier one of theirs.
    pub fn add_approval(&mut self, approval: OperatorApproval) {
        self.approvals.retain(|a| a.operator != approval.operator);
        self.approvals.push(approval);
    }
}

/// Hex for `Vec<u8>` fields in spec files.
pub(crate) mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        hex::decode(text.trim()).map_err(serde::de::Error::custom)
    }
}

/// Hex for `Option<Vec<u8>>` fields in spec files (`null` when absent).
mod opt_hex {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_some(&hex::encode(v)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        match Option::<String>::deserialize(d)? {
            Some(text) => hex::decode(text.trim())
                .map(Some)
                .map_err(serde::de::Error::custom),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
pub(crate) mod testing;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod remove_tests;

#[cfg(test)]
mod registry_tests;
