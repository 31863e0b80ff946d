//! Manual sealing: a sealed node refuses every signing and ceremony call until
//! an operator unseals it over mTLS, and can be sealed again at any time.

use permafrost_core::{Role, Tier};
use permafrost_proto::{self as pb, node_admin_client::NodeAdminClient};
use permafrost_testkit::{ClusterOptions, TestCluster};
use permafrostctl::pki;
use std::time::Duration;
use tonic::Code;

fn admin(
    cluster: &TestCluster,
    i: usize,
    role: Role,
    id: &str,
) -> NodeAdminClient<tonic::transport::Channel> {
    let tls = cluster.credential(role, id);
    let node = &cluster.nodes[i];
    NodeAdminClient::new(
        tls.channel(
            &node.addr.to_string(),
            &pki::server_name(Role::Node, node.id.as_str()),
            Duration::from_secs(10),
        )
        .expect("channel"),
    )
}

const PASSPHRASE: &str = "cold storage is a process";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_node_refuses_and_unsealed_node_signs() {
    let mut cluster = TestCluster::start_with(ClusterOptions {
        regions: vec!["eu".into(), "us".into(), "ap".into()],
        manual_seal: vec![0, 1, 2],
        ..Default::default()
    })
    .await;
    let status = admin(&cluster, 0, Role::Operator, "operator-1")
        .get_status(pb::NodeStatusRequest {})
        .await
        .expect("status")
        .into_inner();
    assert!(status.sealed);

    // Sealed: the ceremony is refused, naming the reason.
    let err = cluster
        .create_group("cold-1", Tier::Cold, 2, &[0, 1, 2])
        .await
        .expect_err("sealed");
    assert!(err.message().contains("sealed"), "{}", err.message());

    // Only operators may unseal; the coordinator's certificate is refused.
    let err = admin(&cluster, 0, Role::Coordinator, "coord-1")
        .unseal(pb::UnsealRequest {
            passphrase: PASSPHRASE.into(),
        })
        .await
        .expect_err("coordinator may not unseal");
    assert_eq!(err.code(), Code::PermissionDenied);

    for i in 0..3 {
        let s = admin(&cluster, i, Role::Operator, "operator-1")
            .unseal(pb::UnsealRequest {
                passphrase: PASSPHRASE.into(),
            })
            .await
            .expect("unseal")
            .into_inner();
        assert!(!s.sealed);
    }
    cluster
        .create_group("cold-1", Tier::Cold, 2, &[0, 1, 2])
        .await
        .expect("DKG once unsealed");

    // Seal n1 again: it refuses round 1, the others still sign.
    let s = admin(&cluster, 0, Role::Operator, "operator-1")
        .seal(pb::SealRequest {})
        .await
        .expect("seal")
        .into_inner();
    assert!(s.sealed);
    let err = cluster
        .node_client(0, Role::Coordinator, "coord-1")
        .commit(pb::CommitRequest {
            key_group: "cold-1".into(),
            count: 1,
            ..Default::default()
        })
        .await
        .expect_err("sealed node commits nothing");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("sealed"), "{}", err.message());
    let mut request = cluster.request("wd-seal-1", "cold-1", Tier::Cold);
    request.destination = permafrost_testkit::WARM_WALLET.into();
    cluster
        .custody()
        .submit_withdrawal(cluster.sign(&request))
        .await
        .expect("submit");
    cluster
        .custody()
        .submit_approval(cluster.approve(&request, "alice", 600))
        .await
        .expect("alice");
    cluster
        .custody()
        .submit_approval(cluster.approve(&request, "bob", 600))
        .await
        .expect("bob");
    let s = cluster.wait_signed("wd-seal-1").await;
    assert!(!s.signers.contains(&"n1".to_string()));

    // A wrong passphrase is refused; the right one unseals.
    let err = admin(&cluster, 0, Role::Operator, "operator-1")
        .unseal(pb::UnsealRequest {
            passphrase: "not the passphrase".into(),
        })
        .await
        .expect_err("wrong passphrase");
    assert_eq!(err.code(), Code::PermissionDenied);
    admin(&cluster, 0, Role::Operator, "operator-1")
        .unseal(pb::UnsealRequest {
            passphrase: PASSPHRASE.into(),
        })
        .await
        .expect("unseal");

    // A restart brings the node back sealed.
    cluster.restart_node(1).await;
    let s = admin(&cluster, 1, Role::Operator, "operator-1")
        .get_status(pb::NodeStatusRequest {})
        .await
        .expect("status")
        .into_inner();
    assert!(s.sealed, "manual-seal nodes start sealed");
    cluster.shutdown().await;
}
