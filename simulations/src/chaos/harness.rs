//! The chaos cluster: the local cluster of `permafrost-sim demo` (CA, five
//! node processes in three regions, a coordinator process, mTLS on 127.0.0.1)
//! with a fault-injecting proxy on every coordinator→node link, lying nodes
//! on demand, `kill -9` and restart of any daemon, and the clients a scenario
//! needs. Dropping it stops every process it started. Lying nodes (their
//! command line and putting them in a link) are in `liars`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use frost_secp256k1::keys::{KeyPackage, PublicKeyPackage};
use permafrost_core::withdrawal::WithdrawalRequest;
use permafrost_core::{unix_now, GroupName, NodeId, RequestId, Role, Tier};
use permafrost_hsm::PassphraseSealer;
use permafrost_node::vault::ShareVault;
use permafrost_proto::node_admin_client::NodeAdminClient;
use permafrost_proto::signer_node_client::SignerNodeClient;
use permafrost_proto::tls::TlsMaterial;
use permafrost_proto::{self as pb, custody_client::CustodyClient};
use permafrostctl::client;
use permafrostctl::pki;
use sha2::{Digest, Sha256};
use tokio::time::Instant;
use tonic::transport::Channel;

use crate::chaos::liar::LiarEvent;
use crate::chaos::process::{kill9, LiarProcess};
use crate::chaos::proxy::{LinkFaults, LinkProxy};
use crate::chaos::seed;
use crate::cluster::{Binaries, CreateOptions, LocalCluster, COORDINATOR_ID, CUSTODY_ID, NODES};
use crate::demo::DEMO_DESTINATION;
use crate::progress::Progress;
use crate::SimError;

mod liars;

pub use liars::{liar_args, LiarSpec};

/// The key group every scenario signs with; the cluster policy knows it as a
/// warm group (no approvals up to 1 BTC per request).
pub const GROUP: &str = "warm-1";
/// The region the coordinator is taken to be in (latency to the others is "inter-region").
pub const COORDINATOR_REGION: &str = "eu-west";
/// Id of the coordinator certificate the harness issues itself (replays, liars).
pub(crate) const HARNESS_COORDINATOR_ID: &str = "chaos-harness";
/// How long a cluster may take to come up.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The daemons plus `permafrost-liar`, all from one directory.
#[derive(Clone, Debug)]
pub struct ChaosBinaries {
    /// `permafrost-node` and `permafrost-coordinator`.
    pub daemons: Binaries,
    /// `permafrost-liar`.
    pub liar: PathBuf,
}

impl ChaosBinaries {
    /// Finds the binaries in `dir`, or next to the running executable.
    pub fn locate(dir: Option<&Path>) -> Result<Self, SimError> {
        let daemons = Binaries::locate(dir)?;
        let liar = daemons.node.with_file_name("permafrost-liar");
        if !liar.is_file() {
            return Err(SimError::Setup(format!(
                "permafrost-liar not found in {}; build every binary first: cargo build --workspace --bins",
                liar.parent().map(Path::display).map(|d| d.to_string()).unwrap_or_default()
            )));
        }
        Ok(Self { daemons, liar })
    }
}

/// A signer node as the harness sees it.
#[derive(Clone, Debug)]
pub struct NodeInfo {
    /// Node id.
    pub id: String,
    /// Region.
    pub region: String,
    /// Where the node itself listens (the manifest lists its proxy instead).
    pub addr: SocketAddr,
}

/// A custody-signed withdrawal the scenario submits.
#[derive(Clone, Debug)]
pub struct Withdrawal {
    /// The request.
    pub request: WithdrawalRequest,
    /// What goes on the wire.
    pub signed: pb::SignedWithdrawal,
}

impl Withdrawal {
    /// Request id.
    pub fn id(&self) -> &str {
        self.request.request_id.as_str()
    }

    /// Digest of the canonical encoding, hex.
    pub fn digest_hex(&self) -> String {
        self.request.digest().to_hex()
    }
}

/// The running chaos cluster.
#[derive(Debug)]
pub struct ChaosCluster {
    cluster: LocalCluster,
    bins: ChaosBinaries,
    nodes: Vec<NodeInfo>,
    proxies: BTreeMap<String, LinkProxy>,
    liars: BTreeMap<String, LiarProcess>,
    custody: CustodyClient<Channel>,
    harness_tls: TlsMaterial,
    operator_tls: TlsMaterial,
    down: BTreeSet<String>,
    unexpected_exits: Vec<String>,
    liar_events: Vec<(String, LiarEvent)>,
    seed: u64,
}

fn setup<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> SimError + '_ {
    move |e| SimError::Setup(format!("{what}: {e}"))
}

impl ChaosCluster {
    /// Builds a cluster in `dir` with a proxy on every link and waits until the
    /// coordinator reaches every node through them.
    pub async fn start(
        dir: &Path,
        bins: &ChaosBinaries,
        seed: u64,
        progress: &Progress,
    ) -> Result<Self, SimError> {
        let links_seed = seed::derive(seed, "links");
        let mut proxies = BTreeMap::new();
        for plan in NODES {
            let proxy = LinkProxy::bind(plan.id, links_seed)
                .await
                .map_err(setup("cannot bind a proxy port on 127.0.0.1"))?;
            proxies.insert(plan.id.to_string(), proxy);
        }
        let options = CreateOptions {
            manifest_endpoints: proxies
                .iter()
                .map(|(id, p)| (id.clone(), p.addr().to_string()))
                .collect(),
            message_groups: true,
            // The harness issues its own certificates (replays, liars) from the CA in the run directory.
            offline_ca: None,
        };
        let cluster = LocalCluster::create_with(dir, &bins.daemons, progress, &options).await?;
        let mut nodes = Vec::new();
        for n in &cluster.file.nodes {
            let addr: SocketAddr = n.endpoint.parse().map_err(setup(
                "cluster.json lists a node endpoint that is not an address",
            ))?;
            let proxy = proxies
                .get_mut(&n.id)
                .ok_or_else(|| SimError::Setup(format!("no proxy for node {}", n.id)))?;
            proxy.start(addr);
            nodes.push(NodeInfo {
                id: n.id.clone(),
                region: n.region.clone(),
                addr,
            });
        }
        let ca_dir = cluster.dir.join("ca");
        let chaos_dir = cluster.dir.join("chaos");
        pki::issue_to_dir(
            &ca_dir,
            Role::Coordinator,
            HARNESS_COORDINATOR_ID,
            &pki::Extra::default(),
            None,
            &chaos_dir,
        )?;
        let ca = read(&ca_dir.join(pki::CA_CERT))?;
        let harness_tls = TlsMaterial::from_pem(
            &ca,
            &read(&chaos_dir.join(format!("{HARNESS_COORDINATOR_ID}.pem")))?,
            &read(&chaos_dir.join(format!("{HARNESS_COORDINATOR_ID}.key")))?,
        );
        let f = &cluster.file;
        let operator_tls = TlsMaterial::from_pem(
            &ca,
            &read(&cluster.dir.join(&f.operator.cert))?,
            &read(&cluster.dir.join(&f.operator.key))?,
        );
        let custody = cluster.custody.custody()?;
        let mut chaos = Self {
            cluster,
            bins: bins.clone(),
            nodes,
            proxies,
            liars: BTreeMap::new(),
            custody,
            harness_tls,
            operator_tls,
            down: BTreeSet::new(),
            unexpected_exits: Vec::new(),
            liar_events: Vec::new(),
            seed,
        };
        let all: Vec<String> = chaos.nodes.iter().map(|n| n.id.clone()).collect();
        chaos.wait_reachable(&all, READY_TIMEOUT).await?;
        Ok(chaos)
    }

    /// The run seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The cluster directory.
    pub fn dir(&self) -> &Path {
        &self.cluster.dir
    }

    /// Every signer node.
    pub fn nodes(&self) -> &[NodeInfo] {
        &self.nodes
    }

    /// Node ids.
    pub fn node_ids(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.id.clone()).collect()
    }

    fn node(&self, id: &str) -> Result<&NodeInfo, SimError> {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .ok_or_else(|| SimError::Setup(format!("no node {id} in the chaos cluster")))
    }

    /// The proxy on the coordinator's link to `id`.
    pub fn proxy(&self, id: &str) -> Result<&LinkProxy, SimError> {
        self.proxies
            .get(id)
            .ok_or_else(|| SimError::Setup(format!("no proxy for node {id}")))
    }

    /// Every proxy, by node id.
    pub fn proxies(&self) -> &BTreeMap<String, LinkProxy> {
        &self.proxies
    }

    /// Sets the faults of the link to `id`.
    pub fn set_faults(&self, id: &str, faults: LinkFaults) -> Result<(), SimError> {
        self.proxy(id)?.set_faults(faults);
        Ok(())
    }

    /// Clears the faults of every link.
    pub fn heal_all(&self) {
        for p in self.proxies.values() {
            p.set_faults(LinkFaults::healthy());
        }
    }

    /// Daemons killed and not restarted.
    pub fn down(&self) -> &BTreeSet<String> {
        &self.down
    }

    /// Daemons that exited without the scenario killing them.
    pub fn unexpected_exits(&mut self) -> Vec<String> {
        self.reap(None);
        self.unexpected_exits.clone()
    }

    /// Reaps exited daemons; true once `expected` is among them.
    fn reap(&mut self, expected: Option<&str>) -> bool {
        let mut found = false;
        for (name, status, log) in self.cluster.daemons().newly_exited() {
            if Some(name.as_str()) == expected {
                found = true;
            } else if !self.down.contains(&name) {
                self.unexpected_exits.push(format!(
                    "{name} exited on its own ({status}); see {}",
                    log.display()
                ));
            }
        }
        found
    }

    /// `kill -9` of daemon `name` (a node id or the coordinator); waits until it is gone.
    pub async fn kill9(&mut self, name: &str) -> Result<(), SimError> {
        let pid = self
            .cluster
            .pid(name)
            .ok_or_else(|| SimError::Setup(format!("no daemon named {name}")))?;
        kill9(name, pid)?;
        self.down.insert(name.to_string());
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.reap(Some(name)) {
            if Instant::now() >= deadline {
                return Err(SimError::Timeout(format!(
                    "{name} (pid {pid}) still running 5 s after SIGKILL"
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Restarts a killed daemon from its data directory and waits until it answers.
    pub async fn restart(&mut self, name: &str) -> Result<(), SimError> {
        self.cluster.respawn(name, &self.bins.daemons)?;
        self.down.remove(name);
        if name == COORDINATOR_ID {
            self.wait_coordinator(Duration::from_secs(30)).await
        } else {
            self.wait_node_answers(name, Duration::from_secs(30)).await
        }
    }

    async fn wait_coordinator(&mut self, timeout: Duration) -> Result<(), SimError> {
        let deadline = Instant::now() + timeout;
        let mut probe = self.cluster.operator.clone();
        probe.timeout = Duration::from_secs(2);
        loop {
            let err = match client::cluster_status(&probe).await {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            self.fail_if_exited(COORDINATOR_ID)?;
            if Instant::now() >= deadline {
                return Err(SimError::Timeout(format!(
                    "the coordinator did not answer within {timeout:?} after its restart: {err}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn fail_if_exited(&mut self, name: &str) -> Result<(), SimError> {
        self.reap(None);
        match self.unexpected_exits.iter().find(|e| e.starts_with(name)) {
            Some(e) => Err(SimError::Setup(e.clone())),
            None => Ok(()),
        }
    }

    /// Waits until node `id` itself answers an operator's status call.
    async fn wait_node_answers(&mut self, id: &str, timeout: Duration) -> Result<(), SimError> {
        let deadline = Instant::now() + timeout;
        loop {
            let err = match self.node_status(id).await {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            self.fail_if_exited(id)?;
            if Instant::now() >= deadline {
                return Err(SimError::Timeout(format!(
                    "node {id} did not answer within {timeout:?} after its restart: {err}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the coordinator reports every node in `ids` reachable and unsealed.
    pub async fn wait_reachable(
        &mut self,
        ids: &[String],
        timeout: Duration,
    ) -> Result<(), SimError> {
        self.wait_health(ids, true, timeout).await
    }

    /// Waits until the coordinator reports every node in `ids` unreachable.
    pub async fn wait_unreachable(
        &mut self,
        ids: &[String],
        timeout: Duration,
    ) -> Result<(), SimError> {
        self.wait_health(ids, false, timeout).await
    }

    async fn wait_health(
        &mut self,
        ids: &[String],
        up: bool,
        timeout: Duration,
    ) -> Result<(), SimError> {
        let deadline = Instant::now() + timeout;
        let mut probe = self.cluster.operator.clone();
        probe.timeout = Duration::from_secs(2);
        loop {
            let last = match client::cluster_status(&probe).await {
                Ok(status) => {
                    let pending: Vec<String> = ids
                        .iter()
                        .filter(|id| {
                            !status
                                .nodes
                                .iter()
                                .any(|n| &n.node_id == *id && (n.reachable && !n.sealed) == up)
                        })
                        .cloned()
                        .collect();
                    if pending.is_empty() {
                        return Ok(());
                    }
                    format!(
                        "{} not yet {}",
                        pending.join(", "),
                        if up { "reachable" } else { "unreachable" }
                    )
                }
                Err(e) => e.to_string(),
            };
            self.fail_if_exited(COORDINATOR_ID)?;
            if Instant::now() >= deadline {
                return Err(SimError::Timeout(format!(
                    "after {timeout:?}: {last} (logs under {})",
                    self.cluster.dir.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs a DKG ceremony for [`GROUP`] through the coordinator.
    pub async fn create_group(
        &self,
        threshold: u32,
        members: &[String],
    ) -> Result<pb::KeyGroup, SimError> {
        let signed = self.approved_create(threshold, members)?;
        Ok(client::create_key_group(&self.cluster.operator, &signed).await?)
    }

    /// A quorum-approved create spec of [`GROUP`].
    fn approved_create(
        &self,
        threshold: u32,
        members: &[String],
    ) -> Result<permafrost_core::ceremony::SignedSpec, SimError> {
        let name = GroupName::new(GROUP).map_err(setup("group name"))?;
        let members = members
            .iter()
            .map(NodeId::new)
            .collect::<Result<Vec<_>, _>>()
            .map_err(setup("member id"))?;
        let threshold = u16::try_from(threshold).map_err(setup("threshold"))?;
        self.cluster
            .approved_create(&name, Tier::Warm, threshold, &members)
    }

    /// A quorum-approved spec of `change` to [`GROUP`] as it stands now.
    async fn approved_change(
        &self,
        change: permafrostctl::ceremony::Change,
    ) -> Result<permafrost_core::ceremony::SignedSpec, SimError> {
        let name = GroupName::new(GROUP).map_err(setup("group name"))?;
        self.cluster.approved_change(&name, change).await
    }

    /// Same, returning the coordinator's refusal as a gRPC status.
    pub async fn try_create_group(
        &self,
        threshold: u32,
        members: &[String],
    ) -> Result<Result<pb::KeyGroup, tonic::Status>, SimError> {
        let signed = self.approved_create(threshold, members)?;
        let mut ceremony = self.cluster.operator.ceremony()?;
        Ok(ceremony
            .create_key_group(pb::CreateKeyGroupRequest {
                name: GROUP.into(),
                tier: pb::Tier::Warm as i32,
                threshold,
                members: members.to_vec(),
                authorization: Some((&signed).into()),
            })
            .await
            .map(tonic::Response::into_inner))
    }

    /// `Ceremony.ListKeyGroups`.
    pub async fn key_groups(&self) -> Result<Vec<pb::KeyGroup>, SimError> {
        Ok(client::list_key_groups(&self.cluster.operator).await?)
    }

    /// `Ceremony.RefreshKeyGroup`.
    pub async fn refresh(&self) -> Result<pb::KeyGroup, SimError> {
        let signed = self
            .approved_change(permafrostctl::ceremony::Change::Refresh)
            .await?;
        let mut ceremony = self.cluster.operator.ceremony()?;
        ceremony
            .refresh_key_group(pb::RefreshKeyGroupRequest {
                name: GROUP.into(),
                authorization: Some((&signed).into()),
            })
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| {
                SimError::Verification(format!("refresh of {GROUP} failed: {}", s.message()))
            })
    }

    /// `Ceremony.RepairKeyGroup`.
    pub async fn repair(&self, lost: &str, replacement: &str) -> Result<pb::KeyGroup, SimError> {
        let signed = self
            .approved_change(permafrostctl::ceremony::Change::Repair {
                lost: NodeId::new(lost).map_err(setup("lost node id"))?,
                replacement: NodeId::new(replacement).map_err(setup("replacement node id"))?,
            })
            .await?;
        let mut ceremony = self.cluster.operator.ceremony()?;
        ceremony
            .repair_key_group(pb::RepairKeyGroupRequest {
                name: GROUP.into(),
                lost: lost.into(),
                replacement: replacement.into(),
                authorization: Some((&signed).into()),
            })
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| {
                SimError::Verification(format!(
                    "repair of {GROUP} ({lost} -> {replacement}) failed: {}",
                    s.message()
                ))
            })
    }

    /// `Ceremony.ListExclusions`.
    pub async fn exclusions(&self) -> Result<Vec<pb::Exclusion>, SimError> {
        let mut ceremony = self.cluster.operator.ceremony()?;
        ceremony
            .list_exclusions(pb::ListExclusionsRequest {})
            .await
            .map(|r| r.into_inner().exclusions)
            .map_err(|s| SimError::Setup(format!("list exclusions: {}", s.message())))
    }

    /// `Ceremony.ClearExclusion` of `node` from [`GROUP`].
    pub async fn clear_exclusion(&self, node: &str) -> Result<(), SimError> {
        let signed = self
            .approved_change(permafrostctl::ceremony::Change::ClearExclusion {
                node: NodeId::new(node).map_err(setup("node id"))?,
            })
            .await?;
        let mut ceremony = self.cluster.operator.ceremony()?;
        ceremony
            .clear_exclusion(pb::ClearExclusionRequest {
                group: GROUP.into(),
                node_id: node.into(),
                authorization: Some((&signed).into()),
            })
            .await
            .map(|_| ())
            .map_err(|s| SimError::Setup(format!("clear exclusion of {node}: {}", s.message())))
    }

    /// A custody-signed withdrawal from [`GROUP`] of `amount` satoshis, valid for 10 minutes.
    pub fn withdrawal(&self, id: &str, amount: u128) -> Result<Withdrawal, SimError> {
        let now = unix_now();
        let request = WithdrawalRequest {
            request_id: RequestId::new(id).map_err(setup("request id"))?,
            key_group: GroupName::new(GROUP).map_err(setup("group name"))?,
            tier: Tier::Warm,
            asset: "BTC".into(),
            amount,
            destination: DEMO_DESTINATION.into(),
            // Stands in for a transaction sighash.
            payload: Sha256::new()
                .chain_update(b"permafrost chaos sighash/")
                .chain_update(id.as_bytes())
                .finalize()
                .to_vec(),
            psbt: None,
            created_at: now,
            expires_at: now + 600,
            requested_by: CUSTODY_ID.into(),
        };
        let signed = client::sign_withdrawal(&request, &self.cluster.custody_key)?;
        Ok(Withdrawal { request, signed })
    }

    /// Signs `request` with the custody key, whatever its fields say.
    pub fn sign(&self, request: &WithdrawalRequest) -> Result<pb::SignedWithdrawal, SimError> {
        Ok(client::sign_withdrawal(request, &self.cluster.custody_key)?)
    }

    /// A custody client (one channel, reconnecting by itself).
    pub fn custody(&self) -> CustodyClient<Channel> {
        self.custody.clone()
    }

    /// A channel straight to node `id` (not through its proxy) with `tls`.
    fn node_channel(&self, id: &str, tls: &TlsMaterial) -> Result<Channel, SimError> {
        let node = self.node(id)?;
        tls.channel(
            &node.addr.to_string(),
            &pki::server_name(Role::Node, id),
            Duration::from_secs(5),
        )
        .map_err(|e| SimError::Setup(e.to_string()))
    }

    /// `NodeAdmin.GetStatus` straight to node `id` with the operator certificate.
    pub async fn node_status(&self, id: &str) -> Result<pb::NodeStatus, String> {
        let channel = self
            .node_channel(id, &self.operator_tls)
            .map_err(|e| e.to_string())?;
        NodeAdminClient::new(channel)
            .get_status(pb::NodeStatusRequest {})
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| format!("{id}: {:?}: {}", s.code(), s.message()))
    }

    /// A `SignerNode` client straight to node `id`, as a second (harness) coordinator.
    pub fn harness_node_client(&self, id: &str) -> Result<SignerNodeClient<Channel>, SimError> {
        Ok(SignerNodeClient::new(
            self.node_channel(id, &self.harness_tls)?,
        ))
    }

    /// Audit logs (JSON lines) by writer: every node, and the coordinator.
    pub fn audit_logs(&self) -> BTreeMap<String, String> {
        let mut logs = BTreeMap::new();
        for n in &self.nodes {
            let path = self.node_data_dir(&n.id).join("audit.log");
            logs.insert(
                n.id.clone(),
                std::fs::read_to_string(path).unwrap_or_default(),
            );
        }
        let path = self.cluster.dir.join("coordinator/data/audit.log");
        logs.insert(
            COORDINATOR_ID.to_string(),
            std::fs::read_to_string(path).unwrap_or_default(),
        );
        logs
    }

    fn node_data_dir(&self, id: &str) -> PathBuf {
        self.cluster.dir.join("nodes").join(id).join("data")
    }

    /// Reads node `id`'s key package for [`GROUP`] from its sealed store, as an
    /// attacker holding its disk and passphrase would. The node must be down.
    pub fn steal_key_package(&self, id: &str) -> Result<KeyPackage, SimError> {
        if !self.down.contains(id) {
            return Err(SimError::Setup(format!(
                "node {id} is running; its store is locked"
            )));
        }
        let data = self.node_data_dir(id);
        let passphrase_path = self.cluster.dir.join("nodes").join(id).join("passphrase");
        let passphrase = std::fs::read_to_string(&passphrase_path)
            .map_err(|e| SimError::io(&passphrase_path, e))?;
        let sealer = PassphraseSealer::open(&data, passphrase.trim())
            .map_err(setup("open the node's sealer"))?;
        let record = self.stored_group(id)?;
        let node = NodeId::new(id).map_err(setup("node id"))?;
        ShareVault::open_offline(
            &sealer,
            &data,
            &node,
            &record.name,
            &record.sealed_key_package,
        )
        .map_err(setup("unseal the key package"))
    }

    /// Node `id`'s current public key package for [`GROUP`] (node must be down).
    pub fn stored_public_key_package(&self, id: &str) -> Result<PublicKeyPackage, SimError> {
        let record = self.stored_group(id)?;
        PublicKeyPackage::deserialize(&record.public_key_package)
            .map_err(setup("public key package"))
    }

    /// Checks node `id`'s velocity ledger against its journal (node must be down).
    pub fn check_node_ledger(&self, id: &str) -> Result<(), String> {
        let store = permafrost_node::store::NodeStore::open(&self.node_data_dir(id))
            .map_err(|e| format!("open the store: {e}"))?;
        store.check_ledger()
    }

    fn stored_group(&self, id: &str) -> Result<permafrost_node::store::GroupRecord, SimError> {
        let store = permafrost_node::store::NodeStore::open(&self.node_data_dir(id))
            .map_err(setup("open the node's store"))?;
        store
            .group(&GroupName::new(GROUP).map_err(setup("group name"))?)
            .map_err(setup("read the group"))?
            .ok_or_else(|| SimError::Setup(format!("node {id} holds no {GROUP}")))
    }

    /// Stops every liar, proxy and daemon.
    pub async fn stop(&mut self) {
        let ids: Vec<String> = self.liars.keys().cloned().collect();
        for id in ids {
            let _ = self.stop_liar(&id).await;
        }
        self.cluster.stop();
        self.proxies.clear();
    }
}

fn read(path: &Path) -> Result<Vec<u8>, SimError> {
    std::fs::read(path).map_err(|e| SimError::io(path, e))
}

/// Latency profile: links to nodes outside [`COORDINATOR_REGION`] get `inter`, the others `intra`.
pub fn region_faults(region: &str, intra: LinkFaults, inter: LinkFaults) -> LinkFaults {
    if region == COORDINATOR_REGION {
        intra
    } else {
        inter
    }
}
