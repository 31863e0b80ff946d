//! X5/X7/K8: removing a member is a refresh among the others under an
//! operator quorum that every node checks itself. The removed member keeps
//! its identifier as a tombstone, is never asked again, and its old share
//! matches no live share once the others committed and shredded theirs.

use std::collections::BTreeSet;

use permafrost_core::ceremony::LifecycleSpec;
use permafrost_core::{NodeId, Role, Tier};
use permafrost_proto::{self as pb, WithdrawalState};
use permafrost_testkit::{approved, assert_signature_valid, steal_key_package, wire, TestCluster};
use permafrostctl::ceremony::Change;
use tonic::Code;

const GROUP: &str = "warm-1";

fn node(s: &str) -> NodeId {
    NodeId::new(s).expect("id")
}

fn data_key_files(cluster: &TestCluster, i: usize) -> BTreeSet<String> {
    let dir = cluster.nodes[i]
        .config
        .data_dir
        .join("datakeys")
        .join(GROUP);
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

async fn node_group(cluster: &TestCluster, i: usize) -> pb::NodeKeyGroup {
    cluster.node_key_group(i, GROUP).await.expect("group held")
}

async fn signs(cluster: &TestCluster, id: &str, key: &[u8]) {
    let request = cluster.request(id, GROUP, Tier::Warm);
    let status = cluster
        .custody()
        .submit_withdrawal(cluster.sign(&request))
        .await
        .expect("submit")
        .into_inner();
    assert_eq!(status.state(), WithdrawalState::Signed, "{}", status.detail);
    assert_signature_valid(key, &request.payload, &status.signature);
}

/// A refresh ceremony that leaves `removed` out, as a rogue would send it to a node.
fn rogue_refresh(spec: &LifecycleSpec, removed: &[&str]) -> pb::CeremonySpec {
    pb::CeremonySpec {
        ceremony_id: "rogue-remove".into(),
        group: GROUP.into(),
        tier: pb::Tier::Warm as i32,
        threshold: u32::from(spec.threshold),
        members: vec!["n1".into(), "n2".into(), "n3".into(), "n4".into()],
        removed: removed.iter().map(|m| m.to_string()).collect(),
        refresh: true,
        authorization: spec.digest().0.to_vec(),
    }
}

async fn remove(
    cluster: &TestCluster,
    signed: &permafrost_core::ceremony::SignedSpec,
) -> Result<pb::KeyGroup, tonic::Status> {
    cluster
        .operator()
        .remove_member(pb::RemoveMemberRequest {
            name: GROUP.into(),
            node_id: String::new(),
            authorization: Some(wire(signed)),
        })
        .await
        .map(|r| r.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x5_k8_remove_member_refreshes_the_rest_and_never_needs_the_removed() {
    let mut cluster = TestCluster::start(&["eu", "us", "ap", "sa"]).await;
    let group = cluster
        .create_group(GROUP, Tier::Warm, 2, &[0, 1, 2, 3])
        .await
        .expect("DKG");
    let key = group.group_public_key.clone();
    let spec = cluster
        .change_spec(
            GROUP,
            Change::RemoveMember {
                node: node("n4"),
                threshold: 2,
            },
        )
        .await;
    assert_eq!(spec.members, vec![node("n1"), node("n2"), node("n3")]);

    // (c) One operator's say-so, or a spec for another epoch: refused at the
    // coordinator and by every node on its own.
    let one = approved(&spec, &[1]);
    let err = remove(&cluster, &one).await.expect_err("one operator");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let mut later = spec.clone();
    later.epoch += 1;
    let later = approved(&later, &[1, 2]);
    for signed in [&one, &later] {
        for i in 0..3 {
            let err = cluster
                .node_client(i, Role::Coordinator, "rogue")
                .dkg_start(pb::DkgStartRequest {
                    spec: Some(rogue_refresh(&signed.spec, &["n4"])),
                    authorization: Some(wire(signed)),
                })
                .await
                .expect_err("refused");
            assert_eq!(err.code(), Code::PermissionDenied, "n{}: {err:?}", i + 1);
        }
        let err = cluster
            .node_client(3, Role::Coordinator, "rogue")
            .leave_group(pb::LeaveGroupRequest {
                key_group: GROUP.into(),
                authorization: Some(wire(signed)),
                certificate: None,
            })
            .await
            .expect_err("n4 keeps its share");
        assert_eq!(err.code(), Code::PermissionDenied, "n4: {err:?}");
    }
    // The quorum's spec, with n4 left taking part: refused too.
    let quorum = approved(&spec, &[1, 2]);
    let err = cluster
        .node_client(0, Role::Coordinator, "rogue")
        .dkg_start(pb::DkgStartRequest {
            spec: Some(rogue_refresh(&spec, &[])),
            authorization: Some(wire(&quorum)),
        })
        .await
        .expect_err("n4 still taking part");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

    // Before: each remaining member's data key, n4's old share.
    let mut old_keys = Vec::new();
    let before = frost_secp256k1::keys::PublicKeyPackage::deserialize(
        &node_group(&cluster, 0).await.public_key_package,
    )
    .expect("pkp");
    for i in 0..4 {
        cluster.stop_node(i).await;
        old_keys.push(data_key_files(&cluster, i));
        if i < 3 {
            cluster.restart_node(i).await;
        }
    }
    // n4 stays down: the removal never needs it (a removed machine may be lost).
    let n4_old = steal_key_package(&cluster, 3, GROUP);
    let removed = remove(&cluster, &quorum).await.expect("removal");
    assert_eq!(removed.removed, vec!["n4".to_string()]);
    assert_eq!(removed.members.len(), 4, "n4 keeps its place");
    assert_eq!(removed.epoch, spec.epoch + 1);
    assert_eq!(removed.group_public_key, key, "same group key");

    // (b) Every remaining member refreshed: a new package without n4, the
    // same on all, its old data key shredded.
    let after = node_group(&cluster, 0).await;
    assert_eq!(after.removed, vec!["n4".to_string()]);
    for i in 1..3 {
        assert_eq!(
            node_group(&cluster, i).await.public_key_package,
            after.public_key_package
        );
    }
    let after = frost_secp256k1::keys::PublicKeyPackage::deserialize(&after.public_key_package)
        .expect("pkp");
    assert_eq!(after.verifying_key(), before.verifying_key());
    assert_eq!(after.verifying_shares().len(), 3);
    assert!(!after.verifying_shares().contains_key(n4_old.identifier()));
    for (id, share) in after.verifying_shares() {
        assert_ne!(
            Some(share),
            before.verifying_shares().get(id),
            "share {id:?} refreshed"
        );
    }
    // n4's old share matches no live verifying share.
    assert!(!after
        .verifying_shares()
        .values()
        .any(|s| s == n4_old.verifying_share()));
    let mut new_shares = Vec::new();
    for (i, old) in old_keys.iter().enumerate().take(3) {
        cluster.stop_node(i).await;
        new_shares.push(steal_key_package(&cluster, i, GROUP));
        let now = data_key_files(&cluster, i);
        assert_eq!(now.len(), 1, "n{}: one data key left: {now:?}", i + 1);
        assert!(
            old.is_disjoint(&now),
            "n{}: the old share's data key is shredded",
            i + 1
        );
        cluster.restart_node(i).await;
    }

    // n4's old share cannot sign with a remaining member's new one, under
    // the old package or the new; two new shares can (the check has teeth).
    let together = |a: &frost_secp256k1::keys::KeyPackage,
                    b: &frost_secp256k1::keys::KeyPackage,
                    pkp: &frost_secp256k1::keys::PublicKeyPackage| {
        let mut rng = rand::thread_rng();
        let (na, ca) = frost_secp256k1::round1::commit(a.signing_share(), &mut rng);
        let (nb, cb) = frost_secp256k1::round1::commit(b.signing_share(), &mut rng);
        let package = frost_secp256k1::SigningPackage::new(
            [(*a.identifier(), ca), (*b.identifier(), cb)].into(),
            b"after the removal",
        );
        let shares = [
            (
                *a.identifier(),
                frost_secp256k1::round2::sign(&package, &na, a).expect("sign"),
            ),
            (
                *b.identifier(),
                frost_secp256k1::round2::sign(&package, &nb, b).expect("sign"),
            ),
        ]
        .into();
        frost_secp256k1::aggregate(&package, &shares, pkp)
    };
    assert!(together(&new_shares[0], &n4_old, &after).is_err());
    assert!(together(&new_shares[0], &n4_old, &before).is_err());
    assert!(together(&new_shares[0], &new_shares[1], &after).is_ok());

    // (a) The remaining members sign, same key; n4 back up is never asked.
    cluster.restart_node(3).await;
    for k in 0..3 {
        signs(&cluster, &format!("wd-after-remove-{k}"), &key).await;
    }
    let n4 = cluster
        .node_client(3, Role::Coordinator, "test")
        .get_status(pb::NodeStatusRequest {})
        .await
        .expect("status")
        .into_inner();
    assert_eq!(n4.open_nonces, 0, "nobody asked n4 for commitments");

    // The same spec again: the epoch moved on, every remaining node refuses.
    for i in 0..3 {
        let err = cluster
            .node_client(i, Role::Coordinator, "rogue")
            .dkg_start(pb::DkgStartRequest {
                spec: Some(rogue_refresh(&spec, &["n4"])),
                authorization: Some(wire(&quorum)),
            })
            .await
            .expect_err("replayed removal");
        assert_eq!(err.code(), Code::PermissionDenied, "n{}: {err:?}", i + 1);
    }
    // n4, told late under the spec of the epoch it still holds, drops its
    // share, but only with the removal's commit certificate (the others'
    // reports of their new shares): the spec alone is refused.
    let err = cluster
        .node_client(3, Role::Coordinator, "rogue")
        .leave_group(pb::LeaveGroupRequest {
            key_group: GROUP.into(),
            authorization: Some(wire(&quorum)),
            certificate: None,
        })
        .await
        .expect_err("no certificate");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(
        err.message().contains("commit certificate"),
        "{}",
        err.message()
    );
    let certificate = cluster
        .node_client(0, Role::Coordinator, "test")
        .get_commit_certificate(pb::CommitCertificateRequest {
            key_group: GROUP.into(),
            include_commit: true,
        })
        .await
        .expect("certificate")
        .into_inner()
        .commit
        .expect("n1 keeps the removal's certificate");
    cluster
        .node_client(3, Role::Coordinator, "test")
        .leave_group(pb::LeaveGroupRequest {
            key_group: GROUP.into(),
            authorization: Some(wire(&quorum)),
            certificate: Some(certificate),
        })
        .await
        .expect("n4 leaves");
    cluster.stop_node(3).await;
    assert!(
        data_key_files(&cluster, 3).is_empty(),
        "n4 holds no data key"
    );
    cluster.restart_node(3).await;

    // (e) An ex-member is never repaired back, nor a helper.
    let back = cluster
        .change_spec(
            GROUP,
            Change::Repair {
                lost: node("n3"),
                replacement: node("n4"),
            },
        )
        .await;
    let err = cluster
        .operator()
        .repair_key_group(pb::RepairKeyGroupRequest {
            name: GROUP.into(),
            lost: "n3".into(),
            replacement: "n4".into(),
            authorization: Some(wire(&approved(&back, &[1, 2]))),
        })
        .await
        .expect_err("n4 repaired back");
    // It keeps its place in the member list, so it is "already a member".
    assert!(
        err.message().contains("removed") || err.message().contains("already a member"),
        "{err:?}"
    );
    let repair = cluster
        .change_spec(
            GROUP,
            Change::Repair {
                lost: node("n3"),
                replacement: node("n9"),
            },
        )
        .await;
    let repair = approved(&repair, &[1, 2]);
    for removed in [vec!["n4".to_string()], Vec::new()] {
        let err = cluster
            .node_client(0, Role::Coordinator, "rogue")
            .prepare_repair(pb::RepairRequest {
                spec: Some(pb::RepairSpec {
                    repair_id: "rogue-helper".into(),
                    group: GROUP.into(),
                    threshold: 2,
                    members: vec!["n1".into(), "n2".into(), "n3".into(), "n4".into()],
                    lost: "n3".into(),
                    replacement: "n9".into(),
                    helpers: vec!["n1".into(), "n4".into()],
                    tier: pb::Tier::Warm as i32,
                    authorization: repair.spec.digest().0.to_vec(),
                    removed: removed.clone(),
                }),
                messages: vec![],
                public_key_package: vec![],
                authorization: Some(wire(&repair)),
                acks: vec![],
                registry_changes: vec![],
            })
            .await
            .expect_err("n4 as a helper");
        assert!(
            matches!(err.code(), Code::InvalidArgument | Code::PermissionDenied),
            "removed {removed:?}: {err:?}"
        );
    }

    // A second removal: tombstones accumulate, identifiers stay.
    let spec3 = cluster
        .change_spec(
            GROUP,
            Change::RemoveMember {
                node: node("n3"),
                threshold: 2,
            },
        )
        .await;
    let g = remove(&cluster, &approved(&spec3, &[1, 2]))
        .await
        .expect("second removal");
    assert_eq!(g.removed, vec!["n4".to_string(), "n3".to_string()]);
    // P1 across removals: a withdrawal signed today by n3 and n4 alone is
    // remembered by no active member, so for the rest of the velocity window
    // a withdrawal under the daily limit needs 4 - 2 + 1 = 3 attestations
    // of the 2 active members: it waits, saying why (fail closed).
    let request = cluster.request("wd-after-two-removals", GROUP, Tier::Warm);
    let status = cluster
        .custody()
        .submit_withdrawal(cluster.sign(&request))
        .await
        .expect("submit")
        .into_inner();
    assert_eq!(
        status.state(),
        WithdrawalState::Pending,
        "{}",
        status.detail
    );
    assert!(
        status.detail.contains("removed less than 24 h ago"),
        "{}",
        status.detail
    );

    // (d) Removing n2 too would leave one member of a 2-of-4: refused by the
    // coordinator and by every node, naming the numbers.
    let mut below = spec3.clone();
    below.epoch = g.epoch;
    below.proposal_id = "remove-n2".into();
    below.subject = Some(node("n2"));
    below.members = vec![node("n1")];
    let below = approved(&below, &[1, 2]);
    let err = remove(&cluster, &below).await.expect_err("below t");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("1 members"), "{err:?}");
    for i in 0..2 {
        let err = cluster
            .node_client(i, Role::Coordinator, "rogue")
            .dkg_start(pb::DkgStartRequest {
                spec: Some(rogue_refresh(&below.spec, &["n2", "n3", "n4"])),
                authorization: Some(wire(&below)),
            })
            .await
            .expect_err("below t");
        assert!(
            matches!(err.code(), Code::InvalidArgument | Code::PermissionDenied),
            "n{}: {err:?}",
            i + 1
        );
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x5_removing_a_middle_member_leaves_a_gap_in_the_identifiers_and_the_rest_sign() {
    // 2-of-3: removing n2 leaves identifiers 1 and 3; their shares, the
    // key package and every signer's check must agree on that.
    let cluster = TestCluster::start(&["eu", "us", "ap"]).await;
    let group = cluster
        .create_group(GROUP, Tier::Warm, 2, &[0, 1, 2])
        .await
        .expect("DKG");
    let key = group.group_public_key.clone();
    let spec = cluster
        .change_spec(
            GROUP,
            Change::RemoveMember {
                node: node("n2"),
                threshold: 2,
            },
        )
        .await;
    assert_eq!(spec.members, vec![node("n1"), node("n3")]);
    let g = remove(&cluster, &approved(&spec, &[1, 2]))
        .await
        .expect("removal of the middle member");
    assert_eq!(g.removed, vec!["n2".to_string()]);
    assert_eq!(g.group_public_key, key, "same key, same address");
    for k in 0..3 {
        signs(&cluster, &format!("wd-gap-{k}"), &key).await;
    }
    // n2 answered and dropped its share (it was up): it holds no data key
    // and takes no step on the group again.
    assert!(
        data_key_files(&cluster, 1).is_empty(),
        "n2 holds no data key"
    );
    let status = cluster
        .node_client(1, Role::Coordinator, "test")
        .get_status(pb::NodeStatusRequest {})
        .await
        .expect("status")
        .into_inner();
    assert_eq!(status.open_nonces, 0, "nobody asked n2 for commitments");
    cluster.shutdown().await;
}
