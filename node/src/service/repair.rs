//! Repairing a lost member's share on a replacement node (the repairable
//! threshold scheme of Laing and Stinson, as `frost-core`'s
//! `keys::repairable` implements it; not part of RFC 9591): `t` helpers each
//! send encrypted deltas, sum what they receive into a sigma for the
//! replacement, and the replacement combines the sigmas into its share. No
//! one learns the key or another member's share.
//!
//! Every step first verifies the operator quorum of the relayed lifecycle
//! spec and checks it against this node's own record of the group: its epoch,
//! key and members (X5, X7). A helper commits to the new membership and the
//! next epoch (revoking the lost node) before any delta leaves it, so a second
//! repair for the same epoch is refused; a node never takes part in dropping
//! itself.
//!
//! Two phases (X6): first every remaining member acknowledges the repair
//! ([`prepare`]), checking it against its own record and signing the next
//! epoch, the group key and the public key package it holds; every later
//! step — a helper's deltas, a member's move to the next epoch, the
//! replacement's share — needs the acknowledgements of every remaining
//! member, checked by each node itself. A member moving to the next epoch
//! keeps that certificate, so any coordinator can finish the repair on
//! members that missed it.

use permafrost_core::ceremony::{AuthorizedCeremony, QuorumApproved, Standing};
use permafrost_core::dkg;
use permafrost_core::repair::{self, RepairSpec};
use permafrost_core::CoreError;
use permafrost_proto as pb;
use tracing::info;

use super::{audit, invalid, missing, quorum, refuse, FromWire};
use crate::metrics::Check;
use crate::store::{GroupRecord, GroupRegistry, PreparedRepair};
use crate::{NodeError, SignerNode};

/// The acknowledgements a step carries, read from the wire.
fn acks(req: &pb::RepairRequest) -> Result<Vec<repair::PrepareAck>, NodeError> {
    req.acks
        .iter()
        .map(|a| {
            Ok(repair::PrepareAck {
                member: permafrost_proto::convert::node_id("acks.member", &a.member).wire()?,
                registry: a.registry_hash.clone(),
                signature: a.signature.clone(),
            })
        })
        .collect()
}

/// Refuses a step of `spec` unless every remaining member acknowledged its
/// move to `next_epoch` with `group_public_key` and `public_key_package`,
/// under the operator registry whose hash is `registry` (the one in force
/// for the group here; for the replacement, the one it takes the group under).
#[allow(clippy::too_many_arguments)]
fn check_certificate(
    node: &SignerNode,
    step: &'static str,
    spec: &RepairSpec,
    req: &pb::RepairRequest,
    next_epoch: u64,
    group_public_key: &[u8],
    public_key_package: &[u8],
    registry: &[u8],
) -> Result<(), NodeError> {
    repair::check_acks(
        spec,
        &node.directory,
        &acks(req)?,
        next_epoch,
        group_public_key,
        public_key_package,
        Some(registry),
    )
    .map(|_| ())
    .map_err(|e| refuse(node, step, Check::Ceremony, e))
}

/// What a member keeps of the repair that moves it: the request without its
/// messages (spec, authorization, every acknowledgement).
fn certificate_of(req: &pb::RepairRequest) -> Vec<u8> {
    let certificate = pb::RepairRequest {
        messages: Vec::new(),
        public_key_package: Vec::new(),
        ..req.clone()
    };
    prost::Message::encode_to_vec(&certificate)
}

/// `PrepareRepair` (every remaining member, phase 1): checks the repair
/// against this node's own record at the epoch it holds and acknowledges the
/// next epoch, the group key and the public key package this node holds.
/// Nothing moves yet. One approval per epoch: while an acknowledged repair's
/// approval lasts, a repair under another approval of the same epoch is
/// refused (a retry under the same approval, with another repair id or other
/// helpers, is acknowledged again).
pub(super) async fn prepare(
    node: &SignerNode,
    req: &pb::RepairRequest,
) -> Result<pb::RepairAck, NodeError> {
    let (spec, approved) = repair_context(node, "repair-prepare", req)?;
    never_drops_itself(node, "repair-prepare", &spec)?;
    // Every read-modify-write of the group record takes the refresh lock, so
    // it never overwrites a pending refresh stored meanwhile (K7).
    let _fate = node.refresh_lock.lock().await;
    let mut record = node.group_record(&spec.group)?;
    // A repair moves the epoch, which would strand a refresh this node
    // reported: that refresh is finished or aborted first.
    if let Some(p) = &record.pending_refresh {
        return Err(NodeError::Precondition(format!(
            "node {} holds refresh {} of {} pending; finish it (keygroup recover) or abort it \
             (keygroup abort-refresh) before a repair",
            node.id, p.ceremony_id, spec.group
        )));
    }
    let (authorized, epoch) = as_member(
        node,
        "repair-prepare",
        &spec,
        approved,
        &record,
        &[Standing::Current],
    )?;
    if node.store.is_revoked(&spec.replacement)? {
        return Err(refuse(
            node,
            "repair-prepare",
            Check::Ceremony,
            CoreError::refused(format!("{} is revoked", spec.replacement)),
        ));
    }
    if req.public_key_package != record.public_key_package {
        return Err(refuse(
            node,
            "repair-prepare",
            Check::Ceremony,
            CoreError::refused(format!(
                "the public key package to acknowledge is not the one {} holds for {}",
                node.id, spec.group
            )),
        ));
    }
    let digest = authorized.digest().to_hex();
    if let Some(p) = &record.prepared_repair {
        if p.epoch == epoch
            && p.spec_digest != digest
            && permafrost_core::unix_now() <= p.expires_at
        {
            return Err(refuse(
                node,
                "repair-prepare",
                Check::Ceremony,
                CoreError::refused(format!(
                    "{} acknowledged repair {} of {} at epoch {epoch} under another approval \
                     (spec {}), valid until {}; it acknowledges no second one before then",
                    node.id, p.repair_id, spec.group, p.spec_digest, p.expires_at
                )),
            ));
        }
    }
    quorum::audit_authorized(node, "repair-prepare", &authorized)?;
    audit(
        node,
        "repair_prepared",
        serde_json::json!({"repair": spec.repair_id, "group": spec.group.as_str(), "lost": spec.lost.as_str(), "replacement": spec.replacement.as_str(), "epoch": epoch + 1}),
    )?;
    record.prepared_repair = Some(PreparedRepair {
        repair_id: spec.repair_id.clone(),
        spec_digest: digest,
        epoch,
        expires_at: authorized.spec().expires_at,
    });
    node.store.put_group(&record).await?;
    let ack = repair::sign_ack(
        &spec,
        &node.id,
        &node.identity,
        epoch + 1,
        &record.group_public_key,
        &record.public_key_package,
        &quorum::registry_hash(node, &spec.group)?,
    );
    Ok(pb::RepairAck {
        member: ack.member.to_string(),
        registry_hash: ack.registry,
        signature: ack.signature,
    })
}

/// X7: the lost member of a repair takes no step that drops it.
fn never_drops_itself(
    node: &SignerNode,
    step: &'static str,
    spec: &RepairSpec,
) -> Result<(), NodeError> {
    if spec.lost != node.id {
        return Ok(());
    }
    Err(refuse(
        node,
        step,
        Check::Ceremony,
        CoreError::refused(format!(
            "{} is the lost member of this repair; a node never drops itself",
            node.id
        )),
    ))
}

/// The relayed repair spec and its verified operator quorum.
fn repair_context(
    node: &SignerNode,
    step: &'static str,
    req: &pb::RepairRequest,
) -> Result<(RepairSpec, QuorumApproved), NodeError> {
    let spec = relayed_spec(node, req)?;
    let approved = quorum::approved(node, step, req.authorization.as_ref())?;
    Ok((spec, approved))
}

/// The relayed repair spec, on an unsealed node.
fn relayed_spec(node: &SignerNode, req: &pb::RepairRequest) -> Result<RepairSpec, NodeError> {
    node.vault.ensure_unsealed()?;
    req.spec
        .as_ref()
        .ok_or_else(|| missing("spec"))?
        .try_into()
        .wire()
}

/// [`repair_context`] for the replacement, which does not hold the group:
/// when the group's registry was changed, the spec is checked under the end
/// of the relayed chain of changes, which the replacement stores with its
/// share.
fn replacement_context(
    node: &SignerNode,
    step: &'static str,
    req: &pb::RepairRequest,
) -> Result<(RepairSpec, QuorumApproved, Option<GroupRegistry>), NodeError> {
    if req.registry_changes.is_empty() {
        let (spec, approved) = repair_context(node, step, req)?;
        return Ok((spec, approved, None));
    }
    let spec = relayed_spec(node, req)?;
    let (approved, registry) = quorum::approved_by_chain(
        node,
        step,
        &spec.group,
        req.authorization.as_ref(),
        &req.registry_changes,
    )?;
    Ok((spec, approved, Some(registry)))
}

/// A member's authorization for `spec`: at the epoch it holds (the step may
/// start), or already applied by this very spec (a later step, or a retry).
fn as_member(
    node: &SignerNode,
    step: &'static str,
    spec: &RepairSpec,
    approved: QuorumApproved,
    record: &GroupRecord,
    standing: &[Standing],
) -> Result<(AuthorizedCeremony, u64), NodeError> {
    let held = quorum::held(node, record)?;
    // Identifiers are positions: the repair must list this node's members
    // and tombstones exactly (before it, or after it once applied).
    let members = if held.epoch == approved.spec().epoch {
        spec.members.clone()
    } else {
        spec.new_members()
    };
    if members != record.members || !same_set(&spec.removed, &record.removed) {
        return Err(refuse(
            node,
            step,
            Check::Ceremony,
            permafrost_core::CoreError::refused(
                "the repair lists other members or removed members than this node's record",
            ),
        ));
    }
    let authorized = if held.epoch == approved.spec().epoch {
        approved.at_current_epoch(&node.id, &held)
    } else {
        approved.already_applied(&held)
    }
    .and_then(|a| spec.check_authorized(&a, standing).map(|()| a))
    .map_err(|e| refuse(node, step, Check::Ceremony, e))?;
    Ok((authorized, held.epoch))
}

/// Whether `a` and `b` name the same members (as sets: order and repeats aside).
pub(super) fn same_set(a: &[permafrost_core::NodeId], b: &[permafrost_core::NodeId]) -> bool {
    let (a, b): (std::collections::BTreeSet<_>, std::collections::BTreeSet<_>) =
        (a.iter().collect(), b.iter().collect());
    a == b
}

/// `RepairDeltas` (helper, step 1): this node's deltas for the other helpers.
pub(super) async fn deltas(
    node: &SignerNode,
    req: &pb::RepairRequest,
) -> Result<pb::RepairMessages, NodeError> {
    let (spec, approved) = repair_context(node, "repair-deltas", req)?;
    // Every read-modify-write of the group record takes the refresh lock, so
    // it never overwrites a pending refresh stored meanwhile (K7).
    let _fate = node.refresh_lock.lock().await;
    let mut record = node.group_record(&spec.group)?;
    let (authorized, epoch) = as_member(
        node,
        "repair-deltas",
        &spec,
        approved,
        &record,
        &[Standing::Current, Standing::Applied],
    )?;
    if authorized.standing() == Standing::Current && node.store.is_revoked(&spec.replacement)? {
        return Err(refuse(
            node,
            "repair-deltas",
            Check::Ceremony,
            CoreError::refused(format!("{} is revoked", spec.replacement)),
        ));
    }
    // X6: no delta leaves before every remaining member acknowledged the move.
    check_certificate(
        node,
        "repair-deltas",
        &spec,
        req,
        authorized.spec().epoch + 1,
        &record.group_public_key,
        &record.public_key_package,
        &quorum::registry_hash(node, &spec.group)?,
    )?;
    let key_package = node
        .vault
        .open_key_package(&record.name, &record.sealed_key_package)?;
    let deltas = repair::helper_deltas(
        &spec,
        &authorized,
        &node.id,
        &key_package,
        &node.identity,
        &node.directory,
        &mut rand::thread_rng(),
    )
    .map_err(|e| refuse(node, "repair-deltas", Check::Ceremony, e))?;
    quorum::audit_authorized(node, "repair-deltas", &authorized)?;
    audit(
        node,
        "repair_helped",
        serde_json::json!({"repair": spec.repair_id, "group": spec.group.as_str(), "lost": spec.lost.as_str(), "replacement": spec.replacement.as_str()}),
    )?;
    // Commit to the new membership and epoch before any delta leaves: a
    // second repair for this epoch, onto the same replacement or of the
    // revoked node, is then refused, so a rogue coordinator cannot gather
    // several members' shares on one node.
    if authorized.standing() == Standing::Current {
        record.members = spec.new_members();
        record.prepared_repair = None;
        record.repair_certificate = Some(certificate_of(req));
        node.store
            .advance_group(
                &record,
                Some(&spec.lost),
                epoch,
                &quorum::next_epoch(&authorized, epoch + 1),
            )
            .await?;
    }
    Ok(pb::RepairMessages {
        messages: deltas.into_iter().map(Into::into).collect(),
    })
}

/// `RepairSigma` (helper, step 2): the sum of the deltas addressed to this node,
/// encrypted for the replacement. Only a helper that committed to this very
/// repair's membership takes this step.
pub(super) fn sigma(
    node: &SignerNode,
    req: &pb::RepairRequest,
) -> Result<pb::DkgSealedShare, NodeError> {
    let (spec, approved) = repair_context(node, "repair-sigma", req)?;
    let record = node.group_record(&spec.group)?;
    let held = quorum::held(node, &record)?;
    let authorized = approved
        .already_applied(&held)
        .and_then(|a| spec.check_authorized(&a, &[Standing::Applied]).map(|()| a))
        .map_err(|e| refuse(node, "repair-sigma", Check::Ceremony, e))?;
    let deltas: Vec<dkg::SealedRound2> = req
        .messages
        .iter()
        .map(TryInto::try_into)
        .collect::<Result<_, _>>()
        .wire()?;
    let sigma = repair::helper_sigma(
        &spec,
        &authorized,
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
/// share, sealed and stored as an active member at the next epoch. Only for a
/// repair the operators approved naming this node, of the key they named.
pub(super) async fn receive(
    node: &SignerNode,
    req: pb::RepairRequest,
) -> Result<pb::DkgKeyReport, NodeError> {
    let (spec, approved, registry) = replacement_context(node, "repair-receive", &req)?;
    if node.store.group(&spec.group)?.is_some() {
        return Err(NodeError::AlreadyExists(format!(
            "key group {} already exists on {}",
            spec.group, node.id
        )));
    }
    if let Some(epoch) = node.store.group_epoch(&spec.group)? {
        return Err(refuse(
            node,
            "repair-receive",
            Check::Ceremony,
            CoreError::refused(format!(
                "{} held key group {} before (epoch {}); it never takes a share of it again",
                node.id, spec.group, epoch.epoch
            )),
        ));
    }
    let authorized = approved
        .as_newcomer(&node.id, None)
        .map_err(|e| refuse(node, "repair-receive", Check::Ceremony, e))?;
    let sigmas: Vec<dkg::SealedRound2> = req
        .messages
        .iter()
        .map(TryInto::try_into)
        .collect::<Result<_, _>>()
        .wire()?;
    let pkp = frost_secp256k1::keys::PublicKeyPackage::deserialize(&req.public_key_package)
        .map_err(|e| invalid("public_key_package", e))?;
    // Only the package every remaining member acknowledged holding, of the key the operators named.
    let pkp_key = pkp
        .verifying_key()
        .serialize()
        .map_err(|e| invalid("public_key_package", e))?;
    // ... acknowledged under the registry this node takes the group under.
    let registry_hash = match &registry {
        Some(r) => r
            .registry
            .build()
            .map_err(|e| NodeError::Bug(format!("a checked registry chain: {e}")))?
            .hash()
            .to_vec(),
        None => quorum::registry_hash(node, &spec.group)?,
    };
    check_certificate(
        node,
        "repair-receive",
        &spec,
        &req,
        authorized.spec().epoch + 1,
        &pkp_key,
        &req.public_key_package,
        &registry_hash,
    )?;
    let key_package = repair::replacement_receive(
        &spec,
        &authorized,
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
    let approved_spec = authorized.spec();
    let record = GroupRecord {
        v: 1,
        name: spec.group.clone(),
        tier: approved_spec.tier,
        threshold: spec.threshold,
        members: spec.new_members(),
        removed: spec.removed.clone(),
        // Counted in velocity reads for a window from here: when the others
        // recorded the removals is not known to the replacement.
        removed_at: spec
            .removed
            .iter()
            .map(|m| (m.clone(), permafrost_core::unix_now()))
            .collect(),
        ceremony_id: spec.repair_id.clone(),
        sealed_key_package: node.vault.seal_key_package(
            &spec.group,
            approved_spec.epoch + 1,
            &key_package,
        )?,
        public_key_package: req.public_key_package.clone(),
        group_public_key: group_public_key.clone(),
        active: true,
        pending_refresh: None,
        scheme,
        network,
        refresh_certificate: None,
        prepared_repair: None,
        repair_certificate: Some(certificate_of(&req)),
        retired: false,
    };
    quorum::audit_authorized(node, "repair-receive", &authorized)?;
    audit(
        node,
        "repair_share_received",
        serde_json::json!({"repair": spec.repair_id, "group": spec.group.as_str(), "replaces": spec.lost.as_str()}),
    )?;
    let epoch = quorum::next_epoch(&authorized, approved_spec.epoch + 1);
    node.store
        .insert_group_at(&record, &epoch, registry.as_ref())
        .await?;
    info!(node = %node.id, group = %spec.group, replaces = %spec.lost, "repaired share sealed");
    Ok(pb::DkgKeyReport {
        sender: node.id.to_string(),
        group_public_key,
        public_key_package: req.public_key_package,
        signature: Vec::new(),
    })
}

/// `ReplaceMember` (a member that did not help): under the operators'
/// approval of this repair of the epoch it holds, records the new membership
/// and the next epoch and revokes the lost node. Idempotent for the same
/// spec; the lost node itself never drops itself (X7).
pub(super) async fn replace_member(
    node: &SignerNode,
    req: &pb::RepairRequest,
) -> Result<pb::ReplaceMemberResponse, NodeError> {
    let (spec, approved) = repair_context(node, "replace-member", req)?;
    never_drops_itself(node, "replace-member", &spec)?;
    // Every read-modify-write of the group record takes the refresh lock, so
    // it never overwrites a pending refresh stored meanwhile (K7).
    let _fate = node.refresh_lock.lock().await;
    let mut record = node.group_record(&spec.group)?;
    let (authorized, epoch) = as_member(
        node,
        "replace-member",
        &spec,
        approved,
        &record,
        &[Standing::Current, Standing::Applied],
    )?;
    if authorized.standing() == Standing::Applied {
        return Ok(pb::ReplaceMemberResponse {});
    }
    check_certificate(
        node,
        "replace-member",
        &spec,
        req,
        epoch + 1,
        &record.group_public_key,
        &record.public_key_package,
        &quorum::registry_hash(node, &spec.group)?,
    )?;
    quorum::audit_authorized(node, "replace-member", &authorized)?;
    audit(
        node,
        "member_replaced",
        serde_json::json!({"group": spec.group.as_str(), "lost": spec.lost.as_str(), "replacement": spec.replacement.as_str(), "epoch": epoch + 1}),
    )?;
    record.members = spec.new_members();
    record.prepared_repair = None;
    record.repair_certificate = Some(certificate_of(req));
    node.store
        .advance_group(
            &record,
            Some(&spec.lost),
            epoch,
            &quorum::next_epoch(&authorized, epoch + 1),
        )
        .await?;
    Ok(pb::ReplaceMemberResponse {})
}
