//! Approving a withdrawal as a person: see exactly what is being approved,
//! check that it is what the coordinator holds under that request id, then sign.
//!
//! An approval signs only a 32-byte digest, so an approver who signs whatever
//! digest the coordinator reports approves blind. Instead the requester hands
//! the request itself to the approvers (a [`RequestFile`], written by
//! `permafrostctl withdraw --save-request`); `approve` shows its fields,
//! recomputes the canonical digest (docs/encoding.md) and refuses unless the
//! coordinator reports that same digest. A taproot group's request carries
//! its PSBT, which `approve` decodes itself, as every node does, so the
//! approver reads the inputs, payments, change and fee rather than bytes.

use std::path::Path;

use permafrost_core::authz::{decode_request, GroupView};
use permafrost_core::policy::show_amount;
use permafrost_core::taproot::GroupOutput;
use permafrost_core::withdrawal::{RequestDigest, WithdrawalRequest};
use permafrost_core::{GroupName, RequestId, Tier};
use permafrost_proto as pb;
use serde::{Deserialize, Serialize};

use crate::display::{from_now, state_name};
use crate::{files, CtlError};

/// A withdrawal request as handed to approvers (JSON): every field of the
/// canonical encoding in readable form, plus the digest for reference. A
/// file without `psbt` (as every file before taproot groups) is a message
/// request; one with it is a taproot request (encoding version 2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestFile {
    /// Format version; only 1 exists (a `psbt` field does not change it:
    /// files without one read as before).
    pub version: u32,
    /// Request id.
    pub request_id: String,
    /// Key group that signs.
    pub key_group: String,
    /// `hot`, `warm` or `cold`.
    pub tier: Tier,
    /// Asset ticker.
    pub asset: String,
    /// Amount in the asset's smallest unit (decimal string: amounts are u128);
    /// with a PSBT, the payments' label ("0" = none given).
    pub amount: String,
    /// Destination address; with a PSBT, the payment addresses' label ("" = none given).
    pub destination: String,
    /// The exact bytes FROST will sign, hex (message groups; empty with a PSBT).
    pub payload: String,
    /// The unsigned PSBT, base64 as wallets write it (taproot groups).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub psbt: String,
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
            psbt: request
                .psbt
                .as_deref()
                .map(crate::psbt::to_base64)
                .unwrap_or_default(),
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
            psbt: if self.psbt.is_empty() {
                None
            } else {
                Some(crate::psbt::from_base64(&self.psbt).map_err(|e| format!("psbt: {e}"))?)
            },
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
    let local = check_request_digest(request_id, request, status)?;
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

/// Checks that `request` is what the coordinator holds under `request_id`
/// (same id, same digest, same payload), whatever its state; returns the digest.
pub fn check_request_digest(
    request_id: &str,
    request: &WithdrawalRequest,
    status: &pb::WithdrawalStatus,
) -> Result<RequestDigest, CtlError> {
    if request.request_id.as_str() != request_id {
        return Err(CtlError::InvalidInput(format!(
            "withdrawal {request_id} was asked for, but the request file is for {}",
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
    Ok(local)
}

/// Refuses a request with a PSBT that the nodes of its group would refuse:
/// the same decode and label checks every node runs, under `group`, the
/// group's output as derived here. Nothing is approved that the approver was
/// not shown as the nodes will see it. A message request passes unchanged.
pub fn check_for_approval(
    request: &WithdrawalRequest,
    group: Option<&GroupOutput>,
) -> Result<(), CtlError> {
    let Some(_) = &request.psbt else {
        return Ok(());
    };
    let Some(output) = group else {
        return Err(CtlError::Bug(format!(
            "request {} carries a PSBT but no group output was established to decode it",
            request.request_id
        )));
    };
    let view = GroupView {
        name: request.key_group.clone(),
        tier: request.tier,
        active: true,
        taproot: Some(output.clone()),
    };
    decode_request(request, &view).map_err(|e| {
        CtlError::InvalidInput(format!(
            "do not approve withdrawal {}: its PSBT is not one key group {} signs ({e})",
            request.request_id, request.key_group
        ))
    })?;
    Ok(())
}

/// Human-readable lines describing a request's fields, for the approver to
/// review. A request with a PSBT is shown as its decoded transaction (which
/// needs `group`, the group's output as derived here), never as bytes.
pub fn describe_request(
    r: &WithdrawalRequest,
    group: Option<&GroupOutput>,
    now: u64,
) -> Result<String, CtlError> {
    let head = format!(
        "  request id:     {}\n  key group:      {} (tier {})\n",
        r.request_id, r.key_group, r.tier
    );
    let tail = format!(
        "  requested by:   {}\n  created at:     {}\n  expires at:     {} ({})\n",
        r.requested_by,
        r.created_at,
        r.expires_at,
        from_now(r.expires_at, now),
    );
    let digest = format!("  digest:         {}\n", r.digest().to_hex());
    let Some(psbt) = &r.psbt else {
        return Ok(format!(
            "{head}  amount:         {} (smallest units of {})\n  destination:    {}\n{tail}  payload:        {}\n{digest}",
            r.amount,
            r.asset,
            r.destination,
            hex::encode(&r.payload),
        ));
    };
    let group = group.ok_or_else(|| {
        CtlError::Bug(format!(
            "request {} carries a PSBT but no group output was established to decode it",
            r.request_id
        ))
    })?;
    let amount = if r.amount == 0 {
        "none given".to_string()
    } else {
        show_amount(r.amount, &r.asset)
    };
    let destination = if r.destination.is_empty() {
        "none given"
    } else {
        r.destination.as_str()
    };
    let transaction = crate::psbt::describe(psbt, group).map_err(|e| {
        CtlError::InvalidInput(format!(
            "do not approve withdrawal {}: its PSBT does not decode for key group {} ({e})",
            r.request_id, r.key_group
        ))
    })?;
    Ok(format!(
        "{head}  group address:  {} ({}, derived here from the group key)\n  amount label:   {amount}\n  destination:    {destination} (label)\n{tail}  psbt:           {} bytes, decoded here as every node decodes it:\n{transaction}{digest}",
        group.address(),
        group.network(),
        psbt.len(),
    ))
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
            psbt: None,
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

    /// A taproot request: a regtest payment of 150000 sat from warm-1, with change.
    fn psbt_request() -> (WithdrawalRequest, GroupOutput) {
        use bitcoin::hashes::Hash;
        let group = crate::taproot::tests::regtest_group();
        let payee = crate::taproot::tests::other_output();
        let coin = permafrost_core::taproot::Coin {
            outpoint: bitcoin::OutPoint {
                txid: bitcoin::Txid::from_byte_array([9; 32]),
                vout: 0,
            },
            amount_sat: 1_000_000,
        };
        let psbt = crate::psbt::build_payment(&group, payee.address(), 150_000, &[coin], 2)
            .expect("builds");
        let request = WithdrawalRequest {
            request_id: RequestId::new("wd-7").expect("id"),
            key_group: GroupName::new("warm-1").expect("group"),
            tier: Tier::Warm,
            asset: "BTC".into(),
            amount: 150_000,
            destination: payee.address().to_string(),
            payload: Vec::new(),
            psbt: Some(psbt),
            created_at: 1_000,
            expires_at: 5_000,
            requested_by: "custody-1".into(),
        };
        (request, group)
    }

    #[test]
    fn request_file_with_a_psbt_round_trips() {
        let (r, _) = psbt_request();
        let file = RequestFile::from_request(&r);
        assert!(!file.psbt.is_empty() && file.payload.is_empty());
        let json = serde_json::to_string_pretty(&file).expect("json");
        let back: RequestFile = serde_json::from_str(&json).expect("parse");
        assert_eq!(back.to_request().expect("round trip"), r);
        // The digest covers the PSBT: change one byte of it and the file is refused.
        let mut bytes = r.psbt.clone().expect("psbt");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let mut edited = file;
        edited.psbt = crate::psbt::to_base64(&bytes);
        assert!(edited.to_request().is_err());
    }

    #[test]
    fn request_file_without_psbt_field_reads_as_before() {
        // A file as written before taproot groups: no "psbt" key at all.
        let r = request();
        let mut value = serde_json::to_value(RequestFile::from_request(&r)).expect("json");
        assert!(
            value.get("psbt").is_none(),
            "message files keep their old form"
        );
        value.as_object_mut().expect("object").remove("psbt");
        let back: RequestFile = serde_json::from_value(value).expect("old form parses");
        assert_eq!(back.to_request().expect("old file"), r);
    }

    #[test]
    fn approver_sees_payments_change_and_fee_decoded() {
        let (r, group) = psbt_request();
        check_for_approval(&r, Some(&group)).expect("the nodes would accept its shape");
        let text = describe_request(&r, Some(&group), 1_000).expect("decodes");
        let payee = r.destination.clone();
        assert!(
            text.contains("PAYS output 0:  150000 sat (0.00150000 BTC) to "),
            "{text}"
        );
        assert!(text.contains(&payee), "{text}");
        assert!(text.contains("change 1:"), "{text}");
        assert!(text.contains(&group.address().to_string()), "{text}");
        assert!(text.contains("fee:") && text.contains("sat/vB"), "{text}");
        assert!(
            text.contains("input 0:") && text.contains("0.01000000 BTC"),
            "{text}"
        );
        assert!(!text.contains("payload"), "{text}");
        assert!(text.contains(&r.digest().to_hex()), "{text}");
    }

    #[test]
    fn approve_refuses_a_psbt_the_group_would_not_sign() {
        let (r, _) = psbt_request();
        // Decoded for another group, every input is someone else's coin.
        let other = crate::taproot::tests::other_output();
        let err = check_for_approval(&r, Some(&other))
            .expect_err("foreign inputs")
            .to_string();
        assert!(
            err.contains("do not approve") && err.contains("not this group's own output"),
            "{err}"
        );
        assert!(describe_request(&r, Some(&other), 1_000).is_err());
        // A label that is not what the transaction pays is refused too.
        let (mut lying, group) = psbt_request();
        lying.amount = 1;
        let err = check_for_approval(&lying, Some(&group))
            .expect_err("label")
            .to_string();
        assert!(err.contains("amount label"), "{err}");
    }
}
