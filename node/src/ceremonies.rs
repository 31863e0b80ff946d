//! The in-flight ceremony steps (DKG and refresh) a node remembers between RPCs.
//!
//! Memory only: a restart aborts every ceremony. The table is bounded in count
//! and age, so a coordinator that starts ceremonies and never finishes them
//! cannot grow it; each step is taken out before it is advanced, so a step
//! can be used once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::NodeError;

/// Most ceremonies a node runs at once.
pub const MAX_CEREMONIES: usize = 8;
/// How long a ceremony may stay open on a node.
pub const CEREMONY_TTL: Duration = Duration::from_secs(600);

struct Entry<S> {
    step: S,
    started: Instant,
}

/// Ceremony steps by ceremony id, at most `max` of them, each for at most `ttl`.
pub struct CeremonyTable<S> {
    entries: Mutex<HashMap<String, Entry<S>>>,
    max: usize,
    ttl: Duration,
}

impl<S> std::fmt::Debug for CeremonyTable<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CeremonyTable")
            .field("max", &self.max)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl<S> Default for CeremonyTable<S> {
    fn default() -> Self {
        Self::new(MAX_CEREMONIES, CEREMONY_TTL)
    }
}

impl<S> CeremonyTable<S> {
    /// A table of at most `max` ceremonies, each kept for at most `ttl`.
    pub fn new(max: usize, ttl: Duration) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            max,
            ttl,
        }
    }

    /// Whether a new ceremony `id` may start: refused if it is already open or the table is full.
    pub fn admit(&self, id: &str, now: Instant) -> Result<(), NodeError> {
        let mut map = self.lock()?;
        self.expire(&mut map, now);
        if map.contains_key(id) {
            return Err(NodeError::AlreadyExists(format!(
                "ceremony {id} already started"
            )));
        }
        if map.len() >= self.max {
            return Err(NodeError::Exhausted(
                "too many ceremonies in progress".into(),
            ));
        }
        Ok(())
    }

    /// Takes ceremony `id`'s step out of the table: whatever happens next, it is not there twice.
    pub fn take(&self, id: &str, now: Instant) -> Result<S, NodeError> {
        let mut map = self.lock()?;
        self.expire(&mut map, now);
        map.remove(id).map(|e| e.step).ok_or_else(|| {
            NodeError::Precondition(format!("no ceremony {id} in progress on this node"))
        })
    }

    /// Stores ceremony `id`'s next step; its age counts from `now`.
    pub fn put(&self, id: String, step: S, now: Instant) -> Result<(), NodeError> {
        self.lock()?.insert(id, Entry { step, started: now });
        Ok(())
    }

    fn expire(&self, map: &mut HashMap<String, Entry<S>>, now: Instant) {
        map.retain(|_, e| now.saturating_duration_since(e.started) < self.ttl);
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, HashMap<String, Entry<S>>>, NodeError> {
        self.entries
            .lock()
            .map_err(|_| NodeError::Bug("ceremony lock poisoned".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_is_taken_once() {
        let table = CeremonyTable::new(2, Duration::from_secs(60));
        let now = Instant::now();
        table.put("c1".into(), 7u8, now).expect("put");
        assert_eq!(table.take("c1", now).expect("first take"), 7);
        assert!(matches!(
            table.take("c1", now),
            Err(NodeError::Precondition(_))
        ));
    }

    #[test]
    fn an_open_ceremony_cannot_start_again() {
        let table = CeremonyTable::new(2, Duration::from_secs(60));
        let now = Instant::now();
        table.put("c1".into(), (), now).expect("put");
        assert!(matches!(
            table.admit("c1", now),
            Err(NodeError::AlreadyExists(_))
        ));
    }

    #[test]
    fn the_table_is_bounded() {
        let table = CeremonyTable::new(2, Duration::from_secs(60));
        let now = Instant::now();
        table.admit("c1", now).expect("room");
        table.put("c1".into(), (), now).expect("put");
        table.put("c2".into(), (), now).expect("put");
        assert!(matches!(
            table.admit("c3", now),
            Err(NodeError::Exhausted(_))
        ));
        // Finishing one makes room again.
        table.take("c1", now).expect("take");
        table.admit("c3", now).expect("room again");
    }

    #[test]
    fn ceremonies_expire_after_the_ttl() {
        let ttl = Duration::from_secs(60);
        let table = CeremonyTable::new(1, ttl);
        let start = Instant::now();
        table.put("c1".into(), (), start).expect("put");
        assert!(matches!(
            table.admit("c2", start + ttl - Duration::from_secs(1)),
            Err(NodeError::Exhausted(_))
        ));
        let later = start + ttl;
        table
            .admit("c2", later)
            .expect("the expired one no longer counts");
        assert!(matches!(
            table.take("c1", later),
            Err(NodeError::Precondition(_))
        ));
    }
}
