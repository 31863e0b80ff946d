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
const ATTESTATION_DOMAIN: &[u8] = b"PERMAFROST/VELOCITY-ATTESTATION/v1";
/// Most ledger entries one attestation may list (fail closed beyond).
pub const MAX_ENTRIES: usize = 20_000;

/// Whether a request under `limits` needs the group-wide read at all: it
/// does unless the daily limit is the largest amount there is, which no total
/// can exceed (a group whose policy sets no velocity limit). Without limits
/// (an asset the policy does not name) it does: policy refuses such a request
/// anyway, and failing closed costs nothing.
pub fn group_wide_check_needed(limits: Option<&crate::policy::AssetLimits>) -> bool {
    limits.is_none_or(|l| l.daily_max != u128::MAX)
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

/// What a member attests it signed or holds reserved in the window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attestation {
    /// The attesting member.
    pub node: NodeId,
    /// Key group.
    pub group: GroupName,
    /// Asset.
    pub asset: String,
    /// The request being checked (its own entries are left out).
    pub digest: RequestDigest,
    /// When, by the attestor's clock.
    pub at: u64,
    /// Start of the window the entries cover.
    pub window_start: u64,
    /// Hashes of the receipts the attestor verified (sorted): the writes this read follows.
    pub receipts: Vec<[u8; 32]>,
    /// (request digest, amount) of everything signed or reserved in the window, sorted by digest.
    pub entries: Vec<(RequestDigest, u128)>,
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
        put(&mut out, &(self.entries.len() as u32).to_be_bytes());
        for (d, amount) in &self.entries {
            put(&mut out, &d.0);
            put(&mut out, &amount.to_be_bytes());
        }
        out
    }

    /// Parses [`Attestation::encode`].
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
        let count = u32::from_be_bytes(fixed(r.field()?)?) as usize;
        if count > 1024 {
            return Err(CoreError::invalid(
                "attestation",
                format!("{count} receipts"),
            ));
        }
        let mut receipts = Vec::with_capacity(count);
        for _ in 0..count {
            receipts.push(fixed(r.field()?)?);
        }
        let count = u32::from_be_bytes(fixed(r.field()?)?) as usize;
        if count > MAX_ENTRIES {
            return Err(CoreError::invalid(
                "attestation",
                format!("{count} entries, at most {MAX_ENTRIES}"),
            ));
        }
        let mut entries = Vec::with_capacity(count);
        for _ in 0..count {
            entries.push((r.digest()?, r.u128()?));
        }
        r.done()?;
        Ok(Self {
            node,
            group,
            asset,
            digest,
            at,
            window_start,
            receipts,
            entries,
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

/// What a signer checks its round-2 attestations against.
#[derive(Clone, Copy, Debug)]
pub struct AttestationRules<'a> {
    /// The request.
    pub subject: Subject<'a>,
    /// The hash of this signer's own receipt for the nonces it is using.
    pub own_receipt: &'a [u8; 32],
    /// Distinct members needed ([`attestations_needed`]).
    pub needed: usize,
    /// Now, by this node's clock.
    pub now: u64,
    /// Oldest acceptable attestation age, seconds (the nonce lifetime).
    pub max_age_secs: u64,
    /// Clock skew tolerance, seconds.
    pub skew_secs: u64,
}

/// In round 2: verifies the attestations and returns what the group already
/// signed or holds reserved in the window, this request excluded, counted
/// once per request digest (the largest amount any attestor lists for it).
pub fn attested_total(
    attestations: &[SignedAttestation],
    members: &MemberKeys,
    rules: AttestationRules<'_>,
) -> Result<u128, CoreError> {
    let subject = rules.subject;
    let mut from = BTreeSet::new();
    let mut union: BTreeMap<RequestDigest, u128> = BTreeMap::new();
    for s in attestations {
        let a = &s.attestation;
        let key = members.get(&a.node).ok_or_else(|| {
            CoreError::refused(format!(
                "velocity attestation from {}, not a member of {}",
                a.node, subject.group
            ))
        })?;
        if &a.group != subject.group || a.asset != subject.asset || &a.digest != subject.digest {
            return Err(CoreError::refused(format!(
                "velocity attestation from {} is for another request",
                a.node
            )));
        }
        if a.at > rules.now.saturating_add(rules.skew_secs)
            || a.at
                .saturating_add(rules.max_age_secs)
                .saturating_add(rules.skew_secs)
                < rules.now
        {
            return Err(CoreError::refused(format!(
                "velocity attestation from {} is dated {} (now {}): not fresh",
                a.node, a.at, rules.now
            )));
        }
        if a.receipts.binary_search(rules.own_receipt).is_err() {
            return Err(CoreError::refused(format!(
                "velocity attestation from {} was not made over this node's reservation",
                a.node
            )));
        }
        if !verify_ed25519(key, &a.encode(), &s.signature) {
            return Err(CoreError::refused(format!(
                "velocity attestation from {} does not verify under its identity key",
                a.node
            )));
        }
        if !from.insert(a.node.clone()) {
            return Err(CoreError::refused(format!(
                "two velocity attestations from {}",
                a.node
            )));
        }
        for (d, amount) in &a.entries {
            if d == subject.digest {
                continue;
            }
            let e = union.entry(*d).or_default();
            *e = (*e).max(*amount);
        }
    }
    if from.len() < rules.needed {
        return Err(CoreError::refused(format!(
            "velocity attestations from {} members, the group needs {} (n - t + 1) to see every other withdrawal",
            from.len(),
            rules.needed
        )));
    }
    Ok(union.values().fold(0u128, |t, v| t.saturating_add(*v)))
}

#[cfg(test)]
mod tests;
