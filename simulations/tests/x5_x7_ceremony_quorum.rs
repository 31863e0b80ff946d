//! X5–X7: no ceremony on one say-so. A coordinator (or one operator) that
//! runs a DKG, a shadow group, a repair of a healthy member or a
//! ReplaceMember without an operator quorum is refused by every node, and a
//! node never drops itself; the group still signs afterwards.

use permafrost_core::ceremony::{LifecycleSpec, SignedSpec};
use permafrost_core::{Role, Tier};
use permafrost_proto::{self as pb, signer_node_client::SignerNodeClient, WithdrawalState};
use permafrost_testkit::{approved, assert_signature_valid, wire, TestCluster};
use tonic::transport::Channel;
use tonic::Code;

/// Members and epoch of `group` as node `i` reports them itself (None: it holds no such group).
async fn held(cluster: &TestCluster, i: usize, group: &str) -> Option<(Vec<String>, u64)> {
    cluster
        .node_key_group(i, group)
        .await
        .map(|g| (g.members, g.epoch))
}

/// A withdrawal from `group` signs, under its key.
async fn still_signs(cluster: &TestCluster, id: &str, group: &pb::KeyGroup) {
    let request = cluster.request(id, &group.name, Tier::Warm);
    let status = cluster
        .custody()
        .submit_withdrawal(cluster.sign(&request))
        .await
        .expect("submit")
        .into_inner();
    assert_eq!(status.state(), WithdrawalState::Signed, "{}", status.detail);
    assert_signature_valid(&group.group_public_key, &request.payload, &status.signature);
}

/// The DKG spec a (rogue) coordinator would send for `approved`.
fn dkg_spec(id: &str, spec: &LifecycleSpec) -> pb::CeremonySpec {
    pb::CeremonySpec {
        ceremony_id: id.into(),
        group: spec.group.to_string(),
        tier: pb::Tier::Warm as i32,
        threshold: u32::from(spec.threshold),
        members: spec.members.iter().map(|m| m.to_string()).collect(),
        removed: Vec::new(),
        refresh: false,
        authorization: spec.digest().0.to_vec(),
    }
}

async fn dkg_start(
    client: &mut SignerNodeClient<Channel>,
    id: &str,
    signed: Option<&SignedSpec>,
    spec: &LifecycleSpec,
) -> Result<pb::DkgRound1Message, tonic::Status> {
    client
        .dkg_start(pb::DkgStartRequest {
            spec: Some(dkg_spec(id, spec)),
            authorization: signed.map(wire),
        })
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x5_dkg_started_by_the_coordinator_without_a_spec_is_refused_by_every_node() {
    let cluster = TestCluster::start(&["eu", "us", "ap"]).await;
    let spec = cluster.create_spec("warm-1", Tier::Warm, 2, &[0, 1, 2]);
    let mut clients: Vec<_> = (0..3)
        .map(|i| cluster.node_client(i, Role::Coordinator, "rogue"))
        .collect();

    // Through the coordinator: no spec, or one operator's say-so.
    let mut one = approved(&spec, &[1]);
    let err = cluster
        .create_group_with(&SignedSpec {
            approvals: Vec::new(),
            ..one.clone()
        })
        .await
        .expect_err("no approvals");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let err = cluster
        .create_group_with(&one)
        .await
        .expect_err("one operator");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("1 of 2"), "{}", err.message());

    // Straight to the nodes, as a compromised coordinator would: every node refuses.
    let stranger = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    one.add_approval(permafrost_core::ceremony::approve(
        &spec, "mallory", &stranger,
    ));
    let mut expired = spec.clone();
    expired.created_at -= 7200;
    expired.expires_at = expired.created_at + 600;
    let expired = approved(&expired, &[1, 2]);
    for (i, c) in clients.iter_mut().enumerate() {
        let err = dkg_start(c, "rogue-1", None, &spec)
            .await
            .expect_err("no spec");
        assert_eq!(err.code(), Code::InvalidArgument, "n{}: {err:?}", i + 1);
        assert!(err.message().contains("authorization"), "{}", err.message());
        let err = dkg_start(c, "rogue-2", Some(&one), &spec)
            .await
            .expect_err("one registered operator and a stranger");
        assert_eq!(err.code(), Code::PermissionDenied, "n{}: {err:?}", i + 1);
        assert!(
            err.message().contains("not a registered operator"),
            "{}",
            err.message()
        );
        let err = dkg_start(c, "rogue-3", Some(&expired), &expired.spec)
            .await
            .expect_err("expired");
        assert!(err.message().contains("expired"), "{}", err.message());
        // A genuine quorum for another ceremony does not authorize this one.
        let mut other = dkg_spec("rogue-4", &spec);
        other.threshold = 3;
        let err = c
            .dkg_start(pb::DkgStartRequest {
                spec: Some(other),
                authorization: Some(wire(&approved(&spec, &[1, 2]))),
            })
            .await
            .expect_err("spec differs from the approval");
        assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
        assert!(held(&cluster, i, "warm-1").await.is_none());
    }

    // With the quorum the same ceremony runs, and the group signs.
    let group = cluster
        .create_group_with(&approved(&spec, &[2, 3]))
        .await
        .expect("quorum-approved DKG");
    for i in 0..3 {
        assert_eq!(held(&cluster, i, "warm-1").await.map(|h| h.1), Some(1));
    }
    // The create spec cannot be replayed once the group exists (any node, any epoch).
    let err = dkg_start(
        &mut clients[0],
        "replay",
        Some(&approved(&spec, &[1, 2])),
        &spec,
    )
    .await
    .expect_err("replayed create");
    assert!(err.message().contains("never reused"), "{}", err.message());
    still_signs(&cluster, "wd-x5-1", &group).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x5_shadow_dkg_of_a_live_group_name_is_refused() {
    let cluster = TestCluster::start(&["eu", "us", "ap", "eu", "us"]).await;
    let group = cluster
        .create_group("warm-1", Tier::Warm, 2, &[0, 1, 2])
        .await
        .expect("DKG");
    // A second warm-1 on non-members n4, n5 under one operator's say-so.
    let shadow = cluster.create_spec("warm-1", Tier::Warm, 2, &[3, 4]);
    for i in [3, 4] {
        let mut c = cluster.node_client(i, Role::Coordinator, "rogue");
        let err = dkg_start(&mut c, "shadow-1", Some(&approved(&shadow, &[1])), &shadow)
            .await
            .expect_err("one say-so");
        assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
        assert!(held(&cluster, i, "warm-1").await.is_none());
    }
    // Even a quorum cannot make a member hold a second warm-1 beside the live one.
    let overlap = cluster.create_spec("warm-1", Tier::Warm, 2, &[1, 3]);
    let mut n2 = cluster.node_client(1, Role::Coordinator, "rogue");
    let err = dkg_start(
        &mut n2,
        "shadow-2",
        Some(&approved(&overlap, &[1, 2])),
        &overlap,
    )
    .await
    .expect_err("name held");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("never reused"), "{}", err.message());
    // Nor can the coordinator be asked for it.
    let err = cluster
        .create_group_with(&approved(&shadow, &[1, 2]))
        .await
        .expect_err("the coordinator knows warm-1");
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
    for i in 0..3 {
        assert_eq!(
            held(&cluster, i, "warm-1").await,
            Some((vec!["n1".into(), "n2".into(), "n3".into()], 1))
        );
    }
    still_signs(&cluster, "wd-x5-2", &group).await;
    cluster.shutdown().await;
}

/// The repair request a rogue coordinator sends for `signed` (lost → replacement, helpers).
fn repair_request(
    signed: Option<&SignedSpec>,
    spec: &LifecycleSpec,
    members: &[&str],
    helpers: &[&str],
) -> pb::RepairRequest {
    let node =
        |n: &Option<permafrost_core::NodeId>| n.as_ref().map(|n| n.to_string()).unwrap_or_default();
    pb::RepairRequest {
        spec: Some(pb::RepairSpec {
            repair_id: "rogue-repair".into(),
            group: spec.group.to_string(),
            threshold: u32::from(spec.threshold),
            members: members.iter().map(|m| m.to_string()).collect(),
            lost: node(&spec.subject),
            replacement: node(&spec.replacement),
            helpers: helpers.iter().map(|m| m.to_string()).collect(),
            tier: pb::Tier::Warm as i32,
            authorization: spec.digest().0.to_vec(),
            removed: Vec::new(),
        }),
        messages: vec![],
        public_key_package: vec![],
        authorization: signed.map(wire),
        acks: vec![],
        registry_changes: vec![],
    }
}

/// Node `i`'s public key package of `group`, as it reports it.
async fn public_key_package(cluster: &TestCluster, i: usize, group: &str) -> Vec<u8> {
    cluster
        .node_client(i, Role::Coordinator, "probe")
        .get_status(pb::NodeStatusRequest {})
        .await
        .expect("status")
        .into_inner()
        .key_groups
        .into_iter()
        .find(|g| g.name == group)
        .expect("group")
        .public_key_package
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x5_repair_of_a_healthy_member_by_one_operator_is_refused() {
    let cluster = TestCluster::start(&["eu", "us", "ap", "ap"]).await;
    let group = cluster
        .create_group("warm-1", Tier::Warm, 2, &[0, 1, 2])
        .await
        .expect("DKG");
    // n1 is healthy; one operator asks to move its share to n4.
    let spec = cluster.repair_spec("warm-1", "n1", "n4").await;
    let one = approved(&spec, &[2]);
    let err = cluster
        .repair_group_with(&one)
        .await
        .expect_err("one operator");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    // Straight to the helpers and the replacement: every one refuses before a delta leaves.
    let members = ["n1", "n2", "n3"];
    for i in [1, 2] {
        let mut c = cluster.node_client(i, Role::Coordinator, "rogue");
        let err = c
            .repair_deltas(repair_request(Some(&one), &spec, &members, &["n2", "n3"]))
            .await
            .expect_err("one operator");
        assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
        let err = c
            .repair_deltas(repair_request(None, &spec, &members, &["n2", "n3"]))
            .await
            .expect_err("no spec");
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    }
    let mut n4 = cluster.node_client(3, Role::Coordinator, "rogue");
    let err = n4
        .repair_receive(repair_request(Some(&one), &spec, &members, &["n2", "n3"]))
        .await
        .expect_err("one operator");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    // Nothing moved: same members, same epoch, n1 still a member; the group signs.
    for i in 0..3 {
        assert_eq!(
            held(&cluster, i, "warm-1").await,
            Some((members.iter().map(|m| m.to_string()).collect(), 1))
        );
    }
    assert!(held(&cluster, 3, "warm-1").await.is_none());
    still_signs(&cluster, "wd-x5-3", &group).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x7_replace_member_without_proof_and_removing_oneself_are_refused() {
    let mut cluster = TestCluster::start(&["eu", "us", "ap", "ap"]).await;
    let group = cluster
        .create_group("warm-1", Tier::Warm, 2, &[0, 1, 2])
        .await
        .expect("DKG");
    let members = ["n1", "n2", "n3"];
    // "n1 is lost, n4 replaces it": told to every member with no proof, with
    // one operator's say-so, and (with a genuine quorum) to n1 itself.
    let spec = cluster.repair_spec("warm-1", "n1", "n4").await;
    let quorum = approved(&spec, &[1, 3]);
    for i in 0..3 {
        let mut c = cluster.node_client(i, Role::Coordinator, "rogue");
        let err = c
            .replace_member(repair_request(None, &spec, &members, &["n2", "n3"]))
            .await
            .expect_err("no proof");
        assert_eq!(err.code(), Code::InvalidArgument, "n{}: {err:?}", i + 1);
        let err = c
            .replace_member(repair_request(
                Some(&approved(&spec, &[1])),
                &spec,
                &members,
                &["n2", "n3"],
            ))
            .await
            .expect_err("one operator");
        assert_eq!(err.code(), Code::PermissionDenied, "n{}: {err:?}", i + 1);
    }
    let mut n1 = cluster.node_client(0, Role::Coordinator, "rogue");
    let err = n1
        .replace_member(repair_request(
            Some(&quorum),
            &spec,
            &members,
            &["n2", "n3"],
        ))
        .await
        .expect_err("n1 never drops itself");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(
        err.message().contains("never drops itself"),
        "{}",
        err.message()
    );
    // Every member still lists n1, at epoch 1, and the group signs with n1 in it.
    for i in 0..3 {
        assert_eq!(
            held(&cluster, i, "warm-1").await,
            Some((members.iter().map(|m| m.to_string()).collect(), 1))
        );
    }
    cluster.stop_node(2).await;
    still_signs(&cluster, "wd-x7-1", &group).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x7_a_spec_for_another_epoch_is_refused_after_the_group_moves_on() {
    let cluster = TestCluster::start(&["eu", "us", "ap"]).await;
    let group = cluster
        .create_group("warm-1", Tier::Warm, 2, &[0, 1, 2])
        .await
        .expect("DKG");
    let first = approved(
        &cluster
            .change_spec("warm-1", permafrostctl::ceremony::Change::Refresh)
            .await,
        &[1, 2],
    );
    let refresh = |signed: &SignedSpec| pb::RefreshKeyGroupRequest {
        name: "warm-1".into(),
        authorization: Some(wire(signed)),
    };
    let refreshed = cluster
        .operator()
        .refresh_key_group(refresh(&first))
        .await
        .expect("refresh at epoch 1")
        .into_inner();
    assert_eq!(refreshed.epoch, 2);
    for i in 0..3 {
        assert_eq!(held(&cluster, i, "warm-1").await.map(|h| h.1), Some(2));
    }
    // The epoch-1 spec again: every member refuses it now.
    let err = cluster
        .operator()
        .refresh_key_group(refresh(&first))
        .await
        .expect_err("replayed refresh");
    assert!(err.message().contains("epoch 1"), "{}", err.message());
    // A spec naming another key for the current epoch is refused too.
    let mut wrong_key = cluster
        .change_spec("warm-1", permafrostctl::ceremony::Change::Refresh)
        .await;
    wrong_key.group_key = Some(vec![3; 33]);
    let err = cluster
        .operator()
        .refresh_key_group(refresh(&approved(&wrong_key, &[1, 2])))
        .await
        .expect_err("another key");
    assert!(err.message().contains("another key"), "{}", err.message());
    still_signs(&cluster, "wd-x7-2", &group).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x5_clearing_an_exclusion_needs_the_quorum() {
    let cluster = TestCluster::start(&["eu", "us", "ap"]).await;
    cluster
        .create_group("warm-1", Tier::Warm, 2, &[0, 1, 2])
        .await
        .expect("DKG");
    let spec = cluster
        .change_spec(
            "warm-1",
            permafrostctl::ceremony::Change::ClearExclusion {
                node: permafrost_core::NodeId::new("n2").expect("id"),
            },
        )
        .await;
    let mut operator = cluster.operator();
    for (signed, code) in [
        (None, Code::InvalidArgument),
        (Some(approved(&spec, &[3])), Code::PermissionDenied),
    ] {
        let err = operator
            .clear_exclusion(pb::ClearExclusionRequest {
                group: "warm-1".into(),
                node_id: "n2".into(),
                authorization: signed.as_ref().map(wire),
            })
            .await
            .expect_err("refused");
        assert_eq!(err.code(), code, "{err:?}");
    }
    // With the quorum the request is authorized (n2 is simply not excluded).
    let err = cluster
        .clear_exclusion("warm-1", "n2")
        .await
        .expect_err("nothing to clear");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x6_split_view_repair_needs_every_remaining_member_and_cannot_reuse_a_quorum() {
    // 2-of-4 on n1..n4; n5 is the replacement.
    let mut cluster = TestCluster::start(&["eu", "us", "ap", "ap", "eu"]).await;
    let group = cluster
        .create_group("warm-1", Tier::Warm, 2, &[0, 1, 2, 3])
        .await
        .expect("DKG");
    // Repair 1 (n1 lost → n5) while n1 and n2 are away: the split view needs
    // n2 never to hear of it, and without n2's acknowledgement it cannot run.
    let first = approved(&cluster.repair_spec("warm-1", "n1", "n5").await, &[1, 2]);
    cluster.stop_node(0).await;
    cluster.stop_node(1).await;
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let err = cluster
        .repair_group_with(&first)
        .await
        .expect_err("n2, a remaining member, never acknowledged");
    assert!(
        err.message().contains("prepare") && err.message().contains("n2"),
        "{}",
        err.message()
    );
    // A rogue relay that asks only n3 and n4: they acknowledge, but no helper
    // releases a delta on two of the three acknowledgements it needs.
    let mut prepare = repair_request(
        Some(&first),
        &first.spec,
        &["n1", "n2", "n3", "n4"],
        &["n3", "n4"],
    );
    prepare.public_key_package = public_key_package(&cluster, 2, "warm-1").await;
    let mut acks = Vec::new();
    for i in [2, 3] {
        acks.push(
            cluster
                .node_client(i, Role::Coordinator, "rogue")
                .prepare_repair(prepare.clone())
                .await
                .expect("acknowledged")
                .into_inner(),
        );
    }
    let mut hidden = prepare.clone();
    hidden.public_key_package.clear();
    hidden.acks = acks.clone();
    for i in [2, 3] {
        let err = cluster
            .node_client(i, Role::Coordinator, "rogue")
            .repair_deltas(hidden.clone())
            .await
            .expect_err("not acknowledged by n2");
        assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
        assert!(err.message().contains("none from n2"), "{}", err.message());
    }
    // n4's acknowledgement relabelled as n2's does not pass either.
    let mut forged_ack = acks[1].clone();
    forged_ack.member = "n2".into();
    hidden.acks.push(forged_ack);
    let err = cluster
        .node_client(2, Role::Coordinator, "rogue")
        .repair_deltas(hidden)
        .await
        .expect_err("forged acknowledgement");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    for i in [2, 3] {
        assert_eq!(
            held(&cluster, i, "warm-1").await.map(|h| h.1),
            Some(1),
            "n{} did not move",
            i + 1
        );
    }
    assert!(
        held(&cluster, 4, "warm-1").await.is_none(),
        "n5 holds nothing"
    );
    // With n2 back, the repair runs (n1 is still lost): every remaining member moves.
    cluster.restart_node(1).await;
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    cluster
        .repair_group_with(&first)
        .await
        .expect("repair acknowledged by n2, n3, n4");
    for i in [1, 2, 3, 4] {
        assert_eq!(
            held(&cluster, i, "warm-1").await.map(|h| h.1),
            Some(2),
            "n{} at the repaired epoch",
            i + 1
        );
    }
    cluster.restart_node(0).await;
    // Repair 2 (n3 lost → n5, helpers n1 and n2; n1 still holds epoch 1): the
    // first repair's quorum names n1, not n3, so neither helper releases a delta.
    let mut second = first.spec.clone();
    second.subject = Some(permafrost_core::NodeId::new("n3").expect("id"));
    second.members = ["n1", "n2", "n5", "n4"]
        .iter()
        .map(|m| permafrost_core::NodeId::new(*m).expect("id"))
        .collect();
    let rogue = repair_request(
        Some(&first),
        &first.spec,
        &["n1", "n2", "n3", "n4"],
        &["n1", "n2"],
    );
    let mut forged = rogue.clone();
    if let Some(s) = forged.spec.as_mut() {
        s.lost = "n3".into();
    }
    for i in [0, 1] {
        let mut c = cluster.node_client(i, Role::Coordinator, "rogue");
        let err = c
            .repair_deltas(forged.clone())
            .await
            .expect_err("the quorum approved another repair");
        assert_eq!(err.code(), Code::PermissionDenied, "n{}: {err:?}", i + 1);
        // A spec edited to name n3 carries no valid approval.
        let edited = SignedSpec {
            spec: second.clone(),
            approvals: first.approvals.clone(),
        };
        let err = c
            .repair_deltas(repair_request(
                Some(&edited),
                &second,
                &["n1", "n2", "n3", "n4"],
                &["n1", "n2"],
            ))
            .await
            .expect_err("approvals of another spec");
        assert_eq!(err.code(), Code::PermissionDenied, "n{}: {err:?}", i + 1);
    }
    // n5 never takes a second share of warm-1.
    let mut n5 = cluster.node_client(4, Role::Coordinator, "rogue");
    let err = n5
        .repair_receive(forged)
        .await
        .expect_err("n5 holds warm-1 already");
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
    // The repaired group signs without n1 and n2.
    cluster.stop_node(0).await;
    cluster.stop_node(1).await;
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    still_signs(&cluster, "wd-x6-1", &group).await;
    cluster.shutdown().await;
}
