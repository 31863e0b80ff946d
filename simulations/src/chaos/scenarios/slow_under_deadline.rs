//! n − t members of a 3-of-5 group answer round 2 correctly but only just
//! under the coordinator's round deadline: every request signs (with the
//! slow shares when they are in time, or without them once the others
//! suffice), and nobody is named a culprit (F1: deadlines, not suspicion; X2).

use std::time::Duration;

use super::run::{all_nodes, Run};
use super::T;
use crate::chaos::harness::LiarSpec;
use crate::chaos::liar::{LiarEvent, Lie};
use crate::SimError;

/// The coordinator's round deadline as the chaos cluster runs it (its default `round_timeout_ms`).
const ROUND_DEADLINE: Duration = Duration::from_millis(5_000);
/// What a slow signer leaves of it: loopback, the proxy and two shared cores fit in this.
const MARGIN: Duration = Duration::from_millis(700);

/// Runs the scenario on a fresh cluster.
pub(super) async fn run(run: &mut Run) -> Result<(), SimError> {
    let all = all_nodes(run);
    run.create_group(T, &all).await?;
    let slow = run.pick_in_distinct_regions("slow", all.len() - T);
    let delay = ROUND_DEADLINE - MARGIN;
    run.step(format!(
        "{} hold every round-2 answer for {delay:?} (deadline {ROUND_DEADLINE:?})",
        slow.join(", ")
    ));
    let mut spec = LiarSpec::new(Lie::SlowSign);
    spec.sign_delay = delay;
    run.start_liars(&slow, &spec).await?;
    let results = run.sign_valid(run.settings.requests).await?;
    let events = run.chaos.liar_events();
    let mut counted = 0;
    for d in &results {
        let Some(status) = d.last() else { continue };
        for s in &slow {
            let was_slow = events.iter().any(|(n, e)| {
                n == s
                    && matches!(e, LiarEvent::Lied { lie: Lie::SlowSign, request } if *request == d.id)
            });
            if was_slow && status.signers.contains(s) {
                counted += 1;
            }
        }
    }
    // With t honest members left, a ROAST-style coordinator need not wait
    // for the slow ones (it starts a session without them once its hedge
    // passes); their shares count when they are in time, and in no case is a
    // slow member named.
    run.step(format!("{counted} slow share(s) went into a signature"));
    for d in &results {
        let Some(status) = d.last() else { continue };
        for s in &slow {
            if status.culprits.contains(s) {
                run.fail(format!(
                    "{s} was named a culprit of {} for answering slowly",
                    d.id
                ));
            }
        }
    }
    for id in &slow {
        run.chaos.stop_liar(id).await?;
    }
    Ok(())
}
