//! The client side's own cryptography: signing a withdrawal request with the
//! custody key and an approval with an approver key, and checking what the
//! cluster signed locally rather than trusting the coordinator's word: a
//! FROST signature over a message group's payload, or every input of a
//! taproot group's signed transaction (BIP340 under the output key this
//! client derived, over the sighash it derived from its own PSBT).

use bitcoin::Transaction;
use ed25519_dalek::{Signer, SigningKey};
use permafrost_core::policy::approval_message;
use permafrost_core::taproot::{decode_withdrawal, GroupOutput};
use permafrost_core::withdrawal::{RequestDigest, WithdrawalRequest};
use permafrost_proto as pb;

use crate::CtlError;

/// Signs a request's canonical digest with the custody key: what every node checks first.
pub fn sign_withdrawal(
    request: &WithdrawalRequest,
    custody_key: &SigningKey,
) -> Result<pb::SignedWithdrawal, CtlError> {
    request
        .validate()
        .map_err(|e| CtlError::InvalidInput(format!("withdrawal request: {e}")))?;
    let signature = custody_key.sign(&request.digest().0);
    Ok(pb::SignedWithdrawal {
        request: Some(request.into()),
        custody_signature: signature.to_bytes().to_vec(),
    })
}

/// An approver's signature over `digest` (the request's canonical digest), bound
/// to the approver id and an expiry: what every node verifies for itself (A2).
pub fn sign_approval(
    request_id: &str,
    digest: &RequestDigest,
    approver_id: &str,
    expires_at: u64,
    approver_key: &SigningKey,
) -> pb::Approval {
    let signature = approver_key.sign(&approval_message(digest, approver_id, expires_at));
    pb::Approval {
        request_id: request_id.to_string(),
        approver_id: approver_id.to_string(),
        expires_at,
        signature: signature.to_bytes().to_vec(),
    }
}

/// Checks a message group's signed status locally: the coordinator is not
/// trusted, so the 65-byte signature must verify over `expected_message`
/// under the group key. A taproot status is checked by
/// [`verify_signed_transaction`] instead.
pub fn verify_signed(
    status: &pb::WithdrawalStatus,
    expected_message: &[u8],
) -> Result<(), CtlError> {
    if !status.tx.is_empty() {
        return Err(CtlError::InvalidInput(format!(
            "withdrawal {} is a signed transaction of a taproot group; check it against the \
             request's PSBT (verify_signed_transaction), not as a message",
            status.request_id
        )));
    }
    if status.message != expected_message {
        return Err(CtlError::BadResponse(format!(
            "withdrawal {}: the coordinator reports a signed message that is not the request payload",
            status.request_id
        )));
    }
    verify_signature(
        &status.group_public_key,
        expected_message,
        &status.signature,
    )
    .map_err(|e| CtlError::BadResponse(format!("withdrawal {}: {e}", status.request_id)))
}

/// Verifies an RFC 9591 FROST(secp256k1, SHA-256) signature.
pub fn verify_signature(
    group_public_key: &[u8],
    message: &[u8],
    signature: &[u8],
) -> Result<(), String> {
    let key = frost_secp256k1::VerifyingKey::deserialize(group_public_key).map_err(|e| {
        format!(
            "group public key ({} bytes) is not a valid key: {e}",
            group_public_key.len()
        )
    })?;
    let sig = frost_secp256k1::Signature::deserialize(signature)
        .map_err(|e| format!("signature ({} bytes) is malformed: {e}", signature.len()))?;
    key.verify(message, &sig)
        .map_err(|e| format!("signature does not verify under the group key: {e}"))
}

/// Checks a taproot group's signed status locally and returns the signed
/// transaction: `status.tx` must be exactly the unsigned transaction of the
/// request's own `psbt` with one key-path witness per input, its txid the one
/// reported, and every input's BIP340 signature must verify, over the sighash
/// derived here from `psbt`, under `group`'s output key as derived here.
pub fn verify_signed_transaction(
    status: &pb::WithdrawalStatus,
    psbt: &[u8],
    group: &GroupOutput,
) -> Result<Transaction, CtlError> {
    let id = &status.request_id;
    let bad = |why: String| CtlError::BadResponse(format!("withdrawal {id}: {why}"));
    crate::taproot::check_status_group(status, group)?;
    let decoded = decode_withdrawal(psbt, group).map_err(|e| {
        bad(format!(
            "reported signed, but its PSBT does not decode for the group: {e}"
        ))
    })?;
    let bytes = hex::decode(status.tx.trim())
        .map_err(|e| bad(format!("the signed transaction is not hex ({e})")))?;
    let tx: Transaction = bitcoin::consensus::encode::deserialize(&bytes)
        .map_err(|e| bad(format!("the signed transaction does not parse: {e}")))?;
    let mut stripped = tx.clone();
    for input in &mut stripped.input {
        input.witness.clear();
    }
    if stripped != decoded.unsigned_tx {
        return Err(bad(
            "the signed transaction is not the request's PSBT transaction (it spends or pays \
             something else); do not broadcast it"
                .into(),
        ));
    }
    let txid = tx.compute_txid().to_string();
    if status.txid != txid {
        return Err(bad(format!(
            "the coordinator reports txid {:?}, the transaction's is {txid}",
            status.txid
        )));
    }
    if !status.input_signatures.is_empty() && status.input_signatures.len() != tx.input.len() {
        return Err(bad(format!(
            "{} input signatures reported for {} inputs",
            status.input_signatures.len(),
            tx.input.len()
        )));
    }
    for (i, (input, sighash)) in tx.input.iter().zip(&decoded.sighashes).enumerate() {
        // A key-path spend with SIGHASH_DEFAULT is one 64-byte element; a
        // 65th byte would name another sighash type than the one derived.
        let signature = match (input.witness.len(), input.witness.nth(0)) {
            (1, Some(sig)) if sig.len() == 64 => sig,
            _ => {
                return Err(bad(format!(
                    "input {i}: the witness is not one 64-byte key-path signature"
                )))
            }
        };
        if let Some(reported) = status.input_signatures.get(i) {
            if reported.as_slice() != signature {
                return Err(bad(format!(
                    "input {i}: the reported signature is not the one in the transaction"
                )));
            }
        }
        group
            .verify(sighash, signature)
            .map_err(|e| bad(format!("input {i}: {e}")))?;
    }
    Ok(tx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::hashes::Hash;
    use bitcoin::key::{Keypair, TapTweak};
    use bitcoin::secp256k1::{Message, Secp256k1, SecretKey};
    use bitcoin::{OutPoint, Txid};
    use permafrost_core::taproot::{Coin, Network};

    /// A one-key "group" (secret 1, the generator): enough to make real
    /// BIP340 signatures under its output key without running FROST.
    fn signer() -> (Keypair, GroupOutput) {
        let secp = Secp256k1::new();
        let mut secret = [0u8; 32];
        secret[31] = 1;
        let sk = SecretKey::from_slice(&secret).expect("key");
        let keypair = Keypair::from_secret_key(&secp, &sk);
        let output = GroupOutput::derive(&sk.public_key(&secp).serialize(), Network::Regtest)
            .expect("derive");
        (keypair, output)
    }

    fn signed_status(psbt: &[u8], keypair: &Keypair, group: &GroupOutput) -> pb::WithdrawalStatus {
        let secp = Secp256k1::new();
        let decoded = decode_withdrawal(psbt, group).expect("decodes");
        let tweaked = keypair.tap_tweak(&secp, None).to_keypair();
        let sigs: Vec<Vec<u8>> = decoded
            .sighashes
            .iter()
            .map(|h| {
                secp.sign_schnorr_no_aux_rand(&Message::from_digest(*h), &tweaked)
                    .serialize()
                    .to_vec()
            })
            .collect();
        let tx = decoded.signed_transaction(&sigs).expect("signed");
        pb::WithdrawalStatus {
            request_id: "wd-1".into(),
            state: pb::WithdrawalState::Signed as i32,
            tx: hex::encode(bitcoin::consensus::encode::serialize(&tx)),
            txid: tx.compute_txid().to_string(),
            input_signatures: sigs,
            output_key: group.output_key().to_vec(),
            ..Default::default()
        }
    }

    fn psbt(group: &GroupOutput) -> Vec<u8> {
        let to = crate::taproot::tests::other_output();
        let coins: Vec<Coin> = (1..=2u8)
            .map(|n| Coin {
                outpoint: OutPoint {
                    txid: Txid::from_byte_array([n; 32]),
                    vout: 0,
                },
                amount_sat: 100_000,
            })
            .collect();
        crate::psbt::build_payment(group, to.address(), 50_000, &coins, 2).expect("builds")
    }

    #[test]
    fn every_input_of_the_signed_transaction_is_checked_here() {
        let (keypair, group) = signer();
        let psbt = psbt(&group);
        let status = signed_status(&psbt, &keypair, &group);
        let tx = verify_signed_transaction(&status, &psbt, &group).expect("verifies");
        assert_eq!(tx.input.len(), 2);

        // A signature swapped between inputs does not verify for its sighash.
        let mut swapped = status.clone();
        let mut tx2: Transaction =
            bitcoin::consensus::encode::deserialize(&hex::decode(&swapped.tx).expect("hex"))
                .expect("tx");
        let (a, b) = (tx2.input[0].witness.clone(), tx2.input[1].witness.clone());
        tx2.input[0].witness = b;
        tx2.input[1].witness = a;
        swapped.tx = hex::encode(bitcoin::consensus::encode::serialize(&tx2));
        swapped.input_signatures.clear();
        let err = verify_signed_transaction(&swapped, &psbt, &group)
            .expect_err("swapped")
            .to_string();
        assert!(err.contains("input 0"), "{err}");
    }

    #[test]
    fn a_transaction_other_than_the_psbt_is_refused() {
        let (keypair, group) = signer();
        let psbt_a = psbt(&group);
        let status = signed_status(&psbt_a, &keypair, &group);
        // The same coins, paying less (more fee): another transaction, validly signed.
        let mut other = bitcoin::psbt::Psbt::deserialize(&psbt_a).expect("psbt");
        other.unsigned_tx.output[0].value = bitcoin::Amount::from_sat(40_000);
        let other_status = signed_status(&other.serialize(), &keypair, &group);
        let err = verify_signed_transaction(&other_status, &psbt_a, &group)
            .expect_err("other tx")
            .to_string();
        assert!(err.contains("not the request's PSBT"), "{err}");

        let mut wrong_txid = status.clone();
        wrong_txid.txid = "00".repeat(32);
        assert!(verify_signed_transaction(&wrong_txid, &psbt_a, &group).is_err());
        // A message-group check of a taproot status says what to do instead.
        let err = verify_signed(&status, &[])
            .expect_err("taproot")
            .to_string();
        assert!(err.contains("verify_signed_transaction"), "{err}");
    }
}
