//! `permafrostctl`: the operator, custody and approver CLI — cluster CA and
//! certificates, Ed25519 request-signing and approver keys, key-group
//! ceremonies, withdrawals and approvals, node seal / unseal, audit-log checks.
//!
//! `main.rs` only parses [`Cli`] and calls [`run`]. The map:
//!
//! - [`cli`]: the clap tree (commands and flags), nothing else.
//! - `cmd`: what each command does, one module per command family (`ca`,
//!   `cert`, `key_file`, `ceremony`, `keygroup`, `exclusions`, `status`, `withdraw`,
//!   `approve`, `node`, `audit`; `group_output` for how withdraw, approve
//!   and get establish a taproot group's output).
//! - [`client`]: the cluster file, connections and every RPC to the
//!   coordinator or a node; shared with the simulations, so both speak to the
//!   cluster the same way.
//! - [`display`]: how wire values are shown to people.
//! - [`approval`]: the request file an approver reviews, checked against the coordinator.
//! - [`ceremony`]: the lifecycle spec file operators propose, approve and submit.
//! - [`taproot`], [`psbt`]: a taproot group's own output derived here from its
//!   key, addresses for its network, PSBTs built, read and described as the
//!   nodes decode them.
//! - [`audit`]: offline audit-log verification.
//! - [`pki`], [`keys`], [`files`]: CA and certificates, Ed25519 key files,
//!   files written with safe permissions.
//! - [`error`]: [`CtlError`], who is at fault, and the one mapping from a gRPC status.

pub mod approval;
pub mod audit;
pub mod ceremony;
pub mod cli;
pub mod client;
mod cmd;
pub mod display;
pub mod error;
pub mod files;
pub mod keys;
pub mod pki;
pub mod psbt;
pub mod taproot;

pub use crate::cli::{
    ApproveArgs, ApproveConnectionArgs, AuditCommand, CaCommand, CeremonyCommand, CertCommand, Cli,
    Command, GroupIdentityArgs, KeyFileCommand, KeygroupCommand, NodeCommand, PassphraseSource,
    ProposeArgs, WithdrawArgs, WithdrawalCommand,
};
pub use crate::cmd::withdraw::random_request_id;
pub use crate::error::CtlError;
/// The custody request-signing key file: same format as every Ed25519 key file here.
pub use crate::keys::{
    generate_key_file as generate_custody_key, load_key_file as load_custody_key,
};

/// Runs one command, printing its result to stdout.
pub async fn run(cli: Cli) -> Result<(), CtlError> {
    match cli.command {
        Command::Ca(c) => cmd::ca::run(c),
        Command::Cert(c) => cmd::cert::run(c),
        Command::CustodyKey(c) => cmd::key_file::run(c, "custody request-signing key"),
        Command::ApproverKey(c) => cmd::key_file::run(c, "approver key"),
        Command::OperatorKey(c) => cmd::key_file::run(c, "operator key"),
        Command::Ceremony(c) => cmd::ceremony::run(c).await,
        Command::Keygroup(c) => cmd::keygroup::run(c).await,
        Command::Status { conn } => cmd::status::run(conn).await,
        Command::Withdraw(args) => cmd::withdraw::run(*args).await,
        Command::Withdrawal(c) => cmd::withdraw::lookup(c).await,
        Command::Approve(args) => cmd::approve::run(*args).await,
        Command::Node(c) => cmd::node::run(c).await,
        Command::Audit(c) => cmd::audit::run(c),
    }
}
