//! Approvals: what an approver signs, and checking offered approvals once,
//! outside any lock, so the policy step inside a node's store commit only
//! counts them (A2, I2).

use std::collections::BTreeMap;

use crate::identity::verify_ed25519;
use crate::withdrawal::{RequestDigest, WithdrawalRequest};

use super::Policy;

/// An approver's signature over a request digest and an expiry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Approval {
    /// Approver id (key in the registry).
    pub approver_id: String,
    /// Unix seconds after which the approval no longer counts.
    pub expires_at: u64,
    /// Ed25519 signature over [`approval_message`].
    pub signature: Vec<u8>,
}

/// What an approver signs: domain, request digest, approver id, expiry (A2).
pub fn approval_message(digest: &RequestDigest, approver_id: &str, expires_at: u64) -> Vec<u8> {
    let mut m = Vec::with_capacity(96);
    m.extend_from_slice(b"PERMAFROST/APPROVAL/v1");
    m.extend_from_slice(&digest.0);
    m.extend_from_slice(&(approver_id.len() as u32).to_be_bytes());
    m.extend_from_slice(approver_id.as_bytes());
    m.extend_from_slice(&expires_at.to_be_bytes());
    m
}

/// Approvals whose signatures were already checked, outside any lock (the
/// expensive part: one Ed25519 verification each). Only [`check_approvals`]
/// makes one.
#[derive(Clone, Debug, Default)]
pub struct CheckedApprovals {
    /// Distinct approver key → when its approval stops counting.
    counted: BTreeMap<[u8; 32], u64>,
    rejected: Vec<String>,
}

impl CheckedApprovals {
    /// No approvals.
    pub fn none() -> Self {
        Self::default()
    }

    /// Distinct approvals still unexpired at `now`, and why any offered one
    /// does not count.
    pub(super) fn count_at(&self, now: u64) -> (usize, Vec<String>) {
        let counted = self.counted.values().filter(|until| now <= **until).count();
        let mut rejected = self.rejected.clone();
        if counted < self.counted.len() {
            rejected.push("an approval expired since it was checked".into());
        }
        (counted, rejected)
    }
}

/// Checks offered approvals for `request`: counted once per distinct key,
/// never the requester's (by key, whatever id it is listed under),
/// unexpired at `now`, signed over this digest.
pub fn check_approvals(
    policy: &Policy,
    request: &WithdrawalRequest,
    digest: &RequestDigest,
    approvals: &[Approval],
    now: u64,
) -> CheckedApprovals {
    let mut out = CheckedApprovals::default();
    let requester_key = policy.approvers.get(&request.requested_by);
    for a in approvals {
        let Some(key) = policy.approvers.get(&a.approver_id) else {
            out.rejected
                .push(format!("{}: not a registered approver", a.approver_id));
            continue;
        };
        if a.approver_id == request.requested_by || requester_key == Some(key) {
            out.rejected.push(format!(
                "{}: approvers may not approve their own request",
                a.approver_id
            ));
            continue;
        }
        if now > a.expires_at {
            out.rejected.push(format!(
                "{}: approval expired at {}",
                a.approver_id, a.expires_at
            ));
            continue;
        }
        if !verify_ed25519(
            key,
            &approval_message(digest, &a.approver_id, a.expires_at),
            &a.signature,
        ) {
            out.rejected.push(format!(
                "{}: signature does not cover this request",
                a.approver_id
            ));
            continue;
        }
        if out.counted.insert(key.to_bytes(), a.expires_at).is_some() {
            out.rejected.push(format!(
                "{}: this approver key was already counted",
                a.approver_id
            ));
        }
    }
    out
}
