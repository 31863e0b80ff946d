//! The engine's side of group-wide velocity: keeping `t` reservations,
//! and the attestation rounds read after them (reserve, then attest, then
//! sign; `crate::velocity`).

use super::*;

impl<C: Ciphersuite> SigningSession<C> {
    /// Keeps `t` members (and the configured spares) holding or getting a
    /// reservation, the most preferred first: reservations hold part of the
    /// limit until they expire, so the engine makes no more than it can use,
    /// and one more for each holder that drops out.
    pub(super) fn top_up_reservations(&mut self, out: &mut Vec<Command<C>>) {
        // Spares reserve with the first ones only; later, a holder that drops
        // out is replaced one for one.
        let spare = if self.gathering {
            self.config.spare_reservations
        } else {
            0
        };
        let t = self.config.threshold + spare;
        // A signer still in a session that was hedged or died is a suspect:
        // it may never answer, so it does not count.
        let sessions = &self.sessions;
        let live = |s: &Signer<C>| match s.state {
            State::Available | State::Held(_) => true,
            State::InSession(id) => sessions.get(id as usize).is_some_and(|x| !x.released),
            _ => false,
        };
        // After the gathering window, a reservation still pending does not
        // count either: its node may be silent, and the next one is asked.
        let widen = !self.gathering;
        let mut holding = self
            .signers
            .values()
            .filter(|s| live(s) && (s.reservation.is_some() || (s.reserve_pending && !widen)))
            .count();
        let order = self.config.candidates.clone();
        for node in &order {
            if holding >= t {
                break;
            }
            let Some(s) = self.signers.get_mut(node) else {
                continue;
            };
            if s.state == State::Available && s.reservation.is_none() && !s.reserve_pending {
                s.reserve_pending = true;
                self.outstanding += 1;
                holding += 1;
                out.push(Command::Reserve { node: node.clone() });
                self.request_commitments(node, out);
            }
        }
    }

    pub(super) fn check_round(&mut self, round: u32) {
        let needed = self.config.attestations_needed;
        let Some(r) = self.rounds.get(round as usize) else {
            return;
        };
        if r.got.len() >= needed && self.complete_round.is_none_or(|c| c < round) {
            self.complete_round = Some(round);
        }
    }

    pub(super) fn round_in_flight(&self) -> bool {
        let needed = self.config.attestations_needed;
        self.rounds
            .iter()
            .any(|r| r.got.len() < needed && r.got.len() + r.pending.len() >= needed)
    }

    pub(super) fn is_ready(&self, node: &NodeId) -> bool {
        let Some(s) = self.signers.get(node) else {
            return false;
        };
        if s.state != State::Available || s.sets.is_empty() {
            return false;
        }
        if !self.config.velocity {
            return true;
        }
        match self.complete_round {
            Some(round) => s
                .reservation
                .as_ref()
                .is_some_and(|(id, _)| self.rounds[round as usize].covers.contains(id)),
            None => false,
        }
    }

    /// A new attestation round over every receipt held, when the ready
    /// signers of the last complete round are too few and the receipt
    /// holders who could sign are enough.
    pub(super) fn maybe_attest(&mut self, out: &mut Vec<Command<C>>) {
        let t = self.config.threshold;
        if self.round_in_flight() {
            return;
        }
        let covered_ready = self
            .config
            .candidates
            .iter()
            .filter(|n| self.is_ready(n))
            .count();
        if covered_ready >= t {
            return;
        }
        let holders: Vec<NodeId> = self
            .config
            .candidates
            .iter()
            .filter(|n| {
                self.signers.get(*n).is_some_and(|s| {
                    s.reservation.is_some()
                        && matches!(
                            s.state,
                            State::Available | State::InSession(_) | State::Held(_)
                        )
                })
            })
            .cloned()
            .collect();
        if holders.len() < t {
            return;
        }
        let held: Vec<(Vec<u8>, Vec<u8>)> = holders
            .iter()
            .filter_map(|h| self.signers[h].reservation.clone())
            .collect();
        let uncovered = match self.complete_round {
            Some(c) => held
                .iter()
                .any(|(id, _)| !self.rounds[c as usize].covers.contains(id)),
            None => true,
        };
        if !uncovered {
            return;
        }
        let receipts: Vec<Vec<u8>> = held.iter().map(|(_, r)| r.clone()).collect();
        let attestors: Vec<NodeId> = self
            .config
            .candidates
            .iter()
            .filter(|n| {
                self.signers.get(*n).is_some_and(|s| {
                    matches!(
                        s.state,
                        State::Available | State::InSession(_) | State::Held(_)
                    )
                })
            })
            .cloned()
            .collect();
        if attestors.len() < self.config.attestations_needed {
            return;
        }
        let round = self.rounds.len() as u32;
        // Each attestor lists its ledger from the least any holder holds of
        // it: every signer of the round's sessions then has it all.
        let since: BTreeMap<NodeId, u64> = attestors
            .iter()
            .map(|a| {
                let least = holders
                    .iter()
                    .map(|h| self.signers[h].held.get(a).copied().unwrap_or(0))
                    .min()
                    .unwrap_or(0);
                (a.clone(), least)
            })
            .collect();
        for node in &attestors {
            self.outstanding += 1;
            out.push(Command::Attest {
                node: node.clone(),
                round,
                receipts: receipts.clone(),
                since: since[node],
            });
        }
        self.rounds.push(AttestRound {
            covers: held.into_iter().map(|(id, _)| id).collect(),
            receipts,
            since,
            got: BTreeMap::new(),
            pending: attestors.into_iter().collect(),
        });
    }
}
