//! Aborting an unfinished refresh without splitting the group (THREATS K7).
//!
//! A refresh commits only with every participant's signed report. So a
//! participant that has not reported can end the refresh for everyone: it
//! promises, signed with its identity key, that it never will
//! ([`abandon`]), and every member holding the refresh's new share drops it
//! on that promise ([`drop_pending`]), since no complete certificate can
//! then exist. Both steps, the report of `DkgFinish` and `CommitRefresh`
//! take [`SignerNode::refresh_lock`], so a node never both reports a refresh
//! and promises not to, and never drops a share it is committing.
//!
//! No operator quorum: an abort destroys only a share that can never be
//! committed; nobody's current share and nobody's membership change
//! (docs/ceremony-spec.md, "Aborting an unfinished refresh").

use permafrost_core::dkg::{self, AbandonPromise};
use permafrost_proto as pb;
use permafrost_proto::convert::group_name;
use tracing::{info, warn};

use super::{audit, invalid, missing, quorum, refresh, refuse, FromWire};
use crate::metrics::Check;
use crate::{NodeError, SignerNode};

/// `AbandonRefresh`: promises never to report refresh `ceremony_id`, if
/// this node has not; refuses (FAILED_PRECONDITION) if it has.
pub(super) async fn abandon(
    node: &SignerNode,
    req: &pb::AbandonRefreshRequest,
) -> Result<pb::RefreshAbandonPromise, NodeError> {
    const STEP: &str = "abandon-refresh";
    let name = group_name("key_group", &req.key_group).wire()?;
    let ceremony_id = ceremony_id(&req.ceremony_id)?;
    let _fate = node.refresh_lock.lock().await;
    let record = node.group_record(&name)?;
    let mark = node.store.refresh_mark(&name, ceremony_id)?;
    let holds_it = record
        .pending_refresh
        .as_ref()
        .is_some_and(|p| p.ceremony_id == ceremony_id);
    let reported = holds_it
        || refresh::already_committed(&record, ceremony_id)
        || mark.as_ref().is_some_and(|m| m.reported);
    if reported {
        return Err(refuse_out_of_order(
            node,
            STEP,
            format!(
                "{} has reported refresh {ceremony_id} of {name}, so a commit certificate may \
                 exist and it cannot promise never to; finish the refresh by recovery instead \
                 (permafrostctl keygroup recover --name {name})",
                node.id
            ),
        ));
    }
    // A promise given before is given again as it was, at the epoch it was made at.
    let again = mark.as_ref().filter(|m| m.promised).map(|m| m.epoch);
    let epoch = match again {
        Some(epoch) => epoch,
        None => quorum::epoch_of(node, &record)?,
    };
    audit(
        node,
        "refresh_abandoned",
        serde_json::json!({"group": name.as_str(), "ceremony": ceremony_id, "epoch": epoch, "again": again.is_some()}),
    )?;
    // Durable before the promise leaves: after a restart this node still
    // refuses to report the refresh.
    node.store
        .promise_abandon(&name, ceremony_id, epoch)
        .await?;
    info!(node = %node.id, group = %name, ceremony = %ceremony_id, epoch, "refresh abandoned: this node never reports it");
    Ok(AbandonPromise::sign(&node.identity, &name, epoch, ceremony_id, &node.id).into())
}

/// `DropPendingRefresh`: on a participant's valid promise never to report
/// the refresh this node holds pending, destroys that pending share.
pub(super) async fn drop_pending(
    node: &SignerNode,
    req: &pb::DropPendingRefreshRequest,
) -> Result<pb::DropPendingRefreshResponse, NodeError> {
    const STEP: &str = "drop-pending-refresh";
    let name = group_name("key_group", &req.key_group).wire()?;
    let ceremony_id = ceremony_id(&req.ceremony_id)?;
    let promise: AbandonPromise = req
        .promise
        .as_ref()
        .ok_or_else(|| missing("promise"))?
        .try_into()
        .wire()?;
    let _fate = node.refresh_lock.lock().await;
    let record = node.group_record(&name)?;
    let Some(pending) = &record.pending_refresh else {
        // Dropped before, or never held: done either way.
        return Ok(pb::DropPendingRefreshResponse { dropped: false });
    };
    if pending.ceremony_id != ceremony_id {
        return Err(refuse_out_of_order(
            node,
            STEP,
            format!(
                "{} holds refresh {} of {name} pending, not {ceremony_id}; nothing dropped",
                node.id, pending.ceremony_id
            ),
        ));
    }
    let epoch = quorum::epoch_of(node, &record)?;
    let package = frost_secp256k1::keys::PublicKeyPackage::deserialize(&pending.public_key_package)
        .map_err(|e| {
            NodeError::Corrupt(format!(
                "pending public key package of {name} unreadable: {e}"
            ))
        })?;
    // Only a participant's word counts: a removal's subject, say, takes no
    // part and could promise anything.
    let participants = dkg::participants_of(&record.members, &package);
    promise
        .check(&node.directory, &name, epoch, ceremony_id, &participants)
        .map_err(|e| refuse(node, STEP, Check::Ceremony, e))?;
    audit(
        node,
        "refresh_pending_dropped",
        serde_json::json!({"group": name.as_str(), "ceremony": ceremony_id, "epoch": epoch, "promised_by": promise.member.as_str()}),
    )?;
    let taken = node
        .store
        .drop_pending_refresh(&name, ceremony_id, epoch, &promise.member)
        .await?;
    let Some(taken) = taken else {
        return Ok(pb::DropPendingRefreshResponse { dropped: false });
    };
    // The record no longer names the share; now its data key goes (K8). A
    // crash in between leaves a key no share uses, shredded at start.
    refresh::shred(node, &name, &taken.sealed_key_package, "refresh abandoned")?;
    info!(node = %node.id, group = %name, ceremony = %ceremony_id, promised_by = %promise.member, "pending refresh share dropped; the current share stays in use");
    Ok(pb::DropPendingRefreshResponse { dropped: true })
}

/// Under [`SignerNode::refresh_lock`]: refuses a step of refresh
/// `ceremony_id` of `group` once this node abandoned it (it promised never
/// to report it, or dropped its share of it on a participant's promise).
pub(super) fn refuse_if_abandoned(
    node: &SignerNode,
    step: &'static str,
    group: &permafrost_core::GroupName,
    ceremony_id: &str,
) -> Result<(), NodeError> {
    let Some(mark) = node.store.refresh_mark(group, ceremony_id)? else {
        return Ok(());
    };
    let why = match (&mark.dropped_on, mark.promised) {
        (_, true) => format!("{} promised never to report it", node.id),
        (Some(member), false) => format!("{member} promised never to report it"),
        (None, false) => return Ok(()),
    };
    Err(refuse_out_of_order(
        node,
        step,
        format!(
            "refresh {ceremony_id} of {group} was abandoned ({why}) and can never commit; \
             run a new refresh"
        ),
    ))
}

/// A step refused because it does not fit this node's state: audited, and
/// answered FAILED_PRECONDITION with `reason`. If the refusal cannot be
/// recorded, the node is unavailable instead.
fn refuse_out_of_order(node: &SignerNode, step: &'static str, reason: String) -> NodeError {
    warn!(node = %node.id, step, %reason, "refused");
    if let Err(e) = audit(
        node,
        "refused",
        serde_json::json!({"step": step, "reason": reason}),
    ) {
        return e;
    }
    NodeError::Precondition(reason)
}

/// A ceremony id as the DKG spec allows it (1..=64 characters).
fn ceremony_id(value: &str) -> Result<&str, NodeError> {
    match value.len() {
        0 => Err(missing("ceremony_id")),
        1..=64 => Ok(value),
        n => Err(invalid(
            "ceremony_id",
            format!("{n} characters, at most 64"),
        )),
    }
}
