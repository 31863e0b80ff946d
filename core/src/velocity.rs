//! Group-wide velocity (P1 for the group, whatever subset signs).
//!
//! Each node's own ledger only knows what *it* signed, so subset rotation
//! could get `n·cap/t` out of a group. Instead every withdrawal is checked
//! against a read of the ledgers of enough members that it must meet every
//! other withdrawal that could be signed in the same window:
//!
//! 1. **Reserve (write).** Each chosen signer verifies the custody-signed
//!    request, holds a reservation of its amount, and returns a signed
//!    [`Receipt`]: in round 1 with the nonces it commits (they live as long
//!    as each other), or, when the nonces come from the coordinator's bank,
//!    in a `Reserve` call of its own that `Sign` later names.
//! 2. **Attest (read).** Then at least `n − t + 1` members each verify the `t`
//!    receipts (so the read causally follows every write of this attempt) and
//!    return a signed [`Attestation`] listing what they signed or hold
//!    reserved in the window, this request excluded.
//! 3. **Check.** In round 2 every signer verifies those attestations — from
//!    distinct members, for this request, fresh, each naming *its own*
//!    receipt — and refuses if the union (deduplicated by request digest)
//!    plus this request exceeds the daily limit.
//!
//! Why it holds (docs/policy.md has the long form): any `t` signers and any
//! `n − t + 1` attestors share a member. Among the withdrawals that get
//! signed, take the one whose attestations were read last, Z. Every other
//! signed Y finished its reservations before its own reads, which came no
//! later than Z's; a member in both Y's signers and Z's attestors therefore
//! held Y (reserved, or journaled once it signed) when it attested for Z. So
//! Z's check counted every other signed withdrawal, and Z passed: the group's
//! total is within the limit. A share needs a live reservation (a bound
//! nonce's own, or the one `Sign` names for banked nonces), and a restart
//! voids every reservation and nonce, so a reservation that is gone can no
//! longer produce a share. A named reservation outlives its first share
//! until it expires (the journal counts the request once; attestations
//! deduplicate by digest), so a second session of the same request
//! (ROAST) reuses it and its attestations. Write-then-read cannot fold into
//! one round: a member that reserves and attests in one step sees only
//! requests that reached it first, and three requests can each see just
//! one other (a cycle), together exceeding the limit.

use std::collections::{BTreeMap, BTreeSet};

use ed25519_dalek::VerifyingKey;
use sha2::{Digest, Sha256};

use crate::identity::verify_ed25519;
use crate::withdrawal::RequestDigest;
use crate::{CoreError, GroupName, NodeId};

const RECEIPT_DOMAIN: &[u8] = b"PERMAFROST/VELOCITY-RECEIPT/v1";
const ATTESTATION_DOMAIN: &[u8] = b"PERMAFROST/VELOCITY-ATTESTATION/v2";
/// Most ledger entries (or reservations) one attestation may list; a longer
/// range comes in parts ([`Attestation::complete`]).
pub const MAX_ENTRIES: usize = 20_000;
/// Most requests a signer keeps of a group's and asset's window
/// ([`LedgerCache`]); a busier window is refused (fail closed).
pub const MAX_WINDOW_ENTRIES: usize = 500_000;

/// Whether a request under `limits` needs the group-wide read at all: it
/// does unless the daily limit is the largest amount there is, which no total
/// can exceed (a group whose policy sets no velocity limit). Without limits
/// (an asset the policy does not name) it does: policy refuses such a request
/// anyway, and failing closed costs nothing.
pub fn group_wide_check_needed(limits: Option<&crate::policy::AssetLimits>) -> bool {
    limits.is_none_or(|l| l.daily_max != u128::MAX)
}

/// The `n` of [`attestations_needed`] for a group: its active members, and
/// every member removed less than a velocity window (plus `margin`) ago,
/// or at an unknown time. A withdrawal signed in the window before a removal
/// may be remembered by the removed member and only `t − 1` active ones, so
/// until the window has passed the read must still meet any `t − 1` of them.
/// Attestors are active members only: past a removal a read may need all of
/// them.
pub fn counted_members(
    active: usize,
    removed_at: impl IntoIterator<Item = Option<u64>>,
    now: u64,
    margin: u64,
) -> usize {
    let window = crate::policy::VELOCITY_WINDOW_SECS.saturating_add(margin);
    active
        + removed_at
            .into_iter()
            .filter(|at| at.is_none_or(|at| at.saturating_add(window) > now))
            .count()
}

/// Attestations a signer needs from distinct members: `n − t + 1`, so any
/// `t` signers of any other withdrawal share a member with them.
pub fn attestations_needed(members: usize, threshold: usize) -> usize {
    members.saturating_sub(threshold).saturating_add(1)
}

fn put(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CoreError> {
        if self.0.len() < n {
            return Err(CoreError::invalid("velocity record", "truncated"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn field(&mut self) -> Result<&'a [u8], CoreError> {
        let len = u32::from_be_bytes(fixed(self.take(4)?)?) as usize;
        self.take(len)
    }
    fn text(&mut self, what: &'static str) -> Result<String, CoreError> {
        String::from_utf8(self.field()?.to_vec()).map_err(|_| CoreError::invalid(what, "not UTF-8"))
    }
    fn u64(&mut self) -> Result<u64, CoreError> {
        Ok(u64::from_be_bytes(fixed(self.field()?)?))
    }
    fn u128(&mut self) -> Result<u128, CoreError> {
        Ok(u128::from_be_bytes(fixed(self.field()?)?))
    }
    fn count(&mut self, what: &str, max: usize) -> Result<usize, CoreError> {
        let count = u32::from_be_bytes(fixed(self.field()?)?) as usize;
        if count > max {
            return Err(CoreError::invalid(
                "attestation",
                format!("{count} {what}, at most {max}"),
            ));
        }
        Ok(count)
    }
    fn digest(&mut self) -> Result<RequestDigest, CoreError> {
        RequestDigest::from_slice(self.field()?)
    }
    fn done(&self) -> Result<(), CoreError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(CoreError::invalid("velocity record", "trailing bytes"))
        }
    }
}

fn fixed<const N: usize>(b: &[u8]) -> Result<[u8; N], CoreError> {
    b.try_into().map_err(|_| {
        CoreError::invalid(
            "velocity record",
            format!("field of {} bytes, expected {N}", b.len()),
        )
    })
}

/// What a signer reserved for a request in round 1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// The signer.
    pub node: NodeId,
    /// Key group.
    pub group: GroupName,
    /// Asset.
    pub asset: String,
    /// The request.
    pub digest: RequestDigest,
    /// Amount reserved (what the node established leaves the group).
    pub amount: u128,
    /// When, by the signer's clock (Unix seconds).
    pub reserved_at: u64,
    /// Names the round-1 call (and so the nonces) the reservation belongs to.
    pub commit_id: [u8; 16],
}

impl Receipt {
    /// Canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = RECEIPT_DOMAIN.to_vec();
        put(&mut out, self.node.as_str().as_bytes());
        put(&mut out, self.group.as_str().as_bytes());
        put(&mut out, self.asset.as_bytes());
        put(&mut out, &self.digest.0);
        put(&mut out, &self.amount.to_be_bytes());
        put(&mut out, &self.reserved_at.to_be_bytes());
        put(&mut out, &self.commit_id);
        out
    }

    /// Parses [`Receipt::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, CoreError> {
        let rest = bytes
            .strip_prefix(RECEIPT_DOMAIN)
            .ok_or_else(|| CoreError::invalid("receipt", "missing domain prefix"))?;
        let mut r = Reader(rest);
        let receipt = Receipt {
            node: NodeId::new(r.text("receipt node")?)?,
            group: GroupName::new(r.text("receipt group")?)?,
            asset: r.text("receipt asset")?,
            digest: r.digest()?,
            amount: r.u128()?,
            reserved_at: r.u64()?,
            commit_id: fixed(r.field()?)?,
        };
        r.done()?;
        Ok(receipt)
    }

    /// SHA-256 of the encoding: how attestations name a receipt.
    pub fn hash(&self) -> [u8; 32] {
        Sha256::digest(self.encode()).into()
    }
}

/// A receipt with its signer's Ed25519 signature (node identity key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedReceipt {
    /// The receipt.
    pub receipt: Receipt,
    /// Signature over [`Receipt::encode`].
    pub signature: Vec<u8>,
}

/// One entry of a member's velocity ledger: a request it released a share
/// for, numbered in the order it journaled them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LedgerEntry {
    /// Position in the member's ledger of this group and asset (from 0, no gaps).
    pub seq: u64,
    /// The request.
    pub digest: RequestDigest,
    /// Amount counted.
    pub amount: u128,
    /// When, by the member's clock (never earlier than the entry before).
    pub at: u64,
}

/// Domain separation of a ledger's hash chain.
const CHAIN_DOMAIN: &[u8] = b"PERMAFROST/VELOCITY-LEDGER/v1";

/// The hash chain of a member's ledger: entry `e` after the chain's hash
/// `prev` (all zeros before entry 0). A ledger that went back (a store
/// restored from a backup) and numbered other requests again no longer
/// continues the hash a signer holds.
pub fn chain(prev: &[u8; 32], e: &LedgerEntry) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(CHAIN_DOMAIN);
    h.update(prev);
    h.update(e.seq.to_be_bytes());
    h.update(e.digest.0);
    h.update(e.amount.to_be_bytes());
    h.update(e.at.to_be_bytes());
    h.finalize().into()
}

/// Bytes one [`LedgerEntry`] takes in an attestation.
pub const ENTRY_WIRE_BYTES: usize = 4 * 4 + 8 + 32 + 16 + 8;

/// What a member attests it signed or holds reserved in the window.
///
/// The ledger part is a *range* of the member's numbered ledger: a signer
/// keeps what it verified of each member's ledger before ([`LedgerCache`]),
/// so an attestation lists only the entries since what the signers said they
/// hold (`from_seq`), or the whole window for a signer that holds nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attestation {
    /// The attesting member.
    pub node: NodeId,
    /// Key group.
    pub group: GroupName,
    /// Asset.
    pub asset: String,
    /// The request being checked.
    pub digest: RequestDigest,
    /// When, by the attestor's clock.
    pub at: u64,
    /// Start of the window the ledger covers.
    pub window_start: u64,
    /// Hashes of the receipts the attestor verified (sorted): the writes this read follows.
    pub receipts: Vec<[u8; 32]>,
    /// The first entry of the attestor's ledger still in the window
    /// (its ledger's length when none is).
    pub first_seq: u64,
    /// Where the listed range starts: entries from `max(from_seq, first_seq)`.
    pub from_seq: u64,
    /// One past the last entry this attestation covers.
    pub through: u64,
    /// Whether `through` is the end of the attestor's ledger; a part that
    /// is not (a signer catching up on a long window) proves nothing yet.
    pub complete: bool,
    /// Every ledger entry from `max(from_seq, first_seq)` to `through`, in order.
    pub entries: Vec<LedgerEntry>,
    /// The ledger's chain hash just before the first listed entry.
    pub prev_hash: [u8; 32],
    /// Its chain hash after the last listed entry (`prev_hash` when none).
    pub head_hash: [u8; 32],
    /// (request digest, amount) of every live reservation, sorted by digest,
    /// this request's excluded.
    pub reserved: Vec<(RequestDigest, u128)>,
}

impl Attestation {
    /// Canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = ATTESTATION_DOMAIN.to_vec();
        put(&mut out, self.node.as_str().as_bytes());
        put(&mut out, self.group.as_str().as_bytes());
        put(&mut out, self.asset.as_bytes());
        put(&mut out, &self.digest.0);
        put(&mut out, &self.at.to_be_bytes());
        put(&mut out, &self.window_start.to_be_bytes());
        put(&mut out, &(self.receipts.len() as u32).to_be_bytes());
        for h in &self.receipts {
            put(&mut out, h);
        }
        put(&mut out, &self.first_seq.to_be_bytes());
        put(&mut out, &self.from_seq.to_be_bytes());
        put(&mut out, &self.through.to_be_bytes());
        put(&mut out, &[u8::from(self.complete)]);
        put(&mut out, &(self.entries.len() as u32).to_be_bytes());
        for e in &self.entries {
            put(&mut out, &e.seq.to_be_bytes());
            put(&mut out, &e.digest.0);
            put(&mut out, &e.amount.to_be_bytes());
            put(&mut out, &e.at.to_be_bytes());
        }
        put(&mut out, &self.prev_hash);
        put(&mut out, &self.head_hash);
        put(&mut out, &(self.reserved.len() as u32).to_be_bytes());
        for (d, amount) in &self.reserved {
            put(&mut out, &d.0);
            put(&mut out, &amount.to_be_bytes());
        }
        out
    }

    /// Parses [`Attestation::encode`], and checks its ranges are well formed.
    pub fn decode(bytes: &[u8]) -> Result<Self, CoreError> {
        let rest = bytes
            .strip_prefix(ATTESTATION_DOMAIN)
            .ok_or_else(|| CoreError::invalid("attestation", "missing domain prefix"))?;
        let mut r = Reader(rest);
        let node = NodeId::new(r.text("attestation node")?)?;
        let group = GroupName::new(r.text("attestation group")?)?;
        let asset = r.text("attestation asset")?;
        let digest = r.digest()?;
        let at = r.u64()?;
        let window_start = r.u64()?;
        let count = r.count("receipts", 1024)?;
        let mut receipts = Vec::with_capacity(count);
        for _ in 0..count {
            receipts.push(fixed(r.field()?)?);
        }
        let first_seq = r.u64()?;
        let from_seq = r.u64()?;
        let through = r.u64()?;
        let complete = match r.field()? {
            [0] => false,
            [1] => true,
            _ => return Err(CoreError::invalid("attestation", "complete is not 0 or 1")),
        };
        let count = r.count("ledger entries", MAX_ENTRIES)?;
        let mut entries = Vec::with_capacity(count);
        for _ in 0..count {
            entries.push(LedgerEntry {
                seq: r.u64()?,
                digest: r.digest()?,
                amount: r.u128()?,
                at: r.u64()?,
            });
        }
        let prev_hash = fixed(r.field()?)?;
        let head_hash = fixed(r.field()?)?;
        let count = r.count("reservations", MAX_ENTRIES)?;
        let mut reserved = Vec::with_capacity(count);
        for _ in 0..count {
            reserved.push((r.digest()?, r.u128()?));
        }
        r.done()?;
        // A range lists every entry from its start to `through`, in order
        // and without gaps; an empty one may start past its end (the
        // attestor holds fewer entries than it was asked from).
        let start = from_seq.max(first_seq);
        let contiguous = entries
            .iter()
            .enumerate()
            .all(|(i, e)| e.seq == start.saturating_add(i as u64));
        let whole = if start <= through {
            entries.len() as u64 == through - start
        } else {
            entries.is_empty()
        };
        if first_seq > through || !contiguous || !whole {
            return Err(CoreError::invalid(
                "attestation",
                format!(
                    "ledger range {start}..{through} (window from {first_seq}) does not hold its {} entries in order",
                    entries.len()
                ),
            ));
        }
        Ok(Self {
            node,
            group,
            asset,
            digest,
            at,
            window_start,
            receipts,
            first_seq,
            from_seq,
            through,
            complete,
            entries,
            prev_hash,
            head_hash,
            reserved,
        })
    }
}

/// An attestation with its member's signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedAttestation {
    /// The attestation.
    pub attestation: Attestation,
    /// Signature over [`Attestation::encode`].
    pub signature: Vec<u8>,
}

/// Wire form of a signed record: u32 length of the body, body, signature.
pub fn pack(body: &[u8], signature: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + signature.len() + 4);
    put(&mut out, body);
    out.extend_from_slice(signature);
    out
}

fn unpack(bytes: &[u8]) -> Result<(&[u8], &[u8]), CoreError> {
    let mut r = Reader(bytes);
    let body = r.field()?;
    Ok((body, r.0))
}

impl SignedReceipt {
    /// Parses [`pack`]ed bytes.
    pub fn from_wire(bytes: &[u8]) -> Result<Self, CoreError> {
        let (body, signature) = unpack(bytes)?;
        Ok(Self {
            receipt: Receipt::decode(body)?,
            signature: signature.to_vec(),
        })
    }
    /// [`pack`]ed bytes.
    pub fn to_wire(&self) -> Vec<u8> {
        pack(&self.receipt.encode(), &self.signature)
    }
}

impl SignedAttestation {
    /// Parses [`pack`]ed bytes.
    pub fn from_wire(bytes: &[u8]) -> Result<Self, CoreError> {
        let (body, signature) = unpack(bytes)?;
        Ok(Self {
            attestation: Attestation::decode(body)?,
            signature: signature.to_vec(),
        })
    }
    /// [`pack`]ed bytes.
    pub fn to_wire(&self) -> Vec<u8> {
        pack(&self.attestation.encode(), &self.signature)
    }
}

/// The members of a group and their identity keys.
pub type MemberKeys = BTreeMap<NodeId, VerifyingKey>;

/// What a request is, for these checks.
#[derive(Clone, Copy, Debug)]
pub struct Subject<'a> {
    /// Key group.
    pub group: &'a GroupName,
    /// Asset.
    pub asset: &'a str,
    /// The request.
    pub digest: &'a RequestDigest,
}

/// Before attesting: the receipts of at least `threshold` distinct members,
/// each signed by that member, for this request. Returns their hashes, sorted.
pub fn verify_receipts(
    receipts: &[SignedReceipt],
    members: &MemberKeys,
    subject: Subject<'_>,
    threshold: usize,
) -> Result<Vec<[u8; 32]>, CoreError> {
    let mut seen = BTreeSet::new();
    let mut hashes = Vec::with_capacity(receipts.len());
    for s in receipts {
        let r = &s.receipt;
        let key = members.get(&r.node).ok_or_else(|| {
            CoreError::refused(format!(
                "receipt from {}, not a member of {}",
                r.node, subject.group
            ))
        })?;
        if &r.group != subject.group || r.asset != subject.asset || &r.digest != subject.digest {
            return Err(CoreError::refused(format!(
                "receipt from {} is for another request",
                r.node
            )));
        }
        if !verify_ed25519(key, &r.encode(), &s.signature) {
            return Err(CoreError::refused(format!(
                "receipt from {} does not verify under its identity key",
                r.node
            )));
        }
        if !seen.insert(r.node.clone()) {
            return Err(CoreError::refused(format!("two receipts from {}", r.node)));
        }
        hashes.push(r.hash());
    }
    if seen.len() < threshold {
        return Err(CoreError::refused(format!(
            "{} reservation receipts, the group needs {threshold} (one per signer)",
            seen.len()
        )));
    }
    hashes.sort_unstable();
    Ok(hashes)
}

/// How many ledger entries one attestation part lists so that the `needed`
/// attestations a `Sign` carries stay well inside one gRPC message.
pub fn part_limit(needed: usize) -> usize {
    const BUDGET: usize = 512 * 1024;
    (BUDGET / needed.max(1) / ENTRY_WIRE_BYTES).clamp(16, MAX_ENTRIES)
}

mod cache;
pub use cache::{verify_attestations, AttestationRules, CheckError, LedgerCache, Verified};

#[cfg(test)]
mod tests;
