//! One request's signing as a pure engine (RFC 9591 §5, run the ROAST way).
//!
//! The coordinator's driver feeds [`Event`]s (commitments, reservations,
//! attestations, shares, refusals, busy, silence, a node that lost its nonces,
//! health changes) into a [`SigningSession`] and executes the [`Command`]s it
//! returns (calls to nodes, timers, exclusions, the result). Nothing here does
//! I/O or reads a clock, so every fault is a unit test on the commands.
//!
//! How it keeps going whatever up to `n − t` signers do (ROAST, Ruffing et
//! al., CCS 2022):
//! - a FROST session starts as soon as `t` signers are *ready* (a nonce set in
//!   hand and, where group-wide velocity applies, a reservation covered by a
//!   complete attestation round); a signer sits in at most one session;
//! - every share is verified the moment it arrives (`verify_signature_share`,
//!   RFC 9591 §5.4; the one that completes a session by the aggregate's own
//!   verification, traced back to it if that fails); a signer whose shares are all valid is ready again with
//!   its next nonce set, one whose share is invalid is named with evidence and
//!   never asked again (C1, X2);
//! - nothing waits on a deadline: a silent signer only holds up the session it
//!   is in, and the next one starts when `t` others are ready. With `f ≤ n − t`
//!   faulty signers a request signs after at most `f + 1` sessions, since every
//!   failed session has a faulty member that never comes back.
//!
//! Group-wide velocity keeps its order (write, then read; `crate::velocity`):
//! reservations at the signers first ([`Command::Reserve`]), then an
//! attestation round over every receipt gathered so far ([`Command::Attest`]),
//! and only then shares. A session draws its signers from one complete round,
//! so every signer finds its own receipt in the attestations it is sent.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use frost_core::round2::SignatureShare;
use frost_core::{Ciphersuite, Identifier, SigningPackage};

use crate::NodeId;

pub mod bank;
mod messages;
mod shares;

/// Catching-up answers one request takes from a signer before it is treated
/// as refusing (each answer moves it one part of a ledger on).
const MAX_CATCH_UPS: usize = 256;
mod velocity;

pub use messages::{
    Command, Event, Evidence, FailReason, NonceSet, SessionConfig, Step, HEDGE_FRACTION,
};

#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    Available,
    InSession(u32),
    /// Answered session `0` with valid shares; waits for it to end or be hedged.
    Held(u32),
    Silent,
    Refused(String),
    Culprit,
}

struct Signer<C: Ciphersuite> {
    identifier: Identifier<C>,
    state: State,
    sets: VecDeque<NonceSet<C>>,
    commit_pending: bool,
    reservation: Option<(Vec<u8>, Vec<u8>)>,
    /// With the reservation: how far it holds each member's ledger.
    held: BTreeMap<NodeId, u64>,
    reserve_pending: bool,
    /// Times it answered that it is still catching up on ledgers.
    catch_ups: usize,
    /// Has answered a session of this request with valid shares: preferred
    /// for the next session over members that have not shown they answer.
    proven: bool,
}

struct AttestRound {
    /// Reservations (by id) whose receipts the round's attestations name.
    covers: BTreeSet<Vec<u8>>,
    receipts: Vec<Vec<u8>>,
    /// Per attestor: the entry its ledger is listed from.
    since: BTreeMap<NodeId, u64>,
    got: BTreeMap<NodeId, Vec<u8>>,
    pending: BTreeSet<NodeId>,
}

struct Session<C: Ciphersuite> {
    signers: Vec<NodeId>,
    packages: Vec<SigningPackage<C>>,
    package_bytes: Vec<Vec<u8>>,
    shares: Vec<BTreeMap<Identifier<C>, SignatureShare<C>>>,
    answered: BTreeSet<NodeId>,
    /// What each signer was sent, to send again after a busy answer.
    sent: BTreeMap<NodeId, Command<C>>,
    dead: bool,
    /// Its answered signers may start other sessions (it is dead, or slow).
    released: bool,
}

/// One request's signing, ROAST-style. See the module docs.
pub struct SigningSession<C: Ciphersuite> {
    config: SessionConfig<C>,
    signers: BTreeMap<NodeId, Signer<C>>,
    rounds: Vec<AttestRound>,
    complete_round: Option<u32>,
    sessions: Vec<Session<C>>,
    outstanding: usize,
    finished: bool,
    /// At the start, while the first answers come in: the preferred signers
    /// get a short chance (the hedge delay) to be part of the first session,
    /// rather than whoever answers first.
    gathering: bool,
}

impl<C: Ciphersuite> std::fmt::Debug for SigningSession<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningSession")
            .field("sessions", &self.sessions.len())
            .field("outstanding", &self.outstanding)
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

impl<C: Ciphersuite> SigningSession<C> {
    /// Starts signing with the nonce sets already banked per node; returns
    /// the first commands (sessions at once where enough are banked and no
    /// velocity round is needed: one-round signing).
    pub fn start(
        config: SessionConfig<C>,
        mut banked: BTreeMap<NodeId, Vec<NonceSet<C>>>,
    ) -> Result<(Self, Vec<Command<C>>), String> {
        if config.messages.is_empty() {
            return Err("nothing to sign".into());
        }
        let mut signers = BTreeMap::new();
        for node in &config.candidates {
            let index = config
                .members
                .iter()
                .position(|m| m == node)
                .ok_or_else(|| format!("{node} is not a member"))?;
            let identifier = u16::try_from(index + 1)
                .ok()
                .and_then(|i| Identifier::<C>::try_from(i).ok())
                .ok_or_else(|| format!("no identifier for member {}", index + 1))?;
            let sets = banked
                .remove(node)
                .unwrap_or_default()
                .into_iter()
                .filter(|s| s.handles.len() == config.messages.len())
                .collect();
            signers.insert(
                node.clone(),
                Signer {
                    identifier,
                    state: State::Available,
                    sets,
                    commit_pending: false,
                    reservation: None,
                    held: BTreeMap::new(),
                    reserve_pending: false,
                    catch_ups: 0,
                    proven: false,
                },
            );
        }
        let mut engine = Self {
            config,
            signers,
            rounds: Vec::new(),
            complete_round: None,
            sessions: Vec::new(),
            outstanding: 0,
            finished: false,
            gathering: true,
        };
        let mut out = Vec::new();
        let candidates = engine.config.candidates.clone();
        for node in &candidates {
            engine.replenish(node, &mut out);
        }
        if engine.config.velocity {
            engine.top_up_reservations(&mut out);
        }
        if engine.outstanding > 0 {
            out.push(Command::Later {
                after: engine.config.hedge,
                command: Box::new(Command::EndGathering),
            });
        }
        engine.progress(&mut out);
        Ok((engine, out))
    }

    /// Whether the engine said `Done` or `Fail`.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Sessions started so far.
    pub fn sessions_started(&self) -> usize {
        self.sessions.len()
    }

    /// Feeds one event; returns what to do next.
    pub fn handle(&mut self, event: Event<C>) -> Vec<Command<C>> {
        let mut out = Vec::new();
        if self.finished {
            return out;
        }
        match event {
            Event::Committed { node, sets } => {
                self.answered();
                let messages = self.config.messages.len();
                if let Some(s) = self.signers.get_mut(&node) {
                    s.commit_pending = false;
                    s.sets
                        .extend(sets.into_iter().filter(|set| set.handles.len() == messages));
                }
            }
            Event::Reserved {
                node,
                reservation,
                receipt,
                held,
            } => {
                self.answered();
                if let Some(s) = self.signers.get_mut(&node) {
                    s.reserve_pending = false;
                    s.reservation = Some((reservation, receipt));
                    s.held = held;
                }
            }
            Event::Attested {
                node,
                round,
                attestation,
            } => {
                self.answered();
                if let Some(r) = self.rounds.get_mut(round as usize) {
                    r.pending.remove(&node);
                    r.got.insert(node, attestation);
                }
                self.check_round(round);
            }
            Event::Shares {
                node,
                session,
                shares,
                elapsed,
            } => {
                self.answered();
                self.on_shares(node, session, shares, elapsed, &mut out);
            }
            Event::Refused { node, step, reason } => {
                self.answered();
                self.clear_pending(&node, step, &mut out);
                self.set_state(&node, State::Refused(reason), &mut out);
            }
            Event::Busy {
                node,
                step,
                retry_after,
            } => {
                // Still outstanding: the same call goes out again later.
                if let Some(command) = self.reissue(&node, step) {
                    out.push(Command::Later {
                        after: retry_after,
                        command: Box::new(command),
                    });
                } else {
                    self.answered();
                    self.clear_pending(&node, step, &mut out);
                    if let (Step::Sign(session), Some(s)) = (step, self.signers.get_mut(&node)) {
                        if s.state == State::InSession(session) {
                            s.state = State::Available;
                        }
                    }
                }
            }
            Event::Silent { node, step, .. } => {
                self.answered();
                self.clear_pending(&node, step, &mut out);
                if let Step::Attest(round) = step {
                    // An attestor that does not answer only fails the round
                    // if too few others can; it may still sign.
                    self.check_round(round);
                }
                self.set_state(&node, State::Silent, &mut out);
            }
            Event::StaleNonces { node, session } => {
                self.answered();
                self.kill_session(session, &mut out);
                if let Some(s) = self.signers.get_mut(&node) {
                    s.sets.clear();
                    // A restart voided its reservation too.
                    s.reservation = None;
                    if s.state == State::InSession(session) {
                        s.state = State::Available;
                    }
                }
                out.push(Command::ForgetBank { node: node.clone() });
                self.replenish(&node, &mut out);
            }
            Event::CatchingUp { node, session } => {
                self.answered();
                self.kill_session(session, &mut out);
                if let Some(s) = self.signers.get_mut(&node) {
                    s.catch_ups += 1;
                    if s.catch_ups > MAX_CATCH_UPS {
                        s.state = State::Refused(format!(
                            "{node} still catching up on the group's velocity ledgers after {MAX_CATCH_UPS} parts"
                        ));
                    } else {
                        // A fresh reservation reports how far it holds now.
                        s.reservation = None;
                        if s.state == State::InSession(session) {
                            s.state = State::Available;
                        }
                    }
                }
                self.replenish(&node, &mut out);
            }
            Event::Hedge { session } => self.release(session, &mut out),
            Event::EndGathering => self.gathering = false,
            Event::HealthChanged { node, up } => {
                if let Some(s) = self.signers.get_mut(&node) {
                    match (&s.state, up) {
                        (State::Silent, true) => {
                            s.state = State::Available;
                            self.replenish(&node, &mut out);
                        }
                        (State::Available, false) => s.state = State::Silent,
                        _ => {}
                    }
                }
            }
        }
        self.progress(&mut out);
        out
    }

    fn answered(&mut self) {
        self.outstanding = self.outstanding.saturating_sub(1);
    }

    fn clear_pending(&mut self, node: &NodeId, step: Step, out: &mut Vec<Command<C>>) {
        match step {
            Step::Commit => {
                if let Some(s) = self.signers.get_mut(node) {
                    s.commit_pending = false;
                }
            }
            Step::Reserve => {
                if let Some(s) = self.signers.get_mut(node) {
                    s.reserve_pending = false;
                }
            }
            Step::Attest(round) => {
                if let Some(r) = self.rounds.get_mut(round as usize) {
                    r.pending.remove(node);
                }
            }
            Step::Sign(session) => self.kill_session(session, out),
        }
    }

    /// The call `step` to `node` again, for a busy answer.
    fn reissue(&self, node: &NodeId, step: Step) -> Option<Command<C>> {
        match step {
            Step::Commit => Some(Command::RequestCommitments {
                node: node.clone(),
                count: self.config.messages.len(),
            }),
            Step::Reserve => Some(Command::Reserve { node: node.clone() }),
            Step::Attest(round) => self.rounds.get(round as usize).map(|r| Command::Attest {
                node: node.clone(),
                round,
                receipts: r.receipts.clone(),
                since: r.since.get(node).copied().unwrap_or(0),
            }),
            // A busy node took no nonce (it refuses before touching its pool).
            Step::Sign(session) => self
                .sessions
                .get(session as usize)
                .filter(|s| !s.dead)
                .and_then(|s| s.sent.get(node).cloned()),
        }
    }

    fn set_state(&mut self, node: &NodeId, state: State, out: &mut Vec<Command<C>>) {
        let Some(s) = self.signers.get_mut(node) else {
            return;
        };
        if let State::InSession(session) = s.state {
            s.state = state;
            self.kill_session(session, out);
        } else if let State::Held(_) = s.state {
            s.state = state;
        } else if s.state != State::Culprit {
            s.state = state;
        }
    }

    /// Session `session` can no longer complete; its other signers stay in it
    /// until they answer (ROAST: one open session per signer).
    fn kill_session(&mut self, session: u32, out: &mut Vec<Command<C>>) {
        if let Some(s) = self.sessions.get_mut(session as usize) {
            s.dead = true;
        }
        self.release(session, out);
    }

    /// Lets the signers of `session` that answered validly start other sessions.
    fn release(&mut self, session: u32, out: &mut Vec<Command<C>>) {
        let Some(s) = self.sessions.get_mut(session as usize) else {
            return;
        };
        s.released = true;
        let held: Vec<NodeId> = self
            .signers
            .iter()
            .filter(|(_, x)| x.state == State::Held(session))
            .map(|(n, _)| n.clone())
            .collect();
        for node in held {
            if let Some(x) = self.signers.get_mut(&node) {
                x.state = State::Available;
            }
            self.replenish(&node, out);
        }
    }

    /// Asks for what `node` lacks to be ready: a nonce set, a reservation.
    fn replenish(&mut self, node: &NodeId, out: &mut Vec<Command<C>>) {
        let velocity = self.config.velocity;
        let count = self.config.messages.len();
        let Some(s) = self.signers.get_mut(node) else {
            return;
        };
        if s.state != State::Available {
            return;
        }
        // Where velocity applies, only members that reserve are asked to
        // commit: they are the ones a session will use.
        let wanted = !velocity || s.reservation.is_some() || s.reserve_pending;
        if wanted && s.sets.is_empty() && !s.commit_pending {
            s.commit_pending = true;
            self.outstanding += 1;
            out.push(Command::RequestCommitments {
                node: node.clone(),
                count,
            });
        }
    }

    /// Starts what can start: attestation rounds, sessions; or says it is stuck.
    fn progress(&mut self, out: &mut Vec<Command<C>>) {
        if self.finished {
            return;
        }
        let t = self.config.threshold;
        let members = self.config.members.len();
        let refused: Vec<String> = self
            .signers
            .values()
            .filter_map(|s| match &s.state {
                State::Refused(r) => Some(r.clone()),
                _ => None,
            })
            .collect();
        let culprits = self
            .signers
            .values()
            .filter(|s| s.state == State::Culprit)
            .count();
        if members.saturating_sub(self.config.excluded + culprits + refused.len()) < t {
            self.finished = true;
            out.push(Command::Fail {
                reason: FailReason::RefusedBySigners,
                detail: format!("refused: {}", refused.join("; ")),
            });
            return;
        }
        if self.config.velocity {
            self.top_up_reservations(out);
        }
        if self.gathering {
            // Over once nothing is outstanding, or every one of the `t`
            // preferred candidates has what it needs or cannot help.
            let velocity = self.config.velocity;
            let preferred = t + if velocity {
                self.config.spare_reservations
            } else {
                0
            };
            let preferred_settled = self.config.candidates.iter().take(preferred).all(|n| {
                self.signers.get(n).is_none_or(|s| {
                    s.state != State::Available
                        || (!s.sets.is_empty() && (!velocity || s.reservation.is_some()))
                })
            });
            if self.outstanding == 0 || preferred_settled {
                self.gathering = false;
            }
        }
        if self.gathering {
            return;
        }
        if self.config.velocity {
            self.maybe_attest(out);
        }
        loop {
            // Members that answered validly already come first: a member
            // that committed may still be silent at signing.
            let mut ready: Vec<NodeId> = self
                .config
                .candidates
                .iter()
                .filter(|n| self.is_ready(n))
                .cloned()
                .collect();
            ready.sort_by_key(|n| !self.signers[n].proven);
            if ready.len() < t {
                break;
            }
            let chosen: Vec<NodeId> = ready.into_iter().take(t).collect();
            if let Err(e) = self.start_session(chosen, out) {
                self.finished = true;
                out.push(Command::Fail {
                    reason: FailReason::Other,
                    detail: e,
                });
                return;
            }
        }
        if self.outstanding == 0 {
            let responsive = self
                .signers
                .values()
                .filter(|s| {
                    matches!(
                        s.state,
                        State::Available | State::InSession(_) | State::Held(_)
                    )
                })
                .count();
            out.push(Command::BelowThreshold {
                responsive,
                needed: t,
            });
        }
    }

    fn start_session(
        &mut self,
        chosen: Vec<NodeId>,
        out: &mut Vec<Command<C>>,
    ) -> Result<(), String> {
        let id = self.sessions.len() as u32;
        let messages = self.config.messages.clone();
        let mut sets = Vec::with_capacity(chosen.len());
        for node in &chosen {
            let s = self
                .signers
                .get_mut(node)
                .ok_or_else(|| format!("{node} is not a candidate"))?;
            let set = s
                .sets
                .pop_front()
                .ok_or_else(|| format!("{node} has no nonce set"))?;
            s.state = State::InSession(id);
            sets.push((node.clone(), s.identifier, set));
        }
        let mut packages = Vec::with_capacity(messages.len());
        for (i, message) in messages.iter().enumerate() {
            let commitments = sets
                .iter()
                .map(|(_, identifier, set)| (*identifier, set.commitments[i]))
                .collect();
            packages.push(SigningPackage::new(commitments, message));
        }
        let package_bytes = packages
            .iter()
            .map(|p| p.serialize().map_err(|e| format!("signing package: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        let attestations: Vec<Vec<u8>> = match (self.config.velocity, self.complete_round) {
            (true, Some(round)) => self.rounds[round as usize].got.values().cloned().collect(),
            _ => Vec::new(),
        };
        out.push(Command::StartSession {
            session: id,
            signers: chosen.clone(),
        });
        let mut sent = BTreeMap::new();
        for (node, _, set) in &sets {
            let reservation = self.signers[node]
                .reservation
                .as_ref()
                .map(|r| r.0.clone())
                .unwrap_or_default();
            self.outstanding += 1;
            let command = Command::SendPackage {
                session: id,
                node: node.clone(),
                handles: set.handles.clone(),
                packages: package_bytes.clone(),
                attestations: attestations.clone(),
                reservation,
            };
            sent.insert(node.clone(), command.clone());
            out.push(command);
        }
        self.sessions.push(Session {
            signers: chosen,
            packages,
            package_bytes,
            shares: vec![BTreeMap::new(); messages.len()],
            answered: BTreeSet::new(),
            sent,
            dead: false,
            released: false,
        });
        Ok(())
    }

    /// Asks `node` for a nonce set, unless it has one or one is on its way.
    pub(super) fn request_commitments(&mut self, node: &NodeId, out: &mut Vec<Command<C>>) {
        let count = self.config.messages.len();
        if let Some(s) = self.signers.get_mut(node) {
            if s.sets.is_empty() && !s.commit_pending {
                s.commit_pending = true;
                self.outstanding += 1;
                out.push(Command::RequestCommitments {
                    node: node.clone(),
                    count,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests;
