//! Proactive refresh of a group's shares (K6): new shares, same group key,
//! same members, order, tier and threshold; the old share is destroyed only
//! once every member has confirmed the new public key package.
//!
//! The ceremony itself runs the DKG steps of [`super::dkg`] with the old
//! shares as input (`permafrost_core::dkg::start_refresh`); this module holds
//! what a refresh adds: the checks before it starts, keeping the new share
//! pending beside the old one, and the commit that swaps them.

use permafrost_core::dkg::{self, CeremonySpec, DkgOutput, OldShares};
use permafrost_core::CoreError;
use permafrost_proto as pb;
use tracing::info;

use super::{audit, invalid, missing, quorum, refuse, stored_public_key_package, FromWire};
use crate::metrics::Check;
use crate::store::{GroupRecord, PendingRefresh};
use crate::{NodeError, SignerNode};

/// The shares a refresh of `record` starts from, once the spec is one this node may refresh.
pub(super) fn old_shares(
    node: &SignerNode,
    spec: &CeremonySpec,
    record: &GroupRecord,
) -> Result<OldShares, NodeError> {
    // K6: a refresh keeps members, order, tier and threshold.
    if record.members != spec.members
        || record.threshold != spec.threshold
        || record.tier != spec.tier
    {
        return Err(refuse(
            node,
            "refresh",
            Check::Ceremony,
            CoreError::refused(
                "a refresh cannot change the members, their order, the tier or the threshold",
            ),
        ));
    }
    if !record.active {
        return Err(NodeError::Precondition(
            "only an active group can be refreshed".into(),
        ));
    }
    Ok(OldShares {
        key_package: node
            .vault
            .open_key_package(&record.name, &record.sealed_key_package)?,
        public_key_package: stored_public_key_package(record)?,
    })
}

/// The end of a refresh's part 3: the new share is sealed beside the old one,
/// which stays in use until every member confirms ([`commit`]).
pub(super) async fn hold_new_share(
    node: &SignerNode,
    spec: &CeremonySpec,
    out: DkgOutput,
) -> Result<pb::DkgKeyReport, NodeError> {
    let mut record = node.group_record(&spec.group)?;
    let superseded = record.pending_refresh.take();
    record.pending_refresh = Some(PendingRefresh {
        ceremony_id: spec.ceremony_id.clone(),
        sealed_key_package: node.vault.seal_key_package(&spec.group, &out.key_package)?,
        public_key_package: out.report.public_key_package.clone(),
    });
    audit(
        node,
        "refresh_share_received",
        serde_json::json!({"ceremony": spec.ceremony_id, "group": spec.group.as_str()}),
    )?;
    node.store.put_group(&record).await?;
    if let Some(superseded) = superseded {
        // An earlier refresh of this epoch that never committed: its share is never used.
        shred(
            node,
            &spec.group,
            &superseded.sealed_key_package,
            "superseded by a new refresh",
        )?;
    }
    info!(node = %node.id, group = %spec.group, "refreshed share sealed; old share kept until every member confirms");
    Ok(out.report.into())
}

/// `CommitRefresh`: the operators approved this refresh of the epoch this
/// node holds, and every member signed a report of exactly the public key
/// package this node derived, so the new share replaces the old one and the
/// group moves to the next epoch.
pub(super) async fn commit(
    node: &SignerNode,
    req: pb::CommitRefreshRequest,
) -> Result<pb::CommitRefreshResponse, NodeError> {
    let spec: CeremonySpec = req
        .spec
        .as_ref()
        .ok_or_else(|| missing("spec"))?
        .try_into()
        .wire()?;
    if !spec.refresh {
        return Err(invalid("spec", "not a refresh"));
    }
    let reports: Vec<dkg::GroupKeyReport> = req
        .reports
        .iter()
        .map(TryInto::try_into)
        .collect::<Result<_, _>>()
        .wire()?;
    let approved = quorum::approved(node, "commit-refresh", req.authorization.as_ref())?;
    let mut record = node.group_record(&spec.group)?;
    let held = quorum::held(node, &record)?;
    let authorized = approved
        .at_current_epoch(&node.id, &held)
        .and_then(|a| spec.check_authorized(&a).map(|()| a))
        .map_err(|e| refuse(node, "commit-refresh", Check::Ceremony, e))?;
    let Some(pending) = record.pending_refresh.clone() else {
        return Err(NodeError::Precondition(format!(
            "no refresh of {} is pending on {}",
            spec.group, node.id
        )));
    };
    // K6: every member must have signed a report of exactly our new public package; otherwise keep the old share.
    let agreed = dkg::check_reports(&spec, &node.directory, &reports)
        .map_err(|e| refuse(node, "commit-refresh", Check::Ceremony, e))?;
    let agreed_bytes = agreed
        .serialize()
        .map_err(|e| NodeError::Bug(format!("serialize public key package: {e}")))?;
    if pending.ceremony_id != spec.ceremony_id || pending.public_key_package != agreed_bytes {
        return Err(refuse(
            node,
            "commit-refresh",
            Check::Ceremony,
            CoreError::refused("the confirmed public key package is not the one this node derived"),
        ));
    }
    let agreed_key = agreed
        .verifying_key()
        .serialize()
        .map_err(|e| NodeError::Bug(format!("serialize group key: {e}")))?;
    if agreed_key != record.group_public_key {
        return Err(refuse(
            node,
            "commit-refresh",
            Check::Ceremony,
            CoreError::refused("a refresh must not change the group key"),
        ));
    }
    quorum::audit_authorized(node, "commit-refresh", &authorized)?;
    audit(
        node,
        "refresh_committed",
        serde_json::json!({"ceremony": spec.ceremony_id, "group": spec.group.as_str(), "epoch": held.epoch + 1}),
    )?;
    // The record now names the new share; the old one's data key is shredded
    // once that is durable (K8), so no copy of the old blob opens again.
    let old_share = std::mem::replace(&mut record.sealed_key_package, pending.sealed_key_package);
    record.public_key_package = pending.public_key_package;
    record.pending_refresh = None;
    node.store
        .advance_group(
            &record,
            None,
            held.epoch,
            &quorum::next_epoch(&authorized, held.epoch + 1),
        )
        .await?;
    shred(node, &spec.group, &old_share, "refresh committed")?;
    info!(node = %node.id, group = %spec.group, "refresh committed; old share destroyed");
    Ok(pb::CommitRefreshResponse {})
}

/// Destroys the data key of a share this node no longer uses (K8) and audits it.
pub(super) fn shred(
    node: &SignerNode,
    group: &permafrost_core::GroupName,
    sealed: &[u8],
    why: &str,
) -> Result<(), NodeError> {
    if node.vault.shred(group, sealed)? {
        audit(
            node,
            "data_key_shredded",
            serde_json::json!({"group": group.as_str(), "why": why}),
        )?;
    }
    Ok(())
}
