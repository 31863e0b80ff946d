//! PKCS#11 backend: AES-256-GCM under a non-extractable key that never leaves the token.
//!
//! The module (e.g. SoftHSM2's `libsofthsm2.so`) is loaded at run time, so the crate builds
//! without it. Blobs use the crate's shared format with a 12-byte random IV.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{LazyLock, Mutex, MutexGuard, PoisonError};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Function, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use rand::RngCore;
use zeroize::Zeroizing;

use crate::blob::{self, Layout};
use crate::{SealContext, SealError, Sealer, SealerKind, SecretSource};

const IV_LEN: usize = 12;
const TAG_BITS: u64 = 128;
const KEY_BYTES: u64 = 32;

const LAYOUT: Layout = Layout {
    kind: SealerKind::Pkcs11,
    nonce_len: IV_LEN,
    tag_len: (TAG_BITS / 8) as usize,
};

/// Where the token and key are, and where the user PIN comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pkcs11Config {
    /// The PKCS#11 module, e.g. `/usr/lib/softhsm/libsofthsm2.so`.
    pub module_path: PathBuf,
    /// Label of the initialised token holding the key.
    pub token_label: String,
    /// Label of the AES key inside the token.
    pub key_label: String,
    /// Where the user PIN is read from.
    pub pin: SecretSource,
}

/// Process-wide PKCS#11 state. A module is initialised once per process and never finalised:
/// `C_Finalize` while another sealer still uses the module would pull it from under that
/// sealer. `claimed` records tokens a live sealer is logged in to (see [`TokenClaim`]).
#[derive(Default)]
struct Modules {
    loaded: HashMap<PathBuf, Pkcs11>,
    claimed: HashSet<(PathBuf, u64)>,
}

static MODULES: LazyLock<Mutex<Modules>> = LazyLock::new(Mutex::default);

/// The registry holds no invariant a panic could break halfway, so a poisoned lock is safe to
/// keep using.
fn modules() -> MutexGuard<'static, Modules> {
    MODULES.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Marks a token as logged in by a live sealer of this process.
///
/// PKCS#11 login state belongs to the process, not the session: while one session is logged
/// in, `C_Login` on another answers `CKR_USER_ALREADY_LOGGED_IN` without checking the PIN.
/// Refusing a second open keeps a wrong PIN from ever being accepted.
struct TokenClaim {
    module: PathBuf,
    slot: u64,
}

impl Drop for TokenClaim {
    fn drop(&mut self) {
        modules()
            .claimed
            .remove(&(std::mem::take(&mut self.module), self.slot));
    }
}

/// Seals with a sensitive, non-extractable AES-256 key held in a PKCS#11 token: AES-GCM with
/// a random 96-bit IV, the key never leaving the token.
///
/// Holds one logged-in session. Open it once per token and process and share it (it is
/// `Send + Sync`); a second open of the same token is refused with
/// [`SealError::TokenInUse`].
pub struct Pkcs11Sealer {
    /// One logged-in session; the mutex serialises operations (a PKCS#11 session runs one
    /// operation at a time). Declared before `_claim` so the session, and with it the login,
    /// is closed before the token is released.
    session: Mutex<Session>,
    key: ObjectHandle,
    token_label: String,
    key_label: String,
    _claim: TokenClaim,
}

impl fmt::Debug for Pkcs11Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The session is a capability to use the key; show only where it points.
        f.debug_struct("Pkcs11Sealer")
            .field("token_label", &self.token_label)
            .field("key_label", &self.key_label)
            .field("session", &"<logged in>")
            .finish()
    }
}

impl Pkcs11Sealer {
    /// Loads the module, logs in to the token labelled `cfg.token_label` with the PIN from
    /// `cfg.pin`, and finds the key labelled `cfg.key_label`. With `create_key_if_missing`,
    /// an absent key is generated inside the token (sensitive, non-extractable AES-256).
    ///
    /// Errors: module missing or unloadable gives [`SealError::Unavailable`] naming the path;
    /// an unknown token label [`SealError::TokenNotFound`]; a wrong PIN
    /// [`SealError::WrongPin`]; a token already open in this process
    /// [`SealError::TokenInUse`]; an existing key that is extractable, not sensitive or not
    /// AES-256 is refused with [`SealError::Config`].
    pub fn open(cfg: &Pkcs11Config, create_key_if_missing: bool) -> Result<Self, SealError> {
        let pin = cfg.pin.read()?;
        let (pkcs11, slot, claim) = claim_token(&cfg.module_path, &cfg.token_label)?;

        let session = if create_key_if_missing {
            pkcs11.open_rw_session(slot)
        } else {
            pkcs11.open_ro_session(slot)
        }
        .map_err(|e| unavailable(&cfg.token_label, e))?;

        // `AuthPin` is a zeroizing secret box; this copy lives only for the login call.
        let login = session.login(UserType::User, Some(&AuthPin::from(pin.as_str())));
        drop(pin);
        match login {
            Ok(()) => {}
            Err(CkError::Pkcs11(
                RvError::PinIncorrect | RvError::PinInvalid | RvError::PinLenRange,
                _,
            )) => return Err(SealError::WrongPin),
            // Someone else in this process logged in outside this crate; the PIN was not
            // checked, so fail closed.
            Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {
                return Err(SealError::TokenInUse {
                    label: cfg.token_label.clone(),
                })
            }
            Err(CkError::Pkcs11(RvError::PinLocked, _)) => {
                return Err(SealError::Unavailable(format!(
                    "token {:?}: the user PIN is locked after too many wrong attempts; \
                     the security officer must reset it",
                    cfg.token_label
                )))
            }
            Err(e) => return Err(unavailable(&cfg.token_label, e)),
        }

        let key = find_or_create_key(&session, cfg, create_key_if_missing)?;
        Ok(Self {
            session: Mutex::new(session),
            key,
            token_label: cfg.token_label.clone(),
            key_label: cfg.key_label.clone(),
            _claim: claim,
        })
    }

    /// A session whose previous user panicked is still a valid handle with no operation in
    /// progress (PKCS#11 ends an operation on any error), so poisoning is ignored.
    fn session(&self) -> MutexGuard<'_, Session> {
        self.session.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Sealer for Pkcs11Sealer {
    fn kind(&self) -> SealerKind {
        SealerKind::Pkcs11
    }

    fn seal(&self, ctx: &SealContext, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        let aad = blob::aad(SealerKind::Pkcs11, ctx)?;
        blob::check_plaintext_len(plaintext.len())?;
        // Random 96-bit IVs keep the GCM collision risk below 2^-32 up to 2^32 blobs per key,
        // far beyond the shares and identities one node seals.
        let mut iv = [0u8; IV_LEN];
        rand::rngs::OsRng.fill_bytes(&mut iv);
        let mut iv_param = iv;
        let params = gcm_params(&mut iv_param, &aad)?;
        let ciphertext = self
            .session()
            .encrypt(&Mechanism::AesGcm(params), self.key, plaintext)
            .map_err(|e| unavailable(&self.token_label, e))?;
        Ok(blob::assemble(SealerKind::Pkcs11, &iv, &ciphertext))
    }

    fn unseal(&self, ctx: &SealContext, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
        let aad = blob::aad(SealerKind::Pkcs11, ctx)?;
        let (iv, ciphertext) = blob::parse(LAYOUT, sealed)?;
        let mut iv_param = [0u8; IV_LEN];
        iv_param.copy_from_slice(iv);
        let params = gcm_params(&mut iv_param, &aad)?;
        match self
            .session()
            .decrypt(&Mechanism::AesGcm(params), self.key, ciphertext)
        {
            Ok(plaintext) => Ok(Zeroizing::new(plaintext)),
            // SoftHSM reports a failed GCM tag check as CKR_GENERAL_ERROR rather than
            // CKR_ENCRYPTED_DATA_INVALID. Device loss shows up as other codes (session or
            // device errors), which stay `Unavailable`.
            Err(CkError::Pkcs11(
                RvError::GeneralError
                | RvError::EncryptedDataInvalid
                | RvError::EncryptedDataLenRange,
                Function::Decrypt,
            )) => Err(SealError::Tampered),
            Err(e) => Err(unavailable(&self.token_label, e)),
        }
    }
}

/// Loads (once) the module, finds the token's slot and claims it for this process.
///
/// Slot enumeration stays under the registry lock: SoftHSM's `C_GetSlotList` is not
/// thread-safe (concurrent calls can abort the process on an internal assertion).
///
/// The module path is canonicalised first, so that two spellings of one library share one
/// context and one claim (otherwise the second login would go unchecked, see [`TokenClaim`]).
fn claim_token(module: &Path, label: &str) -> Result<(Pkcs11, Slot, TokenClaim), SealError> {
    let module = &std::fs::canonicalize(module)
        .map_err(|e| SealError::Unavailable(format!("PKCS#11 module {}: {e}", module.display())))?;
    let mut modules = modules();
    let pkcs11 = match modules.loaded.get(module) {
        Some(pkcs11) => pkcs11.clone(),
        None => {
            let pkcs11 = load_module(module)?;
            modules.loaded.insert(module.to_path_buf(), pkcs11.clone());
            pkcs11
        }
    };
    let in_module =
        |e: CkError| SealError::Unavailable(format!("PKCS#11 module {}: {e}", module.display()));
    let mut matching = Vec::new();
    for slot in pkcs11
        .get_slots_with_initialized_token()
        .map_err(in_module)?
    {
        if pkcs11.get_token_info(slot).map_err(in_module)?.label() == label {
            matching.push(slot);
        }
    }
    let slot = match matching.as_slice() {
        [] => {
            return Err(SealError::TokenNotFound {
                label: label.into(),
                module: module.to_path_buf(),
            })
        }
        [slot] => *slot,
        _ => {
            return Err(SealError::Config {
                field: "token_label",
                value: label.into(),
                reason: format!(
                    "{} tokens carry this label; labels must be unique",
                    matching.len()
                ),
            })
        }
    };
    if !modules.claimed.insert((module.to_path_buf(), slot.id())) {
        return Err(SealError::TokenInUse {
            label: label.into(),
        });
    }
    let claim = TokenClaim {
        module: module.to_path_buf(),
        slot: slot.id(),
    };
    Ok((pkcs11, slot, claim))
}

fn load_module(module: &Path) -> Result<Pkcs11, SealError> {
    let unusable = |e: CkError| {
        SealError::Unavailable(format!(
            "cannot load PKCS#11 module {}: {e}",
            module.display()
        ))
    };
    let pkcs11 = Pkcs11::new(module).map_err(unusable)?;
    match pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        // Another library in this process initialised the module first; that is fine.
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => Ok(pkcs11),
        Err(e) => Err(unusable(e)),
    }
}

fn find_or_create_key(
    session: &Session,
    cfg: &Pkcs11Config,
    create_if_missing: bool,
) -> Result<ObjectHandle, SealError> {
    let failed = |e| unavailable(&cfg.token_label, e);
    let label = cfg.key_label.as_bytes().to_vec();
    let found = session
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Label(label.clone()),
        ])
        .map_err(failed)?;
    match found.as_slice() {
        [key] => {
            check_key_attributes(session, *key, cfg)?;
            Ok(*key)
        }
        [] if create_if_missing => session
            .generate_key(
                &Mechanism::AesKeyGen,
                &[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(KeyType::AES),
                    Attribute::ValueLen(KEY_BYTES.into()),
                    Attribute::Label(label),
                    Attribute::Token(true),
                    Attribute::Private(true),
                    Attribute::Sensitive(true),
                    Attribute::Extractable(false),
                    Attribute::Encrypt(true),
                    Attribute::Decrypt(true),
                    Attribute::Wrap(false),
                    Attribute::Unwrap(false),
                    Attribute::Derive(false),
                ],
            )
            .map_err(failed),
        [] => Err(SealError::KeyNotFound {
            label: cfg.key_label.clone(),
            token: cfg.token_label.clone(),
        }),
        more => Err(SealError::Config {
            field: "key_label",
            value: cfg.key_label.clone(),
            reason: format!(
                "{} secret keys in token {:?} carry this label; labels must be unique",
                more.len(),
                cfg.token_label
            ),
        }),
    }
}

/// Refuses a pre-existing key that could leave the token or is not AES-256: sealing under it
/// would quietly forfeit what the HSM is for.
fn check_key_attributes(
    session: &Session,
    key: ObjectHandle,
    cfg: &Pkcs11Config,
) -> Result<(), SealError> {
    let attributes = session
        .get_attributes(
            key,
            &[
                AttributeType::KeyType,
                AttributeType::ValueLen,
                AttributeType::Sensitive,
                AttributeType::Extractable,
            ],
        )
        .map_err(|e| unavailable(&cfg.token_label, e))?;
    let mut problems = Vec::new();
    for attribute in &attributes {
        match attribute {
            Attribute::KeyType(t) if *t != KeyType::AES => problems.push("is not an AES key"),
            Attribute::ValueLen(len) if u64::from(*len) != KEY_BYTES => {
                problems.push("is not 256 bits long")
            }
            Attribute::Sensitive(false) => problems.push("is not sensitive"),
            Attribute::Extractable(true) => problems.push("is extractable"),
            _ => {}
        }
    }
    if attributes.len() < 4 {
        problems.push("does not report its type, length, sensitivity and extractability");
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(SealError::Config {
        field: "key_label",
        value: cfg.key_label.clone(),
        reason: format!(
            "the key in token {:?} {}; refusing to seal with it",
            cfg.token_label,
            problems.join(", ")
        ),
    })
}

/// Fails only when the associated data does not fit a `CK_ULONG`, i.e. for an absurd context.
fn gcm_params<'a>(iv: &'a mut [u8; IV_LEN], aad: &'a [u8]) -> Result<GcmParams<'a>, SealError> {
    GcmParams::new(iv, aad, TAG_BITS.into()).map_err(|e| SealError::Config {
        field: "context",
        value: format!("{} bytes of associated data", aad.len()),
        reason: format!("too long for AES-GCM in PKCS#11 ({e})"),
    })
}

fn unavailable(token_label: &str, e: CkError) -> SealError {
    SealError::Unavailable(format!("token {token_label:?}: {e}"))
}
