//! Relaying a change of a group's operator registry (THREATS X5), and
//! re-driving it on members that missed it.
//!
//! Each member checks the change itself — the quorum of the registry in
//! force for the group on that member, its epoch and key, the sequence and
//! the registry replaced — so nothing here is trusted. What the coordinator
//! keeps of the group's registry is only to fail fast on later specs; before
//! it takes one from a member's answer it checks the whole chain of changes
//! from its own config's registry, so a member cannot make it refuse (or
//! pass on) specs by a registry the operators never approved.

use std::sync::Arc;

use permafrost_core::ceremony::{verify_chain, Operation, OperatorRegistry, SignedSpec};
use permafrost_core::{GroupName, NodeId};
use permafrost_proto as pb;
use tonic::Status;
use tracing::{info, warn};

use super::{authorization, relay_to_active};
use crate::store::GroupRecord;
use crate::Coordinator;

/// The registry this coordinator fails fast against for `group`: the one a
/// change installed, else its config's.
pub(crate) fn in_force(
    coord: &Coordinator,
    group: &GroupName,
) -> Result<Option<OperatorRegistry>, Status> {
    let record = coord
        .store
        .group(group)
        .map_err(|e| Status::internal(e.to_string()))?;
    match record.and_then(|r| r.registry) {
        Some(config) => config
            .build()
            .map(Some)
            .map_err(|e| Status::internal(format!("stored operator registry of {group}: {e}"))),
        None => Ok(coord.registry.clone()),
    }
}

/// `Ceremony.ChangeRegistry`: relays the signed change to every active
/// member. Members that applied it answer done on a retry, so submitting
/// the same spec again (or the recovery pass) finishes a partial change.
pub async fn change_registry(
    coord: &Arc<Coordinator>,
    req: pb::ChangeRegistryRequest,
) -> Result<GroupRecord, Status> {
    let signed = authorization(
        coord,
        req.authorization.as_ref(),
        Operation::ChangeRegistry,
        &req.key_group,
    )?;
    let name = signed.spec.group.clone();
    let change = signed.spec.registry.clone().ok_or_else(|| {
        Status::invalid_argument("authorization: a change-registry spec names the new registry")
    })?;
    let _one_at_a_time = coord.ceremony_lock.lock().await;
    let mut record = coord.known_group(&name)?;
    let wire_auth = pb::SignedLifecycleSpec::from(&signed);
    let failed = relay_to_active(coord, &record, "applied the registry change", |mut c| {
        let r = pb::ChangeRegistryRequest {
            key_group: name.to_string(),
            authorization: Some(wire_auth.clone()),
        };
        async move { c.change_registry(r).await }
    })
    .await?;
    if change.seq > record.registry_seq {
        record.registry_seq = change.seq;
        record.registry = Some(change.registry.clone());
        coord
            .store
            .put_group(&record)
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
    }
    coord
        .audit
        .append(
            "keygroup_registry_changed",
            serde_json::json!({
                "group": name.as_str(),
                "seq": change.seq,
                "spec_digest": signed.spec.digest().to_hex(),
                "operators": signed.approvals.iter().map(|a| a.operator.as_str()).collect::<Vec<_>>(),
                "not_applied": failed,
            }),
        )
        .map_err(crate::audit_failed)?;
    if !failed.is_empty() {
        return Err(Status::unavailable(format!(
            "the registry of {name} changed on some members only; not yet on {} \
             (submit the same spec again; the recovery pass also re-drives it)",
            failed.join("; ")
        )));
    }
    info!(group = %name, seq = change.seq, "operator registry changed on every member");
    Ok(record)
}

/// Before a ceremony that moves the group's epoch (refresh, repair,
/// removal): the members must hold one operator registry for the group, or a
/// member behind would be left behind for good (a registry change names the
/// epoch it is for). Brings members behind along first; refuses, naming
/// them, when that does not settle it. Returns the record as it is then.
pub(crate) async fn registries_agree(
    coord: &Arc<Coordinator>,
    record: GroupRecord,
) -> Result<GroupRecord, Status> {
    let seqs = |states: &[(NodeId, Option<pb::CommitCertificate>)]| -> Vec<(String, u64)> {
        states
            .iter()
            .filter_map(|(id, s)| s.as_ref().map(|s| (id.to_string(), s.registry_seq)))
            .collect()
    };
    let differ = |seqs: &[(String, u64)]| seqs.windows(2).any(|w| w[0].1 != w[1].1);
    let states = crate::recovery::certificates(coord, &record, false).await;
    let first = seqs(&states);
    if !differ(&first) && first.iter().all(|(_, s)| *s == record.registry_seq) {
        return Ok(record);
    }
    // Some member (or this coordinator's record) is behind: bring it along,
    // then ask again.
    let record = catch_up_registry(coord, record, &states).await;
    let seqs = seqs(&crate::recovery::certificates(coord, &record, false).await);
    if differ(&seqs) {
        return Err(Status::failed_precondition(format!(
            "the members of {} hold different operator registries ({}); \
             finish the registry change first (ceremony submit of it again, or keygroup recover)",
            record.name,
            seqs.iter()
                .map(|(id, s)| format!("{id} #{s}"))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(record)
}

/// Brings every member of `record`'s group that answered (`states`) to the
/// highest registry sequence any of them holds, by re-sending the changes it
/// missed in order, and this coordinator's record with them. Best effort:
/// what fails is logged and left for the next pass.
pub(crate) async fn catch_up_registry(
    coord: &Arc<Coordinator>,
    mut record: GroupRecord,
    states: &[(NodeId, Option<pb::CommitCertificate>)],
) -> GroupRecord {
    let seqs: Vec<(&NodeId, u64)> = states
        .iter()
        .filter_map(|(id, s)| s.as_ref().map(|s| (id, s.registry_seq)))
        .collect();
    let Some(top) = seqs.iter().map(|(_, s)| *s).max() else {
        return record;
    };
    if top == 0 || (top == record.registry_seq && seqs.iter().all(|(_, s)| *s == top)) {
        return record;
    }
    let Some((changes, checked)) = changes_from(coord, &record, &seqs, top).await else {
        warn!(group = %record.name, seq = top, "recovery: no member served a registry chain the coordinator could check");
        return record;
    };
    for (id, seq) in seqs.iter().filter(|(_, s)| *s < top) {
        let Some(mut client) = coord.members.get(id).map(|m| m.client.clone()) else {
            continue;
        };
        for change in changes.iter().skip(*seq as usize) {
            let call = client.change_registry(pb::ChangeRegistryRequest {
                key_group: record.name.to_string(),
                authorization: Some(pb::SignedLifecycleSpec::from(change)),
            });
            match tokio::time::timeout(coord.config.round_timeout(), call).await {
                Ok(Ok(_)) => {
                    info!(group = %record.name, member = %id, seq = change.spec.registry.as_ref().map(|r| r.seq), "registry change re-driven")
                }
                Ok(Err(status)) => {
                    warn!(group = %record.name, member = %id, error = %status.message(), "re-driven registry change refused");
                    break;
                }
                Err(_) => break,
            }
        }
    }
    // Only a chain checked from this coordinator's own registry moves what
    // it fails fast against; only the registry fields, on the record as it
    // is now (a ceremony may have moved it meanwhile).
    let last = changes.last().and_then(|c| c.spec.registry.clone());
    if let (true, Some(last)) = (checked && top > record.registry_seq, last) {
        match coord.store.group(&record.name) {
            Ok(Some(mut fresh)) if fresh.registry_seq < top => {
                fresh.registry_seq = top;
                fresh.registry = Some(last.registry);
                match coord.store.put_group(&fresh).await {
                    Ok(()) => record = fresh,
                    Err(e) => {
                        warn!(group = %record.name, error = %e, "recovery: cannot record the group's registry")
                    }
                }
            }
            Ok(_) => {}
            Err(e) => warn!(group = %record.name, error = %e, "recovery: cannot read the group"),
        }
    }
    record
}

/// The chain of registry changes of `record`'s group up to the sequence this
/// coordinator knows, from the first member that serves one it can check
/// (empty when the registry never changed): what a repair's replacement is
/// sent.
pub(crate) async fn chain_for(
    coord: &Coordinator,
    record: &GroupRecord,
) -> Result<Vec<SignedSpec>, Status> {
    if record.registry_seq == 0 {
        return Ok(Vec::new());
    }
    let active = record.active_members();
    let seqs: Vec<(&NodeId, u64)> = active.iter().map(|m| (m, record.registry_seq)).collect();
    changes_from(coord, record, &seqs, record.registry_seq)
        .await
        .map(|(chain, _)| chain)
        .ok_or_else(|| {
            Status::unavailable(format!(
                "no member of {} served the chain of its {} registry change(s); the replacement needs it",
                record.name, record.registry_seq
            ))
        })
}

/// The chain of registry changes `1..=top` from a member at `top`, checked
/// link by link from this coordinator's config registry (each change approved
/// by the quorum of the one before, dated as the operators dated it), and
/// whether it was: a coordinator without `[operators]` relays a chain of the
/// right length unchecked (every node checks what it is sent).
async fn changes_from(
    coord: &Coordinator,
    record: &GroupRecord,
    seqs: &[(&NodeId, u64)],
    top: u64,
) -> Option<(Vec<SignedSpec>, bool)> {
    let group = &record.name;
    let base = coord.registry.clone();
    for (id, _) in seqs.iter().filter(|(_, s)| *s == top) {
        let mut client = coord.members.get(id)?.client.clone();
        let call = client.get_commit_certificate(pb::CommitCertificateRequest {
            key_group: group.to_string(),
            include_commit: true,
        });
        let Ok(Ok(answer)) = tokio::time::timeout(coord.config.round_timeout(), call).await else {
            continue;
        };
        let changes: Result<Vec<SignedSpec>, Status> = answer
            .into_inner()
            .registry_changes
            .iter()
            .map(SignedSpec::try_from)
            .collect();
        match changes.map_err(|e| e.message().to_string()).and_then(|c| {
            match &base {
                Some(base) => check_chain(base, group, &record.group_public_key, &c, top)?,
                None if c.len() as u64 != top => {
                    return Err(format!("{} changes for sequence {top}", c.len()))
                }
                None => {}
            }
            Ok((c, base.is_some()))
        }) {
            Ok(c) => return Some(c),
            Err(e) => {
                warn!(group = %group, member = %id, error = %e, "unusable registry chain")
            }
        }
    }
    None
}

/// Checks that `changes` move `group` from `base` (sequence 0) to `top`.
fn check_chain(
    base: &OperatorRegistry,
    group: &GroupName,
    group_key: &[u8],
    changes: &[SignedSpec],
    top: u64,
) -> Result<(), String> {
    match verify_chain(base, group, group_key, changes) {
        Ok((seq, _)) if seq == top => Ok(()),
        Ok((seq, _)) => Err(format!("a chain to sequence {seq}, not {top}")),
        Err(e) => Err(e.to_string()),
    }
}
