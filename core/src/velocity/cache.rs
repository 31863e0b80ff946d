//! What a signer keeps of its group's velocity ledgers between requests, and
//! the round-2 check of a request's attestations against it.

use std::collections::{BTreeMap, BTreeSet};

use super::{chain, Attestation, MemberKeys, SignedAttestation, Subject, MAX_WINDOW_ENTRIES};
use crate::identity::verify_ed25519;
use crate::withdrawal::RequestDigest;
use crate::{CoreError, GroupName, NodeId};

/// What a signer verified of its group's ledgers, per group and asset: every
/// request any member attested in the window (counted once, by digest), and
/// how far into each member's numbered ledger it holds (its *coverage*, with
/// the ledger's chain hash there).
///
/// Memory only (a restart starts empty and is sent whole windows again).
/// Counting every member's attested entries, not only this request's
/// attestors', counts more than [`Attestation`]s of `n − t + 1` members
/// alone would, never less: every entry is a request some member signed.
/// A member's ledger that went back (its store restored from a backup) and
/// numbered other requests again no longer continues the chain hash held
/// here: the signer then holds nothing of it and is sent it whole again.
#[derive(Debug, Default)]
pub struct LedgerCache {
    windows: BTreeMap<(GroupName, String), Window>,
}

/// How far a signer holds one member's ledger.
#[derive(Clone, Copy, Debug, Default)]
struct Held {
    /// Entries `..through` are held (and every one in the window is counted).
    through: u64,
    /// The chain hash after entry `through − 1` (zeros for none).
    hash: [u8; 32],
}

#[derive(Debug, Default)]
struct Window {
    coverage: BTreeMap<NodeId, Held>,
    /// digest → (largest amount listed, latest `at` listed).
    entries: BTreeMap<RequestDigest, (u128, u64)>,
    by_time: BTreeSet<(u64, RequestDigest)>,
    total: u128,
}

impl Window {
    fn add(&mut self, digest: RequestDigest, amount: u128, at: u64) {
        match self.entries.get_mut(&digest) {
            Some((held, when)) => {
                if amount > *held {
                    self.total = self.total.saturating_sub(*held).saturating_add(amount);
                    *held = amount;
                }
                if at > *when {
                    self.by_time.remove(&(*when, digest));
                    self.by_time.insert((at, digest));
                    *when = at;
                }
            }
            None => {
                self.entries.insert(digest, (amount, at));
                self.by_time.insert((at, digest));
                self.total = self.total.saturating_add(amount);
            }
        }
    }

    /// Drops what no member could still list: older than `oldest`.
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
    /// Valid, but too few are complete yet: a part of a long ledger (kept;
    /// the next attestation round continues from it), or a ledger that no
    /// longer continues what this node held (it is read whole again).
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
    /// Distinct members needed ([`super::attestations_needed`]).
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

/// How one verified attestation's ledger range fits what is held.
enum Fit {
    /// Reaches the member's ledger end and connects to what is held (or
    /// covers the whole window): it counts.
    Complete(Held),
    /// Connects, but is a part of a longer range: kept, not counted yet.
    Part(Held),
    /// Starts after what is held (the coordinator asked for the wrong range).
    Gap(u64),
    /// Does not continue the chain hash held (the ledger went back), or the
    /// member holds fewer entries than it was asked from.
    Fork,
    /// Lists entries dated after the attestor's own clock (allowing the
    /// skew): its clock went back, or it lies.
    Future,
}

fn fit(a: &Attestation, held: Held, skew: u64) -> Fit {
    let start = a.from_seq.max(a.first_seq);
    let mut h = a.prev_hash;
    let mut at_held = (held.through == start).then_some(h);
    for e in &a.entries {
        h = chain(&h, e);
        if e.seq + 1 == held.through {
            at_held = Some(h);
        }
    }
    if h != a.head_hash || start > a.through {
        // Not one chain, or asked from further than its ledger goes.
        return Fit::Fork;
    }
    if a.entries.iter().any(|e| e.at > a.at.saturating_add(skew)) {
        return Fit::Future;
    }
    let now_held = if start == a.first_seq {
        // The whole window: what it lists is all there is to hold.
        Held {
            through: a.through,
            hash: a.head_hash,
        }
    } else {
        if start > held.through {
            return Fit::Gap(held.through);
        }
        if at_held.is_some_and(|hash| hash != held.hash) {
            return Fit::Fork;
        }
        if a.through >= held.through {
            Held {
                through: a.through,
                hash: a.head_hash,
            }
        } else {
            // An older read than one already taken in (requests race).
            held
        }
    };
    if a.complete {
        Fit::Complete(now_held)
    } else {
        Fit::Part(now_held)
    }
}

impl LedgerCache {
    /// How far this node holds each member's ledger of `group`/`asset`: what
    /// an attestor is asked to list from (`AttestRequest.since`).
    pub fn coverage(&self, group: &GroupName, asset: &str) -> BTreeMap<NodeId, u64> {
        self.windows
            .get(&(group.clone(), asset.to_string()))
            .map(|w| {
                w.coverage
                    .iter()
                    .map(|(n, h)| (n.clone(), h.through))
                    .collect()
            })
            .unwrap_or_default()
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
    /// its member, or a second one from a member. Then at least `needed`
    /// members' ranges must be complete and connect to what this node holds
    /// (or cover the whole window); the others do not count: a part of a
    /// long ledger is kept (catching up), a range that does not continue the
    /// chain held makes the node hold nothing of that member (it is read
    /// whole next time), a range that starts after what is held (a gap) or
    /// lists entries dated after its attestor's clock is left out.
    pub fn check(
        &mut self,
        attestations: &[SignedAttestation],
        members: &MemberKeys,
        rules: AttestationRules<'_>,
    ) -> Result<u128, CheckError> {
        let verified = verify_attestations(attestations, members, &rules)?;
        self.take_in(verified, rules)
    }

    /// [`LedgerCache::check`] on attestations already verified (outside
    /// whatever lock guards the cache: the signatures are the costly part).
    pub fn take_in(
        &mut self,
        verified: Verified<'_>,
        rules: AttestationRules<'_>,
    ) -> Result<u128, CheckError> {
        let attestations = verified.0;
        let subject = rules.subject;
        let key = (subject.group.clone(), subject.asset.to_string());
        let window = self.windows.entry(key).or_default();
        let mut counted = 0;
        let mut catching_up = Vec::new();
        let mut left_out = Vec::new();
        for s in attestations {
            let a = &s.attestation;
            let held = window.coverage.get(&a.node).copied().unwrap_or_default();
            match fit(a, held, rules.skew_secs) {
                Fit::Complete(now_held) | Fit::Part(now_held) => {
                    for e in &a.entries {
                        window.add(e.digest, e.amount, e.at);
                    }
                    window.coverage.insert(a.node.clone(), now_held);
                    if a.complete {
                        counted += 1;
                    } else {
                        catching_up.push(format!(
                            "{}'s (held up to entry {}, more to come)",
                            a.node, now_held.through
                        ));
                    }
                }
                Fit::Fork => {
                    window.coverage.remove(&a.node);
                    catching_up.push(format!(
                        "{}'s (its ledger does not continue what this node held: reading it whole again)",
                        a.node
                    ));
                }
                // Not counted (entries would be missed), but no fault of the
                // attestor's: the read started past what this node holds
                // (requests racing). Reserving again reports where it is.
                Fit::Gap(held) => {
                    let gap = format!(
                        "{} lists its ledger from entry {}, but this node holds it only up to {held} (and its window starts at {}): entries would be missed",
                        a.node, a.from_seq, a.first_seq
                    );
                    catching_up.push(format!("{gap}; read again from {held}"));
                    left_out.push(gap);
                }
                Fit::Future => left_out.push(format!(
                    "{} lists ledger entries dated after its own clock ({}): its clock went back?",
                    a.node, a.at
                )),
            }
        }
        window.expire(
            rules
                .now
                .saturating_sub(rules.window_secs)
                .saturating_sub(rules.skew_secs)
                .saturating_sub(rules.max_age_secs),
        );
        if window.entries.len() > MAX_WINDOW_ENTRIES {
            return Err(CoreError::refused(format!(
                "{} requests in {}'s {} velocity window, more than a signer keeps ({MAX_WINDOW_ENTRIES})",
                window.entries.len(),
                subject.group,
                subject.asset
            ))
            .into());
        }
        if counted < rules.needed {
            if !catching_up.is_empty() {
                return Err(CheckError::CatchingUp(format!(
                    "catching up on the velocity ledgers of {}: reserve again",
                    catching_up.join(", ")
                )));
            }
            return Err(CoreError::refused(format!(
                "velocity attestations: {counted} complete of {} needed; {}",
                rules.needed,
                left_out.join("; ")
            ))
            .into());
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

/// Attestations that passed [`verify_attestations`] (only it makes one).
#[derive(Clone, Copy, Debug)]
pub struct Verified<'a>(&'a [SignedAttestation]);

/// The checks of [`LedgerCache::check`] that need no cache: each attestation
/// from a member, for this request, fresh, over this node's receipt, signed
/// by its member; one per member; at least `needed` members.
pub fn verify_attestations<'a>(
    attestations: &'a [SignedAttestation],
    members: &MemberKeys,
    rules: &AttestationRules<'_>,
) -> Result<Verified<'a>, CoreError> {
    let mut from = BTreeSet::new();
    for s in attestations {
        verify(s, members, rules)?;
        if !from.insert(s.attestation.node.clone()) {
            return Err(CoreError::refused(format!(
                "two velocity attestations from {}",
                s.attestation.node
            )));
        }
    }
    if from.len() < rules.needed {
        return Err(CoreError::refused(format!(
            "velocity attestations from {} members, the group needs {} (n - t + 1) to see every other withdrawal",
            from.len(),
            rules.needed
        )));
    }
    Ok(Verified(attestations))
}

/// One attestation's own checks: from a member, for this request, fresh,
/// over this node's receipt, signed by its member.
fn verify(
    s: &SignedAttestation,
    members: &MemberKeys,
    rules: &AttestationRules<'_>,
) -> Result<(), CoreError> {
    let subject = rules.subject;
    let a = &s.attestation;
    let member_key = members.get(&a.node).ok_or_else(|| {
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
    if !verify_ed25519(member_key, &a.encode(), &s.signature) {
        return Err(CoreError::refused(format!(
            "velocity attestation from {} does not verify under its identity key",
            a.node
        )));
    }
    Ok(())
}
