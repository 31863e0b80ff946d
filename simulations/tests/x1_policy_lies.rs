//! X1: a coordinator that lies about approvals or policy still gets no share.

use permafrost_core::{Role, Tier};
use permafrost_testkit::rogue::sign_directly;
use permafrost_testkit::{TestCluster, WARM_WALLET};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x1_lies_about_approvals_or_limits_get_no_share() {
    let cluster = TestCluster::start(&["eu", "us", "ap"]).await;
    cluster
        .create_group("cold-1", Tier::Cold, 2, &[0, 1, 2])
        .await
        .expect("DKG");
    cluster
        .create_group("warm-1", Tier::Warm, 2, &[0, 1, 2])
        .await
        .expect("DKG");
    let mut clients: Vec<_> = (0..3)
        .map(|i| cluster.node_client(i, Role::Coordinator, "rogue"))
        .collect();
    let mut cold = cluster.request("wd-x1p-1", "cold-1", Tier::Cold);
    cold.destination = WARM_WALLET.into();
    let other = cluster.request("wd-x1p-other", "cold-1", Tier::Cold);
    let alice = cluster.approve(&cold, "alice", 600);

    let lies: Vec<(&str, Vec<permafrost_proto::Approval>)> = vec![
        ("no approvals", vec![]),
        (
            "one approval counted twice",
            vec![alice.clone(), alice.clone()],
        ),
        (
            "an approval of another request",
            vec![alice.clone(), cluster.approve(&other, "bob", 600)],
        ),
        ("a forged signature", {
            let mut forged = cluster.approve(&cold, "bob", 600);
            forged.signature[0] ^= 1;
            vec![alice.clone(), forged]
        }),
        ("an unregistered approver", {
            let mut mallory = cluster.approve(&cold, "carol", 600);
            mallory.approver_id = "mallory".into();
            vec![alice.clone(), mallory]
        }),
    ];
    for (what, approvals) in lies {
        let answers = sign_directly(
            &mut clients,
            "cold-1",
            &cluster.sign(&cold),
            &cold.payload,
            &approvals,
        )
        .await;
        for (i, answer) in answers.into_iter().enumerate() {
            let err = answer.expect_err(what);
            assert!(
                matches!(
                    err.code(),
                    Code::FailedPrecondition | Code::PermissionDenied
                ),
                "{what}, node {i}: {err:?}"
            );
            assert!(
                err.message().contains("approval"),
                "{what}: {}",
                err.message()
            );
        }
    }

    // Over the per-request limit (10 BTC) with one approval, claimed fine by the coordinator.
    let mut big = cluster.request("wd-x1p-big", "warm-1", Tier::Warm);
    big.amount = 1_000_000_001;
    let answers = sign_directly(
        &mut clients,
        "warm-1",
        &cluster.sign(&big),
        &big.payload,
        &[cluster.approve(&big, "alice", 600)],
    )
    .await;
    for answer in answers {
        let err = answer.expect_err("over the limit");
        assert_eq!(err.code(), Code::PermissionDenied);
        assert!(
            err.message().contains("per-request limit"),
            "{}",
            err.message()
        );
    }
    cluster.shutdown().await;
}
