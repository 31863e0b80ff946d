//! P1 for the group (issue: "velocity is per node"): a 2-of-3 warm group
//! with a 5-unit daily limit. Rotating signer subsets directly at the nodes
//! (as a rogue coordinator would), and racing withdrawals through the honest
//! coordinator, never gets more than the limit signed, because every signer
//! checks the attested ledgers of n - t + 1 members, not only its own.

use permafrost_core::{Role, Tier};
use permafrost_proto::WithdrawalState;
use permafrost_testkit::rogue::sign_directly;
use permafrost_testkit::{approver, ClusterOptions, TestCluster};

const UNIT: u128 = 1_000_000;
const CAP_UNITS: u128 = 5;

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
per_request_max = "{UNIT}"
daily_max = "{}"
"#,
        UNIT * CAP_UNITS
    )
}

async fn cluster() -> TestCluster {
    let cluster = TestCluster::start_with(ClusterOptions {
        regions: vec!["eu".into(), "us".into(), "ap".into()],
        policy: Some(policy()),
        ..Default::default()
    })
    .await;
    cluster
        .create_group("warm-1", Tier::Warm, 2, &[0, 1, 2])
        .await
        .expect("DKG");
    cluster
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p1_rotating_signer_subsets_directly_never_exceed_the_group_limit() {
    let cluster = cluster().await;
    let subsets = [[0usize, 1], [1, 2], [0, 2]];
    let mut signed = 0u128;
    for k in 0..9 {
        let pair = subsets[k % 3];
        let mut clients: Vec<_> = pair
            .iter()
            .map(|i| cluster.node_client(*i, Role::Coordinator, "rogue"))
            .collect();
        let mut r = cluster.request(&format!("wd-p1g-{k}"), "warm-1", Tier::Warm);
        r.amount = UNIT;
        let answers =
            sign_directly(&mut clients, "warm-1", &cluster.sign(&r), &r.payload, &[]).await;
        if answers.iter().all(|a| a.is_ok()) {
            signed += 1;
        } else {
            for a in answers.into_iter().filter_map(Result::err) {
                assert!(
                    a.message().contains("velocity"),
                    "refused for another reason: {}",
                    a.message()
                );
            }
        }
    }
    assert_eq!(
        signed, CAP_UNITS,
        "exactly the daily limit is signed, whatever subsets sign"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p1_racing_withdrawals_through_the_coordinator_never_exceed_the_group_limit() {
    let cluster = cluster().await;
    let mut tasks = Vec::new();
    for k in 0..8 {
        let mut r = cluster.request(&format!("wd-p1race-{k}"), "warm-1", Tier::Warm);
        r.amount = UNIT;
        let signed = cluster.sign(&r);
        let mut custody = cluster.custody();
        tasks.push(tokio::spawn(async move {
            custody
                .submit_withdrawal(signed)
                .await
                .map(|s| s.into_inner())
        }));
    }
    let mut signed = 0u128;
    for t in tasks {
        if let Ok(Ok(status)) = t.await {
            if status.state() == WithdrawalState::Signed {
                signed += 1;
            }
        }
    }
    assert!(
        signed <= CAP_UNITS,
        "{signed} units signed, limit {CAP_UNITS}"
    );
    assert!(signed >= 1, "the group still signs within its limit");
}

/// Signs `k` withdrawals of one unit through the coordinator, one at a time.
async fn sign_through_coordinator(cluster: &TestCluster, prefix: &str, k: usize) -> usize {
    let mut signed = 0;
    for i in 0..k {
        let mut r = cluster.request(&format!("{prefix}-{i}"), "warm-1", Tier::Warm);
        r.amount = UNIT;
        let status = cluster
            .custody()
            .submit_withdrawal(cluster.sign(&r))
            .await
            .expect("submitted")
            .into_inner();
        if status.state() == WithdrawalState::Signed {
            signed += 1;
        }
    }
    signed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p1_attestations_list_only_what_the_signers_lack_and_a_restarted_node_gets_it_all() {
    let mut cluster = cluster().await;
    assert_eq!(sign_through_coordinator(&cluster, "wd-p1d", 3).await, 3);
    // A node's reservation says how much of each member's ledger it holds:
    // the ledgers it verified in the attestations of the last requests.
    let mut r = cluster.request("wd-p1d-probe", "warm-1", Tier::Warm);
    r.amount = UNIT;
    let probe = cluster.sign(&r);
    let reserve = |i: usize| {
        let mut c = cluster.node_client(i, Role::Coordinator, "probe");
        let req = permafrost_proto::ReserveRequest {
            key_group: "warm-1".into(),
            withdrawal: Some(probe.clone()),
        };
        async move { c.reserve(req).await.expect("reserve").into_inner() }
    };
    let reserved = reserve(0).await;
    // (as of the reads of the last request n1 signed: at least one entry).
    let held: u64 = reserved.ledgers_held.values().sum();
    assert!(
        held >= 1,
        "n1 holds the members' ledgers: {:?}",
        reserved.ledgers_held
    );
    // An attestor verifies the receipts before it lists anything: two
    // copies of one member's receipt are refused.
    let mut n2 = cluster.node_client(1, Role::Coordinator, "probe");
    let e = n2
        .attest(permafrost_proto::AttestRequest {
            key_group: "warm-1".into(),
            withdrawal: Some(probe.clone()),
            receipts: vec![reserved.receipt.clone(), reserved.receipt.clone()],
            since: 0,
        })
        .await
        .expect_err("one member's receipt twice");
    assert!(e.message().contains("two receipts"), "{}", e.message());
    let second = reserve(2).await;
    // Asked from what a signer holds, each member lists only the rest.
    let mut listed = 0;
    for (i, member) in ["n1", "n2", "n3"].iter().enumerate() {
        let client = cluster.node_client(i, Role::Coordinator, "probe");
        let held = reserved.ledgers_held.get(*member).copied().unwrap_or(0);
        let attest = |since: u64| {
            let req = permafrost_proto::AttestRequest {
                key_group: "warm-1".into(),
                withdrawal: Some(probe.clone()),
                receipts: vec![reserved.receipt.clone(), second.receipt.clone()],
                since,
            };
            let mut c = client.clone();
            async move {
                let a = c
                    .attest(req)
                    .await
                    .expect("attest")
                    .into_inner()
                    .attestation;
                permafrost_core::velocity::SignedAttestation::from_wire(&a)
                    .expect("attestation")
                    .attestation
            }
        };
        let whole = attest(0).await;
        let rest = attest(held).await;
        assert!(whole.complete && rest.complete);
        assert_eq!(
            whole.entries.len() as u64,
            whole.through,
            "{member}: whole window"
        );
        assert_eq!(
            rest.entries.len() as u64,
            whole.through - held.min(whole.through),
            "{member}: from entry {held} on only"
        );
        listed += whole.entries.len();
    }
    assert!(
        listed >= 6,
        "three requests, two signers each: {listed} entries"
    );
    // A restarted node holds nothing, is sent whole windows, and the group
    // keeps to its limit: 3 signed, so at most 2 more of the next 3 (1 where
    // the probe's reservation still held at n3 is attested).
    cluster.restart_node(0).await;
    let after = sign_through_coordinator(&cluster, "wd-p1d-after", 3).await;
    assert!((1..=2).contains(&after), "{after} more signed");
}
