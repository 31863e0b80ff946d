//! Kill -9 n − t members of a 3-of-5 group: every request still signs
//! (liveness with as many members lost as the group can spare; S1).

use super::run::{all_nodes, Run};
use super::T;
use crate::SimError;

/// Runs the scenario on a fresh cluster.
pub(super) async fn run(run: &mut Run) -> Result<(), SimError> {
    let all = all_nodes(run);
    run.create_group(T, &all).await?;
    let victims = run.pick("victims", all.len() - T, &all);
    run.step(format!(
        "kill -9 {} (n - t = {})",
        victims.join(", "),
        victims.len()
    ));
    for v in &victims {
        run.chaos.kill9(v).await?;
    }
    run.sign_valid(run.settings.requests).await?;
    for v in &victims {
        run.chaos.restart(v).await?;
    }
    Ok(())
}
