//! Proactive refresh of a group's shares (K6): new shares, same group key,
//! same members, order, tier and threshold; the old share is destroyed only
//! once every member has confirmed the new public key package.
//!
//! The ceremony itself runs the DKG steps of [`super::dkg`] with the old
//! shares as input (`permafrost_core::dkg::start_refresh`); this module holds
//! what a refresh adds: the checks before it starts, keeping the new share
//! pending beside the old one, and the commit that swaps them.

use permafrost_core::ceremony::{AuthorizedCeremony, Operation};
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
    authorized: &AuthorizedCeremony,
) -> Result<OldShares, NodeError> {
    // K7: a refresh this node abandoned never starts again here.
    super::abandon::refuse_if_abandoned(node, "dkg-start", &spec.group, &spec.ceremony_id)?;
    // K6: a refresh keeps members, order, tier and threshold.
    if record.members != spec.members
        || record.threshold != spec.threshold
        || record.tier != spec.tier
        || !removed_as_approved(spec, record, authorized)
    {
        return Err(refuse(
            node,
            "refresh",
            Check::Ceremony,
            CoreError::refused(
                "a refresh cannot change the members, their order, the tier or the threshold, \
                 and leaves out exactly the removed members (and the one a removal names)",
            ),
        ));
    }
    if !record.active {
        return Err(NodeError::Precondition(
            "only an active group can be refreshed".into(),
        ));
    }
    // A pending refresh is finished or aborted first, never replaced (K7).
    if let Some(p) = &record.pending_refresh {
        return Err(NodeError::Precondition(format!(
            "node {} holds refresh {} of {} pending; finish it (keygroup recover) or abort it \
             (keygroup abort-refresh) before another refresh",
            node.id, p.ceremony_id, record.name
        )));
    }
    Ok(OldShares {
        key_package: node
            .vault
            .open_key_package(&record.name, &record.sealed_key_package)?,
        public_key_package: stored_public_key_package(record)?,
    })
}

/// Whether `spec` leaves out exactly the members this node's record removed,
/// plus the one the operators' removal names (none for a plain refresh).
fn removed_as_approved(
    spec: &CeremonySpec,
    record: &GroupRecord,
    authorized: &AuthorizedCeremony,
) -> bool {
    let mut expected = record.removed.clone();
    let approved = authorized.spec();
    if approved.operation == Operation::RemoveMember {
        match &approved.subject {
            Some(s) if !expected.contains(s) => expected.push(s.clone()),
            _ => return false,
        }
    }
    super::repair::same_set(&spec.removed, &expected)
}

/// The end of a refresh's part 3: the new share is sealed beside the old one,
/// which stays in use until every member confirms ([`commit`]). The caller
/// holds `_fate`, [`SignerNode::refresh_lock`], from before the report was
/// made until it leaves (K7).
pub(super) async fn hold_new_share(
    node: &SignerNode,
    spec: &CeremonySpec,
    authorized: &AuthorizedCeremony,
    authorization: Option<pb::SignedLifecycleSpec>,
    out: DkgOutput,
    _fate: tokio::sync::MutexGuard<'_, ()>,
) -> Result<pb::DkgKeyReport, NodeError> {
    let mut record = node.group_record(&spec.group)?;
    let epoch = quorum::epoch_of(node, &record)?;
    // The refresh was approved for the epoch it started at; if the group
    // moved on meanwhile (another refresh committed), this one is void.
    if epoch != authorized.spec().epoch {
        return Err(NodeError::Precondition(format!(
            "key group {} moved to epoch {epoch} while refresh {} (for epoch {}) ran",
            spec.group,
            spec.ceremony_id,
            authorized.spec().epoch
        )));
    }
    // Never replace a pending refresh: this node reported it, so a complete
    // certificate of it may exist and another member may commit it.
    if let Some(p) = &record.pending_refresh {
        return Err(NodeError::Precondition(format!(
            "node {} holds refresh {} of {} pending; finish it (keygroup recover) or abort it \
             (keygroup abort-refresh) before another refresh",
            node.id, p.ceremony_id, spec.group
        )));
    }
    let next_epoch = epoch + 1;
    let report: pb::DkgKeyReport = out.report.clone().into();
    record.pending_refresh = Some(PendingRefresh {
        ceremony_id: spec.ceremony_id.clone(),
        sealed_key_package: node.vault.seal_key_package(
            &spec.group,
            next_epoch,
            &out.key_package,
        )?,
        public_key_package: out.report.public_key_package.clone(),
        report: Some(prost::Message::encode_to_vec(&report)),
        spec: Some(prost::Message::encode_to_vec(&pb::CeremonySpec::from(spec))),
        authorization: authorization.map(|a| prost::Message::encode_to_vec(&a)),
    });
    audit(
        node,
        "refresh_share_received",
        serde_json::json!({"ceremony": spec.ceremony_id, "group": spec.group.as_str()}),
    )?;
    // K7: the pending share and the mark that this node reported the
    // refresh are one store step, under the lock an abandon promise takes.
    node.store
        .hold_pending_refresh(&record, &spec.ceremony_id, epoch)
        .await?;
    info!(node = %node.id, group = %spec.group, "refreshed share sealed; old share kept until every member confirms");
    Ok(report)
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
    let _fate = node.refresh_lock.lock().await;
    let mut record = node.group_record(&spec.group)?;
    // F3/K7: the same commit again (a retry, or another coordinator re-driving
    // a certificate) is answered as done, not refused.
    if already_committed(&record, &spec.ceremony_id) {
        return Ok(pb::CommitRefreshResponse {});
    }
    super::abandon::refuse_if_abandoned(node, "commit-refresh", &spec.group, &spec.ceremony_id)?;
    let pending_accepted = record
        .pending_refresh
        .as_ref()
        .is_some_and(|p| p.ceremony_id == spec.ceremony_id);
    let approved = quorum::approved_for_commit(
        node,
        req.authorization.as_ref(),
        &spec.authorization,
        pending_accepted,
    )?;
    let held = quorum::held(node, &record)?;
    let authorized = approved
        .at_current_epoch(&node.id, &held)
        .and_then(|a| spec.check_authorized(&a).map(|()| a))
        .map_err(|e| refuse(node, "commit-refresh", Check::Ceremony, e))?;
    if record.members != spec.members || !removed_as_approved(&spec, &record, &authorized) {
        return Err(refuse(
            node,
            "commit-refresh",
            Check::Ceremony,
            CoreError::refused(
                "the refresh lists other members or removed members than this node's record",
            ),
        ));
    }
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
    let sealed_for = crate::vault::ShareVault::sealed_epoch(&pending.sealed_key_package);
    if sealed_for.is_some_and(|e| e != held.epoch + 1) {
        return Err(NodeError::Precondition(format!(
            "the pending share of {} was made for epoch {}, not {}; run a new refresh",
            spec.group,
            sealed_for.unwrap_or_default(),
            held.epoch + 1
        )));
    }
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
    // A removal: the removed member becomes a tombstone here with this epoch.
    record.set_removed(&spec.removed, permafrost_core::unix_now());
    // K7: what committed this, kept for any coordinator that must finish the
    // refresh on members that missed the commit.
    record.refresh_certificate = Some(prost::Message::encode_to_vec(&req));
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

/// Whether this node already committed the refresh `ceremony_id` (its stored
/// certificate names it).
pub(super) fn already_committed(record: &GroupRecord, ceremony_id: &str) -> bool {
    record
        .refresh_certificate
        .as_deref()
        .and_then(|bytes| <pb::CommitRefreshRequest as prost::Message>::decode(bytes).ok())
        .and_then(|c| c.spec)
        .is_some_and(|s| s.ceremony_id == ceremony_id)
}

/// This node's part of a pending refresh's commit certificate, when it
/// kept one (refreshes held before it did have none).
fn pending_part(
    name: &permafrost_core::GroupName,
    p: &PendingRefresh,
) -> Result<Option<pb::CommitRefreshRequest>, NodeError> {
    let (Some(report), Some(spec), Some(authorization)) = (&p.report, &p.spec, &p.authorization)
    else {
        return Ok(None);
    };
    let corrupt = |what: &str, e: prost::DecodeError| {
        NodeError::Corrupt(format!("stored pending refresh {what} of {name}: {e}"))
    };
    Ok(Some(pb::CommitRefreshRequest {
        spec: Some(prost::Message::decode(spec.as_slice()).map_err(|e| corrupt("spec", e))?),
        reports: vec![prost::Message::decode(report.as_slice()).map_err(|e| corrupt("report", e))?],
        authorization: Some(
            prost::Message::decode(authorization.as_slice())
                .map_err(|e| corrupt("authorization", e))?,
        ),
    }))
}

/// `GetCommitCertificate` (K7): this node's epoch of a group, the refresh it
/// holds uncommitted, and the certificate of the refresh that moved it to its
/// epoch. All of it public: specs, signed reports and operator signatures.
pub(super) fn certificate(
    node: &SignerNode,
    req: &pb::CommitCertificateRequest,
) -> Result<pb::CommitCertificate, NodeError> {
    let name = permafrost_proto::convert::group_name("key_group", &req.key_group).wire()?;
    let record = node.group_record(&name)?;
    let decode = |what: &str, bytes: &[u8]| {
        NodeError::Corrupt(format!(
            "stored {what} certificate of {name}: {} bytes unreadable",
            bytes.len()
        ))
    };
    let repair = match (&record.repair_certificate, req.include_commit) {
        (Some(bytes), true) => Some(
            <pb::RepairRequest as prost::Message>::decode(bytes.as_slice())
                .map_err(|_| decode("repair", bytes))?,
        ),
        _ => None,
    };
    let commit = match (&record.refresh_certificate, req.include_commit) {
        (Some(bytes), true) => Some(
            <pb::CommitRefreshRequest as prost::Message>::decode(bytes.as_slice()).map_err(
                |e| NodeError::Corrupt(format!("stored commit certificate of {name}: {e}")),
            )?,
        ),
        _ => None,
    };
    let (registry_seq, registry_changes) =
        super::registry::changes_of(node, &name, req.include_commit)?;
    let pending = match (&record.pending_refresh, req.include_commit) {
        (Some(p), true) => pending_part(&name, p)?,
        _ => None,
    };
    Ok(pb::CommitCertificate {
        pending,
        registry_seq,
        registry_changes,
        epoch: quorum::epoch_of(node, &record)?,
        pending_ceremony_id: record
            .pending_refresh
            .as_ref()
            .map(|p| p.ceremony_id.clone())
            .unwrap_or_default(),
        commit,
        repair,
        prepared_repair_id: record
            .prepared_repair
            .as_ref()
            .map(|p| p.repair_id.clone())
            .unwrap_or_default(),
    })
}
