//! The client side's own cryptography: signing a withdrawal request with the
//! custody key and an approval with an approver key, and checking a FROST
//! signature locally rather than trusting the coordinator's word.

use ed25519_dalek::{Signer, SigningKey};
use permafrost_core::policy::approval_message;
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

/// Checks a signed status locally: the coordinator is not trusted, so the
/// 65-byte signature must verify over `expected_message` under the group key.
pub fn verify_signed(
    status: &pb::WithdrawalStatus,
    expected_message: &[u8],
) -> Result<(), CtlError> {
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
