//! A member is lost for good and its share repaired onto a spare: the repaired
//! share signs, and the revoked member is never used again when it returns
//! (no THREATS row of its own: the liveness side of the repair ceremony X6 and X7 guard).

use std::time::Duration;

use super::run::Run;
use crate::chaos::checks::Violation;
use crate::SimError;

/// Runs the scenario on a fresh cluster.
pub(super) async fn run(run: &mut Run) -> Result<(), SimError> {
    // One member per region, two spares.
    let members = vec!["n1".to_string(), "n3".to_string(), "n5".to_string()];
    let spares = vec!["n2".to_string(), "n4".to_string()];
    run.create_group(2, &members).await?;
    let lost = run.pick_one("lost", &members)?;
    let replacement = run.pick_one("replacement", &spares)?;
    run.step(format!("kill -9 {lost}: lost for good"));
    run.chaos.kill9(&lost).await?;
    run.chaos
        .wait_unreachable(std::slice::from_ref(&lost), Duration::from_secs(15))
        .await?;
    let repaired = run.chaos.repair(&lost, &replacement).await?;
    run.step(format!(
        "{lost}'s share repaired onto {replacement}: members now {}",
        repaired.members.join(",")
    ));
    if !repaired.members.contains(&replacement) || repaired.members.contains(&lost) {
        run.fail(format!(
            "after the repair the members are {}, expected {replacement} in place of {lost}",
            repaired.members.join(",")
        ));
    }
    let first = run.settings.requests.div_ceil(2);
    let mut results = run.sign_valid(first).await?;
    // Leave only the replacement and one old member: the repaired share must sign.
    let old: Vec<String> = members.iter().filter(|m| **m != lost).cloned().collect();
    let down = run.pick_one("second-loss", &old)?;
    run.step(format!(
        "kill -9 {down}: only {replacement} and one other member remain"
    ));
    run.chaos.kill9(&down).await?;
    let forced = run
        .sign_valid(run.settings.requests.saturating_sub(first).max(1))
        .await?;
    for d in forced.iter().filter(|d| d.signed()) {
        let signers = d.last().map(|s| s.signers.clone()).unwrap_or_default();
        if !signers.contains(&replacement) {
            run.fail(format!(
                "{} was signed by {} without the replacement {replacement}",
                d.id,
                signers.join(",")
            ));
        }
    }
    results.extend(forced);
    run.chaos.restart(&down).await?;
    // The lost node comes back: it is revoked and never used again.
    run.chaos.restart(&lost).await?;
    results.extend(run.sign_valid(1).await?);
    for d in &results {
        if let Some(s) = d.last() {
            if s.signers.contains(&lost) {
                run.record.scenario_violations.push(Violation::new(
                    "repair revoked-member-unused",
                    format!("{} was signed with the revoked member {lost}", d.id),
                ));
            }
        }
    }
    Ok(())
}
