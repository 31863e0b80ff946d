//! Backend-agnostic tests every [`Sealer`] must pass (STYLE.md §10; threat S2: secrets at
//! rest stay sealed, bound to their owner, and corruption is reported, never trusted).
//!
//! Each function panics with a message naming what failed, so it can be called from any
//! test harness. Integration tests call them once per backend; a new backend only needs a
//! [`Backend`] and one line per check.

use crate::blob::{BACKEND_AT, VERSION_AT};
use crate::{SealContext, SealError, Sealer, SealerKind};

/// How to open the backend under test.
///
/// The suite never keeps two instances from `open` alive at once: PKCS#11 login state is
/// per process and token, so a second open of a token in use is refused by design.
pub struct Backend<'a> {
    /// Opens the backend with the right passphrase or PIN, on the same persistent state every
    /// time (same state file, same token and key).
    pub open: &'a dyn Fn() -> Result<Box<dyn Sealer>, SealError>,
    /// Opens the same state with a wrong passphrase or PIN; must fail.
    pub open_with_wrong_secret: &'a dyn Fn() -> Result<Box<dyn Sealer>, SealError>,
}

impl Backend<'_> {
    fn open_ok(&self) -> Box<dyn Sealer> {
        (self.open)().unwrap_or_else(|e| panic!("opening the backend under test failed: {e}"))
    }
}

/// Runs every check below, in an order that respects [`Backend`]'s one-instance rule.
///
/// `other_backend` is a sealer of a different kind, whose real blobs must be refused as
/// [`SealError::WrongBackend`]. Pass `None` only where no other backend can run (e.g. no
/// HSM on a developer machine); the relabelled-header check still covers the variant.
pub fn run_all(backend: &Backend<'_>, other_backend: Option<&dyn Sealer>) {
    wrong_secret_refused(backend);
    survives_reopen(backend);
    let sealer = backend.open_ok();
    let sealer = sealer.as_ref();
    round_trip(sealer);
    fresh_nonce_per_seal(sealer);
    flipped_byte_refused(sealer);
    truncated_or_extended_blob_refused(sealer);
    other_node_or_purpose_refused(sealer);
    empty_context_refused(sealer);
    unknown_version_refused(sealer);
    relabelled_backend_refused(sealer);
    if let Some(other) = other_backend {
        other_backend_refused(sealer, other);
    }
}

fn ctx() -> SealContext {
    SealContext::new("node-1", "keygroup/warm-1")
}

fn seal(sealer: &dyn Sealer, ctx: &SealContext, plaintext: &[u8]) -> Vec<u8> {
    sealer
        .seal(ctx, plaintext)
        .unwrap_or_else(|e| panic!("{} sealer failed to seal: {e}", sealer.kind()))
}

/// Describes an unseal outcome without ever printing recovered plaintext.
fn outcome(result: &Result<crate::Zeroizing<Vec<u8>>, SealError>) -> String {
    match result {
        Ok(plain) => format!("unsealed successfully ({} bytes)", plain.len()),
        Err(e) => format!("{e:?}"),
    }
}

/// Header or authentication failure: what any corruption of a blob must produce.
fn is_corruption_error(result: &Result<crate::Zeroizing<Vec<u8>>, SealError>) -> bool {
    matches!(
        result,
        Err(SealError::Tampered
            | SealError::UnsupportedVersion { .. }
            | SealError::WrongBackend { .. }
            | SealError::Malformed(_))
    )
}

/// Plaintexts of 0, 1, 32 bytes and 64 KiB come back unchanged.
pub fn round_trip(sealer: &dyn Sealer) {
    let big: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8).collect();
    for plaintext in [&b""[..], b"\x00", &[0xa5; 32], &big] {
        let blob = seal(sealer, &ctx(), plaintext);
        let result = sealer.unseal(&ctx(), &blob);
        match &result {
            Ok(plain) if plain.as_slice() == plaintext => {}
            _ => panic!(
                "{} round trip of {} bytes failed: {}",
                sealer.kind(),
                plaintext.len(),
                outcome(&result)
            ),
        }
    }
}

/// Sealing the same input twice gives different blobs (a nonce is never reused).
pub fn fresh_nonce_per_seal(sealer: &dyn Sealer) {
    let a = seal(sealer, &ctx(), b"same input");
    let b = seal(sealer, &ctx(), b"same input");
    assert_ne!(
        a,
        b,
        "{} sealed the same input to identical blobs",
        sealer.kind()
    );
}

/// A blob sealed by one instance unseals after the backend is dropped and opened again:
/// the key really lives in the persistent state, not in the instance.
pub fn survives_reopen(backend: &Backend<'_>) {
    let blob = {
        let first = backend.open_ok();
        seal(first.as_ref(), &ctx(), b"persisted secret")
    };
    let second = backend.open_ok();
    let result = second.unseal(&ctx(), &blob);
    assert!(
        matches!(&result, Ok(p) if p.as_slice() == b"persisted secret"),
        "{} blob did not unseal after reopening: {}",
        second.kind(),
        outcome(&result)
    );
}

/// A wrong passphrase or PIN is refused at open with the variant for this backend.
pub fn wrong_secret_refused(backend: &Backend<'_>) {
    let kind = backend.open_ok().kind();
    match (kind, (backend.open_with_wrong_secret)()) {
        (SealerKind::Passphrase, Err(SealError::WrongPassphrase))
        | (SealerKind::Pkcs11, Err(SealError::WrongPin)) => {}
        (kind, Err(e)) => {
            panic!("{kind} backend refused a wrong secret with the wrong error: {e:?}")
        }
        (kind, Ok(_)) => panic!("{kind} backend opened with a wrong secret"),
    }
}

/// Flipping any single byte of a blob (every position, two masks) is refused with a
/// corruption error, never accepted and never a panic.
pub fn flipped_byte_refused(sealer: &dyn Sealer) {
    let blob = seal(sealer, &ctx(), b"a key share worth protecting");
    for position in 0..blob.len() {
        for mask in [0x01u8, 0xff] {
            let mut flipped = blob.clone();
            flipped[position] ^= mask;
            let result = sealer.unseal(&ctx(), &flipped);
            assert!(
                is_corruption_error(&result),
                "{} blob with byte {position} of {} xored with {mask:#04x}: {}",
                sealer.kind(),
                blob.len(),
                outcome(&result)
            );
        }
    }
}

/// Every strict prefix of a blob, and the blob with a byte appended, is refused.
pub fn truncated_or_extended_blob_refused(sealer: &dyn Sealer) {
    let blob = seal(sealer, &ctx(), b"a key share worth protecting");
    for len in 0..blob.len() {
        let result = sealer.unseal(&ctx(), &blob[..len]);
        assert!(
            is_corruption_error(&result),
            "{} blob truncated to {len} of {} bytes: {}",
            sealer.kind(),
            blob.len(),
            outcome(&result)
        );
    }
    let mut extended = blob;
    extended.push(0);
    let result = sealer.unseal(&ctx(), &extended);
    assert!(
        matches!(result, Err(SealError::Tampered)),
        "{} blob with a byte appended: {}",
        sealer.kind(),
        outcome(&result)
    );
}

/// A blob sealed for one node or purpose does not unseal for another, including contexts
/// whose fields concatenate to the same string.
pub fn other_node_or_purpose_refused(sealer: &dyn Sealer) {
    let sealed_for = SealContext::new("node-1", "keygroup/warm-1");
    let blob = seal(sealer, &sealed_for, b"share of node-1");
    for other in [
        SealContext::new("node-2", "keygroup/warm-1"),
        SealContext::new("node-1", "keygroup/warm-2"),
        SealContext::new("node-1", "identity/ed25519"),
        SealContext::new("node-1k", "eygroup/warm-1"),
        SealContext::new("node-", "1keygroup/warm-1"),
    ] {
        let result = sealer.unseal(&other, &blob);
        assert!(
            matches!(result, Err(SealError::Tampered)),
            "{} blob sealed for {sealed_for:?} opened as {other:?}: {}",
            sealer.kind(),
            outcome(&result)
        );
    }
}

/// Empty node ids or purposes are refused as caller errors on both seal and unseal.
pub fn empty_context_refused(sealer: &dyn Sealer) {
    let blob = seal(sealer, &ctx(), b"x");
    for empty in [SealContext::new("", "p"), SealContext::new("n", "")] {
        let sealed = sealer.seal(&empty, b"x");
        assert!(
            matches!(sealed, Err(SealError::Config { .. })),
            "{} sealed under empty context {empty:?}",
            sealer.kind()
        );
        let result = sealer.unseal(&empty, &blob);
        assert!(
            matches!(result, Err(SealError::Config { .. })),
            "{} unseal under empty context {empty:?}: {}",
            sealer.kind(),
            outcome(&result)
        );
    }
}

/// Every version byte but the current one is refused as [`SealError::UnsupportedVersion`].
pub fn unknown_version_refused(sealer: &dyn Sealer) {
    let blob = seal(sealer, &ctx(), b"versioned");
    for version in (0..=u8::MAX).filter(|v| *v != 1) {
        let mut other = blob.clone();
        other[VERSION_AT] = version;
        let result = sealer.unseal(&ctx(), &other);
        assert!(
            matches!(result, Err(SealError::UnsupportedVersion { found }) if found == version),
            "{} blob with version byte {version}: {}",
            sealer.kind(),
            outcome(&result)
        );
    }
}

/// A blob whose backend byte is rewritten to another backend is refused by this backend as
/// [`SealError::WrongBackend`] naming both, and unknown backend bytes as malformed.
pub fn relabelled_backend_refused(sealer: &dyn Sealer) {
    let blob = seal(sealer, &ctx(), b"relabelled");
    for byte in 0..=u8::MAX {
        if byte == blob[BACKEND_AT] {
            continue;
        }
        let mut other = blob.clone();
        other[BACKEND_AT] = byte;
        let result = sealer.unseal(&ctx(), &other);
        let ok = match &result {
            Err(SealError::WrongBackend { expected, found }) => {
                *expected == sealer.kind() && *found != sealer.kind()
            }
            Err(SealError::Malformed(msg)) => msg.contains(&format!("0x{byte:02x}")),
            _ => false,
        };
        assert!(
            ok,
            "{} blob relabelled with backend byte {byte:#04x}: {}",
            sealer.kind(),
            outcome(&result)
        );
    }
}

/// A blob sealed by a real sealer of another backend is refused with
/// [`SealError::WrongBackend`] naming both backends.
pub fn other_backend_refused(sealer: &dyn Sealer, other_backend: &dyn Sealer) {
    assert_ne!(
        sealer.kind(),
        other_backend.kind(),
        "the other backend must be of a different kind"
    );
    let blob = seal(other_backend, &ctx(), b"sealed elsewhere");
    let result = sealer.unseal(&ctx(), &blob);
    match &result {
        Err(e @ SealError::WrongBackend { expected, found })
            if *expected == sealer.kind() && *found == other_backend.kind() =>
        {
            let msg = e.to_string();
            for name in [sealer.kind().to_string(), other_backend.kind().to_string()] {
                assert!(
                    msg.contains(&name),
                    "WrongBackend message does not name {name}: {msg}"
                );
            }
        }
        _ => panic!(
            "{} unsealing a {} blob: {}",
            sealer.kind(),
            other_backend.kind(),
            outcome(&result)
        ),
    }
}
