//! X5/K8: retiring a group takes an operator quorum that every member checks
//! itself; a retired group signs nothing again, its shares are destroyed on
//! every member (no data key left), and its name is never reused.

use permafrost_core::{Role, Tier};
use permafrost_proto::{self as pb, WithdrawalState};
use permafrost_testkit::{approved, wire, TestCluster};
use permafrostctl::ceremony::Change;
use tonic::Code;

const GROUP: &str = "warm-1";

fn data_keys(cluster: &TestCluster, i: usize) -> usize {
    let dir = cluster.nodes[i]
        .config
        .data_dir
        .join("datakeys")
        .join(GROUP);
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x5_k8_retire_needs_the_quorum_then_destroys_every_share() {
    let mut cluster = TestCluster::start(&["eu", "us", "ap"]).await;
    cluster
        .create_group(GROUP, Tier::Warm, 2, &[0, 1, 2])
        .await
        .expect("DKG");
    let spec = cluster.change_spec(GROUP, Change::Retire).await;

    // One operator's say-so: refused at the coordinator and by every node.
    let one = approved(&spec, &[1]);
    let err = cluster
        .operator()
        .retire_key_group(pb::RetireKeyGroupRequest {
            name: GROUP.into(),
            authorization: Some(wire(&one)),
        })
        .await
        .expect_err("one operator");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    for i in 0..3 {
        let err = cluster
            .node_client(i, Role::Coordinator, "rogue")
            .retire_group(pb::RetireGroupRequest {
                key_group: GROUP.into(),
                authorization: Some(wire(&one)),
            })
            .await
            .expect_err("one operator");
        assert_eq!(err.code(), Code::PermissionDenied, "n{}: {err:?}", i + 1);
    }
    // A refresh spec is not a retirement.
    let refresh = approved(&cluster.change_spec(GROUP, Change::Refresh).await, &[1, 2]);
    let err = cluster
        .node_client(0, Role::Coordinator, "rogue")
        .retire_group(pb::RetireGroupRequest {
            key_group: GROUP.into(),
            authorization: Some(wire(&refresh)),
        })
        .await
        .expect_err("a refresh spec");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let request = cluster.request("wd-retire-before", GROUP, Tier::Warm);
    let status = cluster
        .custody()
        .submit_withdrawal(cluster.sign(&request))
        .await
        .expect("submit")
        .into_inner();
    assert_eq!(
        status.state(),
        WithdrawalState::Signed,
        "still signs: {}",
        status.detail
    );

    // The quorum retires it.
    let quorum = approved(&spec, &[1, 2]);
    let retired = cluster
        .operator()
        .retire_key_group(pb::RetireKeyGroupRequest {
            name: GROUP.into(),
            authorization: Some(wire(&quorum)),
        })
        .await
        .expect("retire")
        .into_inner();
    assert!(!retired.active);
    // The same spec again is done, not an error, on every node.
    for i in 0..3 {
        cluster
            .node_client(i, Role::Coordinator, "rogue")
            .retire_group(pb::RetireGroupRequest {
                key_group: GROUP.into(),
                authorization: Some(wire(&quorum)),
            })
            .await
            .expect("idempotent");
    }

    // Nothing signs: not through the coordinator, not by a rogue asking a node directly.
    let request = cluster.request("wd-retire-after", GROUP, Tier::Warm);
    match cluster
        .custody()
        .submit_withdrawal(cluster.sign(&request))
        .await
    {
        Ok(status) => assert_ne!(
            status.into_inner().state(),
            WithdrawalState::Signed,
            "a retired group signed"
        ),
        Err(status) => assert_ne!(status.code(), Code::Ok),
    }
    for i in 0..3 {
        let err = cluster
            .node_client(i, Role::Coordinator, "rogue")
            .commit(pb::CommitRequest {
                key_group: GROUP.into(),
                count: 1,
                withdrawal: Some(cluster.sign(&request)),
                ..Default::default()
            })
            .await
            .expect_err("retired");
        assert!(
            err.message().contains("retired"),
            "n{}: {}",
            i + 1,
            err.message()
        );
    }
    // Every member destroyed its share's data key (checked on disk, node stopped).
    for i in 0..3 {
        cluster.stop_node(i).await;
        assert_eq!(
            data_keys(&cluster, i),
            0,
            "n{} holds no data key of {GROUP}",
            i + 1
        );
        cluster.restart_node(i).await;
    }
    // The name is never reused.
    let err = cluster
        .create_group(GROUP, Tier::Warm, 2, &[0, 1, 2])
        .await
        .expect_err("a retired name");
    assert!(
        matches!(
            err.code(),
            Code::PermissionDenied | Code::AlreadyExists | Code::Aborted | Code::FailedPrecondition
        ),
        "{err:?}"
    );
    cluster.shutdown().await;
}
