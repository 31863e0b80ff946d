//! K7: a refresh committed on only some members (a crash, an outage, a
//! coordinator that stops on purpose) does not split the group. The member
//! that committed stores the commit certificate; any coordinator reads it and
//! finishes the commit on the rest; meanwhile nothing is blamed and the group
//! keeps signing.

use permafrost_core::ceremony::SignedSpec;
use permafrost_core::{Role, Tier};
use permafrost_proto::{self as pb, ceremony_client::CeremonyClient, WithdrawalState};
use permafrost_testkit::{approved, assert_signature_valid, wire, TestCluster};

const GROUP: &str = "warm-1";

/// Runs a whole refresh's rounds as a relay would, and returns the commit
/// every member should get (the certificate).
async fn refresh_rounds(
    cluster: &TestCluster,
    signed: &SignedSpec,
    ceremony_id: &str,
) -> pb::CommitRefreshRequest {
    let mut clients: Vec<_> = (0..3)
        .map(|i| cluster.node_client(i, Role::Coordinator, "coord-rogue"))
        .collect();
    let spec = pb::CeremonySpec {
        ceremony_id: ceremony_id.into(),
        group: GROUP.into(),
        tier: pb::Tier::Warm as i32,
        threshold: 2,
        members: vec!["n1".into(), "n2".into(), "n3".into()],
        removed: Vec::new(),
        refresh: true,
        authorization: signed.spec.digest().0.to_vec(),
    };
    let reports = permafrost_testkit::rogue::dkg_rounds(&mut clients, &spec, &wire(signed))
        .await
        .expect("refresh rounds");
    pb::CommitRefreshRequest {
        spec: Some(spec),
        reports,
        authorization: Some(wire(signed)),
    }
}

async fn epochs(cluster: &TestCluster) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    for i in 0..3 {
        let g = cluster.node_key_group(i, GROUP).await.expect("group");
        out.push((g.epoch, g.pending_refresh));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k7_refresh_committed_on_one_member_is_finished_by_a_second_coordinator() {
    let mut cluster = TestCluster::start(&["eu", "us", "ap"]).await;
    let group = cluster
        .create_group(GROUP, Tier::Warm, 2, &[0, 1, 2])
        .await
        .expect("DKG");
    let (mut second, second_channel) = cluster.start_another_coordinator().await;
    let mut second_ops = CeremonyClient::new(second_channel);
    second_ops
        .adopt_key_group(pb::AdoptKeyGroupRequest { name: GROUP.into() })
        .await
        .expect("adopt");

    // A genuine, operator-approved refresh, run to the end of its rounds,
    // then committed on n1 only: the relay stops there.
    let signed = approved(
        &cluster
            .change_spec(GROUP, permafrostctl::ceremony::Change::Refresh)
            .await,
        &[1, 2],
    );
    let commit = refresh_rounds(&cluster, &signed, "refresh-k7").await;
    let mut n1 = cluster.node_client(0, Role::Coordinator, "coord-rogue");
    n1.commit_refresh(commit.clone())
        .await
        .expect("commit on n1");
    // The same commit again is done, not refused (F3).
    n1.commit_refresh(commit.clone())
        .await
        .expect("idempotent commit");

    // Mid-refresh the group still signs (n2 and n3 on the old shares), and
    // n1 — at the next epoch — is refused as out of step, never blamed.
    let request = cluster.request("wd-k7-1", GROUP, Tier::Warm);
    let status = second
        .submit_withdrawal(cluster.sign(&request))
        .await
        .expect("submit")
        .into_inner();
    assert_eq!(status.state(), WithdrawalState::Signed, "{}", status.detail);
    assert_signature_valid(&group.group_public_key, &request.payload, &status.signature);

    // The second coordinator finishes the refresh from n1's certificate.
    let recovered = second_ops
        .recover_key_group(pb::RecoverKeyGroupRequest { name: GROUP.into() })
        .await
        .expect("recover")
        .into_inner();
    assert!(recovered.behind.is_empty(), "{:?}", recovered.behind);
    let recovered_group = recovered.group.expect("group");
    assert_eq!(
        recovered_group.epoch, 2,
        "the coordinator moved with the members"
    );
    assert_eq!(recovered_group.group_public_key, group.group_public_key);
    for (i, (epoch, pending)) in epochs(&cluster).await.into_iter().enumerate() {
        assert_eq!(epoch, 2, "n{} at the refreshed epoch", i + 1);
        assert!(
            pending.is_empty(),
            "n{} holds nothing pending: {pending}",
            i + 1
        );
    }

    // Nobody was excluded for the refused n1, at either coordinator.
    for mut ops in [cluster.operator(), second_ops.clone()] {
        let excluded = ops
            .list_exclusions(pb::ListExclusionsRequest {})
            .await
            .expect("exclusions")
            .into_inner();
        assert!(excluded.exclusions.is_empty(), "{excluded:?}");
    }

    // Both coordinators sign on the new shares, same key.
    for (i, mut custody) in [cluster.custody(), second].into_iter().enumerate() {
        let request = cluster.request(&format!("wd-k7-after-{i}"), GROUP, Tier::Warm);
        let status = custody
            .submit_withdrawal(cluster.sign(&request))
            .await
            .expect("submit")
            .into_inner();
        assert_eq!(status.state(), WithdrawalState::Signed, "{}", status.detail);
        assert_signature_valid(&group.group_public_key, &request.payload, &status.signature);
    }
    cluster.shutdown().await;
}
