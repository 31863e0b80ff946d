//! The Permafrost signer node: holds one FROST share per key group, sealed at
//! rest, and releases a signature share only for a request it has checked
//! itself. The coordinator is never trusted for safety.

pub mod admin;
pub mod config;
pub mod hygiene;
pub mod nonces;
pub mod service;
pub mod store;

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use permafrost_core::authz::CheckSettings;
use permafrost_core::identity::NodeIdentity;
use permafrost_core::manifest::{ClusterManifest, Directory};
use permafrost_core::NodeId;
use permafrost_hsm::{
    KdfParams, PassphraseSealer, Pkcs11Config, Pkcs11Sealer, SealContext, SealError, Sealer,
};
use permafrost_proto::tls::TlsMaterial;
use tokio::net::TcpListener;

use crate::config::{KdfProfile, NodeConfig, SealerConfig};
use crate::nonces::NoncePool;
use crate::store::NodeStore;

/// Errors of the node, named for who is at fault.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The configuration is wrong; the message names the field and value.
    #[error("config: {0}")]
    Config(String),
    /// Sealing or unsealing failed (wrong passphrase, tampered blob, HSM unavailable).
    #[error("sealer: {0}")]
    Sealer(#[from] SealError),
    /// The store failed or holds data this build cannot read.
    #[error("storage: {0}")]
    Storage(String),
    /// The request is not authorized; the message names the check.
    #[error("refused: {0}")]
    Refused(String),
    /// Something named does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// Initialization was asked twice, or start-up found no initialized node.
    #[error("{0}")]
    State(String),
    /// The audit log cannot be written; nothing that needs a record may happen (L2).
    #[error("audit: {0}")]
    Audit(String),
    /// The node is at capacity; the caller should retry after a short wait.
    #[error("busy: {0}")]
    Busy(String),
    /// The node is sealed; an operator must unseal it.
    #[error("node {0} is sealed: an operator must unseal it (permafrostctl node unseal)")]
    Sealed(NodeId),
}

const IDENTITY: &str = "identity";
const TLS_KEY: &str = "tls-key";

/// Everything a running node holds.
pub struct SignerNode {
    pub(crate) id: NodeId,
    pub(crate) region: String,
    pub(crate) identity: NodeIdentity,
    pub(crate) directory: Directory,
    /// Seals key shares: the configured sealer (which also seals identity and
    /// TLS key), or (manual sealing) an operator-held
    /// passphrase sealer. `None` while the node is sealed.
    pub(crate) share_sealer: RwLock<Option<Arc<dyn Sealer>>>,
    pub(crate) manual_seal: bool,
    pub(crate) data_dir: std::path::PathBuf,
    pub(crate) store: NodeStore,
    pub(crate) settings: CheckSettings,
    pub(crate) policy: permafrost_core::policy::Policy,
    pub(crate) audit: permafrost_proto::audit::AuditLog,
    /// Signing rounds (Commit and Sign) in flight: beyond this the node answers
    /// busy (`RESOURCE_EXHAUSTED` with a retry hint) instead of queueing.
    pub(crate) sessions: tokio::sync::Semaphore,
    pub(crate) max_sessions: usize,
    pub(crate) nonces: Mutex<NoncePool>,
    pub(crate) ceremonies: Mutex<HashMap<String, service::CeremonyState>>,
    tls: TlsMaterial,
}

impl std::fmt::Debug for SignerNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignerNode")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Opens the configured sealer. With `create`, `init` sets up new sealer state: a fresh
/// passphrase state file, or the token's AES key if the token has none by that label.
/// Without it, nothing is created or changed: a PKCS#11 session is read-only.
fn open_sealer(config: &NodeConfig, create: bool) -> Result<Box<dyn Sealer>, NodeError> {
    match &config.sealer {
        SealerConfig::Passphrase {
            passphrase_file,
            passphrase_env,
            kdf,
        } => {
            let passphrase =
                config::secret_source("passphrase", passphrase_file, passphrase_env)?.read()?;
            let sealer = if create {
                let params = match kdf {
                    KdfProfile::Production => KdfParams::production(),
                    KdfProfile::FastInsecure => KdfParams::fast_for_tests(),
                };
                PassphraseSealer::create(&config.data_dir, &passphrase, params)?
            } else {
                PassphraseSealer::open(&config.data_dir, &passphrase)?
            };
            Ok(Box::new(sealer))
        }
        SealerConfig::Pkcs11 {
            module_path,
            token_label,
            key_label,
            pin_file,
            pin_env,
        } => {
            let settings = Pkcs11Config {
                module_path: module_path.clone(),
                token_label: token_label.clone(),
                key_label: key_label.clone(),
                pin: config::secret_source("pin", pin_file, pin_env)?,
            };
            Ok(Box::new(Pkcs11Sealer::open(&settings, create)?))
        }
    }
}

/// Public half of a node's identity, printed by `init` for the cluster manifest.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct NodePublicInfo {
    /// Node id.
    pub id: NodeId,
    /// Region.
    pub region: String,
    /// Ed25519 identity key, hex.
    pub identity_key: String,
    /// X25519 encryption key, hex.
    pub encryption_key: String,
    /// CSR for the node's TLS key (PEM); the CA sets role and id itself.
    pub tls_csr: String,
}

/// Creates the data dir owner-only (0700), and makes an existing one so: `init` is the moment
/// the operator hands the directory to the node.
fn create_private_dir(path: &Path) -> Result<(), NodeError> {
    let failed =
        |e: std::io::Error| NodeError::Config(format!("data_dir = {}: {e}", path.display()));
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        builder.mode(0o700);
        builder.create(path).map_err(failed)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).map_err(failed)?;
    }
    #[cfg(not(unix))]
    builder.create(path).map_err(failed)?;
    Ok(())
}

/// `permafrost-node init`: creates the data dir, the sealer state, the identity
/// keys and the TLS key (both sealed), and returns what the operator publishes.
pub fn init(config: &NodeConfig) -> Result<NodePublicInfo, NodeError> {
    config.validate()?;
    if NodeStore::exists_in(&config.data_dir) {
        return Err(NodeError::State(format!(
            "{} already holds a node store; refusing to initialize over it",
            config.data_dir.display()
        )));
    }
    create_private_dir(&config.data_dir)?;
    // The sealer first: if the HSM or passphrase is unusable, no store is created.
    let sealer = open_sealer(config, true)?;
    let store = NodeStore::open(&config.data_dir)?;
    let identity = NodeIdentity::generate(&mut rand::thread_rng());
    let ctx = |purpose: &str| SealContext::new(config.id.as_str(), purpose);
    store.put_sealed_new(
        IDENTITY,
        &sealer.seal(&ctx(IDENTITY), &identity.to_secret_bytes())?,
    )?;
    // Wiped on every return path (rcgen zeroizes the key's serialized form).
    let key = zeroize::Zeroizing::new(
        rcgen::KeyPair::generate().map_err(|e| NodeError::State(format!("TLS key: {e}")))?,
    );
    let key_pem = zeroize::Zeroizing::new(key.serialize_pem());
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())
        .and_then(|p| p.serialize_request(&*key))
        .and_then(|c| c.pem())
        .map_err(|e| NodeError::State(format!("CSR: {e}")))?;
    store.put_sealed_new(TLS_KEY, &sealer.seal(&ctx(TLS_KEY), key_pem.as_bytes())?)?;
    // The store file is created with the process umask; the store holds only sealed secrets,
    // but nothing in the data dir is anyone else's business.
    hygiene::restrict_tree(&config.data_dir)?;
    Ok(NodePublicInfo {
        id: config.id.clone(),
        region: config.region.clone(),
        identity_key: hex::encode(identity.identity_key().as_bytes()),
        encryption_key: hex::encode(identity.encryption_public_key()),
        tls_csr: csr,
    })
}

impl SignerNode {
    /// Opens an initialized node: unseals its identity and TLS key, loads the manifest.
    /// Nothing stored is modified on failure.
    pub fn open(config: &NodeConfig) -> Result<Arc<Self>, NodeError> {
        config.validate()?;
        if !NodeStore::exists_in(&config.data_dir) {
            return Err(NodeError::State(format!(
                "{} holds no initialized node; run `permafrost-node init` first",
                config.data_dir.display()
            )));
        }
        hygiene::check_data_dir(&config.data_dir)?;
        let policy = config.load_policy()?;
        let sealer: Arc<dyn Sealer> = Arc::from(open_sealer(config, false)?);
        let store = NodeStore::open(&config.data_dir)?;
        let ctx = |purpose: &str| SealContext::new(config.id.as_str(), purpose);
        let blob = store
            .sealed(IDENTITY)?
            .ok_or_else(|| NodeError::State("identity missing from the store".into()))?;
        let identity = NodeIdentity::from_secret_bytes(&sealer.unseal(&ctx(IDENTITY), &blob)?)
            .map_err(|e| NodeError::Storage(e.to_string()))?;
        let blob = store
            .sealed(TLS_KEY)?
            .ok_or_else(|| NodeError::State("TLS key missing from the store".into()))?;
        let tls_key = sealer.unseal(&ctx(TLS_KEY), &blob)?;
        let read = |p: &Path| {
            std::fs::read(p).map_err(|e| NodeError::Config(format!("{}: {e}", p.display())))
        };
        let tls = TlsMaterial::from_pem(
            &read(&config.tls.ca_cert)?,
            &read(&config.tls.cert)?,
            &tls_key,
        );
        let manifest_text = std::fs::read_to_string(&config.manifest).map_err(|e| {
            NodeError::Config(format!("manifest = {}: {e}", config.manifest.display()))
        })?;
        let directory = ClusterManifest::from_json(&manifest_text)
            .and_then(|m| m.validate())
            .map_err(|e| {
                NodeError::Config(format!("manifest = {}: {e}", config.manifest.display()))
            })?;
        let me = directory.get(&config.id).map_err(|_| {
            NodeError::Config(format!("id = {}: not in the cluster manifest", config.id))
        })?;
        if me.identity_key != identity.identity_key()
            || me.encryption_key != identity.encryption_public_key()
        {
            return Err(NodeError::Config(format!(
                "manifest = {}: the keys listed for {} are not this node's",
                config.manifest.display(),
                config.id
            )));
        }
        let signing_identity = NodeIdentity::from_secret_bytes(&identity.to_secret_bytes())
            .map_err(|e| NodeError::Storage(e.to_string()))?;
        let audit = permafrost_proto::audit::AuditLog::open(
            &config.audit_path(),
            config.id.as_str(),
            hex::encode(identity.identity_key().as_bytes()),
            Box::new(move |msg| signing_identity.sign(msg)),
        )
        .map_err(NodeError::Audit)?;
        let share_sealer = if config.seal.manual {
            None
        } else {
            Some(sealer.clone())
        };
        audit
            .append(
                "node_started",
                serde_json::json!({"sealed": share_sealer.is_none(), "policy_hash": hex::encode(policy.hash())}),
            )
            .map_err(NodeError::Audit)?;
        Ok(Arc::new(Self {
            id: config.id.clone(),
            region: config.region.clone(),
            identity,
            directory,
            share_sealer: RwLock::new(share_sealer),
            manual_seal: config.seal.manual,
            data_dir: config.data_dir.clone(),
            store,
            policy,
            audit,
            sessions: tokio::sync::Semaphore::new(config.limits.max_sessions),
            max_sessions: config.limits.max_sessions,
            settings: CheckSettings {
                custody_keys: config.custody_keys()?,
                max_clock_skew_secs: config.max_clock_skew_secs,
                max_lifetime_secs: config.max_request_lifetime_secs,
            },
            nonces: Mutex::new(NoncePool::new(
                config.nonces.max_open,
                Duration::from_secs(config.nonces.ttl_secs),
            )),
            ceremonies: Mutex::new(HashMap::new()),
            tls,
        }))
    }

    /// This node's id.
    pub fn id(&self) -> &NodeId {
        &self.id
    }

    /// The node's store (tests inject faults through it).
    pub fn store(&self) -> &NodeStore {
        &self.store
    }

    /// Whether the node can do its work: its store commits and its audit log
    /// takes records. `Err` names what is wrong; health reports NOT_SERVING then.
    pub fn health(&self) -> Result<(), String> {
        self.store.inner().health()?;
        self.audit.health()
    }

    fn health_probe(self: &Arc<Self>) -> permafrost_proto::server::HealthProbe {
        let node = Arc::downgrade(self);
        Arc::new(move || match node.upgrade() {
            Some(node) => node.health(),
            None => Err("node stopped".into()),
        })
    }

    /// Serves the `SignerNode` API (coordinator role only) on `listener` until `shutdown` resolves.
    pub async fn run(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), String> {
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
                .max_decoding_message_size(max),
            RequireRole(Role::Coordinator),
        );
        let admin = InterceptedService::new(
            NodeAdminServer::new(admin::AdminService { node: self.clone() })
                .max_decoding_message_size(max),
            RequireRole(Role::Operator),
        );
        let routes = tonic::service::Routes::new(signer).add_service(admin);
        let result = permafrost_proto::server::serve(
            listener,
            &tls,
            routes,
            &["permafrost.v1.SignerNode", "permafrost.v1.NodeAdmin"],
            Some(self.health_probe()),
            permafrost_proto::server::ServerLimits::default(),
            shutdown,
        )
        .await;
        // Seal the chain's tail with a signed checkpoint on the way out.
        if let Err(e) = self
            .audit
            .append("node_stopped", serde_json::json!({}))
            .and_then(|_| self.audit.checkpoint())
        {
            tracing::error!(error = %e, "audit log: cannot record shutdown");
        }
        result
    }
}
