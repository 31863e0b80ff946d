//! Time-lock and first sight keyed by digest (issue: "time-lock keyed by
//! request id"): a rogue coordinator announces request A under id R, waits
//! out the lock, then asks for shares for a different request B under the
//! same id. B's own lock has not run, so no node releases a share; unsigned
//! junk starts no clock at all.

use std::time::Duration;

use permafrost_core::{Role, Tier};
use permafrost_proto as pb;
use permafrost_testkit::rogue::sign_directly;
use permafrost_testkit::{approver, ClusterOptions, TestCluster};
use tonic::Code;

const LOCK_SECS: u64 = 2;

fn policy() -> String {
    let key = |n: &str| hex::encode(approver(n).verifying_key().as_bytes());
    format!(
        r#"
[approvers]
alice = "{}"
[groups.warm-1]
tier = "warm"
time_lock_secs = {LOCK_SECS}
max_lifetime_secs = 86400
[groups.warm-1.assets.BTC]
per_request_max = "1000000000"
daily_max = "2000000000"
"#,
        key("alice")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x2_time_lock_of_one_request_never_unlocks_another_under_the_same_id() {
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
    let mut clients: Vec<_> = (0..2)
        .map(|i| cluster.node_client(i, Role::Coordinator, "coord-1"))
        .collect();

    // Junk (no valid custody signature) starts no clock.
    let a = cluster.request("wd-R", "warm-1", Tier::Warm);
    let mut junk = cluster.sign(&a);
    junk.custody_signature = vec![1; 64];
    for c in clients.iter_mut() {
        let err = c.announce(junk.clone()).await.expect_err("unsigned");
        assert_eq!(err.code(), Code::PermissionDenied);
    }

    // A is announced everywhere, and its lock runs out.
    let signed_a = cluster.sign(&a);
    for c in clients.iter_mut() {
        c.announce(signed_a.clone()).await.expect("announce A");
    }
    tokio::time::sleep(Duration::from_secs(LOCK_SECS + 1)).await;

    // B: same id, another digest, never seen before.
    let mut b = a.clone();
    b.amount += 1;
    let signed_b = cluster.sign(&b);
    let answers = sign_directly(&mut clients, "warm-1", &signed_b, &b.payload, &[]).await;
    for answer in answers {
        let err = answer.expect_err("B's own time-lock has not run");
        assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
        assert!(err.message().contains("time-locked"), "{}", err.message());
    }

    // A itself signs through the honest coordinator. B can then never get a
    // threshold of shares under the used id: every node that signed A refuses
    // B's digest (at most the one member that did not sign A would answer).
    let status = cluster
        .custody()
        .submit_withdrawal(signed_a)
        .await
        .expect("submit A")
        .into_inner();
    assert_eq!(
        status.state(),
        pb::WithdrawalState::Signed,
        "{}",
        status.detail
    );
    tokio::time::sleep(Duration::from_secs(LOCK_SECS + 1)).await;
    let mut all: Vec<_> = (0..3)
        .map(|i| cluster.node_client(i, Role::Coordinator, "coord-1"))
        .collect();
    let mut released = 0;
    for answer in sign_directly(&mut all, "warm-1", &signed_b, &b.payload, &[]).await {
        match answer {
            Ok(_) => released += 1,
            Err(e) => assert!(
                e.message().contains("different digest") || e.message().contains("time-locked"),
                "{}",
                e.message()
            ),
        }
    }
    assert!(released < 2, "{released} shares for B under A's id");
}
