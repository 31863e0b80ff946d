//! The group-wide velocity check against adversarial schedules (P1): signer
//! subsets rotated, requests interleaved, nodes restarting (losing their
//! reservations with their nonces). Whatever the schedule, what the group
//! signs in the window never exceeds the daily limit.

use std::collections::BTreeMap;

use proptest::prelude::*;
use rand::thread_rng;
use sha2::{Digest, Sha256};

use super::*;
use crate::identity::NodeIdentity;

const CAP: u128 = 10;

struct Node {
    id: NodeId,
    identity: NodeIdentity,
    ledger: Vec<LedgerEntry>,
    /// digest → (amount, receipt hash) of the live reservation.
    reserved: BTreeMap<RequestDigest, (u128, [u8; 32])>,
    /// What it verified of the others' ledgers (lost on restart).
    cache: LedgerCache,
}

/// The chain hashes of `ledger` just before entry `from` and after its last.
fn hashes(ledger: &[LedgerEntry], from: u64) -> ([u8; 32], [u8; 32]) {
    let mut h = [0u8; 32];
    let mut prev = None;
    for e in ledger {
        if e.seq == from {
            prev = Some(h);
        }
        h = chain(&h, e);
    }
    (prev.unwrap_or(h), h)
}

/// An attestation of `node`'s ledger from entry `since`, as a member makes it.
fn attest(
    node: &Node,
    digest: RequestDigest,
    receipts: Vec<[u8; 32]>,
    since: u64,
) -> SignedAttestation {
    let next = node.ledger.len() as u64;
    let (prev_hash, head_hash) = hashes(&node.ledger, since);
    let attestation = Attestation {
        node: node.id.clone(),
        group: group(),
        asset: "BTC".into(),
        digest,
        at: 100,
        window_start: 0,
        receipts,
        first_seq: 0,
        from_seq: since,
        through: next,
        complete: true,
        entries: node.ledger.iter().skip(since as usize).copied().collect(),
        prev_hash,
        head_hash,
        reserved: node
            .reserved
            .iter()
            .filter(|(d, _)| **d != digest)
            .map(|(d, (amount, _))| (*d, *amount))
            .collect(),
    };
    let signature = node.identity.sign(&attestation.encode()).to_vec();
    SignedAttestation {
        attestation,
        signature,
    }
}

struct Request {
    digest: RequestDigest,
    amount: u128,
    signers: Vec<usize>,
    attestors: Vec<usize>,
    receipts: Vec<SignedReceipt>,
    /// What each signer said at its reservation it holds of each member's ledger.
    known: Vec<BTreeMap<NodeId, u64>>,
    attestations: Vec<SignedAttestation>,
    step: usize,
    signed_by: usize,
    dead: bool,
}

fn group() -> GroupName {
    GroupName::new("warm-1").expect("name")
}

fn subject(d: &RequestDigest) -> Subject<'_> {
    // The group name lives for the test: leak one per call is fine in tests.
    let g: &'static GroupName = Box::leak(Box::new(group()));
    Subject {
        group: g,
        asset: "BTC",
        digest: d,
    }
}

fn pick(n: usize, k: usize, seed: u64) -> Vec<usize> {
    let mut all: Vec<usize> = (0..n).collect();
    let mut s = seed;
    for i in (1..n).rev() {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        all.swap(i, (s >> 33) as usize % (i + 1));
    }
    all.truncate(k);
    all
}

/// Runs one schedule; returns the total the group signed.
fn run(n: usize, t: usize, reqs: &[(u128, u64, u64)], schedule: &[(usize, bool)]) -> u128 {
    let mut nodes: Vec<Node> = (0..n)
        .map(|i| Node {
            id: NodeId::new(format!("n{i}")).expect("id"),
            identity: NodeIdentity::generate(&mut thread_rng()),
            ledger: Vec::new(),
            reserved: BTreeMap::new(),
            cache: LedgerCache::default(),
        })
        .collect();
    let members: MemberKeys = nodes
        .iter()
        .map(|n| (n.id.clone(), n.identity.identity_key()))
        .collect();
    let needed = attestations_needed(n, t);
    let mut requests: Vec<Request> = reqs
        .iter()
        .enumerate()
        .map(|(k, (amount, s1, s2))| Request {
            digest: RequestDigest(Sha256::digest(k.to_be_bytes()).into()),
            amount: *amount,
            signers: pick(n, t, *s1),
            attestors: pick(n, needed, *s2),
            receipts: Vec::new(),
            known: Vec::new(),
            attestations: Vec::new(),
            step: 0,
            signed_by: 0,
            dead: false,
        })
        .collect();
    for (k, crash) in schedule {
        let k = k % requests.len();
        if *crash {
            // A node restarts: its reservations go with its nonces, and
            // what it held of the others' ledgers with them.
            let victim = requests[k].signers[0];
            nodes[victim].reserved.clear();
            nodes[victim].cache.clear();
            continue;
        }
        let r = &mut requests[k];
        if r.dead {
            continue;
        }
        let (t_len, a_len) = (r.signers.len(), r.attestors.len());
        if r.step < t_len {
            // Reserve at the next signer.
            let node = &mut nodes[r.signers[r.step]];
            let receipt = Receipt {
                node: node.id.clone(),
                group: group(),
                asset: "BTC".into(),
                digest: r.digest,
                amount: r.amount,
                reserved_at: 0,
                commit_id: [r.step as u8; 16],
            };
            node.reserved.insert(r.digest, (r.amount, receipt.hash()));
            let signature = node.identity.sign(&receipt.encode()).to_vec();
            r.receipts.push(SignedReceipt { receipt, signature });
            r.known.push(node.cache.coverage(&group(), "BTC"));
        } else if r.step < t_len + a_len {
            // Attest at the next attestor, after every receipt.
            let node = &nodes[r.attestors[r.step - t_len]];
            let receipts = verify_receipts(&r.receipts, &members, subject(&r.digest), t)
                .expect("honest receipts verify");
            // Asked from the least any signer holds of this member.
            let since = r
                .known
                .iter()
                .map(|k| k.get(&node.id).copied().unwrap_or(0))
                .min()
                .unwrap_or(0);
            r.attestations.push(attest(node, r.digest, receipts, since));
        } else if r.step < 2 * t_len + a_len {
            // Round 2 at the next signer: its own reservation must still be
            // live (its nonce), then the union check and its own ledger.
            let node = &mut nodes[r.signers[r.step - t_len - a_len]];
            let Some((_, own)) = node.reserved.remove(&r.digest) else {
                r.dead = true;
                continue;
            };
            let rules = AttestationRules {
                subject: subject(&r.digest),
                own_receipt: &own,
                needed,
                now: 100,
                max_age_secs: 60,
                skew_secs: 0,
                window_secs: 1000,
            };
            let others = node
                .cache
                .check(&r.attestations, &members, rules)
                .expect("verifies");
            let own_total: u128 = node.ledger.iter().map(|e| e.amount).sum();
            if others + r.amount > CAP || own_total + r.amount > CAP {
                r.dead = true;
                continue;
            }
            let seq = node.ledger.len() as u64;
            node.ledger.push(LedgerEntry {
                seq,
                digest: r.digest,
                amount: r.amount,
                at: 100,
            });
            r.signed_by += 1;
        }
        r.step += 1;
    }
    requests
        .iter()
        .filter(|r| r.signed_by == r.signers.len())
        .map(|r| r.amount)
        .sum()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// P1 for the group: 2-of-3, 3-of-5 and 2-of-5 (2t ≤ n), subsets rotated,
    /// requests interleaved step by step, restarts anywhere.
    #[test]
    fn p1_group_total_never_exceeds_the_limit_whatever_the_schedule(
        shape in prop_oneof![Just((3usize, 2usize)), Just((5, 3)), Just((5, 2)), Just((4, 2))],
        reqs in proptest::collection::vec((1u128..=6, any::<u64>(), any::<u64>()), 2..8),
        schedule in proptest::collection::vec((0usize..8, proptest::bool::weighted(0.05)), 10..200),
    ) {
        let (n, t) = shape;
        let total = run(n, t, &reqs, &schedule);
        prop_assert!(total <= CAP, "{n}-of... t={t}: the group signed {total} > {CAP}");
    }
}

#[test]
fn p1_rotating_subsets_one_at_a_time_stop_at_the_limit() {
    // Seven sequential 2-unit requests on rotating 2-of-3 subsets: five fit.
    let reqs: Vec<(u128, u64, u64)> = (0..7).map(|k| (2, k as u64, k as u64 + 100)).collect();
    let mut schedule = Vec::new();
    for k in 0..7 {
        for _ in 0..(2 + 2 + 2) {
            schedule.push((k, false));
        }
    }
    assert_eq!(run(3, 2, &reqs, &schedule), CAP);
}

/// `n` members n0, n1, ... with fresh identity keys.
fn identities(n: usize) -> (Vec<NodeIdentity>, MemberKeys) {
    let ids: Vec<NodeIdentity> = (0..n)
        .map(|_| NodeIdentity::generate(&mut thread_rng()))
        .collect();
    let members = ids
        .iter()
        .enumerate()
        .map(|(i, k)| (NodeId::new(format!("n{i}")).expect("id"), k.identity_key()))
        .collect();
    (ids, members)
}

#[test]
fn forged_or_misdirected_attestations_are_refused() {
    let (ids, members) = identities(3);
    let d = RequestDigest([1; 32]);
    let other = RequestDigest([2; 32]);
    let own = [9u8; 32];
    let entry = LedgerEntry {
        seq: 0,
        digest: RequestDigest([3; 32]),
        amount: 4,
        at: 990,
    };
    let att = |i: usize, digest: RequestDigest, at: u64| {
        let a = Attestation {
            node: NodeId::new(format!("n{i}")).expect("id"),
            group: group(),
            asset: "BTC".into(),
            digest,
            at,
            window_start: 0,
            receipts: vec![own],
            first_seq: 0,
            from_seq: 0,
            through: 1,
            complete: true,
            entries: vec![entry],
            prev_hash: [0; 32],
            head_hash: chain(&[0; 32], &entry),
            reserved: vec![(RequestDigest([4; 32]), 5)],
        };
        let signature = ids[i].sign(&a.encode()).to_vec();
        SignedAttestation {
            attestation: a,
            signature,
        }
    };
    let rules = AttestationRules {
        subject: subject(&d),
        own_receipt: &own,
        needed: 2,
        now: 1000,
        max_age_secs: 60,
        skew_secs: 5,
        window_secs: 500,
    };
    let check = |atts: &[SignedAttestation]| LedgerCache::default().check(atts, &members, rules);
    // One entry and one reservation, each counted once however many list it.
    assert_eq!(check(&[att(0, d, 1000), att(1, d, 990)]).expect("ok"), 9);
    let e = check(&[att(0, d, 1000)]).expect_err("too few");
    assert!(e.to_string().contains("needs 2"), "{e}");
    let e = check(&[att(0, d, 1000), att(0, d, 1000)]).expect_err("dup");
    assert!(e.to_string().contains("two velocity attestations"), "{e}");
    let e = check(&[att(0, other, 1000), att(1, d, 1000)]).expect_err("other");
    assert!(e.to_string().contains("another request"), "{e}");
    let e = check(&[att(0, d, 100), att(1, d, 1000)]).expect_err("stale");
    assert!(e.to_string().contains("not fresh"), "{e}");
    let mut forged = att(0, d, 1000);
    forged.attestation.entries.clear();
    let e = check(&[forged, att(1, d, 1000)]).expect_err("forged");
    assert!(e.to_string().contains("does not verify"), "{e}");
    let wire = att(2, d, 1000).to_wire();
    assert_eq!(
        SignedAttestation::from_wire(&wire).expect("round trip"),
        att(2, d, 1000)
    );
}

/// Member `i`'s attestation of its `ledger` (every entry, numbered from 0)
/// from entry `from`, up to `through` (a part when short of the end), with
/// its window starting at entry `first`; dated `at`.
struct Range<'a> {
    ids: &'a [NodeIdentity],
    digest: RequestDigest,
    own: [u8; 32],
    at: u64,
}

impl Range<'_> {
    fn of(
        &self,
        i: usize,
        ledger: &[LedgerEntry],
        first: u64,
        from: u64,
        through: Option<u64>,
    ) -> SignedAttestation {
        let end = ledger.len() as u64;
        let through = through.unwrap_or(end).min(end);
        let start = from.max(first);
        let upto = &ledger[..through as usize];
        let (prev_hash, head_hash) = hashes(upto, start);
        let a = Attestation {
            node: NodeId::new(format!("n{i}")).expect("id"),
            group: group(),
            asset: "BTC".into(),
            digest: self.digest,
            at: self.at,
            window_start: 0,
            receipts: vec![self.own],
            first_seq: first,
            from_seq: from,
            through: through.max(start.min(end)),
            complete: through == end,
            entries: upto.iter().skip(start as usize).copied().collect(),
            prev_hash,
            head_hash,
            reserved: Vec::new(),
        };
        let signature = self.ids[i].sign(&a.encode()).to_vec();
        SignedAttestation {
            attestation: a,
            signature,
        }
    }
}

fn ledger(entries: &[(u8, u64)]) -> Vec<LedgerEntry> {
    entries
        .iter()
        .enumerate()
        .map(|(seq, (d, at))| LedgerEntry {
            seq: seq as u64,
            digest: RequestDigest([*d; 32]),
            amount: 1,
            at: *at,
        })
        .collect()
}

fn rules<'a>(d: &'a RequestDigest, own: &'a [u8; 32], now: u64) -> AttestationRules<'a> {
    AttestationRules {
        subject: subject(d),
        own_receipt: own,
        needed: 2,
        now,
        max_age_secs: 60,
        skew_secs: 5,
        window_secs: 500,
    }
}

#[test]
fn p1_ranges_a_signer_holds_are_not_sent_again_and_a_gap_is_read_again() {
    let (ids, members) = identities(3);
    let own = [9u8; 32];
    let n = |i: usize| NodeId::new(format!("n{i}")).expect("id");
    let at = |d: u8| Range {
        ids: &ids,
        digest: RequestDigest([100 + d; 32]),
        own,
        at: 1000,
    };
    // n0 signed requests 1, 2, 3; n1 signed 2 (the same request 2).
    let mut l0 = ledger(&[(1, 900), (2, 900), (3, 990)]);
    let l1 = ledger(&[(2, 900)]);
    let mut cache = LedgerCache::default();
    // Whole windows first.
    let r = at(1);
    let total = cache
        .check(
            &[r.of(0, &l0, 0, 0, None), r.of(1, &l1, 0, 0, None)],
            &members,
            rules(&r.digest, &own, 1000),
        )
        .expect("ok");
    assert_eq!(total, 3);
    assert_eq!(
        cache.coverage(&group(), "BTC"),
        [(n(0), 3), (n(1), 1)].into()
    );
    // Then only what is new: n0's entry 3; the old ones are still counted.
    l0.extend(
        ledger(&[(1, 0), (1, 0), (1, 0), (4, 995)])
            .into_iter()
            .skip(3)
            .map(|mut e| {
                e.seq = 3;
                e
            }),
    );
    let r = at(2);
    let total = cache
        .check(
            &[r.of(0, &l0, 0, 3, None), r.of(1, &l1, 0, 1, None)],
            &members,
            rules(&r.digest, &own, 1000),
        )
        .expect("ok");
    assert_eq!(total, 4);
    // A range that starts after what this node holds would miss entries:
    // with no other complete range, refused.
    let mut l0b = l0.clone();
    l0b.extend(
        ledger(&[(0, 0), (0, 0), (0, 0), (0, 0), (5, 996), (6, 999)])
            .into_iter()
            .skip(4)
            .enumerate()
            .map(|(k, mut e)| {
                e.seq = 4 + k as u64;
                e
            }),
    );
    let r = at(3);
    let err = cache
        .check(
            &[r.of(0, &l0b, 0, 5, None), r.of(1, &l1, 0, 1, None)],
            &members,
            rules(&r.digest, &own, 1000),
        )
        .expect_err("gap");
    // Not counted; the signer asks to be read from where it is (reserve
    // again), never counts what it does not hold.
    assert!(matches!(err, CheckError::CatchingUp(_)), "{err}");
    assert!(err.to_string().contains("entries would be missed"), "{err}");
    // With a third member's complete range, the gap is only left out.
    let l2 = ledger(&[(5, 996)]);
    cache
        .check(
            &[
                r.of(0, &l0b, 0, 5, None),
                r.of(1, &l1, 0, 1, None),
                r.of(2, &l2, 0, 0, None),
            ],
            &members,
            rules(&r.digest, &own, 1000),
        )
        .expect("two complete ranges are enough");
    assert_eq!(
        cache.coverage(&group(), "BTC")[&n(0)],
        4,
        "the gap moved nothing"
    );
    // A fresh signer is sent whole windows; a part is kept but proves
    // nothing yet (unless enough others are complete).
    let mut fresh = LedgerCache::default();
    let err = fresh
        .check(
            &[r.of(0, &l0, 0, 0, Some(2)), r.of(1, &l1, 0, 0, None)],
            &members,
            rules(&r.digest, &own, 1000),
        )
        .expect_err("part");
    assert!(matches!(err, CheckError::CatchingUp(_)), "{err}");
    assert_eq!(fresh.coverage(&group(), "BTC")[&n(0)], 2);
    let total = fresh
        .check(
            &[r.of(0, &l0, 0, 2, None), r.of(1, &l1, 0, 1, None)],
            &members,
            rules(&r.digest, &own, 1000),
        )
        .expect("caught up");
    assert_eq!(total, 4);
    // A ledger that went back and numbered other requests again (a restored
    // backup) no longer continues the chain held: read whole again.
    let mut rewound = l0[..2].to_vec();
    rewound.extend(
        ledger(&[(0, 0), (0, 0), (7, 997), (8, 998)])
            .into_iter()
            .skip(2),
    );
    let err = fresh
        .check(
            &[r.of(0, &rewound, 0, 4, None), r.of(1, &l1, 0, 1, None)],
            &members,
            rules(&r.digest, &own, 1000),
        )
        .expect_err("fork");
    assert!(err.to_string().contains("does not continue"), "{err}");
    assert!(!fresh.coverage(&group(), "BTC").contains_key(&n(0)));
    let total = fresh
        .check(
            &[r.of(0, &rewound, 0, 0, None), r.of(1, &l1, 0, 1, None)],
            &members,
            rules(&r.digest, &own, 1000),
        )
        .expect("whole again");
    assert_eq!(
        total, 6,
        "requests 7 and 8 are counted, and the earlier ones stay"
    );
    // Entries dated after the attestor's own clock are left out.
    let future = ledger(&[(9, 2000)]);
    let err = LedgerCache::default()
        .check(
            &[r.of(2, &future, 0, 0, None), r.of(1, &l1, 0, 0, None)],
            &members,
            rules(&r.digest, &own, 1000),
        )
        .expect_err("future");
    assert!(err.to_string().contains("after its own clock"), "{err}");
    // Entries older than the window, the skew and an attestation's age
    // leave the count: at 1470 the window starts at 1470 - 500 - 5 - 60 = 905.
    let late = Range { at: 1470, ..at(4) };
    let total = fresh
        .check(
            &[
                late.of(0, &rewound, 0, 4, None),
                late.of(1, &l1, 0, 1, None),
            ],
            &members,
            rules(&late.digest, &own, 1470),
        )
        .expect("ok");
    // From 905: requests 1 and 2 (at 900) are gone; 3, 4 (l0) and 7, 8 stay.
    assert_eq!(total, 4);
}

#[test]
fn p1_a_member_removed_within_the_window_still_counts_in_the_read() {
    let now = 1_000_000;
    let day = crate::policy::VELOCITY_WINDOW_SECS;
    // 2-of-4, n4 removed an hour ago: withdrawals it signed with one other
    // member are still in the window, so a read needs 4 - 2 + 1 = 3 of the
    // three active members, not 3 - 2 + 1 = 2.
    let n = counted_members(3, [Some(now - 3600)], now, 300);
    assert_eq!(attestations_needed(n, 2), 3);
    // A window (and the margin) later it no longer counts.
    let n = counted_members(3, [Some(now - day - 301)], now, 300);
    assert_eq!(attestations_needed(n, 2), 2);
    // Not knowing when: it counts (fail closed).
    assert_eq!(counted_members(3, [None], now, 300), 4);
}
