//! 150 ms inter-region latency with jitter, 5% loss and occasional resets on
//! every link: the liveness target is still met (F1).

use std::time::Duration;

use super::run::{all_nodes, Run};
use super::T;
use crate::chaos::harness::region_faults;
use crate::chaos::proxy::LinkFaults;
use crate::SimError;

/// Latency and loss of issue 4's F1 target: 150 ms one way (300 ms round trip)
/// with ±15 ms jitter to other regions, 2 ms within, 5% loss and 0.2% resets per chunk everywhere.
fn slow_lossy_faults(region: &str) -> LinkFaults {
    let lossy = |latency_ms: u64, jitter_ms: u64| LinkFaults {
        latency: Duration::from_millis(latency_ms),
        jitter: Duration::from_millis(jitter_ms),
        loss: 0.05,
        reset: 0.002,
        ..LinkFaults::healthy()
    };
    region_faults(region, lossy(2, 1), lossy(150, 15))
}

/// Runs the scenario on a fresh cluster.
pub(super) async fn run(run: &mut Run) -> Result<(), SimError> {
    let all = all_nodes(run);
    run.create_group(T, &all).await?;
    for n in run.chaos.nodes().to_vec() {
        run.chaos.set_faults(&n.id, slow_lossy_faults(&n.region))?;
    }
    run.step("150 ms (±15) one-way latency between regions, 5% loss, 0.2% resets on every link");
    run.sign_valid(run.settings.requests).await?;
    let stalls: u64 = run
        .chaos
        .proxies()
        .values()
        .map(|p| p.counters().stalled_chunks)
        .sum();
    let resets: u64 = run
        .chaos
        .proxies()
        .values()
        .map(|p| p.counters().resets)
        .sum();
    run.step(format!(
        "faults injected: {stalls} stalled chunks, {resets} connection resets"
    ));
    run.chaos.heal_all();
    Ok(())
}
