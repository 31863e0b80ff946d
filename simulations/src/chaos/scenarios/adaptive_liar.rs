//! An adaptive liar: honest in round 1 and to every probe, so the coordinator
//! keeps choosing it, and in round 2 of each withdrawal it signs honestly,
//! sends an invalid share or stays silent, chosen per session from the seed.
//! Every request signs; it is named exactly for the sessions it sent a bad
//! share in, never for the ones it signed honestly or stayed silent in
//! (C1, F1, X2: blame needs evidence).

use std::collections::BTreeSet;
use std::time::Duration;

use super::run::{all_nodes, Run};
use super::T;
use crate::chaos::checks::{Violation, CULPRIT};
use crate::chaos::harness::LiarSpec;
use crate::chaos::liar::{adaptive_choice, LiarEvent, Lie};
use crate::chaos::seed;
use crate::SimError;

/// Runs the scenario on a fresh cluster.
pub(super) async fn run(run: &mut Run) -> Result<(), SimError> {
    let all = all_nodes(run);
    run.create_group(T, &all).await?;
    let liar = run.pick_one("liar", &all)?;
    run.start_liars(std::slice::from_ref(&liar), &LiarSpec::new(Lie::Adaptive))
        .await?;
    run.liar_now = Some(liar.clone());
    let liar_seed = seed::derive(run.seed, &format!("liar/{liar}"));
    let mut shown = BTreeSet::new();
    // Requests one at a time, so each session's choice is known; up to twice
    // as many as asked for until it has shown all three behaviours.
    let (wanted, most) = (
        run.settings.requests.max(2),
        run.settings.requests.max(2) * 2,
    );
    let mut sent = 0;
    while sent < most && (sent < wanted || shown.len() < 3) {
        sent += 1;
        let Some(d) = run.sign_valid(1).await?.pop() else {
            break;
        };
        let chosen_for = d.last().is_some_and(|s| s.signers.contains(&liar))
            || run.chaos.liar_events().iter().any(|(n, e)| {
                *n == liar && matches!(e, LiarEvent::Lied { request, .. } if *request == d.id)
            });
        if chosen_for {
            let lie = adaptive_choice(liar_seed, &d.id);
            run.step(format!("{liar} was chosen for {} and chose {lie:?}", d.id));
            shown.insert(format!("{lie:?}"));
        }
        for e in run.chaos.exclusions().await? {
            run.record
                .exclusions
                .push((e.node_id.clone(), e.request_id.clone()));
            // Back in the group, so the next session can choose it again.
            run.chaos.clear_exclusion(&e.node_id).await?;
        }
        // Let a probe round refresh the latencies the coordinator picks by.
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    run.liar_now = None;
    run.step(format!(
        "behaviours shown by {liar}: {}",
        shown.iter().cloned().collect::<Vec<_>>().join(", ")
    ));
    if shown.is_empty() {
        run.fail(format!(
            "the coordinator never chose {liar}, so it never adapted"
        ));
    }
    // inv4 checks every bad share was named; here: named only for those.
    let events = run.chaos.liar_events();
    let bad_share = |request: &str| {
        events.iter().any(|(n, e)| {
            *n == liar
                && matches!(e, LiarEvent::Lied { lie: Lie::BadShare, request: r } if r == request)
        })
    };
    let named: BTreeSet<(String, String)> = run
        .record
        .statuses
        .iter()
        .flat_map(|s| s.culprits.iter().map(|c| (c.clone(), s.request_id.clone())))
        .chain(run.record.exclusions.iter().cloned())
        .collect();
    for (node, request) in named {
        if node == liar && !bad_share(&request) {
            run.record.scenario_violations.push(Violation::new(
                CULPRIT,
                format!("{liar} was named for {request}, where it sent no invalid share"),
            ));
        }
    }
    run.chaos.stop_liar(&liar).await?;
    Ok(())
}
