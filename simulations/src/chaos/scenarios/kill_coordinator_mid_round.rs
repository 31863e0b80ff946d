//! Kill -9 the coordinator while round 2 is held at a signer, restart it from
//! its data directory: the request still signs, and resubmitting it returns the
//! same signature (S1 kill -9 of any role, F3 same outcome on a resend).

use std::time::Duration;

use rand::seq::SliceRandom;
use tokio::time::Instant;

use super::run::{all_nodes, is_forwarded, is_paused, tap, Run};
use super::T;
use crate::chaos::liar::{LiarEvent, PausePoint};
use crate::chaos::workload::{drive, Until};
use crate::cluster::COORDINATOR_ID;
use crate::SimError;

/// Runs the scenario on a fresh cluster.
pub(super) async fn run(run: &mut Run) -> Result<(), SimError> {
    let all = all_nodes(run);
    run.create_group(T, &all).await?;
    let point = *[PausePoint::BeforeSign, PausePoint::AfterSign]
        .choose(&mut run.rng("kill-point"))
        .unwrap_or(&PausePoint::BeforeSign);
    let target = tap(run, "target", point).await?;
    let w = run.new_withdrawal()?;
    let submitted = Instant::now();
    let task = tokio::spawn(drive(
        run.chaos.custody(),
        w.id().to_string(),
        w.signed.clone(),
        Until::Final,
        run.settings.request_deadline + Duration::from_secs(30),
    ));
    let paused = run
        .chaos
        .liar(&target)?
        .wait_for("held round 2", Duration::from_secs(20), is_paused(w.id()))
        .await;
    if let Err(e) = paused {
        run.fail(format!(
            "the coordinator never sent round 2 of {} to {target}: {e}",
            w.id()
        ));
    } else {
        run.step(format!(
            "round 2 of {} held at {target} ({point:?}); kill -9 the coordinator",
            w.id()
        ));
        run.chaos.kill9(COORDINATOR_ID).await?;
        run.chaos.liar(&target)?.resume().await?;
        if point == PausePoint::BeforeSign {
            let answer = run
                .chaos
                .liar(&target)?
                .wait_for(
                    "round 2 answer",
                    Duration::from_secs(30),
                    is_forwarded(w.id()),
                )
                .await?;
            if let LiarEvent::SignForwarded { code, .. } = answer {
                run.step(format!(
                    "{target} answered the dead coordinator's round 2: {code}"
                ));
            }
        }
        run.chaos.restart(COORDINATOR_ID).await?;
        run.step("coordinator restarted from its data directory");
    }
    let driven = task
        .await
        .map_err(|e| SimError::Setup(format!("request task: {e}")))?;
    run.account(&driven, submitted, None);
    if let Some(first) = driven.last().filter(|_| driven.signed()).cloned() {
        // Idempotent: the same request again returns the same outcome.
        // (A different signature is a violation the one-digest checker reports.)
        let mut custody = run.chaos.custody();
        let mut same = 0;
        for _ in 0..2 {
            match custody.submit_withdrawal(w.signed.clone()).await {
                Ok(again) => {
                    let again = again.into_inner();
                    if again.signature == first.signature {
                        same += 1;
                    }
                    run.record.statuses.push(again);
                }
                Err(e) => run.fail(format!("resubmitting {}: {}", w.id(), e.message())),
            }
        }
        run.step(format!(
            "resubmitted {} twice: {same} of 2 returned the same signature",
            w.id()
        ));
    }
    run.sign_valid(run.settings.requests.saturating_sub(1))
        .await?;
    Ok(())
}
