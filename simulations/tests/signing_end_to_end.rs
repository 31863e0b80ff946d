//! DKG then signing through the real coordinator and nodes over mTLS; the
//! signature is checked with the FROST verifier, and resubmission is idempotent.

use permafrost_core::Tier;
use permafrost_proto::WithdrawalState;
use permafrost_testkit::{assert_signature_valid, TestCluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dkg_then_sign_signature_verifies() {
    let cluster = TestCluster::start(&["eu", "eu", "us", "us", "ap"]).await;
    let warm = cluster
        .create_group("warm-1", Tier::Warm, 2, &[0, 2, 4])
        .await
        .expect("warm DKG");
    assert!(warm.active);
    assert_eq!(warm.group_public_key.len(), 33);
    let cold = cluster
        .create_group("cold-1", Tier::Cold, 3, &[0, 1, 2, 3, 4])
        .await
        .expect("cold DKG");
    assert_ne!(warm.group_public_key, cold.group_public_key);

    // Invariant 6: every member holds the same group key.
    for i in [0, 2, 4] {
        let status = cluster
            .node_client(i, permafrost_core::Role::Coordinator, "probe")
            .get_status(permafrost_proto::NodeStatusRequest {})
            .await
            .expect("status")
            .into_inner();
        let g = status
            .key_groups
            .iter()
            .find(|g| g.name == "warm-1")
            .expect("member holds group");
        assert_eq!(g.group_public_key, warm.group_public_key);
        assert!(g.active);
    }

    let request = cluster.request("wd-e2e-1", "warm-1", Tier::Warm);
    let status = cluster
        .custody()
        .submit_withdrawal(cluster.sign(&request))
        .await
        .expect("submit")
        .into_inner();
    assert_eq!(status.state(), WithdrawalState::Signed, "{}", status.detail);
    assert_eq!(status.message, request.payload);
    assert_eq!(status.digest, request.digest().0.to_vec());
    assert_eq!(status.signers.len(), 2);
    assert_signature_valid(&warm.group_public_key, &request.payload, &status.signature);
    // Signers were spread across regions first.
    let regions: std::collections::BTreeSet<_> = status
        .signers
        .iter()
        .map(|s| {
            cluster
                .nodes
                .iter()
                .find(|n| n.id.as_str() == s)
                .expect("node")
                .region
                .clone()
        })
        .collect();
    assert_eq!(regions.len(), 2);

    let mut request = cluster.request("wd-e2e-2", "cold-1", Tier::Cold);
    request.destination = permafrost_testkit::WARM_WALLET.into();
    let status = cluster
        .custody()
        .submit_withdrawal(cluster.sign(&request))
        .await
        .expect("submit")
        .into_inner();
    assert_eq!(
        status.state(),
        WithdrawalState::Pending,
        "cold funds wait for people"
    );
    assert_eq!(status.approvals_missing, 2);
    cluster
        .custody()
        .submit_approval(cluster.approve(&request, "alice", 600))
        .await
        .expect("approve");
    let status = cluster
        .custody()
        .submit_approval(cluster.approve(&request, "bob", 600))
        .await
        .expect("approve")
        .into_inner();
    assert_eq!(status.state(), WithdrawalState::Signed, "{}", status.detail);
    assert_eq!(
        status.approvals,
        vec!["alice".to_string(), "bob".to_string()]
    );
    assert_signature_valid(&cold.group_public_key, &request.payload, &status.signature);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_resubmission_returns_same_result_even_after_coordinator_restart() {
    let mut cluster = TestCluster::start(&["eu", "us", "ap"]).await;
    cluster
        .create_group("warm-1", Tier::Warm, 2, &[0, 1, 2])
        .await
        .expect("DKG");
    let request = cluster.request("wd-idem-1", "warm-1", Tier::Warm);
    let signed = cluster.sign(&request);
    let first = cluster
        .custody()
        .submit_withdrawal(signed.clone())
        .await
        .expect("submit")
        .into_inner();
    assert_eq!(first.state(), WithdrawalState::Signed, "{}", first.detail);
    let again = cluster
        .custody()
        .submit_withdrawal(signed.clone())
        .await
        .expect("resubmit")
        .into_inner();
    assert_eq!(again.signature, first.signature);
    assert_eq!(again.signers, first.signers);
    assert_eq!(
        again.attempts, first.attempts,
        "no new signing round was run"
    );

    cluster.restart_coordinator().await;
    let after = cluster
        .custody()
        .submit_withdrawal(signed)
        .await
        .expect("resubmit after restart")
        .into_inner();
    assert_eq!(after.signature, first.signature);
    let got = cluster
        .custody()
        .get_withdrawal(permafrost_proto::GetWithdrawalRequest {
            request_id: "wd-idem-1".into(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(got.signature, first.signature);

    // The same id with a different request is refused, naming the reason.
    let mut other = request.clone();
    other.amount += 1;
    let err = cluster
        .custody()
        .submit_withdrawal(cluster.sign(&other))
        .await
        .expect_err("id reuse");
    assert_eq!(err.code(), tonic::Code::AlreadyExists);
    assert!(err.message().contains("wd-idem-1"), "{}", err.message());
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_signer_is_replaced_by_another_subset() {
    let mut cluster = TestCluster::start(&["eu", "us", "ap"]).await;
    let group = cluster
        .create_group("warm-1", Tier::Warm, 2, &[0, 1, 2])
        .await
        .expect("DKG");
    cluster.stop_node(0).await;
    let request = cluster.request("wd-lost-1", "warm-1", Tier::Warm);
    let status = cluster
        .custody()
        .submit_withdrawal(cluster.sign(&request))
        .await
        .expect("submit")
        .into_inner();
    assert_eq!(status.state(), WithdrawalState::Signed, "{}", status.detail);
    assert!(!status.signers.contains(&"n1".to_string()));
    assert_signature_valid(&group.group_public_key, &request.payload, &status.signature);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_with_reasons() {
    let cluster = TestCluster::start(&["eu", "us", "ap"]).await;
    cluster
        .create_group("warm-1", Tier::Warm, 2, &[0, 1, 2])
        .await
        .expect("DKG");
    // Tier mismatch: the coordinator fails fast with the same check the nodes run.
    let request = cluster.request("wd-bad-1", "warm-1", Tier::Cold);
    let err = cluster
        .custody()
        .submit_withdrawal(cluster.sign(&request))
        .await
        .expect_err("tier");
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert!(err.message().contains("tier"), "{}", err.message());
    // Malformed field.
    let mut wire = cluster.sign(&cluster.request("wd-bad-2", "warm-1", Tier::Warm));
    wire.request.as_mut().expect("request").amount = "12abc".into();
    let err = cluster
        .custody()
        .submit_withdrawal(wire)
        .await
        .expect_err("amount");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("amount"), "{}", err.message());
    // Unknown group.
    let request = cluster.request("wd-bad-3", "nope", Tier::Warm);
    let err = cluster
        .custody()
        .submit_withdrawal(cluster.sign(&request))
        .await
        .expect_err("group");
    assert_eq!(err.code(), tonic::Code::NotFound);
    // A DKG over a group name already taken is refused.
    let err = cluster
        .create_group("warm-1", Tier::Warm, 2, &[0, 1, 2])
        .await
        .expect_err("dup");
    assert_eq!(err.code(), tonic::Code::AlreadyExists);
    // Threshold above member count.
    let err = cluster
        .create_group("warm-2", Tier::Warm, 4, &[0, 1, 2])
        .await
        .expect_err("threshold");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("threshold"), "{}", err.message());
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn below_threshold_is_reported_fast_and_signed_when_members_return() {
    let mut cluster = TestCluster::start(&["eu", "us", "ap"]).await;
    let group = cluster
        .create_group("warm-1", Tier::Warm, 2, &[0, 1, 2])
        .await
        .expect("DKG");
    cluster.stop_node(0).await;
    cluster.stop_node(1).await;
    let request = cluster.request("wd-below-1", "warm-1", Tier::Warm);
    let started = std::time::Instant::now();
    let status = cluster
        .custody()
        .submit_withdrawal(cluster.sign(&request))
        .await
        .expect("submit")
        .into_inner();
    let elapsed = started.elapsed();
    assert_eq!(status.state(), WithdrawalState::Pending);
    assert_eq!(status.detail, "below threshold: 1 of 2 reachable");
    assert_eq!(
        status.reason(),
        permafrost_proto::WithdrawalReason::BelowThreshold
    );
    assert!(
        elapsed < std::time::Duration::from_secs(5),
        "took {elapsed:?}"
    );
    cluster.restart_node(1).await;
    let s = cluster.wait_signed("wd-below-1").await;
    assert_signature_valid(&group.group_public_key, &request.payload, &s.signature);
    cluster.shutdown().await;
}
