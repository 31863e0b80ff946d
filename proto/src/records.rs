//! Versioned JSON records in the daemons' sled stores: one format, read and
//! written the same way by the node and the coordinator. A record of another
//! version is refused rather than guessed at.

use serde::{Deserialize, Serialize};

/// The only record version this build reads and writes.
pub const RECORD_VERSION: u32 = 1;

/// Decodes a record, checking its `v` field; errors name `what` was unreadable.
pub fn decode<T: for<'de> Deserialize<'de>>(what: &str, bytes: &[u8]) -> Result<T, String> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("corrupt {what} record: {e}"))?;
    let v = value.get("v").and_then(|v| v.as_u64()).unwrap_or(0);
    if v != u64::from(RECORD_VERSION) {
        return Err(format!("{what} record has unsupported version {v}"));
    }
    serde_json::from_value(value).map_err(|e| format!("corrupt {what} record: {e}"))
}

/// Encodes a record.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, String> {
    serde_json::to_vec(value).map_err(|e| e.to_string())
}
