//! The chaos table: per scenario, what was asked, what was signed or
//! correctly refused, latency percentiles, safety violations and the seeds to replay.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use serde::Serialize;

use crate::chaos::checks::Violation;
use crate::chaos::scenarios::{RunMetrics, Scenario};

/// What one run did.
#[derive(Clone, Debug, Serialize)]
pub struct RunResult {
    /// Scenario.
    pub scenario: Scenario,
    /// Its seed (replay with `--seed` this `--runs 1`).
    pub seed: u64,
    /// Wall time, milliseconds.
    pub duration_ms: u64,
    /// Liveness.
    pub metrics: RunMetrics,
    /// Safety violations found by the checkers.
    pub violations: Vec<Violation>,
    /// Where its files were kept, if they were.
    pub kept_dir: Option<PathBuf>,
}

impl RunResult {
    /// No violation, no missed request, no failed expectation.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
            && self.metrics.failures.is_empty()
            && self.metrics.missed.is_empty()
    }
}

/// One line of the table.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Row {
    /// Scenario name, or `total`.
    pub scenario: String,
    /// Runs.
    pub runs: u32,
    /// Valid requests submitted.
    pub valid: u32,
    /// Of those, signed.
    pub signed: u32,
    /// Unauthorized requests and broken ceremonies correctly refused.
    pub refused: u32,
    /// Valid requests not signed in time.
    pub missed: u32,
    /// Safety violations.
    pub violations: u32,
    /// Median latency to signed, milliseconds.
    pub p50_ms: Option<u64>,
    /// 99th percentile latency to signed, milliseconds.
    pub p99_ms: Option<u64>,
    /// Slowest "below threshold" answer, milliseconds.
    pub below_threshold_max_ms: Option<u64>,
    /// Seeds of runs that did not pass.
    pub failed_seeds: Vec<u64>,
}

/// Nearest-rank percentile of `values` (unsorted).
pub fn percentile(values: &[u64], p: f64) -> Option<u64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

fn row(name: String, runs: &[&RunResult]) -> Row {
    let latencies: Vec<u64> = runs
        .iter()
        .flat_map(|r| r.metrics.latencies_ms.iter().copied())
        .collect();
    Row {
        scenario: name,
        runs: runs.len() as u32,
        valid: runs.iter().map(|r| r.metrics.valid).sum(),
        signed: runs.iter().map(|r| r.metrics.signed).sum(),
        refused: runs.iter().map(|r| r.metrics.refused).sum(),
        missed: runs.iter().map(|r| r.metrics.missed.len() as u32).sum(),
        violations: runs.iter().map(|r| r.violations.len() as u32).sum(),
        p50_ms: percentile(&latencies, 50.0),
        p99_ms: percentile(&latencies, 99.0),
        below_threshold_max_ms: runs
            .iter()
            .flat_map(|r| r.metrics.below_threshold_ms.iter().copied())
            .max(),
        failed_seeds: runs
            .iter()
            .filter(|r| !r.passed())
            .map(|r| r.seed)
            .collect(),
    }
}

/// Everything a chaos command did.
#[derive(Clone, Debug, Serialize)]
pub struct ChaosReport {
    /// The seed given on the command line.
    pub seed: u64,
    /// One line per scenario, then the total.
    pub rows: Vec<Row>,
    /// Every run.
    pub runs: Vec<RunResult>,
}

impl ChaosReport {
    /// Builds the table from the runs.
    pub fn new(seed: u64, runs: Vec<RunResult>) -> Self {
        let mut by_scenario: BTreeMap<Scenario, Vec<&RunResult>> = BTreeMap::new();
        for r in &runs {
            by_scenario.entry(r.scenario).or_default().push(r);
        }
        let mut rows: Vec<Row> = Scenario::all()
            .iter()
            .filter_map(|s| by_scenario.get(s).map(|rs| row(s.name(), rs)))
            .collect();
        if rows.len() > 1 {
            rows.push(row("total".into(), &runs.iter().collect::<Vec<_>>()));
        }
        Self { seed, rows, runs }
    }

    /// Safety violations over every run.
    pub fn violations(&self) -> usize {
        self.runs.iter().map(|r| r.violations.len()).sum()
    }

    /// Runs that did not pass.
    pub fn failed(&self) -> Vec<&RunResult> {
        self.runs.iter().filter(|r| !r.passed()).collect()
    }

    /// Valid requests signed / submitted.
    pub fn success(&self) -> (u32, u32) {
        (
            self.runs.iter().map(|r| r.metrics.signed).sum(),
            self.runs.iter().map(|r| r.metrics.valid).sum(),
        )
    }

    /// The table and, below it, every violation and failure with its replay command.
    pub fn render(&self) -> String {
        let secs = |v: Option<u64>| {
            v.map(|ms| format!("{:.2}s", ms as f64 / 1000.0))
                .unwrap_or_else(|| "-".into())
        };
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<27} {:>4} {:>6} {:>6} {:>7} {:>6} {:>6} {:>7} {:>7} {:>10}  failed seeds",
            "scenario",
            "runs",
            "valid",
            "signed",
            "refused",
            "missed",
            "safety",
            "p50",
            "p99",
            "below-thr"
        );
        for r in &self.rows {
            let seeds = if r.failed_seeds.is_empty() {
                "-".to_string()
            } else {
                r.failed_seeds
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            };
            let _ = writeln!(
                out,
                "{:<27} {:>4} {:>6} {:>6} {:>7} {:>6} {:>6} {:>7} {:>7} {:>10}  {seeds}",
                r.scenario,
                r.runs,
                r.valid,
                r.signed,
                r.refused,
                r.missed,
                r.violations,
                secs(r.p50_ms),
                secs(r.p99_ms),
                secs(r.below_threshold_max_ms),
            );
        }
        let (signed, valid) = self.success();
        let rate = if valid == 0 {
            100.0
        } else {
            100.0 * f64::from(signed) / f64::from(valid)
        };
        let _ = writeln!(
            out,
            "\nvalid requests signed: {signed}/{valid} ({rate:.2}%); safety violations: {}; runs failed: {}/{}",
            self.violations(),
            self.failed().len(),
            self.runs.len()
        );
        for r in self.failed() {
            let _ = writeln!(
                out,
                "\nFAILED {} seed {} — replay: permafrost-sim chaos --scenario {} --seed {} --runs 1{}",
                r.scenario.name(),
                r.seed,
                r.scenario.name(),
                r.seed,
                r.kept_dir
                    .as_ref()
                    .map(|d| format!(" (files kept in {})", d.display()))
                    .unwrap_or_default()
            );
            for v in &r.violations {
                let _ = writeln!(out, "  SAFETY {}: {}", v.invariant, v.detail);
            }
            for f in &r.metrics.failures {
                let _ = writeln!(out, "  failed: {f}");
            }
            for m in &r.metrics.missed {
                let _ = writeln!(out, "  not signed: {m}");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[5], 99.0), Some(5));
        let v: Vec<u64> = (1..=100).rev().collect();
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 99.0), Some(99));
        assert_eq!(percentile(&v, 100.0), Some(100));
    }

    #[test]
    fn failed_runs_are_listed_with_their_replay_command() {
        let ok = RunResult {
            scenario: Scenario::SlowLossy,
            seed: 7,
            duration_ms: 1,
            metrics: RunMetrics {
                valid: 2,
                signed: 2,
                latencies_ms: vec![100, 300],
                ..RunMetrics::default()
            },
            violations: vec![],
            kept_dir: None,
        };
        let mut bad = ok.clone();
        bad.seed = 8;
        bad.violations
            .push(Violation::new("inv3 one-digest-per-request", "two digests"));
        let report = ChaosReport::new(7, vec![ok, bad]);
        assert_eq!(report.violations(), 1);
        assert_eq!(report.rows.len(), 1);
        assert_eq!(report.rows[0].failed_seeds, vec![8]);
        let text = report.render();
        assert!(
            text.contains("--scenario slow-lossy --seed 8 --runs 1"),
            "{text}"
        );
        assert!(text.contains("SAFETY inv3"), "{text}");
    }
}
