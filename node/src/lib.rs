//! The Permafrost signer node: holds one FROST share per key group, sealed at
//! rest, and releases a signature share only for a request it has checked
//! itself. The coordinator is never trusted for safety.

pub mod config;
pub mod nonces;
pub mod service;
pub mod store;

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use permafrost_core::authz::CheckSettings;
use permafrost_core::identity::NodeIdentity;
use permafrost_core::manifest::{ClusterManifest, Directory};
use permafrost_core::NodeId;
use permafrost_hsm::{KdfParams, PassphraseSealer, SealContext, SealError, Sealer, SecretSource};
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
}

const IDENTITY: &str = "identity";
const TLS_KEY: &str = "tls-key";

/// Everything a running node holds.
pub struct SignerNode {
    pub(crate) id: NodeId,
    pub(crate) region: String,
    pub(crate) identity: NodeIdentity,
    pub(crate) directory: Directory,
    pub(crate) sealer: Box<dyn Sealer>,
    pub(crate) store: NodeStore,
    pub(crate) settings: CheckSettings,
    pub(crate) nonces: Mutex<NoncePool>,
    pub(crate) ceremonies: Mutex<HashMap<String, service::CeremonyState>>,
    tls: TlsMaterial,
}

impl std::fmt::Debug for SignerNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignerNode").field("id", &self.id).finish_non_exhaustive()
    }
}

fn open_sealer(config: &NodeConfig, create: bool) -> Result<Box<dyn Sealer>, NodeError> {
    match &config.sealer {
        SealerConfig::Passphrase {
            passphrase_file,
            passphrase_env,
            kdf,
        } => {
            let source = match (passphrase_file, passphrase_env) {
                (Some(path), _) => SecretSource::File(path.clone()),
                (None, Some(var)) => SecretSource::Env(var.clone()),
                (None, None) => return Err(NodeError::Config("sealer: no passphrase source".into())),
            };
            let passphrase = source.read()?;
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

fn create_private_dir(path: &Path) -> Result<(), NodeError> {
    std::fs::create_dir_all(path).map_err(|e| NodeError::Config(format!("data_dir = {}: {e}", path.display())))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| NodeError::Config(format!("data_dir = {}: {e}", path.display())))?;
    }
    Ok(())
}

/// `permafrost-node init`: creates the data dir, the sealer state, the identity
/// keys and the TLS key (both sealed), and returns what the operator publishes.
pub fn init(config: &NodeConfig) -> Result<NodePublicInfo, NodeError> {
    create_private_dir(&config.data_dir)?;
    let sealer = open_sealer(config, true)?;
    let store = NodeStore::open(&config.data_dir)?;
    let identity = NodeIdentity::generate(&mut rand::thread_rng());
    let ctx = |purpose: &str| SealContext::new(config.id.as_str(), purpose);
    store.put_sealed_new(IDENTITY, &sealer.seal(&ctx(IDENTITY), &identity.to_secret_bytes())?)?;
    let key = rcgen::KeyPair::generate().map_err(|e| NodeError::State(format!("TLS key: {e}")))?;
    let key_pem = zeroize::Zeroizing::new(key.serialize_pem());
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())
        .and_then(|p| p.serialize_request(&key))
        .and_then(|c| c.pem())
        .map_err(|e| NodeError::State(format!("CSR: {e}")))?;
    store.put_sealed_new(TLS_KEY, &sealer.seal(&ctx(TLS_KEY), key_pem.as_bytes())?)?;
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
        if !config.data_dir.join("store").exists() {
            return Err(NodeError::State(format!(
                "{} holds no initialized node; run `permafrost-node init` first",
                config.data_dir.display()
            )));
        }
        let sealer = open_sealer(config, false)?;
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
        let read = |p: &Path| std::fs::read(p).map_err(|e| NodeError::Config(format!("{}: {e}", p.display())));
        let tls = TlsMaterial::from_pem(&read(&config.tls.ca_cert)?, &read(&config.tls.cert)?, &tls_key);
        let manifest_text = std::fs::read_to_string(&config.manifest)
            .map_err(|e| NodeError::Config(format!("manifest = {}: {e}", config.manifest.display())))?;
        let directory = ClusterManifest::from_json(&manifest_text)
            .and_then(|m| m.validate())
            .map_err(|e| NodeError::Config(format!("manifest = {}: {e}", config.manifest.display())))?;
        let me = directory
            .get(&config.id)
            .map_err(|_| NodeError::Config(format!("id = {}: not in the cluster manifest", config.id)))?;
        if me.identity_key != identity.identity_key() || me.encryption_key != identity.encryption_public_key() {
            return Err(NodeError::Config(format!(
                "manifest = {}: the keys listed for {} are not this node's",
                config.manifest.display(),
                config.id
            )));
        }
        Ok(Arc::new(Self {
            id: config.id.clone(),
            region: config.region.clone(),
            identity,
            directory,
            sealer,
            store,
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

    /// Serves the `SignerNode` API (coordinator role only) on `listener` until `shutdown` resolves.
    pub async fn run(self: Arc<Self>, listener: TcpListener, shutdown: impl Future<Output = ()> + Send) -> Result<(), String> {
        use permafrost_proto::signer_node_server::SignerNodeServer;
        let tls = self.tls.clone();
        let svc = tonic::service::interceptor::InterceptedService::new(
            SignerNodeServer::new(service::NodeService { node: self })
                .max_decoding_message_size(permafrost_proto::server::MAX_MESSAGE_BYTES),
            permafrost_proto::auth::RequireRole(permafrost_core::Role::Coordinator),
        );
        let routes = tonic::service::Routes::new(svc);
        permafrost_proto::server::serve(listener, &tls, routes, &["permafrost.v1.SignerNode"], shutdown).await
    }
}
