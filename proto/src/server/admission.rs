//! Which connections the server keeps (threats R1, R2): bounded half-open
//! handshakes with eviction instead of refusal, and bounded established
//! connections, both globally and per peer.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::task::AbortHandle;

/// The unit a per-peer cap counts: an IPv4 address, or an IPv6 /64 (one host
/// usually owns a whole /64, so counting single IPv6 addresses caps nothing).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct PeerKey(IpAddr);

impl PeerKey {
    pub(super) fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self(IpAddr::V4(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self(IpAddr::V4(v4)),
                None => {
                    let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                    Self(IpAddr::V6(Ipv6Addr::from(prefix)))
                }
            },
        }
    }
}

/// Caps the table enforces (copied from `ServerLimits`).
#[derive(Clone, Copy, Debug)]
pub(super) struct Caps {
    pub(super) handshaking: usize,
    pub(super) handshaking_per_peer: usize,
    pub(super) established: usize,
    pub(super) established_per_peer: usize,
}

/// A connection still in its TLS handshake.
struct Pending {
    peer: SocketAddr,
    /// Set by the stream once the peer has sent a byte: a real client sends its
    /// ClientHello at once, a flood socket sends nothing, so silent ones go first.
    heard: Arc<AtomicBool>,
    abort: Option<AbortHandle>,
}

/// A half-open connection pushed out to make room for a newer one.
pub(super) struct Evicted {
    pub(super) peer: SocketAddr,
    abort: Option<AbortHandle>,
}

impl Evicted {
    /// Ends its handshake task, which closes the socket.
    pub(super) fn close(self) {
        if let Some(abort) = self.abort {
            abort.abort();
        }
    }
}

/// Why a finished handshake does not become an established connection.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum NotPromoted {
    /// It was evicted while finishing; its task is being aborted.
    Evicted,
    /// The established cap (global or for its peer) is full.
    Full,
}

/// Counts of connections by state; see the module doc.
pub(super) struct ConnTable {
    caps: Caps,
    next_id: u64,
    /// Per peer, pending handshakes by id; ids grow, so the first is the oldest.
    pending: HashMap<PeerKey, BTreeMap<u64, Pending>>,
    pending_total: usize,
    established: HashMap<PeerKey, usize>,
    established_total: usize,
}

/// The table, shared by the accept loop, handshake tasks and live connections.
pub(super) type SharedTable = Arc<Mutex<ConnTable>>;

/// Locks the table; a panic elsewhere while holding it leaves only counts
/// behind, so a poisoned lock is still usable.
pub(super) fn lock(table: &SharedTable) -> MutexGuard<'_, ConnTable> {
    table
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl ConnTable {
    pub(super) fn new(caps: Caps) -> Self {
        Self {
            caps,
            next_id: 0,
            pending: HashMap::new(),
            pending_total: 0,
            established: HashMap::new(),
            established_total: 0,
        }
    }

    /// Whether a connection from `key` could be kept once its handshake is done.
    pub(super) fn can_establish(&self, key: PeerKey) -> bool {
        self.established_total < self.caps.established
            && self.established.get(&key).copied().unwrap_or(0) < self.caps.established_per_peer
    }

    /// Registers a new handshake from `peer`, evicting to stay within the caps:
    /// the new connection is never refused, because a flood from the same
    /// address as a real client must not lock the client out, and a real
    /// client finishes its handshake long before it becomes the oldest.
    pub(super) fn begin(
        &mut self,
        key: PeerKey,
        peer: SocketAddr,
        heard: Arc<AtomicBool>,
    ) -> (u64, Vec<Evicted>) {
        let mut evicted = Vec::new();
        while self.pending_len(key) >= self.caps.handshaking_per_peer {
            match self.evict_from(key) {
                Some(e) => evicted.push(e),
                None => break,
            }
        }
        while self.pending_total >= self.caps.handshaking {
            // The peer with the most half-open connections pays, so one
            // flooding address cannot push out another address's handshakes.
            let Some(busiest) = self
                .pending
                .iter()
                .max_by_key(|(_, m)| m.len())
                .map(|(k, _)| *k)
            else {
                break;
            };
            match self.evict_from(busiest) {
                Some(e) => evicted.push(e),
                None => break,
            }
        }
        let id = self.next_id;
        self.next_id += 1;
        self.pending.entry(key).or_default().insert(
            id,
            Pending {
                peer,
                heard,
                abort: None,
            },
        );
        self.pending_total += 1;
        (id, evicted)
    }

    /// Records the task running handshake `id`, so eviction can end it.
    pub(super) fn set_abort(&mut self, key: PeerKey, id: u64, abort: AbortHandle) {
        if let Some(p) = self.pending.get_mut(&key).and_then(|m| m.get_mut(&id)) {
            p.abort = Some(abort);
        }
    }

    /// Evicts one half-open connection, from the busiest peer (when accept
    /// fails for lack of file descriptors).
    pub(super) fn evict_any(&mut self) -> Option<Evicted> {
        let busiest = self
            .pending
            .iter()
            .max_by_key(|(_, m)| m.len())
            .map(|(k, _)| *k)?;
        self.evict_from(busiest)
    }

    /// Forgets handshake `id`; false if it was already evicted.
    pub(super) fn finish(&mut self, key: PeerKey, id: u64) -> bool {
        let Some(map) = self.pending.get_mut(&key) else {
            return false;
        };
        let removed = map.remove(&id).is_some();
        if map.is_empty() {
            self.pending.remove(&key);
        }
        if removed {
            self.pending_total -= 1;
        }
        removed
    }

    /// Turns finished handshake `id` into an established connection.
    pub(super) fn promote(&mut self, key: PeerKey, id: u64) -> Result<(), NotPromoted> {
        if !self.finish(key, id) {
            return Err(NotPromoted::Evicted);
        }
        if !self.can_establish(key) {
            return Err(NotPromoted::Full);
        }
        *self.established.entry(key).or_default() += 1;
        self.established_total += 1;
        Ok(())
    }

    /// An established connection from `key` closed.
    pub(super) fn release(&mut self, key: PeerKey) {
        if let Some(n) = self.established.get_mut(&key) {
            *n -= 1;
            self.established_total -= 1;
            if *n == 0 {
                self.established.remove(&key);
            }
        }
    }

    /// Removes every pending handshake (on shutdown); the caller closes them.
    pub(super) fn drain_pending(&mut self) -> Vec<Evicted> {
        self.pending_total = 0;
        self.pending
            .drain()
            .flat_map(|(_, m)| m.into_values())
            .map(|p| Evicted {
                peer: p.peer,
                abort: p.abort,
            })
            .collect()
    }

    fn pending_len(&self, key: PeerKey) -> usize {
        self.pending.get(&key).map_or(0, BTreeMap::len)
    }

    /// The oldest silent handshake of `key`, else its oldest.
    fn evict_from(&mut self, key: PeerKey) -> Option<Evicted> {
        let map = self.pending.get(&key)?;
        let id = map
            .iter()
            .find(|(_, p)| !p.heard.load(Ordering::Relaxed))
            .or_else(|| map.iter().next())
            .map(|(id, _)| *id)?;
        let map = self.pending.get_mut(&key)?;
        let p = map.remove(&id)?;
        if map.is_empty() {
            self.pending.remove(&key);
        }
        self.pending_total -= 1;
        Some(Evicted {
            peer: p.peer,
            abort: p.abort,
        })
    }

    #[cfg(test)]
    fn counts(&self) -> (usize, usize) {
        (self.pending_total, self.established_total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAPS: Caps = Caps {
        handshaking: 4,
        handshaking_per_peer: 2,
        established: 3,
        established_per_peer: 2,
    };

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("address")
    }

    fn key(s: &str) -> PeerKey {
        PeerKey::of(addr(s).ip())
    }

    fn begin(t: &mut ConnTable, a: &str, heard: bool) -> (u64, Vec<SocketAddr>) {
        let (id, ev) = t.begin(key(a), addr(a), Arc::new(AtomicBool::new(heard)));
        (id, ev.into_iter().map(|e| e.peer).collect())
    }

    #[test]
    fn r2_full_peer_evicts_its_oldest_silent_handshake_not_the_newcomer() {
        let mut t = ConnTable::new(CAPS);
        // A client that already sent its ClientHello, then a silent flood socket.
        let (client, _) = begin(&mut t, "127.0.0.1:1", true);
        let (_, ev) = begin(&mut t, "127.0.0.1:2", false);
        assert!(ev.is_empty());
        // The third from the same address pushes out the silent one, although the client is older.
        let (_, ev) = begin(&mut t, "127.0.0.1:3", false);
        assert_eq!(ev, vec![addr("127.0.0.1:2")]);
        assert_eq!(t.counts(), (2, 0));
        assert_eq!(t.promote(key("127.0.0.1:1"), client), Ok(()));
        assert_eq!(t.counts(), (1, 1));
    }

    #[test]
    fn r2_when_all_have_spoken_the_oldest_goes() {
        let mut t = ConnTable::new(CAPS);
        let (a, _) = begin(&mut t, "10.0.0.1:1", true);
        begin(&mut t, "10.0.0.1:2", true);
        let (_, ev) = begin(&mut t, "10.0.0.1:3", true);
        assert_eq!(ev, vec![addr("10.0.0.1:1")]);
        assert_eq!(t.promote(key("10.0.0.1:1"), a), Err(NotPromoted::Evicted));
    }

    #[test]
    fn r2_global_cap_evicts_from_the_busiest_peer() {
        let mut t = ConnTable::new(CAPS);
        begin(&mut t, "10.0.0.9:1", false); // a quiet peer, oldest of all
        begin(&mut t, "10.0.0.1:1", false);
        begin(&mut t, "10.0.0.1:2", false);
        begin(&mut t, "10.0.0.2:1", false);
        // Global cap (4) is full; 10.0.0.1 holds the most, so it pays.
        let (_, ev) = begin(&mut t, "10.0.0.3:1", false);
        assert_eq!(ev, vec![addr("10.0.0.1:1")]);
        assert_eq!(t.counts(), (4, 0));
    }

    #[test]
    fn r1_established_caps_global_and_per_peer() {
        let mut t = ConnTable::new(CAPS);
        for port in 1..=2 {
            let (id, _) = begin(&mut t, &format!("10.0.0.1:{port}"), true);
            assert_eq!(t.promote(key("10.0.0.1:1"), id), Ok(()));
        }
        assert!(!t.can_establish(key("10.0.0.1:9")), "per-peer cap");
        let (id, _) = begin(&mut t, "10.0.0.1:3", true);
        assert_eq!(t.promote(key("10.0.0.1:3"), id), Err(NotPromoted::Full));
        let (id, _) = begin(&mut t, "10.0.0.2:1", true);
        assert_eq!(t.promote(key("10.0.0.2:1"), id), Ok(()));
        assert!(!t.can_establish(key("10.0.0.3:1")), "global cap");
        t.release(key("10.0.0.1:1"));
        assert!(t.can_establish(key("10.0.0.3:1")));
        assert!(t.can_establish(key("10.0.0.1:1")));
        assert_eq!(t.counts(), (0, 2));
    }

    #[test]
    fn ipv6_peers_count_per_64_and_mapped_v4_as_v4() {
        assert_eq!(key("[2001:db8::1]:1"), key("[2001:db8::ffff:2]:1"));
        assert_ne!(key("[2001:db8::1]:1"), key("[2001:db8:0:1::1]:1"));
        assert_eq!(key("[::ffff:10.0.0.1]:1"), key("10.0.0.1:1"));
    }
}
