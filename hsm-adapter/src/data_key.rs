//! Data keys: random keys for crypto-shredding (THREATS K8).
//!
//! A [`DataKey`] is 32 random bytes used as an XChaCha20-Poly1305 key, with the
//! same blob format and context binding as every other sealer
//! (backend byte `data-key`). The key itself is kept at rest only sealed by a
//! real sealer (passphrase or PKCS#11). Destroying the sealed key destroys
//! every blob made with it, wherever copies of those blobs linger (free pages
//! of a database file, backups, snapshots): that is what lets a node retire
//! an old key share it cannot reliably erase byte by byte.

use std::fmt;

use rand::RngCore;
use zeroize::Zeroizing;

use crate::blob::{self, Layout};
use crate::passphrase::SealingKey;
use crate::{SealContext, SealError, Sealer, SealerKind};

/// Length of a data key in bytes.
pub const DATA_KEY_LEN: usize = 32;

const LAYOUT: Layout = Layout {
    kind: SealerKind::DataKey,
    nonce_len: 24,
    tag_len: 16,
};

/// A random symmetric key that seals blobs and is itself sealed by another
/// [`Sealer`]. Zeroized on drop, never printed.
pub struct DataKey {
    bytes: Zeroizing<[u8; DATA_KEY_LEN]>,
    key: SealingKey,
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(<redacted>)")
    }
}

impl DataKey {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Self {
        let mut bytes = Zeroizing::new([0u8; DATA_KEY_LEN]);
        rand::rngs::OsRng.fill_bytes(bytes.as_mut());
        Self::from_array(bytes)
    }

    /// A key from the bytes [`DataKey::to_bytes`] gave (after unsealing them).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SealError> {
        let array: [u8; DATA_KEY_LEN] = bytes.try_into().map_err(|_| {
            SealError::Malformed(format!(
                "a data key is {DATA_KEY_LEN} bytes, not {}",
                bytes.len()
            ))
        })?;
        Ok(Self::from_array(Zeroizing::new(array)))
    }

    /// The raw key, to be sealed by another sealer before it rests anywhere.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(self.bytes.to_vec())
    }

    fn from_array(bytes: Zeroizing<[u8; DATA_KEY_LEN]>) -> Self {
        let key = SealingKey::from_bytes(bytes.clone());
        Self { bytes, key }
    }
}

impl Sealer for DataKey {
    fn kind(&self) -> SealerKind {
        SealerKind::DataKey
    }

    fn seal(&self, ctx: &SealContext, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        self.key.seal(
            SealerKind::DataKey,
            &blob::aad(SealerKind::DataKey, ctx)?,
            plaintext,
        )
    }

    fn unseal(&self, ctx: &SealContext, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
        self.key
            .unseal(LAYOUT, &blob::aad(SealerKind::DataKey, ctx)?, sealed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn k8_a_blob_opens_only_under_its_own_data_key() {
        let ctx = SealContext::new("n1", "keygroup/warm-1");
        let key = DataKey::generate();
        let blob = key.seal(&ctx, b"share").expect("seal");
        assert_eq!(
            key.unseal(&ctx, &blob).expect("unseal").as_slice(),
            b"share"
        );
        let same = DataKey::from_bytes(&key.to_bytes()).expect("round trip");
        assert_eq!(
            same.unseal(&ctx, &blob).expect("unseal").as_slice(),
            b"share"
        );
        assert!(matches!(
            DataKey::generate().unseal(&ctx, &blob),
            Err(SealError::Tampered)
        ));
        let other = SealContext::new("n1", "keygroup/warm-2");
        assert!(matches!(
            key.unseal(&other, &blob),
            Err(SealError::Tampered)
        ));
        assert!(DataKey::from_bytes(&[0u8; 31]).is_err());
        assert_eq!(format!("{key:?}"), "DataKey(<redacted>)");
    }
}
