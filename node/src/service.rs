//! The `SignerNode` gRPC service: DKG steps and the two signing rounds.
//! Every handler checks its input itself; the coordinator's word counts for nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use frost_secp256k1::keys::KeyPackage;
use frost_secp256k1::{round1, SigningPackage};
use permafrost_core::authz::{
    authorize_withdrawal, check_custody, GroupView, PolicyInput, SignedWithdrawal,
};
use permafrost_core::dkg::{self, AwaitingEchoes, AwaitingRound1Set, AwaitingRound2};
use permafrost_core::policy::{Approval, LedgerView, VELOCITY_WINDOW_SECS};
use permafrost_core::repair;
use permafrost_core::signing::{self, ActivationTarget, SigningTarget};
use permafrost_core::{unix_now, CoreError, GroupName};
use permafrost_hsm::{SealContext, Sealer};
use permafrost_proto::convert::{group_name, status_from_core, tier_to_wire};
use permafrost_proto::{self as pb, signer_node_server::SignerNode as SignerNodeApi};
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use crate::store::GroupRecord;
use crate::{NodeError, SignerNode};

/// Most ceremonies a node runs at once, and how long one may stay open.
const MAX_CEREMONIES: usize = 8;
const CEREMONY_TTL: Duration = Duration::from_secs(600);

/// Retry hint sent with every "busy" answer.
const BUSY_RETRY: Duration = Duration::from_millis(50);

/// A DKG in progress on this node (memory only: a restart aborts it).
pub(crate) struct CeremonyState {
    step: Step,
    started: Instant,
}

enum Step {
    Round1(AwaitingRound1Set),
    Echoes(AwaitingEchoes),
    Round2(AwaitingRound2),
}

/// gRPC front of a [`SignerNode`].
pub struct NodeService {
    pub(crate) node: Arc<SignerNode>,
}

impl From<NodeError> for Status {
    fn from(e: NodeError) -> Status {
        match &e {
            NodeError::Refused(_) => Status::permission_denied(e.to_string()),
            NodeError::NotFound(_) => Status::not_found(e.to_string()),
            NodeError::State(_) => Status::failed_precondition(e.to_string()),
            NodeError::Sealer(_) => Status::unavailable(e.to_string()),
            NodeError::Busy(what) => permafrost_proto::backpressure::busy(what, BUSY_RETRY),
            _ => Status::internal(e.to_string()),
        }
    }
}

fn refuse(node: &SignerNode, what: &str, e: CoreError) -> Status {
    warn!(node = %node.id, step = what, reason = %e, "refused");
    if let Err(audit) = node.audit.append(
        "refused",
        serde_json::json!({"step": what, "reason": e.to_string()}),
    ) {
        return Status::unavailable(format!("audit log: {audit}"));
    }
    status_from_core(&e)
}

fn audit(node: &SignerNode, event: &str, detail: serde_json::Value) -> Result<(), Status> {
    node.audit.append(event, detail).map_err(|e| {
        Status::unavailable(format!(
            "audit log: {e}; refusing to act without a durable record"
        ))
    })
}

fn group_ctx(node: &SignerNode, group: &GroupName) -> SealContext {
    SealContext::new(node.id.as_str(), format!("keygroup/{group}"))
}

impl SignerNode {
    /// Whether key shares are currently sealed away.
    pub fn is_sealed(&self) -> bool {
        self.share_sealer
            .read()
            .map(|s| s.is_none())
            .unwrap_or(true)
    }

    /// The sealer for key shares, or a "sealed" refusal.
    fn shares(&self) -> Result<Arc<dyn Sealer>, Status> {
        self.share_sealer
            .read()
            .map_err(|_| Status::internal("seal lock poisoned"))?
            .clone()
            .ok_or_else(|| {
                Status::failed_precondition(NodeError::Sealed(self.id.clone()).to_string())
            })
    }

    /// The node's status, as both services report it.
    pub(crate) fn status(&self) -> Result<pb::NodeStatus, Status> {
        let key_groups = self
            .store
            .groups()?
            .into_iter()
            .map(|g| pb::NodeKeyGroup {
                name: g.name.to_string(),
                tier: tier_to_wire(g.tier),
                threshold: u32::from(g.threshold),
                group_public_key: g.group_public_key,
                active: g.active,
                members: g.members.iter().map(|m| m.to_string()).collect(),
                public_key_package: g.public_key_package,
            })
            .collect();
        let (audit_entries, audit_head) = self.audit.head();
        let health = self.health();
        let stats = self.store.inner().stats();
        Ok(pb::NodeStatus {
            node_id: self.id.to_string(),
            region: self.region.clone(),
            sealed: self.is_sealed(),
            key_groups,
            open_nonces: self.nonces.lock().map(|p| p.len() as u32).unwrap_or(0),
            policy_hash: self.policy.hash().to_vec(),
            audit_entries,
            audit_head: hex::decode(audit_head).unwrap_or_default(),
            healthy: health.is_ok(),
            unhealthy_reason: health.err().unwrap_or_default(),
            store: Some(pb::StoreCounters {
                commits: stats.commits,
                steps: stats.steps,
                max_batch: stats.max_batch,
                failed_commits: stats.failed_commits,
                refused_busy: stats.refused_busy,
            }),
            sessions_in_flight: (self.max_sessions - self.sessions.available_permits()) as u32,
        })
    }

    fn group_record(&self, name: &GroupName) -> Result<GroupRecord, Status> {
        self.store.group(name)?.ok_or_else(|| {
            Status::not_found(format!("key group {name} is not held by node {}", self.id))
        })
    }

    fn key_package(&self, record: &GroupRecord) -> Result<KeyPackage, Status> {
        let bytes = self
            .shares()?
            .unseal(&group_ctx(self, &record.name), &record.sealed_key_package)
            .map_err(NodeError::from)?;
        KeyPackage::deserialize(&bytes)
            .map_err(|e| Status::internal(format!("stored key package unreadable: {e}")))
    }

    /// A repair spec checked against this node's own record of the group.
    fn repair_context(
        &self,
        req: &pb::RepairRequest,
    ) -> Result<(repair::RepairSpec, GroupRecord), Status> {
        self.shares()?;
        let spec: repair::RepairSpec = req
            .spec
            .as_ref()
            .ok_or_else(|| Status::invalid_argument("spec: missing"))?
            .try_into()?;
        let record = self.group_record(&spec.group)?;
        // Before the repair the record lists the lost member; after this node helped, the replacement.
        let known = record.members == spec.members || record.members == spec.new_members();
        if !known || record.threshold != spec.threshold {
            return Err(refuse(
                self,
                "repair",
                CoreError::refused("repair spec does not match this node's record of the group"),
            ));
        }
        Ok((spec, record))
    }

    fn identifier_in(&self, record: &GroupRecord) -> Result<u32, Status> {
        record
            .members
            .iter()
            .position(|m| *m == self.id)
            .map(|i| i as u32 + 1)
            .ok_or_else(|| Status::internal("this node is not a member of its own group record"))
    }

    fn take_ceremony(&self, id: &str) -> Result<Step, Status> {
        let mut map = self
            .ceremonies
            .lock()
            .map_err(|_| Status::internal("ceremony lock poisoned"))?;
        map.retain(|_, c| c.started.elapsed() < CEREMONY_TTL);
        map.remove(id).map(|c| c.step).ok_or_else(|| {
            Status::failed_precondition(format!("no ceremony {id} in progress on this node"))
        })
    }

    fn put_ceremony(&self, id: String, step: Step) -> Result<(), Status> {
        let mut map = self
            .ceremonies
            .lock()
            .map_err(|_| Status::internal("ceremony lock poisoned"))?;
        map.insert(
            id,
            CeremonyState {
                step,
                started: Instant::now(),
            },
        );
        Ok(())
    }
}

#[tonic::async_trait]
impl SignerNodeApi for NodeService {
    async fn get_status(
        &self,
        _request: Request<pb::NodeStatusRequest>,
    ) -> Result<Response<pb::NodeStatus>, Status> {
        Ok(Response::new(self.node.status()?))
    }

    async fn dkg_start(
        &self,
        request: Request<pb::DkgStartRequest>,
    ) -> Result<Response<pb::DkgRound1Message>, Status> {
        let node = &self.node;
        let spec: dkg::CeremonySpec = request
            .get_ref()
            .spec
            .as_ref()
            .ok_or_else(|| Status::invalid_argument("spec: missing"))?
            .try_into()?;
        node.shares()?;
        for member in &spec.members {
            node.directory
                .get(member)
                .map_err(|e| refuse(node, "dkg-start", e))?;
            if node.store.is_revoked(member)? {
                return Err(refuse(
                    node,
                    "dkg-start",
                    CoreError::refused(format!(
                        "{member} was replaced after a loss and is revoked"
                    )),
                ));
            }
        }
        let existing = node.store.group(&spec.group)?;
        let old = match (&existing, spec.refresh) {
            (Some(_), false) => {
                return Err(Status::already_exists(format!(
                    "key group {} already exists on {}",
                    spec.group, node.id
                )))
            }
            (None, true) => {
                return Err(Status::not_found(format!(
                    "key group {} is not held by {}",
                    spec.group, node.id
                )))
            }
            (None, false) => None,
            (Some(record), true) => {
                // K6: a refresh keeps members, order, tier and threshold.
                if record.members != spec.members
                    || record.threshold != spec.threshold
                    || record.tier != spec.tier
                {
                    return Err(refuse(
                        node,
                        "refresh",
                        CoreError::refused("a refresh cannot change the members, their order, the tier or the threshold"),
                    ));
                }
                if !record.active {
                    return Err(Status::failed_precondition(
                        "only an active group can be refreshed",
                    ));
                }
                Some(dkg::OldShares {
                    key_package: node.key_package(record)?,
                    public_key_package: frost_secp256k1::keys::PublicKeyPackage::deserialize(
                        &record.public_key_package,
                    )
                    .map_err(|e| {
                        Status::internal(format!("stored public key package unreadable: {e}"))
                    })?,
                })
            }
        };
        {
            let mut map = node
                .ceremonies
                .lock()
                .map_err(|_| Status::internal("ceremony lock poisoned"))?;
            map.retain(|_, c| c.started.elapsed() < CEREMONY_TTL);
            if map.contains_key(&spec.ceremony_id) {
                return Err(Status::already_exists(format!(
                    "ceremony {} already started",
                    spec.ceremony_id
                )));
            }
            if map.len() >= MAX_CEREMONIES {
                return Err(Status::resource_exhausted(
                    "too many ceremonies in progress",
                ));
            }
        }
        let ceremony_id = spec.ceremony_id.clone();
        let started = match old {
            Some(old) => {
                dkg::start_refresh(spec, old, &node.id, &node.identity, &mut rand::thread_rng())
            }
            None => dkg::start(spec, &node.id, &node.identity, &mut rand::thread_rng()),
        };
        let (state, msg) = started.map_err(|e| refuse(node, "dkg-start", e))?;
        audit(
            node,
            "dkg_started",
            serde_json::json!({"ceremony": ceremony_id, "group": state.spec().group.as_str(), "threshold": state.spec().threshold, "members": state.spec().members.iter().map(|m| m.as_str()).collect::<Vec<_>>()}),
        )?;
        info!(node = %node.id, ceremony = %ceremony_id, group = %state.spec().group, "DKG part 1 done");
        node.put_ceremony(ceremony_id, Step::Round1(state))?;
        Ok(Response::new(msg.into()))
    }

    async fn dkg_echo(
        &self,
        request: Request<pb::DkgEchoRequest>,
    ) -> Result<Response<pb::DkgEchoMessage>, Status> {
        let node = &self.node;
        let req = request.into_inner();
        let set: Vec<dkg::SignedRound1> = req
            .round1
            .iter()
            .map(TryInto::try_into)
            .collect::<Result<_, _>>()?;
        let Step::Round1(state) = node.take_ceremony(&req.ceremony_id)? else {
            return Err(Status::failed_precondition(
                "ceremony is not waiting for the round-1 set; aborted",
            ));
        };
        let (next, echo) = state
            .receive_round1(&set, &node.directory, &node.identity)
            .map_err(|e| refuse(node, "dkg-echo", e))?;
        audit(
            node,
            "dkg_round1_set_echoed",
            serde_json::json!({"ceremony": req.ceremony_id, "set_hash": hex::encode(&echo.set_hash)}),
        )?;
        node.put_ceremony(req.ceremony_id, Step::Echoes(next))?;
        Ok(Response::new(echo.into()))
    }

    async fn dkg_round2(
        &self,
        request: Request<pb::DkgRound2Request>,
    ) -> Result<Response<pb::DkgRound2Response>, Status> {
        let node = &self.node;
        let req = request.into_inner();
        let echoes: Vec<dkg::Echo> = req
            .echoes
            .iter()
            .map(TryInto::try_into)
            .collect::<Result<_, _>>()?;
        let Step::Echoes(state) = node.take_ceremony(&req.ceremony_id)? else {
            return Err(Status::failed_precondition(
                "ceremony is not waiting for echoes; aborted",
            ));
        };
        let (next, shares) = state
            .receive_echoes(
                &echoes,
                &node.directory,
                &node.identity,
                &mut rand::thread_rng(),
            )
            .map_err(|e| refuse(node, "dkg-round2", e))?;
        audit(
            node,
            "dkg_echoes_agreed_shares_sent",
            serde_json::json!({"ceremony": req.ceremony_id, "encrypted_shares": shares.len()}),
        )?;
        node.put_ceremony(req.ceremony_id, Step::Round2(next))?;
        Ok(Response::new(pb::DkgRound2Response {
            shares: shares.into_iter().map(Into::into).collect(),
        }))
    }

    async fn dkg_finish(
        &self,
        request: Request<pb::DkgFinishRequest>,
    ) -> Result<Response<pb::DkgKeyReport>, Status> {
        let node = &self.node;
        let req = request.into_inner();
        let shares: Vec<dkg::SealedRound2> = req
            .shares
            .iter()
            .map(TryInto::try_into)
            .collect::<Result<_, _>>()?;
        let Step::Round2(state) = node.take_ceremony(&req.ceremony_id)? else {
            return Err(Status::failed_precondition(
                "ceremony is not waiting for round-2 shares; aborted",
            ));
        };
        let spec = state.spec().clone();
        let out = state
            .receive_round2(&shares, &node.directory, &node.identity)
            .map_err(|e| refuse(node, "dkg-finish", e))?;
        let key_bytes = zeroize::Zeroizing::new(
            out.key_package
                .serialize()
                .map_err(|e| Status::internal(format!("serialize key package: {e}")))?,
        );
        if spec.refresh {
            let mut record = node.group_record(&spec.group)?;
            record.pending_refresh = Some(crate::store::PendingRefresh {
                ceremony_id: spec.ceremony_id.clone(),
                sealed_key_package: node
                    .shares()?
                    .seal(&group_ctx(node, &spec.group), &key_bytes)
                    .map_err(NodeError::from)?,
                public_key_package: out.report.public_key_package.clone(),
            });
            audit(
                node,
                "refresh_share_received",
                serde_json::json!({"ceremony": spec.ceremony_id, "group": spec.group.as_str()}),
            )?;
            node.store.put_group(&record).await?;
            info!(node = %node.id, group = %spec.group, "refreshed share sealed; old share kept until every member confirms");
            return Ok(Response::new(out.report.into()));
        }
        let record = GroupRecord {
            v: 1,
            name: spec.group.clone(),
            tier: spec.tier,
            threshold: spec.threshold,
            members: spec.members.clone(),
            ceremony_id: spec.ceremony_id.clone(),
            sealed_key_package: node
                .shares()?
                .seal(&group_ctx(node, &spec.group), &key_bytes)
                .map_err(NodeError::from)?,
            public_key_package: out.report.public_key_package.clone(),
            group_public_key: out.report.group_public_key.clone(),
            active: false,
            pending_refresh: None,
        };
        audit(
            node,
            "dkg_completed",
            serde_json::json!({"ceremony": spec.ceremony_id, "group": spec.group.as_str(), "group_public_key": hex::encode(&record.group_public_key)}),
        )?;
        node.store.insert_group(&record).await?;
        info!(node = %node.id, group = %spec.group, group_key = %hex::encode(&record.group_public_key), "DKG complete; key share sealed; group pending activation");
        Ok(Response::new(out.report.into()))
    }

    async fn activate_group(
        &self,
        request: Request<pb::ActivateGroupRequest>,
    ) -> Result<Response<pb::ActivateGroupResponse>, Status> {
        let node = &self.node;
        let req = request.into_inner();
        let name = group_name("group", &req.group)?;
        let record = node.group_record(&name)?;
        if record.active {
            return Ok(Response::new(pb::ActivateGroupResponse {}));
        }
        // Activation needs proof, not the coordinator's word: a valid group signature over the activation message.
        let pkp = frost_secp256k1::keys::PublicKeyPackage::deserialize(&record.public_key_package)
            .map_err(|e| Status::internal(format!("stored public key package unreadable: {e}")))?;
        let signature = frost_secp256k1::Signature::deserialize(&req.test_signature)
            .map_err(|e| Status::invalid_argument(format!("test_signature: {e}")))?;
        let message = signing::activation_message(&name, &record.group_public_key);
        pkp.verifying_key()
            .verify(&message, &signature)
            .map_err(|_| {
                refuse(
                    node,
                    "activate",
                    CoreError::refused("test signature does not verify under the group key"),
                )
            })?;
        audit(
            node,
            "group_activated",
            serde_json::json!({"group": name.as_str()}),
        )?;
        node.store.activate_group(&name).await?;
        info!(node = %node.id, group = %name, "key group active");
        Ok(Response::new(pb::ActivateGroupResponse {}))
    }

    async fn announce(
        &self,
        request: Request<pb::SignedWithdrawal>,
    ) -> Result<Response<pb::AnnounceResponse>, Status> {
        let node = &self.node;
        node.shares()?;
        let signed: SignedWithdrawal = request.get_ref().try_into()?;
        let record = node.group_record(&signed.request.key_group)?;
        let view = GroupView {
            name: record.name.clone(),
            tier: record.tier,
            active: record.active,
        };
        // Only custody-signed requests start a clock: junk cannot fill the store.
        check_custody(&signed, &view, &node.settings, unix_now())
            .map_err(|e| refuse(node, "announce", e))?;
        let first_seen = node
            .store
            .first_seen(&signed.request.request_id, unix_now())
            .await?;
        Ok(Response::new(pb::AnnounceResponse { first_seen }))
    }

    async fn commit_refresh(
        &self,
        request: Request<pb::CommitRefreshRequest>,
    ) -> Result<Response<pb::CommitRefreshResponse>, Status> {
        let node = &self.node;
        let req = request.into_inner();
        let spec: dkg::CeremonySpec = req
            .spec
            .as_ref()
            .ok_or_else(|| Status::invalid_argument("spec: missing"))?
            .try_into()?;
        if !spec.refresh {
            return Err(Status::invalid_argument("spec: not a refresh"));
        }
        let reports: Vec<dkg::GroupKeyReport> = req
            .reports
            .iter()
            .map(TryInto::try_into)
            .collect::<Result<_, _>>()?;
        let mut record = node.group_record(&spec.group)?;
        let Some(pending) = record.pending_refresh.clone() else {
            return Err(Status::failed_precondition(format!(
                "no refresh of {} is pending on {}",
                spec.group, node.id
            )));
        };
        // K6: every member must have signed a report of exactly our new public package; otherwise keep the old share.
        let agreed = dkg::check_reports(&spec, &node.directory, &reports)
            .map_err(|e| refuse(node, "commit-refresh", e))?;
        let agreed_bytes = agreed
            .serialize()
            .map_err(|e| Status::internal(e.to_string()))?;
        if pending.ceremony_id != spec.ceremony_id || pending.public_key_package != agreed_bytes {
            return Err(refuse(
                node,
                "commit-refresh",
                CoreError::refused(
                    "the confirmed public key package is not the one this node derived",
                ),
            ));
        }
        if agreed
            .verifying_key()
            .serialize()
            .map_err(|e| Status::internal(e.to_string()))?
            != record.group_public_key
        {
            return Err(refuse(
                node,
                "commit-refresh",
                CoreError::refused("a refresh must not change the group key"),
            ));
        }
        audit(
            node,
            "refresh_committed",
            serde_json::json!({"ceremony": spec.ceremony_id, "group": spec.group.as_str()}),
        )?;
        // The old sealed share is overwritten here and exists nowhere else.
        record.sealed_key_package = pending.sealed_key_package;
        record.public_key_package = pending.public_key_package;
        record.pending_refresh = None;
        node.store.put_group(&record).await?;
        info!(node = %node.id, group = %spec.group, "refresh committed; old share destroyed");
        Ok(Response::new(pb::CommitRefreshResponse {}))
    }

    async fn repair_deltas(
        &self,
        request: Request<pb::RepairRequest>,
    ) -> Result<Response<pb::RepairMessages>, Status> {
        let node = &self.node;
        let (spec, mut record) = node.repair_context(request.get_ref())?;
        if node.store.is_revoked(&spec.replacement)? {
            return Err(refuse(
                node,
                "repair-deltas",
                CoreError::refused(format!("{} is revoked", spec.replacement)),
            ));
        }
        let key_package = node.key_package(&record)?;
        let deltas = repair::helper_deltas(
            &spec,
            &node.id,
            &key_package,
            &node.identity,
            &node.directory,
            &mut rand::thread_rng(),
        )
        .map_err(|e| refuse(node, "repair-deltas", e))?;
        audit(
            node,
            "repair_helped",
            serde_json::json!({"repair": spec.repair_id, "group": spec.group.as_str(), "lost": spec.lost.as_str(), "replacement": spec.replacement.as_str()}),
        )?;
        // Commit to the new membership before any delta leaves: a second repair
        // onto the same replacement, or of the revoked node, is then refused, so a
        // rogue coordinator cannot gather several members' shares on one node.
        record.members = spec.new_members();
        node.store.put_group_and_revoke(&record, &spec.lost).await?;
        Ok(Response::new(pb::RepairMessages {
            messages: deltas.into_iter().map(Into::into).collect(),
        }))
    }

    async fn repair_sigma(
        &self,
        request: Request<pb::RepairRequest>,
    ) -> Result<Response<pb::DkgSealedShare>, Status> {
        let node = &self.node;
        let (spec, record) = node.repair_context(request.get_ref())?;
        if record.members != spec.new_members() {
            return Err(refuse(
                node,
                "repair-sigma",
                CoreError::refused("this node did not help with that repair"),
            ));
        }
        let deltas: Vec<dkg::SealedRound2> = request
            .get_ref()
            .messages
            .iter()
            .map(TryInto::try_into)
            .collect::<Result<_, _>>()?;
        let sigma = repair::helper_sigma(
            &spec,
            &node.id,
            &deltas,
            &node.identity,
            &node.directory,
            &mut rand::thread_rng(),
        )
        .map_err(|e| refuse(node, "repair-sigma", e))?;
        Ok(Response::new(sigma.into()))
    }

    async fn repair_receive(
        &self,
        request: Request<pb::RepairRequest>,
    ) -> Result<Response<pb::DkgKeyReport>, Status> {
        let node = &self.node;
        let req = request.into_inner();
        let wire_spec = req
            .spec
            .as_ref()
            .ok_or_else(|| Status::invalid_argument("spec: missing"))?;
        let spec: repair::RepairSpec = wire_spec.try_into()?;
        if node.store.group(&spec.group)?.is_some() {
            return Err(Status::already_exists(format!(
                "key group {} already exists on {}",
                spec.group, node.id
            )));
        }
        let sigmas: Vec<dkg::SealedRound2> = req
            .messages
            .iter()
            .map(TryInto::try_into)
            .collect::<Result<_, _>>()?;
        let pkp = frost_secp256k1::keys::PublicKeyPackage::deserialize(&req.public_key_package)
            .map_err(|e| Status::invalid_argument(format!("public_key_package: {e}")))?;
        let key_package = repair::replacement_receive(
            &spec,
            &node.id,
            &sigmas,
            &pkp,
            &node.identity,
            &node.directory,
        )
        .map_err(|e| refuse(node, "repair-receive", e))?;
        let key_bytes = zeroize::Zeroizing::new(
            key_package
                .serialize()
                .map_err(|e| Status::internal(format!("serialize key package: {e}")))?,
        );
        let group_public_key = pkp
            .verifying_key()
            .serialize()
            .map_err(|e| Status::internal(e.to_string()))?;
        let record = GroupRecord {
            v: 1,
            name: spec.group.clone(),
            tier: permafrost_proto::convert::tier_from_wire(wire_spec.tier)?,
            threshold: spec.threshold,
            members: spec.new_members(),
            ceremony_id: spec.repair_id.clone(),
            sealed_key_package: node
                .shares()?
                .seal(&group_ctx(node, &spec.group), &key_bytes)
                .map_err(NodeError::from)?,
            public_key_package: req.public_key_package.clone(),
            group_public_key: group_public_key.clone(),
            active: true,
            pending_refresh: None,
        };
        audit(
            node,
            "repair_share_received",
            serde_json::json!({"repair": spec.repair_id, "group": spec.group.as_str(), "replaces": spec.lost.as_str()}),
        )?;
        node.store.insert_group(&record).await?;
        info!(node = %node.id, group = %spec.group, replaces = %spec.lost, "repaired share sealed");
        Ok(Response::new(pb::DkgKeyReport {
            sender: node.id.to_string(),
            group_public_key,
            public_key_package: req.public_key_package,
            signature: Vec::new(),
        }))
    }

    async fn replace_member(
        &self,
        request: Request<pb::RepairRequest>,
    ) -> Result<Response<pb::ReplaceMemberResponse>, Status> {
        let node = &self.node;
        let (spec, mut record) = node.repair_context(request.get_ref())?;
        audit(
            node,
            "member_replaced",
            serde_json::json!({"group": spec.group.as_str(), "lost": spec.lost.as_str(), "replacement": spec.replacement.as_str()}),
        )?;
        record.members = spec.new_members();
        node.store.put_group_and_revoke(&record, &spec.lost).await?;
        Ok(Response::new(pb::ReplaceMemberResponse {}))
    }

    async fn commit(
        &self,
        request: Request<pb::CommitRequest>,
    ) -> Result<Response<pb::CommitResponse>, Status> {
        let node = &self.node;
        let _session = node.session_slot()?;
        let name = group_name("key_group", &request.get_ref().key_group)?;
        let record = node.group_record(&name)?;
        let key_package = node.key_package(&record)?;
        let (nonces, commitments) =
            round1::commit(key_package.signing_share(), &mut rand::thread_rng());
        let commitments = commitments
            .serialize()
            .map_err(|e| Status::internal(format!("serialize commitments: {e}")))?;
        let handle = node
            .nonces
            .lock()
            .map_err(|_| Status::internal("nonce pool lock poisoned"))?
            .insert(name, nonces, Instant::now())
            .ok_or_else(|| {
                permafrost_proto::backpressure::busy("nonce pool full", BUSY_RETRY * 4)
            })?;
        let identifier = node.identifier_in(&record)?;
        Ok(Response::new(pb::CommitResponse {
            nonce_handle: handle.to_vec(),
            commitments,
            identifier,
        }))
    }

    async fn sign(
        &self,
        request: Request<pb::SignRequest>,
    ) -> Result<Response<pb::SignResponse>, Status> {
        let node = self.node.clone();
        let session = node.session_slot_owned()?;
        let req = request.into_inner();
        // From here on the step runs to its end even if the caller goes away: a
        // cancelled RPC must never leave a journal or audit record without the
        // share it describes having been computed and handed to the transport.
        tokio::spawn(async move {
            let _session = session;
            node.sign_step(req).await
        })
        .await
        .map_err(|e| Status::internal(format!("signing task failed: {e}")))?
        .map(Response::new)
    }
}

impl SignerNode {
    /// A slot among the signing rounds in flight, or "busy".
    fn session_slot(&self) -> Result<tokio::sync::SemaphorePermit<'_>, Status> {
        self.sessions.try_acquire().map_err(|_| {
            permafrost_proto::backpressure::busy(
                format!("{} signing rounds in flight", self.max_sessions),
                BUSY_RETRY,
            )
        })
    }

    fn session_slot_owned(self: &Arc<Self>) -> Result<OwnedSessionSlot, Status> {
        self.session_slot()?.forget();
        Ok(OwnedSessionSlot(self.clone()))
    }

    /// Round 2 (RFC 9591 §5.2): every check on what will actually be signed,
    /// then the journal and audit record, then the share.
    async fn sign_step(self: &Arc<Self>, req: pb::SignRequest) -> Result<pb::SignResponse, Status> {
        let node = self;
        // N1: the nonce leaves the pool first; whatever happens below, it is never usable again.
        let taken = node
            .nonces
            .lock()
            .map_err(|_| Status::internal("nonce pool lock poisoned"))?
            .take(&req.nonce_handle, Instant::now());
        let Some((nonce_group, nonces)) = taken else {
            warn!(node = %node.id, "refused: unknown, used or expired nonce handle");
            return Err(Status::failed_precondition(
                "unknown, used or expired nonce handle (nonces never survive a restart); commit again",
            ));
        };
        let name = group_name("key_group", &req.key_group)?;
        if nonce_group != name {
            return Err(refuse(
                node,
                "sign",
                CoreError::refused("nonce was committed for another key group"),
            ));
        }
        let record = node.group_record(&name)?;
        let package = SigningPackage::deserialize(&req.signing_package)
            .map_err(|e| Status::invalid_argument(format!("signing_package: {e}")))?;
        let key_package = node.key_package(&record)?;
        let (target, package, nonces, key_package) = match &req.target {
            Some(pb::sign_request::Target::Withdrawal(w)) => {
                let signed: SignedWithdrawal = w.try_into()?;
                let approvals: Vec<Approval> = req
                    .approvals
                    .iter()
                    .map(|a| Approval {
                        approver_id: a.approver_id.clone(),
                        expires_at: a.expires_at,
                        signature: a.signature.clone(),
                    })
                    .collect();
                let view = GroupView {
                    name: record.name.clone(),
                    tier: record.tier,
                    active: record.active,
                };
                let now = unix_now();
                // Junk is refused before it reaches the store: no custody signature, no record.
                check_custody(&signed, &view, &node.settings, now)
                    .map_err(|e| refuse(node, "sign", e))?;
                let r = &signed.request;
                let (request_id, digest, group) =
                    (r.request_id.clone(), r.digest(), r.key_group.clone());
                let asset_amount = Some((r.asset.clone(), r.amount));
                let checker = node.clone();
                // One store step: the policy sees the ledger as it stands inside the
                // commit, and the journal entry and velocity count are written with it.
                let outcome = node
                    .store
                    .journal_share(
                        &request_id,
                        &digest,
                        &group,
                        asset_amount,
                        now.saturating_sub(VELOCITY_WINDOW_SECS),
                        now,
                        move |ledger| {
                            let input = PolicyInput {
                                policy: &checker.policy,
                                approvals: &approvals,
                                ledger: LedgerView {
                                    spent_24h: ledger.spent,
                                    first_seen: Some(ledger.first_seen),
                                },
                            };
                            let authorized = authorize_withdrawal(
                                &signed,
                                &view,
                                &checker.settings,
                                input,
                                now,
                            )?;
                            let target = SigningTarget::Withdrawal(authorized);
                            signing::check_package(&target, &package, &nonces, &key_package)?;
                            Ok((target, package, nonces, key_package))
                        },
                    )
                    .await?;
                let (checked, journaled) = outcome.map_err(|e| refuse(node, "sign", e))?;
                let (target, package, nonces, key_package) = checked;
                if let SigningTarget::Withdrawal(w) = &target {
                    let r = w.request();
                    // Invariant 7: the audit record is durable before the share exists (L2).
                    audit(
                        node,
                        "share_released",
                        serde_json::json!({
                            "request": r.request_id.as_str(), "digest": w.digest().to_hex(), "group": name.as_str(),
                            "asset": r.asset, "amount": r.amount.to_string(), "destination": r.destination,
                            "approvals": req.approvals.iter().map(|a| a.approver_id.as_str()).collect::<Vec<_>>(),
                            "shares_released": journaled.shares_released,
                        }),
                    )?;
                }
                (target, package, nonces, key_package)
            }
            Some(pb::sign_request::Target::Activation(_)) => {
                let pkp = frost_secp256k1::keys::PublicKeyPackage::deserialize(
                    &record.public_key_package,
                )
                .map_err(|e| {
                    Status::internal(format!("stored public key package unreadable: {e}"))
                })?;
                let target = SigningTarget::Activation(
                    ActivationTarget::for_pending_group(&name, &pkp, record.active)
                        .map_err(|e| refuse(node, "sign", e))?,
                );
                signing::check_package(&target, &package, &nonces, &key_package)
                    .map_err(|e| refuse(node, "sign", e))?;
                audit(
                    node,
                    "activation_share_released",
                    serde_json::json!({"group": name.as_str()}),
                )?;
                (target, package, nonces, key_package)
            }
            None => return Err(Status::invalid_argument("target: missing")),
        };
        let share = signing::compute_share(&target, &package, nonces, &key_package)
            .map_err(|e| refuse(node, "sign", e))?;
        match &target {
            SigningTarget::Withdrawal(w) => {
                info!(node = %node.id, request = %w.request().request_id, digest = %w.digest().to_hex(), "signature share released")
            }
            SigningTarget::Activation(_) => {
                info!(node = %node.id, group = %name, "activation test share released")
            }
        }
        Ok(pb::SignResponse {
            signature_share: share.serialize(),
            identifier: node.identifier_in(&record)?,
        })
    }
}

/// A session slot held by a spawned step; returned to the node when dropped.
struct OwnedSessionSlot(Arc<SignerNode>);

impl Drop for OwnedSessionSlot {
    fn drop(&mut self) {
        self.0.sessions.add_permits(1);
    }
}
