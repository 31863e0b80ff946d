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
    /// This node signed the request: its ledger holds the spend, so the
    /// reservation is kept only for the request's later sessions and is the
    /// first to go when the table is full.
    spent: bool,
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
            // A spent reservation holds nothing the ledger does not: the
            // oldest of those makes room.
            let oldest_spent = self
                .by_commit
                .iter()
                .filter(|(_, r)| r.spent)
                .min_by_key(|(_, r)| r.created)
                .map(|(id, _)| *id);
            match oldest_spent {
                Some(id) => {
                    self.by_commit.remove(&id);
                }
                None => return false,
            }
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
                spent: false,
            },
        );
        true
    }

    /// Marks a reservation spent: the node signed its request (the journal
    /// step counted it in the ledger).
    pub fn mark_spent(&mut self, commit_id: &[u8; 16]) {
        if let Some(r) = self.by_commit.get_mut(commit_id) {
            r.spent = true;
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn add(r: &mut Reservations, id: u8, now: Instant) -> bool {
        r.insert(
            [id; 16],
            GroupName::new("warm-1").expect("name"),
            "BTC".into(),
            RequestDigest([id; 32]),
            1,
            [0; 32],
            now,
        )
    }

    #[test]
    fn s4_a_full_table_makes_room_from_spent_reservations_only() {
        let now = Instant::now();
        let mut r = Reservations::new(2, Duration::from_secs(60));
        assert!(add(&mut r, 1, now));
        assert!(add(&mut r, 2, now));
        // Full of live, unspent ones: refused (they still hold the limit).
        assert!(!add(&mut r, 3, now));
        // Once 1 is signed, it makes room; 2 stays.
        r.mark_spent(&[1; 16]);
        assert!(add(&mut r, 3, now));
        assert!(r.get(&[1; 16], now).is_none());
        assert!(r.get(&[2; 16], now).is_some());
        assert!(r.get(&[3; 16], now).is_some());
    }
}
