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
/// Its value for a request made for another epoch of the group than the
/// node holds (K7: the group is mid-refresh or the caller is behind).
pub const OUT_OF_STEP: &str = "out-of-step";

/// Its value for a signer that is still being sent a member's velocity
/// ledger (it restarted and holds only part of the window): not a refusal;
/// the caller reserves again (the reservation answer says how far the node
/// holds now) and reads the next part.
pub const CATCHING_UP: &str = "catching-up";

/// A `FAILED_PRECONDITION` status marked catching up.
pub fn catching_up(what: impl std::fmt::Display) -> Status {
    let mut status = Status::failed_precondition(what.to_string());
    status.metadata_mut().insert(
        REASON,
        tonic::metadata::MetadataValue::from_static(CATCHING_UP),
    );
    status
}

/// Whether `status` is [`catching_up`].
pub fn is_catching_up(status: &Status) -> bool {
    status.code() == Code::FailedPrecondition
        && status.metadata().get(REASON).and_then(|v| v.to_str().ok()) == Some(CATCHING_UP)
}

/// A `FAILED_PRECONDITION` status marked stale.
pub fn stale(what: impl std::fmt::Display) -> Status {
    let mut status = Status::failed_precondition(what.to_string());
    status
        .metadata_mut()
        .insert(REASON, tonic::metadata::MetadataValue::from_static(STALE));
    status
}

/// A `FAILED_PRECONDITION` status marked out of step: the caller's record of
/// the group is at another epoch than this node's. Never misbehaviour; the
/// caller brings its record (or the members) to one epoch and asks again.
pub fn out_of_step(what: impl std::fmt::Display) -> Status {
    let mut status = Status::failed_precondition(what.to_string());
    status.metadata_mut().insert(
        REASON,
        tonic::metadata::MetadataValue::from_static(OUT_OF_STEP),
    );
    status
}

/// Whether `status` is [`out_of_step`].
pub fn is_out_of_step(status: &Status) -> bool {
    status.code() == Code::FailedPrecondition
        && status.metadata().get(REASON).and_then(|v| v.to_str().ok()) == Some(OUT_OF_STEP)
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
        assert!(is_out_of_step(&out_of_step("epoch 2, asked for 1")));
        assert!(!is_stale(&out_of_step("epoch 2, asked for 1")));
        assert!(is_catching_up(&catching_up("part of n1's ledger")));
        assert!(!is_stale(&catching_up("part of n1's ledger")));
        assert!(!is_out_of_step(&stale("unknown nonce handle")));
    }
}
