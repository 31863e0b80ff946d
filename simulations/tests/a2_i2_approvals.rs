//! A2: approvals bound to one request and an expiry. I2: one approver key
//! counts once, and nobody approves their own request.

use permafrost_core::Tier;
use permafrost_proto::WithdrawalState;
use permafrost_testkit::{TestCluster, WARM_WALLET};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a2_i2_approvals_replayed_expired_duplicated_or_self_are_not_counted() {
    let cluster = TestCluster::start(&["eu", "us", "ap"]).await;
    cluster
        .create_group("cold-1", Tier::Cold, 2, &[0, 1, 2])
        .await
        .expect("DKG");
    let mut first = cluster.request("wd-a2-1", "cold-1", Tier::Cold);
    first.destination = WARM_WALLET.into();
    let mut second = cluster.request("wd-a2-2", "cold-1", Tier::Cold);
    second.destination = WARM_WALLET.into();
    second.requested_by = "carol".into();
    for r in [&first, &second] {
        let s = cluster
            .custody()
            .submit_withdrawal(cluster.sign(r))
            .await
            .expect("submit")
            .into_inner();
        assert_eq!(s.state(), WithdrawalState::Pending);
        assert_eq!(s.approvals_missing, 2);
    }

    // A2: alice's approval of the first request replayed on the second.
    let mut replay = cluster.approve(&first, "alice", 600);
    replay.request_id = "wd-a2-2".into();
    let err = cluster
        .custody()
        .submit_approval(replay)
        .await
        .expect_err("replay");
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        err.message().contains("does not cover"),
        "{}",
        err.message()
    );

    // A2: an approval that has expired.
    let stale = cluster.approve(&second, "alice", 1);
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let err = cluster
        .custody()
        .submit_approval(stale)
        .await
        .expect_err("expired");
    assert!(err.message().contains("expired"), "{}", err.message());

    // I2: the requester (carol) cannot approve her own request.
    let err = cluster
        .custody()
        .submit_approval(cluster.approve(&second, "carol", 600))
        .await
        .expect_err("self-approval");
    assert!(err.message().contains("own request"), "{}", err.message());

    // I2: the same approver twice counts once.
    cluster
        .custody()
        .submit_approval(cluster.approve(&second, "alice", 600))
        .await
        .expect("alice");
    let s = cluster
        .custody()
        .submit_approval(cluster.approve(&second, "alice", 900))
        .await
        .expect("alice again")
        .into_inner();
    assert_eq!(s.state(), WithdrawalState::Pending);
    assert_eq!(s.approvals_missing, 1);
    assert_eq!(s.approvals, vec!["alice".to_string()]);

    // A distinct second approver completes it.
    let s = cluster
        .custody()
        .submit_approval(cluster.approve(&second, "bob", 600))
        .await
        .expect("bob")
        .into_inner();
    assert_eq!(s.state(), WithdrawalState::Signed, "{}", s.detail);
    cluster.shutdown().await;
}
