//! The two signing rounds, RFC 9591 §5.1 (commitment) and §5.2 (signature
//! share generation), and `Announce`, which starts a request's time-lock clock.
//!
//! Round 1 puts fresh nonces in the node's [`crate::nonces::NoncePool`] and
//! returns only their commitments. Round 2 takes the nonce out of the pool
//! first, then checks everything about what will actually be signed
//! (`permafrost_core::authz`), then journals the request in the store
//! ([`crate::store::NodeStore::journal_share`]), then writes the audit record,
//! and only then computes the share. The order is held by types: the
//! authorized withdrawal comes out of the journal step only together with its
//! [`Journaled`] proof, which only the store can make, and
//! [`release_withdrawal_share`], the one place a withdrawal's share is
//! computed, takes that proof by value (invariants 3 and 7).

use std::sync::Arc;
use std::time::{Duration, Instant};

use frost_secp256k1::keys::KeyPackage;
use frost_secp256k1::round1::SigningNonces;
use frost_secp256k1::round2::SignatureShare;
use frost_secp256k1::{round1, SigningPackage};
use permafrost_core::authz::{
    authorize_custody_checked, check_custody, verify_custody, GroupView, PolicyInput,
    SignedWithdrawal,
};
use permafrost_core::policy::{Approval, LedgerView, VELOCITY_WINDOW_SECS};
use permafrost_core::signing::{self, ActivationTarget, SigningTarget};
use permafrost_core::{unix_now, CoreError, GroupName};
use permafrost_proto as pb;
use permafrost_proto::convert::group_name;
use tracing::{info, warn};

use super::{audit, invalid, missing, refuse, stored_public_key_package, FromWire};
use crate::store::{GroupRecord, Journaled};
use crate::{NodeError, SignerNode};

/// Retry hint sent when every signing-round slot is taken.
const BUSY_RETRY: Duration = Duration::from_millis(50);
/// Retry hint sent when the nonce pool is full: nonces free up more slowly.
const NONCE_POOL_RETRY: Duration = Duration::from_millis(200);

/// `Announce`: records when this node first saw a custody-signed request
/// (a time-lock counts from there).
pub(super) async fn announce(
    node: &SignerNode,
    req: &pb::SignedWithdrawal,
) -> Result<pb::AnnounceResponse, NodeError> {
    node.vault.ensure_unsealed()?;
    let signed: SignedWithdrawal = req.try_into().wire()?;
    let record = node.group_record(&signed.request.key_group)?;
    // Only custody-signed requests start a clock: junk cannot fill the store.
    check_custody(&signed, &group_view(&record), &node.settings, unix_now())
        .map_err(|e| refuse(node, "announce", e))?;
    let first_seen = node
        .store
        .first_seen(&signed.request.request_id, unix_now())
        .await?;
    Ok(pb::AnnounceResponse { first_seen })
}

/// `Commit`, round 1 (RFC 9591 §5.1): fresh nonces into the pool, their commitments out.
pub(super) fn commit(
    node: &SignerNode,
    req: &pb::CommitRequest,
) -> Result<pb::CommitResponse, NodeError> {
    let _session = node.session_slot()?;
    let name = group_name("key_group", &req.key_group).wire()?;
    let record = node.group_record(&name)?;
    let key_package = node
        .vault
        .open_key_package(&record.name, &record.sealed_key_package)?;
    let (nonces, commitments) =
        round1::commit(key_package.signing_share(), &mut rand::thread_rng());
    let commitments = commitments
        .serialize()
        .map_err(|e| NodeError::Bug(format!("serialize commitments: {e}")))?;
    let handle = node
        .nonces
        .lock()
        .map_err(|_| NodeError::Bug("nonce pool lock poisoned".into()))?
        .insert(name, nonces, Instant::now())
        .ok_or_else(|| NodeError::Busy {
            what: "nonce pool full".into(),
            retry_after: NONCE_POOL_RETRY,
        })?;
    let identifier = node.identifier_in(&record)?;
    Ok(pb::CommitResponse {
        nonce_handle: handle.to_vec(),
        commitments,
        identifier,
    })
}

/// `Sign`, round 2 (RFC 9591 §5.2).
pub(super) async fn sign(
    node: Arc<SignerNode>,
    req: pb::SignRequest,
) -> Result<pb::SignResponse, NodeError> {
    let session = node.session_slot()?;
    // From here on the step runs to its end even if the caller goes away: a
    // cancelled RPC must never leave a journal or audit record without the
    // share it describes having been computed and handed to the transport.
    tokio::spawn(async move {
        let _session = session;
        sign_step(&node, req).await
    })
    .await
    .map_err(|e| NodeError::Bug(format!("signing task failed: {e}")))?
}

/// What a share is computed from, once every check on it passed.
struct Checked {
    target: SigningTarget,
    package: SigningPackage,
    nonces: SigningNonces,
    key_package: KeyPackage,
}

/// Round 2: every check on what will actually be signed, then the journal and
/// audit record, then the share.
async fn sign_step(
    node: &Arc<SignerNode>,
    req: pb::SignRequest,
) -> Result<pb::SignResponse, NodeError> {
    // N1: the nonce leaves the pool first; whatever happens below, it is never usable again.
    let taken = node
        .nonces
        .lock()
        .map_err(|_| NodeError::Bug("nonce pool lock poisoned".into()))?
        .take(&req.nonce_handle, Instant::now());
    let Some((nonce_group, nonces)) = taken else {
        warn!(node = %node.id, "refused: unknown, used or expired nonce handle");
        return Err(NodeError::Precondition(
            "unknown, used or expired nonce handle (nonces never survive a restart); commit again"
                .into(),
        ));
    };
    let name = group_name("key_group", &req.key_group).wire()?;
    if nonce_group != name {
        return Err(refuse(
            node,
            "sign",
            CoreError::refused("nonce was committed for another key group"),
        ));
    }
    let record = node.group_record(&name)?;
    let package = SigningPackage::deserialize(&req.signing_package)
        .map_err(|e| invalid("signing_package", e))?;
    let key_package = node
        .vault
        .open_key_package(&record.name, &record.sealed_key_package)?;
    let share = match &req.target {
        Some(pb::sign_request::Target::Withdrawal(w)) => {
            let signed: SignedWithdrawal = w.try_into().wire()?;
            let approvals: Vec<Approval> = req
                .approvals
                .iter()
                .map(Approval::try_from)
                .collect::<Result<_, _>>()
                .wire()?;
            let started = Instant::now();
            let (checked, journaled) = journal_withdrawal(
                node,
                &record,
                signed,
                approvals,
                package,
                nonces,
                key_package,
            )
            .await?;
            let journaled_at = Instant::now();
            let share = release_withdrawal_share(node, &name, &req.approvals, checked, journaled)?;
            // Where a share's time goes (RUST_LOG=permafrost_node=debug).
            tracing::debug!(
                checks_and_journal_us = (journaled_at - started).as_micros() as u64,
                audit_and_share_us = journaled_at.elapsed().as_micros() as u64,
                "sign step timings"
            );
            share
        }
        Some(pb::sign_request::Target::Activation(_)) => {
            let target = SigningTarget::Activation(
                ActivationTarget::for_pending_group(
                    &name,
                    &stored_public_key_package(&record)?,
                    record.active,
                )
                .map_err(|e| refuse(node, "sign", e))?,
            );
            signing::check_package(&target, &package, &nonces, &key_package)
                .map_err(|e| refuse(node, "sign", e))?;
            audit(
                node,
                "activation_share_released",
                serde_json::json!({"group": name.as_str()}),
            )?;
            let share = signing::compute_share(&target, &package, nonces, &key_package)
                .map_err(|e| refuse(node, "sign", e))?;
            info!(node = %node.id, group = %name, "activation test share released");
            share
        }
        None => return Err(missing("target")),
    };
    Ok(pb::SignResponse {
        signature_share: share.serialize(),
        identifier: node.identifier_in(&record)?,
    })
}

/// The custody signature first (junk never reaches the store), then one store
/// step: the policy sees the ledger as it stands inside the commit, and the
/// journal entry and velocity count are written with it (N3, P1).
async fn journal_withdrawal(
    node: &Arc<SignerNode>,
    record: &GroupRecord,
    signed: SignedWithdrawal,
    approvals: Vec<Approval>,
    package: SigningPackage,
    nonces: SigningNonces,
    key_package: KeyPackage,
) -> Result<(Checked, Journaled), NodeError> {
    let view = group_view(record);
    let now = unix_now();
    // Every signature check happens here, once, outside the store's writer thread;
    // the step below only does what needs the ledger.
    let custody =
        verify_custody(&signed, &view, &node.settings, now).map_err(|e| refuse(node, "sign", e))?;
    let r = custody.request();
    let (request_id, digest, group) = (r.request_id.clone(), custody.digest(), r.key_group.clone());
    let asset_amount = Some((r.asset.clone(), r.amount));
    let checker = node.clone();
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
                let authorized = authorize_custody_checked(custody, input, now)?;
                let target = SigningTarget::Withdrawal(authorized);
                signing::check_package(&target, &package, &nonces, &key_package)?;
                Ok(Checked {
                    target,
                    package,
                    nonces,
                    key_package,
                })
            },
        )
        .await?;
    outcome.map_err(|e| refuse(node, "sign", e))
}

/// The only way to a withdrawal's share: spends the [`Journaled`] proof that
/// its journal entry is durable, writes the audit record, then computes the
/// share (invariant 7: the record is durable before the share exists, L2).
fn release_withdrawal_share(
    node: &SignerNode,
    group: &GroupName,
    approvals: &[pb::Approval],
    checked: Checked,
    journaled: Journaled,
) -> Result<SignatureShare, NodeError> {
    let SigningTarget::Withdrawal(w) = &checked.target else {
        return Err(NodeError::Bug(
            "a journaled share must be for a withdrawal".into(),
        ));
    };
    let r = w.request();
    audit(
        node,
        "share_released",
        serde_json::json!({
            "request": r.request_id.as_str(), "digest": w.digest().to_hex(), "group": group.as_str(),
            "asset": r.asset, "amount": r.amount.to_string(), "destination": r.destination,
            "approvals": approvals.iter().map(|a| a.approver_id.as_str()).collect::<Vec<_>>(),
            "shares_released": journaled.shares_released(),
        }),
    )?;
    let share = signing::compute_share(
        &checked.target,
        &checked.package,
        checked.nonces,
        &checked.key_package,
    )
    .map_err(|e| refuse(node, "sign", e))?;
    info!(node = %node.id, request = %r.request_id, digest = %w.digest().to_hex(), "signature share released");
    Ok(share)
}

fn group_view(record: &GroupRecord) -> GroupView {
    GroupView {
        name: record.name.clone(),
        tier: record.tier,
        active: record.active,
    }
}

impl SignerNode {
    /// A slot among the signing rounds in flight (owned, so a spawned step can
    /// hold it), or "busy".
    fn session_slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit, NodeError> {
        self.sessions
            .clone()
            .try_acquire_owned()
            .map_err(|_| NodeError::Busy {
                what: format!("{} signing rounds in flight", self.max_sessions),
                retry_after: BUSY_RETRY,
            })
    }
}
