//! Velocity reservations (group-wide P1, `permafrost_core::velocity`): what
//! this node promised, in round 1, to count against the daily limit while the
//! nonces it committed live. Memory only, like the nonces: a restart voids
//! both together, and a reservation that is gone can no longer produce a share.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use permafrost_core::withdrawal::RequestDigest;
use permafrost_core::GroupName;

/// One reservation.
#[derive(Clone, Debug)]
pub struct Reservation {
    /// Key group.
    pub group: GroupName,
    /// Asset.
    pub asset: String,
    /// The request.
    pub digest: RequestDigest,
    /// Amount reserved.
    pub amount: u128,
    /// Hash of the receipt this node signed for it.
    pub receipt_hash: [u8; 32],
    created: Instant,
}

/// Bounded, expiring reservations by round-1 call.
#[derive(Debug)]
pub struct Reservations {
    by_commit: HashMap<[u8; 16], Reservation>,
    max: usize,
    ttl: Duration,
}

impl Reservations {
    /// At most `max` live reservations, each for `ttl` (the nonce lifetime).
    pub fn new(max: usize, ttl: Duration) -> Self {
        Self {
            by_commit: HashMap::new(),
            max,
            ttl,
        }
    }

    /// Records a reservation; `false` when full of live ones.
    #[allow(clippy::too_many_arguments)]
    pub fn insert(
        &mut self,
        commit_id: [u8; 16],
        group: GroupName,
        asset: String,
        digest: RequestDigest,
        amount: u128,
        receipt_hash: [u8; 32],
        now: Instant,
    ) -> bool {
        self.expire(now);
        if self.by_commit.len() >= self.max {
            return false;
        }
        self.by_commit.insert(
            commit_id,
            Reservation {
                group,
                asset,
                digest,
                amount,
                receipt_hash,
                created: now,
            },
        );
        true
    }

    /// Removes and returns a live reservation.
    pub fn take(&mut self, commit_id: &[u8; 16], now: Instant) -> Option<Reservation> {
        let r = self.by_commit.remove(commit_id)?;
        (now.duration_since(r.created) <= self.ttl).then_some(r)
    }

    /// A live reservation, left in place: banked nonces sign a request's later
    /// sessions (ROAST) over the same reservation and attestations; it stays
    /// counted until it expires, and the journal counts the request once.
    pub fn get(&mut self, commit_id: &[u8; 16], now: Instant) -> Option<Reservation> {
        self.expire(now);
        self.by_commit.get(commit_id).cloned()
    }

    /// (digest, amount) of every live reservation of `group`'s `asset`.
    pub fn live(
        &mut self,
        group: &GroupName,
        asset: &str,
        now: Instant,
    ) -> Vec<(RequestDigest, u128)> {
        self.expire(now);
        self.by_commit
            .values()
            .filter(|r| &r.group == group && r.asset == asset)
            .map(|r| (r.digest, r.amount))
            .collect()
    }

    fn expire(&mut self, now: Instant) {
        let ttl = self.ttl;
        self.by_commit
            .retain(|_, r| now.duration_since(r.created) <= ttl);
    }
}
