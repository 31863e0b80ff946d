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
        let count = r.count("reservations", MAX_ENTRIES)?;
        let mut reserved = Vec::with_capacity(count);
        for _ in 0..count {
            reserved.push((r.digest()?, r.u128()?));
        }
        r.done()?;
        let start = from_seq.max(first_seq);
        let ordered = entries.windows(2).all(|w| w[0].seq < w[1].seq);
        let inside = entries.iter().all(|e| e.seq >= start && e.seq < through);
        if first_seq > through || !ordered || !inside {
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

/// What a signer verified of its group's ledgers, per group and asset: every
/// request any member attested in the window (counted once, by digest), and
/// how far into each member's numbered ledger it holds (its *coverage*).
///
/// Memory only (a restart starts empty and is sent whole windows again).
/// It relies on each member's ledger only growing, as its journal does: a
/// member's store rolled back to a backup would reuse entry numbers.
/// Counting every member's attested entries, not only this request's
/// attestors', counts more than [`Attestation`]s of `n − t + 1` members
/// alone would, never less: every entry is a request some member signed.
#[derive(Debug, Default)]
pub struct LedgerCache {
    windows: BTreeMap<(GroupName, String), Window>,
}

#[derive(Debug, Default)]
struct Window {
    coverage: BTreeMap<NodeId, u64>,
    /// digest → (largest amount listed, latest `at` listed).
    entries: BTreeMap<RequestDigest, (u128, u64)>,
    by_time: BTreeSet<(u64, RequestDigest)>,
    total: u128,
}

impl Window {
    fn add(&mut self, e: &LedgerEntry) {
        match self.entries.get_mut(&e.digest) {
            Some((amount, at)) => {
                if e.amount > *amount {
                    self.total = self.total.saturating_sub(*amount).saturating_add(e.amount);
                    *amount = e.amount;
                }
                if e.at > *at {
                    self.by_time.remove(&(*at, e.digest));
                    self.by_time.insert((e.at, e.digest));
                    *at = e.at;
                }
            }
            None => {
                self.entries.insert(e.digest, (e.amount, e.at));
                self.by_time.insert((e.at, e.digest));
                self.total = self.total.saturating_add(e.amount);
            }
        }
    }

    /// Drops what no member could still list: older than the window by
    /// this node's clock, with the skew allowed.
    fn expire(&mut self, oldest: u64) {
        while let Some(&(at, digest)) = self.by_time.first() {
            if at >= oldest {
                break;
            }
            self.by_time.pop_first();
            if let Some((amount, _)) = self.entries.remove(&digest) {
                self.total = self.total.saturating_sub(amount);
            }
        }
    }
}

/// Why [`LedgerCache::check`] did not return a total.
#[derive(Debug)]
pub enum CheckError {
    /// The attestations do not prove what the group holds (a refusal).
    Refused(CoreError),
    /// Valid, but one lists only a part of its member's ledger: kept, and
    /// the next attestation round continues from it.
    CatchingUp(String),
}

impl From<CoreError> for CheckError {
    fn from(e: CoreError) -> Self {
        CheckError::Refused(e)
    }
}

impl std::fmt::Display for CheckError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CheckError::Refused(e) => e.fmt(f),
            CheckError::CatchingUp(why) => f.write_str(why),
        }
    }
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
    /// The velocity window, seconds.
    pub window_secs: u64,
}

impl LedgerCache {
    /// How far this node holds each member's ledger of `group`/`asset`: what
    /// an attestor is asked to list from (`AttestRequest.since`).
    pub fn coverage(&self, group: &GroupName, asset: &str) -> BTreeMap<NodeId, u64> {
        self.windows
            .get(&(group.clone(), asset.to_string()))
            .map(|w| w.coverage.clone())
            .unwrap_or_default()
    }

    /// Requests held for `group`/`asset` (metrics, tests).
    pub fn len(&self, group: &GroupName, asset: &str) -> usize {
        self.windows
            .get(&(group.clone(), asset.to_string()))
            .map_or(0, |w| w.entries.len())
    }

    /// Forgets everything (what a restart does).
    pub fn clear(&mut self) {
        self.windows.clear();
    }

    /// In round 2: verifies the attestations, takes in the ledger ranges they
    /// list, and returns what the group already signed or holds reserved in
    /// the window, this request excluded, counted once per request digest
    /// (the largest amount listed for it).
    ///
    /// Refused: an attestation that is not from a member, not for this
    /// request, not fresh, not made over this node's receipt, not signed by
    /// its member, a second one from a member, fewer than `needed`; a range
    /// that starts after what this node holds of that member (a gap: the
    /// coordinator asked for the wrong range); a part of a longer range (the
    /// node keeps it and is caught up by the next request).
    pub fn check(
        &mut self,
        attestations: &[SignedAttestation],
        members: &MemberKeys,
        rules: AttestationRules<'_>,
    ) -> Result<u128, CheckError> {
        let subject = rules.subject;
        let key = (subject.group.clone(), subject.asset.to_string());
        let mut from = BTreeSet::new();
        for s in attestations {
            let a = &s.attestation;
            let member_key = members.get(&a.node).ok_or_else(|| {
                CoreError::refused(format!(
                    "velocity attestation from {}, not a member of {}",
                    a.node, subject.group
                ))
            })?;
            if &a.group != subject.group || a.asset != subject.asset || &a.digest != subject.digest
            {
                return Err(CoreError::refused(format!(
                    "velocity attestation from {} is for another request",
                    a.node
                ))
                .into());
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
                ))
                .into());
            }
            if a.receipts.binary_search(rules.own_receipt).is_err() {
                return Err(CoreError::refused(format!(
                    "velocity attestation from {} was not made over this node's reservation",
                    a.node
                ))
                .into());
            }
            if !verify_ed25519(member_key, &a.encode(), &s.signature) {
                return Err(CoreError::refused(format!(
                    "velocity attestation from {} does not verify under its identity key",
                    a.node
                ))
                .into());
            }
            if !from.insert(a.node.clone()) {
                return Err(CoreError::refused(format!(
                    "two velocity attestations from {}",
                    a.node
                ))
                .into());
            }
            let held = self
                .windows
                .get(&key)
                .and_then(|w| w.coverage.get(&a.node))
                .copied()
                .unwrap_or(0);
            if a.from_seq > held && a.from_seq > a.first_seq {
                return Err(CoreError::refused(format!(
                    "velocity attestation from {} lists its ledger from entry {}, but this node holds it only up to {held} (and the window starts at {}): entries would be missed",
                    a.node, a.from_seq, a.first_seq
                )).into());
            }
        }
        if from.len() < rules.needed {
            return Err(CoreError::refused(format!(
                "velocity attestations from {} members, the group needs {} (n - t + 1) to see every other withdrawal",
                from.len(),
                rules.needed
            )).into());
        }
        let window = self.windows.entry(key).or_default();
        let mut partial = None;
        for s in attestations {
            let a = &s.attestation;
            for e in &a.entries {
                window.add(e);
            }
            let held = window.coverage.entry(a.node.clone()).or_default();
            *held = (*held).max(a.through);
            if !a.complete {
                partial = Some((a.node.clone(), a.through));
            }
        }
        window.expire(
            rules
                .now
                .saturating_sub(rules.window_secs)
                .saturating_sub(rules.skew_secs),
        );
        if window.entries.len() > MAX_WINDOW_ENTRIES {
            return Err(CheckError::Refused(CoreError::refused(format!(
                "{} requests in {}'s {} velocity window, more than a signer keeps ({MAX_WINDOW_ENTRIES})",
                window.entries.len(),
                subject.group,
                subject.asset
            ))));
        }
        if let Some((node, through)) = partial {
            return Err(CheckError::CatchingUp(format!(
                "catching up on {node}'s velocity ledger (held up to entry {through}, more to come): reserve again"
            )));
        }
        let mut reserved: BTreeMap<RequestDigest, u128> = BTreeMap::new();
        for s in attestations {
            for (d, amount) in &s.attestation.reserved {
                if d != subject.digest && !window.entries.contains_key(d) {
                    let e = reserved.entry(*d).or_default();
                    *e = (*e).max(*amount);
                }
            }
        }
        let this = window.entries.get(subject.digest).map_or(0, |(a, _)| *a);
        Ok(reserved
            .values()
            .fold(window.total.saturating_sub(this), |t, v| {
                t.saturating_add(*v)
            }))
    }
}

#[cfg(test)]
mod tests;
