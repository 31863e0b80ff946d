//! "The nonces (or reservation) you name do not exist here" as a status both
//! daemons agree on: `FAILED_PRECONDITION` with a `permafrost-reason: stale`
//! marker. A node says it after a restart (every nonce it issued died with
//! it, N2); the coordinator then forgets that node's bank and asks it for
//! fresh commitments instead of failing the request. Callers read the
//! marker, never the message text.

use tonic::{Code, Status};

/// Metadata key of a structured refusal reason.
pub const REASON: &str = "permafrost-reason";
/// Its value for stale nonces or reservations.
pub const STALE: &str = "stale";

/// A `FAILED_PRECONDITION` status marked stale.
pub fn stale(what: impl std::fmt::Display) -> Status {
    let mut status = Status::failed_precondition(what.to_string());
    status
        .metadata_mut()
        .insert(REASON, tonic::metadata::MetadataValue::from_static(STALE));
    status
}

/// Whether `status` is [`stale`].
pub fn is_stale(status: &Status) -> bool {
    status.code() == Code::FailedPrecondition
        && status.metadata().get(REASON).and_then(|v| v.to_str().ok()) == Some(STALE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn n2_the_marker_survives_and_plain_preconditions_are_not_stale() {
        assert!(is_stale(&stale("unknown nonce handle")));
        assert!(!is_stale(&Status::failed_precondition("group inactive")));
    }
}
