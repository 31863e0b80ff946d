//! How values are laid out in tables: versioned JSON records for structured
//! data (one format for the node and the coordinator), fixed-width big-endian
//! integers for counters and clocks, raw bytes for sealed blobs.

use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::StoreError;

/// The only record version this build reads and writes.
pub const RECORD_VERSION: u32 = 1;

/// Turns a table's values into bytes and back.
pub trait Codec: 'static {
    /// The value type.
    type Value;
    /// Encodes a value.
    fn encode(value: &Self::Value) -> Result<Vec<u8>, StoreError>;
    /// Decodes a value; `what` names the record kind in errors.
    fn decode(what: &'static str, bytes: &[u8]) -> Result<Self::Value, StoreError>;
}

/// A JSON object with a `v` field equal to [`RECORD_VERSION`]; a record of
/// another version is refused rather than guessed at.
pub struct Versioned<T>(PhantomData<fn() -> T>);

impl<T: Serialize + DeserializeOwned + 'static> Codec for Versioned<T> {
    type Value = T;

    fn encode(value: &T) -> Result<Vec<u8>, StoreError> {
        let mut json = serde_json::to_value(value).map_err(|e| StoreError::Corrupt {
            what: "new",
            reason: e.to_string(),
        })?;
        if let Some(obj) = json.as_object_mut() {
            obj.insert("v".into(), RECORD_VERSION.into());
        }
        serde_json::to_vec(&json).map_err(|e| StoreError::Corrupt {
            what: "new",
            reason: e.to_string(),
        })
    }

    fn decode(what: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
        let corrupt = |reason: String| StoreError::Corrupt { what, reason };
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
        let v = value.get("v").and_then(|v| v.as_u64()).unwrap_or(0);
        if v != u64::from(RECORD_VERSION) {
            return Err(corrupt(format!(
                "version {v}; this build reads version {RECORD_VERSION} only"
            )));
        }
        serde_json::from_value(value).map_err(|e| corrupt(e.to_string()))
    }
}

/// Raw bytes (sealed blobs: already authenticated and versioned by the sealer).
pub struct Bytes;

impl Codec for Bytes {
    type Value = Vec<u8>;

    fn encode(value: &Vec<u8>) -> Result<Vec<u8>, StoreError> {
        Ok(value.clone())
    }

    fn decode(_what: &'static str, bytes: &[u8]) -> Result<Vec<u8>, StoreError> {
        Ok(bytes.to_vec())
    }
}

macro_rules! fixed_width {
    ($name:ident, $t:ty, $doc:literal) => {
        #[doc = $doc]
        pub struct $name;

        impl Codec for $name {
            type Value = $t;

            fn encode(value: &$t) -> Result<Vec<u8>, StoreError> {
                Ok(value.to_be_bytes().to_vec())
            }

            fn decode(what: &'static str, bytes: &[u8]) -> Result<$t, StoreError> {
                let arr = bytes.try_into().map_err(|_| StoreError::Corrupt {
                    what,
                    reason: format!(
                        "{} bytes where {} were expected",
                        bytes.len(),
                        std::mem::size_of::<$t>()
                    ),
                })?;
                Ok(<$t>::from_be_bytes(arr))
            }
        }
    };
}

fixed_width!(U64, u64, "A big-endian `u64` (clocks, Unix seconds).");
fixed_width!(U128, u128, "A big-endian `u128` (amounts in base units).");
