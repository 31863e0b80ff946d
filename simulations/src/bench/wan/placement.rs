//! The cluster of `bench --wan`, placed in the regions' namespaces: every
//! node listens on its region's address, the coordinator on the address of
//! its region's link to the host, each started through a two-line wrapper
//! (`exec ip netns exec NS daemon "$@"`) given to [`LocalCluster`] as its
//! binary. A faulty member is the chaos `permafrost-liar` in the member's own
//! namespace on the member's address, the real node behind it on loopback.
//!
//! The cluster is first built and started as `up` builds it (on the host's
//! loopback), then stopped, moved and started again in the namespaces:
//! certificates name the daemons, not addresses, so they stay valid.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use permafrost_core::NodeId;
use permafrostctl::client::{self, ClientRole, Connection};
use permafrostctl::files;
use tokio::time::Instant;

use super::netns::{Delay, WanNet, WanProfile};
use super::{NonceMode, REGIONS, ROUND_TIMEOUT};
use crate::chaos::harness::{liar_args, ChaosBinaries, LiarSpec};
use crate::chaos::process::{kill9, LiarProcess};
use crate::chaos::proxy::{LinkFaults, LinkProxy};
use crate::cluster::{Binaries, CreateOptions, Layout, LocalCluster, COORDINATOR_ID};
use crate::daemons::Daemons;
use crate::progress::Progress;
use crate::SimError;

/// Port of the coordinator inside its namespace.
const COORDINATOR_PORT: u16 = 7000;
/// Node `nK` listens on this plus K inside its namespace.
const NODE_PORT_BASE: u16 = 7100;
/// Longest the cluster may take to come up in the namespaces.
const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// The client's cluster file, with the coordinator's namespace address.
const WAN_CLUSTER_FILE: &str = "cluster.wan.json";

/// One node's place.
#[derive(Clone, Debug)]
struct Placed {
    id: String,
    region: usize,
    port: u16,
}

/// The running WAN cluster. Dropping it stops the liars and the daemons,
/// then deletes the namespaces (field order).
#[derive(Debug)]
pub struct WanCluster {
    cluster: LocalCluster,
    liars: BTreeMap<String, LiarProcess>,
    nodes: Vec<Placed>,
    members: Vec<(String, usize)>,
    region_bins: Vec<Binaries>,
    liar_bin: PathBuf,
    nonce_mode: NonceMode,
    /// With [`Delay::Relay`]: the delaying relay in front of each node outside the
    /// coordinator's region, held only to keep it running (dropping one closes it).
    _relays: BTreeMap<String, LinkProxy>,
    net: WanNet,
}

fn setup<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> SimError + '_ {
    move |e| SimError::Setup(format!("{what}: {e}"))
}

/// Sets `listen` in the TOML config at `path`.
fn set_listen(path: &Path, listen: SocketAddr) -> Result<(), SimError> {
    let mut table: toml::Table = files::read_text(path)?
        .parse()
        .map_err(setup("a daemon config that is not TOML"))?;
    table.insert("listen".into(), toml::Value::String(listen.to_string()));
    let text = toml::to_string(&table).map_err(setup("cannot write the config"))?;
    files::write_public(path, text.as_bytes())?;
    Ok(())
}

/// Writes `exec ip netns exec NETNS PROGRAM "$@"` as an executable script.
fn write_wrapper(path: &Path, netns: &str, program: &Path) -> Result<(), SimError> {
    use std::os::unix::fs::PermissionsExt;
    let script = format!(
        "#!/bin/sh\n# permafrost-sim bench --wan: this daemon runs in network namespace {netns}.\nexec ip netns exec {netns} '{}' \"$@\"\n",
        program.display()
    );
    std::fs::write(path, script).map_err(|e| SimError::io(path, e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| SimError::io(path, e))
}

impl WanCluster {
    /// Builds a `nodes`-node cluster in `dir` and starts it in `net`'s namespaces.
    pub async fn start(
        dir: &Path,
        all_bins: &ChaosBinaries,
        net: WanNet,
        profile: &WanProfile,
        nodes: u16,
        policy: &str,
        progress: &Progress,
    ) -> Result<Self, SimError> {
        let bins = &all_bins.daemons;
        let placed: Vec<Placed> = (1..=nodes)
            .map(|i| Placed {
                id: format!("n{i}"),
                region: usize::from(i - 1) % REGIONS.len(),
                port: NODE_PORT_BASE + i,
            })
            .collect();
        let wan_addr = |p: &Placed| SocketAddr::from((net.regions()[p.region].addr, p.port));
        let mut relays = BTreeMap::new();
        if net.delay() == Delay::Relay {
            for p in placed.iter().filter(|p| p.region != 0) {
                let relay = LinkProxy::bind_on(&p.id, u64::from(p.port), net.host_addr().into())
                    .await
                    .map_err(setup("cannot bind a relay on the host link"))?;
                relay.set_faults(LinkFaults {
                    latency: profile.rtt / 2,
                    jitter: profile.jitter,
                    loss: profile.loss_pct / 100.0,
                    ..LinkFaults::healthy()
                });
                relays.insert(p.id.clone(), relay);
            }
        }
        let options = CreateOptions {
            manifest_endpoints: placed
                .iter()
                .map(|p| {
                    let endpoint = relays
                        .get(&p.id)
                        .map_or_else(|| wan_addr(p), LinkProxy::addr);
                    (p.id.clone(), endpoint.to_string())
                })
                .collect(),
            ..CreateOptions::default()
        };
        let layout = Layout {
            nodes: placed
                .iter()
                .map(|p| (p.id.clone(), REGIONS[p.region].to_string()))
                .collect(),
            policy: Some(policy.to_string()),
            round_timeout_ms: u64::try_from(ROUND_TIMEOUT.as_millis()).ok(),
        };
        progress.step(format!(
            "building a {nodes}-node cluster in {}",
            dir.display()
        ));
        let mut cluster =
            LocalCluster::create_layout(dir, bins, progress, &options, &layout).await?;
        // Built and started on loopback as `up` does; now move it.
        cluster.stop();
        *cluster.daemons() = Daemons::default();
        let wrappers = cluster.dir.join("wan-bin");
        let mut region_bins = Vec::new();
        for (k, region) in net.regions().iter().enumerate() {
            let d = wrappers.join(k.to_string());
            std::fs::create_dir_all(&d).map_err(|e| SimError::io(&d, e))?;
            let b = Binaries {
                node: d.join("permafrost-node"),
                coordinator: d.join("permafrost-coordinator"),
            };
            write_wrapper(&b.node, &region.netns, &bins.node)?;
            write_wrapper(&b.coordinator, &region.netns, &bins.coordinator)?;
            region_bins.push(b);
        }
        for (id, relay) in &mut relays {
            if let Some(p) = placed.iter().find(|p| p.id == *id) {
                relay.start(wan_addr(p));
            }
        }
        for p in &placed {
            set_listen(&node_config(&cluster.dir, &p.id), wan_addr(p))?;
            cluster.respawn(&p.id, &region_bins[p.region])?;
        }
        let home = net.regions()[0].addr;
        let coordinator_listen = SocketAddr::from((home, COORDINATOR_PORT));
        set_listen(&coordinator_config(&cluster.dir), coordinator_listen)?;
        cluster.respawn(COORDINATOR_ID, &region_bins[0])?;
        // The client (this process, on the host) reaches the coordinator over the host link.
        let mut file = cluster.file.clone();
        file.coordinator.endpoint = coordinator_listen.to_string();
        let json = serde_json::to_string_pretty(&file).map_err(setup("cluster file"))?;
        let path = cluster.dir.join(WAN_CLUSTER_FILE);
        files::write_public(&path, json.as_bytes())?;
        cluster.operator = Connection::from_cluster(&path, ClientRole::Operator)?;
        cluster.custody = Connection::from_cluster(&path, ClientRole::Custody)?;
        cluster.wait_ready(READY_TIMEOUT, progress).await?;
        let members = placed.iter().map(|p| (p.id.clone(), p.region)).collect();
        Ok(Self {
            cluster,
            liars: BTreeMap::new(),
            nodes: placed,
            members,
            region_bins,
            liar_bin: all_bins.liar.clone(),
            // The coordinator's default.
            nonce_mode: NonceMode::Banked,
            _relays: relays,
            net,
        })
    }

    /// The underlying cluster (its operator and custody connections reach the coordinator).
    pub fn local(&self) -> &LocalCluster {
        &self.cluster
    }

    /// Where the inter-region delay is applied.
    pub fn delay(&self) -> Delay {
        self.net.delay()
    }

    /// Every node as (id, region index), in id order; region 0 is the coordinator's.
    pub fn members(&self) -> &[(String, usize)] {
        &self.members
    }

    fn placed(&self, id: &str) -> Result<Placed, SimError> {
        self.nodes
            .iter()
            .find(|p| p.id == id)
            .cloned()
            .ok_or_else(|| SimError::Setup(format!("no node {id} in the WAN cluster")))
    }

    fn wan_addr(&self, p: &Placed) -> SocketAddr {
        SocketAddr::from((self.net.regions()[p.region].addr, p.port))
    }

    /// Kills daemon `name` and waits until it is gone.
    async fn kill(&mut self, name: &str) -> Result<(), SimError> {
        let pid = self
            .cluster
            .pid(name)
            .ok_or_else(|| SimError::Setup(format!("no daemon {name}")))?;
        kill9(name, pid)?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self
            .cluster
            .daemons()
            .newly_exited()
            .iter()
            .any(|(n, _, _)| n == name)
        {
            if Instant::now() >= deadline {
                return Err(SimError::Timeout(format!(
                    "{name} still running after SIGKILL"
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Restarts node `id` listening on `listen`.
    async fn move_node(&mut self, id: &str, listen: SocketAddr) -> Result<(), SimError> {
        let p = self.placed(id)?;
        self.kill(id).await?;
        set_listen(&node_config(&self.cluster.dir, id), listen)?;
        self.cluster.respawn(id, &self.region_bins[p.region])?;
        Ok(())
    }

    /// Makes each of `ids` faulty as `spec` says: the liar on the member's
    /// address, the node behind it on its namespace's loopback. Called again
    /// with another spec, only the liars change.
    pub async fn put_behind_liars(
        &mut self,
        ids: &[String],
        spec: &LiarSpec,
    ) -> Result<(), SimError> {
        for id in ids {
            let p = self.placed(id)?;
            let inner = SocketAddr::from((Ipv4Addr::LOCALHOST, p.port));
            match self.liars.remove(id) {
                Some(old) => {
                    old.stop().await;
                }
                None => self.move_node(id, inner).await?,
            }
            let mut spec = spec.clone();
            spec.listen = Some(self.wan_addr(&p));
            spec.seed = u64::from(p.port);
            let (args, log) = liar_args(&self.cluster.dir, id, inner, &spec)?;
            let netns = self.net.regions()[p.region].netns.clone();
            let mut full: Vec<OsString> = vec!["netns".into(), "exec".into(), netns.into()];
            full.push(self.liar_bin.clone().into());
            full.extend(args);
            let liar = LiarProcess::spawn(Path::new("ip"), full, id, &log).await?;
            self.liars.insert(id.clone(), liar);
        }
        self.wait_reachable(ids).await
    }

    /// Takes the liars out again: each node back on its own address.
    pub async fn restore(&mut self, ids: &[String]) -> Result<(), SimError> {
        for id in ids {
            if let Some(liar) = self.liars.remove(id) {
                liar.stop().await;
                let p = self.placed(id)?;
                let addr = self.wan_addr(&p);
                self.move_node(id, addr).await?;
            }
        }
        self.wait_reachable(ids).await
    }

    /// Waits until the coordinator reaches each of `ids`, then for two more
    /// probe rounds, so the latencies it chooses signers by are fresh.
    async fn wait_reachable(&self, ids: &[String]) -> Result<(), SimError> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut probe = self.cluster.operator.clone();
        probe.timeout = Duration::from_secs(5);
        loop {
            let status = client::cluster_status(&probe).await;
            let waiting: Vec<String> = match &status {
                Ok(s) => ids
                    .iter()
                    .filter(|id| {
                        !s.nodes
                            .iter()
                            .any(|n| n.node_id == **id && n.reachable && !n.sealed)
                    })
                    .cloned()
                    .collect(),
                Err(e) => vec![e.to_string()],
            };
            if waiting.is_empty() {
                tokio::time::sleep(Duration::from_millis(1200)).await;
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(SimError::Timeout(format!(
                    "the coordinator does not reach {} (logs in {})",
                    waiting.join(", "),
                    self.cluster.dir.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Clears every exclusion of `group` (each needs an operator-quorum spec).
    pub async fn clear_exclusions(&self, group: &str) -> Result<(), SimError> {
        let mut ceremony = self.cluster.operator.ceremony()?;
        let listed = ceremony
            .list_exclusions(permafrost_proto::ListExclusionsRequest {})
            .await
            .map_err(|s| SimError::Setup(format!("list exclusions: {}", s.message())))?
            .into_inner()
            .exclusions;
        let name = permafrost_core::GroupName::new(group).map_err(setup("group name"))?;
        for e in listed.iter().filter(|e| e.group == group) {
            let change = permafrostctl::ceremony::Change::ClearExclusion {
                node: NodeId::new(e.node_id.as_str()).map_err(setup("node id"))?,
            };
            let signed = self.cluster.approved_change(&name, change).await?;
            ceremony
                .clear_exclusion(permafrost_proto::ClearExclusionRequest {
                    group: group.into(),
                    node_id: e.node_id.clone(),
                    authorization: Some((&signed).into()),
                })
                .await
                .map_err(|s| SimError::Setup(format!("clear exclusion: {}", s.message())))?;
        }
        Ok(())
    }

    /// Switches the coordinator to `mode` (a restart with the new config), or says why not.
    pub async fn set_nonce_mode(&mut self, mode: NonceMode) -> Result<(), String> {
        if mode == self.nonce_mode {
            return Ok(());
        }
        let path = coordinator_config(&self.cluster.dir);
        let text = files::read_text(&path).map_err(|e| e.to_string())?;
        let mut table: toml::Table = text.parse().map_err(|e| format!("{e}"))?;
        mode.configure(&mut table)?;
        let text = toml::to_string(&table).map_err(|e| e.to_string())?;
        files::write_public(&path, text.as_bytes()).map_err(|e| e.to_string())?;
        self.kill(COORDINATOR_ID).await.map_err(|e| e.to_string())?;
        self.cluster
            .respawn(COORDINATOR_ID, &self.region_bins[0])
            .map_err(|e| e.to_string())?;
        let ids: Vec<String> = self.nodes.iter().map(|p| p.id.clone()).collect();
        self.wait_reachable(&ids).await.map_err(|e| e.to_string())?;
        self.nonce_mode = mode;
        Ok(())
    }

    /// Fails if a liar or daemon died on its own.
    pub fn check_alive(&mut self) -> Result<(), SimError> {
        let exited = self.cluster.daemons().newly_exited();
        match exited.first() {
            Some((name, status, log)) => Err(SimError::Setup(format!(
                "{name} exited ({status}) during the WAN bench; see {}",
                log.display()
            ))),
            None => Ok(()),
        }
    }
}

fn node_config(dir: &Path, id: &str) -> PathBuf {
    dir.join("nodes").join(id).join("node.toml")
}

fn coordinator_config(dir: &Path) -> PathBuf {
    dir.join("coordinator").join("coordinator.toml")
}
