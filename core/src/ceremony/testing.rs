//! Fixed operator keys and approved specs for the unit tests of this crate.

use std::collections::BTreeMap;

use ed25519_dalek::SigningKey;

use super::*;

/// Test operator `i` (1-based): id `op-<i>` and a fixed key.
pub(crate) fn operator(i: u8) -> (String, SigningKey) {
    (format!("op-{i}"), SigningKey::from_bytes(&[40 + i; 32]))
}

/// Three registered operators, `k` of them needed for everything.
pub(crate) fn registry(k: u16) -> OperatorRegistry {
    RegistryConfig {
        default_quorum: k,
        keys: (1..=3)
            .map(|i| {
                let (id, key) = operator(i);
                (id, hex::encode(key.verifying_key().as_bytes()))
            })
            .collect(),
        quorum: BTreeMap::new(),
    }
    .build()
    .expect("test registry")
}

/// A create spec valid for an hour from `now`.
pub(crate) fn create_spec(
    group: &GroupName,
    tier: Tier,
    members: &[NodeId],
    t: u16,
) -> LifecycleSpec {
    let now = crate::unix_now();
    LifecycleSpec {
        version: SPEC_VERSION,
        operation: Operation::Create,
        proposal_id: "p-1".into(),
        group: group.clone(),
        tier,
        epoch: 0,
        group_key: None,
        members: members.to_vec(),
        threshold: t,
        subject: None,
        replacement: None,
        created_at: now,
        expires_at: now + 3600,
        registry: None,
    }
}

/// `spec` approved by operators `1..=n`.
pub(crate) fn signed_by(spec: LifecycleSpec, n: u8) -> SignedSpec {
    let approvals = (1..=n)
        .map(|i| {
            let (id, key) = operator(i);
            approve(&spec, &id, &key)
        })
        .collect();
    SignedSpec { spec, approvals }
}

/// `spec`, approved by two of three operators, as newcomer `me` is authorized for it.
pub(crate) fn newcomer(spec: &LifecycleSpec, me: &NodeId) -> AuthorizedCeremony {
    verify_quorum(
        &signed_by(spec.clone(), 2),
        &registry(2),
        crate::unix_now(),
        0,
    )
    .and_then(|q| q.as_newcomer(me, None))
    .expect("authorized newcomer")
}

/// `spec`, approved by two of three operators, as member `me` holding `held` is authorized for it.
pub(crate) fn member(spec: &LifecycleSpec, me: &NodeId, held: &HeldGroup) -> AuthorizedCeremony {
    verify_quorum(
        &signed_by(spec.clone(), 2),
        &registry(2),
        crate::unix_now(),
        0,
    )
    .and_then(|q| q.at_current_epoch(me, held))
    .expect("authorized member")
}

/// `spec`, approved by two of three operators, as a member that applied it already.
pub(crate) fn applied(spec: &LifecycleSpec, held: &HeldGroup) -> AuthorizedCeremony {
    verify_quorum(
        &signed_by(spec.clone(), 2),
        &registry(2),
        crate::unix_now(),
        0,
    )
    .and_then(|q| q.already_applied(held))
    .expect("authorized after applying")
}
