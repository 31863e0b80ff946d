//! Passphrase backend: argon2id derives one key per open, XChaCha20-Poly1305 seals each blob.
//!
//! The state file `sealer.json` holds the salt, the KDF parameters and a sealed check value.
//! The check value lets `open` tell a wrong passphrase apart from a corrupted blob: once it
//! unseals, any later authentication failure is the blob's fault ([`SealError::Tampered`]).

use std::fmt;
use std::path::{Path, PathBuf};

use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::blob::{self, Layout};
use crate::private_file::{create_new_private_file, create_private_dir};
use crate::{SealContext, SealError, Sealer, SealerKind};

const STATE_FILE: &str = "sealer.json";
const STATE_VERSION: u64 = 1;
const SALT_LEN: usize = 16;
const KEY_LEN: usize = 32;
/// A public constant; what matters is that it only unseals under the right key.
const CHECK_PLAINTEXT: &[u8] = b"permafrost sealer check v1";
/// The check value's context. Its empty node id cannot collide with any caller context,
/// since [`SealContext`] refuses empty fields.
const CHECK_PURPOSE: &str = "sealer-check";

const LAYOUT: Layout = Layout {
    kind: SealerKind::Passphrase,
    nonce_len: 24,
    tag_len: 16,
};

/// Argon2id cost parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory cost in KiB.
    pub memory_kib: u32,
    /// Number of passes.
    pub iterations: u32,
    /// Number of lanes.
    pub parallelism: u32,
}

impl KdfParams {
    /// Argon2id with 64 MiB, 3 passes, 1 lane (RFC 9106's second recommended option, with
    /// more passes to make up for the smaller memory). About a quarter second per open here.
    pub fn production() -> Self {
        Self {
            memory_kib: 64 * 1024,
            iterations: 3,
            parallelism: 1,
        }
    }

    /// Tiny parameters for tests and the local demo. Offers no protection against guessing:
    /// never use for real secrets.
    pub fn fast_for_tests() -> Self {
        Self {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        }
    }

    /// Refuses absurd values, naming the field and value. The bounds stop a corrupted or
    /// hostile state file from making `open` allocate gigabytes or spin for hours.
    fn validate(&self) -> Result<(), SealError> {
        let out_of_range = |field, value: u32, reason: String| SealError::Config {
            field,
            value: value.to_string(),
            reason,
        };
        if !(1..=64).contains(&self.parallelism) {
            return Err(out_of_range(
                "kdf.parallelism",
                self.parallelism,
                "must be between 1 and 64".into(),
            ));
        }
        let min_memory = 8 * self.parallelism;
        if !(min_memory..=4 * 1024 * 1024).contains(&self.memory_kib) {
            return Err(out_of_range(
                "kdf.memory_kib",
                self.memory_kib,
                format!("must be between {min_memory} (8 per lane) and 4194304 (4 GiB)"),
            ));
        }
        if !(1..=64).contains(&self.iterations) {
            return Err(out_of_range(
                "kdf.iterations",
                self.iterations,
                "must be between 1 and 64".into(),
            ));
        }
        Ok(())
    }
}

/// The on-disk form of `sealer.json`. Nothing in it is secret.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    version: u64,
    kdf: KdfRecord,
    /// Hex of a sealed blob of [`CHECK_PLAINTEXT`].
    check: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KdfRecord {
    algorithm: String,
    memory_kib: u32,
    iterations: u32,
    parallelism: u32,
    salt: String,
}

/// Read first, on its own, so that a future format with other fields is reported as an
/// unsupported version rather than as a parse error.
#[derive(Deserialize)]
struct VersionProbe {
    version: u64,
}

/// The derived key. Zeroized on drop, never printed.
pub(crate) struct SealingKey(Zeroizing<[u8; KEY_LEN]>);

impl fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealingKey(<redacted>)")
    }
}

impl SealingKey {
    /// A key from raw bytes (a random data key, see [`crate::DataKey`]).
    pub(crate) fn from_bytes(key: Zeroizing<[u8; KEY_LEN]>) -> Self {
        Self(key)
    }

    fn derive(passphrase: &str, salt: &[u8], params: KdfParams) -> Result<Self, SealError> {
        if passphrase.is_empty() {
            return Err(SealError::Secret {
                origin: "the passphrase argument".into(),
                reason: "is empty".into(),
            });
        }
        params.validate()?;
        let argon_params = Params::new(
            params.memory_kib,
            params.iterations,
            params.parallelism,
            Some(KEY_LEN),
        )
        .map_err(|e| SealError::Config {
            field: "kdf",
            value: format!("{params:?}"),
            reason: e.to_string(),
        })?;
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        Argon2::new(Algorithm::Argon2id, Version::V0x13, argon_params)
            .hash_password_into(passphrase.as_bytes(), salt, key.as_mut())
            .map_err(|e| SealError::Config {
                field: "kdf",
                value: format!("{params:?}, salt of {} bytes", salt.len()),
                reason: e.to_string(),
            })?;
        Ok(Self(key))
    }

    pub(crate) fn seal(
        &self,
        kind: SealerKind,
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, SealError> {
        blob::check_plaintext_len(plaintext.len())?;
        // 192-bit random nonces: collisions are negligible however many blobs one key seals.
        let mut nonce = [0u8; 24];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ciphertext = self
            .cipher()
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            // Only fails for messages beyond 256 GiB, which the length check excludes.
            .map_err(|_| SealError::TooLarge {
                len: plaintext.len(),
                max: crate::MAX_PLAINTEXT_LEN,
            })?;
        Ok(blob::assemble(kind, &nonce, &ciphertext))
    }

    pub(crate) fn unseal(
        &self,
        layout: Layout,
        aad: &[u8],
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, SealError> {
        let (nonce, ciphertext) = blob::parse(layout, sealed)?;
        self.cipher()
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| SealError::Tampered)
    }

    /// The cipher holds a copy of the key and zeroizes it on drop, so it lives per call only.
    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new((&*self.0).into())
    }
}

fn check_aad() -> Vec<u8> {
    blob::aad_for(SealerKind::Passphrase, "", CHECK_PURPOSE)
}

/// Seals with a key derived from an operator passphrase.
///
/// argon2id runs once per [`PassphraseSealer::open`]; each blob is then XChaCha20-Poly1305
/// with a fresh random 192-bit nonce. The state file `sealer.json` (salt, KDF parameters and
/// a sealed check value) holds nothing secret, but losing it makes every blob unreadable.
pub struct PassphraseSealer {
    key: SealingKey,
    state_path: PathBuf,
}

impl fmt::Debug for PassphraseSealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PassphraseSealer")
            .field("state_path", &self.state_path)
            .field("key", &self.key)
            .finish()
    }
}

impl PassphraseSealer {
    /// Creates a new sealer state file in `dir` (file name `sealer.json`, mode 0600; `dir` is
    /// created with mode 0700 if missing): random salt, argon2id params, and a sealed check
    /// value so a wrong passphrase is told apart from a corrupted blob. Refuses if the file
    /// already exists, since replacing it would make every existing blob unreadable.
    pub fn create(dir: &Path, passphrase: &str, params: KdfParams) -> Result<Self, SealError> {
        let state_path = dir.join(STATE_FILE);
        if state_path.exists() {
            return Err(SealError::AlreadyExists { path: state_path });
        }
        let mut salt = [0u8; SALT_LEN];
        rand::rngs::OsRng.fill_bytes(&mut salt);
        let key = SealingKey::derive(passphrase, &salt, params)?;
        let check = key.seal(SealerKind::Passphrase, &check_aad(), CHECK_PLAINTEXT)?;
        let state = StateFile {
            version: STATE_VERSION,
            kdf: KdfRecord {
                algorithm: "argon2id".into(),
                memory_kib: params.memory_kib,
                iterations: params.iterations,
                parallelism: params.parallelism,
                salt: hex::encode(salt),
            },
            check: hex::encode(check),
        };
        let mut json = serde_json::to_vec_pretty(&state)
            .map_err(|e| SealError::Malformed(format!("cannot encode sealer state: {e}")))?;
        json.push(b'\n');
        create_private_dir(dir)?;
        create_new_private_file(&state_path, &json)?;
        Ok(Self { key, state_path })
    }

    /// Opens existing state in `dir`, deriving the key once. A wrong passphrase gives
    /// [`SealError::WrongPassphrase`]; a missing file gives [`SealError::NotInitialized`]
    /// naming the path.
    pub fn open(dir: &Path, passphrase: &str) -> Result<Self, SealError> {
        let state_path = dir.join(STATE_FILE);
        let bytes = std::fs::read(&state_path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => SealError::NotInitialized {
                path: state_path.clone(),
            },
            _ => SealError::io(&state_path, e),
        })?;
        let malformed =
            |what: String| SealError::Malformed(format!("{}: {what}", state_path.display()));

        let probe: VersionProbe = serde_json::from_slice(&bytes)
            .map_err(|e| malformed(format!("not a sealer state file ({e})")))?;
        if probe.version != STATE_VERSION {
            return Err(SealError::UnsupportedStateVersion {
                path: state_path,
                found: probe.version,
            });
        }
        let state: StateFile =
            serde_json::from_slice(&bytes).map_err(|e| malformed(e.to_string()))?;
        if state.kdf.algorithm != "argon2id" {
            return Err(SealError::Config {
                field: "kdf.algorithm",
                value: state.kdf.algorithm,
                reason: "only argon2id is supported".into(),
            });
        }
        let salt = hex::decode(&state.kdf.salt)
            .ok()
            .filter(|s| (SALT_LEN..=64).contains(&s.len()))
            .ok_or_else(|| malformed("kdf.salt is not 16 to 64 hex-encoded bytes".into()))?;
        let check =
            hex::decode(&state.check).map_err(|_| malformed("check is not hex-encoded".into()))?;
        let params = KdfParams {
            memory_kib: state.kdf.memory_kib,
            iterations: state.kdf.iterations,
            parallelism: state.kdf.parallelism,
        };

        let key = SealingKey::derive(passphrase, &salt, params)?;
        match key.unseal(LAYOUT, &check_aad(), &check) {
            Ok(plain) if plain.as_slice() == CHECK_PLAINTEXT => Ok(Self { key, state_path }),
            Ok(_) => Err(malformed("check value has unexpected content".into())),
            // The check value was written by `create` and authenticates only under the key
            // from the right passphrase (and unaltered salt and parameters).
            Err(SealError::Tampered) => Err(SealError::WrongPassphrase),
            Err(e) => Err(malformed(format!("check value is unusable ({e})"))),
        }
    }

    /// Whether `dir` holds a sealer state file (written by [`PassphraseSealer::create`]).
    pub fn state_exists(dir: &Path) -> bool {
        dir.join(STATE_FILE).is_file()
    }

    /// The state file this sealer was opened from.
    pub fn state_path(&self) -> &Path {
        &self.state_path
    }
}

impl Sealer for PassphraseSealer {
    fn kind(&self) -> SealerKind {
        SealerKind::Passphrase
    }

    fn seal(&self, ctx: &SealContext, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        self.key.seal(
            SealerKind::Passphrase,
            &blob::aad(SealerKind::Passphrase, ctx)?,
            plaintext,
        )
    }

    fn unseal(&self, ctx: &SealContext, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
        self.key
            .unseal(LAYOUT, &blob::aad(SealerKind::Passphrase, ctx)?, sealed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSPHRASE: &str = "correct horse battery staple";

    fn created() -> (tempfile::TempDir, PassphraseSealer) {
        let dir = tempfile::tempdir().expect("tempdir");
        let sealer = PassphraseSealer::create(dir.path(), PASSPHRASE, KdfParams::fast_for_tests())
            .expect("create sealer");
        (dir, sealer)
    }

    fn edit_state(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
        let path = dir.join(STATE_FILE);
        let mut value: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).expect("read state")).expect("json");
        edit(&mut value);
        std::fs::write(&path, serde_json::to_vec(&value).expect("encode")).expect("write state");
    }

    #[test]
    fn s2_create_refuses_to_overwrite_existing_state() {
        let (dir, _) = created();
        let err = PassphraseSealer::create(dir.path(), "other", KdfParams::fast_for_tests())
            .expect_err("must refuse");
        assert!(matches!(err, SealError::AlreadyExists { .. }), "{err}");
        PassphraseSealer::open(dir.path(), PASSPHRASE).expect("original state still opens");
    }

    #[test]
    fn open_without_state_names_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = PassphraseSealer::open(dir.path(), PASSPHRASE).expect_err("no state");
        assert!(matches!(err, SealError::NotInitialized { .. }), "{err}");
        assert!(err.to_string().contains("sealer.json"), "{err}");
    }

    #[test]
    fn s2_state_file_is_owner_only_and_holds_no_secret() {
        let (dir, sealer) = created();
        let path = dir.path().join(STATE_FILE);
        assert_eq!(sealer.state_path(), path);
        let text = std::fs::read_to_string(&path).expect("read state");
        assert!(!text.contains(PASSPHRASE));
        assert!(!text.contains(&hex::encode(*sealer.key.0)));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path)
                .expect("metadata")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn s2_debug_and_errors_never_show_secrets() {
        let (dir, sealer) = created();
        let debug = format!("{sealer:?}");
        assert!(debug.contains("<redacted>"), "{debug}");
        assert!(!debug.contains(&hex::encode(*sealer.key.0)), "{debug}");
        assert!(!debug.contains(&format!("{:?}", *sealer.key.0)), "{debug}");

        let err = PassphraseSealer::open(dir.path(), "wrong passphrase").expect_err("wrong");
        assert!(matches!(err, SealError::WrongPassphrase));
        assert!(!format!("{err} {err:?}").contains("wrong passphrase "));
    }

    #[test]
    fn absurd_kdf_params_are_refused_naming_field_and_value() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cases = [
            (
                KdfParams {
                    memory_kib: 1 << 30,
                    ..KdfParams::fast_for_tests()
                },
                "kdf.memory_kib",
                "1073741824",
            ),
            (
                KdfParams {
                    memory_kib: 4,
                    ..KdfParams::fast_for_tests()
                },
                "kdf.memory_kib",
                "4",
            ),
            (
                KdfParams {
                    iterations: 0,
                    ..KdfParams::fast_for_tests()
                },
                "kdf.iterations",
                "0",
            ),
            (
                KdfParams {
                    parallelism: 1000,
                    ..KdfParams::fast_for_tests()
                },
                "kdf.parallelism",
                "1000",
            ),
        ];
        for (params, field, value) in cases {
            let err = PassphraseSealer::create(dir.path(), PASSPHRASE, params).expect_err("absurd");
            assert!(
                matches!(&err, SealError::Config { field: f, value: v, .. } if *f == field && v == value),
                "{err}"
            );
        }
        assert!(
            !dir.path().join(STATE_FILE).exists(),
            "no state written for refused params"
        );
    }

    #[test]
    fn absurd_params_in_state_file_are_refused_on_open() {
        let (dir, _) = created();
        edit_state(dir.path(), |v| v["kdf"]["memory_kib"] = 99_999_999.into());
        let err = PassphraseSealer::open(dir.path(), PASSPHRASE).expect_err("absurd");
        assert!(err.to_string().contains("kdf.memory_kib"), "{err}");
        assert!(err.to_string().contains("99999999"), "{err}");
    }

    #[test]
    fn unknown_state_version_is_refused() {
        let (dir, _) = created();
        edit_state(dir.path(), |v| {
            v["version"] = 2.into();
            v["something_new"] = "x".into();
        });
        let err = PassphraseSealer::open(dir.path(), PASSPHRASE).expect_err("version 2");
        assert!(
            matches!(err, SealError::UnsupportedStateVersion { found: 2, .. }),
            "{err}"
        );
    }

    #[test]
    fn s2_altered_salt_is_not_silently_accepted() {
        let (dir, _) = created();
        edit_state(dir.path(), |v| {
            v["kdf"]["salt"] = hex::encode([7u8; 16]).into()
        });
        let err = PassphraseSealer::open(dir.path(), PASSPHRASE).expect_err("altered salt");
        assert!(matches!(err, SealError::WrongPassphrase), "{err}");
    }

    #[test]
    fn garbage_state_file_is_malformed_naming_the_path() {
        let (dir, _) = created();
        std::fs::write(dir.path().join(STATE_FILE), b"{not json").expect("write");
        let err = PassphraseSealer::open(dir.path(), PASSPHRASE).expect_err("garbage");
        assert!(matches!(err, SealError::Malformed(_)), "{err}");
        assert!(err.to_string().contains("sealer.json"), "{err}");
    }

    #[test]
    fn empty_passphrase_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = PassphraseSealer::create(dir.path(), "", KdfParams::fast_for_tests())
            .expect_err("empty");
        assert!(matches!(err, SealError::Secret { .. }), "{err}");
    }

    #[test]
    fn production_params_derive_a_working_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let started = std::time::Instant::now();
        PassphraseSealer::create(dir.path(), PASSPHRASE, KdfParams::production()).expect("create");
        let sealer = PassphraseSealer::open(dir.path(), PASSPHRASE).expect("open");
        let ctx = SealContext::new("node-1", "identity/ed25519");
        let blob = sealer.seal(&ctx, b"secret").expect("seal");
        assert_eq!(
            sealer.unseal(&ctx, &blob).expect("unseal").as_slice(),
            b"secret"
        );
        eprintln!(
            "production argon2id: create + open took {:?}",
            started.elapsed()
        );
    }
}
