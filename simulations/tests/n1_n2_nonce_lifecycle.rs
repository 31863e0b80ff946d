//! N1 / N2: a nonce signs at most once, and a restart voids every commitment.

use permafrost_core::{Role, Tier};
use permafrost_testkit::rogue::{commit_for, package, sign_attested};
use permafrost_testkit::TestCluster;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn n1_round2_resent_is_refused() {
    let cluster = TestCluster::start(&["eu", "us", "ap"]).await;
    cluster
        .create_group("warm-1", Tier::Warm, 2, &[0, 1, 2])
        .await
        .expect("DKG");
    let mut clients: Vec<_> = (0..2)
        .map(|i| cluster.node_client(i, Role::Coordinator, "coord-x"))
        .collect();
    let request = cluster.request("wd-n1-1", "warm-1", Tier::Warm);
    let signed = cluster.sign(&request);
    let r1 = commit_for(&mut clients, "warm-1", &signed)
        .await
        .expect("round 1");
    let pkg = package(&r1.commitments, &request.payload);
    let first = clients[0]
        .sign(sign_attested(
            "warm-1",
            &r1.handles[0],
            &pkg,
            &signed,
            &r1.attestations,
        ))
        .await;
    assert!(first.is_ok(), "{first:?}");
    let again = clients[0]
        .sign(sign_attested(
            "warm-1",
            &r1.handles[0],
            &pkg,
            &signed,
            &r1.attestations,
        ))
        .await
        .expect_err("resent round 2");
    assert_eq!(again.code(), Code::FailedPrecondition);
    assert!(again.message().contains("nonce"), "{}", again.message());

    // A refused round 2 burns the nonce too: it cannot be retried with another message.
    let r1 = commit_for(&mut clients, "warm-1", &signed)
        .await
        .expect("round 1");
    let bad = package(&r1.commitments, b"not the payload");
    assert!(clients[1]
        .sign(sign_attested(
            "warm-1",
            &r1.handles[1],
            &bad,
            &signed,
            &r1.attestations
        ))
        .await
        .is_err());
    let good = package(&r1.commitments, &request.payload);
    let err = clients[1]
        .sign(sign_attested(
            "warm-1",
            &r1.handles[1],
            &good,
            &signed,
            &r1.attestations,
        ))
        .await
        .expect_err("nonce burnt by the refusal");
    assert_eq!(err.code(), Code::FailedPrecondition);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn n2_round2_after_node_restart_is_refused() {
    let mut cluster = TestCluster::start(&["eu", "us", "ap"]).await;
    cluster
        .create_group("warm-1", Tier::Warm, 2, &[0, 1, 2])
        .await
        .expect("DKG");
    let mut clients: Vec<_> = (0..2)
        .map(|i| cluster.node_client(i, Role::Coordinator, "coord-x"))
        .collect();
    let request = cluster.request("wd-n2-1", "warm-1", Tier::Warm);
    let signed = cluster.sign(&request);
    let r1 = commit_for(&mut clients, "warm-1", &signed)
        .await
        .expect("round 1");
    let pkg = package(&r1.commitments, &request.payload);
    cluster.restart_node(0).await;
    let mut client = cluster.node_client(0, Role::Coordinator, "coord-x");
    let err = client
        .sign(sign_attested(
            "warm-1",
            &r1.handles[0],
            &pkg,
            &signed,
            &r1.attestations,
        ))
        .await
        .expect_err("nonce gone after restart");
    assert_eq!(err.code(), Code::FailedPrecondition);

    // The restarted node still holds its share (sealed on disk) and signs fresh rounds.
    let status = cluster
        .custody()
        .submit_withdrawal(signed)
        .await
        .expect("submit")
        .into_inner();
    assert_eq!(
        status.state(),
        permafrost_proto::WithdrawalState::Signed,
        "{}",
        status.detail
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f5_one_request_id_never_signs_two_digests() {
    let cluster = TestCluster::start(&["eu", "us", "ap"]).await;
    cluster
        .create_group("warm-1", Tier::Warm, 2, &[0, 1, 2])
        .await
        .expect("DKG");
    let mut clients: Vec<_> = (0..2)
        .map(|i| cluster.node_client(i, Role::Coordinator, "coord-x"))
        .collect();
    let request = cluster.request("wd-f5-1", "warm-1", Tier::Warm);
    let signed = cluster.sign(&request);
    let r1 = commit_for(&mut clients, "warm-1", &signed)
        .await
        .expect("round 1");
    let pkg = package(&r1.commitments, &request.payload);
    clients[0]
        .sign(sign_attested(
            "warm-1",
            &r1.handles[0],
            &pkg,
            &signed,
            &r1.attestations,
        ))
        .await
        .expect("first digest signs");
    // A second, custody-signed request reusing the id with another amount.
    let mut other = request.clone();
    other.amount += 1;
    let signed_other = cluster.sign(&other);
    let r1 = commit_for(&mut clients, "warm-1", &signed_other)
        .await
        .expect("round 1");
    let pkg = package(&r1.commitments, &other.payload);
    let err = clients[0]
        .sign(sign_attested(
            "warm-1",
            &r1.handles[0],
            &pkg,
            &signed_other,
            &r1.attestations,
        ))
        .await
        .expect_err("second digest for the same id");
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        err.message().contains("different digest"),
        "{}",
        err.message()
    );
    cluster.shutdown().await;
}
