//! The in-memory nonce pool (threats N1, N2, N4, N6).
//!
//! Nonces live only here: never serialized, never on disk. The pool is bounded
//! in count and age; a nonce is removed from the pool *before* it is used, so
//! it can sign at most once, and a restart voids every outstanding commitment.
//!
//! Banked nonces (one-round signing) are the same nonces issued ahead of any
//! request for a coordinator's bank: bound to nothing until a `Sign` names
//! them, counted per (coordinator, group) against their own bound, and
//! subject to the same TTL, single use and restart rule.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use frost_core::round1::SigningNonces;
use frost_core::Ciphersuite;
use frost_secp256k1::Secp256K1Sha256;
use frost_secp256k1_tr::Secp256K1Sha256TR;
use permafrost_core::GroupName;
use rand::RngCore;

/// Opaque handle naming one set of nonces.
pub type NonceHandle = [u8; 16];

/// One session's nonces, in the suite of the group's scheme.
pub enum PoolNonces {
    /// FROST(secp256k1, SHA-256): message groups.
    Message(SigningNonces<Secp256K1Sha256>),
    /// FROST(secp256k1, SHA-256-TR): taproot groups.
    Taproot(SigningNonces<Secp256K1Sha256TR>),
}

/// A suite the node signs with, and how its nonces sit in the pool.
pub trait Suite: Ciphersuite {
    /// Into the pool.
    fn wrap(nonces: SigningNonces<Self>) -> PoolNonces;
    /// Out of the pool; `None` if they were made for the other suite.
    fn unwrap(nonces: PoolNonces) -> Option<SigningNonces<Self>>;
}

impl Suite for Secp256K1Sha256 {
    fn wrap(nonces: SigningNonces<Self>) -> PoolNonces {
        PoolNonces::Message(nonces)
    }
    fn unwrap(nonces: PoolNonces) -> Option<SigningNonces<Self>> {
        match nonces {
            PoolNonces::Message(n) => Some(n),
            PoolNonces::Taproot(_) => None,
        }
    }
}

impl Suite for Secp256K1Sha256TR {
    fn wrap(nonces: SigningNonces<Self>) -> PoolNonces {
        PoolNonces::Taproot(nonces)
    }
    fn unwrap(nonces: PoolNonces) -> Option<SigningNonces<Self>> {
        match nonces {
            PoolNonces::Taproot(n) => Some(n),
            PoolNonces::Message(_) => None,
        }
    }
}

/// The withdrawal a batch of nonces was committed for: they sign nothing else.
// Deriving Debug is safe: both fields are public values (the request digest
// and the id the node's signed reservation receipt already carries), never
// nonce or share material.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Binding {
    /// The request's digest.
    pub digest: permafrost_core::withdrawal::RequestDigest,
    /// Names the round-1 call, and so its velocity reservation.
    pub commit_id: [u8; 16],
}

/// What [`NoncePool::take`] hands back.
pub struct Taken {
    /// Group the nonces were committed for.
    pub group: GroupName,
    /// The nonces.
    pub nonces: PoolNonces,
    /// The withdrawal they were committed for (`None`: an activation test,
    /// or banked).
    pub bound: Option<Binding>,
    /// Issued for a coordinator's bank: may sign any request `Sign` proves.
    pub banked: bool,
}

struct Entry {
    group: GroupName,
    nonces: PoolNonces,
    bound: Option<Binding>,
    /// The coordinator whose bank it is in.
    owner: Option<String>,
    created: Instant,
}

/// Bounded, expiring nonce storage.
pub struct NoncePool {
    entries: HashMap<NonceHandle, Entry>,
    max_open: usize,
    ttl: Duration,
}

impl std::fmt::Debug for NoncePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoncePool")
            .field("open", &self.entries.len())
            .field("max_open", &self.max_open)
            .finish()
    }
}

impl NoncePool {
    /// A pool holding at most `max_open` nonces, each for at most `ttl`.
    pub fn new(max_open: usize, ttl: Duration) -> Self {
        Self {
            entries: HashMap::new(),
            max_open,
            ttl,
        }
    }

    /// Stores `nonces` for `group`; `None` when the pool is full of live nonces.
    pub fn insert(
        &mut self,
        group: GroupName,
        nonces: PoolNonces,
        now: Instant,
    ) -> Option<NonceHandle> {
        self.insert_all(group, vec![nonces], None, now)
            .and_then(|h| h.into_iter().next())
    }

    /// Stores every one of `batch` for `group`, or none of them when the
    /// pool has no room for all (a request's sessions commit together).
    pub fn insert_all(
        &mut self,
        group: GroupName,
        batch: Vec<PoolNonces>,
        bound: Option<Binding>,
        now: Instant,
    ) -> Option<Vec<NonceHandle>> {
        self.insert_owned(group, batch, bound, None, now)
    }

    /// Stores `batch` for `owner`'s bank, or none of it when the pool, or
    /// `owner`'s share of it for `group` (`max_per_owner`), has no room (N6).
    pub fn insert_banked(
        &mut self,
        owner: &str,
        group: GroupName,
        batch: Vec<PoolNonces>,
        max_per_owner: usize,
        now: Instant,
    ) -> Option<Vec<NonceHandle>> {
        self.expire(now);
        let held = self
            .entries
            .values()
            .filter(|e| e.group == group && e.owner.as_deref() == Some(owner))
            .count();
        if held.saturating_add(batch.len()) > max_per_owner {
            return None;
        }
        self.insert_owned(group, batch, None, Some(owner.to_string()), now)
    }

    fn insert_owned(
        &mut self,
        group: GroupName,
        batch: Vec<PoolNonces>,
        bound: Option<Binding>,
        owner: Option<String>,
        now: Instant,
    ) -> Option<Vec<NonceHandle>> {
        self.expire(now);
        if self.entries.len().saturating_add(batch.len()) > self.max_open {
            return None;
        }
        let mut handles = Vec::with_capacity(batch.len());
        for nonces in batch {
            let mut handle = [0u8; 16];
            rand::thread_rng().fill_bytes(&mut handle);
            self.entries.insert(
                handle,
                Entry {
                    group: group.clone(),
                    nonces,
                    bound,
                    owner: owner.clone(),
                    created: now,
                },
            );
            handles.push(handle);
        }
        Some(handles)
    }

    /// Removes and returns the nonces for `handle` if they exist and have not expired.
    /// Whatever happens next, they are gone from the pool (N1).
    pub fn take(&mut self, handle: &[u8], now: Instant) -> Option<Taken> {
        let handle: NonceHandle = handle.try_into().ok()?;
        let entry = self.entries.remove(&handle)?;
        if now.duration_since(entry.created) > self.ttl {
            return None;
        }
        Some(Taken {
            group: entry.group,
            nonces: entry.nonces,
            bound: entry.bound,
            banked: entry.owner.is_some(),
        })
    }

    /// How long a nonce (and the reservation made with it) lives.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Drops expired nonces.
    pub fn expire(&mut self, now: Instant) {
        let ttl = self.ttl;
        self.entries
            .retain(|_, e| now.duration_since(e.created) <= ttl);
    }

    /// Number of live nonces.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Most nonces the pool holds at once.
    pub fn capacity(&self) -> usize {
        self.max_open
    }

    /// Whether the pool is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use frost_secp256k1::keys::SigningShare;

    fn nonces() -> PoolNonces {
        let share = SigningShare::deserialize(&[1u8; 32]).expect("valid scalar");
        PoolNonces::Message(SigningNonces::new(&share, &mut rand::thread_rng()))
    }

    #[test]
    fn n6_a_batch_goes_in_whole_or_not_at_all() {
        let mut pool = NoncePool::new(3, Duration::from_secs(60));
        let g = GroupName::new("g").expect("valid");
        let now = Instant::now();
        assert!(pool.insert(g.clone(), nonces(), now).is_some());
        assert!(pool
            .insert_all(g.clone(), vec![nonces(), nonces(), nonces()], None, now)
            .is_none());
        assert_eq!(pool.len(), 1, "nothing of the refused batch stayed");
        let handles = pool
            .insert_all(g, vec![nonces(), nonces()], None, now)
            .expect("room for two");
        assert_eq!(handles.len(), 2);
        assert_ne!(handles[0], handles[1]);
    }

    #[test]
    fn n6_banked_nonces_are_bounded_per_coordinator_and_group() {
        let mut pool = NoncePool::new(100, Duration::from_secs(60));
        let g = GroupName::new("g").expect("valid");
        let h = GroupName::new("h").expect("valid");
        let now = Instant::now();
        let batch = |k| (0..k).map(|_| nonces()).collect::<Vec<_>>();
        assert!(pool
            .insert_banked("c1", g.clone(), batch(3), 4, now)
            .is_some());
        assert!(
            pool.insert_banked("c1", g.clone(), batch(2), 4, now)
                .is_none(),
            "c1's bound for g"
        );
        assert!(
            pool.insert_banked("c2", g.clone(), batch(4), 4, now)
                .is_some(),
            "c2 has its own"
        );
        assert!(
            pool.insert_banked("c1", h, batch(4), 4, now).is_some(),
            "and g is not h"
        );
        let handle = pool
            .insert_banked("c1", g.clone(), batch(1), 4, now)
            .expect("room for one")[0];
        let taken = pool.take(&handle, now).expect("live");
        assert!(taken.banked && taken.bound.is_none());
        assert!(pool.take(&handle, now).is_none(), "N1: once");
        assert!(
            pool.insert_banked("c1", g, batch(1), 4, now).is_some(),
            "a used one frees its place"
        );
    }

    #[test]
    fn n1_nonce_taken_once() {
        let mut pool = NoncePool::new(4, Duration::from_secs(60));
        let g = GroupName::new("g").expect("valid");
        let now = Instant::now();
        let h = pool.insert(g, nonces(), now).expect("room");
        assert!(pool.take(&h, now).is_some());
        assert!(pool.take(&h, now).is_none());
    }

    #[test]
    fn n6_pool_is_bounded_and_expires() {
        let mut pool = NoncePool::new(3, Duration::from_secs(10));
        let g = GroupName::new("g").expect("valid");
        let now = Instant::now();
        for _ in 0..3 {
            assert!(pool.insert(g.clone(), nonces(), now).is_some());
        }
        assert!(
            pool.insert(g.clone(), nonces(), now).is_none(),
            "bound holds"
        );
        let later = now + Duration::from_secs(11);
        let h = pool
            .insert(g, nonces(), later)
            .expect("expired entries make room");
        assert_eq!(pool.len(), 1);
        assert!(
            pool.take(&h, later + Duration::from_secs(11)).is_none(),
            "expired nonce unusable"
        );
    }
}
