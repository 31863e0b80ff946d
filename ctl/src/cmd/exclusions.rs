//! `keygroup exclusions | clear-exclusion`: members excluded for sending
//! invalid signature shares, with the evidence, and letting one sign again.

use std::path::Path;

use permafrost_core::ceremony::Operation;
use permafrost_core::{GroupName, NodeId};

use super::keygroup::{matches, spec_for};
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

/// Runs `keygroup clear-exclusion` under an approved clear-exclusion spec.
pub async fn clear(
    spec: &Path,
    group: Option<GroupName>,
    node: Option<NodeId>,
    conn: ConnectionArgs,
) -> Result<(), CtlError> {
    let signed = spec_for(spec, Operation::ClearExclusion)?;
    let s = &signed.spec;
    matches("--group", group.as_ref(), &s.group)?;
    let Some(subject) = &s.subject else {
        return Err(CtlError::Bug(
            "a valid clear-exclusion spec names its member".into(),
        ));
    };
    matches("--node", node.as_ref(), subject)?;
    let conn = conn.resolve(ClientRole::Operator)?;
    let left = client::clear_exclusion(&conn, &signed).await?;
    say!(
        "{subject} may sign for {} again; {} exclusion(s) remain",
        s.group,
        left.len()
    );
    for e in &left {
        say!("  {}", display::describe_exclusion(e));
    }
    Ok(())
}
