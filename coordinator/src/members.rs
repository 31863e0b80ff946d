//! Connections to the signer nodes and their health, probed continuously.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use permafrost_core::manifest::Directory;
use permafrost_core::NodeId;
use permafrost_proto::signer_node_client::SignerNodeClient;
use permafrost_proto::tls::TlsMaterial;
use tonic::transport::Channel;

/// What the coordinator last saw of a member.
#[derive(Clone, Debug, Default)]
pub struct Health {
    /// Answered the last probe or call.
    pub reachable: bool,
    /// Reported itself sealed.
    pub sealed: bool,
    /// Last error, if any.
    pub last_error: String,
    /// Round-trip of the last probe.
    pub latency: Option<Duration>,
    /// When it was last seen healthy.
    pub last_ok: Option<Instant>,
}

/// One member node.
#[derive(Clone, Debug)]
pub struct Member {
    /// Node id.
    pub id: NodeId,
    /// Region.
    pub region: String,
    /// Endpoint.
    pub endpoint: String,
    /// gRPC client (lazily connected, per-call deadline applied by the channel).
    pub client: SignerNodeClient<Channel>,
    /// Signing rounds this coordinator may run on the node at once.
    pub slots: std::sync::Arc<tokio::sync::Semaphore>,
}

/// All members and their health.
#[derive(Debug)]
pub struct Members {
    members: BTreeMap<NodeId, Member>,
    revoked: Mutex<std::collections::BTreeSet<NodeId>>,
    health: Mutex<BTreeMap<NodeId, Health>>,
}

impl Members {
    /// Builds clients for every node in the manifest.
    pub fn new(
        directory: &Directory,
        tls: &TlsMaterial,
        timeout: Duration,
        sessions_per_node: usize,
    ) -> Result<Self, String> {
        let mut members = BTreeMap::new();
        for entry in directory.iter() {
            let channel = tls
                .channel(&entry.node.endpoint, &entry.node.tls_server_name, timeout)
                .map_err(|e| e.to_string())?;
            let client = SignerNodeClient::new(channel)
                .max_decoding_message_size(permafrost_proto::server::MAX_MESSAGE_BYTES);
            members.insert(
                entry.node.id.clone(),
                Member {
                    id: entry.node.id.clone(),
                    region: entry.node.region.clone(),
                    endpoint: entry.node.endpoint.clone(),
                    client,
                    slots: std::sync::Arc::new(tokio::sync::Semaphore::new(sessions_per_node)),
                },
            );
        }
        Ok(Self {
            members,
            revoked: Mutex::new(Default::default()),
            health: Mutex::new(BTreeMap::new()),
        })
    }

    /// A member by id; revoked nodes are never returned, so never contacted.
    pub fn get(&self, id: &NodeId) -> Option<&Member> {
        if self.is_revoked(id) {
            return None;
        }
        self.members.get(id)
    }

    /// All members that are not revoked.
    pub fn iter(&self) -> impl Iterator<Item = &Member> {
        self.members.values().filter(|m| !self.is_revoked(&m.id))
    }

    /// Stops using `id` for good (it was replaced after a loss).
    pub fn revoke(&self, id: &NodeId) {
        if let Ok(mut r) = self.revoked.lock() {
            r.insert(id.clone());
        }
    }

    fn is_revoked(&self, id: &NodeId) -> bool {
        self.revoked.lock().map(|r| r.contains(id)).unwrap_or(true)
    }

    /// Current health of `id`.
    pub fn health(&self, id: &NodeId) -> Health {
        self.health
            .lock()
            .ok()
            .and_then(|h| h.get(id).cloned())
            .unwrap_or_default()
    }

    /// Records the outcome of a call to `id`.
    pub fn record(&self, id: &NodeId, outcome: Result<Duration, String>, sealed: Option<bool>) {
        if let Ok(mut map) = self.health.lock() {
            let h = map.entry(id.clone()).or_default();
            match outcome {
                Ok(latency) => {
                    h.reachable = true;
                    h.latency = Some(latency);
                    h.last_ok = Some(Instant::now());
                    h.last_error.clear();
                }
                Err(e) => {
                    h.reachable = false;
                    h.last_error = e;
                }
            }
            if let Some(sealed) = sealed {
                h.sealed = sealed;
            }
        }
    }

    /// Probes every member once, in parallel.
    pub async fn probe_all(&self) {
        let probes = self.iter().map(|m| async move {
            let started = Instant::now();
            let mut client = m.client.clone();
            let result = tokio::time::timeout(
                Duration::from_millis(1000),
                client.get_status(permafrost_proto::NodeStatusRequest {}),
            )
            .await;
            match result {
                // A node that cannot commit to its store or write its audit log says so:
                // it is routed around until it reports healthy again.
                Ok(Ok(status)) if !status.get_ref().healthy => self.record(
                    &m.id,
                    Err(format!("unhealthy: {}", status.get_ref().unhealthy_reason)),
                    Some(status.get_ref().sealed),
                ),
                Ok(Ok(status)) => {
                    self.record(&m.id, Ok(started.elapsed()), Some(status.get_ref().sealed))
                }
                Ok(Err(status)) => self.record(
                    &m.id,
                    Err(format!("{}: {}", status.code(), status.message())),
                    None,
                ),
                Err(_) => self.record(&m.id, Err("health probe timed out".into()), None),
            }
        });
        futures::future::join_all(probes).await;
    }
}

/// Probes members forever at `interval`.
pub async fn probe_loop(members: std::sync::Arc<Members>, interval: Duration) {
    loop {
        members.probe_all().await;
        tokio::time::sleep(interval).await;
    }
}
