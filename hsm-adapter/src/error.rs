//! The crate's one error type, with variants named for who is at fault.
//!
//! No message ever carries secret bytes, passphrases or PINs: only paths, labels, field names
//! and public header values.

use std::path::PathBuf;

use crate::SealerKind;

/// Why sealing, unsealing or opening a sealer failed.
#[non_exhaustive]
#[derive(thiserror::Error, Debug)]
pub enum SealError {
    /// The operator gave the wrong passphrase: it does not unlock the sealer state. (An
    /// edited salt or KDF parameter in the state file has the same effect and cannot be told
    /// apart from it.)
    #[error(
        "wrong passphrase: it does not unlock this sealer state (or the state file's salt or KDF parameters were altered)"
    )]
    WrongPassphrase,

    /// The operator gave the wrong PIN for the PKCS#11 token.
    #[error("wrong PIN for the PKCS#11 token")]
    WrongPin,

    /// Authentication failed: the blob was corrupted, or it is bound to another node or
    /// purpose. The sealer itself is fine; this blob must not be trusted.
    #[error(
        "sealed blob failed authentication: it is corrupted or was sealed for another node or purpose"
    )]
    Tampered,

    /// The blob header names a format version this build does not read.
    #[error("sealed blob has format version {found}, this build reads version 1 only")]
    UnsupportedVersion {
        /// The version byte found in the blob.
        found: u8,
    },

    /// The blob was sealed by another backend; use a sealer of that kind.
    #[error("sealed blob was made by the {found} backend, but this is the {expected} backend")]
    WrongBackend {
        /// The backend asked to unseal.
        expected: SealerKind,
        /// The backend named in the blob header.
        found: SealerKind,
    },

    /// The input is not a well-formed sealed blob or sealer state (what is wrong is said).
    #[error("malformed input: {0}")]
    Malformed(String),

    /// The sealer state file has a format version this build does not read.
    #[error("sealer state {path} has format version {found}, this build reads version 1 only")]
    UnsupportedStateVersion {
        /// The state file.
        path: PathBuf,
        /// The version found in it.
        found: u64,
    },

    /// No sealer state exists yet in the directory given to `open`.
    #[error("no sealer state at {path}: create one first (PassphraseSealer::create)")]
    NotInitialized {
        /// Where the state file was expected.
        path: PathBuf,
    },

    /// `create` refuses to overwrite existing sealer state (it would orphan every blob).
    #[error("sealer state already exists at {path}: refusing to overwrite it")]
    AlreadyExists {
        /// The existing file.
        path: PathBuf,
    },

    /// The HSM or its PKCS#11 module cannot be used right now (what failed is said).
    #[error("HSM unavailable: {0}")]
    Unavailable(String),

    /// No initialised token with this label is present in the PKCS#11 module.
    #[error("no PKCS#11 token labelled {label:?} in module {module}")]
    TokenNotFound {
        /// The configured token label.
        label: String,
        /// The module searched.
        module: PathBuf,
    },

    /// The token has no key with this label and creating one was not requested.
    #[error("token {token:?} has no AES key labelled {label:?}")]
    KeyNotFound {
        /// The configured key label.
        label: String,
        /// The token searched.
        token: String,
    },

    /// The token is already open in this process. PKCS#11 login state is per process and
    /// token, so a second login would not check its PIN; share the first sealer instead.
    #[error(
        "token {label:?} is already logged in within this process; share the existing Pkcs11Sealer (it is Send + Sync)"
    )]
    TokenInUse {
        /// The token label.
        label: String,
    },

    /// A passphrase or PIN source gave nothing usable.
    #[error("secret from {origin} {reason}")]
    Secret {
        /// Where the secret was read from (a path or an environment variable name).
        origin: String,
        /// What was wrong with it, e.g. `is empty`.
        reason: String,
    },

    /// The plaintext is larger than [`crate::MAX_PLAINTEXT_LEN`].
    #[error("plaintext of {len} bytes exceeds the {max}-byte limit for sealing")]
    TooLarge {
        /// The plaintext length.
        len: usize,
        /// The limit.
        max: usize,
    },

    /// Reading or writing a file failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },

    /// A configuration or parameter value is out of range or inconsistent.
    #[error("invalid {field} = {value:?}: {reason}")]
    Config {
        /// The offending field.
        field: &'static str,
        /// Its value (never a secret).
        value: String,
        /// Why it was refused.
        reason: String,
    },
}

impl SealError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        SealError::Io {
            path: path.into(),
            source,
        }
    }
}
