//! Finishing a refresh or a repair that only some members committed
//! (THREATS K7, X6).
//!
//! A refresh is two-phase. Prepare: every member ends the DKG rounds holding
//! its new share beside the old one and signs a report of the new public key
//! package. Commit: each member is sent the certificate — the operators'
//! authorization, the spec and every member's signed report — checks it
//! itself and swaps shares. A member that committed stores that certificate
//! with its new share, so a commit that reached only some members (a crash,
//! an outage, a coordinator that stopped on purpose) is never stuck: any
//! coordinator reads the certificate from a committed member and sends it to
//! the rest, who check it exactly as they would have the first time.
//!
//! A repair is the same: its certificate is every remaining member's signed
//! acknowledgement of the move (`PrepareRepair`), which each member that
//! moved keeps; a member that missed `ReplaceMember` is sent it again.
//!
//! Nothing here is trusted by the nodes. What the coordinator checks itself
//! (the reports against the manifest, the group key unchanged) is only so that
//! its own record of the group — the public key package it verifies shares
//! against — moves with the members.

use std::sync::Arc;
use std::time::Duration;

use permafrost_core::dkg::{self, CeremonySpec};
use permafrost_core::{GroupName, NodeId};
use permafrost_proto as pb;
use tonic::Status;
use tracing::{info, warn};

use crate::store::GroupRecord;
use crate::Coordinator;

mod abort;
pub(crate) use abort::abort_after_failure;
pub use abort::{abort_refresh, Aborted};

/// What a recovery did.
#[derive(Debug)]
pub struct Recovered {
    /// The coordinator's record of the group afterwards.
    pub record: GroupRecord,
    /// Members this call committed the refresh on.
    pub committed: Vec<NodeId>,
    /// Members still behind the group's epoch (unreachable, or holding no
    /// share of the certificate's refresh: those need a repair).
    pub behind: Vec<NodeId>,
}

/// Brings every member of `name` that missed a refresh commit to the epoch
/// of the members that made it, and this coordinator's record with them.
pub async fn recover_key_group(
    coord: &Arc<Coordinator>,
    name: &GroupName,
) -> Result<Recovered, Status> {
    recover(coord, name, Assemble::No).await
}

/// Whether a recovery pass may also commit a refresh nobody committed yet,
/// from every participant's stored part of its certificate.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Assemble {
    /// Only re-drive what some member committed (the background pass, the
    /// drivers': a refresh in progress is its own coordinator's to commit).
    No,
    /// Also rebuild and commit a refresh every participant reported
    /// (`RecoverKeyGroup`, on an operator's word that it was left unfinished).
    Yes,
}

/// [`recover_key_group`], and with [`Assemble::Yes`] a refresh every
/// participant reported but nobody committed is committed too.
pub async fn recover(
    coord: &Arc<Coordinator>,
    name: &GroupName,
    assemble: Assemble,
) -> Result<Recovered, Status> {
    let record = coord.known_group(name)?;
    let states = certificates(coord, &record, false).await;
    let record = crate::ceremony::catch_up_registry(coord, record, &states).await;
    let Some(top) = states
        .iter()
        .filter_map(|(_, s)| s.as_ref())
        .map(|s| s.epoch)
        .max()
    else {
        return Err(Status::unavailable(format!(
            "no member of {name} answered; nothing to recover from"
        )));
    };
    let lagging = |epoch: u64| epoch < top;
    let mut top = top;
    let mut found = None;
    if top <= record.epoch
        && !states
            .iter()
            .any(|(_, s)| s.as_ref().is_some_and(|s| lagging(s.epoch)))
    {
        // Nobody committed; but if every member reported one refresh, its
        // certificate can be rebuilt from their parts and committed.
        let assembled = match assemble {
            Assemble::Yes => assemble_pending(coord, &record, &states, top).await,
            Assemble::No => None,
        };
        match assembled {
            Some(assembled) => {
                found = Some(assembled);
                top += 1;
            }
            None => {
                let behind = behind(&states, record.epoch);
                return Ok(Recovered {
                    record,
                    committed: Vec::new(),
                    behind,
                });
            }
        }
    }
    // A member at the top epoch holds the certificate that moved it there.
    let ahead: Vec<NodeId> = states
        .iter()
        .filter(|(_, s)| s.as_ref().is_some_and(|s| s.epoch == top))
        .map(|(id, _)| id.clone())
        .collect();
    for id in ahead.iter().filter(|_| found.is_none()) {
        if let Some(Some(cert)) = certificate_of(coord, id, &record.name, true).await {
            if let Some(repair) = cert.repair {
                match check_repair_certificate(coord, &record, &repair, top) {
                    Ok(spec) => {
                        return finish_repair(coord, record, &states, top, repair, spec).await;
                    }
                    Err(e) => {
                        tracing::debug!(group = %name, member = %id, error = %e, "repair certificate is not for this epoch")
                    }
                }
            }
            if let Some(commit) = cert.commit {
                match check_certificate(coord, &record, &commit, top) {
                    Ok(checked) => {
                        found = Some((commit, checked));
                        break;
                    }
                    Err(e) => {
                        warn!(group = %name, member = %id, error = %e, "unusable commit certificate")
                    }
                }
            }
        }
    }
    let Some((commit, (spec, pkp))) = found else {
        return Err(Status::failed_precondition(format!(
            "members of {name} are at epoch {top} ({}), but none holds a usable refresh \
             certificate for it; the group needs a repair of the members behind",
            names(&ahead)
        )));
    };
    let mut committed = Vec::new();
    let mut still_behind = Vec::new();
    for (id, state) in &states {
        // A removal's certificate: the member it removed is never brought along.
        if spec.removed.contains(id) {
            continue;
        }
        let Some(state) = state else {
            still_behind.push(id.clone());
            continue;
        };
        if state.epoch == top {
            continue;
        }
        if state.epoch + 1 != top || state.pending_ceremony_id != spec.ceremony_id {
            still_behind.push(id.clone());
            continue;
        }
        let Some(mut client) = coord.members.get(id).map(|m| m.client.clone()) else {
            still_behind.push(id.clone());
            continue;
        };
        match tokio::time::timeout(
            coord.config.round_timeout(),
            client.commit_refresh(commit.clone()),
        )
        .await
        {
            Ok(Ok(_)) => committed.push(id.clone()),
            Ok(Err(status)) => {
                warn!(group = %name, member = %id, error = %status.message(), "re-driven refresh commit refused");
                still_behind.push(id.clone());
            }
            Err(_) => still_behind.push(id.clone()),
        }
    }
    let mut record = record;
    let moved =
        record.epoch != top || record.public_key_package != pkp || record.removed != spec.removed;
    if moved {
        record.public_key_package = pkp;
        record.set_removed(&spec.removed, permafrost_core::unix_now());
        record.epoch = top;
        coord
            .store
            .put_group(&record)
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
    }
    if moved || !committed.is_empty() {
        coord
            .audit
            .append(
                "keygroup_recovered",
                serde_json::json!({"group": name.as_str(), "ceremony": spec.ceremony_id, "epoch": top, "committed": names(&committed), "behind": names(&still_behind)}),
            )
            .map_err(crate::audit_failed)?;
        info!(group = %name, epoch = top, committed = %names(&committed), behind = %names(&still_behind), "refresh finished from a member's commit certificate");
    }
    Ok(Recovered {
        record,
        committed,
        behind: still_behind,
    })
}

/// The commit certificate of the refresh every participant holds pending
/// (none committed it), rebuilt from each one's stored part: the ceremony
/// spec, the operators' authorization and its own signed report. `None`
/// unless every participant answered with its part of one refresh that
/// checks out for the move from `epoch`.
async fn assemble_pending(
    coord: &Coordinator,
    record: &GroupRecord,
    states: &[(NodeId, Option<pb::CommitCertificate>)],
    epoch: u64,
) -> Option<(pb::CommitRefreshRequest, (CeremonySpec, Vec<u8>))> {
    let pending = states
        .iter()
        .find_map(|(_, s)| s.as_ref().map(|s| s.pending_ceremony_id.clone()))
        .filter(|id| !id.is_empty())?;
    let mut assembled: Option<pb::CommitRefreshRequest> = None;
    for (id, state) in states {
        let Some(state) = state else { continue };
        if state.pending_ceremony_id != pending || state.epoch != epoch {
            continue;
        }
        let part = certificate_of(coord, id, &record.name, true)
            .await
            .flatten()?
            .pending?;
        match &mut assembled {
            None => assembled = Some(part),
            Some(a) if a.spec == part.spec && a.authorization == part.authorization => {
                a.reports.extend(part.reports)
            }
            Some(_) => return None,
        }
    }
    let commit = assembled?;
    // check_reports (inside) refuses unless every participant reported.
    match check_certificate(coord, record, &commit, epoch + 1) {
        Ok(checked) => Some((commit, checked)),
        Err(e) => {
            tracing::debug!(group = %record.name, error = %e, "pending refresh not yet complete");
            None
        }
    }
}

/// Notes that a member answered "out of step" for `group`: its epoch is not
/// the one this coordinator signs for.
pub(crate) fn flag_out_of_step(coord: &Coordinator, group: &GroupName) {
    if let Ok(mut flagged) = coord.out_of_step.lock() {
        flagged.insert(group.clone());
    }
}

/// If a member said `group` was out of step, one recovery pass now (its
/// record, or the members, brought to one epoch); whether it moved anything,
/// so that trying again makes sense.
pub(crate) async fn catch_up_if_flagged(coord: &Arc<Coordinator>, group: &GroupName) -> bool {
    let flagged = coord
        .out_of_step
        .lock()
        .map(|mut f| f.remove(group))
        .unwrap_or(false);
    if !flagged {
        return false;
    }
    let before = coord.store.group(group).ok().flatten().map(|g| g.epoch);
    match recover_key_group(coord, group).await {
        Ok(r) => Some(r.record.epoch) != before || !r.committed.is_empty(),
        Err(e) => {
            warn!(group = %group, error = %e.message(), "recovery after an out-of-step answer");
            false
        }
    }
}

/// Re-drives unfinished refreshes of every active group, every `interval`,
/// until the coordinator stops: no operator needs to notice a partial commit.
pub async fn recovery_loop(coord: Arc<Coordinator>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let groups = match coord.store.groups() {
            Ok(groups) => groups,
            Err(e) => {
                warn!(error = %e, "recovery: cannot list key groups");
                continue;
            }
        };
        for group in groups.into_iter().filter(|g| g.active) {
            if let Err(e) = recover_key_group(&coord, &group.name).await {
                tracing::debug!(group = %group.name, error = %e.message(), "recovery pass");
            }
        }
    }
}

/// Checks a certificate for the move of `record`'s group to epoch `top`:
/// a refresh of that group, from `top − 1`, every member's report agreeing on
/// one public key package under the unchanged group key. Returns the spec
/// and the serialized package.
fn check_certificate(
    coord: &Coordinator,
    record: &GroupRecord,
    commit: &pb::CommitRefreshRequest,
    top: u64,
) -> Result<(CeremonySpec, Vec<u8>), String> {
    let spec: CeremonySpec = commit
        .spec
        .as_ref()
        .ok_or("no spec")?
        .try_into()
        .map_err(|e: Status| e.message().to_string())?;
    if !spec.refresh || spec.group != record.name {
        return Err(format!("not a refresh of {}", record.name));
    }
    let authorized = commit.authorization.as_ref().ok_or("no authorization")?;
    let signed = permafrost_proto::convert::ceremony::required_authorization(Some(authorized))
        .map_err(|e| e.message().to_string())?;
    if signed.spec.epoch + 1 != top || signed.spec.digest().0 != spec.authorization {
        return Err(format!(
            "the authorization is for epoch {} (spec {}), not the move to {top}",
            signed.spec.epoch,
            signed.spec.digest()
        ));
    }
    let reports: Vec<dkg::GroupKeyReport> = commit
        .reports
        .iter()
        .map(TryInto::try_into)
        .collect::<Result<_, Status>>()
        .map_err(|e| e.message().to_string())?;
    let pkp = dkg::check_reports(&spec, &coord.directory, &reports).map_err(|e| e.to_string())?;
    let key = pkp.verifying_key().serialize().map_err(|e| e.to_string())?;
    if key != record.group_public_key {
        return Err("the certificate's package has another group key".into());
    }
    Ok((spec, pkp.serialize().map_err(|e| e.to_string())?))
}

/// Every member's answer to `GetCommitCertificate` (`None`: did not answer).
pub(crate) async fn certificates(
    coord: &Coordinator,
    record: &GroupRecord,
    include_commit: bool,
) -> Vec<(NodeId, Option<pb::CommitCertificate>)> {
    // A removed member is never asked: it holds no live share of the group.
    let active = record.active_members();
    let calls = active.into_iter().map(|id| async move {
        let id = &id;
        let answer = certificate_of(coord, id, &record.name, include_commit)
            .await
            .flatten();
        (id.clone(), answer)
    });
    futures::future::join_all(calls).await
}

/// One member's answer; `None` when it is not a reachable member.
async fn certificate_of(
    coord: &Coordinator,
    id: &NodeId,
    group: &GroupName,
    include_commit: bool,
) -> Option<Option<pb::CommitCertificate>> {
    let mut client = coord.members.get(id)?.client.clone();
    let call = client.get_commit_certificate(pb::CommitCertificateRequest {
        key_group: group.to_string(),
        include_commit,
    });
    Some(
        tokio::time::timeout(coord.config.round_timeout(), call)
            .await
            .ok()
            .and_then(|r| r.ok())
            .map(|r| r.into_inner()),
    )
}

fn behind(states: &[(NodeId, Option<pb::CommitCertificate>)], epoch: u64) -> Vec<NodeId> {
    states
        .iter()
        .filter(|(_, s)| s.as_ref().is_none_or(|s| s.epoch < epoch))
        .map(|(id, _)| id.clone())
        .collect()
}

fn names(ids: &[NodeId]) -> String {
    ids.iter()
        .map(|i| i.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Checks a repair certificate for the move of `record`'s group to epoch
/// `top`: the operators' repair of that group from `top − 1`, acknowledged
/// by every remaining member with the group key and package on record.
fn check_repair_certificate(
    coord: &Coordinator,
    record: &GroupRecord,
    certificate: &pb::RepairRequest,
    top: u64,
) -> Result<permafrost_core::repair::RepairSpec, String> {
    let spec: permafrost_core::repair::RepairSpec = certificate
        .spec
        .as_ref()
        .ok_or("no spec")?
        .try_into()
        .map_err(|e: Status| e.message().to_string())?;
    if spec.group != record.name {
        return Err(format!("not a repair of {}", record.name));
    }
    let signed = permafrost_proto::convert::ceremony::required_authorization(
        certificate.authorization.as_ref(),
    )
    .map_err(|e| e.message().to_string())?;
    if signed.spec.epoch + 1 != top || signed.spec.digest().0 != spec.authorization {
        return Err(format!(
            "the authorization is for epoch {}, not the move to {top}",
            signed.spec.epoch
        ));
    }
    let acks = certificate
        .acks
        .iter()
        .map(|a| {
            Ok(permafrost_core::repair::PrepareAck {
                member: permafrost_proto::convert::node_id("acks.member", &a.member)
                    .map_err(|e| e.message().to_string())?,
                registry: a.registry_hash.clone(),
                signature: a.signature.clone(),
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    permafrost_core::repair::check_acks(
        &spec,
        &coord.directory,
        &acks,
        top,
        &record.group_public_key,
        &record.public_key_package,
        // The members agree on it among themselves; each checks its own.
        None,
    )
    .map_err(|e| e.to_string())?;
    Ok(spec)
}

/// Sends a checked repair certificate to the remaining members still at the
/// epoch before it, and moves this coordinator's record (members, epoch,
/// the lost node revoked).
async fn finish_repair(
    coord: &Arc<Coordinator>,
    mut record: GroupRecord,
    states: &[(NodeId, Option<pb::CommitCertificate>)],
    top: u64,
    certificate: pb::RepairRequest,
    spec: permafrost_core::repair::RepairSpec,
) -> Result<Recovered, Status> {
    let remaining = spec.remaining();
    let mut committed = Vec::new();
    let mut still_behind = Vec::new();
    for (id, state) in states {
        if !remaining.contains(id) || state.as_ref().is_some_and(|s| s.epoch == top) {
            continue;
        }
        let at_previous = state.as_ref().is_some_and(|s| s.epoch + 1 == top);
        let client = coord.members.get(id).map(|m| m.client.clone());
        let (true, Some(mut client)) = (at_previous, client) else {
            still_behind.push(id.clone());
            continue;
        };
        match tokio::time::timeout(
            coord.config.round_timeout(),
            client.replace_member(certificate.clone()),
        )
        .await
        {
            Ok(Ok(_)) => committed.push(id.clone()),
            Ok(Err(status)) => {
                warn!(group = %record.name, member = %id, error = %status.message(), "re-driven repair refused");
                still_behind.push(id.clone());
            }
            Err(_) => still_behind.push(id.clone()),
        }
    }
    let moved = record.epoch != top || record.members != spec.new_members();
    if moved {
        record.members = spec.new_members();
        record.epoch = top;
        coord
            .store
            .put_group(&record)
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        coord
            .store
            .revoke(&spec.lost)
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        coord.members.revoke(&spec.lost);
    }
    if moved || !committed.is_empty() {
        coord
            .audit
            .append(
                "keygroup_recovered",
                serde_json::json!({"group": record.name.as_str(), "repair": spec.repair_id, "lost": spec.lost.as_str(), "replacement": spec.replacement.as_str(), "epoch": top, "committed": names(&committed), "behind": names(&still_behind)}),
            )
            .map_err(crate::audit_failed)?;
        info!(group = %record.name, epoch = top, committed = %names(&committed), "repair finished from a member's certificate");
    }
    Ok(Recovered {
        record,
        committed,
        behind: still_behind,
    })
}
