//! Where one signature's time goes: every daemon times the steps of a
//! withdrawal in `permafrost_step_duration_seconds{step}` (Prometheus, on its
//! metrics port); the bench reads them before and after a sequential run and
//! reports each step's mean.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::cluster::LocalCluster;
use crate::prom_text::{parse, scrape, Exposition};

const METRIC: &str = "permafrost_step_duration_seconds";

/// Per (daemon kind, step): seconds in all and calls, summed over daemons.
#[derive(Clone, Debug, Default)]
pub struct StepSample(BTreeMap<(String, String), (f64, u64)>);

/// One step's share of a sequential run.
#[derive(Clone, Debug, Serialize)]
pub struct StepReport {
    /// `coordinator` or `node`.
    pub daemon: String,
    /// The step's name (`coord_submit_audit`, `node_checks_and_journal`, …).
    pub step: String,
    /// Times it ran in the run (for nodes, over every node).
    pub calls: u64,
    /// Mean time per call, ms.
    pub mean_ms: f64,
}

/// Reads every daemon's step timings (a daemon that does not answer, or
/// whose page does not parse, is left out).
pub async fn sample(cluster: &LocalCluster) -> StepSample {
    let mut out = StepSample::default();
    let coordinator = cluster.file.coordinator.metrics.clone();
    let nodes = cluster.file.nodes.iter().filter_map(|n| n.metrics.clone());
    let endpoints = coordinator
        .into_iter()
        .map(|e| ("coordinator", e))
        .chain(nodes.map(|e| ("node", e)));
    for (daemon, endpoint) in endpoints {
        let Ok(addr) = endpoint.parse() else {
            continue;
        };
        let Ok(Ok(page)) = tokio::time::timeout(Duration::from_secs(5), scrape(addr))
            .await
            .map(|r| r.and_then(|text| parse(&text)))
        else {
            continue;
        };
        out.take_in(daemon, &page);
    }
    out
}

impl StepSample {
    /// Adds one daemon's page: each step's seconds and calls.
    fn take_in(&mut self, daemon: &str, page: &Exposition) {
        let (sum, count) = (format!("{METRIC}_sum"), format!("{METRIC}_count"));
        for s in page.families.get(METRIC).map_or(&[][..], |f| &f.samples) {
            let Some(step) = s.labels.get("step") else {
                continue;
            };
            let e = self
                .0
                .entry((daemon.to_string(), step.clone()))
                .or_default();
            if s.name == sum {
                e.0 += s.value;
            } else if s.name == count {
                e.1 += s.value as u64;
            }
        }
    }
}

/// Steps that ran between `before` and `after`, in the order a request meets them.
pub fn between(before: &StepSample, after: &StepSample) -> Vec<StepReport> {
    let mut out: Vec<StepReport> = after
        .0
        .iter()
        .filter_map(|((daemon, step), (sum, count))| {
            let (s0, c0) = before
                .0
                .get(&(daemon.clone(), step.clone()))
                .copied()
                .unwrap_or_default();
            let calls = count.saturating_sub(c0);
            (calls > 0).then(|| StepReport {
                daemon: daemon.clone(),
                step: step.clone(),
                calls,
                mean_ms: (sum - s0).max(0.0) * 1000.0 / calls as f64,
            })
        })
        .collect();
    out.sort_by_key(|r| order(&r.step));
    out
}

fn order(step: &str) -> usize {
    const ORDER: &[&str] = &[
        "coord_submit_checks",
        "coord_submit_audit",
        "coord_submit_store",
        "coord_signing_rounds",
        "node_reserve",
        "node_attest",
        "node_sign",
        "node_checks_and_journal",
        "node_audit_and_share",
        "coord_finish_signatures",
        "coord_signed_audit",
        "coord_signed_store",
        "coord_submit_durable",
    ];
    ORDER.iter().position(|s| *s == step).unwrap_or(ORDER.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_read_from_a_metrics_page_and_differenced() {
        let page = |sum: f64, count: u64| {
            parse(&format!(
                "# HELP {METRIC} x\n# TYPE {METRIC} histogram\n\
                 {METRIC}_bucket{{step=\"node_sign\",le=\"0.001\"}} 0\n\
                 {METRIC}_bucket{{step=\"node_sign\",le=\"+Inf\"}} {count}\n\
                 {METRIC}_sum{{step=\"node_sign\"}} {sum}\n{METRIC}_count{{step=\"node_sign\"}} {count}\n\
                 {METRIC}_bucket{{step=\"coord_submit_audit\",le=\"0.001\"}} 0\n\
                 {METRIC}_bucket{{step=\"coord_submit_audit\",le=\"+Inf\"}} 10\n\
                 {METRIC}_sum{{step=\"coord_submit_audit\"}} 0.5\n{METRIC}_count{{step=\"coord_submit_audit\"}} 10\n"
            ))
            .expect("a valid page")
        };
        let sample = |page: Exposition| {
            let mut s = StepSample::default();
            s.take_in("node", &page);
            s
        };
        let (a, b) = (sample(page(0.010, 5)), sample(page(0.030, 15)));
        let d = between(&a, &b);
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!((d[0].step.as_str(), d[0].calls), ("node_sign", 10));
        assert!((d[0].mean_ms - 2.0).abs() < 1e-9);
    }
}
