//! Initializing a node and opening it: the sealer, the sealed identity and
//! TLS key, the manifest check and the audit log. Key shares are not sealed
//! here but in [`crate::vault`].

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use permafrost_core::authz::CheckSettings;
use permafrost_core::identity::NodeIdentity;
use permafrost_core::manifest::ClusterManifest;
use permafrost_core::NodeId;
use permafrost_hsm::{
    KdfParams, PassphraseSealer, Pkcs11Config, Pkcs11Sealer, SealContext, Sealer,
};
use permafrost_proto::tls::TlsMaterial;

use crate::ceremonies::CeremonyTable;
use crate::config::{self, KdfProfile, NodeConfig, SealerConfig};
use crate::hygiene;
use crate::nonces::NoncePool;
use crate::store::NodeStore;
use crate::vault::ShareVault;
use crate::{NodeError, SignerNode};

const IDENTITY: &str = "identity";
const TLS_KEY: &str = "tls-key";

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

/// The unseal passphrase `init` sets for a manually sealed node, from
/// `--unseal-passphrase-file` or `--unseal-passphrase-env` (at most one).
pub fn unseal_passphrase_from(
    file: Option<std::path::PathBuf>,
    env: Option<String>,
) -> Result<Option<zeroize::Zeroizing<String>>, NodeError> {
    let source = match (file, env) {
        (None, None) => return Ok(None),
        (Some(path), None) => permafrost_hsm::SecretSource::File(path),
        (None, Some(var)) => permafrost_hsm::SecretSource::Env(var),
        (Some(_), Some(_)) => {
            return Err(NodeError::Config(
                "give one of --unseal-passphrase-file or --unseal-passphrase-env".into(),
            ))
        }
    };
    Ok(Some(source.read()?))
}

/// `permafrost-node init` as the command runs it: [`init_with`], then the public
/// info printed as JSON for the manifest and the CA.
pub fn init_and_print(
    config: &NodeConfig,
    unseal_passphrase: Option<&str>,
) -> Result<(), NodeError> {
    let info = init_with(config, unseal_passphrase)?;
    let json = serde_json::to_string_pretty(&info).map_err(|e| NodeError::Bug(e.to_string()))?;
    println!("{json}");
    Ok(())
}

/// `permafrost-node init` of a node that is not manually sealed: see [`init_with`].
pub fn init(config: &NodeConfig) -> Result<NodePublicInfo, NodeError> {
    init_with(config, None)
}

/// Checks the unseal passphrase a manually sealed node is initialized with.
fn check_unseal_passphrase(
    config: &NodeConfig,
    unseal_passphrase: Option<&str>,
) -> Result<(), NodeError> {
    match (config.seal.manual, unseal_passphrase) {
        (false, None) => Ok(()),
        (false, Some(_)) => Err(NodeError::Config(
            "an unseal passphrase is only for a node with [seal] manual = true".into(),
        )),
        (true, None) => Err(NodeError::Config(
            "[seal] manual = true: the unseal passphrase is set here, at init, never by a first unseal; \
             give --unseal-passphrase-file or --unseal-passphrase-env"
                .into(),
        )),
        (true, Some(p)) if p.len() < crate::admin::MIN_UNSEAL_PASSPHRASE => {
            Err(NodeError::Config(format!(
                "unseal passphrase: {} characters; use at least {}",
                p.len(),
                crate::admin::MIN_UNSEAL_PASSPHRASE
            )))
        }
        (true, Some(p)) => {
            // The sealer's own passphrase sits on this node's disk or in its
            // environment; the unseal passphrase must be something else.
            if let SealerConfig::Passphrase {
                passphrase_file,
                passphrase_env,
                ..
            } = &config.sealer
            {
                let stored =
                    config::secret_source("passphrase", passphrase_file, passphrase_env)?.read()?;
                if stored.as_str() == p {
                    return Err(NodeError::Config(
                        "the unseal passphrase is the sealer's own passphrase, which the node reads at start; choose another".into(),
                    ));
                }
            }
            Ok(())
        }
    }
}

/// `permafrost-node init`: creates the data dir, the sealer state, the identity
/// keys and the TLS key (both sealed), and, for a node with `[seal] manual =
/// true`, the unseal sealer under `unseal_passphrase` (the only time it is
/// set); returns what the operator publishes.
pub fn init_with(
    config: &NodeConfig,
    unseal_passphrase: Option<&str>,
) -> Result<NodePublicInfo, NodeError> {
    config.validate()?;
    check_unseal_passphrase(config, unseal_passphrase)?;
    if NodeStore::exists_in(&config.data_dir) {
        return Err(NodeError::Config(format!(
            "data_dir = {}: already holds a node store; refusing to initialize over it",
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
        rcgen::KeyPair::generate().map_err(|e| NodeError::Bug(format!("TLS key: {e}")))?,
    );
    let key_pem = zeroize::Zeroizing::new(key.serialize_pem());
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())
        .and_then(|p| p.serialize_request(&*key))
        .and_then(|c| c.pem())
        .map_err(|e| NodeError::Bug(format!("CSR: {e}")))?;
    store.put_sealed_new(TLS_KEY, &sealer.seal(&ctx(TLS_KEY), key_pem.as_bytes())?)?;
    if let Some(passphrase) = unseal_passphrase {
        let params = match &config.sealer {
            SealerConfig::Passphrase {
                kdf: KdfProfile::FastInsecure,
                ..
            } => KdfParams::fast_for_tests(),
            _ => KdfParams::production(),
        };
        PassphraseSealer::create(
            &crate::admin::manual_seal_dir(&config.data_dir),
            passphrase,
            params,
        )?;
    }
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
            return Err(NodeError::Config(format!(
                "data_dir = {}: holds no initialized node; run `permafrost-node init` first",
                config.data_dir.display()
            )));
        }
        hygiene::check_data_dir(&config.data_dir)?;
        let manual_dir = crate::admin::manual_seal_dir(&config.data_dir);
        if config.seal.manual && !PassphraseSealer::state_exists(&manual_dir) {
            return Err(NodeError::Config(format!(
                "[seal] manual = true, but {} holds no unseal state: the unseal passphrase is set at \
                 `permafrost-node init --unseal-passphrase-file`, never by a first unseal",
                manual_dir.display()
            )));
        }
        let policy = config.load_policy()?;
        reconcile(config, &policy)?;
        let sealer: Arc<dyn Sealer> = Arc::from(open_sealer(config, false)?);
        let store = NodeStore::open(&config.data_dir)?;
        let ctx = |purpose: &str| SealContext::new(config.id.as_str(), purpose);
        let blob = store
            .sealed(IDENTITY)?
            .ok_or_else(|| NodeError::Corrupt("identity missing from the store".into()))?;
        let identity = NodeIdentity::from_secret_bytes(&sealer.unseal(&ctx(IDENTITY), &blob)?)
            .map_err(|e| NodeError::Corrupt(format!("stored identity unreadable: {e}")))?;
        let blob = store
            .sealed(TLS_KEY)?
            .ok_or_else(|| NodeError::Corrupt("TLS key missing from the store".into()))?;
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
            .map_err(|e| NodeError::Bug(format!("identity does not round-trip: {e}")))?;
        let audit = permafrost_proto::audit::AuditLog::open(
            &config.audit_path(),
            config.id.as_str(),
            hex::encode(identity.identity_key().as_bytes()),
            Box::new(move |msg| signing_identity.sign(msg)),
        )
        .map_err(|e| NodeError::Unavailable(format!("audit: {e}")))?;
        let registry = config.operator_registry()?;
        let share_sealer: Option<Arc<dyn Sealer>> = if config.seal.manual {
            None
        } else {
            Some(sealer.clone())
        };
        audit
            .append(
                "node_started",
                serde_json::json!({"sealed": share_sealer.is_none(), "policy_hash": hex::encode(policy.hash()), "operator_registry": registry.as_ref().map(|r| hex::encode(r.hash()))}),
            )
            .map_err(|e| NodeError::Unavailable(format!("audit: {e}")))?;
        let vault = ShareVault::new(config.id.clone(), &config.data_dir, share_sealer);
        shred_unused_keys(&vault, &store, &audit)?;
        let metrics = crate::metrics::NodeMetrics::new(config.id.as_str(), store.inner())?;
        Ok(Arc::new(Self {
            metrics,
            id: config.id.clone(),
            region: config.region.clone(),
            identity,
            directory,
            vault,
            manual_seal: config.seal.manual,
            data_dir: config.data_dir.clone(),
            store,
            policy,
            audit,
            sessions: Arc::new(tokio::sync::Semaphore::new(config.limits.max_sessions)),
            max_sessions: config.limits.max_sessions,
            settings: CheckSettings {
                custody_keys: config.custody_keys()?,
                max_clock_skew_secs: config.max_clock_skew_secs,
                max_lifetime_secs: config.max_request_lifetime_secs,
            },
            // Never more than the pool holds: the pool's own bound still applies.
            max_banked: config.nonces.max_banked.min(config.nonces.max_open),
            nonces: Mutex::new(NoncePool::new(
                config.nonces.max_open,
                Duration::from_secs(config.nonces.ttl_secs),
            )),
            reservations: Mutex::new(crate::reservations::Reservations::new(
                config.nonces.max_open,
                Duration::from_secs(config.nonces.ttl_secs),
            )),
            ledgers: Mutex::default(),
            ceremonies: CeremonyTable::default(),
            refresh_lock: Default::default(),
            registry,
            unseal_throttle: Default::default(),
            tls,
        }))
    }
}

/// K8: destroys every data key no stored share uses — the old share of a
/// refresh or repair committed just before a crash, or a new share from a
/// ceremony that never finished — and audits each.
fn shred_unused_keys(
    vault: &ShareVault,
    store: &NodeStore,
    audit: &permafrost_proto::audit::AuditLog,
) -> Result<(), NodeError> {
    let records = store.groups()?;
    let in_use = records.iter().flat_map(|r| {
        std::iter::once((&r.name, r.sealed_key_package.as_slice())).chain(
            r.pending_refresh
                .as_ref()
                .map(|p| (&r.name, p.sealed_key_package.as_slice())),
        )
    });
    for key in vault.shred_unused(in_use)? {
        audit
            .append(
                "data_key_shredded",
                serde_json::json!({"key": key, "why": "no stored share uses it"}),
            )
            .map_err(|e| NodeError::Unavailable(format!("audit: {e}")))?;
        tracing::info!(key = %key, "destroyed a data key no stored share uses");
    }
    Ok(())
}

/// Start-up reconciliation of the node's own settings with every group's
/// policy: a limit the node would silently tighten is an error naming both
/// fields, so a request the policy allows never fails at every node later.
fn reconcile(
    config: &crate::config::NodeConfig,
    policy: &permafrost_core::policy::Policy,
) -> Result<(), NodeError> {
    for (name, group) in policy.groups() {
        if group.max_lifetime_secs > config.max_request_lifetime_secs {
            return Err(NodeError::Config(format!(
                "policy groups.{name}.max_lifetime_secs = {} exceeds this node's max_request_lifetime_secs = {}: requests the policy allows would be refused; raise the node setting or lower the policy",
                group.max_lifetime_secs, config.max_request_lifetime_secs
            )));
        }
    }
    Ok(())
}
