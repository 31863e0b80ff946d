//! Executes one request's [`SigningSession`] (the pure engine in
//! `permafrost_core::session`): every command becomes a call to a node, a
//! timer, a bank operation or an exclusion, and every answer goes back in as
//! an event. Deadlines here only turn a silent node into an event; the engine
//! never waits for one while `t` others are ready (ROAST).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use frost_core::keys::PublicKeyPackage;
use frost_core::round1::SigningCommitments;
use frost_core::Ciphersuite;
use frost_secp256k1::Secp256K1Sha256;
use futures::stream::{FuturesUnordered, StreamExt};
use futures::FutureExt;
use permafrost_core::session::{
    Command, Event, FailReason, NonceSet, SessionConfig, SigningSession, Step,
};
use permafrost_core::signing::taproot_public_key_package;
use permafrost_core::taproot::Scheme;
use permafrost_core::{unix_now, NodeId};
use permafrost_proto as pb;
use tonic::Code;
use tracing::{debug, warn};

use super::candidates::{candidates, spare_reservations, Candidates};
use crate::store::{Exclusion, GroupRecord};
use crate::Coordinator;

/// Longest wait for a round-1 style answer (commitments, reservation,
/// attestation): cheap calls, and a member that misses this is replaced by
/// another (one wave per missing member), so "below threshold" under a
/// partition is known within two of these plus one health probe.
const ROUND1_DEADLINE: Duration = Duration::from_millis(1500);
/// Longest wait for a session slot on a signer before trying again.
const SLOT_WAIT: Duration = Duration::from_secs(10);
/// Velocity-limited requests of one group signing at once. Reservations are
/// made before the read, so requests that reserve together all see each
/// other; near the limit, many at once would all be refused where a few at a
/// time sign up to it. A liveness choice only: every node checks the limit
/// itself whatever the coordinator does.
const VELOCITY_CONCURRENCY: usize = 4;

/// What the signers are asked to sign.
#[derive(Clone, Debug)]
pub enum Target {
    /// A custody-signed withdrawal with its approvals (each node re-checks both).
    Withdrawal(Box<pb::SignedWithdrawal>, Vec<pb::Approval>),
    /// The activation test of a new group.
    Activation,
}

/// How one FROST session on a subset ended, for the metrics.
#[derive(Debug)]
pub enum AttemptError {
    /// A node did not answer in time or the link failed.
    Unreachable(NodeId, String),
    /// A node refused on its own checks.
    Refused(NodeId, String),
    /// A node is loaded and asked to be retried after the hint.
    Busy(NodeId, Duration),
    /// These nodes sent invalid shares; evidence attached.
    InvalidShares(Vec<Exclusion>),
    /// The node no longer holds the nonces or reservation named (it restarted).
    Stale(NodeId),
    /// The node holds only part of a member's velocity ledger yet (it
    /// restarted): reserve again and read on.
    CatchingUp(NodeId),
    /// Anything else.
    Other(String),
}

/// How a request's signing ended.
#[derive(Debug)]
pub enum Outcome {
    /// Signed: the signatures (message order) and who signed.
    Signed(Vec<Vec<u8>>, Vec<NodeId>),
    /// Too many members refused on their own checks.
    Refused(String),
    /// Fewer than `t` members could take part.
    BelowThreshold(String),
    /// Anything else.
    Failed(String),
}

/// An [`Outcome`] with what it took.
#[derive(Debug)]
pub struct SessionReport {
    /// How it ended.
    pub outcome: Outcome,
    /// FROST sessions started.
    pub sessions: usize,
    /// Culprits excluded on the way (with evidence, in the store).
    pub culprits: Vec<NodeId>,
}

fn classify(node: &NodeId, status: tonic::Status) -> AttemptError {
    if permafrost_proto::stale::is_stale(&status) {
        return AttemptError::Stale(node.clone());
    }
    if permafrost_proto::stale::is_catching_up(&status) {
        return AttemptError::CatchingUp(node.clone());
    }
    if let Some(hint) = permafrost_proto::backpressure::retry_after(&status) {
        return AttemptError::Busy(node.clone(), hint);
    }
    let msg = format!("{}: {}", node, status.message());
    match status.code() {
        Code::PermissionDenied
        | Code::ResourceExhausted
        | Code::InvalidArgument
        | Code::NotFound
        | Code::AlreadyExists
        | Code::Aborted => AttemptError::Refused(node.clone(), msg),
        _ => AttemptError::Unreachable(node.clone(), format!("{} ({})", msg, status.code())),
    }
}

/// Signs `messages` for `target` on `group`: one FROST session per message
/// per attempt, in the suite of the group's scheme, as many attempts as the
/// engine needs. `skip` are members not to ask (refused before).
pub async fn sign_request(
    coord: &Coordinator,
    group: &GroupRecord,
    request_id: &str,
    messages: &[Vec<u8>],
    target: &Target,
    skip: &BTreeSet<NodeId>,
) -> Result<SessionReport, String> {
    let found = candidates(coord, group, skip, request_id)?;
    let t = usize::from(group.threshold);
    if found.ordered.len() < t {
        return Ok(SessionReport {
            outcome: Outcome::BelowThreshold(format!(
                "below threshold: {} of {t} reachable",
                found.ordered.len()
            )),
            sessions: 0,
            culprits: Vec::new(),
        });
    }
    let pkp = PublicKeyPackage::<Secp256K1Sha256>::deserialize(&group.public_key_package)
        .map_err(|e| format!("stored public key package: {e}"))?;
    let run = Run {
        coord,
        group,
        request_id,
        messages,
        target,
    };
    match coord.scheme_of(&group.name).0 {
        Scheme::Message => run.go(pkp, found).await,
        Scheme::Taproot => {
            let pkp = taproot_public_key_package(&pkp).map_err(|e| e.to_string())?;
            run.go(pkp, found).await
        }
    }
}

struct Run<'a> {
    coord: &'a Coordinator,
    group: &'a GroupRecord,
    request_id: &'a str,
    messages: &'a [Vec<u8>],
    target: &'a Target,
}

/// What a pending future yields: an answer, or a timer firing.
enum Wake<C: Ciphersuite> {
    Event(Event<C>),
    Run(Command<C>),
}

type Pending<'a, C> = FuturesUnordered<futures::future::BoxFuture<'a, Wake<C>>>;

fn parse_sets<C: Ciphersuite>(
    nonces: &[pb::NonceCommitment],
    count: usize,
) -> Result<Vec<NonceSet<C>>, String> {
    if nonces.len() != count {
        return Err(format!("{} commitments for {count} sessions", nonces.len()));
    }
    let mut set = NonceSet {
        handles: Vec::with_capacity(count),
        commitments: Vec::with_capacity(count),
    };
    for n in nonces {
        set.commitments.push(
            SigningCommitments::<C>::deserialize(&n.commitments)
                .map_err(|e| format!("malformed commitments: {e}"))?,
        );
        set.handles.push(n.handle.clone());
    }
    Ok(vec![set])
}

impl<'a> Run<'a> {
    fn withdrawal(&self) -> Option<&pb::SignedWithdrawal> {
        match self.target {
            Target::Withdrawal(w, _) => Some(w),
            Target::Activation => None,
        }
    }

    /// Whether group-wide velocity applies, by the coordinator's reading of
    /// the policy (each node decides for itself again).
    fn velocity(&self) -> bool {
        let Some(w) = self.withdrawal() else {
            return false;
        };
        let asset = w.request.as_ref().map(|r| r.asset.as_str()).unwrap_or("");
        permafrost_core::velocity::group_wide_check_needed(
            self.coord
                .policy
                .group(&self.group.name)
                .and_then(|g| g.assets.get(asset)),
        )
    }

    async fn go<C: Ciphersuite>(
        &self,
        pkp: PublicKeyPackage<C>,
        found: Candidates,
    ) -> Result<SessionReport, String> {
        let coord = self.coord;
        let group = self.group;
        let t = usize::from(group.threshold);
        let spare = spare_reservations(&found, t);
        let ordered = found.ordered;
        let count = self.messages.len();
        let velocity = self.velocity();
        let counted = group.velocity_members(permafrost_core::unix_now());
        let needed = permafrost_core::velocity::attestations_needed(counted, t);
        let active = group.active_members().len();
        if velocity && needed > active {
            // Fail closed, and say why: withdrawals signed before a removal
            // may be remembered only by members that are gone.
            return Ok(SessionReport {
                outcome: Outcome::BelowThreshold(format!(
                    "the group-wide velocity read needs {needed} attestations but {} has {active} \
                     active members: a member was removed less than 24 h ago; withdrawals under \
                     a daily limit wait until then",
                    group.name
                )),
                sessions: 0,
                culprits: Vec::new(),
            });
        }
        let config = SessionConfig {
            members: group.members.clone(),
            candidates: ordered.clone(),
            excluded: found.out,
            threshold: t,
            messages: self.messages.to_vec(),
            public_key_package: pkp,
            velocity,
            attestations_needed: needed,
            hedge: found.hedge,
            spare_reservations: spare,
            latencies: found.latencies.clone(),
        };
        let _gate = match config.velocity {
            true => {
                let gate = coord
                    .velocity_gates
                    .lock()
                    .map_err(|_| "velocity gates lock poisoned".to_string())?
                    .entry(group.name.clone())
                    .or_insert_with(|| {
                        std::sync::Arc::new(tokio::sync::Semaphore::new(VELOCITY_CONCURRENCY))
                    })
                    .clone();
                Some(
                    gate.acquire_owned()
                        .await
                        .map_err(|_| "coordinator shutting down".to_string())?,
                )
            }
            false => None,
        };
        let mut banked = BTreeMap::new();
        for node in &ordered {
            if let Some(set) = super::bank::withdraw::<C>(coord, &group.name, node, count) {
                coord.metrics.nonce_set("bank");
                banked.insert(node.clone(), vec![set]);
            }
        }
        let (mut engine, first) = SigningSession::start(config, banked)?;
        let mut pending: Pending<'_, C> = FuturesUnordered::new();
        let mut queue: std::collections::VecDeque<Command<C>> = first.into();
        let mut culprits = Vec::new();
        let started = Instant::now();
        loop {
            while let Some(command) = queue.pop_front() {
                if let Some(outcome) = self.execute(command, &mut pending, &mut culprits).await? {
                    debug!(
                        request = self.request_id,
                        sessions = engine.sessions_started(),
                        elapsed_us = started.elapsed().as_micros() as u64,
                        "signing ended"
                    );
                    return Ok(SessionReport {
                        outcome,
                        sessions: engine.sessions_started(),
                        culprits,
                    });
                }
            }
            let Some(wake) = pending.next().await else {
                return Ok(SessionReport {
                    outcome: Outcome::Failed("the signing engine stalled".into()),
                    sessions: engine.sessions_started(),
                    culprits,
                });
            };
            match wake {
                Wake::Event(event) => {
                    self.record_metrics(&event);
                    queue.extend(engine.handle(event));
                }
                Wake::Run(command) => queue.push_back(command),
            }
        }
    }

    fn record_metrics<C: Ciphersuite>(&self, event: &Event<C>) {
        let m = &self.coord.metrics;
        match event {
            Event::Silent {
                node,
                step: Step::Sign(_),
                error,
            } => m.attempt::<()>(&Err(AttemptError::Unreachable(node.clone(), error.clone()))),
            Event::Refused {
                node,
                step: Step::Sign(_),
                reason,
            } => m.attempt::<()>(&Err(AttemptError::Refused(node.clone(), reason.clone()))),
            Event::Busy {
                node, retry_after, ..
            } => m.attempt::<()>(&Err(AttemptError::Busy(node.clone(), *retry_after))),
            Event::StaleNonces { node, .. } => {
                m.attempt::<()>(&Err(AttemptError::Stale(node.clone())))
            }
            _ => {}
        }
    }

    /// Runs one command; `Some` once the engine has said how it ended.
    async fn execute<'s, C: Ciphersuite>(
        &'s self,
        command: Command<C>,
        pending: &mut Pending<'s, C>,
        culprits: &mut Vec<NodeId>,
    ) -> Result<Option<Outcome>, String> {
        let coord = self.coord;
        let group = self.group;
        match command {
            Command::RequestCommitments { node, count } => {
                if let Some(set) = super::bank::withdraw::<C>(coord, &group.name, &node, count) {
                    coord.metrics.nonce_set("bank");
                    pending.push(
                        futures::future::ready(Wake::Event(Event::Committed {
                            node,
                            sets: vec![set],
                        }))
                        .boxed(),
                    );
                } else {
                    coord.metrics.nonce_set("fresh");
                    pending.push(self.commit(node, count).boxed());
                }
            }
            Command::Reserve { node } => pending.push(self.reserve(node).boxed()),
            Command::Attest {
                node,
                round,
                receipts,
                since,
            } => pending.push(self.attest(node, round, receipts, since).boxed()),
            Command::StartSession { session, signers } => {
                debug!(request = self.request_id, session, signers = ?signers, "session started");
            }
            Command::SendPackage {
                session,
                node,
                handles,
                packages,
                attestations,
                reservation,
            } => pending.push(
                self.sign(session, node, handles, packages, attestations, reservation)
                    .boxed(),
            ),
            Command::Hedge { session } => {
                pending.push(futures::future::ready(Wake::Event(Event::Hedge { session })).boxed())
            }
            Command::EndGathering => {
                pending.push(futures::future::ready(Wake::Event(Event::EndGathering)).boxed())
            }
            Command::ForgetBank { node } => {
                warn!(node = %node, "node lost the nonces it issued (restarted?); its bank is void, asking afresh");
                super::bank::forget(coord, &node);
            }
            Command::Exclude(ev) if matches!(self.target, Target::Activation) => {
                // A group not yet active has nothing to exclude from: its
                // activation fails instead, naming the culprit.
                warn!(group = %group.name, culprit = %ev.node, "invalid share in the activation test");
                culprits.push(ev.node);
            }
            Command::Exclude(ev) => {
                let ev = Exclusion {
                    v: 1,
                    group: group.name.clone(),
                    node: ev.node,
                    request_id: self.request_id.to_string(),
                    share: hex::encode(&ev.share),
                    signing_package: hex::encode(&ev.signing_package),
                    at: unix_now(),
                };
                warn!(request = self.request_id, culprit = %ev.node, group = %ev.group, "invalid signature share; member excluded from the group until an operator clears it");
                coord
                    .metrics
                    .attempt::<()>(&Err(AttemptError::InvalidShares(vec![ev.clone()])));
                coord.audit.append(
                    "culprit_excluded",
                    serde_json::json!({"request": self.request_id, "group": ev.group.as_str(), "node": ev.node.as_str(), "share": ev.share}),
                )
                .map_err(|e| format!("audit log: {e}; stopping here, the request resumes when the log is writable"))?;
                coord.store.exclude(&ev).await.map_err(|e| e.to_string())?;
                culprits.push(ev.node);
            }
            Command::Later { after, command } => pending.push(
                async move {
                    tokio::time::sleep(after).await;
                    Wake::Run(*command)
                }
                .boxed(),
            ),
            Command::BelowThreshold { responsive, needed } => {
                return Ok(Some(Outcome::BelowThreshold(format!(
                    "below threshold: {responsive} of {needed} reachable"
                ))))
            }
            Command::Done {
                signatures,
                signers,
                unused,
            } => {
                coord.metrics.attempt::<()>(&Ok(()));
                for (node, set) in unused {
                    super::bank::put_back(coord, &group.name, &node, set);
                }
                return Ok(Some(Outcome::Signed(signatures, signers)));
            }
            Command::Fail { reason, detail } => {
                return Ok(Some(match reason {
                    FailReason::RefusedBySigners => Outcome::Refused(detail),
                    _ => Outcome::Failed(detail),
                }))
            }
        }
        Ok(None)
    }

    /// Waits for a session slot on `node` (so queueing behind other requests
    /// never looks like a dead node), then runs `call` under `deadline`.
    async fn call<T, F>(
        &self,
        node: &NodeId,
        deadline: Duration,
        call: impl FnOnce(pb::signer_node_client::SignerNodeClient<tonic::transport::Channel>) -> F,
    ) -> Result<T, AttemptError>
    where
        F: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let member = self
            .coord
            .members
            .get(node)
            .ok_or_else(|| AttemptError::Other(format!("{node} is not in the manifest")))?;
        let _slot =
            match tokio::time::timeout(SLOT_WAIT, member.slots.clone().acquire_owned()).await {
                Ok(Ok(permit)) => permit,
                Ok(Err(_)) => return Err(AttemptError::Other("coordinator shutting down".into())),
                Err(_) => return Err(AttemptError::Busy(node.clone(), Duration::from_millis(50))),
            };
        let started = Instant::now();
        match tokio::time::timeout(deadline, call(member.client.clone())).await {
            Ok(Ok(resp)) => {
                self.coord.members.record(node, Ok(started.elapsed()), None);
                Ok(resp.into_inner())
            }
            Ok(Err(status)) => {
                if permafrost_proto::stale::is_out_of_step(&status) {
                    crate::recovery::flag_out_of_step(self.coord, &self.group.name);
                }
                Err(classify(node, status))
            }
            Err(_) => Err(AttemptError::Unreachable(
                node.clone(),
                format!("{node}: deadline exceeded"),
            )),
        }
    }

    fn failed<C: Ciphersuite>(&self, node: NodeId, step: Step, e: AttemptError) -> Wake<C> {
        Wake::Event(match e {
            AttemptError::Busy(_, retry_after) => Event::Busy {
                node,
                step,
                retry_after,
            },
            AttemptError::Refused(_, reason) => Event::Refused { node, step, reason },
            AttemptError::Unreachable(_, error) => {
                self.coord.members.record(&node, Err(error.clone()), None);
                Event::Silent { node, step, error }
            }
            AttemptError::InvalidShares(_)
            | AttemptError::Stale(_)
            | AttemptError::CatchingUp(_)
            | AttemptError::Other(_) => Event::Silent {
                node,
                step,
                error: format!("{e:?}"),
            },
        })
    }

    fn round1_deadline(&self) -> Duration {
        self.coord.config.round_timeout().min(ROUND1_DEADLINE)
    }

    async fn commit<C: Ciphersuite>(&self, node: NodeId, count: usize) -> Wake<C> {
        let req = pb::CommitRequest {
            key_group: self.group.name.to_string(),
            count: count as u32,
            withdrawal: None,
            bank: true,
            epoch: 0,
        };
        match self
            .call(&node, self.round1_deadline(), |mut c| async move {
                c.commit(req).await
            })
            .await
        {
            Ok(resp) => match expected_identifier(self.group, &node, resp.identifier)
                .and_then(|_| parse_sets::<C>(&resp.nonces, count))
            {
                Ok(sets) => Wake::Event(Event::Committed { node, sets }),
                Err(reason) => Wake::Event(Event::Refused {
                    node,
                    step: Step::Commit,
                    reason,
                }),
            },
            Err(e) => self.failed(node, Step::Commit, e),
        }
    }

    async fn reserve<C: Ciphersuite>(&self, node: NodeId) -> Wake<C> {
        let req = pb::ReserveRequest {
            key_group: self.group.name.to_string(),
            withdrawal: self.withdrawal().cloned(),
        };
        match self
            .call(&node, self.round1_deadline(), |mut c| async move {
                c.reserve(req).await
            })
            .await
        {
            Ok(resp) if !resp.receipt.is_empty() && resp.reservation.len() == 16 => {
                let held = resp
                    .ledgers_held
                    .into_iter()
                    .filter_map(|(m, n)| Some((NodeId::new(m).ok()?, n)))
                    .collect();
                Wake::Event(Event::Reserved {
                    node,
                    reservation: resp.reservation,
                    receipt: resp.receipt,
                    held,
                })
            }
            Ok(_) => Wake::Event(Event::Refused {
                node,
                step: Step::Reserve,
                reason: "sent no reservation receipt".into(),
            }),
            Err(e) => self.failed(node, Step::Reserve, e),
        }
    }

    async fn attest<C: Ciphersuite>(
        &self,
        node: NodeId,
        round: u32,
        receipts: Vec<Vec<u8>>,
        since: u64,
    ) -> Wake<C> {
        let req = pb::AttestRequest {
            key_group: self.group.name.to_string(),
            withdrawal: self.withdrawal().cloned(),
            receipts,
            since,
        };
        match self
            .call(&node, self.round1_deadline(), |mut c| async move {
                c.attest(req).await
            })
            .await
        {
            Ok(resp) => Wake::Event(Event::Attested {
                node,
                round,
                attestation: resp.attestation,
            }),
            Err(e) => self.failed(node, Step::Attest(round), e),
        }
    }

    async fn sign<C: Ciphersuite>(
        &self,
        session: u32,
        node: NodeId,
        handles: Vec<Vec<u8>>,
        packages: Vec<Vec<u8>>,
        attestations: Vec<Vec<u8>>,
        reservation: Vec<u8>,
    ) -> Wake<C> {
        let (target, approvals) = match self.target {
            Target::Withdrawal(w, a) => (
                pb::sign_request::Target::Withdrawal((**w).clone()),
                a.clone(),
            ),
            Target::Activation => (
                pb::sign_request::Target::Activation(pb::ActivationTest {}),
                Vec::new(),
            ),
        };
        let req = pb::SignRequest {
            key_group: self.group.name.to_string(),
            nonce_handles: handles,
            signing_packages: packages,
            target: Some(target),
            approvals,
            attestations,
            reservation,
            epoch: self.group.epoch,
        };
        let deadline = self.coord.config.round_timeout();
        let sent = std::time::Instant::now();
        match self
            .call(&node, deadline, |mut c| async move { c.sign(req).await })
            .await
        {
            Ok(resp) => Wake::Event(Event::Shares {
                node,
                session,
                shares: resp.signature_shares,
                elapsed: sent.elapsed(),
            }),
            Err(AttemptError::Stale(_)) => Wake::Event(Event::StaleNonces { node, session }),
            Err(AttemptError::CatchingUp(_)) => Wake::Event(Event::CatchingUp { node, session }),
            Err(e) => self.failed(node, Step::Sign(session), e),
        }
    }
}

fn expected_identifier(group: &GroupRecord, node: &NodeId, got: u32) -> Result<(), String> {
    let expected = group
        .members
        .iter()
        .position(|m| m == node)
        .map(|i| i as u32 + 1);
    if expected == Some(got) {
        Ok(())
    } else {
        Err("reported a wrong identifier".into())
    }
}
