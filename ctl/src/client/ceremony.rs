//! The coordinator's `Ceremony` service (operator certificate): key-group
//! ceremonies (DKG, refresh, repair), exclusions and cluster health. Every
//! ceremony carries an operator-quorum spec ([`crate::ceremony`]), which the
//! coordinator relays and every node verifies.

use permafrost_core::ceremony::{Operation, SignedSpec};
use permafrost_core::{GroupName, NodeId};
use permafrost_proto as pb;
use permafrost_proto::convert::tier_to_wire;

use super::Connection;
use crate::CtlError;

/// `Ceremony.CreateKeyGroup` under an operator-quorum create spec: runs a DKG
/// ceremony across its members and returns the active group.
pub async fn create_key_group(
    conn: &Connection,
    signed: &SignedSpec,
) -> Result<pb::KeyGroup, CtlError> {
    let spec = &signed.spec;
    let request = pb::CreateKeyGroupRequest {
        name: spec.group.to_string(),
        tier: tier_to_wire(spec.tier),
        threshold: u32::from(spec.threshold),
        members: spec.members.iter().map(|m| m.to_string()).collect(),
        authorization: Some(signed.into()),
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

/// `Ceremony.RefreshKeyGroup` under an operator-quorum refresh spec: new
/// shares for every member, same group key and threshold.
pub async fn refresh_key_group(
    conn: &Connection,
    signed: &SignedSpec,
) -> Result<pb::KeyGroup, CtlError> {
    let group = conn
        .ceremony()?
        .refresh_key_group(pb::RefreshKeyGroupRequest {
            name: signed.spec.group.to_string(),
            authorization: Some(signed.into()),
        })
        .await
        .map_err(conn.failed("Ceremony.RefreshKeyGroup"))?
        .into_inner();
    checked_group_key(group)
}

/// `Ceremony.RetireKeyGroup` under an operator-quorum retire spec: every
/// member destroys its share; the group never signs again.
pub async fn retire_key_group(
    conn: &Connection,
    signed: &SignedSpec,
) -> Result<pb::KeyGroup, CtlError> {
    let group = conn
        .ceremony()?
        .retire_key_group(pb::RetireKeyGroupRequest {
            name: signed.spec.group.to_string(),
            authorization: Some(signed.into()),
        })
        .await
        .map_err(conn.failed("Ceremony.RetireKeyGroup"))?
        .into_inner();
    checked_group_key(group)
}

/// `Ceremony.ChangeRegistry` under an operator-quorum change-registry spec:
/// every member installs the group's new operator registry.
pub async fn change_registry(
    conn: &Connection,
    signed: &SignedSpec,
) -> Result<pb::KeyGroup, CtlError> {
    let group = conn
        .ceremony()?
        .change_registry(pb::ChangeRegistryRequest {
            key_group: signed.spec.group.to_string(),
            authorization: Some(signed.into()),
        })
        .await
        .map_err(conn.failed("Ceremony.ChangeRegistry"))?
        .into_inner();
    checked_group_key(group)
}

/// `Ceremony.RemoveMember` under an operator-quorum remove-member spec.
pub async fn remove_member(
    conn: &Connection,
    signed: &SignedSpec,
) -> Result<pb::KeyGroup, CtlError> {
    let group = conn
        .ceremony()?
        .remove_member(pb::RemoveMemberRequest {
            name: signed.spec.group.to_string(),
            node_id: signed
                .spec
                .subject
                .as_ref()
                .map(|n| n.to_string())
                .unwrap_or_default(),
            authorization: Some(signed.into()),
        })
        .await
        .map_err(conn.failed("Ceremony.RemoveMember"))?
        .into_inner();
    checked_group_key(group)
}

/// `Ceremony.AbortRefresh` (K7): aborts a refresh that can never commit
/// (`ceremony`: which one, when members hold more than one pending).
pub async fn abort_refresh(
    conn: &Connection,
    name: &permafrost_core::GroupName,
    ceremony: Option<&str>,
) -> Result<pb::AbortRefreshResponse, CtlError> {
    Ok(conn
        .ceremony()?
        .abort_refresh(pb::AbortRefreshRequest {
            name: name.to_string(),
            ceremony_id: ceremony.unwrap_or_default().to_string(),
        })
        .await
        .map_err(conn.failed("Ceremony.AbortRefresh"))?
        .into_inner())
}

/// `Ceremony.RecoverKeyGroup` (K7): finishes a refresh some members missed,
/// from a committed member's stored certificate.
pub async fn recover_key_group(
    conn: &Connection,
    name: &permafrost_core::GroupName,
) -> Result<pb::RecoverKeyGroupResponse, CtlError> {
    let mut answer = conn
        .ceremony()?
        .recover_key_group(pb::RecoverKeyGroupRequest {
            name: name.to_string(),
        })
        .await
        .map_err(conn.failed("Ceremony.RecoverKeyGroup"))?
        .into_inner();
    if let Some(group) = answer.group.take() {
        answer.group = Some(checked_group_key(group)?);
    }
    Ok(answer)
}

/// `Ceremony.RepairKeyGroup` under an operator-quorum repair spec: rebuilds
/// its lost member's share on its replacement.
pub async fn repair_key_group(
    conn: &Connection,
    signed: &SignedSpec,
) -> Result<pb::KeyGroup, CtlError> {
    let spec = &signed.spec;
    let name = |n: &Option<NodeId>| n.as_ref().map(|n| n.to_string()).unwrap_or_default();
    let group = conn
        .ceremony()?
        .repair_key_group(pb::RepairKeyGroupRequest {
            name: spec.group.to_string(),
            lost: name(&spec.subject),
            replacement: name(&spec.replacement),
            authorization: Some(signed.into()),
        })
        .await
        .map_err(conn.failed("Ceremony.RepairKeyGroup"))?
        .into_inner();
    checked_group_key(group)
}

/// What the coordinator answered to a submitted spec.
#[derive(Debug)]
pub enum Submitted {
    /// The group after a create, refresh or repair.
    Group(Box<pb::KeyGroup>),
    /// The exclusions that remain after clearing one.
    Exclusions(Vec<pb::Exclusion>),
}

/// Hands an approved spec to the coordinator's RPC for its operation.
pub async fn submit(conn: &Connection, signed: &SignedSpec) -> Result<Submitted, CtlError> {
    Ok(match signed.spec.operation {
        Operation::Create => Submitted::Group(Box::new(create_key_group(conn, signed).await?)),
        Operation::Refresh => Submitted::Group(Box::new(refresh_key_group(conn, signed).await?)),
        Operation::Repair => Submitted::Group(Box::new(repair_key_group(conn, signed).await?)),
        Operation::ClearExclusion => Submitted::Exclusions(clear_exclusion(conn, signed).await?),
        Operation::Retire => Submitted::Group(Box::new(retire_key_group(conn, signed).await?)),
        Operation::RemoveMember => Submitted::Group(Box::new(remove_member(conn, signed).await?)),
        Operation::ChangeRegistry => {
            Submitted::Group(Box::new(change_registry(conn, signed).await?))
        }
    })
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

/// `Ceremony.ClearExclusion` under an operator-quorum clear-exclusion spec;
/// returns the exclusions that remain.
pub async fn clear_exclusion(
    conn: &Connection,
    signed: &SignedSpec,
) -> Result<Vec<pb::Exclusion>, CtlError> {
    let spec = &signed.spec;
    Ok(conn
        .ceremony()?
        .clear_exclusion(pb::ClearExclusionRequest {
            group: spec.group.to_string(),
            node_id: spec
                .subject
                .as_ref()
                .map(|n| n.to_string())
                .unwrap_or_default(),
            authorization: Some(signed.into()),
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
