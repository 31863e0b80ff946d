//! `status`: the coordinator's view of every node's health (operator certificate).

use crate::cli::ConnectionArgs;
use crate::client::{self, ClientRole};
use crate::{display, CtlError};

/// Runs `status`.
pub async fn run(conn: ConnectionArgs) -> Result<(), CtlError> {
    let conn = conn.resolve(ClientRole::Operator)?;
    let status = client::cluster_status(&conn).await?;
    say!("coordinator {} at {}", status.coordinator_id, conn.endpoint);
    for n in &status.nodes {
        say!("{}", display::describe_member_health(n));
    }
    Ok(())
}
