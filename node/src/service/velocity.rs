//! Group-wide velocity on this node (THREATS P1; `permafrost_core::velocity`):
//! the write (`reserve`: this node's reservation of a request's amount,
//! with a signed receipt, made with bound nonces in `Commit` or on its own in
//! `Reserve` for banked nonces) and the read after it (`Attest`: this node's
//! ledger and live reservations, signed over every signer's receipt). `Sign`
//! in [`super::sign`] checks the attestations of `n − t + 1` members.

use std::time::Instant;

use permafrost_core::authz::{verify_custody, SignedWithdrawal};
use permafrost_core::policy::VELOCITY_WINDOW_SECS;
use permafrost_core::unix_now;
use permafrost_core::velocity::{
    self, MemberKeys, Receipt, SignedAttestation, SignedReceipt, Subject,
};
use permafrost_proto as pb;
use permafrost_proto::convert::group_name;

use super::sign::{group_view, NONCE_POOL_RETRY};
use super::{invalid, missing, refuse, FromWire};
use crate::metrics::Check;
use crate::nonces::Binding;
use crate::store::GroupRecord;
use crate::{NodeError, SignerNode};

/// `Reserve`: the velocity write for a request whose nonces come from the
/// bank. The same checks and reservation as `Commit` with a withdrawal,
/// without nonces; `Sign` names the reservation.
pub(super) fn reserve_only(
    node: &SignerNode,
    req: &pb::ReserveRequest,
) -> Result<pb::ReserveResponse, NodeError> {
    let _session = node.session_slot()?;
    node.vault.ensure_unsealed()?;
    let name = group_name("key_group", &req.key_group).wire()?;
    let record = node.group_record(&name)?;
    let w = req
        .withdrawal
        .as_ref()
        .ok_or_else(|| missing("withdrawal"))?;
    let (binding, receipt) = reserve(node, &record, w)?;
    let ledgers_held = node
        .ledgers
        .lock()
        .map_err(|_| NodeError::Bug("ledger cache lock poisoned".into()))?
        .coverage(&record.name, &receipt.receipt.asset)
        .into_iter()
        .map(|(member, held)| (member.to_string(), held))
        .collect();
    Ok(pb::ReserveResponse {
        receipt: receipt.to_wire(),
        reservation: binding.commit_id.to_vec(),
        ledgers_held,
    })
}

/// Verifies a custody-signed withdrawal and reserves what it would take out
/// of the group; returns the nonces' binding and the signed receipt.
pub(super) fn reserve(
    node: &SignerNode,
    record: &GroupRecord,
    w: &pb::SignedWithdrawal,
) -> Result<(Binding, SignedReceipt), NodeError> {
    let signed: SignedWithdrawal = w.try_into().wire()?;
    let now = unix_now();
    let custody = verify_custody(&signed, &group_view(record)?, &node.settings, now)
        .map_err(|e| refuse(node, "commit", Check::Custody, e))?;
    let mut commit_id = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut commit_id);
    let receipt = Receipt {
        node: node.id.clone(),
        group: record.name.clone(),
        asset: custody.request().asset.clone(),
        digest: custody.digest(),
        amount: custody.spend().amount,
        reserved_at: now,
        commit_id,
    };
    let signature = node.identity.sign(&receipt.encode()).to_vec();
    let stored = node
        .reservations
        .lock()
        .map_err(|_| NodeError::Bug("reservations lock poisoned".into()))?
        .insert(
            commit_id,
            receipt.group.clone(),
            receipt.asset.clone(),
            receipt.digest,
            receipt.amount,
            receipt.hash(),
            Instant::now(),
        );
    if !stored {
        return Err(NodeError::Busy {
            what: "velocity reservations full".into(),
            retry_after: NONCE_POOL_RETRY,
        });
    }
    Ok((
        Binding {
            digest: receipt.digest,
            commit_id,
        },
        SignedReceipt { receipt, signature },
    ))
}

/// The identity keys of `record`'s active members, from this node's own manifest.
pub(super) fn member_keys(
    node: &SignerNode,
    record: &GroupRecord,
) -> Result<MemberKeys, NodeError> {
    // A removed member's receipts and attestations count for nothing.
    record
        .active_members()
        .map(|(_, m)| {
            let entry = node
                .directory
                .get(m)
                .map_err(|e| NodeError::Config(format!("manifest: {e}")))?;
            Ok((m.clone(), entry.identity_key))
        })
        .collect()
}

/// `Attest`: the read after this attempt's reservations. Verifies the
/// custody signature and the signers' receipts (at least `t`, distinct
/// members, for this request), then signs what this member counted in the
/// velocity window from entry `since` on (what the signers do not hold yet;
/// in parts when that is long) and every reservation it holds, this
/// request's excluded.
pub(super) fn attest(
    node: &SignerNode,
    req: &pb::AttestRequest,
) -> Result<pb::AttestResponse, NodeError> {
    node.vault.ensure_unsealed()?;
    let name = group_name("key_group", &req.key_group).wire()?;
    let record = node.group_record(&name)?;
    let w = req
        .withdrawal
        .as_ref()
        .ok_or_else(|| missing("withdrawal"))?;
    let signed: SignedWithdrawal = w.try_into().wire()?;
    let now = unix_now();
    let custody = verify_custody(&signed, &group_view(&record)?, &node.settings, now)
        .map_err(|e| refuse(node, "attest", Check::Custody, e))?;
    let receipts = req
        .receipts
        .iter()
        .map(|r| SignedReceipt::from_wire(r).map_err(|e| invalid("receipts", e)))
        .collect::<Result<Vec<_>, _>>()?;
    let digest = custody.digest();
    let asset = custody.request().asset.clone();
    let subject = Subject {
        group: &name,
        asset: &asset,
        digest: &digest,
    };
    let hashes = velocity::verify_receipts(
        &receipts,
        &member_keys(node, &record)?,
        subject,
        usize::from(record.threshold),
    )
    .map_err(|e| refuse(node, "attest", Check::Velocity, e))?;
    let window_start = now.saturating_sub(VELOCITY_WINDOW_SECS);
    let needed = velocity::attestations_needed(
        record.velocity_members(now, node.settings.max_clock_skew_secs),
        usize::from(record.threshold),
    );
    // Reservations first, then the ledger: one spent in between is in the
    // ledger read after (see `Reservations::unspent`).
    let mut reserved: std::collections::BTreeMap<_, u128> = std::collections::BTreeMap::new();
    for (d, amount) in node
        .reservations
        .lock()
        .map_err(|_| NodeError::Bug("reservations lock poisoned".into()))?
        .unspent(&name, &asset, Instant::now())
    {
        let e = reserved.entry(d).or_default();
        *e = (*e).max(amount);
    }
    reserved.remove(&digest);
    let range = node.store.ledger_range(
        &name,
        &asset,
        req.since,
        window_start,
        velocity::part_limit(needed),
    )?;
    if reserved.len() > velocity::MAX_ENTRIES {
        return Err(NodeError::Unavailable(format!(
            "{} live velocity reservations, more than one attestation lists ({})",
            reserved.len(),
            velocity::MAX_ENTRIES
        )));
    }
    let attestation = velocity::Attestation {
        node: node.id.clone(),
        group: name,
        asset,
        digest,
        at: now,
        window_start,
        receipts: hashes,
        first_seq: range.first_seq,
        from_seq: req.since,
        through: range.through,
        complete: range.complete,
        entries: range.entries,
        prev_hash: range.prev_hash,
        head_hash: range.head_hash,
        reserved: reserved.into_iter().collect(),
    };
    let signature = node.identity.sign(&attestation.encode()).to_vec();
    Ok(pb::AttestResponse {
        attestation: SignedAttestation {
            attestation,
            signature,
        }
        .to_wire(),
    })
}
