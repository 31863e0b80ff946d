//! Node lifecycle on the passphrase sealer: `init`, start-up unseal, and start-up refusals
//! that leave stored data untouched (S2, H2).

mod common;

use common::{lifecycle, NodeDir};

#[test]
fn init_then_open_unseals_identity_and_tls_key() {
    lifecycle::init_then_open(&NodeDir::passphrase());
}

#[test]
fn init_twice_is_refused_and_changes_nothing() {
    lifecycle::init_twice_refused(&NodeDir::passphrase());
}

#[test]
fn s2_wrong_passphrase_refused_store_untouched() {
    lifecycle::wrong_secret_refused(&NodeDir::passphrase(), "wrong passphrase");
}

#[test]
fn s2_flipped_byte_in_sealed_blob_refused_at_start() {
    lifecycle::flipped_byte_refused(&NodeDir::passphrase());
}

#[test]
fn h2_group_or_world_accessible_data_dir_refused_at_start() {
    lifecycle::open_data_dir_refused(&NodeDir::passphrase());
}

#[test]
fn unset_passphrase_variable_is_named_and_store_untouched() {
    let dir = NodeDir::passphrase();
    dir.init();
    let before = dir.snapshot();
    dir.write_config_with_sealer(
        "kind = \"passphrase\"\npassphrase_env = \"PERMAFROST_NODE_TEST_UNSET_PASSPHRASE\"\n",
    );
    let msg = dir.open().expect_err("no passphrase").to_string();
    assert!(
        msg.contains("PERMAFROST_NODE_TEST_UNSET_PASSPHRASE") && msg.contains("is not set"),
        "{msg}"
    );
    common::assert_unchanged(&before, &dir.snapshot());
}

#[test]
fn s2_passphrase_state_missing_is_named() {
    let dir = NodeDir::passphrase();
    dir.init();
    let state = dir.data_dir().join("sealer.json");
    std::fs::remove_file(&state).expect("remove sealer state");
    let msg = dir.open().expect_err("no sealer state").to_string();
    assert!(msg.contains(&state.display().to_string()), "{msg}");
}
