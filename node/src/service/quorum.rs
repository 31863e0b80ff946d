//! The operator quorum every ceremony step checks first (THREATS X5–X7).
//!
//! The coordinator relays the signed lifecycle spec; this node verifies it
//! against its own operator registry, its own clock and its own record of the
//! group (epoch, key, members) before it takes any step, and records every
//! epoch change with the spec that made it. The coordinator's word counts for
//! nothing here.

use permafrost_core::ceremony::{
    verify_chain, verify_quorum, AuthorizedCeremony, HeldGroup, OperatorRegistry, QuorumApproved,
    SignedSpec, SpecDigest,
};
use permafrost_core::{unix_now, CoreError, GroupName};
use permafrost_proto as pb;
use permafrost_proto::convert::ceremony::required_authorization;

use super::{audit, refuse, FromWire};
use crate::metrics::Check;
use crate::store::{GroupEpoch, GroupRecord, GroupRegistry, FIRST_EPOCH};
use crate::{NodeError, SignerNode};

/// The operator registry in force for `group` here, and its sequence: the
/// one its last change-registry ceremony installed, else the config's (0).
pub(crate) fn registry_for(
    node: &SignerNode,
    group: &GroupName,
) -> Result<Option<(u64, OperatorRegistry)>, NodeError> {
    match node.store.group_registry(group)? {
        Some(r) => {
            let built = r.registry.build().map_err(|e| {
                NodeError::Corrupt(format!("stored operator registry of {group}: {e}"))
            })?;
            Ok(Some((r.seq, built)))
        }
        None => Ok(node.registry.clone().map(|r| (0, r))),
    }
}

/// The hash of the registry in force for `group` here (empty without one):
/// what this node's repair acknowledgements name.
pub(crate) fn registry_hash(node: &SignerNode, group: &GroupName) -> Result<Vec<u8>, NodeError> {
    Ok(registry_for(node, group)?
        .map(|(_, r)| r.hash().to_vec())
        .unwrap_or_default())
}

/// The registry a spec for `group` is checked against, or a refusal saying
/// this node takes part in no ceremony.
fn registry_or_refuse(
    node: &SignerNode,
    step: &'static str,
    group: &GroupName,
) -> Result<OperatorRegistry, NodeError> {
    match registry_for(node, group)? {
        Some((_, registry)) => Ok(registry),
        None => Err(refuse(
            node,
            step,
            Check::Ceremony,
            CoreError::refused(format!(
                "{} has no [operators] registry in its config, so it takes part in no ceremony",
                node.id
            )),
        )),
    }
}

/// The relayed spec, once its shape, lifetime and operator quorum checked out
/// against the registry in force here for its group, and this node's clock.
pub(super) fn approved(
    node: &SignerNode,
    step: &'static str,
    wire: Option<&pb::SignedLifecycleSpec>,
) -> Result<QuorumApproved, NodeError> {
    let signed = required_authorization(wire).wire()?;
    let registry = registry_or_refuse(node, step, &signed.spec.group)?;
    approved_under(node, step, &signed, &registry)
}

/// `signed`'s shape, lifetime and quorum under `registry`, by this node's clock.
pub(super) fn approved_under(
    node: &SignerNode,
    step: &'static str,
    signed: &SignedSpec,
    registry: &OperatorRegistry,
) -> Result<QuorumApproved, NodeError> {
    verify_quorum(
        signed,
        registry,
        unix_now(),
        node.settings.max_clock_skew_secs,
    )
    .map_err(|e| refuse(node, step, Check::Ceremony, e))
}

/// For a node that does not hold `group` yet (a repair's replacement): the
/// spec checked under the registry the relayed chain of the group's registry
/// changes ends in, the chain checked link by link from this node's config
/// registry. Returns the approved spec and the registry record to store with
/// the group.
pub(super) fn approved_by_chain(
    node: &SignerNode,
    step: &'static str,
    group: &GroupName,
    wire: Option<&pb::SignedLifecycleSpec>,
    chain: &[pb::SignedLifecycleSpec],
) -> Result<(QuorumApproved, GroupRegistry), NodeError> {
    let base = registry_or_refuse(node, step, group)?;
    let changes: Vec<SignedSpec> = chain
        .iter()
        .map(SignedSpec::try_from)
        .collect::<Result<_, _>>()
        .wire()?;
    let signed = required_authorization(wire).wire()?;
    let group_key = signed.spec.group_key.clone().unwrap_or_default();
    let (seq, registry) = verify_chain(&base, group, &group_key, &changes)
        .map_err(|e| refuse(node, step, Check::Ceremony, e))?;
    let approved = verify_quorum(
        &signed,
        &registry,
        unix_now(),
        node.settings.max_clock_skew_secs,
    )
    .map_err(|e| refuse(node, step, Check::Ceremony, e))?;
    let config = changes
        .last()
        .and_then(|c| c.spec.registry.as_ref())
        .map(|c| c.registry.clone())
        .ok_or_else(|| NodeError::Bug("an empty registry chain".into()))?;
    Ok((
        approved,
        GroupRegistry {
            v: permafrost_store::RECORD_VERSION,
            seq,
            registry: config,
            changes,
            at: unix_now(),
        },
    ))
}

/// [`approved`] for the commit of a refresh this node already took part in
/// (it holds that refresh's new share, `pending`): the spec's expiry is judged
/// as of when the node accepted it, so a commit certificate re-driven later by
/// another coordinator (K7) still completes. Signatures and quorum are
/// checked as always.
pub(super) fn approved_for_commit(
    node: &SignerNode,
    wire: Option<&pb::SignedLifecycleSpec>,
    spec_digest: &[u8],
    pending_accepted: bool,
) -> Result<QuorumApproved, NodeError> {
    let signed = required_authorization(wire).wire()?;
    let registry = registry_or_refuse(node, "commit-refresh", &signed.spec.group)?;
    let accepted_before = pending_accepted && signed.spec.digest().0.as_slice() == spec_digest;
    let now = if accepted_before {
        unix_now().min(signed.spec.expires_at)
    } else {
        unix_now()
    };
    verify_quorum(&signed, &registry, now, node.settings.max_clock_skew_secs)
        .map_err(|e| refuse(node, "commit-refresh", Check::Ceremony, e))
}

/// What this node holds of `record`'s group, as a spec is compared with it.
pub(super) fn held(node: &SignerNode, record: &GroupRecord) -> Result<HeldGroup, NodeError> {
    let epoch = node.store.group_epoch(&record.name)?;
    let last_spec = match &epoch {
        Some(e) => Some(SpecDigest(
            hex::decode(&e.spec_digest)
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .ok_or_else(|| {
                    NodeError::Corrupt(format!(
                        "stored epoch record of {} names no spec digest",
                        record.name
                    ))
                })?,
        )),
        None => None,
    };
    Ok(HeldGroup {
        epoch: epoch.map(|e| e.epoch).unwrap_or(FIRST_EPOCH),
        group_key: record.group_public_key.clone(),
        members: record.members.clone(),
        removed: record.removed.clone(),
        threshold: record.threshold,
        tier: record.tier,
        last_spec,
    })
}

/// This node's current epoch of `record`'s group.
pub(crate) fn epoch_of(node: &SignerNode, record: &GroupRecord) -> Result<u64, NodeError> {
    Ok(node
        .store
        .group_epoch(&record.name)?
        .map(|e| e.epoch)
        .unwrap_or(FIRST_EPOCH))
}

/// The epoch record `authorized` moves its group to.
pub(super) fn next_epoch(authorized: &AuthorizedCeremony, epoch: u64) -> GroupEpoch {
    GroupEpoch {
        v: permafrost_store::RECORD_VERSION,
        epoch,
        spec_digest: authorized.digest().to_hex(),
        operation: authorized.spec().operation.to_string(),
        operators: authorized.operators().to_vec(),
        at: unix_now(),
    }
}

/// Records, before the step acts, which approved spec authorized it and who approved it.
pub(super) fn audit_authorized(
    node: &SignerNode,
    step: &'static str,
    authorized: &AuthorizedCeremony,
) -> Result<(), NodeError> {
    let spec = authorized.spec();
    audit(
        node,
        "ceremony_authorized",
        serde_json::json!({
            "step": step,
            "operation": spec.operation.as_str(),
            "group": spec.group.as_str(),
            "epoch": spec.epoch,
            "proposal": spec.proposal_id,
            "spec_digest": authorized.digest().to_hex(),
            "operators": authorized.operators(),
        }),
    )
}
