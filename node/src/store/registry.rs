//! The operator registry in force for each group, once a change-registry
//! ceremony changed it (THREATS X5). A group without a record here is under
//! the registry of the node's config (sequence 0); a group with one is under
//! the registry its operators last approved, whatever the config says.

use permafrost_core::ceremony::{RegistryConfig, SignedSpec};
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

    /// Installs `record` as `name`'s registry, in one store step that first
    /// checks the group is held and still at registry sequence `from` (two
    /// changes racing for one sequence cannot both apply).
    pub async fn change_group_registry(
        &self,
        name: &GroupName,
        from: u64,
        record: GroupRegistry,
    ) -> Result<(), NodeError> {
        let name = name.clone();
        self.store
            .write(move |w| {
                if !w.contains(&GROUPS, name.as_str())? {
                    return Err(NodeError::NotFound(format!(
                        "key group {name} is not held here"
                    )));
                }
                let now_at = w
                    .get(&REGISTRIES, name.as_str())?
                    .map(|r| r.seq)
                    .unwrap_or(0);
                if now_at != from {
                    return Err(NodeError::Precondition(format!(
                        "the operator registry of {name} is at sequence {now_at} here, not {from}; \
                         another change applied first"
                    )));
                }
                w.put(&REGISTRIES, name.as_str(), &record)?;
                Ok(())
            })
            .await
    }
}
