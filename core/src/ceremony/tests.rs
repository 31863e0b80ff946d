//! Lifecycle specs: the encoding is canonical and pinned, and a quorum is k
//! distinct registered operators signing exactly this spec (X5); the spec
//! must fit what the node holds (epoch, key, membership; X7).

use std::collections::BTreeMap;

use ed25519_dalek::SigningKey;
use proptest::prelude::*;

use super::testing::*;
use super::*;

fn node(s: &str) -> NodeId {
    NodeId::new(s).expect("id")
}

fn group() -> GroupName {
    GroupName::new("warm-1").expect("name")
}

fn members() -> Vec<NodeId> {
    vec![node("n1"), node("n2"), node("n3")]
}

fn held(epoch: u64) -> HeldGroup {
    HeldGroup {
        epoch,
        group_key: vec![2; 33],
        members: members(),
        removed: Vec::new(),
        threshold: 2,
        tier: Tier::Warm,
        last_spec: None,
    }
}

/// The worked example of docs/ceremony-spec.md.
fn example() -> LifecycleSpec {
    LifecycleSpec {
        version: 1,
        operation: Operation::Repair,
        proposal_id: "repair-n3-1".into(),
        group: group(),
        tier: Tier::Warm,
        epoch: 3,
        group_key: Some(vec![2; 33]),
        members: vec![node("n1"), node("n2"), node("n4")],
        threshold: 2,
        subject: Some(node("n3")),
        replacement: Some(node("n4")),
        created_at: 1_700_000_000,
        expires_at: 1_700_086_400,
        registry: None,
    }
}

fn repair_of_n3(epoch: u64) -> LifecycleSpec {
    let now = crate::unix_now();
    LifecycleSpec {
        epoch,
        created_at: now,
        expires_at: now + 600,
        ..example()
    }
}

#[test]
fn encoding_is_pinned_by_the_documented_example() {
    let spec = example();
    let enc = spec.encode();
    assert!(enc.starts_with(b"PERMAFROST/CEREMONY-SPEC\x00\x01\x01\x00\x00\x00\x01\x03"));
    // docs/ceremony-spec.md gives the same digest for the same spec.
    assert_eq!(
        spec.digest().to_hex(),
        "46b49e0e4515dd25ef6ae202535f89562ec65eeeace62fec5344603fbfbc356a"
    );
}

proptest! {
    #[test]
    fn distinct_specs_never_share_an_encoding(
        a in "[a-z]{1,4}", b in "[a-z]{1,4}", epoch in 0u64..3, t in 2u16..4
    ) {
        // Moving bytes between adjacent fields must change the encoding.
        let one = LifecycleSpec { proposal_id: a.clone(), group: GroupName::new(b.clone()).expect("name"), epoch, threshold: t, ..example() };
        let other = LifecycleSpec { proposal_id: format!("{a}{b}"), group: GroupName::new("x").expect("name"), epoch, threshold: t, ..example() };
        prop_assert_ne!(one.encode(), other.encode());
        let mut shifted = one.clone();
        shifted.members = vec![node("n1n2"), node("n4")];
        prop_assert_ne!(one.digest(), shifted.digest());
    }
}

#[test]
fn x5_one_operator_is_not_a_quorum() {
    let spec = repair_of_n3(3);
    let err = verify_quorum(&signed_by(spec, 1), &registry(2), crate::unix_now(), 0)
        .expect_err("one say-so");
    assert!(err.to_string().contains("1 of 2 approvals"), "{err}");
}

#[test]
fn x5_the_same_operator_twice_counts_once() {
    let spec = repair_of_n3(3);
    let (id, key) = operator(1);
    let twice = SignedSpec {
        approvals: vec![approve(&spec, &id, &key), approve(&spec, &id, &key)],
        spec,
    };
    let err = verify_quorum(&twice, &registry(2), crate::unix_now(), 0).expect_err("twice");
    assert!(err.to_string().contains("approved twice"), "{err}");
}

#[test]
fn x5_unregistered_or_misattributed_approvals_do_not_count() {
    let spec = repair_of_n3(3);
    let stranger = SigningKey::from_bytes(&[99; 32]);
    let (id1, key1) = operator(1);
    let (id2, _) = operator(2);
    let signed = SignedSpec {
        approvals: vec![
            approve(&spec, &id1, &key1),
            approve(&spec, "mallory", &stranger),
            // op-1's key signing as op-2: the id is in the signed message.
            approve(&spec, &id2, &key1),
        ],
        spec,
    };
    let err = verify_quorum(&signed, &registry(2), crate::unix_now(), 0).expect_err("one valid");
    let msg = err.to_string();
    assert!(
        msg.contains("not a registered operator") && msg.contains("op-2's signature"),
        "{msg}"
    );
}

#[test]
fn x5_approvals_of_another_spec_do_not_count() {
    let mut signed = signed_by(repair_of_n3(3), 2);
    signed.spec.replacement = Some(node("n5"));
    signed.spec.members = vec![node("n1"), node("n2"), node("n5")];
    let err = verify_quorum(&signed, &registry(2), crate::unix_now(), 0).expect_err("edited");
    assert!(err.to_string().contains("0 of 2"), "{err}");
}

#[test]
fn a_withdrawal_approval_is_not_a_ceremony_approval() {
    let spec = repair_of_n3(3);
    let digest = spec.digest();
    let withdrawal = crate::policy::approval_message(
        &crate::withdrawal::RequestDigest(digest.0),
        "op-1",
        spec.expires_at,
    );
    assert_ne!(withdrawal, approval_message(&digest, "op-1"));
}

#[test]
fn expired_and_future_dated_specs_are_refused() {
    let now = crate::unix_now();
    let mut spec = repair_of_n3(3);
    spec.created_at = now - 700;
    spec.expires_at = now - 100;
    let err =
        verify_quorum(&signed_by(spec.clone(), 2), &registry(2), now, 60).expect_err("expired");
    assert!(err.to_string().contains("expired"), "{err}");
    verify_quorum(&signed_by(spec, 2), &registry(2), now, 120).expect("within the skew");
    let mut spec = repair_of_n3(3);
    spec.created_at = now + 1000;
    spec.expires_at = now + 2000;
    let err = verify_quorum(&signed_by(spec, 2), &registry(2), now, 60).expect_err("future");
    assert!(err.to_string().contains("future"), "{err}");
}

#[test]
fn shapes_are_checked_per_operation() {
    let base = example();
    let bad = [
        LifecycleSpec {
            version: 2,
            ..base.clone()
        },
        LifecycleSpec {
            operation: Operation::Create,
            ..base.clone()
        },
        LifecycleSpec {
            epoch: 0,
            ..base.clone()
        },
        LifecycleSpec {
            group_key: None,
            ..base.clone()
        },
        LifecycleSpec {
            group_key: Some(vec![2; 32]),
            ..base.clone()
        },
        LifecycleSpec {
            subject: Some(node("n2")),
            ..base.clone()
        },
        LifecycleSpec {
            replacement: Some(node("n9")),
            ..base.clone()
        },
        LifecycleSpec {
            threshold: 4,
            ..base.clone()
        },
        LifecycleSpec {
            threshold: 1,
            ..base.clone()
        },
        LifecycleSpec {
            members: vec![node("n1"), node("n1"), node("n4")],
            ..base.clone()
        },
        LifecycleSpec {
            expires_at: base.created_at,
            ..base.clone()
        },
        LifecycleSpec {
            expires_at: base.created_at + MAX_SPEC_LIFETIME_SECS + 1,
            ..base.clone()
        },
        LifecycleSpec {
            proposal_id: "has space".into(),
            ..base.clone()
        },
        // A change-registry must name the new registry.
        LifecycleSpec {
            operation: Operation::ChangeRegistry,
            ..base.clone()
        },
    ];
    for spec in bad {
        assert!(spec.validate().is_err(), "{spec:?} must be refused");
    }
    base.validate().expect("the example is valid");
}

#[test]
fn registry_config_errors_name_the_field() {
    let key = |i| hex::encode(operator(i).1.verifying_key().as_bytes());
    let config = |keys: Vec<(&str, String)>, k: u16| RegistryConfig {
        default_quorum: k,
        keys: keys.into_iter().map(|(a, b)| (a.to_string(), b)).collect(),
        quorum: BTreeMap::new(),
    };
    let cases = [
        (
            config(vec![("op-1", key(1)), ("op-2", key(1))], 2),
            "operators.keys.op-2",
        ),
        (
            config(vec![("op-1", key(1)), ("op-2", "zz".into())], 2),
            "operators.keys.op-2",
        ),
        (
            config(vec![("op 1", key(1)), ("op-2", key(2))], 2),
            "operators.keys.op 1",
        ),
        (config(vec![("op-1", key(1))], 1), "operators.keys"),
        (
            config(vec![("op-1", key(1)), ("op-2", key(2))], 3),
            "operators.default_quorum",
        ),
        (
            config(vec![("op-1", key(1)), ("op-2", key(2))], 1),
            "operators.default_quorum",
        ),
    ];
    for (c, field) in cases {
        let err = c.build().expect_err("refused").to_string();
        assert!(err.contains(field), "{err} should name {field}");
    }
    let mut ok = config(
        vec![("op-1", key(1)), ("op-2", key(2)), ("op-3", key(3))],
        2,
    );
    ok.quorum.insert(Operation::Repair, 4);
    assert!(ok
        .build()
        .expect_err("4 of 3")
        .to_string()
        .contains("operators.quorum.repair"));
    ok.quorum.insert(Operation::Repair, 3);
    let registry = ok.build().expect("valid");
    assert_eq!(registry.quorum(Operation::Repair), 3);
    assert_eq!(registry.quorum(Operation::Create), 2);
    let parsed: Result<RegistryConfig, _> =
        toml::from_str("default_quorum = 2\n[keys]\n[quorum]\nreshape = 2\n");
    assert!(parsed
        .expect_err("unknown operation")
        .to_string()
        .contains("reshape"));
}

#[test]
fn x5_shadow_group_a_holder_refuses_a_create_of_its_group_name() {
    let spec = create_spec(&group(), Tier::Warm, &[node("n2"), node("n4")], 2);
    let q = verify_quorum(&signed_by(spec, 2), &registry(2), crate::unix_now(), 0).expect("quorum");
    let err = q
        .as_newcomer(&node("n2"), Some(&held(1)))
        .expect_err("name held");
    assert!(err.to_string().contains("never reused"), "{err}");
}

#[test]
fn x7_a_spec_for_another_epoch_or_key_is_refused() {
    let q = |spec: LifecycleSpec| {
        verify_quorum(&signed_by(spec, 2), &registry(2), crate::unix_now(), 0).expect("quorum")
    };
    let err = q(repair_of_n3(2))
        .at_current_epoch(&node("n1"), &held(3))
        .expect_err("old epoch");
    assert!(err.to_string().contains("epoch 2"), "{err}");
    let mut other_key = repair_of_n3(3);
    other_key.group_key = Some(vec![3; 33]);
    let err = q(other_key)
        .at_current_epoch(&node("n1"), &held(3))
        .expect_err("other key");
    assert!(err.to_string().contains("another key"), "{err}");
    q(repair_of_n3(3))
        .at_current_epoch(&node("n1"), &held(3))
        .expect("current");
}

#[test]
fn x7_a_node_never_takes_part_in_dropping_itself() {
    let spec = repair_of_n3(3);
    let q = verify_quorum(&signed_by(spec, 2), &registry(2), crate::unix_now(), 0).expect("quorum");
    let err = q.at_current_epoch(&node("n3"), &held(3)).expect_err("self");
    assert!(err.to_string().contains("dropping itself"), "{err}");
}

#[test]
fn x7_a_repair_must_follow_from_the_members_record() {
    // The record lists n1, n2, n3; a spec that also swaps n2 out is refused.
    let mut spec = repair_of_n3(3);
    spec.members = vec![node("n1"), node("n5"), node("n4")];
    let q = verify_quorum(&signed_by(spec, 2), &registry(2), crate::unix_now(), 0).expect("quorum");
    let err = q
        .at_current_epoch(&node("n1"), &held(3))
        .expect_err("two changes");
    assert!(err.to_string().contains("does not follow"), "{err}");
}

#[test]
fn applied_needs_this_very_spec_at_the_next_epoch() {
    let spec = repair_of_n3(3);
    let mut after = held(4);
    after.members = spec.members.clone();
    after.last_spec = Some(spec.digest());
    applied(&spec, &after);
    let q = verify_quorum(&signed_by(spec, 2), &registry(2), crate::unix_now(), 0).expect("quorum");
    let mut other = after.clone();
    other.last_spec = Some(SpecDigest([0; 32]));
    assert!(q.already_applied(&other).is_err());
}

#[test]
fn spec_files_round_trip_through_json() {
    let signed = signed_by(example(), 2);
    let text = serde_json::to_string_pretty(&signed).expect("json");
    let back: SignedSpec = serde_json::from_str(&text).expect("parse");
    assert_eq!(back, signed);
    assert!(text.contains("\"operation\": \"repair\""), "{text}");
}
