//! Driving a DKG ceremony across the member nodes: relay round 1, the echo
//! check (K1), the encrypted round-2 shares (K5), collect and compare the group
//! key reports (K4), then a test signature before the group becomes active.
//!
//! Every ceremony runs under an operator-quorum lifecycle spec (X5) that the
//! operators hand in; the coordinator only relays it, and every node verifies
//! it itself before its first step. The coordinator checks it too, against
//! its own registry when it has one, only to fail fast.

use std::sync::Arc;

use permafrost_core::ceremony::{verify_quorum, LifecycleSpec, Operation, SignedSpec};
use permafrost_core::dkg::{self, CeremonySpec};
use permafrost_core::signing::activation_message;
use permafrost_core::{unix_now, NodeId};
use permafrost_proto::convert::ceremony::required_authorization;
use permafrost_proto::convert::status_from_core;
use permafrost_proto::{self as pb, signer_node_client::SignerNodeClient};
use rand::RngCore;
use tonic::transport::Channel;
use tonic::Status;
use tracing::{info, warn};

use crate::driver::{sign_with_retries, Target};
use crate::store::GroupRecord;
use crate::Coordinator;

/// Calls every member in parallel with the round deadline; fails naming the first member that failed.
async fn call_all<T, F, Fut>(
    coord: &Coordinator,
    spec: &CeremonySpec,
    step: &str,
    f: F,
) -> Result<Vec<(NodeId, T)>, Status>
where
    F: Fn(NodeId, SignerNodeClient<Channel>) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, Status>>,
{
    let deadline = coord.config.round_timeout();
    let calls = spec.members.iter().map(|id| {
        let client = coord.members.get(id).map(|m| m.client.clone());
        let fut = client.map(|c| f(id.clone(), c));
        async move {
            let fut = fut.ok_or_else(|| {
                Status::invalid_argument(format!("{id} is not in the cluster manifest"))
            })?;
            match tokio::time::timeout(deadline, fut).await {
                Ok(Ok(resp)) => Ok((id.clone(), resp.into_inner())),
                Ok(Err(status)) => Err(Status::aborted(format!(
                    "ceremony {} aborted at {step}: {id}: {}",
                    spec.ceremony_id,
                    status.message()
                ))),
                Err(_) => Err(Status::unavailable(format!(
                    "ceremony {} aborted at {step}: {id} did not answer in time",
                    spec.ceremony_id
                ))),
            }
        }
    });
    futures::future::join_all(calls).await.into_iter().collect()
}

/// Calls every one of `members` in parallel with the round deadline and
/// returns the failures, each as "member: why" (an empty list: all succeeded).
async fn each_member<T, F, Fut>(coord: &Coordinator, members: &[NodeId], f: F) -> Vec<String>
where
    F: Fn(SignerNodeClient<Channel>) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, Status>>,
{
    let deadline = coord.config.round_timeout();
    let calls = members.iter().map(|id| {
        let call = coord.members.get(id).map(|m| f(m.client.clone()));
        async move {
            let result = match call {
                Some(call) => match tokio::time::timeout(deadline, call).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(status)) => Err(status.message().to_string()),
                    Err(_) => Err("did not answer in time".to_string()),
                },
                None => Err("not in the cluster manifest".to_string()),
            };
            result.err().map(|e| format!("{id}: {e}"))
        }
    });
    futures::future::join_all(calls)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// Clock skew the coordinator tolerates on a spec's dates when failing fast.
const FAIL_FAST_SKEW_SECS: u64 = 300;

/// The operator-quorum spec a ceremony request carries: it must be for
/// `operation` on `group`. With a registry in its config the coordinator
/// checks the quorum too, so an operator hears at once what every node would
/// answer; without one it relays the spec and the nodes decide.
pub(crate) fn authorization(
    coord: &Coordinator,
    wire: Option<&pb::SignedLifecycleSpec>,
    operation: Operation,
    group: &str,
) -> Result<SignedSpec, Status> {
    let signed = required_authorization(wire)?;
    let spec = &signed.spec;
    if spec.operation != operation {
        return Err(Status::invalid_argument(format!(
            "authorization: the operators approved a {} of {}, not a {operation}",
            spec.operation, spec.group
        )));
    }
    if !group.is_empty() && spec.group.as_str() != group {
        return Err(Status::invalid_argument(format!(
            "authorization: the spec is for key group {}, not {group}",
            spec.group
        )));
    }
    if let Some(registry) = &coord.registry {
        verify_quorum(&signed, registry, unix_now(), FAIL_FAST_SKEW_SECS)
            .map_err(|e| status_from_core(&e))?;
    }
    Ok(signed)
}

/// A random ceremony id (each attempt under one spec gets its own).
fn ceremony_id() -> String {
    let mut id = [0u8; 8];
    rand::thread_rng().fill_bytes(&mut id);
    hex::encode(id)
}

/// The DKG spec of a create or refresh, taken from what the operators approved.
fn dkg_spec(approved: &LifecycleSpec, refresh: bool) -> pb::CeremonySpec {
    pb::CeremonySpec {
        ceremony_id: ceremony_id(),
        group: approved.group.to_string(),
        tier: permafrost_proto::convert::tier_to_wire(approved.tier),
        threshold: u32::from(approved.threshold),
        members: approved.members.iter().map(|m| m.to_string()).collect(),
        refresh,
        authorization: approved.digest().0.to_vec(),
    }
}

/// DKG (or refresh) rounds 1–3 with the echo check; returns every member's signed report.
async fn run_rounds(
    coord: &Coordinator,
    spec: &CeremonySpec,
    wire_spec: &pb::CeremonySpec,
    authorization: &pb::SignedLifecycleSpec,
) -> Result<Vec<dkg::GroupKeyReport>, Status> {
    let round1 = call_all(coord, spec, "round 1", |_, mut c| {
        let s = wire_spec.clone();
        let a = authorization.clone();
        async move {
            c.dkg_start(pb::DkgStartRequest {
                spec: Some(s),
                authorization: Some(a),
            })
            .await
        }
    })
    .await?;
    let round1: Vec<pb::DkgRound1Message> = round1.into_iter().map(|(_, m)| m).collect();

    let echoes = call_all(coord, spec, "echo", |_, mut c| {
        let r = pb::DkgEchoRequest {
            ceremony_id: spec.ceremony_id.clone(),
            round1: round1.clone(),
        };
        async move { c.dkg_echo(r).await }
    })
    .await?;
    let echoes: Vec<pb::DkgEchoMessage> = echoes.into_iter().map(|(_, m)| m).collect();

    let round2 = call_all(coord, spec, "round 2", |_, mut c| {
        let r = pb::DkgRound2Request {
            ceremony_id: spec.ceremony_id.clone(),
            echoes: echoes.clone(),
        };
        async move { c.dkg_round2(r).await }
    })
    .await?;
    let shares: Vec<pb::DkgSealedShare> = round2.into_iter().flat_map(|(_, r)| r.shares).collect();

    let reports = call_all(coord, spec, "round 3", |id, mut c| {
        let r = pb::DkgFinishRequest {
            ceremony_id: spec.ceremony_id.clone(),
            shares: shares
                .iter()
                .filter(|s| s.recipient == id.as_str())
                .cloned()
                .collect(),
        };
        async move { c.dkg_finish(r).await }
    })
    .await?;
    let reports: Vec<dkg::GroupKeyReport> = reports
        .iter()
        .map(|(_, r)| r.try_into())
        .collect::<Result<_, Status>>()?;
    Ok(reports)
}

/// Proactive refresh (K6): new shares for every member, same group key and
/// threshold; nodes destroy old shares only once every member confirmed the
/// same new public key package.
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
    let name = signed.spec.group.to_string();
    let _one_at_a_time = coord.ceremony_lock.lock().await;
    let group_name = permafrost_proto::convert::group_name("name", &name)?;
    let mut record = coord
        .store
        .group(&group_name)
        .map_err(|e| Status::internal(e.to_string()))?
        .ok_or_else(|| Status::not_found(format!("unknown key group {name}")))?;
    if !record.active {
        return Err(Status::failed_precondition(format!(
            "key group {name} is not active"
        )));
    }
    let wire_spec = dkg_spec(&signed.spec, true);
    let wire_auth = pb::SignedLifecycleSpec::from(&signed);
    let spec: CeremonySpec = (&wire_spec).try_into()?;
    info!(ceremony = %spec.ceremony_id, group = %spec.group, approved = %signed.spec.digest(), "refresh started");
    let reports = run_rounds(coord, &spec, &wire_spec, &wire_auth).await?;
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
    let failed = each_member(coord, &spec.members, |mut c| {
        let commit = commit.clone();
        async move { c.commit_refresh(commit).await }
    })
    .await;
    if failed.len() == spec.members.len() {
        return Err(Status::aborted(format!(
            "refresh of {name} committed on no member ({}); the old shares stay in use",
            failed.join("; ")
        )));
    }
    record.public_key_package = pkp
        .serialize()
        .map_err(|e| Status::internal(e.to_string()))?;
    record.epoch = signed.spec.epoch + 1;
    coord
        .store
        .put_group(&record)
        .await
        .map_err(|e| Status::internal(e.to_string()))?;
    coord
        .audit
        .append(
            "keygroup_refreshed",
            serde_json::json!({"group": record.name.as_str(), "ceremony": spec.ceremony_id, "epoch": record.epoch, "spec_digest": signed.spec.digest().to_hex(), "operators": signed.approvals.iter().map(|a| a.operator.as_str()).collect::<Vec<_>>(), "not_committed": failed}),
        )
        .map_err(crate::audit_failed)?;
    if !failed.is_empty() {
        // One immediate re-drive from a member's stored certificate; the
        // background recovery keeps at it after that.
        let recovered = crate::recovery::recover_key_group(coord, &record.name).await?;
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
    info!(group = %record.name, "refresh committed on every member");
    Ok(record)
}

/// What a create request names, when it names anything, must be what the operators approved.
fn check_create_request(
    req: &pb::CreateKeyGroupRequest,
    approved: &LifecycleSpec,
) -> Result<(), Status> {
    let differs = |field: &str, asked: String, approved: String| {
        Err(Status::invalid_argument(format!(
            "{field}: {asked} asked, the operators approved {approved}"
        )))
    };
    if req.tier != 0 && req.tier != permafrost_proto::convert::tier_to_wire(approved.tier) {
        return differs("tier", req.tier.to_string(), approved.tier.to_string());
    }
    if req.threshold != 0 && req.threshold != u32::from(approved.threshold) {
        return differs(
            "threshold",
            req.threshold.to_string(),
            approved.threshold.to_string(),
        );
    }
    let members: Vec<String> = approved.members.iter().map(|m| m.to_string()).collect();
    if !req.members.is_empty() && req.members != members {
        return differs("members", req.members.join(","), members.join(","));
    }
    Ok(())
}

/// Runs a whole ceremony under the operators' create spec and returns the active group.
pub async fn create_key_group(
    coord: &Arc<Coordinator>,
    req: pb::CreateKeyGroupRequest,
) -> Result<GroupRecord, Status> {
    let signed = authorization(
        coord,
        req.authorization.as_ref(),
        Operation::Create,
        &req.name,
    )?;
    check_create_request(&req, &signed.spec)?;
    let _one_at_a_time = coord.ceremony_lock.lock().await;
    let wire_spec = dkg_spec(&signed.spec, false);
    let wire_auth = pb::SignedLifecycleSpec::from(&signed);
    let spec: CeremonySpec = (&wire_spec).try_into()?;
    for m in &spec.members {
        coord
            .directory
            .get(m)
            .map_err(|e| Status::invalid_argument(format!("members: {e}")))?;
    }
    if let Some(existing) = coord
        .store
        .group(&spec.group)
        .map_err(|e| Status::internal(e.to_string()))?
    {
        return Err(Status::already_exists(format!(
            "key group {} already exists (active: {})",
            existing.name, existing.active
        )));
    }
    info!(ceremony = %spec.ceremony_id, group = %spec.group, t = spec.threshold, n = spec.members.len(), "DKG started");

    let reports = run_rounds(coord, &spec, &wire_spec, &wire_auth).await?;
    let pkp = dkg::check_reports(&spec, &coord.directory, &reports)
        .map_err(|e| Status::aborted(e.to_string()))?;
    let group_public_key = reports
        .first()
        .map(|r| r.group_public_key.clone())
        .ok_or_else(|| Status::aborted("no reports"))?;
    let mut record = GroupRecord {
        v: 1,
        name: spec.group.clone(),
        tier: spec.tier,
        threshold: spec.threshold,
        members: spec.members.clone(),
        public_key_package: pkp
            .serialize()
            .map_err(|e| Status::internal(e.to_string()))?,
        group_public_key,
        active: false,
        epoch: 1,
    };
    coord
        .store
        .put_group(&record)
        .await
        .map_err(|e| Status::internal(e.to_string()))?;

    // K4: a test signature proves the shares work before anyone relies on the group.
    let message = activation_message(&spec.group, &record.group_public_key);
    let attempts = spec.members.len();
    let (signature, signers) =
        sign_with_retries(coord, &record, &message, &Target::Activation, attempts)
            .await
            .map_err(|e| {
                Status::aborted(format!(
                    "group {} generated but its test signature failed: {e}",
                    spec.group
                ))
            })?;
    call_all(coord, &spec, "activation", |_, mut c| {
        let r = pb::ActivateGroupRequest {
            group: spec.group.to_string(),
            test_signature: signature.clone(),
        };
        async move { c.activate_group(r).await }
    })
    .await?;
    record.active = true;
    coord
        .store
        .put_group(&record)
        .await
        .map_err(|e| Status::internal(e.to_string()))?;
    coord.audit.append(
        "keygroup_created",
        serde_json::json!({"group": spec.group.as_str(), "tier": spec.tier.as_str(), "threshold": spec.threshold, "members": spec.members.iter().map(|m| m.as_str()).collect::<Vec<_>>(), "group_public_key": hex::encode(&record.group_public_key), "spec_digest": signed.spec.digest().to_hex(), "operators": signed.approvals.iter().map(|a| a.operator.as_str()).collect::<Vec<_>>()}),
    )
    .map_err(crate::audit_failed)?;
    info!(group = %spec.group, key = %hex::encode(&record.group_public_key), test_signers = ?signers, "key group active");
    Ok(record)
}

/// Calls one member with the round deadline, naming it on failure.
async fn call_one<T, Fut>(
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
    let mut record = coord
        .store
        .group(&name)
        .map_err(|e| Status::internal(e.to_string()))?
        .ok_or_else(|| Status::not_found(format!("unknown key group {name}")))?;
    let candidates: Vec<_> = record
        .members
        .iter()
        .filter(|m| **m != lost && coord.members.health(m).reachable)
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
        };
        acks.push(
            call_one(coord, &m, "prepare", |mut c| async move {
                c.prepare_repair(r).await
            })
            .await?,
        );
    }
    let request = |messages: Vec<pb::DkgSealedShare>, pkp: Vec<u8>| pb::RepairRequest {
        spec: Some(wire_spec.clone()),
        messages,
        public_key_package: pkp,
        authorization: Some(wire_auth.clone()),
        acks: acks.clone(),
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
    for m in record.members.iter().filter(|m| **m != lost) {
        let r = request(Vec::new(), Vec::new());
        if let Err(e) = call_one(coord, m, "replace member", |mut c| async move {
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

/// Retires a group for good on every member under the operators' retire
/// spec: each member checks the quorum itself and destroys its share. The
/// coordinator's record stops signing once any member retired; a member
/// that did not answer is listed, and the same spec sent again finishes it.
pub async fn retire_key_group(
    coord: &Arc<Coordinator>,
    req: pb::RetireKeyGroupRequest,
) -> Result<GroupRecord, Status> {
    let signed = authorization(
        coord,
        req.authorization.as_ref(),
        Operation::Retire,
        &req.name,
    )?;
    let name = signed.spec.group.clone();
    let _one_at_a_time = coord.ceremony_lock.lock().await;
    let mut record = coord
        .store
        .group(&name)
        .map_err(|e| Status::internal(e.to_string()))?
        .ok_or_else(|| Status::not_found(format!("unknown key group {name}")))?;
    let wire_auth = pb::SignedLifecycleSpec::from(&signed);
    let failed = each_member(coord, &record.members, |mut c| {
        let r = pb::RetireGroupRequest {
            key_group: name.to_string(),
            authorization: Some(wire_auth.clone()),
        };
        async move { c.retire_group(r).await }
    })
    .await;
    if failed.len() == record.members.len() {
        return Err(Status::aborted(format!(
            "no member of {name} retired it: {}",
            failed.join("; ")
        )));
    }
    record.active = false;
    record.epoch = signed.spec.epoch + 1;
    coord
        .store
        .put_group(&record)
        .await
        .map_err(|e| Status::internal(e.to_string()))?;
    coord
        .audit
        .append(
            "keygroup_retired",
            serde_json::json!({"group": name.as_str(), "epoch": record.epoch, "spec_digest": signed.spec.digest().to_hex(), "operators": signed.approvals.iter().map(|a| a.operator.as_str()).collect::<Vec<_>>(), "not_retired": failed}),
        )
        .map_err(crate::audit_failed)?;
    if !failed.is_empty() {
        return Err(Status::unavailable(format!(
            "{name} is retired on some members only; not yet on {} (submit the same spec again)",
            failed.join("; ")
        )));
    }
    info!(group = %name, "key group retired on every member");
    Ok(record)
}

/// A standby coordinator adopts an existing group from its members' reports:
/// public data only, accepted when at least `threshold` members report the
/// same members, tier, threshold and public key package.
pub async fn adopt_key_group(coord: &Arc<Coordinator>, name: &str) -> Result<GroupRecord, Status> {
    use std::collections::BTreeMap;
    let name = permafrost_proto::convert::group_name("name", name)?;
    if let Some(existing) = coord
        .store
        .group(&name)
        .map_err(|e| Status::internal(e.to_string()))?
    {
        return Ok(existing);
    }
    let deadline = coord.config.round_timeout();
    let probes = coord.members.iter().map(|m| {
        let mut client = m.client.clone();
        async move {
            tokio::time::timeout(deadline, client.get_status(pb::NodeStatusRequest {}))
                .await
                .ok()
                .and_then(|r| r.ok())
                .map(|r| (m.id.clone(), r.into_inner()))
        }
    });
    let mut votes: BTreeMap<Vec<u8>, (pb::NodeKeyGroup, Vec<NodeId>)> = BTreeMap::new();
    for (node, status) in futures::future::join_all(probes)
        .await
        .into_iter()
        .flatten()
    {
        if let Some(g) = status
            .key_groups
            .into_iter()
            .find(|g| g.name == name.as_str() && g.active)
        {
            // Only a member's own report counts.
            if g.members.iter().any(|m| m == node.as_str()) {
                // What is pending here is not part of the group's standing.
                let mut g = g;
                g.pending_refresh.clear();
                let key = prost::Message::encode_to_vec(&g);
                votes
                    .entry(key)
                    .or_insert_with(|| (g, Vec::new()))
                    .1
                    .push(node);
            }
        }
    }
    let (report, voters) = votes
        .into_values()
        .max_by_key(|(_, v)| v.len())
        .ok_or_else(|| {
            Status::not_found(format!("no reachable member reports key group {name}"))
        })?;
    if voters.len() < report.threshold as usize {
        return Err(Status::unavailable(format!(
            "only {} member(s) agree on key group {name}; {} needed",
            voters.len(),
            report.threshold
        )));
    }
    let pkp = frost_secp256k1::keys::PublicKeyPackage::deserialize(&report.public_key_package)
        .map_err(|e| Status::aborted(format!("reported public key package: {e}")))?;
    if pkp
        .verifying_key()
        .serialize()
        .map_err(|e| Status::internal(e.to_string()))?
        != report.group_public_key
    {
        return Err(Status::aborted(
            "reported public key package does not match the group key",
        ));
    }
    let record = GroupRecord {
        v: 1,
        name: name.clone(),
        tier: permafrost_proto::convert::tier_from_wire(report.tier)?,
        threshold: u16::try_from(report.threshold).map_err(|_| Status::aborted("bad threshold"))?,
        members: report
            .members
            .iter()
            .map(|m| permafrost_proto::convert::node_id("members", m))
            .collect::<Result<_, _>>()?,
        public_key_package: report.public_key_package,
        group_public_key: report.group_public_key,
        active: true,
        epoch: report.epoch.max(1),
    };
    coord
        .store
        .put_group(&record)
        .await
        .map_err(|e| Status::internal(e.to_string()))?;
    coord.audit.append(
        "keygroup_adopted",
        serde_json::json!({"group": name.as_str(), "reported_by": voters.iter().map(|v| v.as_str()).collect::<Vec<_>>()}),
    )
    .map_err(crate::audit_failed)?;
    info!(group = %name, reported_by = ?voters, "key group adopted from its members");
    Ok(record)
}
