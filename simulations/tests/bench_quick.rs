//! Smoke test of `permafrost-sim bench --quick`: the whole code path (floor,
//! a real 5-node cluster, one and eight in flight, a 2-of-3 ceremony, memory
//! and store probes, the JSON report) in a tiny configuration. Nothing here
//! is timed: it checks only that every request completed and that the JSON
//! carries every figure. The real numbers come from a release run
//! (README "Benchmark").
//!
//! As for the chaos test, build the daemons first (`cargo build --workspace
//! --bins`); without them the test is skipped with a message unless `CI` is set.

use std::path::{Path, PathBuf};

use permafrost_simulations::bench::{self, BenchPlan};

fn daemons_missing(bin_dir: &Path) -> Option<String> {
    ["permafrost-node", "permafrost-coordinator"]
        .iter()
        .map(|b| bin_dir.join(b))
        .find(|p| !p.is_file())
        .map(|p| format!("{} is missing", p.display()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_bench_completes_every_request_and_reports_every_figure() {
    permafrost_proto::tls::install_crypto_provider();
    let sim = PathBuf::from(env!("CARGO_BIN_EXE_permafrost-sim"));
    let bin_dir = sim.parent().expect("binary directory").to_path_buf();
    if let Some(why) = daemons_missing(&bin_dir) {
        let msg = format!("{why}: run `cargo build --workspace --bins` before `cargo test`");
        if std::env::var_os("CI").is_some() {
            panic!("{msg}");
        }
        eprintln!("SKIPPED quick bench: {msg}");
        return;
    }
    let plan = BenchPlan::quick(Some(bin_dir)).expect("quick plan");
    let report = bench::bench(&plan).await.expect("bench runs");
    let text = report.render();

    let load = &report.load;
    for level in std::iter::once(&load.sequential).chain(&load.levels) {
        assert_eq!(
            (level.ok, level.refused, level.errors, level.hangs),
            (level.requests, 0, 0, 0),
            "every request at {} in flight must be signed:\n{text}",
            level.concurrency
        );
    }
    assert_eq!(load.sequential.requests, 20, "{text}");
    assert_eq!(
        load.levels
            .iter()
            .map(|l| l.concurrency)
            .collect::<Vec<_>>(),
        [8]
    );
    assert_eq!(report.ceremonies.ceremonies.len(), 1, "{text}");
    assert!(
        load.rss_idle
            .iter()
            .chain(&load.rss_after)
            .all(|r| r.rss_kib.is_some()),
        "{text}"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bench.json");
    bench::write_json(&report, &path).expect("write json");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("read json")).expect("json");
    for field in [
        "machine",
        "plan",
        "floor",
        "dkg_floors",
        "load",
        "ceremonies",
        "targets",
        "notes",
        "total_secs",
    ] {
        assert!(json.get(field).is_some(), "JSON lacks {field}");
    }
    for field in ["mean_ms", "p50_ms", "p99_ms"] {
        assert!(
            json["floor"]["latency"][field].is_number(),
            "floor.latency.{field}"
        );
    }
    assert!(json["floor"]["rate_per_sec"].is_number());
    for field in [
        "sequential",
        "sequential_p50_over_floor_p50",
        "levels",
        "rss_idle",
        "rss_after",
        "health_after",
    ] {
        assert!(json["load"].get(field).is_some(), "JSON lacks load.{field}");
    }
    for field in [
        "ok",
        "refused",
        "errors",
        "hangs",
        "resubmitted",
        "throughput_per_sec",
        "latency",
        "store",
    ] {
        assert!(
            json["load"]["levels"][0].get(field).is_some(),
            "JSON lacks load.levels[0].{field}"
        );
    }
    assert!(json["ceremonies"]["ceremonies"][0]["ms"].is_number());
    let targets = json["targets"].as_array().expect("targets");
    assert!(targets
        .iter()
        .all(|t| t.get("pass").is_some() && t.get("value").is_some()));
}
