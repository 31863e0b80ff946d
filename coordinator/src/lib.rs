//! The Permafrost coordinator: relays DKG ceremonies and signing rounds
//! between signer nodes. It is trusted for liveness only: it never sees a
//! share, a nonce or a round-2 DKG share in the clear, and every node checks
//! every request itself.

pub mod ceremony;
pub mod config;
pub mod driver;
pub mod members;
pub mod service;
pub mod store;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use permafrost_core::manifest::{ClusterManifest, Directory};
use permafrost_core::RequestId;
use permafrost_proto::tls::TlsMaterial;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::CoordinatorConfig;
use crate::members::Members;
use crate::store::CoordinatorStore;

/// Errors of the coordinator, named for who is at fault.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    /// The configuration is wrong; the message names the field and value.
    #[error("config: {0}")]
    Config(String),
    /// The store failed or holds data this build cannot read.
    #[error("storage: {0}")]
    Storage(String),
}

/// The running coordinator's state.
pub struct Coordinator {
    pub(crate) config: CoordinatorConfig,
    pub(crate) directory: Directory,
    pub(crate) store: CoordinatorStore,
    pub(crate) members: Arc<Members>,
    pub(crate) custody_keys: Vec<ed25519_dalek::VerifyingKey>,
    /// Requests being signed right now; the receiver fires when the task ends.
    pub(crate) inflight: Mutex<HashMap<RequestId, watch::Receiver<bool>>>,
    /// One ceremony at a time.
    pub(crate) ceremony_lock: tokio::sync::Mutex<()>,
    tls: TlsMaterial,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator").field("id", &self.config.id).finish_non_exhaustive()
    }
}

impl Coordinator {
    /// Opens the store, loads the manifest and credentials.
    pub fn open(config: CoordinatorConfig) -> Result<Arc<Self>, CoordinatorError> {
        config.validate()?;
        let tls = TlsMaterial::load(&config.tls).map_err(CoordinatorError::Config)?;
        let text = std::fs::read_to_string(&config.manifest)
            .map_err(|e| CoordinatorError::Config(format!("manifest = {}: {e}", config.manifest.display())))?;
        let directory = ClusterManifest::from_json(&text)
            .and_then(|m| m.validate())
            .map_err(|e| CoordinatorError::Config(format!("manifest = {}: {e}", config.manifest.display())))?;
        let store = CoordinatorStore::open(&config.data_dir)?;
        let members = Arc::new(Members::new(&directory, &tls, config.round_timeout()).map_err(CoordinatorError::Config)?);
        Ok(Arc::new(Self {
            custody_keys: config.custody_keys()?,
            config,
            directory,
            store,
            members,
            inflight: Mutex::new(HashMap::new()),
            ceremony_lock: tokio::sync::Mutex::new(()),
            tls,
        }))
    }

    /// Serves `Custody` (custody role) and `Ceremony` (operator role) on `listener`
    /// until `shutdown`; probes member health and resumes pending requests meanwhile.
    pub async fn run(self: Arc<Self>, listener: TcpListener, shutdown: impl Future<Output = ()> + Send) -> Result<(), String> {
        use permafrost_core::Role;
        use permafrost_proto::auth::RequireRole;
        use permafrost_proto::{ceremony_server::CeremonyServer, custody_server::CustodyServer};
        use tonic::service::interceptor::InterceptedService;

        let probe = tokio::spawn(members::probe_loop(
            self.members.clone(),
            std::time::Duration::from_millis(self.config.health_interval_ms),
        ));
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
            CustodyServer::new(service::CustodyService { coord: self.clone() }).max_decoding_message_size(max),
            RequireRole(Role::Custody),
        );
        let ceremony = InterceptedService::new(
            CeremonyServer::new(service::CeremonyService { coord: self.clone() }).max_decoding_message_size(max),
            RequireRole(Role::Operator),
        );
        let routes = tonic::service::Routes::new(custody).add_service(ceremony);
        let result = permafrost_proto::server::serve(
            listener,
            &self.tls,
            routes,
            &["permafrost.v1.Custody", "permafrost.v1.Ceremony"],
            shutdown,
        )
        .await;
        probe.abort();
        result
    }
}
