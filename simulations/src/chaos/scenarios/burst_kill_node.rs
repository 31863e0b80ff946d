//! Kill -9 a signer in the middle of a burst of concurrent withdrawals and
//! restart it: all sign, one digest per id, velocity counted once (S1, S4, P1).

use std::time::Duration;

use tokio::time::Instant;

use super::run::{all_nodes, Run};
use super::T;
use crate::chaos::workload::drive_all;
use crate::SimError;

/// Runs the scenario on a fresh cluster.
pub(super) async fn run(run: &mut Run) -> Result<(), SimError> {
    let all = all_nodes(run);
    run.create_group(T, &all).await?;
    let burst = (run.settings.requests * 16).clamp(32, 256);
    let victim = run.pick_one("victim", &all)?;
    let mut batch = Vec::new();
    for _ in 0..burst {
        let w = run.new_withdrawal()?;
        batch.push((w.id().to_string(), w.signed));
    }
    let custody = run.chaos.custody();
    let deadline = run.settings.request_deadline;
    let started = Instant::now();
    let width = usize::try_from(burst).unwrap_or(256);
    let load = tokio::spawn(async move { drive_all(&custody, batch, width, deadline).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    run.step(format!(
        "kill -9 {victim} in the middle of a burst of {burst} withdrawals"
    ));
    run.chaos.kill9(&victim).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    run.chaos.restart(&victim).await?;
    let results = load
        .await
        .map_err(|e| SimError::Setup(format!("burst task: {e}")))?;
    for d in &results {
        run.account(d, started, None);
    }
    let signed = results.iter().filter(|d| d.signed()).count();
    run.step(format!("{signed} of {burst} withdrawals signed"));
    Ok(())
}
