//! What the local cluster is made of: its nodes and regions, its key
//! groups, the ids of its principals, and the withdrawal policy it enforces;
//! `local_plan` turns them into the plan its files are laid out from.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use permafrost_core::ceremony::RegistryConfig;
use permafrost_core::Tier;
use permafrostctl::pki;

use crate::layout::{ClusterPlan, CoordinatorSpec, GroupSpec, NodeSpec, SealerSpec};

/// A signer node of the local cluster.
#[derive(Clone, Copy, Debug)]
pub struct NodePlan {
    /// Node id.
    pub id: &'static str,
    /// Region (failure domain).
    pub region: &'static str,
}

/// The five nodes, spread over three regions.
pub const NODES: [NodePlan; 5] = [
    NodePlan {
        id: "n1",
        region: "eu-west",
    },
    NodePlan {
        id: "n2",
        region: "eu-west",
    },
    NodePlan {
        id: "n3",
        region: "us-east",
    },
    NodePlan {
        id: "n4",
        region: "us-east",
    },
    NodePlan {
        id: "n5",
        region: "ap-south",
    },
];

/// A key group the cluster creates once it is up.
#[derive(Clone, Copy, Debug)]
pub struct GroupPlan {
    /// Group name.
    pub name: &'static str,
    /// Tier.
    pub tier: Tier,
    /// Signers needed.
    pub threshold: u32,
    /// Member node ids.
    pub members: &'static [&'static str],
}

/// A warm group across all three regions and a cold group on every node.
pub const GROUPS: [GroupPlan; 2] = [
    GroupPlan {
        name: "warm-1",
        tier: Tier::Warm,
        threshold: 2,
        members: &["n1", "n3", "n5"],
    },
    GroupPlan {
        name: "cold-1",
        tier: Tier::Cold,
        threshold: 3,
        members: &["n1", "n2", "n3", "n4", "n5"],
    },
];

/// [`GROUPS`] as a layout plan's groups.
pub fn default_groups() -> Vec<GroupSpec> {
    GROUPS
        .iter()
        .map(|g| GroupSpec {
            name: g.name.into(),
            tier: g.tier,
            threshold: g.threshold,
            members: g.members.iter().map(|m| m.to_string()).collect(),
        })
        .collect()
}

/// The only destination cold-1's policy allows in a message-scheme cluster
/// (chaos runs): a label standing for the warm wallet.
pub const WARM_WALLET_ADDRESS: &str = "bc1qpermafrostwarmwalletdeposit0demo0addr";

/// The network of the local cluster's taproot groups.
pub const NETWORK: permafrost_core::taproot::Network = permafrost_core::taproot::Network::Regtest;

/// BIP341's NUMS point H, x-only: no one knows its discrete logarithm.
const NUMS_H: &str = "50929b74c1a04954b78b4b6035e97a5e078a5a0f28ec96d547bfee9ace803ac0";

/// cold-1's allowlist until warm-1 exists: a P2TR output whose key is the
/// NUMS point H, which no one can spend from (so nothing sent there is
/// anyone's). [`super::LocalCluster::create_groups`] replaces it with
/// warm-1's own address once warm-1 is made, and restarts the daemons with
/// that policy, as operators would.
pub fn cold_allowlist_placeholder() -> String {
    use bitcoin::key::{TweakedPublicKey, XOnlyPublicKey};
    use std::str::FromStr;
    match XOnlyPublicKey::from_str(NUMS_H) {
        Ok(h) => bitcoin::Address::p2tr_tweaked(
            TweakedPublicKey::dangerous_assume_tweaked(h),
            NETWORK.to_bitcoin(),
        )
        .to_string(),
        // The constant is a valid point; an empty allowlist entry would make
        // the policy fail to load, loudly.
        Err(_) => String::new(),
    }
}

/// Largest fee a warm-1 transaction may pay (sat), and its fee rate cap (sat/vB).
pub const WARM_MAX_FEE_SATS: u64 = 100_000;
/// warm-1's fee-rate cap, sat/vB.
pub const WARM_MAX_FEE_RATE: u64 = 200;

/// Coordinator id.
pub const COORDINATOR_ID: &str = "coord-1";

/// Custody-service principal.
pub const CUSTODY_ID: &str = "custody-1";

/// Operator principal.
pub const OPERATOR_ID: &str = "operator-1";

/// Registered approvers (cold withdrawals need two of them).
pub const APPROVERS: [&str; 3] = ["approver-1", "approver-2", "approver-3"];

/// Largest warm-1 withdrawal; above 1 BTC it needs one approval.
pub const WARM_PER_REQUEST_MAX_SATS: u128 = 200_000_000;

/// cold-1's time-lock: short so the demo (and a local `up` cluster) shows it in seconds.
pub const COLD_TIME_LOCK_SECS: u64 = 3;

/// Choices [`LocalCluster::create_with`] offers beyond the defaults.
#[derive(Clone, Debug, Default)]
pub struct CreateOptions {
    /// Node id → `host:port` written as that node's endpoint in the manifest, so the
    /// coordinator dials it (e.g. a fault-injecting proxy) instead of the node itself.
    /// The node still listens on its own port; the TLS server name is unchanged.
    pub manifest_endpoints: BTreeMap<String, String>,
    /// Make warm-1 and cold-1 `message` groups (opaque payloads) instead of
    /// taproot ones: the chaos runs exercise faults, not transactions.
    pub message_groups: bool,
    /// Where the cluster CA (its private key) goes: outside the cluster
    /// directory for `up`, whose directory is what clients are handed. `None`
    /// keeps it in `<dir>/ca`, for throwaway clusters whose harness issues
    /// more certificates (chaos) and which are deleted whole.
    pub offline_ca: Option<PathBuf>,
}

/// Where `up` puts the CA of a cluster in `dir`: a sibling directory
/// `<dir>-ca`, never inside the directory handed to clients.
pub fn offline_ca_dir(dir: &Path) -> PathBuf {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "cluster".into());
    dir.with_file_name(format!("{name}-ca"))
}

/// Nodes, policy and coordinator settings of a cluster other than the default
/// five-node one: `bench` starts ten or a hundred nodes with its own policy.
#[derive(Clone, Debug, Default)]
pub struct Layout {
    /// (id, region) of every signer node; empty means [`NODES`].
    pub nodes: Vec<(String, String)>,
    /// Policy text written instead of the default warm-1/cold-1 policy.
    pub policy: Option<String>,
    /// The coordinator's `round_timeout_ms` (its own default when `None`);
    /// a 67-of-100 ceremony round takes longer than the default on 2 cores.
    pub round_timeout_ms: Option<u64>,
}

/// The public keys of a local cluster's principals, whose private keys it
/// holds in its directory.
pub(super) struct PrincipalKeys {
    /// The custody service's request-signing key, hex.
    pub(super) custody_public: String,
    /// (approver id, public key hex) of every approver.
    pub(super) approver_keys: Vec<(String, String)>,
    /// The operator registry every daemon holds.
    pub(super) operators: RegistryConfig,
}

/// The local cluster's ports on 127.0.0.1: every node's, then the coordinator's.
pub(super) struct LocalPorts {
    /// gRPC.
    pub(super) grpc: Vec<u16>,
    /// Prometheus metrics.
    pub(super) metrics: Vec<u16>,
}

/// The local cluster as a layout: `nodes` (id, region) each in `nodes/<id>`
/// with a passphrase file of its own, the coordinator in `coordinator/`,
/// every daemon on 127.0.0.1 at `ports`, [`GROUPS`] to create, and the
/// default policy unless `layout` gives one.
pub(super) fn local_plan(
    nodes: &[(String, String)],
    ports: &LocalPorts,
    options: &CreateOptions,
    layout: &Layout,
    keys: &PrincipalKeys,
) -> ClusterPlan {
    let local = |port: u16| SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let policy = match &layout.policy {
        Some(text) => text.clone(),
        None => policy_text(
            &keys.approver_keys,
            options.message_groups,
            &cold_allowlist_placeholder(),
        ),
    };
    ClusterPlan {
        ca_name: "Permafrost local cluster CA".into(),
        // The CA key stays in its own directory; for `up` outside the cluster
        // directory (whoever holds the client files must not mint any role),
        // and in production offline.
        ca_dir: options.offline_ca.clone(),
        daemon_cert: pki::Extra {
            dns: vec!["localhost".into()],
            ips: vec![Ipv4Addr::LOCALHOST.into()],
            days: Some(30),
        },
        nodes: nodes
            .iter()
            .enumerate()
            .map(|(i, (id, region))| NodeSpec {
                endpoint: options.manifest_endpoints.get(id).cloned(),
                metrics_listen: Some(local(ports.metrics[i])),
                ..NodeSpec::new(
                    id.as_str(),
                    region.as_str(),
                    Path::new("nodes").join(id),
                    local(ports.grpc[i]),
                    SealerSpec::fast_passphrase_file("passphrase"),
                )
            })
            .collect(),
        coordinator: Some(CoordinatorSpec {
            id: COORDINATOR_ID.into(),
            dir: "coordinator".into(),
            listen: local(ports.grpc[nodes.len()]),
            metrics_listen: Some(local(ports.metrics[nodes.len()])),
            round_timeout_ms: layout.round_timeout_ms,
            health_interval_ms: 500,
        }),
        groups: default_groups(),
        policy,
        custody_keys: vec![keys.custody_public.clone()],
        operators: Some(keys.operators.clone()),
    }
}

/// The withdrawal policy every node (and the coordinator, to fail fast)
/// enforces: taproot groups on regtest whose cold allowlist is
/// `warm_address`, or with `message_groups` the opaque-payload groups.
pub(super) fn policy_text(
    approver_keys: &[(String, String)],
    message_groups: bool,
    warm_address: &str,
) -> String {
    if !message_groups {
        return taproot_policy_text(approver_keys, warm_address);
    }
    let approvers: String = approver_keys
        .iter()
        .map(|(id, key)| format!("{id} = \"{key}\"\n"))
        .collect();
    format!(
        r#"# Withdrawal policy of the local Permafrost cluster (written by permafrost-sim).

[approvers]
{approvers}
# Warm: automated up to 1 BTC per request, one approval up to 2 BTC, nothing
# above 2 BTC per request; 5 BTC per rolling 24 h per node.
[groups.warm-1]
tier = "warm"
max_lifetime_secs = 86400

[groups.warm-1.assets.BTC]
per_request_max = "{WARM_PER_REQUEST_MAX_SATS}"
daily_max = "500000000"
bands = [{{ up_to = "100000000", approvals = 0 }}]
approvals_above = 1

# Cold: two distinct approvers, a time-lock, and only to the warm wallet.
# The time-lock is {COLD_TIME_LOCK_SECS} s so a local cluster can show it in
# seconds; a production cold tier would wait hours (docs/policy.md).
[groups.cold-1]
tier = "cold"
time_lock_secs = {COLD_TIME_LOCK_SECS}
max_lifetime_secs = 172800
min_approvals = 2
allowlist = ["{WARM_WALLET_ADDRESS}"]

[groups.cold-1.assets.BTC]
per_request_max = "10000000000"
daily_max = "10000000000"
approvals_above = 2
"#
    )
}

fn taproot_policy_text(approver_keys: &[(String, String)], warm_address: &str) -> String {
    let approvers: String = approver_keys
        .iter()
        .map(|(id, key)| format!("{id} = \"{key}\"\n"))
        .collect();
    let network = NETWORK.as_str();
    format!(
        r#"# Withdrawal policy of the local Permafrost cluster (written by permafrost-sim).
# Both groups hold bitcoin (regtest): every node decodes each withdrawal's
# PSBT and applies these limits to what it pays (payments + fee).

[approvers]
{approvers}
# Warm: automated up to 1 BTC per request, one approval up to 2 BTC, nothing
# above 2 BTC per request; 5 BTC per rolling 24 h.
[groups.warm-1]
tier = "warm"
scheme = "taproot"
network = "{network}"
max_fee_sat = {WARM_MAX_FEE_SATS}
max_fee_rate_sat_vb = {WARM_MAX_FEE_RATE}
max_lifetime_secs = 86400

[groups.warm-1.assets.BTC]
per_request_max = "{WARM_PER_REQUEST_MAX_SATS}"
daily_max = "500000000"
bands = [{{ up_to = "100000000", approvals = 0 }}]
approvals_above = 1

# Cold: two distinct approvers, a time-lock, and only to warm-1's own address.
# The time-lock is {COLD_TIME_LOCK_SECS} s so a local cluster can show it in
# seconds; a production cold tier would wait hours (docs/policy.md).
[groups.cold-1]
tier = "cold"
scheme = "taproot"
network = "{network}"
max_fee_sat = 50000
max_fee_rate_sat_vb = 100
time_lock_secs = {COLD_TIME_LOCK_SECS}
max_lifetime_secs = 172800
min_approvals = 2
allowlist = ["{warm_address}"]

[groups.cold-1.assets.BTC]
per_request_max = "10000000000"
daily_max = "10000000000"
approvals_above = 2
"#
    )
}
