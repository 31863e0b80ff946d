//! Sealing of Permafrost key shares and identity secrets at rest (threat S2: a stolen disk
//! or backup must not yield a usable secret).
//!
//! One [`Sealer`] trait, two backends that share a blob format and a conformance suite:
//!
//! - [`PassphraseSealer`]: argon2id turns a passphrase into a key once per open; each blob is
//!   XChaCha20-Poly1305 with a fresh random nonce.
//! - [`Pkcs11Sealer`]: a non-extractable AES-256 key inside a PKCS#11 token (SoftHSM2 in
//!   tests), AES-GCM with a random 96-bit IV.
//!
//! Every blob is bound to a [`SealContext`] (node id and purpose) as AEAD associated data, so
//! a share sealed for one node or key group does not unseal for another.
//!
//! ```no_run
//! use permafrost_hsm::{KdfParams, PassphraseSealer, SealContext, SecretSource, Sealer};
//! # fn main() -> Result<(), permafrost_hsm::SealError> {
//! let passphrase = SecretSource::Env("PERMAFROST_PASSPHRASE".into()).read()?;
//! let sealer = PassphraseSealer::open(std::path::Path::new("/var/lib/permafrost"), &passphrase)?;
//! let ctx = SealContext::new("node-1", "keygroup/warm-1");
//! let blob = sealer.seal(&ctx, b"key share bytes")?;
//! let share = sealer.unseal(&ctx, &blob)?; // Zeroizing<Vec<u8>>
//! # let _ = (share, KdfParams::production()); Ok(()) }
//! ```
#![forbid(unsafe_code)]

mod blob;
pub mod conformance;
mod data_key;
mod error;
mod passphrase;
mod pkcs11;
mod private_file;
mod secret;

use std::fmt;

pub use data_key::DataKey;
pub use error::SealError;
pub use passphrase::{KdfParams, PassphraseSealer};
pub use pkcs11::{Pkcs11Config, Pkcs11Sealer};
pub use secret::SecretSource;
pub use zeroize::Zeroizing;

/// Largest plaintext a sealer accepts. Shares and identity keys are a few hundred bytes; the
/// bound keeps a hostile blob from making the HSM or the allocator do unbounded work.
pub const MAX_PLAINTEXT_LEN: usize = 16 * 1024 * 1024;

/// What a sealed blob is bound to (authenticated as AEAD associated data): a blob sealed for
/// one node or purpose does not unseal for another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealContext {
    /// The node that owns the secret, e.g. `node-1`.
    pub node_id: String,
    /// What the secret is for, e.g. `keygroup/warm-1` or `identity/ed25519`.
    pub purpose: String,
}

impl SealContext {
    /// A context for `node_id` and `purpose`; both must be non-empty when used.
    pub fn new(node_id: impl Into<String>, purpose: impl Into<String>) -> Self {
        Self {
            node_id: node_id.into(),
            purpose: purpose.into(),
        }
    }

    /// Empty fields are refused: an empty node id or purpose is a caller bug that would
    /// silently weaken the binding between a blob and its owner.
    fn validate(&self) -> Result<(), SealError> {
        for (field, value) in [("node_id", &self.node_id), ("purpose", &self.purpose)] {
            if value.is_empty() {
                return Err(SealError::Config {
                    field,
                    value: String::new(),
                    reason: "a seal context field must not be empty".into(),
                });
            }
        }
        Ok(())
    }
}

/// Which backend sealed a blob; recorded in the blob header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SealerKind {
    /// [`PassphraseSealer`]: argon2id + XChaCha20-Poly1305.
    Passphrase,
    /// [`Pkcs11Sealer`]: AES-256-GCM inside a PKCS#11 token.
    Pkcs11,
    /// [`DataKey`]: XChaCha20-Poly1305 under a random key that is itself sealed
    /// by one of the others, so destroying that key shreds every blob it made.
    DataKey,
}

impl fmt::Display for SealerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SealerKind::Passphrase => "passphrase",
            SealerKind::Pkcs11 => "pkcs11",
            SealerKind::DataKey => "data-key",
        })
    }
}

/// Seals secrets so they can rest on disk, and unseals them again.
///
/// Implementations are shared between threads (`Send + Sync`); each call is independent.
pub trait Sealer: Send + Sync {
    /// The backend, as written into every blob this sealer makes.
    fn kind(&self) -> SealerKind;

    /// Encrypts and authenticates `plaintext`, bound to `ctx`. Two calls with the same input
    /// give different blobs (fresh nonce).
    fn seal(&self, ctx: &SealContext, plaintext: &[u8]) -> Result<Vec<u8>, SealError>;

    /// Checks and decrypts a blob made by [`Sealer::seal`] with the same `ctx`.
    ///
    /// A corrupted blob, or one bound to another node or purpose, gives
    /// [`SealError::Tampered`]; header problems give the more specific variants.
    fn unseal(&self, ctx: &SealContext, blob: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError>;
}
