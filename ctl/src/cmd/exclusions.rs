//! `keygroup exclusions | clear-exclusion`: members excluded for sending
//! invalid signature shares, with the evidence, and letting one sign again.

use permafrost_core::{GroupName, NodeId};

use crate::cli::ConnectionArgs;
use crate::client::{self, ClientRole};
use crate::{display, CtlError};

/// Runs `keygroup exclusions`.
pub async fn list(conn: ConnectionArgs) -> Result<(), CtlError> {
    let list = client::list_exclusions(&conn.resolve(ClientRole::Operator)?).await?;
    if list.is_empty() {
        say!("no exclusions");
    }
    for e in &list {
        say!("{}", display::describe_exclusion(e));
    }
    Ok(())
}

/// Runs `keygroup clear-exclusion`.
pub async fn clear(group: GroupName, node: NodeId, conn: ConnectionArgs) -> Result<(), CtlError> {
    let conn = conn.resolve(ClientRole::Operator)?;
    let left = client::clear_exclusion(&conn, &group, &node).await?;
    say!(
        "{node} may sign for {group} again; {} exclusion(s) remain",
        left.len()
    );
    for e in &left {
        say!("  {}", display::describe_exclusion(e));
    }
    Ok(())
}
