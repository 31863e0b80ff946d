//! The files the local cluster is written as: each daemon's TOML config (the
//! shape `permafrost-node` and `permafrost-coordinator` read), what
//! `permafrost-node init` prints, and `cluster.json` for clients.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use permafrost_core::ceremony::RegistryConfig;
use permafrostctl::files;

use permafrostctl::client::ClusterFile;
use serde::{Deserialize, Serialize};

use crate::SimError;

pub(super) const CLUSTER_FILE: &str = "cluster.json";

/// What `cluster.json` is called until the cluster is ready (the daemons and
/// the set-up read it; clients wait for [`CLUSTER_FILE`]).
pub(super) const CLUSTER_FILE_PARTIAL: &str = "cluster.json.partial";

pub(super) const CUSTODY_SIGNING_KEY: &str = "custody-signing.key";

pub(super) const CUSTODY_SIGNING_PUB: &str = "custody-signing.pub";

/// Node config as `permafrost-node` reads it (node/src/config.rs); scalars before tables.
#[derive(Serialize)]
pub(super) struct NodeToml<'a> {
    pub(super) id: &'a str,
    pub(super) region: &'a str,
    pub(super) listen: SocketAddr,
    pub(super) data_dir: &'a Path,
    pub(super) manifest: &'a Path,
    pub(super) policy: &'a Path,
    pub(super) custody_keys: Vec<String>,
    pub(super) tls: NodeTlsToml<'a>,
    pub(super) sealer: SealerToml<'a>,
    pub(super) operators: &'a RegistryConfig,
    pub(super) admin: AdminToml,
}

/// The `[admin]` section of both daemons: where they serve Prometheus metrics.
#[derive(Serialize)]
pub(super) struct AdminToml {
    pub(super) metrics_listen: SocketAddr,
}

#[derive(Serialize)]
pub(super) struct NodeTlsToml<'a> {
    pub(super) ca_cert: &'a Path,
    pub(super) cert: &'a Path,
}

#[derive(Serialize)]
pub(super) struct SealerToml<'a> {
    pub(super) kind: &'static str,
    pub(super) passphrase_file: &'a Path,
    pub(super) kdf: &'static str,
}

/// Coordinator config as `permafrost-coordinator` reads it (coordinator/src/config.rs).
#[derive(Serialize)]
pub(super) struct CoordinatorToml<'a> {
    pub(super) id: &'a str,
    pub(super) listen: SocketAddr,
    pub(super) data_dir: &'a Path,
    pub(super) manifest: &'a Path,
    pub(super) policy: &'a Path,
    pub(super) custody_keys: Vec<String>,
    pub(super) health_interval_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) round_timeout_ms: Option<u64>,
    pub(super) tls: CoordinatorTlsToml<'a>,
    pub(super) operators: &'a RegistryConfig,
    pub(super) admin: AdminToml,
}

#[derive(Serialize)]
pub(super) struct CoordinatorTlsToml<'a> {
    pub(super) ca_cert: &'a Path,
    pub(super) cert: &'a Path,
    pub(super) key: &'a Path,
}

/// What `permafrost-node init` prints.
#[derive(Deserialize)]
pub(super) struct NodeInitOutput {
    pub(super) id: String,
    pub(super) region: String,
    pub(super) identity_key: String,
    pub(super) encryption_key: String,
    pub(super) tls_csr: String,
}

pub(super) fn toml_text<T: Serialize>(value: &T, what: &str) -> Result<String, SimError> {
    toml::to_string(value).map_err(|e| SimError::Setup(format!("cannot write {what}: {e}")))
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

pub(super) async fn init_node(program: &Path, config: &Path) -> Result<NodeInitOutput, SimError> {
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
