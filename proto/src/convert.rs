//! Wire ⇄ core conversions. Every missing or malformed field becomes
//! `InvalidArgument` naming the field; nothing from the network is unwrapped.

use permafrost_core::authz::SignedWithdrawal as CoreSignedWithdrawal;
use permafrost_core::dkg;
use permafrost_core::withdrawal::WithdrawalRequest as CoreRequest;
use permafrost_core::{CoreError, GroupName, NodeId, RequestId, Tier as CoreTier};
use tonic::Status;

use crate::*;

fn bad(field: &str, e: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("{field}: {e}"))
}

/// Parses a node id field.
pub fn node_id(field: &str, value: &str) -> Result<NodeId, Status> {
    NodeId::new(value).map_err(|e| bad(field, e))
}

/// Parses a key-group name field.
pub fn group_name(field: &str, value: &str) -> Result<GroupName, Status> {
    GroupName::new(value).map_err(|e| bad(field, e))
}

/// Wire tier → core tier (unspecified is an error).
pub fn tier_from_wire(value: i32) -> Result<CoreTier, Status> {
    match Tier::try_from(value) {
        Ok(Tier::Hot) => Ok(CoreTier::Hot),
        Ok(Tier::Warm) => Ok(CoreTier::Warm),
        Ok(Tier::Cold) => Ok(CoreTier::Cold),
        _ => Err(bad("tier", format!("{value} is not hot, warm or cold"))),
    }
}

/// Core tier → wire tier.
pub fn tier_to_wire(tier: CoreTier) -> i32 {
    match tier {
        CoreTier::Hot => Tier::Hot as i32,
        CoreTier::Warm => Tier::Warm as i32,
        CoreTier::Cold => Tier::Cold as i32,
    }
}

/// A policy rule on the wire.
pub fn policy_rule_to_wire(rule: permafrost_core::policy::PolicyRule) -> i32 {
    use permafrost_core::policy::PolicyRule as R;
    let wire = match rule {
        R::UnknownGroup => crate::PolicyRule::UnknownGroup,
        R::Tier => crate::PolicyRule::Tier,
        R::Asset => crate::PolicyRule::Asset,
        R::Allowlist => crate::PolicyRule::Allowlist,
        R::Lifetime => crate::PolicyRule::Lifetime,
        R::PerRequestLimit => crate::PolicyRule::PerRequestLimit,
        R::Velocity => crate::PolicyRule::Velocity,
        _ => crate::PolicyRule::Unspecified,
    };
    wire as i32
}

impl TryFrom<&WithdrawalRequest> for CoreRequest {
    type Error = Status;
    fn try_from(w: &WithdrawalRequest) -> Result<Self, Status> {
        let amount: u128 = w
            .amount
            .parse()
            .map_err(|_| bad("amount", format!("{:?} is not a decimal integer", w.amount)))?;
        let request = CoreRequest {
            request_id: RequestId::new(w.request_id.clone()).map_err(|e| bad("request_id", e))?,
            key_group: group_name("key_group", &w.key_group)?,
            tier: tier_from_wire(w.tier)?,
            asset: w.asset.clone(),
            amount,
            destination: w.destination.clone(),
            payload: w.payload.clone(),
            created_at: w.created_at,
            expires_at: w.expires_at,
            requested_by: w.requested_by.clone(),
        };
        request
            .validate()
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok(request)
    }
}

impl From<&CoreRequest> for WithdrawalRequest {
    fn from(r: &CoreRequest) -> Self {
        WithdrawalRequest {
            request_id: r.request_id.to_string(),
            key_group: r.key_group.to_string(),
            tier: tier_to_wire(r.tier),
            asset: r.asset.clone(),
            amount: r.amount.to_string(),
            destination: r.destination.clone(),
            payload: r.payload.clone(),
            created_at: r.created_at,
            expires_at: r.expires_at,
            requested_by: r.requested_by.clone(),
        }
    }
}

impl TryFrom<&SignedWithdrawal> for CoreSignedWithdrawal {
    type Error = Status;
    fn try_from(s: &SignedWithdrawal) -> Result<Self, Status> {
        let request = s
            .request
            .as_ref()
            .ok_or_else(|| bad("request", "missing"))?;
        if s.custody_signature.len() != 64 {
            return Err(bad(
                "custody_signature",
                format!(
                    "{} bytes, expected a 64-byte Ed25519 signature",
                    s.custody_signature.len()
                ),
            ));
        }
        Ok(CoreSignedWithdrawal {
            request: request.try_into()?,
            custody_signature: s.custody_signature.clone(),
        })
    }
}

impl From<&CoreSignedWithdrawal> for SignedWithdrawal {
    fn from(s: &CoreSignedWithdrawal) -> Self {
        SignedWithdrawal {
            request: Some((&s.request).into()),
            custody_signature: s.custody_signature.clone(),
        }
    }
}

impl TryFrom<&CeremonySpec> for dkg::CeremonySpec {
    type Error = Status;
    fn try_from(s: &CeremonySpec) -> Result<Self, Status> {
        let spec = dkg::CeremonySpec {
            ceremony_id: s.ceremony_id.clone(),
            group: group_name("group", &s.group)?,
            tier: tier_from_wire(s.tier)?,
            threshold: u16::try_from(s.threshold).map_err(|e| bad("threshold", e))?,
            members: s
                .members
                .iter()
                .map(|m| node_id("members", m))
                .collect::<Result<_, _>>()?,
            refresh: s.refresh,
        };
        spec.validate()
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok(spec)
    }
}

impl From<&dkg::CeremonySpec> for CeremonySpec {
    fn from(s: &dkg::CeremonySpec) -> Self {
        CeremonySpec {
            ceremony_id: s.ceremony_id.clone(),
            group: s.group.to_string(),
            tier: tier_to_wire(s.tier),
            threshold: u32::from(s.threshold),
            members: s.members.iter().map(|m| m.to_string()).collect(),
            refresh: s.refresh,
        }
    }
}

impl TryFrom<&DkgRound1Message> for dkg::SignedRound1 {
    type Error = Status;
    fn try_from(m: &DkgRound1Message) -> Result<Self, Status> {
        Ok(dkg::SignedRound1 {
            sender: node_id("sender", &m.sender)?,
            package: m.package.clone(),
            signature: m.signature.clone(),
        })
    }
}

impl From<dkg::SignedRound1> for DkgRound1Message {
    fn from(m: dkg::SignedRound1) -> Self {
        DkgRound1Message {
            sender: m.sender.to_string(),
            package: m.package,
            signature: m.signature,
        }
    }
}

impl TryFrom<&DkgEchoMessage> for dkg::Echo {
    type Error = Status;
    fn try_from(m: &DkgEchoMessage) -> Result<Self, Status> {
        Ok(dkg::Echo {
            sender: node_id("sender", &m.sender)?,
            set_hash: m.set_hash.clone(),
            signature: m.signature.clone(),
        })
    }
}

impl From<dkg::Echo> for DkgEchoMessage {
    fn from(m: dkg::Echo) -> Self {
        DkgEchoMessage {
            sender: m.sender.to_string(),
            set_hash: m.set_hash,
            signature: m.signature,
        }
    }
}

impl TryFrom<&DkgSealedShare> for dkg::SealedRound2 {
    type Error = Status;
    fn try_from(m: &DkgSealedShare) -> Result<Self, Status> {
        Ok(dkg::SealedRound2 {
            sender: node_id("sender", &m.sender)?,
            recipient: node_id("recipient", &m.recipient)?,
            encapped_key: m.encapped_key.clone(),
            ciphertext: m.ciphertext.clone(),
            signature: m.signature.clone(),
        })
    }
}

impl From<dkg::SealedRound2> for DkgSealedShare {
    fn from(m: dkg::SealedRound2) -> Self {
        DkgSealedShare {
            sender: m.sender.to_string(),
            recipient: m.recipient.to_string(),
            encapped_key: m.encapped_key,
            ciphertext: m.ciphertext,
            signature: m.signature,
        }
    }
}

impl TryFrom<&DkgKeyReport> for dkg::GroupKeyReport {
    type Error = Status;
    fn try_from(m: &DkgKeyReport) -> Result<Self, Status> {
        Ok(dkg::GroupKeyReport {
            sender: node_id("sender", &m.sender)?,
            group_public_key: m.group_public_key.clone(),
            public_key_package: m.public_key_package.clone(),
            signature: m.signature.clone(),
        })
    }
}

impl From<dkg::GroupKeyReport> for DkgKeyReport {
    fn from(m: dkg::GroupKeyReport) -> Self {
        DkgKeyReport {
            sender: m.sender.to_string(),
            group_public_key: m.group_public_key,
            public_key_package: m.public_key_package,
            signature: m.signature,
        }
    }
}

/// Maps a core error to a status a client can act on (STYLE §6).
pub fn status_from_core(e: &CoreError) -> Status {
    match e {
        CoreError::InvalidField { .. } => Status::invalid_argument(e.to_string()),
        CoreError::Refused(_) => Status::permission_denied(e.to_string()),
        CoreError::NotYet(_) => Status::failed_precondition(e.to_string()),
        CoreError::PeerMisbehaved { .. } | CoreError::Aborted(_) => Status::aborted(e.to_string()),
        CoreError::Frost(_) | CoreError::Encryption(_) => Status::invalid_argument(e.to_string()),
        _ => Status::internal(e.to_string()),
    }
}

impl TryFrom<&Approval> for permafrost_core::policy::Approval {
    type Error = Status;
    fn try_from(a: &Approval) -> Result<Self, Status> {
        if a.approver_id.is_empty() || a.approver_id.len() > 128 {
            return Err(bad("approver_id", "must be 1..=128 characters"));
        }
        if a.signature.len() != 64 {
            return Err(bad(
                "signature",
                format!(
                    "{} bytes, expected a 64-byte Ed25519 signature",
                    a.signature.len()
                ),
            ));
        }
        Ok(permafrost_core::policy::Approval {
            approver_id: a.approver_id.clone(),
            expires_at: a.expires_at,
            signature: a.signature.clone(),
        })
    }
}

impl TryFrom<&RepairSpec> for permafrost_core::repair::RepairSpec {
    type Error = Status;
    fn try_from(s: &RepairSpec) -> Result<Self, Status> {
        let ids = |field: &str, v: &[String]| {
            v.iter()
                .map(|m| node_id(field, m))
                .collect::<Result<Vec<_>, _>>()
        };
        let spec = permafrost_core::repair::RepairSpec {
            repair_id: s.repair_id.clone(),
            group: group_name("group", &s.group)?,
            threshold: u16::try_from(s.threshold).map_err(|e| bad("threshold", e))?,
            members: ids("members", &s.members)?,
            lost: node_id("lost", &s.lost)?,
            replacement: node_id("replacement", &s.replacement)?,
            helpers: ids("helpers", &s.helpers)?,
        };
        spec.validate()
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok(spec)
    }
}
