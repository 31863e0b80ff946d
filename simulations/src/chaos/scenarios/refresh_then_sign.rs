//! A share is stolen, then the group refreshes: the key is unchanged, the new
//! shares sign, and the captured share cannot sign with current ones (K6).

use std::collections::BTreeMap;
use std::time::Duration;

use frost_secp256k1::keys::{KeyPackage, PublicKeyPackage};
use frost_secp256k1::{round1, round2, SigningPackage};

use super::run::{all_nodes, Run};
use super::T;
use crate::chaos::checks::Violation;
use crate::SimError;

/// Signs `message` with `packages` locally (both rounds) and aggregates under `pkp`.
fn sign_locally(
    packages: &[&KeyPackage],
    pkp: &PublicKeyPackage,
    message: &[u8],
    rng: &mut rand::rngs::StdRng,
) -> Result<frost_secp256k1::Signature, String> {
    let mut nonces = BTreeMap::new();
    let mut commitments = BTreeMap::new();
    for kp in packages {
        let (n, c) = round1::commit(kp.signing_share(), rng);
        nonces.insert(*kp.identifier(), n);
        commitments.insert(*kp.identifier(), c);
    }
    let package = SigningPackage::new(commitments, message);
    let mut shares = BTreeMap::new();
    for kp in packages {
        let n = nonces
            .get(kp.identifier())
            .ok_or_else(|| "missing nonces".to_string())?;
        let share = round2::sign(&package, n, kp).map_err(|e| format!("round 2: {e}"))?;
        shares.insert(*kp.identifier(), share);
    }
    let signature = frost_secp256k1::aggregate(&package, &shares, pkp)
        .map_err(|e| format!("aggregate: {e}"))?;
    pkp.verifying_key()
        .verify(message, &signature)
        .map_err(|e| format!("verify: {e}"))?;
    Ok(signature)
}

/// Runs the scenario on a fresh cluster.
pub(super) async fn run(run: &mut Run) -> Result<(), SimError> {
    let all = all_nodes(run);
    run.create_group(T, &all).await?;
    let victim = run.pick_one("victim", &all)?;
    run.step(format!(
        "{victim}'s disk and passphrase are stolen while it is down"
    ));
    run.chaos.kill9(&victim).await?;
    let captured = run.chaos.steal_key_package(&victim)?;
    run.chaos.restart(&victim).await?;
    run.chaos
        .wait_reachable(&all, Duration::from_secs(30))
        .await?;
    let refreshed = run.chaos.refresh().await?;
    run.step(format!(
        "refreshed: key {}",
        hex::encode(&refreshed.group_public_key)
    ));
    if Some(&refreshed.group_public_key) != run.record.group_key.as_ref() {
        run.record.scenario_violations.push(Violation::new(
            "K6 refresh-keeps-key",
            "the refresh changed the group key",
        ));
    }
    run.sign_valid(run.settings.requests).await?;

    // Offline: t - 1 current shares plus the captured one must not sign; with the current one they must.
    let others: Vec<String> = all.iter().filter(|n| **n != victim).cloned().collect();
    let helpers = run.pick("helpers", T - 1, &others);
    let mut stopped = vec![victim.clone()];
    stopped.extend(helpers.iter().cloned());
    for s in &stopped {
        run.chaos.kill9(s).await?;
    }
    let current = run.chaos.steal_key_package(&victim)?;
    let helper_packages = helpers
        .iter()
        .map(|h| run.chaos.steal_key_package(h))
        .collect::<Result<Vec<_>, _>>()?;
    let pkp = run.chaos.stored_public_key_package(&victim)?;
    if current.signing_share() == captured.signing_share() {
        run.record.scenario_violations.push(Violation::new(
            "K6 captured-share-useless",
            format!("{victim}'s share did not change in the refresh"),
        ));
    }
    let message = b"permafrost chaos: captured share test";
    let mut rng = run.rng("offline-signing");
    let mut with_current: Vec<&KeyPackage> = vec![&current];
    with_current.extend(helper_packages.iter());
    match sign_locally(&with_current, &pkp, message, &mut rng) {
        Ok(_) => run.step("control: current shares sign offline"),
        Err(e) => run.fail(format!(
            "control failed, current shares did not sign offline: {e}"
        )),
    }
    let mut with_captured: Vec<&KeyPackage> = vec![&captured];
    with_captured.extend(helper_packages.iter());
    match sign_locally(&with_captured, &pkp, message, &mut rng) {
        Ok(sig) => run.record.scenario_violations.push(Violation::new(
            "K6 captured-share-useless",
            format!(
                "{victim}'s pre-refresh share with {} current shares produced a valid signature {}",
                helpers.len(),
                hex::encode(sig.serialize().unwrap_or_default())
            ),
        )),
        Err(e) => {
            run.metrics.refused += 1;
            run.step(format!(
                "captured share with current ones: no signature ({e})"
            ));
        }
    }
    for s in &stopped {
        run.chaos.restart(s).await?;
    }
    Ok(())
}
