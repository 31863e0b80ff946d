//! Ed25519 key files: the custody service's request-signing key and each
//! approver's key share one format, the 32-byte seed as hex in a 0600 file.

use std::path::Path;

use ed25519_dalek::{SigningKey, VerifyingKey};
use rand::RngCore;
use zeroize::Zeroizing;

use crate::{files, CtlError};

/// Generates an Ed25519 key, writes its seed as hex to `out` (0600, never
/// overwriting an existing file) and returns the public key.
pub fn generate_key_file(out: &Path) -> Result<VerifyingKey, CtlError> {
    if out.exists() {
        return Err(CtlError::InvalidInput(format!(
            "{} already exists; refusing to overwrite a key",
            out.display()
        )));
    }
    let mut seed = Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng.fill_bytes(seed.as_mut());
    let key = SigningKey::from_bytes(&seed);
    let seed_hex = Zeroizing::new(hex::encode(&seed[..]));
    files::write_private(out, format!("{}\n", seed_hex.as_str()).as_bytes())?;
    Ok(key.verifying_key())
}

/// Reads a key written by [`generate_key_file`].
pub fn load_key_file(path: &Path) -> Result<SigningKey, CtlError> {
    let text = Zeroizing::new(files::read_text(path)?);
    let bytes = Zeroizing::new(hex::decode(text.trim()).map_err(|_| {
        CtlError::InvalidFile(format!("{} does not hold a hex key", path.display()))
    })?);
    let seed: Zeroizing<[u8; 32]> = Zeroizing::new(bytes.as_slice().try_into().map_err(|_| {
        CtlError::InvalidFile(format!(
            "{} holds {} bytes, expected a 32-byte Ed25519 seed",
            path.display(),
            bytes.len()
        ))
    })?);
    Ok(SigningKey::from_bytes(&seed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_round_trips_and_is_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("signing.key");
        let public = generate_key_file(&path).expect("generate");
        assert_eq!(load_key_file(&path).expect("load").verifying_key(), public);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(generate_key_file(&path).is_err(), "must not overwrite");
    }

    #[test]
    fn malformed_key_file_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("short.key");
        std::fs::write(&path, "abcd\n").expect("write");
        let err = load_key_file(&path).expect_err("too short").to_string();
        assert!(
            err.contains("short.key") && err.contains("2 bytes"),
            "{err}"
        );
    }
}
