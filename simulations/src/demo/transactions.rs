//! The demo's bitcoin side: each group's wallet (its taproot output, derived
//! here and checked against what the coordinator reports), the synthetic
//! funding transaction, the withdrawals the custody service would build, and
//! the check of a signed transaction that trusts nothing the cluster says.

use bitcoin::consensus::encode::{deserialize_hex, serialize_hex};
use bitcoin::psbt::Psbt;
use bitcoin::{Address, Amount, OutPoint, ScriptBuf, Transaction, TxIn, TxOut};
use permafrost_core::taproot::{build_withdrawal, decode_withdrawal, Coin, GroupOutput};
use permafrost_core::withdrawal::WithdrawalRequest;
use permafrost_core::{unix_now, GroupName, RequestId, Tier};
use permafrost_proto as pb;
use permafrostctl::client;
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::{btc, PrevoutSummary, SignatureSummary, TransactionSummary};
use crate::cluster::{CUSTODY_ID, NETWORK};
use crate::progress::Progress;
use crate::SimError;

/// What the synthetic funding transaction gives warm-1 (two coins) and cold-1 (one).
const WARM_COINS_SATS: [u64; 2] = [80_000_000, 250_000_000];
const COLD_COIN_SATS: u64 = 500_000_000;
/// Lifetime of the demo's requests.
const REQUEST_LIFETIME_SECS: u64 = 600;

/// A taproot key group and its own output, derived here from its group key
/// (and checked against the address the coordinator reports).
pub(super) struct Wallet {
    pub(super) group: pb::KeyGroup,
    pub(super) output: GroupOutput,
}

impl Wallet {
    pub(super) fn of(group: &pb::KeyGroup) -> Result<Self, SimError> {
        let output = GroupOutput::derive(&group.group_public_key, NETWORK)
            .map_err(|e| SimError::Verification(format!("{}: {e}", group.name)))?;
        if group.scheme != "taproot" || output.address().to_string() != group.address {
            return Err(SimError::Verification(format!(
                "{} is reported as a {} group at {:?}; its key gives the taproot address {}",
                group.name,
                group.scheme,
                group.address,
                output.address()
            )));
        }
        Ok(Self {
            group: group.clone(),
            output,
        })
    }
}

/// The coins the synthetic funding transaction gives each group.
pub(super) struct Funding {
    pub(super) warm: Vec<Coin>,
    pub(super) cold: Coin,
}

/// A synthetic transaction paying warm-1 two coins and cold-1 one. It spends
/// nothing real and is never broadcast: it only gives the groups outpoints
/// and amounts to spend in this demo (its txid is a real hash of it).
pub(super) fn fund(warm: &Wallet, cold: &Wallet, progress: &Progress) -> Funding {
    let mut output: Vec<TxOut> = WARM_COINS_SATS
        .iter()
        .map(|sats| TxOut {
            value: Amount::from_sat(*sats),
            script_pubkey: warm.output.script_pubkey().clone(),
        })
        .collect();
    output.push(TxOut {
        value: Amount::from_sat(COLD_COIN_SATS),
        script_pubkey: cold.output.script_pubkey().clone(),
    });
    let tx = Transaction {
        version: bitcoin::transaction::Version::TWO,
        lock_time: bitcoin::absolute::LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint::null(),
            script_sig: ScriptBuf::from_bytes(
                b"permafrost demo funding (synthetic, never broadcast)".to_vec(),
            ),
            sequence: bitcoin::Sequence::MAX,
            witness: bitcoin::Witness::new(),
        }],
        output,
    };
    let txid = tx.compute_txid();
    let coin = |vout: u32, amount_sat: u64| Coin {
        outpoint: OutPoint { txid, vout },
        amount_sat,
    };
    progress.step(format!(
        "synthetic funding transaction {txid} (built here, NOT broadcast): {} and {} to {} ({}), {} to {} ({})",
        btc(u128::from(WARM_COINS_SATS[0])),
        btc(u128::from(WARM_COINS_SATS[1])),
        warm.group.name,
        warm.group.address,
        btc(u128::from(COLD_COIN_SATS)),
        cold.group.name,
        cold.group.address
    ));
    Funding {
        warm: vec![coin(0, WARM_COINS_SATS[0]), coin(1, WARM_COINS_SATS[1])],
        cold: coin(2, COLD_COIN_SATS),
    }
}

/// A regtest address nobody in the demo holds a key for: the customer being paid.
pub(super) fn customer_address(tag: &str) -> Result<Address, SimError> {
    let digest = Sha256::digest(format!("permafrost demo customer/{tag}"));
    let program = bitcoin::WitnessProgram::new(bitcoin::WitnessVersion::V0, &digest[..20])
        .map_err(|e| SimError::Setup(format!("demo address: {e}")))?;
    Ok(Address::from_witness_program(program, NETWORK.to_bitcoin()))
}

/// A request id for the demo, `demo-` and 12 hex digits.
fn demo_request_id() -> Result<RequestId, SimError> {
    let mut id = [0u8; 6];
    rand::rngs::OsRng.fill_bytes(&mut id);
    RequestId::new(format!("demo-{}", hex::encode(id))).map_err(|e| SimError::Setup(e.to_string()))
}

/// A withdrawal from `wallet` carrying `psbt`, as the custody service would
/// build it: the labels say what the custody service believes it pays.
pub(super) fn demo_request(
    wallet: &Wallet,
    tier: Tier,
    psbt: &Psbt,
    amount_label: u128,
    destination_label: &str,
) -> Result<WithdrawalRequest, SimError> {
    let now = unix_now();
    Ok(WithdrawalRequest {
        request_id: demo_request_id()?,
        key_group: GroupName::new(wallet.group.name.clone())
            .map_err(|e| SimError::Setup(e.to_string()))?,
        tier,
        asset: "BTC".into(),
        amount: amount_label,
        destination: destination_label.into(),
        payload: Vec::new(),
        psbt: Some(psbt.serialize()),
        created_at: now,
        expires_at: now + REQUEST_LIFETIME_SECS,
        requested_by: CUSTODY_ID.into(),
    })
}

pub(super) fn build(
    wallet: &Wallet,
    coins: &[Coin],
    payments: &[(Address, u64)],
    fee_rate: u64,
) -> Result<Psbt, SimError> {
    build_withdrawal(&wallet.output, coins, payments, fee_rate)
        .map_err(|e| SimError::Setup(format!("building the PSBT: {e}")))
}

/// Checks a settled status without trusting the coordinator: signed by `t`
/// members; the transaction is the demo's own PSBT's with one witness per
/// input; each input's sighash, recomputed here from that PSBT, carries a
/// BIP340 signature valid under the group's output key derived here.
pub(super) fn check_signed(
    status: pb::WithdrawalStatus,
    wallet: &Wallet,
    request: &WithdrawalRequest,
) -> Result<(Vec<SignatureSummary>, TransactionSummary), SimError> {
    let request_id = &status.request_id;
    let group = &wallet.group;
    let bad = |why: String| SimError::Verification(format!("withdrawal {request_id}: {why}"));
    if status.state != pb::WithdrawalState::Signed as i32 {
        return Err(bad(format!(
            "ended {} after {} attempt(s): {}",
            client::state_name(status.state),
            status.attempts,
            status.detail
        )));
    }
    let psbt = request
        .psbt
        .as_deref()
        .ok_or_else(|| bad("the demo's request has no PSBT".into()))?;
    let decoded = decode_withdrawal(psbt, &wallet.output).map_err(|e| bad(e.to_string()))?;
    let tx: Transaction = deserialize_hex(&status.tx)
        .map_err(|e| bad(format!("the signed transaction does not decode: {e}")))?;
    let mut unsigned = tx.clone();
    for input in &mut unsigned.input {
        input.witness = bitcoin::Witness::new();
    }
    if unsigned != decoded.unsigned_tx {
        return Err(bad(
            "the signed transaction is not the one the PSBT describes".into(),
        ));
    }
    if tx.compute_txid().to_string() != status.txid {
        return Err(bad(format!(
            "txid {} does not match the transaction",
            status.txid
        )));
    }
    let mut signatures = Vec::new();
    for (i, (input, sighash)) in tx.input.iter().zip(&decoded.sighashes).enumerate() {
        let witness: Vec<&[u8]> = input.witness.iter().collect();
        let [sig] = witness.as_slice() else {
            return Err(bad(format!(
                "input {i} has {} witness items, a key-path spend has 1",
                witness.len()
            )));
        };
        wallet
            .output
            .verify(sighash, sig)
            .map_err(|e| bad(format!("input {i}: {e}")))?;
        signatures.push(SignatureSummary {
            request_id: request_id.clone(),
            key_group: group.name.clone(),
            message: hex::encode(sighash),
            signature: hex::encode(sig),
            signers: status.signers.clone(),
        });
    }
    let threshold = usize::try_from(group.threshold).unwrap_or(usize::MAX);
    if status.signers.len() < threshold || !status.signers.iter().all(|s| group.members.contains(s))
    {
        return Err(bad(format!(
            "names signers [{}], not {} members of {}",
            status.signers.join(", "),
            group.threshold,
            group.name
        )));
    }
    let transaction = TransactionSummary {
        request_id: request_id.clone(),
        key_group: group.name.clone(),
        tx: serialize_hex(&tx),
        txid: status.txid.clone(),
        prevouts: decoded
            .prevouts
            .iter()
            .map(|p| PrevoutSummary {
                script_pubkey: hex::encode(p.script_pubkey.as_bytes()),
                amount: p.value.to_sat(),
            })
            .collect(),
    };
    Ok((signatures, transaction))
}
