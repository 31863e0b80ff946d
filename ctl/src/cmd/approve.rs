//! `approve`: approve a pending withdrawal with an approver key, after checking
//! that the coordinator holds exactly the request the approver reviewed.

use permafrost_core::unix_now;

use super::withdraw::report_signature_check;
use crate::approval::{self, RequestFile};
use crate::cli::{ApproveArgs, ConnectionArgs};
use crate::client::{self, ClientRole};
use crate::{display, keys, CtlError};

/// Runs `approve`.
pub async fn run(args: ApproveArgs) -> Result<(), CtlError> {
    if args.expires_in == 0 {
        return Err(CtlError::InvalidInput(
            "--expires-in must be at least 1 second".into(),
        ));
    }
    // Here the client TLS key flag is --tls-key; say so in "missing flag" errors.
    let conn = ConnectionArgs::from(args.conn)
        .resolve(ClientRole::Custody)
        .map_err(|e| match e {
            CtlError::InvalidInput(m) => CtlError::InvalidInput(m.replace("--key", "--tls-key")),
            other => other,
        })?;
    let key = keys::load_key_file(&args.key)?;
    let request = RequestFile::read(&args.request_file)?;
    let status = client::get_withdrawal(&conn, &args.request).await?;
    let digest = approval::check_request_matches(&args.request, &request, &status)?;
    if request.requested_by == args.approver_id {
        return Err(CtlError::InvalidInput(format!(
            "{} requested this withdrawal; approvers may not approve their own request",
            args.approver_id
        )));
    }
    let now = unix_now();
    say!("approving this withdrawal (its digest matches the one the coordinator holds):");
    say!("{}", approval::describe_request(&request, now).trim_end());
    let expires_at = now.saturating_add(args.expires_in);
    let signed = client::sign_approval(&args.request, &digest, &args.approver_id, expires_at, &key);
    let status = client::submit_approval(&conn, signed).await?;
    say!(
        "approval by {} submitted (counts until {expires_at}, {})",
        args.approver_id,
        display::from_now(expires_at, now)
    );
    say!("{}", display::describe_withdrawal(&status).trim_end());
    report_signature_check(&status, Some(&request.payload))
}
