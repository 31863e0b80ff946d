//! P1 velocity, P2 allowlist, P3 tier and time-lock: enforced by the signer
//! nodes themselves, not only by the coordinator.

use permafrost_core::{Role, Tier};
use permafrost_proto::WithdrawalState;
use permafrost_testkit::rogue::sign_directly;
use permafrost_testkit::{default_policy, ClusterOptions, TestCluster, WARM_WALLET};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p1_velocity_split_across_small_withdrawals_refused_past_the_cap_on_every_node() {
    let cluster = TestCluster::start(&["eu", "us", "ap"]).await;
    // 3-of-3, so every node's own ledger sees every withdrawal.
    cluster
        .create_group("warm-2", Tier::Warm, 3, &[0, 1, 2])
        .await
        .expect("DKG");
    // Daily cap 20 BTC; 0.5 BTC each needs no approval: 40 fit, the 41st does not.
    let mut first = None;
    for i in 0..40 {
        let request = cluster.request(&format!("wd-p1-{i}"), "warm-2", Tier::Warm);
        first.get_or_insert_with(|| request.clone());
        let status = cluster
            .custody()
            .submit_withdrawal(cluster.sign(&request))
            .await
            .expect("submit")
            .into_inner();
        assert_eq!(
            status.state(),
            WithdrawalState::Signed,
            "withdrawal {i}: {}",
            status.detail
        );
    }
    let over = cluster.request("wd-p1-over", "warm-2", Tier::Warm);
    let status = cluster
        .custody()
        .submit_withdrawal(cluster.sign(&over))
        .await
        .expect("submit")
        .into_inner();
    assert_eq!(status.state(), WithdrawalState::Failed);
    assert!(status.detail.contains("velocity"), "{}", status.detail);
    assert_eq!(
        status.reason(),
        permafrost_proto::WithdrawalReason::RefusedBySigners
    );
    // Each node refuses on its own ledger, asked directly.
    let mut clients: Vec<_> = (0..3)
        .map(|i| cluster.node_client(i, Role::Coordinator, "rogue"))
        .collect();
    let fresh = cluster.request("wd-p1-direct", "warm-2", Tier::Warm);
    let answers = sign_directly(
        &mut clients,
        "warm-2",
        &cluster.sign(&fresh),
        &fresh.payload,
        &[],
    )
    .await;
    for (i, answer) in answers.into_iter().enumerate() {
        let err = answer.expect_err("over the daily cap");
        assert_eq!(err.code(), Code::PermissionDenied, "node {i}");
        assert!(err.message().contains("velocity"), "{}", err.message());
    }
    // A re-sign of an already signed request (a coordinator failover) is not counted twice:
    // even at the cap, every node signs it again.
    let again = first.expect("first request");
    let answers = sign_directly(
        &mut clients,
        "warm-2",
        &cluster.sign(&again),
        &again.payload,
        &[],
    )
    .await;
    for (i, answer) in answers.into_iter().enumerate() {
        answer.unwrap_or_else(|e| panic!("node {i} refused a re-sign: {}", e.message()));
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2_p3_allowlist_tier_and_time_lock_enforced_by_nodes() {
    let policy = default_policy().replace(
        "[groups.cold-1]\ntier = \"cold\"\n",
        "[groups.cold-1]\ntier = \"cold\"\ntime_lock_secs = 3\n",
    );
    let cluster = TestCluster::start_with(ClusterOptions {
        regions: vec!["eu".into(), "us".into(), "ap".into()],
        policy: Some(policy),
        ..Default::default()
    })
    .await;
    cluster
        .create_group("cold-1", Tier::Cold, 2, &[0, 1, 2])
        .await
        .expect("DKG");
    let mut clients: Vec<_> = (0..2)
        .map(|i| cluster.node_client(i, Role::Coordinator, "rogue"))
        .collect();

    // P2: not on the allowlist — the coordinator refuses fast, and so does every node asked directly.
    let bad_dest = cluster.request("wd-p2", "cold-1", Tier::Cold);
    let err = cluster
        .custody()
        .submit_withdrawal(cluster.sign(&bad_dest))
        .await
        .expect_err("allowlist");
    assert!(err.message().contains("allowlist"), "{}", err.message());
    let approvals = vec![
        cluster.approve(&bad_dest, "alice", 600),
        cluster.approve(&bad_dest, "bob", 600),
    ];
    let answers = sign_directly(
        &mut clients,
        "cold-1",
        &cluster.sign(&bad_dest),
        &bad_dest.payload,
        &approvals,
    )
    .await;
    for (i, answer) in answers.into_iter().enumerate() {
        let err = answer.expect_err("allowlist");
        assert!(
            err.message().contains("allowlist"),
            "node {i}: {}",
            err.message()
        );
    }

    // P3: a cold request submitted as warm.
    let mut as_warm = cluster.request("wd-p3-warm", "cold-1", Tier::Warm);
    as_warm.destination = WARM_WALLET.into();
    let err = cluster
        .custody()
        .submit_withdrawal(cluster.sign(&as_warm))
        .await
        .expect_err("tier");
    assert!(err.message().contains("tier"), "{}", err.message());
    // (A node already refuses to reserve for it in round 1.)
    let answers = sign_directly(
        &mut clients,
        "cold-1",
        &cluster.sign(&as_warm),
        &as_warm.payload,
        &[],
    )
    .await;
    for answer in answers {
        let err = answer.expect_err("tier");
        assert_eq!(err.code(), Code::PermissionDenied);
    }

    // P3: before its time-lock, nodes say "not yet"; after it, the cluster signs.
    let mut cold = cluster.request("wd-p3-lock", "cold-1", Tier::Cold);
    cold.destination = WARM_WALLET.into();
    let approvals = vec![
        cluster.approve(&cold, "alice", 600),
        cluster.approve(&cold, "bob", 600),
    ];
    let answers = sign_directly(
        &mut clients,
        "cold-1",
        &cluster.sign(&cold),
        &cold.payload,
        &approvals,
    )
    .await;
    let err = answers
        .into_iter()
        .next()
        .expect("one answer per client")
        .expect_err("time-locked");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("time-locked"), "{}", err.message());

    let status = cluster
        .custody()
        .submit_withdrawal(cluster.sign(&cold))
        .await
        .expect("submit")
        .into_inner();
    assert_eq!(status.state(), WithdrawalState::Pending);
    for a in approvals {
        cluster
            .custody()
            .submit_approval(a)
            .await
            .expect("approval");
    }
    cluster.wait_signed("wd-p3-lock").await;
    cluster.shutdown().await;
}
