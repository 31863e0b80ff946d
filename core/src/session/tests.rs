//! The engine against simulated signers holding real FROST shares: every
//! fault is an assertion on the commands it returns.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use frost_secp256k1::{Secp256K1Sha256 as S, SigningPackage};

use super::bank::NonceBank;
use super::*;
use crate::GroupName;

mod sim;
use sim::*;

#[test]
fn banked_nonces_sign_in_one_round() {
    let mut sim = Sim::new(3, 2, &[]);
    let bank = sim.bank(1, 1);
    let (mut engine, first) = SigningSession::start(sim.config(1, false), bank).expect("start");
    // The first thing the engine does is send packages: no commit round.
    assert!(
        matches!(first[0], Command::StartSession { .. }),
        "{first:?}"
    );
    assert_eq!(
        first
            .iter()
            .filter(|c| matches!(c, Command::SendPackage { .. }))
            .count(),
        2
    );
    assert!(!first
        .iter()
        .any(|c| matches!(c, Command::RequestCommitments { .. })));
    let outcome = sim.run(&mut engine, first);
    sim.assert_done(&outcome, 1);
    assert_eq!(sim.sessions().len(), 1);
    // The third member's banked set was never shown: it may go back.
    let Some(Command::Done { unused, .. }) = outcome else {
        unreachable!()
    };
    assert_eq!(unused.len(), 1);
}

#[test]
fn without_a_bank_commitments_come_first_then_one_session() {
    let mut sim = Sim::new(3, 2, &[]);
    let (mut engine, first) =
        SigningSession::start(sim.config(2, false), BTreeMap::new()).expect("start");
    assert_eq!(
        first
            .iter()
            .filter(|c| matches!(c, Command::RequestCommitments { count: 2, .. }))
            .count(),
        3,
        "every candidate is asked, so the first t to answer start"
    );
    let outcome = sim.run(&mut engine, first);
    sim.assert_done(&outcome, 2);
}

#[test]
fn c1_invalid_share_names_the_culprit_with_evidence_and_the_next_session_signs() {
    for liar in 0..3 {
        let mut sim = Sim::new(3, 2, &[(liar, Behaviour::BadShare)]);
        let bank = sim.bank(2, 1);
        let (mut engine, first) = SigningSession::start(sim.config(1, false), bank).expect("start");
        let outcome = sim.run(&mut engine, first);
        let signers = sim.assert_done(&outcome, 1);
        assert!(!signers.contains(&node(liar)));
        let excluded = sim.excluded();
        // The liar is named only if a session included it.
        if sim.sessions().iter().any(|s| s.contains(&node(liar))) {
            assert_eq!(excluded, vec![node(liar)]);
            let evidence = sim
                .log
                .iter()
                .find_map(|c| match c {
                    Command::Exclude(e) => Some(e.clone()),
                    _ => None,
                })
                .expect("evidence");
            assert_eq!(evidence.share.len(), 32);
            assert!(SigningPackage::deserialize(&evidence.signing_package).is_ok());
        } else {
            assert!(excluded.is_empty());
        }
    }
}

#[test]
fn c1_the_share_that_completes_a_session_is_checked_by_the_aggregate() {
    // Whichever signer answers last carries the completing share; for every
    // liar position and message count the liar is named with evidence that
    // does not verify, nobody else is, and the request signs.
    for messages in [1, 2] {
        for liar in 0..3 {
            let mut sim = Sim::new(3, 2, &[(liar, Behaviour::BadShare)]);
            let bank = sim.bank(2, messages);
            let (mut engine, first) =
                SigningSession::start(sim.config(messages, false), bank).expect("start");
            let outcome = sim.run(&mut engine, first);
            sim.assert_done(&outcome, messages);
            let first_session = sim.sessions()[0].clone();
            if !first_session.contains(&node(liar)) {
                continue;
            }
            assert_eq!(
                sim.excluded(),
                vec![node(liar)],
                "liar {liar}, {messages} messages"
            );
            let evidence = sim
                .log
                .iter()
                .find_map(|c| match c {
                    Command::Exclude(e) => Some(e.clone()),
                    _ => None,
                })
                .expect("evidence");
            let package = SigningPackage::deserialize(&evidence.signing_package).expect("package");
            let share = frost_secp256k1::round2::SignatureShare::deserialize(&evidence.share)
                .expect("share");
            let id = frost_secp256k1::Identifier::try_from(liar as u16 + 1).expect("id");
            let vk = sim
                .pkp
                .verifying_shares()
                .get(&id)
                .expect("verifying share");
            assert!(frost_core::verify_signature_share(
                id,
                vk,
                &share,
                &package,
                sim.pkp.verifying_key()
            )
            .is_err());
        }
    }
}

#[test]
fn x2_no_honest_signer_is_ever_blamed() {
    let mut sim = Sim::new(
        5,
        3,
        &[(0, Behaviour::BadShare), (4, Behaviour::SilentAtSign)],
    );
    let bank = sim.bank(3, 1);
    let (mut engine, first) = SigningSession::start(sim.config(1, false), bank).expect("start");
    let outcome = sim.run(&mut engine, first);
    sim.assert_done(&outcome, 1);
    assert!(sim.excluded().iter().all(|n| *n == node(0)));
}

#[test]
fn silent_signer_holds_up_nothing_no_deadline_on_the_critical_path() {
    // n1 commits and then never signs; nobody ever reports it silent.
    let mut sim = Sim::new(3, 2, &[(0, Behaviour::SilentAtSign)]);
    let bank = sim.bank(2, 1);
    let (mut engine, first) = SigningSession::start(sim.config(1, false), bank).expect("start");
    let outcome = sim.run(&mut engine, first);
    let signers = sim.assert_done(&outcome, 1);
    assert!(!signers.contains(&node(0)));
    assert_eq!(sim.sessions().len(), 2, "{:?}", sim.sessions());
    assert!(sim.excluded().is_empty(), "silence is no evidence (X2)");
}

#[test]
fn refusal_by_policy_fails_once_t_cannot_be_reached() {
    let mut sim = Sim::new(3, 2, &[(0, Behaviour::Refuses), (1, Behaviour::Refuses)]);
    let (mut engine, first) =
        SigningSession::start(sim.config(1, false), BTreeMap::new()).expect("start");
    let outcome = sim.run(&mut engine, first);
    match outcome {
        Some(Command::Fail {
            reason: FailReason::RefusedBySigners,
            detail,
        }) => assert!(detail.contains("policy")),
        other => panic!("{other:?}"),
    }
    assert!(sim.excluded().is_empty(), "a refusal is no misbehaviour");
}

#[test]
fn one_refusal_is_worked_around() {
    let mut sim = Sim::new(3, 2, &[(0, Behaviour::Refuses)]);
    let bank = sim.bank(1, 1);
    let (mut engine, first) = SigningSession::start(sim.config(1, false), bank).expect("start");
    let outcome = sim.run(&mut engine, first);
    let signers = sim.assert_done(&outcome, 1);
    assert!(!signers.contains(&node(0)));
}

#[test]
fn n2_node_restart_mid_session_voids_its_bank_and_falls_back_to_two_rounds() {
    let mut sim = Sim::new(3, 2, &[]);
    let bank = sim.bank(2, 1);
    // n1 restarts: everything it issued is gone.
    sim.nodes.get_mut(&node(0)).expect("n1").nonces.clear();
    let (mut engine, first) = SigningSession::start(sim.config(1, false), bank).expect("start");
    let outcome = sim.run(&mut engine, first);
    sim.assert_done(&outcome, 1);
    let forget = sim
        .log
        .iter()
        .position(|c| matches!(c, Command::ForgetBank { node: n } if *n == node(0)))
        .expect("its bank is forgotten");
    assert!(
        sim.log[forget..]
            .iter()
            .any(|c| matches!(c, Command::RequestCommitments { node: n, .. } if *n == node(0))),
        "fresh commitments are asked of it (the two-round path)"
    );
    // Its second banked set was never sent after the restart was seen.
    let stale_sends = sim.log[forget..]
        .iter()
        .filter(|c| matches!(c, Command::SendPackage { node: n, handles, .. } if *n == node(0) && handles[0].ends_with(b"/2")))
        .count();
    assert_eq!(stale_sends, 0);
}

#[test]
fn two_requests_racing_for_one_bank_never_share_a_handle() {
    let mut sim = Sim::new(3, 2, &[]);
    let group = GroupName::new("warm-1").expect("valid");
    let mut bank = NonceBank::new();
    let now = Instant::now();
    // One banked commitment per node: the second request finds the bank empty.
    let banked = sim.bank(1, 1);
    let mut sets_by_handle = BTreeMap::new();
    for (id, sets) in &banked {
        for set in sets {
            let raw = set.commitments[0].serialize().expect("serialize");
            sets_by_handle.insert(set.handles[0].clone(), set.clone());
            bank.deposit(
                &group,
                id,
                vec![(set.handles[0].clone(), raw)],
                now,
                Duration::from_secs(60),
                Duration::from_secs(5),
            );
        }
    }
    let withdraw = |bank: &mut NonceBank| -> BTreeMap<NodeId, Vec<NonceSet<S>>> {
        sim.ids
            .iter()
            .filter_map(|id| {
                let got = bank.withdraw(&group, id, 1, now)?;
                Some((id.clone(), vec![sets_by_handle[&got[0].handle].clone()]))
            })
            .collect()
    };
    let first_bank = withdraw(&mut bank);
    let second_bank = withdraw(&mut bank);
    assert_eq!(first_bank.len(), 3);
    assert!(
        second_bank.is_empty(),
        "each banked commitment goes to one request"
    );
    let (mut a, first_a) = SigningSession::start(sim.config(1, false), first_bank).expect("a");
    let (mut b, first_b) = SigningSession::start(sim.config(1, false), second_bank).expect("b");
    assert!(first_b
        .iter()
        .all(|c| !matches!(c, Command::SendPackage { .. })));
    let done_a = sim.run(&mut a, first_a);
    let log_a = std::mem::take(&mut sim.log);
    let done_b = sim.run(&mut b, first_b);
    sim.assert_done(&done_a, 1);
    sim.assert_done(&done_b, 1);
    let handles = |log: &[Cmd]| -> Vec<Vec<u8>> {
        log.iter()
            .filter_map(|c| match c {
                Command::SendPackage { handles, .. } => Some(handles.clone()),
                _ => None,
            })
            .flatten()
            .collect()
    };
    let (ha, hb) = (handles(&log_a), handles(&sim.log));
    assert!(ha.iter().all(|h| !hb.contains(h)), "N1: no nonce in both");
}

#[test]
fn p1_velocity_reserves_then_attests_then_signs() {
    let mut sim = Sim::new(3, 2, &[]);
    let bank = sim.bank(1, 1);
    let (mut engine, first) = SigningSession::start(sim.config(1, true), bank).expect("start");
    assert!(
        first
            .iter()
            .all(|c| !matches!(c, Command::SendPackage { .. })),
        "no share before the velocity read"
    );
    let outcome = sim.run(&mut engine, first);
    let signers = sim.assert_done(&outcome, 1);
    // Every signer's reservation was written before the read its package carries.
    for c in &sim.log {
        if let Command::SendPackage {
            node,
            attestations,
            reservation,
            ..
        } = c
        {
            assert!(!reservation.is_empty());
            assert!(attestations.len() >= 2, "n - t + 1 attestations");
            let receipt = String::from_utf8_lossy(reservation).replace("res/", "receipt/");
            for a in attestations {
                assert!(
                    String::from_utf8_lossy(a).contains(&receipt),
                    "{node}'s receipt is named by every attestation"
                );
            }
            let first_attest = sim
                .log
                .iter()
                .position(|c| matches!(c, Command::Attest { .. }))
                .expect("attested");
            let reserve = sim
                .log
                .iter()
                .position(|c| matches!(c, Command::Reserve { node: n } if n == node))
                .expect("reserved");
            assert!(reserve < first_attest);
        }
    }
    assert_eq!(signers.len(), 2);
    // Each attestor lists its ledger from the least its round's reservation
    // holders hold of it (n1 holds 10 entries, n2 20: from 10).
    for c in &sim.log {
        if let Command::Attest { since, .. } = c {
            assert_eq!(*since, 10, "{c:?}");
        }
    }
}

#[test]
fn p1_after_a_liar_a_new_attestation_round_covers_the_late_receipt() {
    let mut sim = Sim::new(3, 2, &[(0, Behaviour::BadShare)]);
    let bank = sim.bank(2, 1);
    let (mut engine, first) = SigningSession::start(sim.config(1, true), bank).expect("start");
    let outcome = sim.run(&mut engine, first);
    let signers = sim.assert_done(&outcome, 1);
    assert!(!signers.contains(&node(0)));
}

#[test]
fn roast_bound_holds_with_n_minus_t_liars_and_silent_signers() {
    for (n, t) in [(3usize, 2usize), (5, 3), (10, 7)] {
        let f = n - t;
        for silent in 0..=f {
            let mut faults = Vec::new();
            for i in 0..f {
                let b = if i < silent {
                    Behaviour::SilentAtSign
                } else {
                    Behaviour::BadShare
                };
                faults.push((i, b));
            }
            for velocity in [false, true] {
                let mut sim = Sim::new(n, t, &faults);
                let bank = sim.bank(2, 1);
                let (mut engine, first) =
                    SigningSession::start(sim.config(1, velocity), bank).expect("start");
                let outcome = sim.run(&mut engine, first);
                let signers = sim.assert_done(&outcome, 1);
                assert!(signers
                    .iter()
                    .all(|s| faults.iter().all(|(i, _)| node(*i) != *s)));
                assert!(
                    sim.sessions().len() <= f + 1,
                    "{t}-of-{n}, {silent} silent, {} liars: {} sessions",
                    f - silent,
                    sim.sessions().len()
                );
            }
        }
    }
}

#[test]
fn sessions_run_concurrently_and_a_signer_sits_in_one_at_a_time() {
    // 2-of-5 with three silent-at-sign signers: sessions overlap.
    let faults = [
        (0, Behaviour::SilentAtSign),
        (1, Behaviour::SilentAtSign),
        (2, Behaviour::SilentAtSign),
    ];
    let mut sim = Sim::new(5, 2, &faults);
    let bank = sim.bank(2, 1);
    let (mut engine, first) = SigningSession::start(sim.config(1, false), bank).expect("start");
    let starts = first
        .iter()
        .filter(|c| matches!(c, Command::StartSession { .. }))
        .count();
    assert_eq!(
        starts, 2,
        "two disjoint sessions at once from five ready signers"
    );
    let outcome = sim.run(&mut engine, first);
    sim.assert_done(&outcome, 1);
    let mut open: BTreeMap<NodeId, u32> = BTreeMap::new();
    for c in &sim.log {
        if let Command::SendPackage { node, session, .. } = c {
            if let Some(prev) = open.insert(node.clone(), *session) {
                // A signer is sent a new session only after it answered the last.
                assert!(
                    !faults.iter().any(|(i, _)| self::node(*i) == *node),
                    "{node} was in {prev} and is silent, yet got {session}"
                );
            }
        }
    }
}

#[test]
fn busy_is_retried_later_and_never_a_fault() {
    let mut sim = Sim::new(3, 2, &[]);
    let bank = sim.bank(1, 1);
    let (mut engine, first) = SigningSession::start(sim.config(1, false), bank).expect("start");
    let Some(Command::SendPackage {
        node: busy,
        session,
        ..
    }) = first
        .iter()
        .find(|c| matches!(c, Command::SendPackage { .. }))
        .cloned()
    else {
        panic!("{first:?}")
    };
    let out = engine.handle(Event::Busy {
        node: busy.clone(),
        step: Step::Sign(session),
        retry_after: Duration::from_millis(50),
    });
    match &out[..] {
        [Command::Later { after, command }] => {
            assert_eq!(*after, Duration::from_millis(50));
            assert!(
                matches!(&**command, Command::SendPackage { node, .. } if *node == busy),
                "the same package again"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn below_threshold_is_reported_and_health_brings_a_node_back() {
    let mut sim = Sim::new(3, 2, &[(0, Behaviour::Dead), (1, Behaviour::Dead)]);
    let (mut engine, first) =
        SigningSession::start(sim.config(1, false), BTreeMap::new()).expect("start");
    assert!(
        sim.run(&mut engine, first).is_none(),
        "still waiting on the dead"
    );
    // The driver's deadlines report the two as silent.
    let mut out = engine.handle(Event::Silent {
        node: node(0),
        step: Step::Commit,
        error: "deadline".into(),
    });
    assert!(out.is_empty(), "{out:?}");
    out = engine.handle(Event::Silent {
        node: node(1),
        step: Step::Commit,
        error: "deadline".into(),
    });
    assert!(
        matches!(
            out[..],
            [Command::BelowThreshold {
                responsive: 1,
                needed: 2
            }]
        ),
        "{out:?}"
    );
    // n1 comes back.
    sim.nodes.get_mut(&node(0)).expect("n1").behaviour = Behaviour::Honest;
    let out = engine.handle(Event::HealthChanged {
        node: node(0),
        up: true,
    });
    assert!(matches!(&out[..], [Command::RequestCommitments { node: n, .. }] if *n == node(0)));
    let outcome = sim.run(&mut engine, out);
    sim.assert_done(&outcome, 1);
}

#[test]
fn taproot_shares_verify_on_arrival_too() {
    use frost_secp256k1_tr::Secp256K1Sha256TR as TR;
    let (shares, pkp) = frost_secp256k1_tr::keys::generate_with_dealer(
        3,
        2,
        frost_secp256k1_tr::keys::IdentifierList::Default,
        rand::thread_rng(),
    )
    .expect("dealer");
    use frost_secp256k1_tr::keys::Tweak;
    let pkp = pkp.tweak(None::<&[u8]>);
    let keys: Vec<_> = shares
        .into_values()
        .map(|s| {
            frost_secp256k1_tr::keys::KeyPackage::try_from(s)
                .expect("key package")
                .tweak(None::<&[u8]>)
        })
        .collect();
    let ids: Vec<NodeId> = (0..3).map(node).collect();
    let mut nonces = HashMap::new();
    let banked: BTreeMap<NodeId, Vec<NonceSet<TR>>> = ids
        .iter()
        .zip(&keys)
        .map(|(id, key)| {
            let (n, c) =
                frost_secp256k1_tr::round1::commit(key.signing_share(), &mut rand::thread_rng());
            nonces.insert(id.clone(), n);
            (
                id.clone(),
                vec![NonceSet {
                    handles: vec![id.as_str().as_bytes().to_vec()],
                    commitments: vec![c],
                }],
            )
        })
        .collect();
    let config = SessionConfig {
        members: ids.clone(),
        candidates: ids.clone(),
        excluded: 0,
        threshold: 2,
        messages: vec![[7u8; 32].to_vec()],
        public_key_package: pkp.clone(),
        velocity: false,
        attestations_needed: 2,
        hedge: Duration::ZERO,
        latencies: BTreeMap::new(),
        spare_reservations: 0,
    };
    let (mut engine, first) = SigningSession::start(config, banked).expect("start");
    let mut done = None;
    for c in first {
        if let Command::SendPackage {
            node,
            session,
            packages,
            ..
        } = c
        {
            let i = ids.iter().position(|n| *n == node).expect("member");
            let package =
                frost_secp256k1_tr::SigningPackage::deserialize(&packages[0]).expect("package");
            let share =
                frost_secp256k1_tr::round2::sign(&package, &nonces[&node], &keys[i]).expect("sign");
            for out in engine.handle(Event::Shares {
                node,
                session,
                shares: vec![share.serialize()],
                elapsed: Duration::from_millis(1),
            }) {
                assert!(!matches!(out, Command::Exclude(_)), "valid share blamed");
                if let Command::Done { signatures, .. } = out {
                    done = Some(signatures);
                }
            }
        }
    }
    let sig =
        frost_secp256k1_tr::Signature::deserialize(&done.expect("signed")[0]).expect("signature");
    pkp.verifying_key()
        .verify(&[7u8; 32], &sig)
        .expect("verifies under the tweaked key");
}

#[test]
fn the_first_session_waits_a_moment_for_the_preferred_signers() {
    // n1 is preferred (first candidate) but its commitments arrive last.
    let mut sim = Sim::new(3, 2, &[]);
    let (mut engine, first) =
        SigningSession::start(sim.config(1, false), BTreeMap::new()).expect("start");
    assert!(first
        .iter()
        .any(|c| matches!(c, Command::Later { command, .. } if matches!(**command, Command::EndGathering))));
    let set = |sim: &mut Sim, i| Event::Committed {
        node: node(i),
        sets: vec![sim.commit(&node(i), 1)],
    };
    let e2 = set(&mut sim, 2);
    assert!(engine.handle(e2).is_empty());
    let e1 = set(&mut sim, 1);
    assert!(engine.handle(e1).is_empty(), "still gathering");
    let e0 = set(&mut sim, 0);
    let out = engine.handle(e0);
    let Some(Command::StartSession { signers, .. }) = out.first() else {
        panic!("{out:?}")
    };
    assert_eq!(signers, &vec![node(0), node(1)]);
    // Had n1 stayed silent, the window's end starts the session without it.
    let mut sim = Sim::new(3, 2, &[]);
    let (mut engine, _) =
        SigningSession::start(sim.config(1, false), BTreeMap::new()).expect("start");
    for i in [2, 1] {
        let e = set(&mut sim, i);
        assert!(engine.handle(e).is_empty());
    }
    let out = engine.handle(Event::EndGathering);
    assert!(
        matches!(&out[0], Command::StartSession { signers, .. } if *signers == vec![node(1), node(2)]),
        "{out:?}"
    );
}

/// 2-of-3 with one nonce set banked each (n1 and n2 sign first): n2's
/// answer, as `config` (and `n2_elapsed`) has it, and what the engine says.
fn first_answer_from_n2(
    latencies: BTreeMap<NodeId, Duration>,
    n2_elapsed: Option<Duration>,
) -> Vec<Cmd> {
    let mut sim = Sim::new(3, 2, &[]);
    let bank = sim.bank(1, 1);
    let mut config = sim.config(1, false);
    config.latencies = latencies;
    let (mut engine, first) = SigningSession::start(config, bank).expect("start");
    let to_n2 = first
        .iter()
        .find(|c| matches!(c, Command::SendPackage { node: to, .. } if *to == node(1)))
        .expect("n2 asked to sign")
        .clone();
    sim.execute(&to_n2);
    let mut event = sim.events.pop_front().expect("shares");
    if let (Event::Shares { elapsed, .. }, Some(e)) = (&mut event, n2_elapsed) {
        *elapsed = e;
    }
    engine.handle(event)
}

fn hedge_of(out: &[Cmd]) -> Option<Duration> {
    out.iter().find_map(|c| match c {
        Command::Later { after, command } if matches!(**command, Command::Hedge { .. }) => {
            Some(*after)
        }
        _ => None,
    })
}

#[test]
fn hedge_scales_with_the_first_share_and_the_next_set_is_fetched_ahead() {
    // n2 answers after 300 ms (a long link), n1 not yet.
    let out = first_answer_from_n2(BTreeMap::new(), Some(Duration::from_millis(300)));
    assert_eq!(hedge_of(&out), Some(Duration::from_millis(150)), "{out:?}");
    assert!(
        out.iter()
            .any(|c| matches!(c, Command::RequestCommitments { node: to, .. } if *to == node(1))),
        "next set fetched while the session waits: {out:?}"
    );
    // On a fast link the floor applies and nothing is fetched ahead.
    let out = first_answer_from_n2(BTreeMap::new(), None);
    assert_eq!(hedge_of(&out), Some(Duration::from_millis(20)), "{out:?}");
    assert!(!out
        .iter()
        .any(|c| matches!(c, Command::RequestCommitments { .. })));
    // A far signer (n1, 200 ms usual round trip) is waited for: what is left
    // of 1.25 times its round trip once a near one (n2) answered in 1 ms.
    let out = first_answer_from_n2([(node(0), Duration::from_millis(200))].into(), None);
    assert_eq!(hedge_of(&out), Some(Duration::from_millis(249)), "{out:?}");
}

#[test]
fn a_member_that_signed_validly_is_chosen_before_one_that_has_not() {
    // 3-of-5, n1 silent at sign: the first session {n1, n2, n3} stalls; once
    // it is hedged, n2 and n3 (proven) sign again with n4.
    let mut sim = Sim::new(5, 3, &[(0, Behaviour::SilentAtSign)]);
    let bank = sim.bank(2, 1);
    let (mut engine, first) = SigningSession::start(sim.config(1, false), bank).expect("start");
    let outcome = sim.run(&mut engine, first);
    sim.assert_done(&outcome, 1);
    let sessions = sim.sessions();
    assert_eq!(sessions[0], vec![node(0), node(1), node(2)]);
    assert_eq!(sessions.len(), 2, "{sessions:?}");
    assert_eq!(sessions[1][..2], [node(1), node(2)]);
}

#[test]
fn p1_a_signer_catching_up_reserves_again_and_reads_on_until_it_signs() {
    // 2-of-2 shape inside 2-of-3 with n3 dead: n1 and n2 must sign, and n2
    // restarted: it answers "catching up" twice before it holds the ledgers.
    let mut sim = Sim::new(3, 2, &[(1, Behaviour::CatchingUp(2)), (2, Behaviour::Dead)]);
    let bank = sim.bank(4, 1);
    let (mut engine, first) = SigningSession::start(sim.config(1, true), bank).expect("start");
    let outcome = sim.run(&mut engine, first);
    let signers = sim.assert_done(&outcome, 1);
    assert_eq!(signers, vec![node(0), node(1)]);
    let reserves = sim
        .log
        .iter()
        .filter(|c| matches!(c, Command::Reserve { node: n } if *n == node(1)))
        .count();
    assert_eq!(reserves, 3, "one reservation, then one more per part");
    let rounds = sim
        .log
        .iter()
        .filter(|c| matches!(c, Command::Attest { node: n, .. } if *n == node(0)))
        .count();
    assert!(rounds >= 3, "a new attestation round per part: {rounds}");
    assert!(sim.excluded().is_empty(), "catching up is no fault");
}

#[test]
fn p1_a_spare_reservation_lets_the_next_session_start_without_another_read() {
    // 3-of-5 with a daily limit, n1 silent at sign. With one spare, four
    // members reserve and the first attestation round covers all four, so
    // when n1's session is hedged the next one needs no new Reserve/Attest.
    for (spare, rounds) in [(1usize, 1usize), (0, 2)] {
        let mut sim = Sim::new(5, 3, &[(0, Behaviour::SilentAtSign)]);
        let bank = sim.bank(2, 1);
        let mut config = sim.config(1, true);
        config.spare_reservations = spare;
        let (mut engine, first) = SigningSession::start(config, bank).expect("start");
        let reserves = first
            .iter()
            .filter(|c| matches!(c, Command::Reserve { .. }))
            .count();
        assert_eq!(reserves, 3 + spare);
        let outcome = sim.run(&mut engine, first);
        let signers = sim.assert_done(&outcome, 1);
        assert!(!signers.contains(&node(0)));
        let attest_rounds: BTreeSet<u32> = sim
            .log
            .iter()
            .filter_map(|c| match c {
                Command::Attest { round, .. } => Some(*round),
                _ => None,
            })
            .collect();
        assert_eq!(
            attest_rounds.len(),
            rounds,
            "spare {spare}: {attest_rounds:?}"
        );
    }
}
