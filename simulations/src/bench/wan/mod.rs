//! `permafrost-sim bench --wan MS`: the real cluster with every region in its
//! own network namespace on this host and `tc netem` between the
//! coordinator's region and the others ([`netns`]), daemons and lying nodes
//! started inside them ([`placement`]), and signing latency reported in round
//! trips (latency / configured RTT) beside ROAST's published figures
//! ([`report`]): honest signing, then each fault with n − t members faulty.
//!
//! Each request is sent alone (one in flight), so a latency is one request's
//! protocol over the WAN, not queueing. Nothing here asserts a time.

pub mod netns;
pub mod placement;
pub mod report;

use std::path::Path;
use std::time::{Duration, Instant};

use permafrost_core::{GroupName, NodeId, Tier};
use permafrost_proto as pb;
use permafrostctl::client;
use serde::Serialize;

use crate::bench::load::{self, Outcome, Workload};
use crate::bench::plan::{BenchPlan, GroupShape};
use crate::bench::report::Machine;
use crate::bench::run::bench_policy;
use crate::bench::stats::Summary;
use crate::chaos::harness::{ChaosBinaries, LiarSpec};
use crate::chaos::liar::Lie;
use crate::progress::Progress;
use crate::SimError;

pub use netns::{Delay, WanNet, WanProfile};
pub use placement::WanCluster;
pub use report::{WanCase, WanReport};

/// Regions, the coordinator's first; nodes are spread over them in turn.
pub const REGIONS: [&str; 3] = ["eu-west", "us-east", "ap-south"];
/// The coordinator's round deadline: its default, written out so the slow
/// signer can be set just under it.
pub const ROUND_TIMEOUT: Duration = Duration::from_millis(5_000);
/// Honest requests sent before the counted ones (connections, caches). Fault
/// cases count from their first request: the liars' connections are up by
/// then (the coordinator's probes go through them), and what the coordinator
/// does on first meeting a faulty member is part of the worst case.
const WARMUP: usize = 2;
/// How far under the deadline a slow signer's share arrives (its answer
/// still has half a round trip to travel).
const SLOW_MARGIN: Duration = Duration::from_millis(300);

/// A way n − t members misbehave.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WanFault {
    /// Answer round 1, never round 2.
    SilentAfterCommit,
    /// Answer round 2 with an invalid share.
    BadShare,
    /// Answer round 2 correctly, just under the deadline.
    SlowUnderDeadline,
}

impl WanFault {
    /// The liar that plays it, for a WAN round trip of `rtt`.
    pub fn liar(self, rtt: Duration) -> LiarSpec {
        match self {
            WanFault::SilentAfterCommit => LiarSpec::new(Lie::SilentAfterCommit),
            WanFault::BadShare => LiarSpec::new(Lie::BadShare),
            WanFault::SlowUnderDeadline => {
                let mut spec = LiarSpec::new(Lie::SlowSign);
                spec.sign_delay = ROUND_TIMEOUT.saturating_sub(rtt + SLOW_MARGIN);
                spec
            }
        }
    }

    /// Words for the report.
    pub fn describe(self) -> &'static str {
        match self {
            WanFault::SilentAfterCommit => "silent after commit",
            WanFault::BadShare => "invalid shares",
            WanFault::SlowUnderDeadline => "slow, just under the deadline",
        }
    }
}

/// How the coordinator gets its signers' commitments.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NonceMode {
    /// Round 1 asks for commitments per request (`banked_nonces = false`).
    TwoRounds,
    /// Commitments issued in advance and banked per node (`banked_nonces =
    /// true`, the default): one round trip fewer.
    Banked,
}

impl NonceMode {
    /// Sets this mode in the coordinator's config, or says why it cannot.
    /// The hook for banked nonces: once the coordinator has a switch for
    /// them, set it here and the bench measures that mode too.
    pub fn configure(self, coordinator: &mut toml::Table) -> Result<(), String> {
        let banked = matches!(self, NonceMode::Banked);
        coordinator.insert("banked_nonces".into(), toml::Value::Boolean(banked));
        Ok(())
    }
}

/// The `--wan*` flags, resolved.
#[derive(Clone, Debug, Serialize)]
pub struct WanPlan {
    /// Round trip between the coordinator's region and the others.
    pub rtt_ms: f64,
    /// netem jitter per direction.
    pub jitter_ms: f64,
    /// netem loss per direction.
    pub loss_pct: f64,
    /// Groups measured.
    pub groups: Vec<GroupShape>,
    /// Honest requests per group and mode.
    pub requests: usize,
    /// Requests per group, mode and fault.
    pub fault_requests: usize,
    /// Faults measured.
    pub faults: Vec<WanFault>,
    /// Nonce modes measured.
    pub nonce_modes: Vec<NonceMode>,
    /// Where to apply the delay (`None`: netem when the kernel has it).
    pub delay: Option<Delay>,
    /// Whether the groups have a daily limit (the group-wide velocity
    /// rounds, Reserve and Attest, before Sign).
    pub group_wide_velocity: bool,
}

impl WanPlan {
    /// The netem profile.
    pub fn profile(&self) -> WanProfile {
        WanProfile {
            rtt: Duration::from_secs_f64(self.rtt_ms / 1000.0),
            jitter: Duration::from_secs_f64(self.jitter_ms / 1000.0),
            loss_pct: self.loss_pct,
        }
    }
}

/// The members that misbehave in a fault case: n − t of the group's members
/// outside the coordinator's region, taken from the regions in turn, so the
/// coordinator (which spreads a session over regions) keeps running into them.
pub fn faulty_members(shape: GroupShape, members: &[(String, usize)]) -> Vec<String> {
    let faulty = usize::from(shape.members - shape.threshold);
    let mut by_region: Vec<Vec<&String>> = vec![Vec::new(); REGIONS.len()];
    for (id, region) in members.iter().take(usize::from(shape.members)) {
        if *region != 0 {
            if let Some(list) = by_region.get_mut(*region) {
                list.push(id);
            }
        }
    }
    let mut out = Vec::new();
    let mut round = 0;
    while out.len() < faulty && by_region.iter().any(|l| l.len() > round) {
        for list in &by_region {
            if let Some(id) = list.get(round) {
                if out.len() < faulty {
                    out.push((*id).clone());
                }
            }
        }
        round += 1;
    }
    out
}

/// Runs the WAN bench of `plan`; every daemon and namespace is gone when this returns.
pub async fn run(plan: &BenchPlan, wan: &WanPlan) -> Result<WanReport, SimError> {
    netns::preflight()?;
    // The faulty signers are the chaos runs' permafrost-liar.
    let bins = ChaosBinaries::locate(plan.bin_dir.as_deref())?;
    let progress = Progress::new();
    let machine = Machine::this();
    let (root, temp) = match &plan.dir {
        Some(d) => (d.clone(), None),
        None => {
            let t = tempfile::Builder::new()
                .prefix("permafrost-bench-wan-")
                .tempdir()
                .map_err(|e| {
                    SimError::Setup(format!("cannot create a temporary directory: {e}"))
                })?;
            (t.path().to_path_buf(), Some(t))
        }
    };
    println!(
        "permafrost-sim bench --wan {}: regions {} in network namespaces of this host, coordinator in {}; directory {}",
        wan.rtt_ms,
        REGIONS.join(", "),
        REGIONS[0],
        root.display()
    );
    let outcome = cases(wan, &bins, &root, &progress).await;
    let keep = plan.keep || matches!(&outcome, Err(e) if !matches!(e, SimError::Interrupted));
    if let Some(t) = temp {
        if keep {
            println!("kept {} (configs, data and logs)", t.keep().display());
        }
    }
    let (cases, delay) = outcome?;
    Ok(WanReport::new(
        wan,
        delay,
        machine,
        cases,
        progress.elapsed(),
    ))
}

async fn cases(
    wan: &WanPlan,
    bins: &ChaosBinaries,
    root: &Path,
    progress: &Progress,
) -> Result<(Vec<WanCase>, Delay), SimError> {
    let profile = wan.profile();
    let net = WanNet::create(&REGIONS, &profile, wan.delay)?;
    progress.step(format!(
        "{} namespaces, {:?} delay: {} ms round trip (jitter {} ms, loss {}%) between {} and the others",
        net.regions().len(),
        net.delay(),
        wan.rtt_ms,
        wan.jitter_ms,
        wan.loss_pct,
        REGIONS[0]
    ));
    let nodes = wan.groups.iter().map(|g| g.members).max().unwrap_or(3);
    let names: Vec<String> = wan.groups.iter().map(|g| g.group_name("wan")).collect();
    let mut cluster = WanCluster::start(
        &root.join("wan"),
        bins,
        net,
        &profile,
        nodes,
        &if wan.group_wide_velocity {
            bench_policy(&names)
        } else {
            crate::bench::run::bench_policy_without_velocity(&names)
        },
        progress,
    )
    .await?;
    let mut out = Vec::new();
    for &shape in &wan.groups {
        let members: Vec<String> = (1..=shape.members).map(|i| format!("n{i}")).collect();
        let group = create_group(&cluster, shape, &members).await?;
        progress.step(format!("key group {} ({shape}) active", group.name));
        let w = workload(&cluster, &group)?;
        for &mode in &wan.nonce_modes {
            if let Err(why) = cluster.set_nonce_mode(mode).await {
                progress.step(format!("{shape}, {mode:?}: {why}"));
                out.push(WanCase::not_measured(shape, mode, None, &why));
                for &fault in &wan.faults {
                    out.push(WanCase::not_measured(shape, mode, Some(fault), &why));
                }
                continue;
            }
            let label = format!("{}of{}-{mode:?}", shape.threshold, shape.members);
            let case = measure(&cluster, &w, &group, &label, WARMUP, wan.requests).await?;
            let case = WanCase::measured(shape, mode, None, Vec::new(), case, wan.rtt_ms);
            progress.step(case.line());
            out.push(case);
            let faulty = faulty_members(shape, cluster.members());
            for &fault in &wan.faults {
                if wan.fault_requests == 0 || faulty.is_empty() {
                    continue;
                }
                cluster
                    .put_behind_liars(&faulty, &fault.liar(profile.rtt))
                    .await?;
                let label = format!("{label}-{fault:?}");
                let case = measure(&cluster, &w, &group, &label, 0, wan.fault_requests).await?;
                let case =
                    WanCase::measured(shape, mode, Some(fault), faulty.clone(), case, wan.rtt_ms);
                progress.step(case.line());
                out.push(case);
            }
            cluster.restore(&faulty).await?;
        }
    }
    cluster.check_alive()?;
    Ok((out, cluster.delay()))
}

/// What one case's requests did.
#[derive(Debug, Default)]
pub struct Measured {
    /// Signed and verified.
    pub ok: usize,
    /// Every other ending, quoted.
    pub problems: Vec<String>,
    /// Latency of the signed ones.
    pub latency: Summary,
    /// Signing attempts (sessions) per signed request.
    pub attempts: Vec<u32>,
}

/// `count` requests, one at a time after `warmup` uncounted ones; between
/// requests the group's exclusions are cleared, so every request meets the
/// faulty members afresh (the worst case, not the first request only).
async fn measure(
    cluster: &WanCluster,
    w: &Workload,
    group: &pb::KeyGroup,
    label: &str,
    warmup: usize,
    count: usize,
) -> Result<Measured, SimError> {
    let custody = w
        .custody
        .first()
        .cloned()
        .ok_or_else(|| SimError::Setup("no client connection".into()))?;
    let mut m = Measured::default();
    let mut samples = Vec::new();
    for i in 0..warmup + count {
        let p = w.prepare(label, i)?;
        let started = Instant::now();
        let (driven, status) = load::drive(custody.clone(), &p, w.hang).await;
        let elapsed = started.elapsed();
        let outcome = match &status {
            Some(s) => w.check(s, &p.payload),
            None => driven.outcome.clone(),
        };
        cluster.clear_exclusions(&group.name).await?;
        if i < warmup {
            continue;
        }
        match outcome {
            Outcome::Signed => {
                m.ok += 1;
                samples.push(elapsed);
                m.attempts.push(status.as_ref().map_or(0, |s| s.attempts));
            }
            other => m.problems.push(format!("{other:?}")),
        }
    }
    m.latency = Summary::of(&samples);
    Ok(m)
}

async fn create_group(
    cluster: &WanCluster,
    shape: GroupShape,
    members: &[String],
) -> Result<pb::KeyGroup, SimError> {
    let name =
        GroupName::new(shape.group_name("wan")).map_err(|e| SimError::Setup(e.to_string()))?;
    let members = members
        .iter()
        .map(|m| NodeId::new(m.as_str()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| SimError::Setup(e.to_string()))?;
    let c = cluster.local();
    let signed = c.approved_create(&name, Tier::Warm, shape.threshold, &members)?;
    let group = client::create_key_group(&c.operator, &signed).await?;
    if !group.active {
        return Err(SimError::Verification(format!(
            "key group {} is not active",
            group.name
        )));
    }
    Ok(group)
}

fn workload(cluster: &WanCluster, group: &pb::KeyGroup) -> Result<Workload, SimError> {
    let c = cluster.local();
    let mut tag = [0u8; 4];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut tag);
    Ok(Workload {
        custody: vec![c.custody.custody()?],
        key: c.custody_key.clone(),
        group: GroupName::new(group.name.clone()).map_err(|e| SimError::Setup(e.to_string()))?,
        group_key: group.group_public_key.clone(),
        tag: hex::encode(tag),
        hang: Duration::from_secs(60),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faulty_members_are_remote_and_spread() {
        let members: Vec<(String, usize)> =
            (1..=10).map(|i| (format!("n{i}"), (i - 1) % 3)).collect();
        assert_eq!(
            faulty_members(GroupShape::new(3, 5), &members),
            ["n2", "n3"]
        );
        assert_eq!(
            faulty_members(GroupShape::new(7, 10), &members),
            ["n2", "n3", "n5"]
        );
        assert_eq!(faulty_members(GroupShape::new(2, 3), &members), ["n2"]);
    }

    #[test]
    fn slow_signer_answers_under_the_deadline() {
        let rtt = Duration::from_millis(153);
        let spec = WanFault::SlowUnderDeadline.liar(rtt);
        assert!(spec.sign_delay + rtt < ROUND_TIMEOUT);
        assert!(spec.sign_delay + rtt + Duration::from_millis(500) > ROUND_TIMEOUT);
        let mut table = toml::Table::new();
        NonceMode::TwoRounds
            .configure(&mut table)
            .expect("two rounds");
        assert_eq!(table["banked_nonces"].as_bool(), Some(false));
        NonceMode::Banked.configure(&mut table).expect("banked");
        assert_eq!(table["banked_nonces"].as_bool(), Some(true));
    }
}
