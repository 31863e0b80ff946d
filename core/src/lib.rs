//! Pure domain logic of Permafrost, shared by the signer node and the coordinator.
//!
//! Nothing here does I/O: no tokio, no tonic, no storage. The node and the
//! coordinator are thin shells around these types, so the rules that keep
//! funds safe are written once and tested directly.

pub mod audit;
pub mod authz;
pub mod ceremony;
pub mod dkg;
pub mod error;
pub mod identity;
pub mod ids;
pub mod manifest;
pub mod policy;
pub mod repair;
pub mod session;
pub mod signing;
pub mod taproot;
pub mod velocity;
pub mod withdrawal;

pub use error::CoreError;
pub use ids::{GroupName, NodeId, RequestId, Role, Tier};

/// The FROST ciphersuite every key group uses: FROST(secp256k1, SHA-256), RFC 9591 §6.5.
pub use frost_secp256k1 as frost;
/// The BIP340 suite taproot groups sign with: FROST(secp256k1, SHA-256-TR).
pub use frost_secp256k1_tr as frost_tr;

/// Seconds since the Unix epoch, the clock every expiry check uses.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
