//! What goes into and comes out of a [`super::SigningSession`]: the events
//! the driver reports, the commands it executes, the evidence against a
//! culprit, and the session's configuration.

use std::collections::BTreeMap;
use std::time::Duration;

use frost_core::keys::PublicKeyPackage;
use frost_core::round1::SigningCommitments;
use frost_core::Ciphersuite;

use crate::NodeId;

/// The hedge of a session is at least its first share's round trip divided
/// by this (see [`SessionConfig::hedge`]).
pub const HEDGE_FRACTION: u32 = 2;

/// One signer's nonces for one session: a handle and a commitment per message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NonceSet<C: Ciphersuite> {
    /// Opaque handles naming the nonces in the node's memory, one per message.
    pub handles: Vec<Vec<u8>>,
    /// Their commitments, in message order.
    pub commitments: Vec<SigningCommitments<C>>,
}

/// Which call an answer belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Fresh commitments (round 1).
    Commit,
    /// A velocity reservation.
    Reserve,
    /// An attestation in round `0`.
    Attest(u32),
    /// Shares for session `0`.
    Sign(u32),
}

/// What happened.
#[derive(Clone, Debug)]
pub enum Event<C: Ciphersuite> {
    /// `node` committed to fresh nonces (or the bank handed some out) for [`Command::RequestCommitments`].
    Committed {
        /// The node.
        node: NodeId,
        /// One set per message, usually exactly one set.
        sets: Vec<NonceSet<C>>,
    },
    /// `node` reserved the request's amount and signed a receipt.
    Reserved {
        /// The node.
        node: NodeId,
        /// Names the reservation in a later `Sign`.
        reservation: Vec<u8>,
        /// The signed receipt attestors verify.
        receipt: Vec<u8>,
        /// How far it holds each member's velocity ledger (entries).
        held: BTreeMap<NodeId, u64>,
    },
    /// `node` attested in round `round`.
    Attested {
        /// The node.
        node: NodeId,
        /// The round.
        round: u32,
        /// The signed attestation.
        attestation: Vec<u8>,
    },
    /// `node` answered session `session` with shares (raw, as received: the evidence).
    Shares {
        /// The node.
        node: NodeId,
        /// The session.
        session: u32,
        /// One per message.
        shares: Vec<Vec<u8>>,
        /// How long after its package was sent the answer came (the driver's
        /// clock): what the hedge of a session still waiting is scaled by.
        elapsed: Duration,
    },
    /// `node` refused on its own checks (policy, custody, binding).
    Refused {
        /// The node.
        node: NodeId,
        /// The call it refused.
        step: Step,
        /// Why, in its words.
        reason: String,
    },
    /// `node` is loaded: ask again after `retry_after` (never a fault).
    Busy {
        /// The node.
        node: NodeId,
        /// The call.
        step: Step,
        /// Its hint.
        retry_after: Duration,
    },
    /// `node` did not answer in time, or the link failed.
    Silent {
        /// The node.
        node: NodeId,
        /// The call.
        step: Step,
        /// What the driver saw.
        error: String,
    },
    /// `node` does not know the nonces (or reservation) it was asked to use:
    /// it restarted, so everything it issued before is void (N2).
    StaleNonces {
        /// The node.
        node: NodeId,
        /// The session that named them.
        session: u32,
    },
    /// `node` could not check session `session`'s attestations yet: it holds
    /// only part of a member's velocity ledger (it restarted) and kept the
    /// part it was sent. It reserves again (its answer says how far it holds
    /// now) and the next attestation round sends the next part.
    CatchingUp {
        /// The node.
        node: NodeId,
        /// The session.
        session: u32,
    },
    /// Session `session` has waited the hedge delay ([`Command::Hedge`]).
    Hedge {
        /// The session.
        session: u32,
    },
    /// The gathering window at the start is over ([`Command::EndGathering`]).
    EndGathering,
    /// The driver's view of `node`'s health changed.
    HealthChanged {
        /// The node.
        node: NodeId,
        /// Reachable and unsealed.
        up: bool,
    },
}

/// What an invalid share proves, kept as evidence (X2: no blame without it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Evidence {
    /// The culprit.
    pub node: NodeId,
    /// The share bytes it sent (all of them when their count was wrong).
    pub share: Vec<u8>,
    /// The serialized signing package it was asked to sign.
    pub signing_package: Vec<u8>,
}

/// Why a request cannot be signed now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailReason {
    /// Too many members refused on their own checks to ever reach `t`.
    RefusedBySigners,
    /// Something the engine cannot work around.
    Other,
}

/// What the driver must do.
#[derive(Clone, Debug)]
pub enum Command<C: Ciphersuite> {
    /// Get `node` one nonce set of `count` commitments: from the bank or by a `Commit` call.
    RequestCommitments {
        /// The node.
        node: NodeId,
        /// Messages (sessions of one request).
        count: usize,
    },
    /// Call `Reserve` on `node`.
    Reserve {
        /// The node.
        node: NodeId,
    },
    /// Call `Attest` on `node` over `receipts` (round `round`).
    Attest {
        /// The node.
        node: NodeId,
        /// The round.
        round: u32,
        /// Every receipt of the round.
        receipts: Vec<Vec<u8>>,
        /// List the node's ledger from this entry on: the least any holder
        /// of a receipt said it holds of it (0: the whole window).
        since: u64,
    },
    /// Session `session` starts on `signers` (bookkeeping: metrics, logs).
    StartSession {
        /// The session.
        session: u32,
        /// Its signers.
        signers: Vec<NodeId>,
    },
    /// Call `Sign` on `node` for session `session`.
    SendPackage {
        /// The session.
        session: u32,
        /// The node.
        node: NodeId,
        /// Its nonce handles, one per message.
        handles: Vec<Vec<u8>>,
        /// Serialized signing packages, one per message.
        packages: Vec<Vec<u8>>,
        /// Attestations of the round the session was formed from.
        attestations: Vec<Vec<u8>>,
        /// The node's reservation (empty when velocity does not apply).
        reservation: Vec<u8>,
    },
    /// Feed [`Event::Hedge`] for `session` (always inside a [`Command::Later`]).
    Hedge {
        /// The session.
        session: u32,
    },
    /// Feed [`Event::EndGathering`] (always inside a [`Command::Later`]).
    EndGathering,
    /// `node`'s nonces issued before are void: forget its bank.
    ForgetBank {
        /// The node.
        node: NodeId,
    },
    /// Exclude the culprit from the group, with its evidence (C1).
    Exclude(Evidence),
    /// Run `command` after `after`.
    Later {
        /// The delay.
        after: Duration,
        /// What then.
        command: Box<Command<C>>,
    },
    /// Fewer than `t` members can take part now; nothing is in flight.
    BelowThreshold {
        /// Members still able to sign.
        responsive: usize,
        /// `t`.
        needed: usize,
    },
    /// Signed: one signature per message, verified under the group key (C5).
    Done {
        /// Serialized signatures, in message order.
        signatures: Vec<Vec<u8>>,
        /// Who signed.
        signers: Vec<NodeId>,
        /// Nonce sets never shown to anyone, which may go back to the bank.
        unused: Vec<(NodeId, NonceSet<C>)>,
    },
    /// Cannot be signed.
    Fail {
        /// Why.
        reason: FailReason,
        /// In words.
        detail: String,
    },
}

/// What the engine needs to know of the request and group.
#[derive(Clone, Debug)]
pub struct SessionConfig<C: Ciphersuite> {
    /// Every member in group order (member `i` has identifier `i + 1`).
    pub members: Vec<NodeId>,
    /// Members that may be asked, most preferred first (the excluded left out).
    pub candidates: Vec<NodeId>,
    /// Members excluded before this request (they count against reaching `t`).
    pub excluded: usize,
    /// `t`.
    pub threshold: usize,
    /// The messages, one FROST session each.
    pub messages: Vec<Vec<u8>>,
    /// The key the signatures verify under (tweaked for taproot).
    pub public_key_package: PublicKeyPackage<C>,
    /// Whether group-wide velocity applies (reserve, attest, then sign).
    pub velocity: bool,
    /// Attestations a round needs (`n − t + 1`).
    pub attestations_needed: usize,
    /// Shortest time a session that has some valid shares waits for the rest
    /// before its answered signers may start another one (ROAST proper is
    /// zero; a little avoids a needless second session when shares arrive
    /// a few milliseconds apart). The wait is the longest of this, half the
    /// time its first share took ([`HEDGE_FRACTION`]: a queue stretches it),
    /// and what is left of 1.25 times the slowest signer's usual round trip
    /// ([`SessionConfig::latencies`]: a far region's share is not given up on
    /// because a near one answered first). A dead session releases them at
    /// once. Also the gathering window.
    pub hedge: Duration,
    /// Each member's usual round trip, where known (health probes).
    pub latencies: BTreeMap<NodeId, Duration>,
    /// Where velocity applies: members beyond `t` that reserve (and are
    /// covered by the first attestation round) from the start, so a session
    /// that loses a signer goes on without another Reserve and Attest. Worth
    /// it where a round trip is long; each spare's reservation holds until
    /// its nonces expire on a node that may never sign (it counts once, by
    /// digest, against other requests).
    pub spare_reservations: usize,
}
