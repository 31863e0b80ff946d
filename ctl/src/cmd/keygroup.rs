//! `keygroup create | list | address | refresh | repair`: key-group ceremonies
//! run by the coordinator (operator certificate), and a taproot group's
//! address, derived here from its key. The exclusion commands of the same
//! family are in [`super::exclusions`].

use crate::cli::KeygroupCommand;
use crate::client::{self, ClientRole};
use crate::{display, taproot, CtlError};

/// Runs `keygroup ...`.
pub async fn run(cmd: KeygroupCommand) -> Result<(), CtlError> {
    match cmd {
        KeygroupCommand::Create {
            name,
            tier,
            threshold,
            nodes,
            conn,
        } => {
            let conn = conn.resolve(ClientRole::Operator)?;
            let group = client::create_key_group(&conn, &name, tier, threshold, &nodes).await?;
            say!("{}", display::describe_key_group(&group));
            say!("{}", hex::encode(&group.group_public_key));
        }
        KeygroupCommand::List { conn } => {
            let groups = client::list_key_groups(&conn.resolve(ClientRole::Operator)?).await?;
            if groups.is_empty() {
                say!("no key groups");
            }
            // Every taproot group's reported address is checked against its
            // key; a mismatch is shown on its line and fails the command.
            let mut first_bad = None;
            for g in &groups {
                say!("{}", display::describe_key_group(g));
                if let Err(e) = taproot::group_output(g) {
                    say!("  ! {e}");
                    first_bad.get_or_insert(e);
                }
            }
            if let Some(e) = first_bad {
                return Err(e);
            }
        }
        KeygroupCommand::Address { name, conn } => {
            let conn = conn.resolve(ClientRole::Operator)?;
            let group = client::find_key_group(&conn, &name).await?;
            let output = taproot::require_taproot(&group)?;
            say!("{}", output.address());
        }
        KeygroupCommand::Refresh { name, conn } => {
            let conn = conn.resolve(ClientRole::Operator)?;
            let group = client::refresh_key_group(&conn, &name).await?;
            say!("refreshed: every member holds a new share; the group key is unchanged");
            say!("{}", display::describe_key_group(&group));
        }
        KeygroupCommand::Repair {
            group,
            lost,
            replacement,
            conn,
        } => {
            let conn = conn.resolve(ClientRole::Operator)?;
            let repaired = client::repair_key_group(&conn, &group, &lost, &replacement).await?;
            say!("repaired: {replacement} holds {lost}'s share; {lost} is no longer a member (group key unchanged)");
            say!("{}", display::describe_key_group(&repaired));
            say!("next: permafrostctl keygroup refresh --name {group}, so a stolen copy of the lost share becomes useless");
        }
        KeygroupCommand::Exclusions { conn } => super::exclusions::list(conn).await?,
        KeygroupCommand::ClearExclusion { group, node, conn } => {
            super::exclusions::clear(group, node, conn).await?
        }
    }
    Ok(())
}
