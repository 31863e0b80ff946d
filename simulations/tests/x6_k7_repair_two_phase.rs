//! X6/K7: a repair moves every remaining member together. Every remaining
//! member acknowledges the move first (prepare); each member that moves keeps
//! the acknowledgements as the repair's certificate, so a member the relay
//! never told to move (here: a rogue relay that stops after the replacement
//! took its share) is brought along by any coordinator, and the group signs
//! with its new membership.

use permafrost_core::{Role, Tier};
use permafrost_proto::{self as pb, ceremony_client::CeremonyClient, WithdrawalState};
use permafrost_testkit::{approved, assert_signature_valid, wire, TestCluster};

const GROUP: &str = "warm-1";

async fn held(cluster: &TestCluster, i: usize) -> Option<pb::NodeKeyGroup> {
    cluster.node_key_group(i, GROUP).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x6_k7_repair_a_member_missed_is_finished_by_a_second_coordinator() {
    // 2-of-4 on n1..n4; n1 is lost, n5 replaces it; helpers n2, n3; n4 only moves.
    let mut cluster = TestCluster::start(&["eu", "us", "ap", "ap", "eu"]).await;
    let group = cluster
        .create_group(GROUP, Tier::Warm, 2, &[0, 1, 2, 3])
        .await
        .expect("DKG");
    let (mut second, second_channel) = cluster.start_another_coordinator().await;
    let mut second_ops = CeremonyClient::new(second_channel);
    second_ops
        .adopt_key_group(pb::AdoptKeyGroupRequest { name: GROUP.into() })
        .await
        .expect("adopt");

    let signed = approved(&cluster.repair_spec(GROUP, "n1", "n5").await, &[1, 2]);
    let pkp = held(&cluster, 1)
        .await
        .expect("n2 holds it")
        .public_key_package;
    let request = |messages: Vec<pb::DkgSealedShare>, pkp: Vec<u8>, acks: Vec<pb::RepairAck>| {
        pb::RepairRequest {
            spec: Some(pb::RepairSpec {
                repair_id: "relay-stops-early".into(),
                group: GROUP.into(),
                threshold: 2,
                members: ["n1", "n2", "n3", "n4"].map(String::from).to_vec(),
                lost: "n1".into(),
                replacement: "n5".into(),
                helpers: vec!["n2".into(), "n3".into()],
                tier: pb::Tier::Warm as i32,
                authorization: signed.spec.digest().0.to_vec(),
                removed: Vec::new(),
            }),
            messages,
            public_key_package: pkp,
            authorization: Some(wire(&signed)),
            acks,
            registry_changes: vec![],
        }
    };
    let client = |i: usize| cluster.node_client(i, Role::Coordinator, "coord-relay");

    // Prepare: n2, n3, n4 acknowledge; n1, the lost member, never drops itself.
    let err = client(0)
        .prepare_repair(request(vec![], pkp.clone(), vec![]))
        .await
        .expect_err("the lost member");
    assert!(
        err.message().contains("never drops itself"),
        "{}",
        err.message()
    );
    let mut acks = Vec::new();
    for i in [1, 2, 3] {
        acks.push(
            client(i)
                .prepare_repair(request(vec![], pkp.clone(), vec![]))
                .await
                .expect("prepare")
                .into_inner(),
        );
    }
    // The helpers' deltas and sigmas, the replacement's share.
    let mut deltas = Vec::new();
    for i in [1, 2] {
        deltas.extend(
            client(i)
                .repair_deltas(request(vec![], vec![], acks.clone()))
                .await
                .expect("deltas")
                .into_inner()
                .messages,
        );
    }
    let mut sigmas = Vec::new();
    for (i, me) in [(1, "n2"), (2, "n3")] {
        let mine = deltas
            .iter()
            .filter(|d| d.recipient == me)
            .cloned()
            .collect();
        sigmas.push(
            client(i)
                .repair_sigma(request(mine, vec![], acks.clone()))
                .await
                .expect("sigma")
                .into_inner(),
        );
    }
    // The replacement takes a share only for the package every remaining member acknowledged.
    let mut other_pkp = pkp.clone();
    let last = other_pkp.len() - 1;
    other_pkp[last] ^= 1;
    client(4)
        .repair_receive(request(sigmas.clone(), other_pkp, acks.clone()))
        .await
        .expect_err("a package nobody acknowledged");
    client(4)
        .repair_receive(request(sigmas, pkp.clone(), acks.clone()))
        .await
        .expect("receive");
    // The relay stops here: n4 was never sent ReplaceMember.
    assert_eq!(held(&cluster, 3).await.expect("n4").epoch, 1);

    // A second coordinator finishes it from a moved member's certificate.
    let recovered = second_ops
        .recover_key_group(pb::RecoverKeyGroupRequest { name: GROUP.into() })
        .await
        .expect("recover")
        .into_inner();
    assert!(recovered.behind.is_empty(), "{:?}", recovered.behind);
    let g = recovered.group.expect("group");
    assert_eq!(g.epoch, 2);
    assert_eq!(g.members, vec!["n5", "n2", "n3", "n4"]);
    for i in [1, 2, 3, 4] {
        let h = held(&cluster, i).await.expect("member");
        assert_eq!(h.epoch, 2, "n{} moved", i + 1);
        assert_eq!(h.members, vec!["n5", "n2", "n3", "n4"], "n{}", i + 1);
    }

    // The repaired group signs through the second coordinator, n1 gone.
    cluster.stop_node(0).await;
    let request = cluster.request("wd-x6-k7-1", GROUP, Tier::Warm);
    let status = second
        .submit_withdrawal(cluster.sign(&request))
        .await
        .expect("submit")
        .into_inner();
    assert_eq!(status.state(), WithdrawalState::Signed, "{}", status.detail);
    assert!(
        !status.signers.iter().any(|s| s == "n1"),
        "{:?}",
        status.signers
    );
    assert_signature_valid(&group.group_public_key, &request.payload, &status.signature);
    cluster.shutdown().await;
}
