//! Every figure of a bench run (the `--json` report), the targets as ratios
//! to the floor (PASS/FAIL, printed, never asserted), and the printed table.

use std::fmt::Write as _;

use serde::Serialize;

use crate::bench::floor::{DkgFloor, SigningFloor};
use crate::bench::load::LevelReport;
use crate::bench::plan::{BenchPlan, GroupShape};
use crate::bench::probe::{DaemonRss, NodeHealth};
use crate::bench::soak::SoakReport;
use crate::bench::stats::Summary;

/// p50 at one in flight may be at most this many times the floor's p50.
pub const LATENCY_TARGET_RATIO: f64 = 3.0;
/// Throughput at 64 in flight must be at least this share of the floor's single-thread rate.
pub const THROUGHPUT_TARGET_SHARE: f64 = 0.15;
/// In the soak, p99 may be at most this many times p50.
pub const SOAK_TAIL_RATIO: f64 = 10.0;
/// In the soak, a daemon's RSS may grow at most this much after the first minute.
pub const SOAK_RSS_GROWTH_PCT: f64 = 10.0;

/// The machine the run was on.
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    /// Logical CPUs available to this process.
    pub cpus: usize,
    /// `model name` of /proc/cpuinfo.
    pub cpu_model: String,
    /// Kernel release.
    pub kernel: String,
    /// 1-minute load average when the run started (other work on the machine skews every figure).
    pub load_average_at_start: Option<f64>,
}

impl Machine {
    /// Reads this machine's description.
    pub fn this() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, m)| m.trim().to_string())
            .unwrap_or_default();
        Self {
            cpus: std::thread::available_parallelism().map_or(0, usize::from),
            cpu_model,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_string(),
            load_average_at_start: std::fs::read_to_string("/proc/loadavg")
                .ok()
                .and_then(|l| l.split_whitespace().next().and_then(|v| v.parse().ok())),
        }
    }
}

/// The 5-node load cluster.
#[derive(Clone, Debug, Serialize)]
pub struct LoadPhase {
    /// Node processes.
    pub nodes: usize,
    /// Group shape.
    pub group: GroupShape,
    /// Group name.
    pub group_name: String,
    /// Group members.
    pub members: Vec<String>,
    /// One request in flight.
    pub sequential: LevelReport,
    /// Sequential p50 / floor p50.
    pub sequential_p50_over_floor_p50: f64,
    /// One request in flight on a group of the same shape without a daily
    /// limit (no Reserve / Attest rounds: one round trip with banked nonces).
    pub sequential_without_daily_limit: LevelReport,
    /// Its p50 / floor p50.
    pub without_daily_limit_p50_over_floor_p50: f64,
    /// Where the time of the sequential run went, step by step.
    pub steps: Vec<crate::bench::steps::StepReport>,
    /// The same for the group without a daily limit.
    pub steps_without_daily_limit: Vec<crate::bench::steps::StepReport>,
    /// One `GetWithdrawal` call on an idle cluster (mTLS gRPC round trip and a store read).
    pub get_withdrawal_round_trip: Summary,
    /// Each in-flight level.
    pub levels: Vec<LevelReport>,
    /// Daemon memory before any withdrawal.
    pub rss_idle: Vec<DaemonRss>,
    /// Daemon memory after the last level.
    pub rss_after: Vec<DaemonRss>,
    /// Node status before the load.
    pub health_before: Vec<NodeHealth>,
    /// Node status after the load.
    pub health_after: Vec<NodeHealth>,
}

/// One key ceremony through the coordinator's Ceremony API.
#[derive(Clone, Debug, Serialize)]
pub struct Ceremony {
    /// Shape.
    pub shape: GroupShape,
    /// `CreateKeyGroup` call, milliseconds.
    pub ms: f64,
    /// The same DKG in-process, milliseconds (not timed for large groups).
    pub floor_ms: Option<f64>,
    /// `ms / floor_ms`.
    pub ratio: Option<f64>,
}

/// Sequential signatures with the widest group.
#[derive(Clone, Debug, Serialize)]
pub struct WideSignatures {
    /// Shape.
    pub shape: GroupShape,
    /// The floor for that shape.
    pub floor: SigningFloor,
    /// What the cluster did.
    pub signatures: LevelReport,
    /// Cluster p50 / floor p50.
    pub p50_over_floor_p50: f64,
}

/// Ceremonies (and the widest group's signatures) on one cluster.
#[derive(Clone, Debug, Serialize)]
pub struct CeremonyPhase {
    /// Node processes in that cluster.
    pub nodes: usize,
    /// Each ceremony.
    pub ceremonies: Vec<Ceremony>,
    /// Signatures with the widest group.
    pub wide: Option<WideSignatures>,
    /// Daemon memory at the end of the phase.
    pub rss_after: Vec<DaemonRss>,
}

/// A target as a ratio.
#[derive(Clone, Debug, Serialize)]
pub struct Target {
    /// What is compared.
    pub name: String,
    /// Measured value (`None`: not measured in this run).
    pub value: Option<f64>,
    /// The limit, as text (e.g. `<= 3`).
    pub limit: String,
    /// Verdict (`None`: not measured).
    pub pass: Option<bool>,
}

/// Everything one run measured.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    /// Report format version.
    pub version: u32,
    /// Start, Unix seconds.
    pub started_at_unix: u64,
    /// The machine.
    pub machine: Machine,
    /// What was run.
    pub plan: BenchPlan,
    /// In-process signing for the load group's shape.
    pub floor: SigningFloor,
    /// In-process ceremonies.
    pub dkg_floors: Vec<DkgFloor>,
    /// The 5-node cluster under load.
    pub load: LoadPhase,
    /// Ceremonies for n = 3, 5, 10 and the 7-of-10 signatures.
    pub ceremonies: CeremonyPhase,
    /// `--large`: the 67-of-100 group.
    pub large: Option<CeremonyPhase>,
    /// `--large`: why it failed, if it did.
    pub large_error: Option<String>,
    /// `--soak`.
    pub soak: Option<SoakReport>,
    /// Targets.
    pub targets: Vec<Target>,
    /// What is missing or to be read with care.
    pub notes: Vec<String>,
    /// Wall time of the whole run, seconds.
    pub total_secs: f64,
}

fn target(name: &str, value: Option<f64>, limit: &str, pass: impl Fn(f64) -> bool) -> Target {
    Target {
        name: name.into(),
        value,
        limit: limit.into(),
        pass: value.map(pass),
    }
}

impl BenchReport {
    /// The targets, from the figures.
    pub fn evaluate_targets(&self) -> Vec<Target> {
        let l = &self.load;
        let at = |c: usize| l.levels.iter().find(|r| r.concurrency == c);
        let mut out = vec![
            target(
                "p50 at 1 in flight / in-process p50 (same t-of-n)",
                (l.sequential.ok > 0).then_some(l.sequential_p50_over_floor_p50),
                &format!("<= {LATENCY_TARGET_RATIO}"),
                |v| v <= LATENCY_TARGET_RATIO,
            ),
            target(
                "the same, group without a daily limit (no velocity rounds)",
                (l.sequential_without_daily_limit.ok > 0)
                    .then_some(l.without_daily_limit_p50_over_floor_p50),
                &format!("<= {LATENCY_TARGET_RATIO}"),
                |v| v <= LATENCY_TARGET_RATIO,
            ),
            target(
                "throughput at 64 in flight / in-process single-thread rate",
                at(64).map(|r| {
                    crate::bench::run::ratio(r.throughput_per_sec, self.floor.rate_per_sec)
                }),
                &format!(">= {THROUGHPUT_TARGET_SHARE}"),
                |v| v >= THROUGHPUT_TARGET_SHARE,
            ),
        ];
        let unfinished: usize = [&l.sequential, &l.sequential_without_daily_limit]
            .into_iter()
            .chain(&l.levels)
            .map(|r| r.errors + r.hangs)
            .sum();
        out.push(target(
            "errors + hangs under load",
            Some(unfinished as f64),
            "= 0",
            |v| v == 0.0,
        ));
        if let Some(s) = &self.soak {
            out.push(target(
                "soak: hangs",
                Some(s.totals.hangs as f64),
                "= 0",
                |v| v == 0.0,
            ));
            out.push(target(
                "soak: unexplained errors",
                Some(s.totals.errors as f64),
                "= 0",
                |v| v == 0.0,
            ));
            out.push(target(
                "soak: p99 / p50",
                (s.totals.ok > 0).then(|| {
                    crate::bench::run::ratio(s.totals.latency.p99_ms, s.totals.latency.p50_ms)
                }),
                &format!("<= {SOAK_TAIL_RATIO}"),
                |v| v <= SOAK_TAIL_RATIO,
            ));
            out.push(target(
                "soak: largest RSS growth after the baseline sample, % (not restarted)",
                s.max_rss_growth_pct,
                &format!("<= {SOAK_RSS_GROWTH_PCT}"),
                |v| v <= SOAK_RSS_GROWTH_PCT,
            ));
        }
        out
    }

    /// The printed table.
    pub fn render(&self) -> String {
        let mut o = String::new();
        let m = &self.machine;
        let _ = writeln!(
            o,
            "\nPermafrost bench, {} (UTC), {} CPUs ({}), kernel {}, load average {} at start, {:.0} s in all",
            date(self.started_at_unix),
            m.cpus,
            if m.cpu_model.is_empty() {
                "unknown CPU"
            } else {
                &m.cpu_model
            },
            m.kernel,
            m.load_average_at_start
                .map_or("unknown".to_string(), |l| format!("{l:.2}")),
            self.total_secs
        );
        let f = &self.floor;
        let _ = writeln!(
            o,
            "\nFloor: in-process FROST {}-of-{}, one thread (commit, signing package, sign, aggregate, one verify)",
            f.threshold, f.members
        );
        let _ = writeln!(
            o,
            "  {} signatures: mean {:.3} ms, p50 {:.3} ms, p99 {:.3} ms; {:.0} signatures/s",
            f.signatures, f.latency.mean_ms, f.latency.p50_ms, f.latency.p99_ms, f.rate_per_sec
        );
        let l = &self.load;
        let _ = writeln!(
            o,
            "\nCluster: {} node processes + coordinator, mTLS gRPC on 127.0.0.1; warm {} group {} on {}",
            l.nodes,
            l.group,
            l.group_name,
            l.members.join(",")
        );
        o.push_str(&level_table(
            std::iter::once(&l.sequential).chain(&l.levels),
        ));
        let _ = writeln!(
            o,
            "  p50 at 1 in flight = {:.2}x the in-process p50; one GetWithdrawal round trip (mTLS gRPC + store read) p50 {:.2} ms",
            l.sequential_p50_over_floor_p50, l.get_withdrawal_round_trip.p50_ms
        );
        let u = &l.sequential_without_daily_limit;
        let _ = writeln!(
            o,
            "  group without a daily limit (no Reserve/Attest rounds), 1 in flight: {} ok of {}, p50 {:.2} ms = {:.2}x the in-process p50, p99 {:.2} ms",
            u.ok, u.requests, u.latency.p50_ms, l.without_daily_limit_p50_over_floor_p50, u.latency.p99_ms
        );
        let _ = writeln!(
            o,
            "\nWhere one signature's time goes, 1 in flight (mean ms per call; node steps run on each signer, in parallel):"
        );
        let _ = writeln!(
            o,
            "  {:<28} {:>10} {:>8} {:>14} {:>8}",
            "step", "limit: ms", "calls", "no limit: ms", "calls"
        );
        let mut names: Vec<&str> = l.steps.iter().map(|r| r.step.as_str()).collect();
        for r in &l.steps_without_daily_limit {
            if !names.contains(&r.step.as_str()) {
                names.push(&r.step);
            }
        }
        for name in names {
            let cell = |v: &[crate::bench::steps::StepReport]| {
                v.iter()
                    .find(|r| r.step == name)
                    .map(|r| (format!("{:.3}", r.mean_ms), r.calls.to_string()))
                    .unwrap_or_else(|| ("-".into(), "-".into()))
            };
            let (a, ac) = cell(&l.steps);
            let (b, bc) = cell(&l.steps_without_daily_limit);
            let _ = writeln!(o, "  {name:<28} {a:>10} {ac:>8} {b:>14} {bc:>8}");
        }
        let _ = writeln!(o, "  node health after: {}", health_line(&l.health_after));
        let _ = writeln!(o, "\nMemory (VmRSS, MiB): idle -> after the load");
        for idle in &l.rss_idle {
            let after = l.rss_after.iter().find(|a| a.name == idle.name);
            let _ = writeln!(
                o,
                "  {:<10} {:>7} -> {:>7}",
                idle.name,
                mib(idle.rss_kib),
                mib(after.and_then(|a| a.rss_kib))
            );
        }
        for (title, phase) in [
            ("Key ceremonies", Some(&self.ceremonies)),
            ("Large group (--large)", self.large.as_ref()),
        ] {
            if let Some(p) = phase {
                o.push_str(&ceremony_block(title, p));
            }
        }
        if let Some(e) = &self.large_error {
            let _ = writeln!(o, "\nLarge group (--large) FAILED: {e}");
        }
        if let Some(s) = &self.soak {
            o.push_str(&s.render());
        }
        let _ = writeln!(
            o,
            "\nTargets (ratios to the in-process floor measured in this run)"
        );
        for t in &self.targets {
            let verdict = match t.pass {
                Some(true) => "PASS",
                Some(false) => "FAIL",
                None => " -- ",
            };
            let value = t
                .value
                .map_or("not measured".to_string(), |v| format!("{v:.3}"));
            let _ = writeln!(
                o,
                "  {verdict}  {:<72} {value} (target {})",
                t.name, t.limit
            );
        }
        if !self.notes.is_empty() {
            let _ = writeln!(o, "\nNotes");
            for n in &self.notes {
                let _ = writeln!(o, "  - {n}");
            }
        }
        o.push('\n');
        o
    }
}

/// The table of levels (one row each).
pub fn level_table<'a>(rows: impl Iterator<Item = &'a LevelReport>) -> String {
    let mut o = String::from(
        "  in flight  requests     ok refused errors hangs resub  busy   p50 ms   p99 ms  max ms   per s  commits/s batch\n",
    );
    for r in rows {
        let (cps, batch) = match &r.store {
            Some(s) => (
                format!("{:.0}", s.commits_per_sec),
                format!("{:.2}", s.mean_batch),
            ),
            None => ("n/a".into(), "n/a".into()),
        };
        let _ = writeln!(
            o,
            "  {:>9} {:>9} {:>6} {:>7} {:>6} {:>5} {:>5} {:>5} {:>8.2} {:>8.2} {:>7.1} {:>7.0} {:>10} {:>5}",
            r.concurrency,
            r.requests,
            r.ok,
            r.refused,
            r.errors,
            r.hangs,
            r.resubmitted,
            r.busy_retries,
            r.latency.p50_ms,
            r.latency.p99_ms,
            r.latency.max_ms,
            r.throughput_per_sec,
            cps,
            batch
        );
        for p in &r.problems {
            let _ = writeln!(o, "            {p}");
        }
    }
    o
}

fn ceremony_block(title: &str, p: &CeremonyPhase) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "\n{title}: DKG through the coordinator's Ceremony API, {}-node cluster",
        p.nodes
    );
    for c in &p.ceremonies {
        let floor = match (c.floor_ms, c.ratio) {
            (Some(f), Some(r)) => format!("in-process {f:.1} ms, {r:.1}x"),
            _ => "in-process not timed".into(),
        };
        let _ = writeln!(
            o,
            "  {:<9} {:>10.1} ms   ({floor})",
            c.shape.to_string(),
            c.ms
        );
    }
    if let Some(w) = &p.wide {
        let s = &w.signatures;
        let _ = writeln!(
            o,
            "  {} signatures, 1 in flight: {} ok of {}, p50 {:.2} ms, p99 {:.2} ms; in-process p50 {:.3} ms ({:.1}x)",
            w.shape, s.ok, s.requests, s.latency.p50_ms, s.latency.p99_ms, w.floor.latency.p50_ms, w.p50_over_floor_p50
        );
        for problem in &s.problems {
            let _ = writeln!(o, "            {problem}");
        }
    }
    let known: Vec<u64> = p.rss_after.iter().filter_map(|r| r.rss_kib).collect();
    if let (Some(min), Some(max)) = (known.iter().min(), known.iter().max()) {
        let _ = writeln!(
            o,
            "  RSS at the end: {} daemons, {}..{} MiB each, {} MiB in all",
            known.len(),
            mib(Some(*min)),
            mib(Some(*max)),
            mib(Some(known.iter().sum()))
        );
    }
    o
}

fn health_line(h: &[NodeHealth]) -> String {
    let parts: Vec<String> = h
        .iter()
        .map(|n| match (&n.error, n.healthy) {
            (Some(e), _) => format!("{}: no answer ({e})", n.node),
            (None, Some(true)) => format!("{} ok", n.node),
            (None, Some(false)) if n.unhealthy_reason.is_empty() => {
                format!("{} NOT HEALTHY", n.node)
            }
            (None, Some(false)) => format!("{} NOT HEALTHY: {}", n.node, n.unhealthy_reason),
            (None, None) => format!("{} ?", n.node),
        })
        .collect();
    parts.join(", ")
}

/// KiB as MiB with one decimal, `-` when unknown.
pub fn mib(kib: Option<u64>) -> String {
    kib.map_or("-".into(), |k| format!("{:.1}", k as f64 / 1024.0))
}

/// `YYYY-MM-DD HH:MM` of a Unix time (UTC), without a date library.
pub fn date(unix: u64) -> String {
    let days = i64::try_from(unix / 86_400).unwrap_or(0);
    let secs = unix % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}",
        secs / 3600,
        (secs % 3600) / 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_civil() {
        assert_eq!(date(0), "1970-01-01 00:00");
        assert_eq!(date(951_782_400), "2000-02-29 00:00");
        assert_eq!(date(1_798_761_600 + 3_660), "2027-01-01 01:01");
    }

    #[test]
    fn level_rows_show_missing_store_figures() {
        let r = LevelReport {
            concurrency: 8,
            requests: 20,
            ok: 19,
            hangs: 1,
            problems: vec!["hang: x".into()],
            ..LevelReport::default()
        };
        let t = level_table(std::iter::once(&r));
        assert!(t.contains("n/a") && t.contains("hang: x"), "{t}");
    }
}
