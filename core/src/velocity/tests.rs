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
    ledger: BTreeMap<RequestDigest, u128>,
    /// digest → (amount, receipt hash) of the live reservation.
    reserved: BTreeMap<RequestDigest, (u128, [u8; 32])>,
}

struct Request {
    digest: RequestDigest,
    amount: u128,
    signers: Vec<usize>,
    attestors: Vec<usize>,
    receipts: Vec<SignedReceipt>,
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
            ledger: BTreeMap::new(),
            reserved: BTreeMap::new(),
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
            attestations: Vec::new(),
            step: 0,
            signed_by: 0,
            dead: false,
        })
        .collect();
    for (k, crash) in schedule {
        let k = k % requests.len();
        if *crash {
            // A node restarts: its reservations go with its nonces.
            let victim = requests[k].signers[0];
            nodes[victim].reserved.clear();
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
        } else if r.step < t_len + a_len {
            // Attest at the next attestor, after every receipt.
            let node = &nodes[r.attestors[r.step - t_len]];
            let receipts = verify_receipts(&r.receipts, &members, subject(&r.digest), t)
                .expect("honest receipts verify");
            let mut entries: BTreeMap<RequestDigest, u128> = node.ledger.clone();
            for (d, (amount, _)) in &node.reserved {
                entries.entry(*d).or_insert(*amount);
            }
            entries.remove(&r.digest);
            let attestation = Attestation {
                node: node.id.clone(),
                group: group(),
                asset: "BTC".into(),
                digest: r.digest,
                at: 100,
                window_start: 0,
                receipts,
                entries: entries.into_iter().collect(),
            };
            let signature = node.identity.sign(&attestation.encode()).to_vec();
            r.attestations.push(SignedAttestation {
                attestation,
                signature,
            });
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
            };
            let others = attested_total(&r.attestations, &members, rules).expect("verifies");
            let own_total: u128 = node.ledger.values().sum();
            if others + r.amount > CAP || own_total + r.amount > CAP {
                r.dead = true;
                continue;
            }
            node.ledger.insert(r.digest, r.amount);
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

#[test]
fn forged_or_misdirected_attestations_are_refused() {
    let ids: Vec<NodeIdentity> = (0..3)
        .map(|_| NodeIdentity::generate(&mut thread_rng()))
        .collect();
    let members: MemberKeys = ids
        .iter()
        .enumerate()
        .map(|(i, k)| (NodeId::new(format!("n{i}")).expect("id"), k.identity_key()))
        .collect();
    let d = RequestDigest([1; 32]);
    let other = RequestDigest([2; 32]);
    let own = [9u8; 32];
    let att = |i: usize, digest: RequestDigest, at: u64| {
        let a = Attestation {
            node: NodeId::new(format!("n{i}")).expect("id"),
            group: group(),
            asset: "BTC".into(),
            digest,
            at,
            window_start: 0,
            receipts: vec![own],
            entries: vec![(RequestDigest([3; 32]), 4)],
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
    };
    assert_eq!(
        attested_total(&[att(0, d, 1000), att(1, d, 990)], &members, rules).expect("ok"),
        4
    );
    let e = attested_total(&[att(0, d, 1000)], &members, rules).expect_err("too few");
    assert!(e.to_string().contains("needs 2"), "{e}");
    let e = attested_total(&[att(0, d, 1000), att(0, d, 1000)], &members, rules).expect_err("dup");
    assert!(e.to_string().contains("two velocity attestations"), "{e}");
    let e = attested_total(&[att(0, other, 1000), att(1, d, 1000)], &members, rules)
        .expect_err("other");
    assert!(e.to_string().contains("another request"), "{e}");
    let e = attested_total(&[att(0, d, 100), att(1, d, 1000)], &members, rules).expect_err("stale");
    assert!(e.to_string().contains("not fresh"), "{e}");
    let mut forged = att(0, d, 1000);
    forged.attestation.entries.clear();
    let e = attested_total(&[forged, att(1, d, 1000)], &members, rules).expect_err("forged");
    assert!(e.to_string().contains("does not verify"), "{e}");
    let wire = att(2, d, 1000).to_wire();
    assert_eq!(
        SignedAttestation::from_wire(&wire).expect("round trip"),
        att(2, d, 1000)
    );
}
