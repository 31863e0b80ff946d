//! Shared fixtures for the conformance tests: passphrase state in a tempdir and SoftHSM2
//! tokens under a test-owned `SOFTHSM2_CONF`.
#![allow(dead_code)] // each test file uses a different subset

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;

use permafrost_hsm::{
    KdfParams, PassphraseSealer, Pkcs11Config, Pkcs11Sealer, SealError, Sealer, SecretSource,
};

pub const PASSPHRASE: &str = "correct horse battery staple";
pub const USER_PIN: &str = "user-pin-2468";
const SO_PIN: &str = "so-pin-13579";
const DEFAULT_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

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

/// The process-wide SoftHSM2 setup: one config and token directory for the whole test
/// binary, since SoftHSM reads `SOFTHSM2_CONF` once, when the module is first initialised.
///
/// Tokens are initialised in-process through the fixture's own handle on the module (the
/// same loaded library the crate uses): SoftHSM does not see tokens that `softhsm2-util`
/// creates after the module was initialised.
pub struct SoftHsm {
    pub module: PathBuf,
    root: PathBuf,
    pkcs11: Pkcs11,
    /// SoftHSM's `C_GetSlotList` is not thread-safe (two concurrent calls after a token
    /// initialisation both add the new free slot and abort the process on an assertion).
    /// The crate serialises its own calls; this lock serialises the fixture's with them
    /// (every open in these tests goes through [`SoftHsm::open`]).
    slot_lock: Mutex<()>,
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
                // Written to stderr directly: libtest hides `eprintln!` of passing tests.
                let _ = writeln!(
                    std::io::stderr(),
                    "SKIPPING PKCS#11 tests: module {} not found (install softhsm2, e.g. \
                     .ci/softhsm-setup.sh, or set PERMAFROST_PKCS11_MODULE)",
                    module.display()
                );
                return None;
            }
            // Under target/tmp, not /tmp: the token store outlives the process (a static is
            // never dropped), so earlier runs' stores are swept here and by `cargo clean`.
            remove_stale_stores(Path::new(env!("CARGO_TARGET_TMPDIR")));
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
            let pkcs11 = Pkcs11::new(&module).expect("load the PKCS#11 module");
            match pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
                Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
                Err(e) => panic!("initialise {}: {e}", module.display()),
            }
            Some(SoftHsm {
                module,
                root,
                pkcs11,
                slot_lock: Mutex::new(()),
            })
        })
        .as_ref()
}

/// Removes token stores of runs that ended over an hour ago (never a concurrent run's).
fn remove_stale_stores(tmp: &Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    let hour = std::time::Duration::from_secs(3600);
    for entry in entries.filter_map(Result::ok) {
        let stale = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > hour));
        if stale && entry.file_name().to_string_lossy().starts_with("softhsm-") {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn write_secret(path: &Path, secret: &str) {
    std::fs::write(path, format!("{secret}\n")).expect("write pin file");
}

impl SoftHsm {
    /// Initialises a fresh token with a unique label, so tests never share login state.
    pub fn new_token(&self, name: &str) -> Token<'_> {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let label = format!("{name}-{}", COUNTER.fetch_add(1, Ordering::Relaxed));
        assert!(
            label.len() <= 32,
            "token label {label} is longer than 32 bytes"
        );
        let _slots = self.lock_slots();
        // SoftHSM always offers one uninitialised token and adds another once it is used.
        let free = self
            .pkcs11
            .get_slots_with_token()
            .expect("list slots")
            .into_iter()
            .find(|slot| {
                !self
                    .pkcs11
                    .get_token_info(*slot)
                    .expect("token info")
                    .token_initialized()
            })
            .expect("SoftHSM offers a free slot");
        let so_pin = AuthPin::from(SO_PIN);
        self.pkcs11
            .init_token(free, &so_pin, &label)
            .expect("initialise token");
        let session = self.pkcs11.open_rw_session(free).expect("open SO session");
        session
            .login(UserType::So, Some(&so_pin))
            .expect("SO login");
        session
            .init_pin(&AuthPin::from(USER_PIN))
            .expect("set the user PIN");
        drop(session); // closing the last session logs the SO out
        Token { hsm: self, label }
    }

    fn lock_slots(&self) -> MutexGuard<'_, ()> {
        self.slot_lock.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `Pkcs11Sealer::open`, serialised with the fixture's own slot listing.
    pub fn open(&self, cfg: &Pkcs11Config, create_key: bool) -> Result<Pkcs11Sealer, SealError> {
        let _slots = self.lock_slots();
        Pkcs11Sealer::open(cfg, create_key)
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
        Ok(Box::new(self.hsm.open(&self.config(), true)?))
    }

    pub fn open_with_wrong_secret(&self) -> Result<Box<dyn Sealer>, SealError> {
        let cfg = self.hsm.config(&self.label, "wrong.pin");
        Ok(Box::new(self.hsm.open(&cfg, true)?))
    }
}

impl Token<'_> {
    /// Runs `f` in a user session on this token, outside the crate (no sealer may be open).
    pub fn with_user_session<T>(&self, f: impl FnOnce(&Session) -> T) -> T {
        let pkcs11 = &self.hsm.pkcs11;
        let _slots = self.hsm.lock_slots();
        let slot = pkcs11
            .get_slots_with_initialized_token()
            .expect("list slots")
            .into_iter()
            .find(|s| pkcs11.get_token_info(*s).expect("token info").label() == self.label)
            .expect("token exists");
        let session = pkcs11.open_rw_session(slot).expect("open session");
        session
            .login(UserType::User, Some(&AuthPin::from(USER_PIN)))
            .expect("user login");
        f(&session)
    }
}
