//! The SoftHSM2 fixture of every PKCS#11 test (the hsm-adapter conformance
//! suite, the node lifecycle tests): the module, a test-owned `SOFTHSM2_CONF`
//! and token directory, and fresh tokens with a known PIN.
//!
//! Without the module the fixture is `None` and the tests print a skip
//! message, except under CI (`CI` set), where they fail: the PKCS#11 backend
//! must be tested there (`.ci/softhsm-setup.sh` installs SoftHSM2).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use permafrost_hsm::{Pkcs11Config, Pkcs11Sealer, SealError, Sealer, SecretSource};

/// The user PIN of every fixture token.
pub const USER_PIN: &str = "user-pin-2468";
/// A PIN no fixture token has.
pub const WRONG_PIN: &str = "user-pin-0000";
/// The key label [`SoftHsm::config`] names.
pub const KEY_LABEL: &str = "permafrost-seal";
const SO_PIN: &str = "so-pin-13579";
const DEFAULT_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
/// Prefix of the token stores under the target's tmp directory.
const STORE_PREFIX: &str = "softhsm-";

/// The PKCS#11 module: `PERMAFROST_PKCS11_MODULE`, or where Debian puts SoftHSM2.
pub fn module_path() -> PathBuf {
    std::env::var_os("PERMAFROST_PKCS11_MODULE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_MODULE))
}

/// The process-wide SoftHSM2 set-up: one config and token directory per test
/// binary, since SoftHSM reads `SOFTHSM2_CONF` once, when the module is first
/// initialised. Tokens are created in-process through the same loaded library
/// the code under test uses (SoftHSM does not see tokens that `softhsm2-util`
/// creates after it was initialised); being file-backed, they are visible to
/// child processes too.
pub struct SoftHsm {
    /// The loaded module.
    pub module: PathBuf,
    /// The store: `softhsm2.conf`, `tokens/`, and the PIN files `user.pin`, `wrong.pin`.
    pub root: PathBuf,
    /// The `SOFTHSM2_CONF` this process uses.
    pub conf: PathBuf,
    pkcs11: Pkcs11,
    /// SoftHSM's `C_GetSlotList` is not thread-safe (two concurrent calls after
    /// a token initialisation both add the new free slot and abort the process
    /// on an assertion). The sealer serialises its own calls; this lock
    /// serialises the fixture's with them (see [`SoftHsm::serialized`]).
    slot_lock: Mutex<()>,
}

/// The SoftHSM fixture, or `None` (with a message) when the module is absent
/// outside CI. `target_tmp` is the caller's `env!("CARGO_TARGET_TMPDIR")`
/// (only integration tests have it); the first call decides for the process.
pub fn softhsm(target_tmp: &Path) -> Option<&'static SoftHsm> {
    static FIXTURE: OnceLock<Option<SoftHsm>> = OnceLock::new();
    FIXTURE.get_or_init(|| set_up(target_tmp)).as_ref()
}

fn set_up(target_tmp: &Path) -> Option<SoftHsm> {
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
    // Under target/tmp, not /tmp: the token store outlives the process (a
    // static is never dropped), so earlier runs' stores are swept here.
    remove_stale_stores(target_tmp);
    let root = tempfile::Builder::new()
        .prefix(STORE_PREFIX)
        .tempdir_in(target_tmp)
        .expect("softhsm tempdir")
        .keep();
    let tokens = root.join("tokens");
    std::fs::create_dir_all(&tokens).expect("token dir");
    let conf = root.join("softhsm2.conf");
    write(
        &conf,
        &format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    );
    // Set once, before anything in this process loads the module.
    std::env::set_var("SOFTHSM2_CONF", &conf);
    write(&root.join("user.pin"), &format!("{USER_PIN}\n"));
    write(&root.join("wrong.pin"), &format!("{WRONG_PIN}\n"));
    let pkcs11 = Pkcs11::new(&module).expect("load the PKCS#11 module");
    match pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => panic!("initialise {}: {e}", module.display()),
    }
    Some(SoftHsm {
        module,
        root,
        conf,
        pkcs11,
        slot_lock: Mutex::new(()),
    })
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
        if stale
            && entry
                .file_name()
                .to_string_lossy()
                .starts_with(STORE_PREFIX)
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

impl SoftHsm {
    fn lock_slots(&self) -> MutexGuard<'_, ()> {
        self.slot_lock.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` (anything that lists slots: a sealer open, a node `init` or
    /// `open`) serialised with the fixture's own slot listing.
    pub fn serialized<T>(&self, f: impl FnOnce() -> T) -> T {
        let _slots = self.lock_slots();
        f()
    }

    /// `Pkcs11Sealer::open`, serialised with the fixture's own slot listing.
    pub fn open(&self, cfg: &Pkcs11Config, create_key: bool) -> Result<Pkcs11Sealer, SealError> {
        self.serialized(|| Pkcs11Sealer::open(cfg, create_key))
    }

    /// A sealer config for `token_label` and [`KEY_LABEL`], the PIN read from
    /// `pin_file` under [`SoftHsm::root`] (`user.pin` or `wrong.pin`).
    pub fn config(&self, token_label: &str, pin_file: &str) -> Pkcs11Config {
        Pkcs11Config {
            module_path: self.module.clone(),
            token_label: token_label.into(),
            key_label: KEY_LABEL.into(),
            pin: SecretSource::File(self.root.join(pin_file)),
        }
    }

    /// Initialises a fresh token with a unique label and [`USER_PIN`], so tests
    /// never share login state.
    pub fn new_token(&self, name: &str) -> Token<'_> {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let label = format!(
            "{name}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
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

    /// Runs `f` in a user session on `token_label`, outside the code under test
    /// (nothing may hold the token open at the time).
    pub fn with_user_session<T>(&self, token_label: &str, f: impl FnOnce(&Session) -> T) -> T {
        let pkcs11 = &self.pkcs11;
        let _slots = self.lock_slots();
        let slot = pkcs11
            .get_slots_with_initialized_token()
            .expect("list slots")
            .into_iter()
            .find(|s| pkcs11.get_token_info(*s).expect("token info").label() == token_label)
            .expect("token exists");
        let session = pkcs11.open_rw_session(slot).expect("open session");
        session
            .login(UserType::User, Some(&AuthPin::from(USER_PIN)))
            .expect("user login");
        f(&session)
    }

    /// Labels of the secret keys in `token_label`.
    pub fn secret_key_labels(&self, token_label: &str) -> Vec<String> {
        self.with_user_session(token_label, |session| {
            let keys = session
                .find_objects(&[Attribute::Class(ObjectClass::SECRET_KEY)])
                .expect("find keys");
            keys.into_iter()
                .map(|k| {
                    match session
                        .get_attributes(k, &[AttributeType::Label])
                        .expect("label")
                        .as_slice()
                    {
                        [Attribute::Label(l)] => String::from_utf8_lossy(l).into_owned(),
                        other => panic!("unexpected attributes {other:?}"),
                    }
                })
                .collect()
        })
    }
}

/// One initialised token of the fixture.
pub struct Token<'a> {
    /// The fixture it lives in.
    pub hsm: &'a SoftHsm,
    /// Its label.
    pub label: String,
}

impl Token<'_> {
    /// A sealer config for this token with the right PIN.
    pub fn config(&self) -> Pkcs11Config {
        self.hsm.config(&self.label, "user.pin")
    }

    /// A sealer on this token (creating the key if missing), boxed as the
    /// conformance suite takes it.
    pub fn open(&self) -> Result<Box<dyn Sealer>, SealError> {
        Ok(Box::new(self.hsm.open(&self.config(), true)?))
    }

    /// A sealer on this token opened with [`WRONG_PIN`].
    pub fn open_with_wrong_secret(&self) -> Result<Box<dyn Sealer>, SealError> {
        let cfg = self.hsm.config(&self.label, "wrong.pin");
        Ok(Box::new(self.hsm.open(&cfg, true)?))
    }

    /// Runs `f` in a user session on this token (no sealer may hold it open).
    pub fn with_user_session<T>(&self, f: impl FnOnce(&Session) -> T) -> T {
        self.hsm.with_user_session(&self.label, f)
    }
}
