//! A whole Permafrost cluster on this machine, built from nothing: CA and
//! certificates, five signer nodes in three regions and a coordinator, each a
//! separate OS process with its own data directory, speaking mTLS gRPC on 127.0.0.1.
//!
//! `demo` and `up` both use [`LocalCluster`]; the directory it writes is also
//! what a client needs (`cluster.json`, certificates, the custody signing key).
//! What the cluster is made of is in [`plan`]; its CA, certificates, manifest,
//! configs and policy are laid out by [`crate::layout`] from
//! `plan::local_plan`; `cluster.json` is in `config_files`; this module
//! creates, starts, waits for and stops it.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use permafrost_core::{GroupName, NodeId, Role, Tier};
use permafrost_proto as pb;
use permafrostctl::client::{self, ClientRole, ClusterFile, Connection, KeyGroupSummary};
use permafrostctl::files;
use rand::RngCore;

mod config_files;
mod operators;
pub mod plan;

use config_files::*;
pub use operators::{OPERATORS, OPERATOR_QUORUM};
pub use plan::*;

use crate::daemons::Daemons;
use crate::layout::{ClusterLayout, GroupSpec};
use crate::progress::Progress;
use crate::SimError;

/// The daemon binaries, expected next to `permafrost-sim`.
#[derive(Clone, Debug)]
pub struct Binaries {
    /// `permafrost-node`.
    pub node: PathBuf,
    /// `permafrost-coordinator`.
    pub coordinator: PathBuf,
}

impl Binaries {
    /// Finds the binaries in `dir`, or next to the running executable.
    pub fn locate(dir: Option<&Path>) -> Result<Self, SimError> {
        let dir = match dir {
            Some(d) => d.to_path_buf(),
            None => std::env::current_exe()
                .map_err(|e| SimError::Setup(format!("cannot find the running executable: {e}")))?
                .parent()
                .map(Path::to_path_buf)
                .ok_or_else(|| SimError::Setup("the running executable has no directory".into()))?,
        };
        let find = |name: &str| {
            let path = dir.join(name);
            if path.is_file() {
                Ok(path)
            } else {
                Err(SimError::Setup(format!(
                    "{name} not found in {}; build them first with cargo build --release (or cargo build --bins) \
                     and run permafrost-sim from the same target directory",
                    dir.display()
                )))
            }
        };
        Ok(Self {
            node: find("permafrost-node")?,
            coordinator: find("permafrost-coordinator")?,
        })
    }
}

/// A running local cluster. Dropping it stops every daemon.
#[derive(Debug)]
pub struct LocalCluster {
    /// Root directory (absolute).
    pub dir: PathBuf,
    /// What clients need, with paths relative to `dir`.
    pub file: ClusterFile,
    /// Connection presenting the operator certificate.
    pub operator: Connection,
    /// Connection presenting the custody certificate.
    pub custody: Connection,
    /// The custody service's request-signing key.
    pub custody_key: SigningKey,
    daemons: Daemons,
    /// Latest process id of each daemon, by name (node id or coordinator id).
    pids: BTreeMap<String, u32>,
    /// The key groups [`LocalCluster::create_groups`] makes.
    groups: Vec<GroupSpec>,
}

/// Free TCP ports on 127.0.0.1: all bound at once (so they differ), then released for the daemons.
fn free_ports(n: usize) -> Result<Vec<u16>, SimError> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| SimError::Setup(format!("cannot bind a free port on 127.0.0.1: {e}")))?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<_, _>>()
        .map_err(|e| SimError::Setup(format!("cannot read a bound port: {e}")))
}

fn create_dir(path: &Path) -> Result<(), SimError> {
    std::fs::create_dir_all(path).map_err(|e| SimError::io(path, e))
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

/// Writes the custody signing key, the approvers' and the operators' keys
/// under `dir` (a local cluster holds them all, so it can run unattended).
fn write_principal_keys(dir: &Path) -> Result<PrincipalKeys, SimError> {
    let custody_public = permafrostctl::generate_custody_key(&dir.join(CUSTODY_SIGNING_KEY))?;
    let custody_public = hex::encode(custody_public.as_bytes());
    files::write_public(
        &dir.join(CUSTODY_SIGNING_PUB),
        format!("{custody_public}\n").as_bytes(),
    )?;
    // Approver keys are Ed25519 seeds in the same format as the custody key.
    let approver_dir = dir.join("approvers");
    create_dir(&approver_dir)?;
    let mut approver_keys = Vec::new();
    for id in APPROVERS {
        let public =
            permafrostctl::keys::generate_key_file(&approver_dir.join(format!("{id}.key")))?;
        approver_keys.push((id.to_string(), hex::encode(public.as_bytes())));
    }
    Ok(PrincipalKeys {
        custody_public,
        approver_keys,
        // Operators: every ceremony needs a quorum of them, checked by every node.
        operators: operators::create_operator_keys(dir)?,
    })
}

impl LocalCluster {
    /// Builds a new cluster in `dir` (which must be empty or absent) and starts its daemons.
    pub async fn create(
        dir: &Path,
        bins: &Binaries,
        progress: &Progress,
    ) -> Result<Self, SimError> {
        Self::create_with(dir, bins, progress, &CreateOptions::default()).await
    }

    /// [`LocalCluster::create`] with options.
    pub async fn create_with(
        dir: &Path,
        bins: &Binaries,
        progress: &Progress,
        options: &CreateOptions,
    ) -> Result<Self, SimError> {
        Self::create_layout(dir, bins, progress, options, &Layout::default()).await
    }

    /// [`LocalCluster::create_with`] with other nodes, policy or coordinator settings.
    pub async fn create_layout(
        dir: &Path,
        bins: &Binaries,
        progress: &Progress,
        options: &CreateOptions,
        layout: &Layout,
    ) -> Result<Self, SimError> {
        let plans: Vec<(String, String)> = if layout.nodes.is_empty() {
            NODES
                .iter()
                .map(|p| (p.id.to_string(), p.region.to_string()))
                .collect()
        } else {
            layout.nodes.clone()
        };
        create_dir(dir)?;
        let mut entries = std::fs::read_dir(dir).map_err(|e| SimError::io(dir, e))?;
        if entries.next().is_some() {
            return Err(SimError::Setup(format!(
                "{} is not empty; give a new directory (or, for `up`, one holding an earlier cluster.json to restart it)",
                dir.display()
            )));
        }
        let dir = dir.canonicalize().map_err(|e| SimError::io(dir, e))?;

        let keys = write_principal_keys(&dir)?;
        // A gRPC and a metrics port for every node and the coordinator.
        let ports = free_ports(2 * (plans.len() + 1))?;
        let ports = LocalPorts {
            grpc: ports[..=plans.len()].to_vec(),
            metrics: ports[plans.len() + 1..].to_vec(),
        };
        let cluster = ClusterLayout::write(
            &dir,
            plan::local_plan(&plans, &ports, options, layout, &keys),
        )?;
        progress.step(format!(
            "CA, custody signing key {}…, {} approver keys, {} operator keys ({OPERATOR_QUORUM} needed for any ceremony) and the withdrawal policy written",
            &keys.custody_public[..16],
            APPROVERS.len(),
            OPERATORS.len()
        ));

        let mut manifest = Vec::new();
        for node in &cluster.plan().nodes {
            let node_dir = cluster.node_dir(node);
            files::write_private(&node_dir.join("passphrase"), random_hex(32).as_bytes())?;
            let info = init_node(&bins.node, &cluster.node_config_path(node)).await?;
            if info.id.as_str() != node.id || info.region != node.region {
                return Err(SimError::Setup(format!(
                    "permafrost-node init for {} reported id {} in {}",
                    node.id, info.id, info.region
                )));
            }
            manifest.push(cluster.enroll(&info)?);
        }
        cluster.write_manifest(manifest)?;
        progress.step(format!(
            "{} nodes initialized (identity, encryption and TLS keys sealed; certificates issued from their CSRs)",
            plans.len()
        ));

        cluster.write_coordinator()?;
        cluster.issue_client_cert(Role::Custody, CUSTODY_ID, &dir)?;
        cluster.issue_client_cert(Role::Operator, OPERATOR_ID, &dir)?;
        let file = client_file(&cluster, keys.custody_public);
        write_partial_cluster_file(&dir, &file)?;
        progress.step(format!(
            "certificates issued for {COORDINATOR_ID}, {CUSTODY_ID} and {OPERATOR_ID}"
        ));
        Self::start(&dir, file, cluster.plan().groups.clone(), bins, progress)
    }

    /// Restarts the daemons of a cluster created earlier in `dir` (its key
    /// groups survive). Its `cluster.json` is taken back to the partial name
    /// until [`LocalCluster::publish`] says the cluster is ready again.
    pub fn restart(dir: &Path, bins: &Binaries, progress: &Progress) -> Result<Self, SimError> {
        let dir = dir.canonicalize().map_err(|e| SimError::io(dir, e))?;
        let (published, partial) = (dir.join(CLUSTER_FILE), dir.join(CLUSTER_FILE_PARTIAL));
        if published.is_file() {
            std::fs::rename(&published, &partial).map_err(|e| SimError::io(&published, e))?;
        }
        let text = files::read_text(&partial)?;
        let file: ClusterFile = serde_json::from_str(&text).map_err(|e| {
            SimError::Setup(format!("{}: not a cluster file: {e}", partial.display()))
        })?;
        progress.step(format!("restarting the cluster in {}", dir.display()));
        Self::start(&dir, file, plan::default_groups(), bins, progress)
    }

    fn start(
        dir: &Path,
        file: ClusterFile,
        groups: Vec<GroupSpec>,
        bins: &Binaries,
        progress: &Progress,
    ) -> Result<Self, SimError> {
        let mut daemons = Daemons::default();
        let mut pids = BTreeMap::new();
        for name in file
            .nodes
            .iter()
            .map(|n| n.id.as_str())
            .chain([COORDINATOR_ID])
        {
            pids.insert(
                name.to_string(),
                spawn_daemon(&mut daemons, dir, name, bins)?,
            );
        }
        progress.step(format!(
            "started {} node processes and the coordinator",
            file.nodes.len()
        ));
        // Until the cluster is published, set-up connects through the partial file.
        let cluster_path = dir.join(CLUSTER_FILE_PARTIAL);
        let operator = Connection::from_cluster(&cluster_path, ClientRole::Operator)?;
        let custody = Connection::from_cluster(&cluster_path, ClientRole::Custody)?;
        let custody_key = permafrostctl::load_custody_key(&dir.join(&file.custody.signing_key))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            file,
            operator,
            custody,
            custody_key,
            daemons,
            pids,
            groups,
        })
    }

    /// Process id of the daemon `name` (node id or coordinator id) as last started.
    pub fn pid(&self, name: &str) -> Option<u32> {
        self.pids.get(name).copied()
    }

    /// Starts daemon `name` again with its own config and data (after it was killed).
    pub fn respawn(&mut self, name: &str, bins: &Binaries) -> Result<u32, SimError> {
        if !self.pids.contains_key(name) {
            return Err(SimError::Setup(format!(
                "no daemon named {name} in this cluster"
            )));
        }
        let pid = spawn_daemon(&mut self.daemons, &self.dir, name, bins)?;
        self.pids.insert(name.to_string(), pid);
        Ok(pid)
    }

    /// Waits until the coordinator answers and reports every node reachable and unsealed.
    pub async fn wait_ready(
        &mut self,
        timeout: Duration,
        progress: &Progress,
    ) -> Result<(), SimError> {
        let deadline = Instant::now() + timeout;
        let mut probe = self.operator.clone();
        probe.timeout = Duration::from_secs(2);
        let mut last: String;
        loop {
            self.daemons.check_alive()?;
            match client::cluster_status(&probe).await {
                Ok(status) => {
                    let waiting: Vec<String> = status
                        .nodes
                        .iter()
                        .filter(|n| !n.reachable || n.sealed)
                        .map(|n| {
                            if n.reachable {
                                format!("{} is sealed", n.node_id)
                            } else {
                                format!("{} unreachable ({})", n.node_id, n.last_error)
                            }
                        })
                        .collect();
                    if waiting.is_empty() && status.nodes.len() == self.file.nodes.len() {
                        progress.step(format!(
                            "cluster ready: coordinator {} reaches all {} nodes over mTLS",
                            status.coordinator_id,
                            status.nodes.len()
                        ));
                        return Ok(());
                    }
                    last = if waiting.is_empty() {
                        format!("coordinator lists {} nodes", status.nodes.len())
                    } else {
                        waiting.join("; ")
                    };
                }
                Err(e) => last = e.to_string(),
            }
            if Instant::now() >= deadline {
                return Err(SimError::Timeout(format!(
                    "the cluster was not ready after {timeout:?}: {last} (logs: {}/nodes/*/node.log, {}/coordinator/coordinator.log)",
                    self.dir.display(),
                    self.dir.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Creates the plan's key groups ([`GROUPS`] by default) by DKG across their members, and records them in `cluster.json`.
    ///
    /// In a taproot cluster cold-1 may pay only warm-1's own address, which
    /// exists only once warm-1 does: after warm-1's ceremony the policy file's
    /// placeholder becomes warm-1's address (derived here from its group key,
    /// and checked against what the coordinator reports), and every daemon
    /// restarts with that policy before cold-1's ceremony, as operators
    /// would roll out a policy change.
    pub async fn create_groups(
        &mut self,
        bins: &Binaries,
        progress: &Progress,
    ) -> Result<Vec<pb::KeyGroup>, SimError> {
        let mut created: Vec<pb::KeyGroup> = Vec::new();
        for plan in self.groups.clone() {
            if plan.tier == Tier::Cold {
                if let Some(warm) = created.iter().find(|g| g.tier == pb::Tier::Warm as i32) {
                    self.allow_cold_to(warm, bins, progress).await?;
                }
            }
            let name =
                GroupName::new(plan.name.as_str()).map_err(|e| SimError::Setup(e.to_string()))?;
            let members = plan
                .members
                .iter()
                .map(|m| NodeId::new(m.as_str()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| SimError::Setup(e.to_string()))?;
            let threshold = u16::try_from(plan.threshold)
                .map_err(|_| SimError::Setup(format!("threshold {}", plan.threshold)))?;
            let signed = self.approved_create(&name, plan.tier, threshold, &members)?;
            let group = client::create_key_group(&self.operator, &signed).await?;
            if !group.active {
                return Err(SimError::Verification(format!(
                    "key group {} was created but is not active",
                    group.name
                )));
            }
            let address = if group.address.is_empty() {
                String::new()
            } else {
                format!(", {} address {}", group.network, group.address)
            };
            progress.step(format!(
                "key group {} ({}, {}, {}-of-{} on {}) active under a create spec approved by {}, group key {}{address}",
                group.name,
                plan.tier,
                group.scheme,
                group.threshold,
                group.members.len(),
                group.members.join(","),
                signed
                    .approvals
                    .iter()
                    .map(|a| a.operator.as_str())
                    .collect::<Vec<_>>()
                    .join(" and "),
                hex::encode(&group.group_public_key)
            ));
            created.push(group);
        }
        self.file.key_groups = created.iter().map(KeyGroupSummary::from_wire).collect();
        write_partial_cluster_file(&self.dir, &self.file)?;
        Ok(created)
    }

    /// Puts `warm`'s own address in place of cold-1's allowlist placeholder
    /// and restarts every daemon with the new policy (nothing to do for a
    /// message-scheme cluster, whose policy has no placeholder).
    async fn allow_cold_to(
        &mut self,
        warm: &pb::KeyGroup,
        bins: &Binaries,
        progress: &Progress,
    ) -> Result<(), SimError> {
        let path = self.dir.join("policy.toml");
        let text = files::read_text(&path)?;
        let placeholder = plan::cold_allowlist_placeholder();
        if warm.scheme != "taproot" || !text.contains(&placeholder) {
            return Ok(());
        }
        let derived =
            permafrost_core::taproot::GroupOutput::derive(&warm.group_public_key, NETWORK)
                .map_err(|e| SimError::Verification(format!("{}: {e}", warm.name)))?;
        if derived.address().to_string() != warm.address {
            return Err(SimError::Verification(format!(
                "{}: the coordinator reports address {}, its group key gives {}",
                warm.name,
                warm.address,
                derived.address()
            )));
        }
        files::write_public(&path, text.replace(&placeholder, &warm.address).as_bytes())?;
        self.daemons.stop();
        self.daemons = Daemons::default();
        // Nodes first, then the coordinator, as at the first start.
        let mut names: Vec<String> = self.pids.keys().cloned().collect();
        names.sort_by_key(|n| n == COORDINATOR_ID);
        for name in names {
            self.respawn(&name, bins)?;
        }
        progress.step(format!(
            "policy: cold-1 may pay only {}'s own address {}; every daemon restarted with it",
            warm.name, warm.address
        ));
        self.wait_ready(Duration::from_secs(30), progress).await
    }

    /// Path of an approver's key file (written by [`LocalCluster::create`]).
    pub fn approver_key_path(&self, approver_id: &str) -> PathBuf {
        self.dir
            .join("approvers")
            .join(format!("{approver_id}.key"))
    }

    /// Path of `cluster.json` (there once [`LocalCluster::publish`] wrote it).
    pub fn cluster_file_path(&self) -> PathBuf {
        self.dir.join(CLUSTER_FILE)
    }

    /// Writes `cluster.json` for clients, key groups included, in one
    /// rename: call it once the cluster is ready. Returns its path.
    pub fn publish(&self) -> Result<PathBuf, SimError> {
        publish_cluster_file(&self.dir, &self.file)
    }

    /// The child processes.
    pub fn daemons(&mut self) -> &mut Daemons {
        &mut self.daemons
    }

    /// Stops every daemon (SIGTERM, then SIGKILL after a grace period).
    pub fn stop(&mut self) {
        self.daemons.stop();
    }
}

/// Whether `dir` holds a cluster created earlier (ready, or interrupted
/// before it was).
pub fn has_cluster(dir: &Path) -> bool {
    dir.join(CLUSTER_FILE).is_file() || dir.join(CLUSTER_FILE_PARTIAL).is_file()
}

/// Starts node `name` (or the coordinator) of the cluster in `dir`, logging to its directory.
fn spawn_daemon(
    daemons: &mut Daemons,
    dir: &Path,
    name: &str,
    bins: &Binaries,
) -> Result<u32, SimError> {
    let (program, own_dir, config, log) = if name == COORDINATOR_ID {
        let d = dir.join("coordinator");
        (
            &bins.coordinator,
            d.clone(),
            d.join("coordinator.toml"),
            d.join("coordinator.log"),
        )
    } else {
        let d = dir.join("nodes").join(name);
        (
            &bins.node,
            d.clone(),
            d.join("node.toml"),
            d.join("node.log"),
        )
    };
    if !own_dir.is_dir() {
        return Err(SimError::Setup(format!(
            "{} does not exist",
            own_dir.display()
        )));
    }
    daemons.spawn(
        name,
        program,
        ["run".as_ref(), "--config".as_ref(), config.as_os_str()],
        &log,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_parses_with_the_core_parser() {
        let keys: Vec<(String, String)> = APPROVERS
            .iter()
            .map(|id| {
                let key = SigningKey::from_bytes(&[7u8; 32]);
                (id.to_string(), hex::encode(key.verifying_key().as_bytes()))
            })
            .collect();
        // Distinct keys are not required by the parser; validity of shape is.
        permafrost_core::policy::Policy::from_toml(&policy_text(&keys, true, WARM_WALLET_ADDRESS))
            .expect("message policy parses");
        let taproot = permafrost_core::policy::Policy::from_toml(&policy_text(
            &keys,
            false,
            &plan::cold_allowlist_placeholder(),
        ))
        .expect("taproot policy parses");
        let cold = taproot
            .group(&GroupName::new("cold-1").expect("name"))
            .expect("cold-1");
        assert!(cold
            .allowlist
            .as_ref()
            .is_some_and(|a| a.contains(&plan::cold_allowlist_placeholder())));
    }

    #[test]
    fn cluster_json_appears_only_when_published_and_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut file: ClusterFile = serde_json::from_value(serde_json::json!({
            "coordinator": {"endpoint": "127.0.0.1:1", "tls_server_name": "c", "metrics": "127.0.0.1:2"},
            "ca_cert": "ca.pem",
            "custody": {"cert": "c.pem", "key": "c.key", "signing_key": "s.key", "signing_public_key": "00"},
            "operator": {"cert": "o.pem", "key": "o.key"},
        }))
        .expect("cluster file");
        write_partial_cluster_file(dir.path(), &file).expect("partial");
        assert!(
            has_cluster(dir.path()),
            "an interrupted set-up can be restarted"
        );
        assert!(!dir.path().join(CLUSTER_FILE).exists());
        file.key_groups.push(KeyGroupSummary {
            name: "warm-1".into(),
            tier: "warm".into(),
            threshold: 2,
            members: vec!["n1".into(), "n2".into()],
            group_public_key: "02".into(),
            scheme: String::new(),
            network: String::new(),
            output_key: String::new(),
            address: String::new(),
        });
        let path = publish_cluster_file(dir.path(), &file).expect("publish");
        let published: ClusterFile =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("parse");
        assert_eq!(published.key_groups, file.key_groups);
        assert_eq!(
            published.coordinator.metrics.as_deref(),
            Some("127.0.0.1:2")
        );
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from(CLUSTER_FILE)]);
    }

    #[test]
    fn free_ports_are_distinct() {
        let ports = free_ports(6).expect("ports");
        let set: std::collections::BTreeSet<_> = ports.iter().collect();
        assert_eq!(set.len(), 6);
    }
}
