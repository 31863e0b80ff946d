//! Banked nonces and ROAST-style signing against real nodes and a real
//! coordinator on 127.0.0.1:0 with real mTLS: one-round signing once the
//! bank is full (N1: every banked nonce signs once), the fallback to fresh
//! commitments after a node restart voided its bank (N2), completion with
//! `n − t` signers down and with a signer returning invalid shares (C1, X2:
//! only it is named), and velocity kept group-wide throughout (P1).

use std::time::{Duration, Instant};

use permafrost_core::{Role, Tier};
use permafrost_proto::{self as pb, WithdrawalState};
use permafrost_testkit::prom_text::{parse, scrape, Exposition};
use permafrost_testkit::{approver, assert_signature_valid, ClusterOptions, Lie, TestCluster};

/// `warm-1` with no velocity limit (a daily maximum no total can exceed), so
/// a banked withdrawal needs one round trip; `warm-2` with the default limits.
fn policy() -> String {
    let key = hex::encode(approver("alice").verifying_key().as_bytes());
    format!(
        r#"
[approvers]
alice = "{key}"
[groups.warm-1]
tier = "warm"
max_lifetime_secs = 86400
[groups.warm-1.assets.BTC]
per_request_max = "1000000000"
daily_max = "{}"
[groups.warm-2]
tier = "warm"
max_lifetime_secs = 86400
[groups.warm-2.assets.BTC]
per_request_max = "1000000000"
daily_max = "2000000000"
"#,
        u128::MAX
    )
}

async fn coordinator_page(cluster: &TestCluster) -> Exposition {
    let text = scrape(cluster.coordinator_metrics_addr)
        .await
        .expect("scrape coordinator");
    parse(&text).expect("valid exposition")
}

async fn nonce_sets(cluster: &TestCluster, source: &str) -> f64 {
    coordinator_page(cluster).await.sum(
        "permafrost_coordinator_signing_nonce_sets_total",
        &[("source", source)],
    )
}

/// Waits until every listed node holds at least `at_least` open nonces (the
/// coordinator's bank, filled in the background).
async fn wait_for_bank(cluster: &TestCluster, nodes: &[usize], at_least: u32) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut full = true;
        for i in nodes {
            let status = cluster
                .node_client(*i, Role::Coordinator, "probe")
                .get_status(pb::NodeStatusRequest {})
                .await
                .expect("status")
                .into_inner();
            full &= status.open_nonces >= at_least;
        }
        if full {
            return;
        }
        assert!(Instant::now() < deadline, "the bank never filled");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn withdraw(cluster: &TestCluster, id: &str, group: &str) -> pb::WithdrawalStatus {
    let request = cluster.request(id, group, Tier::Warm);
    let status = cluster
        .custody()
        .submit_withdrawal(cluster.sign(&request))
        .await
        .expect("submit")
        .into_inner();
    assert_eq!(status.state(), WithdrawalState::Signed, "{}", status.detail);
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn n1_one_round_signing_after_the_bank_fills_and_n2_fallback_after_a_restart() {
    let mut cluster = TestCluster::start_with(ClusterOptions {
        regions: vec!["eu".into(), "us".into(), "ap".into()],
        policy: Some(policy()),
        ..Default::default()
    })
    .await;
    let group = cluster
        .create_group("warm-1", Tier::Warm, 2, &[0, 1, 2])
        .await
        .expect("DKG");
    wait_for_bank(&cluster, &[0, 1, 2], 16).await;

    // Banked: the signing packages go out at once, no commit round.
    let fresh_before = nonce_sets(&cluster, "fresh").await;
    let banked_before = nonce_sets(&cluster, "bank").await;
    for k in 0..3 {
        let id = format!("wd-banked-{k}");
        let status = withdraw(&cluster, &id, "warm-1").await;
        assert_eq!(status.attempts, 1);
        let request = cluster.request(&id, "warm-1", Tier::Warm);
        assert_signature_valid(&group.group_public_key, &request.payload, &status.signature);
    }
    assert_eq!(
        nonce_sets(&cluster, "fresh").await,
        fresh_before,
        "no Commit call on the signing path"
    );
    assert!(nonce_sets(&cluster, "bank").await >= banked_before + 6.0);

    // N2: two of three nodes restart, so every pair of signers has one whose
    // banked nonces died with it. The coordinator does not know yet; the
    // node answers "stale", its bank is forgotten, fresh commitments are
    // asked for, and the request still signs.
    cluster.restart_node(0).await;
    cluster.restart_node(1).await;
    let status = withdraw(&cluster, "wd-after-restart", "warm-1").await;
    let request = cluster.request("wd-after-restart", "warm-1", Tier::Warm);
    assert_signature_valid(&group.group_public_key, &request.payload, &status.signature);
    assert!(
        status.culprits.is_empty(),
        "a restart is no misbehaviour (X2)"
    );
    let page = coordinator_page(&cluster).await;
    assert!(
        page.sum(
            "permafrost_coordinator_signing_attempts_total",
            &[("result", "stale")]
        ) >= 1.0
            || page.sum(
                "permafrost_coordinator_signing_nonce_sets_total",
                &[("source", "fresh")]
            ) > fresh_before,
        "the restarted node's bank was not used as if alive"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn n2_a_banked_handle_replayed_after_a_node_restart_is_refused_as_stale() {
    let mut cluster = TestCluster::start_with(ClusterOptions {
        regions: vec!["eu".into(), "us".into(), "ap".into()],
        policy: Some(policy()),
        ..Default::default()
    })
    .await;
    cluster
        .create_group("warm-1", Tier::Warm, 2, &[0, 1, 2])
        .await
        .expect("DKG");
    // A rogue coordinator banks nonces on node 0 itself.
    let mut rogue = cluster.node_client(0, Role::Coordinator, "rogue");
    let banked = rogue
        .commit(pb::CommitRequest {
            key_group: "warm-1".into(),
            count: 2,
            withdrawal: None,
            bank: true,
            epoch: 0,
        })
        .await
        .expect("bank")
        .into_inner();
    assert_eq!(banked.nonces.len(), 2);
    assert!(banked.ttl_secs > 0);
    // N6: banked with a withdrawal makes no sense and is refused.
    let request = cluster.request("wd-bank-bad", "warm-1", Tier::Warm);
    let err = rogue
        .commit(pb::CommitRequest {
            key_group: "warm-1".into(),
            count: 1,
            withdrawal: Some(cluster.sign(&request)),
            bank: true,
            epoch: 0,
        })
        .await
        .expect_err("bank and withdrawal");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    cluster.restart_node(0).await;
    let mut rogue = cluster.node_client(0, Role::Coordinator, "rogue");
    let err = rogue
        .sign(pb::SignRequest {
            key_group: "warm-1".into(),
            nonce_handles: vec![banked.nonces[0].handle.clone()],
            signing_packages: vec![vec![0u8; 8]],
            target: Some(pb::sign_request::Target::Withdrawal(cluster.sign(&request))),
            approvals: Vec::new(),
            attestations: Vec::new(),
            reservation: Vec::new(),
            epoch: 0,
        })
        .await
        .expect_err("nonces do not survive a restart");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(permafrost_proto::stale::is_stale(&err), "{err:?}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roast_3_of_5_completes_with_n_minus_t_signers_down_without_waiting_a_deadline() {
    let mut cluster = TestCluster::start_with(ClusterOptions {
        regions: vec![
            "eu".into(),
            "us".into(),
            "ap".into(),
            "sa".into(),
            "af".into(),
        ],
        policy: Some(policy()),
        round_timeout_ms: Some(8_000),
        ..Default::default()
    })
    .await;
    let group = cluster
        .create_group("warm-2", Tier::Warm, 3, &[0, 1, 2, 3, 4])
        .await
        .expect("DKG");
    wait_for_bank(&cluster, &[0, 1, 2, 3, 4], 16).await;
    cluster.stop_node(0).await;
    cluster.stop_node(3).await;
    let started = Instant::now();
    let status = withdraw(&cluster, "wd-roast-down", "warm-2").await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "signed in {:?}: a deadline sat on the critical path",
        started.elapsed()
    );
    let request = cluster.request("wd-roast-down", "warm-2", Tier::Warm);
    assert_signature_valid(&group.group_public_key, &request.payload, &status.signature);
    assert!(status.culprits.is_empty());
    for down in [0, 3] {
        let id = cluster.nodes[down].id.to_string();
        assert!(!status.signers.contains(&id));
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c1_c3_3_of_5_with_two_liars_signs_after_at_most_three_sessions_naming_only_them() {
    let cluster = TestCluster::start_with(ClusterOptions {
        regions: vec![
            "eu".into(),
            "us".into(),
            "ap".into(),
            "sa".into(),
            "af".into(),
        ],
        liars: vec![(1, Lie::BadShare), (4, Lie::BadShare)],
        policy: Some(policy()),
        ..Default::default()
    })
    .await;
    let group = cluster
        .create_group("warm-2", Tier::Warm, 3, &[0, 1, 2, 3, 4])
        .await
        .expect("DKG");
    let status = withdraw(&cluster, "wd-roast-liars", "warm-2").await;
    let request = cluster.request("wd-roast-liars", "warm-2", Tier::Warm);
    assert_signature_valid(&group.group_public_key, &request.payload, &status.signature);
    let liars = [
        cluster.nodes[1].id.to_string(),
        cluster.nodes[4].id.to_string(),
    ];
    let liars: Vec<&str> = liars.iter().map(String::as_str).collect();
    assert!(
        status.culprits.iter().all(|c| liars.contains(&c.as_str())),
        "X2: an honest node was blamed: {:?}",
        status.culprits
    );
    assert!(status.signers.iter().all(|s| !liars.contains(&s.as_str())));
    // ROAST's bound: at most n − t + 1 = 3 sessions. (Not "one more than the
    // culprits": on a loaded machine a slow answer also starts a hedged
    // session, which may finish before a liar's share arrives to be named.)
    assert!(
        status.attempts <= 3,
        "{} sessions for {} culprits",
        status.attempts,
        status.culprits.len()
    );
    // C3: many concurrent requests on the same nodes: all sign, each digest
    // once, only the liars ever named.
    let mut tasks = Vec::new();
    for k in 0..16 {
        let request = cluster.request(&format!("wd-roast-many-{k}"), "warm-2", Tier::Warm);
        let signed = cluster.sign(&request);
        let mut custody = cluster.custody();
        tasks.push(tokio::spawn(async move {
            (
                request,
                custody
                    .submit_withdrawal(signed)
                    .await
                    .map(|s| s.into_inner()),
            )
        }));
    }
    for task in tasks {
        let (request, status) = task.await.expect("task");
        let status = status.expect("submit");
        assert_eq!(status.state(), WithdrawalState::Signed, "{}", status.detail);
        assert_signature_valid(&group.group_public_key, &request.payload, &status.signature);
        assert!(status.culprits.iter().all(|c| liars.contains(&c.as_str())));
    }
    cluster.shutdown().await;
}
