//! PSBTs as people and wallets exchange them: base64 (BIP174), and a
//! plain-words account of what a withdrawal's transaction does, decoded here
//! with the same code every node runs, for approvers to read before signing.

use std::collections::BTreeSet;

use base64::Engine;
use bitcoin::Address;
use permafrost_core::policy::show_amount;
use permafrost_core::taproot::{build_withdrawal, decode_withdrawal, Coin, GroupOutput};

use crate::CtlError;

/// Base64 of a serialized PSBT.
pub fn to_base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A serialized PSBT from base64 (whitespace ignored) or raw binary.
pub fn from_base64(text: &str) -> Result<Vec<u8>, String> {
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .map_err(|e| format!("not base64 ({e})"))
}

/// Reads a PSBT file as wallets write it: binary (`psbt\xff` magic) or base64 text.
pub fn from_file_bytes(bytes: &[u8]) -> Result<Vec<u8>, String> {
    if bytes.starts_with(b"psbt\xff") {
        return Ok(bytes.to_vec());
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|_| "neither a binary PSBT nor base64 text".to_string())?;
    from_base64(text)
}

/// The unsigned PSBT (serialized) of one payment of `amount_sat` to `to`
/// from `group`, spending every coin in `coins` (`--utxo`) and returning the
/// rest, minus a fee of `fee_rate_sat_vb` (`--fee-rate`) per signed vbyte, to
/// the group's own address. Built with the code the nodes decode with, so
/// what they sign is what the flags say.
pub fn build_payment(
    group: &GroupOutput,
    to: &Address,
    amount_sat: u64,
    coins: &[Coin],
    fee_rate_sat_vb: u64,
) -> Result<Vec<u8>, CtlError> {
    if amount_sat == 0 {
        return Err(CtlError::InvalidInput(
            "--amount must be at least 1 sat".into(),
        ));
    }
    if fee_rate_sat_vb == 0 {
        return Err(CtlError::InvalidInput(
            "--fee-rate must be at least 1 sat/vB: a transaction without a fee is not relayed"
                .into(),
        ));
    }
    if coins.is_empty() {
        return Err(CtlError::InvalidInput(
            "give the coins to spend with --utxo TXID:VOUT:SATS (repeatable)".into(),
        ));
    }
    if &to.script_pubkey() == group.script_pubkey() {
        // The nodes would count it as change: the request would pay nothing.
        return Err(CtlError::InvalidInput(format!(
            "--to {to} is the key group's own address; a payment must go to someone else"
        )));
    }
    let mut seen = BTreeSet::new();
    if let Some(twice) = coins.iter().find(|c| !seen.insert(c.outpoint)) {
        return Err(CtlError::InvalidInput(format!(
            "--utxo {} is given twice; a coin can be spent once",
            twice.outpoint
        )));
    }
    let psbt = build_withdrawal(group, coins, &[(to.clone(), amount_sat)], fee_rate_sat_vb)
        .map_err(|e| CtlError::InvalidInput(e.to_string()))?;
    Ok(psbt.serialize())
}

/// What the transaction spends, pays, returns as change and leaves as fee,
/// in sat and BTC, as decoded for `group`; or why it would be refused.
pub fn describe(psbt: &[u8], group: &GroupOutput) -> Result<String, String> {
    let d = decode_withdrawal(psbt, group).map_err(|e| e.to_string())?;
    let btc = |sat: u64| show_amount(u128::from(sat), "BTC");
    let mut out = String::new();
    out.push_str(&format!(
        "  transaction:    txid {} (unsigned), {} input(s), {} output(s), {} vB signed\n",
        d.unsigned_tx.compute_txid(),
        d.inputs.len(),
        d.unsigned_tx.output.len(),
        d.vsize
    ));
    for (i, input) in d.inputs.iter().enumerate() {
        out.push_str(&format!(
            "  input {i}:        {} {} (the group's own {})\n",
            input.outpoint,
            btc(input.amount_sat),
            group.address()
        ));
    }
    if d.payments.is_empty() {
        out.push_str("  payments:       none (everything returns to the group)\n");
    }
    for p in &d.payments {
        out.push_str(&format!(
            "  PAYS output {}:  {} to {}\n",
            p.vout,
            btc(p.amount_sat),
            p.address
        ));
    }
    for c in &d.change {
        out.push_str(&format!(
            "  change {}:       {} back to the group's {}\n",
            c.vout,
            btc(c.amount_sat),
            group.address()
        ));
    }
    out.push_str(&format!(
        "  fee:            {} ({} sat/vB)\n  leaves group:   {} (payments + fee; what limits count)\n",
        btc(d.fee_sat),
        d.fee_rate_sat_vb(),
        btc(d.outflow_sat())
    ));
    Ok(out)
}
