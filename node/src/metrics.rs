//! The node's Prometheus metrics: what it signs and refuses, its nonce pool,
//! seal state and signing rounds, plus the store and audit metrics every
//! daemon has ([`CommonMetrics`]). Served on the admin listener
//! (`[admin] metrics_listen`); the handlers record with one-liners.
//!
//! Labels stay bounded: `reason` and `step` come from [`Check`] and
//! [`PolicyRule`](permafrost_core::policy::PolicyRule) names, `group` from
//! key groups this node holds (made only by a ceremony), never from a request.

use std::sync::Arc;
use std::time::Duration;

use permafrost_core::policy::PolicyRule;
use permafrost_core::{CoreError, GroupName};
use permafrost_proto::metrics::{self as m, CommonMetrics, Render};
use permafrost_proto::ProtoError;
use prometheus::{HistogramVec, IntCounterVec, IntGauge, Registry};

use crate::{NodeError, SignerNode};

/// The check a refusal came from: the `reason` label of
/// `permafrost_node_refusals_total` unless policy names a rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Check {
    /// Custody-side checks: custody signature, key group, tier, activity, expiry, lifetime.
    Custody,
    /// Nonces used against what round 1 bound them to (group, request, scheme, call).
    NonceBinding,
    /// A group's scheme differs from what this node's policy now says.
    Scheme,
    /// A signing package that is malformed or does not sign what was checked.
    SigningPackage,
    /// Group-wide velocity: receipts or attestations that do not hold.
    Velocity,
    /// The activation test signature of a new group.
    Activation,
    /// A key ceremony step (DKG, refresh, repair).
    Ceremony,
    /// The journal step: policy (labelled by its rule when it names one),
    /// packages against the authorized request, a request id reused.
    Journal,
}

impl Check {
    fn name(self) -> &'static str {
        match self {
            Check::Custody => "custody",
            Check::NonceBinding => "nonce_binding",
            Check::Scheme => "scheme",
            Check::SigningPackage => "signing_package",
            Check::Velocity => "velocity_attestation",
            Check::Activation => "activation",
            Check::Ceremony => "ceremony",
            Check::Journal => "journal",
        }
    }
}

/// The `reason` label of a refusal from `check`.
fn reason(check: Check, e: &CoreError) -> &'static str {
    match e {
        CoreError::PolicyDenied(denial) => denial.rule.name(),
        CoreError::NotYet(_) => "not_yet",
        _ => check.name(),
    }
}

/// What kind of share a Sign step released (the `kind` label).
#[derive(Clone, Copy, Debug)]
pub(crate) enum ShareKind {
    /// For a custody-signed withdrawal.
    Withdrawal,
    /// For a new group's activation test.
    Activation,
}

/// Every metric of a node.
pub struct NodeMetrics {
    registry: Registry,
    common: CommonMetrics,
    sign_seconds: HistogramVec,
    shares_released: IntCounterVec,
    refusals: IntCounterVec,
    approvals: IntCounterVec,
    nonces_open: IntGauge,
    nonces_capacity: IntGauge,
    sealed: IntGauge,
    rounds_in_flight: IntGauge,
    healthy: IntGauge,
}

impl std::fmt::Debug for NodeMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeMetrics").finish_non_exhaustive()
    }
}

impl NodeMetrics {
    /// Registers every metric of node `id`, observing `store`'s commits.
    pub(crate) fn new(id: &str, store: &permafrost_store::Store) -> Result<Self, NodeError> {
        Self::register(id, store).map_err(|e| NodeError::Bug(e.to_string()))
    }

    fn register(id: &str, store: &permafrost_store::Store) -> Result<Self, ProtoError> {
        let r = Registry::new();
        let metrics = Self {
            common: CommonMetrics::register(&r, "node", id, store)?,
            sign_seconds: m::histogram_vec(
                &r,
                "permafrost_node_sign_duration_seconds",
                "Time of one Sign step (round 2: checks, journal, audit, shares), by outcome \
                 (released, refused, not_yet, busy, failed).",
                &["outcome"],
                m::SIGNING_BUCKETS,
            )?,
            shares_released: m::counter_vec(
                &r,
                "permafrost_node_signature_shares_released_total",
                "Signature shares released (one per FROST session: per message, or per \
                 transaction input), by key group and kind (withdrawal, activation).",
                &["group", "kind"],
            )?,
            refusals: m::counter_vec(
                &r,
                "permafrost_node_refusals_total",
                "Requests this node refused, by step (announce, commit, attest, sign, or a ceremony step) and \
                 reason (a policy rule name, or the check: custody, nonce_binding, scheme, \
                 signing_package, velocity_attestation, activation, ceremony, journal, not_yet).",
                &["step", "reason"],
            )?,
            approvals: m::counter_vec(
                &r,
                "permafrost_node_approvals_total",
                "Approvals carried by withdrawals whose shares this node released, by key group.",
                &["group"],
            )?,
            nonces_open: m::gauge(
                &r,
                "permafrost_node_nonce_pool_open",
                "Round-1 nonces held in the pool now.",
            )?,
            nonces_capacity: m::gauge(
                &r,
                "permafrost_node_nonce_pool_capacity",
                "Most nonces the pool holds (nonces.max_open).",
            )?,
            sealed: m::gauge(
                &r,
                "permafrost_node_sealed",
                "1 while key shares are sealed (the node signs nothing), else 0.",
            )?,
            rounds_in_flight: m::gauge(
                &r,
                "permafrost_node_signing_rounds_in_flight",
                "Commit and Sign calls running now (limits.max_sessions caps them).",
            )?,
            healthy: m::gauge(
                &r,
                "permafrost_node_healthy",
                "1 while the node's store commits and its audit log takes records (gRPC health SERVING).",
            )?,
            registry: r,
        };
        // Every outcome shows from the start, so its first event is a rise from 0.
        for outcome in ["released", "refused", "not_yet", "busy", "failed"] {
            metrics.sign_seconds.with_label_values(&[outcome]);
        }
        let checks = [
            Check::Custody,
            Check::NonceBinding,
            Check::Scheme,
            Check::SigningPackage,
            Check::Velocity,
            Check::Activation,
            Check::Journal,
        ];
        let sign_reasons = checks
            .iter()
            .map(|c| c.name())
            .chain(["not_yet"])
            .chain(PolicyRule::ALL.iter().map(|r| r.name()));
        for reason in sign_reasons {
            metrics.refusals.with_label_values(&["sign", reason]);
        }
        for (step, check) in [
            ("announce", Check::Custody),
            ("commit", Check::Custody),
            ("attest", Check::Custody),
            ("attest", Check::Velocity),
        ] {
            metrics.refusals.with_label_values(&[step, check.name()]);
        }
        Ok(metrics)
    }

    /// One Sign step took `took` and ended in `result`.
    pub(crate) fn sign_step<T>(&self, took: Duration, result: &Result<T, NodeError>) {
        let outcome = match result {
            Ok(_) => "released",
            Err(NodeError::NotAuthorized(_)) => "refused",
            Err(NodeError::NotYet(_)) => "not_yet",
            Err(NodeError::Busy { .. }) => "busy",
            Err(_) => "failed",
        };
        self.sign_seconds
            .with_label_values(&[outcome])
            .observe(took.as_secs_f64());
    }

    /// Time spent in one step of a withdrawal (`permafrost_step_duration_seconds`).
    pub(crate) fn step(&self, step: &str, took: std::time::Duration) {
        self.common.step(step, took);
    }

    /// `count` signature shares of `kind` left for `group`.
    pub(crate) fn shares_released(&self, group: &GroupName, kind: ShareKind, count: usize) {
        let kind = match kind {
            ShareKind::Withdrawal => "withdrawal",
            ShareKind::Activation => "activation",
        };
        self.shares_released
            .with_label_values(&[group.as_str(), kind])
            .inc_by(count as u64);
    }

    /// A withdrawal of `group` carrying `count` approvals was signed.
    pub(crate) fn approvals(&self, group: &GroupName, count: usize) {
        self.approvals
            .with_label_values(&[group.as_str()])
            .inc_by(count as u64);
    }

    /// `step` refused a request in `check` with `e`.
    pub(crate) fn refused(&self, step: &str, check: Check, e: &CoreError) {
        // `step` is one of the node's own constants, never request data.
        self.refusals
            .with_label_values(&[step, reason(check, e)])
            .inc();
    }

    /// The exposition text of `node`, its gauges read from its state now.
    pub fn render(node: &SignerNode) -> Result<String, String> {
        let metrics = &node.metrics;
        metrics.common.refresh(node.store.inner(), &node.audit);
        if let Ok(pool) = node.nonces.lock() {
            metrics
                .nonces_open
                .set(m::saturating_i64(pool.len() as u64));
            metrics
                .nonces_capacity
                .set(m::saturating_i64(pool.capacity() as u64));
        }
        metrics.sealed.set(i64::from(node.is_sealed()));
        metrics.rounds_in_flight.set(m::saturating_i64(
            node.max_sessions
                .saturating_sub(node.sessions.available_permits()) as u64,
        ));
        metrics.healthy.set(i64::from(node.health().is_ok()));
        // Each group held shows its share and approval counters from 0.
        for group in node.store.groups().map_err(|e| e.to_string())? {
            let name = group.name.as_str();
            for kind in ["withdrawal", "activation"] {
                metrics.shares_released.with_label_values(&[name, kind]);
            }
            metrics.approvals.with_label_values(&[name]);
        }
        m::encode(&metrics.registry)
    }

    /// What the metrics listener serves: [`NodeMetrics::render`] of the
    /// running node, held weakly so the listener never keeps a stopped node open.
    pub fn renderer(node: &Arc<SignerNode>) -> Render {
        let node = Arc::downgrade(node);
        Arc::new(move || match node.upgrade() {
            Some(node) => Self::render(&node),
            None => Err("the node has stopped".into()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use permafrost_core::policy::Denial;

    #[test]
    fn a_policy_denial_is_labelled_by_its_rule_and_anything_else_by_its_check() {
        let denied = CoreError::PolicyDenied(Denial {
            rule: PolicyRule::Velocity,
            why: "over the daily limit".into(),
        });
        assert_eq!(reason(Check::Journal, &denied), "velocity");
        assert_eq!(
            reason(
                Check::Custody,
                &CoreError::refused("custody signature does not verify")
            ),
            "custody"
        );
        assert_eq!(
            reason(Check::Journal, &CoreError::NotYet("1 more approval".into())),
            "not_yet"
        );
    }
}
