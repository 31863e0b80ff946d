//! The shared run context of every chaos scenario: the cluster, what the run
//! did for the checkers ([`RunRecord`]), its liveness ([`RunMetrics`]), and the
//! steps scenarios are written in (create the group, sign valid withdrawals,
//! bias the coordinator towards a node, probe authorization, finish).

use std::collections::BTreeMap;
use std::time::Duration;

use ed25519_dalek::{Signer, SigningKey};
use frost_secp256k1::SigningPackage;
use permafrost_core::unix_now;
use permafrost_proto as pb;
use rand::seq::SliceRandom;
use rand::RngCore;
use serde::Serialize;
use tokio::time::Instant;

use super::Scenario;
use crate::chaos::checks::{RunRecord, Violation};
use crate::chaos::harness::{ChaosCluster, Withdrawal, GROUP};
use crate::chaos::liar::{LiarEvent, Lie, PausePoint};
use crate::chaos::seed;
use crate::chaos::workload::{drive_all, Driven};
use crate::cluster::COORDINATOR_ID;
use crate::progress::Progress;
use crate::SimError;

/// Extra latency given to a target's same-region peers so the coordinator picks the target.
const BIAS: Duration = Duration::from_millis(25);

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
    /// The node lying right now, recorded against each new request.
    pub(super) liar_now: Option<String>,
}

/// `d` in whole milliseconds, saturating.
pub(super) fn ms(d: Duration) -> u64 {
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

    pub(super) fn step(&self, message: impl AsRef<str>) {
        self.progress.step(format!(
            "[{} seed {}] {}",
            self.scenario.name(),
            self.seed,
            message.as_ref()
        ));
    }

    pub(super) fn fail(&mut self, why: impl Into<String>) {
        let why = why.into();
        self.step(format!("FAILED: {why}"));
        self.metrics.failures.push(why);
    }

    pub(super) fn rng(&self, label: &str) -> rand::rngs::StdRng {
        seed::rng(self.seed, label)
    }

    /// `n` distinct items of `from`, chosen by the seed under `label`.
    pub(super) fn pick(&self, label: &str, n: usize, from: &[String]) -> Vec<String> {
        from.choose_multiple(&mut self.rng(label), n)
            .cloned()
            .collect()
    }

    pub(super) fn pick_one(&self, label: &str, from: &[String]) -> Result<String, SimError> {
        self.pick(label, 1, from)
            .pop()
            .ok_or_else(|| SimError::Setup(format!("nothing to pick for {label}")))
    }

    /// Creates [`GROUP`] and remembers its key (it must never change afterwards).
    pub(super) async fn create_group(
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
    pub(super) fn new_withdrawal(&mut self) -> Result<Withdrawal, SimError> {
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
    pub(super) fn account(&mut self, d: &Driven, started: Instant, since: Option<Instant>) {
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
    pub(super) async fn sign_valid(&mut self, n: u32) -> Result<Vec<Driven>, SimError> {
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

    /// `n` members chosen by the seed under `label`, from as many different
    /// regions as there are (so the coordinator, which spreads a session over
    /// regions, can be biased towards all of them at once).
    pub(super) fn pick_in_distinct_regions(&self, label: &str, n: usize) -> Vec<String> {
        let mut nodes = self.chaos.nodes().to_vec();
        nodes.shuffle(&mut self.rng(label));
        let mut picked: Vec<String> = Vec::new();
        let mut regions = Vec::new();
        for node in &nodes {
            if picked.len() < n && !regions.contains(&node.region) {
                regions.push(node.region.clone());
                picked.push(node.id.clone());
            }
        }
        for node in &nodes {
            if picked.len() < n && !picked.contains(&node.id) {
                picked.push(node.id.clone());
            }
        }
        picked
    }

    /// Puts a liar as `spec` says in front of each of `ids`, waits until the
    /// coordinator reaches them through it, and biases it towards them.
    pub(super) async fn start_liars(
        &mut self,
        ids: &[String],
        spec: &crate::chaos::harness::LiarSpec,
    ) -> Result<(), SimError> {
        for id in ids {
            self.chaos.start_liar_with(id, spec.clone()).await?;
        }
        self.chaos
            .wait_reachable(ids, Duration::from_secs(30))
            .await?;
        // After the liars are in: their first probes (new TLS sessions) are slow.
        for id in ids {
            self.bias_towards(id).await?;
        }
        Ok(())
    }

    /// Makes the coordinator prefer `target` over its same-region peers (it picks
    /// the lowest-latency member per region) and waits for its probes to notice.
    pub(super) async fn bias_towards(&mut self, target: &str) -> Result<(), SimError> {
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
            // Round 1 names the request: a node already refuses to reserve
            // (and commit) for an expired one.
            let r = match client
                .commit(pb::CommitRequest {
                    bank: false,
                    key_group: GROUP.into(),
                    count: 1,
                    withdrawal: Some(w.signed.clone()),
                    ..Default::default()
                })
                .await
            {
                Ok(r) => r.into_inner(),
                Err(status) if status.code() == tonic::Code::PermissionDenied => {
                    self.metrics.refused += 1;
                    return Ok(());
                }
                Err(e) => {
                    return Err(SimError::Setup(format!(
                        "harness commit on {s}: {}",
                        e.message()
                    )))
                }
            };
            let identifier =
                frost_secp256k1::Identifier::try_from(u16::try_from(r.identifier).unwrap_or(0))
                    .map_err(|e| {
                        SimError::Setup(format!("{s} reported identifier {}: {e}", r.identifier))
                    })?;
            let nonce = r
                .nonces
                .into_iter()
                .next()
                .ok_or_else(|| SimError::Setup(format!("{s} committed no nonce")))?;
            let c = frost_secp256k1::round1::SigningCommitments::deserialize(&nonce.commitments)
                .map_err(|e| SimError::Setup(format!("{s} commitments: {e}")))?;
            commitments.insert(identifier, c);
            handles.push((s.clone(), nonce.handle));
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
                reservation: Vec::new(),
                key_group: GROUP.into(),
                nonce_handles: vec![handle],
                signing_packages: vec![package],
                target: Some(pb::sign_request::Target::Withdrawal(w.signed.clone())),
                approvals: Vec::new(),
                attestations: Vec::new(),
                epoch: 0,
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

/// Every node of the cluster, in id order.
pub(super) fn all_nodes(run: &Run) -> Vec<String> {
    run.chaos.node_ids()
}

/// Puts an honest, pausing tap in front of a biased-to target and returns it.
pub(super) async fn tap(run: &mut Run, label: &str, pause: PausePoint) -> Result<String, SimError> {
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

/// Matches the tap holding round 2 of request `id`.
pub(super) fn is_paused(id: &str) -> impl Fn(&LiarEvent) -> bool + '_ {
    move |e| matches!(e, LiarEvent::Paused { request, .. } if request == id)
}

/// Matches the tap forwarding round 2 of request `id` and its answer.
pub(super) fn is_forwarded(id: &str) -> impl Fn(&LiarEvent) -> bool + '_ {
    move |e| matches!(e, LiarEvent::SignForwarded { request, .. } if request == id)
}
