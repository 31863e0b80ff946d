//! What a ceremony is about ([`CeremonySpec`]): its shape, its hash (which
//! binds every message), who takes part, and whether it is exactly what the
//! operators approved.

use frost_secp256k1::Identifier;
use sha2::{Digest, Sha256};

use super::{identifier, lp};
use crate::ceremony::{AuthorizedCeremony, Operation, Standing};
use crate::{CoreError, GroupName, NodeId, Tier};

/// Everything a ceremony is about. Its hash binds every message of the ceremony.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CeremonySpec {
    /// Random id chosen by the coordinator.
    pub ceremony_id: String,
    /// Name of the key group being created.
    pub group: GroupName,
    /// Tier of the key group.
    pub tier: Tier,
    /// Signers needed (`t`).
    pub threshold: u16,
    /// Members in order; member `i` (0-based) has FROST identifier `i + 1`.
    /// Removed members keep their place (and so every identifier stays).
    pub members: Vec<NodeId>,
    /// Members that take no part (removed, or being removed by this
    /// refresh): a refresh among the others leaves them with no live share.
    /// Always empty for a new group.
    pub removed: Vec<NodeId>,
    /// A refresh of an existing group's shares rather than a new key.
    pub refresh: bool,
    /// Digest of the operator-approved lifecycle spec this ceremony runs under
    /// ([`crate::ceremony`]); part of the hash, so every message is bound to it.
    pub authorization: [u8; 32],
}

impl CeremonySpec {
    /// Checks the spec's shape: 2 ≤ t ≤ n ≤ 255, no duplicate member.
    pub fn validate(&self) -> Result<(), CoreError> {
        let n = self.members.len();
        if !(2..=255).contains(&n) {
            return Err(CoreError::invalid(
                "members",
                format!("{n} members, need 2..=255"),
            ));
        }
        if self.threshold < 2 || usize::from(self.threshold) > n {
            return Err(CoreError::invalid(
                "threshold",
                format!("{} with {n} members, need 2..={n}", self.threshold),
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for m in &self.members {
            if !seen.insert(m) {
                return Err(CoreError::invalid("members", format!("{m} listed twice")));
            }
        }
        let mut gone = std::collections::BTreeSet::new();
        for m in &self.removed {
            if !self.members.contains(m) || !gone.insert(m) {
                return Err(CoreError::invalid(
                    "removed",
                    format!("{m} is not a member, or listed twice"),
                ));
            }
        }
        if !self.removed.is_empty() && !self.refresh {
            return Err(CoreError::invalid(
                "removed",
                "a new group has no removed members",
            ));
        }
        let taking_part = n - self.removed.len();
        if taking_part < 2 || taking_part < usize::from(self.threshold) {
            return Err(CoreError::invalid(
                "removed",
                format!(
                    "{taking_part} member(s) would take part, need at least 2 and the threshold {}",
                    self.threshold
                ),
            ));
        }
        if self.ceremony_id.is_empty() || self.ceremony_id.len() > 64 {
            return Err(CoreError::invalid(
                "ceremony id",
                "must be 1..=64 characters",
            ));
        }
        Ok(())
    }

    /// Domain-separated hash of the spec.
    pub fn hash(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"PERMAFROST/DKG-SPEC/v2");
        h.update([u8::from(self.refresh)]);
        h.update(self.authorization);
        lp(&mut h, self.ceremony_id.as_bytes());
        lp(&mut h, self.group.as_str().as_bytes());
        h.update([self.tier.code()]);
        h.update(self.threshold.to_be_bytes());
        h.update((self.members.len() as u32).to_be_bytes());
        for m in &self.members {
            lp(&mut h, m.as_str().as_bytes());
        }
        // Appended only when there is one, so a ceremony without removed
        // members hashes as before (stored commit certificates stay valid).
        if !self.removed.is_empty() {
            h.update(b"removed");
            h.update((self.removed.len() as u32).to_be_bytes());
            for m in &self.removed {
                lp(&mut h, m.as_str().as_bytes());
            }
        }
        h.finalize().into()
    }

    /// The members that take part, in identifier order (every member but the removed).
    pub fn participants(&self) -> Vec<NodeId> {
        self.members
            .iter()
            .filter(|m| !self.removed.contains(m))
            .cloned()
            .collect()
    }

    /// Whether `authorized` is the operator-approved spec of exactly this
    /// ceremony (X5): the same operation, group, tier, threshold and members in
    /// the same order, bound by its digest, and the node stands where the
    /// operation needs it (a newcomer to a new group, a member of a refreshed one).
    pub fn check_authorized(&self, authorized: &AuthorizedCeremony) -> Result<(), CoreError> {
        let spec = self;
        let approved = authorized.spec();
        let (operation, standing) = match (spec.refresh, approved.operation) {
            // A removal is a refresh among the remaining members (DESIGN §3).
            (true, Operation::RemoveMember) => (Operation::RemoveMember, Standing::Current),
            (true, _) => (Operation::Refresh, Standing::Current),
            (false, _) => (Operation::Create, Standing::Newcomer),
        };
        if approved.operation != operation || authorized.standing() != standing {
            return Err(CoreError::refused(format!(
                "the operators approved a {} of {}, not this {}",
                approved.operation, approved.group, operation
            )));
        }
        if spec.authorization != authorized.digest().0 {
            return Err(CoreError::refused(
                "the ceremony names another approved spec than the one presented",
            ));
        }
        if operation == Operation::RemoveMember
            && !approved
                .subject
                .as_ref()
                .is_some_and(|s| spec.removed.contains(s))
        {
            return Err(CoreError::refused(
                "the ceremony lets the member the operators removed take part",
            ));
        }
        if approved.group != spec.group
            || approved.tier != spec.tier
            || approved.threshold != spec.threshold
            || approved.members != spec.participants()
        {
            return Err(CoreError::refused(format!(
                "the ceremony's group, tier, threshold or members differ from what the operators approved for {}",
                approved.group
            )));
        }
        Ok(())
    }

    /// FROST identifier of `member`, who must take part.
    pub fn identifier_of(&self, member: &NodeId) -> Result<Identifier, CoreError> {
        if self.removed.contains(member) {
            return Err(CoreError::refused(format!(
                "{member} was removed and takes no part in ceremony {}",
                self.ceremony_id
            )));
        }
        let index = self
            .members
            .iter()
            .position(|m| m == member)
            .ok_or_else(|| {
                CoreError::refused(format!(
                    "{member} is not a member of ceremony {}",
                    self.ceremony_id
                ))
            })?;
        identifier(index)
    }

    pub(super) fn member_of(&self, id: &Identifier) -> Option<&NodeId> {
        self.members
            .iter()
            .enumerate()
            .find(|(i, _)| identifier(*i).ok().as_ref() == Some(id))
            .map(|(_, m)| m)
    }

    pub(super) fn culprit(&self, err: &frost_secp256k1::Error) -> CoreError {
        match err.culprits().first().and_then(|c| self.member_of(c)) {
            Some(culprit) => CoreError::PeerMisbehaved {
                culprit: culprit.clone(),
                reason: err.to_string(),
            },
            None => CoreError::Frost(err.to_string()),
        }
    }
}
