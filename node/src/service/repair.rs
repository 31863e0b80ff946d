//! Repairing a lost member's share on a replacement node (the repairable
//! threshold scheme of Laing and Stinson, as `frost-core`'s
//! `keys::repairable` implements it; not part of RFC 9591): `t` helpers each
//! send encrypted deltas, sum what they receive into a sigma for the
//! replacement, and the replacement combines the sigmas into its share. No
//! one learns the key or another member's share.
//!
//! Every step checks the operator-approved repair spec against this node's
//! own record of the group, and a helper commits to the new membership
//! (revoking the lost node) before any delta leaves it.

use permafrost_core::dkg;
use permafrost_core::repair::{self, RepairSpec};
use permafrost_core::CoreError;
use permafrost_proto as pb;
use permafrost_proto::convert::tier_from_wire;
use tracing::info;

use super::{audit, invalid, missing, refuse, FromWire};
use crate::metrics::Check;
use crate::store::GroupRecord;
use crate::{NodeError, SignerNode};

/// A repair spec checked against this node's own record of the group.
fn repair_context(
    node: &SignerNode,
    req: &pb::RepairRequest,
) -> Result<(RepairSpec, GroupRecord), NodeError> {
    node.vault.ensure_unsealed()?;
    let spec: RepairSpec = req
        .spec
        .as_ref()
        .ok_or_else(|| missing("spec"))?
        .try_into()
        .wire()?;
    let record = node.group_record(&spec.group)?;
    // Before the repair the record lists the lost member; after this node helped, the replacement.
    let known = record.members == spec.members || record.members == spec.new_members();
    if !known || record.threshold != spec.threshold {
        return Err(refuse(
            node,
            "repair",
            Check::Ceremony,
            CoreError::refused("repair spec does not match this node's record of the group"),
        ));
    }
    Ok((spec, record))
}

/// `RepairDeltas` (helper, step 1): this node's deltas for the other helpers.
pub(super) async fn deltas(
    node: &SignerNode,
    req: &pb::RepairRequest,
) -> Result<pb::RepairMessages, NodeError> {
    let (spec, mut record) = repair_context(node, req)?;
    if node.store.is_revoked(&spec.replacement)? {
        return Err(refuse(
            node,
            "repair-deltas",
            Check::Ceremony,
            CoreError::refused(format!("{} is revoked", spec.replacement)),
        ));
    }
    let key_package = node
        .vault
        .open_key_package(&record.name, &record.sealed_key_package)?;
    let deltas = repair::helper_deltas(
        &spec,
        &node.id,
        &key_package,
        &node.identity,
        &node.directory,
        &mut rand::thread_rng(),
    )
    .map_err(|e| refuse(node, "repair-deltas", Check::Ceremony, e))?;
    audit(
        node,
        "repair_helped",
        serde_json::json!({"repair": spec.repair_id, "group": spec.group.as_str(), "lost": spec.lost.as_str(), "replacement": spec.replacement.as_str()}),
    )?;
    // Commit to the new membership before any delta leaves: a second repair
    // onto the same replacement, or of the revoked node, is then refused, so a
    // rogue coordinator cannot gather several members' shares on one node.
    record.members = spec.new_members();
    node.store.put_group_and_revoke(&record, &spec.lost).await?;
    Ok(pb::RepairMessages {
        messages: deltas.into_iter().map(Into::into).collect(),
    })
}

/// `RepairSigma` (helper, step 2): the sum of the deltas addressed to this node,
/// encrypted for the replacement.
pub(super) fn sigma(
    node: &SignerNode,
    req: &pb::RepairRequest,
) -> Result<pb::DkgSealedShare, NodeError> {
    let (spec, record) = repair_context(node, req)?;
    if record.members != spec.new_members() {
        return Err(refuse(
            node,
            "repair-sigma",
            Check::Ceremony,
            CoreError::refused("this node did not help with that repair"),
        ));
    }
    let deltas: Vec<dkg::SealedRound2> = req
        .messages
        .iter()
        .map(TryInto::try_into)
        .collect::<Result<_, _>>()
        .wire()?;
    let sigma = repair::helper_sigma(
        &spec,
        &node.id,
        &deltas,
        &node.identity,
        &node.directory,
        &mut rand::thread_rng(),
    )
    .map_err(|e| refuse(node, "repair-sigma", Check::Ceremony, e))?;
    Ok(sigma.into())
}

/// `RepairReceive` (replacement): combines the helpers' sigmas into this node's
/// share, sealed and stored as an active member.
pub(super) async fn receive(
    node: &SignerNode,
    req: pb::RepairRequest,
) -> Result<pb::DkgKeyReport, NodeError> {
    let wire_spec = req.spec.as_ref().ok_or_else(|| missing("spec"))?;
    let spec: RepairSpec = wire_spec.try_into().wire()?;
    if node.store.group(&spec.group)?.is_some() {
        return Err(NodeError::AlreadyExists(format!(
            "key group {} already exists on {}",
            spec.group, node.id
        )));
    }
    let sigmas: Vec<dkg::SealedRound2> = req
        .messages
        .iter()
        .map(TryInto::try_into)
        .collect::<Result<_, _>>()
        .wire()?;
    let pkp = frost_secp256k1::keys::PublicKeyPackage::deserialize(&req.public_key_package)
        .map_err(|e| invalid("public_key_package", e))?;
    let key_package = repair::replacement_receive(
        &spec,
        &node.id,
        &sigmas,
        &pkp,
        &node.identity,
        &node.directory,
    )
    .map_err(|e| refuse(node, "repair-receive", Check::Ceremony, e))?;
    let group_public_key = pkp
        .verifying_key()
        .serialize()
        .map_err(|e| NodeError::Bug(format!("serialize group key: {e}")))?;
    let (scheme, network) = node.scheme_of(&spec.group);
    let record = GroupRecord {
        v: 1,
        name: spec.group.clone(),
        tier: tier_from_wire(wire_spec.tier).wire()?,
        threshold: spec.threshold,
        members: spec.new_members(),
        ceremony_id: spec.repair_id.clone(),
        sealed_key_package: node.vault.seal_key_package(&spec.group, &key_package)?,
        public_key_package: req.public_key_package.clone(),
        group_public_key: group_public_key.clone(),
        active: true,
        pending_refresh: None,
        scheme,
        network,
    };
    audit(
        node,
        "repair_share_received",
        serde_json::json!({"repair": spec.repair_id, "group": spec.group.as_str(), "replaces": spec.lost.as_str()}),
    )?;
    node.store.insert_group(&record).await?;
    info!(node = %node.id, group = %spec.group, replaces = %spec.lost, "repaired share sealed");
    Ok(pb::DkgKeyReport {
        sender: node.id.to_string(),
        group_public_key,
        public_key_package: req.public_key_package,
        signature: Vec::new(),
    })
}

/// `ReplaceMember` (a member that did not help): records the new membership
/// and revokes the lost node.
pub(super) async fn replace_member(
    node: &SignerNode,
    req: &pb::RepairRequest,
) -> Result<pb::ReplaceMemberResponse, NodeError> {
    let (spec, mut record) = repair_context(node, req)?;
    audit(
        node,
        "member_replaced",
        serde_json::json!({"group": spec.group.as_str(), "lost": spec.lost.as_str(), "replacement": spec.replacement.as_str()}),
    )?;
    record.members = spec.new_members();
    node.store.put_group_and_revoke(&record, &spec.lost).await?;
    Ok(pb::ReplaceMemberResponse {})
}
