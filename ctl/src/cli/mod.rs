//! The command line of `permafrostctl`: the clap tree only. What each
//! command does lives in the `cmd` module; the connection flags shared by the
//! commands that call a server are in [`connection`].

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use ed25519_dalek::VerifyingKey;
use permafrost_core::ceremony::Operation;
use permafrost_core::taproot::{parse_coin, Coin, Network};
use permafrost_core::{GroupName, NodeId, Role, Tier};

use crate::audit::{self, ExpectedHead};

pub mod connection;

pub use self::connection::{ApproveConnectionArgs, ConnectionArgs, NodeConnectionArgs};

/// Command line of `permafrostctl`.
#[derive(Debug, Parser)]
#[command(
    name = "permafrostctl",
    about = "Permafrost operator, custody and approver CLI",
    version
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The cluster certificate authority.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Certificates for nodes, the coordinator, custody services and operators.
    #[command(subcommand)]
    Cert(CertCommand),
    /// The custody service's Ed25519 request-signing key.
    #[command(subcommand, name = "custody-key")]
    CustodyKey(KeyFileCommand),
    /// An approver's Ed25519 key (same file format as custody-key); nodes list its public key in their policy.
    #[command(subcommand, name = "approver-key")]
    ApproverKey(KeyFileCommand),
    /// An operator's Ed25519 key (same file format as custody-key); every node lists its
    /// public key in the `[operators.keys]` registry of its config.
    #[command(subcommand, name = "operator-key")]
    OperatorKey(KeyFileCommand),
    /// Key-lifecycle specs: propose one, approve it with an operator key, show it, submit it.
    ///
    /// Every lifecycle operation (create, refresh, repair, remove-member, retire,
    /// clear-exclusion) is a spec naming the group, its current epoch and key, the full
    /// resulting membership, threshold and tier, and an expiry (docs/ceremony-spec.md).
    /// A quorum of registered operators signs it; the coordinator only relays it and
    /// every node checks the quorum itself before its first step.
    #[command(subcommand)]
    Ceremony(CeremonyCommand),
    /// Key groups (operator certificate).
    #[command(subcommand)]
    Keygroup(KeygroupCommand),
    /// Health of the coordinator and every node (operator certificate).
    Status {
        /// How to reach the coordinator.
        #[command(flatten)]
        conn: ConnectionArgs,
    },
    /// Build, sign and submit a withdrawal (custody certificate and key).
    Withdraw(Box<WithdrawArgs>),
    /// Look up withdrawals (custody certificate).
    #[command(subcommand)]
    Withdrawal(WithdrawalCommand),
    /// Approve a pending withdrawal with an approver key, after checking it is the request you reviewed.
    ///
    /// Review the request file the requester gave you (written by `withdraw --save-request`):
    /// amount, asset, destination, key group and requester. `approve` prints those fields,
    /// recomputes the request digest from them and refuses unless the coordinator holds
    /// exactly that digest under --request, so you never sign a digest you have not seen
    /// the contents of. For a taproot group's request, `approve` decodes the PSBT itself,
    /// as every node does, and shows its inputs, payments, change and fee; it refuses a
    /// PSBT the nodes would refuse. The call itself needs a custody-role certificate (with
    /// --cluster, the custody credential); the approval's authority comes from your key alone.
    Approve(Box<ApproveArgs>),
    /// One signer node, directly over mTLS (operator certificate): status, seal, unseal.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Audit logs (offline).
    #[command(subcommand)]
    Audit(AuditCommand),
}

/// `ca ...`
#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Create a new CA (ca.pem, ca.key) in a directory; refuses to overwrite one.
    Init {
        /// Directory for ca.pem and ca.key (keep it offline).
        #[arg(long)]
        dir: PathBuf,
        /// CA common name.
        #[arg(long, default_value = "Permafrost cluster CA")]
        name: String,
    },
}

/// `cert ...`
#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Issue a certificate carrying a role and id; writes OUT/ID.pem (and OUT/ID.key without --csr).
    Issue {
        /// CA directory (ca.pem, ca.key).
        #[arg(long)]
        ca_dir: PathBuf,
        /// Role the certificate grants: node, coordinator, custody or operator.
        #[arg(long)]
        role: Role,
        /// Principal id (node id, coordinator id, custody or operator name).
        #[arg(long)]
        id: String,
        /// Output directory.
        #[arg(long)]
        out_dir: PathBuf,
        /// Certify the key of this CSR (e.g. from `permafrost-node init`) instead of generating one.
        #[arg(long)]
        csr: Option<PathBuf>,
        /// Extra DNS name (repeatable).
        #[arg(long)]
        dns: Vec<String>,
        /// Extra IP address (repeatable).
        #[arg(long)]
        ip: Vec<IpAddr>,
        /// Validity, days.
        #[arg(long, default_value_t = 365)]
        days: i64,
    },
}

/// `custody-key ...` and `approver-key ...`: Ed25519 key files.
#[derive(Debug, Subcommand)]
pub enum KeyFileCommand {
    /// Generate a key: the 32-byte seed as hex into FILE (mode 0600); prints the public key hex.
    Generate {
        /// Where to write the seed; never overwritten.
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the public key hex of a key file.
    Public {
        /// Seed file written by `generate`.
        #[arg(long)]
        key: PathBuf,
    },
}

/// `ceremony ...`
#[derive(Debug, Subcommand)]
pub enum CeremonyCommand {
    /// Write a new, unapproved lifecycle spec to --out for the operators to approve.
    ///
    /// A create names --tier, --threshold and --nodes. Every other operation acts on
    /// the group as it stands: its tier, epoch, key, members and threshold are read
    /// from the coordinator, or given by hand with --epoch, --group-key, --tier,
    /// --threshold and --nodes (then check them against `node status` on your own node).
    Propose(Box<ProposeArgs>),
    /// Print a spec file and what a person must check before approving it.
    Show {
        /// The spec file.
        #[arg(long, value_name = "FILE")]
        spec: PathBuf,
    },
    /// Add your approval to a spec file: your operator key's signature of its digest.
    ///
    /// Prints the spec first. Check each line before you approve: the operation, the
    /// group, its current key (against `permafrostctl node status` on your own node),
    /// the epoch, the membership, threshold and tier afterwards, and the expiry.
    Approve {
        /// The spec file (rewritten with your approval added).
        #[arg(long, value_name = "FILE")]
        spec: PathBuf,
        /// Your operator key (hex seed file from `operator-key generate`).
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// Your operator id, as registered in every node's `[operators.keys]`.
        #[arg(long, value_name = "ID")]
        operator_id: String,
    },
    /// Hand an approved spec to the coordinator, which runs the ceremony it names.
    Submit {
        /// The approved spec file.
        #[arg(long, value_name = "FILE")]
        spec: PathBuf,
        /// How to reach the coordinator.
        #[command(flatten)]
        conn: ConnectionArgs,
    },
}

/// `ceremony propose ...`
#[derive(Debug, clap::Args)]
pub struct ProposeArgs {
    /// create, refresh, repair, remove-member, retire, clear-exclusion or change-registry.
    #[arg(long)]
    pub operation: Operation,
    /// Group name, e.g. warm-1.
    #[arg(long)]
    pub group: GroupName,
    /// Where to write the spec (refuses to overwrite).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// create: hot, warm or cold (by hand: the group's tier).
    #[arg(long)]
    pub tier: Option<Tier>,
    /// create and remove-member: signers needed afterwards (by hand: the group's current threshold otherwise).
    #[arg(long)]
    pub threshold: Option<u16>,
    /// create: member node ids in identifier order (by hand: the current members).
    #[arg(long, value_delimiter = ',')]
    pub nodes: Vec<NodeId>,
    /// repair: the member whose share is lost.
    #[arg(long)]
    pub lost: Option<NodeId>,
    /// repair: the node that takes its place (in the manifest, not yet a member).
    #[arg(long)]
    pub replacement: Option<NodeId>,
    /// remove-member and clear-exclusion: the member concerned.
    #[arg(long)]
    pub node: Option<NodeId>,
    /// change-registry: a TOML file whose `[operators]` section is the group's
    /// new registry (the same section as in the daemons' configs).
    #[arg(long, value_name = "FILE")]
    pub registry: Option<PathBuf>,
    /// change-registry by hand: the group's current registry sequence (0: never changed).
    #[arg(long, requires = "registry_hash")]
    pub registry_seq: Option<u64>,
    /// change-registry by hand: the hash of the registry in force for the group, hex
    /// (`permafrostctl node status` shows it per group).
    #[arg(long, value_name = "HEX", requires = "registry_seq")]
    pub registry_hash: Option<String>,
    /// By hand: the group's current epoch (default: read from the coordinator).
    #[arg(long, requires = "group_key")]
    pub epoch: Option<u64>,
    /// By hand: the group's current 33-byte key, hex.
    #[arg(long, value_name = "HEX", requires = "epoch")]
    pub group_key: Option<String>,
    /// Proposal id (default: random).
    #[arg(long)]
    pub proposal_id: Option<String>,
    /// How long the spec is valid, seconds (at most 7 days).
    #[arg(long, value_name = "SECS", default_value_t = crate::ceremony::DEFAULT_LIFETIME_SECS)]
    pub expires_in: u64,
    /// How to reach the coordinator (to read the group as it stands).
    #[command(flatten)]
    pub conn: ConnectionArgs,
}

/// `keygroup ...`
#[derive(Debug, Subcommand)]
pub enum KeygroupCommand {
    /// Run a DKG ceremony under an approved create spec; prints the group public key.
    /// The other flags are optional checks: each must equal the spec's.
    Create {
        /// The approved create spec (`ceremony propose --operation create`, then `ceremony approve`).
        #[arg(long, value_name = "FILE")]
        spec: PathBuf,
        /// Group name, e.g. warm-1.
        #[arg(long)]
        name: Option<GroupName>,
        /// hot, warm or cold.
        #[arg(long)]
        tier: Option<Tier>,
        /// Signers needed.
        #[arg(long)]
        threshold: Option<u16>,
        /// Member node ids, comma separated.
        #[arg(long, value_delimiter = ',')]
        nodes: Vec<NodeId>,
        /// How to reach the coordinator.
        #[command(flatten)]
        conn: ConnectionArgs,
    },
    /// List key groups (a taproot group's address is checked against its key here).
    List {
        /// How to reach the coordinator.
        #[command(flatten)]
        conn: ConnectionArgs,
    },
    /// Print a taproot group's address: the key-path P2TR output of its key
    /// (BIP341 tweak, no script tree), derived here and checked against what
    /// the coordinator reports. A message group has none.
    Address {
        /// Group name, e.g. warm-1.
        #[arg(long)]
        name: GroupName,
        /// How to reach the coordinator.
        #[command(flatten)]
        conn: ConnectionArgs,
    },
    /// Finish a refresh that some members committed and others missed (K7):
    /// the coordinator sends a committed member's stored certificate to the
    /// rest. Needs no spec (the certificate carries the operators' approval);
    /// harmless when nothing is pending.
    Recover {
        /// Group name, e.g. warm-1.
        #[arg(long)]
        name: GroupName,
        /// How to reach the coordinator.
        #[command(flatten)]
        conn: ConnectionArgs,
    },
    /// Abort a refresh that can never commit (K7): a member that has not
    /// reported it promises never to, and every member holding its new share
    /// drops it; the current shares stay in use. Refused when every member
    /// reported (then `recover` finishes it). Needs no spec: it changes no
    /// current share and no membership.
    AbortRefresh {
        /// Group name, e.g. warm-1.
        #[arg(long)]
        name: GroupName,
        /// Which refresh, when members hold more than one pending (its ceremony id).
        #[arg(long)]
        ceremony: Option<String>,
        /// How to reach the coordinator.
        #[command(flatten)]
        conn: ConnectionArgs,
    },
    /// Proactive refresh under an approved refresh spec: new shares for every member, same group key and threshold.
    Refresh {
        /// The approved refresh spec.
        #[arg(long, value_name = "FILE")]
        spec: PathBuf,
        /// Group name (a check: must equal the spec's).
        #[arg(long)]
        name: Option<GroupName>,
        /// How to reach the coordinator.
        #[command(flatten)]
        conn: ConnectionArgs,
    },
    /// Rebuild a permanently lost member's share on a replacement node under an approved
    /// repair spec (same group key); the lost node is revoked.
    Repair {
        /// The approved repair spec.
        #[arg(long, value_name = "FILE")]
        spec: PathBuf,
        /// Group name (a check: must equal the spec's).
        #[arg(long)]
        group: Option<GroupName>,
        /// The member whose share is lost (a check).
        #[arg(long)]
        lost: Option<NodeId>,
        /// The node that takes its place (a check).
        #[arg(long)]
        replacement: Option<NodeId>,
        /// How to reach the coordinator.
        #[command(flatten)]
        conn: ConnectionArgs,
    },
    /// List members excluded for sending invalid signature shares, with the evidence.
    Exclusions {
        /// How to reach the coordinator.
        #[command(flatten)]
        conn: ConnectionArgs,
    },
    /// Let an excluded member sign for a group again (after investigating it), under an
    /// approved clear-exclusion spec.
    ClearExclusion {
        /// The approved clear-exclusion spec.
        #[arg(long, value_name = "FILE")]
        spec: PathBuf,
        /// Group name (a check: must equal the spec's).
        #[arg(long)]
        group: Option<GroupName>,
        /// The excluded node (a check).
        #[arg(long)]
        node: Option<NodeId>,
        /// How to reach the coordinator.
        #[command(flatten)]
        conn: ConnectionArgs,
    },
}

/// `withdraw ...`
///
/// A taproot group signs a transaction: either built here from
/// `--to`, `--amount`, `--utxo` and `--fee-rate`, or taken from a wallet with
/// `--psbt`. A message group signs `--payload-hex` under the `--asset`,
/// `--amount` and `--destination` labels.
#[derive(Debug, clap::Args)]
pub struct WithdrawArgs {
    /// Key group that signs, e.g. warm-1.
    #[arg(long)]
    pub group: GroupName,
    /// Tier of that group (nodes check it matches).
    #[arg(long)]
    pub tier: Tier,
    /// Asset ticker, e.g. BTC (message groups; a taproot withdrawal is BTC).
    #[arg(long, required_unless_present_any = ["to", "psbt"])]
    pub asset: Option<String>,
    /// Message groups: the amount label, in the asset's smallest unit. With
    /// --to: the payment, sat. With --psbt: optional, must equal what the PSBT pays.
    #[arg(long, required_unless_present = "psbt")]
    pub amount: Option<u128>,
    /// Message groups: the destination label.
    #[arg(long, required_unless_present_any = ["to", "psbt"], conflicts_with_all = ["to", "psbt"])]
    pub destination: Option<String>,
    /// Message groups: the exact bytes FROST signs, hex. Default: a demo
    /// payload, SHA-256 of "<destination>:<amount>".
    #[arg(long, conflicts_with_all = ["to", "psbt"])]
    pub payload_hex: Option<String>,
    /// Taproot groups: pay this address (it must be for the group's network);
    /// the change goes back to the group's own address.
    #[arg(long, value_name = "ADDRESS", conflicts_with = "psbt", requires_all = ["amount", "utxos", "fee_rate"])]
    pub to: Option<String>,
    /// With --to: a coin of the group's to spend (repeatable; every one is spent).
    #[arg(long = "utxo", value_name = "TXID:VOUT:SATS", value_parser = parse_coin, requires = "to")]
    pub utxos: Vec<Coin>,
    /// With --to: the fee rate, sat per virtual byte of the signed transaction.
    #[arg(long, value_name = "SAT_VB", requires = "to")]
    pub fee_rate: Option<u64>,
    /// Taproot groups: an unsigned PSBT from a wallet (binary or base64), with
    /// witness_utxo on every input, e.g. from `walletcreatefundedpsbt`.
    #[arg(long, value_name = "FILE")]
    pub psbt: Option<PathBuf>,
    /// How to establish a taproot group's key and network.
    #[command(flatten)]
    pub group_identity: GroupIdentityArgs,
    /// Request id (default: random). Resubmitting the same request returns the same outcome.
    #[arg(long)]
    pub request_id: Option<String>,
    /// Lifetime of the request, seconds.
    #[arg(long, default_value_t = 3600)]
    pub expires_in: u64,
    /// Custody request-signing key (hex seed file). Default: the one in --cluster.
    #[arg(long)]
    pub custody_key: Option<PathBuf>,
    /// Who asked for the withdrawal (recorded in the request; that person may not approve it).
    #[arg(long, default_value = "custody")]
    pub requested_by: String,
    /// Also write the request to FILE (JSON) for approvers to review and pass to `approve --request-file`.
    #[arg(long, value_name = "FILE")]
    pub save_request: Option<PathBuf>,
    /// How to reach the coordinator.
    #[command(flatten)]
    pub conn: ConnectionArgs,
}

/// A taproot group's key and network given by hand. With --cluster the CLI
/// looks them up with the cluster file's operator credential (and these, when
/// given, must match); without it, a custody-only client names them here. The
/// CLI derives the group's address from them itself either way.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct GroupIdentityArgs {
    /// The key group's 33-byte public key, hex, as `keygroup create` and
    /// `keygroup list` print it (default for `approve` and `withdrawal get`:
    /// the key the coordinator reports for the withdrawal).
    #[arg(long, value_name = "HEX")]
    pub group_key: Option<String>,
    /// The key group's bitcoin network: bitcoin, testnet, signet or regtest.
    #[arg(long, value_name = "NETWORK")]
    pub network: Option<Network>,
}

/// `withdrawal ...`
#[derive(Debug, Subcommand)]
pub enum WithdrawalCommand {
    /// Show a withdrawal's status and signature (a taproot group's signed
    /// transaction is checked against the request's PSBT with --request-file).
    Get {
        /// Request id.
        #[arg(long)]
        request_id: String,
        /// The request file (`withdraw --save-request`): with a PSBT, every
        /// input's signature is checked against it before the transaction is shown as ready.
        #[arg(long, value_name = "FILE")]
        request_file: Option<PathBuf>,
        /// How to establish a taproot group's key and network.
        #[command(flatten)]
        group_identity: GroupIdentityArgs,
        /// How to reach the coordinator.
        #[command(flatten)]
        conn: ConnectionArgs,
    },
}

/// `approve ...`
#[derive(Debug, clap::Args)]
pub struct ApproveArgs {
    /// Request id of the pending withdrawal.
    #[arg(long, value_name = "ID")]
    pub request: String,
    /// The request you reviewed, as the requester handed it to you (`withdraw --save-request`).
    #[arg(long, value_name = "FILE")]
    pub request_file: PathBuf,
    /// Your approver key (hex seed file from `approver-key generate`).
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// Your approver id, as registered in the nodes' policy.
    #[arg(long, value_name = "NAME")]
    pub approver_id: String,
    /// How long the approval counts, seconds.
    #[arg(long, value_name = "SECS", default_value_t = 3600)]
    pub expires_in: u64,
    /// How to establish a taproot group's key and network (to decode the PSBT here).
    #[command(flatten)]
    pub group_identity: GroupIdentityArgs,
    /// How to reach the coordinator (with --cluster, the custody credential is used).
    #[command(flatten)]
    pub conn: ApproveConnectionArgs,
}

/// `node ...`
#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// The node's own view: seal state, key groups, policy hash, audit log head.
    Status {
        /// Which node and how to reach it.
        #[command(flatten)]
        conn: NodeConnectionArgs,
    },
    /// Seal the node: it drops its share key and refuses to sign until unsealed.
    Seal {
        /// Which node and how to reach it.
        #[command(flatten)]
        conn: NodeConnectionArgs,
    },
    /// Unseal the node with the operator passphrase (read from a file or the environment, never argv).
    Unseal {
        /// Which node and how to reach it.
        #[command(flatten)]
        conn: NodeConnectionArgs,
        /// Where the passphrase comes from.
        #[command(flatten)]
        passphrase: PassphraseSource,
    },
}

/// Exactly one place to read an unseal passphrase from.
#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
pub struct PassphraseSource {
    /// File holding the passphrase (one trailing newline is ignored).
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
    /// Environment variable holding the passphrase.
    #[arg(long, value_name = "VAR")]
    pub passphrase_env: Option<String>,
}

/// `audit ...`
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check an audit log's hash chain and signed checkpoints; says where it was tampered with.
    ///
    /// Exit status: 0 if every whole entry verifies, including when the file
    /// ends in a torn tail (bytes without a newline after the last entry: an
    /// interrupted write such as a full disk, not tampering; it is reported,
    /// and the daemon cuts it off and logs `audit_repaired` at its next
    /// start). 1 if an entry was edited, removed, reordered or forged, or the
    /// log is shorter than --head: the error names the line.
    Verify {
        /// The audit log (JSON lines), e.g. <node data dir>/audit.log.
        file: PathBuf,
        /// The writer's Ed25519 identity key, hex (repeatable); checkpoints must be signed by one of them.
        #[arg(long = "key", value_name = "HEX", value_parser = audit::parse_key)]
        keys: Vec<VerifyingKey>,
        /// The writer's reported head, ENTRIES:HASHHEX (from `node status`), to detect truncation.
        #[arg(long, value_name = "ENTRIES:HASHHEX", value_parser = audit::parse_head)]
        head: Option<ExpectedHead>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passphrase_is_never_an_argv_value() {
        use clap::Parser as _;
        assert!(Cli::try_parse_from([
            "permafrostctl",
            "node",
            "unseal",
            "--node",
            "n1",
            "--passphrase",
            "secret",
        ])
        .is_err());
        assert!(Cli::try_parse_from(["permafrostctl", "node", "unseal", "--node", "n1"]).is_err());
    }

    #[test]
    fn cli_parses() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
