//! The `SignerNode` gRPC service: DKG steps and the two signing rounds.
//! Every handler checks its input itself; the coordinator's word counts for nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use frost_secp256k1::keys::KeyPackage;
use frost_secp256k1::{round1, SigningPackage};
use permafrost_core::authz::{authorize_withdrawal, GroupView, SignedWithdrawal};
use permafrost_core::dkg::{self, AwaitingEchoes, AwaitingRound1Set, AwaitingRound2};
use permafrost_core::signing::{self, ActivationTarget, SigningTarget};
use permafrost_core::{unix_now, CoreError, GroupName};
use permafrost_hsm::SealContext;
use permafrost_proto::convert::{group_name, status_from_core, tier_to_wire};
use permafrost_proto::{self as pb, signer_node_server::SignerNode as SignerNodeApi};
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use crate::store::GroupRecord;
use crate::{NodeError, SignerNode};

/// Most ceremonies a node runs at once, and how long one may stay open.
const MAX_CEREMONIES: usize = 8;
const CEREMONY_TTL: Duration = Duration::from_secs(600);

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
            _ => Status::internal(e.to_string()),
        }
    }
}

fn refuse(node: &SignerNode, what: &str, e: CoreError) -> Status {
    warn!(node = %node.id, step = what, reason = %e, "refused");
    status_from_core(&e)
}

fn group_ctx(node: &SignerNode, group: &GroupName) -> SealContext {
    SealContext::new(node.id.as_str(), format!("keygroup/{group}"))
}

impl SignerNode {
    fn group_record(&self, name: &GroupName) -> Result<GroupRecord, Status> {
        self.store
            .group(name)?
            .ok_or_else(|| Status::not_found(format!("key group {name} is not held by node {}", self.id)))
    }

    fn key_package(&self, record: &GroupRecord) -> Result<KeyPackage, Status> {
        let bytes = self
            .sealer
            .unseal(&group_ctx(self, &record.name), &record.sealed_key_package)
            .map_err(NodeError::from)?;
        KeyPackage::deserialize(&bytes).map_err(|e| Status::internal(format!("stored key package unreadable: {e}")))
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
        let mut map = self.ceremonies.lock().map_err(|_| Status::internal("ceremony lock poisoned"))?;
        map.retain(|_, c| c.started.elapsed() < CEREMONY_TTL);
        map.remove(id)
            .map(|c| c.step)
            .ok_or_else(|| Status::failed_precondition(format!("no ceremony {id} in progress on this node")))
    }

    fn put_ceremony(&self, id: String, step: Step) -> Result<(), Status> {
        let mut map = self.ceremonies.lock().map_err(|_| Status::internal("ceremony lock poisoned"))?;
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
    async fn get_status(&self, _request: Request<pb::NodeStatusRequest>) -> Result<Response<pb::NodeStatus>, Status> {
        let node = &self.node;
        let key_groups = node
            .store
            .groups()?
            .into_iter()
            .map(|g| pb::NodeKeyGroup {
                name: g.name.to_string(),
                tier: tier_to_wire(g.tier),
                threshold: u32::from(g.threshold),
                group_public_key: g.group_public_key,
                active: g.active,
            })
            .collect();
        let open_nonces = node.nonces.lock().map(|p| p.len() as u32).unwrap_or(0);
        Ok(Response::new(pb::NodeStatus {
            node_id: node.id.to_string(),
            region: node.region.clone(),
            sealed: false,
            key_groups,
            open_nonces,
        }))
    }

    async fn dkg_start(&self, request: Request<pb::DkgStartRequest>) -> Result<Response<pb::DkgRound1Message>, Status> {
        let node = &self.node;
        let spec: dkg::CeremonySpec = request
            .get_ref()
            .spec
            .as_ref()
            .ok_or_else(|| Status::invalid_argument("spec: missing"))?
            .try_into()?;
        for member in &spec.members {
            node.directory.get(member).map_err(|e| refuse(node, "dkg-start", e))?;
        }
        if node.store.group(&spec.group)?.is_some() {
            return Err(Status::already_exists(format!("key group {} already exists on {}", spec.group, node.id)));
        }
        {
            let mut map = node.ceremonies.lock().map_err(|_| Status::internal("ceremony lock poisoned"))?;
            map.retain(|_, c| c.started.elapsed() < CEREMONY_TTL);
            if map.contains_key(&spec.ceremony_id) {
                return Err(Status::already_exists(format!("ceremony {} already started", spec.ceremony_id)));
            }
            if map.len() >= MAX_CEREMONIES {
                return Err(Status::resource_exhausted("too many ceremonies in progress"));
            }
        }
        let ceremony_id = spec.ceremony_id.clone();
        let (state, msg) = dkg::start(spec, &node.id, &node.identity, &mut rand::thread_rng())
            .map_err(|e| refuse(node, "dkg-start", e))?;
        info!(node = %node.id, ceremony = %ceremony_id, group = %state.spec().group, "DKG part 1 done");
        node.put_ceremony(ceremony_id, Step::Round1(state))?;
        Ok(Response::new(msg.into()))
    }

    async fn dkg_echo(&self, request: Request<pb::DkgEchoRequest>) -> Result<Response<pb::DkgEchoMessage>, Status> {
        let node = &self.node;
        let req = request.into_inner();
        let set: Vec<dkg::SignedRound1> = req.round1.iter().map(TryInto::try_into).collect::<Result<_, _>>()?;
        let Step::Round1(state) = node.take_ceremony(&req.ceremony_id)? else {
            return Err(Status::failed_precondition("ceremony is not waiting for the round-1 set; aborted"));
        };
        let (next, echo) = state
            .receive_round1(&set, &node.directory, &node.identity)
            .map_err(|e| refuse(node, "dkg-echo", e))?;
        node.put_ceremony(req.ceremony_id, Step::Echoes(next))?;
        Ok(Response::new(echo.into()))
    }

    async fn dkg_round2(&self, request: Request<pb::DkgRound2Request>) -> Result<Response<pb::DkgRound2Response>, Status> {
        let node = &self.node;
        let req = request.into_inner();
        let echoes: Vec<dkg::Echo> = req.echoes.iter().map(TryInto::try_into).collect::<Result<_, _>>()?;
        let Step::Echoes(state) = node.take_ceremony(&req.ceremony_id)? else {
            return Err(Status::failed_precondition("ceremony is not waiting for echoes; aborted"));
        };
        let (next, shares) = state
            .receive_echoes(&echoes, &node.directory, &node.identity, &mut rand::thread_rng())
            .map_err(|e| refuse(node, "dkg-round2", e))?;
        node.put_ceremony(req.ceremony_id, Step::Round2(next))?;
        Ok(Response::new(pb::DkgRound2Response {
            shares: shares.into_iter().map(Into::into).collect(),
        }))
    }

    async fn dkg_finish(&self, request: Request<pb::DkgFinishRequest>) -> Result<Response<pb::DkgKeyReport>, Status> {
        let node = &self.node;
        let req = request.into_inner();
        let shares: Vec<dkg::SealedRound2> = req.shares.iter().map(TryInto::try_into).collect::<Result<_, _>>()?;
        let Step::Round2(state) = node.take_ceremony(&req.ceremony_id)? else {
            return Err(Status::failed_precondition("ceremony is not waiting for round-2 shares; aborted"));
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
        let record = GroupRecord {
            v: 1,
            name: spec.group.clone(),
            tier: spec.tier,
            threshold: spec.threshold,
            members: spec.members.clone(),
            ceremony_id: spec.ceremony_id.clone(),
            sealed_key_package: node
                .sealer
                .seal(&group_ctx(node, &spec.group), &key_bytes)
                .map_err(NodeError::from)?,
            public_key_package: out.report.public_key_package.clone(),
            group_public_key: out.report.group_public_key.clone(),
            active: false,
        };
        node.store.insert_group(&record).await?;
        info!(node = %node.id, group = %spec.group, group_key = %hex::encode(&record.group_public_key), "DKG complete; key share sealed; group pending activation");
        Ok(Response::new(out.report.into()))
    }

    async fn activate_group(&self, request: Request<pb::ActivateGroupRequest>) -> Result<Response<pb::ActivateGroupResponse>, Status> {
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
            .map_err(|_| refuse(node, "activate", CoreError::refused("test signature does not verify under the group key")))?;
        node.store.activate_group(&name).await?;
        info!(node = %node.id, group = %name, "key group active");
        Ok(Response::new(pb::ActivateGroupResponse {}))
    }

    async fn commit(&self, request: Request<pb::CommitRequest>) -> Result<Response<pb::CommitResponse>, Status> {
        let node = &self.node;
        let name = group_name("key_group", &request.get_ref().key_group)?;
        let record = node.group_record(&name)?;
        let key_package = node.key_package(&record)?;
        let (nonces, commitments) = round1::commit(key_package.signing_share(), &mut rand::thread_rng());
        let commitments = commitments
            .serialize()
            .map_err(|e| Status::internal(format!("serialize commitments: {e}")))?;
        let handle = node
            .nonces
            .lock()
            .map_err(|_| Status::internal("nonce pool lock poisoned"))?
            .insert(name, nonces, Instant::now())
            .ok_or_else(|| Status::resource_exhausted("nonce pool full; retry later"))?;
        let identifier = node.identifier_in(&record)?;
        Ok(Response::new(pb::CommitResponse {
            nonce_handle: handle.to_vec(),
            commitments,
            identifier,
        }))
    }

    async fn sign(&self, request: Request<pb::SignRequest>) -> Result<Response<pb::SignResponse>, Status> {
        let node = &self.node;
        let req = request.into_inner();
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
            return Err(refuse(node, "sign", CoreError::refused("nonce was committed for another key group")));
        }
        let record = node.group_record(&name)?;
        let package = SigningPackage::deserialize(&req.signing_package)
            .map_err(|e| Status::invalid_argument(format!("signing_package: {e}")))?;
        let target = match &req.target {
            Some(pb::sign_request::Target::Withdrawal(w)) => {
                let signed: SignedWithdrawal = w.try_into()?;
                let view = GroupView {
                    name: record.name.clone(),
                    tier: record.tier,
                    active: record.active,
                };
                let authorized = authorize_withdrawal(&signed, &view, &node.settings, unix_now())
                    .map_err(|e| refuse(node, "sign", e))?;
                SigningTarget::Withdrawal(authorized)
            }
            Some(pb::sign_request::Target::Activation(_)) => {
                let pkp = frost_secp256k1::keys::PublicKeyPackage::deserialize(&record.public_key_package)
                    .map_err(|e| Status::internal(format!("stored public key package unreadable: {e}")))?;
                SigningTarget::Activation(
                    ActivationTarget::for_pending_group(&name, &pkp, record.active).map_err(|e| refuse(node, "sign", e))?,
                )
            }
            None => return Err(Status::invalid_argument("target: missing")),
        };
        let key_package = node.key_package(&record)?;
        signing::check_package(&target, &package, &nonces, &key_package).map_err(|e| refuse(node, "sign", e))?;
        if let SigningTarget::Withdrawal(w) = &target {
            // Durable before the share exists, let alone leaves (N3, invariant 3).
            node.store
                .journal_share(&w.request().request_id, &w.digest(), &name, unix_now())
                .await
                .map_err(|e| {
                    warn!(node = %node.id, reason = %e, "refused");
                    Status::from(e)
                })?;
        }
        let share = signing::compute_share(&target, &package, nonces, &key_package).map_err(|e| refuse(node, "sign", e))?;
        match &target {
            SigningTarget::Withdrawal(w) => info!(node = %node.id, request = %w.request().request_id, digest = %w.digest().to_hex(), "signature share released"),
            SigningTarget::Activation(_) => info!(node = %node.id, group = %name, "activation test share released"),
        }
        Ok(Response::new(pb::SignResponse {
            signature_share: share.serialize(),
            identifier: node.identifier_in(&record)?,
        }))
    }
}
