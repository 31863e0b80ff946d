//! The coordinator's `Custody` service (custody certificate): submit a signed
//! withdrawal or an approval, and look a withdrawal up.

use permafrost_proto as pb;

use super::Connection;
use crate::CtlError;

/// `Custody.SubmitWithdrawal`.
pub async fn submit_withdrawal(
    conn: &Connection,
    signed: pb::SignedWithdrawal,
) -> Result<pb::WithdrawalStatus, CtlError> {
    Ok(conn
        .custody()?
        .submit_withdrawal(signed)
        .await
        .map_err(conn.failed("Custody.SubmitWithdrawal"))?
        .into_inner())
}

/// `Custody.SubmitApproval`.
pub async fn submit_approval(
    conn: &Connection,
    approval: pb::Approval,
) -> Result<pb::WithdrawalStatus, CtlError> {
    Ok(conn
        .custody()?
        .submit_approval(approval)
        .await
        .map_err(conn.failed("Custody.SubmitApproval"))?
        .into_inner())
}

/// `Custody.GetWithdrawal`.
pub async fn get_withdrawal(
    conn: &Connection,
    request_id: &str,
) -> Result<pb::WithdrawalStatus, CtlError> {
    Ok(conn
        .custody()?
        .get_withdrawal(pb::GetWithdrawalRequest {
            request_id: request_id.to_string(),
        })
        .await
        .map_err(conn.failed("Custody.GetWithdrawal"))?
        .into_inner())
}
