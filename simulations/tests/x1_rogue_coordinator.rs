//! X1: a coordinator (valid coordinator certificate) asks nodes directly to sign
//! things no custody service authorized. Every node refuses.

use permafrost_core::{Role, Tier};
use permafrost_proto::{self as pb};
use permafrost_testkit::rogue::{commit_all, package, sign_directly};
use permafrost_testkit::TestCluster;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x1_nodes_refuse_unauthorized_messages() {
    let cluster = TestCluster::start(&["eu", "us", "ap"]).await;
    cluster
        .create_group("warm-1", Tier::Warm, 2, &[0, 1, 2])
        .await
        .expect("DKG");
    let mut clients: Vec<_> = (0..3)
        .map(|i| cluster.node_client(i, Role::Coordinator, "rogue"))
        .collect();
    let request = cluster.request("wd-x1-1", "warm-1", Tier::Warm);
    let valid = cluster.sign(&request);

    // 1. Random bytes as the message, with a valid withdrawal attached.
    let answers = sign_directly(&mut clients, "warm-1", &valid, &[0x42; 32], &[]).await;
    for (i, answer) in answers.into_iter().enumerate() {
        let err = answer.expect_err("random bytes");
        assert_eq!(
            err.code(),
            Code::PermissionDenied,
            "node {i}: {}",
            err.message()
        );
        assert!(err.message().contains("message"), "{}", err.message());
    }

    // 2. The valid request's payload, but the destination changed.
    // (Round 1 already refuses to reserve for it.)
    let mut altered = valid.clone();
    altered.request.as_mut().expect("request").destination = "bc1qattacker".into();
    let answers = sign_directly(&mut clients, "warm-1", &altered, &request.payload, &[]).await;
    for answer in answers {
        let err = answer.expect_err("altered");
        assert_eq!(err.code(), Code::PermissionDenied);
        assert!(
            err.message().contains("custody signature"),
            "{}",
            err.message()
        );
    }

    // 3. No custody signature at all / signed by another key.
    let mut forged = valid.clone();
    forged.custody_signature = vec![7; 64];
    let answers = sign_directly(&mut clients, "warm-1", &forged, &request.payload, &[]).await;
    for answer in answers {
        let err = answer.expect_err("forged");
        assert_eq!(err.code(), Code::PermissionDenied);
    }

    // 4. An "activation test" of an active group: the activation path is closed once active.
    let (commitments, handles) = commit_all(&mut clients, "warm-1").await;
    let pkg = package(&commitments, &[1; 32]);
    for (i, c) in clients.iter_mut().enumerate() {
        let err = c
            .sign(pb::SignRequest {
                reservation: Vec::new(),
                epoch: 0,
                key_group: "warm-1".into(),
                nonce_handles: vec![handles[i].clone()],
                signing_packages: vec![pkg.clone()],
                target: Some(pb::sign_request::Target::Activation(pb::ActivationTest {})),
                approvals: vec![],
                attestations: vec![],
            })
            .await
            .expect_err("activation of active group");
        assert_eq!(err.code(), Code::PermissionDenied);
    }

    // 5. Activation with a bogus test signature is refused (blame and state changes need evidence).
    let err = clients[0]
        .activate_group(pb::ActivateGroupRequest {
            group: "warm-1".into(),
            test_signature: vec![2; 65],
        })
        .await;
    // Already active: accepted as a no-op; a pending group would verify the signature (see the DKG tests).
    assert!(err.is_ok());

    // After all that, nothing was journaled as signed and the honest path still works.
    let status = cluster
        .custody()
        .submit_withdrawal(valid)
        .await
        .expect("submit")
        .into_inner();
    assert_eq!(
        status.state(),
        pb::WithdrawalState::Signed,
        "{}",
        status.detail
    );
    cluster.shutdown().await;
}
