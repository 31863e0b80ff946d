//! Share repair: a permanently lost member's share is rebuilt on a replacement
//! by `t` helpers; the group key is unchanged and the lost node is revoked.

use permafrost_core::Tier;
use permafrost_proto::{self as pb, WithdrawalState};
use permafrost_testkit::{approved, assert_signature_valid, wire, TestCluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_of_a_lost_node_then_signing_with_the_replacement() {
    let mut cluster = TestCluster::start(&["eu", "us", "ap", "ap"]).await;
    let group = cluster
        .create_group("warm-1", Tier::Warm, 2, &[0, 1, 2])
        .await
        .expect("DKG");
    cluster.stop_node(2).await; // n3 is lost for good
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await; // let health probes notice

    let first = approved(&cluster.repair_spec("warm-1", "n3", "n4").await, &[1, 2]);
    let repaired = cluster.repair_group_with(&first).await.expect("repair");
    assert_eq!(
        repaired.group_public_key, group.group_public_key,
        "group key unchanged"
    );
    assert_eq!(repaired.members, vec!["n1", "n2", "n4"]);

    // A rogue coordinator cannot gather a second member's share on the same node:
    // helpers committed to the new membership and epoch before they helped, and
    // the operators' approval of the first repair names n3, not n2.
    let mut n1 = cluster.node_client(0, permafrost_core::Role::Coordinator, "rogue");
    for members in [vec!["n1", "n2", "n3"], vec!["n1", "n2", "n4"]] {
        let err = n1
            .repair_deltas(pb::RepairRequest {
                spec: Some(pb::RepairSpec {
                    repair_id: "rogue".into(),
                    group: "warm-1".into(),
                    threshold: 2,
                    members: members.iter().map(|m| m.to_string()).collect(),
                    lost: "n2".into(),
                    replacement: "n4".into(),
                    helpers: vec!["n1".into(), "n3".into()],
                    tier: pb::Tier::Warm as i32,
                    authorization: first.spec.digest().0.to_vec(),
                    removed: Vec::new(),
                }),
                messages: vec![],
                public_key_package: vec![],
                authorization: Some(wire(&first)),
                acks: vec![],
                registry_changes: vec![],
            })
            .await
            .expect_err("second repair onto the same node");
        assert!(
            matches!(
                err.code(),
                tonic::Code::PermissionDenied | tonic::Code::InvalidArgument
            ),
            "{err:?}"
        );
    }

    // Sign with the replacement: n1 is down too, so only {n2, n4} can sign.
    cluster.stop_node(0).await;
    let request = cluster.request("wd-repair-1", "warm-1", Tier::Warm);
    let status = cluster
        .custody()
        .submit_withdrawal(cluster.sign(&request))
        .await
        .expect("submit")
        .into_inner();
    assert_eq!(status.state(), WithdrawalState::Signed, "{}", status.detail);
    let mut signers = status.signers.clone();
    signers.sort();
    assert_eq!(signers, vec!["n2", "n4"]);
    assert_signature_valid(&group.group_public_key, &request.payload, &status.signature);

    // The lost node comes back: it is revoked and never used again.
    cluster.restart_node(2).await;
    let err = cluster
        .create_group("warm-2", Tier::Warm, 2, &[1, 2, 3])
        .await
        .expect_err("revoked member");
    assert!(err.message().contains("n3"), "{}", err.message());
    cluster.shutdown().await;
}
