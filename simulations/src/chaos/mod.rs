//! `permafrost-sim chaos`: seeded, replayable chaos runs against the real
//! binaries (issue 4; STYLE.md §11). Each run builds a fresh local cluster,
//! puts a fault-injecting proxy on every coordinator→node link, applies its
//! scenario's faults (kills, latency, loss, partitions, lying nodes), then
//! checks every invariant of DESIGN.md §5 against what the run did. All
//! random choices come from the run seed; a failing run prints its seed.
//!
//! What a seed fixes: which nodes are killed, partitioned or lying, where,
//! how, and every per-chunk fault decision of every connection. What it
//! cannot fix: the operating system's scheduling and TCP chunking, so a
//! replay repeats the same faults, not the same microseconds.

pub mod checks;
pub mod harness;
pub mod liar;
pub mod process;
pub mod proxy;
pub mod report;
pub mod scenarios;
pub mod seed;
pub mod workload;

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::time::Instant;

pub use report::{ChaosReport, RunResult};
pub use scenarios::{Scenario, Settings};

use crate::chaos::harness::{ChaosBinaries, ChaosCluster};
use crate::chaos::scenarios::{Run, RunMetrics};
use crate::progress::Progress;
use crate::SimError;

/// Every value `--scenario` takes: `all`, then each scenario's name, all
/// derived from [`Scenario`], so a new scenario cannot be left out.
pub fn scenario_names() -> Vec<String> {
    std::iter::once("all".to_string())
        .chain(Scenario::all().iter().map(|s| s.name()))
        .collect()
}

/// `--scenario`'s help, listing [`scenario_names`].
fn scenario_help() -> String {
    format!(
        "A scenario, `all` (each in turn), or a comma-separated list: {}",
        scenario_names().join(", ")
    )
}

/// The scenarios `names` stands for: one name, `all`, or a comma-separated list.
pub fn scenarios_named(names: &str) -> Result<Vec<Scenario>, String> {
    let mut out: Vec<Scenario> = Vec::new();
    for name in names.split(',').map(str::trim) {
        let found = if name == "all" {
            Scenario::all().to_vec()
        } else {
            vec![
                <Scenario as clap::ValueEnum>::from_str(name, false).map_err(|_| {
                    format!(
                        "unknown scenario {name:?}; choose from {}",
                        scenario_names().join(", ")
                    )
                })?,
            ]
        };
        for s in found {
            if !out.contains(&s) {
                out.push(s);
            }
        }
    }
    Ok(out)
}

/// What to run.
#[derive(Clone, Debug)]
pub struct ChaosOptions {
    /// Scenarios, each run `runs` times.
    pub scenarios: Vec<Scenario>,
    /// Run `i` of each scenario uses seed `seed + i`.
    pub seed: u64,
    /// Runs per scenario.
    pub runs: u32,
    /// Request counts, concurrency, deadlines.
    pub settings: Settings,
    /// Parent of the runs' directories (default: the system temporary directory).
    pub dir: Option<PathBuf>,
    /// Keep every run's directory, not only failed ones.
    pub keep: bool,
    /// Where the binaries are (default: next to this executable).
    pub bin_dir: Option<PathBuf>,
    /// Write the report as JSON here.
    pub json: Option<PathBuf>,
    /// Longest a scenario body may take before the run is failed.
    pub run_timeout: Duration,
}

impl Default for ChaosOptions {
    fn default() -> Self {
        Self {
            scenarios: Scenario::all().to_vec(),
            seed: 1,
            runs: 1,
            settings: Settings::default(),
            dir: None,
            keep: false,
            bin_dir: None,
            json: None,
            run_timeout: Duration::from_secs(300),
        }
    }
}

/// The scenarios of one `--scenario` value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScenarioList(pub Vec<Scenario>);

fn parse_scenarios(names: &str) -> Result<ScenarioList, String> {
    scenarios_named(names).map(ScenarioList)
}

/// Command line of `permafrost-sim chaos`.
#[derive(Clone, Debug, clap::Args)]
pub struct ChaosArgs {
    /// A scenario, `all` (each in turn), or a comma-separated list of [`scenario_names`].
    #[arg(long, default_value = "all", value_parser = parse_scenarios, help = scenario_help())]
    pub scenario: ScenarioList,
    /// Seed of the first run; run i of a scenario uses seed + i.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Runs per scenario.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub runs: u32,
    /// Valid withdrawals per run.
    #[arg(long, default_value_t = Settings::default().requests, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub requests: u32,
    /// Create the runs' directories under DIR (default: the system temporary directory).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Keep every run's directory (failed runs are always kept).
    #[arg(long)]
    pub keep: bool,
    /// Directory holding permafrost-node, permafrost-coordinator and permafrost-liar (default: next to permafrost-sim).
    #[arg(long, value_name = "DIR")]
    pub bin_dir: Option<PathBuf>,
    /// Write the report as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

/// `permafrost-sim chaos`: runs, prints the table, fails on any violation or failed run.
pub async fn command(args: ChaosArgs) -> Result<(), SimError> {
    let opts = ChaosOptions {
        scenarios: args.scenario.0,
        seed: args.seed,
        runs: args.runs,
        settings: Settings {
            requests: args.requests,
            ..Settings::default()
        },
        dir: args.dir,
        keep: args.keep,
        bin_dir: args.bin_dir,
        json: args.json,
        ..ChaosOptions::default()
    };
    let report = crate::interruptible(chaos(&opts)).await?;
    let failed = report.failed();
    if failed.is_empty() {
        return Ok(());
    }
    Err(SimError::Verification(format!(
        "{} safety violation(s), {} of {} run(s) failed (seeds {})",
        report.violations(),
        failed.len(),
        report.runs.len(),
        failed
            .iter()
            .map(|r| format!("{}:{}", r.scenario.name(), r.seed))
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

/// Runs every scenario `runs` times, prints the table and returns the report.
pub async fn chaos(opts: &ChaosOptions) -> Result<ChaosReport, SimError> {
    let bins = ChaosBinaries::locate(opts.bin_dir.as_deref())?;
    let root = match &opts.dir {
        Some(d) => {
            std::fs::create_dir_all(d).map_err(|e| SimError::io(d, e))?;
            d.clone()
        }
        None => std::env::temp_dir(),
    };
    let total = opts.scenarios.len() * opts.runs as usize;
    let mut results = Vec::with_capacity(total);
    for scenario in &opts.scenarios {
        for i in 0..opts.runs {
            let seed = seed::run_seed(opts.seed, i);
            let result = run_one(*scenario, seed, opts, &bins, &root).await;
            println!(
                "== run {}/{total}: {} seed {}: {}/{} signed, {} refused, {} shares audited, {} safety violation(s), {:.1}s: {}",
                results.len() + 1,
                scenario.name(),
                seed,
                result.metrics.signed,
                result.metrics.valid,
                result.metrics.refused,
                result.metrics.shares_audited,
                result.violations.len(),
                result.duration_ms as f64 / 1000.0,
                if result.passed() { "PASS" } else { "FAIL" }
            );
            results.push(result);
        }
    }
    let report = ChaosReport::new(opts.seed, results);
    println!("\n{}", report.render());
    if let Some(path) = &opts.json {
        let json = serde_json::to_string_pretty(&report)
            .map_err(|e| SimError::Setup(format!("cannot encode the report: {e}")))?;
        permafrostctl::files::write_public(path, format!("{json}\n").as_bytes())?;
        println!("report written to {}", path.display());
    }
    Ok(report)
}

/// One run on a fresh cluster in its own directory; never fails, it reports.
async fn run_one(
    scenario: Scenario,
    seed: u64,
    opts: &ChaosOptions,
    bins: &ChaosBinaries,
    root: &Path,
) -> RunResult {
    let started = Instant::now();
    let progress = Progress::new();
    let mut result = RunResult {
        scenario,
        seed,
        duration_ms: 0,
        metrics: RunMetrics::default(),
        violations: Vec::new(),
        kept_dir: None,
    };
    let dir = match tempfile::Builder::new()
        .prefix(&format!("permafrost-chaos-{}-{seed}-", scenario.name()))
        .tempdir_in(root)
    {
        Ok(d) => d,
        Err(e) => {
            result.metrics.failures.push(format!(
                "cannot create a run directory in {}: {e}",
                root.display()
            ));
            return result;
        }
    };
    match ChaosCluster::start(dir.path(), bins, seed, &progress).await {
        Err(e) => result
            .metrics
            .failures
            .push(format!("the cluster did not come up: {e}")),
        Ok(chaos) => {
            let mut run = Run::new(scenario, seed, chaos, opts.settings.clone(), progress);
            match tokio::time::timeout(opts.run_timeout, scenario.run(&mut run)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => run.metrics.failures.push(format!("scenario stopped: {e}")),
                Err(_) => run.metrics.failures.push(format!(
                    "scenario did not finish within {:?}",
                    opts.run_timeout
                )),
            }
            match tokio::time::timeout(Duration::from_secs(120), run.finish()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => run
                    .metrics
                    .failures
                    .push(format!("collecting what the run did: {e}")),
                Err(_) => run
                    .metrics
                    .failures
                    .push("collecting what the run did took over 120 s".into()),
            }
            // Audit logs are read from disk even if collection failed halfway.
            if run.record.audit_logs.is_empty() {
                run.chaos.stop().await;
                run.record.audit_logs = run.chaos.audit_logs();
            }
            result.violations = checks::check_all(&run.record);
            run.metrics.shares_audited =
                u32::try_from(checks::shares_released(&run.record)).unwrap_or(u32::MAX);
            result.metrics = run.metrics;
        }
    }
    result.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    if opts.keep || !result.passed() {
        result.kept_dir = Some(dir.keep());
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scenario_has_a_name_and_all_expands() {
        let names = scenario_names();
        assert_eq!(names[0], "all");
        for name in names.iter().skip(1) {
            let s = scenarios_named(name).expect("known");
            assert_eq!(s.len(), 1);
            assert_eq!(s[0].name(), *name);
        }
        assert_eq!(names.len(), Scenario::all().len() + 1);
        assert_eq!(
            scenarios_named("all").expect("all").len(),
            Scenario::all().len()
        );
        assert!(scenarios_named("nope").is_err());
        assert_eq!(
            scenarios_named("slow-lossy, lose-n-minus-t,slow-lossy").expect("list"),
            vec![Scenario::SlowLossy, Scenario::LoseNMinusT]
        );
    }

    #[test]
    fn the_command_line_parses_scenario_lists() {
        use clap::Parser;
        let cli = crate::Cli::try_parse_from([
            "permafrost-sim",
            "chaos",
            "--scenario",
            "lose-n-minus-t,dkg-split-view",
            "--seed",
            "9",
        ])
        .expect("parses");
        let crate::SimCommand::Chaos(args) = cli.command else {
            panic!("not the chaos command");
        };
        assert_eq!(
            args.scenario,
            ScenarioList(vec![Scenario::LoseNMinusT, Scenario::DkgSplitView])
        );
        assert_eq!(args.seed, 9);
        assert!(crate::Cli::try_parse_from(["permafrost-sim", "chaos", "--runs", "0"]).is_err());
    }
}
