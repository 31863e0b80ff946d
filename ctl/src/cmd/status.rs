//! `status`: the coordinator's view of every node's health (operator certificate).

use crate::cli::ConnectionArgs;
use crate::client::{self, ClientRole};
use crate::{display, CtlError};

/// Runs `status`.
pub async fn run(conn: ConnectionArgs) -> Result<(), CtlError> {
    let conn = conn.resolve(ClientRole::Operator)?;
    let status = client::cluster_status(&conn).await?;
    say!("coordinator {} at {}", status.coordinator_id, conn.endpoint);
    if status.healthy {
        say!("  healthy");
    } else {
        say!("  UNHEALTHY: {}", status.unhealthy_reason);
    }
    if let Some(s) = &status.store {
        say!(
            "  store: {} commits, {} steps (largest batch {}), {} failed, {} refused busy",
            s.commits,
            s.steps,
            s.max_batch,
            s.failed_commits,
            s.refused_busy
        );
    }
    for n in &status.nodes {
        say!("{}", display::describe_member_health(n));
    }
    Ok(())
}
