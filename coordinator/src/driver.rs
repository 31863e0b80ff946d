//! The session driver: for each request, the checks a node will make (to
//! fail fast), the wait for approvals or a time-lock, then the signing
//! itself: one [`permafrost_core::session::SigningSession`] (the pure engine:
//! banked nonces, ROAST-style concurrent sessions, shares verified on
//! arrival, culprits excluded with evidence, C1) executed by [`attempt`]
//! against the nodes, with the bank refilled in the background ([`bank`]).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use permafrost_core::authz::{decode_request, SignedWithdrawal};
use permafrost_core::policy::{evaluate, LedgerView, Verdict};
use permafrost_core::{unix_now, NodeId, RequestId};
use permafrost_proto as pb;
use prost::Message;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::store::{GroupRecord, Reason, RequestState};
use crate::Coordinator;

mod attempt;
pub mod bank;
mod candidates;

pub use attempt::{sign_request, AttemptError, Outcome, SessionReport, Target};
pub use candidates::choose_signers;

/// Signs `message` on `group` (activation tests), trying again up to
/// `max_attempts` times when too few members can take part or something
/// else went wrong; members that refused are not asked again.
pub async fn sign_with_retries(
    coord: &Coordinator,
    group: &GroupRecord,
    message: &[u8],
    target: &Target,
    max_attempts: usize,
) -> Result<(Vec<u8>, Vec<NodeId>), String> {
    let messages = [message.to_vec()];
    let skip = BTreeSet::new();
    let mut errors = Vec::new();
    for _ in 0..max_attempts.max(1) {
        let report = sign_request(coord, group, "", &messages, target, &skip).await?;
        match report.outcome {
            Outcome::Signed(mut sigs, signers) if !sigs.is_empty() => {
                return Ok((sigs.remove(0), signers))
            }
            Outcome::Signed(..) => errors.push("no signature".to_string()),
            Outcome::Refused(e) => {
                errors.push(e);
                break;
            }
            Outcome::BelowThreshold(e) | Outcome::Failed(e) => {
                errors.push(e);
                coord.members.probe_all().await;
            }
        }
        for c in report.culprits {
            errors.push(format!("{c} sent an invalid share"));
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
            let why = if record.detail.is_empty() || record.reason == Reason::WaitingForApprovals {
                "expired before it could be signed".to_string()
            } else {
                format!("expired; last: {}", record.detail)
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
        // A removed member is out for good, like an excluded one.
        let mut excluded = group.removed.len();
        for m in &group.active_members() {
            if coord
                .store
                .is_excluded(&group.name, m)
                .map_err(|e| e.to_string())?
            {
                excluded += 1;
            }
        }
        if group.members.len().saturating_sub(excluded) < t {
            return fail(
                Reason::RefusedBySigners,
                format!("{excluded} members excluded; fewer than {t} can sign"),
            )
            .await;
        }
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
        let step = Instant::now();
        let report = match sign_request(
            coord,
            &group,
            id.as_str(),
            &decoded.messages,
            &target,
            &BTreeSet::new(),
        )
        .await
        {
            Ok(report) => report,
            Err(e) => SessionReport {
                outcome: Outcome::Failed(e),
                sessions: 0,
                culprits: Vec::new(),
            },
        };
        // The signing rounds: calls to the nodes, share checks, aggregation.
        coord.metrics.step("coord_signing_rounds", step.elapsed());
        // K7: a member at another epoch than our record: catch up, then go again.
        if !matches!(report.outcome, Outcome::Signed(..))
            && crate::recovery::catch_up_if_flagged(coord, &group.name).await
        {
            continue;
        }
        let sessions = report.sessions as u32;
        let culprits = report.culprits;
        let detail = match report.outcome {
            Outcome::Signed(signatures, signers) => {
                let step = std::time::Instant::now();
                let signed = match finish_signatures(coord, &group, &decoded, signatures) {
                    Ok(s) => s,
                    Err(e) => return fail(Reason::Failed, e).await,
                };
                coord
                    .metrics
                    .step("coord_finish_signatures", step.elapsed());
                info!(request = %id, signers = ?signers, sessions, txid = %signed.txid, "signed");
                let step = std::time::Instant::now();
                coord.audit.append(
                    "withdrawal_signed",
                    serde_json::json!({"request": id.as_str(), "digest": digest.to_hex(), "signers": signers.iter().map(|s| s.as_str()).collect::<Vec<_>>(), "txid": signed.txid}),
                )
                .map_err(|e| format!("audit log: {e}; stopping here, the request resumes when the log is writable"))?;
                coord.metrics.step("coord_signed_audit", step.elapsed());
                let step = std::time::Instant::now();
                let stored = coord
                    .update_request(id, move |r| {
                        r.attempts += sessions.max(1);
                        r.culprits.extend(culprits);
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
                coord.metrics.step("coord_signed_store", step.elapsed());
                return stored;
            }
            Outcome::Refused(why) => {
                warn!(request = %id, reason = %why, "signers refused");
                return coord
                    .update_request(id, move |r| {
                        r.attempts += sessions;
                        r.culprits.extend(culprits);
                        r.state = RequestState::Failed;
                        r.reason = Reason::RefusedBySigners;
                        r.detail = why;
                    })
                    .await;
            }
            Outcome::BelowThreshold(detail) => {
                if sessions > 0 || !culprits.is_empty() {
                    coord
                        .update_request(id, move |r| {
                            r.attempts += sessions;
                            r.culprits.extend(culprits);
                        })
                        .await?;
                }
                if !reprobed {
                    // Health may be stale: look again before telling anyone we are short.
                    reprobed = true;
                    coord.members.probe_all().await;
                    continue;
                }
                let record = coord
                    .store
                    .request(id)
                    .map_err(|e| e.to_string())?
                    .ok_or("request vanished")?;
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
                continue;
            }
            Outcome::Failed(e) => {
                warn!(request = %id, error = %e, "signing failed");
                other_failures += 1;
                if other_failures >= 5 {
                    return fail(Reason::Failed, e).await;
                }
                e
            }
        };
        reprobed = false;
        coord
            .update_request(id, move |r| {
                r.attempts += sessions;
                r.culprits.extend(culprits);
                r.reason = Reason::Signing;
                r.detail = format!("attempt {} failed ({detail}); retrying", r.attempts);
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
        .active_members()
        .into_iter()
        .filter_map(|m| coord.members.get(&m))
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
