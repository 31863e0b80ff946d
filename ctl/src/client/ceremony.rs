//! The coordinator's `Ceremony` service (operator certificate): key-group
//! ceremonies (DKG, refresh, repair), exclusions and cluster health.

use permafrost_core::{GroupName, NodeId, Tier};
use permafrost_proto as pb;
use permafrost_proto::convert::tier_to_wire;

use super::Connection;
use crate::CtlError;

/// `Ceremony.CreateKeyGroup`: runs a DKG ceremony across `members` and returns the active group.
pub async fn create_key_group(
    conn: &Connection,
    name: &GroupName,
    tier: Tier,
    threshold: u32,
    members: &[NodeId],
) -> Result<pb::KeyGroup, CtlError> {
    let request = pb::CreateKeyGroupRequest {
        name: name.to_string(),
        tier: tier_to_wire(tier),
        threshold,
        members: members.iter().map(|m| m.to_string()).collect(),
    };
    let group = conn
        .ceremony()?
        .create_key_group(request)
        .await
        .map_err(conn.failed("Ceremony.CreateKeyGroup"))?
        .into_inner();
    checked_group_key(group)
}

fn checked_group_key(group: pb::KeyGroup) -> Result<pb::KeyGroup, CtlError> {
    if group.group_public_key.len() != 33 {
        return Err(CtlError::BadResponse(format!(
            "group {} has a {}-byte public key, expected 33",
            group.name,
            group.group_public_key.len()
        )));
    }
    Ok(group)
}

/// `Ceremony.RefreshKeyGroup`: new shares for every member, same group key and threshold.
pub async fn refresh_key_group(
    conn: &Connection,
    name: &GroupName,
) -> Result<pb::KeyGroup, CtlError> {
    let group = conn
        .ceremony()?
        .refresh_key_group(pb::RefreshKeyGroupRequest {
            name: name.to_string(),
        })
        .await
        .map_err(conn.failed("Ceremony.RefreshKeyGroup"))?
        .into_inner();
    checked_group_key(group)
}

/// `Ceremony.RepairKeyGroup`: rebuilds `lost`'s share on `replacement`.
pub async fn repair_key_group(
    conn: &Connection,
    name: &GroupName,
    lost: &NodeId,
    replacement: &NodeId,
) -> Result<pb::KeyGroup, CtlError> {
    let group = conn
        .ceremony()?
        .repair_key_group(pb::RepairKeyGroupRequest {
            name: name.to_string(),
            lost: lost.to_string(),
            replacement: replacement.to_string(),
        })
        .await
        .map_err(conn.failed("Ceremony.RepairKeyGroup"))?
        .into_inner();
    checked_group_key(group)
}

/// `Ceremony.ListExclusions`: members excluded for invalid shares, with the evidence.
pub async fn list_exclusions(conn: &Connection) -> Result<Vec<pb::Exclusion>, CtlError> {
    Ok(conn
        .ceremony()?
        .list_exclusions(pb::ListExclusionsRequest {})
        .await
        .map_err(conn.failed("Ceremony.ListExclusions"))?
        .into_inner()
        .exclusions)
}

/// `Ceremony.ClearExclusion`; returns the exclusions that remain.
pub async fn clear_exclusion(
    conn: &Connection,
    group: &GroupName,
    node: &NodeId,
) -> Result<Vec<pb::Exclusion>, CtlError> {
    Ok(conn
        .ceremony()?
        .clear_exclusion(pb::ClearExclusionRequest {
            group: group.to_string(),
            node_id: node.to_string(),
        })
        .await
        .map_err(conn.failed("Ceremony.ClearExclusion"))?
        .into_inner()
        .exclusions)
}

/// `Ceremony.ListKeyGroups`.
pub async fn list_key_groups(conn: &Connection) -> Result<Vec<pb::KeyGroup>, CtlError> {
    Ok(conn
        .ceremony()?
        .list_key_groups(pb::ListKeyGroupsRequest {})
        .await
        .map_err(conn.failed("Ceremony.ListKeyGroups"))?
        .into_inner()
        .key_groups)
}

/// `Ceremony.ListKeyGroups`, then the group named `name`; an unknown name is
/// refused listing the groups there are.
pub async fn find_key_group(conn: &Connection, name: &GroupName) -> Result<pb::KeyGroup, CtlError> {
    let groups = list_key_groups(conn).await?;
    let known: Vec<String> = groups.iter().map(|g| g.name.clone()).collect();
    groups
        .into_iter()
        .find(|g| g.name == name.as_str())
        .ok_or_else(|| {
            CtlError::InvalidInput(format!(
                "the coordinator has no key group {name} (it has: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ))
        })
}

/// `Ceremony.GetClusterStatus`.
pub async fn cluster_status(conn: &Connection) -> Result<pb::ClusterStatus, CtlError> {
    Ok(conn
        .ceremony()?
        .get_cluster_status(pb::ClusterStatusRequest {})
        .await
        .map_err(conn.failed("Ceremony.GetClusterStatus"))?
        .into_inner())
}
