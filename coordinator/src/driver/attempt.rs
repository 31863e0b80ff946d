//! One signing attempt on a chosen subset: round 1 (commitments and, for a
//! withdrawal, velocity reservation receipts), the velocity read (`Attest`),
//! round 2, and aggregation with culprit detection (RFC 9591 §5.3).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use frost_core::keys::PublicKeyPackage;
use frost_core::round1::SigningCommitments;
use frost_core::round2::SignatureShare;
use frost_core::{Ciphersuite, Identifier, SigningPackage};
use frost_secp256k1::Secp256K1Sha256;
use permafrost_core::signing::{aggregate, taproot_public_key_package, AggregateError};
use permafrost_core::taproot::Scheme;
use permafrost_core::{unix_now, NodeId};
use permafrost_proto as pb;
use tonic::Code;
use tracing::warn;

use crate::store::{Exclusion, GroupRecord};
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
            epoch: group.epoch,
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
