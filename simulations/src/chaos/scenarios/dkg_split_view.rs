//! One recipient is shown an altered DKG round-1 package or echo: the ceremony
//! aborts naming the sender, nothing half-made is kept, and a clean ceremony
//! then succeeds (K1).

use std::time::Duration;

use rand::seq::SliceRandom;

use super::run::{all_nodes, Run};
use super::T;
use crate::chaos::checks::Violation;
use crate::chaos::harness::GROUP;
use crate::chaos::liar::{LiarEvent, Lie, PausePoint};
use crate::SimError;

/// Runs the scenario on a fresh cluster.
pub(super) async fn run(run: &mut Run) -> Result<(), SimError> {
    let all = all_nodes(run);
    let recipient = run.pick_one("recipient", &all)?;
    let others: Vec<String> = all.iter().filter(|n| **n != recipient).cloned().collect();
    let sender = run.pick_one("sender", &others)?;
    let lie = *[Lie::DkgRound1, Lie::DkgEcho]
        .choose(&mut run.rng("dkg-lie"))
        .unwrap_or(&Lie::DkgRound1);
    run.chaos
        .start_liar(&recipient, lie, PausePoint::None, Some(&sender))
        .await?;
    run.chaos
        .wait_reachable(std::slice::from_ref(&recipient), Duration::from_secs(30))
        .await?;
    let what = match lie {
        Lie::DkgRound1 => "round-1 package",
        Lie::DkgEcho => "echo",
        _ => "encrypted round-2 share",
    };
    run.step(format!(
        "{recipient} will see an altered copy of {sender}'s {what} during the DKG"
    ));
    match run.chaos.try_create_group(T as u32, &all).await? {
        Ok(group) => run.record.scenario_violations.push(Violation::new(
            "K1 split-view-aborts",
            format!(
                "the ceremony completed (key {}) although {recipient} saw an altered message from {sender}",
                hex::encode(group.group_public_key)
            ),
        )),
        Err(status) => {
            run.step(format!("ceremony aborted: {}", status.message()));
            run.metrics.refused += 1;
            run.record
                .dkg_aborts
                .push((sender.clone(), status.message().to_string()));
        }
    }
    let tampered = run
        .chaos
        .liar(&recipient)?
        .events()
        .iter()
        .any(|e| matches!(e, LiarEvent::DkgTampered { sender: s, .. } if *s == sender));
    if !tampered {
        run.fail(format!(
            "the liar in front of {recipient} never saw a message from {sender} to alter"
        ));
    }
    // Nothing half-made: no group at the coordinator, none on any node.
    if run
        .chaos
        .key_groups()
        .await?
        .iter()
        .any(|g| g.name == GROUP)
    {
        run.record.scenario_violations.push(Violation::new(
            "K1 split-view-aborts",
            format!("the coordinator keeps {GROUP} after the aborted ceremony"),
        ));
    }
    for id in &all {
        let status = run.chaos.node_status(id).await;
        let held = status
            .ok()
            .and_then(|s| s.key_groups.into_iter().find(|g| g.name == GROUP));
        match held {
            Some(g) if g.active => run.record.scenario_violations.push(Violation::new(
                "K1 split-view-aborts",
                format!("{id} holds an active {GROUP} after the aborted ceremony"),
            )),
            // Unusable (nodes sign nothing for an inactive group) but it blocks the name.
            Some(_) => run.fail(format!(
                "{id} keeps an inactive {GROUP} after the aborted ceremony; a new ceremony under that name will be refused"
            )),
            None => {}
        }
    }
    run.chaos.stop_liar(&recipient).await?;
    run.chaos
        .wait_reachable(std::slice::from_ref(&recipient), Duration::from_secs(30))
        .await?;
    run.step("liar removed; a clean ceremony must now succeed");
    run.create_group(T, &all).await?;
    run.sign_valid(run.settings.requests).await?;
    Ok(())
}
