//! Retiring a group for good under an operator quorum's retire spec.
//!
//! The node checks the quorum and that the spec is for the epoch and key it
//! holds, records the retirement as the group's next epoch (so the name is
//! never reused: a DKG of it is refused like any other held name), and then
//! destroys the share's data key (K8). From then on every step on the group
//! is refused, and no copy of the share opens.
//!
//! The member a remove-member spec names leaves the same way ([`leave`]):
//! it drops its own share under that spec, which the refresh among the others
//! never waits for (a removed machine may be lost or hostile).

use permafrost_core::ceremony::Operation;
use permafrost_core::CoreError;
use permafrost_proto as pb;
use tracing::info;

use super::{audit, quorum, refresh, refuse, FromWire};
use crate::metrics::Check;
use crate::{NodeError, SignerNode};

/// `RetireGroup`.
pub(super) async fn retire(
    node: &SignerNode,
    req: &pb::RetireGroupRequest,
) -> Result<pb::RetireGroupResponse, NodeError> {
    let name = permafrost_proto::convert::group_name("key_group", &req.key_group).wire()?;
    let approved = quorum::approved(node, "retire", req.authorization.as_ref())?;
    // The record is rewritten whole: never over a pending refresh stored meanwhile.
    let _fate = node.refresh_lock.lock().await;
    let record = node.store.group(&name)?.ok_or_else(|| {
        NodeError::NotFound(format!("key group {name} is not held by node {}", node.id))
    })?;
    if record.retired {
        return Ok(pb::RetireGroupResponse {});
    }
    let held = quorum::held(node, &record)?;
    let spec = approved.spec().clone();
    if spec.operation != Operation::Retire || spec.group != name {
        return Err(refuse(
            node,
            "retire",
            Check::Ceremony,
            CoreError::refused(format!(
                "the operators approved a {} of {}, not the retirement of {name}",
                spec.operation, spec.group
            )),
        ));
    }
    let authorized = approved
        .at_current_epoch(&node.id, &held)
        .map_err(|e| refuse(node, "retire", Check::Ceremony, e))?;
    quorum::audit_authorized(node, "retire", &authorized)?;
    audit(
        node,
        "group_retired",
        serde_json::json!({"group": name.as_str(), "epoch": held.epoch + 1}),
    )?;
    destroy(node, record, held.epoch, &authorized, "group retired").await?;
    info!(node = %node.id, group = %name, "key group retired; its share is destroyed");
    Ok(pb::RetireGroupResponse {})
}

/// `LeaveGroup`: this node is the member an operator-quorum removal names;
/// it stops using the group for good and destroys its share's data key (K8).
pub(super) async fn leave(
    node: &SignerNode,
    req: &pb::LeaveGroupRequest,
) -> Result<pb::LeaveGroupResponse, NodeError> {
    let name = permafrost_proto::convert::group_name("key_group", &req.key_group).wire()?;
    let approved = quorum::approved(node, "leave", req.authorization.as_ref())?;
    // The record is rewritten whole: never over a pending refresh stored meanwhile.
    let _fate = node.refresh_lock.lock().await;
    let record = node.store.group(&name)?.ok_or_else(|| {
        NodeError::NotFound(format!("key group {name} is not held by node {}", node.id))
    })?;
    if record.retired {
        return Ok(pb::LeaveGroupResponse {});
    }
    if approved.spec().group != name {
        return Err(refuse(
            node,
            "leave",
            Check::Ceremony,
            CoreError::refused(format!(
                "the spec is for {}, not {name}",
                approved.spec().group
            )),
        ));
    }
    let digest = approved.digest();
    let held = quorum::held(node, &record)?;
    let authorized = approved
        .as_removed(&node.id, &held)
        .map_err(|e| refuse(node, "leave", Check::Ceremony, e))?;
    // Only once the others hold new shares: the removal's certificate, with
    // the report of every remaining member over one new key package. Before
    // that, dropping this share could leave the group below t live shares.
    removal_committed(node, &record, req.certificate.as_ref(), &digest)
        .map_err(|e| refuse(node, "leave", Check::Ceremony, e))?;
    quorum::audit_authorized(node, "leave", &authorized)?;
    audit(
        node,
        "group_left",
        serde_json::json!({"group": name.as_str(), "epoch": held.epoch + 1}),
    )?;
    destroy(
        node,
        record,
        held.epoch,
        &authorized,
        "removed from the group",
    )
    .await?;
    info!(node = %node.id, group = %name, "removed from the key group; its share is destroyed");
    Ok(pb::LeaveGroupResponse {})
}

/// Checks that `certificate` is the committed removal of this node that the
/// operators approved as `digest`: a refresh of the group among the other
/// members, leaving this node out, that every one of them reported.
fn removal_committed(
    node: &SignerNode,
    record: &crate::store::GroupRecord,
    certificate: Option<&pb::CommitRefreshRequest>,
    digest: &permafrost_core::ceremony::SpecDigest,
) -> Result<(), CoreError> {
    let certificate = certificate.ok_or_else(|| {
        CoreError::refused(
            "no commit certificate: the removal has not been committed by the others",
        )
    })?;
    let spec: permafrost_core::dkg::CeremonySpec = certificate
        .spec
        .as_ref()
        .ok_or_else(|| CoreError::refused("the certificate has no ceremony spec"))?
        .try_into()
        .map_err(|e| CoreError::refused(format!("certificate spec: {e}")))?;
    if !spec.refresh
        || spec.group != record.name
        || spec.authorization != digest.0
        || spec.members != record.members
        || !spec.removed.contains(&node.id)
        || spec.participants().contains(&node.id)
    {
        return Err(CoreError::refused(format!(
            "the certificate is not the refresh of {} that removes {} under this spec",
            record.name, node.id
        )));
    }
    let reports: Vec<permafrost_core::dkg::GroupKeyReport> = certificate
        .reports
        .iter()
        .map(TryInto::try_into)
        .collect::<Result<_, _>>()
        .map_err(|e| CoreError::refused(format!("certificate reports: {e}")))?;
    let package = permafrost_core::dkg::check_reports(&spec, &node.directory, &reports)?;
    if package.verifying_key().serialize().ok().as_deref()
        != Some(record.group_public_key.as_slice())
    {
        return Err(CoreError::refused(
            "the certificate's key package is for another group key",
        ));
    }
    Ok(())
}

/// Records `record` as done for good at the next epoch, then shreds its
/// share (and any pending one).
async fn destroy(
    node: &SignerNode,
    mut record: crate::store::GroupRecord,
    epoch: u64,
    authorized: &permafrost_core::ceremony::AuthorizedCeremony,
    why: &str,
) -> Result<(), NodeError> {
    let name = record.name.clone();
    let share = std::mem::take(&mut record.sealed_key_package);
    let pending = record.pending_refresh.take();
    record.active = false;
    record.retired = true;
    record.prepared_repair = None;
    node.store
        .advance_group(
            &record,
            None,
            epoch,
            &quorum::next_epoch(authorized, epoch + 1),
        )
        .await?;
    refresh::shred(node, &name, &share, why)?;
    if let Some(p) = pending {
        refresh::shred(node, &name, &p.sealed_key_package, why)?;
    }
    Ok(())
}
