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
use tracing::info;

use crate::driver::{sign_with_retries, Target};
use crate::store::GroupRecord;
use crate::Coordinator;

mod refresh;
mod registry;
mod repair;

pub use refresh::{refresh_key_group, remove_member};
pub use registry::change_registry;
pub(crate) use registry::{catch_up_registry, in_force as registry_in_force, registries_agree};
pub use repair::repair_key_group;

/// Calls every member taking part in parallel with the round deadline; fails naming the first member that failed.
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
    let participants = spec.participants();
    let calls = participants.iter().map(|id| {
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
pub(super) async fn each_member<T, F, Fut>(
    coord: &Coordinator,
    members: &[NodeId],
    f: F,
) -> Vec<String>
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

/// [`each_member`] over `record`'s active members, for a step every member
/// takes on its own (retire, a registry change): the failures, each
/// "member: why"; refused as aborted, saying no member `did`, when none took it.
pub(super) async fn relay_to_active<T, F, Fut>(
    coord: &Coordinator,
    record: &GroupRecord,
    did: &str,
    f: F,
) -> Result<Vec<String>, Status>
where
    F: Fn(SignerNodeClient<Channel>) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, Status>>,
{
    let active = record.active_members();
    let failed = each_member(coord, &active, f).await;
    if failed.len() == active.len() {
        return Err(Status::aborted(format!(
            "no member of {} {did}: {}",
            record.name,
            failed.join("; ")
        )));
    }
    Ok(failed)
}

/// Clock skew the coordinator tolerates on a spec's dates when failing fast.
const FAIL_FAST_SKEW_SECS: u64 = 300;

/// The operator-quorum spec a ceremony request carries: it must be for
/// `operation` on `group`. With a registry in its config (or one a
/// change-registry ceremony installed for the group) the coordinator checks
/// the quorum too, so an operator hears at once what every node would
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
    if let Some(registry) = registry::in_force(coord, &spec.group)? {
        verify_quorum(&signed, &registry, unix_now(), FAIL_FAST_SKEW_SECS)
            .map_err(|e| status_from_core(&e))?;
    }
    Ok(signed)
}

/// A random ceremony id (each attempt under one spec gets its own).
pub(super) fn ceremony_id() -> String {
    let mut id = [0u8; 8];
    rand::thread_rng().fill_bytes(&mut id);
    hex::encode(id)
}

/// The DKG spec of a create, taken from what the operators approved.
fn dkg_spec(approved: &LifecycleSpec) -> pb::CeremonySpec {
    pb::CeremonySpec {
        ceremony_id: ceremony_id(),
        group: approved.group.to_string(),
        tier: permafrost_proto::convert::tier_to_wire(approved.tier),
        threshold: u32::from(approved.threshold),
        members: approved.members.iter().map(|m| m.to_string()).collect(),
        removed: Vec::new(),
        refresh: false,
        authorization: approved.digest().0.to_vec(),
    }
}

/// DKG (or refresh) rounds 1–3 with the echo check; returns every member's signed report.
pub(super) async fn run_rounds(
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
    let wire_spec = dkg_spec(&signed.spec);
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
        removed: Vec::new(),
        removed_at: Default::default(),
        public_key_package: pkp
            .serialize()
            .map_err(|e| Status::internal(e.to_string()))?,
        group_public_key,
        active: false,
        epoch: 1,
        registry_seq: 0,
        registry: None,
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
    let mut record = coord.known_group(&name)?;
    let wire_auth = pb::SignedLifecycleSpec::from(&signed);
    let failed = relay_to_active(coord, &record, "retired it", |mut c| {
        let r = pb::RetireGroupRequest {
            key_group: name.to_string(),
            authorization: Some(wire_auth.clone()),
        };
        async move { c.retire_group(r).await }
    })
    .await?;
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
        removed: report
            .removed
            .iter()
            .map(|m| permafrost_proto::convert::node_id("removed", m))
            .collect::<Result<_, _>>()?,
        // Adopted now: its removals count in velocity reads for a window from here.
        removed_at: report
            .removed
            .iter()
            .filter_map(|m| permafrost_core::NodeId::new(m.as_str()).ok())
            .map(|m| (m, permafrost_core::unix_now()))
            .collect(),
        public_key_package: report.public_key_package,
        group_public_key: report.group_public_key,
        active: true,
        epoch: report.epoch.max(1),
        // The recovery pass reads any registry change from the members.
        registry_seq: 0,
        registry: None,
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
