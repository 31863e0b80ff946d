//! The `Custody` (custody role) and `Ceremony` (operator role) gRPC services.

use std::sync::Arc;
use std::time::{Duration, Instant};

use permafrost_core::authz::{decode_request, verify_custody, CheckSettings, SignedWithdrawal};
use permafrost_core::policy::{evaluate, Approval, LedgerView, Spend, Verdict};
use permafrost_core::{unix_now, RequestId};
use permafrost_proto::convert::{status_from_core, tier_to_wire};
use permafrost_proto::{self as pb, ceremony_server::Ceremony, custody_server::Custody};
use prost::Message;
use tonic::{Request, Response, Status};

use crate::metrics::{CeremonyKind, Refusal};
use crate::store::{ApprovalRecord, GroupRecord, Reason, RequestRecord, RequestState};
use crate::{driver, Coordinator, CoordinatorError};

impl From<CoordinatorError> for Status {
    fn from(e: CoordinatorError) -> Status {
        e.to_status()
    }
}

/// Metadata key naming the policy rule of a submission refused at once.
pub const POLICY_RULE_METADATA: &str = "permafrost-policy-rule";

/// Retry hint for a submission refused by admission control.
pub(crate) const ADMISSION_RETRY: Duration = Duration::from_millis(200);

/// Hex from the store; a record that is not hex is corrupt, never read as empty.
fn stored_hex(what: &str, text: &str) -> Result<Vec<u8>, Status> {
    hex::decode(text).map_err(|e| {
        CoordinatorError::Storage(format!("stored {what} is not hex: {e}")).to_status()
    })
}

fn to_wire_status(
    id: &RequestId,
    r: &RequestRecord,
    group_key: Vec<u8>,
    message: Vec<u8>,
    verdict: Option<Verdict>,
) -> Result<pb::WithdrawalStatus, Status> {
    let (approvals_missing, time_locked_until, rejected) = match verdict {
        Some(Verdict::Waiting {
            approvals_missing,
            time_locked_until,
            rejected_approvals,
        }) => (
            approvals_missing,
            time_locked_until.unwrap_or(0),
            rejected_approvals,
        ),
        _ => (0, 0, Vec::new()),
    };
    let state = match r.state {
        RequestState::Pending => pb::WithdrawalState::Pending,
        RequestState::Signed => pb::WithdrawalState::Signed,
        RequestState::Failed => pb::WithdrawalState::Failed,
    };
    Ok(pb::WithdrawalStatus {
        request_id: id.to_string(),
        state: state as i32,
        digest: stored_hex("request digest", &r.digest)?,
        message,
        signature: r.signature.clone(),
        signers: r.signers.iter().map(|s| s.to_string()).collect(),
        group_public_key: group_key,
        detail: r.detail.clone(),
        attempts: r.attempts,
        culprits: r.culprits.iter().map(|c| c.to_string()).collect(),
        approvals: r
            .approvals
            .iter()
            .filter(|a| {
                !rejected
                    .iter()
                    .any(|why| why.starts_with(&format!("{}:", a.approver_id)))
            })
            .map(|a| a.approver_id.clone())
            .collect(),
        approvals_missing,
        time_locked_until,
        reason: reason_to_wire(r.reason) as i32,
        policy_rule: r
            .policy_rule
            .map(permafrost_proto::convert::policy_rule_to_wire)
            .unwrap_or(0),
        tx: r.tx.clone(),
        txid: r.txid.clone(),
        input_signatures: r.input_signatures.clone(),
        output_key: Vec::new(),
        limits: String::new(),
    })
}

fn reason_to_wire(reason: Reason) -> pb::WithdrawalReason {
    use pb::WithdrawalReason as W;
    match reason {
        Reason::Accepted => W::Accepted,
        Reason::Signing => W::Signing,
        Reason::WaitingForApprovals => W::WaitingForApprovals,
        Reason::TimeLocked => W::TimeLocked,
        Reason::BelowThreshold => W::BelowThreshold,
        Reason::Signed => W::Signed,
        Reason::RefusedByPolicy => W::RefusedByPolicy,
        Reason::RefusedBySigners => W::RefusedBySigners,
        Reason::Expired => W::Expired,
        Reason::Failed => W::Failed,
    }
}

fn group_to_wire(coord: &Coordinator, g: &GroupRecord) -> pb::KeyGroup {
    let (scheme, network) = coord.scheme_of(&g.name);
    let output = coord.group_view(g).ok().and_then(|v| v.taproot);
    pb::KeyGroup {
        name: g.name.to_string(),
        tier: tier_to_wire(g.tier),
        threshold: u32::from(g.threshold),
        members: g.members.iter().map(|m| m.to_string()).collect(),
        removed: g.removed.iter().map(|m| m.to_string()).collect(),
        group_public_key: g.group_public_key.clone(),
        active: g.active,
        scheme: scheme.to_string(),
        network: network.map(|n| n.to_string()).unwrap_or_default(),
        output_key: output
            .as_ref()
            .map(|o| o.output_key().to_vec())
            .unwrap_or_default(),
        address: output.map(|o| o.address().to_string()).unwrap_or_default(),
        epoch: g.epoch,
        registry_seq: g.registry_seq,
        // Never changed: the config's registry, which the nodes hold too
        // when their configs agree (each approver checks on their own node).
        registry_hash: match &g.registry {
            Some(r) => r.build().ok().map(|r| r.hash().to_vec()),
            None => coord.registry.as_ref().map(|r| r.hash().to_vec()),
        }
        .unwrap_or_default(),
    }
}

impl Coordinator {
    /// An exclusion is the coordinator's own state, so the coordinator itself
    /// checks the operator quorum of clearing it: a spec of this group at the
    /// epoch and key the coordinator holds, naming this member, proposed
    /// after the exclusion was recorded (so it cannot clear a later one).
    fn clear_exclusion_approved(
        &self,
        req: &pb::ClearExclusionRequest,
        group: &permafrost_core::GroupName,
        node: &permafrost_core::NodeId,
    ) -> Result<permafrost_core::ceremony::QuorumApproved, Status> {
        use permafrost_core::ceremony::{verify_quorum, Operation};
        let signed = permafrost_proto::convert::ceremony::required_authorization(
            req.authorization.as_ref(),
        )?;
        // The group's registry when a change-registry ceremony installed one.
        let registry = crate::ceremony::registry_in_force(self, group)?.ok_or_else(|| {
            Status::failed_precondition(
                "this coordinator has no [operators] registry in its config; clearing an exclusion needs an operator quorum it can check",
            )
        })?;
        let approved =
            verify_quorum(&signed, &registry, unix_now(), 300).map_err(|e| status_from_core(&e))?;
        let spec = approved.spec();
        let refused = |why: String| Err(Status::permission_denied(format!("refused: {why}")));
        if spec.operation != Operation::ClearExclusion
            || spec.group != *group
            || spec.subject.as_ref() != Some(node)
        {
            return refused(format!(
                "the operators approved a {} of {} for {}, not clearing {node}'s exclusion from {group}",
                spec.operation,
                spec.group,
                spec.subject.as_ref().map(|s| s.as_str()).unwrap_or("nobody")
            ));
        }
        let record = self
            .store
            .group(group)?
            .ok_or_else(|| Status::not_found(format!("unknown key group {group}")))?;
        if spec.epoch != record.epoch
            || spec.group_key.as_deref() != Some(record.group_public_key.as_slice())
            || spec.members != record.active_members()
        {
            return refused(format!(
                "the spec is for epoch {} of {group}; the coordinator holds epoch {} with other members or key",
                spec.epoch, record.epoch
            ));
        }
        let excluded_at = self
            .store
            .exclusions()?
            .into_iter()
            .find(|e| e.group == *group && e.node == *node)
            .map(|e| e.at);
        if let Some(at) = excluded_at {
            if spec.created_at < at {
                return refused(format!(
                    "{node} was excluded at {at}, after the spec was proposed ({})",
                    spec.created_at
                ));
            }
        }
        Ok(approved)
    }

    fn exclusion_list(&self) -> Result<pb::ExclusionList, Status> {
        Ok(pb::ExclusionList {
            exclusions: self
                .store
                .exclusions()?
                .into_iter()
                .map(|e| {
                    Ok(pb::Exclusion {
                        signature_share: stored_hex("exclusion share", &e.share)?,
                        signing_package: stored_hex(
                            "exclusion signing package",
                            &e.signing_package,
                        )?,
                        group: e.group.to_string(),
                        node_id: e.node.to_string(),
                        request_id: e.request_id,
                        at: e.at,
                    })
                })
                .collect::<Result<_, Status>>()?,
        })
    }

    /// Waits (bounded) for a request's driver to finish, then reports its status.
    /// Returns at once when the request waits for people (approvals) or for a
    /// time-lock longer than the wait.
    async fn wait_for(self: &Arc<Self>, id: &RequestId) -> Result<pb::WithdrawalStatus, Status> {
        let mut done = driver::ensure_driver(self, id);
        let wait = Duration::from_millis(self.config.submit_wait_ms);
        let status = self.status_of(id)?;
        let locked_beyond_wait = status.time_locked_until > unix_now() + wait.as_secs();
        if status.state() == pb::WithdrawalState::Pending
            && (status.approvals_missing > 0 || locked_beyond_wait)
        {
            return Ok(status);
        }
        // Answer early, rather than hang, when too few members are reachable;
        // the driver keeps going and signs once enough return (if still valid).
        let deadline = tokio::time::Instant::now() + wait;
        while tokio::time::Instant::now() < deadline {
            let slice = Duration::from_millis(200).min(deadline - tokio::time::Instant::now());
            if tokio::time::timeout(slice, done.wait_for(|finished| *finished))
                .await
                .is_ok()
            {
                break;
            }
            let status = self.status_of(id)?;
            if status.state() == pb::WithdrawalState::Pending
                && status.reason() == pb::WithdrawalReason::BelowThreshold
            {
                return Ok(status);
            }
        }
        self.status_of(id)
    }

    fn status_of(&self, id: &RequestId) -> Result<pb::WithdrawalStatus, Status> {
        let record = self
            .store
            .request(id)?
            .ok_or_else(|| Status::not_found(format!("no withdrawal with request id {id}")))?;
        let wire = pb::SignedWithdrawal::decode(record.signed.as_slice())
            .map_err(|e| Status::internal(e.to_string()))?;
        let signed: SignedWithdrawal = (&wire).try_into()?;
        let group = self.store.group(&signed.request.key_group)?;
        let output_key = group
            .as_ref()
            .and_then(|g| self.group_view(g).ok())
            .and_then(|v| v.taproot)
            .map(|o| o.output_key().to_vec())
            .unwrap_or_default();
        let group_key = group.map(|g| g.group_public_key).unwrap_or_default();
        let spend = self.spend_of(&signed);
        let verdict =
            (record.state == RequestState::Pending).then(|| self.verdict(&signed, &record, &spend));
        let limits = permafrost_core::policy::binding_limits(&self.policy, &signed.request, &spend)
            .unwrap_or_default();
        let mut status = to_wire_status(id, &record, group_key, signed.request.payload, verdict)?;
        status.output_key = output_key;
        status.limits = limits;
        Ok(status)
    }

    /// What the request takes out of its group, read as the nodes read it.
    fn spend_of(&self, signed: &SignedWithdrawal) -> Spend {
        self.store
            .group(&signed.request.key_group)
            .ok()
            .flatten()
            .and_then(|g| self.group_view(&g).ok())
            .and_then(|view| decode_request(&signed.request, &view).ok())
            .map(|d| d.spend)
            .unwrap_or_else(|| Spend::of_labels(&signed.request))
    }

    fn verdict(&self, signed: &SignedWithdrawal, record: &RequestRecord, spend: &Spend) -> Verdict {
        // An approval whose stored signature is unreadable counts for nothing (fail closed).
        let approvals: Vec<Approval> = record
            .approvals
            .iter()
            .filter_map(|a| a.to_core().ok())
            .collect();
        let ledger = LedgerView {
            spent_24h: 0,
            first_seen: Some(record.accepted_at),
        };
        evaluate(
            &self.policy,
            &signed.request,
            spend,
            &signed.request.digest(),
            &approvals,
            ledger,
            unix_now(),
        )
    }
}

/// Custody API: submit and query withdrawals.
pub struct CustodyService {
    pub(crate) coord: Arc<Coordinator>,
}

#[tonic::async_trait]
impl Custody for CustodyService {
    async fn submit_withdrawal(
        &self,
        request: Request<pb::SignedWithdrawal>,
    ) -> Result<Response<pb::WithdrawalStatus>, Status> {
        let coord = &self.coord;
        let started = std::time::Instant::now();
        let wire = request.into_inner();
        let signed: SignedWithdrawal = (&wire).try_into()?;
        let id = signed.request.request_id.clone();
        let digest = signed.request.digest().to_hex();
        if let Some(existing) = coord.store.request(&id)? {
            if existing.digest != digest {
                coord.metrics.refused(Refusal::RequestIdReused);
                return Err(Status::already_exists(format!(
                    "request id {id} is already used by a different request; a request id names one withdrawal forever"
                )));
            }
            if existing.state == RequestState::Pending {
                driver::ensure_driver(coord, &id);
            }
            return Ok(Response::new(coord.status_of(&id)?));
        }
        // Admission control: past the cap a new request is refused as busy (and
        // nothing is stored), rather than queued behind work it would only slow down.
        let inflight = coord.inflight.lock().map(|m| m.len()).unwrap_or(usize::MAX);
        if inflight >= coord.config.max_inflight_requests {
            return Err(CoordinatorError::Busy(format!(
                "{inflight} withdrawals in flight (max_inflight_requests)"
            ))
            .into());
        }
        // Fail fast with the same check every node runs; the nodes still decide for themselves.
        let group = coord
            .store
            .group(&signed.request.key_group)?
            .ok_or_else(|| {
                Status::not_found(format!("unknown key group {}", signed.request.key_group))
            })?;
        let view = coord.group_view(&group).map_err(Status::internal)?;
        let settings = CheckSettings {
            custody_keys: coord.custody_keys.clone(),
            max_clock_skew_secs: 300,
            max_lifetime_secs: u64::MAX,
        };
        let now = unix_now();
        let checked = verify_custody(&signed, &view, &settings, now).map_err(|e| {
            coord.metrics.refused(Refusal::Custody);
            status_from_core(&e)
        })?;
        let ledger = LedgerView {
            spent_24h: 0,
            first_seen: Some(now),
        };
        if let Verdict::Denied(denial) = evaluate(
            &coord.policy,
            &signed.request,
            checked.spend(),
            &signed.request.digest(),
            &[],
            ledger,
            now,
        ) {
            coord.metrics.refused(Refusal::Policy(denial.rule));
            let mut status = Status::permission_denied(format!("refused: policy: {denial}"));
            // The rule, for clients that act on it (never parse the message).
            if let Ok(rule) = denial.rule.name().parse() {
                status.metadata_mut().insert(POLICY_RULE_METADATA, rule);
            }
            return Err(status);
        }
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
            approvals: Vec::new(),
            accepted_at: now,
            reason: Reason::Accepted,
            policy_rule: None,
            input_signatures: Vec::new(),
            tx: String::new(),
            txid: String::new(),
        };
        coord.metrics.step("coord_submit_checks", started.elapsed());
        // Recorded before it is stored: no stored request without its audit
        // record. Both are written now and made durable together (the
        // store's durable commit fsyncs the audit log first) while the
        // signing rounds run; the client hears nothing before they are.
        let step = std::time::Instant::now();
        coord.audit.append_deferred(
            "withdrawal_submitted",
            serde_json::json!({"request": id.as_str(), "digest": record.digest, "group": signed.request.key_group.as_str(), "asset": signed.request.asset, "amount": checked.spend().amount.to_string(), "destinations": checked.spend().destinations, "psbt": signed.request.psbt.is_some()}),
        )
        .map_err(crate::audit_failed)?;
        coord.metrics.step("coord_submit_audit", step.elapsed());
        let step = std::time::Instant::now();
        let inserted = coord.store.insert_request(&id, &record).await;
        coord.metrics.step("coord_submit_store", step.elapsed());
        let (raced, durable) = inserted?;
        let answer = match raced {
            None => {
                coord.metrics.accepted();
                coord.wait_for(&id).await
            }
            Some(raced) if raced.digest != record.digest => {
                coord.metrics.refused(Refusal::RequestIdReused);
                Err(Status::already_exists(format!(
                    "request id {id} is already used by a different request"
                )))
            }
            Some(_) => coord.wait_for(&id).await,
        };
        // Whatever the answer, what it reports is durable first (usually
        // already: the signed result's own commit was durable).
        let step = std::time::Instant::now();
        durable.wait().await.map_err(|e| {
            Status::unavailable(format!(
                "request {id} could not be stored durably ({e}); submit it again"
            ))
        })?;
        coord.metrics.step("coord_submit_durable", step.elapsed());
        Ok(Response::new(answer?))
    }

    async fn submit_approval(
        &self,
        request: Request<pb::Approval>,
    ) -> Result<Response<pb::WithdrawalStatus>, Status> {
        let coord = &self.coord;
        let wire = request.into_inner();
        let id = RequestId::new(wire.request_id.clone())
            .map_err(|e| Status::invalid_argument(format!("request_id: {e}")))?;
        let approval: Approval = (&wire).try_into()?;
        let record = coord
            .store
            .request(&id)?
            .ok_or_else(|| Status::not_found(format!("no withdrawal with request id {id}")))?;
        if record.state != RequestState::Pending {
            return Err(Status::failed_precondition(format!(
                "request {id} is no longer pending"
            )));
        }
        let signed_wire = pb::SignedWithdrawal::decode(record.signed.as_slice())
            .map_err(|e| Status::internal(e.to_string()))?;
        let signed: SignedWithdrawal = (&signed_wire).try_into()?;
        // Check this approval alone, so the approver hears at once why it does not count.
        let mut probe = record.clone();
        probe.approvals = vec![ApprovalRecord {
            approver_id: approval.approver_id.clone(),
            expires_at: approval.expires_at,
            signature: hex::encode(&approval.signature),
        }];
        if let Verdict::Waiting {
            rejected_approvals, ..
        } = coord.verdict(&signed, &probe, &coord.spend_of(&signed))
        {
            if let Some(why) = rejected_approvals.first() {
                coord.metrics.approval(false);
                return Err(Status::permission_denied(format!(
                    "approval not counted: {why}"
                )));
            }
        }
        let added = probe.approvals.remove(0);
        coord
            .update_request(&id, |r| {
                r.approvals.retain(|a| a.approver_id != added.approver_id);
                r.approvals.push(added);
            })
            .await
            .map_err(Status::internal)?;
        coord.audit.append(
            "approval_added",
            serde_json::json!({"request": id.as_str(), "approver": approval.approver_id, "expires_at": approval.expires_at}),
        )
        .map_err(crate::audit_failed)?;
        coord.metrics.approval(true);
        coord.approvals_changed.notify_waiters();
        driver::ensure_driver(coord, &id);
        Ok(Response::new(coord.wait_for(&id).await?))
    }

    async fn get_withdrawal(
        &self,
        request: Request<pb::GetWithdrawalRequest>,
    ) -> Result<Response<pb::WithdrawalStatus>, Status> {
        let id = RequestId::new(request.into_inner().request_id)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok(Response::new(self.coord.status_of(&id)?))
    }
}

/// Ceremony API: key groups and cluster status.
pub struct CeremonyService {
    pub(crate) coord: Arc<Coordinator>,
}

#[tonic::async_trait]
impl Ceremony for CeremonyService {
    async fn create_key_group(
        &self,
        request: Request<pb::CreateKeyGroupRequest>,
    ) -> Result<Response<pb::KeyGroup>, Status> {
        let started = Instant::now();
        let result = crate::ceremony::create_key_group(&self.coord, request.into_inner()).await;
        self.coord
            .metrics
            .ceremony(CeremonyKind::Dkg, started.elapsed(), result.is_ok());
        let record = result?;
        Ok(Response::new(group_to_wire(&self.coord, &record)))
    }

    async fn refresh_key_group(
        &self,
        request: Request<pb::RefreshKeyGroupRequest>,
    ) -> Result<Response<pb::KeyGroup>, Status> {
        let started = Instant::now();
        let result = crate::ceremony::refresh_key_group(&self.coord, request.into_inner()).await;
        self.coord
            .metrics
            .ceremony(CeremonyKind::Refresh, started.elapsed(), result.is_ok());
        let record = result?;
        Ok(Response::new(group_to_wire(&self.coord, &record)))
    }

    async fn remove_member(
        &self,
        request: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::KeyGroup>, Status> {
        let started = Instant::now();
        let result = crate::ceremony::remove_member(&self.coord, request.into_inner()).await;
        self.coord
            .metrics
            .ceremony(CeremonyKind::Refresh, started.elapsed(), result.is_ok());
        let record = result?;
        Ok(Response::new(group_to_wire(&self.coord, &record)))
    }

    async fn repair_key_group(
        &self,
        request: Request<pb::RepairKeyGroupRequest>,
    ) -> Result<Response<pb::KeyGroup>, Status> {
        let started = Instant::now();
        let result = crate::ceremony::repair_key_group(&self.coord, request.into_inner()).await;
        self.coord
            .metrics
            .ceremony(CeremonyKind::Repair, started.elapsed(), result.is_ok());
        let record = result?;
        Ok(Response::new(group_to_wire(&self.coord, &record)))
    }

    async fn adopt_key_group(
        &self,
        request: Request<pb::AdoptKeyGroupRequest>,
    ) -> Result<Response<pb::KeyGroup>, Status> {
        let started = Instant::now();
        let result =
            crate::ceremony::adopt_key_group(&self.coord, &request.into_inner().name).await;
        self.coord
            .metrics
            .ceremony(CeremonyKind::Adopt, started.elapsed(), result.is_ok());
        let record = result?;
        Ok(Response::new(group_to_wire(&self.coord, &record)))
    }

    async fn change_registry(
        &self,
        request: Request<pb::ChangeRegistryRequest>,
    ) -> Result<Response<pb::KeyGroup>, Status> {
        let record = crate::ceremony::change_registry(&self.coord, request.into_inner()).await?;
        Ok(Response::new(group_to_wire(&self.coord, &record)))
    }

    async fn retire_key_group(
        &self,
        request: Request<pb::RetireKeyGroupRequest>,
    ) -> Result<Response<pb::KeyGroup>, Status> {
        let record = crate::ceremony::retire_key_group(&self.coord, request.into_inner()).await?;
        Ok(Response::new(group_to_wire(&self.coord, &record)))
    }

    async fn recover_key_group(
        &self,
        request: Request<pb::RecoverKeyGroupRequest>,
    ) -> Result<Response<pb::RecoverKeyGroupResponse>, Status> {
        let name = permafrost_proto::convert::group_name("name", &request.into_inner().name)?;
        let recovered =
            crate::recovery::recover(&self.coord, &name, crate::recovery::Assemble::Yes).await?;
        let list = |ids: &[permafrost_core::NodeId]| ids.iter().map(|i| i.to_string()).collect();
        Ok(Response::new(pb::RecoverKeyGroupResponse {
            group: Some(group_to_wire(&self.coord, &recovered.record)),
            committed: list(&recovered.committed),
            behind: list(&recovered.behind),
        }))
    }

    async fn abort_refresh(
        &self,
        request: Request<pb::AbortRefreshRequest>,
    ) -> Result<Response<pb::AbortRefreshResponse>, Status> {
        let req = request.into_inner();
        let name = permafrost_proto::convert::group_name("name", &req.name)?;
        let ceremony = Some(req.ceremony_id.as_str()).filter(|c| !c.is_empty());
        let aborted = crate::recovery::abort_refresh(&self.coord, &name, ceremony).await?;
        Ok(Response::new(aborted.into()))
    }

    async fn list_exclusions(
        &self,
        _request: Request<pb::ListExclusionsRequest>,
    ) -> Result<Response<pb::ExclusionList>, Status> {
        Ok(Response::new(self.coord.exclusion_list()?))
    }

    async fn clear_exclusion(
        &self,
        request: Request<pb::ClearExclusionRequest>,
    ) -> Result<Response<pb::ExclusionList>, Status> {
        let operator = permafrost_proto::auth::principal(&request)?.id;
        let req = request.into_inner();
        let group = permafrost_proto::convert::group_name("group", &req.group)?;
        let node = permafrost_proto::convert::node_id("node_id", &req.node_id)?;
        let approved = self.coord.clear_exclusion_approved(&req, &group, &node)?;
        if !self.coord.store.clear_exclusion(&group, &node).await? {
            return Err(Status::not_found(format!(
                "{node} is not excluded from {group}"
            )));
        }
        self.coord.audit.append(
            "exclusion_cleared",
            serde_json::json!({"group": group.as_str(), "node": node.as_str(), "operator": operator, "spec_digest": approved.digest().to_hex(), "operators": approved.operators()}),
        )
        .map_err(crate::audit_failed)?;
        Ok(Response::new(self.coord.exclusion_list()?))
    }

    async fn list_key_groups(
        &self,
        _request: Request<pb::ListKeyGroupsRequest>,
    ) -> Result<Response<pb::KeyGroupList>, Status> {
        Ok(Response::new(pb::KeyGroupList {
            key_groups: self
                .coord
                .store
                .groups()?
                .iter()
                .map(|g| group_to_wire(&self.coord, g))
                .collect(),
        }))
    }

    async fn get_cluster_status(
        &self,
        _request: Request<pb::ClusterStatusRequest>,
    ) -> Result<Response<pb::ClusterStatus>, Status> {
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
        let health = coord.health();
        let stats = coord.store.inner().stats();
        Ok(Response::new(pb::ClusterStatus {
            coordinator_id: coord.config.id.clone(),
            nodes,
            healthy: health.is_ok(),
            unhealthy_reason: health.err().unwrap_or_default(),
            store: Some(pb::StoreCounters {
                commits: stats.commits,
                steps: stats.steps,
                max_batch: stats.max_batch,
                failed_commits: stats.failed_commits,
                refused_busy: stats.refused_busy,
            }),
        }))
    }
}
