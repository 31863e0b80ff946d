//! `ceremony propose | show | approve | submit`: key-lifecycle specs an
//! operator quorum approves (docs/ceremony-spec.md). The spec file is the
//! thing reviewed; [`crate::ceremony`] reads, checks and writes it.

use permafrost_core::ceremony::Operation;

use crate::ceremony::{self, Change, CurrentGroup};
use crate::cli::{CeremonyCommand, ProposeArgs};
use crate::client::{self, ClientRole, Submitted};
use crate::{display, keys, CtlError};

/// Runs `ceremony ...`.
pub async fn run(cmd: CeremonyCommand) -> Result<(), CtlError> {
    match cmd {
        CeremonyCommand::Propose(args) => propose(*args).await,
        CeremonyCommand::Show { spec } => {
            let signed = ceremony::load(&spec)?;
            say!("{}", ceremony::describe(&signed));
            Ok(())
        }
        CeremonyCommand::Approve {
            spec,
            key,
            operator_id,
        } => {
            let mut signed = ceremony::load(&spec)?;
            let key = keys::load_key_file(&key)?;
            // What the operator is about to sign, before it is signed.
            eprintln!("{}", ceremony::describe(&signed));
            ceremony::approve(&mut signed, &operator_id, &key)?;
            ceremony::save(&spec, &signed)?;
            say!(
                "approved as {operator_id}: {} approval(s) on {} (digest {})",
                signed.approvals.len(),
                spec.display(),
                signed.spec.digest()
            );
            Ok(())
        }
        CeremonyCommand::Submit { spec, conn } => {
            let signed = ceremony::load(&spec)?;
            let conn = conn.resolve(ClientRole::Operator)?;
            match client::submit(&conn, &signed).await? {
                Submitted::Group(group) => {
                    say!("{} done", signed.spec.operation);
                    say!("{}", display::describe_key_group(&group));
                    if signed.spec.operation == Operation::Repair {
                        say!("next: propose and approve a refresh of {}, so a stolen copy of the lost share becomes useless", group.name);
                    }
                }
                Submitted::Exclusions(left) => {
                    say!("exclusion cleared; {} remain", left.len());
                    for e in &left {
                        say!("  {}", display::describe_exclusion(e));
                    }
                }
            }
            Ok(())
        }
    }
}

fn required<T>(value: Option<T>, flag: &str, operation: Operation) -> Result<T, CtlError> {
    value.ok_or_else(|| CtlError::InvalidInput(format!("{operation} needs {flag}")))
}

async fn propose(args: ProposeArgs) -> Result<(), CtlError> {
    if args.out.exists() {
        return Err(CtlError::InvalidInput(format!(
            "{} already exists; refusing to overwrite a spec",
            args.out.display()
        )));
    }
    let op = args.operation;
    let change = match op {
        Operation::Create => {
            if args.nodes.is_empty() {
                return Err(CtlError::InvalidInput("create needs --nodes".into()));
            }
            Change::Create {
                tier: required(args.tier, "--tier", op)?,
                threshold: required(args.threshold, "--threshold", op)?,
                members: args.nodes.clone(),
            }
        }
        Operation::Refresh => Change::Refresh,
        Operation::Retire => Change::Retire,
        Operation::Repair => Change::Repair {
            lost: required(args.lost.clone(), "--lost", op)?,
            replacement: required(args.replacement.clone(), "--replacement", op)?,
        },
        Operation::RemoveMember => Change::RemoveMember {
            node: required(args.node.clone(), "--node", op)?,
            threshold: required(args.threshold, "--threshold (afterwards)", op)?,
        },
        Operation::ClearExclusion => Change::ClearExclusion {
            node: required(args.node.clone(), "--node", op)?,
        },
        Operation::ChangeRegistry => Change::ChangeRegistry {
            registry: ceremony::load_registry(&required(
                args.registry.clone(),
                "--registry FILE (a TOML [operators] section)",
                op,
            )?)?,
        },
    };
    let current = match op {
        Operation::Create => None,
        _ => Some(current_group(&args).await?),
    };
    let signed = ceremony::propose(
        &args.group,
        change,
        current.as_ref(),
        args.proposal_id.clone(),
        args.expires_in,
    )?;
    ceremony::save(&args.out, &signed)?;
    say!("{}", ceremony::describe(&signed));
    say!(
        "wrote {}; each operator checks it and runs: permafrostctl ceremony approve --spec {} --key <operator key> --operator-id <id>",
        args.out.display(),
        args.out.display()
    );
    Ok(())
}

/// The group as it stands: given by hand, or as the coordinator reports it
/// (each approver checks it against their own node; the nodes refuse a spec
/// for any other epoch or key).
async fn current_group(args: &ProposeArgs) -> Result<CurrentGroup, CtlError> {
    if let (Some(epoch), Some(key)) = (args.epoch, &args.group_key) {
        let group_key = hex::decode(key.trim())
            .map_err(|_| CtlError::InvalidInput(format!("--group-key {key:?} is not hex")))?;
        let op = args.operation;
        if args.nodes.is_empty() {
            return Err(CtlError::InvalidInput(format!(
                "{op} by hand needs the current members as --nodes"
            )));
        }
        return Ok(CurrentGroup {
            tier: required(args.tier, "--tier (the group's)", op)?,
            epoch,
            group_key,
            members: args.nodes.clone(),
            threshold: required(args.threshold, "--threshold", op)?,
            registry_seq: args.registry_seq.unwrap_or(0),
            registry_hash: registry_hash(args)?.unwrap_or_default(),
        });
    }
    let conn = args.conn.resolve(ClientRole::Operator)?;
    let g = client::find_key_group(&conn, &args.group).await?;
    eprintln!(
        "{} as the coordinator reports it: epoch {}, key {}; approvers check these against `permafrostctl node status` on their own nodes",
        g.name,
        g.epoch,
        hex::encode(&g.group_public_key)
    );
    let mut current = CurrentGroup::reported(&g)?;
    if let Some(seq) = args.registry_seq {
        current.registry_seq = seq;
    }
    if let Some(hash) = registry_hash(args)? {
        current.registry_hash = hash;
    }
    Ok(current)
}

/// `--registry-hash`, decoded.
fn registry_hash(args: &ProposeArgs) -> Result<Option<Vec<u8>>, CtlError> {
    args.registry_hash
        .as_deref()
        .map(|h| {
            hex::decode(h.trim())
                .ok()
                .filter(|b| b.len() == 32)
                .ok_or_else(|| {
                    CtlError::InvalidInput(format!(
                        "--registry-hash {:?} is not 32 bytes of hex",
                        permafrost_core::error::preview(h)
                    ))
                })
        })
        .transpose()
}
