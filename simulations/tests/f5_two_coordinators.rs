//! F5: two coordinators drive the same request id. Safety never depends on a
//! single coordinator: every node signs at most one digest per request id.

use permafrost_core::Tier;
use permafrost_proto::{self as pb, ceremony_client::CeremonyClient, WithdrawalState};
use permafrost_testkit::{assert_signature_valid, TestCluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f5_two_coordinators_one_request_id_one_digest() {
    let mut cluster = TestCluster::start(&["eu", "us", "ap"]).await;
    let group = cluster
        .create_group("warm-1", Tier::Warm, 2, &[0, 1, 2])
        .await
        .expect("DKG");
    let (mut second, second_channel) = cluster.start_another_coordinator().await;
    // The standby learns the group from its members, not from the first coordinator.
    let adopted = CeremonyClient::new(second_channel)
        .adopt_key_group(pb::AdoptKeyGroupRequest {
            name: "warm-1".into(),
        })
        .await
        .expect("adopt")
        .into_inner();
    assert_eq!(adopted.group_public_key, group.group_public_key);

    // Both drive the same request: both sign it (same digest, fresh nonces each).
    let request = cluster.request("wd-f5-two", "warm-1", Tier::Warm);
    let signed = cluster.sign(&request);
    let mut first = cluster.custody();
    let (a, b) = tokio::join!(
        first.submit_withdrawal(signed.clone()),
        second.submit_withdrawal(signed.clone())
    );
    let (a, b) = (
        a.expect("coord-1").into_inner(),
        b.expect("coord-2").into_inner(),
    );
    for s in [&a, &b] {
        assert_eq!(s.state(), WithdrawalState::Signed, "{}", s.detail);
        assert_signature_valid(&group.group_public_key, &request.payload, &s.signature);
    }

    // A coordinator that has never seen the id refuses nothing itself, but is
    // handed a different request under it: no node signs a second digest.
    let (mut third, third_channel) = cluster.start_another_coordinator().await;
    CeremonyClient::new(third_channel)
        .adopt_key_group(pb::AdoptKeyGroupRequest {
            name: "warm-1".into(),
        })
        .await
        .expect("adopt");
    let mut other = request.clone();
    other.destination = "bc1qsomewhereelse".into();
    let status = third
        .submit_withdrawal(cluster.sign(&other))
        .await
        .expect("submit")
        .into_inner();
    assert_eq!(status.state(), WithdrawalState::Failed);
    assert!(
        status.detail.contains("different digest"),
        "{}",
        status.detail
    );
    assert!(status.signature.is_empty());
    cluster.shutdown().await;
}
