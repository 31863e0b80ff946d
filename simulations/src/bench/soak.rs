//! `bench --soak MINUTES`: 256 withdrawals in flight for the whole time
//! (bounded in count and time) while, midway, one signer node and then the
//! coordinator are killed with SIGKILL and restarted (the coordinator on the
//! same data directory). Every request must end signed or with a clear
//! error; a request whose submission failed because the coordinator was down
//! is submitted again under the same id and counted. Memory is sampled
//! throughout, to see whether it grows after the first minute.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::bench::load::{self, LevelReport, Workload};
use crate::bench::plan::BenchPlan;
use crate::bench::probe::{self, DaemonRss, NodeHealth, NodeProbe};
use crate::bench::report::{level_table, mib};
use crate::bench::stats::Summary;
use crate::chaos::process::kill9;
use crate::cluster::{Binaries, LocalCluster, COORDINATOR_ID};
use crate::progress::Progress;
use crate::SimError;

/// How often daemon memory is sampled.
const RSS_EVERY: Duration = Duration::from_secs(5);
/// Time between killing the node and killing the coordinator, and between
/// killing the coordinator and restarting both.
const OUTAGE_STEP: Duration = Duration::from_secs(2);
/// How often the soak's clock is checked.
const TICK: Duration = Duration::from_millis(250);

/// A daemon killed and restarted during the soak.
#[derive(Clone, Debug, Serialize)]
pub struct KillEvent {
    /// Node id or coordinator id.
    pub daemon: String,
    /// Killed process.
    pub pid: u32,
    /// When, seconds into the soak.
    pub killed_at_secs: f64,
    /// New process.
    pub new_pid: u32,
    /// When it was started again, seconds into the soak.
    pub restarted_at_secs: f64,
}

/// Memory of every daemon at one moment.
#[derive(Clone, Debug, Serialize)]
pub struct RssSample {
    /// Seconds into the soak.
    pub at_secs: f64,
    /// Each daemon.
    pub daemons: Vec<DaemonRss>,
}

/// One daemon's memory from the first-minute sample to the end.
#[derive(Clone, Debug, Serialize)]
pub struct RssGrowth {
    /// Node id or coordinator id.
    pub daemon: String,
    /// At the baseline sample, KiB.
    pub baseline_kib: Option<u64>,
    /// At the end, KiB.
    pub end_kib: Option<u64>,
    /// Growth, percent (`None` when restarted in between or unreadable).
    pub growth_pct: Option<f64>,
    /// A different process at the end (it was killed and restarted after the baseline).
    pub restarted: bool,
}

/// What the soak did.
#[derive(Clone, Debug, Serialize)]
pub struct SoakReport {
    /// Length asked for, seconds.
    pub seconds: f64,
    /// Requests in flight.
    pub concurrency: usize,
    /// Counts, latency and throughput over the whole soak.
    pub totals: LevelReport,
    /// The kills.
    pub kills: Vec<KillEvent>,
    /// Seconds into the soak of the baseline memory sample.
    pub rss_baseline_at_secs: f64,
    /// Every memory sample.
    pub rss_samples: Vec<RssSample>,
    /// Growth from the baseline to the end, per daemon.
    pub rss_growth: Vec<RssGrowth>,
    /// Largest growth of a daemon that was not restarted after the baseline.
    pub max_rss_growth_pct: Option<f64>,
    /// Node status at the end.
    pub health_after: Vec<NodeHealth>,
}

/// Runs the soak on `cluster` (already holding the group `w` signs with);
/// `victim` is the node killed, a group member whose loss leaves a quorum.
pub async fn soak(
    plan: &BenchPlan,
    duration: Duration,
    cluster: &mut LocalCluster,
    bins: &Binaries,
    w: &Workload,
    victim: &str,
    progress: &Progress,
) -> Result<SoakReport, SimError> {
    let concurrency = plan.soak_concurrency;
    progress.step(format!(
        "soak: {concurrency} in flight for {:.1} min, kill -9 of a node and the coordinator midway",
        duration.as_secs_f64() / 60.0
    ));
    let probe = NodeProbe::new(cluster);
    let counters_before = probe.counters().await;
    let started = Instant::now();
    let stop_at = started + duration;
    let begun = Arc::new(AtomicUsize::new(0));
    let mut workers = JoinSet::new();
    for worker in 0..concurrency {
        let w = w.clone();
        let begun = begun.clone();
        let max = plan.soak_max_requests;
        workers.spawn(async move {
            let custody = w.custody[worker % w.custody.len().max(1)].clone();
            let mut part = LevelReport::default();
            let mut latencies = Vec::new();
            while Instant::now() < stop_at {
                let i = begun.fetch_add(1, Ordering::Relaxed);
                if i >= max {
                    break;
                }
                let p = match w.prepare("soak", i) {
                    Ok(p) => p,
                    Err(e) => {
                        part.errors += 1;
                        part.problems
                            .push(format!("error: cannot build request {i}: {e}"));
                        break;
                    }
                };
                let (mut d, status) = load::drive(custody.clone(), &p, w.hang).await;
                if let Some(status) = status {
                    d.outcome = w.check(&status, &p.payload);
                }
                part.requests += 1;
                load::tally(&mut part, &d, &mut latencies);
            }
            (part, latencies)
        });
    }

    // After the first minute; a shorter soak has no such moment, so it uses
    // the sample just before the kills (taken at the same tick, before them).
    let baseline_at = Duration::from_secs(60).min(duration / 2);
    let kill_at = duration / 2;
    let mut kills = Vec::new();
    let mut samples = Vec::new();
    let mut next_sample = Duration::ZERO;
    let mut killed = false;
    while Instant::now() < stop_at {
        let now = started.elapsed();
        if now >= next_sample {
            samples.push(RssSample {
                at_secs: now.as_secs_f64(),
                daemons: probe::rss(cluster),
            });
            next_sample += RSS_EVERY;
        }
        if !killed && now >= kill_at {
            killed = true;
            kills = outage(cluster, bins, victim, started, progress).await?;
        }
        tokio::time::sleep(TICK.min(stop_at.saturating_duration_since(Instant::now()))).await;
    }
    progress.step("soak: no new requests; waiting for those in flight");
    let mut totals = LevelReport {
        concurrency,
        ..LevelReport::default()
    };
    let mut latencies = Vec::new();
    while let Some(joined) = workers.join_next().await {
        let (part, l) =
            joined.map_err(|e| SimError::Setup(format!("a soak worker failed: {e}")))?;
        merge(&mut totals, part);
        latencies.extend(l);
    }
    let wall = started.elapsed();
    samples.push(RssSample {
        at_secs: wall.as_secs_f64(),
        daemons: probe::rss(cluster),
    });
    totals.wall_secs = wall.as_secs_f64();
    // The killed node's counters restart with it; it is left out of the sums.
    totals.store = probe::store_delta(&counters_before, &probe.counters().await, totals.wall_secs);
    totals.latency = Summary::of(&latencies);
    totals.throughput_per_sec = crate::bench::run::ratio(totals.ok as f64, totals.wall_secs);
    let baseline = samples
        .iter()
        .find(|s| s.at_secs >= baseline_at.as_secs_f64())
        .or(samples.first())
        .cloned();
    let (rss_growth, max_rss_growth_pct) = growth(baseline.as_ref(), samples.last());
    let report = SoakReport {
        seconds: duration.as_secs_f64(),
        concurrency,
        totals,
        kills,
        rss_baseline_at_secs: baseline.map_or(0.0, |b| b.at_secs),
        rss_samples: samples,
        rss_growth,
        max_rss_growth_pct,
        health_after: probe.health().await,
    };
    progress.step(crate::bench::run::level_line(&report.totals));
    Ok(report)
}

/// kill -9 `node`, then the coordinator; restart the coordinator (same
/// config and data directory), then the node.
async fn outage(
    cluster: &mut LocalCluster,
    bins: &Binaries,
    node: &str,
    started: Instant,
    progress: &Progress,
) -> Result<Vec<KillEvent>, SimError> {
    let at = || started.elapsed().as_secs_f64();
    let pid_of = |c: &LocalCluster, name: &str| {
        c.pid(name)
            .ok_or_else(|| SimError::Setup(format!("no daemon {name}")))
    };
    let node_pid = pid_of(cluster, node)?;
    kill9(node, node_pid)?;
    let node_killed = at();
    progress.step(format!("soak: kill -9 {node} (pid {node_pid})"));
    tokio::time::sleep(OUTAGE_STEP).await;
    let coord_pid = pid_of(cluster, COORDINATOR_ID)?;
    kill9(COORDINATOR_ID, coord_pid)?;
    let coord_killed = at();
    progress.step(format!("soak: kill -9 {COORDINATOR_ID} (pid {coord_pid})"));
    tokio::time::sleep(OUTAGE_STEP).await;
    let new_coord = cluster.respawn(COORDINATOR_ID, bins)?;
    let coord_back = at();
    let new_node = cluster.respawn(node, bins)?;
    let node_back = at();
    progress.step(format!(
        "soak: restarted {COORDINATOR_ID} (pid {new_coord}, same data directory) and {node} (pid {new_node})"
    ));
    Ok(vec![
        KillEvent {
            daemon: node.to_string(),
            pid: node_pid,
            killed_at_secs: node_killed,
            new_pid: new_node,
            restarted_at_secs: node_back,
        },
        KillEvent {
            daemon: COORDINATOR_ID.to_string(),
            pid: coord_pid,
            killed_at_secs: coord_killed,
            new_pid: new_coord,
            restarted_at_secs: coord_back,
        },
    ])
}

fn merge(into: &mut LevelReport, part: LevelReport) {
    into.requests += part.requests;
    into.ok += part.ok;
    into.refused += part.refused;
    into.errors += part.errors;
    into.hangs += part.hangs;
    into.resubmitted += part.resubmitted;
    into.busy_retries += part.busy_retries;
    for p in part.problems {
        if into.problems.len() < 10 {
            into.problems.push(p);
        }
    }
}

/// Growth per daemon from `baseline` to `end`; the largest among daemons
/// that are the same process at both.
fn growth(baseline: Option<&RssSample>, end: Option<&RssSample>) -> (Vec<RssGrowth>, Option<f64>) {
    let (Some(b), Some(e)) = (baseline, end) else {
        return (Vec::new(), None);
    };
    let mut out = Vec::new();
    let mut max: Option<f64> = None;
    for last in &e.daemons {
        let first = b.daemons.iter().find(|d| d.name == last.name);
        let restarted = first.is_none_or(|f| f.pid != last.pid);
        let growth_pct = match (first.and_then(|f| f.rss_kib), last.rss_kib, restarted) {
            (Some(a), Some(z), false) if a > 0 => Some((z as f64 - a as f64) * 100.0 / a as f64),
            _ => None,
        };
        if let Some(g) = growth_pct {
            max = Some(max.map_or(g, |m: f64| m.max(g)));
        }
        out.push(RssGrowth {
            daemon: last.name.clone(),
            baseline_kib: first.and_then(|f| f.rss_kib),
            end_kib: last.rss_kib,
            growth_pct,
            restarted,
        });
    }
    (out, max)
}

impl SoakReport {
    /// The soak's part of the printed table.
    pub fn render(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "\nSoak: {} in flight for {:.1} min on a fresh 5-node cluster",
            self.concurrency,
            self.seconds / 60.0
        );
        o.push_str(&level_table(std::iter::once(&self.totals)));
        for k in &self.kills {
            let _ = writeln!(
                o,
                "  kill -9 {} (pid {}) at {:.1}s, restarted at {:.1}s (pid {})",
                k.daemon, k.pid, k.killed_at_secs, k.restarted_at_secs, k.new_pid
            );
        }
        let _ = writeln!(
            o,
            "  RSS (MiB) from the baseline sample at {:.0}s (one minute in, or just before the kills if sooner) to the end:",
            self.rss_baseline_at_secs
        );
        for g in &self.rss_growth {
            let change = match (g.growth_pct, g.restarted) {
                (_, true) => "restarted after the baseline".to_string(),
                (Some(p), false) => format!("{p:+.1}%"),
                (None, false) => "-".to_string(),
            };
            let _ = writeln!(
                o,
                "    {:<10} {:>7} -> {:>7}  {change}",
                g.daemon,
                mib(g.baseline_kib),
                mib(g.end_kib)
            );
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at: f64, d: &[(&str, u32, u64)]) -> RssSample {
        RssSample {
            at_secs: at,
            daemons: d
                .iter()
                .map(|(n, pid, kib)| DaemonRss {
                    name: n.to_string(),
                    pid: *pid,
                    rss_kib: Some(*kib),
                })
                .collect(),
        }
    }

    #[test]
    fn growth_ignores_restarted_daemons() {
        let b = sample(60.0, &[("n1", 10, 1000), ("coord-1", 20, 2000)]);
        let e = sample(300.0, &[("n1", 10, 1100), ("coord-1", 21, 9000)]);
        let (rows, max) = growth(Some(&b), Some(&e));
        assert_eq!(rows.len(), 2);
        assert!(rows[1].restarted && rows[1].growth_pct.is_none());
        assert!((max.expect("n1 measured") - 10.0).abs() < 1e-9);
    }
}
