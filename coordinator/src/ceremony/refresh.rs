//! Refreshing a group's shares (K6) and removing a member, which is a
//! refresh among the remaining members only: same group key and threshold,
//! new shares for the others, the removed member's old share matching no
//! live share once they commit and shred theirs (K8). Both commit in two
//! phases with a stored certificate (K7).

use std::sync::Arc;

use permafrost_core::ceremony::{Operation, SignedSpec};
use permafrost_core::dkg::{self, CeremonySpec};
use permafrost_core::NodeId;
use permafrost_proto as pb;
use tonic::Status;
use tracing::{info, warn};

use super::{authorization, ceremony_id, each_member, run_rounds};
use crate::store::GroupRecord;
use crate::Coordinator;

/// Proactive refresh (K6): new shares for every active member, same group
/// key and threshold; nodes destroy old shares only once every member taking
/// part confirmed the same new public key package.
pub async fn refresh_key_group(
    coord: &Arc<Coordinator>,
    req: pb::RefreshKeyGroupRequest,
) -> Result<GroupRecord, Status> {
    let signed = authorization(
        coord,
        req.authorization.as_ref(),
        Operation::Refresh,
        &req.name,
    )?;
    run_refresh(coord, &signed, None)
        .await
        .map(|(record, _)| record)
}

/// Removes a member under the operators' remove-member spec: a refresh among
/// the remaining members; the removed one keeps its identifier as a
/// tombstone. It is then told to drop its share, which the removal never
/// waits for (a removed machine may be lost or hostile).
pub async fn remove_member(
    coord: &Arc<Coordinator>,
    req: pb::RemoveMemberRequest,
) -> Result<GroupRecord, Status> {
    let signed = authorization(
        coord,
        req.authorization.as_ref(),
        Operation::RemoveMember,
        &req.name,
    )?;
    let Some(subject) = signed.spec.subject.clone() else {
        return Err(Status::invalid_argument(
            "authorization: a remove-member spec names its member",
        ));
    };
    if !req.node_id.is_empty()
        && permafrost_proto::convert::node_id("node_id", &req.node_id)? != subject
    {
        return Err(Status::invalid_argument(format!(
            "node_id: {} asked, the operators approved removing {subject}",
            req.node_id
        )));
    }
    let (record, certificate) = run_refresh(coord, &signed, Some(&subject)).await?;
    // Best effort, after the others committed: nothing depends on it.
    let wire_auth = pb::SignedLifecycleSpec::from(&signed);
    let left = each_member(coord, std::slice::from_ref(&subject), |mut c| {
        let r = pb::LeaveGroupRequest {
            key_group: record.name.to_string(),
            authorization: Some(wire_auth.clone()),
            certificate: Some(certificate.clone()),
        };
        async move { c.leave_group(r).await }
    })
    .await;
    if !left.is_empty() {
        warn!(group = %record.name, node = %subject, why = %left.join("; "), "the removed member did not drop its share; its old share matches no live share");
    }
    coord
        .audit
        .append(
            "member_removed",
            serde_json::json!({"group": record.name.as_str(), "node": subject.as_str(), "epoch": record.epoch, "share_dropped": left.is_empty(), "spec_digest": signed.spec.digest().to_hex()}),
        )
        .map_err(crate::audit_failed)?;
    info!(group = %record.name, node = %subject, "member removed");
    Ok(record)
}

/// A refresh of `signed`'s group among its active members, leaving out
/// `removing` too when given; commits in two phases and records the result.
/// Returns the record and the commit certificate.
async fn run_refresh(
    coord: &Arc<Coordinator>,
    signed: &SignedSpec,
    removing: Option<&NodeId>,
) -> Result<(GroupRecord, pb::CommitRefreshRequest), Status> {
    let name = signed.spec.group.to_string();
    let _one_at_a_time = coord.ceremony_lock.lock().await;
    let group_name = signed.spec.group.clone();
    let record = coord.known_group(&group_name)?;
    if !record.active {
        return Err(Status::failed_precondition(format!(
            "key group {name} is not active"
        )));
    }
    let mut record = super::registries_agree(coord, record).await?;
    let mut removed = record.removed.clone();
    if let Some(subject) = removing {
        let active = record.active_members();
        if !active.contains(subject) {
            return Err(Status::failed_precondition(format!(
                "{subject} is not an active member of {name}"
            )));
        }
        // Fail fast; every node refuses it on its own record too.
        if active.len() - 1 < usize::from(record.threshold) {
            return Err(Status::failed_precondition(format!(
                "removing {subject} would leave {} active member(s) of {name}, fewer than its threshold {}",
                active.len() - 1,
                record.threshold
            )));
        }
        removed.push(subject.clone());
    }
    // Every member keeps its place (and identifier); the removed take no part.
    let wire_spec = pb::CeremonySpec {
        ceremony_id: ceremony_id(),
        group: name.clone(),
        tier: permafrost_proto::convert::tier_to_wire(record.tier),
        threshold: u32::from(record.threshold),
        members: record.members.iter().map(|m| m.to_string()).collect(),
        removed: removed.iter().map(|m| m.to_string()).collect(),
        refresh: true,
        authorization: signed.spec.digest().0.to_vec(),
    };
    let wire_auth = pb::SignedLifecycleSpec::from(signed);
    let spec: CeremonySpec = (&wire_spec).try_into()?;
    info!(ceremony = %spec.ceremony_id, group = %spec.group, approved = %signed.spec.digest(), removed = ?spec.removed, "refresh started");
    let reports = match run_rounds(coord, &spec, &wire_spec, &wire_auth).await {
        Ok(reports) => reports,
        Err(e) => {
            // K7: without every report no certificate exists; leave no
            // member holding a share of this refresh (best effort).
            let note =
                crate::recovery::abort_after_failure(coord, &group_name, &spec.ceremony_id).await;
            return Err(Status::new(e.code(), format!("{}{note}", e.message())));
        }
    };
    let pkp = dkg::check_reports(&spec, &coord.directory, &reports)
        .map_err(|e| Status::aborted(e.to_string()))?;
    let key = pkp
        .verifying_key()
        .serialize()
        .map_err(|e| Status::internal(e.to_string()))?;
    if key != record.group_public_key {
        return Err(Status::aborted(
            "refresh would change the group key; nothing committed",
        ));
    }
    let wire_reports: Vec<pb::DkgKeyReport> = reports.into_iter().map(Into::into).collect();
    let commit = pb::CommitRefreshRequest {
        spec: Some(wire_spec.clone()),
        reports: wire_reports,
        authorization: Some(wire_auth.clone()),
    };
    // Phase 2 (K7): each member commits on its own; one that commits makes
    // the refresh irrevocable, so the others are brought along from there.
    let participants = spec.participants();
    let failed = each_member(coord, &participants, |mut c| {
        let commit = commit.clone();
        async move { c.commit_refresh(commit).await }
    })
    .await;
    if failed.len() == participants.len() {
        return Err(Status::aborted(format!(
            "refresh of {name} committed on no member ({}); the old shares stay in use",
            failed.join("; ")
        )));
    }
    record.public_key_package = pkp
        .serialize()
        .map_err(|e| Status::internal(e.to_string()))?;
    record.epoch = signed.spec.epoch + 1;
    record.set_removed(&removed, permafrost_core::unix_now());
    coord
        .store
        .put_group(&record)
        .await
        .map_err(|e| Status::internal(e.to_string()))?;
    coord
        .audit
        .append(
            "keygroup_refreshed",
            serde_json::json!({"group": record.name.as_str(), "ceremony": spec.ceremony_id, "epoch": record.epoch, "removed": spec.removed.iter().map(|m| m.as_str()).collect::<Vec<_>>(), "spec_digest": signed.spec.digest().to_hex(), "operators": signed.approvals.iter().map(|a| a.operator.as_str()).collect::<Vec<_>>(), "not_committed": failed}),
        )
        .map_err(crate::audit_failed)?;
    if !failed.is_empty() {
        // One immediate re-drive (its own refresh: from a member's stored
        // certificate, or rebuilt from every member's report); the
        // background recovery keeps at it after that.
        let recovered =
            crate::recovery::recover(coord, &record.name, crate::recovery::Assemble::Yes).await?;
        if !recovered.behind.is_empty() {
            warn!(group = %record.name, behind = ?recovered.behind, "refresh committed on some members only; recovery continues in the background");
            return Err(Status::unavailable(format!(
                "refresh of {name} is committed (epoch {}) but not yet on {}: {}; the coordinator \
                 finishes it when they answer (or: permafrostctl keygroup recover --name {name})",
                record.epoch,
                recovered
                    .behind
                    .iter()
                    .map(|b| b.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                failed.join("; ")
            )));
        }
        record = recovered.record;
    }
    info!(group = %record.name, "refresh committed on every member taking part");
    Ok((record, commit))
}
