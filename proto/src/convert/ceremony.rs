//! Wire ⇄ core conversions of operator-approved lifecycle specs
//! (docs/ceremony-spec.md). A receiver recomputes the canonical encoding from
//! the converted fields, so nothing here decides what was signed.

use permafrost_core::ceremony::{self as core, Operation, SignedSpec};
use tonic::Status;

use super::{bad, group_name, node_id, tier_from_wire, tier_to_wire};
use crate::{
    CeremonyOperation, LifecycleSpec, OperatorApproval, RegistryChange, SignedLifecycleSpec,
};

/// Wire operation → core operation (unspecified is an error).
pub fn operation_from_wire(value: i32) -> Result<Operation, Status> {
    match CeremonyOperation::try_from(value) {
        Ok(CeremonyOperation::Unspecified) | Err(_) => Err(bad(
            "authorization.spec.operation",
            format!("{value} is not a lifecycle operation"),
        )),
        Ok(op) => {
            Operation::from_code(op as u8).map_err(|e| bad("authorization.spec.operation", e))
        }
    }
}

/// Core operation → wire operation.
pub fn operation_to_wire(op: Operation) -> i32 {
    i32::from(op.code())
}

fn optional_node(field: &str, value: &str) -> Result<Option<permafrost_core::NodeId>, Status> {
    if value.is_empty() {
        Ok(None)
    } else {
        node_id(field, value).map(Some)
    }
}

impl TryFrom<&LifecycleSpec> for core::LifecycleSpec {
    type Error = Status;
    fn try_from(s: &LifecycleSpec) -> Result<Self, Status> {
        let spec = core::LifecycleSpec {
            version: u16::try_from(s.version).map_err(|e| bad("authorization.spec.version", e))?,
            operation: operation_from_wire(s.operation)?,
            proposal_id: s.proposal_id.clone(),
            group: group_name("authorization.spec.group", &s.group)?,
            tier: tier_from_wire(s.tier)?,
            epoch: s.epoch,
            group_key: (!s.group_key.is_empty()).then(|| s.group_key.clone()),
            members: s
                .members
                .iter()
                .map(|m| node_id("authorization.spec.members", m))
                .collect::<Result<_, _>>()?,
            threshold: u16::try_from(s.threshold)
                .map_err(|e| bad("authorization.spec.threshold", e))?,
            subject: optional_node("authorization.spec.subject", &s.subject)?,
            replacement: optional_node("authorization.spec.replacement", &s.replacement)?,
            created_at: s.created_at,
            expires_at: s.expires_at,
            registry: s.registry.as_ref().map(registry_from_wire).transpose()?,
        };
        spec.validate().map_err(|e| bad("authorization.spec", e))?;
        Ok(spec)
    }
}

impl From<&core::LifecycleSpec> for LifecycleSpec {
    fn from(s: &core::LifecycleSpec) -> Self {
        LifecycleSpec {
            version: u32::from(s.version),
            operation: operation_to_wire(s.operation),
            proposal_id: s.proposal_id.clone(),
            group: s.group.to_string(),
            tier: tier_to_wire(s.tier),
            epoch: s.epoch,
            group_key: s.group_key.clone().unwrap_or_default(),
            members: s.members.iter().map(|m| m.to_string()).collect(),
            threshold: u32::from(s.threshold),
            subject: s
                .subject
                .as_ref()
                .map(|m| m.to_string())
                .unwrap_or_default(),
            replacement: s
                .replacement
                .as_ref()
                .map(|m| m.to_string())
                .unwrap_or_default(),
            created_at: s.created_at,
            expires_at: s.expires_at,
            registry: s.registry.as_ref().map(registry_to_wire),
        }
    }
}

/// Most operators a registry change may name (no quorum needs more approvals
/// than a signed spec may carry).
pub const MAX_OPERATORS: usize = MAX_APPROVALS;

fn registry_from_wire(r: &RegistryChange) -> Result<core::RegistryChange, Status> {
    const FIELD: &str = "authorization.spec.registry";
    if r.keys.len() > MAX_OPERATORS {
        return Err(bad(
            FIELD,
            format!("{} operators, at most {MAX_OPERATORS}", r.keys.len()),
        ));
    }
    let quorum = r
        .quorum
        .iter()
        .map(|(op, k)| {
            let op: Operation = op.parse().map_err(|e| bad(FIELD, e))?;
            let k = u16::try_from(*k).map_err(|e| bad(FIELD, format!("quorum of {op}: {e}")))?;
            Ok((op, k))
        })
        .collect::<Result<_, Status>>()?;
    Ok(core::RegistryChange {
        seq: r.seq,
        previous: r.previous.clone(),
        registry: core::RegistryConfig {
            default_quorum: u16::try_from(r.default_quorum)
                .map_err(|e| bad(FIELD, format!("default_quorum: {e}")))?,
            keys: r.keys.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            quorum,
        },
    })
}

fn registry_to_wire(r: &core::RegistryChange) -> RegistryChange {
    RegistryChange {
        seq: r.seq,
        previous: r.previous.clone(),
        default_quorum: u32::from(r.registry.default_quorum),
        keys: r
            .registry
            .keys
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        quorum: r
            .registry
            .quorum
            .iter()
            .map(|(op, k)| (op.to_string(), u32::from(*k)))
            .collect(),
    }
}

/// Most approvals a signed spec may carry (a registry is small; V4).
pub const MAX_APPROVALS: usize = 64;

impl TryFrom<&SignedLifecycleSpec> for SignedSpec {
    type Error = Status;
    fn try_from(s: &SignedLifecycleSpec) -> Result<Self, Status> {
        let spec = s
            .spec
            .as_ref()
            .ok_or_else(|| bad("authorization.spec", "missing"))?
            .try_into()?;
        if s.approvals.len() > MAX_APPROVALS {
            return Err(bad(
                "authorization.approvals",
                format!("{} approvals, at most {MAX_APPROVALS}", s.approvals.len()),
            ));
        }
        let approvals = s
            .approvals
            .iter()
            .map(|a| core::OperatorApproval {
                operator: a.operator_id.clone(),
                signature: a.signature.clone(),
            })
            .collect();
        Ok(SignedSpec { spec, approvals })
    }
}

impl From<&SignedSpec> for SignedLifecycleSpec {
    fn from(s: &SignedSpec) -> Self {
        SignedLifecycleSpec {
            spec: Some((&s.spec).into()),
            approvals: s
                .approvals
                .iter()
                .map(|a| OperatorApproval {
                    operator_id: a.operator.clone(),
                    signature: a.signature.clone(),
                })
                .collect(),
        }
    }
}

/// The signed spec a request must carry, converted; "authorization: missing" without one.
pub fn required_authorization(s: Option<&SignedLifecycleSpec>) -> Result<SignedSpec, Status> {
    s.ok_or_else(|| {
        bad(
            "authorization",
            "missing: every lifecycle ceremony needs an operator-quorum spec (permafrostctl ceremony propose | approve)",
        )
    })?
    .try_into()
}

/// A 32-byte spec digest field.
pub fn authorization_digest(field: &str, value: &[u8]) -> Result<[u8; 32], Status> {
    value.try_into().map_err(|_| {
        bad(
            field,
            format!(
                "{} bytes; the digest of the approved spec is 32",
                value.len()
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire() -> SignedLifecycleSpec {
        SignedLifecycleSpec {
            spec: Some(LifecycleSpec {
                version: 1,
                operation: CeremonyOperation::Create as i32,
                proposal_id: "p-1".into(),
                group: "warm-1".into(),
                tier: crate::Tier::Warm as i32,
                epoch: 0,
                group_key: vec![],
                members: vec!["n1".into(), "n2".into()],
                threshold: 2,
                subject: String::new(),
                replacement: String::new(),
                created_at: 10,
                expires_at: 20,
                registry: None,
            }),
            approvals: vec![OperatorApproval {
                operator_id: "op-1".into(),
                signature: vec![1; 64],
            }],
        }
    }

    #[test]
    fn round_trips_and_names_bad_fields() {
        let core: SignedSpec = (&wire()).try_into().expect("valid");
        assert_eq!(SignedLifecycleSpec::from(&core), wire());
        let mut w = wire();
        w.spec.as_mut().expect("spec").operation = 0;
        let err = SignedSpec::try_from(&w).expect_err("unspecified");
        assert!(err.message().contains("operation"), "{}", err.message());
        let mut w = wire();
        w.spec.as_mut().expect("spec").group_key = vec![2; 33];
        let err = SignedSpec::try_from(&w).expect_err("create with a key");
        assert!(err.message().contains("group_key"), "{}", err.message());
        let err = required_authorization(None).expect_err("missing");
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().starts_with("authorization: missing"));
    }
}
