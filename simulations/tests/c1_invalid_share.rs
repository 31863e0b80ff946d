//! C1: a signer returns an invalid signature share. For every position of the
//! liar, exactly that signer is named, excluded, and the retry on a new subset signs.

use permafrost_core::Tier;
use permafrost_proto::WithdrawalState;
use permafrost_testkit::{assert_signature_valid, ClusterOptions, Lie, TestCluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c1_invalid_share_names_exactly_the_culprit_in_every_position() {
    for liar in 0..3 {
        // The liar sits alone in its region, so region spreading always picks it first.
        let regions = (0..3)
            .map(|i| {
                if i == liar {
                    "solo".to_string()
                } else {
                    "shared".to_string()
                }
            })
            .collect();
        let cluster = TestCluster::start_with(ClusterOptions {
            regions,
            liars: vec![(liar, Lie::BadShare)],
            ..Default::default()
        })
        .await;
        let group = cluster
            .create_group("warm-1", Tier::Warm, 2, &[0, 1, 2])
            .await
            .expect("DKG");
        let request = cluster.request(&format!("wd-c1-{liar}"), "warm-1", Tier::Warm);
        let status = cluster
            .custody()
            .submit_withdrawal(cluster.sign(&request))
            .await
            .expect("submit")
            .into_inner();
        assert_eq!(status.state(), WithdrawalState::Signed, "{}", status.detail);
        let culprit = cluster.nodes[liar].id.to_string();
        assert_eq!(
            status.culprits,
            vec![culprit.clone()],
            "liar at position {liar}"
        );
        assert!(!status.signers.contains(&culprit));
        assert!(status.attempts >= 2);
        assert_signature_valid(&group.group_public_key, &request.payload, &status.signature);

        // The culprit stays excluded: the next request signs without trying it again.
        let request = cluster.request(&format!("wd-c1-{liar}-next"), "warm-1", Tier::Warm);
        let status = cluster
            .custody()
            .submit_withdrawal(cluster.sign(&request))
            .await
            .expect("submit")
            .into_inner();
        assert_eq!(status.state(), WithdrawalState::Signed);
        assert!(status.culprits.is_empty());
        assert_eq!(status.attempts, 1);

        // The exclusion is listed with its evidence, and only an operator clears it.
        let list = cluster
            .operator()
            .list_exclusions(permafrost_proto::ListExclusionsRequest {})
            .await
            .expect("list")
            .into_inner();
        assert_eq!(list.exclusions.len(), 1);
        assert_eq!(list.exclusions[0].node_id, culprit);
        assert_eq!(list.exclusions[0].signature_share.len(), 32);
        let cleared = cluster
            .clear_exclusion("warm-1", &culprit)
            .await
            .expect("clear");
        assert!(cleared.exclusions.is_empty());
        cluster.shutdown().await;
    }
}
