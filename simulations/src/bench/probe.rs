//! What the daemons say about themselves during a bench: each node's
//! `NodeAdmin.GetStatus` (store group-commit counters, health), asked
//! directly with the operator certificate because the coordinator's
//! `GetClusterStatus` relays only reachability and sealing; and the resident
//! memory of every daemon process.

use std::collections::BTreeMap;
use std::time::Duration;

use permafrost_core::Role;
use permafrost_proto as pb;
use permafrost_proto::tls::TlsFiles;
use permafrostctl::client::{self, Connection};
use permafrostctl::pki;
use serde::Serialize;

use crate::bench::stats::rss_kib;
use crate::cluster::{LocalCluster, COORDINATOR_ID};

/// Deadline of one status call.
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);

/// Operator connections to every node of a cluster.
#[derive(Clone, Debug)]
pub struct NodeProbe {
    nodes: Vec<(String, Connection)>,
}

/// One node's answer to `GetStatus` (or why there was none).
#[derive(Clone, Debug, Serialize)]
pub struct NodeHealth {
    /// Node id.
    pub node: String,
    /// The node says its store commits and audit writes succeed.
    pub healthy: Option<bool>,
    /// Why not, when not.
    pub unhealthy_reason: String,
    /// Commit/Sign calls being served when asked.
    pub sessions_in_flight: Option<u32>,
    /// Group-commit counters since the node started, if it reports them.
    pub store: Option<StoreCountersView>,
    /// The call failed.
    pub error: Option<String>,
}

/// `StoreCounters` as the report writes them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StoreCountersView {
    /// Durable commits holding at least one step.
    pub commits: u64,
    /// Steps committed.
    pub steps: u64,
    /// Most steps in one commit.
    pub max_batch: u64,
    /// Commits that failed.
    pub failed_commits: u64,
    /// Steps refused because the write queue was full.
    pub refused_busy: u64,
}

impl From<&pb::StoreCounters> for StoreCountersView {
    fn from(c: &pb::StoreCounters) -> Self {
        Self {
            commits: c.commits,
            steps: c.steps,
            max_batch: c.max_batch,
            failed_commits: c.failed_commits,
            refused_busy: c.refused_busy,
        }
    }
}

/// Store activity of all nodes over an interval (sums; `max_batch` is the largest).
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct StoreDelta {
    /// Nodes that reported counters both times.
    pub nodes: usize,
    /// Durable commits.
    pub commits: u64,
    /// Steps committed.
    pub steps: u64,
    /// Commits per second of the interval.
    pub commits_per_sec: f64,
    /// Steps per commit.
    pub mean_batch: f64,
    /// Largest batch any node has committed since it started.
    pub max_batch: u64,
    /// Failed commits in the interval.
    pub failed_commits: u64,
    /// Steps refused as busy in the interval.
    pub refused_busy: u64,
}

/// One daemon's resident memory.
#[derive(Clone, Debug, Serialize)]
pub struct DaemonRss {
    /// Node id or coordinator id.
    pub name: String,
    /// Process id when read.
    pub pid: u32,
    /// `VmRSS` in KiB (`None`: the process was gone).
    pub rss_kib: Option<u64>,
}

impl NodeProbe {
    /// Connections to every node of `cluster` presenting its operator certificate.
    pub fn new(cluster: &LocalCluster) -> Self {
        let f = &cluster.file;
        let tls = TlsFiles {
            ca_cert: cluster.dir.join(&f.ca_cert),
            cert: cluster.dir.join(&f.operator.cert),
            key: cluster.dir.join(&f.operator.key),
        };
        let nodes = f
            .nodes
            .iter()
            .map(|n| {
                let conn = Connection {
                    endpoint: n.endpoint.clone(),
                    server_name: pki::server_name(Role::Node, &n.id),
                    tls: tls.clone(),
                    timeout: STATUS_TIMEOUT,
                    cluster: None,
                };
                (n.id.clone(), conn)
            })
            .collect();
        Self { nodes }
    }

    /// Every node's status, asked concurrently.
    pub async fn health(&self) -> Vec<NodeHealth> {
        let calls = self.nodes.iter().map(|(id, conn)| async move {
            match client::node_status(conn).await {
                Ok(s) => NodeHealth {
                    node: id.clone(),
                    healthy: Some(s.healthy),
                    unhealthy_reason: s.unhealthy_reason.clone(),
                    sessions_in_flight: Some(s.sessions_in_flight),
                    store: s.store.as_ref().map(StoreCountersView::from),
                    error: None,
                },
                Err(e) => NodeHealth {
                    node: id.clone(),
                    healthy: None,
                    unhealthy_reason: String::new(),
                    sessions_in_flight: None,
                    store: None,
                    error: Some(e.to_string()),
                },
            }
        });
        futures::future::join_all(calls).await
    }

    /// Store counters by node (nodes that did not report them are left out).
    pub async fn counters(&self) -> BTreeMap<String, StoreCountersView> {
        self.health()
            .await
            .into_iter()
            .filter_map(|h| h.store.map(|s| (h.node, s)))
            .collect()
    }
}

/// Activity between two counter readings `secs` apart; `None` when no node
/// reported counters both times (or a counter went backwards: a restart).
pub fn store_delta(
    before: &BTreeMap<String, StoreCountersView>,
    after: &BTreeMap<String, StoreCountersView>,
    secs: f64,
) -> Option<StoreDelta> {
    let mut d = StoreDelta::default();
    for (node, a) in after {
        let Some(b) = before.get(node) else { continue };
        if a.commits < b.commits || a.steps < b.steps {
            continue;
        }
        d.nodes += 1;
        d.commits += a.commits - b.commits;
        d.steps += a.steps - b.steps;
        d.failed_commits += a.failed_commits.saturating_sub(b.failed_commits);
        d.refused_busy += a.refused_busy.saturating_sub(b.refused_busy);
        d.max_batch = d.max_batch.max(a.max_batch);
    }
    if d.nodes == 0 {
        return None;
    }
    d.commits_per_sec = if secs > 0.0 {
        d.commits as f64 / secs
    } else {
        0.0
    };
    d.mean_batch = if d.commits > 0 {
        d.steps as f64 / d.commits as f64
    } else {
        0.0
    };
    Some(d)
}

/// Resident memory of every daemon of `cluster` (nodes, then the coordinator).
pub fn rss(cluster: &LocalCluster) -> Vec<DaemonRss> {
    cluster
        .file
        .nodes
        .iter()
        .map(|n| n.id.as_str())
        .chain([COORDINATOR_ID])
        .filter_map(|name| {
            let pid = cluster.pid(name)?;
            Some(DaemonRss {
                name: name.to_string(),
                pid,
                rss_kib: rss_kib(pid),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(commits: u64, steps: u64, max_batch: u64) -> StoreCountersView {
        StoreCountersView {
            commits,
            steps,
            max_batch,
            ..StoreCountersView::default()
        }
    }

    #[test]
    fn store_delta_sums_nodes_and_skips_restarted_ones() {
        let before = BTreeMap::from([
            ("n1".to_string(), c(10, 20, 2)),
            ("n2".to_string(), c(50, 50, 1)),
        ]);
        let after = BTreeMap::from([
            ("n1".to_string(), c(20, 60, 8)),
            // n2 restarted: its counters began again.
            ("n2".to_string(), c(3, 3, 1)),
            ("n3".to_string(), c(1, 1, 1)),
        ]);
        let d = store_delta(&before, &after, 2.0).expect("n1 counted");
        assert_eq!((d.nodes, d.commits, d.steps, d.max_batch), (1, 10, 40, 8));
        assert!((d.commits_per_sec - 5.0).abs() < 1e-9);
        assert!((d.mean_batch - 4.0).abs() < 1e-9);
        assert!(store_delta(&BTreeMap::new(), &after, 1.0).is_none());
    }
}
