//! Remove-member specs against a node's record (X5, X7): the removed member
//! keeps its place as a tombstone, the threshold stays, at least `t` members
//! remain, and an ex-member is never repaired back.

use super::testing::*;
use super::*;
use crate::dkg::CeremonySpec;

fn node(s: &str) -> NodeId {
    NodeId::new(s).expect("id")
}

fn four() -> Vec<NodeId> {
    ["n1", "n2", "n3", "n4"].map(node).to_vec()
}

fn held(removed: &[&str]) -> HeldGroup {
    HeldGroup {
        epoch: 3,
        group_key: vec![2; 33],
        members: four(),
        removed: removed.iter().map(|m| node(m)).collect(),
        threshold: 2,
        tier: Tier::Warm,
        last_spec: None,
    }
}

fn removal(subject: &str, members: &[&str]) -> LifecycleSpec {
    let now = crate::unix_now();
    LifecycleSpec {
        version: SPEC_VERSION,
        operation: Operation::RemoveMember,
        proposal_id: format!("remove-{subject}"),
        group: GroupName::new("warm-1").expect("name"),
        tier: Tier::Warm,
        epoch: 3,
        group_key: Some(vec![2; 33]),
        members: members.iter().map(|m| node(m)).collect(),
        threshold: 2,
        subject: Some(node(subject)),
        replacement: None,
        created_at: now,
        expires_at: now + 600,
        registry: None,
    }
}

fn quorum(spec: LifecycleSpec) -> QuorumApproved {
    verify_quorum(&signed_by(spec, 2), &registry(2), crate::unix_now(), 0).expect("quorum")
}

fn ceremony(spec: &LifecycleSpec, removed: &[&str]) -> CeremonySpec {
    CeremonySpec {
        ceremony_id: "c-remove".into(),
        group: spec.group.clone(),
        tier: spec.tier,
        threshold: spec.threshold,
        members: four(),
        removed: removed.iter().map(|m| node(m)).collect(),
        refresh: true,
        authorization: spec.digest().0,
    }
}

#[test]
fn x5_a_removal_follows_from_the_record_and_keeps_identifiers() {
    let spec = removal("n4", &["n1", "n2", "n3"]);
    let authorized = quorum(spec.clone())
        .at_current_epoch(&node("n1"), &held(&[]))
        .expect("n1 takes part");
    // The refresh among n1..n3 lists all four (identifiers stay) with n4 out.
    let c = ceremony(&spec, &["n4"]);
    c.validate().expect("shape");
    c.check_authorized(&authorized)
        .expect("the approved removal");
    assert_eq!(c.participants(), spec.members);
    assert_eq!(
        c.identifier_of(&node("n3")).expect("n3"),
        crate::dkg::identifier(2).expect("id")
    );
    assert!(c.identifier_of(&node("n4")).is_err(), "n4 takes no part");
    // The same ceremony that lets n4 take part is not what was approved.
    let err = ceremony(&spec, &[])
        .check_authorized(&authorized)
        .expect_err("n4 still in");
    assert!(err.to_string().contains("take part"), "{err}");
}

#[test]
fn x7_the_removed_member_never_takes_part_but_may_drop_its_share() {
    let spec = removal("n4", &["n1", "n2", "n3"]);
    let err = quorum(spec.clone())
        .at_current_epoch(&node("n4"), &held(&[]))
        .expect_err("n4 refreshes nothing");
    assert!(err.to_string().contains("dropping itself"), "{err}");
    quorum(spec.clone())
        .as_removed(&node("n4"), &held(&[]))
        .expect("n4 drops its share");
    assert!(quorum(spec).as_removed(&node("n1"), &held(&[])).is_err());
}

#[test]
fn x7_a_removal_keeps_the_threshold_and_at_least_t_members() {
    let mut spec = removal("n4", &["n1", "n2", "n3"]);
    spec.threshold = 3;
    let err = quorum(spec)
        .at_current_epoch(&node("n1"), &held(&[]))
        .expect_err("new threshold");
    assert!(err.to_string().contains("keeps the threshold"), "{err}");
    // n3 and n4 gone: removing n2 leaves n1 alone. The spec's own shape
    // refuses it, naming the numbers.
    let spec = removal("n2", &["n1"]);
    let err = spec.validate().expect_err("one member left");
    assert!(err.to_string().contains("1 members"), "{err}");
    // And a record with t = 3: removing one of three active members leaves 2 < 3.
    let mut record = held(&["n4"]);
    record.threshold = 3;
    let mut spec = removal("n3", &["n1", "n2"]);
    spec.threshold = 3;
    assert!(spec.validate().is_err(), "3 of 2 is no group");
    // The node refuses too, naming the numbers, whatever the spec's shape
    // (a shape-valid spec with threshold 2 against the record's 3).
    let err = quorum(removal("n3", &["n1", "n2"]))
        .at_current_epoch(&node("n1"), &record)
        .expect_err("below t");
    let err = err.to_string();
    assert!(
        err.contains("2 active member(s)") && err.contains("threshold 3"),
        "{err}"
    );
}

#[test]
fn x7_an_ex_member_is_never_removed_again_repaired_back_or_a_participant() {
    let record = held(&["n4"]);
    assert_eq!(record.active(), ["n1", "n2", "n3"].map(node).to_vec());
    // Removing n4 again: not a member here any more.
    let err = quorum(removal("n4", &["n1", "n2", "n3"]))
        .at_current_epoch(&node("n1"), &record)
        .expect_err("already removed");
    assert!(err.to_string().contains("removed already"), "{err}");
    // A repair with n4 as the replacement (repaired back): refused.
    let mut repair = removal("n3", &["n1", "n2", "n4"]);
    repair.operation = Operation::Repair;
    repair.replacement = Some(node("n4"));
    let err = quorum(repair)
        .at_current_epoch(&node("n1"), &record)
        .expect_err("an ex-member back");
    assert!(err.to_string().contains("was removed"), "{err}");
    // A repair of n4 (lost after its removal): there is nothing to repair.
    let mut repair = removal("n4", &["n1", "n2", "n3", "n5"]);
    repair.operation = Operation::Repair;
    repair.replacement = Some(node("n5"));
    assert!(quorum(repair)
        .at_current_epoch(&node("n1"), &record)
        .is_err());
    // n4 itself takes no ceremony step of the group again.
    let refresh = LifecycleSpec {
        operation: Operation::Refresh,
        subject: None,
        ..removal("n4", &["n1", "n2", "n3"])
    };
    let err = quorum(refresh.clone())
        .at_current_epoch(&node("n4"), &record)
        .expect_err("n4 refreshes nothing");
    assert!(err.to_string().contains("was removed"), "{err}");
    // A later refresh names the active members only, and runs without n4.
    let authorized = quorum(refresh.clone())
        .at_current_epoch(&node("n1"), &record)
        .expect("refresh of the rest");
    ceremony(&refresh, &["n4"])
        .check_authorized(&authorized)
        .expect("n4 stays out");
    assert!(ceremony(&refresh, &[])
        .check_authorized(&authorized)
        .is_err());
}

#[test]
fn removed_members_must_be_members_and_leave_t_participants() {
    let spec = removal("n4", &["n1", "n2", "n3"]);
    let mut c = ceremony(&spec, &["n5"]);
    assert!(c.validate().is_err(), "n5 is no member");
    c.removed = ["n2", "n3", "n4"].map(node).to_vec();
    let err = c.validate().expect_err("one left");
    assert!(
        err.to_string().contains("1 member(s) would take part"),
        "{err}"
    );
    c.removed = vec![node("n4")];
    c.refresh = false;
    assert!(c.validate().is_err(), "a new group removes no one");
}
