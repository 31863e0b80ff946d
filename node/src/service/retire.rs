//! Retiring a group for good under an operator quorum's retire spec.
//!
//! The node checks the quorum and that the spec is for the epoch and key it
//! holds, records the retirement as the group's next epoch (so the name is
//! never reused: a DKG of it is refused like any other held name), and then
//! destroys the share's data key (K8). From then on every step on the group
//! is refused, and no copy of the share opens.

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
    let mut record = node.store.group(&name)?.ok_or_else(|| {
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
    let share = std::mem::take(&mut record.sealed_key_package);
    let pending = record.pending_refresh.take();
    record.active = false;
    record.retired = true;
    record.prepared_repair = None;
    node.store
        .advance_group(
            &record,
            None,
            held.epoch,
            &quorum::next_epoch(&authorized, held.epoch + 1),
        )
        .await?;
    refresh::shred(node, &name, &share, "group retired")?;
    if let Some(p) = pending {
        refresh::shred(node, &name, &p.sealed_key_package, "group retired")?;
    }
    info!(node = %node.id, group = %name, "key group retired; its share is destroyed");
    Ok(pb::RetireGroupResponse {})
}
