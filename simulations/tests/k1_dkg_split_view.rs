//! K1: a relay shows one node a different round-1 set. The echo check makes
//! every honest node abort before part 3; no group is created anywhere.

use permafrost_core::Role;
use permafrost_proto::{self as pb};
use permafrost_testkit::{approved, wire, TestCluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k1_split_round1_view_aborts_dkg_on_every_node() {
    let cluster = TestCluster::start(&["eu", "us", "ap"]).await;
    let mut clients: Vec<_> = (0..3)
        .map(|i| cluster.node_client(i, Role::Coordinator, "relay"))
        .collect();
    // The relay holds a genuine operator-approved create spec; it splits views anyway.
    let signed = approved(
        &cluster.create_spec("warm-9", permafrost_core::Tier::Warm, 2, &[0, 1, 2]),
        &[1, 2],
    );
    let spec = pb::CeremonySpec {
        ceremony_id: "split-1".into(),
        group: "warm-9".into(),
        tier: pb::Tier::Warm as i32,
        threshold: 2,
        members: vec!["n1".into(), "n2".into(), "n3".into()],
        removed: Vec::new(),
        refresh: false,
        authorization: signed.spec.digest().0.to_vec(),
    };
    let mut round1 = Vec::new();
    for c in &mut clients {
        round1.push(
            c.dkg_start(pb::DkgStartRequest {
                spec: Some(spec.clone()),
                authorization: Some(wire(&signed)),
            })
            .await
            .expect("part 1")
            .into_inner(),
        );
    }
    // n3 is shown an altered copy of n1's package.
    let mut altered = round1.clone();
    let last = altered[0].package.len() - 1;
    altered[0].package[last] ^= 1;
    let mut echoes = Vec::new();
    for (i, c) in clients.iter_mut().enumerate() {
        let view = if i == 2 {
            altered.clone()
        } else {
            round1.clone()
        };
        match c
            .dkg_echo(pb::DkgEchoRequest {
                ceremony_id: "split-1".into(),
                round1: view,
            })
            .await
        {
            Ok(e) => echoes.push(e.into_inner()),
            Err(e) => {
                assert_eq!(i, 2, "only the node shown the altered set refuses at once");
                assert!(e.message().contains("n1"), "{}", e.message());
            }
        }
    }
    // The relay goes on with what it has; n1 and n2 must not accept an incomplete or split echo set.
    for c in clients.iter_mut().take(2) {
        let err = c
            .dkg_round2(pb::DkgRound2Request {
                ceremony_id: "split-1".into(),
                echoes: echoes.clone(),
            })
            .await
            .expect_err("must abort");
        assert!(err.message().contains("echo"), "{}", err.message());
    }
    // Echoes that disagree are also refused: n1 sees n2's echo replaced by its own.
    // (Covered with validly signed equivocation in the core unit test k1_split_view_aborts_every_honest_member.)
    for c in &mut clients {
        let status = c
            .get_status(pb::NodeStatusRequest {})
            .await
            .expect("status")
            .into_inner();
        assert!(status.key_groups.is_empty(), "no node created the group");
    }
    // The ceremony is gone: a relay cannot resume it.
    let err = clients[0]
        .dkg_finish(pb::DkgFinishRequest {
            ceremony_id: "split-1".into(),
            shares: vec![],
        })
        .await
        .expect_err("aborted ceremony");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    cluster.shutdown().await;
}
