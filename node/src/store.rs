//! The node's sled store: sealed identity, key groups (sealed key packages),
//! and the request journal. Nonces are never stored here.

use permafrost_core::withdrawal::RequestDigest;
use permafrost_core::{GroupName, NodeId, RequestId, Tier};
use serde::{Deserialize, Serialize};

use crate::NodeError;

use permafrost_proto::records::RECORD_VERSION;

/// A key group this node holds a share of.
#[derive(Clone, Serialize, Deserialize)]
pub struct GroupRecord {
    /// Record version.
    pub v: u32,
    /// Group name.
    pub name: GroupName,
    /// Tier.
    pub tier: Tier,
    /// Signers needed.
    pub threshold: u16,
    /// Members in identifier order (member i has identifier i+1).
    pub members: Vec<NodeId>,
    /// Ceremony that created it.
    pub ceremony_id: String,
    /// The sealed frost `KeyPackage` (ciphertext; see `permafrost-hsm`).
    pub sealed_key_package: Vec<u8>,
    /// Serialized public key package.
    pub public_key_package: Vec<u8>,
    /// 33-byte group key.
    pub group_public_key: Vec<u8>,
    /// Passed its activation test signature.
    pub active: bool,
    /// New shares from a refresh, waiting for every member's confirmation (K6).
    #[serde(default)]
    pub pending_refresh: Option<PendingRefresh>,
}

/// A refreshed share not yet in use; the old one is kept until all confirm.
#[derive(Clone, Serialize, Deserialize)]
pub struct PendingRefresh {
    /// Refresh ceremony id.
    pub ceremony_id: String,
    /// The new sealed key package.
    pub sealed_key_package: Vec<u8>,
    /// The new public key package.
    pub public_key_package: Vec<u8>,
}

impl std::fmt::Debug for GroupRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupRecord")
            .field("name", &self.name)
            .field("tier", &self.tier)
            .field("threshold", &self.threshold)
            .field("active", &self.active)
            .finish_non_exhaustive()
    }
}

/// A request this node released a share for.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JournalEntry {
    /// Record version.
    pub v: u32,
    /// Digest of the only request this id may ever sign.
    pub digest: String,
    /// Key group.
    pub key_group: GroupName,
    /// When the first share was released (Unix seconds).
    pub first_share_at: u64,
    /// Shares released for it (retries on fresh subsets sign the same digest).
    pub shares_released: u32,
}

/// Handle on the node's database.
#[derive(Clone)]
pub struct NodeStore {
    db: sled::Db,
    meta: sled::Tree,
    groups: sled::Tree,
    journal: sled::Tree,
    seen: sled::Tree,
    velocity: sled::Tree,
}

fn velocity_prefix(group: &GroupName, asset: &str) -> Vec<u8> {
    let mut p = Vec::with_capacity(group.as_str().len() + asset.len() + 2);
    p.extend_from_slice(group.as_str().as_bytes());
    p.push(0);
    p.extend_from_slice(asset.as_bytes());
    p.push(0);
    p
}

fn db_err(e: sled::Error) -> NodeError {
    NodeError::Storage(e.to_string())
}

fn decode<T: for<'de> Deserialize<'de>>(what: &str, bytes: &[u8]) -> Result<T, NodeError> {
    permafrost_proto::records::decode(what, bytes).map_err(NodeError::Storage)
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, NodeError> {
    permafrost_proto::records::encode(value).map_err(NodeError::Storage)
}

impl NodeStore {
    /// Opens (or creates) the store under `data_dir/store`.
    pub fn open(data_dir: &std::path::Path) -> Result<Self, NodeError> {
        let db = sled::open(data_dir.join("store")).map_err(db_err)?;
        Ok(Self {
            meta: db.open_tree("meta").map_err(db_err)?,
            groups: db.open_tree("groups").map_err(db_err)?,
            journal: db.open_tree("journal").map_err(db_err)?,
            seen: db.open_tree("seen").map_err(db_err)?,
            velocity: db.open_tree("velocity").map_err(db_err)?,
            db,
        })
    }

    /// A sealed blob in the meta tree (identity, TLS key).
    pub fn sealed(&self, name: &str) -> Result<Option<Vec<u8>>, NodeError> {
        Ok(self.meta.get(name).map_err(db_err)?.map(|v| v.to_vec()))
    }

    /// Stores a sealed blob durably; refuses to overwrite.
    pub fn put_sealed_new(&self, name: &str, blob: &[u8]) -> Result<(), NodeError> {
        self.meta
            .compare_and_swap(name, None as Option<&[u8]>, Some(blob))
            .map_err(db_err)?
            .map_err(|_| {
                NodeError::Storage(format!("{name} already exists; refusing to overwrite"))
            })?;
        self.db.flush().map_err(db_err)?;
        Ok(())
    }

    /// Reads a key group.
    pub fn group(&self, name: &GroupName) -> Result<Option<GroupRecord>, NodeError> {
        self.groups
            .get(name.as_str())
            .map_err(db_err)?
            .map(|b| decode("key group", &b))
            .transpose()
    }

    /// All key groups.
    pub fn groups(&self) -> Result<Vec<GroupRecord>, NodeError> {
        self.groups
            .iter()
            .map(|kv| {
                kv.map_err(db_err)
                    .and_then(|(_, v)| decode("key group", &v))
            })
            .collect()
    }

    /// Inserts a new key group; refuses if the name is taken.
    pub async fn insert_group(&self, record: &GroupRecord) -> Result<(), NodeError> {
        let mut record = record.clone();
        record.v = RECORD_VERSION;
        self.groups
            .compare_and_swap(
                record.name.as_str(),
                None as Option<&[u8]>,
                Some(encode(&record)?),
            )
            .map_err(db_err)?
            .map_err(|_| {
                NodeError::Refused(format!(
                    "key group {} already exists on this node",
                    record.name
                ))
            })?;
        self.db.flush_async().await.map_err(db_err)?;
        Ok(())
    }

    /// Overwrites a group record durably.
    pub async fn put_group(&self, record: &GroupRecord) -> Result<(), NodeError> {
        self.groups
            .insert(record.name.as_str(), encode(record)?)
            .map_err(db_err)?;
        self.db.flush_async().await.map_err(db_err)?;
        Ok(())
    }

    /// Records that `node` was replaced after a loss: never accepted in a ceremony again.
    pub async fn revoke(&self, node: &NodeId) -> Result<(), NodeError> {
        self.meta
            .insert(format!("revoked/{node}"), &[1u8][..])
            .map_err(db_err)?;
        self.db.flush_async().await.map_err(db_err)?;
        Ok(())
    }

    /// Whether `node` was revoked.
    pub fn is_revoked(&self, node: &NodeId) -> Result<bool, NodeError> {
        self.meta
            .contains_key(format!("revoked/{node}"))
            .map_err(db_err)
    }

    /// Marks a group active.
    pub async fn activate_group(&self, name: &GroupName) -> Result<(), NodeError> {
        let mut record = self
            .group(name)?
            .ok_or_else(|| NodeError::NotFound(format!("key group {name}")))?;
        record.active = true;
        self.groups
            .insert(name.as_str(), encode(&record)?)
            .map_err(db_err)?;
        self.db.flush_async().await.map_err(db_err)?;
        Ok(())
    }

    /// When this node first saw `request_id`, recording `now` if it never had (starts its time-lock clock).
    pub async fn first_seen(&self, request_id: &RequestId, now: u64) -> Result<u64, NodeError> {
        match self
            .seen
            .compare_and_swap(
                request_id.as_str(),
                None as Option<&[u8]>,
                Some(&now.to_be_bytes()[..]),
            )
            .map_err(db_err)?
        {
            Ok(()) => {
                self.db.flush_async().await.map_err(db_err)?;
                Ok(now)
            }
            Err(existing) => {
                let bytes = existing
                    .current
                    .ok_or_else(|| NodeError::Storage("seen record vanished".into()))?;
                let arr: [u8; 8] = bytes
                    .as_ref()
                    .try_into()
                    .map_err(|_| NodeError::Storage("corrupt seen record".into()))?;
                Ok(u64::from_be_bytes(arr))
            }
        }
    }

    /// Total of `asset` withdrawn from `group` with shares released by this node
    /// since `since`, not counting `exclude` (P1: counted once per request id).
    pub fn spent_since(
        &self,
        group: &GroupName,
        asset: &str,
        since: u64,
        exclude: &RequestId,
    ) -> Result<u128, NodeError> {
        let prefix = velocity_prefix(group, asset);
        let id_offset = prefix.len() + 9; // u64 timestamp and '/'
        let mut start = prefix.clone();
        start.extend_from_slice(&since.to_be_bytes());
        let mut end = prefix;
        end.extend_from_slice(&u64::MAX.to_be_bytes());
        let mut total = 0u128;
        for kv in self.velocity.range(start..=end) {
            let (k, v) = kv.map_err(db_err)?;
            if k.get(id_offset..) == Some(exclude.as_str().as_bytes()) {
                continue;
            }
            let arr: [u8; 16] = v
                .as_ref()
                .try_into()
                .map_err(|_| NodeError::Storage("corrupt velocity record".into()))?;
            total = total.saturating_add(u128::from_be_bytes(arr));
        }
        Ok(total)
    }

    /// Records, durably, that a share for `request_id` with `digest` is about to be released,
    /// and counts its amount in the velocity ledger the first time only.
    /// Refuses if the id was ever used with another digest (invariant 3).
    pub async fn journal_share(
        &self,
        request_id: &RequestId,
        digest: &RequestDigest,
        key_group: &GroupName,
        asset_amount: Option<(&str, u128)>,
        now: u64,
    ) -> Result<(), NodeError> {
        loop {
            let current = self.journal.get(request_id.as_str()).map_err(db_err)?;
            let next = match &current {
                Some(bytes) => {
                    let mut entry: JournalEntry = decode("journal", bytes)?;
                    if entry.digest != digest.to_hex() {
                        return Err(NodeError::Refused(format!(
                            "request id {request_id} was already signed with a different digest"
                        )));
                    }
                    entry.shares_released += 1;
                    entry
                }
                None => JournalEntry {
                    v: RECORD_VERSION,
                    digest: digest.to_hex(),
                    key_group: key_group.clone(),
                    first_share_at: now,
                    shares_released: 1,
                },
            };
            let swapped = self
                .journal
                .compare_and_swap(request_id.as_str(), current.clone(), Some(encode(&next)?))
                .map_err(db_err)?;
            if swapped.is_ok() {
                if let (None, Some((asset, amount))) = (&current, asset_amount) {
                    let mut key = velocity_prefix(key_group, asset);
                    key.extend_from_slice(&now.to_be_bytes());
                    key.push(b'/');
                    key.extend_from_slice(request_id.as_str().as_bytes());
                    self.velocity
                        .insert(key, &amount.to_be_bytes()[..])
                        .map_err(db_err)?;
                }
                break;
            }
        }
        self.db.flush_async().await.map_err(db_err)?;
        Ok(())
    }

    /// A journal entry, if any.
    pub fn journal_entry(&self, request_id: &RequestId) -> Result<Option<JournalEntry>, NodeError> {
        self.journal
            .get(request_id.as_str())
            .map_err(db_err)?
            .map(|b| decode("journal", &b))
            .transpose()
    }
}
