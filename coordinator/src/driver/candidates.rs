//! Who a request's signing may ask, most preferred first: healthy members,
//! spread across regions, by latency; with each one's usual round trip (the
//! session engine's hedge) and whether one spare reserves from the start.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use permafrost_core::NodeId;

use crate::store::GroupRecord;
use crate::Coordinator;

/// Shortest hedge: how long a session with some valid shares waits for the
/// rest before their signers may start another session (the engine waits
/// longer when the first share took long: a queue or a long link; see
/// `SessionConfig::hedge`). Also how long the first answers are gathered.
const MIN_HEDGE: Duration = Duration::from_millis(100);

/// Picks `t` signers: healthy ones first, spread across regions, then by
/// latency. Latencies within the same 25 ms count as equal (then by id): a
/// difference that small is noise between regions.
pub fn choose_signers(
    candidates: &[(NodeId, String, Option<Duration>)],
    t: usize,
) -> Option<Vec<NodeId>> {
    choose_signers_for(candidates, t, "")
}

/// [`choose_signers`], with ties among equally fast members broken by a hash
/// of `salt` (the request id) and the member instead of by id: each request
/// has a stable order, and over many requests every member takes its turn
/// (so none sits unused, its faults unseen, while its peers do all the work).
/// Banks are kept for every member, so turns cost no extra round trip.
pub fn choose_signers_for(
    candidates: &[(NodeId, String, Option<Duration>)],
    t: usize,
    salt: &str,
) -> Option<Vec<NodeId>> {
    if candidates.len() < t {
        return None;
    }
    let tiebreak = |id: &NodeId| -> Vec<u8> {
        if salt.is_empty() {
            id.as_str().as_bytes().to_vec()
        } else {
            use sha2::{Digest, Sha256};
            let mut h = Sha256::new();
            h.update((salt.len() as u64).to_be_bytes());
            h.update(salt.as_bytes());
            h.update(id.as_str().as_bytes());
            h.finalize().to_vec()
        }
    };
    let mut sorted: Vec<_> = candidates.to_vec();
    sorted.sort_by_cached_key(|(id, _, latency)| {
        (
            latency.map_or(u128::MAX, |l| l.as_millis() / 25),
            tiebreak(id),
        )
    });
    let mut by_region: BTreeMap<&str, Vec<&NodeId>> = BTreeMap::new();
    let mut region_order = Vec::new();
    for (id, region, _) in &sorted {
        if !by_region.contains_key(region.as_str()) {
            region_order.push(region.as_str());
        }
        by_region.entry(region.as_str()).or_default().push(id);
    }
    let mut chosen = Vec::with_capacity(t);
    let mut round = 0;
    while chosen.len() < t {
        for region in &region_order {
            if let Some(id) = by_region[region].get(round) {
                if chosen.len() < t {
                    chosen.push((*id).clone());
                }
            }
        }
        round += 1;
    }
    Some(chosen)
}

/// A member's usual round trip from which a velocity-limited request
/// reserves on every candidate from the start (a lost signer then costs no
/// extra Reserve and Attest round trips, which a long link makes dear).
const SPARE_RESERVATION_RTT: Duration = Duration::from_millis(20);

/// Spare reservations: all the other candidates where some candidate is far
/// away (up to `n − t` signers may fail, ROAST's bound), none on a LAN.
pub(super) fn spare_reservations(found: &Candidates, t: usize) -> usize {
    let far = found
        .latencies
        .values()
        .any(|l| *l >= SPARE_RESERVATION_RTT);
    if far {
        found.ordered.len().saturating_sub(t)
    } else {
        0
    }
}

/// Who may be asked, most preferred first, and the hedge their latency suggests.
pub(super) struct Candidates {
    pub(super) ordered: Vec<NodeId>,
    /// Members that cannot count towards `t` (excluded, or skipped).
    pub(super) out: usize,
    pub(super) hedge: Duration,
    /// Each candidate's last measured round trip (health probes).
    pub(super) latencies: BTreeMap<NodeId, Duration>,
}

pub(super) fn candidates(
    coord: &Coordinator,
    group: &GroupRecord,
    skip: &BTreeSet<NodeId>,
    request_id: &str,
) -> Result<Candidates, String> {
    let mut out = 0;
    let mut found = Vec::new();
    for m in &group.members {
        // A removed member keeps its identifier but never signs: it counts out.
        if group.removed.contains(m)
            || coord
                .store
                .is_excluded(&group.name, m)
                .map_err(|e| e.to_string())?
            || skip.contains(m)
        {
            out += 1;
            continue;
        }
        if coord.members.get(m).is_none() {
            continue;
        }
        let h = coord.members.health(m);
        let seems_up = h.reachable || (h.last_ok.is_none() && h.last_error.is_empty());
        if seems_up && !h.sealed {
            found.push((m.clone(), super::region_of(coord, m), h.latency));
        }
    }
    let latencies = found
        .iter()
        .filter_map(|(m, _, l)| Some((m.clone(), (*l)?)))
        .collect();
    Ok(Candidates {
        ordered: choose_signers_for(&found, found.len(), request_id).unwrap_or_default(),
        out,
        hedge: MIN_HEDGE.min(coord.config.round_timeout() / 2),
        latencies,
    })
}
