//! The prepare phase of a repair: every remaining member acknowledges the
//! next epoch before any helper releases a delta (THREATS X6).
//!
//! A remaining member (every member but the lost one) checks the operators'
//! repair spec against its own record and signs a [`PrepareAck`] of exactly
//! what the group becomes: this repair (its spec hash binds the approved
//! lifecycle spec, the members before, the lost member, the replacement and
//! the helpers), the next epoch, the group key and the hash of the public key
//! package *it* holds. The set of every remaining member's ack is the
//! repair's certificate ([`check_acks`]): a helper releases deltas only with
//! it, a member moves to the next epoch only with it, and the replacement
//! accepts a share only for a public key package it names. A member that was
//! never told of a repair has signed no ack, so a coordinator that hides a
//! repair from some members cannot run it at all.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use super::RepairSpec;
use crate::dkg::transcript;
use crate::identity::{verify_ed25519, NodeIdentity};
use crate::manifest::Directory;
use crate::{CoreError, NodeId};

/// One remaining member's signed acknowledgement of a repair's next epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrepareAck {
    /// The member that signed.
    pub member: NodeId,
    /// Hash of the operator registry in force for the group on that member
    /// (`OperatorRegistry::hash`): a replacement takes its share only under
    /// the registry every remaining member holds.
    pub registry: Vec<u8>,
    /// Ed25519 signature by the member's identity key over [`ack_transcript`].
    pub signature: Vec<u8>,
}

/// What a member acknowledges: this repair, moving the group to `next_epoch`
/// with `group_public_key` and the public key package whose bytes are
/// `public_key_package`, under the operator registry whose hash is `registry`.
fn ack_transcript(
    spec: &RepairSpec,
    next_epoch: u64,
    group_public_key: &[u8],
    public_key_package: &[u8],
    registry: &[u8],
) -> Vec<u8> {
    let package_hash: [u8; 32] = Sha256::digest(public_key_package).into();
    transcript(
        b"repair-prepare-ack",
        &spec.hash(),
        &[
            &next_epoch.to_be_bytes(),
            group_public_key,
            &package_hash,
            registry,
        ],
    )
}

impl RepairSpec {
    /// Every member but the lost and the removed ones, in identifier order:
    /// who must acknowledge.
    pub fn remaining(&self) -> Vec<NodeId> {
        self.members
            .iter()
            .filter(|m| **m != self.lost && !self.removed.contains(m))
            .cloned()
            .collect()
    }
}

/// `member`'s acknowledgement of `spec` (the caller checked the spec against
/// its own record first, and passes its own group key and package).
pub fn sign_ack(
    spec: &RepairSpec,
    member: &NodeId,
    identity: &NodeIdentity,
    next_epoch: u64,
    group_public_key: &[u8],
    public_key_package: &[u8],
    registry: &[u8],
) -> PrepareAck {
    let t = ack_transcript(
        spec,
        next_epoch,
        group_public_key,
        public_key_package,
        registry,
    );
    PrepareAck {
        member: member.clone(),
        registry: registry.to_vec(),
        signature: identity.sign(&t).to_vec(),
    }
}

/// Checks that `acks` hold a valid acknowledgement from every remaining
/// member of `spec` of exactly `next_epoch`, `group_public_key` and
/// `public_key_package`, and nothing from anyone else, all under one
/// operator registry: `registry` when the caller knows the hash it must be
/// (a node: its own), else whichever one they agree on. Returns that hash.
pub fn check_acks(
    spec: &RepairSpec,
    directory: &Directory,
    acks: &[PrepareAck],
    next_epoch: u64,
    group_public_key: &[u8],
    public_key_package: &[u8],
    registry: Option<&[u8]>,
) -> Result<Vec<u8>, CoreError> {
    let remaining = spec.remaining();
    let expected = registry
        .map(<[u8]>::to_vec)
        .or_else(|| acks.first().map(|a| a.registry.clone()))
        .unwrap_or_default();
    let t = ack_transcript(
        spec,
        next_epoch,
        group_public_key,
        public_key_package,
        &expected,
    );
    let mut seen = BTreeMap::new();
    for ack in acks {
        if ack.registry != expected {
            return Err(CoreError::refused(format!(
                "repair {}: {} acknowledged it under another operator registry ({}…) than {}…",
                spec.repair_id,
                ack.member,
                hex::encode(ack.registry.get(..8).unwrap_or(&ack.registry)),
                hex::encode(expected.get(..8).unwrap_or(&expected))
            )));
        }
        if !remaining.contains(&ack.member) {
            return Err(CoreError::refused(format!(
                "repair {}: {} is not a remaining member and cannot acknowledge it",
                spec.repair_id, ack.member
            )));
        }
        let key = directory.get(&ack.member)?.identity_key;
        if !verify_ed25519(&key, &t, &ack.signature) {
            return Err(CoreError::refused(format!(
                "repair {}: {}'s acknowledgement is not of this repair, epoch {next_epoch}, \
                 group key and public key package",
                spec.repair_id, ack.member
            )));
        }
        seen.insert(ack.member.clone(), ());
    }
    let missing: Vec<&str> = remaining
        .iter()
        .filter(|m| !seen.contains_key(*m))
        .map(|m| m.as_str())
        .collect();
    if !missing.is_empty() {
        return Err(CoreError::refused(format!(
            "repair {} is not acknowledged by every remaining member: none from {}",
            spec.repair_id,
            missing.join(", ")
        )));
    }
    Ok(expected)
}
