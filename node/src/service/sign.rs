//! The two signing rounds, RFC 9591 §5.1 (commitment) and §5.2 (signature
//! share generation), and `Announce`, which starts a request's time-lock clock.
//!
//! Round 1 puts fresh nonces in the node's [`crate::nonces::NoncePool`] and
//! returns only their commitments: bound to a withdrawal (with its velocity
//! reservation), or banked for the coordinator to use later (one-round
//! signing; `Reserve` then makes the reservation on its own). Round 2 takes the nonce out of the pool
//! first, then checks everything about what will actually be signed
//! (`permafrost_core::authz`), then journals the request in the store
//! ([`crate::store::NodeStore::journal_share`]), then writes the audit record,
//! and only then computes the share. The order is held by types: the
//! authorized withdrawal comes out of the journal step only together with its
//! [`Journaled`] proof, which only the store can make, and
//! [`release_withdrawal_share`], the one place a withdrawal's share is
//! computed, takes that proof by value (invariants 3 and 7).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use frost_core::keys::KeyPackage;
use frost_core::round1::SigningNonces;
use frost_core::round2::SignatureShare;
use frost_core::{Identifier, SigningPackage};
use frost_secp256k1::Secp256K1Sha256;
use frost_secp256k1_tr::Secp256K1Sha256TR;
use permafrost_core::authz::{
    authorize_custody_checked, check_custody, verify_custody, GroupView, PolicyInput,
    SignedWithdrawal,
};
use permafrost_core::policy::{Approval, LedgerView, VELOCITY_WINDOW_SECS};
use permafrost_core::signing::{self, ActivationTarget, SigningTarget};
use permafrost_core::taproot::Scheme;
use permafrost_core::velocity::{self, AttestationRules, SignedAttestation, Subject};
use permafrost_core::{unix_now, CoreError, GroupName};
use permafrost_proto as pb;
use permafrost_proto::convert::group_name;
use tracing::{info, warn};

use super::{audit, invalid, missing, refuse, stored_public_key_package, FromWire};
use crate::metrics::{Check, ShareKind};
use crate::nonces::{Binding, PoolNonces, Suite, Taken};
use crate::store::{GroupRecord, Journaled};
use crate::{NodeError, SignerNode};

/// Retry hint sent when every signing-round slot is taken.
const BUSY_RETRY: Duration = Duration::from_millis(50);
/// Retry hint sent when the nonce pool is full: nonces free up more slowly.
pub(super) const NONCE_POOL_RETRY: Duration = Duration::from_millis(200);
/// Most sessions one Commit may open (one per transaction input).
const MAX_SESSIONS_PER_REQUEST: u32 = permafrost_core::taproot::MAX_INPUTS as u32;

/// `Announce`: records when this node first saw a custody-signed request
/// (a time-lock counts from there).
pub(super) async fn announce(
    node: &SignerNode,
    req: &pb::SignedWithdrawal,
) -> Result<pb::AnnounceResponse, NodeError> {
    node.vault.ensure_unsealed()?;
    let signed: SignedWithdrawal = req.try_into().wire()?;
    let record = node.group_record(&signed.request.key_group)?;
    // Only custody-signed requests start a clock, keyed by their digest:
    // junk cannot fill the store, and another request under the same id
    // never inherits this one's clock.
    let digest = check_custody(&signed, &group_view(&record)?, &node.settings, unix_now())
        .map_err(|e| refuse(node, "announce", Check::Custody, e))?;
    let first_seen = node.store.first_seen(&digest, unix_now()).await?;
    Ok(pb::AnnounceResponse { first_seen })
}

/// `Commit`, round 1 (RFC 9591 §5.1): fresh nonces into the pool, their
/// commitments out; `count` sessions at once (one per transaction input), in
/// the suite of the group's scheme.
pub(super) fn commit(
    node: &SignerNode,
    owner: &str,
    req: &pb::CommitRequest,
) -> Result<pb::CommitResponse, NodeError> {
    let _session = node.session_slot()?;
    let name = group_name("key_group", &req.key_group).wire()?;
    if req.bank && req.withdrawal.is_some() {
        return Err(invalid(
            "bank",
            "banked nonces are bound to no withdrawal; leave `withdrawal` out",
        ));
    }
    let count = req.count.max(1);
    if count > MAX_SESSIONS_PER_REQUEST {
        return Err(invalid(
            "count",
            format!("{count} sessions, at most {MAX_SESSIONS_PER_REQUEST}"),
        ));
    }
    let record = node.group_record(&name)?;
    check_epoch(node, &record, req.epoch, req.withdrawal.is_some())?;
    // A withdrawal's nonces are bound to it, with a velocity reservation made
    // now (the write the group-wide check reads); only custody-signed
    // requests get one, so junk reserves nothing.
    let reserved = match &req.withdrawal {
        Some(w) => Some(super::velocity::reserve(node, &record, w)?),
        None => None,
    };
    let key_package = node
        .vault
        .open_key_package(&record.name, &record.sealed_key_package)?;
    let (batch, commitments) = match record.scheme {
        Scheme::Message => commit_in::<Secp256K1Sha256>(&key_package, count)?,
        Scheme::Taproot => commit_in::<Secp256K1Sha256TR>(
            &signing::rekey::<_, Secp256K1Sha256TR>(&key_package)
                .map_err(|e| NodeError::Bug(e.to_string()))?,
            count,
        )?,
    };
    let handles = {
        let mut pool = node
            .nonces
            .lock()
            .map_err(|_| NodeError::Bug("nonce pool lock poisoned".into()))?;
        if req.bank {
            pool.insert_banked(owner, name, batch, node.max_banked, Instant::now())
        } else {
            pool.insert_all(name, batch, reserved.as_ref().map(|r| r.0), Instant::now())
        }
    };
    let Some(handles) = handles else {
        // No nonces, no reservation: it would only hold the limit for nothing.
        if let Some((binding, _)) = &reserved {
            if let Ok(mut r) = node.reservations.lock() {
                r.take(&binding.commit_id, Instant::now());
            }
        }
        return Err(NodeError::Busy {
            what: "nonce pool full".into(),
            retry_after: NONCE_POOL_RETRY,
        });
    };
    let identifier = node.identifier_in(&record)?;
    let ttl_secs = node
        .nonces
        .lock()
        .map(|p| p.ttl().as_secs() as u32)
        .unwrap_or(0);
    Ok(pb::CommitResponse {
        ttl_secs,
        receipt: reserved.map(|r| r.1.to_wire()).unwrap_or_default(),
        nonces: handles
            .into_iter()
            .zip(commitments)
            .map(|(handle, commitments)| pb::NonceCommitment {
                handle: handle.to_vec(),
                commitments,
            })
            .collect(),
        identifier,
    })
}

/// `count` fresh nonces in suite `C` and their serialized commitments.
fn commit_in<C: Suite>(
    key_package: &KeyPackage<C>,
    count: u32,
) -> Result<(Vec<PoolNonces>, Vec<Vec<u8>>), NodeError> {
    let mut batch = Vec::with_capacity(count as usize);
    let mut out = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let (nonces, commitments) =
            frost_core::round1::commit(key_package.signing_share(), &mut rand::thread_rng());
        out.push(
            commitments
                .serialize()
                .map_err(|e| NodeError::Bug(format!("serialize commitments: {e}")))?,
        );
        batch.push(C::wrap(nonces));
    }
    Ok((batch, out))
}

/// K7: a coordinator that verifies shares against another epoch's public
/// key package would blame this node for shares of the key package it
/// holds; a withdrawal for another epoch is refused as out of step
/// (`FAILED_PRECONDITION`, which no coordinator takes as misbehaviour).
/// `expected` 0 is not checked.
fn check_epoch(
    node: &SignerNode,
    record: &GroupRecord,
    expected: u64,
    withdrawal: bool,
) -> Result<(), NodeError> {
    if !withdrawal || expected == 0 {
        return Ok(());
    }
    let held = super::quorum::epoch_of(node, record)?;
    if held == expected {
        return Ok(());
    }
    Err(NodeError::OutOfStep(format!(
        "{} holds epoch {held} of {}, the request is for epoch {expected}: the group is \
         mid-refresh (RecoverKeyGroup finishes it)",
        node.id, record.name
    )))
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
        let started = Instant::now();
        let result = sign_step(&node, req).await;
        node.metrics.sign_step(started.elapsed(), &result);
        result
    })
    .await
    .map_err(|e| NodeError::Bug(format!("signing task failed: {e}")))?
}

/// What the shares are computed from, once every check on them passed.
struct Checked<C: Suite> {
    target: SigningTarget,
    packages: Vec<SigningPackage<C>>,
    nonces: Vec<SigningNonces<C>>,
    key_package: KeyPackage<C>,
}

/// Round 2: every check on what will actually be signed, then the journal and
/// audit record, then the shares.
async fn sign_step(
    node: &Arc<SignerNode>,
    req: pb::SignRequest,
) -> Result<pb::SignResponse, NodeError> {
    // N1: every nonce named leaves the pool first; whatever happens below,
    // none of them is ever usable again.
    if req.nonce_handles.is_empty() || req.nonce_handles.len() > MAX_SESSIONS_PER_REQUEST as usize {
        return Err(invalid(
            "nonce_handles",
            format!(
                "{} handles, must be 1..={MAX_SESSIONS_PER_REQUEST}",
                req.nonce_handles.len()
            ),
        ));
    }
    let distinct: BTreeSet<&Vec<u8>> = req.nonce_handles.iter().collect();
    let taken: Vec<_> = {
        let mut pool = node
            .nonces
            .lock()
            .map_err(|_| NodeError::Bug("nonce pool lock poisoned".into()))?;
        let now = Instant::now();
        req.nonce_handles
            .iter()
            .map(|h| pool.take(h, now))
            .collect()
    };
    if distinct.len() != req.nonce_handles.len() {
        return Err(invalid("nonce_handles", "the same handle twice"));
    }
    let Some(taken) = taken.into_iter().collect::<Option<Vec<_>>>() else {
        warn!(node = %node.id, "refused: unknown, used or expired nonce handle");
        return Err(NodeError::Stale(
            "unknown, used or expired nonce handle (nonces never survive a restart); commit again"
                .into(),
        ));
    };
    let name = group_name("key_group", &req.key_group).wire()?;
    if taken.iter().any(|t: &Taken| t.group != name) {
        return Err(refuse(
            node,
            "sign",
            Check::NonceBinding,
            CoreError::refused("nonce was committed for another key group"),
        ));
    }
    let bound = taken[0].bound;
    let banked = taken[0].banked;
    if taken.iter().any(|t| t.bound != bound || t.banked != banked) {
        return Err(refuse(
            node,
            "sign",
            Check::NonceBinding,
            CoreError::refused("nonces of different round-1 calls in one request"),
        ));
    }
    let nonces: Vec<PoolNonces> = taken.into_iter().map(|t| t.nonces).collect();
    let record = node.group_record(&name)?;
    check_epoch(
        node,
        &record,
        req.epoch,
        matches!(req.target, Some(pb::sign_request::Target::Withdrawal(_))),
    )?;
    if let Some(policy) = node.policy.group(&name) {
        if policy.scheme != record.scheme {
            return Err(refuse(
                node,
                "sign",
                Check::Scheme,
                CoreError::refused(format!(
                    "key group {name} was created as a {} group; this node's policy now says {}",
                    record.scheme, policy.scheme
                )),
            ));
        }
    }
    let key_package = node
        .vault
        .open_key_package(&record.name, &record.sealed_key_package)?;
    let shares = match record.scheme {
        Scheme::Message => {
            sign_in::<Secp256K1Sha256>(
                node,
                &req,
                &record,
                nonces,
                claim(bound, banked),
                key_package,
            )
            .await?
        }
        Scheme::Taproot => {
            let key_package = signing::taproot_key_package(&key_package)
                .map_err(|e| NodeError::Bug(e.to_string()))?;
            sign_in::<Secp256K1Sha256TR>(
                node,
                &req,
                &record,
                nonces,
                claim(bound, banked),
                key_package,
            )
            .await?
        }
    };
    Ok(pb::SignResponse {
        signature_shares: shares,
        identifier: node.identifier_in(&record)?,
    })
}

/// What the nonces of a `Sign` were issued for.
#[derive(Clone, Copy, Debug)]
enum Claim {
    /// Committed for one withdrawal, with its reservation.
    Bound(Binding),
    /// For an activation test.
    Activation,
    /// From the coordinator's bank: for whatever this `Sign` proves itself.
    Banked,
}

fn claim(bound: Option<Binding>, banked: bool) -> Claim {
    match (bound, banked) {
        (Some(b), _) => Claim::Bound(b),
        (None, true) => Claim::Banked,
        (None, false) => Claim::Activation,
    }
}

/// Round 2 in the suite of the group's scheme; returns the serialized shares.
async fn sign_in<C: Suite>(
    node: &Arc<SignerNode>,
    req: &pb::SignRequest,
    record: &GroupRecord,
    nonces: Vec<PoolNonces>,
    claim: Claim,
    key_package: KeyPackage<C>,
) -> Result<Vec<Vec<u8>>, NodeError> {
    let name = &record.name;
    let nonces = nonces
        .into_iter()
        .map(C::unwrap)
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| {
            refuse(
                node,
                "sign",
                Check::NonceBinding,
                CoreError::refused("nonce was committed for another signing scheme"),
            )
        })?;
    // A removed member keeps its identifier but is never a signer.
    let members = record
        .active_members()
        .map(|(i, _)| {
            Identifier::<C>::try_from(i).map_err(|e| NodeError::Bug(format!("identifier {i}: {e}")))
        })
        .collect::<Result<BTreeSet<_>, _>>()?;
    let packages = req
        .signing_packages
        .iter()
        .map(|raw| {
            let package = SigningPackage::<C>::deserialize(raw)
                .map_err(|e| invalid("signing_packages", e))?;
            signing::strict::check_package_shape(raw, &package, &members, record.threshold)
                .map_err(|e| refuse(node, "sign", Check::SigningPackage, e))?;
            Ok(package)
        })
        .collect::<Result<Vec<_>, NodeError>>()?;
    let shares = match &req.target {
        Some(pb::sign_request::Target::Withdrawal(w)) => {
            let signed: SignedWithdrawal = w.try_into().wire()?;
            // Each approval costs two signature checks: no request carries
            // more than there are registered approvers to count.
            let registered = node.policy.approver_count();
            if req.approvals.len() > registered {
                return Err(invalid(
                    "approvals",
                    format!(
                        "{} offered, only {registered} approvers are registered",
                        req.approvals.len()
                    ),
                ));
            }
            let approvals: Vec<Approval> = req
                .approvals
                .iter()
                .map(Approval::try_from)
                .collect::<Result<_, _>>()
                .wire()?;
            let bound = match claim {
                Claim::Bound(b) => Reservation::Bound(b),
                Claim::Banked => Reservation::Named(req.reservation.clone()),
                Claim::Activation => {
                    return Err(refuse(node, "sign", Check::NonceBinding,
                        CoreError::refused(
                            "these nonces were committed for no withdrawal (round 1 must name the request)",
                        ),
                    ))
                }
            };
            let attestations = req
                .attestations
                .iter()
                .map(|a| SignedAttestation::from_wire(a).map_err(|e| invalid("attestations", e)))
                .collect::<Result<Vec<_>, _>>()?;
            let started = Instant::now();
            let (checked, journaled) = journal_withdrawal(
                node,
                record,
                signed,
                approvals,
                Round2 {
                    packages,
                    nonces,
                    key_package,
                    bound,
                    attestations,
                },
            )
            .await?;
            let journaled_at = Instant::now();
            let shares = release_withdrawal_shares(node, name, &req.approvals, checked, journaled)?;
            // Where a share's time goes (`permafrost-sim bench` reports the means).
            node.metrics
                .step("node_checks_and_journal", journaled_at - started);
            node.metrics
                .step("node_audit_and_share", journaled_at.elapsed());
            shares
        }
        Some(pb::sign_request::Target::Activation(_)) => {
            if let Claim::Bound(_) = claim {
                return Err(refuse(
                    node,
                    "sign",
                    Check::NonceBinding,
                    CoreError::refused("these nonces were committed for a withdrawal"),
                ));
            }
            let target = SigningTarget::Activation(
                ActivationTarget::for_pending_group(
                    name,
                    &stored_public_key_package(record)?,
                    record.active,
                )
                .map_err(|e| refuse(node, "sign", Check::Activation, e))?,
            );
            signing::check_packages(&target, &packages, &nonces, &key_package)
                .map_err(|e| refuse(node, "sign", Check::Activation, e))?;
            audit(
                node,
                "activation_share_released",
                serde_json::json!({"group": name.as_str(), "scheme": record.scheme.as_str()}),
            )?;
            let shares = signing::compute_shares(&target, &packages, nonces, &key_package)
                .map_err(|e| refuse(node, "sign", Check::Activation, e))?;
            node.metrics
                .shares_released(name, ShareKind::Activation, shares.len());
            info!(node = %node.id, group = %name, "activation test share released");
            shares
        }
        None => return Err(missing("target")),
    };
    Ok(shares.iter().map(SignatureShare::serialize).collect())
}

/// The custody signature first (junk never reaches the store), then one store
/// step: the policy sees the ledger as it stands inside the commit, and the
/// journal entry and velocity count are written with it (N3, P1).
/// What round 2 brought for a withdrawal.
struct Round2<C: Suite> {
    packages: Vec<SigningPackage<C>>,
    nonces: Vec<SigningNonces<C>>,
    key_package: KeyPackage<C>,
    bound: Reservation,
    attestations: Vec<SignedAttestation>,
}

/// Where a withdrawal's velocity reservation is.
enum Reservation {
    /// Made with the nonces (bound `Commit`): used up by this share.
    Bound(Binding),
    /// Made by `Reserve` and named by the request (banked nonces): it stays
    /// until it expires, so later sessions of the same request reuse it.
    Named(Vec<u8>),
}

async fn journal_withdrawal<C: Suite>(
    node: &Arc<SignerNode>,
    record: &GroupRecord,
    signed: SignedWithdrawal,
    approvals: Vec<Approval>,
    round2: Round2<C>,
) -> Result<(Checked<C>, Journaled), NodeError> {
    let Round2 {
        packages,
        nonces,
        key_package,
        bound,
        attestations,
    } = round2;
    let view = group_view(record)?;
    let now = unix_now();
    // Every signature check happens here, once, outside the store's writer thread;
    // the step below only does what needs the ledger.
    let custody = verify_custody(&signed, &view, &node.settings, now)
        .map_err(|e| refuse(node, "sign", Check::Custody, e))?;
    let asset = custody.request().asset.clone();
    let digest = custody.digest();
    // Group-wide velocity: this node's reservation must still be live (it
    // lives as long as the nonces), and n - t + 1 members must have attested,
    // over that reservation, what the group signed or holds reserved. Banked
    // nonces skip it only where this node's own policy sets no daily limit.
    let needed = velocity::group_wide_check_needed(
        node.policy
            .group(&record.name)
            .and_then(|g| g.assets.get(&asset)),
    );
    let mut named = None;
    let reservation = match bound {
        Reservation::Bound(bound) => {
            if digest != bound.digest {
                return Err(refuse(
                    node,
                    "sign",
                    Check::NonceBinding,
                    CoreError::refused("these nonces were committed for another request"),
                ));
            }
            // Left in place until the journal step is done (then marked
            // spent, or dropped if refused): an attestation read in between
            // must still see it (see `Reservations::unspent`).
            named = Some(bound.commit_id);
            Some(
                node.reservations
                    .lock()
                    .map_err(|_| NodeError::Bug("reservations lock poisoned".into()))?
                    .get(&bound.commit_id, Instant::now())
                    .ok_or_else(|| {
                        NodeError::Precondition(
                            "the velocity reservation made with these nonces expired; commit again"
                                .into(),
                        )
                    })?,
            )
        }
        Reservation::Named(_) if !needed => None,
        Reservation::Named(id) => {
            let id: [u8; 16] = id.as_slice().try_into().map_err(|_| {
                invalid(
                    "reservation",
                    "16 bytes from Reserve (group-wide velocity needs it)",
                )
            })?;
            let r = node
                .reservations
                .lock()
                .map_err(|_| NodeError::Bug("reservations lock poisoned".into()))?
                .get(&id, Instant::now())
                .ok_or_else(|| {
                    NodeError::Stale(
                        "unknown or expired velocity reservation (reservations never survive a restart); reserve again"
                            .into(),
                    )
                })?;
            named = Some(id);
            if r.digest != digest || r.group != record.name || r.asset != asset {
                return Err(refuse(
                    node,
                    "sign",
                    Check::NonceBinding,
                    CoreError::refused("the reservation named was made for another request"),
                ));
            }
            Some(r)
        }
    };
    let ttl = node
        .nonces
        .lock()
        .map_err(|_| NodeError::Bug("nonce pool lock poisoned".into()))?
        .ttl();
    let attested = match &reservation {
        None => 0,
        Some(reservation) => {
            let members = super::velocity::member_keys(node, record)?;
            let rules = AttestationRules {
                subject: Subject {
                    group: &record.name,
                    asset: &asset,
                    digest: &digest,
                },
                own_receipt: &reservation.receipt_hash,
                needed: velocity::attestations_needed(
                    record.velocity_members(now, node.settings.max_clock_skew_secs),
                    usize::from(record.threshold),
                ),
                now,
                max_age_secs: ttl.as_secs(),
                skew_secs: node.settings.max_clock_skew_secs,
                window_secs: VELOCITY_WINDOW_SECS,
            };
            // The signatures are checked before the cache's lock is taken:
            // concurrent requests wait on each other only for the merge.
            match velocity::verify_attestations(&attestations, &members, &rules) {
                Ok(verified) => node
                    .ledgers
                    .lock()
                    .map_err(|_| NodeError::Bug("ledger cache lock poisoned".into()))?
                    .take_in(verified, rules),
                Err(e) => Err(e.into()),
            }
        }
        .map_err(|e| match e {
            velocity::CheckError::CatchingUp(why) => {
                info!(node = %node.id, group = %record.name, "{why}");
                NodeError::CatchingUp(why)
            }
            velocity::CheckError::Refused(e) => refuse(node, "sign", Check::Velocity, e),
        })?,
    };
    let r = custody.request();
    let (request_id, digest, group) = (r.request_id.clone(), custody.digest(), r.key_group.clone());
    // Velocity counts what the node established leaves the group (for a
    // transaction: its payments plus fee), never a label.
    let asset_amount = Some((r.asset.clone(), custody.spend().amount));
    // Approval signatures are checked here too, before the store step: its
    // writer thread only sees their outcome.
    let approvals =
        permafrost_core::policy::check_approvals(&node.policy, r, &digest, &approvals, now);
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
                // Both bounds hold: this node's own ledger, and the union the
                // attestations show for the group.
                let input = PolicyInput {
                    policy: &checker.policy,
                    approvals: &approvals,
                    ledger: LedgerView {
                        spent_24h: ledger.spent.max(attested),
                        first_seen: Some(ledger.first_seen),
                    },
                };
                let authorized = authorize_custody_checked(custody, input, now)?;
                let target = SigningTarget::Withdrawal(Box::new(authorized));
                signing::check_packages(&target, &packages, &nonces, &key_package)?;
                Ok(Checked {
                    target,
                    packages,
                    nonces,
                    key_package,
                })
            },
        )
        .await?;
    if let Some(id) = named {
        if let Ok(mut r) = node.reservations.lock() {
            match &outcome {
                // Signed: the journal step counted the spend in the ledger;
                // the reservation stays for the request's later sessions
                // (ROAST) but is the first to make room when the table is
                // full, so reservations never pile up to its cap under load.
                Ok(_) => r.mark_spent(&id),
                // Refused for good on this request: it would only hold the
                // limit for nothing (a later Sign naming it is then stale).
                Err(_) => {
                    r.take(&id, Instant::now());
                }
            }
        }
    }
    outcome.map_err(|e| refuse(node, "sign", Check::Journal, e))
}

/// The only way to a withdrawal's share: spends the [`Journaled`] proof that
/// its journal entry is durable, writes the audit record, then computes the
/// share (invariant 7: the record is durable before the share exists, L2).
fn release_withdrawal_shares<C: Suite>(
    node: &SignerNode,
    group: &GroupName,
    approvals: &[pb::Approval],
    checked: Checked<C>,
    journaled: Journaled,
) -> Result<Vec<SignatureShare<C>>, NodeError> {
    let SigningTarget::Withdrawal(w) = &checked.target else {
        return Err(NodeError::Bug(
            "a journaled share must be for a withdrawal".into(),
        ));
    };
    let r = w.request();
    let spend = w.spend();
    let tx = w.decoded().map(|d| {
        serde_json::json!({
            "txid": d.unsigned_tx.compute_txid().to_string(),
            "inputs": d.inputs.len(),
            "payments": d.payments.iter().map(|p| serde_json::json!({"address": p.address, "amount_sat": p.amount_sat})).collect::<Vec<_>>(),
            "change_sat": d.change.iter().map(|c| c.amount_sat).sum::<u64>(),
            "fee_sat": d.fee_sat,
        })
    });
    audit(
        node,
        "share_released",
        serde_json::json!({
            "request": r.request_id.as_str(), "digest": w.digest().to_hex(), "group": group.as_str(),
            "asset": r.asset, "amount": spend.amount.to_string(), "destinations": spend.destinations,
            "transaction": tx,
            "approvals": approvals.iter().map(|a| a.approver_id.as_str()).collect::<Vec<_>>(),
            "shares_released": journaled.shares_released(),
        }),
    )?;
    let shares = signing::compute_shares(
        &checked.target,
        &checked.packages,
        checked.nonces,
        &checked.key_package,
    )
    .map_err(|e| refuse(node, "sign", Check::SigningPackage, e))?;
    node.metrics
        .shares_released(group, ShareKind::Withdrawal, shares.len());
    node.metrics.approvals(group, approvals.len());
    info!(node = %node.id, request = %r.request_id, digest = %w.digest().to_hex(), sessions = shares.len(), "signature shares released");
    Ok(shares)
}

pub(super) fn group_view(record: &GroupRecord) -> Result<GroupView, NodeError> {
    Ok(GroupView {
        name: record.name.clone(),
        tier: record.tier,
        active: record.active,
        taproot: record.taproot_output()?,
    })
}

impl SignerNode {
    /// A slot among the signing rounds in flight (owned, so a spawned step can
    /// hold it), or "busy".
    pub(super) fn session_slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit, NodeError> {
        self.sessions
            .clone()
            .try_acquire_owned()
            .map_err(|_| NodeError::Busy {
                what: format!("{} signing rounds in flight", self.max_sessions),
                retry_after: BUSY_RETRY,
            })
    }
}
