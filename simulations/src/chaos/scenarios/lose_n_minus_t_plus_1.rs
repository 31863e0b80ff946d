//! Kill -9 n − t + 1 members: the coordinator answers "below threshold" within
//! 5 s, nothing signs with t − 1 alive, and the request signs once one returns
//! (I1 fewer than t shares cannot sign, S1).

use std::time::Duration;

use tokio::time::Instant;

use super::run::{all_nodes, ms, Run};
use super::{BELOW_THRESHOLD_TARGET, T};
use crate::chaos::workload::{drive, Until};
use crate::SimError;

/// Runs the scenario on a fresh cluster.
pub(super) async fn run(run: &mut Run) -> Result<(), SimError> {
    let all = all_nodes(run);
    run.create_group(T, &all).await?;
    let victims = run.pick("victims", all.len() - T + 1, &all);
    let returning = run.pick_one("returning", &victims)?;
    run.step(format!(
        "kill -9 {} (n - t + 1 = {}); {returning} will return",
        victims.join(", "),
        victims.len()
    ));
    for v in &victims {
        run.chaos.kill9(v).await?;
    }
    let w = run.new_withdrawal()?;
    let first = drive(
        run.chaos.custody(),
        w.id().to_string(),
        w.signed.clone(),
        Until::BelowThreshold,
        Duration::from_secs(15),
    )
    .await;
    run.record.statuses.extend(first.statuses.iter().cloned());
    match first.below_threshold_after {
        Some(after) => {
            run.metrics.below_threshold_ms.push(ms(after));
            let detail = first.last().map(|s| s.detail.clone()).unwrap_or_default();
            run.step(format!("answered in {after:.2?}: {detail:?}"));
            if after > BELOW_THRESHOLD_TARGET {
                run.fail(format!(
                    "\"below threshold\" took {after:.2?} (target {BELOW_THRESHOLD_TARGET:?})"
                ));
            }
        }
        None => run.fail(format!(
            "no \"below threshold\" answer within 15 s: {}",
            first.describe()
        )),
    }
    if first.signed() {
        run.fail(format!(
            "{} was signed with only t - 1 members alive",
            w.id()
        ));
    }
    run.chaos.restart(&returning).await?;
    let back = Instant::now();
    run.step(format!("{returning} restarted; exactly t members are up"));
    let resumed = Instant::now();
    let second = drive(
        run.chaos.custody(),
        w.id().to_string(),
        w.signed.clone(),
        Until::Final,
        run.settings.request_deadline,
    )
    .await;
    run.account(&second, resumed, Some(back));
    run.sign_valid(run.settings.requests.saturating_sub(1))
        .await?;
    for v in victims.iter().filter(|v| **v != returning) {
        run.chaos.restart(v).await?;
    }
    Ok(())
}
