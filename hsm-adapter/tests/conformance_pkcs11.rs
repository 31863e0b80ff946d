//! The shared conformance suite (STYLE.md §10) against the PKCS#11 backend on SoftHSM2,
//! plus the PKCS#11-specific failure modes; threat S2.
//!
//! Each test initialises its own token, so tests run in parallel without sharing a login.
//! Without SoftHSM the tests print a skip message, except under CI where they fail.

mod common;

use common::PassphraseState;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass};
use permafrost_hsm::conformance::{self, Backend};
use permafrost_hsm::{Pkcs11Config, Pkcs11Sealer, SealContext, SealError, Sealer, SecretSource};
use permafrost_testkit::softhsm::{Token, USER_PIN};

/// A fresh token and a sealer on it, or `None` when SoftHSM is absent outside CI.
fn sealer(name: &str) -> Option<(Token<'static>, Box<dyn Sealer>)> {
    let token = common::softhsm()?.new_token(name);
    let sealer = token.open().expect("open PKCS#11 sealer");
    Some((token, sealer))
}

fn with_backend(token: &Token<'_>, check: impl FnOnce(&Backend<'_>)) {
    let open = || token.open();
    let open_wrong = || token.open_with_wrong_secret();
    check(&Backend {
        open: &open,
        open_with_wrong_secret: &open_wrong,
    });
}

#[test]
fn s2_full_suite() {
    let Some(hsm) = common::softhsm() else { return };
    let token = hsm.new_token("full");
    let passphrase = PassphraseState::new();
    let other = passphrase.open().expect("open passphrase sealer");
    with_backend(&token, |backend| {
        conformance::run_all(backend, Some(other.as_ref()))
    });
}

#[test]
fn s2_round_trip() {
    let Some((_token, sealer)) = sealer("round-trip") else {
        return;
    };
    conformance::round_trip(sealer.as_ref());
}

#[test]
fn s2_fresh_nonce_per_seal() {
    let Some((_token, sealer)) = sealer("nonce") else {
        return;
    };
    conformance::fresh_nonce_per_seal(sealer.as_ref());
}

#[test]
fn s2_survives_reopen() {
    let Some(hsm) = common::softhsm() else { return };
    with_backend(&hsm.new_token("reopen"), conformance::survives_reopen);
}

#[test]
fn s2_wrong_pin_refused() {
    let Some(hsm) = common::softhsm() else { return };
    with_backend(
        &hsm.new_token("wrong-pin"),
        conformance::wrong_secret_refused,
    );
}

#[test]
fn s2_flipped_byte_refused() {
    let Some((_token, sealer)) = sealer("flip") else {
        return;
    };
    conformance::flipped_byte_refused(sealer.as_ref());
}

#[test]
fn s2_truncated_or_extended_blob_refused() {
    let Some((_token, sealer)) = sealer("truncate") else {
        return;
    };
    conformance::truncated_or_extended_blob_refused(sealer.as_ref());
}

#[test]
fn s2_other_node_or_purpose_refused() {
    let Some((_token, sealer)) = sealer("context") else {
        return;
    };
    conformance::other_node_or_purpose_refused(sealer.as_ref());
}

#[test]
fn s2_empty_context_refused() {
    let Some((_token, sealer)) = sealer("empty-ctx") else {
        return;
    };
    conformance::empty_context_refused(sealer.as_ref());
}

#[test]
fn s2_unknown_version_refused() {
    let Some((_token, sealer)) = sealer("version") else {
        return;
    };
    conformance::unknown_version_refused(sealer.as_ref());
}

#[test]
fn s2_relabelled_backend_refused() {
    let Some((_token, sealer)) = sealer("relabel") else {
        return;
    };
    conformance::relabelled_backend_refused(sealer.as_ref());
}

#[test]
fn s2_passphrase_blob_refused_as_wrong_backend() {
    let Some((_token, sealer)) = sealer("other-backend") else {
        return;
    };
    let passphrase = PassphraseState::new();
    let other = passphrase.open().expect("open passphrase sealer");
    conformance::other_backend_refused(sealer.as_ref(), other.as_ref());
}

#[test]
fn s2_blob_of_another_token_is_tampered() {
    // Same backend and key label, different token and so a different key.
    let Some((_a, sealer_a)) = sealer("key-a") else {
        return;
    };
    let Some((_b, sealer_b)) = sealer("key-b") else {
        return;
    };
    let ctx = SealContext::new("node-1", "keygroup/warm-1");
    let blob = sealer_a.seal(&ctx, b"share").expect("seal");
    let err = sealer_b.unseal(&ctx, &blob).expect_err("other key");
    assert!(matches!(err, SealError::Tampered), "{err}");
}

#[test]
fn missing_module_is_unavailable_naming_the_path() {
    let cfg = Pkcs11Config {
        module_path: "/nonexistent/libpkcs11-missing.so".into(),
        token_label: "any".into(),
        key_label: "any".into(),
        pin: SecretSource::Env("PATH".into()),
    };
    let err = Pkcs11Sealer::open(&cfg, true).expect_err("no module");
    assert!(matches!(err, SealError::Unavailable(_)), "{err}");
    assert!(
        err.to_string()
            .contains("/nonexistent/libpkcs11-missing.so"),
        "{err}"
    );
}

#[test]
fn unknown_token_label_is_named() {
    let Some(hsm) = common::softhsm() else { return };
    let err = hsm
        .open(&hsm.config("no-such-token", "user.pin"), true)
        .expect_err("no such token");
    assert!(matches!(err, SealError::TokenNotFound { .. }), "{err}");
    assert!(err.to_string().contains("no-such-token"), "{err}");
}

#[test]
fn missing_key_without_create_is_named() {
    let Some(hsm) = common::softhsm() else { return };
    let token = hsm.new_token("no-key");
    let err = token
        .hsm
        .open(&token.config(), false)
        .expect_err("no key yet");
    assert!(matches!(err, SealError::KeyNotFound { .. }), "{err}");
    assert!(err.to_string().contains("permafrost-seal"), "{err}");
    // Once created, opening without create finds the same key.
    let ctx = SealContext::new("node-1", "identity/ed25519");
    let blob = token
        .open()
        .expect("create key")
        .seal(&ctx, b"id")
        .expect("seal");
    let sealer = token
        .hsm
        .open(&token.config(), false)
        .expect("key exists now");
    assert_eq!(
        sealer.unseal(&ctx, &blob).expect("unseal").as_slice(),
        b"id"
    );
}

#[test]
fn s2_second_open_of_a_token_in_use_is_refused() {
    // A second login in the same process would not check the PIN; refusing it keeps a
    // wrong PIN from slipping through while the first sealer is alive.
    let Some((token, _first)) = sealer("in-use") else {
        return;
    };
    let err = token
        .open_with_wrong_secret()
        .err()
        .expect("second open refused");
    assert!(matches!(err, SealError::TokenInUse { .. }), "{err}");
    assert!(err.to_string().contains(&token.label), "{err}");
}

#[test]
fn s2_sealer_is_shareable_across_threads() {
    let Some((_token, sealer)) = sealer("threads") else {
        return;
    };
    let sealer: std::sync::Arc<dyn Sealer> = sealer.into();
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let sealer = sealer.clone();
            std::thread::spawn(move || {
                let ctx = SealContext::new(format!("node-{i}"), "keygroup/warm-1");
                for round in 0..25u32 {
                    let plain = round.to_be_bytes();
                    let blob = sealer.seal(&ctx, &plain).expect("seal");
                    assert_eq!(
                        sealer.unseal(&ctx, &blob).expect("unseal").as_slice(),
                        plain
                    );
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().expect("worker thread");
    }
}

#[test]
fn s2_debug_does_not_leak_the_session() {
    let Some((token, sealer)) = sealer("debug") else {
        return;
    };
    drop(sealer);
    let sealer = token.hsm.open(&token.config(), false).expect("reopen");
    let debug = format!("{sealer:?}");
    assert!(
        debug.contains(&token.label) && debug.contains("<logged in>"),
        "{debug}"
    );
    assert!(!debug.contains(USER_PIN), "{debug}");
}

#[test]
fn s2_generated_key_is_sensitive_and_non_extractable() {
    let Some((token, sealer)) = sealer("key-attrs") else {
        return;
    };
    drop(sealer);
    let attributes = token.with_user_session(|session| {
        let keys = session
            .find_objects(&[Attribute::Label(b"permafrost-seal".to_vec())])
            .expect("find key");
        assert_eq!(keys.len(), 1, "exactly one key generated");
        session
            .get_attributes(
                keys[0],
                &[
                    AttributeType::Sensitive,
                    AttributeType::Extractable,
                    AttributeType::Token,
                    AttributeType::KeyType,
                ],
            )
            .expect("read attributes")
    });
    for expected in [
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Token(true),
        Attribute::KeyType(KeyType::AES),
    ] {
        assert!(
            attributes.contains(&expected),
            "{expected:?} not in {attributes:?}"
        );
    }
}

#[test]
fn s2_extractable_key_is_refused() {
    let Some(hsm) = common::softhsm() else { return };
    let token = hsm.new_token("extractable");
    token.with_user_session(|session| {
        session
            .generate_key(
                &Mechanism::AesKeyGen,
                &[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(KeyType::AES),
                    Attribute::ValueLen(32.into()),
                    Attribute::Label(b"permafrost-seal".to_vec()),
                    Attribute::Token(true),
                    Attribute::Sensitive(false),
                    Attribute::Extractable(true),
                ],
            )
            .expect("plant an extractable key")
    });
    let err = token
        .hsm
        .open(&token.config(), true)
        .expect_err("must refuse the key");
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            SealError::Config {
                field: "key_label",
                ..
            }
        ),
        "{msg}"
    );
    assert!(
        msg.contains("is extractable") && msg.contains("is not sensitive"),
        "{msg}"
    );
}
