//! Approving a withdrawal as a person: see exactly what is being approved,
//! check that it is what the coordinator holds under that request id, then sign.
//!
//! An approval signs only a 32-byte digest, so an approver who signs whatever
//! digest the coordinator reports approves blind. Instead the requester hands
//! the request itself to the approvers (a [`RequestFile`], written by
//! `permafrostctl withdraw --save-request`); `approve` shows its fields,
//! recomputes the canonical digest (docs/encoding.md) and refuses unless the
//! coordinator reports that same digest.

use std::path::Path;

use permafrost_core::withdrawal::{RequestDigest, WithdrawalRequest};
use permafrost_core::{GroupName, RequestId, Tier};
use permafrost_proto as pb;
use serde::{Deserialize, Serialize};

use crate::display::{from_now, state_name};
use crate::{files, CtlError};

/// A withdrawal request as handed to approvers (JSON): every field of the
/// canonical encoding in readable form, plus the digest for reference.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestFile {
    /// Format version; only 1 exists.
    pub version: u32,
    /// Request id.
    pub request_id: String,
    /// Key group that signs.
    pub key_group: String,
    /// `hot`, `warm` or `cold`.
    pub tier: Tier,
    /// Asset ticker.
    pub asset: String,
    /// Amount in the asset's smallest unit (decimal string: amounts are u128).
    pub amount: String,
    /// Destination address.
    pub destination: String,
    /// The exact bytes FROST will sign, hex.
    pub payload: String,
    /// Unix seconds.
    pub created_at: u64,
    /// Unix seconds.
    pub expires_at: u64,
    /// Who asked for the withdrawal.
    pub requested_by: String,
    /// SHA-256 of the canonical encoding, hex (recomputed on reading; must match).
    pub digest: String,
}

const REQUEST_FILE_VERSION: u32 = 1;

impl RequestFile {
    /// The file form of `request`.
    pub fn from_request(request: &WithdrawalRequest) -> Self {
        Self {
            version: REQUEST_FILE_VERSION,
            request_id: request.request_id.to_string(),
            key_group: request.key_group.to_string(),
            tier: request.tier,
            asset: request.asset.clone(),
            amount: request.amount.to_string(),
            destination: request.destination.clone(),
            payload: hex::encode(&request.payload),
            created_at: request.created_at,
            expires_at: request.expires_at,
            requested_by: request.requested_by.clone(),
            digest: request.digest().to_hex(),
        }
    }

    /// Parses and validates the request, and checks the recorded digest
    /// against the one recomputed from the fields.
    pub fn to_request(&self) -> Result<WithdrawalRequest, String> {
        if self.version != REQUEST_FILE_VERSION {
            return Err(format!(
                "version {} is not supported (only {REQUEST_FILE_VERSION})",
                self.version
            ));
        }
        let request = WithdrawalRequest {
            request_id: RequestId::new(self.request_id.clone())
                .map_err(|e| format!("request_id: {e}"))?,
            key_group: GroupName::new(self.key_group.clone())
                .map_err(|e| format!("key_group: {e}"))?,
            tier: self.tier,
            asset: self.asset.clone(),
            amount: self
                .amount
                .parse()
                .map_err(|_| format!("amount {:?} is not a decimal integer", self.amount))?,
            destination: self.destination.clone(),
            payload: hex::decode(&self.payload).map_err(|e| format!("payload: not hex ({e})"))?,
            created_at: self.created_at,
            expires_at: self.expires_at,
            requested_by: self.requested_by.clone(),
        };
        request.validate().map_err(|e| e.to_string())?;
        let digest = request.digest().to_hex();
        if !self.digest.eq_ignore_ascii_case(&digest) {
            return Err(format!(
                "its fields hash to {digest}, not to the digest {} it records (the file was edited)",
                self.digest
            ));
        }
        Ok(request)
    }

    /// Writes the file (public: it holds no secret).
    pub fn write(&self, path: &Path) -> Result<(), CtlError> {
        let json = serde_json::to_string_pretty(self)
            .map_err(|e| CtlError::Bug(format!("cannot encode the request file: {e}")))?;
        files::write_public(path, format!("{json}\n").as_bytes())
    }

    /// Reads and checks a request file.
    pub fn read(path: &Path) -> Result<WithdrawalRequest, CtlError> {
        let text = files::read_text(path)?;
        let file: RequestFile = serde_json::from_str(&text).map_err(|e| {
            CtlError::InvalidFile(format!("{} is not a request file: {e}", path.display()))
        })?;
        file.to_request()
            .map_err(|e| CtlError::InvalidFile(format!("request file {}: {e}", path.display())))
    }
}

/// Checks that `request` is exactly what the coordinator holds under
/// `request_id` and that it still needs approving; returns the digest to sign.
///
/// The coordinator is not trusted here: if it reports another digest (or
/// another payload), approving would sign something the approver never saw.
pub fn check_request_matches(
    request_id: &str,
    request: &WithdrawalRequest,
    status: &pb::WithdrawalStatus,
) -> Result<RequestDigest, CtlError> {
    if request.request_id.as_str() != request_id {
        return Err(CtlError::InvalidInput(format!(
            "--request {request_id} but the request file is for {}",
            request.request_id
        )));
    }
    if status.request_id != request_id {
        return Err(CtlError::BadResponse(format!(
            "asked for withdrawal {request_id}, got the status of {:?}",
            status.request_id
        )));
    }
    let reported = RequestDigest::from_slice(&status.digest).map_err(|e| {
        CtlError::BadResponse(format!("withdrawal {request_id}: reported digest: {e}"))
    })?;
    let local = request.digest();
    if reported != local {
        return Err(CtlError::BadResponse(format!(
            "the coordinator holds withdrawal {request_id} with digest {}, but the request you were \
             given hashes to {}: it is not the request you reviewed; do not approve it",
            reported.to_hex(),
            local.to_hex()
        )));
    }
    if !status.message.is_empty() && status.message != request.payload {
        return Err(CtlError::BadResponse(format!(
            "withdrawal {request_id}: the coordinator reports a payload that is not the request's; do not approve it"
        )));
    }
    match pb::WithdrawalState::try_from(status.state) {
        Ok(pb::WithdrawalState::Pending) => Ok(local),
        Ok(pb::WithdrawalState::Failed) => Err(CtlError::WithdrawalFailed {
            request_id: request_id.to_string(),
            detail: format!("{} (nothing to approve)", status.detail),
        }),
        _ => Err(CtlError::InvalidInput(format!(
            "withdrawal {request_id} is {}; there is nothing left to approve",
            state_name(status.state)
        ))),
    }
}

/// Human-readable lines describing a request's fields, for the approver to review.
pub fn describe_request(r: &WithdrawalRequest, now: u64) -> String {
    format!(
        "  request id:     {}\n  key group:      {} (tier {})\n  amount:         {} (smallest units of {})\n  destination:    {}\n  requested by:   {}\n  created at:     {}\n  expires at:     {} ({})\n  payload:        {}\n  digest:         {}\n",
        r.request_id,
        r.key_group,
        r.tier,
        r.amount,
        r.asset,
        r.destination,
        r.requested_by,
        r.created_at,
        r.expires_at,
        from_now(r.expires_at, now),
        hex::encode(&r.payload),
        r.digest().to_hex(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> WithdrawalRequest {
        WithdrawalRequest {
            request_id: RequestId::new("wd-1").expect("id"),
            key_group: GroupName::new("cold-1").expect("group"),
            tier: Tier::Cold,
            asset: "BTC".into(),
            amount: 200_000_000,
            destination: "bc1qwarmwallet".into(),
            payload: vec![7; 32],
            created_at: 1_000,
            expires_at: 5_000,
            requested_by: "custody-1".into(),
        }
    }

    fn pending(r: &WithdrawalRequest) -> pb::WithdrawalStatus {
        pb::WithdrawalStatus {
            request_id: r.request_id.to_string(),
            state: pb::WithdrawalState::Pending as i32,
            digest: r.digest().0.to_vec(),
            message: r.payload.clone(),
            approvals_missing: 2,
            ..Default::default()
        }
    }

    #[test]
    fn matching_request_yields_its_digest() {
        let r = request();
        let digest = check_request_matches("wd-1", &r, &pending(&r)).expect("matches");
        assert_eq!(digest, r.digest());
    }

    #[test]
    fn coordinator_reporting_another_digest_is_refused() {
        let reviewed = request();
        // The coordinator holds a request to another destination under the same id.
        let mut swapped = reviewed.clone();
        swapped.destination = "bc1qattacker".into();
        let err = check_request_matches("wd-1", &reviewed, &pending(&swapped))
            .expect_err("digest differs")
            .to_string();
        assert!(err.contains("do not approve"), "{err}");
        assert!(err.contains(&swapped.digest().to_hex()), "{err}");
    }

    #[test]
    fn wrong_payload_or_short_digest_is_refused() {
        let r = request();
        let mut status = pending(&r);
        status.message = vec![8; 32];
        assert!(check_request_matches("wd-1", &r, &status).is_err());
        let mut status = pending(&r);
        status.digest.truncate(31);
        let err = check_request_matches("wd-1", &r, &status).expect_err("short");
        assert!(err.to_string().contains("31 bytes"), "{err}");
    }

    #[test]
    fn request_file_for_another_id_or_settled_request_is_refused() {
        let r = request();
        let err = check_request_matches("wd-2", &r, &pending(&r)).expect_err("other id");
        assert!(err.to_string().contains("wd-2"), "{err}");
        let mut signed = pending(&r);
        signed.state = pb::WithdrawalState::Signed as i32;
        let err = check_request_matches("wd-1", &r, &signed).expect_err("signed");
        assert!(err.to_string().contains("nothing left to approve"), "{err}");
    }

    #[test]
    fn request_file_round_trips_and_detects_edits() {
        let r = request();
        let file = RequestFile::from_request(&r);
        assert_eq!(file.to_request().expect("round trip"), r);
        let json = serde_json::to_string(&file).expect("json");
        let back: RequestFile = serde_json::from_str(&json).expect("parse");
        assert_eq!(back.to_request().expect("parsed"), r);

        let mut edited = file.clone();
        edited.amount = "900000000".into();
        let err = edited.to_request().expect_err("edited");
        assert!(err.contains("was edited"), "{err}");

        let mut future = file;
        future.version = 2;
        assert!(future.to_request().is_err());
    }
}
