//! The one error type of `permafrost-core`, named for who is at fault.

use crate::NodeId;

/// Errors from domain logic. Refusals say which check failed.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// The caller sent a malformed or out-of-range field.
    #[error("invalid {field}: {reason}")]
    InvalidField {
        /// Which field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The request is well-formed but not authorized; the reason names the check.
    #[error("refused: {0}")]
    Refused(String),
    /// Not authorized yet: approvals or a time-lock are still missing; retry later.
    #[error("not yet: {0}")]
    NotYet(String),
    /// A named peer sent something invalid (bad signature, proof, share, commitment).
    #[error("peer {culprit} misbehaved: {reason}")]
    PeerMisbehaved {
        /// The node at fault.
        culprit: NodeId,
        /// What it did.
        reason: String,
    },
    /// The protocol was aborted (e.g. a split view in DKG); nothing further may happen in this session.
    #[error("aborted: {0}")]
    Aborted(String),
    /// A FROST operation failed for a reason not attributable to a single peer.
    #[error("frost: {0}")]
    Frost(String),
    /// Encryption or decryption of a ceremony message failed.
    #[error("encryption: {0}")]
    Encryption(String),
}

impl CoreError {
    /// Shorthand for a refusal.
    pub fn refused(reason: impl Into<String>) -> Self {
        CoreError::Refused(reason.into())
    }
    /// Shorthand for an invalid field.
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        CoreError::InvalidField {
            field,
            reason: reason.into(),
        }
    }
}
