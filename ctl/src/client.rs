//! Talking to the coordinator over mTLS gRPC as a custody service or an
//! operator, and to one signer node's `NodeAdmin` service as an operator.
//!
//! A [`Connection`] is resolved either from explicit flags or from a
//! `cluster.json` written by `permafrost-sim up`; the RPC helpers here are
//! shared by the CLI and the simulations so both speak to the cluster the same way.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ed25519_dalek::{Signer, SigningKey};
use permafrost_core::policy::approval_message;
use permafrost_core::withdrawal::{RequestDigest, WithdrawalRequest};
use permafrost_core::{GroupName, NodeId, Role, Tier};
use permafrost_proto::convert::tier_to_wire;
use permafrost_proto::tls::{TlsFiles, TlsMaterial};
use permafrost_proto::{
    self as pb, ceremony_client::CeremonyClient, custody_client::CustodyClient,
    node_admin_client::NodeAdminClient,
};
use serde::{Deserialize, Serialize};
use tonic::transport::{Channel, Endpoint};
use zeroize::Zeroizing;

use crate::files::read_text;
use crate::CtlError;

/// How long to wait for a TCP + TLS connection to the coordinator.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default deadline of one call; a DKG ceremony or a signing with retries can take a while.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// Which credential of a cluster file to present.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ClientRole {
    /// The custody service (withdrawals).
    Custody,
    /// A key-ceremony operator (key groups, cluster status).
    Operator,
}

/// `cluster.json`: what a client needs to reach a running cluster (paths relative to the file).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClusterFile {
    /// The coordinator's endpoint and the TLS name it presents.
    pub coordinator: CoordinatorRef,
    /// Cluster CA certificate.
    pub ca_cert: PathBuf,
    /// Custody-service credentials.
    pub custody: CustodyCredentials,
    /// Operator credentials.
    pub operator: OperatorCredentials,
    /// Signer nodes (informational).
    #[serde(default)]
    pub nodes: Vec<NodeRef>,
    /// Key groups created so far (informational; the coordinator is the source of truth).
    #[serde(default)]
    pub key_groups: Vec<KeyGroupSummary>,
}

/// Where the coordinator listens.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CoordinatorRef {
    /// `host:port`.
    pub endpoint: String,
    /// DNS name in the coordinator's certificate.
    pub tls_server_name: String,
}

/// Custody-service certificate, key and request-signing key.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CustodyCredentials {
    /// Client certificate (role custody).
    pub cert: PathBuf,
    /// Its TLS private key.
    pub key: PathBuf,
    /// Ed25519 request-signing seed, hex.
    pub signing_key: PathBuf,
    /// Ed25519 public key, hex (what nodes list in `custody_keys`).
    pub signing_public_key: String,
}

/// Operator certificate and key.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OperatorCredentials {
    /// Client certificate (role operator).
    pub cert: PathBuf,
    /// Its TLS private key.
    pub key: PathBuf,
}

/// A signer node as listed in a cluster file.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeRef {
    /// Node id.
    pub id: String,
    /// Region.
    pub region: String,
    /// `host:port`.
    pub endpoint: String,
}

/// A key group as reported to people and scripts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyGroupSummary {
    /// Group name.
    pub name: String,
    /// `hot`, `warm` or `cold`.
    pub tier: String,
    /// Signers needed.
    pub threshold: u32,
    /// Member node ids.
    pub members: Vec<String>,
    /// 33-byte SEC1-compressed group key, hex.
    pub group_public_key: String,
}

impl KeyGroupSummary {
    /// From the wire form.
    pub fn from_wire(g: &pb::KeyGroup) -> Self {
        Self {
            name: g.name.clone(),
            tier: tier_name(g.tier).to_string(),
            threshold: g.threshold,
            members: g.members.clone(),
            group_public_key: hex::encode(&g.group_public_key),
        }
    }
}

/// Lower-case name of a wire tier.
pub fn tier_name(tier: i32) -> &'static str {
    match pb::Tier::try_from(tier) {
        Ok(pb::Tier::Hot) => "hot",
        Ok(pb::Tier::Warm) => "warm",
        Ok(pb::Tier::Cold) => "cold",
        _ => "unspecified",
    }
}

/// Lower-case name of a wire withdrawal state.
pub fn state_name(state: i32) -> &'static str {
    match pb::WithdrawalState::try_from(state) {
        Ok(pb::WithdrawalState::Pending) => "pending",
        Ok(pb::WithdrawalState::Signed) => "signed",
        Ok(pb::WithdrawalState::Failed) => "failed",
        _ => "unspecified",
    }
}

impl ClusterFile {
    /// Reads a cluster file and makes its paths absolute (relative to the file's directory).
    pub fn load(path: &Path) -> Result<Self, CtlError> {
        let text = read_text(path)?;
        let mut file: ClusterFile = serde_json::from_str(&text).map_err(|e| {
            CtlError::Config(format!(
                "{} is not a valid cluster file: {e}",
                path.display()
            ))
        })?;
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        for p in [
            &mut file.ca_cert,
            &mut file.custody.cert,
            &mut file.custody.key,
            &mut file.custody.signing_key,
            &mut file.operator.cert,
            &mut file.operator.key,
        ] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        Ok(file)
    }
}

/// Connection flags shared by every command that talks to the coordinator.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ConnectionArgs {
    /// A cluster.json (from `permafrost-sim up`) giving the endpoint and credentials.
    #[arg(long, value_name = "FILE")]
    pub cluster: Option<PathBuf>,
    /// Which credential of --cluster to use (default: operator for ceremony commands, custody for withdrawals).
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
    /// Client certificate (PEM) of role custody or operator.
    #[arg(long, value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// Client private key (PEM).
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Deadline of one call, seconds.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_CALL_TIMEOUT.as_secs())]
    pub timeout: u64,
}

/// Everything needed to open an mTLS channel to the coordinator.
#[derive(Clone, Debug)]
pub struct Connection {
    /// `host:port`.
    pub endpoint: String,
    /// Name verified in the coordinator's certificate.
    pub server_name: String,
    /// CA, client certificate and key.
    pub tls: TlsFiles,
    /// Deadline of one call.
    pub timeout: Duration,
    /// The cluster file it came from, if any.
    pub cluster: Option<ClusterFile>,
}

/// Collects flag values (explicit flag first, then the cluster file) and
/// remembers which are missing, so one error can name them all.
#[derive(Default)]
struct FlagPicker {
    missing: Vec<&'static str>,
}

impl FlagPicker {
    fn pick(
        &mut self,
        flag: &'static str,
        explicit: Option<String>,
        from_file: Option<String>,
    ) -> String {
        let v = explicit.or(from_file);
        if v.is_none() {
            self.missing.push(flag);
        }
        v.unwrap_or_default()
    }
}

fn path_text(p: &Option<PathBuf>) -> Option<String> {
    p.as_ref().map(|p| p.display().to_string())
}

fn call_timeout(secs: u64) -> Result<Duration, CtlError> {
    if secs == 0 {
        return Err(CtlError::Usage(
            "--timeout must be at least 1 second".into(),
        ));
    }
    Ok(Duration::from_secs(secs))
}

impl ConnectionArgs {
    /// Resolves flags (explicit flags win over the cluster file) into a connection as `default_role`.
    pub fn resolve(&self, default_role: ClientRole) -> Result<Connection, CtlError> {
        let cluster = self.cluster.as_deref().map(ClusterFile::load).transpose()?;
        let role = self.as_role.unwrap_or(default_role);
        if self.as_role.is_some() && cluster.is_none() {
            return Err(CtlError::Usage(
                "--as only selects a credential from --cluster FILE".into(),
            ));
        }
        let (c_cert, c_key) = match (&cluster, role) {
            (Some(c), ClientRole::Custody) => {
                (Some(c.custody.cert.clone()), Some(c.custody.key.clone()))
            }
            (Some(c), ClientRole::Operator) => {
                (Some(c.operator.cert.clone()), Some(c.operator.key.clone()))
            }
            (None, _) => (None, None),
        };
        let mut flags = FlagPicker::default();
        let endpoint = flags.pick(
            "--coordinator",
            self.coordinator.clone(),
            cluster.as_ref().map(|c| c.coordinator.endpoint.clone()),
        );
        let server_name = flags.pick(
            "--server-name",
            self.server_name.clone(),
            cluster
                .as_ref()
                .map(|c| c.coordinator.tls_server_name.clone()),
        );
        let ca = flags.pick(
            "--ca",
            path_text(&self.ca),
            cluster.as_ref().map(|c| c.ca_cert.display().to_string()),
        );
        let cert = flags.pick("--cert", path_text(&self.cert), path_text(&c_cert));
        let key = flags.pick("--key", path_text(&self.key), path_text(&c_key));
        if !flags.missing.is_empty() {
            return Err(CtlError::Usage(format!(
                "no way to reach the coordinator: give --cluster FILE, or all of --coordinator, --server-name, --ca, --cert, --key (missing: {})",
                flags.missing.join(", ")
            )));
        }
        Ok(Connection {
            endpoint,
            server_name,
            tls: TlsFiles {
                ca_cert: ca.into(),
                cert: cert.into(),
                key: key.into(),
            },
            timeout: call_timeout(self.timeout)?,
            cluster,
        })
    }
}

/// Connection flags of the commands that talk straight to one signer node
/// (`NodeAdmin`, operator certificate), never through the coordinator.
#[derive(Clone, Debug, clap::Args)]
pub struct NodeConnectionArgs {
    /// Node id, e.g. n1; the node must present the certificate name <ID>.node.permafrost.
    #[arg(long, value_name = "ID")]
    pub node: NodeId,
    /// A cluster.json (from `permafrost-sim up`) giving the node's endpoint and the operator credential.
    #[arg(long, value_name = "FILE")]
    pub cluster: Option<PathBuf>,
    /// The node's `host:port` (overrides --cluster).
    #[arg(long, value_name = "HOST:PORT")]
    pub endpoint: Option<String>,
    /// Cluster CA certificate (PEM).
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Operator client certificate (PEM).
    #[arg(long, value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// Operator client private key (PEM).
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Deadline of one call, seconds.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub timeout: u64,
}

impl NodeConnectionArgs {
    /// Resolves flags (explicit flags win over the cluster file) into an
    /// operator connection to the node's own endpoint.
    pub fn resolve(&self) -> Result<Connection, CtlError> {
        let cluster = self.cluster.as_deref().map(ClusterFile::load).transpose()?;
        let listed = match (&cluster, &self.endpoint) {
            (Some(c), None) => {
                let node = c.nodes.iter().find(|n| n.id == self.node.as_str());
                if node.is_none() {
                    let known: Vec<&str> = c.nodes.iter().map(|n| n.id.as_str()).collect();
                    return Err(CtlError::Usage(format!(
                        "node {} is not listed in --cluster (known nodes: {}); give --endpoint HOST:PORT",
                        self.node,
                        if known.is_empty() { "none".to_string() } else { known.join(", ") }
                    )));
                }
                node.map(|n| n.endpoint.clone())
            }
            _ => None,
        };
        let mut flags = FlagPicker::default();
        let endpoint = flags.pick("--endpoint", self.endpoint.clone(), listed);
        let ca = flags.pick(
            "--ca",
            path_text(&self.ca),
            cluster.as_ref().map(|c| c.ca_cert.display().to_string()),
        );
        let cert = flags.pick(
            "--cert",
            path_text(&self.cert),
            cluster
                .as_ref()
                .map(|c| c.operator.cert.display().to_string()),
        );
        let key = flags.pick(
            "--key",
            path_text(&self.key),
            cluster
                .as_ref()
                .map(|c| c.operator.key.display().to_string()),
        );
        if !flags.missing.is_empty() {
            return Err(CtlError::Usage(format!(
                "no way to reach node {}: give --cluster FILE, or all of --endpoint, --ca, --cert, --key (missing: {})",
                self.node,
                flags.missing.join(", ")
            )));
        }
        Ok(Connection {
            endpoint,
            server_name: crate::pki::server_name(Role::Node, self.node.as_str()),
            tls: TlsFiles {
                ca_cert: ca.into(),
                cert: cert.into(),
                key: key.into(),
            },
            timeout: call_timeout(self.timeout)?,
            cluster,
        })
    }
}

impl Connection {
    /// Connection to a cluster described by a cluster file, presenting `role`'s credential.
    pub fn from_cluster(path: &Path, role: ClientRole) -> Result<Self, CtlError> {
        ConnectionArgs {
            cluster: Some(path.to_path_buf()),
            as_role: Some(role),
            timeout: DEFAULT_CALL_TIMEOUT.as_secs(),
            ..ConnectionArgs::default()
        }
        .resolve(role)
    }

    /// A lazily connecting mTLS channel (errors surface on the first call, with their cause).
    pub fn channel(&self) -> Result<Channel, CtlError> {
        let tls = TlsMaterial::load(&self.tls).map_err(CtlError::Config)?;
        let endpoint = Endpoint::from_shared(format!("https://{}", self.endpoint))
            .map_err(|e| CtlError::Usage(format!("endpoint {:?}: {e}", self.endpoint)))?
            .tls_config(tls.client_config(&self.server_name))
            .map_err(|e| {
                CtlError::Config(format!(
                    "TLS settings for {}: {}",
                    self.endpoint,
                    error_chain(&e)
                ))
            })?
            // Explicit although tonic defaults to it: Nagle stalls small calls ~40 ms.
            .tcp_nodelay(true)
            .connect_timeout(CONNECT_TIMEOUT.min(self.timeout))
            .timeout(self.timeout);
        Ok(endpoint.connect_lazy())
    }

    /// Client of the `Custody` service (needs a custody certificate).
    pub fn custody(&self) -> Result<CustodyClient<Channel>, CtlError> {
        Ok(CustodyClient::new(self.channel()?))
    }

    /// Client of the `Ceremony` service (needs an operator certificate).
    pub fn ceremony(&self) -> Result<CeremonyClient<Channel>, CtlError> {
        Ok(CeremonyClient::new(self.channel()?))
    }

    /// Client of a node's `NodeAdmin` service (needs an operator certificate and a node connection).
    pub fn node_admin(&self) -> Result<NodeAdminClient<Channel>, CtlError> {
        Ok(NodeAdminClient::new(self.channel()?))
    }
}

/// `err` and all its sources, joined by `": "`, skipping repeats.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// Turns a failed call into an error naming the call, the endpoint, the status code and the cause.
pub fn rpc_error(conn: &Connection, call: &'static str, status: tonic::Status) -> CtlError {
    let mut message = status.message().to_string();
    let mut source = std::error::Error::source(&status);
    while let Some(s) = source {
        let text = s.to_string();
        if !message.contains(&text) {
            if !message.is_empty() {
                message.push_str(": ");
            }
            message.push_str(&text);
        }
        source = s.source();
    }
    // A server that rejects our certificate just closes the connection; say what that usually means.
    let dropped = [
        "connection closed",
        "connection reset",
        "broken pipe",
        "stream closed",
    ]
    .iter()
    .any(|m| message.contains(m));
    if dropped
        && matches!(
            status.code(),
            tonic::Code::Unknown | tonic::Code::Cancelled | tonic::Code::Unavailable
        )
    {
        message.push_str(
            " (the server dropped the TLS connection: is the client certificate issued by the cluster CA, and of the role this service admits?)",
        );
    }
    CtlError::Rpc {
        call,
        endpoint: conn.endpoint.clone(),
        code: status.code(),
        message,
    }
}

/// `Ceremony.CreateKeyGroup`: runs a DKG ceremony across `members` and returns the active group.
pub async fn create_key_group(
    conn: &Connection,
    name: &GroupName,
    tier: Tier,
    threshold: u32,
    members: &[NodeId],
) -> Result<pb::KeyGroup, CtlError> {
    let request = pb::CreateKeyGroupRequest {
        name: name.to_string(),
        tier: tier_to_wire(tier),
        threshold,
        members: members.iter().map(|m| m.to_string()).collect(),
    };
    let group = conn
        .ceremony()?
        .create_key_group(request)
        .await
        .map_err(|s| rpc_error(conn, "Ceremony.CreateKeyGroup", s))?
        .into_inner();
    checked_group_key(group)
}

fn checked_group_key(group: pb::KeyGroup) -> Result<pb::KeyGroup, CtlError> {
    if group.group_public_key.len() != 33 {
        return Err(CtlError::BadResponse(format!(
            "group {} has a {}-byte public key, expected 33",
            group.name,
            group.group_public_key.len()
        )));
    }
    Ok(group)
}

/// `Ceremony.RefreshKeyGroup`: new shares for every member, same group key and threshold.
pub async fn refresh_key_group(
    conn: &Connection,
    name: &GroupName,
) -> Result<pb::KeyGroup, CtlError> {
    let group = conn
        .ceremony()?
        .refresh_key_group(pb::RefreshKeyGroupRequest {
            name: name.to_string(),
        })
        .await
        .map_err(|s| rpc_error(conn, "Ceremony.RefreshKeyGroup", s))?
        .into_inner();
    checked_group_key(group)
}

/// `Ceremony.RepairKeyGroup`: rebuilds `lost`'s share on `replacement`.
pub async fn repair_key_group(
    conn: &Connection,
    name: &GroupName,
    lost: &NodeId,
    replacement: &NodeId,
) -> Result<pb::KeyGroup, CtlError> {
    let group = conn
        .ceremony()?
        .repair_key_group(pb::RepairKeyGroupRequest {
            name: name.to_string(),
            lost: lost.to_string(),
            replacement: replacement.to_string(),
        })
        .await
        .map_err(|s| rpc_error(conn, "Ceremony.RepairKeyGroup", s))?
        .into_inner();
    checked_group_key(group)
}

/// `Ceremony.ListExclusions`: members excluded for invalid shares, with the evidence.
pub async fn list_exclusions(conn: &Connection) -> Result<Vec<pb::Exclusion>, CtlError> {
    Ok(conn
        .ceremony()?
        .list_exclusions(pb::ListExclusionsRequest {})
        .await
        .map_err(|s| rpc_error(conn, "Ceremony.ListExclusions", s))?
        .into_inner()
        .exclusions)
}

/// `Ceremony.ClearExclusion`; returns the exclusions that remain.
pub async fn clear_exclusion(
    conn: &Connection,
    group: &GroupName,
    node: &NodeId,
) -> Result<Vec<pb::Exclusion>, CtlError> {
    Ok(conn
        .ceremony()?
        .clear_exclusion(pb::ClearExclusionRequest {
            group: group.to_string(),
            node_id: node.to_string(),
        })
        .await
        .map_err(|s| rpc_error(conn, "Ceremony.ClearExclusion", s))?
        .into_inner()
        .exclusions)
}

/// `Ceremony.ListKeyGroups`.
pub async fn list_key_groups(conn: &Connection) -> Result<Vec<pb::KeyGroup>, CtlError> {
    Ok(conn
        .ceremony()?
        .list_key_groups(pb::ListKeyGroupsRequest {})
        .await
        .map_err(|s| rpc_error(conn, "Ceremony.ListKeyGroups", s))?
        .into_inner()
        .key_groups)
}

/// `Ceremony.GetClusterStatus`.
pub async fn cluster_status(conn: &Connection) -> Result<pb::ClusterStatus, CtlError> {
    Ok(conn
        .ceremony()?
        .get_cluster_status(pb::ClusterStatusRequest {})
        .await
        .map_err(|s| rpc_error(conn, "Ceremony.GetClusterStatus", s))?
        .into_inner())
}

/// Signs a request's canonical digest with the custody key: what every node checks first.
pub fn sign_withdrawal(
    request: &WithdrawalRequest,
    custody_key: &SigningKey,
) -> Result<pb::SignedWithdrawal, CtlError> {
    request
        .validate()
        .map_err(|e| CtlError::Usage(format!("withdrawal request: {e}")))?;
    let signature = custody_key.sign(&request.digest().0);
    Ok(pb::SignedWithdrawal {
        request: Some(request.into()),
        custody_signature: signature.to_bytes().to_vec(),
    })
}

/// `Custody.SubmitWithdrawal`.
pub async fn submit_withdrawal(
    conn: &Connection,
    signed: pb::SignedWithdrawal,
) -> Result<pb::WithdrawalStatus, CtlError> {
    Ok(conn
        .custody()?
        .submit_withdrawal(signed)
        .await
        .map_err(|s| rpc_error(conn, "Custody.SubmitWithdrawal", s))?
        .into_inner())
}

/// An approver's signature over `digest` (the request's canonical digest), bound
/// to the approver id and an expiry: what every node verifies for itself (A2).
pub fn sign_approval(
    request_id: &str,
    digest: &RequestDigest,
    approver_id: &str,
    expires_at: u64,
    approver_key: &SigningKey,
) -> pb::Approval {
    let signature = approver_key.sign(&approval_message(digest, approver_id, expires_at));
    pb::Approval {
        request_id: request_id.to_string(),
        approver_id: approver_id.to_string(),
        expires_at,
        signature: signature.to_bytes().to_vec(),
    }
}

/// `Custody.SubmitApproval`.
pub async fn submit_approval(
    conn: &Connection,
    approval: pb::Approval,
) -> Result<pb::WithdrawalStatus, CtlError> {
    Ok(conn
        .custody()?
        .submit_approval(approval)
        .await
        .map_err(|s| rpc_error(conn, "Custody.SubmitApproval", s))?
        .into_inner())
}

/// `Custody.GetWithdrawal`.
pub async fn get_withdrawal(
    conn: &Connection,
    request_id: &str,
) -> Result<pb::WithdrawalStatus, CtlError> {
    Ok(conn
        .custody()?
        .get_withdrawal(pb::GetWithdrawalRequest {
            request_id: request_id.to_string(),
        })
        .await
        .map_err(|s| rpc_error(conn, "Custody.GetWithdrawal", s))?
        .into_inner())
}

/// `NodeAdmin.GetStatus` on the node `conn` points at.
pub async fn node_status(conn: &Connection) -> Result<pb::NodeStatus, CtlError> {
    Ok(conn
        .node_admin()?
        .get_status(pb::NodeStatusRequest {})
        .await
        .map_err(|s| rpc_error(conn, "NodeAdmin.GetStatus", s))?
        .into_inner())
}

/// `NodeAdmin.Seal`: the node drops its share key and refuses to sign until unsealed.
pub async fn seal_node(conn: &Connection) -> Result<pb::NodeStatus, CtlError> {
    Ok(conn
        .node_admin()?
        .seal(pb::SealRequest {})
        .await
        .map_err(|s| rpc_error(conn, "NodeAdmin.Seal", s))?
        .into_inner())
}

/// `NodeAdmin.Unseal`. The passphrase goes only to the node, over the operator's mTLS channel.
pub async fn unseal_node(
    conn: &Connection,
    mut passphrase: Zeroizing<String>,
) -> Result<pb::NodeStatus, CtlError> {
    // Moved, not copied, into the request; the generated message type cannot
    // zeroize itself, so the encoded buffer is the one copy we do not wipe.
    let request = pb::UnsealRequest {
        passphrase: std::mem::take(&mut *passphrase),
    };
    Ok(conn
        .node_admin()?
        .unseal(request)
        .await
        .map_err(|s| rpc_error(conn, "NodeAdmin.Unseal", s))?
        .into_inner())
}

/// Checks a signed status locally: the coordinator is not trusted, so the
/// 65-byte signature must verify over `expected_message` under the group key.
pub fn verify_signed(
    status: &pb::WithdrawalStatus,
    expected_message: &[u8],
) -> Result<(), CtlError> {
    if status.message != expected_message {
        return Err(CtlError::BadResponse(format!(
            "withdrawal {}: the coordinator reports a signed message that is not the request payload",
            status.request_id
        )));
    }
    verify_signature(
        &status.group_public_key,
        expected_message,
        &status.signature,
    )
    .map_err(|e| CtlError::BadResponse(format!("withdrawal {}: {e}", status.request_id)))
}

/// Verifies an RFC 9591 FROST(secp256k1, SHA-256) signature.
pub fn verify_signature(
    group_public_key: &[u8],
    message: &[u8],
    signature: &[u8],
) -> Result<(), String> {
    let key = frost_secp256k1::VerifyingKey::deserialize(group_public_key).map_err(|e| {
        format!(
            "group public key ({} bytes) is not a valid key: {e}",
            group_public_key.len()
        )
    })?;
    let sig = frost_secp256k1::Signature::deserialize(signature)
        .map_err(|e| format!("signature ({} bytes) is malformed: {e}", signature.len()))?;
    key.verify(message, &sig)
        .map_err(|e| format!("signature does not verify under the group key: {e}"))
}

/// Human-readable lines describing a withdrawal status.
pub fn describe_withdrawal(s: &pb::WithdrawalStatus) -> String {
    let mut out = format!(
        "request id:       {}\nstate:            {}\n",
        s.request_id,
        state_name(s.state)
    );
    if !s.digest.is_empty() {
        out.push_str(&format!("request digest:   {}\n", hex::encode(&s.digest)));
    }
    if !s.message.is_empty() {
        out.push_str(&format!("signed message:   {}\n", hex::encode(&s.message)));
    }
    if !s.signature.is_empty() {
        out.push_str(&format!(
            "signature:        {}\n",
            hex::encode(&s.signature)
        ));
    }
    if !s.signers.is_empty() {
        out.push_str(&format!("signers:          {}\n", s.signers.join(", ")));
    }
    if !s.group_public_key.is_empty() {
        out.push_str(&format!(
            "group public key: {}\n",
            hex::encode(&s.group_public_key)
        ));
    }
    if !s.approvals.is_empty() {
        out.push_str(&format!("approvals:        {}\n", s.approvals.join(", ")));
    }
    if s.state == pb::WithdrawalState::Pending as i32 {
        if s.approvals_missing > 0 {
            out.push_str(&format!("approvals needed: {} more\n", s.approvals_missing));
        }
        if s.time_locked_until > 0 {
            out.push_str(&format!(
                "time-locked until {} ({})\n",
                s.time_locked_until,
                from_now(s.time_locked_until, permafrost_core::unix_now())
            ));
        }
    }
    out.push_str(&format!("attempts:         {}\n", s.attempts));
    if !s.culprits.is_empty() {
        out.push_str(&format!("culprits:         {}\n", s.culprits.join(", ")));
    }
    if !s.detail.is_empty() {
        out.push_str(&format!("detail:           {}\n", s.detail));
    }
    out
}

/// Human-readable line describing a key group.
pub fn describe_key_group(g: &pb::KeyGroup) -> String {
    format!(
        "{}  tier {}  {}-of-{} [{}]  {}  key {}",
        g.name,
        tier_name(g.tier),
        g.threshold,
        g.members.len(),
        g.members.join(","),
        if g.active { "active" } else { "NOT ACTIVE" },
        hex::encode(&g.group_public_key)
    )
}

/// `"in 42s"` or `"passed"` for a Unix time relative to `now`.
pub fn from_now(at: u64, now: u64) -> String {
    if at > now {
        format!("in {}s", at - now)
    } else {
        "passed".to_string()
    }
}

/// Human-readable lines describing a node's status, including what
/// `audit verify --head` needs.
pub fn describe_node_status(s: &pb::NodeStatus) -> String {
    let mut out = format!(
        "node:             {}\nregion:           {}\nsealed:           {}\nopen nonces:      {}\npolicy hash:      {}\naudit entries:    {}\naudit head:       {}\n",
        s.node_id,
        s.region,
        if s.sealed { "yes (refuses to sign until unsealed)" } else { "no" },
        s.open_nonces,
        hex::encode(&s.policy_hash),
        s.audit_entries,
        hex::encode(&s.audit_head),
    );
    if s.key_groups.is_empty() {
        out.push_str("key groups:       none\n");
    }
    for g in &s.key_groups {
        out.push_str(&format!(
            "key group:        {}  tier {}  threshold {}  {}  key {}\n",
            g.name,
            tier_name(g.tier),
            g.threshold,
            if g.active { "active" } else { "NOT ACTIVE" },
            hex::encode(&g.group_public_key)
        ));
    }
    out.push_str(&format!(
        "check its log:    permafrostctl audit verify <audit.log> --head {}:{}\n",
        s.audit_entries,
        hex::encode(&s.audit_head)
    ));
    out
}

/// Human-readable line describing an exclusion.
pub fn describe_exclusion(e: &pb::Exclusion) -> String {
    format!(
        "{}  {}  excluded at {} for an invalid share while signing {} (evidence: {}-byte share, {}-byte signing package)",
        e.group,
        e.node_id,
        e.at,
        e.request_id,
        e.signature_share.len(),
        e.signing_package.len()
    )
}
