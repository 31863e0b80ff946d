//! The local cluster's files beyond its layout (crate::layout): `cluster.json`
//! for clients, and running `permafrost-node init` on a node's config.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use permafrost_core::Role;
use permafrost_node::NodePublicInfo;
use permafrostctl::client::{
    ClusterFile, CoordinatorRef, CustodyCredentials, NodeRef, OperatorCredentials,
};
use permafrostctl::{files, pki};

use super::{COORDINATOR_ID, CUSTODY_ID, OPERATOR_ID};
use crate::layout::ClusterLayout;
use crate::SimError;

pub(super) const CLUSTER_FILE: &str = "cluster.json";

/// What `cluster.json` is called until the cluster is ready (the daemons and
/// the set-up read it; clients wait for [`CLUSTER_FILE`]).
pub(super) const CLUSTER_FILE_PARTIAL: &str = "cluster.json.partial";

pub(super) const CUSTODY_SIGNING_KEY: &str = "custody-signing.key";

pub(super) const CUSTODY_SIGNING_PUB: &str = "custody-signing.pub";

/// What clients of the cluster laid out as `cluster` need: where the
/// coordinator and the nodes are, and the custody and operator credentials
/// (paths relative to the cluster directory).
pub(super) fn client_file(cluster: &ClusterLayout, custody_public: String) -> ClusterFile {
    let plan = cluster.plan();
    let coordinator = plan.coordinator.as_ref();
    let metrics = |listen: Option<SocketAddr>| listen.map(|a| a.to_string());
    ClusterFile {
        coordinator: CoordinatorRef {
            endpoint: coordinator
                .map(|c| c.listen.to_string())
                .unwrap_or_default(),
            tls_server_name: pki::server_name(Role::Coordinator, COORDINATOR_ID),
            metrics: metrics(coordinator.and_then(|c| c.metrics_listen)),
        },
        ca_cert: pki::CA_CERT.into(),
        custody: CustodyCredentials {
            cert: format!("{CUSTODY_ID}.pem").into(),
            key: format!("{CUSTODY_ID}.key").into(),
            signing_key: CUSTODY_SIGNING_KEY.into(),
            signing_public_key: custody_public,
        },
        operator: OperatorCredentials {
            cert: format!("{OPERATOR_ID}.pem").into(),
            key: format!("{OPERATOR_ID}.key").into(),
        },
        nodes: plan
            .nodes
            .iter()
            .map(|n| NodeRef {
                id: n.id.clone(),
                region: n.region.clone(),
                endpoint: n.listen.to_string(),
                metrics: metrics(n.metrics_listen),
            })
            .collect(),
        key_groups: Vec::new(),
    }
}

/// Writes the cluster file of a cluster still being set up ([`CLUSTER_FILE_PARTIAL`]).
pub(super) fn write_partial_cluster_file(dir: &Path, file: &ClusterFile) -> Result<(), SimError> {
    files::write_public(&dir.join(CLUSTER_FILE_PARTIAL), &cluster_json(file)?)?;
    Ok(())
}

/// Writes `cluster.json` at once and whole: to a temporary name, synced,
/// then renamed, so a client that sees the file reads all of it. The partial
/// file goes.
pub(super) fn publish_cluster_file(dir: &Path, file: &ClusterFile) -> Result<PathBuf, SimError> {
    let path = dir.join(CLUSTER_FILE);
    let tmp = dir.join(format!(".{CLUSTER_FILE}.tmp"));
    files::write_public(&tmp, &cluster_json(file)?)?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| SimError::io(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| SimError::io(&path, e))?;
    match std::fs::remove_file(dir.join(CLUSTER_FILE_PARTIAL)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(SimError::io(&dir.join(CLUSTER_FILE_PARTIAL), e))
        }
        _ => {}
    }
    Ok(path)
}

fn cluster_json(file: &ClusterFile) -> Result<Vec<u8>, SimError> {
    serde_json::to_vec_pretty(file)
        .map_err(|e| SimError::Setup(format!("cannot write {CLUSTER_FILE}: {e}")))
}

/// Runs `permafrost-node init` on `config` and returns the public info it prints.
pub(super) async fn init_node(program: &Path, config: &Path) -> Result<NodePublicInfo, SimError> {
    let out = tokio::process::Command::new(program)
        .arg("init")
        .arg("--config")
        .arg(config)
        .output()
        .await
        .map_err(|e| SimError::Setup(format!("cannot run {}: {e}", program.display())))?;
    if !out.status.success() {
        return Err(SimError::Setup(format!(
            "permafrost-node init --config {} failed ({}): {}",
            config.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| {
        SimError::Setup(format!(
            "permafrost-node init --config {} printed something that is not its public info ({e}): {}",
            config.display(),
            String::from_utf8_lossy(&out.stdout).trim()
        ))
    })
}
