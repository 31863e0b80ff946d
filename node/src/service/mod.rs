//! The `SignerNode` gRPC service: the coordinator's door into a node.
//!
//! Every handler checks its input itself; the coordinator's word counts for
//! nothing. This module holds the tonic trait impl, which only delegates to
//! one module per concern, the one mapping from [`NodeError`] to a gRPC
//! status, and what several concerns share (refusals, audit records, status):
//!
//! - `quorum`: the operator-quorum spec every ceremony step verifies first (X5–X7);
//! - `dkg`: creating a group by distributed key generation, and activating it;
//! - `refresh`: proactive refresh of a group's shares (same group key);
//! - `abandon`: aborting an unfinished refresh on a participant's promise (K7);
//! - `repair`: rebuilding a lost member's share on a replacement node;
//! - `registry`: changing a group's operator registry under its quorum;
//! - `retire`: retiring a group for good (its share destroyed);
//! - `sign`: the two signing rounds (RFC 9591 §5.1 and §5.2) and `Announce`;
//! - `velocity`: the group-wide velocity write (`Reserve`) and read (`Attest`).

mod abandon;
mod dkg;
mod quorum;
mod refresh;
mod registry;
mod repair;
mod retire;
mod sign;
mod velocity;

use std::sync::Arc;

use permafrost_core::CoreError;
use permafrost_proto::convert::tier_to_wire;
use permafrost_proto::{self as pb, signer_node_server::SignerNode as SignerNodeApi};
use tonic::{Request, Response, Status};
use tracing::warn;

pub(crate) use self::dkg::CeremonyInFlight;
use crate::store::GroupRecord;
use crate::{NodeError, SignerNode};

/// gRPC front of a [`SignerNode`].
pub struct NodeService {
    pub(crate) node: Arc<SignerNode>,
}

/// The one mapping from a node error to the status a client acts on (STYLE §6);
/// both the `SignerNode` and the `NodeAdmin` service answer through it.
impl From<NodeError> for Status {
    fn from(e: NodeError) -> Status {
        let message = e.to_string();
        match e {
            NodeError::InvalidInput { .. } => Status::invalid_argument(message),
            NodeError::NotAuthorized(_) => Status::permission_denied(message),
            NodeError::NotYet(_) | NodeError::Precondition(_) | NodeError::Sealed(_) => {
                Status::failed_precondition(message)
            }
            NodeError::PeerMisbehaved { .. } | NodeError::Aborted(_) => Status::aborted(message),
            NodeError::Stale(_) => permafrost_proto::stale::stale(message),
            NodeError::OutOfStep(_) => permafrost_proto::stale::out_of_step(message),
            NodeError::CatchingUp(_) => permafrost_proto::stale::catching_up(message),
            NodeError::NotFound(_) => Status::not_found(message),
            NodeError::AlreadyExists(_) => Status::already_exists(message),
            NodeError::Busy { what, retry_after } => {
                permafrost_proto::backpressure::busy(what, retry_after)
            }
            NodeError::Exhausted(_) => Status::resource_exhausted(message),
            NodeError::Sealer(_) | NodeError::Unavailable(_) => Status::unavailable(message),
            NodeError::Config(_) | NodeError::Corrupt(_) | NodeError::Bug(_) => {
                Status::internal(message)
            }
        }
    }
}

/// Reading a wire message through `permafrost-proto`'s checked conversions:
/// a refusal there (a status naming the field, "field: reason") is the caller's fault.
pub(crate) trait FromWire<T> {
    /// The converted value, or [`NodeError::InvalidInput`] naming the field.
    fn wire(self) -> Result<T, NodeError>;
}

impl<T, E: Into<Status>> FromWire<T> for Result<T, E> {
    fn wire(self) -> Result<T, NodeError> {
        self.map_err(|e| {
            let status: Status = e.into();
            let (field, reason) = status
                .message()
                .split_once(": ")
                .unwrap_or(("request", status.message()));
            NodeError::InvalidInput {
                field: field.into(),
                reason: reason.into(),
            }
        })
    }
}

/// A required field the caller left out.
pub(crate) fn missing(field: &str) -> NodeError {
    invalid(field, "missing")
}

/// A field the caller got wrong.
pub(crate) fn invalid(field: &str, reason: impl std::fmt::Display) -> NodeError {
    NodeError::InvalidInput {
        field: field.into(),
        reason: reason.to_string(),
    }
}

/// Records a refusal by `check` in the audit log and the metrics and returns
/// it as the caller's error. If the refusal cannot be recorded, the node is
/// unavailable instead.
pub(crate) fn refuse(
    node: &SignerNode,
    step: &'static str,
    check: crate::metrics::Check,
    e: CoreError,
) -> NodeError {
    warn!(node = %node.id, step, reason = %e, "refused");
    node.metrics.refused(step, check, &e);
    if let Err(audit) = node.audit.append(
        "refused",
        serde_json::json!({"step": step, "reason": e.to_string()}),
    ) {
        return NodeError::Unavailable(format!("audit log: {audit}"));
    }
    NodeError::from(e)
}

/// Appends an audit record; nothing that needs one may happen without it (L2).
pub(crate) fn audit(
    node: &SignerNode,
    event: &str,
    detail: serde_json::Value,
) -> Result<(), NodeError> {
    node.audit.append(event, detail).map_err(|e| {
        NodeError::Unavailable(format!(
            "audit log: {e}; refusing to act without a durable record"
        ))
    })
}

impl SignerNode {
    /// The node's status, as both services report it.
    pub(crate) fn status(&self) -> Result<pb::NodeStatus, NodeError> {
        let key_groups = self
            .store
            .groups()?
            .into_iter()
            .map(|g| {
                let epoch = quorum::epoch_of(self, &g)?;
                let pending_refresh = g
                    .pending_refresh
                    .as_ref()
                    .map(|p| p.ceremony_id.clone())
                    .unwrap_or_default();
                // A record whose key does not give an output reports none (status must still answer).
                let output = g.taproot_output().ok().flatten();
                let (registry_seq, registry_hash) = registry::status_of(self, &g.name)?;
                Ok(pb::NodeKeyGroup {
                    name: g.name.to_string(),
                    tier: tier_to_wire(g.tier),
                    threshold: u32::from(g.threshold),
                    group_public_key: g.group_public_key,
                    active: g.active,
                    members: g.members.iter().map(|m| m.to_string()).collect(),
                    removed: g.removed.iter().map(|m| m.to_string()).collect(),
                    scheme: g.scheme.to_string(),
                    network: g.network.map(|n| n.to_string()).unwrap_or_default(),
                    output_key: output
                        .as_ref()
                        .map(|o| o.output_key().to_vec())
                        .unwrap_or_default(),
                    address: output.map(|o| o.address().to_string()).unwrap_or_default(),
                    public_key_package: g.public_key_package,
                    epoch,
                    pending_refresh,
                    registry_seq,
                    registry_hash,
                })
            })
            .collect::<Result<_, NodeError>>()?;
        let (audit_entries, audit_head) = self.audit.head();
        let audit_head = hex::decode(&audit_head)
            .map_err(|e| NodeError::Bug(format!("audit head {audit_head:?} is not hex: {e}")))?;
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
            audit_head,
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

    /// This node's record of group `name`, or "not found".
    pub(crate) fn group_record(
        &self,
        name: &permafrost_core::GroupName,
    ) -> Result<GroupRecord, NodeError> {
        let record = self.store.group(name)?.ok_or_else(|| {
            NodeError::NotFound(format!("key group {name} is not held by node {}", self.id))
        })?;
        if record.retired {
            return Err(NodeError::Precondition(format!(
                "key group {name} is retired on node {}: it signs nothing and takes no ceremony step again",
                self.id
            )));
        }
        Ok(record)
    }

    /// The scheme (and network) this node's own policy gives `name`; a group
    /// the policy does not name signs messages.
    pub(crate) fn scheme_of(
        &self,
        name: &permafrost_core::GroupName,
    ) -> (
        permafrost_core::taproot::Scheme,
        Option<permafrost_core::taproot::Network>,
    ) {
        match self.policy.group(name) {
            Some(g) => (g.scheme, g.bitcoin.map(|b| b.network)),
            None => (permafrost_core::taproot::Scheme::Message, None),
        }
    }

    /// This node's FROST identifier in `record` (member i has identifier i+1).
    pub(crate) fn identifier_in(&self, record: &GroupRecord) -> Result<u32, NodeError> {
        record
            .members
            .iter()
            .position(|m| *m == self.id)
            .map(|i| i as u32 + 1)
            .ok_or_else(|| {
                NodeError::Bug("this node is not a member of its own group record".into())
            })
    }
}

/// A public key package this node stored itself.
pub(crate) fn stored_public_key_package(
    record: &GroupRecord,
) -> Result<frost_secp256k1::keys::PublicKeyPackage, NodeError> {
    frost_secp256k1::keys::PublicKeyPackage::deserialize(&record.public_key_package)
        .map_err(|e| NodeError::Corrupt(format!("stored public key package unreadable: {e}")))
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
        Ok(Response::new(
            dkg::start(&self.node, request.into_inner()).await?,
        ))
    }

    async fn dkg_echo(
        &self,
        request: Request<pb::DkgEchoRequest>,
    ) -> Result<Response<pb::DkgEchoMessage>, Status> {
        Ok(Response::new(dkg::echo(&self.node, request.into_inner())?))
    }

    async fn dkg_round2(
        &self,
        request: Request<pb::DkgRound2Request>,
    ) -> Result<Response<pb::DkgRound2Response>, Status> {
        Ok(Response::new(dkg::round2(
            &self.node,
            request.into_inner(),
        )?))
    }

    async fn dkg_finish(
        &self,
        request: Request<pb::DkgFinishRequest>,
    ) -> Result<Response<pb::DkgKeyReport>, Status> {
        Ok(Response::new(
            dkg::finish(&self.node, request.into_inner()).await?,
        ))
    }

    async fn activate_group(
        &self,
        request: Request<pb::ActivateGroupRequest>,
    ) -> Result<Response<pb::ActivateGroupResponse>, Status> {
        Ok(Response::new(
            dkg::activate(&self.node, request.into_inner()).await?,
        ))
    }

    async fn announce(
        &self,
        request: Request<pb::SignedWithdrawal>,
    ) -> Result<Response<pb::AnnounceResponse>, Status> {
        Ok(Response::new(
            sign::announce(&self.node, request.get_ref()).await?,
        ))
    }

    async fn commit_refresh(
        &self,
        request: Request<pb::CommitRefreshRequest>,
    ) -> Result<Response<pb::CommitRefreshResponse>, Status> {
        Ok(Response::new(
            refresh::commit(&self.node, request.into_inner()).await?,
        ))
    }

    async fn get_commit_certificate(
        &self,
        request: Request<pb::CommitCertificateRequest>,
    ) -> Result<Response<pb::CommitCertificate>, Status> {
        Ok(Response::new(refresh::certificate(
            &self.node,
            request.get_ref(),
        )?))
    }

    async fn abandon_refresh(
        &self,
        request: Request<pb::AbandonRefreshRequest>,
    ) -> Result<Response<pb::RefreshAbandonPromise>, Status> {
        Ok(Response::new(
            abandon::abandon(&self.node, request.get_ref()).await?,
        ))
    }

    async fn drop_pending_refresh(
        &self,
        request: Request<pb::DropPendingRefreshRequest>,
    ) -> Result<Response<pb::DropPendingRefreshResponse>, Status> {
        Ok(Response::new(
            abandon::drop_pending(&self.node, request.get_ref()).await?,
        ))
    }

    async fn retire_group(
        &self,
        request: Request<pb::RetireGroupRequest>,
    ) -> Result<Response<pb::RetireGroupResponse>, Status> {
        Ok(Response::new(
            retire::retire(&self.node, request.get_ref()).await?,
        ))
    }

    async fn change_registry(
        &self,
        request: Request<pb::ChangeRegistryRequest>,
    ) -> Result<Response<pb::ChangeRegistryResponse>, Status> {
        Ok(Response::new(
            registry::change(&self.node, request.get_ref()).await?,
        ))
    }

    async fn leave_group(
        &self,
        request: Request<pb::LeaveGroupRequest>,
    ) -> Result<Response<pb::LeaveGroupResponse>, Status> {
        Ok(Response::new(
            retire::leave(&self.node, request.get_ref()).await?,
        ))
    }

    async fn prepare_repair(
        &self,
        request: Request<pb::RepairRequest>,
    ) -> Result<Response<pb::RepairAck>, Status> {
        Ok(Response::new(
            repair::prepare(&self.node, request.get_ref()).await?,
        ))
    }

    async fn repair_deltas(
        &self,
        request: Request<pb::RepairRequest>,
    ) -> Result<Response<pb::RepairMessages>, Status> {
        Ok(Response::new(
            repair::deltas(&self.node, request.get_ref()).await?,
        ))
    }

    async fn repair_sigma(
        &self,
        request: Request<pb::RepairRequest>,
    ) -> Result<Response<pb::DkgSealedShare>, Status> {
        Ok(Response::new(repair::sigma(&self.node, request.get_ref())?))
    }

    async fn repair_receive(
        &self,
        request: Request<pb::RepairRequest>,
    ) -> Result<Response<pb::DkgKeyReport>, Status> {
        Ok(Response::new(
            repair::receive(&self.node, request.into_inner()).await?,
        ))
    }

    async fn replace_member(
        &self,
        request: Request<pb::RepairRequest>,
    ) -> Result<Response<pb::ReplaceMemberResponse>, Status> {
        Ok(Response::new(
            repair::replace_member(&self.node, request.get_ref()).await?,
        ))
    }

    async fn commit(
        &self,
        request: Request<pb::CommitRequest>,
    ) -> Result<Response<pb::CommitResponse>, Status> {
        let owner = permafrost_proto::auth::principal(&request)?.id;
        Ok(Response::new(sign::commit(
            &self.node,
            &owner,
            request.get_ref(),
        )?))
    }

    async fn reserve(
        &self,
        request: Request<pb::ReserveRequest>,
    ) -> Result<Response<pb::ReserveResponse>, Status> {
        let started = std::time::Instant::now();
        let answer = velocity::reserve_only(&self.node, request.get_ref());
        self.node.metrics.step("node_reserve", started.elapsed());
        Ok(Response::new(answer?))
    }

    async fn attest(
        &self,
        request: Request<pb::AttestRequest>,
    ) -> Result<Response<pb::AttestResponse>, Status> {
        let started = std::time::Instant::now();
        let answer = velocity::attest(&self.node, request.get_ref());
        self.node.metrics.step("node_attest", started.elapsed());
        Ok(Response::new(answer?))
    }

    async fn sign(
        &self,
        request: Request<pb::SignRequest>,
    ) -> Result<Response<pb::SignResponse>, Status> {
        let started = std::time::Instant::now();
        let answer = sign::sign(self.node.clone(), request.into_inner()).await;
        self.node.metrics.step("node_sign", started.elapsed());
        Ok(Response::new(answer?))
    }
}
