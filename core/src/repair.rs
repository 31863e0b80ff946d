//! Share repair (repairable threshold scheme, `keys::repairable`): `t`
//! helpers rebuild a lost member's share for a replacement node. Every
//! message is HPKE-encrypted to its recipient and signed by its sender, and
//! bound to the hash of the whole repair spec, so the coordinator relaying
//! them learns nothing and cannot mix repairs. Nobody learns the group key's secret.

use std::collections::BTreeMap;

use frost_secp256k1::keys::repairable::{
    repair_share_part1, repair_share_part2, repair_share_part3, Delta, Sigma,
};
use frost_secp256k1::keys::{KeyPackage, PublicKeyPackage};
use frost_secp256k1::Identifier;
use rand_core::{CryptoRng, RngCore};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::ceremony::{AuthorizedCeremony, Operation, Standing};
use crate::dkg::{identifier, transcript, SealedRound2};
use crate::identity::{seal_to, verify_ed25519, NodeIdentity};
use crate::manifest::Directory;
use crate::{CoreError, GroupName, NodeId};

mod prepare;
pub use prepare::{check_acks, sign_ack, PrepareAck};

/// What a repair is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepairSpec {
    /// Random id chosen by the coordinator.
    pub repair_id: String,
    /// The group.
    pub group: GroupName,
    /// Signers needed.
    pub threshold: u16,
    /// Members in identifier order, as before the repair.
    pub members: Vec<NodeId>,
    /// The member whose share is lost.
    pub lost: NodeId,
    /// The node that receives the lost member's share.
    pub replacement: NodeId,
    /// Exactly `threshold` remaining members who help.
    pub helpers: Vec<NodeId>,
    /// Members removed earlier (tombstones in `members`): never lost, never a
    /// helper, never asked to acknowledge.
    pub removed: Vec<NodeId>,
    /// Digest of the operator-approved lifecycle spec this repair runs under
    /// ([`crate::ceremony`]); part of the hash, so every message is bound to it.
    pub authorization: [u8; 32],
}

impl RepairSpec {
    /// Shape checks.
    pub fn validate(&self) -> Result<(), CoreError> {
        if !self.members.contains(&self.lost) {
            return Err(CoreError::invalid(
                "lost",
                format!("{} is not a member of {}", self.lost, self.group),
            ));
        }
        if self.members.contains(&self.replacement) {
            return Err(CoreError::invalid(
                "replacement",
                format!("{} is already a member of {}", self.replacement, self.group),
            ));
        }
        let distinct: std::collections::BTreeSet<_> = self.removed.iter().collect();
        if distinct.len() != self.removed.len() {
            return Err(CoreError::invalid("removed", "names a member twice"));
        }
        for m in &self.removed {
            if !self.members.contains(m) || *m == self.lost {
                return Err(CoreError::invalid(
                    "removed",
                    format!("{m} is not a member, or is the lost member"),
                ));
            }
        }
        if self.helpers.len() != usize::from(self.threshold) {
            return Err(CoreError::invalid(
                "helpers",
                format!(
                    "{} helpers, the threshold is {}",
                    self.helpers.len(),
                    self.threshold
                ),
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for h in &self.helpers {
            if *h == self.lost
                || !self.members.contains(h)
                || self.removed.contains(h)
                || !seen.insert(h)
            {
                return Err(CoreError::invalid(
                    "helpers",
                    format!("{h} cannot help (lost, removed, not a member, or listed twice)"),
                ));
            }
        }
        Ok(())
    }

    /// Domain-separated hash of the spec.
    pub fn hash(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"PERMAFROST/REPAIR-SPEC/v2");
        h.update(self.authorization);
        let mut put = |b: &[u8]| {
            h.update((b.len() as u32).to_be_bytes());
            h.update(b);
        };
        put(self.repair_id.as_bytes());
        put(self.group.as_str().as_bytes());
        put(&self.threshold.to_be_bytes());
        for m in &self.members {
            put(m.as_str().as_bytes());
        }
        put(self.lost.as_str().as_bytes());
        put(self.replacement.as_str().as_bytes());
        for m in &self.helpers {
            put(m.as_str().as_bytes());
        }
        // Appended only when there is one, so earlier repairs hash as before.
        if !self.removed.is_empty() {
            put(b"removed");
            put(&(self.removed.len() as u32).to_be_bytes());
            for m in &self.removed {
                put(m.as_str().as_bytes());
            }
        }
        h.finalize().into()
    }

    /// FROST identifier of a member.
    pub fn identifier_of(&self, node: &NodeId) -> Result<Identifier, CoreError> {
        let i = self.members.iter().position(|m| m == node).ok_or_else(|| {
            CoreError::invalid(
                "member",
                format!("{node} is not a member of {}", self.group),
            )
        })?;
        identifier(i)
    }

    /// Whether `authorized` is the operators' approval of exactly this repair
    /// (X5, X7): the same group, threshold, lost member and replacement, the
    /// resulting membership it approved, bound by its digest, and the node
    /// standing where the step needs it.
    pub fn check_authorized(
        &self,
        authorized: &AuthorizedCeremony,
        standing: &[Standing],
    ) -> Result<(), CoreError> {
        let approved = authorized.spec();
        if approved.operation != Operation::Repair {
            return Err(CoreError::refused(format!(
                "the operators approved a {} of {}, not a repair",
                approved.operation, approved.group
            )));
        }
        if !standing.contains(&authorized.standing()) {
            return Err(CoreError::refused(format!(
                "this step of repair {} does not fit this node's record of {}",
                self.repair_id, self.group
            )));
        }
        if self.authorization != authorized.digest().0 {
            return Err(CoreError::refused(
                "the repair names another approved spec than the one presented",
            ));
        }
        if approved.group != self.group
            || approved.threshold != self.threshold
            || approved.subject.as_ref() != Some(&self.lost)
            || approved.replacement.as_ref() != Some(&self.replacement)
            || approved.members != self.new_active_members()
        {
            return Err(CoreError::refused(format!(
                "the repair's group, threshold, lost member, replacement or resulting members differ from what the operators approved for {}",
                approved.group
            )));
        }
        Ok(())
    }

    /// Members after the repair that are not removed: what the operators'
    /// spec names as the resulting membership.
    pub fn new_active_members(&self) -> Vec<NodeId> {
        self.new_members()
            .into_iter()
            .filter(|m| !self.removed.contains(m))
            .collect()
    }

    /// Members after the repair: the replacement takes the lost member's place (and identifier).
    pub fn new_members(&self) -> Vec<NodeId> {
        self.members
            .iter()
            .map(|m| {
                if *m == self.lost {
                    self.replacement.clone()
                } else {
                    m.clone()
                }
            })
            .collect()
    }
}

/// Who is sending, and with which keys.
struct Sender<'a> {
    spec: &'a RepairSpec,
    me: &'a NodeId,
    identity: &'a NodeIdentity,
    directory: &'a Directory,
}

fn seal(
    from: &Sender<'_>,
    label: &[u8],
    to: &NodeId,
    plaintext: &[u8],
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<SealedRound2, CoreError> {
    let Sender {
        spec,
        me,
        identity,
        directory,
    } = from;
    let h = spec.hash();
    let info = transcript(label, &h, &[me.as_str().as_bytes(), to.as_str().as_bytes()]);
    let (encapped_key, ciphertext) =
        seal_to(&directory.get(to)?.encryption_key, &info, plaintext, rng)?;
    let signature = identity
        .sign(&transcript(
            label,
            &h,
            &[
                me.as_str().as_bytes(),
                to.as_str().as_bytes(),
                &encapped_key,
                &ciphertext,
            ],
        ))
        .to_vec();
    Ok(SealedRound2 {
        sender: (*me).clone(),
        recipient: to.clone(),
        encapped_key,
        ciphertext,
        signature,
    })
}

fn open(
    spec: &RepairSpec,
    label: &[u8],
    me: &NodeId,
    msg: &SealedRound2,
    identity: &NodeIdentity,
    directory: &Directory,
) -> Result<Zeroizing<Vec<u8>>, CoreError> {
    if msg.recipient != *me {
        return Err(CoreError::invalid(
            "recipient",
            format!("message for {} delivered to {me}", msg.recipient),
        ));
    }
    let h = spec.hash();
    let key = directory.get(&msg.sender)?.identity_key;
    let t = transcript(
        label,
        &h,
        &[
            msg.sender.as_str().as_bytes(),
            me.as_str().as_bytes(),
            &msg.encapped_key,
            &msg.ciphertext,
        ],
    );
    if !verify_ed25519(&key, &t, &msg.signature) {
        return Err(CoreError::PeerMisbehaved {
            culprit: msg.sender.clone(),
            reason: "repair message signature invalid".into(),
        });
    }
    let info = transcript(
        label,
        &h,
        &[msg.sender.as_str().as_bytes(), me.as_str().as_bytes()],
    );
    identity.open(&msg.encapped_key, &msg.ciphertext, &info)
}

/// Helper step 1: deltas for every helper (including itself), each sealed to that helper.
pub fn helper_deltas(
    spec: &RepairSpec,
    authorized: &AuthorizedCeremony,
    me: &NodeId,
    key_package: &KeyPackage,
    identity: &NodeIdentity,
    directory: &Directory,
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<Vec<SealedRound2>, CoreError> {
    spec.validate()?;
    spec.check_authorized(authorized, &[Standing::Current, Standing::Applied])?;
    if !spec.helpers.contains(me) {
        return Err(CoreError::refused(format!(
            "{me} is not a helper of repair {}",
            spec.repair_id
        )));
    }
    let helpers: Vec<Identifier> = spec
        .helpers
        .iter()
        .map(|h| spec.identifier_of(h))
        .collect::<Result<_, _>>()?;
    let lost = spec.identifier_of(&spec.lost)?;
    let deltas =
        repair_share_part1::<frost_secp256k1::Secp256K1Sha256, _>(&helpers, key_package, rng, lost)
            .map_err(|e| CoreError::Frost(e.to_string()))?;
    let mut out = Vec::new();
    for helper in &spec.helpers {
        let id = spec.identifier_of(helper)?;
        let delta = deltas
            .get(&id)
            .ok_or_else(|| CoreError::Frost("missing delta".into()))?;
        let bytes = Zeroizing::new(delta.serialize());
        let from = Sender {
            spec,
            me,
            identity,
            directory,
        };
        out.push(seal(&from, b"repair-delta", helper, &bytes, rng)?);
    }
    Ok(out)
}

/// Helper step 2: sums the deltas addressed to this helper into a sigma sealed to the replacement.
pub fn helper_sigma(
    spec: &RepairSpec,
    authorized: &AuthorizedCeremony,
    me: &NodeId,
    deltas: &[SealedRound2],
    identity: &NodeIdentity,
    directory: &Directory,
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<SealedRound2, CoreError> {
    spec.validate()?;
    spec.check_authorized(authorized, &[Standing::Applied])?;
    let mut by_sender = BTreeMap::new();
    for d in deltas.iter().filter(|d| d.recipient == *me) {
        if !spec.helpers.contains(&d.sender) {
            return Err(CoreError::refused(format!(
                "delta from non-helper {}",
                d.sender
            )));
        }
        let plain = open(spec, b"repair-delta", me, d, identity, directory)?;
        let delta = Delta::deserialize(&plain).map_err(|e| CoreError::PeerMisbehaved {
            culprit: d.sender.clone(),
            reason: format!("malformed delta: {e}"),
        })?;
        by_sender.insert(d.sender.clone(), delta);
    }
    if by_sender.len() != spec.helpers.len() {
        return Err(CoreError::Aborted(format!(
            "{} of {} deltas received",
            by_sender.len(),
            spec.helpers.len()
        )));
    }
    let deltas: Vec<Delta> = by_sender.into_values().collect();
    let sigma = repair_share_part2(&deltas);
    let bytes = Zeroizing::new(sigma.serialize());
    let from = Sender {
        spec,
        me,
        identity,
        directory,
    };
    seal(&from, b"repair-sigma", &spec.replacement, &bytes, rng)
}

/// Replacement: combines the helpers' sigmas into the lost member's key
/// package, checked against the group's public key package.
pub fn replacement_receive(
    spec: &RepairSpec,
    authorized: &AuthorizedCeremony,
    me: &NodeId,
    sigmas: &[SealedRound2],
    public_key_package: &PublicKeyPackage,
    identity: &NodeIdentity,
    directory: &Directory,
) -> Result<KeyPackage, CoreError> {
    spec.validate()?;
    spec.check_authorized(authorized, &[Standing::Newcomer])?;
    // The share is accepted only for the key the operators named.
    let key = public_key_package
        .verifying_key()
        .serialize()
        .map_err(|e| CoreError::Frost(e.to_string()))?;
    if authorized.spec().group_key.as_deref() != Some(key.as_slice()) {
        return Err(CoreError::refused(format!(
            "the public key package is not of the key the operators approved for {}",
            spec.group
        )));
    }
    if *me != spec.replacement {
        return Err(CoreError::refused(format!(
            "{me} is not the replacement of repair {}",
            spec.repair_id
        )));
    }
    let mut by_sender = BTreeMap::new();
    for s in sigmas {
        if !spec.helpers.contains(&s.sender) {
            return Err(CoreError::refused(format!(
                "sigma from non-helper {}",
                s.sender
            )));
        }
        let plain = open(spec, b"repair-sigma", me, s, identity, directory)?;
        let sigma = Sigma::deserialize(&plain).map_err(|e| CoreError::PeerMisbehaved {
            culprit: s.sender.clone(),
            reason: format!("malformed sigma: {e}"),
        })?;
        by_sender.insert(s.sender.clone(), sigma);
    }
    if by_sender.len() != spec.helpers.len() {
        return Err(CoreError::Aborted(format!(
            "{} of {} sigmas received",
            by_sender.len(),
            spec.helpers.len()
        )));
    }
    let sigmas: Vec<Sigma> = by_sender.into_values().collect();
    let id = spec.identifier_of(&spec.lost)?;
    let key_package = repair_share_part3(&sigmas, id, public_key_package)
        .map_err(|e| CoreError::Frost(e.to_string()))?;
    // The rebuilt share must be the one the group committed to for this identifier.
    if public_key_package.verifying_shares().get(&id) != Some(key_package.verifying_share()) {
        return Err(CoreError::Aborted(
            "rebuilt share does not match the group's verifying share".into(),
        ));
    }
    Ok(key_package)
}

#[cfg(test)]
mod tests;
