//! What this node decided about each refresh it was asked about (THREATS
//! K7): that it reported it, that it promised never to report it, or that it
//! dropped its pending share of it on a participant's promise. Kept for good,
//! by group and ceremony id, so a restart forgets no promise.
//!
//! The service takes these steps under one lock (`SignerNode::refresh_lock`);
//! each store step here checks the mark again inside its own commit, so even
//! a caller that skipped the lock could never both report and promise.

use permafrost_core::{GroupName, NodeId};
use permafrost_store::{Table, Versioned, WriteTxn};
use serde::{Deserialize, Serialize};

use super::{GroupRecord, NodeStore, PendingRefresh, GROUPS};
use crate::NodeError;

/// Refresh marks by `group || 0 || ceremony id` (group names hold no 0 byte).
pub(super) const REFRESH_MARKS: Table<Versioned<RefreshMark>> =
    Table::new("refresh_marks", "refresh mark");

/// This node's standing towards one refresh of one group.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RefreshMark {
    /// Record version.
    pub v: u32,
    /// The epoch the group was at here when the refresh was first marked.
    pub epoch: u64,
    /// This node stored its new share and signed its report (it may have
    /// left): a certificate may exist, so it never promises.
    #[serde(default)]
    pub reported: bool,
    /// This node promised never to report the refresh.
    #[serde(default)]
    pub promised: bool,
    /// The participant whose promise this node accepted to drop its pending
    /// share of the refresh.
    #[serde(default)]
    pub dropped_on: Option<NodeId>,
    /// When the mark last changed (Unix seconds).
    pub at: u64,
}

impl RefreshMark {
    /// Whether the refresh can never be committed, as this node knows: it
    /// takes no step of it again.
    pub fn closed(&self) -> bool {
        self.promised || self.dropped_on.is_some()
    }
}

fn key(group: &GroupName, ceremony_id: &str) -> Vec<u8> {
    let mut k = group.as_str().as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(ceremony_id.as_bytes());
    k
}

fn mark_in(
    w: &WriteTxn<'_>,
    group: &GroupName,
    ceremony_id: &str,
    epoch: u64,
) -> Result<RefreshMark, NodeError> {
    Ok(w.get(&REFRESH_MARKS, key(group, ceremony_id))?
        .unwrap_or(RefreshMark {
            v: permafrost_store::RECORD_VERSION,
            epoch,
            ..Default::default()
        }))
}

impl NodeStore {
    /// This node's mark of refresh `ceremony_id` of `group`, if it has one.
    pub fn refresh_mark(
        &self,
        group: &GroupName,
        ceremony_id: &str,
    ) -> Result<Option<RefreshMark>, NodeError> {
        Ok(self.store.get(&REFRESH_MARKS, key(group, ceremony_id))?)
    }

    /// Stores `record`, which holds the new share of refresh `ceremony_id`
    /// as its pending one, and marks that refresh reported, in one step;
    /// refused if this node promised never to report it or dropped it.
    pub async fn hold_pending_refresh(
        &self,
        record: &GroupRecord,
        ceremony_id: &str,
        epoch: u64,
    ) -> Result<(), NodeError> {
        let (record, ceremony_id) = (record.clone(), ceremony_id.to_string());
        self.store
            .write(move |w| {
                let mut mark = mark_in(w, &record.name, &ceremony_id, epoch)?;
                if mark.closed() {
                    return Err(NodeError::Precondition(format!(
                        "refresh {ceremony_id} of {} was abandoned on this node; it reports nothing for it",
                        record.name
                    )));
                }
                mark.reported = true;
                mark.at = permafrost_core::unix_now();
                w.put(&GROUPS, record.name.as_str(), &record)?;
                w.put(&REFRESH_MARKS, key(&record.name, &ceremony_id), &mark)?;
                Ok(())
            })
            .await
    }

    /// Records durably that this node never reports refresh `ceremony_id`
    /// of `group` (held at `epoch`); refused if it has reported it.
    pub async fn promise_abandon(
        &self,
        group: &GroupName,
        ceremony_id: &str,
        epoch: u64,
    ) -> Result<RefreshMark, NodeError> {
        let (group, ceremony_id) = (group.clone(), ceremony_id.to_string());
        self.store
            .write(move |w| {
                let mut mark = mark_in(w, &group, &ceremony_id, epoch)?;
                if mark.reported {
                    return Err(NodeError::Precondition(format!(
                        "this node reported refresh {ceremony_id} of {group}; it cannot promise not to"
                    )));
                }
                if !mark.promised {
                    mark.promised = true;
                    mark.at = permafrost_core::unix_now();
                    w.put(&REFRESH_MARKS, key(&group, &ceremony_id), &mark)?;
                }
                Ok(mark)
            })
            .await
    }

    /// Clears the pending share of refresh `ceremony_id` from `group`'s
    /// record and marks the refresh dropped on `promised_by`'s promise, in
    /// one step. Returns the share taken out (its data key is the caller's
    /// to destroy), or `None` when none of that refresh was pending.
    pub async fn drop_pending_refresh(
        &self,
        group: &GroupName,
        ceremony_id: &str,
        epoch: u64,
        promised_by: &NodeId,
    ) -> Result<Option<PendingRefresh>, NodeError> {
        let (group, ceremony_id) = (group.clone(), ceremony_id.to_string());
        let promised_by = promised_by.clone();
        self.store
            .write(move |w| {
                let Some(mut record) = w.get(&GROUPS, group.as_str())? else {
                    return Ok(None);
                };
                let held = record
                    .pending_refresh
                    .as_ref()
                    .is_some_and(|p| p.ceremony_id == ceremony_id);
                if record.retired || !held {
                    return Ok(None);
                }
                let pending = record.pending_refresh.take();
                let mut mark = mark_in(w, &group, &ceremony_id, epoch)?;
                // It held the share, so it reported (perhaps before marks existed).
                mark.reported = true;
                mark.dropped_on = Some(promised_by);
                mark.at = permafrost_core::unix_now();
                w.put(&GROUPS, group.as_str(), &record)?;
                w.put(&REFRESH_MARKS, key(&group, &ceremony_id), &mark)?;
                Ok(pending)
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use permafrost_core::Tier;

    use super::*;

    fn group() -> GroupName {
        GroupName::new("warm-1").expect("name")
    }

    fn record(pending: Option<&str>) -> GroupRecord {
        GroupRecord {
            v: permafrost_store::RECORD_VERSION,
            name: group(),
            tier: Tier::Warm,
            threshold: 2,
            members: ["n1", "n2", "n3"]
                .iter()
                .map(|n| NodeId::new(*n).expect("id"))
                .collect(),
            removed: Vec::new(),
            removed_at: Default::default(),
            ceremony_id: "create".into(),
            sealed_key_package: vec![1],
            public_key_package: vec![2],
            group_public_key: vec![3],
            active: true,
            pending_refresh: pending.map(|c| PendingRefresh {
                ceremony_id: c.into(),
                sealed_key_package: vec![4],
                public_key_package: vec![5],
                report: None,
                spec: None,
                authorization: None,
            }),
            scheme: Default::default(),
            network: None,
            refresh_certificate: None,
            prepared_repair: None,
            repair_certificate: None,
            retired: false,
        }
    }

    fn open() -> (tempfile::TempDir, NodeStore) {
        let dir = tempfile::tempdir().expect("dir");
        let store = NodeStore::open(dir.path()).expect("open");
        (dir, store)
    }

    #[tokio::test]
    async fn k7_a_reported_refresh_is_never_promised() {
        let (_dir, store) = open();
        store
            .hold_pending_refresh(&record(Some("r-1")), "r-1", 1)
            .await
            .expect("report");
        let err = store
            .promise_abandon(&group(), "r-1", 1)
            .await
            .expect_err("reported");
        assert!(matches!(err, NodeError::Precondition(_)), "{err}");
        let mark = store
            .refresh_mark(&group(), "r-1")
            .expect("read")
            .expect("mark");
        assert!(mark.reported && !mark.closed(), "{mark:?}");
        // Another refresh is its own matter.
        store
            .promise_abandon(&group(), "r-2", 1)
            .await
            .expect("never reported r-2");
    }

    #[tokio::test]
    async fn k7_a_promised_refresh_is_never_reported() {
        let (_dir, store) = open();
        store.put_group(&record(None)).await.expect("group");
        let mark = store
            .promise_abandon(&group(), "r-1", 1)
            .await
            .expect("promise");
        assert!(mark.promised && mark.closed());
        // The same promise again is fine; reporting after it is not.
        store
            .promise_abandon(&group(), "r-1", 1)
            .await
            .expect("again");
        let err = store
            .hold_pending_refresh(&record(Some("r-1")), "r-1", 1)
            .await
            .expect_err("promised");
        assert!(err.to_string().contains("abandoned"), "{err}");
        let held = store.group(&group()).expect("read").expect("group");
        assert!(held.pending_refresh.is_none(), "nothing of it was stored");
    }

    #[tokio::test]
    async fn k7_a_dropped_share_is_gone_with_its_refresh() {
        let (_dir, store) = open();
        store
            .hold_pending_refresh(&record(Some("r-1")), "r-1", 1)
            .await
            .expect("report");
        let n3 = NodeId::new("n3").expect("id");
        // Another refresh's id drops nothing.
        let none = store
            .drop_pending_refresh(&group(), "r-2", 1, &n3)
            .await
            .expect("drop");
        assert!(none.is_none());
        let taken = store
            .drop_pending_refresh(&group(), "r-1", 1, &n3)
            .await
            .expect("drop")
            .expect("the pending share");
        assert_eq!(taken.ceremony_id, "r-1");
        let held = store.group(&group()).expect("read").expect("group");
        assert!(held.pending_refresh.is_none());
        assert_eq!(held.sealed_key_package, vec![1], "the current share stays");
        let mark = store
            .refresh_mark(&group(), "r-1")
            .expect("read")
            .expect("mark");
        assert_eq!(mark.dropped_on.as_ref(), Some(&n3));
        assert!(mark.reported && mark.closed(), "{mark:?}");
        // Nothing of it is held again, and the node still never promises.
        store
            .hold_pending_refresh(&record(Some("r-1")), "r-1", 1)
            .await
            .expect_err("dropped");
        store
            .promise_abandon(&group(), "r-1", 1)
            .await
            .expect_err("it reported");
        let again = store
            .drop_pending_refresh(&group(), "r-1", 1, &n3)
            .await
            .expect("drop again");
        assert!(again.is_none());
    }
}
