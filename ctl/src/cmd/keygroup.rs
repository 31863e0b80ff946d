//! `keygroup create | list | address | refresh | repair`: key-group ceremonies
//! run by the coordinator (operator certificate) under an approved lifecycle
//! spec (`ceremony propose | approve`), and a taproot group's address, derived
//! here from its key. The exclusion commands of the same family are in
//! [`super::exclusions`].

use std::path::Path;

use permafrost_core::ceremony::{Operation, SignedSpec};

use crate::cli::KeygroupCommand;
use crate::client::{self, ClientRole};
use crate::{ceremony, display, taproot, CtlError};

/// The approved spec in `path`, which must be for `operation`.
pub(super) fn spec_for(path: &Path, operation: Operation) -> Result<SignedSpec, CtlError> {
    let signed = ceremony::load(path)?;
    if signed.spec.operation != operation {
        return Err(CtlError::InvalidInput(format!(
            "{} is a {} spec, not a {operation} spec",
            path.display(),
            signed.spec.operation
        )));
    }
    Ok(signed)
}

/// A flag given alongside a spec is a check: it must say what the spec says.
pub(super) fn matches<T: PartialEq + std::fmt::Display>(
    flag: &str,
    given: Option<&T>,
    approved: &T,
) -> Result<(), CtlError> {
    match given {
        Some(g) if g != approved => Err(CtlError::InvalidInput(format!(
            "{flag} {g} differs from the approved spec's {approved}"
        ))),
        _ => Ok(()),
    }
}

/// Runs `keygroup ...`.
pub async fn run(cmd: KeygroupCommand) -> Result<(), CtlError> {
    match cmd {
        KeygroupCommand::Create {
            spec,
            name,
            tier,
            threshold,
            nodes,
            conn,
        } => {
            let signed = spec_for(&spec, Operation::Create)?;
            let s = &signed.spec;
            matches("--name", name.as_ref(), &s.group)?;
            matches("--tier", tier.as_ref(), &s.tier)?;
            matches("--threshold", threshold.as_ref(), &s.threshold)?;
            if !nodes.is_empty() && nodes != s.members {
                return Err(CtlError::InvalidInput(format!(
                    "--nodes {} differs from the approved spec's {}",
                    display::join(&nodes),
                    display::join(&s.members)
                )));
            }
            let conn = conn.resolve(ClientRole::Operator)?;
            let group = client::create_key_group(&conn, &signed).await?;
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
        KeygroupCommand::Refresh { spec, name, conn } => {
            let signed = spec_for(&spec, Operation::Refresh)?;
            matches("--name", name.as_ref(), &signed.spec.group)?;
            let conn = conn.resolve(ClientRole::Operator)?;
            let group = client::refresh_key_group(&conn, &signed).await?;
            say!("refreshed: every member holds a new share; the group key is unchanged");
            say!("{}", display::describe_key_group(&group));
        }
        KeygroupCommand::Recover { name, conn } => {
            let conn = conn.resolve(ClientRole::Operator)?;
            let answer = client::recover_key_group(&conn, &name).await?;
            if answer.committed.is_empty() {
                say!("nothing to finish: no member had missed a refresh commit");
            } else {
                say!(
                    "refresh commit finished on: {}",
                    answer.committed.join(", ")
                );
            }
            if let Some(group) = &answer.group {
                say!("{}", display::describe_key_group(group));
            }
            if !answer.behind.is_empty() {
                return Err(CtlError::Unavailable {
                    call: "Ceremony.RecoverKeyGroup",
                    endpoint: conn.endpoint.clone(),
                    code: tonic::Code::Unavailable,
                    message: format!(
                        "still behind the group's epoch: {} (unreachable, or in need of a repair)",
                        answer.behind.join(", ")
                    ),
                });
            }
        }
        KeygroupCommand::AbortRefresh {
            name,
            ceremony,
            conn,
        } => {
            let conn = conn.resolve(ClientRole::Operator)?;
            let answer = client::abort_refresh(&conn, &name, ceremony.as_deref()).await?;
            if answer.ceremony_id.is_empty() {
                say!("nothing to abort: no member holds a refresh of {name} pending");
                return Ok(());
            }
            say!(
                "refresh {} of {name} aborted: {} promised never to report it",
                answer.ceremony_id,
                answer.promised_by.join(", ")
            );
            if !answer.dropped.is_empty() {
                say!("pending share dropped on: {}", answer.dropped.join(", "));
            }
            if !answer.not_dropped.is_empty() {
                return Err(CtlError::Unavailable {
                    call: "Ceremony.AbortRefresh",
                    endpoint: conn.endpoint.clone(),
                    code: tonic::Code::Unavailable,
                    message: format!(
                        "still holding its pending share: {}; run abort-refresh again when they answer",
                        answer.not_dropped.join("; ")
                    ),
                });
            }
        }
        KeygroupCommand::Repair {
            spec,
            group,
            lost,
            replacement,
            conn,
        } => {
            let signed = spec_for(&spec, Operation::Repair)?;
            let s = &signed.spec;
            matches("--group", group.as_ref(), &s.group)?;
            let (Some(approved_lost), Some(approved_replacement)) = (&s.subject, &s.replacement)
            else {
                return Err(CtlError::Bug("a valid repair spec names both nodes".into()));
            };
            matches("--lost", lost.as_ref(), approved_lost)?;
            matches("--replacement", replacement.as_ref(), approved_replacement)?;
            let conn = conn.resolve(ClientRole::Operator)?;
            let repaired = client::repair_key_group(&conn, &signed).await?;
            say!("repaired: {approved_replacement} holds {approved_lost}'s share; {approved_lost} is no longer a member (group key unchanged)");
            say!("{}", display::describe_key_group(&repaired));
            say!("next: propose and approve a refresh of {} (permafrostctl ceremony propose --operation refresh), so a stolen copy of the lost share becomes useless", s.group);
        }
        KeygroupCommand::Exclusions { conn } => super::exclusions::list(conn).await?,
        KeygroupCommand::ClearExclusion {
            spec,
            group,
            node,
            conn,
        } => super::exclusions::clear(&spec, group, node, conn).await?,
    }
    Ok(())
}
