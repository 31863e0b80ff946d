//! A1 / X4: identity comes from the mTLS certificate only. A missing
//! certificate, one from another CA, or one of the wrong role is refused.

use std::time::Duration;

use permafrost_core::Role;
use permafrost_proto::{
    self as pb, ceremony_client::CeremonyClient, custody_client::CustodyClient,
    signer_node_client::SignerNodeClient,
};
use permafrost_testkit::TestCluster;
use permafrostctl::pki;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
use tonic::Code;

fn get() -> pb::GetWithdrawalRequest {
    pb::GetWithdrawalRequest {
        request_id: "any".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a1_x4_missing_foreign_and_wrong_role_certificates_are_refused() {
    let cluster = TestCluster::start(&["eu", "us"]).await;
    let coord = cluster.coordinator_addr.to_string();
    let coord_name = pki::server_name(Role::Coordinator, "coord-1");
    let ca = std::fs::read(cluster.ca_dir.join(pki::CA_CERT)).expect("ca");

    // No client certificate: the handshake is refused, the call fails.
    let channel = Endpoint::from_shared(format!("https://{coord}"))
        .expect("endpoint")
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&ca))
                .domain_name(coord_name.clone()),
        )
        .expect("tls")
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5))
        .connect_lazy();
    let err = CustodyClient::new(channel)
        .get_withdrawal(get())
        .await
        .expect_err("no cert");
    assert_ne!(err.code(), Code::Ok);
    assert_ne!(err.code(), Code::NotFound, "must not reach the handler");

    // A certificate from another CA, even with the right role and id.
    let foreign = tempfile::tempdir().expect("tmp");
    pki::init_ca(foreign.path(), "Foreign CA").expect("foreign CA");
    let issued = pki::issue(
        foreign.path(),
        Role::Custody,
        "custody-1",
        &pki::Extra::default(),
        None,
    )
    .expect("issue");
    let tls = permafrost_proto::tls::TlsMaterial::from_pem(
        &ca,
        issued.cert_pem.as_bytes(),
        issued.key_pem.expect("key").as_bytes(),
    );
    let err = CustodyClient::new(
        tls.channel(&coord, &coord_name, Duration::from_secs(5))
            .expect("channel"),
    )
    .get_withdrawal(get())
    .await
    .expect_err("foreign CA");
    assert_ne!(err.code(), Code::NotFound, "must not reach the handler");

    // Wrong roles on the coordinator's services.
    for (role, id) in [
        (Role::Coordinator, "coord-1"),
        (Role::Node, "n1"),
        (Role::Operator, "operator-1"),
    ] {
        let tls = cluster.credential(role, id);
        let err = CustodyClient::new(
            tls.channel(&coord, &coord_name, Duration::from_secs(5))
                .expect("channel"),
        )
        .get_withdrawal(get())
        .await
        .expect_err("wrong role on Custody");
        assert_eq!(
            err.code(),
            Code::PermissionDenied,
            "{role}: {}",
            err.message()
        );
        assert!(err.message().contains("custody"), "{}", err.message());
    }
    for (role, id) in [
        (Role::Custody, "custody-1"),
        (Role::Coordinator, "coord-1"),
        (Role::Node, "n1"),
    ] {
        let tls = cluster.credential(role, id);
        let err = CeremonyClient::new(
            tls.channel(&coord, &coord_name, Duration::from_secs(5))
                .expect("channel"),
        )
        .list_key_groups(pb::ListKeyGroupsRequest {})
        .await
        .expect_err("wrong role on Ceremony");
        assert_eq!(
            err.code(),
            Code::PermissionDenied,
            "{role}: {}",
            err.message()
        );
    }

    // Wrong roles on a node: only the coordinator role may call SignerNode.
    for (role, id) in [
        (Role::Custody, "custody-1"),
        (Role::Operator, "operator-1"),
        (Role::Node, "n2"),
    ] {
        let mut client: SignerNodeClient<_> = cluster.node_client(0, role, id);
        let err = client
            .commit(pb::CommitRequest {
                bank: false,
                key_group: "warm-1".into(),
                count: 1,
                ..Default::default()
            })
            .await
            .expect_err("wrong role on SignerNode");
        assert_eq!(
            err.code(),
            Code::PermissionDenied,
            "{role}: {}",
            err.message()
        );
    }

    // The right roles get through (to a real answer).
    let err = cluster
        .custody()
        .get_withdrawal(get())
        .await
        .expect_err("unknown id");
    assert_eq!(err.code(), Code::NotFound);
    assert!(cluster
        .operator()
        .list_key_groups(pb::ListKeyGroupsRequest {})
        .await
        .is_ok());
    cluster.shutdown().await;
}
