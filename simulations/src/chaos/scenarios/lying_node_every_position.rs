//! A lying node (bad share or bad commitments) in every member position in
//! turn: the request still signs and the culprit named is always the liar (C1).

use std::time::Duration;

use rand::seq::SliceRandom;

use super::run::{all_nodes, Run};
use super::T;
use crate::chaos::liar::{LiarEvent, Lie, PausePoint};
use crate::chaos::workload::Driven;
use crate::SimError;

/// Runs the scenario on a fresh cluster.
pub(super) async fn run(run: &mut Run) -> Result<(), SimError> {
    let all = all_nodes(run);
    run.create_group(T, &all).await?;
    let mut positions = all.clone();
    positions.shuffle(&mut run.rng("positions"));
    for position in positions {
        let lie = *[Lie::BadShare, Lie::BadCommitments]
            .choose(&mut run.rng(&format!("lie/{position}")))
            .unwrap_or(&Lie::BadShare);
        run.chaos
            .start_liar(&position, lie, PausePoint::None, None)
            .await?;
        if lie == Lie::BadCommitments {
            // The coordinator may still hold commitments it banked from this
            // node before the liar came in (honest ones): a restart voids
            // them, so every commitment it uses from here on passed the liar.
            run.chaos.kill9(&position).await?;
            run.chaos.restart(&position).await?;
        }
        run.chaos
            .wait_reachable(std::slice::from_ref(&position), Duration::from_secs(30))
            .await?;
        // After the liar is in: its first probes (new TLS sessions) are slow.
        run.bias_towards(&position).await?;
        run.liar_now = Some(position.clone());
        let mut lied = false;
        for attempt in 0..3 {
            if attempt > 0 {
                // Let a probe round refresh the latencies the coordinator picks by.
                tokio::time::sleep(Duration::from_millis(600)).await;
            }
            let results = run.sign_valid(1).await?;
            let Some(id) = results.first().map(|d| d.id.clone()) else {
                break;
            };
            lied = run
                .chaos
                .liar(&position)?
                .events()
                .iter()
                .any(|e| matches!(e, LiarEvent::Lied { request, .. } if *request == id));
            if lied {
                let culprits = results
                    .first()
                    .and_then(Driven::last)
                    .map(|s| s.culprits.join(","))
                    .unwrap_or_default();
                run.step(format!(
                    "{position} lied ({lie:?}) on {id}; named: [{culprits}]"
                ));
                break;
            }
        }
        run.liar_now = None;
        if !lied {
            run.fail(format!(
                "the coordinator never let {position} sign, so it never lied"
            ));
        }
        for e in run.chaos.exclusions().await? {
            run.record
                .exclusions
                .push((e.node_id.clone(), e.request_id.clone()));
            run.chaos.clear_exclusion(&e.node_id).await?;
        }
        run.chaos.stop_liar(&position).await?;
        run.chaos.heal_all();
        run.chaos
            .wait_reachable(std::slice::from_ref(&position), Duration::from_secs(30))
            .await?;
    }
    Ok(())
}
