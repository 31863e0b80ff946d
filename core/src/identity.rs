//! A node's long-term identity keys: Ed25519 for signing ceremony messages,
//! X25519 (HPKE, RFC 9180) for receiving DKG round-2 shares end to end.

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use hpke::{Deserializable, Kem as _, Serializable};
use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroizing;

use crate::CoreError;

/// The HPKE suite for DKG round-2 shares: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20-Poly1305.
pub type Kem = hpke::kem::X25519HkdfSha256;
type Kdf = hpke::kdf::HkdfSha256;
type Aead = hpke::aead::ChaCha20Poly1305;

/// A node's secret identity. Zeroizes on drop; `Debug` shows only public keys.
pub struct NodeIdentity {
    signing: SigningKey,
    encryption_seed: Zeroizing<[u8; 32]>,
    encryption: <Kem as hpke::Kem>::PrivateKey,
    encryption_public: <Kem as hpke::Kem>::PublicKey,
}

impl std::fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeIdentity")
            .field(
                "identity_key",
                &hex::encode(self.signing.verifying_key().as_bytes()),
            )
            .field("encryption_key", &hex::encode(self.encryption_public_key()))
            .field("secrets", &"<redacted>")
            .finish()
    }
}

impl NodeIdentity {
    /// Fresh random identity.
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        let mut bytes = Zeroizing::new([0u8; 64]);
        rng.fill_bytes(bytes.as_mut());
        Self::from_secret_bytes(bytes.as_ref())
            .unwrap_or_else(|_| unreachable!("64 bytes always parse"))
    }

    /// Rebuilds an identity from [`NodeIdentity::to_secret_bytes`].
    pub fn from_secret_bytes(bytes: &[u8]) -> Result<Self, CoreError> {
        if bytes.len() != 64 {
            return Err(CoreError::invalid(
                "identity secret",
                format!("{} bytes, expected 64", bytes.len()),
            ));
        }
        let mut sk = Zeroizing::new([0u8; 32]);
        sk.copy_from_slice(&bytes[..32]);
        let mut seed = Zeroizing::new([0u8; 32]);
        seed.copy_from_slice(&bytes[32..]);
        let (encryption, encryption_public) = Kem::derive_keypair(seed.as_ref());
        Ok(Self {
            signing: SigningKey::from_bytes(&sk),
            encryption_seed: seed,
            encryption,
            encryption_public,
        })
    }

    /// The secret bytes, for sealing at rest only. This is the one place an
    /// identity leaves its type; the buffer zeroizes when dropped.
    pub fn to_secret_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(64));
        out.extend_from_slice(self.signing.as_bytes());
        out.extend_from_slice(self.encryption_seed.as_ref());
        out
    }

    /// Ed25519 public key.
    pub fn identity_key(&self) -> VerifyingKey {
        self.signing.verifying_key()
    }

    /// X25519 public key bytes.
    pub fn encryption_public_key(&self) -> Vec<u8> {
        self.encryption_public.to_bytes().to_vec()
    }

    /// Signs `msg` (always a domain-separated transcript built by this crate).
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.signing.sign(msg).to_bytes()
    }

    /// Opens an HPKE message sent to this identity.
    pub fn open(
        &self,
        encapped_key: &[u8],
        ciphertext: &[u8],
        info: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, CoreError> {
        let encapped = <Kem as hpke::Kem>::EncappedKey::from_bytes(encapped_key)
            .map_err(|e| CoreError::Encryption(format!("bad encapsulated key: {e}")))?;
        hpke::single_shot_open::<Aead, Kdf, Kem>(
            &hpke::OpModeR::Base,
            &self.encryption,
            &encapped,
            info,
            ciphertext,
            &[],
        )
        .map(Zeroizing::new)
        .map_err(|e| CoreError::Encryption(format!("cannot open: {e}")))
    }
}

/// Encrypts `plaintext` to the X25519 public key `recipient` with HPKE base mode.
/// Returns (encapsulated key, ciphertext).
pub fn seal_to<R: RngCore + CryptoRng>(
    recipient: &[u8],
    info: &[u8],
    plaintext: &[u8],
    rng: &mut R,
) -> Result<(Vec<u8>, Vec<u8>), CoreError> {
    let pk = <Kem as hpke::Kem>::PublicKey::from_bytes(recipient)
        .map_err(|e| CoreError::Encryption(format!("bad recipient key: {e}")))?;
    let (enc, ct) = hpke::single_shot_seal::<Aead, Kdf, Kem, R>(
        &hpke::OpModeS::Base,
        &pk,
        info,
        plaintext,
        &[],
        rng,
    )
    .map_err(|e| CoreError::Encryption(format!("cannot seal: {e}")))?;
    Ok((enc.to_bytes().to_vec(), ct))
}

/// Verifies an Ed25519 signature (strict: rejects malleable and small-order
/// encodings). `verify_strict` checks the same equation as `verify` and more,
/// so one call is the whole check.
pub fn verify_ed25519(key: &VerifyingKey, msg: &[u8], signature: &[u8]) -> bool {
    let Ok(sig) = ed25519_dalek::Signature::from_slice(signature) else {
        return false;
    };
    key.verify_strict(msg, &sig).is_ok()
}

/// Parses a hex Ed25519 public key, naming `field` on error.
pub fn parse_ed25519_hex(field: &'static str, value: &str) -> Result<VerifyingKey, CoreError> {
    let bytes = hex::decode(value.trim()).map_err(|_| {
        CoreError::invalid(
            field,
            format!("{:?} is not hex", crate::error::preview(value)),
        )
    })?;
    let arr: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| CoreError::invalid(field, format!("{} bytes, expected 32", bytes.len())))?;
    VerifyingKey::from_bytes(&arr)
        .map_err(|_| CoreError::invalid(field, "not a valid Ed25519 public key"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_round_trips_and_debug_redacts() {
        let id = NodeIdentity::generate(&mut rand::thread_rng());
        let secret = id.to_secret_bytes();
        let again = NodeIdentity::from_secret_bytes(&secret).expect("parses");
        assert_eq!(id.identity_key(), again.identity_key());
        assert_eq!(id.encryption_public_key(), again.encryption_public_key());
        let dbg = format!("{id:?}");
        assert!(!dbg.contains(&hex::encode(&secret[..32])));
        assert!(!dbg.contains(&hex::encode(&secret[32..])));
    }

    #[test]
    fn hpke_round_trip_and_wrong_info_fails() {
        let mut rng = rand::thread_rng();
        let id = NodeIdentity::generate(&mut rng);
        let (enc, ct) =
            seal_to(&id.encryption_public_key(), b"info", b"share", &mut rng).expect("seal");
        assert_eq!(
            id.open(&enc, &ct, b"info").expect("open").as_slice(),
            b"share"
        );
        assert!(id.open(&enc, &ct, b"other").is_err());
    }
}
