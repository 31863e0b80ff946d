//! Every daemon's admin listener serves Prometheus text that parses strictly,
//! and its signing, share and refusal metrics move with what happens: a
//! withdrawal signed through the coordinator, one the coordinator's policy
//! refuses, a forged custody signature and an over-limit request sent
//! straight to the nodes (each refusal counted under its reason).

use permafrost_core::{Role, Tier};
use permafrost_proto::{self as pb, WithdrawalState};
use permafrost_testkit::prom_text::{parse, scrape, Exposition};
use permafrost_testkit::{rogue, TestCluster};

/// One strictly parsed page per daemon: the coordinator's, then each node's.
async fn scrape_all(cluster: &TestCluster) -> (Exposition, Vec<Exposition>) {
    let page = |text: Result<String, String>, who: &str| {
        let text = text.unwrap_or_else(|e| panic!("scrape {who}: {e}"));
        parse(&text).unwrap_or_else(|e| panic!("{who} serves invalid text: {e}\n{text}"))
    };
    let coordinator = page(
        scrape(cluster.coordinator_metrics_addr).await,
        "coordinator",
    );
    let mut nodes = Vec::new();
    for node in &cluster.nodes {
        nodes.push(page(scrape(node.metrics_addr).await, node.id.as_str()));
    }
    (coordinator, nodes)
}

fn total(pages: &[Exposition], name: &str, labels: &[(&str, &str)]) -> f64 {
    pages.iter().map(|p| p.sum(name, labels)).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_strictly_and_move_with_signing_and_refusals() {
    let cluster = TestCluster::start(&["eu", "us", "ap"]).await;
    cluster
        .create_group("warm-1", Tier::Warm, 2, &[0, 1, 2])
        .await
        .expect("DKG");
    let (before, nodes_before) = scrape_all(&cluster).await;
    let shares = "permafrost_node_signature_shares_released_total";
    let warm_withdrawal = [("group", "warm-1"), ("kind", "withdrawal")];
    assert_eq!(total(&nodes_before, shares, &warm_withdrawal), 0.0);
    // The activation test signature of the new group released t shares.
    assert_eq!(
        total(
            &nodes_before,
            shares,
            &[("group", "warm-1"), ("kind", "activation")]
        ),
        2.0
    );
    assert_eq!(
        before.sum(
            "permafrost_coordinator_ceremony_duration_seconds_count",
            &[("kind", "dkg"), ("outcome", "ok")]
        ),
        1.0
    );

    // Signed through the coordinator.
    let request = cluster.request("wd-metrics-1", "warm-1", Tier::Warm);
    let status = cluster
        .custody()
        .submit_withdrawal(cluster.sign(&request))
        .await
        .expect("submit")
        .into_inner();
    assert_eq!(status.state(), WithdrawalState::Signed, "{}", status.detail);

    // Refused by the coordinator's reading of the policy (10 BTC per request).
    let mut over = cluster.request("wd-metrics-over", "warm-1", Tier::Warm);
    over.amount = 2_000_000_000;
    let refused = cluster
        .custody()
        .submit_withdrawal(cluster.sign(&over))
        .await
        .expect_err("over the per-request limit");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);

    // Straight to the nodes, past the coordinator: a forged custody
    // signature (refused in round 1), and the over-limit request (refused by
    // each node's own policy in round 2).
    let mut forged = cluster.sign(&cluster.request("wd-metrics-forged", "warm-1", Tier::Warm));
    forged.custody_signature[0] ^= 1;
    let commit = cluster
        .node_client(0, Role::Coordinator, "rogue")
        .commit(pb::CommitRequest {
            bank: false,
            key_group: "warm-1".into(),
            count: 1,
            withdrawal: Some(forged),
            ..Default::default()
        })
        .await
        .expect_err("forged custody signature");
    assert_eq!(commit.code(), tonic::Code::PermissionDenied);
    let mut clients: Vec<_> = (0..2)
        .map(|i| cluster.node_client(i, Role::Coordinator, "rogue"))
        .collect();
    let results = rogue::sign_directly(
        &mut clients,
        "warm-1",
        &cluster.sign(&over),
        &over.payload,
        &[],
    )
    .await;
    assert!(results.iter().all(|r| r.is_err()), "{results:?}");

    let (after, nodes_after) = scrape_all(&cluster).await;
    // Nodes: one share from each of the two signers, each Sign step timed.
    assert_eq!(total(&nodes_after, shares, &warm_withdrawal), 2.0);
    let released = |pages: &[Exposition]| {
        total(
            pages,
            "permafrost_node_sign_duration_seconds_count",
            &[("outcome", "released")],
        )
    };
    assert_eq!(released(&nodes_after) - released(&nodes_before), 2.0);
    let refusals = "permafrost_node_refusals_total";
    assert_eq!(
        nodes_after[0].sum(refusals, &[("step", "commit"), ("reason", "custody")]),
        1.0
    );
    assert_eq!(
        total(
            &nodes_after,
            refusals,
            &[("step", "sign"), ("reason", "per_request_limit")]
        ),
        2.0
    );
    assert_eq!(
        total(
            &nodes_after,
            "permafrost_node_sign_duration_seconds_count",
            &[("outcome", "refused")]
        ),
        2.0
    );
    for (node, page) in cluster.nodes.iter().zip(&nodes_after) {
        assert_eq!(
            page.sum(
                "permafrost_build_info",
                &[("daemon", "node"), ("id", node.id.as_str())]
            ),
            1.0
        );
        assert_eq!(page.sum("permafrost_node_sealed", &[]), 0.0);
        assert_eq!(page.sum("permafrost_node_nonce_pool_capacity", &[]), 1024.0);
        assert!(page.sum("permafrost_audit_entries", &[]) > 0.0);
        assert_eq!(page.sum("permafrost_audit_writable", &[]), 1.0);
        assert!(page.sum("permafrost_store_commits_total", &[]) > 0.0);
        assert_eq!(
            page.sum("permafrost_store_commit_duration_seconds_count", &[]),
            page.sum("permafrost_store_commits_total", &[]),
        );
    }

    // Coordinator: the withdrawal, its latency and attempt, the refusal by rule, members.
    let outcome =
        |page: &Exposition, name: &str, value: &str| page.sum(name, &[("outcome", value)]);
    assert_eq!(
        outcome(&after, "permafrost_coordinator_withdrawals_total", "signed"),
        1.0
    );
    assert_eq!(
        outcome(
            &after,
            "permafrost_coordinator_signing_duration_seconds_count",
            "signed"
        ),
        1.0
    );
    assert_eq!(
        after.sum("permafrost_coordinator_withdrawals_accepted_total", &[]),
        1.0
    );
    assert!(
        after.sum(
            "permafrost_coordinator_signing_attempts_total",
            &[("result", "signed")]
        ) >= 1.0
    );
    assert_eq!(
        after.sum(
            "permafrost_coordinator_refusals_total",
            &[("reason", "per_request_limit")]
        ),
        1.0
    );
    assert_eq!(after.sum("permafrost_coordinator_member_up", &[]), 3.0);
    assert_eq!(
        after.sum(
            "permafrost_coordinator_group_threshold",
            &[("group", "warm-1")]
        ),
        2.0
    );
    assert_eq!(
        after.sum(
            "permafrost_coordinator_group_members_up",
            &[("group", "warm-1")]
        ),
        3.0
    );
    assert!(after.has("permafrost_coordinator_member_rtt_seconds"));
    cluster.shutdown().await;
}
