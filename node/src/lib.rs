//! The Permafrost signer node: holds one FROST share per key group, sealed at
//! rest, and releases a signature share only for a request it has checked
//! itself. The coordinator is never trusted for safety.
//!
//! Where to look: `service` (every `SignerNode` RPC, one module per concern),
//! `vault` (where a share is sealed), `nonces` (where a nonce lives and dies),
//! `store` (the journal that must be durable before a share leaves),
//! `ceremonies` (DKG and refresh steps in flight), `open` (init and start-up),
//! `admin` (operator status, seal and unseal).

pub mod admin;
pub mod ceremonies;
pub mod cli;
pub mod config;
pub mod hygiene;
pub mod metrics;
pub mod nonces;
mod open;
pub mod reservations;
pub mod service;
pub mod store;
pub mod vault;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use permafrost_core::authz::CheckSettings;
use permafrost_core::identity::NodeIdentity;
use permafrost_core::manifest::Directory;
use permafrost_core::{CoreError, NodeId};
use permafrost_hsm::SealError;
use permafrost_proto::daemon::Listeners;
use permafrost_proto::tls::TlsMaterial;
use tokio::net::TcpListener;

use crate::ceremonies::CeremonyTable;
use crate::nonces::NoncePool;
pub use crate::open::{init, init_and_print, init_with, unseal_passphrase_from, NodePublicInfo};
use crate::store::NodeStore;
use crate::vault::ShareVault;

/// Errors of the node, named for who is at fault and what the caller can do.
/// `service` maps them to gRPC codes in one place.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The operator's configuration or data dir is wrong; the message names the
    /// field and value. Fix it and restart.
    #[error("config: {0}")]
    Config(String),
    /// The caller sent a missing or malformed field: fix the request, do not resend it as is.
    #[error("invalid {field}: {reason}")]
    InvalidInput {
        /// Which field.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A check refused the request (custody signature, policy, ceremony rules);
    /// the message names the check. Not to be retried as is.
    #[error("refused: {0}")]
    NotAuthorized(String),
    /// Not authorized yet (approvals or a time-lock still missing): retry later.
    #[error("not yet: {0}")]
    NotYet(String),
    /// A named peer sent something invalid; the caller should exclude it.
    #[error("peer {culprit} misbehaved: {reason}")]
    PeerMisbehaved {
        /// The node at fault.
        culprit: NodeId,
        /// What it did.
        reason: String,
    },
    /// The ceremony was aborted (e.g. a split view); only a new one can go on.
    #[error("aborted: {0}")]
    Aborted(String),
    /// The step does not fit this node's state (no such ceremony step, a used
    /// nonce handle, an inactive group); the message says what must come first.
    #[error("{0}")]
    Precondition(String),
    /// The nonces or reservation named are not (or no longer) in this node's
    /// memory: used, expired, or voided by a restart (N2). Commit afresh.
    #[error("{0}")]
    Stale(String),
    /// The caller asked for another epoch of the group than this node holds
    /// (K7): not misbehaviour; the caller catches up (`RecoverKeyGroup`).
    #[error("{0}")]
    OutOfStep(String),
    /// This node holds only part of a member's velocity ledger so far (it
    /// restarted): it kept the part; reserve again and send the next one.
    #[error("{0}")]
    CatchingUp(String),
    /// Something named does not exist on this node.
    #[error("{0}")]
    NotFound(String),
    /// What the caller would create exists already.
    #[error("{0}")]
    AlreadyExists(String),
    /// The node is at capacity: retry after `retry_after`, on this node or another.
    #[error("busy: {what}")]
    Busy {
        /// What is full.
        what: String,
        /// The retry hint sent to the caller.
        retry_after: Duration,
    },
    /// A bounded table is full (ceremonies in progress): nothing frees up until
    /// one finishes or expires, so a quick retry does not help.
    #[error("{0}")]
    Exhausted(String),
    /// The sealer failed or refused (wrong passphrase or PIN, tampered blob, HSM
    /// unavailable); the [`SealError`] says who is at fault.
    #[error("sealer: {0}")]
    Sealer(#[from] SealError),
    /// The node is sealed; an operator must unseal it.
    #[error("node {0} is sealed: an operator must unseal it (permafrostctl node unseal)")]
    Sealed(NodeId),
    /// A dependency cannot do its part (the store's engine, the audit log, the
    /// OS's process hardening, the server transport). Nothing that needed it happened.
    #[error("{0}")]
    Unavailable(String),
    /// Stored data this build cannot read (corrupt, or another version): an
    /// operator must restore it.
    #[error("{0}")]
    Corrupt(String),
    /// A bug in this node: something it keeps itself does not hold.
    #[error("bug: {0}")]
    Bug(String),
}

impl From<CoreError> for NodeError {
    fn from(e: CoreError) -> Self {
        match e {
            CoreError::InvalidField { field, reason } => NodeError::InvalidInput {
                field: field.into(),
                reason,
            },
            CoreError::Refused(reason) => NodeError::NotAuthorized(reason),
            CoreError::PolicyDenied(denial) => {
                NodeError::NotAuthorized(format!("policy: {denial}"))
            }
            CoreError::NotYet(reason) => NodeError::NotYet(reason),
            CoreError::PeerMisbehaved { culprit, reason } => {
                NodeError::PeerMisbehaved { culprit, reason }
            }
            CoreError::Aborted(reason) => NodeError::Aborted(reason),
            CoreError::Frost(reason) => NodeError::InvalidInput {
                field: "FROST data".into(),
                reason,
            },
            CoreError::Encryption(reason) => NodeError::InvalidInput {
                field: "ciphertext".into(),
                reason,
            },
            other => NodeError::Bug(other.to_string()),
        }
    }
}

impl From<permafrost_proto::ProtoError> for NodeError {
    fn from(e: permafrost_proto::ProtoError) -> Self {
        use permafrost_proto::ProtoError as P;
        match e {
            P::AuditUnavailable(_) => NodeError::Unavailable(e.to_string()),
            P::AuditDamaged(_) => NodeError::Corrupt(e.to_string()),
            P::Server(_) => NodeError::Unavailable(e.to_string()),
            _ => NodeError::Config(e.to_string()),
        }
    }
}

/// Everything a running node holds.
pub struct SignerNode {
    pub(crate) id: NodeId,
    pub(crate) region: String,
    pub(crate) identity: NodeIdentity,
    pub(crate) directory: Directory,
    /// Where key shares are sealed and opened; sealed while it holds no sealer.
    pub(crate) vault: ShareVault,
    pub(crate) manual_seal: bool,
    pub(crate) data_dir: std::path::PathBuf,
    pub(crate) store: NodeStore,
    pub(crate) settings: CheckSettings,
    pub(crate) policy: permafrost_core::policy::Policy,
    pub(crate) audit: permafrost_proto::audit::AuditLog,
    /// Signing rounds (Commit and Sign) in flight: beyond this the node answers
    /// busy (`RESOURCE_EXHAUSTED` with a retry hint) instead of queueing.
    pub(crate) sessions: Arc<tokio::sync::Semaphore>,
    pub(crate) max_sessions: usize,
    pub(crate) nonces: Mutex<NoncePool>,
    /// Banked nonces one coordinator may hold per group (N6).
    pub(crate) max_banked: usize,
    /// Velocity reservations made with round-1 nonces (group-wide P1).
    pub(crate) reservations: Mutex<crate::reservations::Reservations>,
    /// What this node verified of each member's velocity ledger (memory only).
    pub(crate) ledgers: Mutex<permafrost_core::velocity::LedgerCache>,
    pub(crate) ceremonies: CeremonyTable<service::CeremonyInFlight>,
    /// Held by every step that decides a refresh's fate here (K7): the
    /// report and pending share of `DkgFinish`, `AbandonRefresh`'s promise,
    /// `DropPendingRefresh` and `CommitRefresh`. So this node can never both
    /// report a refresh and promise it never will.
    pub(crate) refresh_lock: tokio::sync::Mutex<()>,
    /// Operators and the quorum each lifecycle operation needs; without it
    /// the node refuses every ceremony.
    pub(crate) registry: Option<permafrost_core::ceremony::OperatorRegistry>,
    /// Backoff of wrong unseal passphrases (manual sealing).
    pub(crate) unseal_throttle: tokio::sync::Mutex<admin::UnsealThrottle>,
    pub(crate) metrics: metrics::NodeMetrics,
    tls: TlsMaterial,
}

impl std::fmt::Debug for SignerNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignerNode")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl SignerNode {
    /// This node's id.
    pub fn id(&self) -> &NodeId {
        &self.id
    }

    /// Whether key shares are currently sealed away.
    pub fn is_sealed(&self) -> bool {
        self.vault.is_sealed()
    }

    /// The node's store (tests inject faults through it).
    pub fn store(&self) -> &NodeStore {
        &self.store
    }

    /// Whether the node can do its work: its store commits and its audit log
    /// takes records. `Err` names what is wrong; health reports NOT_SERVING then.
    pub fn health(&self) -> Result<(), String> {
        self.store.inner().health()?;
        self.audit.health().map_err(|e| e.to_string())
    }

    /// Serves the `SignerNode` API (coordinator role only) on `listener` until `shutdown` resolves.
    pub async fn run(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), NodeError> {
        self.serve(Listeners::grpc(listener), shutdown).await
    }

    /// [`SignerNode::run`] on `listeners.grpc`, with Prometheus metrics on
    /// `listeners.metrics` if given, both until `shutdown` resolves.
    pub async fn serve(
        self: Arc<Self>,
        listeners: Listeners,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), NodeError> {
        let Listeners {
            grpc: listener,
            metrics,
        } = listeners;
        let metrics = metrics.map(|l| {
            permafrost_proto::metrics::MetricsServer::spawn(
                l,
                metrics::NodeMetrics::renderer(&self),
            )
        });
        use permafrost_core::Role;
        use permafrost_proto::auth::RequireRole;
        use permafrost_proto::{
            node_admin_server::NodeAdminServer, signer_node_server::SignerNodeServer,
        };
        use tonic::service::interceptor::InterceptedService;
        let tls = self.tls.clone();
        let max = permafrost_proto::server::MAX_MESSAGE_BYTES;
        let signer = InterceptedService::new(
            SignerNodeServer::new(service::NodeService { node: self.clone() })
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
            RequireRole(Role::Coordinator),
        );
        let admin = InterceptedService::new(
            NodeAdminServer::new(admin::AdminService { node: self.clone() })
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
            RequireRole(Role::Operator),
        );
        let routes = tonic::service::Routes::new(signer).add_service(admin);
        let result = permafrost_proto::server::serve(
            listener,
            &tls,
            routes,
            &["permafrost.v1.SignerNode", "permafrost.v1.NodeAdmin"],
            Some(permafrost_proto::server::probe_of(&self, Self::health)),
            permafrost_proto::server::ServerLimits::default(),
            shutdown,
        )
        .await;
        if let Some(metrics) = metrics {
            metrics.stop().await;
        }
        // Seal the chain's tail with a signed checkpoint on the way out.
        if let Err(e) = self
            .audit
            .append("node_stopped", serde_json::json!({}))
            .and_then(|_| self.audit.checkpoint())
        {
            tracing::error!(error = %e, "audit log: cannot record shutdown");
        }
        result.map_err(|e| NodeError::Unavailable(e.to_string()))
    }
}
