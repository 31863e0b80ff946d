//! K6: proactive refresh gives every member a new share for the same group
//! key; a share captured before the refresh is useless after it; an
//! inconsistent confirmation keeps the old shares; the threshold cannot change.

use std::collections::BTreeMap;

use frost_secp256k1::{self as frost, round1, round2, SigningPackage};
use permafrost_core::{Role, Tier};
use permafrost_proto::{self as pb, WithdrawalState};
use permafrost_testkit::{approved, assert_signature_valid, steal_key_package, wire, TestCluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k6_refresh_keeps_the_key_and_voids_captured_shares() {
    let mut cluster = TestCluster::start(&["eu", "us", "ap"]).await;
    let group = cluster
        .create_group("warm-1", Tier::Warm, 2, &[0, 1, 2])
        .await
        .expect("DKG");
    cluster.stop_node(0).await;
    let captured = steal_key_package(&cluster, 0, "warm-1");
    cluster.restart_node(0).await;

    let refreshed = cluster.refresh_group("warm-1").await.expect("refresh");
    assert_eq!(
        refreshed.group_public_key, group.group_public_key,
        "same group key"
    );
    assert_eq!(refreshed.threshold, 2);

    let request = cluster.request("wd-k6-1", "warm-1", Tier::Warm);
    let status = cluster
        .custody()
        .submit_withdrawal(cluster.sign(&request))
        .await
        .expect("submit")
        .into_inner();
    assert_eq!(status.state(), WithdrawalState::Signed, "{}", status.detail);
    assert_signature_valid(&group.group_public_key, &request.payload, &status.signature);

    // The captured pre-refresh share of n1 with n2's current share: no valid signature.
    cluster.stop_node(0).await;
    cluster.stop_node(1).await;
    let new_n1 = steal_key_package(&cluster, 0, "warm-1");
    assert_ne!(
        new_n1.signing_share(),
        captured.signing_share(),
        "the share changed"
    );
    let new_n2 = steal_key_package(&cluster, 1, "warm-1");
    let message = b"captured share test";
    let mut rng = rand::thread_rng();
    let (nonces1, commit1) = round1::commit(captured.signing_share(), &mut rng);
    let (nonces2, commit2) = round1::commit(new_n2.signing_share(), &mut rng);
    let commitments = BTreeMap::from([
        (*captured.identifier(), commit1),
        (*new_n2.identifier(), commit2),
    ]);
    let package = SigningPackage::new(commitments, message);
    let s1 = round2::sign(&package, &nonces1, &captured).expect("share from the old key package");
    let s2 = round2::sign(&package, &nonces2, &new_n2).expect("share");
    let shares = BTreeMap::from([(*captured.identifier(), s1), (*new_n2.identifier(), s2)]);
    let pkp = frost::keys::PublicKeyPackage::deserialize(&stored_pkp(&cluster, 0)).expect("pkp");
    assert!(
        frost::aggregate(&package, &shares, &pkp).is_err(),
        "old share combined with new ones must not sign"
    );
    cluster.restart_node(0).await;
    cluster.restart_node(1).await;
    cluster.shutdown().await;
}

/// The current public key package, read from a stopped node's store.
fn stored_pkp(cluster: &TestCluster, i: usize) -> Vec<u8> {
    let store = permafrost_node::store::NodeStore::open(&cluster.nodes[i].config.data_dir)
        .expect("node store");
    store
        .group(&permafrost_core::GroupName::new("warm-1").expect("name"))
        .expect("read")
        .expect("group")
        .public_key_package
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k6_inconsistent_confirmation_keeps_old_shares_and_threshold_cannot_change() {
    let cluster = TestCluster::start(&["eu", "us", "ap"]).await;
    let group = cluster
        .create_group("warm-1", Tier::Warm, 2, &[0, 1, 2])
        .await
        .expect("DKG");
    let mut clients: Vec<_> = (0..3)
        .map(|i| cluster.node_client(i, Role::Coordinator, "rogue"))
        .collect();
    // A rogue relay holding a genuine operator-approved refresh spec.
    let signed = approved(
        &cluster
            .change_spec("warm-1", permafrostctl::ceremony::Change::Refresh)
            .await,
        &[1, 2],
    );
    let mut spec = pb::CeremonySpec {
        ceremony_id: "refresh-rogue".into(),
        group: "warm-1".into(),
        tier: pb::Tier::Warm as i32,
        threshold: 3,
        members: vec!["n1".into(), "n2".into(), "n3".into()],
        removed: Vec::new(),
        refresh: true,
        authorization: signed.spec.digest().0.to_vec(),
    };
    // The threshold cannot change by refresh.
    let err = clients[0]
        .dkg_start(pb::DkgStartRequest {
            spec: Some(spec.clone()),
            authorization: Some(wire(&signed)),
        })
        .await
        .expect_err("threshold change");
    assert!(err.message().contains("threshold"), "{}", err.message());

    spec.threshold = 2;
    let reports = permafrost_testkit::rogue::dkg_rounds(&mut clients, &spec, &wire(&signed))
        .await
        .expect("refresh rounds");
    // Inconsistent confirmation: n3's report missing (n2's shown twice), or one report altered.
    let mut missing = reports.clone();
    missing[2] = missing[1].clone();
    let mut altered = reports.clone();
    let last = altered[1].public_key_package.len() - 1;
    altered[1].public_key_package[last] ^= 1;
    for bad in [missing, altered] {
        for c in &mut clients {
            let err = c
                .commit_refresh(pb::CommitRefreshRequest {
                    spec: Some(spec.clone()),
                    reports: bad.clone(),
                    authorization: Some(wire(&signed)),
                })
                .await
                .expect_err("inconsistent confirmation");
            assert!(
                matches!(
                    err.code(),
                    tonic::Code::Aborted | tonic::Code::PermissionDenied
                ),
                "{err:?}"
            );
        }
    }
    // Old shares kept: the group still signs, with the same key.
    let request = cluster.request("wd-k6-2", "warm-1", Tier::Warm);
    let status = cluster
        .custody()
        .submit_withdrawal(cluster.sign(&request))
        .await
        .expect("submit")
        .into_inner();
    assert_eq!(status.state(), WithdrawalState::Signed, "{}", status.detail);
    assert_signature_valid(&group.group_public_key, &request.payload, &status.signature);
    cluster.shutdown().await;
}
