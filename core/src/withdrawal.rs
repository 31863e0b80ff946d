//! The withdrawal request and its canonical, versioned, length-prefixed,
//! domain-separated encoding (threat C6).
//!
//! The digest of this encoding is what the custody service signs and what
//! every node re-derives for itself: a node never takes a digest on the
//! coordinator's word. The byte layout is documented in `docs/encoding.md`
//! and must never change for version 1.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{CoreError, GroupName, RequestId, Tier};

/// Domain-separation prefix of every encoded withdrawal request.
pub const DOMAIN: &[u8] = b"PERMAFROST/WITHDRAWAL";
/// Encoding of a request with an opaque payload.
pub const ENCODING_VERSION: u16 = 1;
/// Encoding of a request with a PSBT (taproot groups).
pub const ENCODING_VERSION_PSBT: u16 = 2;
/// Largest payload (the bytes FROST signs) a request may carry.
pub const MAX_PAYLOAD: usize = 1024;
/// Longest destination label of a PSBT request (several addresses, comma-separated).
pub const MAX_DESTINATION_LABEL: usize = 8192;
pub use crate::taproot::MAX_PSBT;

/// A withdrawal the custody service asks the cluster to sign.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WithdrawalRequest {
    /// Unique id chosen by the custody service; the cluster signs at most one digest per id.
    pub request_id: RequestId,
    /// The key group that must sign.
    pub key_group: GroupName,
    /// The tier the custody service believes the group is; nodes check it matches.
    pub tier: Tier,
    /// Asset ticker, e.g. `BTC`.
    pub asset: String,
    /// Amount in the asset's smallest unit. For a PSBT request a label for
    /// people (0 = none given); when given it must equal the decoded payments.
    pub amount: u128,
    /// Destination address as the chain writes it. For a PSBT request a label
    /// (empty = none given); when given it must equal the decoded payment
    /// addresses, comma-separated in output order.
    pub destination: String,
    /// The exact bytes FROST signs, for a message group; empty with a PSBT.
    pub payload: Vec<u8>,
    /// An unsigned BIP174 PSBT, for a taproot group: each node decodes it and
    /// signs the sighashes it derives itself.
    pub psbt: Option<Vec<u8>>,
    /// Creation time, Unix seconds.
    pub created_at: u64,
    /// Expiry time, Unix seconds; nodes refuse to sign after it.
    pub expires_at: u64,
    /// Who asked for it (the custody principal or a person); approvers may not be the requester.
    pub requested_by: String,
}

/// SHA-256 of a request's canonical encoding.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestDigest(pub [u8; 32]);

impl RequestDigest {
    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
    /// Parses 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, CoreError> {
        let arr: [u8; 32] = bytes.try_into().map_err(|_| {
            CoreError::invalid("digest", format!("{} bytes, expected 32", bytes.len()))
        })?;
        Ok(Self(arr))
    }
}

impl std::fmt::Debug for RequestDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RequestDigest({})", self.to_hex())
    }
}

// Field tags: fixed order, never reused.
const T_REQUEST_ID: u8 = 1;
const T_KEY_GROUP: u8 = 2;
const T_TIER: u8 = 3;
const T_ASSET: u8 = 4;
const T_AMOUNT: u8 = 5;
const T_DESTINATION: u8 = 6;
const T_PAYLOAD: u8 = 7;
const T_CREATED_AT: u8 = 8;
const T_EXPIRES_AT: u8 = 9;
const T_REQUESTED_BY: u8 = 10;
const T_PSBT: u8 = 11;

fn put(out: &mut Vec<u8>, tag: u8, value: &[u8]) {
    out.push(tag);
    // Lengths are bounded by validate(); a u32 prefix is unambiguous.
    out.extend_from_slice(&(value.len() as u32).to_be_bytes());
    out.extend_from_slice(value);
}

fn printable(field: &'static str, value: &str, max: usize) -> Result<(), CoreError> {
    if value.is_empty() || value.len() > max || !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(CoreError::invalid(
            field,
            format!(
                "{:?} must be 1..={max} printable ASCII characters without spaces",
                crate::error::preview(value)
            ),
        ));
    }
    Ok(())
}

impl WithdrawalRequest {
    /// Checks every field's shape (not authorization).
    pub fn validate(&self) -> Result<(), CoreError> {
        printable("asset", &self.asset, 32)?;
        printable("requested_by", &self.requested_by, 128)?;
        match &self.psbt {
            None => {
                printable("destination", &self.destination, 256)?;
                if self.amount == 0 {
                    return Err(CoreError::invalid("amount", "must be greater than zero"));
                }
                if self.payload.is_empty() || self.payload.len() > MAX_PAYLOAD {
                    return Err(CoreError::invalid(
                        "payload",
                        format!("{} bytes, must be 1..={MAX_PAYLOAD}", self.payload.len()),
                    ));
                }
            }
            Some(psbt) => {
                if !self.destination.is_empty() {
                    printable("destination", &self.destination, MAX_DESTINATION_LABEL)?;
                }
                if !self.payload.is_empty() {
                    return Err(CoreError::invalid(
                        "payload",
                        "must be empty in a request with a PSBT: the nodes derive what they sign",
                    ));
                }
                if psbt.is_empty() || psbt.len() > MAX_PSBT {
                    return Err(CoreError::invalid(
                        "psbt",
                        format!("{} bytes, must be 1..={MAX_PSBT}", psbt.len()),
                    ));
                }
            }
        }
        if self.expires_at <= self.created_at {
            return Err(CoreError::invalid(
                "expires_at",
                format!(
                    "{} is not after created_at {}",
                    self.expires_at, self.created_at
                ),
            ));
        }
        Ok(())
    }

    /// The canonical encoding: version 1 with a payload, version 2 with a
    /// PSBT (which takes the payload's place). See `docs/encoding.md`.
    pub fn encode(&self) -> Vec<u8> {
        let body = self.psbt.as_ref().map_or(self.payload.len(), Vec::len);
        let mut out = Vec::with_capacity(128 + body);
        out.extend_from_slice(DOMAIN);
        let version = match self.psbt {
            None => ENCODING_VERSION,
            Some(_) => ENCODING_VERSION_PSBT,
        };
        out.extend_from_slice(&version.to_be_bytes());
        put(&mut out, T_REQUEST_ID, self.request_id.as_str().as_bytes());
        put(&mut out, T_KEY_GROUP, self.key_group.as_str().as_bytes());
        put(&mut out, T_TIER, &[self.tier.code()]);
        put(&mut out, T_ASSET, self.asset.as_bytes());
        put(&mut out, T_AMOUNT, &self.amount.to_be_bytes());
        put(&mut out, T_DESTINATION, self.destination.as_bytes());
        match &self.psbt {
            None => put(&mut out, T_PAYLOAD, &self.payload),
            Some(psbt) => put(&mut out, T_PSBT, psbt),
        }
        put(&mut out, T_CREATED_AT, &self.created_at.to_be_bytes());
        put(&mut out, T_EXPIRES_AT, &self.expires_at.to_be_bytes());
        put(&mut out, T_REQUESTED_BY, self.requested_by.as_bytes());
        out
    }

    /// SHA-256 of [`WithdrawalRequest::encode`].
    pub fn digest(&self) -> RequestDigest {
        RequestDigest(Sha256::digest(self.encode()).into())
    }

    /// Parses a canonical encoding back; rejects anything [`encode`](Self::encode) would not produce.
    pub fn decode(bytes: &[u8]) -> Result<Self, CoreError> {
        let mut r = Reader { bytes, pos: 0 };
        if r.take(DOMAIN.len())? != DOMAIN {
            return Err(CoreError::invalid("encoding", "missing domain prefix"));
        }
        let version = u16::from_be_bytes(fixed(r.take(2)?)?);
        if version != ENCODING_VERSION && version != ENCODING_VERSION_PSBT {
            return Err(CoreError::invalid(
                "encoding",
                format!("unsupported version {version}"),
            ));
        }
        let text = |b: &[u8], field| {
            String::from_utf8(b.to_vec()).map_err(|_| CoreError::invalid(field, "not UTF-8"))
        };
        let request = WithdrawalRequest {
            request_id: RequestId::new(text(r.field(T_REQUEST_ID)?, "request id")?)?,
            key_group: GroupName::new(text(r.field(T_KEY_GROUP)?, "key group")?)?,
            tier: Tier::from_code(u8::from_be_bytes(fixed(r.field(T_TIER)?)?))?,
            asset: text(r.field(T_ASSET)?, "asset")?,
            amount: u128::from_be_bytes(fixed(r.field(T_AMOUNT)?)?),
            destination: text(r.field(T_DESTINATION)?, "destination")?,
            payload: if version == ENCODING_VERSION {
                r.field(T_PAYLOAD)?.to_vec()
            } else {
                Vec::new()
            },
            psbt: if version == ENCODING_VERSION_PSBT {
                Some(r.field(T_PSBT)?.to_vec())
            } else {
                None
            },
            created_at: u64::from_be_bytes(fixed(r.field(T_CREATED_AT)?)?),
            expires_at: u64::from_be_bytes(fixed(r.field(T_EXPIRES_AT)?)?),
            requested_by: text(r.field(T_REQUESTED_BY)?, "requested_by")?,
        };
        if r.pos != bytes.len() {
            return Err(CoreError::invalid("encoding", "trailing bytes"));
        }
        Ok(request)
    }
}

fn fixed<const N: usize>(b: &[u8]) -> Result<[u8; N], CoreError> {
    b.try_into().map_err(|_| {
        CoreError::invalid(
            "encoding",
            format!("field of {} bytes, expected {N}", b.len()),
        )
    })
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CoreError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| CoreError::invalid("encoding", "truncated"))?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }
    fn field(&mut self, tag: u8) -> Result<&'a [u8], CoreError> {
        let found = self.take(1)?[0];
        if found != tag {
            return Err(CoreError::invalid(
                "encoding",
                format!("tag {found}, expected {tag}"),
            ));
        }
        let len = u32::from_be_bytes(fixed(self.take(4)?)?) as usize;
        self.take(len)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn sample() -> WithdrawalRequest {
        WithdrawalRequest {
            request_id: RequestId::new("wd-1").expect("valid"),
            key_group: GroupName::new("warm-1").expect("valid"),
            tier: Tier::Warm,
            asset: "BTC".into(),
            amount: 150_000,
            destination: "bc1qexampledestination".into(),
            payload: vec![7; 32],
            psbt: None,
            created_at: 1_700_000_000,
            expires_at: 1_700_003_600,
            requested_by: "custody-1".into(),
        }
    }

    fn arb_text() -> impl Strategy<Value = String> {
        "[!-~]{1,12}"
    }

    prop_compose! {
        fn arb_request()(
            id in "[a-z0-9-]{1,10}",
            group in "[a-z0-9-]{1,8}",
            tier in 1u8..=3,
            asset in arb_text(),
            amount in any::<u128>(),
            destination in arb_text(),
            payload in proptest::collection::vec(any::<u8>(), 1..48),
            psbt in proptest::option::of(proptest::collection::vec(any::<u8>(), 1..48)),
            created_at in any::<u64>(),
            expires_at in any::<u64>(),
            requested_by in arb_text(),
        ) -> WithdrawalRequest {
            WithdrawalRequest {
                request_id: RequestId::new(id).expect("strategy yields valid ids"),
                key_group: GroupName::new(group).expect("strategy yields valid names"),
                tier: Tier::from_code(tier).expect("1..=3"),
                asset, amount, destination,
                // A PSBT takes the payload's place (validate() refuses both).
                payload: if psbt.is_some() { Vec::new() } else { payload },
                psbt, created_at, expires_at, requested_by,
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// C6: two distinct requests never share a digest (and the encoding is injective).
        #[test]
        fn c6_distinct_requests_never_share_a_digest(a in arb_request(), b in arb_request()) {
            prop_assert_eq!(a == b, a.digest() == b.digest());
            prop_assert_eq!(a == b, a.encode() == b.encode());
        }

        /// C6: moving bytes between adjacent fields (the classic concatenation ambiguity) changes the digest.
        #[test]
        fn c6_field_boundary_shift_changes_digest(a in arb_request(), cut in 1usize..8) {
            let mut b = a.clone();
            if b.asset.len() > cut {
                let moved = b.asset.split_off(b.asset.len() - cut);
                b.destination = format!("{moved}{}", b.destination);
                prop_assert_ne!(a.digest(), b.digest());
            }
        }

        /// The encoding decodes back to the same request, so it loses nothing.
        #[test]
        fn encoding_round_trips(a in arb_request()) {
            prop_assert_eq!(WithdrawalRequest::decode(&a.encode()).expect("decodes"), a);
        }

        /// Garbage never decodes into a request and never panics.
        #[test]
        fn decode_rejects_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = WithdrawalRequest::decode(&bytes);
        }
    }

    #[test]
    fn c6_every_single_field_change_changes_digest() {
        let base = sample();
        let d = base.digest();
        let mut variants = Vec::new();
        let mut v = base.clone();
        v.request_id = RequestId::new("wd-2").expect("valid");
        variants.push(v);
        let mut v = base.clone();
        v.key_group = GroupName::new("warm-2").expect("valid");
        variants.push(v);
        let mut v = base.clone();
        v.tier = Tier::Cold;
        variants.push(v);
        let mut v = base.clone();
        v.asset = "ETH".into();
        variants.push(v);
        let mut v = base.clone();
        v.amount += 1;
        variants.push(v);
        let mut v = base.clone();
        v.destination.push('x');
        variants.push(v);
        let mut v = base.clone();
        v.payload[0] ^= 1;
        variants.push(v);
        let mut v = base.clone();
        v.created_at += 1;
        variants.push(v);
        let mut v = base.clone();
        v.expires_at += 1;
        variants.push(v);
        let mut v = base.clone();
        v.requested_by.push('x');
        variants.push(v);
        for v in variants {
            assert_ne!(v.digest(), d, "{v:?}");
        }
    }

    #[test]
    fn known_answer_digest_is_stable() {
        // Pins the v1 layout: if this changes, every signed request in the field breaks.
        let enc = sample().encode();
        assert_eq!(&enc[..DOMAIN.len()], DOMAIN);
        assert_eq!(&enc[DOMAIN.len()..DOMAIN.len() + 2], &[0, 1]);
        assert_eq!(
            enc.len(),
            DOMAIN.len() + 2 + 10 * 5 + 4 + 6 + 1 + 3 + 16 + 22 + 32 + 8 + 8 + 9
        );
    }

    #[test]
    fn validate_names_the_bad_field() {
        let mut r = sample();
        r.amount = 0;
        assert!(r.validate().unwrap_err().to_string().contains("amount"));
        let mut r = sample();
        r.expires_at = r.created_at;
        assert!(r.validate().unwrap_err().to_string().contains("expires_at"));
        let mut r = sample();
        r.payload = vec![];
        assert!(r.validate().unwrap_err().to_string().contains("payload"));
    }
}
