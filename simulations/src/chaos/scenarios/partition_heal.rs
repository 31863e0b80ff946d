//! Partition a minority away (signing goes on), then a majority, blackholed or
//! one way (nothing signs, "below threshold" within 5 s), then heal: the held
//! request signs, one digest per request (F2).

use std::time::Duration;

use permafrost_proto as pb;
use rand::Rng;
use tokio::time::Instant;

use super::run::{all_nodes, ms, Run};
use super::{BELOW_THRESHOLD_TARGET, T};
use crate::chaos::proxy::{Direction, LinkFaults, Partition};
use crate::chaos::workload::{drive, Until};
use crate::SimError;

/// Runs the scenario on a fresh cluster.
pub(super) async fn run(run: &mut Run) -> Result<(), SimError> {
    let all = all_nodes(run);
    run.create_group(T, &all).await?;
    let blackhole = LinkFaults {
        partition: Partition::Blackhole,
        ..LinkFaults::healthy()
    };
    // The coordinator keeps t members: signing goes on.
    let minority = run.pick("minority", all.len() - T, &all);
    run.step(format!(
        "partition (blackhole) {} away",
        minority.join(", ")
    ));
    for m in &minority {
        run.chaos.set_faults(m, blackhole.clone())?;
    }
    let first = run.settings.requests.div_ceil(2);
    run.sign_valid(first).await?;
    run.chaos.heal_all();
    run.chaos
        .wait_reachable(&all, Duration::from_secs(30))
        .await?;

    // The coordinator is left with t - 1: nothing signs until the partition heals.
    let cut = run.pick("majority", all.len() - T + 1, &all);
    let faults = match run.rng("partition-kind").gen_range(0..3) {
        0 => blackhole,
        1 => LinkFaults {
            stalled: Some(Direction::ToCoordinator),
            ..LinkFaults::healthy()
        },
        _ => LinkFaults {
            stalled: Some(Direction::ToNode),
            ..LinkFaults::healthy()
        },
    };
    let kind = match (faults.partition, faults.stalled) {
        (Partition::Blackhole, _) => "blackhole",
        (_, Some(Direction::ToCoordinator)) => "one-way: answers never arrive",
        _ => "one-way: requests never arrive",
    };
    run.step(format!("partition ({kind}) {} away", cut.join(", ")));
    for m in &cut {
        run.chaos.set_faults(m, faults.clone())?;
    }
    let w = run.new_withdrawal()?;
    let pending = drive(
        run.chaos.custody(),
        w.id().to_string(),
        w.signed.clone(),
        Until::BelowThreshold,
        Duration::from_secs(20),
    )
    .await;
    run.record.statuses.extend(pending.statuses.iter().cloned());
    match pending.below_threshold_after {
        Some(after) => {
            run.metrics.below_threshold_ms.push(ms(after));
            run.step(format!("\"below threshold\" after {after:.2?}"));
            if after > BELOW_THRESHOLD_TARGET {
                run.fail(format!(
                    "\"below threshold\" took {after:.2?} with {kind} partition of {} (target {BELOW_THRESHOLD_TARGET:?})",
                    cut.join(", ")
                ));
            }
        }
        None => run.fail(format!(
            "no \"below threshold\" answer while partitioned: {}",
            pending.describe()
        )),
    }
    // Hold the partition: the minority side must not sign.
    tokio::time::sleep(Duration::from_secs(2)).await;
    if let Ok(s) = run
        .chaos
        .custody()
        .get_withdrawal(pb::GetWithdrawalRequest {
            request_id: w.id().to_string(),
        })
        .await
    {
        let s = s.into_inner();
        if s.state == pb::WithdrawalState::Signed as i32 {
            run.fail(format!(
                "{} was signed while only t - 1 members were reachable",
                w.id()
            ));
        }
        run.record.statuses.push(s);
    }
    run.chaos.heal_all();
    let healed = Instant::now();
    run.step("partition healed");
    let resumed = Instant::now();
    let done = drive(
        run.chaos.custody(),
        w.id().to_string(),
        w.signed.clone(),
        Until::Final,
        run.settings.request_deadline,
    )
    .await;
    run.account(&done, resumed, Some(healed));
    run.sign_valid(run.settings.requests.saturating_sub(first + 1))
        .await?;
    Ok(())
}
