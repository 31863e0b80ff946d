//! Repairing a permanently lost member: its share rebuilt on a replacement
//! node by `t` helpers (repairable threshold scheme), after every remaining
//! member acknowledged the next epoch (X6). Removed members take no part.

use std::sync::Arc;

use permafrost_core::ceremony::Operation;
use permafrost_core::NodeId;
use permafrost_proto::{self as pb, signer_node_client::SignerNodeClient};
use tonic::transport::Channel;
use tonic::Status;
use tracing::{info, warn};

use super::{authorization, ceremony_id};
use crate::store::GroupRecord;
use crate::Coordinator;

/// Calls one member with the round deadline, naming it on failure.
pub(super) async fn call_one<T, Fut>(
    coord: &Coordinator,
    id: &NodeId,
    step: &str,
    f: impl FnOnce(SignerNodeClient<Channel>) -> Fut,
) -> Result<T, Status>
where
    Fut: std::future::Future<Output = Result<tonic::Response<T>, Status>>,
{
    let client = coord
        .members
        .get(id)
        .map(|m| m.client.clone())
        .ok_or_else(|| Status::invalid_argument(format!("{id} is not in the cluster manifest")))?;
    match tokio::time::timeout(coord.config.round_timeout(), f(client)).await {
        Ok(Ok(resp)) => Ok(resp.into_inner()),
        Ok(Err(status)) => Err(Status::aborted(format!(
            "repair aborted at {step}: {id}: {}",
            status.message()
        ))),
        Err(_) => Err(Status::unavailable(format!(
            "repair aborted at {step}: {id} did not answer in time"
        ))),
    }
}

/// Rebuilds a permanently lost member's share on `replacement` with `t`
/// helpers (repairable threshold scheme). The group key is unchanged; the
/// lost node is revoked and never contacted again. Follow with a refresh so a
/// stolen copy of the lost share becomes useless.
pub async fn repair_key_group(
    coord: &Arc<Coordinator>,
    req: pb::RepairKeyGroupRequest,
) -> Result<GroupRecord, Status> {
    use permafrost_proto::convert::{node_id, tier_to_wire};
    let signed = authorization(
        coord,
        req.authorization.as_ref(),
        Operation::Repair,
        &req.name,
    )?;
    let approved = &signed.spec;
    let name = approved.group.clone();
    let (Some(lost), Some(replacement)) = (approved.subject.clone(), approved.replacement.clone())
    else {
        return Err(Status::invalid_argument(
            "authorization: a repair spec names its lost member and replacement",
        ));
    };
    for (field, asked, approved) in [
        ("lost", &req.lost, &lost),
        ("replacement", &req.replacement, &replacement),
    ] {
        if !asked.is_empty() && node_id(field, asked)? != *approved {
            return Err(Status::invalid_argument(format!(
                "{field}: {asked} asked, the operators approved {approved}"
            )));
        }
    }
    let _one_at_a_time = coord.ceremony_lock.lock().await;
    coord
        .directory
        .get(&replacement)
        .map_err(|e| Status::invalid_argument(format!("replacement: {e}")))?;
    let record = coord.known_group(&name)?;
    let mut record = super::registries_agree(coord, record).await?;
    let candidates: Vec<_> = record
        .members
        .iter()
        .filter(|m| **m != lost && !record.removed.contains(m) && coord.members.health(m).reachable)
        .map(|m| {
            (
                m.clone(),
                coord
                    .members
                    .get(m)
                    .map(|x| x.region.clone())
                    .unwrap_or_default(),
                coord.members.health(m).latency,
            )
        })
        .collect();
    let helpers = crate::driver::choose_signers(&candidates, usize::from(record.threshold))
        .ok_or_else(|| {
            Status::unavailable(format!(
                "below threshold: {} of {} helpers reachable",
                candidates.len(),
                record.threshold
            ))
        })?;
    let wire_auth = pb::SignedLifecycleSpec::from(&signed);
    let wire_spec = pb::RepairSpec {
        repair_id: ceremony_id(),
        group: name.to_string(),
        threshold: u32::from(record.threshold),
        members: record.members.iter().map(|m| m.to_string()).collect(),
        lost: lost.to_string(),
        replacement: replacement.to_string(),
        helpers: helpers.iter().map(|h| h.to_string()).collect(),
        tier: tier_to_wire(record.tier),
        authorization: approved.digest().0.to_vec(),
        removed: record.removed.iter().map(|m| m.to_string()).collect(),
    };
    let spec: permafrost_core::repair::RepairSpec = (&wire_spec).try_into()?;
    info!(repair = %spec.repair_id, group = %name, %lost, %replacement, helpers = ?helpers, "repair started");
    // Phase 1 (X6): every remaining member acknowledges the move to the next
    // epoch, with the group key and the public key package it holds; nothing
    // moves and no delta leaves any helper before all of them did.
    let mut acks = Vec::new();
    for m in spec.remaining() {
        let r = pb::RepairRequest {
            spec: Some(wire_spec.clone()),
            messages: Vec::new(),
            public_key_package: record.public_key_package.clone(),
            authorization: Some(wire_auth.clone()),
            acks: Vec::new(),
            registry_changes: Vec::new(),
        };
        acks.push(
            call_one(coord, &m, "prepare", |mut c| async move {
                c.prepare_repair(r).await
            })
            .await?,
        );
    }
    let registry_changes: Vec<pb::SignedLifecycleSpec> = super::registry::chain_for(coord, &record)
        .await?
        .iter()
        .map(pb::SignedLifecycleSpec::from)
        .collect();
    let request = |messages: Vec<pb::DkgSealedShare>, pkp: Vec<u8>| pb::RepairRequest {
        spec: Some(wire_spec.clone()),
        messages,
        public_key_package: pkp,
        authorization: Some(wire_auth.clone()),
        acks: acks.clone(),
        registry_changes: registry_changes.clone(),
    };
    let mut deltas = Vec::new();
    for h in &helpers {
        let r = request(Vec::new(), Vec::new());
        deltas.extend(
            call_one(coord, h, "deltas", |mut c| async move {
                c.repair_deltas(r).await
            })
            .await?
            .messages,
        );
    }
    let mut sigmas = Vec::new();
    for h in &helpers {
        let mine = deltas
            .iter()
            .filter(|d| d.recipient == h.as_str())
            .cloned()
            .collect();
        let r = request(mine, Vec::new());
        sigmas.push(
            call_one(
                coord,
                h,
                "sigma",
                |mut c| async move { c.repair_sigma(r).await },
            )
            .await?,
        );
    }
    let r = request(sigmas, record.public_key_package.clone());
    let report = call_one(coord, &replacement, "receive", |mut c| async move {
        c.repair_receive(r).await
    })
    .await?;
    if report.group_public_key != record.group_public_key {
        return Err(Status::aborted("replacement reports a different group key"));
    }
    for m in spec.remaining() {
        let r = request(Vec::new(), Vec::new());
        if let Err(e) = call_one(coord, &m, "replace member", |mut c| async move {
            c.replace_member(r).await
        })
        .await
        {
            warn!(node = %m, error = %e.message(), "member did not record the replacement; it will refuse ceremonies that name the new member");
        }
    }
    record.members = spec.new_members();
    record.epoch = approved.epoch + 1;
    coord
        .store
        .put_group(&record)
        .await
        .map_err(|e| Status::internal(e.to_string()))?;
    coord
        .store
        .revoke(&lost)
        .await
        .map_err(|e| Status::internal(e.to_string()))?;
    coord.members.revoke(&lost);
    coord.audit.append(
        "keygroup_repaired",
        serde_json::json!({"group": name.as_str(), "lost": lost.as_str(), "replacement": replacement.as_str(), "helpers": helpers.iter().map(|h| h.as_str()).collect::<Vec<_>>(), "epoch": record.epoch, "spec_digest": approved.digest().to_hex(), "operators": signed.approvals.iter().map(|a| a.operator.as_str()).collect::<Vec<_>>()}),
    )
    .map_err(crate::audit_failed)?;
    info!(group = %name, %lost, %replacement, "repair complete; lost node revoked");
    Ok(record)
}
