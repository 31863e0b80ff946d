//! Where one signature's time goes: every daemon times the steps of a
//! withdrawal in `permafrost_step_duration_seconds{step}` (Prometheus, on its
//! metrics port); the bench reads them before and after a sequential run and
//! reports each step's mean.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::cluster::LocalCluster;

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

/// Reads every daemon's step timings (a daemon that does not answer is left out).
pub async fn sample(cluster: &LocalCluster) -> StepSample {
    let mut out = StepSample::default();
    let coordinator = cluster.file.coordinator.metrics.clone();
    let nodes = cluster.file.nodes.iter().filter_map(|n| n.metrics.clone());
    let endpoints = coordinator
        .into_iter()
        .map(|e| ("coordinator", e))
        .chain(nodes.map(|e| ("node", e)));
    for (daemon, endpoint) in endpoints {
        if let Some(text) = scrape(&endpoint).await {
            for ((step, sum), count) in parse(&text) {
                let e = out.0.entry((daemon.to_string(), step)).or_default();
                e.0 += sum;
                e.1 += count;
            }
        }
    }
    out
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
    ];
    ORDER.iter().position(|s| *s == step).unwrap_or(ORDER.len())
}

/// `(step, seconds)` and calls of every step in a metrics page.
fn parse(text: &str) -> Vec<((String, f64), u64)> {
    let mut sums = BTreeMap::new();
    let mut counts = BTreeMap::new();
    for line in text.lines() {
        let (kind, rest) = if let Some(r) = line.strip_prefix(&format!("{METRIC}_sum{{")) {
            ("sum", r)
        } else if let Some(r) = line.strip_prefix(&format!("{METRIC}_count{{")) {
            ("count", r)
        } else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let Some(step) = labels
            .split(',')
            .find_map(|l| l.trim().strip_prefix("step=\""))
            .and_then(|v| v.strip_suffix('"'))
        else {
            continue;
        };
        let Ok(value) = value.trim().parse::<f64>() else {
            continue;
        };
        if kind == "sum" {
            sums.insert(step.to_string(), value);
        } else {
            counts.insert(step.to_string(), value as u64);
        }
    }
    sums.into_iter()
        .map(|(step, sum)| {
            let count = counts.get(&step).copied().unwrap_or(0);
            ((step, sum), count)
        })
        .collect()
}

/// `GET /metrics` over plain HTTP on 127.0.0.1 (what Prometheus does).
async fn scrape(endpoint: &str) -> Option<String> {
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect(endpoint).await.ok()?;
        s.set_nodelay(true).ok()?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut body = Vec::new();
        s.read_to_end(&mut body).await.ok()?;
        let text = String::from_utf8(body).ok()?;
        text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
    };
    tokio::time::timeout(Duration::from_secs(5), fetch)
        .await
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_read_from_a_metrics_page_and_differenced() {
        let page = |sum: f64, count: u64| {
            format!(
                "# HELP {METRIC} x\n{METRIC}_bucket{{step=\"node_sign\",le=\"0.001\"}} 1\n\
                 {METRIC}_sum{{step=\"node_sign\"}} {sum}\n{METRIC}_count{{step=\"node_sign\"}} {count}\n\
                 {METRIC}_sum{{step=\"coord_submit_audit\"}} 0.5\n{METRIC}_count{{step=\"coord_submit_audit\"}} 10\n"
            )
        };
        let sample = |text: &str| {
            let mut s = StepSample::default();
            for ((step, sum), count) in parse(text) {
                s.0.insert(("node".into(), step), (sum, count));
            }
            s
        };
        let (a, b) = (sample(&page(0.010, 5)), sample(&page(0.030, 15)));
        let d = between(&a, &b);
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!((d[0].step.as_str(), d[0].calls), ("node_sign", 10));
        assert!((d[0].mean_ms - 2.0).abs() < 1e-9);
    }
}
