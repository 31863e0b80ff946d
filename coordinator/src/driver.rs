//! The session driver: picks signers, runs the two FROST rounds (RFC 9591 §5.1,
//! §5.2) with deadlines, aggregates with culprit detection (§5.3), and retries
//! on a fresh subset with fresh commitments after any failure (C1).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use frost_core::keys::PublicKeyPackage;
use frost_core::round1::SigningCommitments;
use frost_core::round2::SignatureShare;
use frost_core::{Ciphersuite, Identifier, SigningPackage};
use frost_secp256k1::Secp256K1Sha256;
use permafrost_core::authz::{decode_request, SignedWithdrawal};
use permafrost_core::policy::{evaluate, LedgerView, Verdict};
use permafrost_core::signing::{aggregate, taproot_public_key_package, AggregateError};
use permafrost_core::taproot::Scheme;
use permafrost_core::{unix_now, NodeId, RequestId};
use permafrost_proto as pb;
use prost::Message;
use tokio::sync::watch;
use tonic::Code;
use tracing::{info, warn};

use crate::store::{Exclusion, GroupRecord, Reason, RequestState};
use crate::Coordinator;

/// Longest wait for a round-1 commitment.
const ROUND1_DEADLINE: Duration = Duration::from_millis(2000);
/// Longest wait for a session slot on a signer before trying again.
const SLOT_WAIT: Duration = Duration::from_secs(10);

/// What the signers are asked to sign.
#[derive(Clone, Debug)]
pub enum Target {
    /// A custody-signed withdrawal with its approvals (each node re-checks both).
    Withdrawal(Box<pb::SignedWithdrawal>, Vec<pb::Approval>),
    /// The activation test of a new group.
    Activation,
}

/// Why one signing attempt failed.
#[derive(Debug)]
pub enum AttemptError {
    /// The node did not answer in time or the link failed; try others.
    Unreachable(NodeId, String),
    /// The node refused the request on its own checks.
    Refused(NodeId, String),
    /// The node is loaded and asked to be retried after the hint: not dead,
    /// not a refusal, never a reason to exclude it.
    Busy(NodeId, Duration),
    /// These nodes sent invalid shares; evidence attached.
    InvalidShares(Vec<Exclusion>),
    /// Anything else.
    Other(String),
}

fn classify(node: &NodeId, status: tonic::Status) -> AttemptError {
    if let Some(hint) = permafrost_proto::backpressure::retry_after(&status) {
        return AttemptError::Busy(node.clone(), hint);
    }
    let msg = format!("{}: {}", node, status.message());
    match status.code() {
        Code::PermissionDenied
        | Code::ResourceExhausted
        | Code::InvalidArgument
        | Code::NotFound
        | Code::AlreadyExists
        | Code::Aborted => AttemptError::Refused(node.clone(), msg),
        _ => AttemptError::Unreachable(node.clone(), format!("{} ({})", msg, status.code())),
    }
}

/// Picks `t` signers: healthy ones first, spread across regions, then by latency.
pub fn choose_signers(
    candidates: &[(NodeId, String, Option<Duration>)],
    t: usize,
) -> Option<Vec<NodeId>> {
    if candidates.len() < t {
        return None;
    }
    let mut sorted: Vec<_> = candidates.to_vec();
    sorted.sort_by_key(|(id, _, latency)| (latency.unwrap_or(Duration::MAX), id.clone()));
    let mut by_region: BTreeMap<&str, Vec<&NodeId>> = BTreeMap::new();
    let mut region_order = Vec::new();
    for (id, region, _) in &sorted {
        if !by_region.contains_key(region.as_str()) {
            region_order.push(region.as_str());
        }
        by_region.entry(region.as_str()).or_default().push(id);
    }
    let mut chosen = Vec::with_capacity(t);
    let mut round = 0;
    while chosen.len() < t {
        for region in &region_order {
            if let Some(id) = by_region[region].get(round) {
                if chosen.len() < t {
                    chosen.push((*id).clone());
                }
            }
        }
        round += 1;
    }
    Some(chosen)
}

fn identifier_of<C: Ciphersuite>(
    group: &GroupRecord,
    node: &NodeId,
) -> Result<Identifier<C>, AttemptError> {
    let index = group
        .members
        .iter()
        .position(|m| m == node)
        .ok_or_else(|| AttemptError::Other(format!("{node} is not a member of {}", group.name)))?;
    Identifier::<C>::try_from(index as u16 + 1).map_err(|e| AttemptError::Other(e.to_string()))
}

/// One signing attempt on exactly `signers` with fresh commitments: one FROST
/// session per message (a payload, or one sighash per transaction input), in
/// the suite of the group's scheme. Returns the serialized signatures, in
/// message order, each verified against the key the scheme signs under.
pub async fn attempt(
    coord: &Coordinator,
    group: &GroupRecord,
    signers: &[NodeId],
    messages: &[Vec<u8>],
    target: &Target,
) -> Result<Vec<Vec<u8>>, AttemptError> {
    let pkp = PublicKeyPackage::<Secp256K1Sha256>::deserialize(&group.public_key_package)
        .map_err(|e| AttemptError::Other(format!("stored public key package: {e}")))?;
    match coord.scheme_of(&group.name).0 {
        Scheme::Message => attempt_in(coord, group, signers, messages, target, &pkp).await,
        Scheme::Taproot => {
            let pkp =
                taproot_public_key_package(&pkp).map_err(|e| AttemptError::Other(e.to_string()))?;
            attempt_in(coord, group, signers, messages, target, &pkp).await
        }
    }
}

/// Group-wide velocity, the read after round 1's writes: attestations from
/// `n - t + 1` distinct members (the signers first, then other members when
/// `2t <= n`), each made over every signer's reservation receipt.
async fn attest(
    coord: &Coordinator,
    group: &GroupRecord,
    signers: &[NodeId],
    withdrawal: &pb::SignedWithdrawal,
    receipts: Vec<Vec<u8>>,
    deadline: Duration,
) -> Result<Vec<Vec<u8>>, AttemptError> {
    let needed = permafrost_core::velocity::attestations_needed(
        group.members.len(),
        usize::from(group.threshold),
    );
    let mut asked: Vec<&NodeId> = signers.iter().collect();
    if needed > asked.len() {
        asked.extend(group.members.iter().filter(|m| !signers.contains(m)));
    }
    let members = &coord.members;
    let calls = asked.iter().map(|id| {
        let req = pb::AttestRequest {
            key_group: group.name.to_string(),
            withdrawal: Some(withdrawal.clone()),
            receipts: receipts.clone(),
        };
        async move {
            let member = members
                .get(id)
                .ok_or_else(|| AttemptError::Other(format!("{id} is not in the manifest")))?;
            let mut client = member.client.clone();
            match tokio::time::timeout(deadline, client.attest(req)).await {
                Ok(Ok(resp)) => Ok(resp.into_inner().attestation),
                Ok(Err(status)) => Err(classify(id, status)),
                Err(_) => Err(AttemptError::Unreachable(
                    (*id).clone(),
                    format!("{id}: velocity attestation deadline exceeded"),
                )),
            }
        }
    });
    let mut out = Vec::new();
    let mut first_error = None;
    for (id, result) in asked.iter().zip(futures::future::join_all(calls).await) {
        match result {
            Ok(a) => out.push(a),
            // A signer that cannot attest cannot sign either: fail the attempt on it.
            Err(e) if signers.contains(id) => return Err(e),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if out.len() < needed {
        return Err(first_error.unwrap_or_else(|| {
            AttemptError::Other(format!(
                "{} velocity attestations, the group needs {needed}",
                out.len()
            ))
        }));
    }
    Ok(out)
}

/// One session's shares as received, by signer identifier: who sent them and the bytes (evidence).
type RawShares<C> = BTreeMap<Identifier<C>, (NodeId, Vec<u8>)>;

async fn attempt_in<C: Ciphersuite>(
    coord: &Coordinator,
    group: &GroupRecord,
    signers: &[NodeId],
    messages: &[Vec<u8>],
    target: &Target,
    pkp: &PublicKeyPackage<C>,
) -> Result<Vec<Vec<u8>>, AttemptError> {
    let sessions = messages.len();
    let members = &coord.members;
    // Wait for a slot on every signer first (in id order, so two sessions never
    // hold each other's slots): the round deadlines below count from here, so
    // time spent queueing behind other sessions never looks like a dead node.
    let mut ordered: Vec<&NodeId> = signers.iter().collect();
    ordered.sort();
    let mut _slots = Vec::with_capacity(ordered.len());
    for id in ordered {
        let member = members
            .get(id)
            .ok_or_else(|| AttemptError::Other(format!("{id} is not in the manifest")))?;
        match tokio::time::timeout(SLOT_WAIT, member.slots.clone().acquire_owned()).await {
            Ok(Ok(permit)) => _slots.push(permit),
            Ok(Err(_)) => return Err(AttemptError::Other("coordinator shutting down".into())),
            Err(_) => return Err(AttemptError::Busy(id.clone(), Duration::from_millis(50))),
        }
    }
    let deadline = coord.config.round_timeout();
    let t0 = Instant::now();
    // Round 1 is one cheap call: a member that cannot commit within this is
    // treated as unreachable, so "below threshold" is known within seconds.
    let commit_deadline = deadline.min(ROUND1_DEADLINE);
    // Round 1: commitments (and, for a withdrawal, each signer's velocity
    // reservation receipt).
    let withdrawal = match target {
        Target::Withdrawal(w, _) => Some((**w).clone()),
        Target::Activation => None,
    };
    let withdrawal = &withdrawal;
    let commits = signers.iter().map(|id| async move {
        let member = members
            .get(id)
            .ok_or_else(|| AttemptError::Other(format!("{id} is not in the manifest")))?;
        let mut client = member.client.clone();
        let started = Instant::now();
        let call = client.commit(pb::CommitRequest {
            key_group: group.name.to_string(),
            count: sessions as u32,
            withdrawal: withdrawal.clone(),
        });
        match tokio::time::timeout(commit_deadline, call).await {
            Ok(Ok(resp)) => {
                members.record(id, Ok(started.elapsed()), None);
                Ok((id.clone(), resp.into_inner()))
            }
            Ok(Err(status)) => Err(classify(id, status)),
            Err(_) => Err(AttemptError::Unreachable(
                id.clone(),
                format!("{id}: round 1 deadline exceeded"),
            )),
        }
    });
    let mut handles = BTreeMap::new();
    let mut receipts = Vec::new();
    let mut commitments: Vec<BTreeMap<Identifier<C>, SigningCommitments<C>>> =
        vec![BTreeMap::new(); sessions];
    let round1 = futures::future::join_all(commits).await;
    let t1 = Instant::now();
    for result in round1 {
        let (id, resp) = result?;
        let identifier = identifier_of::<C>(group, &id)?;
        let expected = group
            .members
            .iter()
            .position(|m| *m == id)
            .map(|i| i as u32 + 1);
        if expected != Some(resp.identifier) {
            return Err(AttemptError::Refused(
                id,
                "reported a wrong identifier".into(),
            ));
        }
        if resp.nonces.len() != sessions {
            return Err(AttemptError::Refused(
                id,
                format!("{} commitments for {sessions} sessions", resp.nonces.len()),
            ));
        }
        for (session, nonce) in resp.nonces.iter().enumerate() {
            let c = SigningCommitments::<C>::deserialize(&nonce.commitments).map_err(|e| {
                AttemptError::Refused(id.clone(), format!("malformed commitments: {e}"))
            })?;
            commitments[session].insert(identifier, c);
        }
        if withdrawal.is_some() {
            if resp.receipt.is_empty() {
                return Err(AttemptError::Refused(
                    id,
                    "sent no reservation receipt".into(),
                ));
            }
            receipts.push(resp.receipt);
        }
        handles.insert(
            id,
            resp.nonces
                .into_iter()
                .map(|n| n.handle)
                .collect::<Vec<_>>(),
        );
    }
    let packages: Vec<SigningPackage<C>> = commitments
        .into_iter()
        .zip(messages)
        .map(|(c, m)| SigningPackage::new(c, m))
        .collect();
    let package_bytes = packages
        .iter()
        .map(|p| p.serialize())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| AttemptError::Other(format!("serialize signing package: {e}")))?;
    let attestations = match withdrawal {
        Some(w) => attest(coord, group, signers, w, receipts, commit_deadline).await?,
        None => Vec::new(),
    };
    let (wire_target, approvals) = match target {
        Target::Withdrawal(w, a) => (
            pb::sign_request::Target::Withdrawal((**w).clone()),
            a.clone(),
        ),
        Target::Activation => (
            pb::sign_request::Target::Activation(pb::ActivationTest {}),
            Vec::new(),
        ),
    };
    // Round 2: shares.
    let signs = handles.iter().map(|(id, handles)| {
        let req = pb::SignRequest {
            key_group: group.name.to_string(),
            nonce_handles: handles.clone(),
            signing_packages: package_bytes.clone(),
            target: Some(wire_target.clone()),
            approvals: approvals.clone(),
            attestations: attestations.clone(),
        };
        async move {
            let member = members
                .get(id)
                .ok_or_else(|| AttemptError::Other(format!("{id} is not in the manifest")))?;
            let mut client = member.client.clone();
            match tokio::time::timeout(deadline, client.sign(req)).await {
                Ok(Ok(resp)) => Ok((id.clone(), resp.into_inner())),
                Ok(Err(status)) => Err(classify(id, status)),
                Err(_) => Err(AttemptError::Unreachable(
                    id.clone(),
                    format!("{id}: round 2 deadline exceeded"),
                )),
            }
        }
    });
    let mut shares: Vec<BTreeMap<Identifier<C>, SignatureShare<C>>> =
        vec![BTreeMap::new(); sessions];
    let mut raw_shares: Vec<RawShares<C>> = vec![BTreeMap::new(); sessions];
    let round2 = futures::future::join_all(signs).await;
    let t2 = Instant::now();
    for result in round2 {
        let (id, resp) = result?;
        let identifier = identifier_of::<C>(group, &id)?;
        if resp.signature_shares.len() != sessions {
            return Err(AttemptError::InvalidShares(vec![evidence(
                group,
                &id,
                &resp.signature_shares.concat(),
                &package_bytes.concat(),
                "",
            )]));
        }
        for (session, raw) in resp.signature_shares.into_iter().enumerate() {
            let share = SignatureShare::<C>::deserialize(&raw).map_err(|e| {
                warn!(node = %id, error = %e, "malformed signature share");
                AttemptError::InvalidShares(vec![evidence(
                    group,
                    &id,
                    &raw,
                    &package_bytes[session],
                    "",
                )])
            })?;
            raw_shares[session].insert(identifier, (id.clone(), raw));
            shares[session].insert(identifier, share);
        }
    }
    let mut signatures = Vec::with_capacity(sessions);
    for (session, package) in packages.iter().enumerate() {
        match aggregate(package, &shares[session], pkp) {
            Ok(sig) => signatures.push(
                sig.serialize()
                    .map_err(|e| AttemptError::Other(format!("serialize signature: {e}")))?,
            ),
            Err(AggregateError::InvalidShares(culprits)) => {
                return Err(AttemptError::InvalidShares(
                    culprits
                        .iter()
                        .filter_map(|c| raw_shares[session].get(c))
                        .map(|(id, share)| evidence(group, id, share, &package_bytes[session], ""))
                        .collect(),
                ))
            }
            Err(AggregateError::Other(e)) => return Err(AttemptError::Other(e)),
        }
    }
    // Where a signature's time goes (RUST_LOG=permafrost_coordinator=debug).
    tracing::debug!(
        sessions,
        round1_us = (t1 - t0).as_micros() as u64,
        round2_us = (t2 - t1).as_micros() as u64,
        aggregate_us = t2.elapsed().as_micros() as u64,
        "signing attempt timings"
    );
    Ok(signatures)
}

fn evidence(
    group: &GroupRecord,
    node: &NodeId,
    share: &[u8],
    package: &[u8],
    request_id: &str,
) -> Exclusion {
    Exclusion {
        v: 1,
        group: group.name.clone(),
        node: node.clone(),
        request_id: request_id.to_string(),
        share: hex::encode(share),
        signing_package: hex::encode(package),
        at: unix_now(),
    }
}

/// Runs attempts on fresh subsets until one signs, excluding culprits and
/// skipping unreachable or refusing members. Used for activation tests.
pub async fn sign_with_retries(
    coord: &Coordinator,
    group: &GroupRecord,
    message: &[u8],
    target: &Target,
    max_attempts: usize,
) -> Result<(Vec<u8>, Vec<NodeId>), String> {
    let messages = [message.to_vec()];
    let mut skip = BTreeSet::new();
    let mut errors = Vec::new();
    for _ in 0..max_attempts {
        let candidates: Vec<_> = group
            .members
            .iter()
            .filter(|m| !skip.contains(*m))
            .map(|m| (m.clone(), region_of(coord, m), None))
            .collect();
        let Some(signers) = choose_signers(&candidates, usize::from(group.threshold)) else {
            break;
        };
        match attempt(coord, group, &signers, &messages, target).await {
            Ok(mut sigs) => return Ok((sigs.remove(0), signers)),
            Err(AttemptError::InvalidShares(ev)) => {
                for e in ev {
                    errors.push(format!("{} sent an invalid share", e.node));
                    skip.insert(e.node);
                }
            }
            Err(AttemptError::Refused(n, e)) | Err(AttemptError::Unreachable(n, e)) => {
                errors.push(e);
                skip.insert(n);
            }
            Err(AttemptError::Busy(n, hint)) => {
                errors.push(format!("{n} busy"));
                tokio::time::sleep(hint).await;
            }
            Err(AttemptError::Other(e)) => errors.push(e),
        }
    }
    Err(errors.join("; "))
}

fn region_of(coord: &Coordinator, id: &NodeId) -> String {
    coord
        .members
        .get(id)
        .map(|m| m.region.clone())
        .unwrap_or_default()
}

/// Starts the driver task for `id` unless one is running; returns a receiver that turns `true` when it ends.
pub fn ensure_driver(coord: &Arc<Coordinator>, id: &RequestId) -> watch::Receiver<bool> {
    let Ok(mut inflight) = coord.inflight.lock() else {
        let (_, rx) = watch::channel(true);
        return rx;
    };
    if let Some(rx) = inflight.get(id) {
        return rx.clone();
    }
    let (tx, rx) = watch::channel(false);
    inflight.insert(id.clone(), rx.clone());
    let driver_coord = coord.clone();
    let id = id.clone();
    coord.spawn(async move {
        let coord = driver_coord;
        // Only a driver that saw the request pending reports how it ended.
        let was_pending =
            matches!(coord.store.request(&id), Ok(Some(r)) if r.state == RequestState::Pending);
        let mut signing_since = None;
        if let Err(e) = drive(&coord, &id, &mut signing_since).await {
            warn!(request = %id, error = %e, "driver stopped");
        }
        if let (true, Ok(Some(record))) = (was_pending, coord.store.request(&id)) {
            coord.metrics.driver_stopped(&record, signing_since);
        }
        if let Ok(mut inflight) = coord.inflight.lock() {
            inflight.remove(&id);
        }
        let _ = tx.send(true);
    });
    rx
}

/// Drives one request to SIGNED or FAILED; `signing_since` is set when the
/// first signing attempt starts.
async fn drive(
    coord: &Arc<Coordinator>,
    id: &RequestId,
    signing_since: &mut Option<Instant>,
) -> Result<(), String> {
    let record = coord
        .store
        .request(id)
        .map_err(|e| e.to_string())?
        .ok_or("request vanished")?;
    let wire = pb::SignedWithdrawal::decode(record.signed.as_slice()).map_err(|e| e.to_string())?;
    let signed: SignedWithdrawal = (&wire)
        .try_into()
        .map_err(|e: tonic::Status| e.message().to_string())?;
    let request = &signed.request;
    let digest = request.digest();
    // Best effort, in the background: a partitioned member must not delay signing.
    // Only a time-locked group needs it (it starts each node's own clock); for
    // the others it would be one more verification and commit per member.
    let time_locked = coord
        .policy
        .group(&request.key_group)
        .is_none_or(|g| g.time_lock_secs > 0);
    if time_locked {
        let announcer = coord.clone();
        let group = request.key_group.clone();
        let wire = wire.clone();
        coord.spawn(async move { announce(&announcer, &group, &wire).await });
    }
    let mut unreachable: BTreeSet<NodeId> = BTreeSet::new();
    let mut refusals: BTreeMap<NodeId, String> = BTreeMap::new();
    let mut other_failures = 0u32;
    let mut reprobed = false;
    loop {
        let record = coord
            .store
            .request(id)
            .map_err(|e| e.to_string())?
            .ok_or("request vanished")?;
        if record.state != RequestState::Pending {
            return Ok(());
        }
        let fail = |reason: Reason, why: String| {
            coord.update_request(id, move |r| {
                r.state = RequestState::Failed;
                r.reason = reason;
                r.detail = why;
            })
        };
        let Some(group) = coord
            .store
            .group(&request.key_group)
            .map_err(|e| e.to_string())?
        else {
            return fail(
                Reason::Failed,
                format!("unknown key group {}", request.key_group),
            )
            .await;
        };
        // The coordinator reads the request the way every node will (and the
        // nodes decide for themselves): what it spends, what each session signs.
        let decoded = match coord
            .group_view(&group)
            .and_then(|view| decode_request(request, &view).map_err(|e| e.to_string()))
        {
            Ok(d) => d,
            Err(e) => return fail(Reason::Failed, format!("refused: {e}")).await,
        };
        let now = unix_now();
        if now > request.expires_at {
            let why = if refusals.is_empty() {
                "expired before it could be signed".to_string()
            } else {
                format!(
                    "expired; refusals: {}",
                    refusals.values().cloned().collect::<Vec<_>>().join("; ")
                )
            };
            return fail(Reason::Expired, why).await;
        }
        // The coordinator's own reading of the policy: fail fast, or wait for what is missing.
        // An approval whose stored signature is unreadable counts for nothing (fail closed).
        let approvals: Vec<_> = record
            .approvals
            .iter()
            .filter_map(|a| a.to_core().ok())
            .collect();
        let ledger = LedgerView {
            spent_24h: 0,
            first_seen: Some(record.accepted_at),
        };
        match evaluate(
            &coord.policy,
            request,
            &decoded.spend,
            &digest,
            &approvals,
            ledger,
            now,
        ) {
            Verdict::Allowed => {}
            Verdict::Denied(denial) => {
                let rule = denial.rule;
                return coord
                    .update_request(id, move |r| {
                        r.state = RequestState::Failed;
                        r.reason = Reason::RefusedByPolicy;
                        r.policy_rule = Some(rule);
                        r.detail = format!("policy: {denial}");
                    })
                    .await;
            }
            Verdict::Waiting {
                approvals_missing,
                time_locked_until,
                ..
            } => {
                let detail = waiting_detail(approvals_missing, time_locked_until);
                let reason = if approvals_missing > 0 {
                    Reason::WaitingForApprovals
                } else {
                    Reason::TimeLocked
                };
                if record.detail != detail || record.reason != reason {
                    coord
                        .update_request(id, move |r| {
                            r.detail = detail;
                            r.reason = reason;
                        })
                        .await?;
                }
                let wait = time_locked_until
                    .map(|t| {
                        Duration::from_secs(t.saturating_sub(now)).max(Duration::from_millis(200))
                    })
                    .unwrap_or(Duration::from_secs(5))
                    .min(Duration::from_secs(5));
                let _ = tokio::time::timeout(wait, coord.approvals_changed.notified()).await;
                continue;
            }
        }
        let t = usize::from(group.threshold);
        let mut candidates = Vec::new();
        let mut excluded = 0usize;
        for m in &group.members {
            if coord
                .store
                .is_excluded(&group.name, m)
                .map_err(|e| e.to_string())?
            {
                excluded += 1;
                continue;
            }
            if refusals.contains_key(m) || unreachable.contains(m) {
                continue;
            }
            let h = coord.members.health(m);
            let seems_up = h.reachable || (h.last_ok.is_none() && h.last_error.is_empty());
            if seems_up && !h.sealed {
                candidates.push((m.clone(), region_of(coord, m), h.latency));
            }
        }
        if group.members.len() - excluded - refusals.len() < t {
            let why = format!(
                "refused: {}",
                refusals.values().cloned().collect::<Vec<_>>().join("; ")
            );
            return fail(Reason::RefusedBySigners, why).await;
        }
        let Some(signers) = choose_signers(&candidates, t) else {
            if !reprobed {
                // Health may be stale: look again before telling anyone we are short.
                reprobed = true;
                coord.members.probe_all().await;
                unreachable.clear();
                continue;
            }
            let detail = format!("below threshold: {} of {t} reachable", candidates.len());
            if record.detail != detail {
                info!(request = %id, "{detail}");
                coord
                    .update_request(id, |r| {
                        r.detail = detail;
                        r.reason = Reason::BelowThreshold;
                    })
                    .await?;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            coord.members.probe_all().await;
            unreachable.clear();
            continue;
        };
        reprobed = false;
        let wire_approvals = record
            .approvals
            .iter()
            .filter_map(|a| {
                Some(pb::Approval {
                    request_id: id.to_string(),
                    approver_id: a.approver_id.clone(),
                    expires_at: a.expires_at,
                    signature: a.signature_bytes().ok()?,
                })
            })
            .collect();
        let target = Target::Withdrawal(Box::new(wire.clone()), wire_approvals);
        signing_since.get_or_insert_with(Instant::now);
        let outcome = attempt(coord, &group, &signers, &decoded.messages, &target).await;
        coord.metrics.attempt(&outcome);
        let mut culprits = Vec::new();
        let detail = match outcome {
            Ok(signatures) => {
                let signed = match finish_signatures(coord, &group, &decoded, signatures) {
                    Ok(s) => s,
                    Err(e) => return fail(Reason::Failed, e).await,
                };
                info!(request = %id, signers = ?signers, txid = %signed.txid, "signed");
                coord.audit.append(
                    "withdrawal_signed",
                    serde_json::json!({"request": id.as_str(), "digest": digest.to_hex(), "signers": signers.iter().map(|s| s.as_str()).collect::<Vec<_>>(), "txid": signed.txid}),
                )
                .map_err(|e| format!("audit log: {e}; stopping here, the request resumes when the log is writable"))?;
                return coord
                    .update_request(id, move |r| {
                        r.attempts += 1;
                        r.signature = signed.signature;
                        r.input_signatures = signed.input_signatures;
                        r.tx = signed.tx;
                        r.txid = signed.txid;
                        r.signers = signers;
                        r.state = RequestState::Signed;
                        r.reason = Reason::Signed;
                        r.detail = String::new();
                    })
                    .await;
            }
            Err(AttemptError::Unreachable(n, e)) => {
                warn!(request = %id, node = %n, error = %e, "signer unavailable; retrying on another subset");
                coord.members.record(&n, Err(e.clone()), None);
                unreachable.insert(n);
                e
            }
            Err(AttemptError::Refused(n, e)) => {
                warn!(request = %id, node = %n, reason = %e, "signer refused");
                refusals.insert(n, e.clone());
                e
            }
            Err(AttemptError::Busy(_, hint)) => {
                // Loaded, not dead: wait as asked and try again, without counting an attempt.
                // A few ms of spread so busy retries do not arrive in lockstep.
                let jitter = Duration::from_millis(u64::from(rand::random::<u8>() % 20));
                tokio::time::sleep(hint + jitter).await;
                continue;
            }
            Err(AttemptError::InvalidShares(evidence)) => {
                for mut ev in evidence {
                    ev.request_id = id.to_string();
                    warn!(request = %id, culprit = %ev.node, group = %ev.group, "invalid signature share; member excluded from the group until an operator clears it");
                    coord.audit.append(
                        "culprit_excluded",
                        serde_json::json!({"request": id.as_str(), "group": ev.group.as_str(), "node": ev.node.as_str(), "share": ev.share}),
                    )
                    .map_err(|e| format!("audit log: {e}; stopping here, the request resumes when the log is writable"))?;
                    coord.store.exclude(&ev).await.map_err(|e| e.to_string())?;
                    culprits.push(ev.node);
                }
                "invalid signature share".to_string()
            }
            Err(AttemptError::Other(e)) => {
                warn!(request = %id, error = %e, "attempt failed");
                other_failures += 1;
                if other_failures >= 5 {
                    return fail(Reason::Failed, e).await;
                }
                e
            }
        };
        coord
            .update_request(id, move |r| {
                r.attempts += 1;
                r.culprits.extend(culprits);
                r.reason = Reason::Signing;
                r.detail = format!(
                    "attempt {} failed ({detail}); retrying on a new subset",
                    r.attempts
                );
            })
            .await?;
    }
}

/// A request's signatures in the form its client gets them.
struct SignedOutput {
    signature: Vec<u8>,
    input_signatures: Vec<Vec<u8>>,
    tx: String,
    txid: String,
}

/// For a message group, the one signature; for a taproot group, every input's
/// BIP340 signature checked once more under the group's output key and
/// placed in its witness, giving the fully signed transaction.
fn finish_signatures(
    coord: &Coordinator,
    group: &GroupRecord,
    decoded: &permafrost_core::authz::Decoded,
    mut signatures: Vec<Vec<u8>>,
) -> Result<SignedOutput, String> {
    let Some(tx) = &decoded.transaction else {
        if signatures.len() != 1 {
            return Err(format!("{} signatures for one message", signatures.len()));
        }
        return Ok(SignedOutput {
            signature: signatures.remove(0),
            input_signatures: Vec::new(),
            tx: String::new(),
            txid: String::new(),
        });
    };
    let view = coord.group_view(group)?;
    let output = view
        .taproot
        .ok_or_else(|| format!("key group {} has no taproot output", group.name))?;
    for (i, (sighash, sig)) in tx.sighashes.iter().zip(&signatures).enumerate() {
        output
            .verify(sighash, sig)
            .map_err(|e| format!("input {i}: {e}"))?;
    }
    let signed = tx
        .signed_transaction(&signatures)
        .map_err(|e| e.to_string())?;
    Ok(SignedOutput {
        signature: Vec::new(),
        tx: bitcoin::consensus::encode::serialize_hex(&signed),
        txid: signed.compute_txid().to_string(),
        input_signatures: signatures,
    })
}

/// What a waiting request still needs, in words.
pub fn waiting_detail(approvals_missing: u32, time_locked_until: Option<u64>) -> String {
    let mut parts = Vec::new();
    if approvals_missing > 0 {
        parts.push(format!("waiting for {approvals_missing} more approval(s)"));
    }
    if let Some(t) = time_locked_until {
        parts.push(format!("time-locked until {t}"));
    }
    parts.join("; ")
}

/// Tells every member of the group about the request, so their own time-lock clocks start.
async fn announce(
    coord: &Coordinator,
    group: &permafrost_core::GroupName,
    wire: &pb::SignedWithdrawal,
) {
    let Ok(Some(group)) = coord.store.group(group) else {
        return;
    };
    let calls = group
        .members
        .iter()
        .filter_map(|m| coord.members.get(m))
        .map(|m| {
            let mut client = m.client.clone();
            let wire = wire.clone();
            async move {
                if let Err(e) = client.announce(wire).await {
                    warn!(node = %m.id, error = %e.message(), "announce failed");
                }
            }
        });
    futures::future::join_all(calls).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> NodeId {
        NodeId::new(s).expect("valid")
    }

    #[test]
    fn regions_are_spread_first() {
        let c = vec![
            (n("n1"), "eu".to_string(), Some(Duration::from_millis(1))),
            (n("n2"), "eu".to_string(), Some(Duration::from_millis(2))),
            (n("n3"), "us".to_string(), Some(Duration::from_millis(50))),
            (n("n4"), "ap".to_string(), Some(Duration::from_millis(90))),
        ];
        assert_eq!(
            choose_signers(&c, 3).expect("enough"),
            vec![n("n1"), n("n3"), n("n4")]
        );
        assert_eq!(choose_signers(&c, 4).expect("enough").len(), 4);
        assert!(choose_signers(&c, 5).is_none());
    }
}
