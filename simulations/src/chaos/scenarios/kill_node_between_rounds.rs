//! Kill -9 a signer after it answered round 1, restart it and replay round 2:
//! the restarted node refuses, its nonces died with it (N2).

use std::time::Duration;

use tokio::time::Instant;

use super::run::{all_nodes, is_forwarded, is_paused, tap, Run};
use super::T;
use crate::chaos::liar::{LiarEvent, PausePoint};
use crate::chaos::workload::{drive, Until};
use crate::SimError;

/// Runs the scenario on a fresh cluster.
pub(super) async fn run(run: &mut Run) -> Result<(), SimError> {
    let all = all_nodes(run);
    run.create_group(T, &all).await?;
    let target = tap(run, "target", PausePoint::BeforeSign).await?;
    let w = run.new_withdrawal()?;
    let submitted = Instant::now();
    let task = tokio::spawn(drive(
        run.chaos.custody(),
        w.id().to_string(),
        w.signed.clone(),
        Until::Final,
        run.settings.request_deadline,
    ));
    let paused = run
        .chaos
        .liar(&target)?
        .wait_for("held round 2", Duration::from_secs(20), is_paused(w.id()))
        .await;
    match paused {
        Ok(_) => {
            run.step(format!(
                "{target} answered round 1 of {}; kill -9 {target} before round 2",
                w.id()
            ));
            run.chaos.kill9(&target).await?;
            run.chaos.restart(&target).await?;
            run.chaos.liar(&target)?.resume().await?;
            let answer = run
                .chaos
                .liar(&target)?
                .wait_for(
                    "round 2 answer",
                    Duration::from_secs(30),
                    is_forwarded(w.id()),
                )
                .await?;
            if let LiarEvent::SignForwarded { code, message, .. } = answer {
                run.step(format!(
                    "round 2 re-sent to the restarted {target}: {code} ({message})"
                ));
                run.record
                    .replays
                    .push((target.clone(), w.id().to_string(), code));
            }
        }
        Err(e) => run.fail(format!(
            "the coordinator never sent round 2 of {} to {target}: {e}",
            w.id()
        )),
    }
    let driven = task
        .await
        .map_err(|e| SimError::Setup(format!("request task: {e}")))?;
    run.account(&driven, submitted, None);
    run.sign_valid(run.settings.requests.saturating_sub(1))
        .await?;
    Ok(())
}
