//! `approve`: approve a pending withdrawal with an approver key, after checking
//! that the coordinator holds exactly the request the approver reviewed and,
//! for a taproot group's request, after decoding its PSBT here as every node
//! does and showing what it spends, pays, returns and leaves as fee.

use permafrost_core::unix_now;

use super::group_output;
use super::withdraw::{report_signature_check, Expected};
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
    let conn_args = ConnectionArgs::from(args.conn);
    // Here the client TLS key flag is --tls-key; say so in "missing flag" errors.
    let conn = conn_args
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
    let group = match &request.psbt {
        None => None,
        Some(_) => Some(
            group_output::establish(
                &conn_args,
                &request.key_group,
                &args.group_identity,
                Some(&status),
            )
            .await?,
        ),
    };
    approval::check_for_approval(&request, group.as_ref())?;
    let now = unix_now();
    let summary = approval::describe_request(&request, group.as_ref(), now)?;
    say!("approving this withdrawal (its digest matches the one the coordinator holds):");
    say!("{}", summary.trim_end());
    let expires_at = now.saturating_add(args.expires_in);
    let signed = client::sign_approval(&args.request, &digest, &args.approver_id, expires_at, &key);
    let status = client::submit_approval(&conn, signed).await?;
    say!(
        "approval by {} submitted (counts until {expires_at}, {})",
        args.approver_id,
        display::from_now(expires_at, now)
    );
    say!("{}", display::describe_withdrawal(&status).trim_end());
    let expected = match (&request.psbt, &group) {
        (Some(psbt), Some(group)) => Expected::Transaction { psbt, group },
        _ => Expected::Message(Some(&request.payload)),
    };
    report_signature_check(&status, expected)
}
