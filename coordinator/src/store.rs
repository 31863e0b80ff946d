//! The coordinator's tables on the shared store (`permafrost-store`, redb):
//! key groups, withdrawal requests and their outcomes, members excluded for
//! misbehaviour, revoked nodes. Nothing secret is stored. A request and its
//! status are one record, changed in one store step.

use permafrost_core::{GroupName, NodeId, RequestId, Tier};
use serde::{Deserialize, Serialize};

use permafrost_store::{Durable, Store, StoreError, Table, Versioned, U64};

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
    /// Members in identifier order, removed ones included (they keep their
    /// place, so identifiers never move).
    pub members: Vec<NodeId>,
    /// Members removed by a remove-member ceremony: never a candidate,
    /// helper or ceremony participant again, and out of every `n`.
    #[serde(default)]
    pub removed: Vec<NodeId>,
    /// When the coordinator recorded each removal (Unix seconds): for a
    /// velocity window after it (and an hour more: the nodes' clocks), the
    /// removed member still counts in the `n` of a velocity read.
    #[serde(default)]
    pub removed_at: std::collections::BTreeMap<NodeId, u64>,
    /// Serialized public key package.
    pub public_key_package: Vec<u8>,
    /// 33-byte group key.
    pub group_public_key: Vec<u8>,
    /// Passed the activation test signature.
    pub active: bool,
    /// The epoch the coordinator last moved the group to (1 once created);
    /// the members hold their own and decide by theirs.
    #[serde(default = "first_epoch")]
    pub epoch: u64,
    /// The group's operator registry sequence as this coordinator last saw
    /// the members apply it (0: the config's registry, never changed).
    #[serde(default)]
    pub registry_seq: u64,
    /// The registry a change-registry ceremony installed for the group, if
    /// one did (this coordinator fails fast against it; the nodes decide).
    #[serde(default)]
    pub registry: Option<permafrost_core::ceremony::RegistryConfig>,
}

impl GroupRecord {
    /// The `n` the nodes need `n − t + 1` velocity attestations of (the
    /// coordinator's view, an hour on the safe side of the nodes' clocks).
    pub fn velocity_members(&self, now: u64) -> usize {
        permafrost_core::velocity::counted_members(
            self.active_members().len(),
            self.removed.iter().map(|m| self.removed_at.get(m).copied()),
            now,
            3600,
        )
    }

    /// Records `removed` as the group's tombstones, timing the new ones.
    pub fn set_removed(&mut self, removed: &[NodeId], now: u64) {
        for m in removed {
            self.removed_at.entry(m.clone()).or_insert(now);
        }
        self.removed = removed.to_vec();
    }

    /// The members not removed, in identifier order.
    pub fn active_members(&self) -> Vec<NodeId> {
        self.members
            .iter()
            .filter(|m| !self.removed.contains(m))
            .cloned()
            .collect()
    }
}

fn first_epoch() -> u64 {
    1
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

/// Why a request stands where it does (the wire's `WithdrawalReason`):
/// clients act on this, never on the `detail` text.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Stored; signing not started yet.
    #[default]
    Accepted,
    /// A signing attempt runs or is being retried.
    Signing,
    /// Approvals are missing.
    WaitingForApprovals,
    /// The time-lock still holds.
    TimeLocked,
    /// Too few members reachable; signs when they return.
    BelowThreshold,
    /// Signed.
    Signed,
    /// The policy refuses it for good (`policy_rule` says which rule).
    RefusedByPolicy,
    /// Too many members refused it on their own checks.
    RefusedBySigners,
    /// Expired before it could be signed.
    Expired,
    /// Anything else; `detail` says what.
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
    /// Why it stands where it does.
    #[serde(default)]
    pub reason: Reason,
    /// With [`Reason::RefusedByPolicy`]: the rule broken.
    #[serde(default)]
    pub policy_rule: Option<permafrost_core::policy::PolicyRule>,
    /// Taproot: each input's 64-byte BIP340 signature, in input order.
    #[serde(default)]
    pub input_signatures: Vec<Vec<u8>>,
    /// Taproot: the fully signed transaction, hex.
    #[serde(default)]
    pub tx: String,
    /// Taproot: its txid.
    #[serde(default)]
    pub txid: String,
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
    /// As a core approval; a stored signature that is not hex is a corrupt record.
    pub fn to_core(&self) -> Result<permafrost_core::policy::Approval, CoordinatorError> {
        Ok(permafrost_core::policy::Approval {
            approver_id: self.approver_id.clone(),
            expires_at: self.expires_at,
            signature: self.signature_bytes()?,
        })
    }

    /// The stored signature's bytes.
    pub fn signature_bytes(&self) -> Result<Vec<u8>, CoordinatorError> {
        hex::decode(&self.signature).map_err(|e| {
            CoordinatorError::Storage(format!(
                "stored approval of {} has a signature that is not hex: {e}",
                self.approver_id
            ))
        })
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
#[derive(Clone, Debug)]
pub struct CoordinatorStore {
    store: Store,
}

const GROUPS: Table<Versioned<GroupRecord>> = Table::new("groups", "key group");
const REQUESTS: Table<Versioned<RequestRecord>> = Table::new("requests", "request");
const EXCLUSIONS: Table<Versioned<Exclusion>> = Table::new("exclusions", "exclusion");
const REVOKED: Table<U64> = Table::new("revoked", "revoked node");
const TABLES: &[&str] = &[
    GROUPS.name(),
    REQUESTS.name(),
    EXCLUSIONS.name(),
    REVOKED.name(),
];

impl From<StoreError> for CoordinatorError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Busy { .. } => CoordinatorError::Busy(e.to_string()),
            other => CoordinatorError::Storage(other.to_string()),
        }
    }
}

fn exclusion_key(group: &GroupName, node: &NodeId) -> String {
    format!("{group}/{node}")
}

impl CoordinatorStore {
    /// Opens (or creates) the store in `data_dir`.
    pub fn open(data_dir: &std::path::Path) -> Result<Self, CoordinatorError> {
        std::fs::create_dir_all(data_dir).map_err(|e| {
            CoordinatorError::Config(format!("data_dir = {}: {e}", data_dir.display()))
        })?;
        Ok(Self {
            store: Store::open(data_dir, TABLES)?,
        })
    }

    /// The underlying store (health and counters).
    pub fn inner(&self) -> &Store {
        &self.store
    }

    /// A key group.
    pub fn group(&self, name: &GroupName) -> Result<Option<GroupRecord>, CoordinatorError> {
        Ok(self.store.get(&GROUPS, name.as_str())?)
    }

    /// All key groups.
    pub fn groups(&self) -> Result<Vec<GroupRecord>, CoordinatorError> {
        Ok(self
            .store
            .all(&GROUPS)?
            .into_iter()
            .map(|(_, g)| g)
            .collect())
    }

    /// Writes a key group durably.
    pub async fn put_group(&self, record: &GroupRecord) -> Result<(), CoordinatorError> {
        let record = record.clone();
        self.store
            .write(move |w| {
                Ok::<_, CoordinatorError>(w.put(&GROUPS, record.name.as_str(), &record)?)
            })
            .await
    }

    /// A request.
    pub fn request(&self, id: &RequestId) -> Result<Option<RequestRecord>, CoordinatorError> {
        Ok(self.store.get(&REQUESTS, id.as_str())?)
    }

    /// Inserts a new request; returns the existing record if the id is taken.
    ///
    /// The record is visible at once and durable once the returned
    /// [`Durable`] resolves (the signing rounds run meanwhile; nodes' own
    /// journals are what hold one digest per request id). Wait on it before
    /// answering the client.
    pub async fn insert_request(
        &self,
        id: &RequestId,
        record: &RequestRecord,
    ) -> Result<(Option<RequestRecord>, Durable), CoordinatorError> {
        let id = id.clone();
        let record = record.clone();
        self.store
            .write_deferred(move |w| {
                if let Some(existing) = w.get(&REQUESTS, id.as_str())? {
                    return Ok::<_, CoordinatorError>(Some(existing));
                }
                w.put(&REQUESTS, id.as_str(), &record)?;
                Ok(None)
            })
            .await
    }

    /// Reads, changes and durably writes a request record in one step.
    pub async fn update_request<F>(&self, id: &RequestId, change: F) -> Result<(), CoordinatorError>
    where
        F: FnOnce(&mut RequestRecord) + Send + 'static,
    {
        let id = id.clone();
        self.store
            .write(move |w| {
                let mut record = w.get(&REQUESTS, id.as_str())?.ok_or_else(|| {
                    CoordinatorError::Storage(format!("request {id} vanished from the store"))
                })?;
                change(&mut record);
                w.put(&REQUESTS, id.as_str(), &record)?;
                Ok(())
            })
            .await
    }

    /// Ids of requests still pending (to resume after a restart).
    pub fn pending_requests(&self) -> Result<Vec<RequestId>, CoordinatorError> {
        let mut out = Vec::new();
        for (k, record) in self.store.all(&REQUESTS)? {
            if record.state == RequestState::Pending {
                let id = String::from_utf8(k)
                    .map_err(|e| CoordinatorError::Storage(format!("request id: {e}")))?;
                out.push(
                    RequestId::new(id)
                        .map_err(|e| CoordinatorError::Storage(format!("request id: {e}")))?,
                );
            }
        }
        Ok(out)
    }

    /// Records an exclusion with its evidence.
    pub async fn exclude(&self, exclusion: &Exclusion) -> Result<(), CoordinatorError> {
        let exclusion = exclusion.clone();
        self.store
            .write(move |w| {
                Ok::<_, CoordinatorError>(w.put(
                    &EXCLUSIONS,
                    exclusion_key(&exclusion.group, &exclusion.node),
                    &exclusion,
                )?)
            })
            .await
    }

    /// Revokes a node replaced after a loss: never contacted again.
    pub async fn revoke(&self, node: &NodeId) -> Result<(), CoordinatorError> {
        let node = node.clone();
        self.store
            .write(move |w| {
                Ok::<_, CoordinatorError>(w.put(
                    &REVOKED,
                    node.as_str(),
                    &permafrost_core::unix_now(),
                )?)
            })
            .await
    }

    /// Revoked nodes.
    pub fn revoked(&self) -> Result<Vec<NodeId>, CoordinatorError> {
        self.store
            .all(&REVOKED)?
            .into_iter()
            .map(|(k, _)| {
                NodeId::new(String::from_utf8_lossy(&k).to_string())
                    .map_err(|e| CoordinatorError::Storage(format!("revoked node id: {e}")))
            })
            .collect()
    }

    /// All exclusions with their evidence.
    pub fn exclusions(&self) -> Result<Vec<Exclusion>, CoordinatorError> {
        Ok(self
            .store
            .all(&EXCLUSIONS)?
            .into_iter()
            .map(|(_, e)| e)
            .collect())
    }

    /// Clears an exclusion (an operator's decision); false if there was none.
    pub async fn clear_exclusion(
        &self,
        group: &GroupName,
        node: &NodeId,
    ) -> Result<bool, CoordinatorError> {
        let key = exclusion_key(group, node);
        self.store
            .write(move |w| Ok::<_, CoordinatorError>(w.remove(&EXCLUSIONS, key)?))
            .await
    }

    /// Whether `node` is excluded from `group`.
    pub fn is_excluded(&self, group: &GroupName, node: &NodeId) -> Result<bool, CoordinatorError> {
        Ok(self
            .store
            .get(&EXCLUSIONS, exclusion_key(group, node))?
            .is_some())
    }
}
