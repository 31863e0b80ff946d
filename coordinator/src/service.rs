//! The `Custody` (custody role) and `Ceremony` (operator role) gRPC services.

use std::sync::Arc;
use std::time::Duration;

use permafrost_core::authz::{authorize_withdrawal, CheckSettings, GroupView, SignedWithdrawal};
use permafrost_core::{unix_now, RequestId};
use permafrost_proto::convert::{status_from_core, tier_to_wire};
use permafrost_proto::{self as pb, ceremony_server::Ceremony, custody_server::Custody};
use prost::Message;
use tonic::{Request, Response, Status};

use crate::store::{GroupRecord, RequestRecord, RequestState};
use crate::{driver, Coordinator, CoordinatorError};

impl From<CoordinatorError> for Status {
    fn from(e: CoordinatorError) -> Status {
        Status::internal(e.to_string())
    }
}

fn to_wire_status(id: &RequestId, r: &RequestRecord, group_key: Vec<u8>, message: Vec<u8>) -> pb::WithdrawalStatus {
    let state = match r.state {
        RequestState::Pending => pb::WithdrawalState::Pending,
        RequestState::Signed => pb::WithdrawalState::Signed,
        RequestState::Failed => pb::WithdrawalState::Failed,
    };
    pb::WithdrawalStatus {
        request_id: id.to_string(),
        state: state as i32,
        digest: hex::decode(&r.digest).unwrap_or_default(),
        message,
        signature: r.signature.clone(),
        signers: r.signers.iter().map(|s| s.to_string()).collect(),
        group_public_key: group_key,
        detail: r.detail.clone(),
        attempts: r.attempts,
        culprits: r.culprits.iter().map(|c| c.to_string()).collect(),
    }
}

fn group_to_wire(g: &GroupRecord) -> pb::KeyGroup {
    pb::KeyGroup {
        name: g.name.to_string(),
        tier: tier_to_wire(g.tier),
        threshold: u32::from(g.threshold),
        members: g.members.iter().map(|m| m.to_string()).collect(),
        group_public_key: g.group_public_key.clone(),
        active: g.active,
    }
}

impl Coordinator {
    fn status_of(&self, id: &RequestId) -> Result<pb::WithdrawalStatus, Status> {
        let record = self
            .store
            .request(id)?
            .ok_or_else(|| Status::not_found(format!("no withdrawal with request id {id}")))?;
        let wire = pb::SignedWithdrawal::decode(record.signed.as_slice()).map_err(|e| Status::internal(e.to_string()))?;
        let request = wire.request.unwrap_or_default();
        let group_key = permafrost_core::GroupName::new(request.key_group.clone())
            .ok()
            .and_then(|g| self.store.group(&g).ok().flatten())
            .map(|g| g.group_public_key)
            .unwrap_or_default();
        Ok(to_wire_status(id, &record, group_key, request.payload))
    }
}

/// Custody API: submit and query withdrawals.
pub struct CustodyService {
    pub(crate) coord: Arc<Coordinator>,
}

#[tonic::async_trait]
impl Custody for CustodyService {
    async fn submit_withdrawal(&self, request: Request<pb::SignedWithdrawal>) -> Result<Response<pb::WithdrawalStatus>, Status> {
        let coord = &self.coord;
        let wire = request.into_inner();
        let signed: SignedWithdrawal = (&wire).try_into()?;
        let id = signed.request.request_id.clone();
        let digest = signed.request.digest().to_hex();
        if let Some(existing) = coord.store.request(&id)? {
            if existing.digest != digest {
                return Err(Status::already_exists(format!(
                    "request id {id} is already used by a different request; a request id names one withdrawal forever"
                )));
            }
            if existing.state == RequestState::Pending {
                driver::ensure_driver(coord, &id);
            }
            return Ok(Response::new(coord.status_of(&id)?));
        }
        // Fail fast with the same check every node runs; the nodes still decide for themselves.
        let group = coord
            .store
            .group(&signed.request.key_group)?
            .ok_or_else(|| Status::not_found(format!("unknown key group {}", signed.request.key_group)))?;
        let view = GroupView {
            name: group.name.clone(),
            tier: group.tier,
            active: group.active,
        };
        let settings = CheckSettings {
            custody_keys: coord.custody_keys.clone(),
            max_clock_skew_secs: 300,
            max_lifetime_secs: u64::MAX,
        };
        authorize_withdrawal(&signed, &view, &settings, unix_now()).map_err(|e| status_from_core(&e))?;
        let record = RequestRecord {
            v: 1,
            signed: wire.encode_to_vec(),
            digest,
            state: RequestState::Pending,
            signature: Vec::new(),
            signers: Vec::new(),
            detail: "accepted".into(),
            attempts: 0,
            culprits: Vec::new(),
        };
        if let Some(raced) = coord.store.insert_request(&id, &record).await? {
            if raced.digest != record.digest {
                return Err(Status::already_exists(format!("request id {id} is already used by a different request")));
            }
        }
        let mut done = driver::ensure_driver(coord, &id);
        let wait = Duration::from_millis(coord.config.submit_wait_ms);
        let _ = tokio::time::timeout(wait, done.wait_for(|finished| *finished)).await;
        Ok(Response::new(coord.status_of(&id)?))
    }

    async fn get_withdrawal(&self, request: Request<pb::GetWithdrawalRequest>) -> Result<Response<pb::WithdrawalStatus>, Status> {
        let id = RequestId::new(request.into_inner().request_id).map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok(Response::new(self.coord.status_of(&id)?))
    }
}

/// Ceremony API: key groups and cluster status.
pub struct CeremonyService {
    pub(crate) coord: Arc<Coordinator>,
}

#[tonic::async_trait]
impl Ceremony for CeremonyService {
    async fn create_key_group(&self, request: Request<pb::CreateKeyGroupRequest>) -> Result<Response<pb::KeyGroup>, Status> {
        let record = crate::ceremony::create_key_group(&self.coord, request.into_inner()).await?;
        Ok(Response::new(group_to_wire(&record)))
    }

    async fn list_key_groups(&self, _request: Request<pb::ListKeyGroupsRequest>) -> Result<Response<pb::KeyGroupList>, Status> {
        Ok(Response::new(pb::KeyGroupList {
            key_groups: self.coord.store.groups()?.iter().map(group_to_wire).collect(),
        }))
    }

    async fn get_cluster_status(&self, _request: Request<pb::ClusterStatusRequest>) -> Result<Response<pb::ClusterStatus>, Status> {
        let coord = &self.coord;
        let nodes = coord
            .members
            .iter()
            .map(|m| {
                let h = coord.members.health(&m.id);
                pb::MemberHealth {
                    node_id: m.id.to_string(),
                    region: m.region.clone(),
                    endpoint: m.endpoint.clone(),
                    reachable: h.reachable,
                    sealed: h.sealed,
                    last_error: h.last_error,
                }
            })
            .collect();
        Ok(Response::new(pb::ClusterStatus {
            coordinator_id: coord.config.id.clone(),
            nodes,
        }))
    }
}
