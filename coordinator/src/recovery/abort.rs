//! Aborting a refresh that can never commit (THREATS K7), the other way out
//! of an unfinished refresh besides finishing it from its certificate.
//!
//! The coordinator asks the members which refresh they hold pending, asks
//! every member at that epoch that does not hold it for a signed promise
//! never to report it (`SignerNode.AbandonRefresh`), and sends the promises
//! to every member holding it (`SignerNode.DropPendingRefresh`). Each node
//! checks the promise itself; the coordinator's word counts for nothing. A
//! member that reported refuses to promise, so when every member reported
//! nothing is dropped, and the refresh is finished by recovery instead.

use std::collections::BTreeMap;
use std::sync::Arc;

use permafrost_core::{GroupName, NodeId};
use permafrost_proto as pb;
use tonic::{Code, Status};
use tracing::{info, warn};

use super::{certificates, names};
use crate::Coordinator;

/// What an abort did.
#[derive(Debug, Default)]
pub struct Aborted {
    /// The refresh aborted; `None` when no member held one pending.
    pub ceremony_id: Option<String>,
    /// Members that promised never to report it.
    pub promised_by: Vec<NodeId>,
    /// Members that dropped their pending share of it.
    pub dropped: Vec<NodeId>,
    /// Members holding it that did not drop it, each as "member: why".
    pub not_dropped: Vec<String>,
}

impl From<Aborted> for pb::AbortRefreshResponse {
    fn from(a: Aborted) -> Self {
        let list = |ids: &[NodeId]| ids.iter().map(|i| i.to_string()).collect();
        pb::AbortRefreshResponse {
            ceremony_id: a.ceremony_id.unwrap_or_default(),
            promised_by: list(&a.promised_by),
            dropped: list(&a.dropped),
            not_dropped: a.not_dropped,
        }
    }
}

/// `Ceremony.AbortRefresh`: aborts the refresh of `name` its members hold
/// pending (`ceremony`, when they hold more than one), one ceremony of this
/// coordinator at a time.
pub async fn abort_refresh(
    coord: &Arc<Coordinator>,
    name: &GroupName,
    ceremony: Option<&str>,
) -> Result<Aborted, Status> {
    let _one_at_a_time = coord.ceremony_lock.lock().await;
    abort_pending(coord, name, ceremony).await
}

/// After this coordinator's own refresh `ceremony_id` of `name` failed
/// before it had every report: drops what members hold of it, best effort.
/// Returns a note for the operator's error message.
pub(crate) async fn abort_after_failure(
    coord: &Arc<Coordinator>,
    name: &GroupName,
    ceremony_id: &str,
) -> String {
    match abort_pending(coord, name, Some(ceremony_id)).await {
        Ok(a) if a.dropped.is_empty() && a.not_dropped.is_empty() => String::new(),
        Ok(a) if a.not_dropped.is_empty() => {
            info!(group = %name, ceremony = ceremony_id, dropped = %names(&a.dropped), "failed refresh aborted");
            format!(
                "; its pending shares were dropped on {} ({} promised never to report it)",
                names(&a.dropped),
                names(&a.promised_by)
            )
        }
        Ok(a) => {
            warn!(group = %name, ceremony = ceremony_id, not_dropped = ?a.not_dropped, "failed refresh aborted on some members only");
            format!(
                "; its pending shares were dropped on {} but not on {}; run \
                 `permafrostctl keygroup abort-refresh --name {name}` again",
                names(&a.dropped),
                a.not_dropped.join("; ")
            )
        }
        Err(e) => {
            warn!(group = %name, ceremony = ceremony_id, error = %e.message(), "failed refresh not aborted");
            format!("; its pending shares were not dropped: {}", e.message())
        }
    }
}

/// The abort itself; the caller holds the ceremony lock.
async fn abort_pending(
    coord: &Arc<Coordinator>,
    name: &GroupName,
    ceremony: Option<&str>,
) -> Result<Aborted, Status> {
    let record = coord.known_group(name)?;
    let states = certificates(coord, &record, false).await;
    let mut pending: BTreeMap<String, Vec<(NodeId, u64)>> = BTreeMap::new();
    for (id, state) in &states {
        if let Some(s) = state.as_ref().filter(|s| !s.pending_ceremony_id.is_empty()) {
            let holders = pending.entry(s.pending_ceremony_id.clone()).or_default();
            holders.push((id.clone(), s.epoch));
        }
    }
    let ceremony_id = match (ceremony, pending.len()) {
        (Some(c), _) => c.to_string(),
        (None, 0) => return Ok(Aborted::default()),
        (None, 1) => pending.keys().next().cloned().unwrap_or_default(),
        (None, _) => {
            let held: Vec<String> = pending
                .iter()
                .map(|(c, h)| {
                    let ids: Vec<NodeId> = h.iter().map(|(id, _)| id.clone()).collect();
                    format!("{c} ({})", names(&ids))
                })
                .collect();
            return Err(Status::failed_precondition(format!(
                "members of {name} hold more than one refresh pending: {}; name the one to abort",
                held.join(", ")
            )));
        }
    };
    let Some(holders) = pending.remove(&ceremony_id) else {
        return Ok(Aborted::default());
    };
    // The epoch the refresh moves from; a member past it may have committed
    // it, and then only finishing it keeps one epoch.
    let from = holders.iter().map(|(_, e)| *e).min().unwrap_or_default();
    if let Some((ahead, state)) = states
        .iter()
        .find_map(|(id, s)| s.as_ref().filter(|s| s.epoch > from).map(|s| (id, s)))
    {
        return Err(Status::failed_precondition(format!(
            "{ahead} is at epoch {} of {name}, past epoch {from} that refresh {ceremony_id} moves \
             from: it may have committed it, so it is not aborted; finish it with \
             `permafrostctl keygroup recover --name {name}`",
            state.epoch
        )));
    }
    let holder_ids: Vec<NodeId> = holders.iter().map(|(id, _)| id.clone()).collect();
    let others: Vec<NodeId> = states
        .iter()
        .filter(|(id, s)| !holder_ids.contains(id) && s.as_ref().is_some_and(|s| s.epoch == from))
        .map(|(id, _)| id.clone())
        .collect();
    let silent: Vec<NodeId> = states
        .iter()
        .filter(|(_, s)| s.is_none())
        .map(|(id, _)| id.clone())
        .collect();
    let (promises, mut refusals) = ask_promises(coord, name, &ceremony_id, &others).await;
    if promises.is_empty() {
        for (id, state) in &states {
            if let Some(s) = state.as_ref().filter(|s| s.epoch < from) {
                refusals.push(format!("{id}: at epoch {}, behind the refresh", s.epoch));
            }
        }
        let why = if refusals.is_empty() {
            String::new()
        } else {
            format!(" ({})", refusals.join("; "))
        };
        if silent.is_empty() {
            return Err(Status::failed_precondition(format!(
                "no member of {name} can promise never to report refresh {ceremony_id}{why}: \
                 every member at epoch {from} reported it, so a complete commit certificate may \
                 exist and aborting could split the group's epochs. It is not aborted: finish it \
                 with `permafrostctl keygroup recover --name {name}` (it commits the refresh \
                 from every member's stored report; the coordinators' background pass does too)"
            )));
        }
        return Err(Status::unavailable(format!(
            "no member of {name} that has not reported refresh {ceremony_id} promised never to{why}; \
             {} did not answer: retry when they do",
            names(&silent)
        )));
    }
    let mut aborted = Aborted {
        ceremony_id: Some(ceremony_id.clone()),
        promised_by: promises.iter().map(|(id, _)| id.clone()).collect(),
        ..Default::default()
    };
    let drops = holder_ids.iter().map(|holder| {
        let (promises, ceremony_id) = (&promises, &ceremony_id);
        async move {
            (
                holder,
                drop_at(coord, holder, name, ceremony_id, promises).await,
            )
        }
    });
    for (holder, result) in futures::future::join_all(drops).await {
        match result {
            Ok(()) => aborted.dropped.push(holder.clone()),
            Err(why) => aborted.not_dropped.push(format!("{holder}: {why}")),
        }
    }
    coord
        .audit
        .append(
            "refresh_aborted",
            serde_json::json!({"group": name.as_str(), "ceremony": ceremony_id, "epoch": from, "promised_by": names(&aborted.promised_by), "dropped": names(&aborted.dropped), "not_dropped": aborted.not_dropped}),
        )
        .map_err(crate::audit_failed)?;
    info!(group = %name, ceremony = %ceremony_id, dropped = %names(&aborted.dropped), promised_by = %names(&aborted.promised_by), "refresh aborted");
    Ok(aborted)
}

/// Asks each of `members` for its promise never to report the refresh;
/// returns the promises and the refusals ("member: why").
async fn ask_promises(
    coord: &Coordinator,
    name: &GroupName,
    ceremony_id: &str,
    members: &[NodeId],
) -> (Vec<(NodeId, pb::RefreshAbandonPromise)>, Vec<String>) {
    let deadline = coord.config.round_timeout();
    let calls = members.iter().map(|id| {
        let client = coord.members.get(id).map(|m| m.client.clone());
        let request = pb::AbandonRefreshRequest {
            key_group: name.to_string(),
            ceremony_id: ceremony_id.to_string(),
        };
        async move {
            let Some(mut client) = client else {
                return (id, Err("not in the cluster manifest".to_string()));
            };
            let answer = match tokio::time::timeout(deadline, client.abandon_refresh(request)).await
            {
                Ok(Ok(promise)) => Ok(promise.into_inner()),
                Ok(Err(status)) => Err(status.message().to_string()),
                Err(_) => Err("did not answer in time".to_string()),
            };
            (id, answer)
        }
    });
    let mut promises = Vec::new();
    let mut refusals = Vec::new();
    for (id, answer) in futures::future::join_all(calls).await {
        match answer {
            Ok(promise) => promises.push((id.clone(), promise)),
            Err(why) => refusals.push(format!("{id}: {why}")),
        }
    }
    (promises, refusals)
}

/// Has `holder` drop its pending share of the refresh with the first of
/// `promises` it accepts (a promise from a member that takes no part in the
/// refresh is refused, and the next one tried).
async fn drop_at(
    coord: &Coordinator,
    holder: &NodeId,
    name: &GroupName,
    ceremony_id: &str,
    promises: &[(NodeId, pb::RefreshAbandonPromise)],
) -> Result<(), String> {
    let mut client = coord
        .members
        .get(holder)
        .map(|m| m.client.clone())
        .ok_or("not in the cluster manifest")?;
    let mut refused = Vec::new();
    for (member, promise) in promises {
        let request = pb::DropPendingRefreshRequest {
            key_group: name.to_string(),
            ceremony_id: ceremony_id.to_string(),
            promise: Some(promise.clone()),
        };
        match tokio::time::timeout(
            coord.config.round_timeout(),
            client.drop_pending_refresh(request),
        )
        .await
        {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(status)) if status.code() == Code::PermissionDenied => {
                refused.push(format!("{member}'s promise refused: {}", status.message()));
            }
            Ok(Err(status)) => return Err(status.message().to_string()),
            Err(_) => return Err("did not answer in time".into()),
        }
    }
    Err(refused.join("; "))
}
