//! The coordinator's sled store: key groups, withdrawal requests and their
//! outcomes, and members excluded for misbehaviour. Nothing secret is stored.

use permafrost_core::{GroupName, NodeId, RequestId, Tier};
use serde::{Deserialize, Serialize};

use crate::CoordinatorError;

/// A key group as the coordinator knows it (public data only).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GroupRecord {
    /// Record version.
    pub v: u32,
    /// Name.
    pub name: GroupName,
    /// Tier.
    pub tier: Tier,
    /// Signers needed.
    pub threshold: u16,
    /// Members in identifier order.
    pub members: Vec<NodeId>,
    /// Serialized public key package.
    pub public_key_package: Vec<u8>,
    /// 33-byte group key.
    pub group_public_key: Vec<u8>,
    /// Passed the activation test signature.
    pub active: bool,
}

/// Where a withdrawal stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestState {
    /// Accepted; signing in progress or waiting for signers.
    Pending,
    /// Signed; the signature verified against the group key.
    Signed,
    /// Refused or expired.
    Failed,
}

/// A withdrawal request and its outcome.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RequestRecord {
    /// Record version.
    pub v: u32,
    /// Protobuf encoding of the `SignedWithdrawal` as submitted.
    pub signed: Vec<u8>,
    /// Hex digest of the request.
    pub digest: String,
    /// State.
    pub state: RequestState,
    /// 65-byte signature once signed.
    pub signature: Vec<u8>,
    /// Nodes whose shares made the signature.
    pub signers: Vec<NodeId>,
    /// Why it failed, or what it waits for.
    pub detail: String,
    /// Signing attempts made.
    pub attempts: u32,
    /// Members caught sending invalid shares for this request.
    #[serde(default)]
    pub culprits: Vec<NodeId>,
    /// Approvals gathered so far (each node re-verifies them).
    #[serde(default)]
    pub approvals: Vec<ApprovalRecord>,
    /// When the coordinator accepted the request (Unix seconds).
    #[serde(default)]
    pub accepted_at: u64,
}

/// An approval as stored.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ApprovalRecord {
    /// Approver id.
    pub approver_id: String,
    /// Expiry, Unix seconds.
    pub expires_at: u64,
    /// Hex Ed25519 signature.
    pub signature: String,
}

impl ApprovalRecord {
    /// As a core approval.
    pub fn to_core(&self) -> permafrost_core::policy::Approval {
        permafrost_core::policy::Approval {
            approver_id: self.approver_id.clone(),
            expires_at: self.expires_at,
            signature: hex::decode(&self.signature).unwrap_or_default(),
        }
    }
}

/// Evidence that a member sent an invalid share (C1, X2).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Exclusion {
    /// Record version.
    pub v: u32,
    /// Group.
    pub group: GroupName,
    /// Culprit.
    pub node: NodeId,
    /// Request during which it happened.
    pub request_id: String,
    /// Hex of the invalid share.
    pub share: String,
    /// Hex of the signing package it was checked against.
    pub signing_package: String,
    /// Unix seconds.
    pub at: u64,
}

/// Handle on the coordinator's database.
#[derive(Clone)]
pub struct CoordinatorStore {
    db: sled::Db,
    groups: sled::Tree,
    requests: sled::Tree,
    exclusions: sled::Tree,
    revoked: sled::Tree,
}

fn db_err(e: sled::Error) -> CoordinatorError {
    CoordinatorError::Storage(e.to_string())
}

fn decode<T: for<'de> Deserialize<'de>>(what: &str, bytes: &[u8]) -> Result<T, CoordinatorError> {
    permafrost_proto::records::decode(what, bytes).map_err(CoordinatorError::Storage)
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CoordinatorError> {
    permafrost_proto::records::encode(value).map_err(CoordinatorError::Storage)
}

fn exclusion_key(group: &GroupName, node: &NodeId) -> String {
    format!("{group}/{node}")
}

impl CoordinatorStore {
    /// Opens (or creates) the store under `data_dir/store`.
    pub fn open(data_dir: &std::path::Path) -> Result<Self, CoordinatorError> {
        std::fs::create_dir_all(data_dir).map_err(|e| {
            CoordinatorError::Config(format!("data_dir = {}: {e}", data_dir.display()))
        })?;
        let db = sled::open(data_dir.join("store")).map_err(db_err)?;
        Ok(Self {
            groups: db.open_tree("groups").map_err(db_err)?,
            requests: db.open_tree("requests").map_err(db_err)?,
            exclusions: db.open_tree("exclusions").map_err(db_err)?,
            revoked: db.open_tree("revoked").map_err(db_err)?,
            db,
        })
    }

    /// A key group.
    pub fn group(&self, name: &GroupName) -> Result<Option<GroupRecord>, CoordinatorError> {
        self.groups
            .get(name.as_str())
            .map_err(db_err)?
            .map(|b| decode("key group", &b))
            .transpose()
    }

    /// All key groups.
    pub fn groups(&self) -> Result<Vec<GroupRecord>, CoordinatorError> {
        self.groups
            .iter()
            .map(|kv| {
                kv.map_err(db_err)
                    .and_then(|(_, v)| decode("key group", &v))
            })
            .collect()
    }

    /// Writes a key group durably.
    pub async fn put_group(&self, record: &GroupRecord) -> Result<(), CoordinatorError> {
        self.groups
            .insert(record.name.as_str(), encode(record)?)
            .map_err(db_err)?;
        self.db.flush_async().await.map_err(db_err)?;
        Ok(())
    }

    /// A request.
    pub fn request(&self, id: &RequestId) -> Result<Option<RequestRecord>, CoordinatorError> {
        self.requests
            .get(id.as_str())
            .map_err(db_err)?
            .map(|b| decode("request", &b))
            .transpose()
    }

    /// Inserts a new request durably; returns the existing record if the id is taken.
    pub async fn insert_request(
        &self,
        id: &RequestId,
        record: &RequestRecord,
    ) -> Result<Option<RequestRecord>, CoordinatorError> {
        match self
            .requests
            .compare_and_swap(id.as_str(), None as Option<&[u8]>, Some(encode(record)?))
            .map_err(db_err)?
        {
            Ok(()) => {
                self.db.flush_async().await.map_err(db_err)?;
                Ok(None)
            }
            Err(existing) => existing.current.map(|b| decode("request", &b)).transpose(),
        }
    }

    /// Overwrites a request durably.
    pub async fn put_request(
        &self,
        id: &RequestId,
        record: &RequestRecord,
    ) -> Result<(), CoordinatorError> {
        self.requests
            .insert(id.as_str(), encode(record)?)
            .map_err(db_err)?;
        self.db.flush_async().await.map_err(db_err)?;
        Ok(())
    }

    /// Ids of requests still pending (to resume after a restart).
    pub fn pending_requests(&self) -> Result<Vec<RequestId>, CoordinatorError> {
        let mut out = Vec::new();
        for kv in self.requests.iter() {
            let (k, v) = kv.map_err(db_err)?;
            let record: RequestRecord = decode("request", &v)?;
            if record.state == RequestState::Pending {
                let id = String::from_utf8(k.to_vec())
                    .map_err(|e| CoordinatorError::Storage(e.to_string()))?;
                out.push(RequestId::new(id).map_err(|e| CoordinatorError::Storage(e.to_string()))?);
            }
        }
        Ok(out)
    }

    /// Records an exclusion with its evidence.
    pub async fn exclude(&self, exclusion: &Exclusion) -> Result<(), CoordinatorError> {
        self.exclusions
            .insert(
                exclusion_key(&exclusion.group, &exclusion.node),
                encode(exclusion)?,
            )
            .map_err(db_err)?;
        self.db.flush_async().await.map_err(db_err)?;
        Ok(())
    }

    /// Revokes a node replaced after a loss: never contacted again.
    pub async fn revoke(&self, node: &NodeId) -> Result<(), CoordinatorError> {
        self.revoked
            .insert(node.as_str(), &[1u8][..])
            .map_err(db_err)?;
        self.db.flush_async().await.map_err(db_err)?;
        Ok(())
    }

    /// Revoked nodes.
    pub fn revoked(&self) -> Result<Vec<NodeId>, CoordinatorError> {
        self.revoked
            .iter()
            .keys()
            .map(|k| {
                let k = k.map_err(db_err)?;
                NodeId::new(String::from_utf8_lossy(&k).to_string())
                    .map_err(|e| CoordinatorError::Storage(e.to_string()))
            })
            .collect()
    }

    /// All exclusions with their evidence.
    pub fn exclusions(&self) -> Result<Vec<Exclusion>, CoordinatorError> {
        self.exclusions
            .iter()
            .map(|kv| {
                kv.map_err(db_err)
                    .and_then(|(_, v)| decode("exclusion", &v))
            })
            .collect()
    }

    /// Clears an exclusion (an operator's decision); false if there was none.
    pub async fn clear_exclusion(
        &self,
        group: &GroupName,
        node: &NodeId,
    ) -> Result<bool, CoordinatorError> {
        let removed = self
            .exclusions
            .remove(exclusion_key(group, node))
            .map_err(db_err)?
            .is_some();
        self.db.flush_async().await.map_err(db_err)?;
        Ok(removed)
    }

    /// Whether `node` is excluded from `group`.
    pub fn is_excluded(&self, group: &GroupName, node: &NodeId) -> Result<bool, CoordinatorError> {
        self.exclusions
            .contains_key(exclusion_key(group, node))
            .map_err(db_err)
    }
}
