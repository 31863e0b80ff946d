//! The node's tables on the shared store (`permafrost-store`, redb): sealed
//! identity, key groups (sealed key packages), the request journal, the
//! velocity ledger and the first-sight clock. Nonces are never stored here.
//!
//! This module only keeps ciphertext: a share is sealed and opened in
//! [`crate::vault::ShareVault`], under the one context for key shares.
//!
//! Every multi-key step is one store step, so it is whole or absent after any
//! crash: [`NodeStore::journal_share`] checks the policy on the ledger as it
//! stands inside the commit, records first sight, the journal entry and the
//! velocity count together.

use permafrost_core::taproot::{GroupOutput, Network, Scheme};
use permafrost_core::withdrawal::RequestDigest;
use permafrost_core::{CoreError, GroupName, NodeId, RequestId, Tier};
use permafrost_store::{Bytes, Store, StoreError, Table, Versioned, WriteTxn, U128, U64};
use serde::{Deserialize, Serialize};

use crate::NodeError;

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
    /// Members in identifier order (member i has identifier i+1), removed
    /// ones included: they keep their place so no identifier ever moves.
    pub members: Vec<NodeId>,
    /// Members removed by a remove-member ceremony (tombstones): they never
    /// sign, attest, help or take part again, and count out of every `n`.
    #[serde(default)]
    pub removed: Vec<NodeId>,
    /// When this node recorded each removal (Unix seconds, its clock): for a
    /// velocity window after it, the removed member still counts in the `n`
    /// of a velocity read (`velocity::counted_members`).
    #[serde(default)]
    pub removed_at: std::collections::BTreeMap<NodeId, u64>,
    /// Ceremony that created it.
    pub ceremony_id: String,
    /// The sealed frost `KeyPackage` (ciphertext; see [`crate::vault::ShareVault`]).
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
    /// How the group signs, fixed from this node's policy when its share was made.
    #[serde(default)]
    pub scheme: Scheme,
    /// A taproot group's network.
    #[serde(default)]
    pub network: Option<Network>,
    /// The commit certificate (an encoded `CommitRefreshRequest`: spec, every
    /// member's report, the operators' authorization) of the refresh that
    /// moved this group to its current epoch here, kept so that any
    /// coordinator can finish that refresh on members that missed it (K7).
    #[serde(default)]
    pub refresh_certificate: Option<Vec<u8>>,
    /// A repair this node acknowledged (prepare) and has not moved for yet:
    /// it acknowledges no other repair of the same epoch under another
    /// approval until that approval expires (X6).
    #[serde(default)]
    pub prepared_repair: Option<PreparedRepair>,
    /// The certificate (an encoded `RepairRequest`: spec, authorization and
    /// every remaining member's acknowledgement) of the repair that last
    /// moved this group's epoch here, for any coordinator to finish it on
    /// members that missed it.
    #[serde(default)]
    pub repair_certificate: Option<Vec<u8>>,
    /// Retired by an operator quorum: the share is destroyed and the group
    /// takes no step again.
    #[serde(default)]
    pub retired: bool,
}

/// A repair acknowledged in its prepare phase.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PreparedRepair {
    /// The repair's id.
    pub repair_id: String,
    /// Hex digest of the operators' lifecycle spec it runs under.
    pub spec_digest: String,
    /// The epoch it moves the group from.
    pub epoch: u64,
    /// When that approval expires (unix seconds).
    pub expires_at: u64,
}

impl GroupRecord {
    /// The `n` a velocity read of this group needs `n − t + 1` of, now.
    pub fn velocity_members(&self, now: u64, skew: u64) -> usize {
        permafrost_core::velocity::counted_members(
            self.active_members().count(),
            self.removed.iter().map(|m| self.removed_at.get(m).copied()),
            now,
            skew,
        )
    }

    /// Records `removed` as the group's tombstones, timing the new ones.
    pub fn set_removed(&mut self, removed: &[NodeId], now: u64) {
        for m in removed {
            self.removed_at.entry(m.clone()).or_insert(now);
        }
        self.removed = removed.to_vec();
    }

    /// The members not removed, in identifier order (with their identifiers).
    pub fn active_members(&self) -> impl Iterator<Item = (u16, &NodeId)> + '_ {
        self.members
            .iter()
            .enumerate()
            .filter(|(_, m)| !self.removed.contains(m))
            .map(|(i, m)| (i as u16 + 1, m))
    }

    /// A taproot group's own output, derived here from the group key; `None`
    /// for a message group.
    pub fn taproot_output(&self) -> Result<Option<GroupOutput>, NodeError> {
        match (self.scheme, self.network) {
            (Scheme::Message, _) => Ok(None),
            (Scheme::Taproot, Some(network)) => {
                GroupOutput::derive(&self.group_public_key, network)
                    .map(Some)
                    .map_err(|e| NodeError::Corrupt(format!("key group {}: {e}", self.name)))
            }
            (Scheme::Taproot, None) => Err(NodeError::Corrupt(format!(
                "key group {} is taproot but its record names no network",
                self.name
            ))),
        }
    }
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
    /// What any coordinator needs to rebuild the refresh's commit certificate
    /// from the members (K7): this node's signed report (an encoded
    /// `DkgKeyReport`), the ceremony spec (an encoded `CeremonySpec`) and the
    /// operators' authorization (an encoded `SignedLifecycleSpec`).
    #[serde(default)]
    pub report: Option<Vec<u8>>,
    /// See `report`.
    #[serde(default)]
    pub spec: Option<Vec<u8>>,
    /// See `report`.
    #[serde(default)]
    pub authorization: Option<Vec<u8>>,
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
    /// Asset counted in the velocity ledger for it (once).
    #[serde(default)]
    pub asset: String,
    /// Amount counted, decimal base units.
    #[serde(default)]
    pub amount: String,
}

/// Proof that a share's journal entry and velocity count are durable (invariant
/// 7, N3). Only [`NodeStore::journal_share`] makes one (the field is private),
/// and the function that computes a withdrawal's share takes it by value
/// (`service::sign`), so a share that skipped the journal does not compile.
#[derive(Debug)]
#[must_use = "a Journaled proof exists to be spent on the share it journaled"]
pub struct Journaled {
    shares_released: u32,
}

impl Journaled {
    /// Shares released for this request id, this one included.
    pub fn shares_released(&self) -> u32 {
        self.shares_released
    }
}

const META: Table<Bytes> = Table::new("meta", "sealed blob");
const GROUPS: Table<Versioned<GroupRecord>> = Table::new("groups", "key group");
const JOURNAL: Table<Versioned<JournalEntry>> = Table::new("journal", "journal");
/// First sight of a custody-signed request, keyed by its digest (a time-lock
/// is a request's, never an id's: another request under the same id starts
/// its own clock).
const SEEN: Table<U64> = Table::new("seen_digest", "first-seen clock");
/// Velocity totals per (group, asset, minute): a 24 h sum reads at most 1,441 keys.
const VELOCITY: Table<U128> = Table::new("velocity", "velocity bucket");
const REVOKED: Table<U64> = Table::new("revoked", "revoked node");
mod refresh_marks;
pub use refresh_marks::RefreshMark;
use refresh_marks::REFRESH_MARKS;
mod ledger;
pub use ledger::LedgerRange;
use ledger::{append_ledger, LEDGER, LEDGER_AT, LEDGER_HEAD, LEDGER_SEQ};
mod registry;
pub use registry::GroupRegistry;
use registry::REGISTRIES;

const TABLES: &[&str] = &[
    META.name(),
    GROUPS.name(),
    JOURNAL.name(),
    SEEN.name(),
    VELOCITY.name(),
    REVOKED.name(),
    EPOCHS.name(),
    REFRESH_MARKS.name(),
    LEDGER.name(),
    LEDGER_SEQ.name(),
    LEDGER_AT.name(),
    LEDGER_HEAD.name(),
    REGISTRIES.name(),
];

/// Width of one velocity bucket. Sums include the whole bucket holding the
/// window's start, so the window is never shorter than 24 h (never lets more out).
const BUCKET_SECS: u64 = 60;

fn velocity_prefix(group: &GroupName, asset: &str) -> Vec<u8> {
    let mut p = Vec::with_capacity(group.as_str().len() + asset.len() + 2);
    p.extend_from_slice(group.as_str().as_bytes());
    p.push(0);
    p.extend_from_slice(asset.as_bytes());
    p.push(0);
    p
}

fn bucket_key(group: &GroupName, asset: &str, at: u64) -> Vec<u8> {
    let mut k = velocity_prefix(group, asset);
    k.extend_from_slice(&(at / BUCKET_SECS).to_be_bytes());
    k
}

/// Retry hint for a full write queue.
const STORE_BUSY_RETRY: std::time::Duration = std::time::Duration::from_millis(50);

impl From<StoreError> for NodeError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Busy { .. } => NodeError::Busy {
                what: e.to_string(),
                retry_after: STORE_BUSY_RETRY,
            },
            StoreError::Corrupt { .. } => NodeError::Corrupt(format!("storage: {e}")),
            StoreError::Refused(_) => NodeError::Config(format!("data_dir: {e}")),
            other => NodeError::Unavailable(format!("storage: {other}")),
        }
    }
}

fn parse_amount(entry: &JournalEntry) -> Result<u128, StoreError> {
    if entry.amount.is_empty() {
        return Ok(0);
    }
    entry.amount.parse().map_err(|_| StoreError::Corrupt {
        what: "journal",
        reason: format!("amount {:?} is not a number", entry.amount),
    })
}

/// Sum of `asset` released from `group` since `since`, leaving out what
/// `exclude` itself was counted for (P1: a request counts once).
fn spent_since(
    w: &WriteTxn<'_>,
    group: &GroupName,
    asset: &str,
    since: u64,
    exclude: &RequestId,
) -> Result<u128, StoreError> {
    let start = bucket_key(group, asset, since);
    let end = bucket_key(group, asset, u64::MAX);
    let mut total = 0u128;
    for (_, v) in w.scan(&VELOCITY, start..=end)? {
        total = total.saturating_add(v);
    }
    if let Some(entry) = w.get(&JOURNAL, exclude.as_str())? {
        if entry.asset == asset && entry.first_share_at / BUCKET_SECS >= since / BUCKET_SECS {
            total = total.saturating_sub(parse_amount(&entry)?);
        }
    }
    Ok(total)
}

/// What the policy check inside [`NodeStore::journal_share`] is given.
#[derive(Clone, Copy, Debug)]
pub struct LedgerAtCommit {
    /// Released in the velocity window, this request excluded.
    pub spent: u128,
    /// When this node first saw the request id.
    pub first_seen: u64,
}

/// Handle on the node's database.
#[derive(Clone, Debug)]
pub struct NodeStore {
    store: Store,
}

impl NodeStore {
    /// Whether `data_dir` already holds a node store.
    pub fn exists_in(data_dir: &std::path::Path) -> bool {
        Store::exists_in(data_dir)
    }

    /// Opens (or creates) the store in `data_dir`.
    pub fn open(data_dir: &std::path::Path) -> Result<Self, NodeError> {
        let store = Self {
            store: Store::open(data_dir, TABLES)?,
        };
        store.number_old_ledger()?;
        Ok(store)
    }

    /// The underlying store (health, counters, fault injection in tests).
    pub fn inner(&self) -> &Store {
        &self.store
    }

    /// A sealed blob in the meta table (identity, TLS key).
    pub fn sealed(&self, name: &str) -> Result<Option<Vec<u8>>, NodeError> {
        Ok(self.store.get(&META, name)?)
    }

    /// Stores a sealed blob durably; refuses to overwrite.
    pub fn put_sealed_new(&self, name: &str, blob: &[u8]) -> Result<(), NodeError> {
        self.store.write_blocking(|w| {
            if w.contains(&META, name)? {
                return Err(NodeError::AlreadyExists(format!(
                    "{name} already exists; refusing to overwrite"
                )));
            }
            w.put(&META, name, &blob.to_vec())?;
            Ok(())
        })
    }

    /// Reads a key group.
    pub fn group(&self, name: &GroupName) -> Result<Option<GroupRecord>, NodeError> {
        Ok(self.store.get(&GROUPS, name.as_str())?)
    }

    /// All key groups.
    pub fn groups(&self) -> Result<Vec<GroupRecord>, NodeError> {
        Ok(self
            .store
            .all(&GROUPS)?
            .into_iter()
            .map(|(_, g)| g)
            .collect())
    }

    /// Inserts a new key group; refuses if the name is taken.
    pub async fn insert_group(&self, record: &GroupRecord) -> Result<(), NodeError> {
        let record = record.clone();
        self.store
            .write(move |w| {
                if w.contains(&GROUPS, record.name.as_str())? {
                    return Err(NodeError::AlreadyExists(format!(
                        "key group {} already exists on this node",
                        record.name
                    )));
                }
                w.put(&GROUPS, record.name.as_str(), &record)?;
                Ok(())
            })
            .await
    }

    /// Overwrites a group record durably.
    pub async fn put_group(&self, record: &GroupRecord) -> Result<(), NodeError> {
        let record = record.clone();
        self.store
            .write(move |w| Ok::<_, NodeError>(w.put(&GROUPS, record.name.as_str(), &record)?))
            .await
    }

    /// Overwrites a group record and revokes `lost` in one step (repair).
    pub async fn put_group_and_revoke(
        &self,
        record: &GroupRecord,
        lost: &NodeId,
    ) -> Result<(), NodeError> {
        let record = record.clone();
        let lost = lost.clone();
        self.store
            .write(move |w| {
                w.put(&GROUPS, record.name.as_str(), &record)?;
                w.put(&REVOKED, lost.as_str(), &permafrost_core::unix_now())?;
                Ok::<_, NodeError>(())
            })
            .await
    }

    /// Records that `node` was replaced after a loss: never accepted in a ceremony again.
    pub async fn revoke(&self, node: &NodeId) -> Result<(), NodeError> {
        let node = node.clone();
        self.store
            .write(move |w| {
                Ok::<_, NodeError>(w.put(&REVOKED, node.as_str(), &permafrost_core::unix_now())?)
            })
            .await
    }

    /// Whether `node` was revoked.
    pub fn is_revoked(&self, node: &NodeId) -> Result<bool, NodeError> {
        Ok(self.store.get(&REVOKED, node.as_str())?.is_some())
    }

    /// Marks a group active.
    pub async fn activate_group(&self, name: &GroupName) -> Result<(), NodeError> {
        let name = name.clone();
        self.store
            .write(move |w| {
                let mut record = w.get(&GROUPS, name.as_str())?.ok_or_else(|| {
                    NodeError::NotFound(format!("key group {name} is not held by this node"))
                })?;
                record.active = true;
                w.put(&GROUPS, name.as_str(), &record)?;
                Ok(())
            })
            .await
    }

    /// When this node first saw the request with `digest`, recording `now` if
    /// it never had (starts its time-lock clock). Call only for a request whose
    /// custody signature verified.
    pub async fn first_seen(&self, digest: &RequestDigest, now: u64) -> Result<u64, NodeError> {
        let key = digest.to_hex();
        self.store
            .write(move |w| {
                let seen = w.get(&SEEN, &key)?;
                Ok::<_, NodeError>(match seen {
                    Some(t) => t,
                    None => {
                        w.put(&SEEN, &key, &now)?;
                        now
                    }
                })
            })
            .await
    }

    /// When this node first saw the request with `digest`, without recording anything.
    pub fn first_seen_if_any(&self, digest: &RequestDigest) -> Result<Option<u64>, NodeError> {
        Ok(self.store.get(&SEEN, digest.to_hex())?)
    }

    /// What this node released of `asset` from `group` since `since`,
    /// `exclude` left out (a snapshot; the binding check is in `journal_share`).
    pub fn spent_since(
        &self,
        group: &GroupName,
        asset: &str,
        since: u64,
        exclude: &RequestId,
    ) -> Result<u128, NodeError> {
        let start = bucket_key(group, asset, since);
        let end = bucket_key(group, asset, u64::MAX);
        let (buckets, entry) = self.store.read(|r| {
            Ok((
                r.scan(&VELOCITY, start..=end)?,
                r.get(&JOURNAL, exclude.as_str())?,
            ))
        })?;
        let mut total = buckets
            .into_iter()
            .fold(0u128, |t, (_, v)| t.saturating_add(v));
        if let Some(entry) = entry {
            if entry.asset == asset && entry.first_share_at / BUCKET_SECS >= since / BUCKET_SECS {
                total = total.saturating_sub(parse_amount(&entry)?);
            }
        }
        Ok(total)
    }

    /// One step, durable before any share is computed (N3, invariants 3 and 7):
    /// records first sight of the request, then runs `check` on the ledger as it
    /// stands inside this commit (so concurrent requests can never both pass a
    /// velocity limit that only one fits), then refuses if the id was ever used
    /// with another digest, and journals the share, counting `asset_amount` in
    /// the velocity ledger the first time only.
    ///
    /// First sight is keyed by digest. A request that is only "not yet"
    /// (approvals or its time-lock missing) keeps its first-sight record, so
    /// its clock runs; one refused for good records nothing. A refusal comes
    /// back as `Ok(Err(..))`.
    #[allow(clippy::too_many_arguments)]
    pub async fn journal_share<T, F>(
        &self,
        request_id: &RequestId,
        digest: &RequestDigest,
        key_group: &GroupName,
        asset_amount: Option<(String, u128)>,
        window_start: u64,
        now: u64,
        check: F,
    ) -> Result<Result<(T, Journaled), CoreError>, NodeError>
    where
        T: Send + 'static,
        F: FnOnce(LedgerAtCommit) -> Result<T, CoreError> + Send + 'static,
    {
        let id = request_id.clone();
        let digest = digest.to_hex();
        let group = key_group.clone();
        self.store
            .write(move |w| {
                let seen = w.get(&SEEN, &digest)?;
                let first_seen = seen.unwrap_or(now);
                let spent = match &asset_amount {
                    Some((asset, _)) => spent_since(w, &group, asset, window_start, &id)?,
                    None => 0,
                };
                let result = check(LedgerAtCommit { spent, first_seen });
                if seen.is_none()
                    && !matches!(
                        result,
                        Err(CoreError::Refused(_) | CoreError::PolicyDenied(_))
                    )
                {
                    w.put(&SEEN, &digest, &now)?;
                }
                let checked = match result {
                    Ok(t) => t,
                    Err(refusal) => return Ok(Err(refusal)),
                };
                let entry = match w.get(&JOURNAL, id.as_str())? {
                    Some(mut entry) => {
                        if entry.digest != digest {
                            return Ok(Err(CoreError::refused(format!(
                                "request id {id} was already signed with a different digest"
                            ))));
                        }
                        entry.shares_released += 1;
                        entry
                    }
                    None => {
                        let (asset, amount) = asset_amount.clone().unwrap_or_default();
                        if amount > 0 {
                            let key = bucket_key(&group, &asset, now);
                            let bucket = w.get(&VELOCITY, &key)?.unwrap_or(0);
                            w.put(&VELOCITY, &key, &bucket.saturating_add(amount))?;
                            append_ledger(w, &group, &asset, &digest, amount, now)?;
                        }
                        JournalEntry {
                            v: permafrost_store::RECORD_VERSION,
                            digest,
                            key_group: group.clone(),
                            first_share_at: now,
                            shares_released: 1,
                            asset,
                            amount: amount.to_string(),
                        }
                    }
                };
                w.put(&JOURNAL, id.as_str(), &entry)?;
                Ok::<_, NodeError>(Ok((
                    checked,
                    Journaled {
                        shares_released: entry.shares_released,
                    },
                )))
            })
            .await
    }

    /// A journal entry, if any.
    pub fn journal_entry(&self, request_id: &RequestId) -> Result<Option<JournalEntry>, NodeError> {
        Ok(self.store.get(&JOURNAL, request_id.as_str())?)
    }

    /// Checks that the velocity ledger counted every journaled request exactly
    /// once: per (group, asset), the ledger's buckets add up to the amounts in
    /// the journal. `Err` names the first pair that disagrees (P1, S1).
    pub fn check_ledger(&self) -> Result<(), String> {
        use std::collections::BTreeMap;
        let (buckets, journal) = self
            .store
            .read(|r| Ok((r.scan(&VELOCITY, ..)?, r.scan(&JOURNAL, ..)?)))
            .map_err(|e| e.to_string())?;
        let mut ledger: BTreeMap<(String, String), u128> = BTreeMap::new();
        for (key, amount) in buckets {
            let mut parts = key.splitn(3, |b| *b == 0);
            let (Some(group), Some(asset), Some(_bucket)) =
                (parts.next(), parts.next(), parts.next())
            else {
                return Err(format!(
                    "velocity key {} is not group, asset and bucket",
                    hex::encode(&key)
                ));
            };
            let group = String::from_utf8_lossy(group).into_owned();
            let asset = String::from_utf8_lossy(asset).into_owned();
            *ledger.entry((group, asset)).or_default() += amount;
        }
        let mut journaled: BTreeMap<(String, String), u128> = BTreeMap::new();
        for (id, entry) in journal {
            let amount = parse_amount(&entry)
                .map_err(|e| format!("{}: {e}", String::from_utf8_lossy(&id)))?;
            if amount > 0 {
                *journaled
                    .entry((entry.key_group.to_string(), entry.asset.clone()))
                    .or_default() += amount;
            }
        }
        if ledger != journaled {
            return Err(format!(
                "velocity ledger {ledger:?} does not match the journal {journaled:?}"
            ));
        }
        Ok(())
    }

    /// Every journal entry, by request id (for checks after a crash).
    pub fn journal(&self) -> Result<Vec<(String, JournalEntry)>, NodeError> {
        Ok(self
            .store
            .all(&JOURNAL)?
            .into_iter()
            .map(|(k, v)| (String::from_utf8_lossy(&k).into_owned(), v))
            .collect())
    }
}

// ------------------------------------------------------------ group epochs
//
// Where each group stands in its lifecycle on this node (THREATS X5–X7): its
// epoch and the operator-approved spec that set it. Kept beside the group
// record, and changed only together with it in one store step that first
// checks the epoch it moves from, so two ceremonies racing for one epoch
// cannot both move the group.

/// A group's epoch on this node and the approved spec that set it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GroupEpoch {
    /// Record version.
    pub v: u32,
    /// The group's epoch: 1 once created, +1 on every change of members or shares.
    pub epoch: u64,
    /// Digest (hex) of the lifecycle spec that moved the group to this epoch.
    pub spec_digest: String,
    /// That spec's operation.
    pub operation: String,
    /// The operators whose approvals counted.
    pub operators: Vec<String>,
    /// When (Unix seconds).
    pub at: u64,
}

/// The epoch of a group whose record predates epochs: the one its creation gave it.
pub const FIRST_EPOCH: u64 = 1;

const EPOCHS: Table<Versioned<GroupEpoch>> = Table::new("group_epochs", "group epoch");

fn epoch_in(w: &WriteTxn<'_>, name: &GroupName) -> Result<Option<u64>, NodeError> {
    if let Some(e) = w.get(&EPOCHS, name.as_str())? {
        return Ok(Some(e.epoch));
    }
    Ok(w.contains(&GROUPS, name.as_str())?.then_some(FIRST_EPOCH))
}

impl NodeStore {
    /// The epoch record of `name`, if this node ever recorded one.
    pub fn group_epoch(&self, name: &GroupName) -> Result<Option<GroupEpoch>, NodeError> {
        Ok(self.store.get(&EPOCHS, name.as_str())?)
    }

    /// Inserts a new group at `epoch` (with the operator registry it is under,
    /// when a ceremony changed that); refuses a name this node holds or ever
    /// held, in any epoch (a shadow group never shares a live one's name here).
    pub async fn insert_group_at(
        &self,
        record: &GroupRecord,
        epoch: &GroupEpoch,
        registry: Option<&GroupRegistry>,
    ) -> Result<(), NodeError> {
        let (record, epoch, registry) = (record.clone(), epoch.clone(), registry.cloned());
        self.store
            .write(move |w| {
                if w.contains(&GROUPS, record.name.as_str())?
                    || w.contains(&EPOCHS, record.name.as_str())?
                {
                    return Err(NodeError::AlreadyExists(format!(
                        "key group {} already exists on this node",
                        record.name
                    )));
                }
                w.put(&GROUPS, record.name.as_str(), &record)?;
                w.put(&EPOCHS, record.name.as_str(), &epoch)?;
                if let Some(registry) = &registry {
                    w.put(&REGISTRIES, record.name.as_str(), registry)?;
                }
                Ok(())
            })
            .await
    }

    /// Moves group `record.name` from epoch `from` to `to`, writing its new
    /// record (and revoking `revoke`, for a repair) in the same step; refused
    /// if the group is no longer at `from` (another ceremony moved it first).
    pub async fn advance_group(
        &self,
        record: &GroupRecord,
        revoke: Option<&NodeId>,
        from: u64,
        to: &GroupEpoch,
    ) -> Result<(), NodeError> {
        let (record, to, revoke) = (record.clone(), to.clone(), revoke.cloned());
        self.store
            .write(move |w| {
                let now_at = epoch_in(w, &record.name)?;
                if now_at != Some(from) {
                    return Err(NodeError::Precondition(format!(
                        "key group {} is at epoch {} here, not {from}; another ceremony moved it",
                        record.name,
                        now_at
                            .map(|e| e.to_string())
                            .unwrap_or_else(|| "none".into())
                    )));
                }
                w.put(&GROUPS, record.name.as_str(), &record)?;
                w.put(&EPOCHS, record.name.as_str(), &to)?;
                if let Some(lost) = &revoke {
                    w.put(&REVOKED, lost.as_str(), &permafrost_core::unix_now())?;
                }
                Ok(())
            })
            .await
    }
}
