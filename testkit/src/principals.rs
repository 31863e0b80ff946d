//! The test cluster's fixed principals and their policy: approvers alice,
//! bob and carol, operators `op-1` to `op-3` (two needed for any ceremony),
//! and the default withdrawal policy every test node enforces.

use ed25519_dalek::SigningKey;
use permafrost_core::ceremony::{LifecycleSpec, RegistryConfig, SignedSpec};
use permafrost_proto as pb;

/// Fixed approver keys of the test registry: alice, bob, carol.
pub fn approver(name: &str) -> SigningKey {
    let seed = match name {
        "alice" => 11u8,
        "bob" => 12,
        "carol" => 13,
        other => panic!("no test approver {other}"),
    };
    SigningKey::from_bytes(&[seed; 32])
}

/// Fixed operator keys of the test registry: `op-1`, `op-2`, `op-3`; every
/// node (and the coordinator) needs two of them for any ceremony.
pub fn operator_key(i: u8) -> SigningKey {
    assert!((1..=3).contains(&i), "no test operator op-{i}");
    SigningKey::from_bytes(&[60 + i; 32])
}

/// Approvals every lifecycle operation needs in the test registry.
pub const OPERATOR_QUORUM: u16 = 2;

/// The test operator registry (`[operators]` of every node and the coordinator).
pub fn operator_registry() -> RegistryConfig {
    RegistryConfig {
        default_quorum: OPERATOR_QUORUM,
        keys: (1..=3)
            .map(|i| {
                (
                    format!("op-{i}"),
                    hex::encode(operator_key(i).verifying_key().as_bytes()),
                )
            })
            .collect(),
        quorum: Default::default(),
    }
}

/// `spec` approved by test operators `ops` (e.g. `&[1, 2]`).
pub fn approved(spec: &LifecycleSpec, ops: &[u8]) -> SignedSpec {
    let mut signed = SignedSpec {
        spec: spec.clone(),
        approvals: Vec::new(),
    };
    for i in ops {
        signed.add_approval(permafrost_core::ceremony::approve(
            spec,
            &format!("op-{i}"),
            &operator_key(*i),
        ));
    }
    signed
}

/// The wire form of an approved spec, as a ceremony request carries it.
pub fn wire(signed: &SignedSpec) -> pb::SignedLifecycleSpec {
    signed.into()
}

/// The allowlisted destination of the test cold group.
pub const WARM_WALLET: &str = "bc1qwarmwalletdestination";

/// A policy for the groups tests use: `warm-1`/`warm-2` (0.5 BTC needs no approval,
/// above 1 BTC one, per-request 10 BTC, daily 20 BTC), `hot-1`, and `cold-1`
/// (two approvals, allowlist = [`WARM_WALLET`], no time-lock).
pub fn default_policy() -> String {
    let key = |n: &str| hex::encode(approver(n).verifying_key().as_bytes());
    let warm = |name: &str, tier: &str| {
        format!(
            r#"
[groups.{name}]
tier = "{tier}"
max_lifetime_secs = 86400
[groups.{name}.assets.BTC]
per_request_max = "1000000000"
daily_max = "2000000000"
bands = [{{ up_to = "100000000", approvals = 0 }}]
approvals_above = 1
"#
        )
    };
    format!(
        r#"
[approvers]
alice = "{}"
bob = "{}"
carol = "{}"
{}{}{}
[groups.cold-1]
tier = "cold"
max_lifetime_secs = 604800
min_approvals = 2
allowlist = ["{WARM_WALLET}"]
[groups.cold-1.assets.BTC]
per_request_max = "100000000000"
daily_max = "100000000000"
"#,
        key("alice"),
        key("bob"),
        key("carol"),
        warm("warm-1", "warm"),
        warm("warm-2", "warm"),
        warm("hot-1", "hot"),
    )
}
