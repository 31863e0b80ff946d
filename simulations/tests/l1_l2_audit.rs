//! L1: the audit log is tamper-evident. L2: if it cannot be written, no share leaves.

use permafrost_core::audit::verify;
use permafrost_core::identity::parse_ed25519_hex;
use permafrost_core::{Role, Tier};
use permafrost_proto::{self as pb, WithdrawalState};
use permafrost_testkit::rogue::{commit_all, package, sign_withdrawal};
use permafrost_testkit::TestCluster;
use rand::{Rng, SeedableRng};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l1_audit_log_verifies_and_random_tampering_is_always_detected() {
    let cluster = TestCluster::start(&["eu", "us", "ap"]).await;
    cluster
        .create_group("warm-1", Tier::Warm, 2, &[0, 1, 2])
        .await
        .expect("DKG");
    for i in 0..6 {
        let r = cluster.request(&format!("wd-l1-{i}"), "warm-1", Tier::Warm);
        let s = cluster
            .custody()
            .submit_withdrawal(cluster.sign(&r))
            .await
            .expect("submit")
            .into_inner();
        assert_eq!(s.state(), WithdrawalState::Signed);
    }
    let mut client = cluster.node_client(0, Role::Coordinator, "probe");
    let status = client
        .get_status(pb::NodeStatusRequest {})
        .await
        .expect("status")
        .into_inner();
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&cluster.nodes[0].config.manifest).expect("manifest"),
    )
    .expect("json");
    let key_hex = manifest["nodes"][0]["identity_key"].as_str().expect("key");
    let key = parse_ed25519_hex("key", key_hex).expect("key");
    let path = cluster.nodes[0].config.audit_path();
    let text = std::fs::read_to_string(&path).expect("audit log");
    let head_hash = hex::encode(&status.audit_head);
    let head = Some((status.audit_entries, head_hash.as_str()));
    let report = verify(&text, &[key], head).expect("intact log verifies");
    assert!(report.entries >= 10, "{report:?}");
    assert!(text.contains("\"share_released\""));
    assert!(text.contains("\"dkg_completed\""));

    // Seeded random tampering: edit, delete, reorder, truncate — each detected.
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed_a0d1);
    let lines: Vec<&str> = text.lines().collect();
    for round in 0..200 {
        let mut t: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        let at = rng.gen_range(0..t.len());
        match round % 4 {
            0 => {
                let mut bytes = t[at].clone().into_bytes();
                let pos = rng.gen_range(0..bytes.len());
                let replacement = if bytes[pos] == b'7' { b'8' } else { b'7' };
                bytes[pos] = replacement;
                let Ok(edited) = String::from_utf8(bytes) else {
                    continue;
                };
                t[at] = edited;
            }
            1 => {
                t.remove(at);
            }
            2 => {
                let other = rng.gen_range(0..t.len());
                if other == at {
                    continue;
                }
                t.swap(at, other);
            }
            _ => t.truncate(at),
        }
        let tampered = t.join("\n");
        let err = verify(&tampered, &[key], head).expect_err("tampering must be detected");
        assert!(err.contains("line") || err.contains("truncated"), "{err}");
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l2_audit_write_failure_means_no_share() {
    let cluster = TestCluster::start(&["eu", "us", "ap"]).await;
    cluster
        .create_group("warm-1", Tier::Warm, 2, &[0, 1, 2])
        .await
        .expect("DKG");
    // The audit log of n1 becomes unwritable (replaced by a directory).
    let path = cluster.nodes[0].config.audit_path();
    std::fs::remove_file(&path).expect("remove audit log");
    std::fs::create_dir(&path).expect("directory in its place");
    let mut clients: Vec<_> = (0..2)
        .map(|i| cluster.node_client(i, Role::Coordinator, "coord-x"))
        .collect();
    let request = cluster.request("wd-l2-1", "warm-1", Tier::Warm);
    let (commitments, handles) = commit_all(&mut clients, "warm-1").await;
    let pkg = package(&commitments, &request.payload);
    let err = clients[0]
        .sign(sign_withdrawal(
            "warm-1",
            &handles[0],
            &pkg,
            &cluster.sign(&request),
        ))
        .await
        .expect_err("no durable audit record, no share");
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert!(err.message().contains("audit"), "{}", err.message());
    // Through the coordinator the other two members still sign; n1 never contributes.
    let status = cluster
        .custody()
        .submit_withdrawal(cluster.sign(&request))
        .await
        .expect("submit")
        .into_inner();
    assert_eq!(status.state(), WithdrawalState::Signed, "{}", status.detail);
    assert!(!status.signers.contains(&"n1".to_string()));
    cluster.shutdown().await;
}
