//! n − t members of a 3-of-5 group answer round 1 and then never answer
//! round 2 (silent after commit): every request still signs with the t
//! honest members left, and nobody is named a culprit, since a silent signer
//! sent no invalid share to name it by (F1 liveness, C1, X2: blame needs evidence).

use super::run::{all_nodes, Run};
use super::T;
use crate::chaos::harness::LiarSpec;
use crate::chaos::liar::{LiarEvent, Lie};
use crate::SimError;

/// Runs the scenario on a fresh cluster.
pub(super) async fn run(run: &mut Run) -> Result<(), SimError> {
    let all = all_nodes(run);
    run.create_group(T, &all).await?;
    let silent = run.pick_in_distinct_regions("silent", all.len() - T);
    run.step(format!(
        "{} answer round 1, then stay silent in round 2 (n - t = {})",
        silent.join(", "),
        silent.len()
    ));
    run.start_liars(&silent, &LiarSpec::new(Lie::SilentAfterCommit))
        .await?;
    // No liar_now: a silent signer is no culprit, so naming anyone is a violation (inv4).
    run.sign_valid(run.settings.requests).await?;
    let held: usize = run
        .chaos
        .liar_events()
        .iter()
        .filter(|(_, e)| {
            matches!(
                e,
                LiarEvent::Lied {
                    lie: Lie::SilentAfterCommit,
                    ..
                }
            )
        })
        .count();
    run.step(format!("round 2 left unanswered {held} time(s)"));
    if held == 0 {
        run.fail("the coordinator never chose a silent signer, so nothing was tested");
    }
    for id in &silent {
        run.chaos.stop_liar(id).await?;
    }
    Ok(())
}
