//! Acting as a (possibly malicious) coordinator against nodes directly.

use std::collections::BTreeMap;

use frost_secp256k1::round1::SigningCommitments;
use frost_secp256k1::{Identifier, SigningPackage};
use permafrost_proto::{self as pb, signer_node_client::SignerNodeClient};
use tonic::transport::Channel;

/// Round 1 on every client for no withdrawal (as for an activation
/// test); returns the commitments by identifier and each node's nonce
/// handle. Nodes refuse to sign a withdrawal with these nonces.
pub async fn commit_all(
    clients: &mut [SignerNodeClient<Channel>],
    group: &str,
) -> (BTreeMap<Identifier, SigningCommitments>, Vec<Vec<u8>>) {
    let (commitments, handles, _) = commit(clients, group, None).await.expect("commit");
    (commitments, handles)
}

/// What a full round 1 for a withdrawal gives a (rogue) coordinator.
pub struct Round1 {
    /// Commitments by identifier.
    pub commitments: BTreeMap<Identifier, SigningCommitments>,
    /// Each client's nonce handle, in client order.
    pub handles: Vec<Vec<u8>>,
    /// Velocity attestations of every client over every client's receipt.
    pub attestations: Vec<Vec<u8>>,
}

/// Round 1 on every client for the withdrawal `w` (each reserves and
/// answers with a receipt), then the velocity read: every client attests
/// over all the receipts. The first refusal is returned as is.
pub async fn commit_for(
    clients: &mut [SignerNodeClient<Channel>],
    group: &str,
    w: &pb::SignedWithdrawal,
) -> Result<Round1, tonic::Status> {
    let (commitments, handles, receipts) = commit(clients, group, Some(w)).await?;
    let mut attestations = Vec::new();
    for c in clients.iter_mut() {
        let a = c
            .attest(pb::AttestRequest {
                key_group: group.into(),
                withdrawal: Some(w.clone()),
                receipts: receipts.clone(),
                // The whole window: this client keeps nothing between calls.
                since: 0,
            })
            .await?
            .into_inner();
        attestations.push(a.attestation);
    }
    Ok(Round1 {
        commitments,
        handles,
        attestations,
    })
}

/// The whole rogue path for one withdrawal on every client: round 1 for
/// `w`, the velocity read, then round 2 over `message` with `approvals`.
/// One result per client; a refusal in round 1 or the read is every
/// client's answer.
pub async fn sign_directly(
    clients: &mut [SignerNodeClient<Channel>],
    group: &str,
    w: &pb::SignedWithdrawal,
    message: &[u8],
    approvals: &[pb::Approval],
) -> Vec<Result<pb::SignResponse, tonic::Status>> {
    let r1 = match commit_for(clients, group, w).await {
        Ok(r1) => r1,
        Err(status) => return clients.iter().map(|_| Err(status.clone())).collect(),
    };
    let pkg = package(&r1.commitments, message);
    let mut out = Vec::new();
    for (i, c) in clients.iter_mut().enumerate() {
        let mut req = sign_attested(group, &r1.handles[i], &pkg, w, &r1.attestations);
        req.approvals = approvals.to_vec();
        out.push(c.sign(req).await.map(|r| r.into_inner()));
    }
    out
}

#[allow(clippy::type_complexity)]
async fn commit(
    clients: &mut [SignerNodeClient<Channel>],
    group: &str,
    w: Option<&pb::SignedWithdrawal>,
) -> Result<
    (
        BTreeMap<Identifier, SigningCommitments>,
        Vec<Vec<u8>>,
        Vec<Vec<u8>>,
    ),
    tonic::Status,
> {
    let mut commitments = BTreeMap::new();
    let mut handles = Vec::new();
    let mut receipts = Vec::new();
    for c in clients.iter_mut() {
        let r = c
            .commit(pb::CommitRequest {
                bank: false,
                key_group: group.into(),
                count: 1,
                withdrawal: w.cloned(),
                ..Default::default()
            })
            .await?
            .into_inner();
        receipts.push(r.receipt.clone());
        let nonce = r.nonces.first().expect("one nonce").clone();
        let id =
            Identifier::try_from(u16::try_from(r.identifier).expect("u16")).expect("identifier");
        commitments.insert(
            id,
            SigningCommitments::deserialize(&nonce.commitments).expect("commitments"),
        );
        handles.push(nonce.handle);
    }
    Ok((commitments, handles, receipts))
}

/// A serialized signing package over `message`.
pub fn package(commitments: &BTreeMap<Identifier, SigningCommitments>, message: &[u8]) -> Vec<u8> {
    SigningPackage::new(commitments.clone(), message)
        .serialize()
        .expect("package")
}

/// A round-2 request for a withdrawal, without velocity attestations.
pub fn sign_withdrawal(
    group: &str,
    handle: &[u8],
    package: &[u8],
    w: &pb::SignedWithdrawal,
) -> pb::SignRequest {
    sign_attested(group, handle, package, w, &[])
}

/// A round-2 request for a withdrawal with the velocity attestations of [`commit_for`].
pub fn sign_attested(
    group: &str,
    handle: &[u8],
    package: &[u8],
    w: &pb::SignedWithdrawal,
    attestations: &[Vec<u8>],
) -> pb::SignRequest {
    pb::SignRequest {
        reservation: Vec::new(),
        key_group: group.into(),
        nonce_handles: vec![handle.to_vec()],
        signing_packages: vec![package.to_vec()],
        target: Some(pb::sign_request::Target::Withdrawal(w.clone())),
        approvals: Vec::new(),
        attestations: attestations.to_vec(),
        epoch: 0,
    }
}

/// A DKG (or refresh) ceremony's rounds 1–3 on `clients` (member `i` is
/// `n{i+1}`), relayed faithfully as a coordinator would, under the operators'
/// `authorization`; returns every member's signed report, in member order.
/// What a rogue relay then does with the reports is the test's.
pub async fn dkg_rounds(
    clients: &mut [SignerNodeClient<Channel>],
    spec: &pb::CeremonySpec,
    authorization: &pb::SignedLifecycleSpec,
) -> Result<Vec<pb::DkgKeyReport>, tonic::Status> {
    let shares = dkg_until_finish(clients, spec, authorization).await?;
    let mut reports = Vec::new();
    for (i, c) in clients.iter_mut().enumerate() {
        reports.push(dkg_finish(c, &spec.ceremony_id, i, &shares).await?);
    }
    Ok(reports)
}

/// Rounds 1 and 2 of a ceremony on every client, relayed faithfully; returns
/// every encrypted round-2 share, for [`dkg_finish`] on whichever members a
/// test lets finish.
pub async fn dkg_until_finish(
    clients: &mut [SignerNodeClient<Channel>],
    spec: &pb::CeremonySpec,
    authorization: &pb::SignedLifecycleSpec,
) -> Result<Vec<pb::DkgSealedShare>, tonic::Status> {
    let mut round1 = Vec::new();
    for c in clients.iter_mut() {
        round1.push(
            c.dkg_start(pb::DkgStartRequest {
                spec: Some(spec.clone()),
                authorization: Some(authorization.clone()),
            })
            .await?
            .into_inner(),
        );
    }
    let mut echoes = Vec::new();
    for c in clients.iter_mut() {
        echoes.push(
            c.dkg_echo(pb::DkgEchoRequest {
                ceremony_id: spec.ceremony_id.clone(),
                round1: round1.clone(),
            })
            .await?
            .into_inner(),
        );
    }
    let mut shares = Vec::new();
    for c in clients.iter_mut() {
        shares.extend(
            c.dkg_round2(pb::DkgRound2Request {
                ceremony_id: spec.ceremony_id.clone(),
                echoes: echoes.clone(),
            })
            .await?
            .into_inner()
            .shares,
        );
    }
    Ok(shares)
}

/// Round 3 (`DkgFinish`) of ceremony `ceremony_id` on member `i` (`n{i+1}`),
/// with the round-2 shares addressed to it.
pub async fn dkg_finish(
    client: &mut SignerNodeClient<Channel>,
    ceremony_id: &str,
    i: usize,
    shares: &[pb::DkgSealedShare],
) -> Result<pb::DkgKeyReport, tonic::Status> {
    let me = format!("n{}", i + 1);
    Ok(client
        .dkg_finish(pb::DkgFinishRequest {
            ceremony_id: ceremony_id.to_string(),
            shares: shares
                .iter()
                .filter(|s| s.recipient == me)
                .cloned()
                .collect(),
        })
        .await?
        .into_inner())
}
