//! Velocity reservations (group-wide P1, `permafrost_core::velocity`): what
//! this node promised, in round 1, to count against the daily limit while the
//! nonces it committed live. Memory only, like the nonces: a restart voids
//! both together, and a reservation that is gone can no longer produce a share.

use std::collections::{HashMap, VecDeque};
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
    /// reservation is kept only for the request's later sessions, is no
    /// longer listed in attestations, and is the first to go when the table
    /// is full.
    spent: bool,
}

/// Bounded, expiring reservations by round-1 call.
#[derive(Debug)]
pub struct Reservations {
    by_commit: HashMap<[u8; 16], Reservation>,
    /// Commit ids in the order they were made, for expiry without a scan of
    /// the table (ids already taken are skipped when they come up).
    order: VecDeque<(Instant, [u8; 16])>,
    max: usize,
    ttl: Duration,
}

impl Reservations {
    /// At most `max` live reservations, each for `ttl` (the nonce lifetime).
    pub fn new(max: usize, ttl: Duration) -> Self {
        Self {
            by_commit: HashMap::new(),
            order: VecDeque::new(),
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
                .order
                .iter()
                .map(|(_, id)| id)
                .find(|id| self.by_commit.get(*id).is_some_and(|r| r.spent))
                .copied();
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
        self.order.push_back((now, commit_id));
        if self.order.len() > 2 * self.max + 64 {
            // Ids taken early pile up in the order; drop them.
            let map = &self.by_commit;
            self.order.retain(|(_, id)| map.contains_key(id));
        }
        true
    }

    /// Marks a reservation spent: the node signed its request (the journal
    /// step counted it in the ledger).
    pub fn mark_spent(&mut self, commit_id: &[u8; 16]) {
        if let Some(r) = self.by_commit.get_mut(commit_id) {
            r.spent = true;
        }
    }

    fn is_live(&self, r: &Reservation, now: Instant) -> bool {
        now.saturating_duration_since(r.created) <= self.ttl
    }

    /// Removes and returns a live reservation.
    pub fn take(&mut self, commit_id: &[u8; 16], now: Instant) -> Option<Reservation> {
        let r = self.by_commit.remove(commit_id)?;
        self.is_live(&r, now).then_some(r)
    }

    /// A live reservation, left in place: banked nonces sign a request's later
    /// sessions (ROAST) over the same reservation and attestations; it stays
    /// until it expires, and the journal counts the request once.
    pub fn get(&mut self, commit_id: &[u8; 16], now: Instant) -> Option<Reservation> {
        self.expire(now);
        self.by_commit
            .get(commit_id)
            .filter(|r| self.is_live(r, now))
            .cloned()
    }

    /// (digest, amount) of every live reservation of `group`'s `asset` that
    /// is not spent yet: what an attestation lists beside the ledger. A spent
    /// one is in this node's ledger, which the attestation covers, so it is
    /// counted there. Read this before the ledger: a reservation spent after
    /// this read is then listed here, and one spent before it is in the
    /// ledger read after.
    pub fn unspent(
        &mut self,
        group: &GroupName,
        asset: &str,
        now: Instant,
    ) -> Vec<(RequestDigest, u128)> {
        self.expire(now);
        self.by_commit
            .values()
            .filter(|r| !r.spent && self.is_live(r, now))
            .filter(|r| &r.group == group && r.asset == asset)
            .map(|r| (r.digest, r.amount))
            .collect()
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&(created, id)) = self.order.front() {
            if now.saturating_duration_since(created) <= self.ttl {
                break;
            }
            self.order.pop_front();
            if self
                .by_commit
                .get(&id)
                .is_some_and(|r| r.created == created)
            {
                self.by_commit.remove(&id);
            }
        }
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

    #[test]
    fn p1_a_spent_reservation_is_left_to_the_ledger_and_expiry_keeps_order() {
        let now = Instant::now();
        let group = GroupName::new("warm-1").expect("name");
        let mut r = Reservations::new(8, Duration::from_secs(60));
        assert!(add(&mut r, 1, now));
        assert!(add(&mut r, 2, now + Duration::from_secs(30)));
        let listed = |r: &mut Reservations, at| {
            let mut d: Vec<u8> = r
                .unspent(&group, "BTC", at)
                .iter()
                .map(|(d, _)| d.0[0])
                .collect();
            d.sort();
            d
        };
        assert_eq!(listed(&mut r, now), vec![1, 2]);
        // Signed on this node: its ledger holds it, attestations list it there.
        r.mark_spent(&[1; 16]);
        assert_eq!(listed(&mut r, now), vec![2]);
        // Still there for the request's later sessions until it expires.
        assert!(r.get(&[1; 16], now).is_some());
        // 1 expires first, 2 later; a taken id leaves nothing behind.
        assert!(r.get(&[1; 16], now + Duration::from_secs(61)).is_none());
        assert_eq!(listed(&mut r, now + Duration::from_secs(61)), vec![2]);
        assert!(r.take(&[2; 16], now + Duration::from_secs(62)).is_some());
        assert!(listed(&mut r, now + Duration::from_secs(62)).is_empty());
        assert!(r.order.len() <= 1);
    }
}
