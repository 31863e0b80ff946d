//! The shared conformance suite (STYLE.md §10) against the passphrase backend; threat S2.

mod common;

use common::PassphraseState;
use permafrost_hsm::conformance::{self, Backend};
use permafrost_hsm::Sealer;

fn sealer() -> (PassphraseState, Box<dyn Sealer>) {
    let state = PassphraseState::new();
    let sealer = state.open().expect("open passphrase sealer");
    (state, sealer)
}

/// A PKCS#11 sealer to play "the other backend", when SoftHSM is available.
fn pkcs11_sealer() -> Option<Box<dyn Sealer>> {
    common::softhsm().map(|hsm| {
        hsm.new_token("pp-other")
            .open()
            .expect("open PKCS#11 sealer as the other backend")
    })
}

#[test]
fn s2_full_suite() {
    let state = PassphraseState::new();
    let open = || state.open();
    let open_wrong = || state.open_with_wrong_secret();
    let backend = Backend {
        open: &open,
        open_with_wrong_secret: &open_wrong,
    };
    conformance::run_all(&backend, pkcs11_sealer().as_deref());
}

#[test]
fn s2_round_trip() {
    let (_state, sealer) = sealer();
    conformance::round_trip(sealer.as_ref());
}

#[test]
fn s2_fresh_nonce_per_seal() {
    let (_state, sealer) = sealer();
    conformance::fresh_nonce_per_seal(sealer.as_ref());
}

#[test]
fn s2_survives_reopen() {
    let state = PassphraseState::new();
    let open = || state.open();
    let open_wrong = || state.open_with_wrong_secret();
    conformance::survives_reopen(&Backend {
        open: &open,
        open_with_wrong_secret: &open_wrong,
    });
}

#[test]
fn s2_wrong_passphrase_refused() {
    let state = PassphraseState::new();
    let open = || state.open();
    let open_wrong = || state.open_with_wrong_secret();
    conformance::wrong_secret_refused(&Backend {
        open: &open,
        open_with_wrong_secret: &open_wrong,
    });
}

#[test]
fn s2_flipped_byte_refused() {
    let (_state, sealer) = sealer();
    conformance::flipped_byte_refused(sealer.as_ref());
}

#[test]
fn s2_truncated_or_extended_blob_refused() {
    let (_state, sealer) = sealer();
    conformance::truncated_or_extended_blob_refused(sealer.as_ref());
}

#[test]
fn s2_other_node_or_purpose_refused() {
    let (_state, sealer) = sealer();
    conformance::other_node_or_purpose_refused(sealer.as_ref());
}

#[test]
fn s2_empty_context_refused() {
    let (_state, sealer) = sealer();
    conformance::empty_context_refused(sealer.as_ref());
}

#[test]
fn s2_unknown_version_refused() {
    let (_state, sealer) = sealer();
    conformance::unknown_version_refused(sealer.as_ref());
}

#[test]
fn s2_relabelled_backend_refused() {
    let (_state, sealer) = sealer();
    conformance::relabelled_backend_refused(sealer.as_ref());
}

#[test]
fn s2_pkcs11_blob_refused_as_wrong_backend() {
    let (_state, sealer) = sealer();
    let Some(other) = pkcs11_sealer() else { return };
    conformance::other_backend_refused(sealer.as_ref(), other.as_ref());
}

#[test]
fn s2_blob_of_another_passphrase_state_is_tampered() {
    // Same backend, different key (another node's state): authentication must fail.
    let (_a, sealer_a) = sealer();
    let (_b, sealer_b) = sealer();
    let ctx = permafrost_hsm::SealContext::new("node-1", "keygroup/warm-1");
    let blob = sealer_a.seal(&ctx, b"share").expect("seal");
    let err = sealer_b.unseal(&ctx, &blob).expect_err("other key");
    assert!(matches!(err, permafrost_hsm::SealError::Tampered), "{err}");
}
