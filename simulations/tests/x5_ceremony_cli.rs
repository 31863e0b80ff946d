//! X5 through the operator CLI: `permafrostctl ceremony propose | show |
//! approve | submit` and `keygroup refresh --spec` against a real cluster.
//! A spec without the quorum is refused; with two operators' approvals the
//! group is created and refreshed, and signs.
//!
//! Runs the built `permafrostctl` (`cargo build --workspace --bins` first);
//! skipped with a message when it is missing, unless `CI` is set.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use permafrost_core::{Role, Tier};
use permafrost_proto::WithdrawalState;
use permafrost_testkit::{assert_signature_valid, operator_key, TestCluster};
use permafrostctl::pki;

fn ctl_binary() -> Option<PathBuf> {
    let sim = PathBuf::from(env!("CARGO_BIN_EXE_permafrost-sim"));
    let ctl = sim.parent()?.join("permafrostctl");
    if ctl.is_file() {
        return Some(ctl);
    }
    let msg = format!(
        "{} is missing: run `cargo build --workspace --bins` before `cargo test`",
        ctl.display()
    );
    if std::env::var_os("CI").is_some() {
        panic!("{msg}");
    }
    eprintln!("SKIPPED ceremony CLI test: {msg}");
    None
}

struct Ctl {
    bin: PathBuf,
    conn: Vec<String>,
}

impl Ctl {
    fn run(&self, args: &[&str], with_conn: bool) -> Output {
        let mut cmd = Command::new(&self.bin);
        cmd.args(args);
        if with_conn {
            cmd.args(&self.conn);
        }
        cmd.output().expect("run permafrostctl")
    }

    fn ok(&self, args: &[&str], with_conn: bool) -> String {
        let out = self.run(args, with_conn);
        assert!(
            out.status.success(),
            "permafrostctl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

fn write_operator_key(dir: &Path, i: u8) -> PathBuf {
    let path = dir.join(format!("op-{i}.key"));
    std::fs::write(
        &path,
        format!("{}\n", hex::encode(operator_key(i).to_bytes())),
    )
    .expect("key");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x5_ceremony_cli_propose_approve_submit_and_refresh() {
    let Some(bin) = ctl_binary() else { return };
    let cluster = TestCluster::start(&["eu", "us", "ap"]).await;
    let dir = cluster.dir.path().join("operator-cli");
    pki::issue_to_dir(
        &cluster.ca_dir,
        Role::Operator,
        "operator-9",
        &pki::Extra::default(),
        None,
        &dir,
    )
    .expect("operator certificate");
    let conn = vec![
        "--coordinator".to_string(),
        cluster.coordinator_addr.to_string(),
        "--server-name".into(),
        pki::server_name(Role::Coordinator, "coord-1"),
        "--ca".into(),
        cluster.ca_dir.join(pki::CA_CERT).display().to_string(),
        "--cert".into(),
        dir.join("operator-9.pem").display().to_string(),
        "--key".into(),
        dir.join("operator-9.key").display().to_string(),
    ];
    let ctl = Ctl { bin, conn };
    let keys = [write_operator_key(&dir, 1), write_operator_key(&dir, 2)];
    let spec = dir.join("create.json");
    let spec_arg = spec.display().to_string();

    // An operator key file as `operator-key` writes and reads it.
    let generated = dir.join("fresh.key");
    let public = ctl.ok(
        &[
            "operator-key",
            "generate",
            "--out",
            &generated.display().to_string(),
        ],
        false,
    );
    assert_eq!(
        ctl.ok(
            &[
                "operator-key",
                "public",
                "--key",
                &generated.display().to_string()
            ],
            false
        ),
        public
    );

    let proposed = ctl.ok(
        &[
            "ceremony",
            "propose",
            "--operation",
            "create",
            "--group",
            "warm-1",
            "--tier",
            "warm",
            "--threshold",
            "2",
            "--nodes",
            "n1,n2,n3",
            "--out",
            &spec_arg,
        ],
        false,
    );
    assert!(proposed.contains("a NEW key by DKG"), "{proposed}");
    // Unapproved, or on one say-so: the cluster refuses it.
    let refused = ctl.run(&["ceremony", "submit", "--spec", &spec_arg], true);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("quorum"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    ctl.ok(
        &[
            "ceremony",
            "approve",
            "--spec",
            &spec_arg,
            "--key",
            &keys[0].display().to_string(),
            "--operator-id",
            "op-1",
        ],
        false,
    );
    let refused = ctl.run(&["keygroup", "create", "--spec", &spec_arg], true);
    assert!(!refused.status.success(), "one operator is not a quorum");
    ctl.ok(
        &[
            "ceremony",
            "approve",
            "--spec",
            &spec_arg,
            "--key",
            &keys[1].display().to_string(),
            "--operator-id",
            "op-2",
        ],
        false,
    );
    let shown = ctl.ok(&["ceremony", "show", "--spec", &spec_arg], false);
    assert!(shown.contains("approvals     2 (op-1, op-2)"), "{shown}");
    // A check flag that contradicts the spec is refused before anything is sent.
    let contradicted = ctl.run(
        &[
            "keygroup",
            "create",
            "--spec",
            &spec_arg,
            "--threshold",
            "3",
        ],
        true,
    );
    assert!(!contradicted.status.success());
    let created = ctl.ok(&["ceremony", "submit", "--spec", &spec_arg], true);
    assert!(
        created.contains("create done") && created.contains("epoch 1"),
        "{created}"
    );

    // A refresh, its epoch and key read from the coordinator.
    let refresh = dir.join("refresh.json");
    let refresh_arg = refresh.display().to_string();
    ctl.ok(
        &[
            "ceremony",
            "propose",
            "--operation",
            "refresh",
            "--group",
            "warm-1",
            "--out",
            &refresh_arg,
        ],
        true,
    );
    for (i, key) in keys.iter().enumerate() {
        ctl.ok(
            &[
                "ceremony",
                "approve",
                "--spec",
                &refresh_arg,
                "--key",
                &key.display().to_string(),
                "--operator-id",
                &format!("op-{}", i + 1),
            ],
            false,
        );
    }
    let refreshed = ctl.ok(
        &[
            "keygroup",
            "refresh",
            "--spec",
            &refresh_arg,
            "--name",
            "warm-1",
        ],
        true,
    );
    assert!(refreshed.contains("epoch 2"), "{refreshed}");
    // The same spec again is for an epoch the group has left.
    assert!(!ctl
        .run(&["ceremony", "submit", "--spec", &refresh_arg], true)
        .status
        .success());

    // The group's registry changes by the CLI: op-3 leaves, the fresh key
    // joins as op-9; the proposal names the registry it replaces.
    let new_registry = dir.join("new-operators.toml");
    let key_of = |i: u8| hex::encode(operator_key(i).verifying_key().as_bytes());
    std::fs::write(
        &new_registry,
        format!(
            "[operators]\ndefault_quorum = 2\n[operators.keys]\nop-1 = \"{}\"\nop-2 = \"{}\"\nop-9 = \"{}\"\n",
            key_of(1),
            key_of(2),
            public.trim().to_ascii_uppercase()
        ),
    )
    .expect("registry file");
    let change = dir.join("registry.json");
    let change_arg = change.display().to_string();
    let proposed = ctl.ok(
        &[
            "ceremony",
            "propose",
            "--operation",
            "change-registry",
            "--group",
            "warm-1",
            "--registry",
            &new_registry.display().to_string(),
            "--out",
            &change_arg,
        ],
        true,
    );
    let config_hash = hex::encode(
        permafrost_testkit::operator_registry()
            .build()
            .expect("registry")
            .hash(),
    );
    assert!(
        proposed.contains("OPERATOR REGISTRY becomes #1")
            && proposed.contains(&config_hash)
            && proposed.contains(&format!("operator op-9 = {}", public.trim())),
        "{proposed}"
    );
    for (i, key) in keys.iter().enumerate() {
        ctl.ok(
            &[
                "ceremony",
                "approve",
                "--spec",
                &change_arg,
                "--key",
                &key.display().to_string(),
                "--operator-id",
                &format!("op-{}", i + 1),
            ],
            false,
        );
    }
    let changed = ctl.ok(&["ceremony", "submit", "--spec", &change_arg], true);
    assert!(changed.contains("change-registry done"), "{changed}");

    let group = cluster
        .operator()
        .list_key_groups(permafrost_proto::ListKeyGroupsRequest {})
        .await
        .expect("list")
        .into_inner()
        .key_groups
        .remove(0);
    assert_eq!(group.registry_seq, 1);
    let request = cluster.request("wd-cli-1", "warm-1", Tier::Warm);
    let status = cluster
        .custody()
        .submit_withdrawal(cluster.sign(&request))
        .await
        .expect("submit")
        .into_inner();
    assert_eq!(status.state(), WithdrawalState::Signed, "{}", status.detail);
    assert_signature_valid(&group.group_public_key, &request.payload, &status.signature);
    cluster.shutdown().await;
}
