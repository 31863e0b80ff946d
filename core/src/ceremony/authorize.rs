//! Checking a relayed lifecycle spec: its shape, lifetime and operator
//! quorum ([`verify_quorum`]), then against what this node holds of the group
//! ([`QuorumApproved`]'s methods). Only these make an [`AuthorizedCeremony`].

use super::{approval_message, LifecycleSpec, Operation, OperatorRegistry, SignedSpec, SpecDigest};
use crate::identity::verify_ed25519;
use crate::{CoreError, NodeId, Tier};

/// A spec whose shape, lifetime and operator quorum checked out; not yet
/// compared with what the node holds.
#[derive(Debug)]
pub struct QuorumApproved {
    spec: LifecycleSpec,
    digest: SpecDigest,
    operators: Vec<String>,
}

/// Checks `signed`'s shape, that it is neither expired nor from the future
/// (with `max_skew` seconds of tolerance), and that at least the registry's
/// quorum of distinct registered operators signed its digest (X5).
pub fn verify_quorum(
    signed: &SignedSpec,
    registry: &OperatorRegistry,
    now: u64,
    max_skew: u64,
) -> Result<QuorumApproved, CoreError> {
    let spec = &signed.spec;
    spec.validate()?;
    if now > spec.expires_at.saturating_add(max_skew) {
        return Err(CoreError::refused(format!(
            "ceremony spec {} expired at {} (now {now})",
            spec.proposal_id, spec.expires_at
        )));
    }
    if spec.created_at > now.saturating_add(max_skew) {
        return Err(CoreError::refused(format!(
            "ceremony spec {} is dated {} in the future",
            spec.proposal_id,
            spec.created_at - now
        )));
    }
    let digest = spec.digest();
    let mut counted: Vec<String> = Vec::new();
    let mut rejected: Vec<String> = Vec::new();
    for a in &signed.approvals {
        let Some(key) = registry.key(&a.operator) else {
            rejected.push(format!(
                "{:?} is not a registered operator",
                crate::error::preview(&a.operator)
            ));
            continue;
        };
        if counted.contains(&a.operator) {
            rejected.push(format!("{} approved twice (counted once)", a.operator));
            continue;
        }
        if !verify_ed25519(key, &approval_message(&digest, &a.operator), &a.signature) {
            rejected.push(format!("{}'s signature is not over this spec", a.operator));
            continue;
        }
        counted.push(a.operator.clone());
    }
    let needed = registry.quorum(spec.operation);
    if counted.len() < usize::from(needed) {
        let why = if rejected.is_empty() {
            String::new()
        } else {
            format!("; not counted: {}", rejected.join("; "))
        };
        return Err(CoreError::refused(format!(
            "operator quorum not met for {} of {}: {} of {needed} approvals{why}",
            spec.operation,
            spec.group,
            counted.len()
        )));
    }
    Ok(QuorumApproved {
        spec: spec.clone(),
        digest,
        operators: counted,
    })
}

/// What a node holds of a group, as the spec is compared with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldGroup {
    /// The node's current epoch of the group.
    pub epoch: u64,
    /// The group's 33-byte key.
    pub group_key: Vec<u8>,
    /// Members in identifier order, removed ones included (they keep their place).
    pub members: Vec<NodeId>,
    /// Members removed by a remove-member ceremony: tombstones that keep their
    /// identifier but never take part again.
    pub removed: Vec<NodeId>,
    /// Signers needed.
    pub threshold: u16,
    /// Tier.
    pub tier: Tier,
    /// The spec that moved the group to `epoch`, when this node recorded one.
    pub last_spec: Option<SpecDigest>,
}

impl HeldGroup {
    /// The members still in the group (not removed), in identifier order:
    /// what a lifecycle spec's `members` names.
    pub fn active(&self) -> Vec<NodeId> {
        self.members
            .iter()
            .filter(|m| !self.removed.contains(m))
            .cloned()
            .collect()
    }
}

/// How the node stands to the authorized ceremony.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    /// The node does not hold the group: a create member, or a repair's replacement.
    Newcomer,
    /// The node holds the group at the spec's epoch and key: the ceremony may start.
    Current,
    /// The node already moved the group on by this very spec (a later step or a retry).
    Applied,
}

/// A ceremony this node may take part in: quorum-approved and consistent with
/// what the node holds. Only the checks of [`QuorumApproved`] make one.
#[derive(Clone, Debug)]
pub struct AuthorizedCeremony {
    spec: LifecycleSpec,
    digest: SpecDigest,
    operators: Vec<String>,
    standing: Standing,
}

impl AuthorizedCeremony {
    /// The approved spec.
    pub fn spec(&self) -> &LifecycleSpec {
        &self.spec
    }
    /// Its digest.
    pub fn digest(&self) -> SpecDigest {
        self.digest
    }
    /// The operators whose approvals counted.
    pub fn operators(&self) -> &[String] {
        &self.operators
    }
    /// How the node stands to it.
    pub fn standing(&self) -> Standing {
        self.standing
    }
}

impl QuorumApproved {
    /// The spec.
    pub fn spec(&self) -> &LifecycleSpec {
        &self.spec
    }

    /// Its digest.
    pub fn digest(&self) -> SpecDigest {
        self.digest
    }

    /// The operators whose approvals counted.
    pub fn operators(&self) -> &[String] {
        &self.operators
    }

    fn authorized(self, standing: Standing) -> AuthorizedCeremony {
        AuthorizedCeremony {
            spec: self.spec,
            digest: self.digest,
            operators: self.operators,
            standing,
        }
    }

    /// For a node that does not hold the group yet: a member of a new group,
    /// or a repair's replacement. A node that holds the group name in any
    /// epoch refuses: a name is never reused, so a shadow group cannot be
    /// made beside the live one on a member.
    pub fn as_newcomer(
        self,
        me: &NodeId,
        held: Option<&HeldGroup>,
    ) -> Result<AuthorizedCeremony, CoreError> {
        let spec = &self.spec;
        if let Some(held) = held {
            return Err(CoreError::refused(format!(
                "{me} already holds key group {} (epoch {}); a group name is never reused",
                spec.group, held.epoch
            )));
        }
        match spec.operation {
            Operation::Create if spec.members.contains(me) => {
                Ok(self.authorized(Standing::Newcomer))
            }
            Operation::Repair if spec.replacement.as_ref() == Some(me) => {
                Ok(self.authorized(Standing::Newcomer))
            }
            Operation::Create | Operation::Repair => Err(CoreError::refused(format!(
                "{me} is not named by this {} of {}",
                spec.operation, spec.group
            ))),
            other => Err(CoreError::refused(format!(
                "{me} does not hold key group {}, which {other} acts on",
                spec.group
            ))),
        }
    }

    /// For a member holding the group: the spec must be for the epoch and key
    /// it holds, and its resulting membership must follow from the member's
    /// own record (X5, X7).
    pub fn at_current_epoch(
        self,
        me: &NodeId,
        held: &HeldGroup,
    ) -> Result<AuthorizedCeremony, CoreError> {
        let spec = &self.spec;
        if spec.operation == Operation::Create {
            return Err(CoreError::refused(format!(
                "{me} already holds key group {} (epoch {}); a group name is never reused",
                spec.group, held.epoch
            )));
        }
        if spec.epoch != held.epoch {
            return Err(CoreError::refused(format!(
                "the spec is for epoch {} of {}; {me} holds epoch {}",
                spec.epoch, spec.group, held.epoch
            )));
        }
        if spec.group_key.as_deref() != Some(held.group_key.as_slice()) {
            return Err(CoreError::refused(format!(
                "the spec names another key for {} than the one {me} holds",
                spec.group
            )));
        }
        if !held.members.contains(me) {
            return Err(CoreError::refused(format!(
                "{me} is not a member of its own record of {}",
                spec.group
            )));
        }
        if held.removed.contains(me) {
            return Err(CoreError::refused(format!(
                "{me} was removed from {}; it takes part in no ceremony of it again",
                spec.group
            )));
        }
        let active = held.active();
        let unchanged = |what: &str| -> Result<(), CoreError> {
            if spec.members != active || spec.threshold != held.threshold || spec.tier != held.tier
            {
                return Err(CoreError::refused(format!(
                    "a {what} keeps the members, their order, the tier and the threshold"
                )));
            }
            Ok(())
        };
        match spec.operation {
            Operation::Refresh => unchanged("refresh")?,
            Operation::Retire => unchanged("retirement")?,
            Operation::ClearExclusion => unchanged("cleared exclusion")?,
            // The node checks the sequence and the registry replaced against
            // its own record of the group's registry.
            Operation::ChangeRegistry => unchanged("registry change")?,
            Operation::Repair => {
                let (Some(lost), Some(replacement)) = (&spec.subject, &spec.replacement) else {
                    return Err(CoreError::Refused(
                        "a repair names its lost member and replacement".into(),
                    ));
                };
                if lost == me {
                    return Err(CoreError::refused(format!(
                        "{me} is the lost member of this repair; a node never takes part in dropping itself"
                    )));
                }
                if !active.contains(lost) {
                    return Err(CoreError::refused(format!(
                        "{lost} is not a member of {} here",
                        spec.group
                    )));
                }
                // A removed member keeps its place in `members`: it can never
                // be repaired back into the group.
                if held.members.contains(replacement) {
                    return Err(CoreError::refused(format!(
                        "{replacement} is already a member of {}, or was removed from it",
                        spec.group
                    )));
                }
                let expected: Vec<NodeId> = active
                    .iter()
                    .map(|m| {
                        if m == lost {
                            replacement.clone()
                        } else {
                            m.clone()
                        }
                    })
                    .collect();
                if spec.members != expected
                    || spec.threshold != held.threshold
                    || spec.tier != held.tier
                {
                    return Err(CoreError::refused(
                        "the repair's resulting membership does not follow from this node's record \
                         (only the lost member's place changes; threshold and tier stay)",
                    ));
                }
            }
            Operation::RemoveMember => {
                let Some(removed) = &spec.subject else {
                    return Err(CoreError::Refused("a removal names its member".into()));
                };
                if removed == me {
                    return Err(CoreError::refused(format!(
                        "{me} is the member removed; a node never takes part in dropping itself"
                    )));
                }
                if !active.contains(removed) {
                    return Err(CoreError::refused(format!(
                        "{removed} is not a member of {} here (or was removed already)",
                        spec.group
                    )));
                }
                let expected: Vec<NodeId> =
                    active.iter().filter(|m| *m != removed).cloned().collect();
                if expected.len() < usize::from(held.threshold) {
                    return Err(CoreError::refused(format!(
                        "removing {removed} would leave {} active member(s) of {}, fewer than its threshold {}",
                        expected.len(),
                        spec.group,
                        held.threshold
                    )));
                }
                // A removal is a refresh among the others: frost's refresh
                // keeps the threshold, so a change of it is a new group.
                if spec.threshold != held.threshold {
                    return Err(CoreError::refused(format!(
                        "a removal keeps the threshold ({} here, {} in the spec); a new threshold is a new group",
                        held.threshold, spec.threshold
                    )));
                }
                if spec.members != expected || spec.tier != held.tier {
                    return Err(CoreError::refused(
                        "the removal's resulting membership does not follow from this node's record",
                    ));
                }
            }
            Operation::Create => {
                return Err(CoreError::refused(format!(
                    "{} does not act on an existing group",
                    spec.operation
                )))
            }
        }
        Ok(self.authorized(Standing::Current))
    }

    /// For the member a removal names: it may drop its own share under the
    /// quorum's removal spec of the epoch it holds. It takes no part in the
    /// refresh among the others, which never waits for it.
    pub fn as_removed(
        self,
        me: &NodeId,
        held: &HeldGroup,
    ) -> Result<AuthorizedCeremony, CoreError> {
        let spec = &self.spec;
        if spec.operation != Operation::RemoveMember || spec.subject.as_ref() != Some(me) {
            return Err(CoreError::refused(format!(
                "the operators approved a {} of {}, not the removal of {me}",
                spec.operation, spec.group
            )));
        }
        if spec.epoch != held.epoch {
            return Err(CoreError::refused(format!(
                "the spec is for epoch {} of {}; {me} holds epoch {}",
                spec.epoch, spec.group, held.epoch
            )));
        }
        let active = held.active();
        let expected: Vec<NodeId> = active.iter().filter(|m| *m != me).cloned().collect();
        if spec.group_key.as_deref() != Some(held.group_key.as_slice())
            || !active.contains(me)
            || spec.members != expected
            || spec.threshold != held.threshold
            || spec.tier != held.tier
        {
            return Err(CoreError::refused(format!(
                "the spec names another key, membership, threshold or tier of {} than {me} holds (the others would refuse it)",
                spec.group
            )));
        }
        // The same floor every other member checks: never below t.
        if expected.len() < usize::from(held.threshold) {
            return Err(CoreError::refused(format!(
                "removing {me} would leave {} active member(s) of {}, fewer than its threshold {}",
                expected.len(),
                spec.group,
                held.threshold
            )));
        }
        Ok(self.authorized(Standing::Current))
    }

    /// For a member that already moved the group on by this very spec (a
    /// later step of the same ceremony, or a retried one): its record is the
    /// spec's result, at the next epoch.
    pub fn already_applied(self, held: &HeldGroup) -> Result<AuthorizedCeremony, CoreError> {
        let spec = &self.spec;
        if held.last_spec != Some(self.digest)
            || held.epoch != spec.epoch.saturating_add(1)
            || held.active() != spec.members
        {
            return Err(CoreError::refused(format!(
                "this node did not apply spec {} to {} (it holds epoch {})",
                spec.proposal_id, spec.group, held.epoch
            )));
        }
        Ok(self.authorized(Standing::Applied))
    }
}
