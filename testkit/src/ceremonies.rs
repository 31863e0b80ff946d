//! Key-group ceremonies through the test cluster's coordinator: specs as
//! an operator would propose them, approved by the fixed test operators
//! ([`crate::approved`]), and the create, refresh, repair and clear-exclusion
//! calls that carry them.

use permafrost_core::ceremony::{LifecycleSpec, SignedSpec};
use permafrost_core::{unix_now, GroupName, NodeId, Tier};
use permafrost_proto as pb;

use crate::{approved, wire, TestCluster};

impl TestCluster {
    /// A create spec for `name` on nodes `members` (by index), valid for an
    /// hour, not yet approved. Not checked here, so a test can hand the
    /// cluster a malformed one.
    pub fn create_spec(
        &self,
        name: &str,
        tier: Tier,
        threshold: u32,
        members: &[usize],
    ) -> LifecycleSpec {
        let now = unix_now();
        LifecycleSpec {
            version: permafrost_core::ceremony::SPEC_VERSION,
            operation: permafrost_core::ceremony::Operation::Create,
            proposal_id: format!("create-{name}-{now}"),
            group: GroupName::new(name).expect("group name"),
            tier,
            epoch: 0,
            group_key: None,
            members: members.iter().map(|i| self.nodes[*i].id.clone()).collect(),
            threshold: u16::try_from(threshold).expect("threshold fits u16"),
            subject: None,
            replacement: None,
            created_at: now,
            expires_at: now + 3600,
            registry: None,
        }
    }

    /// A spec of `change` to group `name` as the coordinator reports it now
    /// (epoch, key, members), valid for an hour, not yet approved.
    pub async fn change_spec(
        &self,
        name: &str,
        change: permafrostctl::ceremony::Change,
    ) -> LifecycleSpec {
        let groups = self
            .operator()
            .list_key_groups(pb::ListKeyGroupsRequest {})
            .await
            .expect("list key groups")
            .into_inner()
            .key_groups;
        let g = groups
            .iter()
            .find(|g| g.name == name)
            .unwrap_or_else(|| panic!("the coordinator has no group {name}"));
        let current =
            permafrostctl::ceremony::CurrentGroup::reported(g).expect("the reported group");
        permafrostctl::ceremony::propose(
            &GroupName::new(name).expect("group name"),
            change,
            Some(&current),
            None,
            3600,
        )
        .expect("valid proposal")
        .spec
    }

    /// Runs a DKG ceremony through the coordinator under a create spec
    /// approved by two test operators.
    pub async fn create_group(
        &self,
        name: &str,
        tier: Tier,
        threshold: u32,
        members: &[usize],
    ) -> Result<pb::KeyGroup, tonic::Status> {
        let spec = self.create_spec(name, tier, threshold, members);
        self.create_group_with(&approved(&spec, &[1, 2])).await
    }

    /// Runs a DKG ceremony through the coordinator under `signed`.
    pub async fn create_group_with(
        &self,
        signed: &SignedSpec,
    ) -> Result<pb::KeyGroup, tonic::Status> {
        let spec = &signed.spec;
        self.operator()
            .create_key_group(pb::CreateKeyGroupRequest {
                name: spec.group.to_string(),
                tier: permafrost_proto::convert::tier_to_wire(spec.tier),
                threshold: u32::from(spec.threshold),
                members: spec.members.iter().map(|m| m.to_string()).collect(),
                authorization: Some(wire(signed)),
            })
            .await
            .map(|r| r.into_inner())
    }

    /// Refreshes `name` through the coordinator under a spec two test operators approved.
    pub async fn refresh_group(&self, name: &str) -> Result<pb::KeyGroup, tonic::Status> {
        let spec = self
            .change_spec(name, permafrostctl::ceremony::Change::Refresh)
            .await;
        self.operator()
            .refresh_key_group(pb::RefreshKeyGroupRequest {
                name: name.into(),
                authorization: Some(wire(&approved(&spec, &[1, 2]))),
            })
            .await
            .map(|r| r.into_inner())
    }

    /// A repair spec of `name` (`lost`'s share onto `replacement`) as the group stands now.
    pub async fn repair_spec(&self, name: &str, lost: &str, replacement: &str) -> LifecycleSpec {
        self.change_spec(
            name,
            permafrostctl::ceremony::Change::Repair {
                lost: NodeId::new(lost).expect("id"),
                replacement: NodeId::new(replacement).expect("id"),
            },
        )
        .await
    }

    /// Repairs `name` through the coordinator under `signed`.
    pub async fn repair_group_with(
        &self,
        signed: &SignedSpec,
    ) -> Result<pb::KeyGroup, tonic::Status> {
        let spec = &signed.spec;
        let id = |n: &Option<NodeId>| n.as_ref().map(|n| n.to_string()).unwrap_or_default();
        self.operator()
            .repair_key_group(pb::RepairKeyGroupRequest {
                name: spec.group.to_string(),
                lost: id(&spec.subject),
                replacement: id(&spec.replacement),
                authorization: Some(wire(signed)),
            })
            .await
            .map(|r| r.into_inner())
    }

    /// Repairs `name` (`lost`'s share onto `replacement`) under a spec two test operators approved.
    pub async fn repair_group(
        &self,
        name: &str,
        lost: &str,
        replacement: &str,
    ) -> Result<pb::KeyGroup, tonic::Status> {
        let spec = self.repair_spec(name, lost, replacement).await;
        self.repair_group_with(&approved(&spec, &[1, 2])).await
    }

    /// Clears `node`'s exclusion from `group` under a spec two test operators approved.
    pub async fn clear_exclusion(
        &self,
        group: &str,
        node: &str,
    ) -> Result<pb::ExclusionList, tonic::Status> {
        let spec = self
            .change_spec(
                group,
                permafrostctl::ceremony::Change::ClearExclusion {
                    node: NodeId::new(node).expect("id"),
                },
            )
            .await;
        self.operator()
            .clear_exclusion(pb::ClearExclusionRequest {
                group: group.into(),
                node_id: node.into(),
                authorization: Some(wire(&approved(&spec, &[1, 2]))),
            })
            .await
            .map(|r| r.into_inner())
    }
}
