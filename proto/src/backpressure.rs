//! "Busy, retry shortly" as a gRPC status both daemons send and both read:
//! `RESOURCE_EXHAUSTED` with a `retry-after-ms` hint in the metadata. A busy
//! peer is loaded, not dead: callers back off and retry it, and never exclude
//! it or count it as unreachable.

use std::time::Duration;

use tonic::{Code, Status};

/// Metadata key of the retry hint, in milliseconds.
pub const RETRY_AFTER_MS: &str = "retry-after-ms";

/// A `RESOURCE_EXHAUSTED` status saying what is full and when to retry.
pub fn busy(what: impl std::fmt::Display, retry_after: Duration) -> Status {
    let ms = retry_after.as_millis().max(1);
    let mut status = Status::resource_exhausted(format!("busy: {what}; retry in {ms} ms"));
    if let Ok(v) = ms.to_string().parse() {
        status.metadata_mut().insert(RETRY_AFTER_MS, v);
    }
    status
}

/// The retry hint of a busy status, if `status` is one (it carries the hint).
pub fn retry_after(status: &Status) -> Option<Duration> {
    if status.code() != Code::ResourceExhausted {
        return None;
    }
    let hint = status
        .metadata()
        .get(RETRY_AFTER_MS)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())?;
    Some(Duration::from_millis(hint.min(10_000)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hint_survives_and_other_codes_are_not_busy() {
        let s = busy("8 signing sessions in flight", Duration::from_millis(40));
        assert_eq!(s.code(), Code::ResourceExhausted);
        assert!(
            s.message().contains("8 signing sessions"),
            "{}",
            s.message()
        );
        assert_eq!(retry_after(&s), Some(Duration::from_millis(40)));
        assert_eq!(retry_after(&Status::unavailable("down")), None);
        // A RESOURCE_EXHAUSTED without the hint (a message over the size cap, V4) is final.
        assert_eq!(retry_after(&Status::resource_exhausted("too large")), None);
    }
}
