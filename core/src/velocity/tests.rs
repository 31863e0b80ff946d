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

/// An attestation of `node`'s ledger from entry `since`, as a member makes it.
fn attest(
    node: &Node,
    digest: RequestDigest,
    receipts: Vec<[u8; 32]>,
    since: u64,
) -> SignedAttestation {
    let next = node.ledger.len() as u64;
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

/// An attestation of member `i` over `entries`, listed from `from`.
fn part(
    ids: &[NodeIdentity],
    i: usize,
    digest: RequestDigest,
    own: [u8; 32],
    (first, from, through, complete): (u64, u64, u64, bool),
    entries: Vec<LedgerEntry>,
) -> SignedAttestation {
    let a = Attestation {
        node: NodeId::new(format!("n{i}")).expect("id"),
        group: group(),
        asset: "BTC".into(),
        digest,
        at: 1000,
        window_start: 0,
        receipts: vec![own],
        first_seq: first,
        from_seq: from,
        through,
        complete,
        entries,
        reserved: Vec::new(),
    };
    let signature = ids[i].sign(&a.encode()).to_vec();
    SignedAttestation {
        attestation: a,
        signature,
    }
}

#[test]
fn p1_ranges_a_signer_holds_are_not_sent_again_and_a_gap_is_refused() {
    let (ids, members) = identities(2);
    let own = [9u8; 32];
    let e = |seq: u64, d: u8, at: u64| LedgerEntry {
        seq,
        digest: RequestDigest([d; 32]),
        amount: 1,
        at,
    };
    fn rules<'a>(d: &'a RequestDigest, own: &'a [u8; 32]) -> AttestationRules<'a> {
        AttestationRules {
            subject: subject(d),
            own_receipt: own,
            needed: 2,
            now: 1000,
            max_age_secs: 60,
            skew_secs: 5,
            window_secs: 500,
        }
    }
    let mut cache = LedgerCache::default();
    let r1 = RequestDigest([101; 32]);
    // Whole windows first: n0 has entries 0..3 (the same request 2 as n1's 0).
    let a0 = part(
        &ids,
        0,
        r1,
        own,
        (0, 0, 3, true),
        vec![e(0, 1, 900), e(1, 2, 900), e(2, 3, 990)],
    );
    let a1 = part(&ids, 1, r1, own, (0, 0, 1, true), vec![e(0, 2, 900)]);
    assert_eq!(
        cache
            .check(&[a0, a1], &members, rules(&r1, &own))
            .expect("ok"),
        3
    );
    let n = |i: usize| NodeId::new(format!("n{i}")).expect("id");
    assert_eq!(
        cache.coverage(&group(), "BTC"),
        [(n(0), 3), (n(1), 1)].into()
    );
    // Then only what is new: n0's entry 3; the old ones are still counted.
    let r2 = RequestDigest([102; 32]);
    let a0 = part(&ids, 0, r2, own, (0, 3, 4, true), vec![e(3, 4, 995)]);
    let a1 = part(&ids, 1, r2, own, (0, 1, 1, true), vec![]);
    assert_eq!(
        cache
            .check(&[a0, a1], &members, rules(&r2, &own))
            .expect("ok"),
        4
    );
    // A range that starts after what this node holds would miss entries.
    let r3 = RequestDigest([103; 32]);
    let a0 = part(&ids, 0, r3, own, (0, 5, 6, true), vec![e(5, 6, 999)]);
    let a1 = part(&ids, 1, r3, own, (0, 1, 1, true), vec![]);
    let err = cache
        .check(&[a0, a1], &members, rules(&r3, &own))
        .expect_err("gap");
    assert!(err.to_string().contains("entries would be missed"), "{err}");
    // A fresh signer is sent whole windows; one that is a part is kept but
    // proves nothing yet, and the next request's range starts after it.
    let mut fresh = LedgerCache::default();
    let a0 = part(
        &ids,
        0,
        r3,
        own,
        (0, 0, 2, false),
        vec![e(0, 1, 900), e(1, 2, 900)],
    );
    let a1 = part(&ids, 1, r3, own, (0, 0, 1, true), vec![e(0, 2, 900)]);
    let err = fresh
        .check(&[a0, a1], &members, rules(&r3, &own))
        .expect_err("part");
    assert!(err.to_string().contains("catching up"), "{err}");
    assert_eq!(fresh.coverage(&group(), "BTC")[&n(0)], 2);
    let a0 = part(
        &ids,
        0,
        r2,
        own,
        (0, 2, 4, true),
        vec![e(2, 3, 990), e(3, 4, 995)],
    );
    let a1 = part(&ids, 1, r2, own, (0, 1, 1, true), vec![]);
    assert_eq!(
        fresh
            .check(&[a0, a1], &members, rules(&r2, &own))
            .expect("ok"),
        4
    );
    // Entries older than the window (and the skew) leave the count.
    let late = AttestationRules {
        now: 1400,
        ..rules(&r2, &own)
    };
    let a0 = part(&ids, 0, r2, own, (3, 4, 4, true), vec![]);
    let a1 = part(&ids, 1, r2, own, (1, 1, 1, true), vec![]);
    let mut a0 = a0;
    a0.attestation.at = 1400;
    a0.signature = ids[0].sign(&a0.attestation.encode()).to_vec();
    let mut a1 = a1;
    a1.attestation.at = 1400;
    a1.signature = ids[1].sign(&a1.attestation.encode()).to_vec();
    // Window from 1400 - 500 - 5 = 895: all four entries (at 900+) stay.
    assert_eq!(
        fresh
            .check(&[a0.clone(), a1.clone()], &members, late)
            .expect("ok"),
        4
    );
    let later = AttestationRules { now: 1497, ..late };
    let mut b0 = a0;
    b0.attestation.at = 1497;
    b0.signature = ids[0].sign(&b0.attestation.encode()).to_vec();
    let mut b1 = a1;
    b1.attestation.at = 1497;
    b1.signature = ids[1].sign(&b1.attestation.encode()).to_vec();
    // From 992: only entry 3 (at 995).
    assert_eq!(fresh.check(&[b0, b1], &members, later).expect("ok"), 1);
}
