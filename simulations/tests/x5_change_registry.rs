//! X5: a group's operator registry changes only by a change-registry spec
//! that a quorum of the registry in force for the group approved, which every
//! member checks itself (its epoch and key, the registry replaced, the next
//! sequence). Afterwards the group's ceremonies answer to the new registry
//! alone; an old change is never replayed; a member that missed a change is
//! brought along by any coordinator from a member's stored chain; a repair's
//! replacement takes the group's registry from the same chain; creates still
//! answer to the config's registry.

use ed25519_dalek::SigningKey;
use permafrost_core::ceremony::{approve, LifecycleSpec, RegistryConfig, SignedSpec};
use permafrost_core::{Role, Tier};
use permafrost_proto::{self as pb, WithdrawalState};
use permafrost_testkit::{approved, operator_key, operator_registry, wire, TestCluster};
use permafrostctl::ceremony::Change;
use tonic::Code;

const GROUP: &str = "warm-1";

/// A new operator, not in the config's registry.
fn op4() -> SigningKey {
    SigningKey::from_bytes(&[77; 32])
}

/// `op-1`, `op-3` and the new `op-4`; `op-2` leaves. Two approvals, three to retire.
fn rotated() -> RegistryConfig {
    let mut r = operator_registry();
    r.keys.remove("op-2");
    r.keys
        .insert("op-4".into(), hex::encode(op4().verifying_key().as_bytes()));
    r.quorum
        .insert(permafrost_core::ceremony::Operation::Retire, 3);
    r
}

/// `spec` approved by the given operators of the rotated registry.
fn approved_by(spec: &LifecycleSpec, ops: &[&str]) -> SignedSpec {
    let mut signed = SignedSpec {
        spec: spec.clone(),
        approvals: Vec::new(),
    };
    for op in ops {
        let key = match *op {
            "op-4" => op4(),
            other => operator_key(other[3..].parse().expect("op-N")),
        };
        signed.add_approval(approve(spec, op, &key));
    }
    signed
}

async fn node_group(cluster: &TestCluster, i: usize) -> pb::NodeKeyGroup {
    cluster.node_key_group(i, GROUP).await.expect("group held")
}

async fn change_on_node(
    cluster: &TestCluster,
    i: usize,
    signed: &SignedSpec,
) -> Result<pb::ChangeRegistryResponse, tonic::Status> {
    cluster
        .node_client(i, Role::Coordinator, "rogue")
        .change_registry(pb::ChangeRegistryRequest {
            key_group: GROUP.into(),
            authorization: Some(wire(signed)),
        })
        .await
        .map(|r| r.into_inner())
}

async fn signs(cluster: &TestCluster, id: &str) {
    let request = cluster.request(id, GROUP, Tier::Warm);
    let status = cluster
        .custody()
        .submit_withdrawal(cluster.sign(&request))
        .await
        .expect("submit")
        .into_inner();
    assert_eq!(status.state(), WithdrawalState::Signed, "{}", status.detail);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x5_registry_changes_only_by_the_quorum_in_force_and_never_goes_back() {
    let mut cluster = TestCluster::start(&["eu", "us", "ap", "sa"]).await;
    cluster
        .create_group(GROUP, Tier::Warm, 2, &[0, 1, 2])
        .await
        .expect("DKG");
    let config_hash = operator_registry().build().expect("registry").hash();
    assert_eq!(node_group(&cluster, 0).await.registry_hash, config_hash);

    let spec = cluster
        .change_spec(
            GROUP,
            Change::ChangeRegistry {
                registry: rotated(),
            },
        )
        .await;
    let change = spec.registry.clone().expect("a registry change");
    assert_eq!(
        (change.seq, change.previous.as_slice()),
        (1, &config_hash[..])
    );

    // One operator's say-so: refused by the coordinator and by every node.
    let one = approved(&spec, &[1]);
    let err = cluster
        .operator()
        .change_registry(pb::ChangeRegistryRequest {
            key_group: GROUP.into(),
            authorization: Some(wire(&one)),
        })
        .await
        .expect_err("one operator");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    for i in 0..3 {
        let err = change_on_node(&cluster, i, &one)
            .await
            .expect_err("one operator");
        assert!(err.message().contains("quorum"), "n{}: {err:?}", i + 1);
    }
    // A change that names another registry as the one it replaces.
    let mut wrong = spec.clone();
    wrong.registry.as_mut().expect("change").previous = vec![0; 32];
    let err = change_on_node(&cluster, 0, &approved(&wrong, &[1, 2]))
        .await
        .expect_err("another previous registry");
    assert!(err.message().contains("replaces registry"), "{err:?}");
    // A change for another epoch.
    let mut stale = spec.clone();
    stale.epoch += 1;
    let err = change_on_node(&cluster, 0, &approved(&stale, &[1, 2]))
        .await
        .expect_err("another epoch");
    assert!(err.message().contains("epoch"), "{err:?}");

    // The quorum of the registry in force changes it on every member.
    let first = approved(&spec, &[1, 2]);
    let group = cluster
        .operator()
        .change_registry(pb::ChangeRegistryRequest {
            key_group: GROUP.into(),
            authorization: Some(wire(&first)),
        })
        .await
        .expect("change")
        .into_inner();
    let rotated_hash = rotated().build().expect("registry").hash();
    assert_eq!(group.registry_seq, 1);
    assert_eq!(group.registry_hash, rotated_hash);
    for i in 0..3 {
        let g = node_group(&cluster, i).await;
        assert_eq!(
            (g.registry_seq, g.registry_hash.as_slice()),
            (1, &rotated_hash[..])
        );
        // The same spec again is done, not an error.
        change_on_node(&cluster, i, &first)
            .await
            .expect("idempotent");
    }
    signs(&cluster, "wd-registry-1").await;

    // The new registry's quorums hold: a retirement needs three now.
    let err = cluster
        .node_client(0, Role::Coordinator, "rogue")
        .retire_group(pb::RetireGroupRequest {
            key_group: GROUP.into(),
            authorization: Some(wire(&approved_by(
                &cluster.change_spec(GROUP, Change::Retire).await,
                &["op-1", "op-4"],
            ))),
        })
        .await
        .expect_err("retire needs three now");
    assert!(err.message().contains("2 of 3"), "{err:?}");
    // Back to the config's registry (sequence 2): the first change can
    // never be replayed to bring op-4 back.
    let back = cluster
        .change_spec(
            GROUP,
            Change::ChangeRegistry {
                registry: operator_registry(),
            },
        )
        .await;
    assert_eq!(back.registry.as_ref().map(|r| r.seq), Some(2));
    cluster
        .operator()
        .change_registry(pb::ChangeRegistryRequest {
            key_group: GROUP.into(),
            authorization: Some(wire(&approved_by(&back, &["op-3", "op-4"]))),
        })
        .await
        .expect("change back");
    // The first change again is answered as applied and moves nothing; a
    // second proposal of the same move (sequence 1, approved by op-1 and op-2,
    // whom the registry in force counts again) is refused: sequences only grow.
    let mut again = spec.clone();
    again.proposal_id = "change-registry-again".into();
    let again = approved(&again, &[1, 2]);
    for i in 0..3 {
        let answer = change_on_node(&cluster, i, &first)
            .await
            .expect("applied before");
        assert_eq!(
            (answer.registry_seq, answer.registry_hash.as_slice()),
            (2, &config_hash[..])
        );
        let err = change_on_node(&cluster, i, &again)
            .await
            .expect_err("a replayed move");
        assert!(err.message().contains("registry 2"), "n{}: {err:?}", i + 1);
        assert_eq!(node_group(&cluster, i).await.registry_hash, config_hash);
    }

    // A change that reached two members only (a relay that stopped): any
    // coordinator's recovery brings the third along, and survives a restart.
    let third = cluster
        .change_spec(
            GROUP,
            Change::ChangeRegistry {
                registry: rotated(),
            },
        )
        .await;
    let third = approved(&third, &[2, 3]);
    for i in 0..2 {
        change_on_node(&cluster, i, &third).await.expect("partial");
    }
    cluster
        .operator()
        .recover_key_group(pb::RecoverKeyGroupRequest { name: GROUP.into() })
        .await
        .expect("recover");
    assert_eq!(node_group(&cluster, 2).await.registry_seq, 3);
    cluster.stop_node(2).await;
    cluster.restart_node(2).await;
    let g = node_group(&cluster, 2).await;
    assert_eq!(
        (g.registry_seq, g.registry_hash.as_slice()),
        (3, &rotated_hash[..])
    );
    let listed = cluster
        .operator()
        .list_key_groups(pb::ListKeyGroupsRequest {})
        .await
        .expect("list")
        .into_inner()
        .key_groups;
    let g = listed.iter().find(|g| g.name == GROUP).expect("listed");
    assert_eq!(
        g.registry_seq, 3,
        "the coordinator followed the members' chain"
    );

    // A repair onto n4, whose config still has the old registry: it is sent
    // the group's chain of changes, checks it from its own config, takes
    // its share under the registry at the chain's end, and keeps it.
    let repair = cluster.repair_spec(GROUP, "n3", "n4").await;
    let err = cluster
        .repair_group_with(&approved(&repair, &[1, 2]))
        .await
        .expect_err("op-2 is gone");
    assert!(err.message().contains("op-2"), "{err:?}");
    let repaired = cluster
        .repair_group_with(&approved_by(&repair, &["op-1", "op-4"]))
        .await
        .expect("repair under the group's registry");
    assert_eq!(repaired.members, vec!["n1", "n2", "n4"]);
    let g = node_group(&cluster, 3).await;
    assert_eq!(
        (g.registry_seq, g.registry_hash.as_slice()),
        (3, &rotated_hash[..])
    );
    signs(&cluster, "wd-registry-repaired").await;

    // op-2 left: a refresh it approves with op-1 is refused (the coordinator
    // fails fast on the group's registry); op-1 with the new op-4 refreshes.
    let refresh = cluster.change_spec(GROUP, Change::Refresh).await;
    let old_pair = approved(&refresh, &[1, 2]);
    let err = cluster
        .operator()
        .refresh_key_group(pb::RefreshKeyGroupRequest {
            name: GROUP.into(),
            authorization: Some(wire(&old_pair)),
        })
        .await
        .expect_err("op-2 is gone");
    assert!(err.message().contains("op-2"), "{err:?}");
    cluster
        .operator()
        .refresh_key_group(pb::RefreshKeyGroupRequest {
            name: GROUP.into(),
            authorization: Some(wire(&approved_by(&refresh, &["op-1", "op-4"]))),
        })
        .await
        .expect("refresh by the new registry's quorum");
    signs(&cluster, "wd-registry-2").await;

    // A new group still answers to the config's registry.
    cluster
        .create_group("warm-2", Tier::Warm, 2, &[0, 1, 3])
        .await
        .expect("create under the config's registry");
    signs(&cluster, "wd-registry-3").await;
    cluster.shutdown().await;
}
