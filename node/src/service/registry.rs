//! Changing a group's operator registry (THREATS X5): a change-registry spec
//! approved by the quorum of the registry in force for the group here, for
//! the epoch, key and membership this node holds, and naming the registry it
//! replaces and the next sequence. The new registry then decides every later
//! ceremony of the group on this node; the config's `[operators]` still
//! decides creates and groups whose registry never changed.
//!
//! The epoch does not move: signing goes on undisturbed while some members
//! have the change and others not yet, and any coordinator re-drives the
//! stored change on the members that missed it. Sequences only grow, so an
//! old change can never bring back a registry the operators replaced.

use permafrost_core::ceremony::{Operation, RegistryChange};
use permafrost_core::CoreError;
use permafrost_proto as pb;
use tracing::info;

use super::{audit, quorum, refuse, FromWire};
use crate::metrics::Check;
use crate::{NodeError, SignerNode};

const STEP: &str = "change-registry";

/// `ChangeRegistry`.
pub(super) async fn change(
    node: &SignerNode,
    req: &pb::ChangeRegistryRequest,
) -> Result<pb::ChangeRegistryResponse, NodeError> {
    let name = permafrost_proto::convert::group_name("key_group", &req.key_group).wire()?;
    let record = node.group_record(&name)?;
    let relayed =
        permafrost_proto::convert::ceremony::required_authorization(req.authorization.as_ref())
            .wire()?;
    // One read of the group's registry: the quorum, the sequence and the
    // registry replaced are all checked against it, and the store step
    // applies the change only if it is still the one in force.
    let stored = node.store.group_registry(&name)?;
    let last = stored
        .as_ref()
        .and_then(|r| r.changes.last().map(|c| c.spec.digest()));
    if let Some(stored) = &stored {
        if stored
            .changes
            .iter()
            .any(|c| c.spec.digest() == relayed.spec.digest())
        {
            // A retry, or another coordinator re-driving it: already done
            // (changes nothing, so it needs no quorum of the new registry).
            return response(stored.seq, &stored.registry);
        }
    }
    let (seq, current) = match &stored {
        Some(r) => (
            r.seq,
            r.registry.build().map_err(|e| {
                NodeError::Corrupt(format!("stored operator registry of {name}: {e}"))
            })?,
        ),
        None => match &node.registry {
            Some(config) => (0, config.clone()),
            None => {
                return Err(refuse(
                    node,
                    STEP,
                    Check::Ceremony,
                    CoreError::refused(format!(
                    "{} has no [operators] registry in its config, so it takes part in no ceremony",
                    node.id
                )),
                ))
            }
        },
    };
    let approved = quorum::approved_under(node, STEP, &relayed, &current)?;
    let spec = approved.spec().clone();
    let change: RegistryChange = match (&spec.registry, spec.operation, spec.group == name) {
        (Some(change), Operation::ChangeRegistry, true) => change.clone(),
        _ => {
            return Err(refuse(
                node,
                STEP,
                Check::Ceremony,
                CoreError::refused(format!(
                    "the operators approved a {} of {}, not a registry change of {name}",
                    spec.operation, spec.group
                )),
            ))
        }
    };
    let new_registry = change.validate().map_err(NodeError::from)?;
    let held = quorum::held(node, &record)?;
    let authorized = approved
        .at_current_epoch(&node.id, &held)
        .map_err(|e| refuse(node, STEP, Check::Ceremony, e))?;
    change
        .follows(seq, &current.hash())
        .map_err(|e| refuse(node, STEP, Check::Ceremony, e))?;
    quorum::audit_authorized(node, STEP, &authorized)?;
    // The record of the change, before it is made (as every other step).
    audit(
        node,
        "operator_registry_changed",
        serde_json::json!({
            "group": name.as_str(),
            "seq": change.seq,
            "previous": hex::encode(current.hash()),
            "registry": hex::encode(new_registry.hash()),
            "operators": new_registry.operators().collect::<Vec<_>>(),
            "approved_by": authorized.operators(),
        }),
    )?;
    // Kept with the approvals that counted, for a re-drive elsewhere.
    let mut signed = relayed;
    signed
        .approvals
        .retain(|a| authorized.operators().contains(&a.operator));
    node.store
        .change_group_registry(&name, seq, last, signed, change.registry.clone())
        .await?;
    info!(node = %node.id, group = %name, seq = change.seq, "operator registry of the group changed");
    response(change.seq, &change.registry)
}

fn response(
    seq: u64,
    registry: &permafrost_core::ceremony::RegistryConfig,
) -> Result<pb::ChangeRegistryResponse, NodeError> {
    let built = registry
        .build()
        .map_err(|e| NodeError::Corrupt(format!("stored operator registry: {e}")))?;
    Ok(pb::ChangeRegistryResponse {
        registry_seq: seq,
        registry_hash: built.hash().to_vec(),
    })
}

/// The group's registry sequence here and, when asked, every change applied
/// (for `GetCommitCertificate`).
pub(super) fn changes_of(
    node: &SignerNode,
    name: &permafrost_core::GroupName,
    include: bool,
) -> Result<(u64, Vec<pb::SignedLifecycleSpec>), NodeError> {
    Ok(match node.store.group_registry(name)? {
        Some(r) => (
            r.seq,
            if include {
                r.changes
                    .iter()
                    .map(pb::SignedLifecycleSpec::from)
                    .collect()
            } else {
                Vec::new()
            },
        ),
        None => (0, Vec::new()),
    })
}

/// The group's registry sequence and hash here, for status (empty hash: no
/// registry at all).
pub(super) fn status_of(
    node: &SignerNode,
    name: &permafrost_core::GroupName,
) -> Result<(u64, Vec<u8>), NodeError> {
    // Status must still answer with a record it cannot read: it shows none.
    Ok(match quorum::registry_for(node, name) {
        Ok(Some((seq, r))) => (seq, r.hash().to_vec()),
        Ok(None) | Err(_) => (0, Vec::new()),
    })
}
