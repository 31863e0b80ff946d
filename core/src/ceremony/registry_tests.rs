//! Change-registry specs (X5): the new registry is part of what operators
//! sign, bound to the registry it replaces and to the next sequence, and
//! every other spec's encoding is what it was before the field existed.

use std::collections::BTreeMap;

use super::testing::*;
use super::*;

fn node(s: &str) -> NodeId {
    NodeId::new(s).expect("id")
}

fn config(ids: &[u8], k: u16) -> RegistryConfig {
    RegistryConfig {
        default_quorum: k,
        keys: ids
            .iter()
            .map(|i| {
                let (id, key) = operator(*i);
                (id, hex::encode(key.verifying_key().as_bytes()))
            })
            .collect(),
        quorum: BTreeMap::new(),
    }
}

fn change_spec(seq: u64, previous: [u8; 32], to: RegistryConfig) -> LifecycleSpec {
    LifecycleSpec {
        version: SPEC_VERSION,
        operation: Operation::ChangeRegistry,
        proposal_id: "change-registry-1".into(),
        group: GroupName::new("warm-1").expect("name"),
        tier: Tier::Warm,
        epoch: 2,
        group_key: Some(vec![2; 33]),
        members: vec![node("n1"), node("n2"), node("n3")],
        threshold: 2,
        subject: None,
        replacement: None,
        created_at: 1_700_000_000,
        expires_at: 1_700_086_400,
        registry: Some(RegistryChange {
            seq,
            previous: previous.to_vec(),
            registry: to,
        }),
    }
}

#[test]
fn x5_the_new_registry_is_in_the_signed_encoding() {
    let current = registry(2).hash();
    let spec = change_spec(1, current, config(&[1, 2, 4], 2));
    spec.validate().expect("valid");
    // Field 13 follows field 12; each part of the change moves the digest.
    let bytes = spec.encode();
    let change = spec.registry.as_ref().expect("change").encode();
    let mut tail = vec![13u8];
    tail.extend_from_slice(&(change.len() as u32).to_be_bytes());
    tail.extend_from_slice(&change);
    assert!(bytes.ends_with(&tail));
    let mut other = spec.clone();
    other.registry.as_mut().expect("change").registry = config(&[1, 2, 5], 2);
    assert_ne!(spec.digest(), other.digest(), "another operator");
    let mut other = spec.clone();
    other
        .registry
        .as_mut()
        .expect("change")
        .registry
        .default_quorum = 3;
    assert_ne!(spec.digest(), other.digest(), "another quorum");
    let mut other = spec.clone();
    other.registry.as_mut().expect("change").seq = 2;
    assert_ne!(spec.digest(), other.digest(), "another sequence");
    // Without a registry (every other operation) there is no field 13: the
    // encoding is fields 1 to 12 as before.
    let mut without = spec.clone();
    without.registry = None;
    assert_eq!(&without.encode()[..], &bytes[..bytes.len() - tail.len()]);
}

#[test]
fn change_registry_shapes_are_checked() {
    let current = registry(2).hash();
    let good = change_spec(1, current, config(&[1, 2, 4], 2));
    let mut no_registry = good.clone();
    no_registry.registry = None;
    let mut on_refresh = good.clone();
    on_refresh.operation = Operation::Refresh;
    let seq0 = change_spec(0, current, config(&[1, 2, 4], 2));
    let mut short = good.clone();
    short.registry.as_mut().expect("change").previous = vec![1; 31];
    let mut upper = good.clone();
    for key in upper
        .registry
        .as_mut()
        .expect("change")
        .registry
        .keys
        .values_mut()
    {
        *key = key.to_ascii_uppercase();
    }
    let lone = change_spec(1, current, config(&[4], 2));
    let no_quorum = change_spec(1, current, config(&[1, 2], 3));
    let mut with_subject = good.clone();
    with_subject.subject = Some(node("n1"));
    for (why, spec) in [
        ("no registry", no_registry),
        ("a registry on a refresh", on_refresh),
        ("sequence 0", seq0),
        ("a 31-byte previous hash", short),
        ("upper-case keys", upper),
        ("one operator", lone),
        ("a quorum above the operators", no_quorum),
        ("a subject", with_subject),
    ] {
        assert!(spec.validate().is_err(), "{why} must be refused");
    }
}

#[test]
fn x5_a_change_follows_only_the_registry_in_force_and_the_next_sequence() {
    let current = registry(2).hash();
    let change = change_spec(1, current, config(&[1, 2, 4], 2))
        .registry
        .expect("change");
    change.follows(0, &current).expect("the next one");
    let err = change
        .follows(1, &current)
        .expect_err("a replay")
        .to_string();
    assert!(err.contains("only 2 can follow"), "{err}");
    let err = change
        .follows(0, &[9; 32])
        .expect_err("another registry")
        .to_string();
    assert!(err.contains("replaces registry"), "{err}");
}

#[test]
fn x5_a_change_is_approved_by_the_registry_it_replaces() {
    let current = registry(2);
    let next = config(&[1, 2, 4], 2);
    let spec = change_spec(1, current.hash(), next.clone());
    let (id4, key4) = operator(4);
    let mut signed = SignedSpec {
        spec: spec.clone(),
        approvals: vec![approve(&spec, &id4, &key4)],
    };
    let (id1, key1) = operator(1);
    signed.add_approval(approve(&spec, &id1, &key1));
    // op-4 is not in the registry in force yet: one approval of two counts.
    let now = spec.created_at + 10;
    let err = verify_quorum(&signed, &current, now, 0).expect_err("op-4 is new");
    assert!(err.to_string().contains("1 of 2"), "{err}");
    let (id2, key2) = operator(2);
    signed.add_approval(approve(&spec, &id2, &key2));
    verify_quorum(&signed, &current, now, 0).expect("op-1 and op-2");
    // The new registry is what the spec names, exactly.
    let built = spec
        .registry
        .as_ref()
        .expect("change")
        .validate()
        .expect("valid");
    assert_eq!(built.hash(), next.build().expect("next").hash());
}

#[test]
fn x5_a_chain_is_trusted_from_where_it_meets_the_checkers_own_registry() {
    let r0 = registry(2);
    let c1 = change_spec(1, r0.hash(), config(&[1, 2, 4], 2));
    let r1 = config(&[1, 2, 4], 2).build().expect("r1");
    let mut c2 = change_spec(2, r1.hash(), config(&[1, 4, 5], 2));
    c2.proposal_id = "change-registry-2".into();
    let r2 = config(&[1, 4, 5], 2).build().expect("r2");
    let sign = |spec: &LifecycleSpec, ops: &[u8]| {
        let mut signed = SignedSpec {
            spec: spec.clone(),
            approvals: Vec::new(),
        };
        for i in ops {
            let (id, key) = operator(*i);
            signed.add_approval(approve(spec, &id, &key));
        }
        signed
    };
    let chain = [sign(&c1, &[1, 2]), sign(&c2, &[2, 4])];
    let group = GroupName::new("warm-1").expect("name");
    let key = vec![2; 33];
    // From the start (a config never edited), or from the registry change 1
    // installed (a config edited to it): both end at r2.
    for base in [&r0, &r1] {
        let (seq, end) = verify_chain(base, &group, &key, &chain).expect("a good chain");
        assert_eq!((seq, end.hash()), (2, r2.hash()));
    }
    // A config edited to the end: nothing left to check.
    assert_eq!(
        verify_chain(&r2, &group, &key, &chain)
            .expect("at the end")
            .1
            .hash(),
        r2.hash()
    );
    // A daemon whose registry the chain never meets trusts none of it.
    let stranger = config(&[3, 5], 2).build().expect("stranger");
    let err = verify_chain(&stranger, &group, &key, &chain).expect_err("no anchor");
    assert!(err.to_string().contains("nothing vouches"), "{err}");
    // A link approved by the wrong registry's operators, another key, or out of order.
    let bad = [sign(&c1, &[1, 2]), sign(&c2, &[2, 3])];
    assert!(
        verify_chain(&r0, &group, &key, &bad).is_err(),
        "op-3 left in change 1"
    );
    assert!(
        verify_chain(&r0, &group, &[3; 33], &chain).is_err(),
        "another key"
    );
    let swapped = [chain[1].clone(), chain[0].clone()];
    assert!(
        verify_chain(&r0, &group, &key, &swapped).is_err(),
        "out of order"
    );
    assert_eq!(verify_chain(&r0, &group, &key, &[]).expect("empty").0, 0);
}
