//! Key groups that hold bitcoin: their scheme, network and address, and what
//! a node reads out of a withdrawal's PSBT before any share leaves (I4).
//!
//! A `taproot` group's coins sit in the key-path P2TR output of its key with
//! the BIP341 tweak and no script tree. A withdrawal carries an unsigned PSBT;
//! [`decode_withdrawal`] is where every node, on its own, decides what that
//! transaction spends and pays: every input must spend this group's own
//! output, every output is either change (back to the group) or a payment,
//! and the fee and every input's BIP341 sighash are derived here, never taken
//! from the request. Policy then runs on the [`DecodedWithdrawal`], so a
//! limit can no longer check a label while the signature covers other bytes.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use bitcoin::hashes::Hash;
use bitcoin::key::{TapTweak, TweakedPublicKey, XOnlyPublicKey};
use bitcoin::psbt::Psbt;
use bitcoin::secp256k1::{self, Secp256k1};
use bitcoin::sighash::{Prevouts, SighashCache, TapSighashType};
use bitcoin::{absolute, Address, Amount, ScriptBuf, Transaction, TxOut, Witness};
use serde::{Deserialize, Serialize};

use crate::CoreError;

/// Largest PSBT a request may carry.
pub const MAX_PSBT: usize = 100_000;
/// Most inputs one withdrawal may spend (one FROST session each).
pub const MAX_INPUTS: usize = 64;
/// Most outputs one withdrawal may have.
pub const MAX_OUTPUTS: usize = 64;
/// Size of a BIP340 signature with SIGHASH_DEFAULT, the whole key-path witness.
const KEY_PATH_SIGNATURE: usize = 64;

/// How a key group signs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// FROST(secp256k1, SHA-256) over opaque bytes (RFC 9591 §6.5). Policy can
    /// only check the request's labels: nothing ties them to the bytes signed.
    #[default]
    Message,
    /// BIP340 Schnorr (FROST(secp256k1, SHA-256-TR)) key-path spends of the
    /// group's own P2TR output; policy runs on the decoded transaction.
    Taproot,
}

impl Scheme {
    /// Lower-case name, as in policy files and status.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Message => "message",
            Scheme::Taproot => "taproot",
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scheme {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self, CoreError> {
        match s {
            "message" => Ok(Scheme::Message),
            "taproot" => Ok(Scheme::Taproot),
            other => Err(CoreError::invalid(
                "scheme",
                format!(
                    "{:?} is not a scheme (message, taproot)",
                    crate::error::preview(other)
                ),
            )),
        }
    }
}

/// The bitcoin network a taproot group's addresses belong to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// Mainnet.
    Bitcoin,
    /// Testnet (v3).
    Testnet,
    /// Signet.
    Signet,
    /// Regtest.
    Regtest,
}

impl Network {
    /// Lower-case name, as in policy files and status.
    pub fn as_str(self) -> &'static str {
        match self {
            Network::Bitcoin => "bitcoin",
            Network::Testnet => "testnet",
            Network::Signet => "signet",
            Network::Regtest => "regtest",
        }
    }

    /// The `bitcoin` crate's network.
    pub fn to_bitcoin(self) -> bitcoin::Network {
        match self {
            Network::Bitcoin => bitcoin::Network::Bitcoin,
            Network::Testnet => bitcoin::Network::Testnet,
            Network::Signet => bitcoin::Network::Signet,
            Network::Regtest => bitcoin::Network::Regtest,
        }
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Network {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self, CoreError> {
        match s {
            "bitcoin" => Ok(Network::Bitcoin),
            "testnet" => Ok(Network::Testnet),
            "signet" => Ok(Network::Signet),
            "regtest" => Ok(Network::Regtest),
            other => Err(CoreError::invalid(
                "network",
                format!(
                    "{:?} is not a network (bitcoin, testnet, signet, regtest)",
                    crate::error::preview(other)
                ),
            )),
        }
    }
}

/// Parses an address and requires it to be for `network` (a mainnet address
/// on a regtest group is refused, naming both).
pub fn parse_address(
    field: &'static str,
    text: &str,
    network: Network,
) -> Result<Address, CoreError> {
    let unchecked = Address::from_str(text).map_err(|e| {
        CoreError::invalid(
            field,
            format!(
                "{:?} is not a bitcoin address: {e}",
                crate::error::preview(text)
            ),
        )
    })?;
    unchecked
        .require_network(network.to_bitcoin())
        .map_err(|_| {
            CoreError::invalid(
                field,
                format!(
                    "{} is not an address for {network}",
                    crate::error::preview(text)
                ),
            )
        })
}

/// A taproot group's own output, derived from its group key by each node itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupOutput {
    network: Network,
    internal_key: XOnlyPublicKey,
    output_key: TweakedPublicKey,
    script_pubkey: ScriptBuf,
    address: Address,
}

impl GroupOutput {
    /// The key-path P2TR output (BIP341 tweak, no script tree) of a group whose
    /// FROST group key is `group_public_key` (33-byte SEC1-compressed).
    pub fn derive(group_public_key: &[u8], network: Network) -> Result<Self, CoreError> {
        let key = secp256k1::PublicKey::from_slice(group_public_key).map_err(|e| {
            CoreError::invalid(
                "group public key",
                format!("not a SEC1 secp256k1 point: {e}"),
            )
        })?;
        let (internal_key, _) = key.x_only_public_key();
        let secp = Secp256k1::verification_only();
        let (output_key, _) = internal_key.tap_tweak(&secp, None);
        let script_pubkey = ScriptBuf::new_p2tr_tweaked(output_key);
        let address = Address::p2tr_tweaked(output_key, network.to_bitcoin());
        Ok(Self {
            network,
            internal_key,
            output_key,
            script_pubkey,
            address,
        })
    }

    /// The group's network.
    pub fn network(&self) -> Network {
        self.network
    }
    /// The untweaked x-only key (the FROST group key, even-Y).
    pub fn internal_key(&self) -> XOnlyPublicKey {
        self.internal_key
    }
    /// The tweaked x-only output key every signature verifies under, 32 bytes.
    pub fn output_key(&self) -> [u8; 32] {
        self.output_key.serialize()
    }
    /// The output script (`OP_1 <output key>`).
    pub fn script_pubkey(&self) -> &ScriptBuf {
        &self.script_pubkey
    }
    /// The address, for the group's network.
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// Verifies a 64-byte BIP340 signature over `sighash` under the output key.
    pub fn verify(&self, sighash: &[u8; 32], signature: &[u8]) -> Result<(), CoreError> {
        let sig = secp256k1::schnorr::Signature::from_slice(signature)
            .map_err(|e| CoreError::invalid("signature", format!("not a BIP340 signature: {e}")))?;
        let msg = secp256k1::Message::from_digest(*sighash);
        Secp256k1::verification_only()
            .verify_schnorr(&sig, &msg, &self.output_key.to_x_only_public_key())
            .map_err(|e| CoreError::refused(format!("signature does not verify: {e}")))
    }
}

/// One input of a decoded withdrawal: this group's coin being spent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpentInput {
    /// `txid:vout`.
    pub outpoint: String,
    /// Its value, sat.
    pub amount_sat: u64,
}

/// An output that pays someone other than the group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payment {
    /// Output index.
    pub vout: u32,
    /// Address, as the group's network writes it.
    pub address: String,
    /// Amount, sat.
    pub amount_sat: u64,
}

/// An output paying the group's own address back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// Output index.
    pub vout: u32,
    /// Amount, sat.
    pub amount_sat: u64,
}

/// What a withdrawal's PSBT does, as this node decoded it.
#[derive(Clone, Debug)]
pub struct DecodedWithdrawal {
    /// Inputs, in order.
    pub inputs: Vec<SpentInput>,
    /// Payments, in output order.
    pub payments: Vec<Payment>,
    /// Change outputs, in output order.
    pub change: Vec<Change>,
    /// Inputs minus outputs, sat.
    pub fee_sat: u64,
    /// Virtual size once every input carries its key-path signature, vbytes.
    pub vsize: u64,
    /// BIP341 key-path sighash (SIGHASH_DEFAULT) of every input, in order.
    pub sighashes: Vec<[u8; 32]>,
    /// The unsigned transaction.
    pub unsigned_tx: Transaction,
    /// Every spent output, in input order (for verification with all prevouts).
    pub prevouts: Vec<TxOut>,
}

impl DecodedWithdrawal {
    /// Sum of the payments, sat.
    pub fn payments_sat(&self) -> u64 {
        self.payments.iter().map(|p| p.amount_sat).sum()
    }

    /// What leaves the group: payments plus fee, sat. Limits and velocity count this.
    pub fn outflow_sat(&self) -> u64 {
        self.payments_sat().saturating_add(self.fee_sat)
    }

    /// Fee rate, sat per vbyte, rounded up.
    pub fn fee_rate_sat_vb(&self) -> u64 {
        self.fee_sat.div_ceil(self.vsize.max(1))
    }

    /// The payment addresses joined by commas, in output order: what a
    /// request's `destination` label must say.
    pub fn destination_label(&self) -> String {
        self.payments
            .iter()
            .map(|p| p.address.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The transaction with one key-path signature per input in its witness.
    pub fn signed_transaction(&self, signatures: &[Vec<u8>]) -> Result<Transaction, CoreError> {
        if signatures.len() != self.unsigned_tx.input.len() {
            return Err(CoreError::invalid(
                "signatures",
                format!(
                    "{} signatures for {} inputs",
                    signatures.len(),
                    self.unsigned_tx.input.len()
                ),
            ));
        }
        let mut tx = self.unsigned_tx.clone();
        for (input, sig) in tx.input.iter_mut().zip(signatures) {
            if sig.len() != KEY_PATH_SIGNATURE {
                return Err(CoreError::invalid(
                    "signatures",
                    format!("a key-path signature is 64 bytes, got {}", sig.len()),
                ));
            }
            input.witness = Witness::from_slice(&[sig.as_slice()]);
        }
        Ok(tx)
    }
}

fn refuse_input(i: usize, why: impl fmt::Display) -> CoreError {
    CoreError::refused(format!("psbt input {i}: {why}"))
}

/// Decodes an unsigned PSBT and checks it spends only `group`'s own output
/// (I4). Refusals name the input or output and the rule.
pub fn decode_withdrawal(
    psbt_bytes: &[u8],
    group: &GroupOutput,
) -> Result<DecodedWithdrawal, CoreError> {
    if psbt_bytes.is_empty() || psbt_bytes.len() > MAX_PSBT {
        return Err(CoreError::invalid(
            "psbt",
            format!("{} bytes, must be 1..={MAX_PSBT}", psbt_bytes.len()),
        ));
    }
    let psbt = Psbt::deserialize(psbt_bytes)
        .map_err(|e| CoreError::invalid("psbt", format!("not a BIP174 PSBT: {e}")))?;
    let tx = &psbt.unsigned_tx;
    if tx.input.is_empty() || tx.input.len() > MAX_INPUTS {
        return Err(CoreError::invalid(
            "psbt",
            format!("{} inputs, must be 1..={MAX_INPUTS}", tx.input.len()),
        ));
    }
    if tx.output.is_empty() || tx.output.len() > MAX_OUTPUTS {
        return Err(CoreError::invalid(
            "psbt",
            format!("{} outputs, must be 1..={MAX_OUTPUTS}", tx.output.len()),
        ));
    }
    if tx.version != bitcoin::transaction::Version::TWO {
        return Err(CoreError::refused(format!(
            "psbt: transaction version {}, only 2 is signed",
            tx.version.0
        )));
    }
    // Nodes cannot judge chain height or time, so a transaction that could
    // only be mined later (or would hide a delay) is not signed.
    if tx.lock_time != absolute::LockTime::ZERO {
        return Err(CoreError::refused(format!(
            "psbt: lock time {} is not 0; time-locked transactions are not signed",
            tx.lock_time
        )));
    }
    let mut seen = BTreeSet::new();
    let mut prevouts = Vec::with_capacity(tx.input.len());
    let mut inputs = Vec::with_capacity(tx.input.len());
    let mut total_in: u64 = 0;
    for (i, (txin, meta)) in tx.input.iter().zip(&psbt.inputs).enumerate() {
        if !seen.insert(txin.previous_output) {
            return Err(refuse_input(
                i,
                format!("spends {} a second time", txin.previous_output),
            ));
        }
        let Some(utxo) = &meta.witness_utxo else {
            return Err(refuse_input(i, "has no witness_utxo"));
        };
        if &utxo.script_pubkey != group.script_pubkey() {
            return Err(refuse_input(
                i,
                format!(
                    "spends {}, which is not this group's own output {}",
                    txin.previous_output,
                    group.address()
                ),
            ));
        }
        if let Some(t) = meta.sighash_type {
            match t.taproot_hash_ty() {
                Ok(TapSighashType::Default) => {}
                _ => {
                    return Err(refuse_input(
                        i,
                        format!("sighash type {t} is not SIGHASH_DEFAULT"),
                    ))
                }
            }
        }
        if let Some(key) = meta.tap_internal_key {
            if key != group.internal_key() {
                return Err(refuse_input(i, "tap_internal_key is not this group's key"));
            }
        }
        if meta.tap_merkle_root.is_some() || !meta.tap_scripts.is_empty() {
            return Err(refuse_input(
                i,
                "names a script tree; the group's output has none",
            ));
        }
        if meta.final_script_witness.is_some() || meta.tap_key_sig.is_some() {
            return Err(refuse_input(i, "is already signed"));
        }
        if !txin.script_sig.is_empty() {
            return Err(refuse_input(
                i,
                "has a script_sig; key-path spends have none",
            ));
        }
        total_in = total_in
            .checked_add(utxo.value.to_sat())
            .ok_or_else(|| CoreError::invalid("psbt", "input amounts overflow"))?;
        inputs.push(SpentInput {
            outpoint: txin.previous_output.to_string(),
            amount_sat: utxo.value.to_sat(),
        });
        prevouts.push(utxo.clone());
    }
    if total_in > Amount::MAX_MONEY.to_sat() {
        return Err(CoreError::invalid("psbt", "inputs exceed 21 million BTC"));
    }
    let mut payments = Vec::new();
    let mut change = Vec::new();
    let mut total_out: u64 = 0;
    for (vout, out) in tx.output.iter().enumerate() {
        let vout = vout as u32;
        let amount_sat = out.value.to_sat();
        total_out = total_out
            .checked_add(amount_sat)
            .ok_or_else(|| CoreError::invalid("psbt", "output amounts overflow"))?;
        if amount_sat < out.script_pubkey.minimal_non_dust().to_sat() {
            return Err(CoreError::refused(format!(
                "psbt output {vout}: {amount_sat} sat is dust (below {} sat)",
                out.script_pubkey.minimal_non_dust().to_sat()
            )));
        }
        if &out.script_pubkey == group.script_pubkey() {
            change.push(Change { vout, amount_sat });
            continue;
        }
        let address = Address::from_script(&out.script_pubkey, group.network().to_bitcoin())
            .map_err(|_| {
                CoreError::refused(format!(
                    "psbt output {vout}: its script is not a standard address; not signed"
                ))
            })?;
        payments.push(Payment {
            vout,
            address: address.to_string(),
            amount_sat,
        });
    }
    let fee_sat = total_in.checked_sub(total_out).ok_or_else(|| {
        CoreError::invalid(
            "psbt",
            format!("outputs ({total_out} sat) exceed inputs ({total_in} sat)"),
        )
    })?;
    let mut cache = SighashCache::new(tx);
    let all = Prevouts::All(&prevouts);
    let mut sighashes = Vec::with_capacity(tx.input.len());
    for i in 0..tx.input.len() {
        let h = cache
            .taproot_key_spend_signature_hash(i, &all, TapSighashType::Default)
            .map_err(|e| refuse_input(i, format!("no sighash: {e}")))?;
        sighashes.push(h.to_byte_array());
    }
    let mut with_witness = tx.clone();
    for input in &mut with_witness.input {
        input.witness = Witness::from_slice(&[[0u8; KEY_PATH_SIGNATURE]]);
    }
    Ok(DecodedWithdrawal {
        inputs,
        payments,
        change,
        fee_sat,
        vsize: with_witness.vsize() as u64,
        sighashes,
        unsigned_tx: tx.clone(),
        prevouts,
    })
}

/// A coin of the group's to spend: where it is and what it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Coin {
    /// The output being spent.
    pub outpoint: bitcoin::OutPoint,
    /// Its value, sat.
    pub amount_sat: u64,
}

/// Builds the unsigned PSBT of a withdrawal from `group`: spends every coin
/// in `coins`, pays `payments`, and sends the rest minus the fee back to the
/// group's own address (no change output if that rest would be dust; it then
/// goes to the fee). The fee is `fee_rate_sat_vb` times the virtual size of
/// the signed transaction, rounded up.
pub fn build_withdrawal(
    group: &GroupOutput,
    coins: &[Coin],
    payments: &[(Address, u64)],
    fee_rate_sat_vb: u64,
) -> Result<Psbt, CoreError> {
    use bitcoin::transaction::Version;
    use bitcoin::{OutPoint, Sequence, TxIn};
    if coins.is_empty() {
        return Err(CoreError::invalid(
            "utxo",
            "at least one coin to spend is needed",
        ));
    }
    let input: Vec<TxIn> = coins
        .iter()
        .map(|c| TxIn {
            previous_output: OutPoint {
                txid: c.outpoint.txid,
                vout: c.outpoint.vout,
            },
            script_sig: ScriptBuf::new(),
            sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
            witness: Witness::new(),
        })
        .collect();
    let mut output: Vec<TxOut> = payments
        .iter()
        .map(|(address, amount)| TxOut {
            value: Amount::from_sat(*amount),
            script_pubkey: address.script_pubkey(),
        })
        .collect();
    let total_in: u64 = coins.iter().map(|c| c.amount_sat).sum();
    let paid: u64 = payments.iter().map(|(_, a)| *a).sum();
    let change_index = output.len();
    output.push(TxOut {
        value: Amount::ZERO,
        script_pubkey: group.script_pubkey().clone(),
    });
    let mut tx = Transaction {
        version: Version::TWO,
        lock_time: absolute::LockTime::ZERO,
        input,
        output,
    };
    let vsize_of = |tx: &Transaction| {
        let mut signed = tx.clone();
        for i in &mut signed.input {
            i.witness = Witness::from_slice(&[[0u8; KEY_PATH_SIGNATURE]]);
        }
        signed.vsize() as u64
    };
    let fee_with_change = fee_rate_sat_vb.saturating_mul(vsize_of(&tx));
    let short = |fee: u64| {
        CoreError::invalid(
            "utxo",
            format!("coins hold {total_in} sat, the payments {paid} sat plus a fee of {fee} sat need more"),
        )
    };
    let rest = total_in
        .checked_sub(paid)
        .and_then(|r| r.checked_sub(fee_with_change))
        .ok_or_else(|| short(fee_with_change))?;
    if rest >= group.script_pubkey().minimal_non_dust().to_sat() {
        tx.output[change_index].value = Amount::from_sat(rest);
    } else {
        tx.output.remove(change_index);
        let fee = fee_rate_sat_vb.saturating_mul(vsize_of(&tx));
        if total_in < paid.saturating_add(fee) {
            return Err(short(fee));
        }
    }
    let mut psbt = Psbt::from_unsigned_tx(tx)
        .map_err(|e| CoreError::invalid("psbt", format!("cannot build: {e}")))?;
    for input in &mut psbt.inputs {
        input.witness_utxo = Some(TxOut {
            value: Amount::ZERO,
            script_pubkey: group.script_pubkey().clone(),
        });
        input.tap_internal_key = Some(group.internal_key());
    }
    for (input, coin) in psbt.inputs.iter_mut().zip(coins) {
        if let Some(utxo) = &mut input.witness_utxo {
            utxo.value = Amount::from_sat(coin.amount_sat);
        }
    }
    Ok(psbt)
}

/// Parses `TXID:VOUT:SATS`, a coin of the group's.
pub fn parse_coin(text: &str) -> Result<Coin, CoreError> {
    let bad = |why: &str| {
        CoreError::invalid(
            "utxo",
            format!(
                "{:?}: {why} (expected TXID:VOUT:SATS)",
                crate::error::preview(text)
            ),
        )
    };
    let mut parts = text.split(':');
    let (Some(txid), Some(vout), Some(sats), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("not three fields"));
    };
    let txid = bitcoin::Txid::from_str(txid).map_err(|_| bad("txid is not 64 hex digits"))?;
    let vout = vout.parse().map_err(|_| bad("vout is not a number"))?;
    let amount_sat = crate::policy::parse_canonical_u64(sats)
        .ok_or_else(|| bad("amount is not a canonical decimal"))?;
    Ok(Coin {
        outpoint: bitcoin::OutPoint { txid, vout },
        amount_sat,
    })
}

#[cfg(test)]
pub(crate) mod tests;
