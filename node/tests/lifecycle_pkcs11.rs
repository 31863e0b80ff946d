//! Node lifecycle on the PKCS#11 sealer against SoftHSM2: `init` creates the token key,
//! `run` only uses it, and an unavailable HSM (module missing, token missing, wrong PIN, no
//! key) stops the node with a message naming the cause, stored data untouched (S2, H2).
//!
//! Each test makes its own token. Without SoftHSM the tests print a skip message, except
//! under CI (`CI` set), where they fail.

mod common;

use common::{lifecycle, NodeDir, SealerSection};

#[test]
fn init_creates_the_token_key_then_open_unseals() {
    let Some(dir) = NodeDir::pkcs11("life") else {
        return;
    };
    let (hsm, token) = token_of(&dir);
    assert!(
        hsm.secret_key_labels(&token).is_empty(),
        "a fresh token has no key"
    );
    lifecycle::init_then_open(&dir);
    assert_eq!(
        hsm.secret_key_labels(&token),
        ["permafrost-seal"],
        "init created exactly one key"
    );
}

#[test]
fn init_twice_is_refused_and_changes_nothing() {
    let Some(dir) = NodeDir::pkcs11("twice") else {
        return;
    };
    lifecycle::init_twice_refused(&dir);
    let (hsm, token) = token_of(&dir);
    assert_eq!(hsm.secret_key_labels(&token).len(), 1);
}

#[test]
fn s2_wrong_pin_refused_store_untouched() {
    let Some(dir) = NodeDir::pkcs11("pin") else {
        return;
    };
    lifecycle::wrong_secret_refused(&dir, "wrong PIN");
}

#[test]
fn s2_flipped_byte_in_sealed_blob_refused_at_start() {
    let Some(dir) = NodeDir::pkcs11("flip") else {
        return;
    };
    lifecycle::flipped_byte_refused(&dir);
}

#[test]
fn h2_group_or_world_accessible_data_dir_refused_at_start() {
    let Some(dir) = NodeDir::pkcs11("mode") else {
        return;
    };
    lifecycle::open_data_dir_refused(&dir);
}

/// The sealer sections of `dir` with one field changed.
fn section(dir: &NodeDir, module: &str, token: &str, key: &str) -> String {
    format!(
        "kind = \"pkcs11\"\nmodule_path = \"{module}\"\ntoken_label = \"{token}\"\n\
         key_label = \"{key}\"\npin_file = \"{}\"\n",
        dir.path("pin").display()
    )
}

fn token_of(dir: &NodeDir) -> (&'static common::SoftHsm, String) {
    let SealerSection::Pkcs11 { token_label, .. } = &dir.sealer else {
        panic!("not a PKCS#11 node")
    };
    (dir.hsm.expect("PKCS#11 node"), token_label.clone())
}

#[test]
fn missing_module_refused_naming_the_path_store_untouched() {
    let Some(dir) = NodeDir::pkcs11("module") else {
        return;
    };
    dir.init();
    let (_, token) = token_of(&dir);
    let before = dir.snapshot();
    dir.write_config_with_sealer(&section(
        &dir,
        "/nonexistent/libpkcs11-gone.so",
        &token,
        "permafrost-seal",
    ));
    let msg = dir.open().expect_err("no module").to_string();
    assert!(
        msg.contains("HSM unavailable") && msg.contains("/nonexistent/libpkcs11-gone.so"),
        "{msg}"
    );
    common::assert_unchanged(&before, &dir.snapshot());
}

#[test]
fn missing_token_refused_naming_the_label_store_untouched() {
    let Some(dir) = NodeDir::pkcs11("token") else {
        return;
    };
    dir.init();
    let before = dir.snapshot();
    let module = common::module_path();
    dir.write_config_with_sealer(&section(
        &dir,
        &module.display().to_string(),
        "no-such-token",
        "permafrost-seal",
    ));
    let msg = dir.open().expect_err("no token").to_string();
    assert!(
        msg.contains("no PKCS#11 token labelled \"no-such-token\""),
        "{msg}"
    );
    common::assert_unchanged(&before, &dir.snapshot());
}

#[test]
fn open_never_creates_a_missing_key() {
    let Some(dir) = NodeDir::pkcs11("nokey") else {
        return;
    };
    dir.init();
    let (hsm, token) = token_of(&dir);
    let before = dir.snapshot();
    let module = common::module_path();
    dir.write_config_with_sealer(&section(
        &dir,
        &module.display().to_string(),
        &token,
        "another-key",
    ));
    let msg = dir.open().expect_err("no such key").to_string();
    assert!(
        msg.contains("has no AES key labelled \"another-key\""),
        "{msg}"
    );
    assert_eq!(
        hsm.secret_key_labels(&token),
        ["permafrost-seal"],
        "open created no key"
    );
    common::assert_unchanged(&before, &dir.snapshot());
}

#[test]
fn pin_from_an_environment_variable() {
    let Some(dir) = NodeDir::pkcs11("pinenv") else {
        return;
    };
    let (_, token) = token_of(&dir);
    let var = format!("PERMAFROST_NODE_TEST_PIN_{}", std::process::id());
    std::env::set_var(&var, common::USER_PIN);
    let module = common::module_path();
    dir.write_config_with_sealer(&format!(
        "kind = \"pkcs11\"\nmodule_path = \"{}\"\ntoken_label = \"{token}\"\npin_env = \"{var}\"\n",
        module.display()
    ));
    dir.init();
    dir.open().expect("opens with the PIN from the environment");
    std::env::set_var(&var, "user-pin-0000");
    let msg = dir.open().expect_err("wrong PIN").to_string();
    assert!(msg.contains("wrong PIN"), "{msg}");
}
