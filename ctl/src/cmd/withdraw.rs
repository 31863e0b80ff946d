//! `withdraw` (build, sign and submit a withdrawal; custody certificate and
//! key) and `withdrawal get` (look one up), with the local check of the
//! signature the cluster returns.

use permafrost_core::withdrawal::WithdrawalRequest;
use permafrost_core::{unix_now, RequestId};
use permafrost_proto as pb;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::approval::RequestFile;
use crate::cli::{WithdrawArgs, WithdrawalCommand};
use crate::client::{self, ClientRole};
use crate::{display, keys, CtlError};

/// Runs `withdraw`.
pub async fn run(args: WithdrawArgs) -> Result<(), CtlError> {
    let conn = args.conn.resolve(ClientRole::Custody)?;
    let key_path = match (&args.custody_key, &conn.cluster) {
        (Some(p), _) => p.clone(),
        (None, Some(c)) => c.custody.signing_key.clone(),
        (None, None) => {
            return Err(CtlError::InvalidInput(
                "--custody-key FILE is required without --cluster".into(),
            ))
        }
    };
    let custody_key = keys::load_key_file(&key_path)?;
    let payload = match &args.payload_hex {
        Some(h) => hex::decode(h.trim())
            .map_err(|e| CtlError::InvalidInput(format!("--payload-hex: {e}")))?,
        None => Sha256::digest(format!("{}:{}", args.destination, args.amount)).to_vec(),
    };
    let request_id = match args.request_id {
        Some(id) => {
            RequestId::new(id).map_err(|e| CtlError::InvalidInput(format!("--request-id: {e}")))?
        }
        None => random_request_id()?,
    };
    let created_at = unix_now();
    let request = WithdrawalRequest {
        request_id,
        key_group: args.group,
        tier: args.tier,
        asset: args.asset,
        amount: args.amount,
        destination: args.destination,
        payload: payload.clone(),
        created_at,
        expires_at: created_at.saturating_add(args.expires_in),
        requested_by: args.requested_by,
    };
    let signed = client::sign_withdrawal(&request, &custody_key)?;
    if let Some(path) = &args.save_request {
        RequestFile::from_request(&request).write(path)?;
        eprintln!(
            "wrote the request to {} for approvers to review",
            path.display()
        );
    }
    let status = client::submit_withdrawal(&conn, signed).await?;
    say!("{}", display::describe_withdrawal(&status).trim_end());
    if status.state == pb::WithdrawalState::Pending as i32 && status.approvals_missing > 0 {
        let file = args
            .save_request
            .as_ref()
            .map_or("<request file>".to_string(), |p| p.display().to_string());
        say!(
            "approvers: permafrostctl approve --request {} --request-file {file} --key <approver key> --approver-id <id>",
            status.request_id
        );
        if args.save_request.is_none() {
            say!("(rerun with --save-request FILE and the same --request-id to write the request file approvers check)");
        }
    }
    report_signature_check(&status, Some(&payload))
}

/// Runs `withdrawal ...`.
pub async fn lookup(cmd: WithdrawalCommand) -> Result<(), CtlError> {
    match cmd {
        WithdrawalCommand::Get { request_id, conn } => {
            let status =
                client::get_withdrawal(&conn.resolve(ClientRole::Custody)?, &request_id).await?;
            say!("{}", display::describe_withdrawal(&status).trim_end());
            report_signature_check(&status, None)
        }
    }
}

/// For a signed status, verifies the signature locally and says so; a failed
/// withdrawal becomes an error so scripts see a non-zero exit.
pub(crate) fn report_signature_check(
    status: &pb::WithdrawalStatus,
    payload: Option<&[u8]>,
) -> Result<(), CtlError> {
    match pb::WithdrawalState::try_from(status.state) {
        Ok(pb::WithdrawalState::Signed) => {
            client::verify_signed(status, payload.unwrap_or(&status.message))?;
            say!("verified:         the signature is valid for the signed message under the group key");
            Ok(())
        }
        Ok(pb::WithdrawalState::Failed) => Err(CtlError::WithdrawalFailed {
            request_id: status.request_id.clone(),
            detail: status.detail.clone(),
        }),
        _ => {
            say!(
                "not signed yet; check later with: permafrostctl withdrawal get --request-id {}",
                status.request_id
            );
            Ok(())
        }
    }
}

/// A random request id, `wd-` and 16 hex digits.
pub fn random_request_id() -> Result<RequestId, CtlError> {
    let mut bytes = [0u8; 8];
    rand::thread_rng().fill_bytes(&mut bytes);
    RequestId::new(format!("wd-{}", hex::encode(bytes))).map_err(|e| CtlError::Bug(e.to_string()))
}
