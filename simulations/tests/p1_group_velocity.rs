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
