//! `permafrost-sim demo`: a whole cluster from nothing, two key ceremonies, a
//! warm withdrawal, a refusal by policy, and a cold withdrawal with two
//! approvals and a time-lock, each signature verified locally; then everything
//! is torn down.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use permafrost_core::withdrawal::WithdrawalRequest;
use permafrost_core::{unix_now, GroupName, RequestId, Tier};
use permafrost_proto as pb;
use permafrostctl::client::{self, KeyGroupSummary};
use permafrostctl::{approval, keys, CtlError};
use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::cluster::{
    Binaries, LocalCluster, APPROVERS, COLD_TIME_LOCK_SECS, CUSTODY_ID, WARM_PER_REQUEST_MAX_SATS,
    WARM_WALLET_ADDRESS,
};
use crate::progress::Progress;
use crate::SimError;

/// Where the demo withdrawal sends 0.5 BTC (a well-known example address).
pub const DEMO_DESTINATION: &str = "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq";
/// 0.5 BTC in satoshis.
pub const DEMO_AMOUNT_SATS: u128 = 50_000_000;
/// 2 BTC in satoshis, moved from cold storage to the warm wallet.
pub const COLD_AMOUNT_SATS: u128 = 200_000_000;
/// How long the demo waits for the cluster to come up.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a withdrawal may take to sign once nothing holds it (beyond any time-lock).
const SIGN_TIMEOUT: Duration = Duration::from_secs(30);
/// Lifetime of the demo's requests.
const REQUEST_LIFETIME_SECS: u64 = 600;
/// Lifetime of the demo's approvals.
const APPROVAL_LIFETIME_SECS: u64 = 600;

/// Options of `demo`.
#[derive(Clone, Debug, Default)]
pub struct DemoOptions {
    /// Write the machine-readable report here.
    pub json: Option<PathBuf>,
    /// Build the cluster here instead of a temporary directory.
    pub dir: Option<PathBuf>,
    /// Keep the temporary directory (configs, logs, data) afterwards.
    pub keep: bool,
    /// Where the daemon binaries are (default: next to this executable).
    pub bin_dir: Option<PathBuf>,
}

/// The `--json` report.
#[derive(Clone, Debug, Serialize)]
pub struct DemoReport {
    /// Key groups created.
    pub key_groups: Vec<KeyGroupSummary>,
    /// Signatures produced.
    pub signatures: Vec<SignatureSummary>,
    /// What each withdrawal was and how the cluster answered, for the printed
    /// summary only: the JSON keeps exactly `key_groups` and `signatures`.
    #[serde(skip)]
    pub narrative: Vec<String>,
}

/// One signature, as the JSON report states it.
#[derive(Clone, Debug, Serialize)]
pub struct SignatureSummary {
    /// Withdrawal request id.
    pub request_id: String,
    /// Key group that signed.
    pub key_group: String,
    /// Hex of the exact bytes FROST signed (the request payload).
    pub message: String,
    /// 65-byte FROST(secp256k1, SHA-256) signature, hex.
    pub signature: String,
    /// Nodes whose shares made the signature.
    pub signers: Vec<String>,
}

/// Runs the demo; every daemon is stopped before this returns, whatever happens.
pub async fn demo(opts: DemoOptions) -> Result<DemoReport, SimError> {
    let bins = Binaries::locate(opts.bin_dir.as_deref())?;
    let progress = Progress::new();
    let (dir, temp) = match &opts.dir {
        Some(d) => (d.clone(), None),
        None => {
            let t = tempfile::Builder::new()
                .prefix("permafrost-demo-")
                .tempdir()
                .map_err(|e| {
                    SimError::Setup(format!("cannot create a temporary directory: {e}"))
                })?;
            (t.path().to_path_buf(), Some(t))
        }
    };
    println!("Permafrost local demo: 5 signer nodes in 3 regions and a coordinator, each its own OS process,");
    println!(
        "talking mTLS gRPC on 127.0.0.1. Directory: {}",
        dir.display()
    );
    println!(
        "note: node secrets are sealed under a random per-node passphrase with kdf = \"fast-insecure\" \
         (demo only; production uses argon2id with 64 MiB)"
    );
    // The cluster lives inside this future: when it ends or is dropped (Ctrl-C), the daemons stop.
    let outcome = crate::interruptible(run(&dir, &bins, &progress)).await;
    let keep = opts.keep || matches!(&outcome, Err(e) if !matches!(e, SimError::Interrupted));
    if let Some(t) = temp {
        if keep {
            let kept = t.keep();
            println!("kept {} (configs, data and logs)", kept.display());
        }
    }
    let report = outcome?;
    if let Some(path) = &opts.json {
        let json = serde_json::to_string_pretty(&report)
            .map_err(|e| SimError::Setup(format!("cannot encode the report: {e}")))?;
        permafrostctl::files::write_public(path, format!("{json}\n").as_bytes())?;
        println!("report written to {}", path.display());
    }
    println!("demo finished in {:.2}s", progress.elapsed().as_secs_f64());
    Ok(report)
}

async fn run(dir: &Path, bins: &Binaries, progress: &Progress) -> Result<DemoReport, SimError> {
    let mut cluster = LocalCluster::create(dir, bins, progress).await?;
    cluster.wait_ready(READY_TIMEOUT, progress).await?;
    let groups = cluster.create_groups(progress).await?;
    let find = |name: &str| {
        groups
            .iter()
            .find(|g| g.name == name)
            .ok_or_else(|| SimError::Verification(format!("{name} was not created")))
    };
    let warm = sign_warm_withdrawal(&cluster, find("warm-1")?, progress).await?;
    let refusal = show_refusal(&cluster, find("warm-1")?, progress).await?;
    let cold = sign_cold_withdrawal(&cluster, find("cold-1")?, progress).await?;
    cluster.stop();
    progress.step("all daemons stopped");

    let report = DemoReport {
        key_groups: groups.iter().map(KeyGroupSummary::from_wire).collect(),
        signatures: vec![warm.signature, cold.signature],
        narrative: vec![warm.what, refusal, cold.what],
    };
    print_summary(&report);
    Ok(report)
}

/// A signature and, for people, what it was for.
struct Signed {
    signature: SignatureSummary,
    what: String,
}

/// A request id for the demo, `demo-` and 12 hex digits.
fn demo_request_id() -> Result<RequestId, SimError> {
    let mut id = [0u8; 6];
    rand::rngs::OsRng.fill_bytes(&mut id);
    RequestId::new(format!("demo-{}", hex::encode(id))).map_err(|e| SimError::Setup(e.to_string()))
}

/// A request from `group` as the custody service would build it. The payload
/// stands in for a transaction sighash: 32 bytes the chain would have us sign.
fn demo_request(
    group: &pb::KeyGroup,
    tier: Tier,
    amount: u128,
    destination: &str,
) -> Result<WithdrawalRequest, SimError> {
    let request_id = demo_request_id()?;
    let payload = Sha256::new()
        .chain_update(b"permafrost demo sighash/")
        .chain_update(request_id.as_str())
        .finalize()
        .to_vec();
    let now = unix_now();
    Ok(WithdrawalRequest {
        request_id,
        key_group: GroupName::new(group.name.clone())
            .map_err(|e| SimError::Setup(e.to_string()))?,
        tier,
        asset: "BTC".into(),
        amount,
        destination: destination.into(),
        payload,
        created_at: now,
        expires_at: now + REQUEST_LIFETIME_SECS,
        requested_by: CUSTODY_ID.into(),
    })
}

/// `sats` as BTC for people, e.g. `0.5 BTC`.
fn btc(sats: u128) -> String {
    let whole = sats / 100_000_000;
    let frac = format!("{:08}", sats % 100_000_000);
    let frac = frac.trim_end_matches('0');
    if frac.is_empty() {
        format!("{whole} BTC")
    } else {
        format!("{whole}.{frac} BTC")
    }
}

/// Polls `GetWithdrawal` until the request leaves PENDING or `timeout` passes.
async fn wait_until_settled(
    cluster: &LocalCluster,
    mut status: pb::WithdrawalStatus,
    timeout: Duration,
) -> Result<pb::WithdrawalStatus, SimError> {
    let deadline = Instant::now() + timeout;
    while status.state == pb::WithdrawalState::Pending as i32 {
        if Instant::now() >= deadline {
            return Err(SimError::Timeout(format!(
                "withdrawal {} still pending after {timeout:?}: {} (approvals missing: {}, time-locked until: {})",
                status.request_id,
                status.detail,
                status.approvals_missing,
                status.time_locked_until
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        status = client::get_withdrawal(&cluster.custody, &status.request_id).await?;
    }
    Ok(status)
}

/// Checks a settled status without trusting the coordinator: signed, the
/// expected message and group key, a valid signature, `t` members as signers.
fn check_signed(
    status: pb::WithdrawalStatus,
    group: &pb::KeyGroup,
    payload: &[u8],
) -> Result<SignatureSummary, SimError> {
    let request_id = &status.request_id;
    if status.state != pb::WithdrawalState::Signed as i32 {
        return Err(SimError::Verification(format!(
            "withdrawal {request_id} ended {} after {} attempt(s): {}",
            client::state_name(status.state),
            status.attempts,
            status.detail
        )));
    }
    if status.group_public_key != group.group_public_key {
        return Err(SimError::Verification(format!(
            "withdrawal {request_id} reports group key {}, but {} was created with {}",
            hex::encode(&status.group_public_key),
            group.name,
            hex::encode(&group.group_public_key)
        )));
    }
    client::verify_signed(&status, payload)?;
    client::verify_signature(&group.group_public_key, payload, &status.signature)
        .map_err(|e| SimError::Verification(format!("withdrawal {request_id}: {e}")))?;
    let threshold = usize::try_from(group.threshold).unwrap_or(usize::MAX);
    if status.signers.len() < threshold || !status.signers.iter().all(|s| group.members.contains(s))
    {
        return Err(SimError::Verification(format!(
            "withdrawal {request_id} names signers [{}], not {} members of {}",
            status.signers.join(", "),
            group.threshold,
            group.name
        )));
    }
    Ok(SignatureSummary {
        request_id: request_id.clone(),
        key_group: group.name.clone(),
        message: hex::encode(payload),
        signature: hex::encode(&status.signature),
        signers: status.signers,
    })
}

/// Signs 0.5 BTC from warm-1 as the custody service (no approvals needed
/// below 1 BTC) and checks the result without trusting the coordinator.
async fn sign_warm_withdrawal(
    cluster: &LocalCluster,
    warm: &pb::KeyGroup,
    progress: &Progress,
) -> Result<Signed, SimError> {
    let request = demo_request(warm, Tier::Warm, DEMO_AMOUNT_SATS, DEMO_DESTINATION)?;
    let request_id = request.request_id.clone();
    let signed = client::sign_withdrawal(&request, &cluster.custody_key)?;
    progress.step(format!(
        "custody service submits withdrawal {request_id}: {} ({DEMO_AMOUNT_SATS} sat) to {DEMO_DESTINATION} from {}",
        btc(DEMO_AMOUNT_SATS),
        warm.name
    ));
    let status = client::submit_withdrawal(&cluster.custody, signed.clone()).await?;
    let status = wait_until_settled(cluster, status, SIGN_TIMEOUT).await?;
    let attempts = status.attempts;
    let summary = check_signed(status, warm, &request.payload)?;
    progress.step(format!(
        "signed by {} in {attempts} attempt(s); signature verified locally with frost-secp256k1 against {}'s group key",
        summary.signers.join(" + "),
        warm.name
    ));
    let again = client::submit_withdrawal(&cluster.custody, signed).await?;
    if hex::encode(&again.signature) != summary.signature {
        return Err(SimError::Verification(format!(
            "resubmitting {request_id} produced a different outcome (at most one signature per request id)"
        )));
    }
    progress.step(
        "resubmitting the same request returns the same signature (one signature per request id)",
    );
    Ok(Signed {
        what: format!(
            "{} from {} to {DEMO_DESTINATION}: within the warm no-approval band, signed automatically",
            btc(DEMO_AMOUNT_SATS),
            warm.name
        ),
        signature: summary,
    })
}

/// Asks warm-1 for more than its per-request limit: the coordinator refuses
/// with the policy's reason (and every node would refuse it on its own).
async fn show_refusal(
    cluster: &LocalCluster,
    warm: &pb::KeyGroup,
    progress: &Progress,
) -> Result<String, SimError> {
    let amount = 5 * WARM_PER_REQUEST_MAX_SATS / 2;
    let request = demo_request(warm, Tier::Warm, amount, DEMO_DESTINATION)?;
    let signed = client::sign_withdrawal(&request, &cluster.custody_key)?;
    progress.step(format!(
        "custody service asks {} for {} (over its per-request limit of {})",
        warm.name,
        btc(amount),
        btc(WARM_PER_REQUEST_MAX_SATS)
    ));
    match client::submit_withdrawal(&cluster.custody, signed).await {
        Err(CtlError::Rpc {
            code: tonic::Code::PermissionDenied,
            message,
            ..
        }) => {
            let reason = message.strip_prefix("refused: ").unwrap_or(&message);
            progress.step(format!("the coordinator refuses it: {reason}"));
            Ok(format!(
                "{} from {} refused: {reason}",
                btc(amount),
                warm.name
            ))
        }
        Err(other) => Err(SimError::Verification(format!(
            "a withdrawal over the warm limit should be refused by policy, but submitting it failed otherwise: {other}"
        ))),
        Ok(status) => Err(SimError::Verification(format!(
            "a withdrawal over the warm limit was accepted ({}: {})",
            client::state_name(status.state),
            status.detail
        ))),
    }
}

/// Moves 2 BTC from cold-1 to the warm wallet: the only allowlisted
/// destination, two approvals by different approvers, and the time-lock.
async fn sign_cold_withdrawal(
    cluster: &LocalCluster,
    cold: &pb::KeyGroup,
    progress: &Progress,
) -> Result<Signed, SimError> {
    let request = demo_request(cold, Tier::Cold, COLD_AMOUNT_SATS, WARM_WALLET_ADDRESS)?;
    let request_id = request.request_id.clone();
    let signed = client::sign_withdrawal(&request, &cluster.custody_key)?;
    progress.step(format!(
        "custody service submits withdrawal {request_id}: {} from {} to the warm wallet {WARM_WALLET_ADDRESS}",
        btc(COLD_AMOUNT_SATS),
        cold.name
    ));
    let status = client::submit_withdrawal(&cluster.custody, signed).await?;
    if status.state != pb::WithdrawalState::Pending as i32 || status.approvals_missing == 0 {
        return Err(SimError::Verification(format!(
            "cold withdrawal {request_id} should wait for approvals, but is {} with {} missing: {}",
            client::state_name(status.state),
            status.approvals_missing,
            status.detail
        )));
    }
    progress.step(format!(
        "pending: {} approval(s) missing, time-locked until {} ({})",
        status.approvals_missing,
        status.time_locked_until,
        client::from_now(status.time_locked_until, unix_now())
    ));
    let approvers = &APPROVERS[..2];
    let mut status = status;
    for approver in approvers {
        // What `permafrostctl approve` does: check the coordinator holds
        // exactly the request under review before signing its digest.
        let current = client::get_withdrawal(&cluster.custody, request_id.as_str()).await?;
        let digest = approval::check_request_matches(request_id.as_str(), &request, &current)?;
        let key = keys::load_key_file(&cluster.approver_key_path(approver))?;
        let expires_at = unix_now() + APPROVAL_LIFETIME_SECS;
        let approval =
            client::sign_approval(request_id.as_str(), &digest, approver, expires_at, &key);
        status = client::submit_approval(&cluster.custody, approval).await?;
        progress.step(format!(
            "{approver} checked the request digest and approved: approvals counted [{}], {} missing",
            status.approvals.join(", "),
            status.approvals_missing
        ));
    }
    if status.state == pb::WithdrawalState::Pending as i32 && status.time_locked_until > 0 {
        progress.step(format!(
            "approvals complete; waiting for the time-lock ({})",
            client::from_now(status.time_locked_until, unix_now())
        ));
    }
    let status = wait_until_settled(
        cluster,
        status,
        SIGN_TIMEOUT + Duration::from_secs(COLD_TIME_LOCK_SECS),
    )
    .await?;
    let attempts = status.attempts;
    let approved_by = status.approvals.clone();
    let summary = check_signed(status, cold, &request.payload)?;
    progress.step(format!(
        "signed by {} in {attempts} attempt(s) after approvals by {}; signature verified locally against {}'s group key",
        summary.signers.join(" + "),
        approved_by.join(" and "),
        cold.name
    ));
    Ok(Signed {
        what: format!(
            "{} from {} to the allowlisted warm wallet: approved by {}, signed after a {COLD_TIME_LOCK_SECS}s time-lock",
            btc(COLD_AMOUNT_SATS),
            cold.name,
            approvers.join(" and ")
        ),
        signature: summary,
    })
}

fn print_summary(report: &DemoReport) {
    println!();
    println!("Key groups");
    for g in &report.key_groups {
        println!(
            "  {:<8} {:<5} {}-of-{}  members {:<16} key {}",
            g.name,
            g.tier,
            g.threshold,
            g.members.len(),
            g.members.join(","),
            g.group_public_key
        );
    }
    println!("Withdrawals");
    for line in &report.narrative {
        println!("  {line}");
    }
    println!("Signatures");
    for s in &report.signatures {
        println!(
            "  {} from {}, signed by {}",
            s.request_id,
            s.key_group,
            s.signers.join(", ")
        );
        println!("    message   {}", s.message);
        println!("    signature {}", s.signature);
    }
    println!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn btc_amounts_read_naturally() {
        assert_eq!(btc(50_000_000), "0.5 BTC");
        assert_eq!(btc(200_000_000), "2 BTC");
        assert_eq!(btc(1), "0.00000001 BTC");
    }

    #[test]
    fn json_report_has_exactly_the_documented_fields() {
        let report = DemoReport {
            key_groups: vec![],
            signatures: vec![SignatureSummary {
                request_id: "r".into(),
                key_group: "g".into(),
                message: "00".into(),
                signature: "11".into(),
                signers: vec!["n1".into()],
            }],
            narrative: vec!["not in the JSON".into()],
        };
        // serde_json's map sorts keys; compare as sets.
        let json = serde_json::to_value(&report).expect("json");
        let keys: std::collections::BTreeSet<&str> = json
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, ["key_groups", "signatures"].into_iter().collect());
        let sig: std::collections::BTreeSet<&str> = json["signatures"][0]
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            sig,
            ["request_id", "key_group", "message", "signature", "signers"]
                .into_iter()
                .collect()
        );
    }
}
