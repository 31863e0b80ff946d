//! The coordinator's Prometheus metrics: withdrawals and their signing
//! latency, attempts, refusals, approvals, key ceremonies, and each member as
//! the coordinator sees it (reachable, sealed, probe round trip; per group,
//! members up against the threshold), plus the store and audit metrics every
//! daemon has ([`CommonMetrics`]). Served on the admin listener.
//!
//! Labels stay bounded: outcomes, kinds and reasons are fixed sets (policy
//! rule names among them); `node` and `region` come from the manifest and
//! `group` from key groups made by a ceremony, never from a request.

use std::sync::Arc;
use std::time::{Duration, Instant};

use permafrost_core::policy::PolicyRule;
use permafrost_proto::metrics::{self as m, CommonMetrics, Render};
use permafrost_proto::ProtoError;
use prometheus::{GaugeVec, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Registry};

use crate::driver::AttemptError;
use crate::store::{Reason, RequestRecord, RequestState};
use crate::{Coordinator, CoordinatorError};

/// Why the coordinator refused or gave up on a withdrawal: the `reason`
/// label of `permafrost_coordinator_refusals_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Custody-side checks at submission (signature, group, tier, expiry).
    Custody,
    /// The coordinator's reading of the policy refuses it for good.
    Policy(PolicyRule),
    /// A request id already names another request.
    RequestIdReused,
    /// Too many members refused it on their own checks.
    Signers,
    /// An approval that does not count.
    Approval,
}

impl Refusal {
    fn name(self) -> &'static str {
        match self {
            Refusal::Custody => "custody",
            Refusal::Policy(rule) => rule.name(),
            Refusal::RequestIdReused => "request_id_reused",
            Refusal::Signers => "signers",
            Refusal::Approval => "approval_not_counted",
        }
    }
}

/// Kinds of key ceremony (the `kind` label).
#[derive(Clone, Copy, Debug)]
pub(crate) enum CeremonyKind {
    /// Distributed key generation of a new group.
    Dkg,
    /// Proactive refresh of a group's shares.
    Refresh,
    /// Rebuilding a lost member's share.
    Repair,
    /// Taking over a group created by another coordinator.
    Adopt,
}

/// Every metric of a coordinator.
pub struct CoordinatorMetrics {
    registry: Registry,
    common: CommonMetrics,
    signing_seconds: HistogramVec,
    withdrawals: IntCounterVec,
    accepted: prometheus::IntCounter,
    attempts: IntCounterVec,
    nonce_sets: IntCounterVec,
    refusals: IntCounterVec,
    approvals: IntCounterVec,
    ceremony_seconds: HistogramVec,
    member_up: IntGaugeVec,
    member_sealed: IntGaugeVec,
    member_rtt: GaugeVec,
    group_threshold: IntGaugeVec,
    group_members_up: IntGaugeVec,
    in_flight: IntGauge,
    healthy: IntGauge,
}

impl std::fmt::Debug for CoordinatorMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoordinatorMetrics").finish_non_exhaustive()
    }
}

/// The final outcomes of a withdrawal (the `outcome` label).
const OUTCOMES: [&str; 5] = [
    "signed",
    "refused_by_policy",
    "refused_by_signers",
    "expired",
    "failed",
];

fn reason_name(reason: Reason) -> &'static str {
    match reason {
        Reason::Signed => "signed",
        Reason::RefusedByPolicy => "refused_by_policy",
        Reason::RefusedBySigners => "refused_by_signers",
        Reason::Expired => "expired",
        _ => "failed",
    }
}

impl CoordinatorMetrics {
    /// Registers every metric of coordinator `id`, observing `store`'s commits.
    pub(crate) fn new(id: &str, store: &permafrost_store::Store) -> Result<Self, CoordinatorError> {
        Self::register(id, store).map_err(|e| CoordinatorError::Bug(e.to_string()))
    }

    fn register(id: &str, store: &permafrost_store::Store) -> Result<Self, ProtoError> {
        let r = Registry::new();
        let metrics = Self {
            common: CommonMetrics::register(&r, "coordinator", id, store)?,
            signing_seconds: m::histogram_vec(
                &r,
                "permafrost_coordinator_signing_duration_seconds",
                "Per withdrawal, from its first signing attempt (policy satisfied) to its final \
                 state, by outcome (signed, refused_by_signers, expired, failed).",
                &["outcome"],
                m::SIGNING_BUCKETS,
            )?,
            withdrawals: m::counter_vec(
                &r,
                "permafrost_coordinator_withdrawals_total",
                "Withdrawals that reached a final state, by outcome (signed, refused_by_policy, \
                 refused_by_signers, expired, failed).",
                &["outcome"],
            )?,
            accepted: m::counter(
                &r,
                "permafrost_coordinator_withdrawals_accepted_total",
                "Withdrawals accepted for signing (stored and audited).",
            )?,
            attempts: m::counter_vec(
                &r,
                "permafrost_coordinator_signing_attempts_total",
                "Signing attempts on a subset of signers, by result (signed, unreachable, \
                 refused, busy, invalid_shares, other).",
                &["result"],
            )?,
            nonce_sets: m::counter_vec(
                &r,
                "permafrost_coordinator_signing_nonce_sets_total",
                "Nonce sets signing sessions used, by where they came from (bank: \
                 pre-issued, the session needs no commit round; fresh: a Commit call).",
                &["source"],
            )?,
            refusals: m::counter_vec(
                &r,
                "permafrost_coordinator_refusals_total",
                "Withdrawals and approvals refused, by reason (a policy rule name, custody, \
                 request_id_reused, signers, approval_not_counted).",
                &["reason"],
            )?,
            approvals: m::counter_vec(
                &r,
                "permafrost_coordinator_approvals_total",
                "Approvals received, by outcome (counted, not_counted).",
                &["outcome"],
            )?,
            ceremony_seconds: m::histogram_vec(
                &r,
                "permafrost_coordinator_ceremony_duration_seconds",
                "Key ceremonies, by kind (dkg, refresh, repair, adopt) and outcome (ok, failed).",
                &["kind", "outcome"],
                m::CEREMONY_BUCKETS,
            )?,
            member_up: m::gauge_vec(
                &r,
                "permafrost_coordinator_member_up",
                "1 if the member answered the last probe or call healthy, else 0.",
                &["node", "region"],
            )?,
            member_sealed: m::gauge_vec(
                &r,
                "permafrost_coordinator_member_sealed",
                "1 if the member last reported itself sealed, else 0.",
                &["node"],
            )?,
            member_rtt: m::float_gauge_vec(
                &r,
                "permafrost_coordinator_member_rtt_seconds",
                "Round trip of the member's last successful health probe.",
                &["node"],
            )?,
            group_threshold: m::gauge_vec(
                &r,
                "permafrost_coordinator_group_threshold",
                "Signers a key group needs.",
                &["group"],
            )?,
            group_members_up: m::gauge_vec(
                &r,
                "permafrost_coordinator_group_members_up",
                "Members of a key group that can sign now: up, unsealed and not excluded.",
                &["group"],
            )?,
            in_flight: m::gauge(
                &r,
                "permafrost_coordinator_withdrawals_in_flight",
                "Withdrawals being driven now (max_inflight_requests caps them).",
            )?,
            healthy: m::gauge(
                &r,
                "permafrost_coordinator_healthy",
                "1 while the coordinator's store commits and its audit log takes records.",
            )?,
            registry: r,
        };
        // Every fixed outcome shows from the start, so its first event is a rise from 0.
        for outcome in OUTCOMES {
            metrics.withdrawals.with_label_values(&[outcome]);
            metrics.signing_seconds.with_label_values(&[outcome]);
        }
        let refusals = [
            Refusal::Custody,
            Refusal::RequestIdReused,
            Refusal::Signers,
            Refusal::Approval,
        ]
        .into_iter()
        .chain(PolicyRule::ALL.map(Refusal::Policy));
        for why in refusals {
            metrics.refusals.with_label_values(&[why.name()]);
        }
        for result in [
            "signed",
            "unreachable",
            "refused",
            "busy",
            "invalid_shares",
            "other",
        ] {
            metrics.attempts.with_label_values(&[result]);
        }
        for outcome in ["counted", "not_counted"] {
            metrics.approvals.with_label_values(&[outcome]);
        }
        Ok(metrics)
    }

    /// Time spent in one step of a withdrawal (`permafrost_step_duration_seconds`).
    pub(crate) fn step(&self, step: &str, took: std::time::Duration) {
        self.common.step(step, took);
    }

    /// A withdrawal was accepted for signing.
    pub(crate) fn accepted(&self) {
        self.accepted.inc();
    }

    /// A withdrawal or approval was refused.
    pub(crate) fn refused(&self, why: Refusal) {
        self.refusals.with_label_values(&[why.name()]).inc();
    }

    /// An approval arrived and counted, or not.
    pub(crate) fn approval(&self, counted: bool) {
        let outcome = if counted { "counted" } else { "not_counted" };
        self.approvals.with_label_values(&[outcome]).inc();
        if !counted {
            self.refused(Refusal::Approval);
        }
    }

    /// A signing session got a nonce set from `source` ("bank" or "fresh").
    pub(crate) fn nonce_set(&self, source: &str) {
        self.nonce_sets.with_label_values(&[source]).inc();
    }

    /// One signing attempt ended with `outcome`.
    pub(crate) fn attempt<T>(&self, outcome: &Result<T, AttemptError>) {
        let result = match outcome {
            Ok(_) => "signed",
            Err(AttemptError::Unreachable(..)) => "unreachable",
            Err(AttemptError::Refused(..)) => "refused",
            Err(AttemptError::Busy(..)) => "busy",
            Err(AttemptError::InvalidShares(_)) => "invalid_shares",
            Err(AttemptError::Stale(_)) => "stale",
            Err(AttemptError::CatchingUp(_)) => "catching_up",
            Err(AttemptError::Other(_)) => "other",
        };
        self.attempts.with_label_values(&[result]).inc();
    }

    /// A driver stopped with the request in `record`; `signing_since` is when
    /// its first attempt started (none if it never got that far).
    pub(crate) fn driver_stopped(&self, record: &RequestRecord, signing_since: Option<Instant>) {
        if record.state == RequestState::Pending {
            return;
        }
        let outcome = reason_name(record.reason);
        self.withdrawals.with_label_values(&[outcome]).inc();
        match (record.reason, record.policy_rule) {
            (Reason::RefusedByPolicy, Some(rule)) => self.refused(Refusal::Policy(rule)),
            (Reason::RefusedBySigners, _) => self.refused(Refusal::Signers),
            _ => {}
        }
        if let Some(since) = signing_since {
            self.signing_seconds
                .with_label_values(&[outcome])
                .observe(since.elapsed().as_secs_f64());
        }
    }

    /// A ceremony of `kind` took `took` and succeeded or not.
    pub(crate) fn ceremony(&self, kind: CeremonyKind, took: Duration, ok: bool) {
        let kind = match kind {
            CeremonyKind::Dkg => "dkg",
            CeremonyKind::Refresh => "refresh",
            CeremonyKind::Repair => "repair",
            CeremonyKind::Adopt => "adopt",
        };
        let outcome = if ok { "ok" } else { "failed" };
        self.ceremony_seconds
            .with_label_values(&[kind, outcome])
            .observe(took.as_secs_f64());
    }

    /// The exposition text of `coord`, its gauges read from its state now.
    pub fn render(coord: &Coordinator) -> Result<String, String> {
        let metrics = &coord.metrics;
        metrics.common.refresh(coord.store.inner(), &coord.audit);
        let mut can_sign = std::collections::BTreeSet::new();
        for member in coord.members.iter() {
            let h = coord.members.health(&member.id);
            let node = member.id.as_str();
            metrics
                .member_up
                .with_label_values(&[node, member.region.as_str()])
                .set(i64::from(h.reachable));
            metrics
                .member_sealed
                .with_label_values(&[node])
                .set(i64::from(h.sealed));
            if let Some(rtt) = h.latency {
                metrics
                    .member_rtt
                    .with_label_values(&[node])
                    .set(rtt.as_secs_f64());
            }
            if h.reachable && !h.sealed {
                can_sign.insert(member.id.clone());
            }
        }
        for group in coord.store.groups().map_err(|e| e.to_string())? {
            let up = group
                .members
                .iter()
                .filter(|m| can_sign.contains(*m))
                .filter(|m| !coord.store.is_excluded(&group.name, m).unwrap_or(true))
                .count();
            let name = group.name.as_str();
            metrics
                .group_threshold
                .with_label_values(&[name])
                .set(i64::from(group.threshold));
            metrics
                .group_members_up
                .with_label_values(&[name])
                .set(m::saturating_i64(up as u64));
        }
        let in_flight = coord.inflight.lock().map(|i| i.len()).unwrap_or(0);
        metrics.in_flight.set(m::saturating_i64(in_flight as u64));
        metrics.healthy.set(i64::from(coord.health().is_ok()));
        m::encode(&metrics.registry)
    }

    /// What the metrics listener serves: [`CoordinatorMetrics::render`] of
    /// the running coordinator, held weakly.
    pub fn renderer(coord: &Arc<Coordinator>) -> Render {
        let coord = Arc::downgrade(coord);
        Arc::new(move || match coord.upgrade() {
            Some(coord) => Self::render(&coord),
            None => Err("the coordinator has stopped".into()),
        })
    }
}
