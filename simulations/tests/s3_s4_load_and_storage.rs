//! Load and storage faults against a real cluster (every daemon a real mTLS
//! server on 127.0.0.1:0): 256 withdrawals at once all complete (S4), a node
//! whose store is stuck is reported unhealthy and routed around (S4), and a
//! torn audit line is repaired when the node starts (S3). Nothing here is timed.

use std::collections::BTreeSet;
use std::time::Duration;

use permafrost_core::audit::verify;
use permafrost_core::identity::parse_ed25519_hex;
use permafrost_core::{Role, Tier};
use permafrost_proto::{self as pb, WithdrawalState};
use permafrost_testkit::{assert_signature_valid, ClusterOptions, TestCluster};

/// warm-1 with limits far above what the tests move, no approvals.
fn roomy_policy() -> String {
    r#"
[groups.warm-1]
tier = "warm"
max_lifetime_secs = 86400
[groups.warm-1.assets.BTC]
per_request_max = "1000000000"
daily_max = "100000000000"
"#
    .to_string()
}

async fn cluster(regions: &[&str]) -> TestCluster {
    TestCluster::start_with(ClusterOptions {
        regions: regions.iter().map(|r| r.to_string()).collect(),
        policy: Some(roomy_policy()),
        ..Default::default()
    })
    .await
}

async fn status_of(cluster: &TestCluster, i: usize) -> pb::NodeStatus {
    cluster
        .node_client(i, Role::Coordinator, "probe")
        .get_status(pb::NodeStatusRequest {})
        .await
        .expect("status")
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s4_256_concurrent_withdrawals_all_complete_with_one_digest_each() {
    let cluster = cluster(&["eu", "us", "ap"]).await;
    let group = cluster
        .create_group("warm-1", Tier::Warm, 2, &[0, 1, 2])
        .await
        .expect("DKG");
    let mut tasks = Vec::new();
    for i in 0..256u32 {
        let mut request = cluster.request(&format!("wd-s4-{i}"), "warm-1", Tier::Warm);
        request.amount = 1_000 + u128::from(i);
        let signed = cluster.sign(&request);
        let mut custody = cluster.custody();
        tasks.push(tokio::spawn(async move {
            // A busy answer is an invitation to retry the same id (idempotent).
            for _ in 0..600 {
                match custody.submit_withdrawal(signed.clone()).await {
                    Ok(s) if s.get_ref().state() == WithdrawalState::Pending => {
                        tokio::time::sleep(Duration::from_millis(100)).await
                    }
                    Ok(s) => return (request, s.into_inner()),
                    Err(e) if e.code() == tonic::Code::ResourceExhausted => {
                        tokio::time::sleep(Duration::from_millis(100)).await
                    }
                    Err(e) => panic!("{}: {e}", request.request_id),
                }
            }
            panic!("{} never finished", request.request_id);
        }));
    }
    let mut total = 0u128;
    for t in tasks {
        let (request, status) = t.await.expect("join");
        assert_eq!(
            status.state(),
            WithdrawalState::Signed,
            "{}: {}",
            request.request_id,
            status.detail
        );
        assert_eq!(status.digest, request.digest().0.to_vec());
        assert_signature_valid(&group.group_public_key, &request.payload, &status.signature);
        total += request.amount;
    }
    // Each node's journal holds one digest per id, and its velocity ledger counted
    // each request once: what it shows as spent equals what it journaled.
    let mut stores_committed = 0;
    for i in 0..3 {
        let status = status_of(&cluster, i).await;
        assert!(status.healthy, "{}", status.unhealthy_reason);
        let store = status.store.expect("store counters");
        assert_eq!(store.failed_commits, 0);
        stores_committed += store.steps;
    }
    assert!(stores_committed >= 256, "{stores_committed}");
    // The coordinator reports its own store too: healthy, every request stored.
    let cluster_status = cluster
        .operator()
        .get_cluster_status(pb::ClusterStatusRequest {})
        .await
        .expect("cluster status")
        .into_inner();
    assert!(
        cluster_status.healthy,
        "{}",
        cluster_status.unhealthy_reason
    );
    let store = cluster_status.store.expect("coordinator store counters");
    assert_eq!(store.failed_commits, 0);
    assert!(store.steps >= 256, "{store:?}");
    assert!(store.commits > 0 && store.max_batch >= 1, "{store:?}");
    assert!(total > 0);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s4_node_with_a_stuck_store_is_reported_unhealthy_and_routed_around() {
    let cluster = cluster(&["eu", "us", "ap", "eu"]).await;
    let group = cluster
        .create_group("warm-1", Tier::Warm, 2, &[0, 1, 2, 3])
        .await
        .expect("DKG");
    let stuck = cluster.nodes[0].id.to_string();
    cluster.stall_node_store(0, Duration::from_secs(12));
    // The store counts as stuck once a commit has been held past its threshold.
    let mut reported = None;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let s = status_of(&cluster, 0).await;
        if !s.healthy {
            reported = Some(s.unhealthy_reason);
            break;
        }
    }
    let reason = reported.expect("a stuck store is reported in GetStatus");
    assert!(reason.contains("store"), "{reason}");
    // Let the coordinator's health probe (every 500 ms) see it too.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for i in 0..4 {
        let request = cluster.request(&format!("wd-stuck-{i}"), "warm-1", Tier::Warm);
        let status = cluster
            .custody()
            .submit_withdrawal(cluster.sign(&request))
            .await
            .expect("submit")
            .into_inner();
        assert_eq!(status.state(), WithdrawalState::Signed, "{}", status.detail);
        assert!(
            !status.signers.contains(&stuck),
            "the stuck node {stuck} was chosen: {:?}",
            status.signers
        );
        assert_signature_valid(&group.group_public_key, &request.payload, &status.signature);
    }
    // Once the disk answers again the node is healthy and signs.
    let mut healthy = false;
    for _ in 0..80 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if status_of(&cluster, 0).await.healthy {
            healthy = true;
            break;
        }
    }
    assert!(healthy, "node never recovered after the stall ended");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_torn_audit_line_is_repaired_at_start_and_the_node_signs() {
    let mut cluster = cluster(&["eu", "us", "ap"]).await;
    cluster
        .create_group("warm-1", Tier::Warm, 2, &[0, 1, 2])
        .await
        .expect("DKG");
    // An append interrupted by a full disk leaves a fragment with no newline.
    cluster.stop_node(1).await;
    let path = cluster.nodes[1].config.audit_path();
    let mut bytes = std::fs::read(&path).expect("audit log");
    let whole = bytes.len();
    bytes.extend_from_slice(br#"{"seq":9999,"ts":17000000,"actor":"n2","ev"#);
    std::fs::write(&path, &bytes).expect("tear the log");
    cluster.restart_node(1).await;

    let mut signed_by_1 = false;
    for i in 0..8 {
        let request = cluster.request(&format!("wd-s3-{i}"), "warm-1", Tier::Warm);
        let status = cluster
            .custody()
            .submit_withdrawal(cluster.sign(&request))
            .await
            .expect("submit")
            .into_inner();
        assert_eq!(status.state(), WithdrawalState::Signed, "{}", status.detail);
        signed_by_1 |= status.signers.contains(&cluster.nodes[1].id.to_string());
        if signed_by_1 {
            break;
        }
        // Steer the next request towards node 1 by stopping another member.
        if i == 1 {
            cluster.stop_node(0).await;
        }
    }
    assert!(signed_by_1, "the repaired node never signed");

    let text = std::fs::read_to_string(&path).expect("audit log");
    assert!(text.len() > whole, "nothing appended after the repair");
    assert!(text.ends_with('\n'), "the log still ends torn");
    assert!(
        text.contains("\"audit_repaired\""),
        "the repair was not audited"
    );
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&cluster.nodes[1].config.manifest).expect("manifest"),
    )
    .expect("json");
    let key_hex = manifest["nodes"][1]["identity_key"].as_str().expect("key");
    let key = parse_ed25519_hex("key", key_hex).expect("key");
    let report = verify(&text, &[key], None).expect("the repaired log verifies");
    assert_eq!(report.torn_tail, None);
    assert_eq!(report.repairs.len(), 1, "{report:?}");
    let events: BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.split("\"event\":\"").nth(1))
        .filter_map(|rest| rest.split('"').next())
        .collect();
    assert!(events.contains("share_released"), "{events:?}");
    cluster.shutdown().await;
}
