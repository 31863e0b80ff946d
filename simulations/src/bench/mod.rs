//! `permafrost-sim bench`: the real cluster of `up` (separate node and
//! coordinator processes, mTLS gRPC on 127.0.0.1, durable stores) side by side
//! with the same FROST work in this process (the floor), in one run on one
//! machine: latency at one request in flight, throughput and tail latency at
//! 8, 64 and 256, key ceremonies, memory and store group commits, and targets
//! stated as ratios to the floor. `--soak` holds 256 in flight while a node
//! and the coordinator are killed with SIGKILL and restarted.
//!
//! Figures are measurements of this machine, printed and written as JSON;
//! nothing here asserts a time (the smoke test checks only that every request
//! completed). `--wan MS` runs [`wan`] instead: the cluster spread over
//! network namespaces with real WAN latency between them.

pub mod floor;
pub mod load;
pub mod plan;
pub mod probe;
pub mod report;
pub mod run;
pub mod soak;
pub mod stats;
pub mod steps;
pub mod wan;

use std::path::Path;

pub use plan::{BenchArgs, BenchPlan, GroupShape};
pub use report::BenchReport;

use crate::SimError;

/// Amount of every bench withdrawal, in satoshis (well inside the bench policy).
pub const BENCH_AMOUNT_SATS: u128 = 1_000;

/// Runs `permafrost-sim bench` from its command line.
pub async fn command(args: BenchArgs) -> Result<(), SimError> {
    let plan = BenchPlan::from_args(&args).map_err(SimError::Setup)?;
    if let Some(w) = &plan.wan {
        let report = crate::interruptible(wan::run(&plan, w)).await?;
        print!("{}", report.render());
        if let Some(path) = &plan.json {
            write_json(&report, path)?;
            println!("report written to {}", path.display());
        }
        return Ok(());
    }
    let report = crate::interruptible(bench(&plan)).await?;
    print!("{}", report.render());
    if let Some(path) = &plan.json {
        write_json(&report, path)?;
        println!("report written to {}", path.display());
    }
    Ok(())
}

/// Runs the bench described by `plan` and returns every figure.
pub async fn bench(plan: &BenchPlan) -> Result<BenchReport, SimError> {
    run::run(plan).await
}

/// Writes `report` as pretty JSON to `path`.
pub fn write_json(report: &impl serde::Serialize, path: &Path) -> Result<(), SimError> {
    let json = serde_json::to_string_pretty(report)
        .map_err(|e| SimError::Setup(format!("cannot encode the report: {e}")))?;
    permafrostctl::files::write_public(path, format!("{json}\n").as_bytes())?;
    Ok(())
}
