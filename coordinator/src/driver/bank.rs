//! Keeps the coordinator's nonce bank ([`permafrost_core::session::bank`])
//! filled in the background, so a withdrawal's signing packages can go out
//! in the first round trip. Only public commitments and handles are banked;
//! the nonces stay in the nodes' memory, each usable once (N1), gone on a
//! restart (N2), bounded per coordinator and group by every node (N6).

use std::sync::Arc;
use std::time::{Duration, Instant};

use frost_core::round1::SigningCommitments;
use frost_core::Ciphersuite;
use permafrost_core::session::bank::Banked;
use permafrost_core::session::NonceSet;
use permafrost_core::{GroupName, NodeId};
use permafrost_proto as pb;
use tracing::debug;

use crate::Coordinator;

/// Below this many banked commitments for a node, it is asked for more.
pub const BANK_LOW: usize = 16;
/// How many it is asked for at once.
pub const BANK_BATCH: u32 = 32;
/// Banked commitments are offered only until this long before the node drops
/// them, so a signing round that starts in time reaches them alive.
const MARGIN: Duration = Duration::from_secs(10);
/// How often the bank is looked at without a withdrawal asking.
const REFILL_EVERY: Duration = Duration::from_millis(500);

/// `count` banked commitments of `node` as one nonce set, if the bank has them.
pub(crate) fn withdraw<C: Ciphersuite>(
    coord: &Coordinator,
    group: &GroupName,
    node: &NodeId,
    count: usize,
) -> Option<NonceSet<C>> {
    let taken = coord
        .bank
        .lock()
        .ok()?
        .withdraw(group, node, count, Instant::now())?;
    coord.bank_wanted.notify_one();
    let mut set = NonceSet {
        handles: Vec::with_capacity(count),
        commitments: Vec::with_capacity(count),
    };
    for b in taken {
        // A commitment the bank cannot read is dropped, never offered.
        set.commitments
            .push(SigningCommitments::<C>::deserialize(&b.commitments).ok()?);
        set.handles.push(b.handle);
    }
    Some(set)
}

/// Returns a set that was withdrawn but never shown to anyone.
pub(crate) fn put_back<C: Ciphersuite>(
    coord: &Coordinator,
    group: &GroupName,
    node: &NodeId,
    set: NonceSet<C>,
) {
    let now = Instant::now();
    let entries: Option<Vec<Banked>> = set
        .handles
        .into_iter()
        .zip(set.commitments)
        .map(|(handle, c)| {
            Some(Banked {
                handle,
                commitments: c.serialize().ok()?,
                // Conservative: a put-back entry lives no longer than a fresh margin allows.
                usable_until: now + MARGIN,
            })
        })
        .collect();
    if let (Some(entries), Ok(mut bank)) = (entries, coord.bank.lock()) {
        bank.put_back(group, node, entries);
    }
}

/// Voids `node`'s bank: it restarted, its nonces are gone.
pub(crate) fn forget(coord: &Coordinator, node: &NodeId) {
    if let Ok(mut bank) = coord.bank.lock() {
        bank.forget(node);
    }
    coord.bank_wanted.notify_one();
}

/// Refills every active group's bank until the task is aborted.
pub async fn refill_loop(coord: Arc<Coordinator>) {
    loop {
        refill_once(&coord).await;
        tokio::select! {
            _ = tokio::time::sleep(REFILL_EVERY) => {}
            _ = coord.bank_wanted.notified() => {}
        }
    }
}

async fn refill_once(coord: &Coordinator) {
    let Ok(groups) = coord.store.groups() else {
        return;
    };
    let mut calls = Vec::new();
    for group in groups.into_iter().filter(|g| g.active) {
        for node in &group.active_members() {
            let Some(member) = coord.members.get(node) else {
                continue;
            };
            if coord.store.is_excluded(&group.name, node).unwrap_or(true) {
                continue;
            }
            let h = coord.members.health(node);
            if h.sealed || (!h.reachable && h.last_ok.is_some()) {
                continue;
            }
            let level = coord
                .bank
                .lock()
                .map(|mut b| b.level(&group.name, node, Instant::now()))
                .unwrap_or(usize::MAX);
            if level >= BANK_LOW {
                continue;
            }
            let mut client = member.client.clone();
            let name = group.name.clone();
            let node = node.clone();
            calls.push(async move {
                let req = pb::CommitRequest {
                    key_group: name.to_string(),
                    count: BANK_BATCH,
                    withdrawal: None,
                    bank: true,
                    epoch: 0,
                };
                let issued_at = Instant::now();
                match tokio::time::timeout(Duration::from_secs(2), client.commit(req)).await {
                    Ok(Ok(resp)) => {
                        let resp = resp.into_inner();
                        let ttl = Duration::from_secs(u64::from(resp.ttl_secs));
                        let issued = resp
                            .nonces
                            .into_iter()
                            .map(|n| (n.handle, n.commitments))
                            .collect();
                        if let Ok(mut bank) = coord.bank.lock() {
                            bank.deposit(&name, &node, issued, issued_at, ttl, MARGIN);
                        }
                    }
                    Ok(Err(status)) => {
                        debug!(node = %node, group = %name, error = %status.message(), "bank refill refused")
                    }
                    Err(_) => debug!(node = %node, group = %name, "bank refill timed out"),
                }
            });
        }
    }
    futures::future::join_all(calls).await;
}
