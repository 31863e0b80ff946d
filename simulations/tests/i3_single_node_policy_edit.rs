//! I3: one administrator loosening the policy on one node cannot change what
//! the group signs; the mismatch is visible in the nodes' policy hashes.

use permafrost_core::{Role, Tier};
use permafrost_proto::{self as pb};
use permafrost_testkit::rogue::{commit_for, package, sign_attested};
use permafrost_testkit::{default_policy, ClusterOptions, TestCluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i3_policy_edited_on_one_node_cannot_change_what_the_group_signs() {
    let lax = default_policy()
        .replace(
            "per_request_max = \"1000000000\"",
            "per_request_max = \"900000000000\"",
        )
        .replace("daily_max = \"2000000000\"", "daily_max = \"900000000000\"")
        .replace("approvals_above = 1", "approvals_above = 0");
    let cluster = TestCluster::start_with(ClusterOptions {
        regions: vec!["eu".into(), "us".into(), "ap".into()],
        node_policies: vec![(0, lax)],
        ..Default::default()
    })
    .await;
    cluster
        .create_group("warm-1", Tier::Warm, 2, &[0, 1, 2])
        .await
        .expect("DKG");
    let mut clients: Vec<_> = (0..3)
        .map(|i| cluster.node_client(i, Role::Coordinator, "rogue"))
        .collect();

    let mut hashes = Vec::new();
    for c in &mut clients {
        hashes.push(
            c.get_status(pb::NodeStatusRequest {})
                .await
                .expect("status")
                .into_inner()
                .policy_hash,
        );
    }
    assert_ne!(
        hashes[0], hashes[1],
        "the edited node reports a different policy hash"
    );
    assert_eq!(hashes[1], hashes[2]);

    // 50 BTC, no approvals: the lax node would sign, but no second node will.
    let mut big = cluster.request("wd-i3-1", "warm-1", Tier::Warm);
    big.amount = 5_000_000_000;
    let signed_big = cluster.sign(&big);
    let round1 = commit_for(&mut clients, "warm-1", &signed_big)
        .await
        .expect("round 1 and the velocity read");
    let pkg = package(&round1.commitments, &big.payload);
    let mut shares = 0;
    for (i, c) in clients.iter_mut().enumerate() {
        match c
            .sign(sign_attested(
                "warm-1",
                &round1.handles[i],
                &pkg,
                &signed_big,
                &round1.attestations,
            ))
            .await
        {
            Ok(_) => shares += 1,
            Err(e) => assert!(e.message().contains("limit"), "{}", e.message()),
        }
    }
    assert_eq!(
        shares, 1,
        "only the edited node released a share: below the threshold of 2"
    );
    cluster.shutdown().await;
}
