//! The coordinator's bank of pre-issued nonce commitments, per key group and
//! node (one-round signing). It holds only public values: handles and
//! commitments, never a nonce. Each entry is handed out once; entries expire
//! a margin before the node drops their nonces; a node that restarted voids
//! its whole bank ([`NonceBank::forget`]), as its nonces died with it (N2).

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crate::{GroupName, NodeId};

/// One pre-issued commitment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Banked {
    /// The node's handle for the nonce.
    pub handle: Vec<u8>,
    /// Serialized commitments in the group's suite.
    pub commitments: Vec<u8>,
    /// When the coordinator stops offering it.
    pub usable_until: Instant,
}

/// Per (group, node) queues of [`Banked`] commitments, oldest first.
#[derive(Debug, Default)]
pub struct NonceBank {
    queues: BTreeMap<(GroupName, NodeId), VecDeque<Banked>>,
}

impl NonceBank {
    /// An empty bank.
    pub fn new() -> Self {
        Self::default()
    }

    /// Deposits commitments `node` issued at `now`, which it keeps for `ttl`;
    /// the bank offers them for `ttl - margin` (a signing round must reach the
    /// node while they live).
    pub fn deposit(
        &mut self,
        group: &GroupName,
        node: &NodeId,
        issued: Vec<(Vec<u8>, Vec<u8>)>,
        now: Instant,
        ttl: Duration,
        margin: Duration,
    ) {
        let usable_until = now + ttl.saturating_sub(margin);
        let queue = self
            .queues
            .entry((group.clone(), node.clone()))
            .or_default();
        queue.extend(issued.into_iter().map(|(handle, commitments)| Banked {
            handle,
            commitments,
            usable_until,
        }));
    }

    /// Puts back entries that were withdrawn but never shown to anyone.
    pub fn put_back(&mut self, group: &GroupName, node: &NodeId, entries: Vec<Banked>) {
        let queue = self
            .queues
            .entry((group.clone(), node.clone()))
            .or_default();
        for e in entries.into_iter().rev() {
            queue.push_front(e);
        }
    }

    /// Takes `count` live entries of `node` at once, or none (all sessions of
    /// one request use nonces of one withdrawal). A taken entry is gone from
    /// the bank: no two withdrawals ever get the same handle.
    pub fn withdraw(
        &mut self,
        group: &GroupName,
        node: &NodeId,
        count: usize,
        now: Instant,
    ) -> Option<Vec<Banked>> {
        let queue = self.queues.get_mut(&(group.clone(), node.clone()))?;
        queue.retain(|e| e.usable_until > now);
        if count == 0 || queue.len() < count {
            return None;
        }
        Some(queue.drain(..count).collect())
    }

    /// Live entries of `node`.
    pub fn level(&mut self, group: &GroupName, node: &NodeId, now: Instant) -> usize {
        match self.queues.get_mut(&(group.clone(), node.clone())) {
            Some(queue) => {
                queue.retain(|e| e.usable_until > now);
                queue.len()
            }
            None => 0,
        }
    }

    /// Voids every entry of `node` in every group (it restarted).
    pub fn forget(&mut self, node: &NodeId) {
        self.queues.retain(|(_, n), _| n != node);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g() -> GroupName {
        GroupName::new("warm-1").expect("valid")
    }
    fn n(s: &str) -> NodeId {
        NodeId::new(s).expect("valid")
    }
    fn issued(k: u8) -> Vec<(Vec<u8>, Vec<u8>)> {
        (0..k).map(|i| (vec![i], vec![i, i])).collect()
    }

    #[test]
    fn n1_a_banked_commitment_is_handed_out_once() {
        let mut bank = NonceBank::new();
        let now = Instant::now();
        let ttl = Duration::from_secs(60);
        bank.deposit(&g(), &n("n1"), issued(3), now, ttl, Duration::from_secs(5));
        let a = bank.withdraw(&g(), &n("n1"), 2, now).expect("two");
        let b = bank.withdraw(&g(), &n("n1"), 1, now).expect("one");
        assert!(a.iter().all(|x| !b.contains(x)), "no handle twice");
        assert!(bank.withdraw(&g(), &n("n1"), 1, now).is_none());
    }

    #[test]
    fn n6_all_or_nothing_and_expiry_before_the_node_drops_them() {
        let mut bank = NonceBank::new();
        let now = Instant::now();
        let ttl = Duration::from_secs(60);
        bank.deposit(&g(), &n("n1"), issued(2), now, ttl, Duration::from_secs(5));
        assert!(bank.withdraw(&g(), &n("n1"), 3, now).is_none());
        assert_eq!(
            bank.level(&g(), &n("n1"), now),
            2,
            "a refused withdrawal takes nothing"
        );
        let late = now + Duration::from_secs(56);
        assert_eq!(
            bank.level(&g(), &n("n1"), late),
            0,
            "offered only within ttl - margin"
        );
    }

    #[test]
    fn n2_a_restart_voids_the_nodes_bank() {
        let mut bank = NonceBank::new();
        let now = Instant::now();
        let ttl = Duration::from_secs(60);
        bank.deposit(&g(), &n("n1"), issued(2), now, ttl, Duration::ZERO);
        bank.deposit(&g(), &n("n2"), issued(2), now, ttl, Duration::ZERO);
        bank.forget(&n("n1"));
        assert_eq!(bank.level(&g(), &n("n1"), now), 0);
        assert_eq!(bank.level(&g(), &n("n2"), now), 2);
        let back = bank.withdraw(&g(), &n("n2"), 1, now).expect("one");
        bank.put_back(&g(), &n("n2"), back.clone());
        assert_eq!(
            bank.withdraw(&g(), &n("n2"), 1, now),
            Some(back),
            "oldest first"
        );
    }
}
