//! K8: after a refresh, the pre-refresh share is gone for good. Each share is
//! sealed under a data key of its own; committing the refresh destroys the
//! old data key, so a copy of the old share's blob left anywhere in the data
//! directory (the store's free pages, say) opens under no passphrase.

use std::path::{Path, PathBuf};

use permafrost_core::{GroupName, NodeId, Tier};
use permafrost_hsm::PassphraseSealer;
use permafrost_node::store::NodeStore;
use permafrost_node::vault::ShareVault;
use permafrost_proto::WithdrawalState;
use permafrost_testkit::{assert_signature_valid, TestCluster};

const GROUP: &str = "warm-1";
/// What a sealed share begins with (the vault's envelope of a data-key blob).
const ENVELOPE_MAGIC: &[u8] = b"PFSHARE1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k8_scan_after_refresh_finds_no_old_share_that_opens() {
    let mut cluster = TestCluster::start(&["eu", "us", "ap"]).await;
    let group = cluster
        .create_group(GROUP, Tier::Warm, 2, &[0, 1, 2])
        .await
        .expect("DKG");
    let data_dir = cluster.nodes[0].config.data_dir.clone();
    let node = cluster.nodes[0].config.id.clone();
    let name = GroupName::new(GROUP).expect("name");

    cluster.stop_node(0).await;
    let old_blob = stored_share(&data_dir, &name);
    let old_share = open(&data_dir, &node, &name, &old_blob)
        .expect("the current share opens")
        .signing_share()
        .serialize();
    let old_keys = key_files(&data_dir);
    assert_eq!(old_keys.len(), 1, "one data key per share: {old_keys:?}");
    cluster.restart_node(0).await;

    let refreshed = cluster.refresh_group(GROUP).await.expect("refresh");
    assert_eq!(refreshed.group_public_key, group.group_public_key);

    cluster.stop_node(0).await;
    let new_blob = stored_share(&data_dir, &name);
    let new_share = open(&data_dir, &node, &name, &new_blob)
        .expect("the new share opens")
        .signing_share()
        .serialize();
    assert_ne!(new_share, old_share, "the refresh changed the share");

    // The old blob itself, kept by an attacker from before the refresh: dead.
    let err = open(&data_dir, &node, &name, &old_blob).expect_err("old share must not open");
    assert!(
        err.to_string().contains("data key") && err.to_string().contains("gone"),
        "the error says why: {err}"
    );
    // Its data key file is gone, and no file holds the old sealed key's bytes.
    let keys = key_files(&data_dir);
    assert_eq!(
        keys.len(),
        1,
        "only the new share's data key is left: {keys:?}"
    );
    assert!(
        !keys.contains(&old_keys[0]),
        "the old data key was destroyed"
    );

    // Scan every file of the data dir for anything shaped like a sealed share,
    // raw or as the store's JSON byte arrays, and try to open it: only the
    // current share opens.
    let mut candidates = 0;
    for file in all_files(&data_dir) {
        let bytes = std::fs::read(&file).expect("read");
        for candidate in sealed_shares_in(&bytes, old_blob.len().max(new_blob.len())) {
            candidates += 1;
            if let Ok(package) = open(&data_dir, &node, &name, &candidate) {
                assert_eq!(
                    package.signing_share().serialize(),
                    new_share,
                    "{} holds an openable share that is not the current one",
                    file.display()
                );
            }
        }
    }
    assert!(candidates > 0, "the scan found the stored share at least");

    // The group still signs on the refreshed shares.
    cluster.restart_node(0).await;
    let request = cluster.request("wd-k8-1", GROUP, Tier::Warm);
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

fn open(
    data_dir: &Path,
    node: &NodeId,
    group: &GroupName,
    blob: &[u8],
) -> Result<frost_secp256k1::keys::KeyPackage, permafrost_node::NodeError> {
    let passphrase = std::env::var("PERMAFROST_TEST_PASSPHRASE").expect("test passphrase");
    let sealer = PassphraseSealer::open(data_dir, &passphrase).expect("open sealer");
    ShareVault::open_offline(&sealer, data_dir, node, group, blob)
}

fn stored_share(data_dir: &Path, group: &GroupName) -> Vec<u8> {
    NodeStore::open(data_dir)
        .expect("store")
        .group(group)
        .expect("read")
        .expect("group")
        .sealed_key_package
}

fn key_files(data_dir: &Path) -> Vec<PathBuf> {
    all_files(&data_dir.join("datakeys"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|x| x == "key"))
        .collect()
}

fn all_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            out.extend(all_files(&path));
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// Every byte string in `file` that starts like a sealed share: raw bytes
/// (cut at `max_len`, and at each shorter length a blob could end), or a JSON
/// array of byte values as the store writes records.
fn sealed_shares_in(file: &[u8], max_len: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for at in find_all(file, ENVELOPE_MAGIC) {
        let end = (at + max_len).min(file.len());
        out.push(file[at..end].to_vec());
    }
    let json_magic: String = ENVELOPE_MAGIC.iter().map(|b| format!("{b},")).collect();
    for at in find_all(file, json_magic.as_bytes()) {
        let rest = &file[at..];
        let end = rest.iter().position(|&b| b == b']').unwrap_or(rest.len());
        let bytes: Option<Vec<u8>> = std::str::from_utf8(&rest[..end])
            .ok()
            .and_then(|text| text.split(',').map(|n| n.trim().parse().ok()).collect());
        if let Some(bytes) = bytes {
            out.push(bytes);
        }
    }
    out
}

fn find_all(haystack: &[u8], needle: &[u8]) -> Vec<usize> {
    haystack
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(i, _)| i)
        .collect()
}
