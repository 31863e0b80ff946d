//! `permafrostctl`: the operator and custody CLI — cluster CA and certificates,
//! the custody request-signing key, key-group ceremonies, withdrawals and status.
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

pub mod client;
pub mod files;
pub mod pki;

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};
use ed25519_dalek::{SigningKey, VerifyingKey};
use permafrost_core::withdrawal::WithdrawalRequest;
use permafrost_core::{unix_now, GroupName, NodeId, RequestId, Role, Tier};
use rand::RngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::client::{ClientRole, ConnectionArgs};

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
    /// The coordinator answered a call with an error status.
    #[error("{call} at {endpoint} failed with status {code:?}: {message}")]
    Rpc {
        /// `Service.Method`.
        call: &'static str,
        /// The coordinator's `host:port`.
        endpoint: String,
        /// gRPC status code.
        code: tonic::Code,
        /// Status message and transport cause.
        message: String,
    },
    /// The coordinator's answer is inconsistent or does not verify; do not trust it.
    #[error("untrustworthy answer from the coordinator: {0}")]
    BadResponse(String),
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
    about = "Permafrost operator and custody CLI",
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
    CustodyKey(CustodyKeyCommand),
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

/// `custody-key ...`
#[derive(Debug, Subcommand)]
pub enum CustodyKeyCommand {
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
    /// Who asked for the withdrawal (recorded in the request).
    #[arg(long, default_value = "custody")]
    pub requested_by: String,
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
        Command::CustodyKey(CustodyKeyCommand::Generate { out }) => {
            let public = generate_custody_key(&out)?;
            eprintln!(
                "wrote the custody signing key to {} (mode 0600)",
                out.display()
            );
            say!("{}", hex::encode(public.as_bytes()));
        }
        Command::CustodyKey(CustodyKeyCommand::Public { key }) => {
            say!(
                "{}",
                hex::encode(load_custody_key(&key)?.verifying_key().as_bytes())
            );
        }
        Command::Keygroup(KeygroupCommand::Create {
            name,
            tier,
            threshold,
            nodes,
            conn,
        }) => {
            let conn = conn.resolve(ClientRole::Operator)?;
            let group = client::create_key_group(&conn, &name, tier, threshold, &nodes).await?;
            say!("{}", client::describe_key_group(&group));
            say!("{}", hex::encode(&group.group_public_key));
        }
        Command::Keygroup(KeygroupCommand::List { conn }) => {
            let groups = client::list_key_groups(&conn.resolve(ClientRole::Operator)?).await?;
            if groups.is_empty() {
                say!("no key groups");
            }
            for g in &groups {
                say!("{}", client::describe_key_group(g));
            }
        }
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
    let custody_key = load_custody_key(&key_path)?;
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
    let status = client::submit_withdrawal(&conn, signed).await?;
    say!("{}", client::describe_withdrawal(&status).trim_end());
    report_signature_check(&status, Some(&payload))
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

/// Generates a custody request-signing key, writes its seed as hex to `out`
/// (0600, never overwriting) and returns the public key.
pub fn generate_custody_key(out: &Path) -> Result<VerifyingKey, CtlError> {
    if out.exists() {
        return Err(CtlError::Usage(format!(
            "{} already exists; refusing to overwrite a key",
            out.display()
        )));
    }
    let mut seed = Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng.fill_bytes(seed.as_mut());
    let key = SigningKey::from_bytes(&seed);
    let seed_hex = Zeroizing::new(hex::encode(seed.as_ref()));
    files::write_private(out, format!("{}\n", seed_hex.as_str()).as_bytes())?;
    Ok(key.verifying_key())
}

/// Reads a custody request-signing key written by [`generate_custody_key`].
pub fn load_custody_key(path: &Path) -> Result<SigningKey, CtlError> {
    let text = Zeroizing::new(files::read_text(path)?);
    let bytes =
        Zeroizing::new(hex::decode(text.trim()).map_err(|_| {
            CtlError::Config(format!("{} does not hold a hex key", path.display()))
        })?);
    let seed: Zeroizing<[u8; 32]> = Zeroizing::new(bytes.as_slice().try_into().map_err(|_| {
        CtlError::Config(format!(
            "{} holds {} bytes, expected a 32-byte Ed25519 seed",
            path.display(),
            bytes.len()
        ))
    })?);
    Ok(SigningKey::from_bytes(&seed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custody_key_round_trips_and_is_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("custody.key");
        let public = generate_custody_key(&path).expect("generate");
        assert_eq!(
            load_custody_key(&path).expect("load").verifying_key(),
            public
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(generate_custody_key(&path).is_err(), "must not overwrite");
    }

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

    #[test]
    fn cli_parses() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
