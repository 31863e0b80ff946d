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

const PASSPHRASE: &str = permafrost_testkit::UNSEAL_PASSPHRASE;

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
            bank: false,
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
    tokio::time::sleep(Duration::from_millis(1100)).await; // the first wrong attempt's backoff
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

/// The node's audit log, as text.
fn audit_text(cluster: &TestCluster, i: usize) -> String {
    std::fs::read_to_string(cluster.nodes[i].config.audit_path()).expect("audit log")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unseal_by_a_first_operator_never_sets_the_passphrase() {
    let mut cluster = TestCluster::start_with(ClusterOptions {
        regions: vec!["eu".into(), "us".into(), "ap".into()],
        manual_seal: vec![0, 1, 2],
        ..Default::default()
    })
    .await;
    // The passphrase was set at init: whoever comes first with another one is refused.
    let err = admin(&cluster, 0, Role::Operator, "operator-7")
        .unseal(pb::UnsealRequest {
            passphrase: "a passphrase of my own choosing".into(),
        })
        .await
        .expect_err("a first unseal sets nothing");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let s = admin(&cluster, 0, Role::Operator, "operator-1")
        .unseal(pb::UnsealRequest {
            passphrase: PASSPHRASE.into(),
        })
        .await
        .expect("the passphrase set at init unseals")
        .into_inner();
    assert!(!s.sealed);
    let audit = audit_text(&cluster, 0);
    assert!(
        audit.contains("unseal_refused") && audit.contains("operator-7"),
        "the refused attempt is audited with its operator"
    );
    assert!(audit.contains("\"unsealed\"") && audit.contains("operator-1"));
    admin(&cluster, 0, Role::Operator, "operator-2")
        .seal(pb::SealRequest {})
        .await
        .expect("any one operator may seal");
    assert!(audit_text(&cluster, 0).contains("operator-2"));

    // Deleting the unseal state does not reset the passphrase: n2 refuses to
    // unseal, and to start, rather than take a new one.
    let state = cluster.nodes[1]
        .config
        .data_dir
        .join("manual-seal")
        .join("sealer.json");
    std::fs::remove_file(&state).expect("delete the unseal state");
    let err = admin(&cluster, 1, Role::Operator, "operator-7")
        .unseal(pb::UnsealRequest {
            passphrase: "a passphrase of my own choosing".into(),
        })
        .await
        .expect_err("no state, no unseal");
    assert!(
        err.message().contains("set at `permafrost-node init`"),
        "{}",
        err.message()
    );
    cluster.stop_node(1).await;
    let err =
        permafrost_node::SignerNode::open(&cluster.nodes[1].config).expect_err("refuses to start");
    assert!(err.to_string().contains("never by a first unseal"), "{err}");

    // A manually sealed node cannot even be initialized without its unseal passphrase.
    let mut fresh = cluster.nodes[2].config.clone();
    fresh.data_dir = cluster.dir.path().join("fresh-node");
    let err = permafrost_node::init(&fresh).expect_err("no unseal passphrase");
    assert!(err.to_string().contains("set here, at init"), "{err}");
    assert!(permafrost_node::init_with(&fresh, Some("short")).is_err());
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_wrong_unseals_back_off() {
    let cluster = TestCluster::start_with(ClusterOptions {
        regions: vec!["eu".into(), "us".into(), "ap".into()],
        manual_seal: vec![0],
        ..Default::default()
    })
    .await;
    let unseal = |passphrase: &str| {
        let mut c = admin(&cluster, 0, Role::Operator, "operator-1");
        let passphrase = passphrase.to_string();
        async move { c.unseal(pb::UnsealRequest { passphrase }).await }
    };
    let err = unseal("guess number one").await.expect_err("wrong");
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        err.message().contains("next attempt in 1 s"),
        "{}",
        err.message()
    );
    // Inside the backoff even the right passphrase is not tried.
    let err = unseal(PASSPHRASE).await.expect_err("backing off");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("next attempt"), "{}", err.message());
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let err = unseal("guess number two").await.expect_err("wrong");
    assert!(
        err.message().contains("next attempt in 2 s"),
        "{}",
        err.message()
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let err = unseal(PASSPHRASE)
        .await
        .expect_err("still backing off (2 s)");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let s = unseal(PASSPHRASE)
        .await
        .expect("unseals after the wait")
        .into_inner();
    assert!(!s.sealed);
    let audit = audit_text(&cluster, 0);
    assert_eq!(audit.matches("\"unseal_refused\"").count(), 2, "{audit}");
    assert_eq!(audit.matches("\"unseal_throttled\"").count(), 2, "{audit}");
    cluster.shutdown().await;
}
