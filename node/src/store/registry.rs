//! The operator registry in force for each group, once a change-registry
//! ceremony changed it (THREATS X5). A group without a record here is under
//! the registry of the node's config (sequence 0); a group with one is under
//! the registry its operators last approved, whatever the config says.

use permafrost_core::ceremony::{RegistryConfig, SignedSpec, SpecDigest};
use permafrost_core::GroupName;
use permafrost_store::{Table, Versioned};
use serde::{Deserialize, Serialize};

use super::{NodeStore, GROUPS};
use crate::NodeError;

/// A group's operator registry after its last change-registry ceremony here.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GroupRegistry {
    /// Record version.
    pub v: u32,
    /// The group's registry sequence (1 after the first change).
    pub seq: u64,
    /// The registry in force for the group.
    pub registry: RegistryConfig,
    /// Every change-registry spec applied to the group here, oldest first,
    /// with the approvals that counted: what any coordinator re-drives on a
    /// member that missed one.
    pub changes: Vec<SignedSpec>,
    /// When the last change was applied (Unix seconds).
    pub at: u64,
}

pub(super) const REGISTRIES: Table<Versioned<GroupRegistry>> =
    Table::new("group_registries", "group operator registry");

impl NodeStore {
    /// The registry record of `name`, if a ceremony ever changed it here.
    pub fn group_registry(&self, name: &GroupName) -> Result<Option<GroupRegistry>, NodeError> {
        Ok(self.store.get(&REGISTRIES, name.as_str())?)
    }

    /// Appends the change `signed` (to sequence `seq`, installing `registry`)
    /// to `name`'s registry record, in one store step that first checks the
    /// group is held and that its registry is still the one the change was
    /// checked against: sequence `from`, after the change `after` (none for
    /// the config's). Two changes racing for one sequence cannot both apply,
    /// and the stored chain is always the one each link was checked on.
    pub async fn change_group_registry(
        &self,
        name: &GroupName,
        from: u64,
        after: Option<SpecDigest>,
        signed: SignedSpec,
        registry: RegistryConfig,
    ) -> Result<(), NodeError> {
        let name = name.clone();
        self.store
            .write(move |w| {
                if !w.contains(&GROUPS, name.as_str())? {
                    return Err(NodeError::NotFound(format!(
                        "key group {name} is not held here"
                    )));
                }
                let now_at = w.get(&REGISTRIES, name.as_str())?;
                let (seq, last) = match &now_at {
                    Some(r) => (r.seq, r.changes.last().map(|c| c.spec.digest())),
                    None => (0, None),
                };
                if seq != from || last != after {
                    return Err(NodeError::Precondition(format!(
                        "the operator registry of {name} is at sequence {seq} here, not {from}; \
                         another change applied first"
                    )));
                }
                let mut changes = now_at.map(|r| r.changes).unwrap_or_default();
                let to = signed
                    .spec
                    .registry
                    .as_ref()
                    .map(|c| c.seq)
                    .ok_or_else(|| NodeError::Bug("a registry change without a registry".into()))?;
                changes.push(signed);
                let record = GroupRegistry {
                    v: permafrost_store::RECORD_VERSION,
                    seq: to,
                    registry,
                    changes,
                    at: permafrost_core::unix_now(),
                };
                w.put(&REGISTRIES, name.as_str(), &record)?;
                Ok(())
            })
            .await
    }
}
