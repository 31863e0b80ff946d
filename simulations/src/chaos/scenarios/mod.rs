//! The chaos scenarios of issue 4, each a function of its run seed: which
//! nodes die, which links break, who lies and where all come from it.
//!
//! This file holds the [`Scenario`] enum (names, dispatch); `run.rs` the
//! shared run context every scenario is written against ([`Run`]); each other
//! file one scenario, opening with what it shows and the THREATS ids it covers.

mod adaptive_liar;
mod burst_kill_node;
mod dkg_split_view;
mod kill_coordinator_mid_round;
mod kill_node_between_rounds;
mod lose_n_minus_t;
mod lose_n_minus_t_plus_1;
mod lying_node_every_position;
mod partition_heal;
mod refresh_then_sign;
mod repair_then_sign;
mod restart_mid_session;
mod run;
mod silent_after_commit;
mod slow_lossy;
mod slow_under_deadline;

use std::time::Duration;

use serde::Serialize;

use crate::SimError;

pub use run::{Run, RunMetrics, Settings};

/// The threshold of the five-member group most scenarios use (n − t = 2).
const T: usize = 3;
/// Longest wait for the "below threshold" answer (issue 4's target).
pub const BELOW_THRESHOLD_TARGET: Duration = Duration::from_secs(5);

/// A chaos scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// Kill -9 n − t members of a 3-of-5 group: every request still signs.
    #[value(name = "lose-n-minus-t")]
    LoseNMinusT,
    /// Kill -9 n − t + 1 members: "below threshold" within 5 s, signed once one returns.
    #[value(name = "lose-n-minus-t-plus-1")]
    LoseNMinusTPlus1,
    /// Kill -9 a signer after round 1, restart it, replay round 2: refused (N2).
    #[value(name = "kill-node-between-rounds")]
    KillNodeBetweenRounds,
    /// Kill -9 the coordinator mid-round and restart it: same signature on resubmission.
    #[value(name = "kill-coordinator-mid-round")]
    KillCoordinatorMidRound,
    /// 150 ms inter-region latency, jitter, 5% loss, occasional resets (F1).
    #[value(name = "slow-lossy")]
    SlowLossy,
    /// Partition a minority, then the majority, also one way, then heal (F2).
    #[value(name = "partition-heal")]
    PartitionHeal,
    /// A lying node in every position: the culprit is always the liar (C1).
    #[value(name = "lying-node-every-position")]
    LyingNodeEveryPosition,
    /// One recipient is shown an altered DKG message: the ceremony aborts naming the sender (K1).
    #[value(name = "dkg-split-view")]
    DkgSplitView,
    /// A member is lost for good; its share is repaired onto a spare; signing goes on.
    #[value(name = "repair-then-sign")]
    RepairThenSign,
    /// Refresh; new shares sign; a share captured before cannot (K6).
    #[value(name = "refresh-then-sign")]
    RefreshThenSign,
    /// Kill -9 a signer in the middle of a burst of concurrent withdrawals and
    /// restart it: all sign, one digest per id, velocity counted once (S1, S4).
    #[value(name = "burst-kill-node")]
    BurstKillNode,
    /// An adaptive liar (honest until chosen, then honest, lying or silent per
    /// session): every request signs, it is named only for its bad shares (C1, F1, X2).
    #[value(name = "adaptive-liar")]
    AdaptiveLiar,
    /// n − t members answer round 1, never round 2: every request signs, nobody is named (F1, C1, X2).
    #[value(name = "silent-after-commit")]
    SilentAfterCommit,
    /// n − t members answer round 2 just under the deadline: their shares count, nobody is named (F1, X2).
    #[value(name = "slow-under-deadline")]
    SlowUnderDeadline,
    /// A signer restarts after releasing its share, before it arrives: the
    /// request signs, the node signs again with fresh nonces (N2, N3, S1).
    #[value(name = "restart-mid-session")]
    RestartMidSession,
}

impl Scenario {
    /// Every scenario, in the order `all` runs them: declaration order, from
    /// the `ValueEnum` derive, so a new variant cannot be left out.
    pub fn all() -> &'static [Scenario] {
        <Scenario as clap::ValueEnum>::value_variants()
    }

    /// Its command-line name.
    pub fn name(self) -> String {
        clap::ValueEnum::to_possible_value(&self)
            .map(|v| v.get_name().to_string())
            .unwrap_or_default()
    }

    /// Short run-id prefix of its request ids.
    fn tag(self) -> &'static str {
        match self {
            Scenario::LoseNMinusT => "lnt",
            Scenario::LoseNMinusTPlus1 => "lnt1",
            Scenario::KillNodeBetweenRounds => "knr",
            Scenario::KillCoordinatorMidRound => "kcm",
            Scenario::SlowLossy => "slo",
            Scenario::PartitionHeal => "par",
            Scenario::LyingNodeEveryPosition => "lie",
            Scenario::DkgSplitView => "dkg",
            Scenario::RepairThenSign => "rep",
            Scenario::RefreshThenSign => "ref",
            Scenario::BurstKillNode => "bst",
            Scenario::AdaptiveLiar => "ada",
            Scenario::SilentAfterCommit => "sil",
            Scenario::SlowUnderDeadline => "slw",
            Scenario::RestartMidSession => "rms",
        }
    }

    /// Runs the scenario's body on a fresh cluster.
    pub async fn run(self, run: &mut Run) -> Result<(), SimError> {
        match self {
            Scenario::LoseNMinusT => lose_n_minus_t::run(run).await,
            Scenario::LoseNMinusTPlus1 => lose_n_minus_t_plus_1::run(run).await,
            Scenario::KillNodeBetweenRounds => kill_node_between_rounds::run(run).await,
            Scenario::KillCoordinatorMidRound => kill_coordinator_mid_round::run(run).await,
            Scenario::SlowLossy => slow_lossy::run(run).await,
            Scenario::PartitionHeal => partition_heal::run(run).await,
            Scenario::LyingNodeEveryPosition => lying_node_every_position::run(run).await,
            Scenario::DkgSplitView => dkg_split_view::run(run).await,
            Scenario::RepairThenSign => repair_then_sign::run(run).await,
            Scenario::RefreshThenSign => refresh_then_sign::run(run).await,
            Scenario::BurstKillNode => burst_kill_node::run(run).await,
            Scenario::AdaptiveLiar => adaptive_liar::run(run).await,
            Scenario::SilentAfterCommit => silent_after_commit::run(run).await,
            Scenario::SlowUnderDeadline => slow_under_deadline::run(run).await,
            Scenario::RestartMidSession => restart_mid_session::run(run).await,
        }
    }
}
