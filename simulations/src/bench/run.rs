//! The phases of one bench run, in order, each on a quiet machine: the
//! in-process floor first, then the 5-node load cluster, then the ceremony
//! cluster (as many nodes as the largest ceremony needs), then optionally the
//! 100-node cluster and the soak. Every cluster is the `up` cluster
//! ([`LocalCluster`]) with the bench's own policy, stopped before the next.

use std::path::Path;
use std::time::{Duration, Instant};

use permafrost_core::{unix_now, GroupName, NodeId, Tier};
use permafrost_proto as pb;
use permafrostctl::client;

use crate::bench::floor::{self, SigningFloor};
use crate::bench::load::{self, LevelReport, Workload};
use crate::bench::plan::{BenchPlan, GroupShape};
use crate::bench::probe::{self, NodeProbe};
use crate::bench::report::{
    BenchReport, Ceremony, CeremonyPhase, LoadPhase, Machine, WideSignatures,
};
use crate::bench::soak;
use crate::cluster::{Binaries, CreateOptions, Layout, LocalCluster};
use crate::progress::Progress;
use crate::SimError;

/// Longest a cluster of up to ten nodes may take to come up.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest the hundred-node cluster may take to come up.
const LARGE_READY_TIMEOUT: Duration = Duration::from_secs(600);
/// Round deadline of the hundred-node cluster's coordinator: a 67-of-100
/// round is ~100 × 99 share checks of 67 terms, on 2 cores.
const LARGE_ROUND_TIMEOUT_MS: u64 = 300_000;
/// Regions the bench's nodes are spread over, in turn.
const REGIONS: [&str; 3] = ["eu-west", "us-east", "ap-south"];
/// In-process ceremonies above this many parties are not timed (minutes on one thread).
const DKG_FLOOR_MAX_MEMBERS: u16 = 20;

/// Runs every phase of `plan`; every daemon is stopped before this returns.
pub async fn run(plan: &BenchPlan) -> Result<BenchReport, SimError> {
    let bins = Binaries::locate(plan.bin_dir.as_deref())?;
    let progress = Progress::new();
    let (root, temp) = match &plan.dir {
        Some(d) => (d.clone(), None),
        None => {
            let t = tempfile::Builder::new()
                .prefix("permafrost-bench-")
                .tempdir()
                .map_err(|e| {
                    SimError::Setup(format!("cannot create a temporary directory: {e}"))
                })?;
            (t.path().to_path_buf(), Some(t))
        }
    };
    println!(
        "permafrost-sim bench: the `up` cluster (separate processes, mTLS on 127.0.0.1) against in-process FROST; directory {}",
        root.display()
    );
    let outcome = phases(plan, &bins, &root, &progress).await;
    let keep = plan.keep || matches!(&outcome, Err(e) if !matches!(e, SimError::Interrupted));
    if let Some(t) = temp {
        if keep {
            println!("kept {} (configs, data and logs)", t.keep().display());
        }
    }
    let mut report = outcome?;
    report.total_secs = progress.elapsed().as_secs_f64();
    Ok(report)
}

async fn phases(
    plan: &BenchPlan,
    bins: &Binaries,
    root: &Path,
    progress: &Progress,
) -> Result<BenchReport, SimError> {
    let started_at = unix_now();
    // Read first: the load average before the bench adds its own.
    let machine = Machine::this();
    let mut notes = Vec::new();
    let wide_shape = plan.dkg.iter().copied().max_by_key(|s| s.members);
    progress.step(format!(
        "floor: in-process FROST {} on one thread ({} signatures)",
        plan.group, plan.floor_signatures
    ));
    let main_floor = signing_floor(plan.group, plan.floor_signatures).await?;
    let mut dkg_floors = Vec::new();
    for shape in &plan.dkg {
        if shape.members <= DKG_FLOOR_MAX_MEMBERS {
            let s = *shape;
            dkg_floors.push(blocking(move || floor::dkg(s.threshold, s.members)).await?);
        }
    }
    let wide_floor = match wide_shape {
        Some(s) if plan.wide_signatures > 0 => {
            Some(signing_floor(s, (plan.floor_signatures / 4).max(20)).await?)
        }
        _ => None,
    };
    let large_floor = match plan.large {
        Some(s) => {
            progress.step(format!(
                "floor: in-process FROST {s} ({} signatures)",
                plan.large_signatures
            ));
            Some(signing_floor(s, plan.large_signatures.max(1)).await?)
        }
        None => None,
    };

    let mut names: Vec<String> = vec![plan.group.group_name("bench")];
    names.extend(
        plan.dkg
            .iter()
            .chain(&plan.large)
            .map(|s| s.group_name("dkg")),
    );
    // One more group on the load cluster without a daily limit: what a
    // signature costs without the group-wide velocity rounds.
    let policy = bench_policy(&names)
        + &bench_policy_without_velocity(&[plan.group.group_name(UNLIMITED)])
            .lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n");

    // The load cluster: five nodes, as `up` builds it.
    let mut cluster = start(
        &root.join("load"),
        bins,
        progress,
        5,
        &policy,
        None,
        READY_TIMEOUT,
    )
    .await?;
    let load = load_phase(plan, &mut cluster, &main_floor, progress).await?;
    let dkg_nodes = plan.dkg.iter().map(|s| s.members).max().unwrap_or(0);
    let ceremonies = if usize::from(dkg_nodes) <= cluster.file.nodes.len() {
        ceremony_phase(
            plan,
            &plan.dkg,
            &cluster,
            &dkg_floors,
            wide_floor.as_ref(),
            plan.wide_signatures,
            progress,
        )
        .await?
    } else {
        cluster.stop();
        drop(cluster);
        let c = start(
            &root.join("dkg"),
            bins,
            progress,
            dkg_nodes,
            &policy,
            None,
            READY_TIMEOUT,
        )
        .await?;
        ceremony_phase(
            plan,
            &plan.dkg,
            &c,
            &dkg_floors,
            wide_floor.as_ref(),
            plan.wide_signatures,
            progress,
        )
        .await?
    };
    // The large phase is optional and heavy: its failure is reported, not fatal.
    let (large, large_error) = match (plan.large, &large_floor) {
        (Some(shape), Some(f)) => {
            match large_phase(plan, shape, f, bins, root, &policy, progress).await {
                Ok(p) => (Some(p), None),
                Err(SimError::Interrupted) => return Err(SimError::Interrupted),
                Err(e) => {
                    progress.step(format!("large group {shape} failed: {e}"));
                    (None, Some(e.to_string()))
                }
            }
        }
        _ => (None, None),
    };
    let soak = match plan.soak {
        Some(duration) => {
            let mut c = start(
                &root.join("soak"),
                bins,
                progress,
                5,
                &policy,
                None,
                READY_TIMEOUT,
            )
            .await?;
            let group = create_group(&c, plan.group, &main_members(plan.group), progress).await?;
            let w = workload(&c, &group, plan)?;
            // The last member: the others still make a quorum while it is down.
            let victim = group.members.last().cloned().unwrap_or_else(|| "n5".into());
            Some(soak::soak(plan, duration, &mut c, bins, &w, &victim, progress).await?)
        }
        None => None,
    };
    if load.health_after.iter().all(|h| h.store.is_none()) {
        notes.push(
            "the nodes do not report store counters in GetStatus (yet): commits per second and batch size are missing"
                .into(),
        );
    }
    notes.push(
        "store figures in the table are the nodes'; the coordinator's own (GetClusterStatus, `permafrostctl status`) are not broken down per level here"
            .into(),
    );
    notes.push(
        "the client runs on the same cores as the daemons; step times are each daemon's own (permafrost_step_duration_seconds): the rest of a request's time is the gRPC calls between them and the client"
            .into(),
    );
    if let Some(l) = machine.load_average_at_start.filter(|l| *l > 0.5) {
        notes.push(format!(
            "load average {l:.2} at start: other work was running on this machine, so every figure is pessimistic"
        ));
    }
    let mut report = BenchReport {
        version: 1,
        started_at_unix: started_at,
        machine,
        plan: plan.clone(),
        floor: main_floor,
        dkg_floors,
        load,
        ceremonies,
        large,
        large_error,
        soak,
        targets: Vec::new(),
        notes,
        total_secs: 0.0,
    };
    report.targets = report.evaluate_targets();
    Ok(report)
}

/// The hundred-node cluster: one 67-of-100 ceremony and a few signatures.
async fn large_phase(
    plan: &BenchPlan,
    shape: GroupShape,
    floor: &SigningFloor,
    bins: &Binaries,
    root: &Path,
    policy: &str,
    progress: &Progress,
) -> Result<CeremonyPhase, SimError> {
    let c = start(
        &root.join("large"),
        bins,
        progress,
        shape.members,
        policy,
        Some(LARGE_ROUND_TIMEOUT_MS),
        LARGE_READY_TIMEOUT,
    )
    .await?;
    ceremony_phase(
        plan,
        &[shape],
        &c,
        &[],
        Some(floor),
        plan.large_signatures,
        progress,
    )
    .await
}

/// Name tag of the load cluster's group without a daily limit.
const UNLIMITED: &str = "nolimit";

/// The 5-node phase: idle memory, one in flight (on the group with a daily
/// limit, then on one without), then each level.
async fn load_phase(
    plan: &BenchPlan,
    cluster: &mut LocalCluster,
    floor: &SigningFloor,
    progress: &Progress,
) -> Result<LoadPhase, SimError> {
    let members = main_members(plan.group);
    let group = create_group(cluster, plan.group, &members, progress).await?;
    let w = workload(cluster, &group, plan)?;
    let probe = NodeProbe::new(cluster);
    // Let start-up allocations settle before reading idle memory.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_idle = probe::rss(cluster);
    let health_before = probe.health().await;
    progress.step(format!(
        "{} sequential withdrawals (1 in flight)",
        plan.sequential
    ));
    let before = super::steps::sample(cluster).await;
    let sequential = measured(&w, &probe, "c1", 1, plan.sequential).await?;
    let steps = super::steps::between(&before, &super::steps::sample(cluster).await);
    progress.step(level_line(&sequential));
    let unlimited = create_group_named(
        cluster,
        plan.group,
        &plan.group.group_name(UNLIMITED),
        &members,
    )
    .await?;
    progress.step(format!(
        "{} sequential withdrawals on {} (no daily limit: no velocity rounds)",
        plan.sequential, unlimited.name
    ));
    let w_unlimited = workload(cluster, &unlimited, plan)?;
    let before = super::steps::sample(cluster).await;
    let without_limit = measured(&w_unlimited, &probe, "u1", 1, plan.sequential).await?;
    let steps_without_limit = super::steps::between(&before, &super::steps::sample(cluster).await);
    progress.step(level_line(&without_limit));
    let round_trip = load::round_trips(&w, &load::request_id(&w, "c1", 0), plan.sequential).await;
    progress.step(format!(
        "  one GetWithdrawal round trip (mTLS gRPC + store read): p50 {:.2} ms",
        round_trip.p50_ms
    ));
    let mut levels = Vec::new();
    for &level in &plan.levels {
        let count = plan.requests_at(level);
        progress.step(format!("{count} withdrawals, {level} in flight"));
        let r = measured(&w, &probe, &format!("c{level}"), level, count).await?;
        progress.step(level_line(&r));
        levels.push(r);
    }
    cluster.daemons().check_alive()?;
    let rss_after = probe::rss(cluster);
    let health_after = probe.health().await;
    let ratio = ratio(sequential.latency.p50_ms, floor.latency.p50_ms);
    Ok(LoadPhase {
        nodes: cluster.file.nodes.len(),
        group: plan.group,
        group_name: group.name.clone(),
        members: group.members.clone(),
        sequential,
        sequential_p50_over_floor_p50: ratio,
        without_daily_limit_p50_over_floor_p50: self::ratio(
            without_limit.latency.p50_ms,
            floor.latency.p50_ms,
        ),
        sequential_without_daily_limit: without_limit,
        steps,
        steps_without_daily_limit: steps_without_limit,
        get_withdrawal_round_trip: round_trip,
        levels,
        rss_idle,
        rss_after,
        health_before,
        health_after,
    })
}

/// Times each ceremony through the coordinator, then signs with the widest group.
async fn ceremony_phase(
    plan: &BenchPlan,
    shapes: &[GroupShape],
    cluster: &LocalCluster,
    floors: &[floor::DkgFloor],
    wide_floor: Option<&SigningFloor>,
    wide_count: usize,
    progress: &Progress,
) -> Result<CeremonyPhase, SimError> {
    let mut ceremonies = Vec::new();
    let mut widest: Option<(GroupShape, pb::KeyGroup)> = None;
    for &shape in shapes {
        let members = first_members(shape.members);
        let started = Instant::now();
        let group = create_group_named(cluster, shape, &shape.group_name("dkg"), &members).await?;
        let ms = floor::ms(started.elapsed());
        let floor_ms = floors
            .iter()
            .find(|f| f.threshold == shape.threshold && f.members == shape.members)
            .map(|f| f.ms);
        progress.step(format!("DKG {shape} through the coordinator: {ms:.1} ms"));
        ceremonies.push(Ceremony {
            shape,
            ms,
            floor_ms,
            ratio: floor_ms.map(|f| ratio(ms, f)),
        });
        if widest
            .as_ref()
            .is_none_or(|(s, _)| s.members < shape.members)
        {
            widest = Some((shape, group));
        }
    }
    let wide = match (widest, wide_floor) {
        (Some((shape, group)), Some(f)) if wide_count > 0 => {
            let w = workload(cluster, &group, plan)?;
            progress.step(format!("{wide_count} sequential {shape} withdrawals"));
            let signatures =
                load::run_level(&w, &format!("w{}", shape.members), 1, wide_count).await?;
            progress.step(level_line(&signatures));
            Some(WideSignatures {
                shape,
                p50_over_floor_p50: ratio(signatures.latency.p50_ms, f.latency.p50_ms),
                floor: f.clone(),
                signatures,
            })
        }
        _ => None,
    };
    Ok(CeremonyPhase {
        nodes: cluster.file.nodes.len(),
        ceremonies,
        wide,
        rss_after: probe::rss(cluster),
    })
}

/// One level with the nodes' store counters read before and after.
async fn measured(
    w: &Workload,
    probe: &NodeProbe,
    label: &str,
    concurrency: usize,
    count: usize,
) -> Result<LevelReport, SimError> {
    let before = probe.counters().await;
    let mut r = load::run_level(w, label, concurrency, count).await?;
    let after = probe.counters().await;
    r.store = probe::store_delta(&before, &after, r.wall_secs);
    Ok(r)
}

/// One line on a finished level, for the progress log.
pub fn level_line(r: &LevelReport) -> String {
    format!(
        "  {} ok, {} refused, {} errors, {} hangs; p50 {:.2} ms, p99 {:.2} ms, {:.0}/s",
        r.ok,
        r.refused,
        r.errors,
        r.hangs,
        r.latency.p50_ms,
        r.latency.p99_ms,
        r.throughput_per_sec
    )
}

/// `a / b`, 0 when `b` is 0.
pub fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, SimError> + Send + 'static,
) -> Result<T, SimError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| SimError::Setup(format!("the in-process floor failed: {e}")))?
}

async fn signing_floor(shape: GroupShape, count: usize) -> Result<SigningFloor, SimError> {
    blocking(move || floor::signing(shape.threshold, shape.members, count)).await
}

/// Starts a `nodes`-node cluster in `dir` with `policy` and waits until it is ready.
async fn start(
    dir: &Path,
    bins: &Binaries,
    progress: &Progress,
    nodes: u16,
    policy: &str,
    round_timeout_ms: Option<u64>,
    ready: Duration,
) -> Result<LocalCluster, SimError> {
    let layout = Layout {
        nodes: (1..=nodes)
            .map(|i| {
                (
                    format!("n{i}"),
                    REGIONS[usize::from(i - 1) % REGIONS.len()].to_string(),
                )
            })
            .collect(),
        policy: Some(policy.to_string()),
        round_timeout_ms,
    };
    progress.step(format!(
        "starting a {nodes}-node cluster in {}",
        dir.display()
    ));
    let mut c =
        LocalCluster::create_layout(dir, bins, progress, &CreateOptions::default(), &layout)
            .await?;
    c.wait_ready(ready, progress).await?;
    Ok(c)
}

/// Members of the load group on the 5-node cluster: 2-of-3 uses n1, n3 and
/// n5 (three regions, as `up`'s warm-1), larger groups the first N nodes.
fn main_members(shape: GroupShape) -> Vec<String> {
    if shape.members == 3 {
        vec!["n1".into(), "n3".into(), "n5".into()]
    } else {
        first_members(shape.members)
    }
}

fn first_members(n: u16) -> Vec<String> {
    (1..=n).map(|i| format!("n{i}")).collect()
}

async fn create_group(
    cluster: &LocalCluster,
    shape: GroupShape,
    members: &[String],
    progress: &Progress,
) -> Result<pb::KeyGroup, SimError> {
    let g = create_group_named(cluster, shape, &shape.group_name("bench"), members).await?;
    progress.step(format!(
        "key group {} (warm, {shape} on {}) active",
        g.name,
        g.members.join(",")
    ));
    Ok(g)
}

async fn create_group_named(
    cluster: &LocalCluster,
    shape: GroupShape,
    name: &str,
    members: &[String],
) -> Result<pb::KeyGroup, SimError> {
    let name = GroupName::new(name).map_err(|e| SimError::Setup(e.to_string()))?;
    let members = members
        .iter()
        .map(|m| NodeId::new(m.as_str()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| SimError::Setup(e.to_string()))?;
    // A 67-of-100 ceremony takes minutes here; the default call deadline is two.
    let mut operator = cluster.operator.clone();
    operator.timeout = Duration::from_secs(1800);
    let signed = cluster.approved_create(&name, Tier::Warm, shape.threshold, &members)?;
    let group = client::create_key_group(&operator, &signed).await?;
    if !group.active {
        return Err(SimError::Verification(format!(
            "key group {} is not active",
            group.name
        )));
    }
    Ok(group)
}

/// The load's clients: `plan.connections` separate mTLS connections as the custody service.
fn workload(
    cluster: &LocalCluster,
    group: &pb::KeyGroup,
    plan: &BenchPlan,
) -> Result<Workload, SimError> {
    let custody = (0..plan.connections)
        .map(|_| cluster.custody.custody())
        .collect::<Result<Vec<_>, _>>()?;
    let mut tag = [0u8; 4];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut tag);
    Ok(Workload {
        custody,
        key: cluster.custody_key.clone(),
        group: GroupName::new(group.name.clone()).map_err(|e| SimError::Setup(e.to_string()))?,
        group_key: group.group_public_key.clone(),
        tag: hex::encode(tag),
        hang: plan.hang,
    })
}

/// A warm policy for every bench group: no approvals, and limits far above
/// any load the bench sends (1000 sat per request), so nothing it measures is a refusal.
pub fn bench_policy(groups: &[String]) -> String {
    let mut out = String::from(
        "# Withdrawal policy of a permafrost-sim bench cluster: warm groups, no approvals,\n\
         # limits far above the bench's load.\n",
    );
    for g in groups {
        out.push_str(&format!(
            "\n[groups.{g}]\ntier = \"warm\"\nmax_lifetime_secs = 86400\n\n\
             [groups.{g}.assets.BTC]\nper_request_max = \"100000000\"\ndaily_max = \"1000000000000000000\"\n"
        ));
    }
    out
}

/// [`bench_policy`] without a daily limit: no group-wide velocity round.
pub fn bench_policy_without_velocity(groups: &[String]) -> String {
    bench_policy(groups).replace(
        "daily_max = \"1000000000000000000\"",
        &format!("daily_max = \"{}\"", u128::MAX),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_policy_parses_and_needs_no_approvals() {
        let text = bench_policy(&["bench-2of3".into(), "dkg-67of100".into()]);
        let policy = permafrost_core::policy::Policy::from_toml(&text).expect("policy parses");
        let name = GroupName::new("dkg-67of100").expect("name");
        let group = policy.group(&name).expect("group present");
        let asset = group.assets.get("BTC").expect("BTC limits");
        assert_eq!(
            policy.approvals_needed(group, asset, crate::bench::BENCH_AMOUNT_SATS),
            0
        );
    }

    #[test]
    fn without_velocity_the_policy_has_no_group_wide_round() {
        let names = ["wan-3of5".to_string()];
        let name = GroupName::new("wan-3of5").expect("name");
        for (text, needed) in [
            (bench_policy(&names), true),
            (bench_policy_without_velocity(&names), false),
        ] {
            let policy = permafrost_core::policy::Policy::from_toml(&text).expect("parses");
            let limits = policy.group(&name).and_then(|g| g.assets.get("BTC"));
            assert_eq!(
                permafrost_core::velocity::group_wide_check_needed(limits),
                needed
            );
        }
    }

    #[test]
    fn load_group_members_spread_over_regions() {
        assert_eq!(main_members(GroupShape::new(2, 3)), ["n1", "n3", "n5"]);
        assert_eq!(main_members(GroupShape::new(3, 5)).len(), 5);
    }
}
