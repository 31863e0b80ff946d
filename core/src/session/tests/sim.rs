//! The simulated signers the engine's tests drive: real FROST shares, and a
//! behaviour per node (honest, silent at sign, dead, bad share, refusing).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use frost_secp256k1::keys::{IdentifierList, KeyPackage, PublicKeyPackage};
use frost_secp256k1::round1::SigningNonces;
use frost_secp256k1::{Secp256K1Sha256 as S, SigningPackage};

use super::*;

pub(super) type Cmd = Command<S>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Behaviour {
    Honest,
    /// Answers nothing to `Sign` (it committed, then went quiet).
    SilentAtSign,
    /// Answers nothing at all.
    Dead,
    /// Returns a well-formed but wrong share.
    BadShare,
    /// Refuses every request on policy.
    Refuses,
    /// Restarted: answers `Sign` "catching up" this many more times.
    CatchingUp(u8),
}

pub(super) struct SimNode {
    pub(super) key: KeyPackage,
    pub(super) nonces: HashMap<Vec<u8>, SigningNonces>,
    pub(super) behaviour: Behaviour,
    pub(super) next_handle: u32,
}

pub(super) struct Sim {
    pub(super) ids: Vec<NodeId>,
    pub(super) nodes: BTreeMap<NodeId, SimNode>,
    pub(super) pkp: PublicKeyPackage,
    pub(super) t: usize,
    /// Every command the engine issued, in order.
    pub(super) log: Vec<Cmd>,
    pub(super) events: VecDeque<Event<S>>,
    pub(super) hedges: VecDeque<Event<S>>,
}

/// How many entries of each member's ledger simulated `node` says it holds.
pub(super) fn held_by(node: &NodeId) -> u64 {
    node.as_str()[1..].parse::<u64>().expect("n<i>") * 10
}

pub(super) fn node(i: usize) -> NodeId {
    NodeId::new(format!("n{}", i + 1)).expect("valid")
}

impl Sim {
    pub(super) fn new(n: usize, t: usize, behaviours: &[(usize, Behaviour)]) -> Self {
        let (shares, pkp) = frost_secp256k1::keys::generate_with_dealer(
            n as u16,
            t as u16,
            IdentifierList::Default,
            rand::thread_rng(),
        )
        .expect("dealer");
        let ids: Vec<NodeId> = (0..n).map(node).collect();
        let mut nodes = BTreeMap::new();
        for (i, (_, share)) in shares.into_iter().enumerate() {
            let behaviour = behaviours
                .iter()
                .find(|(j, _)| *j == i)
                .map(|(_, b)| *b)
                .unwrap_or(Behaviour::Honest);
            nodes.insert(
                node(i),
                SimNode {
                    key: KeyPackage::try_from(share).expect("key package"),
                    nonces: HashMap::new(),
                    behaviour,
                    next_handle: 0,
                },
            );
        }
        Sim {
            ids,
            nodes,
            pkp,
            t,
            log: Vec::new(),
            events: VecDeque::new(),
            hedges: VecDeque::new(),
        }
    }

    pub(super) fn commit(&mut self, id: &NodeId, count: usize) -> NonceSet<S> {
        let n = self.nodes.get_mut(id).expect("node");
        let mut set = NonceSet {
            handles: Vec::new(),
            commitments: Vec::new(),
        };
        for _ in 0..count {
            let (nonces, commitments) =
                frost_secp256k1::round1::commit(n.key.signing_share(), &mut rand::thread_rng());
            n.next_handle += 1;
            let handle = format!("{id}/{}", n.next_handle).into_bytes();
            n.nonces.insert(handle.clone(), nonces);
            set.handles.push(handle);
            set.commitments.push(commitments);
        }
        set
    }

    pub(super) fn bank(
        &mut self,
        per_node: usize,
        count: usize,
    ) -> BTreeMap<NodeId, Vec<NonceSet<S>>> {
        let ids = self.ids.clone();
        ids.iter()
            .map(|id| {
                let sets = (0..per_node).map(|_| self.commit(id, count)).collect();
                (id.clone(), sets)
            })
            .collect()
    }

    pub(super) fn config(&self, messages: usize, velocity: bool) -> SessionConfig<S> {
        SessionConfig {
            members: self.ids.clone(),
            candidates: self.ids.clone(),
            excluded: 0,
            threshold: self.t,
            messages: (0..messages)
                .map(|i| format!("message {i}").into_bytes())
                .collect(),
            public_key_package: self.pkp.clone(),
            velocity,
            attestations_needed: self.ids.len() - self.t + 1,
            hedge: Duration::from_millis(20),
            latencies: BTreeMap::new(),
            spare_reservations: 0,
        }
    }

    /// What a simulated node answers to a command (nothing if it is quiet).
    pub(super) fn execute(&mut self, command: &Cmd) {
        self.log.push(command.clone());
        match command {
            Command::RequestCommitments { node, count } => {
                let behaviour = self.nodes[node].behaviour;
                match behaviour {
                    Behaviour::Dead => {}
                    Behaviour::Refuses => self.events.push_back(Event::Refused {
                        node: node.clone(),
                        step: Step::Commit,
                        reason: "policy".into(),
                    }),
                    _ => {
                        let set = self.commit(node, *count);
                        self.events.push_back(Event::Committed {
                            node: node.clone(),
                            sets: vec![set],
                        });
                    }
                }
            }
            Command::Reserve { node } => match self.nodes[node].behaviour {
                Behaviour::Dead => {}
                _ => {
                    let n = self.nodes.get_mut(node).expect("node");
                    n.next_handle += 1;
                    self.events.push_back(Event::Reserved {
                        node: node.clone(),
                        reservation: format!("res/{node}/{}", n.next_handle).into_bytes(),
                        receipt: format!("receipt/{node}/{}", n.next_handle).into_bytes(),
                        // Each node holds 10 entries of every ledger per
                        // position: n1 10, n2 20, ...
                        held: self
                            .ids
                            .iter()
                            .map(|m| (m.clone(), held_by(node)))
                            .collect(),
                    })
                }
            },
            Command::Attest {
                node,
                round,
                receipts,
                ..
            } => match self.nodes[node].behaviour {
                Behaviour::Dead => {}
                _ => self.events.push_back(Event::Attested {
                    node: node.clone(),
                    round: *round,
                    attestation: [format!("att/{node}/").into_bytes(), receipts.concat()].concat(),
                }),
            },
            Command::SendPackage {
                session,
                node,
                handles,
                packages,
                ..
            } => {
                let behaviour = self.nodes[node].behaviour;
                match behaviour {
                    Behaviour::Dead | Behaviour::SilentAtSign => {}
                    Behaviour::CatchingUp(left) => {
                        let n = self.nodes.get_mut(node).expect("node");
                        n.behaviour = match left {
                            0 | 1 => Behaviour::Honest,
                            k => Behaviour::CatchingUp(k - 1),
                        };
                        self.events.push_back(Event::CatchingUp {
                            node: node.clone(),
                            session: *session,
                        });
                    }
                    Behaviour::Refuses => self.events.push_back(Event::Refused {
                        node: node.clone(),
                        step: Step::Sign(*session),
                        reason: "policy".into(),
                    }),
                    Behaviour::Honest | Behaviour::BadShare => {
                        let n = self.nodes.get_mut(node).expect("node");
                        // N1: the nonce leaves first; unknown handles are stale.
                        let taken: Option<Vec<_>> =
                            handles.iter().map(|h| n.nonces.remove(h)).collect();
                        let Some(taken) = taken else {
                            self.events.push_back(Event::StaleNonces {
                                node: node.clone(),
                                session: *session,
                            });
                            return;
                        };
                        let shares = packages
                            .iter()
                            .zip(taken)
                            .map(|(p, nonces)| {
                                let package = SigningPackage::deserialize(p).expect("package");
                                let share =
                                    frost_secp256k1::round2::sign(&package, &nonces, &n.key)
                                        .expect("sign");
                                let mut bytes = share.serialize();
                                if behaviour == Behaviour::BadShare {
                                    let last = bytes.len() - 1;
                                    bytes[last] = bytes[last].wrapping_add(1);
                                }
                                bytes
                            })
                            .collect();
                        self.events.push_back(Event::Shares {
                            node: node.clone(),
                            session: *session,
                            shares,
                            elapsed: Duration::from_millis(1),
                        });
                    }
                }
            }
            // Timers fire after everything already on the wire has arrived.
            Command::Later { command, .. } => match &**command {
                Command::Hedge { session } => {
                    self.hedges.push_back(Event::Hedge { session: *session })
                }
                Command::EndGathering => self.hedges.push_back(Event::EndGathering),
                other => self.execute(other),
            },
            _ => {}
        }
    }

    /// Runs until the engine finishes or nothing more happens; returns the
    /// final command (`Done`, `Fail`) or the last `BelowThreshold`.
    pub(super) fn run(&mut self, engine: &mut SigningSession<S>, first: Vec<Cmd>) -> Option<Cmd> {
        let mut last = None;
        let mut pending: VecDeque<Cmd> = first.into();
        for _ in 0..10_000 {
            while let Some(c) = pending.pop_front() {
                if matches!(
                    c,
                    Command::Done { .. } | Command::Fail { .. } | Command::BelowThreshold { .. }
                ) {
                    self.log.push(c.clone());
                    last = Some(c);
                } else {
                    self.execute(&c);
                }
            }
            if engine.is_finished() {
                return last;
            }
            let Some(event) = self.events.pop_front().or_else(|| self.hedges.pop_front()) else {
                return last;
            };
            pending.extend(engine.handle(event));
        }
        panic!("no end");
    }

    pub(super) fn sessions(&self) -> Vec<Vec<NodeId>> {
        self.log
            .iter()
            .filter_map(|c| match c {
                Command::StartSession { signers, .. } => Some(signers.clone()),
                _ => None,
            })
            .collect()
    }

    pub(super) fn excluded(&self) -> Vec<NodeId> {
        self.log
            .iter()
            .filter_map(|c| match c {
                Command::Exclude(e) => Some(e.node.clone()),
                _ => None,
            })
            .collect()
    }

    pub(super) fn assert_done(&self, outcome: &Option<Cmd>, messages: usize) -> Vec<NodeId> {
        let Some(Command::Done {
            signatures,
            signers,
            ..
        }) = outcome
        else {
            panic!("not signed: {outcome:?}; log {:?}", self.log);
        };
        assert_eq!(signatures.len(), messages);
        for (i, sig) in signatures.iter().enumerate() {
            let sig = frost_secp256k1::Signature::deserialize(sig).expect("signature");
            self.pkp
                .verifying_key()
                .verify(format!("message {i}").as_bytes(), &sig)
                .expect("C5: verifies under the group key");
        }
        signers.clone()
    }
}
