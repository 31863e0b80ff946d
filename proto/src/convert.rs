//! Wire ⇄ core conversions. Every missing or malformed field becomes
//! `InvalidArgument` naming the field; nothing from the network is unwrapped.

use permafrost_core::authz::SignedWithdrawal as CoreSignedWithdrawal;
use permafrost_core::dkg;
use permafrost_core::error::preview;
use permafrost_core::withdrawal::WithdrawalRequest as CoreRequest;
use permafrost_core::{CoreError, GroupName, NodeId, RequestId, Tier as CoreTier};
use tonic::Status;

use crate::*;

pub mod ceremony;

fn bad(field: &str, e: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("{field}: {e}"))
}

/// Parses an amount field: canonical decimal only (V4), so one amount has one
/// spelling on the wire and "+1", "01" or " 1" cannot pass as 1. Zero parses;
/// whether it is allowed is the caller's rule.
pub fn amount(field: &str, value: &str) -> Result<u128, Status> {
    let canonical = !value.is_empty()
        && value.bytes().all(|b| b.is_ascii_digit())
        && (value == "0" || !value.starts_with('0'));
    if !canonical {
        return Err(bad(
            field,
            format!(
                "{:?} is not a canonical decimal integer (digits only: no sign, spaces or leading zeros)",
                preview(value)
            ),
        ));
    }
    value.parse().map_err(|_| {
        bad(
            field,
            format!("{} does not fit in 128 bits", preview(value)),
        )
    })
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
        R::Scheme => crate::PolicyRule::Scheme,
        R::FeeLimit => crate::PolicyRule::FeeLimit,
        R::FeeRateLimit => crate::PolicyRule::FeeRateLimit,
        _ => crate::PolicyRule::Unspecified,
    };
    wire as i32
}

impl TryFrom<&WithdrawalRequest> for CoreRequest {
    type Error = Status;
    fn try_from(w: &WithdrawalRequest) -> Result<Self, Status> {
        let amount = amount("amount", &w.amount)?;
        let request = CoreRequest {
            request_id: RequestId::new(w.request_id.clone()).map_err(|e| bad("request_id", e))?,
            key_group: group_name("key_group", &w.key_group)?,
            tier: tier_from_wire(w.tier)?,
            asset: w.asset.clone(),
            amount,
            destination: w.destination.clone(),
            payload: w.payload.clone(),
            // An empty field is "no PSBT": a request carries a payload or a PSBT, never both.
            psbt: (!w.psbt.is_empty()).then(|| w.psbt.clone()),
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
            psbt: r.psbt.clone().unwrap_or_default(),
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
            removed: s
                .removed
                .iter()
                .map(|m| node_id("removed", m))
                .collect::<Result<_, _>>()?,
            refresh: s.refresh,
            authorization: ceremony::authorization_digest("spec.authorization", &s.authorization)?,
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
            removed: s.removed.iter().map(|m| m.to_string()).collect(),
            refresh: s.refresh,
            authorization: s.authorization.to_vec(),
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

impl TryFrom<&RefreshAbandonPromise> for dkg::AbandonPromise {
    type Error = Status;
    fn try_from(m: &RefreshAbandonPromise) -> Result<Self, Status> {
        let id = &m.ceremony_id;
        if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(bad(
                "promise.ceremony_id",
                format!(
                    "{} bytes; a ceremony id is 1..=64 printable ASCII characters",
                    id.len()
                ),
            ));
        }
        if m.signature.len() != 64 {
            return Err(bad(
                "promise.signature",
                format!("{} bytes, expected 64", m.signature.len()),
            ));
        }
        Ok(dkg::AbandonPromise {
            group: group_name("promise.key_group", &m.key_group)?,
            epoch: m.epoch,
            ceremony_id: m.ceremony_id.clone(),
            member: node_id("promise.member", &m.member)?,
            signature: m.signature.clone(),
        })
    }
}

impl From<dkg::AbandonPromise> for RefreshAbandonPromise {
    fn from(m: dkg::AbandonPromise) -> Self {
        RefreshAbandonPromise {
            key_group: m.group.to_string(),
            epoch: m.epoch,
            ceremony_id: m.ceremony_id,
            member: m.member.to_string(),
            signature: m.signature,
        }
    }
}

/// Maps a core error to a status a client can act on (STYLE §6).
pub fn status_from_core(e: &CoreError) -> Status {
    match e {
        CoreError::InvalidField { .. } => Status::invalid_argument(e.to_string()),
        CoreError::Refused(_) | CoreError::PolicyDenied(_) => {
            Status::permission_denied(e.to_string())
        }
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
            removed: ids("removed", &s.removed)?,
            authorization: ceremony::authorization_digest("spec.authorization", &s.authorization)?,
        };
        spec.validate()
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn wire_request() -> WithdrawalRequest {
        WithdrawalRequest {
            request_id: "wd-1".into(),
            key_group: "warm-1".into(),
            tier: Tier::Warm as i32,
            asset: "BTC".into(),
            amount: "150000".into(),
            destination: "bc1qexampledestination".into(),
            payload: vec![7; 32],
            created_at: 1_700_000_000,
            expires_at: 1_700_003_600,
            requested_by: "custody-1".into(),
            ..WithdrawalRequest::default()
        }
    }

    #[test]
    fn v4_amount_must_be_canonical_decimal() {
        for ok in ["0", "1", "150000", &u128::MAX.to_string()] {
            assert_eq!(amount("amount", ok).expect(ok).to_string(), ok);
        }
        let too_big = format!("{}0", u128::MAX);
        for bad in [
            "+1", "01", "00", " 1", "1 ", "", "-1", "1e3", "0x1", "1_000", "１", &too_big,
        ] {
            let status = amount("amount", bad).expect_err(bad);
            assert_eq!(status.code(), Code::InvalidArgument, "{bad:?}");
            assert!(status.message().starts_with("amount: "), "{status}");
        }
        let mut w = wire_request();
        w.amount = "+1".into();
        let status = CoreRequest::try_from(&w).expect_err("+1 is not canonical");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("amount"), "{status}");
        assert!(CoreRequest::try_from(&wire_request()).is_ok());
    }

    #[test]
    fn v4_a_900_kb_request_id_gets_a_short_invalid_argument() {
        let mut w = wire_request();
        w.request_id = "r".repeat(900_000);
        let status = CoreRequest::try_from(&w).expect_err("too long");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().starts_with("request_id: "), "{status}");
        assert!(status.message().contains("(900000 bytes)"), "{status}");
        assert!(
            status.message().len() < 200,
            "{} bytes",
            status.message().len()
        );
    }

    #[test]
    fn v4_fields_of_8_to_16_kb_get_short_errors_naming_the_field() {
        type Set = fn(&mut WithdrawalRequest, String);
        let fields: [(&str, Set); 6] = [
            ("request_id", |w, v| w.request_id = v),
            ("key_group", |w, v| w.key_group = v),
            ("asset", |w, v| w.asset = v),
            ("amount", |w, v| w.amount = v),
            ("destination", |w, v| w.destination = v),
            ("requested_by", |w, v| w.requested_by = v),
        ];
        for size in [8 * 1024, 12 * 1024, 16 * 1024] {
            for (field, set) in fields {
                let mut w = wire_request();
                // Digits fit every field's alphabet, so only the length is wrong.
                set(&mut w, "7".repeat(size));
                let status = CoreRequest::try_from(&w).expect_err(field);
                assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status}");
                let message = status.message();
                assert!(message.len() < 200, "{field}: {} bytes", message.len());
                assert!(
                    message.contains(field) || message.contains(&field.replace('_', " ")),
                    "{field}: {message}"
                );
            }
        }
    }
}
