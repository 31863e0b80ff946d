//! One cluster layout, written from one plan: the CA, every daemon's
//! certificate, the manifest, the node and coordinator configs and the
//! withdrawal policy.
//!
//! `permafrost-sim` (demo, up, chaos, bench), the test kit's in-process
//! cluster and the node's own tests all lay their clusters out here, so what
//! a file is called, where it goes and what shape it has is decided once. A
//! [`ClusterPlan`] is plain data (nodes and their regions, the coordinator,
//! the key groups to create, the policy), so the same plan can later be
//! written as `deploy/` files.
//!
//! Laying a cluster out takes three steps, because a node's keys exist only
//! once it has been initialized (in production, on its own machine):
//!
//! 1. [`ClusterLayout::write`]: the CA, the policy and every node's config;
//! 2. `permafrost-node init` on each node (a child process, in-process, or an
//!    operator: the caller's choice), then [`ClusterLayout::enroll`] with what
//!    it printed: its certificate, issued from its CSR, and its manifest entry;
//! 3. [`ClusterLayout::write_manifest`] with those entries, and
//!    [`ClusterLayout::write_coordinator`]: its certificate and config.
//!
//! Relative paths in a plan are relative to the layout's root (a node's
//! directory) or to the node's directory (its sealer's files).

use std::path::{Path, PathBuf};

use permafrost_core::ceremony::RegistryConfig;
use permafrost_core::manifest::{ClusterManifest, ManifestNode};
use permafrost_core::{NodeId, Role, Tier};
use permafrost_node::NodePublicInfo;
use permafrost_proto::tls::TlsMaterial;
use permafrostctl::{files, pki};

mod config_toml;

pub use config_toml::SealerSpec;
use config_toml::{
    AdminToml, CoordinatorTlsToml, CoordinatorToml, NodeTlsToml, NodeToml, SealToml,
};

use crate::SimError;

/// A node's config file name, in its own directory.
pub const NODE_CONFIG: &str = "node.toml";
/// The coordinator's config file name, in its directory.
pub const COORDINATOR_CONFIG: &str = "coordinator.toml";
/// The manifest, at the root.
pub const MANIFEST: &str = "manifest.json";
/// The policy every daemon enforces, at the root (a node with a policy of its
/// own has it under this name in its directory).
pub const POLICY: &str = "policy.toml";
/// The CA directory under the root, when the plan keeps the CA there.
pub const CA_DIR: &str = "ca";

/// What a cluster is made of, and how its files are laid out.
#[derive(Clone, Debug)]
pub struct ClusterPlan {
    /// Common name of the cluster CA.
    pub ca_name: String,
    /// Where the CA and its private key live. `None` keeps them in
    /// `<root>/ca`; a cluster handed to clients keeps them elsewhere (and in
    /// production, offline). The CA certificate the daemons trust is always
    /// copied to `<root>/ca.pem`.
    pub ca_dir: Option<PathBuf>,
    /// Names and lifetime of every daemon's certificate besides role and id
    /// (e.g. `127.0.0.1`, so clients can dial an address).
    pub daemon_cert: pki::Extra,
    /// The signer nodes.
    pub nodes: Vec<NodeSpec>,
    /// The coordinator, if the cluster has one.
    pub coordinator: Option<CoordinatorSpec>,
    /// The key groups to create once the cluster is up (by DKG: no files).
    pub groups: Vec<GroupSpec>,
    /// The withdrawal policy (TOML) every daemon enforces.
    pub policy: String,
    /// Custody public keys (hex) every daemon accepts requests from.
    pub custody_keys: Vec<String>,
    /// The operator registry (`[operators]`) of every daemon, if any.
    pub operators: Option<RegistryConfig>,
}

/// One signer node of a [`ClusterPlan`].
#[derive(Clone, Debug)]
pub struct NodeSpec {
    /// Node id.
    pub id: String,
    /// Region (failure domain).
    pub region: String,
    /// The node's own directory (config, certificate, data dir `data/`),
    /// relative to the root; empty for the root itself.
    pub dir: PathBuf,
    /// Where it listens.
    pub listen: std::net::SocketAddr,
    /// Its endpoint in the manifest when others must dial something else than
    /// `listen` (a proxy, a lying stand-in, or nothing at all).
    pub endpoint: Option<String>,
    /// How it seals its secrets.
    pub sealer: SealerSpec,
    /// Whether it starts sealed until an operator unseals it.
    pub manual_seal: bool,
    /// A policy of its own instead of the cluster's (a node whose operator
    /// edited it alone).
    pub policy: Option<String>,
    /// Where it serves Prometheus metrics, if it does.
    pub metrics_listen: Option<std::net::SocketAddr>,
}

impl NodeSpec {
    /// A node `id` in `region`, in its directory `dir`, listening on `listen`,
    /// sealing with `sealer`; nothing else set.
    pub fn new(
        id: impl Into<String>,
        region: impl Into<String>,
        dir: impl Into<PathBuf>,
        listen: std::net::SocketAddr,
        sealer: SealerSpec,
    ) -> Self {
        Self {
            id: id.into(),
            region: region.into(),
            dir: dir.into(),
            listen,
            endpoint: None,
            sealer,
            manual_seal: false,
            policy: None,
            metrics_listen: None,
        }
    }
}

/// The coordinator of a [`ClusterPlan`].
#[derive(Clone, Debug)]
pub struct CoordinatorSpec {
    /// Coordinator id.
    pub id: String,
    /// Its directory (config, certificate and key, data dir `data/`), relative to the root.
    pub dir: PathBuf,
    /// Where it listens.
    pub listen: std::net::SocketAddr,
    /// Where it serves Prometheus metrics, if it does.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Its round deadline, milliseconds (its own default when `None`).
    pub round_timeout_ms: Option<u64>,
    /// Milliseconds between member health probes.
    pub health_interval_ms: u64,
}

/// A key group a [`ClusterPlan`] creates once the cluster is up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupSpec {
    /// Group name.
    pub name: String,
    /// Tier.
    pub tier: Tier,
    /// Signers needed.
    pub threshold: u32,
    /// Member node ids.
    pub members: Vec<String>,
}

/// A plan written out under a root directory: where each file is, and the
/// certificates and manifest that need the nodes' own keys.
#[derive(Clone, Debug)]
pub struct ClusterLayout {
    root: PathBuf,
    ca_dir: PathBuf,
    plan: ClusterPlan,
}

impl ClusterLayout {
    /// Writes the CA (refusing to overwrite one), the policy and every node's
    /// config under `root` (created if absent), and creates the nodes' and
    /// the coordinator's directories.
    pub fn write(root: &Path, plan: ClusterPlan) -> Result<Self, SimError> {
        create_dir(root)?;
        let ca_dir = plan
            .ca_dir
            .as_ref()
            .map(|d| root.join(d))
            .unwrap_or_else(|| root.join(CA_DIR));
        let layout = Self {
            root: root.to_path_buf(),
            ca_dir,
            plan,
        };
        pki::init_ca(&layout.ca_dir, &layout.plan.ca_name)?;
        let ca_cert = layout.ca_cert();
        std::fs::copy(layout.ca_dir.join(pki::CA_CERT), &ca_cert)
            .map_err(|e| SimError::io(&ca_cert, e))?;
        files::write_public(&layout.policy_path(), layout.plan.policy.as_bytes())?;
        for node in &layout.plan.nodes {
            create_dir(&layout.node_dir(node))?;
            if let Some(policy) = &node.policy {
                files::write_public(&layout.node_dir(node).join(POLICY), policy.as_bytes())?;
            }
            layout.write_node_config(node)?;
        }
        if let Some(coordinator) = &layout.plan.coordinator {
            create_dir(&layout.root.join(&coordinator.dir))?;
        }
        Ok(layout)
    }

    /// The plan this layout was written from.
    pub fn plan(&self) -> &ClusterPlan {
        &self.plan
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The CA directory (its private key included).
    pub fn ca_dir(&self) -> &Path {
        &self.ca_dir
    }

    /// The CA certificate every daemon and client trusts.
    pub fn ca_cert(&self) -> PathBuf {
        self.root.join(pki::CA_CERT)
    }

    /// The manifest.
    pub fn manifest_path(&self) -> PathBuf {
        self.root.join(MANIFEST)
    }

    /// The cluster's policy.
    pub fn policy_path(&self) -> PathBuf {
        self.root.join(POLICY)
    }

    /// `node`'s own directory.
    pub fn node_dir(&self, node: &NodeSpec) -> PathBuf {
        if node.dir.as_os_str().is_empty() {
            self.root.clone()
        } else {
            self.root.join(&node.dir)
        }
    }

    /// `node`'s config file.
    pub fn node_config_path(&self, node: &NodeSpec) -> PathBuf {
        self.node_dir(node).join(NODE_CONFIG)
    }

    /// The config file of the plan's node `id`.
    pub fn node_config_of(&self, id: &str) -> Result<PathBuf, SimError> {
        self.plan
            .nodes
            .iter()
            .find(|n| n.id == id)
            .map(|n| self.node_config_path(n))
            .ok_or_else(|| SimError::Setup(format!("no node {id} in the plan")))
    }

    /// (Re)writes `node`'s config: a node of the plan, or one changed from it
    /// (another sealer, say) to see how the node takes it.
    pub fn write_node_config(&self, node: &NodeSpec) -> Result<PathBuf, SimError> {
        let dir = self.node_dir(node);
        let policy = match node.policy {
            Some(_) => dir.join(POLICY),
            None => self.policy_path(),
        };
        let config = NodeToml {
            id: &node.id,
            region: &node.region,
            listen: node.listen,
            data_dir: dir.join("data"),
            manifest: self.manifest_path(),
            policy,
            custody_keys: &self.plan.custody_keys,
            seal: node.manual_seal.then_some(SealToml { manual: true }),
            tls: NodeTlsToml {
                ca_cert: self.ca_cert(),
                cert: dir.join(format!("{}.pem", node.id)),
            },
            sealer: node.sealer.resolved(&dir),
            operators: self.plan.operators.as_ref(),
            admin: node
                .metrics_listen
                .map(|metrics_listen| AdminToml { metrics_listen }),
        };
        let path = self.node_config_path(node);
        files::write_public(&path, config_toml::text(&config, "node config")?.as_bytes())?;
        Ok(path)
    }

    /// What an operator does with a node's `init` output: the CA signs its
    /// CSR (taking only the key from it; role, id and names come from the
    /// plan) into the node's directory. Returns the node's manifest entry.
    pub fn enroll(&self, info: &NodePublicInfo) -> Result<ManifestNode, SimError> {
        let node = self
            .plan
            .nodes
            .iter()
            .find(|n| n.id == info.id.as_str())
            .ok_or_else(|| SimError::Setup(format!("node {} is not in the plan", info.id)))?;
        if info.region != node.region {
            return Err(SimError::Setup(format!(
                "node {} reports region {}, the plan says {}",
                info.id, info.region, node.region
            )));
        }
        pki::issue_to_dir(
            &self.ca_dir,
            Role::Node,
            &node.id,
            &self.plan.daemon_cert,
            Some(&info.tls_csr),
            &self.node_dir(node),
        )?;
        Ok(ManifestNode {
            id: NodeId::new(node.id.as_str()).map_err(|e| SimError::Setup(e.to_string()))?,
            region: node.region.clone(),
            endpoint: node
                .endpoint
                .clone()
                .unwrap_or_else(|| node.listen.to_string()),
            tls_server_name: pki::server_name(Role::Node, &node.id),
            identity_key: info.identity_key.clone(),
            encryption_key: info.encryption_key.clone(),
        })
    }

    /// Writes the manifest of the enrolled `nodes`.
    pub fn write_manifest(&self, nodes: Vec<ManifestNode>) -> Result<PathBuf, SimError> {
        let manifest = ClusterManifest { nodes };
        let json = serde_json::to_string_pretty(&manifest)
            .map_err(|e| SimError::Setup(format!("cannot write the manifest: {e}")))?;
        let path = self.manifest_path();
        files::write_public(&path, json.as_bytes())?;
        Ok(path)
    }

    /// Issues the coordinator's certificate and key into its directory and
    /// writes its config; returns the config's path.
    pub fn write_coordinator(&self) -> Result<PathBuf, SimError> {
        let spec = self
            .plan
            .coordinator
            .as_ref()
            .ok_or_else(|| SimError::Setup("the plan has no coordinator".into()))?;
        let dir = self.root.join(&spec.dir);
        self.issue_daemon_cert(Role::Coordinator, &spec.id, &dir)?;
        let config = CoordinatorToml {
            id: &spec.id,
            listen: spec.listen,
            data_dir: dir.join("data"),
            manifest: self.manifest_path(),
            policy: self.policy_path(),
            custody_keys: &self.plan.custody_keys,
            health_interval_ms: spec.health_interval_ms,
            round_timeout_ms: spec.round_timeout_ms,
            tls: CoordinatorTlsToml {
                ca_cert: self.ca_cert(),
                cert: dir.join(format!("{}.pem", spec.id)),
                key: dir.join(format!("{}.key", spec.id)),
            },
            operators: self.plan.operators.as_ref(),
            admin: spec
                .metrics_listen
                .map(|metrics_listen| AdminToml { metrics_listen }),
        };
        let path = dir.join(COORDINATOR_CONFIG);
        files::write_public(
            &path,
            config_toml::text(&config, "coordinator config")?.as_bytes(),
        )?;
        Ok(path)
    }

    /// Issues a daemon certificate (and its key) for `role`/`id` into `dir`,
    /// with the plan's names: another coordinator, say.
    pub fn issue_daemon_cert(&self, role: Role, id: &str, dir: &Path) -> Result<(), SimError> {
        pki::issue_to_dir(&self.ca_dir, role, id, &self.plan.daemon_cert, None, dir)?;
        Ok(())
    }

    /// Issues a client certificate (and its key) for `role`/`id` into `dir`:
    /// `<id>.pem` and `<id>.key`.
    pub fn issue_client_cert(&self, role: Role, id: &str, dir: &Path) -> Result<(), SimError> {
        pki::issue_to_dir(&self.ca_dir, role, id, &pki::Extra::default(), None, dir)?;
        Ok(())
    }

    /// A fresh client credential for `role`/`id`, issued by the cluster CA and
    /// kept in memory.
    pub fn credential(&self, role: Role, id: &str) -> Result<TlsMaterial, SimError> {
        let issued = pki::issue(&self.ca_dir, role, id, &pki::Extra::default(), None)?;
        let ca_path = self.ca_dir.join(pki::CA_CERT);
        let ca = std::fs::read(&ca_path).map_err(|e| SimError::io(&ca_path, e))?;
        let key = issued
            .key_pem
            .ok_or_else(|| SimError::Setup(format!("the CA made no key for {id}")))?;
        Ok(TlsMaterial::from_pem(
            &ca,
            issued.cert_pem.as_bytes(),
            key.as_bytes(),
        ))
    }
}

fn create_dir(path: &Path) -> Result<(), SimError> {
    std::fs::create_dir_all(path).map_err(|e| SimError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(root_node_dir: &str) -> ClusterPlan {
        let listen = "127.0.0.1:7001".parse().expect("addr");
        let mut node = NodeSpec::new(
            "n1",
            "eu",
            root_node_dir,
            listen,
            SealerSpec::fast_passphrase_file("passphrase"),
        );
        node.endpoint = Some("127.0.0.1:7100".into());
        ClusterPlan {
            ca_name: "layout test CA".into(),
            ca_dir: None,
            daemon_cert: pki::Extra::default(),
            nodes: vec![node],
            coordinator: Some(CoordinatorSpec {
                id: "coord-1".into(),
                dir: "coordinator".into(),
                listen: "127.0.0.1:7002".parse().expect("addr"),
                metrics_listen: None,
                round_timeout_ms: Some(3_000),
                health_interval_ms: 500,
            }),
            groups: Vec::new(),
            policy: "[groups]\n".into(),
            custody_keys: vec!["00".repeat(32)],
            operators: None,
        }
    }

    #[test]
    fn node_config_names_the_layout_files_and_resolves_the_sealer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let layout = ClusterLayout::write(dir.path(), plan("nodes/n1")).expect("layout");
        let text =
            std::fs::read_to_string(layout.node_config_of("n1").expect("n1")).expect("config");
        let config: toml::Value = toml::from_str(&text).expect("toml");
        let node_dir = dir.path().join("nodes/n1");
        let s = |v: &toml::Value| v.as_str().map(str::to_string);
        assert_eq!(s(&config["id"]).as_deref(), Some("n1"));
        assert_eq!(
            s(&config["data_dir"]),
            Some(node_dir.join("data").display().to_string())
        );
        assert_eq!(
            s(&config["tls"]["ca_cert"]),
            Some(dir.path().join("ca.pem").display().to_string())
        );
        assert_eq!(
            s(&config["sealer"]["passphrase_file"]),
            Some(node_dir.join("passphrase").display().to_string())
        );
        assert!(config.get("seal").is_none() && config.get("admin").is_none());
        assert!(dir.path().join("ca").join(pki::CA_CERT).is_file());
        assert!(dir.path().join("coordinator").is_dir());
    }

    #[test]
    fn a_node_in_the_root_keeps_its_files_there() {
        let dir = tempfile::tempdir().expect("tempdir");
        let layout = ClusterLayout::write(dir.path(), plan("")).expect("layout");
        let node = &layout.plan().nodes[0];
        assert_eq!(layout.node_dir(node), dir.path());
        assert_eq!(layout.node_config_path(node), dir.path().join(NODE_CONFIG));
    }

    #[test]
    fn coordinator_config_has_its_certificate_and_timings() {
        let dir = tempfile::tempdir().expect("tempdir");
        let layout = ClusterLayout::write(dir.path(), plan("n1")).expect("layout");
        let path = layout.write_coordinator().expect("coordinator");
        let config: toml::Value =
            toml::from_str(&std::fs::read_to_string(&path).expect("read")).expect("toml");
        assert_eq!(config["round_timeout_ms"].as_integer(), Some(3_000));
        assert_eq!(config["health_interval_ms"].as_integer(), Some(500));
        assert!(dir.path().join("coordinator/coord-1.pem").is_file());
        assert!(dir.path().join("coordinator/coord-1.key").is_file());
    }
}
