//! Shared fixtures for the conformance tests: passphrase state in a tempdir, and the
//! SoftHSM2 tokens of `permafrost_testkit::softhsm`.
#![allow(dead_code)] // each test file uses a different subset

use std::path::Path;

use permafrost_hsm::{KdfParams, PassphraseSealer, SealError, Sealer};
use permafrost_testkit::softhsm::SoftHsm;

pub const PASSPHRASE: &str = "correct horse battery staple";

/// A passphrase sealer state in its own tempdir, removed when this is dropped.
pub struct PassphraseState {
    pub dir: tempfile::TempDir,
}

impl PassphraseState {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        PassphraseSealer::create(dir.path(), PASSPHRASE, KdfParams::fast_for_tests())
            .expect("create passphrase sealer");
        Self { dir }
    }

    pub fn open(&self) -> Result<Box<dyn Sealer>, SealError> {
        Ok(Box::new(PassphraseSealer::open(
            self.dir.path(),
            PASSPHRASE,
        )?))
    }

    pub fn open_with_wrong_secret(&self) -> Result<Box<dyn Sealer>, SealError> {
        Ok(Box::new(PassphraseSealer::open(
            self.dir.path(),
            "Correct horse battery staple",
        )?))
    }
}

/// The SoftHSM fixture, or `None` (with a message) when the module is absent outside CI.
pub fn softhsm() -> Option<&'static SoftHsm> {
    permafrost_testkit::softhsm::softhsm(Path::new(env!("CARGO_TARGET_TMPDIR")))
}
