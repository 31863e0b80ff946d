//! A signer restarts (kill -9, start) in the middle of a session, after it
//! released its share and before the share reached the coordinator: the
//! request still signs (with that share or on a fresh subset), the restarted
//! node signs later requests with fresh nonces, nobody is named, and the
//! checkers find no nonce used twice and the velocity counted once
//! (N2, N3, S1).

use std::time::Duration;

use tokio::time::Instant;

use super::run::{is_paused, tap, Run};
use super::T;
use crate::chaos::liar::{LiarEvent, PausePoint};
use crate::chaos::workload::{drive, Until};
use crate::SimError;

/// Runs the scenario on a fresh cluster.
pub(super) async fn run(run: &mut Run) -> Result<(), SimError> {
    let all = run.chaos.node_ids();
    run.create_group(T, &all).await?;
    let target = tap(run, "target", PausePoint::AfterSign).await?;
    let w = run.new_withdrawal()?;
    let submitted = Instant::now();
    let task = tokio::spawn(drive(
        run.chaos.custody(),
        w.id().to_string(),
        w.signed.clone(),
        Until::Final,
        run.settings.request_deadline,
    ));
    let held = run
        .chaos
        .liar(&target)?
        .wait_for("held share", Duration::from_secs(20), is_paused(w.id()))
        .await;
    match held {
        Ok(_) => {
            run.step(format!(
                "{target} released its share for {}; kill -9 and restart {target} before it arrives",
                w.id()
            ));
            run.chaos.kill9(&target).await?;
            run.chaos.restart(&target).await?;
            run.chaos.liar(&target)?.resume().await?;
        }
        Err(e) => run.fail(format!(
            "the coordinator never sent round 2 of {} to {target}: {e}",
            w.id()
        )),
    }
    let driven = task
        .await
        .map_err(|e| SimError::Setup(format!("request task: {e}")))?;
    let with_held_share = driven
        .last()
        .is_some_and(|s| s.attempts <= 1 && s.signers.contains(&target));
    run.step(format!(
        "{} {}",
        w.id(),
        if with_held_share {
            "signed with the share released before the restart"
        } else {
            "signed after a retry"
        }
    ));
    run.account(&driven, submitted, None);
    // The restarted node must take part again, with fresh nonces. Requests
    // in flight when it came back may finish without it (it answered
    // "stale" and others were ready first); the ones after must not leave it
    // out for good.
    let mut signed_again = false;
    for round in 0..4 {
        if round > 0 {
            // A probe round and a bank refill.
            tokio::time::sleep(Duration::from_millis(600)).await;
        }
        let before = run.chaos.liar(&target)?.events().len();
        let count = if round == 0 {
            run.settings.requests.saturating_sub(1).max(1)
        } else {
            1
        };
        let later = run.sign_valid(count).await?;
        signed_again = run.chaos.liar(&target)?.events()[before..].iter().any(|e| {
            matches!(e, LiarEvent::SignForwarded { ok: true, request, .. }
                if later.iter().any(|d| d.id == *request))
        });
        if signed_again {
            break;
        }
    }
    if !signed_again {
        run.fail(format!("{target} released no share after its restart"));
    }
    Ok(())
}
