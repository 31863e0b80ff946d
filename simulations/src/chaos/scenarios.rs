//! The chaos scenarios of issue 4, each a function of its run seed: which
//! nodes die, which links break, who lies and where all come from it.

use std::collections::BTreeMap;
use std::time::Duration;

use ed25519_dalek::{Signer, SigningKey};
use frost_secp256k1::keys::{KeyPackage, PublicKeyPackage};
use frost_secp256k1::{round1, round2, SigningPackage};
use permafrost_core::unix_now;
use permafrost_proto as pb;
use rand::seq::SliceRandom;
use rand::{Rng, RngCore};
use serde::Serialize;
use tokio::time::Instant;

use crate::chaos::checks::{RunRecord, Violation};
use crate::chaos::harness::{region_faults, ChaosCluster, Withdrawal, GROUP};
use crate::chaos::liar::{LiarEvent, Lie, PausePoint};
use crate::chaos::proxy::{Direction, LinkFaults, Partition};
use crate::chaos::seed;
use crate::chaos::workload::{drive, drive_all, Driven, Until};
use crate::cluster::COORDINATOR_ID;
use crate::progress::Progress;
use crate::SimError;

/// The threshold of the five-member group most scenarios use (n − t = 2).
const T: usize = 3;
/// Longest wait for the "below threshold" answer (issue 4's target).
pub const BELOW_THRESHOLD_TARGET: Duration = Duration::from_secs(5);
/// Extra latency given to a target's same-region peers so the coordinator picks the target.
const BIAS: Duration = Duration::from_millis(25);

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
}

impl Scenario {
    /// Every scenario, in the order `all` runs them.
    pub const ALL: [Scenario; 11] = [
        Scenario::LoseNMinusT,
        Scenario::LoseNMinusTPlus1,
        Scenario::KillNodeBetweenRounds,
        Scenario::KillCoordinatorMidRound,
        Scenario::SlowLossy,
        Scenario::PartitionHeal,
        Scenario::LyingNodeEveryPosition,
        Scenario::DkgSplitView,
        Scenario::RepairThenSign,
        Scenario::RefreshThenSign,
        Scenario::BurstKillNode,
    ];

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
        }
    }

    /// Runs the scenario's body on a fresh cluster.
    pub async fn run(self, run: &mut Run) -> Result<(), SimError> {
        match self {
            Scenario::LoseNMinusT => lose_n_minus_t(run).await,
            Scenario::LoseNMinusTPlus1 => lose_n_minus_t_plus_1(run).await,
            Scenario::KillNodeBetweenRounds => kill_node_between_rounds(run).await,
            Scenario::KillCoordinatorMidRound => kill_coordinator_mid_round(run).await,
            Scenario::SlowLossy => slow_lossy(run).await,
            Scenario::PartitionHeal => partition_heal(run).await,
            Scenario::LyingNodeEveryPosition => lying_node_every_position(run).await,
            Scenario::DkgSplitView => dkg_split_view(run).await,
            Scenario::RepairThenSign => repair_then_sign(run).await,
            Scenario::RefreshThenSign => refresh_then_sign(run).await,
            Scenario::BurstKillNode => burst_kill_node(run).await,
        }
    }
}

/// Knobs shared by every scenario.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Valid withdrawals per run (scenarios with phases split them).
    pub requests: u32,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// How long one request may take to be signed before it counts as missed.
    pub request_deadline: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            requests: 8,
            concurrency: 4,
            request_deadline: Duration::from_secs(60),
        }
    }
}

/// Liveness of one run (safety is in [`RunRecord`] and the checkers).
#[derive(Clone, Debug, Default, Serialize)]
pub struct RunMetrics {
    /// Valid requests submitted.
    pub valid: u32,
    /// Of those, signed.
    pub signed: u32,
    /// Unauthorized requests and broken ceremonies correctly refused.
    pub refused: u32,
    /// Valid requests not signed in time, with where they ended.
    pub missed: Vec<String>,
    /// Milliseconds from submission (or from the fault being lifted) to signed.
    pub latencies_ms: Vec<u64>,
    /// Milliseconds from submission to the "below threshold" answer.
    pub below_threshold_ms: Vec<u64>,
    /// Expectations not met (liveness, coverage) and harness errors.
    pub failures: Vec<String>,
    /// `share_released` audit entries the checkers went through.
    pub shares_audited: u32,
}

/// One run: its cluster, what it did, and how it went.
#[derive(Debug)]
pub struct Run {
    /// The run seed.
    pub seed: u64,
    /// The scenario.
    pub scenario: Scenario,
    /// The cluster.
    pub chaos: ChaosCluster,
    /// For the checkers.
    pub record: RunRecord,
    /// Liveness.
    pub metrics: RunMetrics,
    /// Knobs.
    pub settings: Settings,
    /// Progress lines.
    pub progress: Progress,
    next_request: u32,
    liar_now: Option<String>,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Run {
    /// A run of `scenario` on a cluster already started.
    pub fn new(
        scenario: Scenario,
        seed: u64,
        chaos: ChaosCluster,
        settings: Settings,
        progress: Progress,
    ) -> Self {
        Self {
            seed,
            scenario,
            chaos,
            record: RunRecord::default(),
            metrics: RunMetrics::default(),
            settings,
            progress,
            next_request: 0,
            liar_now: None,
        }
    }

    fn step(&self, message: impl AsRef<str>) {
        self.progress.step(format!(
            "[{} seed {}] {}",
            self.scenario.name(),
            self.seed,
            message.as_ref()
        ));
    }

    fn fail(&mut self, why: impl Into<String>) {
        let why = why.into();
        self.step(format!("FAILED: {why}"));
        self.metrics.failures.push(why);
    }

    fn rng(&self, label: &str) -> rand::rngs::StdRng {
        seed::rng(self.seed, label)
    }

    /// `n` distinct items of `from`, chosen by the seed under `label`.
    fn pick(&self, label: &str, n: usize, from: &[String]) -> Vec<String> {
        from.choose_multiple(&mut self.rng(label), n)
            .cloned()
            .collect()
    }

    fn pick_one(&self, label: &str, from: &[String]) -> Result<String, SimError> {
        self.pick(label, 1, from)
            .pop()
            .ok_or_else(|| SimError::Setup(format!("nothing to pick for {label}")))
    }

    /// Creates [`GROUP`] and remembers its key (it must never change afterwards).
    async fn create_group(
        &mut self,
        t: usize,
        members: &[String],
    ) -> Result<pb::KeyGroup, SimError> {
        let group = self
            .chaos
            .create_group(u32::try_from(t).unwrap_or(u32::MAX), members)
            .await?;
        self.step(format!(
            "{GROUP} created by DKG: {t}-of-{} on {}, key {}",
            members.len(),
            members.join(","),
            hex::encode(&group.group_public_key)
        ));
        self.record.group_key = Some(group.group_public_key.clone());
        Ok(group)
    }

    /// A new valid withdrawal, registered as authorized.
    fn new_withdrawal(&mut self) -> Result<Withdrawal, SimError> {
        let n = self.next_request;
        self.next_request += 1;
        let id = format!("cx-{}-{}-{n}", self.scenario.tag(), self.seed);
        let w = self.chaos.withdrawal(&id, 1_000 + u128::from(n))?;
        self.record.authorized.insert(id.clone(), w.digest_hex());
        self.record
            .payloads
            .insert(id.clone(), w.request.payload.clone());
        if let Some(liar) = &self.liar_now {
            self.record.liar_by_request.insert(id, liar.clone());
        }
        self.metrics.valid += 1;
        Ok(w)
    }

    /// Records a request that had to be signed, driven from `started`; its
    /// latency counts from `since` (a fault lifted) or else from `started`.
    fn account(&mut self, d: &Driven, started: Instant, since: Option<Instant>) {
        self.record.statuses.extend(d.statuses.iter().cloned());
        match d.signed_after {
            Some(after) => {
                self.metrics.signed += 1;
                let latency = (started + after).saturating_duration_since(since.unwrap_or(started));
                self.metrics.latencies_ms.push(ms(latency));
            }
            None => self.metrics.missed.push(d.describe()),
        }
    }

    /// Submits `n` new valid withdrawals (concurrently) that must all be signed.
    async fn sign_valid(&mut self, n: u32) -> Result<Vec<Driven>, SimError> {
        let mut batch = Vec::new();
        for _ in 0..n {
            let w = self.new_withdrawal()?;
            batch.push((w.id().to_string(), w.signed));
        }
        let started = Instant::now();
        let results = drive_all(
            &self.chaos.custody(),
            batch,
            self.settings.concurrency,
            self.settings.request_deadline,
        )
        .await;
        for d in &results {
            self.account(d, started, None);
        }
        let signed = results.iter().filter(|d| d.signed()).count();
        self.step(format!("{signed} of {n} withdrawals signed"));
        Ok(results)
    }

    /// Makes the coordinator prefer `target` over its same-region peers (it picks
    /// the lowest-latency member per region) and waits for its probes to notice.
    async fn bias_towards(&mut self, target: &str) -> Result<(), SimError> {
        let region = self
            .chaos
            .nodes()
            .iter()
            .find(|n| n.id == target)
            .map(|n| n.region.clone())
            .unwrap_or_default();
        let peers: Vec<String> = self
            .chaos
            .nodes()
            .iter()
            .filter(|n| n.region == region && n.id != target)
            .map(|n| n.id.clone())
            .collect();
        for p in &peers {
            let mut f = self.chaos.proxy(p)?.faults();
            f.latency += BIAS;
            self.chaos.set_faults(p, f)?;
        }
        if !peers.is_empty() {
            // Several probe rounds (every 500 ms) so the measured latencies settle.
            tokio::time::sleep(Duration::from_millis(1500)).await;
        }
        Ok(())
    }

    /// Two requests that must never get a share: one with a forged custody
    /// signature through the coordinator, one expired request sent straight to a
    /// node by a second coordinator (the harness) with full round-1 commitments.
    async fn probe_unauthorized(&mut self) -> Result<(), SimError> {
        let n = self.next_request;
        self.next_request += 1;
        let id = format!("cx-{}-{}-forged-{n}", self.scenario.tag(), self.seed);
        let mut w = self.chaos.withdrawal(&id, 1_000)?;
        let mut key = [0u8; 32];
        self.rng("forger").fill_bytes(&mut key);
        let forger = SigningKey::from_bytes(&key);
        w.signed.custody_signature = forger.sign(&w.request.digest().0).to_bytes().to_vec();
        self.record.unauthorized.insert(id.clone(), w.digest_hex());
        let mut custody = self.chaos.custody();
        match custody.submit_withdrawal(w.signed.clone()).await {
            Err(status) if !matches!(status.code(), tonic::Code::Unavailable) => {
                self.metrics.refused += 1;
            }
            Err(status) => self.fail(format!(
                "forged request {id}: coordinator unavailable: {}",
                status.message()
            )),
            Ok(status) => {
                let state = permafrostctl::client::state_name(status.get_ref().state);
                self.record.statuses.push(status.into_inner());
                self.fail(format!(
                    "the coordinator accepted {id}, whose custody signature is forged ({state})"
                ));
            }
        }

        let id = format!("cx-{}-{}-expired-{n}", self.scenario.tag(), self.seed);
        let mut w = self.chaos.withdrawal(&id, 1_000)?;
        let now = unix_now();
        w.request.created_at = now - 1_200;
        w.request.expires_at = now - 600;
        w.signed = self.chaos.sign(&w.request)?;
        self.record.unauthorized.insert(id.clone(), w.digest_hex());
        let Some(group) = self
            .chaos
            .key_groups()
            .await?
            .into_iter()
            .find(|g| g.name == GROUP)
        else {
            return Ok(());
        };
        let up: Vec<String> = group
            .members
            .into_iter()
            .filter(|m| !self.chaos.down().contains(m))
            .collect();
        let t = usize::try_from(group.threshold).unwrap_or(usize::MAX);
        if up.len() < t {
            self.fail(format!(
                "expired probe skipped: only {} members of {GROUP} are up",
                up.len()
            ));
            return Ok(());
        }
        let signers = self.pick("expired-probe", t, &up);
        let mut commitments = BTreeMap::new();
        let mut handles = Vec::new();
        for s in &signers {
            let mut client = self.chaos.harness_node_client(s)?;
            let r = client
                .commit(pb::CommitRequest {
                    key_group: GROUP.into(),
                })
                .await
                .map_err(|e| SimError::Setup(format!("harness commit on {s}: {}", e.message())))?
                .into_inner();
            let identifier =
                frost_secp256k1::Identifier::try_from(u16::try_from(r.identifier).unwrap_or(0))
                    .map_err(|e| {
                        SimError::Setup(format!("{s} reported identifier {}: {e}", r.identifier))
                    })?;
            let c = frost_secp256k1::round1::SigningCommitments::deserialize(&r.commitments)
                .map_err(|e| SimError::Setup(format!("{s} commitments: {e}")))?;
            commitments.insert(identifier, c);
            handles.push((s.clone(), r.nonce_handle));
        }
        let package = SigningPackage::new(commitments, &w.request.payload)
            .serialize()
            .map_err(|e| SimError::Setup(format!("signing package: {e}")))?;
        let (node, handle) = handles
            .into_iter()
            .next()
            .ok_or_else(|| SimError::Setup("no signer for the expired probe".into()))?;
        let answer = self
            .chaos
            .harness_node_client(&node)?
            .sign(pb::SignRequest {
                key_group: GROUP.into(),
                nonce_handle: handle,
                signing_package: package,
                target: Some(pb::sign_request::Target::Withdrawal(w.signed.clone())),
                approvals: Vec::new(),
            })
            .await;
        match answer {
            Err(status) if status.code() == tonic::Code::PermissionDenied => {
                self.metrics.refused += 1;
            }
            Err(status) => self.fail(format!(
                "expired probe {id}: {node} answered {:?} ({}), not a policy refusal",
                status.code(),
                status.message()
            )),
            Ok(_) => self.record.scenario_violations.push(Violation::new(
                crate::chaos::checks::AUTHORIZED,
                format!(
                    "{node} released a share for the expired request {id} to a second coordinator"
                ),
            )),
        }
        Ok(())
    }

    /// Heals everything, probes authorization, and gathers what the checkers read.
    pub async fn finish(&mut self) -> Result<(), SimError> {
        self.chaos.heal_all();
        for id in self.chaos.running_liars() {
            self.chaos.stop_liar(&id).await?;
        }
        self.record.liar_events = self.chaos.liar_events();
        if self.chaos.down().contains(COORDINATOR_ID) {
            self.chaos.restart(COORDINATOR_ID).await?;
        }
        if self.record.group_key.is_some() {
            if let Err(e) = self.probe_unauthorized().await {
                self.fail(format!("unauthorized probe could not run: {e}"));
            }
        }
        self.record.final_groups = self.chaos.key_groups().await?;
        for e in self.chaos.exclusions().await? {
            self.record.exclusions.push((e.node_id, e.request_id));
        }
        for id in self.chaos.node_ids() {
            let status = if self.chaos.down().contains(&id) {
                Err(format!("{id} is down"))
            } else {
                self.chaos.node_status(&id).await
            };
            self.record.node_statuses.insert(id, status);
        }
        for e in self.chaos.unexpected_exits() {
            self.fail(e);
        }
        self.chaos.stop().await;
        self.record.audit_logs = self.chaos.audit_logs();
        // With every daemon stopped, each node's store can be read: its velocity
        // ledger must count each journaled request exactly once (P1, S1).
        for id in self.chaos.node_ids() {
            if let Err(e) = self.chaos.check_node_ledger(&id) {
                self.record.scenario_violations.push(Violation::new(
                    crate::chaos::checks::VELOCITY_ONCE,
                    format!("{id}: {e}"),
                ));
            }
        }
        Ok(())
    }
}

fn all_nodes(run: &Run) -> Vec<String> {
    run.chaos.node_ids()
}

async fn lose_n_minus_t(run: &mut Run) -> Result<(), SimError> {
    let all = all_nodes(run);
    run.create_group(T, &all).await?;
    let victims = run.pick("victims", all.len() - T, &all);
    run.step(format!(
        "kill -9 {} (n - t = {})",
        victims.join(", "),
        victims.len()
    ));
    for v in &victims {
        run.chaos.kill9(v).await?;
    }
    run.sign_valid(run.settings.requests).await?;
    for v in &victims {
        run.chaos.restart(v).await?;
    }
    Ok(())
}

async fn burst_kill_node(run: &mut Run) -> Result<(), SimError> {
    let all = all_nodes(run);
    run.create_group(T, &all).await?;
    let burst = (run.settings.requests * 16).clamp(32, 256);
    let victim = run.pick_one("victim", &all)?;
    let mut batch = Vec::new();
    for _ in 0..burst {
        let w = run.new_withdrawal()?;
        batch.push((w.id().to_string(), w.signed));
    }
    let custody = run.chaos.custody();
    let deadline = run.settings.request_deadline;
    let started = Instant::now();
    let width = usize::try_from(burst).unwrap_or(256);
    let load = tokio::spawn(async move { drive_all(&custody, batch, width, deadline).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    run.step(format!(
        "kill -9 {victim} in the middle of a burst of {burst} withdrawals"
    ));
    run.chaos.kill9(&victim).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    run.chaos.restart(&victim).await?;
    let results = load
        .await
        .map_err(|e| SimError::Setup(format!("burst task: {e}")))?;
    for d in &results {
        run.account(d, started, None);
    }
    let signed = results.iter().filter(|d| d.signed()).count();
    run.step(format!("{signed} of {burst} withdrawals signed"));
    Ok(())
}

async fn lose_n_minus_t_plus_1(run: &mut Run) -> Result<(), SimError> {
    let all = all_nodes(run);
    run.create_group(T, &all).await?;
    let victims = run.pick("victims", all.len() - T + 1, &all);
    let returning = run.pick_one("returning", &victims)?;
    run.step(format!(
        "kill -9 {} (n - t + 1 = {}); {returning} will return",
        victims.join(", "),
        victims.len()
    ));
    for v in &victims {
        run.chaos.kill9(v).await?;
    }
    let w = run.new_withdrawal()?;
    let first = drive(
        run.chaos.custody(),
        w.id().to_string(),
        w.signed.clone(),
        Until::BelowThreshold,
        Duration::from_secs(15),
    )
    .await;
    run.record.statuses.extend(first.statuses.iter().cloned());
    match first.below_threshold_after {
        Some(after) => {
            run.metrics.below_threshold_ms.push(ms(after));
            let detail = first.last().map(|s| s.detail.clone()).unwrap_or_default();
            run.step(format!("answered in {after:.2?}: {detail:?}"));
            if after > BELOW_THRESHOLD_TARGET {
                run.fail(format!(
                    "\"below threshold\" took {after:.2?} (target {BELOW_THRESHOLD_TARGET:?})"
                ));
            }
        }
        None => run.fail(format!(
            "no \"below threshold\" answer within 15 s: {}",
            first.describe()
        )),
    }
    if first.signed() {
        run.fail(format!(
            "{} was signed with only t - 1 members alive",
            w.id()
        ));
    }
    run.chaos.restart(&returning).await?;
    let back = Instant::now();
    run.step(format!("{returning} restarted; exactly t members are up"));
    let resumed = Instant::now();
    let second = drive(
        run.chaos.custody(),
        w.id().to_string(),
        w.signed.clone(),
        Until::Final,
        run.settings.request_deadline,
    )
    .await;
    run.account(&second, resumed, Some(back));
    run.sign_valid(run.settings.requests.saturating_sub(1))
        .await?;
    for v in victims.iter().filter(|v| **v != returning) {
        run.chaos.restart(v).await?;
    }
    Ok(())
}

/// Puts an honest, pausing tap in front of a biased-to target and returns it.
async fn tap(run: &mut Run, label: &str, pause: PausePoint) -> Result<String, SimError> {
    let all = all_nodes(run);
    let target = run.pick_one(label, &all)?;
    run.chaos
        .start_liar(&target, Lie::Honest, pause, None)
        .await?;
    run.chaos
        .wait_reachable(std::slice::from_ref(&target), Duration::from_secs(30))
        .await?;
    // After the liar is in: its first probes (new TLS sessions) are slow.
    run.bias_towards(&target).await?;
    Ok(target)
}

fn is_paused(id: &str) -> impl Fn(&LiarEvent) -> bool + '_ {
    move |e| matches!(e, LiarEvent::Paused { request, .. } if request == id)
}

fn is_forwarded(id: &str) -> impl Fn(&LiarEvent) -> bool + '_ {
    move |e| matches!(e, LiarEvent::SignForwarded { request, .. } if request == id)
}

async fn kill_node_between_rounds(run: &mut Run) -> Result<(), SimError> {
    let all = all_nodes(run);
    run.create_group(T, &all).await?;
    let target = tap(run, "target", PausePoint::BeforeSign).await?;
    let w = run.new_withdrawal()?;
    let submitted = Instant::now();
    let task = tokio::spawn(drive(
        run.chaos.custody(),
        w.id().to_string(),
        w.signed.clone(),
        Until::Final,
        run.settings.request_deadline,
    ));
    let paused = run
        .chaos
        .liar(&target)?
        .wait_for("held round 2", Duration::from_secs(20), is_paused(w.id()))
        .await;
    match paused {
        Ok(_) => {
            run.step(format!(
                "{target} answered round 1 of {}; kill -9 {target} before round 2",
                w.id()
            ));
            run.chaos.kill9(&target).await?;
            run.chaos.restart(&target).await?;
            run.chaos.liar(&target)?.resume().await?;
            let answer = run
                .chaos
                .liar(&target)?
                .wait_for(
                    "round 2 answer",
                    Duration::from_secs(30),
                    is_forwarded(w.id()),
                )
                .await?;
            if let LiarEvent::SignForwarded { code, message, .. } = answer {
                run.step(format!(
                    "round 2 re-sent to the restarted {target}: {code} ({message})"
                ));
                run.record
                    .replays
                    .push((target.clone(), w.id().to_string(), code));
            }
        }
        Err(e) => run.fail(format!(
            "the coordinator never sent round 2 of {} to {target}: {e}",
            w.id()
        )),
    }
    let driven = task
        .await
        .map_err(|e| SimError::Setup(format!("request task: {e}")))?;
    run.account(&driven, submitted, None);
    run.sign_valid(run.settings.requests.saturating_sub(1))
        .await?;
    Ok(())
}

async fn kill_coordinator_mid_round(run: &mut Run) -> Result<(), SimError> {
    let all = all_nodes(run);
    run.create_group(T, &all).await?;
    let point = *[PausePoint::BeforeSign, PausePoint::AfterSign]
        .choose(&mut run.rng("kill-point"))
        .unwrap_or(&PausePoint::BeforeSign);
    let target = tap(run, "target", point).await?;
    let w = run.new_withdrawal()?;
    let submitted = Instant::now();
    let task = tokio::spawn(drive(
        run.chaos.custody(),
        w.id().to_string(),
        w.signed.clone(),
        Until::Final,
        run.settings.request_deadline + Duration::from_secs(30),
    ));
    let paused = run
        .chaos
        .liar(&target)?
        .wait_for("held round 2", Duration::from_secs(20), is_paused(w.id()))
        .await;
    if let Err(e) = paused {
        run.fail(format!(
            "the coordinator never sent round 2 of {} to {target}: {e}",
            w.id()
        ));
    } else {
        run.step(format!(
            "round 2 of {} held at {target} ({point:?}); kill -9 the coordinator",
            w.id()
        ));
        run.chaos.kill9(COORDINATOR_ID).await?;
        run.chaos.liar(&target)?.resume().await?;
        if point == PausePoint::BeforeSign {
            let answer = run
                .chaos
                .liar(&target)?
                .wait_for(
                    "round 2 answer",
                    Duration::from_secs(30),
                    is_forwarded(w.id()),
                )
                .await?;
            if let LiarEvent::SignForwarded { code, .. } = answer {
                run.step(format!(
                    "{target} answered the dead coordinator's round 2: {code}"
                ));
            }
        }
        run.chaos.restart(COORDINATOR_ID).await?;
        run.step("coordinator restarted from its data directory");
    }
    let driven = task
        .await
        .map_err(|e| SimError::Setup(format!("request task: {e}")))?;
    run.account(&driven, submitted, None);
    if let Some(first) = driven.last().filter(|_| driven.signed()).cloned() {
        // Idempotent: the same request again returns the same outcome.
        // (A different signature is a violation the one-digest checker reports.)
        let mut custody = run.chaos.custody();
        let mut same = 0;
        for _ in 0..2 {
            match custody.submit_withdrawal(w.signed.clone()).await {
                Ok(again) => {
                    let again = again.into_inner();
                    if again.signature == first.signature {
                        same += 1;
                    }
                    run.record.statuses.push(again);
                }
                Err(e) => run.fail(format!("resubmitting {}: {}", w.id(), e.message())),
            }
        }
        run.step(format!(
            "resubmitted {} twice: {same} of 2 returned the same signature",
            w.id()
        ));
    }
    run.sign_valid(run.settings.requests.saturating_sub(1))
        .await?;
    Ok(())
}

/// Latency and loss of issue 4's F1 target: 150 ms one way (300 ms round trip)
/// with ±15 ms jitter to other regions, 2 ms within, 5% loss and 0.2% resets per chunk everywhere.
fn slow_lossy_faults(region: &str) -> LinkFaults {
    let lossy = |latency_ms: u64, jitter_ms: u64| LinkFaults {
        latency: Duration::from_millis(latency_ms),
        jitter: Duration::from_millis(jitter_ms),
        loss: 0.05,
        reset: 0.002,
        ..LinkFaults::healthy()
    };
    region_faults(region, lossy(2, 1), lossy(150, 15))
}

async fn slow_lossy(run: &mut Run) -> Result<(), SimError> {
    let all = all_nodes(run);
    run.create_group(T, &all).await?;
    for n in run.chaos.nodes().to_vec() {
        run.chaos.set_faults(&n.id, slow_lossy_faults(&n.region))?;
    }
    run.step("150 ms (±15) one-way latency between regions, 5% loss, 0.2% resets on every link");
    run.sign_valid(run.settings.requests).await?;
    let stalls: u64 = run
        .chaos
        .proxies()
        .values()
        .map(|p| p.counters().stalled_chunks)
        .sum();
    let resets: u64 = run
        .chaos
        .proxies()
        .values()
        .map(|p| p.counters().resets)
        .sum();
    run.step(format!(
        "faults injected: {stalls} stalled chunks, {resets} connection resets"
    ));
    run.chaos.heal_all();
    Ok(())
}

async fn partition_heal(run: &mut Run) -> Result<(), SimError> {
    let all = all_nodes(run);
    run.create_group(T, &all).await?;
    let blackhole = LinkFaults {
        partition: Partition::Blackhole,
        ..LinkFaults::healthy()
    };
    // The coordinator keeps t members: signing goes on.
    let minority = run.pick("minority", all.len() - T, &all);
    run.step(format!(
        "partition (blackhole) {} away",
        minority.join(", ")
    ));
    for m in &minority {
        run.chaos.set_faults(m, blackhole.clone())?;
    }
    let first = run.settings.requests.div_ceil(2);
    run.sign_valid(first).await?;
    run.chaos.heal_all();
    run.chaos
        .wait_reachable(&all, Duration::from_secs(30))
        .await?;

    // The coordinator is left with t - 1: nothing signs until the partition heals.
    let cut = run.pick("majority", all.len() - T + 1, &all);
    let faults = match run.rng("partition-kind").gen_range(0..3) {
        0 => blackhole,
        1 => LinkFaults {
            stalled: Some(Direction::ToCoordinator),
            ..LinkFaults::healthy()
        },
        _ => LinkFaults {
            stalled: Some(Direction::ToNode),
            ..LinkFaults::healthy()
        },
    };
    let kind = match (faults.partition, faults.stalled) {
        (Partition::Blackhole, _) => "blackhole",
        (_, Some(Direction::ToCoordinator)) => "one-way: answers never arrive",
        _ => "one-way: requests never arrive",
    };
    run.step(format!("partition ({kind}) {} away", cut.join(", ")));
    for m in &cut {
        run.chaos.set_faults(m, faults.clone())?;
    }
    let w = run.new_withdrawal()?;
    let pending = drive(
        run.chaos.custody(),
        w.id().to_string(),
        w.signed.clone(),
        Until::BelowThreshold,
        Duration::from_secs(20),
    )
    .await;
    run.record.statuses.extend(pending.statuses.iter().cloned());
    match pending.below_threshold_after {
        Some(after) => {
            run.metrics.below_threshold_ms.push(ms(after));
            run.step(format!("\"below threshold\" after {after:.2?}"));
            if after > BELOW_THRESHOLD_TARGET {
                run.fail(format!(
                    "\"below threshold\" took {after:.2?} with {kind} partition of {} (target {BELOW_THRESHOLD_TARGET:?})",
                    cut.join(", ")
                ));
            }
        }
        None => run.fail(format!(
            "no \"below threshold\" answer while partitioned: {}",
            pending.describe()
        )),
    }
    // Hold the partition: the minority side must not sign.
    tokio::time::sleep(Duration::from_secs(2)).await;
    if let Ok(s) = run
        .chaos
        .custody()
        .get_withdrawal(pb::GetWithdrawalRequest {
            request_id: w.id().to_string(),
        })
        .await
    {
        let s = s.into_inner();
        if s.state == pb::WithdrawalState::Signed as i32 {
            run.fail(format!(
                "{} was signed while only t - 1 members were reachable",
                w.id()
            ));
        }
        run.record.statuses.push(s);
    }
    run.chaos.heal_all();
    let healed = Instant::now();
    run.step("partition healed");
    let resumed = Instant::now();
    let done = drive(
        run.chaos.custody(),
        w.id().to_string(),
        w.signed.clone(),
        Until::Final,
        run.settings.request_deadline,
    )
    .await;
    run.account(&done, resumed, Some(healed));
    run.sign_valid(run.settings.requests.saturating_sub(first + 1))
        .await?;
    Ok(())
}

async fn lying_node_every_position(run: &mut Run) -> Result<(), SimError> {
    let all = all_nodes(run);
    run.create_group(T, &all).await?;
    let mut positions = all.clone();
    positions.shuffle(&mut run.rng("positions"));
    for position in positions {
        let lie = *[Lie::BadShare, Lie::BadCommitments]
            .choose(&mut run.rng(&format!("lie/{position}")))
            .unwrap_or(&Lie::BadShare);
        run.chaos
            .start_liar(&position, lie, PausePoint::None, None)
            .await?;
        run.chaos
            .wait_reachable(std::slice::from_ref(&position), Duration::from_secs(30))
            .await?;
        // After the liar is in: its first probes (new TLS sessions) are slow.
        run.bias_towards(&position).await?;
        run.liar_now = Some(position.clone());
        let mut lied = false;
        for attempt in 0..3 {
            if attempt > 0 {
                // Let a probe round refresh the latencies the coordinator picks by.
                tokio::time::sleep(Duration::from_millis(600)).await;
            }
            let results = run.sign_valid(1).await?;
            let Some(id) = results.first().map(|d| d.id.clone()) else {
                break;
            };
            lied = run
                .chaos
                .liar(&position)?
                .events()
                .iter()
                .any(|e| matches!(e, LiarEvent::Lied { request, .. } if *request == id));
            if lied {
                let culprits = results
                    .first()
                    .and_then(Driven::last)
                    .map(|s| s.culprits.join(","))
                    .unwrap_or_default();
                run.step(format!(
                    "{position} lied ({lie:?}) on {id}; named: [{culprits}]"
                ));
                break;
            }
        }
        run.liar_now = None;
        if !lied {
            run.fail(format!(
                "the coordinator never let {position} sign, so it never lied"
            ));
        }
        for e in run.chaos.exclusions().await? {
            run.record
                .exclusions
                .push((e.node_id.clone(), e.request_id.clone()));
            run.chaos.clear_exclusion(&e.node_id).await?;
        }
        run.chaos.stop_liar(&position).await?;
        run.chaos.heal_all();
        run.chaos
            .wait_reachable(std::slice::from_ref(&position), Duration::from_secs(30))
            .await?;
    }
    Ok(())
}

async fn dkg_split_view(run: &mut Run) -> Result<(), SimError> {
    let all = all_nodes(run);
    let recipient = run.pick_one("recipient", &all)?;
    let others: Vec<String> = all.iter().filter(|n| **n != recipient).cloned().collect();
    let sender = run.pick_one("sender", &others)?;
    let lie = *[Lie::DkgRound1, Lie::DkgEcho]
        .choose(&mut run.rng("dkg-lie"))
        .unwrap_or(&Lie::DkgRound1);
    run.chaos
        .start_liar(&recipient, lie, PausePoint::None, Some(&sender))
        .await?;
    run.chaos
        .wait_reachable(std::slice::from_ref(&recipient), Duration::from_secs(30))
        .await?;
    let what = match lie {
        Lie::DkgRound1 => "round-1 package",
        Lie::DkgEcho => "echo",
        _ => "encrypted round-2 share",
    };
    run.step(format!(
        "{recipient} will see an altered copy of {sender}'s {what} during the DKG"
    ));
    match run.chaos.try_create_group(T as u32, &all).await? {
        Ok(group) => run.record.scenario_violations.push(Violation::new(
            "K1 split-view-aborts",
            format!(
                "the ceremony completed (key {}) although {recipient} saw an altered message from {sender}",
                hex::encode(group.group_public_key)
            ),
        )),
        Err(status) => {
            run.step(format!("ceremony aborted: {}", status.message()));
            run.metrics.refused += 1;
            run.record
                .dkg_aborts
                .push((sender.clone(), status.message().to_string()));
        }
    }
    let tampered = run
        .chaos
        .liar(&recipient)?
        .events()
        .iter()
        .any(|e| matches!(e, LiarEvent::DkgTampered { sender: s, .. } if *s == sender));
    if !tampered {
        run.fail(format!(
            "the liar in front of {recipient} never saw a message from {sender} to alter"
        ));
    }
    // Nothing half-made: no group at the coordinator, none on any node.
    if run
        .chaos
        .key_groups()
        .await?
        .iter()
        .any(|g| g.name == GROUP)
    {
        run.record.scenario_violations.push(Violation::new(
            "K1 split-view-aborts",
            format!("the coordinator keeps {GROUP} after the aborted ceremony"),
        ));
    }
    for id in &all {
        let status = run.chaos.node_status(id).await;
        let held = status
            .ok()
            .and_then(|s| s.key_groups.into_iter().find(|g| g.name == GROUP));
        match held {
            Some(g) if g.active => run.record.scenario_violations.push(Violation::new(
                "K1 split-view-aborts",
                format!("{id} holds an active {GROUP} after the aborted ceremony"),
            )),
            // Unusable (nodes sign nothing for an inactive group) but it blocks the name.
            Some(_) => run.fail(format!(
                "{id} keeps an inactive {GROUP} after the aborted ceremony; a new ceremony under that name will be refused"
            )),
            None => {}
        }
    }
    run.chaos.stop_liar(&recipient).await?;
    run.chaos
        .wait_reachable(std::slice::from_ref(&recipient), Duration::from_secs(30))
        .await?;
    run.step("liar removed; a clean ceremony must now succeed");
    run.create_group(T, &all).await?;
    run.sign_valid(run.settings.requests).await?;
    Ok(())
}

async fn repair_then_sign(run: &mut Run) -> Result<(), SimError> {
    // One member per region, two spares.
    let members = vec!["n1".to_string(), "n3".to_string(), "n5".to_string()];
    let spares = vec!["n2".to_string(), "n4".to_string()];
    run.create_group(2, &members).await?;
    let lost = run.pick_one("lost", &members)?;
    let replacement = run.pick_one("replacement", &spares)?;
    run.step(format!("kill -9 {lost}: lost for good"));
    run.chaos.kill9(&lost).await?;
    run.chaos
        .wait_unreachable(std::slice::from_ref(&lost), Duration::from_secs(15))
        .await?;
    let repaired = run.chaos.repair(&lost, &replacement).await?;
    run.step(format!(
        "{lost}'s share repaired onto {replacement}: members now {}",
        repaired.members.join(",")
    ));
    if !repaired.members.contains(&replacement) || repaired.members.contains(&lost) {
        run.fail(format!(
            "after the repair the members are {}, expected {replacement} in place of {lost}",
            repaired.members.join(",")
        ));
    }
    let first = run.settings.requests.div_ceil(2);
    let mut results = run.sign_valid(first).await?;
    // Leave only the replacement and one old member: the repaired share must sign.
    let old: Vec<String> = members.iter().filter(|m| **m != lost).cloned().collect();
    let down = run.pick_one("second-loss", &old)?;
    run.step(format!(
        "kill -9 {down}: only {replacement} and one other member remain"
    ));
    run.chaos.kill9(&down).await?;
    let forced = run
        .sign_valid(run.settings.requests.saturating_sub(first).max(1))
        .await?;
    for d in forced.iter().filter(|d| d.signed()) {
        let signers = d.last().map(|s| s.signers.clone()).unwrap_or_default();
        if !signers.contains(&replacement) {
            run.fail(format!(
                "{} was signed by {} without the replacement {replacement}",
                d.id,
                signers.join(",")
            ));
        }
    }
    results.extend(forced);
    run.chaos.restart(&down).await?;
    // The lost node comes back: it is revoked and never used again.
    run.chaos.restart(&lost).await?;
    results.extend(run.sign_valid(1).await?);
    for d in &results {
        if let Some(s) = d.last() {
            if s.signers.contains(&lost) {
                run.record.scenario_violations.push(Violation::new(
                    "repair revoked-member-unused",
                    format!("{} was signed with the revoked member {lost}", d.id),
                ));
            }
        }
    }
    Ok(())
}

/// Signs `message` with `packages` locally (both rounds) and aggregates under `pkp`.
fn sign_locally(
    packages: &[&KeyPackage],
    pkp: &PublicKeyPackage,
    message: &[u8],
    rng: &mut rand::rngs::StdRng,
) -> Result<frost_secp256k1::Signature, String> {
    let mut nonces = BTreeMap::new();
    let mut commitments = BTreeMap::new();
    for kp in packages {
        let (n, c) = round1::commit(kp.signing_share(), rng);
        nonces.insert(*kp.identifier(), n);
        commitments.insert(*kp.identifier(), c);
    }
    let package = SigningPackage::new(commitments, message);
    let mut shares = BTreeMap::new();
    for kp in packages {
        let n = nonces
            .get(kp.identifier())
            .ok_or_else(|| "missing nonces".to_string())?;
        let share = round2::sign(&package, n, kp).map_err(|e| format!("round 2: {e}"))?;
        shares.insert(*kp.identifier(), share);
    }
    let signature = frost_secp256k1::aggregate(&package, &shares, pkp)
        .map_err(|e| format!("aggregate: {e}"))?;
    pkp.verifying_key()
        .verify(message, &signature)
        .map_err(|e| format!("verify: {e}"))?;
    Ok(signature)
}

async fn refresh_then_sign(run: &mut Run) -> Result<(), SimError> {
    let all = all_nodes(run);
    run.create_group(T, &all).await?;
    let victim = run.pick_one("victim", &all)?;
    run.step(format!(
        "{victim}'s disk and passphrase are stolen while it is down"
    ));
    run.chaos.kill9(&victim).await?;
    let captured = run.chaos.steal_key_package(&victim)?;
    run.chaos.restart(&victim).await?;
    run.chaos
        .wait_reachable(&all, Duration::from_secs(30))
        .await?;
    let refreshed = run.chaos.refresh().await?;
    run.step(format!(
        "refreshed: key {}",
        hex::encode(&refreshed.group_public_key)
    ));
    if Some(&refreshed.group_public_key) != run.record.group_key.as_ref() {
        run.record.scenario_violations.push(Violation::new(
            "K6 refresh-keeps-key",
            "the refresh changed the group key",
        ));
    }
    run.sign_valid(run.settings.requests).await?;

    // Offline: t - 1 current shares plus the captured one must not sign; with the current one they must.
    let others: Vec<String> = all.iter().filter(|n| **n != victim).cloned().collect();
    let helpers = run.pick("helpers", T - 1, &others);
    let mut stopped = vec![victim.clone()];
    stopped.extend(helpers.iter().cloned());
    for s in &stopped {
        run.chaos.kill9(s).await?;
    }
    let current = run.chaos.steal_key_package(&victim)?;
    let helper_packages = helpers
        .iter()
        .map(|h| run.chaos.steal_key_package(h))
        .collect::<Result<Vec<_>, _>>()?;
    let pkp = run.chaos.stored_public_key_package(&victim)?;
    if current.signing_share() == captured.signing_share() {
        run.record.scenario_violations.push(Violation::new(
            "K6 captured-share-useless",
            format!("{victim}'s share did not change in the refresh"),
        ));
    }
    let message = b"permafrost chaos: captured share test";
    let mut rng = run.rng("offline-signing");
    let mut with_current: Vec<&KeyPackage> = vec![&current];
    with_current.extend(helper_packages.iter());
    match sign_locally(&with_current, &pkp, message, &mut rng) {
        Ok(_) => run.step("control: current shares sign offline"),
        Err(e) => run.fail(format!(
            "control failed, current shares did not sign offline: {e}"
        )),
    }
    let mut with_captured: Vec<&KeyPackage> = vec![&captured];
    with_captured.extend(helper_packages.iter());
    match sign_locally(&with_captured, &pkp, message, &mut rng) {
        Ok(sig) => run.record.scenario_violations.push(Violation::new(
            "K6 captured-share-useless",
            format!(
                "{victim}'s pre-refresh share with {} current shares produced a valid signature {}",
                helpers.len(),
                hex::encode(sig.serialize().unwrap_or_default())
            ),
        )),
        Err(e) => {
            run.metrics.refused += 1;
            run.step(format!(
                "captured share with current ones: no signature ({e})"
            ));
        }
    }
    for s in &stopped {
        run.chaos.restart(s).await?;
    }
    Ok(())
}
