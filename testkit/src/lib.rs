//! Dev-only test helpers: a whole Permafrost cluster in one process, every
//! daemon a real gRPC server on 127.0.0.1 port 0 with real mTLS, plus
//! adversarial stand-ins (a lying node) that production builds never contain,
//! and the SoftHSM2 fixture of the PKCS#11 tests ([`softhsm`]). Its files are
//! laid out by [`layout`], as `permafrost-sim`'s are; its fixed approvers,
//! operators and policy are in `principals`, the ceremonies it runs through
//! the coordinator in `ceremonies`.

mod ceremonies;
pub mod liar;
mod principals;
pub use permafrost_simulations::prom_text;
pub mod rogue;
pub mod softhsm;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::{Signer, SigningKey};
use permafrost_coordinator::config::CoordinatorConfig;
use permafrost_coordinator::Coordinator;
use permafrost_core::withdrawal::WithdrawalRequest;
use permafrost_core::{unix_now, GroupName, NodeId, RequestId, Role, Tier};
use permafrost_node::config::NodeConfig;
use permafrost_node::SignerNode;
use permafrost_proto::daemon::Listeners;
use permafrost_proto::tls::TlsMaterial;
use permafrost_proto::{
    self as pb, ceremony_client::CeremonyClient, custody_client::CustodyClient,
    signer_node_client::SignerNodeClient,
};
use permafrostctl::pki;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use layout::{ClusterLayout, ClusterPlan, CoordinatorSpec, NodeSpec, SealerSpec};
pub use liar::Lie;
/// The one cluster-layout builder (plan → CA, certificates, manifest, configs,
/// policy), shared with `permafrost-sim` and the node's own tests.
pub use permafrost_simulations::layout;
pub use principals::{
    approved, approver, default_policy, operator_key, operator_registry, wire, OPERATOR_QUORUM,
    WARM_WALLET,
};

/// A running server task and the means to stop it.
struct Running {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), String>>,
    /// The node itself, for fault injection (weak: stopping it must release its store).
    signer: Option<std::sync::Weak<SignerNode>>,
}

/// The shutdown future a [`Running`] server is given.
type Shutdown = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

impl Running {
    /// Spawns `serve(shutdown)`; [`Running::stop`] resolves `shutdown` and waits.
    fn spawn<F, E>(
        signer: Option<std::sync::Weak<SignerNode>>,
        serve: impl FnOnce(Shutdown) -> F,
    ) -> Self
    where
        F: std::future::Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Display,
    {
        let (stop, rx) = oneshot::channel();
        let work = serve(Box::pin(async {
            let _ = rx.await;
        }));
        let task = tokio::spawn(async move { work.await.map_err(|e| e.to_string()) });
        Running {
            stop: Some(stop),
            task,
            signer,
        }
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = self.task.await;
    }
}

/// One signer node of the test cluster.
pub struct TestNode {
    /// Node id.
    pub id: NodeId,
    /// Region.
    pub region: String,
    /// Address the real node listens on.
    pub addr: SocketAddr,
    /// Where it serves Prometheus metrics (plain HTTP, `GET /metrics`).
    pub metrics_addr: SocketAddr,
    /// Its config.
    pub config: NodeConfig,
    running: Option<Running>,
    liar: Option<Running>,
}

/// Options for [`TestCluster::start_with`].
#[derive(Clone, Debug, Default)]
pub struct ClusterOptions {
    /// Region of each node (its length is the node count).
    pub regions: Vec<String>,
    /// Nodes (by index) that lie to the coordinator, and how.
    pub liars: Vec<(usize, Lie)>,
    /// Whose DKG message a liar with a DKG lie alters (a node id).
    pub tamper_sender: Option<String>,
    /// Coordinator round deadline.
    pub round_timeout_ms: Option<u64>,
    /// Policy (TOML) for every node and the coordinator; default [`default_policy`].
    pub policy: Option<String>,
    /// Per-node policy overrides (index, TOML).
    pub node_policies: Vec<(usize, String)>,
    /// Nodes (by index) configured for manual sealing (they start sealed).
    pub manual_seal: Vec<usize>,
}

/// An in-process cluster: CA, n nodes, one coordinator, custody and operator credentials.
pub struct TestCluster {
    /// Holds every file; removed on drop.
    pub dir: tempfile::TempDir,
    /// CA directory.
    pub ca_dir: PathBuf,
    /// Where every file of the cluster is, and the CA that issues more.
    pub layout: ClusterLayout,
    /// The nodes.
    pub nodes: Vec<TestNode>,
    /// Coordinator address.
    pub coordinator_addr: SocketAddr,
    /// Where the coordinator serves Prometheus metrics.
    pub coordinator_metrics_addr: SocketAddr,
    /// Coordinator config.
    pub coordinator_config: CoordinatorConfig,
    /// The custody service's Ed25519 signing key.
    pub custody_key: SigningKey,
    coordinator: Option<Running>,
    extra_coordinators: Vec<Running>,
}

const PASSPHRASE_ENV: &str = "PERMAFROST_TEST_PASSPHRASE";

/// The unseal passphrase every manually sealed test node is initialized with.
pub const UNSEAL_PASSPHRASE: &str = "cold storage is a process";

async fn free_listener() -> tokio::net::TcpListener {
    tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0")
}

impl TestCluster {
    /// A cluster with one node per entry of `regions`.
    pub async fn start(regions: &[&str]) -> Self {
        Self::start_with(ClusterOptions {
            regions: regions.iter().map(|r| r.to_string()).collect(),
            ..Default::default()
        })
        .await
    }

    /// A cluster with options.
    pub async fn start_with(opts: ClusterOptions) -> Self {
        permafrost_proto::tls::install_crypto_provider();
        if std::env::var_os("RUST_LOG").is_some() {
            permafrost_proto::logging::init();
        }
        // SAFETY of the test env: one fixed test passphrase, read by every in-process node.
        std::env::set_var(PASSPHRASE_ENV, "correct horse battery staple");
        let dir = tempfile::tempdir().expect("tempdir");
        let custody_key = SigningKey::generate(&mut rand::thread_rng());

        // Bind every listener first so the configs and the manifest know the ports.
        let mut listeners = Vec::new();
        let mut liar_listeners = Vec::new();
        let mut specs = Vec::new();
        for (i, region) in opts.regions.iter().enumerate() {
            let id = format!("n{}", i + 1);
            let listener = free_listener().await;
            let mut spec = NodeSpec::new(
                id.as_str(),
                region.as_str(),
                id.as_str(),
                listener.local_addr().expect("addr"),
                SealerSpec::fast_passphrase_env(PASSPHRASE_ENV),
            );
            spec.manual_seal = opts.manual_seal.contains(&i);
            spec.policy = opts
                .node_policies
                .iter()
                .find(|(idx, _)| *idx == i)
                .map(|(_, text)| text.clone());
            if let Some((_, lie)) = opts.liars.iter().find(|(idx, _)| *idx == i) {
                let liar_listener = free_listener().await;
                spec.endpoint = Some(liar_listener.local_addr().expect("addr").to_string());
                liar_listeners.push((i, *lie, liar_listener));
            }
            listeners.push(Listeners {
                grpc: listener,
                metrics: Some(free_listener().await),
            });
            specs.push(spec);
        }
        let listener = free_listener().await;
        let coordinator_addr = listener.local_addr().expect("addr");
        let coordinator_metrics = free_listener().await;
        let coordinator_metrics_addr = coordinator_metrics.local_addr().expect("addr");
        let layout = ClusterLayout::write(
            dir.path(),
            ClusterPlan {
                ca_name: "Permafrost test CA".into(),
                ca_dir: None,
                daemon_cert: pki::Extra {
                    ips: vec!["127.0.0.1".parse().expect("ip")],
                    ..Default::default()
                },
                nodes: specs,
                coordinator: Some(CoordinatorSpec {
                    id: "coord-1".into(),
                    dir: "coordinator".into(),
                    listen: coordinator_addr,
                    metrics_listen: None,
                    round_timeout_ms: Some(opts.round_timeout_ms.unwrap_or(3_000)),
                    health_interval_ms: 500,
                }),
                groups: Vec::new(),
                policy: opts.policy.clone().unwrap_or_else(default_policy),
                custody_keys: vec![hex::encode(custody_key.verifying_key().as_bytes())],
                operators: Some(operator_registry()),
            },
        )
        .expect("cluster layout");

        let mut nodes = Vec::new();
        let mut manifest = Vec::new();
        for (spec, listeners) in layout.plan().nodes.iter().zip(&listeners) {
            let config = NodeConfig::load(&layout.node_config_path(spec)).expect("node config");
            let unseal = spec.manual_seal.then_some(UNSEAL_PASSPHRASE);
            let info = permafrost_node::init_with(&config, unseal).expect("node init");
            manifest.push(layout.enroll(&info).expect("node cert"));
            nodes.push(TestNode {
                id: config.id.clone(),
                region: spec.region.clone(),
                addr: spec.listen,
                metrics_addr: listeners
                    .metrics
                    .as_ref()
                    .and_then(|m| m.local_addr().ok())
                    .expect("addr"),
                config,
                running: None,
                liar: None,
            });
        }
        layout.write_manifest(manifest).expect("manifest");
        for (node, listeners) in nodes.iter_mut().zip(listeners) {
            node.running = Some(start_node(&node.config, listeners).await);
        }

        let coordinator_config =
            CoordinatorConfig::load(&layout.write_coordinator().expect("coordinator files"))
                .expect("coordinator config");
        let mut cluster = TestCluster {
            ca_dir: layout.ca_dir().to_path_buf(),
            dir,
            layout,
            nodes,
            coordinator_addr,
            coordinator_metrics_addr,
            coordinator_config,
            custody_key,
            coordinator: None,
            extra_coordinators: Vec::new(),
        };
        for (i, lie, listener) in liar_listeners {
            let upstream = cluster.node_client(i, Role::Coordinator, "liar-upstream");
            let id = cluster.nodes[i].id.clone();
            let tls = cluster.credential(Role::Node, id.as_str());
            let tamper = opts.tamper_sender.clone();
            cluster.nodes[i].liar = Some(liar::serve(listener, tls, upstream, lie, tamper));
        }
        cluster.coordinator = Some(start_coordinator(
            &cluster.coordinator_config,
            Listeners {
                grpc: listener,
                metrics: Some(coordinator_metrics),
            },
        ));
        cluster
    }

    /// A fresh certificate for `role`/`id`, issued by the cluster CA.
    pub fn credential(&self, role: Role, id: &str) -> TlsMaterial {
        self.layout.credential(role, id).expect("issue credential")
    }

    fn coordinator_channel(&self, tls: &TlsMaterial) -> Channel {
        tls.channel(
            &self.coordinator_addr.to_string(),
            &pki::server_name(Role::Coordinator, "coord-1"),
            Duration::from_secs(30),
        )
        .expect("channel")
    }

    /// A custody client (role custody).
    pub fn custody(&self) -> CustodyClient<Channel> {
        CustodyClient::new(self.coordinator_channel(&self.credential(Role::Custody, "custody-1")))
    }

    /// An operator client (role operator).
    pub fn operator(&self) -> CeremonyClient<Channel> {
        CeremonyClient::new(
            self.coordinator_channel(&self.credential(Role::Operator, "operator-1")),
        )
    }

    /// Group `group` as node `i` reports it itself in its status (None: it
    /// holds no such group).
    pub async fn node_key_group(&self, i: usize, group: &str) -> Option<pb::NodeKeyGroup> {
        self.node_client(i, Role::Coordinator, "probe")
            .get_status(pb::NodeStatusRequest {})
            .await
            .expect("status")
            .into_inner()
            .key_groups
            .into_iter()
            .find(|g| g.name == group)
    }

    /// A client straight to node `i` (its real address), authenticated as `role`/`id`.
    pub fn node_client(&self, i: usize, role: Role, id: &str) -> SignerNodeClient<Channel> {
        let tls = self.credential(role, id);
        let node = &self.nodes[i];
        SignerNodeClient::new(
            tls.channel(
                &node.addr.to_string(),
                &pki::server_name(Role::Node, node.id.as_str()),
                Duration::from_secs(10),
            )
            .expect("channel"),
        )
    }

    /// A withdrawal request for `group`, valid for an hour.
    pub fn request(&self, id: &str, group: &str, tier: Tier) -> WithdrawalRequest {
        let now = unix_now();
        WithdrawalRequest {
            request_id: RequestId::new(id).expect("valid id"),
            key_group: GroupName::new(group).expect("valid group"),
            tier,
            asset: "BTC".into(),
            amount: 50_000_000,
            destination: "bc1qtestdestination0000000000000000000".into(),
            payload: sha256(id.as_bytes()),
            psbt: None,
            created_at: now,
            expires_at: now + 3600,
            requested_by: "custody-1".into(),
        }
    }

    /// An approval of `request` by test approver `name`, valid for `ttl` seconds.
    pub fn approve(&self, request: &WithdrawalRequest, name: &str, ttl: u64) -> pb::Approval {
        let expires_at = unix_now() + ttl;
        let msg = permafrost_core::policy::approval_message(&request.digest(), name, expires_at);
        pb::Approval {
            request_id: request.request_id.to_string(),
            approver_id: name.into(),
            expires_at,
            signature: approver(name).sign(&msg).to_bytes().to_vec(),
        }
    }

    /// Signs `request` with the custody key.
    pub fn sign(&self, request: &WithdrawalRequest) -> pb::SignedWithdrawal {
        pb::SignedWithdrawal {
            request: Some(request.into()),
            custody_signature: self
                .custody_key
                .sign(&request.digest().0)
                .to_bytes()
                .to_vec(),
        }
    }

    /// Holds node `i`'s store writer for `d`, as a hung disk would (S4).
    pub fn stall_node_store(&self, i: usize, d: Duration) {
        let node = self.nodes[i]
            .running
            .as_ref()
            .and_then(|r| r.signer.as_ref())
            .and_then(|w| w.upgrade())
            .expect("node running");
        node.store().inner().inject_stall(d).expect("stall");
    }

    /// Stops node `i` (its memory, hence its nonces, is gone).
    pub async fn stop_node(&mut self, i: usize) {
        if let Some(r) = self.nodes[i].running.take() {
            r.stop().await;
        }
    }

    /// Restarts node `i` from its data dir on the same address.
    pub async fn restart_node(&mut self, i: usize) {
        self.stop_node(i).await;
        let addr = self.nodes[i].addr;
        let mut listener = None;
        for _ in 0..50 {
            match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => {
                    listener = Some(l);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        let listener = listener.expect("rebind node address");
        let metrics = free_listener().await;
        self.nodes[i].metrics_addr = metrics.local_addr().expect("addr");
        let listeners = Listeners {
            grpc: listener,
            metrics: Some(metrics),
        };
        self.nodes[i].running = Some(start_node(&self.nodes[i].config, listeners).await);
    }

    /// Stops and restarts the coordinator from its data dir.
    pub async fn restart_coordinator(&mut self) {
        if let Some(r) = self.coordinator.take() {
            r.stop().await;
        }
        let mut listener = None;
        for _ in 0..50 {
            match tokio::net::TcpListener::bind(self.coordinator_addr).await {
                Ok(l) => {
                    listener = Some(l);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        let listener = listener.expect("rebind coordinator address");
        let metrics = free_listener().await;
        self.coordinator_metrics_addr = metrics.local_addr().expect("addr");
        let listeners = Listeners {
            grpc: listener,
            metrics: Some(metrics),
        };
        self.coordinator = Some(start_coordinator(&self.coordinator_config, listeners));
    }

    /// Starts another coordinator (own id, certificate and store, same nodes)
    /// and returns a custody client and an operator channel for it (F5: two
    /// coordinators, one request).
    pub async fn start_another_coordinator(&mut self) -> (CustodyClient<Channel>, Channel) {
        let n = self.extra_coordinators.len() + 2;
        let id = format!("coord-{n}");
        let dir = self.dir.path().join(&id);
        self.layout
            .issue_daemon_cert(Role::Coordinator, &id, &dir)
            .expect("coordinator cert");
        let listener = free_listener().await;
        let addr = listener.local_addr().expect("addr");
        let mut config = self.coordinator_config.clone();
        config.id = id.clone();
        config.listen = addr;
        config.data_dir = dir.join("data");
        config.tls.cert = dir.join(format!("{id}.pem"));
        config.tls.key = dir.join(format!("{id}.key"));
        self.extra_coordinators
            .push(start_coordinator(&config, Listeners::grpc(listener)));
        let channel = |role, who| {
            self.credential(role, who)
                .channel(
                    &addr.to_string(),
                    &pki::server_name(Role::Coordinator, &id),
                    Duration::from_secs(30),
                )
                .expect("channel")
        };
        (
            CustodyClient::new(channel(Role::Custody, "custody-1")),
            channel(Role::Operator, "operator-1"),
        )
    }

    /// Stops everything.
    pub async fn shutdown(mut self) {
        for r in self.extra_coordinators.drain(..) {
            r.stop().await;
        }
        if let Some(r) = self.coordinator.take() {
            r.stop().await;
        }
        for node in &mut self.nodes {
            if let Some(r) = node.liar.take() {
                r.stop().await;
            }
            if let Some(r) = node.running.take() {
                r.stop().await;
            }
        }
    }
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).to_vec()
}

async fn start_node(config: &NodeConfig, listeners: Listeners) -> Running {
    // The store is released only once the previous instance is fully dropped.
    let mut node: Option<Arc<SignerNode>> = None;
    for _ in 0..100 {
        match SignerNode::open(config) {
            Ok(n) => {
                node = Some(n);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let node = node.unwrap_or_else(|| SignerNode::open(config).expect("open node"));
    let signer = Some(Arc::downgrade(&node));
    Running::spawn(signer, |shutdown| async move {
        node.serve(listeners, shutdown).await
    })
}

fn start_coordinator(config: &CoordinatorConfig, listeners: Listeners) -> Running {
    // A stopped coordinator's last background tasks (drivers, the recovery
    // pass) may still hold its store for a moment in this process; a real
    // restart is a new process, whose lock the old one's exit released.
    let mut opened = Coordinator::open(config.clone());
    for _ in 0..50 {
        match &opened {
            Err(e) if e.to_string().contains("already open") => {
                std::thread::sleep(Duration::from_millis(100));
                opened = Coordinator::open(config.clone());
            }
            _ => break,
        }
    }
    let coord = opened.expect("open coordinator");
    Running::spawn(None, |shutdown| async move {
        coord.serve(listeners, shutdown).await
    })
}

/// Reads node `i`'s key package for `group` straight from its sealed store,
/// as an attacker who stole the disk and the passphrase would. The node must be stopped.
pub fn steal_key_package(
    cluster: &TestCluster,
    i: usize,
    group: &str,
) -> frost_secp256k1::keys::KeyPackage {
    let config = &cluster.nodes[i].config;
    let passphrase = std::env::var(PASSPHRASE_ENV).expect("test passphrase");
    let sealer =
        permafrost_hsm::PassphraseSealer::open(&config.data_dir, &passphrase).expect("open sealer");
    let store = permafrost_node::store::NodeStore::open(&config.data_dir).expect("open store");
    let name = GroupName::new(group).expect("group name");
    let record = store.group(&name).expect("read").expect("group present");
    permafrost_node::vault::ShareVault::open_offline(
        &sealer,
        &config.data_dir,
        &config.id,
        &name,
        &record.sealed_key_package,
    )
    .expect("unseal key package")
}

/// Asserts that `signature` (65 bytes) is a valid FROST signature of `message`
/// under the 33-byte `group_key`.
pub fn assert_signature_valid(group_key: &[u8], message: &[u8], signature: &[u8]) {
    let key = frost_secp256k1::VerifyingKey::deserialize(group_key).expect("33-byte group key");
    let sig = frost_secp256k1::Signature::deserialize(signature).expect("65-byte signature");
    key.verify(message, &sig)
        .expect("signature verifies under the group key");
}

impl TestCluster {
    /// Polls `GetWithdrawal` (bounded, 20 s) until the request is signed; panics with the last status otherwise.
    pub async fn wait_signed(&self, request_id: &str) -> pb::WithdrawalStatus {
        let mut last = None;
        for _ in 0..80 {
            let s = self
                .custody()
                .get_withdrawal(pb::GetWithdrawalRequest {
                    request_id: request_id.into(),
                })
                .await
                .expect("get withdrawal")
                .into_inner();
            if s.state() == pb::WithdrawalState::Signed {
                return s;
            }
            last = Some(s);
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!("{request_id} not signed in time: {last:?}");
    }
}
