//! Shared fixtures for the conformance tests: passphrase state in a tempdir and SoftHSM2
//! tokens under a test-owned `SOFTHSM2_CONF`.
#![allow(dead_code)] // each test file uses a different subset

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use permafrost_hsm::{
    KdfParams, PassphraseSealer, Pkcs11Config, Pkcs11Sealer, SealError, Sealer, SecretSource,
};

pub const PASSPHRASE: &str = "correct horse battery staple";
pub const USER_PIN: &str = "user-pin-2468";
const SO_PIN: &str = "so-pin-13579";
const DEFAULT_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// A passphrase sealer state in its own tempdir (kept alive by the returned guard).
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
        Ok(Box::new(PassphraseSealer::open(self.dir.path(), PASSPHRASE)?))
    }

    pub fn open_with_wrong_secret(&self) -> Result<Box<dyn Sealer>, SealError> {
        Ok(Box::new(PassphraseSealer::open(
            self.dir.path(),
            "Correct horse battery staple",
        )?))
    }
}

/// The process-wide SoftHSM2 setup: one config and token directory for the whole test
/// binary, since SoftHSM reads `SOFTHSM2_CONF` once, when the module is first initialised.
pub struct SoftHsm {
    pub module: PathBuf,
    conf: PathBuf,
    root: PathBuf,
}

fn module_path() -> PathBuf {
    std::env::var_os("PERMAFROST_PKCS11_MODULE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_MODULE))
}

/// The SoftHSM fixture, or `None` (with a message) when the module is absent outside CI.
/// Under CI (`CI` set) a missing module fails the test: the PKCS#11 backend must be tested.
pub fn softhsm() -> Option<&'static SoftHsm> {
    static FIXTURE: OnceLock<Option<SoftHsm>> = OnceLock::new();
    FIXTURE
        .get_or_init(|| {
            let module = module_path();
            if !module.exists() {
                if std::env::var_os("CI").is_some() {
                    panic!(
                        "PKCS#11 module {} is missing and CI is set: run .ci/softhsm-setup.sh \
                         or point PERMAFROST_PKCS11_MODULE at a module",
                        module.display()
                    );
                }
                eprintln!(
                    "SKIPPING PKCS#11 tests: module {} not found (install softhsm2, e.g. \
                     .ci/softhsm-setup.sh, or set PERMAFROST_PKCS11_MODULE)",
                    module.display()
                );
                return None;
            }
            // Under target/tmp, not /tmp: the token store outlives the process (a static is
            // never dropped) and `cargo clean` removes it.
            let root = tempfile::Builder::new()
                .prefix("softhsm-")
                .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
                .expect("softhsm tempdir")
                .keep();
            let tokens = root.join("tokens");
            std::fs::create_dir_all(&tokens).expect("token dir");
            let conf = root.join("softhsm2.conf");
            std::fs::write(
                &conf,
                format!(
                    "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                    tokens.display()
                ),
            )
            .expect("write softhsm2.conf");
            // Set once, before any test loads the module; later tests only read it.
            std::env::set_var("SOFTHSM2_CONF", &conf);
            write_secret(&root.join("user.pin"), USER_PIN);
            write_secret(&root.join("wrong.pin"), "user-pin-0000");
            Some(SoftHsm { module, conf, root })
        })
        .as_ref()
}

fn write_secret(path: &Path, secret: &str) {
    std::fs::write(path, format!("{secret}\n")).expect("write pin file");
}

impl SoftHsm {
    /// Initialises a fresh token with a unique label, so tests never share login state.
    pub fn new_token(&self, name: &str) -> Token<'_> {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let label = format!("{name}-{}", COUNTER.fetch_add(1, Ordering::Relaxed));
        assert!(label.len() <= 32, "token label {label} is longer than 32 bytes");
        let output = Command::new("softhsm2-util")
            .args(["--init-token", "--free", "--label", &label])
            .args(["--pin", USER_PIN, "--so-pin", SO_PIN])
            .env("SOFTHSM2_CONF", &self.conf)
            .output()
            .expect("run softhsm2-util (installed with softhsm2)");
        assert!(
            output.status.success(),
            "softhsm2-util --init-token failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Token { hsm: self, label }
    }

    pub fn config(&self, token_label: &str, pin_file: &str) -> Pkcs11Config {
        Pkcs11Config {
            module_path: self.module.clone(),
            token_label: token_label.into(),
            key_label: "permafrost-seal".into(),
            pin: SecretSource::File(self.root.join(pin_file)),
        }
    }
}

/// One initialised token.
pub struct Token<'a> {
    pub hsm: &'a SoftHsm,
    pub label: String,
}

impl Token<'_> {
    pub fn config(&self) -> Pkcs11Config {
        self.hsm.config(&self.label, "user.pin")
    }

    pub fn open(&self) -> Result<Box<dyn Sealer>, SealError> {
        Ok(Box::new(Pkcs11Sealer::open(&self.config(), true)?))
    }

    pub fn open_with_wrong_secret(&self) -> Result<Box<dyn Sealer>, SealError> {
        Ok(Box::new(Pkcs11Sealer::open(
            &self.hsm.config(&self.label, "wrong.pin"),
            true,
        )?))
    }
}
