//! `permafrostctl`: the operator, custody and approver CLI — cluster CA and
//! certificates, Ed25519 request-signing and approver keys, key-group
//! ceremonies, withdrawals and approvals, node seal / unseal, audit-log checks.
//!
//! `main.rs` only parses [`Cli`] and calls [`run`]; everything else lives here
//! and in [`client`], so the simulations drive the cluster through the same code.

/// Prints a line to stdout. A closed pipe (`permafrostctl ... | head`) is the
/// reader's choice, not a reason to panic, so write errors are ignored.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

pub mod approval;
pub mod audit;
pub mod client;
pub mod files;
pub mod keys;
pub mod pki;

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};
use ed25519_dalek::VerifyingKey;
use permafrost_core::withdrawal::WithdrawalRequest;
use permafrost_core::{unix_now, GroupName, NodeId, RequestId, Role, Tier};
use rand::RngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::approval::RequestFile;
use crate::audit::ExpectedHead;
use crate::client::{ClientRole, ConnectionArgs, NodeConnectionArgs};

/// The custody request-signing key file: same format as every Ed25519 key file here.
pub use crate::keys::{
    generate_key_file as generate_custody_key, load_key_file as load_custody_key,
};

/// Errors of `permafrostctl`, named for who is at fault and what to do.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// The command line is wrong or asks for something impossible; fix the flags.
    #[error("{0}")]
    Usage(String),
    /// Creating or using the CA or a certificate failed.
    #[error("certificate authority: {0}")]
    Pki(String),
    /// A file could not be read or written.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// A local file (cluster file, key, certificate) is malformed.
    #[error("{0}")]
    Config(String),
    /// A server (the coordinator, or a node for `NodeAdmin`) answered a call with an error status.
    #[error("{call} at {endpoint} failed with status {code:?}: {message}")]
    Rpc {
        /// `Service.Method`.
        call: &'static str,
        /// The server's `host:port`.
        endpoint: String,
        /// gRPC status code.
        code: tonic::Code,
        /// Status message and transport cause.
        message: String,
    },
    /// The coordinator's answer is inconsistent or does not verify; do not trust it.
    #[error("untrustworthy answer from the coordinator: {0}")]
    BadResponse(String),
    /// An audit log does not verify: it was edited, reordered, cut or forged.
    #[error("audit log {} does not verify: {reason}", .path.display())]
    AuditInvalid {
        /// The log file.
        path: PathBuf,
        /// Where and what (`line N: ...`).
        reason: String,
    },
    /// The cluster refused or failed to sign the withdrawal.
    #[error("withdrawal {request_id} failed: {detail}")]
    WithdrawalFailed {
        /// Request id.
        request_id: String,
        /// Why, as the coordinator reports it.
        detail: String,
    },
}

impl CtlError {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        CtlError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

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
    /// the contents of. The call itself needs a custody-role certificate (with --cluster,
    /// the custody credential); the approval's authority comes from your key alone.
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

/// `keygroup ...`
#[derive(Debug, Subcommand)]
pub enum KeygroupCommand {
    /// Run a DKG ceremony across the given nodes; prints the group public key.
    Create {
        /// Group name, e.g. warm-1.
        #[arg(long)]
        name: GroupName,
        /// hot, warm or cold.
        #[arg(long)]
        tier: Tier,
        /// Signers needed.
        #[arg(long)]
        threshold: u32,
        /// Member node ids, comma separated.
        #[arg(long, value_delimiter = ',', required = true)]
        nodes: Vec<NodeId>,
        /// How to reach the coordinator.
        #[command(flatten)]
        conn: ConnectionArgs,
    },
    /// List key groups.
    List {
        /// How to reach the coordinator.
        #[command(flatten)]
        conn: ConnectionArgs,
    },
    /// Proactive refresh: new shares for every member, same group key and threshold.
    Refresh {
        /// Group name.
        #[arg(long)]
        name: GroupName,
        /// How to reach the coordinator.
        #[command(flatten)]
        conn: ConnectionArgs,
    },
    /// Rebuild a permanently lost member's share on a replacement node (same group key); the lost node is revoked.
    Repair {
        /// Group name.
        #[arg(long)]
        group: GroupName,
        /// The member whose share is lost.
        #[arg(long)]
        lost: NodeId,
        /// The node that takes its place (in the manifest, not yet a member).
        #[arg(long)]
        replacement: NodeId,
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
    /// Let an excluded member sign for a group again (after investigating it).
    ClearExclusion {
        /// Group name.
        #[arg(long)]
        group: GroupName,
        /// The excluded node.
        #[arg(long)]
        node: NodeId,
        /// How to reach the coordinator.
        #[command(flatten)]
        conn: ConnectionArgs,
    },
}

/// `withdraw ...`
#[derive(Debug, clap::Args)]
pub struct WithdrawArgs {
    /// Key group that signs, e.g. warm-1.
    #[arg(long)]
    pub group: GroupName,
    /// Tier of that group (nodes check it matches).
    #[arg(long)]
    pub tier: Tier,
    /// Asset ticker, e.g. BTC.
    #[arg(long)]
    pub asset: String,
    /// Amount in the asset's smallest unit (e.g. satoshis).
    #[arg(long)]
    pub amount: u128,
    /// Destination address.
    #[arg(long)]
    pub destination: String,
    /// The exact bytes FROST signs (e.g. a sighash), hex. Default: a demo payload,
    /// SHA-256 of "<destination>:<amount>".
    #[arg(long)]
    pub payload_hex: Option<String>,
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

/// `withdrawal ...`
#[derive(Debug, Subcommand)]
pub enum WithdrawalCommand {
    /// Show a withdrawal's status and signature.
    Get {
        /// Request id.
        #[arg(long)]
        request_id: String,
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
    /// How to reach the coordinator (with --cluster, the custody credential is used).
    #[command(flatten)]
    pub conn: ApproveConnectionArgs,
}

/// The connection flags of [`ConnectionArgs`] for `approve`, where `--key` is
/// the approver key, so the client TLS key is `--tls-key`.
#[derive(Debug, clap::Args)]
pub struct ApproveConnectionArgs {
    /// A cluster.json (from `permafrost-sim up`) giving the endpoint and credentials.
    #[arg(long, value_name = "FILE")]
    pub cluster: Option<PathBuf>,
    /// Which credential of --cluster to use (default: custody).
    #[arg(long = "as", value_enum, value_name = "ROLE")]
    pub as_role: Option<ClientRole>,
    /// Coordinator `host:port` (overrides --cluster).
    #[arg(long, value_name = "HOST:PORT")]
    pub coordinator: Option<String>,
    /// DNS name in the coordinator's certificate, e.g. coord-1.coordinator.permafrost.
    #[arg(long, value_name = "NAME")]
    pub server_name: Option<String>,
    /// Cluster CA certificate (PEM).
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM) of role custody.
    #[arg(long, value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// Client TLS private key (PEM).
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Deadline of one call, seconds.
    #[arg(long, value_name = "SECS", default_value_t = client::DEFAULT_CALL_TIMEOUT.as_secs())]
    pub timeout: u64,
}

impl From<ApproveConnectionArgs> for ConnectionArgs {
    fn from(a: ApproveConnectionArgs) -> Self {
        ConnectionArgs {
            cluster: a.cluster,
            as_role: a.as_role,
            coordinator: a.coordinator,
            server_name: a.server_name,
            ca: a.ca,
            cert: a.cert,
            key: a.tls_key,
            timeout: a.timeout,
        }
    }
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

/// Runs one command, printing its result to stdout.
pub async fn run(cli: Cli) -> Result<(), CtlError> {
    match cli.command {
        Command::Ca(CaCommand::Init { dir, name }) => {
            pki::init_ca(&dir, &name)?;
            say!("created CA {name:?}: {}", dir.join(pki::CA_CERT).display());
            say!(
                "its private key is {}; keep it offline",
                dir.join(pki::CA_KEY).display()
            );
        }
        Command::Cert(CertCommand::Issue {
            ca_dir,
            role,
            id,
            out_dir,
            csr,
            dns,
            ip,
            days,
        }) => {
            let csr_pem = csr.as_deref().map(files::read_text).transpose()?;
            let extra = pki::Extra {
                dns,
                ips: ip,
                days: Some(days),
            };
            pki::issue_to_dir(&ca_dir, role, &id, &extra, csr_pem.as_deref(), &out_dir)?;
            say!(
                "issued {role} certificate for {id}: {}",
                out_dir.join(format!("{id}.pem")).display()
            );
            if csr_pem.is_none() {
                say!(
                    "private key: {}",
                    out_dir.join(format!("{id}.key")).display()
                );
            }
            say!("server name: {}", pki::server_name(role, &id));
        }
        Command::CustodyKey(cmd) => key_file_command(cmd, "custody request-signing key")?,
        Command::ApproverKey(cmd) => key_file_command(cmd, "approver key")?,
        Command::Keygroup(cmd) => keygroup(cmd).await?,
        Command::Status { conn } => {
            let conn = conn.resolve(ClientRole::Operator)?;
            let status = client::cluster_status(&conn).await?;
            say!("coordinator {} at {}", status.coordinator_id, conn.endpoint);
            for n in &status.nodes {
                let health = match (n.reachable, n.sealed) {
                    (true, false) => "ok".to_string(),
                    (true, true) => "SEALED".to_string(),
                    (false, _) => format!("UNREACHABLE: {}", n.last_error),
                };
                say!(
                    "  {:<12} {:<12} {:<22} {health}",
                    n.node_id,
                    n.region,
                    n.endpoint
                );
            }
        }
        Command::Withdraw(args) => withdraw(*args).await?,
        Command::Withdrawal(WithdrawalCommand::Get { request_id, conn }) => {
            let status =
                client::get_withdrawal(&conn.resolve(ClientRole::Custody)?, &request_id).await?;
            say!("{}", client::describe_withdrawal(&status).trim_end());
            report_signature_check(&status, None)?;
        }
        Command::Approve(args) => approve(*args).await?,
        Command::Node(cmd) => node(cmd).await?,
        Command::Audit(AuditCommand::Verify { file, keys, head }) => {
            let report = audit::verify_file(&file, &keys, head.as_ref())?;
            say!(
                "{}: {}",
                file.display(),
                audit::describe_report(&report, !keys.is_empty(), head.is_some()).trim_end()
            );
        }
    }
    Ok(())
}

fn key_file_command(cmd: KeyFileCommand, what: &str) -> Result<(), CtlError> {
    match cmd {
        KeyFileCommand::Generate { out } => {
            let public = keys::generate_key_file(&out)?;
            eprintln!("wrote the {what} to {} (mode 0600)", out.display());
            say!("{}", hex::encode(public.as_bytes()));
        }
        KeyFileCommand::Public { key } => {
            say!(
                "{}",
                hex::encode(keys::load_key_file(&key)?.verifying_key().as_bytes())
            );
        }
    }
    Ok(())
}

async fn keygroup(cmd: KeygroupCommand) -> Result<(), CtlError> {
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
            say!("{}", client::describe_key_group(&group));
            say!("{}", hex::encode(&group.group_public_key));
        }
        KeygroupCommand::List { conn } => {
            let groups = client::list_key_groups(&conn.resolve(ClientRole::Operator)?).await?;
            if groups.is_empty() {
                say!("no key groups");
            }
            for g in &groups {
                say!("{}", client::describe_key_group(g));
            }
        }
        KeygroupCommand::Refresh { name, conn } => {
            let conn = conn.resolve(ClientRole::Operator)?;
            let group = client::refresh_key_group(&conn, &name).await?;
            say!("refreshed: every member holds a new share; the group key is unchanged");
            say!("{}", client::describe_key_group(&group));
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
            say!("{}", client::describe_key_group(&repaired));
            say!("next: permafrostctl keygroup refresh --name {group}, so a stolen copy of the lost share becomes useless");
        }
        KeygroupCommand::Exclusions { conn } => {
            let list = client::list_exclusions(&conn.resolve(ClientRole::Operator)?).await?;
            if list.is_empty() {
                say!("no exclusions");
            }
            for e in &list {
                say!("{}", client::describe_exclusion(e));
            }
        }
        KeygroupCommand::ClearExclusion { group, node, conn } => {
            let conn = conn.resolve(ClientRole::Operator)?;
            let left = client::clear_exclusion(&conn, &group, &node).await?;
            say!(
                "{node} may sign for {group} again; {} exclusion(s) remain",
                left.len()
            );
            for e in &left {
                say!("  {}", client::describe_exclusion(e));
            }
        }
    }
    Ok(())
}

async fn withdraw(args: WithdrawArgs) -> Result<(), CtlError> {
    let conn = args.conn.resolve(ClientRole::Custody)?;
    let key_path = match (&args.custody_key, &conn.cluster) {
        (Some(p), _) => p.clone(),
        (None, Some(c)) => c.custody.signing_key.clone(),
        (None, None) => {
            return Err(CtlError::Usage(
                "--custody-key FILE is required without --cluster".into(),
            ))
        }
    };
    let custody_key = keys::load_key_file(&key_path)?;
    let payload = match &args.payload_hex {
        Some(h) => {
            hex::decode(h.trim()).map_err(|e| CtlError::Usage(format!("--payload-hex: {e}")))?
        }
        None => Sha256::digest(format!("{}:{}", args.destination, args.amount)).to_vec(),
    };
    let request_id = match args.request_id {
        Some(id) => {
            RequestId::new(id).map_err(|e| CtlError::Usage(format!("--request-id: {e}")))?
        }
        None => random_request_id()?,
    };
    let created_at = unix_now();
    let request = WithdrawalRequest {
        request_id,
        key_group: args.group,
        tier: args.tier,
        asset: args.asset,
        amount: args.amount,
        destination: args.destination,
        payload: payload.clone(),
        created_at,
        expires_at: created_at.saturating_add(args.expires_in),
        requested_by: args.requested_by,
    };
    let signed = client::sign_withdrawal(&request, &custody_key)?;
    if let Some(path) = &args.save_request {
        RequestFile::from_request(&request).write(path)?;
        eprintln!(
            "wrote the request to {} for approvers to review",
            path.display()
        );
    }
    let status = client::submit_withdrawal(&conn, signed).await?;
    say!("{}", client::describe_withdrawal(&status).trim_end());
    if status.state == permafrost_proto::WithdrawalState::Pending as i32
        && status.approvals_missing > 0
    {
        let file = args
            .save_request
            .as_ref()
            .map_or("<request file>".to_string(), |p| p.display().to_string());
        say!(
            "approvers: permafrostctl approve --request {} --request-file {file} --key <approver key> --approver-id <id>",
            status.request_id
        );
        if args.save_request.is_none() {
            say!("(rerun with --save-request FILE and the same --request-id to write the request file approvers check)");
        }
    }
    report_signature_check(&status, Some(&payload))
}

async fn approve(args: ApproveArgs) -> Result<(), CtlError> {
    if args.expires_in == 0 {
        return Err(CtlError::Usage(
            "--expires-in must be at least 1 second".into(),
        ));
    }
    // Here the client TLS key flag is --tls-key; say so in "missing flag" errors.
    let conn = ConnectionArgs::from(args.conn)
        .resolve(ClientRole::Custody)
        .map_err(|e| match e {
            CtlError::Usage(m) => CtlError::Usage(m.replace("--key", "--tls-key")),
            other => other,
        })?;
    let key = keys::load_key_file(&args.key)?;
    let request = RequestFile::read(&args.request_file)?;
    let status = client::get_withdrawal(&conn, &args.request).await?;
    let digest = approval::check_request_matches(&args.request, &request, &status)?;
    if request.requested_by == args.approver_id {
        return Err(CtlError::Usage(format!(
            "{} requested this withdrawal; approvers may not approve their own request",
            args.approver_id
        )));
    }
    let now = unix_now();
    say!("approving this withdrawal (its digest matches the one the coordinator holds):");
    say!("{}", approval::describe_request(&request, now).trim_end());
    let expires_at = now.saturating_add(args.expires_in);
    let signed = client::sign_approval(&args.request, &digest, &args.approver_id, expires_at, &key);
    let status = client::submit_approval(&conn, signed).await?;
    say!(
        "approval by {} submitted (counts until {expires_at}, {})",
        args.approver_id,
        client::from_now(expires_at, now)
    );
    say!("{}", client::describe_withdrawal(&status).trim_end());
    report_signature_check(&status, Some(&request.payload))
}

async fn node(cmd: NodeCommand) -> Result<(), CtlError> {
    let status = match cmd {
        NodeCommand::Status { conn } => client::node_status(&conn.resolve()?).await?,
        NodeCommand::Seal { conn } => {
            let status = client::seal_node(&conn.resolve()?).await?;
            say!(
                "node {} sealed: it refuses to sign until unsealed",
                status.node_id
            );
            status
        }
        NodeCommand::Unseal { conn, passphrase } => {
            let conn = conn.resolve()?;
            let status = client::unseal_node(&conn, read_passphrase(&passphrase)?).await?;
            say!("node {} unsealed", status.node_id);
            status
        }
    };
    say!("{}", client::describe_node_status(&status).trim_end());
    Ok(())
}

/// Reads the unseal passphrase from its file (dropping one trailing newline) or variable.
fn read_passphrase(source: &PassphraseSource) -> Result<Zeroizing<String>, CtlError> {
    let (passphrase, from) = match (&source.passphrase_file, &source.passphrase_env) {
        (Some(path), None) => {
            let mut text = Zeroizing::new(files::read_text(path)?);
            for suffix in ["\r\n", "\n"] {
                if text.ends_with(suffix) {
                    let keep = text.len() - suffix.len();
                    text.truncate(keep);
                    break;
                }
            }
            (text, format!("--passphrase-file {}", path.display()))
        }
        (None, Some(var)) => {
            let value = std::env::var(var)
                .map_err(|e| CtlError::Usage(format!("--passphrase-env {var}: {e}")))?;
            (Zeroizing::new(value), format!("--passphrase-env {var}"))
        }
        _ => {
            return Err(CtlError::Usage(
                "give exactly one of --passphrase-file FILE or --passphrase-env VAR".into(),
            ))
        }
    };
    if passphrase.is_empty() {
        return Err(CtlError::Usage(format!("{from}: the passphrase is empty")));
    }
    Ok(passphrase)
}

/// For a signed status, verifies the signature locally and says so; a failed
/// withdrawal becomes an error so scripts see a non-zero exit.
fn report_signature_check(
    status: &permafrost_proto::WithdrawalStatus,
    payload: Option<&[u8]>,
) -> Result<(), CtlError> {
    match permafrost_proto::WithdrawalState::try_from(status.state) {
        Ok(permafrost_proto::WithdrawalState::Signed) => {
            client::verify_signed(status, payload.unwrap_or(&status.message))?;
            say!("verified:         the signature is valid for the signed message under the group key");
            Ok(())
        }
        Ok(permafrost_proto::WithdrawalState::Failed) => Err(CtlError::WithdrawalFailed {
            request_id: status.request_id.clone(),
            detail: status.detail.clone(),
        }),
        _ => {
            say!(
                "not signed yet; check later with: permafrostctl withdrawal get --request-id {}",
                status.request_id
            );
            Ok(())
        }
    }
}

/// A random request id, `wd-` and 16 hex digits.
pub fn random_request_id() -> Result<RequestId, CtlError> {
    let mut bytes = [0u8; 8];
    rand::thread_rng().fill_bytes(&mut bytes);
    RequestId::new(format!("wd-{}", hex::encode(bytes))).map_err(|e| CtlError::Usage(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_names_missing_flags() {
        let err = ConnectionArgs {
            coordinator: Some("127.0.0.1:1".into()),
            timeout: 5,
            ..ConnectionArgs::default()
        }
        .resolve(ClientRole::Operator)
        .expect_err("incomplete");
        let text = err.to_string();
        let missing = text
            .split("missing:")
            .nth(1)
            .expect("lists what is missing");
        assert!(
            missing.contains("--server-name")
                && missing.contains("--ca")
                && !missing.contains("--coordinator")
        );
    }

    fn cluster_file(dir: &Path) -> PathBuf {
        let path = dir.join("cluster.json");
        let json = serde_json::json!({
            "coordinator": {"endpoint": "127.0.0.1:1", "tls_server_name": "coord-1.coordinator.permafrost"},
            "ca_cert": "ca.pem",
            "custody": {"cert": "c.pem", "key": "c.key", "signing_key": "s.key", "signing_public_key": "00"},
            "operator": {"cert": "o.pem", "key": "o.key"},
            "nodes": [{"id": "n1", "region": "eu", "endpoint": "127.0.0.1:7001"}]
        });
        std::fs::write(&path, json.to_string()).expect("write");
        path
    }

    fn node_args(node: &str, cluster: Option<PathBuf>) -> NodeConnectionArgs {
        NodeConnectionArgs {
            node: NodeId::new(node).expect("id"),
            cluster,
            endpoint: None,
            ca: None,
            cert: None,
            key: None,
            timeout: 5,
        }
    }

    #[test]
    fn node_connection_uses_the_node_endpoint_name_and_operator_credential() {
        let dir = tempfile::tempdir().expect("tempdir");
        let conn = node_args("n1", Some(cluster_file(dir.path())))
            .resolve()
            .expect("resolves");
        assert_eq!(conn.endpoint, "127.0.0.1:7001");
        assert_eq!(conn.server_name, "n1.node.permafrost");
        assert_eq!(conn.tls.cert, dir.path().join("o.pem"));
        assert_eq!(conn.tls.key, dir.path().join("o.key"));
    }

    #[test]
    fn node_connection_names_unknown_nodes_and_missing_flags() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = node_args("n9", Some(cluster_file(dir.path())))
            .resolve()
            .expect_err("unknown node")
            .to_string();
        assert!(
            err.contains("n9") && err.contains("known nodes: n1"),
            "{err}"
        );
        let err = node_args("n1", None)
            .resolve()
            .expect_err("no flags")
            .to_string();
        assert!(
            err.contains("--endpoint") && err.contains("--cert"),
            "{err}"
        );
    }

    #[test]
    fn passphrase_file_drops_one_newline_and_refuses_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("pass");
        std::fs::write(&path, "correct horse battery\n").expect("write");
        let source = PassphraseSource {
            passphrase_file: Some(path.clone()),
            passphrase_env: None,
        };
        assert_eq!(
            read_passphrase(&source).expect("read").as_str(),
            "correct horse battery"
        );
        std::fs::write(&path, "\n").expect("write");
        let err = read_passphrase(&source).expect_err("empty").to_string();
        assert!(
            err.contains("empty") && err.contains("--passphrase-file"),
            "{err}"
        );
    }

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
