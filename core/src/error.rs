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
    /// Policy refuses the request for good; the [`Denial`] names the rule
    /// (metrics and clients act on the rule, never on the sentence).
    ///
    /// [`Denial`]: crate::policy::Denial
    #[error("refused: policy: {0}")]
    PolicyDenied(crate::policy::Denial),
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

/// Longest prefix of a bad value an error message shows, in characters.
pub const PREVIEW_CHARS: usize = 32;

/// A bad value as an error message may show it (V4): the value itself when
/// short, else its first [`PREVIEW_CHARS`] characters, "…" and its length.
/// Errors travel back in gRPC trailers and into logs, so echoing a whole
/// value lets a client make the server send (and log) whatever it sent, and
/// pushes trailers past a client's header limit. Quote it with `{:?}`.
pub fn preview(value: &str) -> String {
    match value.char_indices().nth(PREVIEW_CHARS) {
        None => value.to_string(),
        Some((end, _)) => format!("{}… ({} bytes)", &value[..end], value.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_preview_shows_short_values_whole_and_long_ones_cut() {
        assert_eq!(preview(""), "");
        let exact = "a".repeat(PREVIEW_CHARS);
        assert_eq!(preview(&exact), exact);
        let long = format!("{exact}b{}", "c".repeat(900_000));
        assert_eq!(preview(&long), format!("{exact}… (900033 bytes)"));
        // Cut at a character boundary, never inside one.
        let wide = "é".repeat(100);
        assert_eq!(preview(&wide), format!("{}… (200 bytes)", "é".repeat(32)));
    }
}
