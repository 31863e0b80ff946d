//! The velocity ledger: every request this node counted, numbered per group
//! and asset, so an attestation can list a range of it
//! (`permafrost_core::velocity::LedgerEntry`) and a signer that holds the
//! start is sent only the rest.

use permafrost_core::withdrawal::RequestDigest;
use permafrost_core::GroupName;
use permafrost_store::{StoreError, Table, Versioned, WriteTxn, U128, U64};
use serde::{Deserialize, Serialize};

use super::{velocity_prefix, NodeStore};
use crate::NodeError;

/// Every request counted in velocity, by (group, asset, time, digest): the
/// ledger before entries were numbered; moved into [`LEDGER_SEQ`] at open.
pub(super) const LEDGER: Table<U128> = Table::new("ledger", "velocity ledger entry");
/// Every request counted in velocity, by (group, asset, entry number): what
/// a velocity attestation lists a range of (`velocity::LedgerEntry`).
pub(super) const LEDGER_SEQ: Table<Versioned<LedgerRow>> =
    Table::new("ledger_seq", "velocity ledger entry");
/// The first entry number at each second, by (group, asset, second): where
/// the window starts.
pub(super) const LEDGER_AT: Table<U64> = Table::new("ledger_at", "velocity ledger index");
/// Per (group, asset): the next entry number and the latest entry's time.
pub(super) const LEDGER_HEAD: Table<Versioned<LedgerHead>> =
    Table::new("ledger_head", "velocity ledger head");

/// One numbered ledger entry.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct LedgerRow {
    digest: String,
    amount: String,
    at: u64,
    /// The ledger's chain hash after this entry (`velocity::chain`), hex.
    #[serde(default)]
    hash: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(super) struct LedgerHead {
    next: u64,
    /// Entries are timed no earlier than the one before (a clock stepped
    /// back cannot hide an entry from the window's start).
    last_at: u64,
    /// The chain hash after the last entry, hex (empty: none yet).
    #[serde(default)]
    last_hash: String,
    /// The first entry still stored (older ones were dropped) and the chain
    /// hash just before it, hex.
    #[serde(default)]
    base_seq: u64,
    #[serde(default)]
    base_hash: String,
}

fn hash_of(hex_hash: &str) -> [u8; 32] {
    hex::decode(hex_hash)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .unwrap_or([0; 32])
}

/// A range of a ledger, as [`NodeStore::ledger_range`] reads it.
#[derive(Clone, Debug, Default)]
pub struct LedgerRange {
    /// The first entry still in the window (`next` when none is).
    pub first_seq: u64,
    /// One past the last entry listed.
    pub through: u64,
    /// Whether the range reaches the ledger's end.
    pub complete: bool,
    /// The entries, in order.
    pub entries: Vec<permafrost_core::velocity::LedgerEntry>,
    /// The chain hash just before the first entry listed.
    pub prev_hash: [u8; 32],
    /// The chain hash after the last entry listed (`prev_hash` when none).
    pub head_hash: [u8; 32],
}

fn seq_key(prefix: &[u8], n: u64) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(&n.to_be_bytes());
    k
}

/// Appends a request to `group`'s `asset` ledger (inside the journal step),
/// and drops the oldest entry once it is two windows old.
pub(super) fn append_ledger(
    w: &mut WriteTxn<'_>,
    group: &GroupName,
    asset: &str,
    digest: &str,
    amount: u128,
    now: u64,
) -> Result<(), StoreError> {
    let prefix = velocity_prefix(group, asset);
    let mut head = w.get(&LEDGER_HEAD, &prefix)?.unwrap_or_default();
    let at = now.max(head.last_at);
    let corrupt = |reason: &str| StoreError::Corrupt {
        what: "velocity ledger entry",
        reason: reason.to_string(),
    };
    let entry = permafrost_core::velocity::LedgerEntry {
        seq: head.next,
        digest: hex::decode(digest)
            .ok()
            .and_then(|d| RequestDigest::from_slice(&d).ok())
            .ok_or_else(|| corrupt("digest is not 32 bytes of hex"))?,
        amount,
        at,
    };
    let hash = permafrost_core::velocity::chain(&hash_of(&head.last_hash), &entry);
    let row = LedgerRow {
        digest: digest.to_string(),
        amount: amount.to_string(),
        at,
        hash: hex::encode(hash),
    };
    w.put(&LEDGER_SEQ, seq_key(&prefix, head.next), &row)?;
    let at_key = seq_key(&prefix, at);
    if !w.contains(&LEDGER_AT, &at_key)? {
        w.put(&LEDGER_AT, &at_key, &head.next)?;
    }
    head.next += 1;
    head.last_at = at;
    head.last_hash = row.hash.clone();
    // Keep two windows: drop the oldest entry and index second once older
    // (one each per append, so the ledger never grows past what it serves).
    let cutoff = now.saturating_sub(2 * permafrost_core::policy::VELOCITY_WINDOW_SECS);
    let all = seq_key(&prefix, 0)..seq_key(&prefix, u64::MAX);
    if let Some((key, old)) = w.first(&LEDGER_SEQ, all.clone())? {
        if old.at < cutoff {
            w.remove(&LEDGER_SEQ, &key)?;
            let seq = key
                .get(prefix.len()..)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes)
                .ok_or_else(|| corrupt("key"))?;
            head.base_seq = seq + 1;
            head.base_hash = old.hash;
        }
    }
    w.put(&LEDGER_HEAD, &prefix, &head)?;
    if let Some((key, _)) = w.first(&LEDGER_AT, all)? {
        if key < seq_key(&prefix, cutoff) {
            w.remove(&LEDGER_AT, &key)?;
        }
    }
    Ok(())
}

impl NodeStore {
    /// The entries of `group`'s `asset` ledger from `since` (or from the
    /// window's start at `window_start`, whichever is later), at most `max`
    /// of them: what an attestation lists.
    pub fn ledger_range(
        &self,
        group: &GroupName,
        asset: &str,
        since: u64,
        window_start: u64,
        max: usize,
    ) -> Result<LedgerRange, NodeError> {
        let prefix = velocity_prefix(group, asset);
        // One snapshot: the head, where the window starts, and the range.
        let (head, start, rows, before) = self.store.read(|r| {
            let head = r.get(&LEDGER_HEAD, &prefix)?.unwrap_or_default();
            let first = r.scan_first(
                &LEDGER_AT,
                seq_key(&prefix, window_start)..seq_key(&prefix, u64::MAX),
                1,
            )?;
            let first_seq = first.first().map_or(head.next, |(_, seq)| *seq);
            let start = since.max(first_seq).min(head.next);
            let rows = r.scan_first(
                &LEDGER_SEQ,
                seq_key(&prefix, start)..seq_key(&prefix, head.next),
                max,
            )?;
            let before = match start.checked_sub(1) {
                Some(prev) if start != head.base_seq => {
                    r.get(&LEDGER_SEQ, seq_key(&prefix, prev))?
                }
                _ => None,
            };
            Ok((head, (first_seq, start), rows, before))
        })?;
        let (first_seq, start) = start;
        let prev_hash = match (start, before) {
            (0, _) => [0; 32],
            (_, Some(row)) => hash_of(&row.hash),
            _ if start == head.base_seq => hash_of(&head.base_hash),
            _ => {
                return Err(NodeError::Corrupt(format!(
                    "velocity ledger of {group}/{asset}: entry {} is missing",
                    start - 1
                )))
            }
        };
        let mut head_hash = prev_hash;
        let mut entries = Vec::with_capacity(rows.len());
        for (key, row) in rows {
            head_hash = hash_of(&row.hash);
            let corrupt = |what: &str| NodeError::Corrupt(format!("velocity ledger entry: {what}"));
            let seq = key
                .get(prefix.len()..)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes)
                .ok_or_else(|| corrupt("key"))?;
            entries.push(permafrost_core::velocity::LedgerEntry {
                seq,
                digest: hex::decode(&row.digest)
                    .ok()
                    .and_then(|d| RequestDigest::from_slice(&d).ok())
                    .ok_or_else(|| corrupt("digest"))?,
                amount: row.amount.parse().map_err(|_| corrupt("amount"))?,
                at: row.at,
            });
        }
        let through = entries.last().map_or(start, |e| e.seq + 1).max(start);
        let through = if entries.len() < max {
            head.next.max(through)
        } else {
            through
        };
        Ok(LedgerRange {
            first_seq,
            through,
            complete: through >= head.next,
            entries,
            prev_hash,
            head_hash,
        })
    }

    /// Numbers the entries of a ledger written before entries were numbered
    /// (once, at open; the old table is emptied in the same commit).
    pub(super) fn number_old_ledger(&self) -> Result<(), NodeError> {
        let old = self.store.read(|r| r.scan(&LEDGER, ..))?;
        if old.is_empty() {
            return Ok(());
        }
        let count = old.len();
        self.store.write_blocking(move |w| {
            // Entries two windows old count for nothing any more.
            let oldest = permafrost_core::unix_now()
                .saturating_sub(2 * permafrost_core::policy::VELOCITY_WINDOW_SECS);
            for (key, amount) in old {
                // group \0 asset \0 at(8) digest(32)
                let mut parts = key.splitn(3, |b| *b == 0);
                let (Some(group), Some(asset), Some(rest)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    return Err(NodeError::Corrupt(format!(
                        "old velocity ledger key {} is not group, asset, time and digest",
                        hex::encode(&key)
                    )));
                };
                let (Some(at), Some(digest)) = (rest.get(..8), rest.get(8..)) else {
                    return Err(NodeError::Corrupt(
                        "old velocity ledger key too short".into(),
                    ));
                };
                let group = GroupName::new(String::from_utf8_lossy(group).into_owned())
                    .map_err(|e| NodeError::Corrupt(format!("old velocity ledger group: {e}")))?;
                let asset = String::from_utf8_lossy(asset).into_owned();
                let at = u64::from_be_bytes(at.try_into().unwrap_or_default());
                if at >= oldest {
                    append_ledger(w, &group, &asset, &hex::encode(digest), amount, at)?;
                }
                w.remove(&LEDGER, &key)?;
            }
            Ok(())
        })?;
        tracing::info!(
            entries = count,
            "numbered the velocity ledger's entries (store upgrade)"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use permafrost_core::RequestId;

    use super::*;

    fn digest(i: u8) -> RequestDigest {
        RequestDigest([i; 32])
    }

    async fn journal(store: &NodeStore, i: u8, now: u64) {
        let id = RequestId::new(format!("wd-{i}")).expect("id");
        let (_, journaled) = store
            .journal_share(
                &id,
                &digest(i),
                &GroupName::new("warm-1").expect("name"),
                Some(("BTC".into(), u128::from(i) * 10)),
                0,
                now,
                |_| Ok(()),
            )
            .await
            .expect("store")
            .expect("journaled");
        assert_eq!(journaled.shares_released(), 1);
    }

    #[tokio::test]
    async fn ranges_from_an_entry_from_the_window_start_and_in_parts() {
        let dir = tempfile::tempdir().expect("dir");
        let store = NodeStore::open(dir.path()).expect("open");
        let group = GroupName::new("warm-1").expect("name");
        for (i, at) in [(1u8, 1000u64), (2, 1000), (3, 2000), (4, 1500)] {
            journal(&store, i, at).await;
        }
        // Entry 3 was journaled with the clock stepped back: timed 2000.
        let all = store.ledger_range(&group, "BTC", 0, 0, 100).expect("range");
        assert_eq!((all.first_seq, all.through, all.complete), (0, 4, true));
        let ats: Vec<u64> = all.entries.iter().map(|e| e.at).collect();
        assert_eq!(ats, [1000, 1000, 2000, 2000]);
        assert_eq!(all.entries[3].digest, digest(4));
        assert_eq!(all.entries[3].amount, 40);
        // From entry 2; from the window's start (second 1001: entry 2).
        let rest = store.ledger_range(&group, "BTC", 2, 0, 100).expect("range");
        assert_eq!(rest.entries.len(), 2);
        let window = store
            .ledger_range(&group, "BTC", 0, 1001, 100)
            .expect("range");
        assert_eq!((window.first_seq, window.entries.len()), (2, 2));
        // In parts of one.
        let part = store.ledger_range(&group, "BTC", 0, 0, 1).expect("range");
        assert_eq!(
            (part.through, part.complete, part.entries.len()),
            (1, false, 1)
        );
        // Past the end, and another asset: nothing, complete.
        let none = store.ledger_range(&group, "BTC", 9, 0, 100).expect("range");
        assert!(none.entries.is_empty() && none.complete);
        let none = store.ledger_range(&group, "ETH", 0, 0, 100).expect("range");
        assert_eq!((none.through, none.complete), (0, true));
    }

    #[tokio::test]
    async fn a_ledger_written_before_numbering_is_numbered_at_open() {
        let dir = tempfile::tempdir().expect("dir");
        let group = GroupName::new("warm-1").expect("name");
        {
            let store = NodeStore::open(dir.path()).expect("open");
            store
                .store
                .write_blocking(|w| {
                    // Three recent entries, and one from before the two
                    // windows kept (dropped).
                    let now = permafrost_core::unix_now();
                    for (i, at) in [(7u8, now - 300), (5, now - 500), (6, now - 400), (4, 1000)] {
                        let mut key = velocity_prefix(&group, "BTC");
                        key.extend_from_slice(&at.to_be_bytes());
                        key.extend_from_slice(&digest(i).0);
                        w.put(&LEDGER, key, &u128::from(i))?;
                    }
                    Ok::<_, NodeError>(())
                })
                .expect("old entries");
        }
        let store = NodeStore::open(dir.path()).expect("reopen");
        let all = store.ledger_range(&group, "BTC", 0, 0, 100).expect("range");
        let got: Vec<(u64, RequestDigest, u64)> = all
            .entries
            .iter()
            .map(|e| (e.seq, e.digest, e.at))
            .collect();
        let now = permafrost_core::unix_now();
        assert_eq!(got.len(), 3, "{got:?}");
        for (k, (seq, d, at)) in got.iter().enumerate() {
            let (want_d, want_at) = [(5, now - 500), (6, now - 400), (7, now - 300)][k];
            assert_eq!((*seq, *d), (k as u64, digest(want_d)));
            assert!(at.abs_diff(want_at) <= 5, "{at} vs {want_at}");
        }
        // The chain hashes: a range says where it starts and ends.
        let part = store.ledger_range(&group, "BTC", 1, 0, 100).expect("range");
        assert_eq!(
            part.prev_hash,
            permafrost_core::velocity::chain(&[0; 32], &all.entries[0])
        );
        assert_eq!(part.head_hash, all.head_hash);
        assert!(store
            .store
            .read(|r| r.scan(&LEDGER, ..))
            .expect("read")
            .is_empty());
        // Opening again numbers nothing twice.
        drop(store);
        let store = NodeStore::open(dir.path()).expect("reopen");
        assert_eq!(
            store
                .ledger_range(&group, "BTC", 0, 0, 100)
                .expect("range")
                .through,
            3
        );
    }
}
