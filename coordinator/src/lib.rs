//! The Permafrost coordinator: relays DKG ceremonies and signing rounds
//! between signer nodes. It is trusted for liveness only: it never sees a
//! share, a nonce or a round-2 DKG share in the clear, and every node checks
//! every request itself.

pub mod ceremony;
pub mod cli;
pub mod config;
pub mod driver;
pub mod members;
pub mod metrics;
pub mod recovery;
pub mod service;
pub mod store;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use permafrost_core::manifest::{ClusterManifest, Directory};
use permafrost_core::RequestId;
use permafrost_proto::daemon::Listeners;
use permafrost_proto::tls::TlsMaterial;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::CoordinatorConfig;
use crate::members::Members;
use crate::store::CoordinatorStore;

/// Errors of the coordinator, named for who is at fault and what the caller can do.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    /// The configuration is wrong; the message names the field and value.
    #[error("config: {0}")]
    Config(String),
    /// The caller sent something malformed; names the field.
    #[error("invalid {field}: {reason}")]
    InvalidInput {
        /// The offending field.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The caller may not do this (or policy refuses it).
    #[error("not authorized: {0}")]
    NotAuthorized(String),
    /// A member node misbehaved; the culprit is named.
    #[error("{culprit} misbehaved: {reason}")]
    PeerMisbehaved {
        /// The node at fault.
        culprit: permafrost_core::NodeId,
        /// What it did.
        reason: String,
    },
    /// The store failed or holds data this build cannot read.
    #[error("storage: {0}")]
    Storage(String),
    /// A dependency (the audit log, the network, too few members) is unavailable; retry later.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The coordinator is at capacity; retry after a short wait.
    #[error("busy: {0}")]
    Busy(String),
    /// A bug: an internal invariant did not hold.
    #[error("internal error (a bug): {0}")]
    Bug(String),
}

impl CoordinatorError {
    /// The status a client gets: one mapping for every service.
    pub fn to_status(&self) -> tonic::Status {
        use tonic::Status;
        match self {
            CoordinatorError::Busy(what) => {
                permafrost_proto::backpressure::busy(what, service::ADMISSION_RETRY)
            }
            CoordinatorError::InvalidInput { .. } => Status::invalid_argument(self.to_string()),
            CoordinatorError::NotAuthorized(_) => Status::permission_denied(self.to_string()),
            CoordinatorError::PeerMisbehaved { .. } => Status::aborted(self.to_string()),
            CoordinatorError::Unavailable(_) => Status::unavailable(self.to_string()),
            CoordinatorError::Config(_)
            | CoordinatorError::Storage(_)
            | CoordinatorError::Bug(_) => Status::internal(self.to_string()),
        }
    }
}

impl From<permafrost_proto::ProtoError> for CoordinatorError {
    fn from(e: permafrost_proto::ProtoError) -> Self {
        use permafrost_proto::ProtoError as P;
        match e {
            P::AuditUnavailable(_) | P::Server(_) => CoordinatorError::Unavailable(e.to_string()),
            P::AuditDamaged(_) => CoordinatorError::Storage(e.to_string()),
            _ => CoordinatorError::Config(e.to_string()),
        }
    }
}

/// The audit log refused a record: the step it would record does not complete (L2).
pub(crate) fn audit_failed(e: permafrost_proto::ProtoError) -> tonic::Status {
    tonic::Status::unavailable(format!(
        "audit log: {e}; the step was not completed without a durable record"
    ))
}

/// The running coordinator's state.
pub struct Coordinator {
    pub(crate) config: CoordinatorConfig,
    pub(crate) directory: Directory,
    pub(crate) store: CoordinatorStore,
    pub(crate) members: Arc<Members>,
    pub(crate) custody_keys: Vec<ed25519_dalek::VerifyingKey>,
    pub(crate) policy: permafrost_core::policy::Policy,
    pub(crate) audit: Arc<permafrost_proto::audit::AuditLog>,
    /// Wakes request drivers when an approval arrives.
    pub(crate) approvals_changed: tokio::sync::Notify,
    /// Groups a member said were at another epoch than this coordinator
    /// signs for (K7); a request's driver runs a recovery pass before it
    /// tries again.
    pub(crate) out_of_step: Mutex<std::collections::BTreeSet<permafrost_core::GroupName>>,
    /// Requests being signed right now; the receiver fires when the task ends.
    pub(crate) inflight: Mutex<HashMap<RequestId, watch::Receiver<bool>>>,
    /// One ceremony at a time.
    pub(crate) ceremony_lock: tokio::sync::Mutex<()>,
    /// Operators and quorums, to fail fast on a spec the nodes will refuse
    /// and to authorize clearing an exclusion.
    pub(crate) registry: Option<permafrost_core::ceremony::OperatorRegistry>,
    /// Every background task (request drivers, announcements), aborted and
    /// drained at shutdown: their state is in the store, so they resume at start.
    pub(crate) tasks: Mutex<tokio::task::JoinSet<()>>,
    pub(crate) metrics: metrics::CoordinatorMetrics,
    /// Pre-issued commitments per group and node (one-round signing).
    pub(crate) bank: Mutex<permafrost_core::session::bank::NonceBank>,
    /// Wakes the bank's refill task after a withdrawal or a forgotten bank.
    pub(crate) bank_wanted: tokio::sync::Notify,
    /// Per group, the velocity-limited requests signing at once (liveness only).
    pub(crate) velocity_gates:
        Mutex<HashMap<permafrost_core::GroupName, Arc<tokio::sync::Semaphore>>>,
    tls: TlsMaterial,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator")
            .field("id", &self.config.id)
            .finish_non_exhaustive()
    }
}

/// The coordinator's audit log, checkpoints signed by its own audit key
/// (created on first start, 0600 in the data dir).
fn open_audit(
    config: &CoordinatorConfig,
) -> Result<permafrost_proto::audit::AuditLog, CoordinatorError> {
    use ed25519_dalek::{Signer, SigningKey};
    let key_path = config.data_dir.join("audit-signing.key");
    let key = match std::fs::read_to_string(&key_path) {
        Ok(text) => {
            let bytes = zeroize::Zeroizing::new(hex::decode(text.trim()).map_err(|_| {
                CoordinatorError::Config(format!("{}: not hex", key_path.display()))
            })?);
            let seed: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
                CoordinatorError::Config(format!("{}: expected 32 bytes", key_path.display()))
            })?;
            SigningKey::from_bytes(&seed)
        }
        Err(_) => {
            let key = SigningKey::generate(&mut rand::thread_rng());
            let hex_seed = zeroize::Zeroizing::new(hex::encode(key.to_bytes()));
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            use std::io::Write;
            opts.open(&key_path)
                .and_then(|mut f| f.write_all(hex_seed.as_bytes()).and_then(|_| f.sync_all()))
                .map_err(|e| CoordinatorError::Config(format!("{}: {e}", key_path.display())))?;
            key
        }
    };
    let path = config
        .audit_log
        .clone()
        .unwrap_or_else(|| config.data_dir.join("audit.log"));
    let log = permafrost_proto::audit::AuditLog::open(
        &path,
        &config.id,
        hex::encode(key.verifying_key().as_bytes()),
        Box::new(move |msg| key.sign(msg).to_bytes()),
    )
    .map_err(|e| CoordinatorError::Config(e.to_string()))?;
    log.append("coordinator_started", serde_json::json!({}))
        .map_err(|e| CoordinatorError::Config(e.to_string()))?;
    Ok(log)
}

impl Coordinator {
    /// This coordinator's record of group `name`, or "unknown key group".
    pub(crate) fn known_group(
        &self,
        name: &permafrost_core::GroupName,
    ) -> Result<store::GroupRecord, tonic::Status> {
        self.store
            .group(name)
            .map_err(|e| tonic::Status::internal(e.to_string()))?
            .ok_or_else(|| tonic::Status::not_found(format!("unknown key group {name}")))
    }

    /// The scheme (and network) the coordinator's policy gives `name`; a group
    /// the policy does not name signs messages. Each node reads its own.
    pub(crate) fn scheme_of(
        &self,
        name: &permafrost_core::GroupName,
    ) -> (
        permafrost_core::taproot::Scheme,
        Option<permafrost_core::taproot::Network>,
    ) {
        match self.policy.group(name) {
            Some(g) => (g.scheme, g.bitcoin.map(|b| b.network)),
            None => (permafrost_core::taproot::Scheme::Message, None),
        }
    }

    /// The coordinator's view of a group, with its taproot output derived from
    /// the group key, for the same checks the nodes run.
    pub(crate) fn group_view(
        &self,
        group: &store::GroupRecord,
    ) -> Result<permafrost_core::authz::GroupView, String> {
        use permafrost_core::taproot::{GroupOutput, Scheme};
        let taproot = match self.scheme_of(&group.name) {
            (Scheme::Message, _) => None,
            (Scheme::Taproot, Some(network)) => Some(
                GroupOutput::derive(&group.group_public_key, network)
                    .map_err(|e| format!("key group {}: {e}", group.name))?,
            ),
            (Scheme::Taproot, None) => {
                return Err(format!(
                    "key group {}: taproot without a network",
                    group.name
                ))
            }
        };
        Ok(permafrost_core::authz::GroupView {
            name: group.name.clone(),
            tier: group.tier,
            active: group.active,
            taproot,
        })
    }

    /// Opens the store, loads the manifest and credentials.
    pub fn open(config: CoordinatorConfig) -> Result<Arc<Self>, CoordinatorError> {
        config.validate()?;
        let tls =
            TlsMaterial::load(&config.tls).map_err(|e| CoordinatorError::Config(e.to_string()))?;
        let text = std::fs::read_to_string(&config.manifest).map_err(|e| {
            CoordinatorError::Config(format!("manifest = {}: {e}", config.manifest.display()))
        })?;
        let directory = ClusterManifest::from_json(&text)
            .and_then(|m| m.validate())
            .map_err(|e| {
                CoordinatorError::Config(format!("manifest = {}: {e}", config.manifest.display()))
            })?;
        let store = CoordinatorStore::open(&config.data_dir)?;
        let policy = config.load_policy()?;
        let audit = Arc::new(open_audit(&config)?);
        // Records written ahead of a deferred store step (a submitted
        // withdrawal's audit entry) are fsynced before any commit is durable:
        // no durable request without its audit record.
        let synced = audit.clone();
        store
            .inner()
            .before_durable_commit(Arc::new(move || synced.sync().map_err(|e| e.to_string())));
        let members = Arc::new(
            Members::new(
                &directory,
                &tls,
                config.round_timeout(),
                config.max_sessions_per_node,
            )
            .map_err(|e| CoordinatorError::Config(e.to_string()))?,
        );
        for node in store.revoked()? {
            members.revoke(&node);
        }
        let registry = config.operator_registry()?;
        let metrics = metrics::CoordinatorMetrics::new(&config.id, store.inner())?;
        Ok(Arc::new(Self {
            registry,
            metrics,
            custody_keys: config.custody_keys()?,
            policy,
            audit,
            approvals_changed: tokio::sync::Notify::new(),
            out_of_step: Mutex::new(Default::default()),
            config,
            directory,
            store,
            members,
            inflight: Mutex::new(HashMap::new()),
            ceremony_lock: tokio::sync::Mutex::new(()),
            tasks: Mutex::new(tokio::task::JoinSet::new()),
            bank: Mutex::new(Default::default()),
            bank_wanted: tokio::sync::Notify::new(),
            velocity_gates: Mutex::new(HashMap::new()),
            tls,
        }))
    }

    /// Reads, changes and durably writes a request record in one store step.
    pub(crate) async fn update_request(
        &self,
        id: &RequestId,
        change: impl FnOnce(&mut store::RequestRecord) + Send + 'static,
    ) -> Result<(), String> {
        self.store
            .update_request(id, change)
            .await
            .map_err(|e| e.to_string())
    }

    /// The coordinator's store (health, counters; tests inject faults through it).
    pub fn store(&self) -> &CoordinatorStore {
        &self.store
    }

    /// Runs `task` in the background, tracked so shutdown can stop it.
    pub(crate) fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        if let Ok(mut tasks) = self.tasks.lock() {
            while tasks.try_join_next().is_some() {}
            tasks.spawn(task);
        }
    }

    /// Stops every background task and waits (bounded) until they are gone.
    async fn drain_tasks(&self) {
        let mut tasks = match self.tasks.lock() {
            Ok(mut t) => std::mem::take(&mut *t),
            Err(_) => return,
        };
        let running = tasks.len();
        tasks.abort_all();
        let drained = tokio::time::timeout(std::time::Duration::from_millis(800), async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(running, "background tasks still stopping at shutdown");
        }
    }

    /// Whether the coordinator can do its work (its store commits, its audit log takes records). `Err` names
    /// what is wrong; health reports NOT_SERVING then.
    pub fn health(&self) -> Result<(), String> {
        self.store.inner().health()?;
        self.audit.health().map_err(|e| e.to_string())
    }

    /// Serves `Custody` (custody role) and `Ceremony` (operator role) on `listener`
    /// until `shutdown`; probes member health and resumes pending requests meanwhile.
    pub async fn run(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), CoordinatorError> {
        self.serve(Listeners::grpc(listener), shutdown).await
    }

    /// [`Coordinator::run`] on `listeners.grpc`, with Prometheus metrics on
    /// `listeners.metrics` if given, both until `shutdown` resolves.
    pub async fn serve(
        self: Arc<Self>,
        listeners: Listeners,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), CoordinatorError> {
        let Listeners {
            grpc: listener,
            metrics,
        } = listeners;
        let metrics = metrics.map(|l| {
            permafrost_proto::metrics::MetricsServer::spawn(
                l,
                metrics::CoordinatorMetrics::renderer(&self),
            )
        });
        use permafrost_core::Role;
        use permafrost_proto::auth::RequireRole;
        use permafrost_proto::{ceremony_server::CeremonyServer, custody_server::CustodyServer};
        use tonic::service::interceptor::InterceptedService;

        let probe = tokio::spawn(members::probe_loop(
            self.members.clone(),
            std::time::Duration::from_millis(self.config.health_interval_ms),
        ));
        // K7: unfinished refresh commits are re-driven in the background.
        let recovery = tokio::spawn(recovery::recovery_loop(
            self.clone(),
            self.config.recovery_interval(),
        ));
        let refill = self
            .config
            .banked_nonces
            .then(|| tokio::spawn(driver::bank::refill_loop(self.clone())));
        match self.store.pending_requests() {
            Ok(ids) => {
                for id in ids {
                    tracing::info!(request = %id, "resuming pending request after restart");
                    driver::ensure_driver(&self, &id);
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot list pending requests"),
        }
        let max = permafrost_proto::server::MAX_MESSAGE_BYTES;
        let custody = InterceptedService::new(
            CustodyServer::new(service::CustodyService {
                coord: self.clone(),
            })
            .max_decoding_message_size(max)
            .max_encoding_message_size(max),
            RequireRole(Role::Custody),
        );
        let ceremony = InterceptedService::new(
            CeremonyServer::new(service::CeremonyService {
                coord: self.clone(),
            })
            .max_decoding_message_size(max)
            .max_encoding_message_size(max),
            RequireRole(Role::Operator),
        );
        let routes = tonic::service::Routes::new(custody).add_service(ceremony);
        let result = permafrost_proto::server::serve(
            listener,
            &self.tls,
            routes,
            &["permafrost.v1.Custody", "permafrost.v1.Ceremony"],
            Some(permafrost_proto::server::probe_of(&self, Self::health)),
            permafrost_proto::server::ServerLimits::default(),
            shutdown,
        )
        .await;
        probe.abort();
        recovery.abort();
        if let Some(refill) = refill {
            refill.abort();
        }
        self.drain_tasks().await;
        if let Some(metrics) = metrics {
            metrics.stop().await;
        }
        if let Err(e) = self
            .audit
            .append("coordinator_stopped", serde_json::json!({}))
            .and_then(|_| self.audit.checkpoint())
        {
            tracing::error!(error = %e, "audit log: cannot record shutdown");
        }
        result.map_err(|e| CoordinatorError::Unavailable(e.to_string()))
    }
}
