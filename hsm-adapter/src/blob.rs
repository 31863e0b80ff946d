//! The sealed blob format shared by all backends, and the associated data that binds a blob
//! to its [`SealContext`].
//!
//! ```text
//! blob = "PFSEAL" || version (1) || backend (1) || nonce || ciphertext-with-tag
//! aad  = "PFSEAL" || version || backend || u64be(len node_id) || node_id
//!                                       || u64be(len purpose) || purpose
//! ```
//! The header is authenticated too, so relabelling a blob's backend or version cannot pass.
//! Length prefixes keep `("ab", "c")` and `("a", "bc")` apart.

use crate::{SealContext, SealError, SealerKind, MAX_PLAINTEXT_LEN};

const MAGIC: &[u8; 6] = b"PFSEAL";
const VERSION: u8 = 1;
const HEADER_LEN: usize = MAGIC.len() + 2;
/// Offsets of the version and backend bytes, for the conformance suite's header checks.
pub(crate) const VERSION_AT: usize = MAGIC.len();
pub(crate) const BACKEND_AT: usize = MAGIC.len() + 1;

impl SealerKind {
    fn to_byte(self) -> u8 {
        match self {
            SealerKind::Passphrase => 1,
            SealerKind::Pkcs11 => 2,
            SealerKind::DataKey => 3,
        }
    }

    fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(SealerKind::Passphrase),
            2 => Some(SealerKind::Pkcs11),
            3 => Some(SealerKind::DataKey),
            _ => None,
        }
    }
}

/// Per-backend sizes the parser needs.
#[derive(Clone, Copy)]
pub(crate) struct Layout {
    pub kind: SealerKind,
    pub nonce_len: usize,
    pub tag_len: usize,
}

fn header(kind: SealerKind) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..MAGIC.len()].copy_from_slice(MAGIC);
    h[VERSION_AT] = VERSION;
    h[BACKEND_AT] = kind.to_byte();
    h
}

/// Associated data for a caller's context (validated: empty fields are refused).
pub(crate) fn aad(kind: SealerKind, ctx: &SealContext) -> Result<Vec<u8>, SealError> {
    ctx.validate()?;
    Ok(aad_for(kind, &ctx.node_id, &ctx.purpose))
}

/// Associated data without validation, for the crate's own internal contexts (which use an
/// empty node id precisely so that no caller context can collide with them).
pub(crate) fn aad_for(kind: SealerKind, node_id: &str, purpose: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(HEADER_LEN + 16 + node_id.len() + purpose.len());
    aad.extend_from_slice(&header(kind));
    for field in [node_id, purpose] {
        // usize -> u64 is lossless on every platform Rust supports.
        aad.extend_from_slice(&(field.len() as u64).to_be_bytes());
        aad.extend_from_slice(field.as_bytes());
    }
    aad
}

pub(crate) fn check_plaintext_len(len: usize) -> Result<(), SealError> {
    if len > MAX_PLAINTEXT_LEN {
        return Err(SealError::TooLarge {
            len,
            max: MAX_PLAINTEXT_LEN,
        });
    }
    Ok(())
}

pub(crate) fn assemble(kind: SealerKind, nonce: &[u8], ciphertext: &[u8]) -> Vec<u8> {
    let mut blob = Vec::with_capacity(HEADER_LEN + nonce.len() + ciphertext.len());
    blob.extend_from_slice(&header(kind));
    blob.extend_from_slice(nonce);
    blob.extend_from_slice(ciphertext);
    blob
}

/// Splits a blob into `(nonce, ciphertext-with-tag)` after checking its header.
///
/// Checks run from the outside in, so each failure names the most useful cause: not ours at
/// all, then a version we do not read, then another backend, then a truncated body.
pub(crate) fn parse(layout: Layout, blob: &[u8]) -> Result<(&[u8], &[u8]), SealError> {
    if blob.len() < HEADER_LEN {
        return Err(SealError::Malformed(format!(
            "sealed blob is {} bytes, shorter than its {HEADER_LEN}-byte header",
            blob.len()
        )));
    }
    let (head, body) = blob.split_at(HEADER_LEN);
    if &head[..MAGIC.len()] != MAGIC {
        return Err(SealError::Malformed(
            "not a Permafrost sealed blob (magic bytes are not PFSEAL)".into(),
        ));
    }
    let version = head[VERSION_AT];
    if version != VERSION {
        return Err(SealError::UnsupportedVersion { found: version });
    }
    let backend = head[BACKEND_AT];
    let found = SealerKind::from_byte(backend).ok_or_else(|| {
        SealError::Malformed(format!("sealed blob names unknown backend 0x{backend:02x}"))
    })?;
    if found != layout.kind {
        return Err(SealError::WrongBackend {
            expected: layout.kind,
            found,
        });
    }
    let min_body = layout.nonce_len + layout.tag_len;
    if body.len() < min_body {
        return Err(SealError::Malformed(format!(
            "sealed blob is truncated: {} bytes, a {} blob has at least {}",
            blob.len(),
            layout.kind,
            HEADER_LEN + min_body
        )));
    }
    if body.len() - min_body > MAX_PLAINTEXT_LEN {
        return Err(SealError::Malformed(format!(
            "sealed blob of {} bytes is larger than any blob this crate makes",
            blob.len()
        )));
    }
    Ok(body.split_at(layout.nonce_len))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAYOUT: Layout = Layout {
        kind: SealerKind::Passphrase,
        nonce_len: 4,
        tag_len: 2,
    };

    #[test]
    fn aad_length_prefixes_keep_field_boundaries_apart() {
        let a = aad_for(SealerKind::Passphrase, "ab", "c");
        let b = aad_for(SealerKind::Passphrase, "a", "bc");
        assert_ne!(a, b);
        assert_ne!(
            aad_for(SealerKind::Passphrase, "a", "b"),
            aad_for(SealerKind::Pkcs11, "a", "b")
        );
    }

    #[test]
    fn parse_splits_nonce_and_ciphertext() {
        let blob = assemble(SealerKind::Passphrase, &[1, 2, 3, 4], &[9, 9, 7]);
        let (nonce, ct) = parse(LAYOUT, &blob).expect("well-formed blob");
        assert_eq!(nonce, &[1, 2, 3, 4]);
        assert_eq!(ct, &[9, 9, 7]);
    }

    #[test]
    fn parse_names_each_header_fault() {
        let good = assemble(SealerKind::Passphrase, &[0; 4], &[0; 2]);

        let mut bad_version = good.clone();
        bad_version[VERSION_AT] = 7;
        assert!(matches!(
            parse(LAYOUT, &bad_version),
            Err(SealError::UnsupportedVersion { found: 7 })
        ));

        let other = assemble(SealerKind::Pkcs11, &[0; 4], &[0; 2]);
        assert!(matches!(
            parse(LAYOUT, &other),
            Err(SealError::WrongBackend {
                expected: SealerKind::Passphrase,
                found: SealerKind::Pkcs11
            })
        ));

        let mut unknown_backend = good.clone();
        unknown_backend[BACKEND_AT] = 0xee;
        let err = parse(LAYOUT, &unknown_backend).expect_err("unknown backend");
        assert!(err.to_string().contains("0xee"), "{err}");

        assert!(matches!(
            parse(LAYOUT, &good[..good.len() - 1]),
            Err(SealError::Malformed(_))
        ));
        assert!(matches!(
            parse(LAYOUT, b"NOTOURS!xxxxxx"),
            Err(SealError::Malformed(_))
        ));
    }

    #[test]
    fn empty_context_fields_are_refused() {
        let err = aad(SealerKind::Passphrase, &SealContext::new("", "p")).expect_err("empty");
        assert!(matches!(
            err,
            SealError::Config {
                field: "node_id",
                ..
            }
        ));
    }
}
