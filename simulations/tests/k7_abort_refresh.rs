//! K7: a refresh that can never commit is aborted without splitting the
//! group. A member that has not reported it promises, signed, never to; the
//! members holding its new share drop it on that promise (their data keys
//! destroyed, K8); nobody's current share changes. Once every member has
//! reported, no promise can be had, the abort is refused, a new refresh is
//! refused too (a pending refresh is never replaced), and recovery
//! finishes the refresh instead.

use std::path::{Path, PathBuf};

use permafrost_core::ceremony::SignedSpec;
use permafrost_core::{Role, Tier};
use permafrost_proto::{
    self as pb, ceremony_client::CeremonyClient, signer_node_client::SignerNodeClient,
    WithdrawalState,
};
use permafrost_testkit::{
    approved, assert_signature_valid, rogue, wire, ClusterOptions, Lie, TestCluster,
};
use tonic::transport::Channel;
use tonic::Code;

const GROUP: &str = "warm-1";

/// The DKG spec of a refresh of the 2-of-3 group n1, n2, n3 under `signed`.
fn refresh_spec(signed: &SignedSpec, ceremony_id: &str) -> pb::CeremonySpec {
    pb::CeremonySpec {
        ceremony_id: ceremony_id.into(),
        group: GROUP.into(),
        tier: pb::Tier::Warm as i32,
        threshold: 2,
        members: vec!["n1".into(), "n2".into(), "n3".into()],
        removed: Vec::new(),
        refresh: true,
        authorization: signed.spec.digest().0.to_vec(),
    }
}

/// Node `i`'s epoch of the group and the refresh it holds pending ("" if none).
/// A genuine, operator-approved refresh `ceremony` of the group, and a
/// relay's clients straight to the three nodes to drive it by hand.
async fn rogue_refresh(
    cluster: &TestCluster,
    ceremony: &str,
) -> (SignedSpec, pb::CeremonySpec, Vec<SignerNodeClient<Channel>>) {
    let signed = approved(
        &cluster
            .change_spec(GROUP, permafrostctl::ceremony::Change::Refresh)
            .await,
        &[1, 2],
    );
    let spec = refresh_spec(&signed, ceremony);
    let clients = (0..3)
        .map(|i| cluster.node_client(i, Role::Coordinator, "coord-rogue"))
        .collect();
    (signed, spec, clients)
}

async fn held(cluster: &TestCluster, i: usize) -> (u64, String) {
    let g = cluster.node_key_group(i, GROUP).await.expect("group");
    (g.epoch, g.pending_refresh)
}

/// The data key files of node `i` (one per share it holds, K8).
fn key_files(cluster: &TestCluster, i: usize) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|x| x == "key") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&cluster.nodes[i].config.data_dir.join("datakeys"), &mut out);
    out.sort();
    out
}

fn abandon(ceremony_id: &str) -> pb::AbandonRefreshRequest {
    pb::AbandonRefreshRequest {
        key_group: GROUP.into(),
        ceremony_id: ceremony_id.into(),
    }
}

fn abort() -> pb::AbortRefreshRequest {
    pb::AbortRefreshRequest {
        name: GROUP.into(),
        ceremony_id: String::new(),
    }
}

async fn signs(
    custody: &mut pb::custody_client::CustodyClient<tonic::transport::Channel>,
    cluster: &TestCluster,
    id: &str,
    key: &[u8],
) {
    let request = cluster.request(id, GROUP, Tier::Warm);
    let status = custody
        .submit_withdrawal(cluster.sign(&request))
        .await
        .expect("submit")
        .into_inner();
    assert_eq!(status.state(), WithdrawalState::Signed, "{}", status.detail);
    assert_signature_valid(key, &request.payload, &status.signature);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k7_abort_refresh_drops_every_pending_share_and_the_promiser_refuses_it() {
    let mut cluster = TestCluster::start(&["eu", "us", "ap"]).await;
    let group = cluster
        .create_group(GROUP, Tier::Warm, 2, &[0, 1, 2])
        .await
        .expect("DKG");
    let key = group.group_public_key.clone();
    let (mut second, second_channel) = cluster.start_another_coordinator().await;
    let mut second_ops = CeremonyClient::new(second_channel);
    second_ops
        .adopt_key_group(pb::AdoptKeyGroupRequest { name: GROUP.into() })
        .await
        .expect("adopt");
    let before: Vec<Vec<PathBuf>> = (0..3).map(|i| key_files(&cluster, i)).collect();
    assert!(before.iter().all(|k| k.len() == 1), "{before:?}");

    // A genuine, operator-approved refresh whose relay stops once n1 and n2
    // have finished: they hold its new share; n3 never reported.
    let ceremony = "refresh-k7-abort";
    let (signed, spec, mut clients) = rogue_refresh(&cluster, ceremony).await;
    let shares = rogue::dkg_until_finish(&mut clients, &spec, &wire(&signed))
        .await
        .expect("rounds 1 and 2");
    for (i, client) in clients.iter_mut().enumerate().take(2) {
        rogue::dkg_finish(client, ceremony, i, &shares)
            .await
            .expect("n1 and n2 finish");
    }
    let mut pending_keys = Vec::new();
    for (i, keys) in before.iter().enumerate() {
        let expect = if i < 2 { ceremony } else { "" };
        assert_eq!(
            held(&cluster, i).await,
            (1, expect.to_string()),
            "n{}",
            i + 1
        );
        let new: Vec<PathBuf> = key_files(&cluster, i)
            .into_iter()
            .filter(|k| !keys.contains(k))
            .collect();
        assert_eq!(new.len(), usize::from(i < 2), "n{}: {new:?}", i + 1);
        pending_keys.extend(new);
    }

    // Mid-refresh the group signs on its current shares.
    signs(&mut second, &cluster, "wd-k7-abort-1", &key).await;

    // n1 reported, so it cannot promise: a certificate may exist.
    let err = clients[0]
        .abandon_refresh(abandon(ceremony))
        .await
        .expect_err("n1 reported");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("has reported") && err.message().contains("recover"),
        "{}",
        err.message()
    );

    // Another coordinator aborts it: n3 promises, n1 and n2 drop their shares.
    let aborted = second_ops
        .abort_refresh(abort())
        .await
        .expect("abort")
        .into_inner();
    assert_eq!(aborted.ceremony_id, ceremony);
    assert_eq!(aborted.promised_by, vec!["n3"]);
    assert_eq!(aborted.dropped, vec!["n1", "n2"]);
    assert!(aborted.not_dropped.is_empty(), "{:?}", aborted.not_dropped);
    for (i, keys) in before.iter().enumerate() {
        assert_eq!(held(&cluster, i).await, (1, String::new()), "n{}", i + 1);
        assert_eq!(
            &key_files(&cluster, i),
            keys,
            "n{}: only the current share's data key",
            i + 1
        );
    }
    for k in &pending_keys {
        assert!(!k.exists(), "{} was destroyed", k.display());
    }

    // n3 refuses to finish the refresh it promised never to report (its
    // round-2 step is still in memory), and says why.
    let err = rogue::dkg_finish(&mut clients[2], ceremony, 2, &shares)
        .await
        .expect_err("n3 promised");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("abandoned"), "{}", err.message());
    // Asked again it gives the same promise; a drop sent again is done.
    let promise = clients[2]
        .abandon_refresh(abandon(ceremony))
        .await
        .expect("the promise again")
        .into_inner();
    assert_eq!((promise.member.as_str(), promise.epoch), ("n3", 1));
    let again = clients[0]
        .drop_pending_refresh(pb::DropPendingRefreshRequest {
            key_group: GROUP.into(),
            ceremony_id: ceremony.into(),
            promise: Some(promise),
        })
        .await
        .expect("idempotent drop")
        .into_inner();
    assert!(!again.dropped);
    // After a restart n3 still refuses that refresh: its promise is on disk.
    cluster.restart_node(2).await;
    let err = cluster
        .node_client(2, Role::Coordinator, "coord-rogue")
        .dkg_start(pb::DkgStartRequest {
            spec: Some(spec.clone()),
            authorization: Some(wire(&signed)),
        })
        .await
        .expect_err("abandoned for good");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("abandoned"), "{}", err.message());
    let nothing = second_ops
        .abort_refresh(abort())
        .await
        .expect("nothing left")
        .into_inner();
    assert!(nothing.ceremony_id.is_empty(), "{nothing:?}");

    // The group still signs, and a later refresh works.
    signs(&mut cluster.custody(), &cluster, "wd-k7-abort-2", &key).await;
    let refreshed = cluster.refresh_group(GROUP).await.expect("a later refresh");
    assert_eq!(refreshed.group_public_key, key);
    assert_eq!(refreshed.epoch, 2);
    for i in 0..3 {
        assert_eq!(held(&cluster, i).await, (2, String::new()), "n{}", i + 1);
    }
    signs(&mut cluster.custody(), &cluster, "wd-k7-abort-3", &key).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k7_abort_refused_once_every_member_reported_and_recovery_finishes_it() {
    let cluster = TestCluster::start(&["eu", "us", "ap"]).await;
    let group = cluster
        .create_group(GROUP, Tier::Warm, 2, &[0, 1, 2])
        .await
        .expect("DKG");
    let ceremony = "refresh-k7-all-reported";
    let (signed, spec, mut clients) = rogue_refresh(&cluster, ceremony).await;
    let reports = rogue::dkg_rounds(&mut clients, &spec, &wire(&signed))
        .await
        .expect("refresh rounds");

    // Every member reported: a complete certificate exists, nobody can
    // promise, so nothing is dropped.
    let err = cluster
        .operator()
        .abort_refresh(abort())
        .await
        .expect_err("every member reported");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("every member at epoch 1 reported")
            && err.message().contains("keygroup recover"),
        "{}",
        err.message()
    );
    for (i, client) in clients.iter_mut().enumerate() {
        let err = client
            .abandon_refresh(abandon(ceremony))
            .await
            .expect_err("reported");
        assert_eq!(err.code(), Code::FailedPrecondition, "n{}: {err:?}", i + 1);
        assert_eq!(
            held(&cluster, i).await,
            (1, ceremony.to_string()),
            "n{}",
            i + 1
        );
    }
    // A forged promise drops nothing: the node checks it itself.
    let err = clients[1]
        .drop_pending_refresh(pb::DropPendingRefreshRequest {
            key_group: GROUP.into(),
            ceremony_id: ceremony.into(),
            promise: Some(pb::RefreshAbandonPromise {
                key_group: GROUP.into(),
                epoch: 1,
                ceremony_id: ceremony.into(),
                member: "n3".into(),
                signature: vec![7; 64],
            }),
        })
        .await
        .expect_err("forged promise");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(
        err.message().contains("not signed by n3"),
        "{}",
        err.message()
    );
    assert_eq!(held(&cluster, 1).await, (1, ceremony.to_string()));

    // A pending refresh is never replaced: a new refresh is refused while
    // every member holds this one (its certificate exists).
    let err = cluster
        .refresh_group(GROUP)
        .await
        .expect_err("a refresh is pending");
    assert!(err.message().contains("pending"), "{}", err.message());
    for i in 0..3 {
        assert_eq!(
            held(&cluster, i).await,
            (1, ceremony.to_string()),
            "n{}",
            i + 1
        );
    }
    // Nobody committed and the relay is gone (its reports with it): any
    // coordinator rebuilds the certificate from every member's stored part.
    drop((spec, reports));
    let recovered = cluster
        .operator()
        .recover_key_group(pb::RecoverKeyGroupRequest { name: GROUP.into() })
        .await
        .expect("recover")
        .into_inner();
    assert!(recovered.behind.is_empty(), "{:?}", recovered.behind);
    assert_eq!(recovered.group.expect("group").epoch, 2);
    for i in 0..3 {
        assert_eq!(held(&cluster, i).await, (2, String::new()), "n{}", i + 1);
    }
    signs(
        &mut cluster.custody(),
        &cluster,
        "wd-k7-reported-1",
        &group.group_public_key,
    )
    .await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k7_a_refresh_that_fails_before_every_report_is_aborted_by_its_coordinator() {
    // n4 fronts a relay that alters n1's round-2 share to it, so n4 fails the
    // last DKG round of every ceremony it takes part in.
    let cluster = TestCluster::start_with(ClusterOptions {
        regions: ["eu", "us", "ap", "ap"].map(String::from).to_vec(),
        liars: vec![(3, Lie::DkgRound2)],
        tamper_sender: Some("n1".into()),
        ..Default::default()
    })
    .await;
    let group = cluster
        .create_group(GROUP, Tier::Warm, 2, &[0, 1, 2])
        .await
        .expect("DKG");
    // n3's share moves onto n4 by a repair (no DKG round on n4).
    let repaired = cluster
        .repair_group(GROUP, "n3", "n4")
        .await
        .expect("repair");
    assert_eq!(repaired.members, vec!["n1", "n2", "n4"]);
    let before: Vec<Vec<PathBuf>> = [0, 1].map(|i| key_files(&cluster, i)).to_vec();

    // The coordinator's refresh: n1 and n2 finish, n4 cannot. Without n4's
    // report it can never commit; the coordinator aborts it itself.
    let err = cluster
        .refresh_group(GROUP)
        .await
        .expect_err("n4 fails round 3");
    assert!(
        err.message().contains("round 3")
            && err
                .message()
                .contains("pending shares were dropped on n1, n2 (n4 promised"),
        "{}",
        err.message()
    );
    for (i, keys) in before.iter().enumerate() {
        assert_eq!(held(&cluster, i).await, (2, String::new()), "n{}", i + 1);
        assert_eq!(&key_files(&cluster, i), keys, "n{}", i + 1);
    }
    assert_eq!(held(&cluster, 3).await, (2, String::new()), "n4");
    signs(
        &mut cluster.custody(),
        &cluster,
        "wd-k7-failed-1",
        &group.group_public_key,
    )
    .await;
    cluster.shutdown().await;
}
