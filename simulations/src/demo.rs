//! `permafrost-sim demo`: a whole cluster from nothing, two taproot key
//! groups on regtest made by DKG, a synthetic funding transaction (built
//! here, never broadcast), a warm payment with change, three refusals (over
//! the limit, "change" that pays a stranger, a fee over the cap), and a cold
//! → warm transfer with two approvals and a time-lock. Every transaction is
//! checked locally: each input's sighash recomputed from the demo's own
//! PSBT and each BIP340 signature verified under the group's output key.
//! Then everything is torn down.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use permafrost_core::taproot::decode_withdrawal;
use permafrost_core::{unix_now, Tier};
use permafrost_proto as pb;
use permafrostctl::client::{self, KeyGroupSummary};
use permafrostctl::{approval, keys, CtlError};
use serde::Serialize;

use crate::cluster::{
    Binaries, LocalCluster, APPROVERS, COLD_TIME_LOCK_SECS, WARM_MAX_FEE_RATE,
    WARM_PER_REQUEST_MAX_SATS,
};
use crate::progress::Progress;
use crate::SimError;

mod transactions;
use transactions::{build, check_signed, customer_address, demo_request, fund, Funding, Wallet};

/// A label for where message-scheme withdrawals (bench, chaos) send funds.
pub const DEMO_DESTINATION: &str = "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq";
/// What the warm payment sends: more than either warm coin, so it spends both
/// (two inputs, two FROST sessions), and under 1 BTC with the fee, so it
/// needs no approval.
const WARM_PAYMENT_SATS: u64 = 90_000_000;
/// Fee rate of the demo's transactions, sat/vB.
const DEMO_FEE_RATE: u64 = 5;
/// 0.5 BTC in satoshis.
pub const DEMO_AMOUNT_SATS: u128 = 50_000_000;
/// 2 BTC in satoshis, moved from cold storage to the warm wallet.
pub const COLD_AMOUNT_SATS: u128 = 200_000_000;
/// How long the demo waits for the cluster to come up.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a withdrawal may take to sign once nothing holds it (beyond any time-lock).
const SIGN_TIMEOUT: Duration = Duration::from_secs(30);
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
    /// Signatures produced: for a taproot group one per transaction input
    /// (the input's BIP341 sighash and its 64-byte BIP340 signature).
    pub signatures: Vec<SignatureSummary>,
    /// Every signed transaction, with the outputs it spends, so anyone can
    /// run Bitcoin's consensus rules on it.
    pub transactions: Vec<TransactionSummary>,
    /// What each withdrawal was and how the cluster answered, for the printed
    /// summary only: the JSON keeps exactly `key_groups`, `signatures` and `transactions`.
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
    /// Hex of the exact bytes FROST signed (the request payload, or an input's sighash).
    pub message: String,
    /// The signature, hex: 65-byte FROST(secp256k1, SHA-256) for a message
    /// group, 64-byte BIP340 (under the output key) for a taproot group.
    pub signature: String,
    /// Nodes whose shares made the signature.
    pub signers: Vec<String>,
}

/// A signed transaction, as the JSON report states it.
#[derive(Clone, Debug, Serialize)]
pub struct TransactionSummary {
    /// Withdrawal request id.
    pub request_id: String,
    /// Key group that signed.
    pub key_group: String,
    /// The fully signed transaction, hex.
    pub tx: String,
    /// Its txid.
    pub txid: String,
    /// The outputs its inputs spend, in input order.
    pub prevouts: Vec<PrevoutSummary>,
}

/// A spent output.
#[derive(Clone, Debug, Serialize)]
pub struct PrevoutSummary {
    /// Its script, hex.
    pub script_pubkey: String,
    /// Its value, sat.
    pub amount: u64,
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
    let groups = cluster.create_groups(bins, progress).await?;
    let find = |name: &str| {
        groups
            .iter()
            .find(|g| g.name == name)
            .ok_or_else(|| SimError::Verification(format!("{name} was not created")))
    };
    let warm = Wallet::of(find("warm-1")?)?;
    let cold = Wallet::of(find("cold-1")?)?;
    let funding = fund(&warm, &cold, progress);
    let paid = sign_warm_payment(&cluster, &warm, &funding, progress).await?;
    let mut narrative = vec![paid.what.clone()];
    narrative.extend(show_refusals(&cluster, &warm, &funding, progress).await?);
    let moved = sign_cold_transfer(&cluster, &cold, &warm, &funding, progress).await?;
    narrative.push(moved.what.clone());
    cluster.stop();
    progress.step("all daemons stopped");

    let report = DemoReport {
        key_groups: groups.iter().map(KeyGroupSummary::from_wire).collect(),
        signatures: paid
            .signatures
            .into_iter()
            .chain(moved.signatures)
            .collect(),
        transactions: vec![paid.transaction, moved.transaction],
        narrative,
    };
    print_summary(&report);
    Ok(report)
}

/// A signed transaction and, for people, what it was for.
struct Signed {
    signatures: Vec<SignatureSummary>,
    transaction: TransactionSummary,
    what: String,
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

/// Pays a customer 0.9 BTC from both of warm-1's coins with change back to
/// warm-1 (no approval needed below 1 BTC), and checks the transaction.
async fn sign_warm_payment(
    cluster: &LocalCluster,
    warm: &Wallet,
    funding: &Funding,
    progress: &Progress,
) -> Result<Signed, SimError> {
    let to = customer_address("alice")?;
    let amount = WARM_PAYMENT_SATS;
    let psbt = build(warm, &funding.warm, &[(to.clone(), amount)], DEMO_FEE_RATE)?;
    let request = demo_request(warm, Tier::Warm, &psbt, u128::from(amount), &to.to_string())?;
    let request_id = request.request_id.clone();
    let signed = client::sign_withdrawal(&request, &cluster.custody_key)?;
    let decoded = decode_withdrawal(&psbt.serialize(), &warm.output)
        .map_err(|e| SimError::Setup(e.to_string()))?;
    progress.step(format!(
        "custody service submits withdrawal {request_id}: a PSBT spending {} coins of {} to pay {} to {to}, change {} back to it, fee {} sat",
        decoded.inputs.len(),
        warm.group.name,
        btc(u128::from(amount)),
        btc(u128::from(decoded.change.iter().map(|c| c.amount_sat).sum::<u64>())),
        decoded.fee_sat
    ));
    let status = client::submit_withdrawal(&cluster.custody, signed.clone()).await?;
    let status = wait_until_settled(cluster, status, SIGN_TIMEOUT).await?;
    let attempts = status.attempts;
    let signers = status.signers.clone();
    let (signatures, transaction) = check_signed(status, warm, &request)?;
    progress.step(format!(
        "signed by {} in {attempts} attempt(s): transaction {} verified locally (sighash recomputed from the PSBT, BIP340 under {}'s output key)",
        signers.join(" + "),
        transaction.txid,
        warm.group.name
    ));
    let again = client::submit_withdrawal(&cluster.custody, signed).await?;
    if again.txid != transaction.txid {
        return Err(SimError::Verification(format!(
            "resubmitting {request_id} produced a different outcome (at most one transaction per request id)"
        )));
    }
    progress
        .step("resubmitting the same request returns the same transaction (one per request id)");
    Ok(Signed {
        what: format!(
            "{} from {} to {to} with change, fee {} sat: within the no-approval band, signed automatically (txid {})",
            btc(u128::from(amount)),
            warm.group.name,
            decoded.fee_sat,
            transaction.txid
        ),
        signatures,
        transaction,
    })
}

/// Three withdrawals the cluster must refuse, each decided on what the
/// transaction does, not on what the request says.
async fn show_refusals(
    cluster: &LocalCluster,
    warm: &Wallet,
    funding: &Funding,
    progress: &Progress,
) -> Result<Vec<String>, SimError> {
    let to = customer_address("alice")?;
    let stranger = customer_address("mallory")?;
    let both = [funding.warm[0], funding.warm[1]];
    // 1. Over the per-request limit: 2.5 BTC (plus fee) would leave the group; 2 BTC is the most.
    let over = build(warm, &both, &[(to.clone(), 250_000_000)], DEMO_FEE_RATE)?;
    // 2. The "change" output pays a stranger; the labels claim only the small payment.
    let mut hidden = build(
        warm,
        &funding.warm[..1],
        &[(to.clone(), 1_000_000)],
        DEMO_FEE_RATE,
    )?;
    if let Some(change) = hidden.unsigned_tx.output.last_mut() {
        change.script_pubkey = stranger.script_pubkey();
    }
    // 3. A fee far over the cap.
    let greedy = build(
        warm,
        &funding.warm[1..],
        &[(to.clone(), 1_000_000)],
        10 * WARM_MAX_FEE_RATE,
    )?;
    let cases = [
        (
            over,
            250_000_000u128,
            format!(
                "{} to {to}, over the {} per-request limit (payments + fee count)",
                btc(250_000_000),
                btc(WARM_PER_REQUEST_MAX_SATS)
            ),
        ),
        (
            hidden,
            1_000_000,
            format!(
                "{} to {to} whose \"change\" output pays {stranger}",
                btc(1_000_000)
            ),
        ),
        (
            greedy,
            1_000_000,
            format!(
                "{} to {to} at {} sat/vB, a fee over the caps ({} sat, {WARM_MAX_FEE_RATE} sat/vB)",
                btc(1_000_000),
                10 * WARM_MAX_FEE_RATE,
                crate::cluster::WARM_MAX_FEE_SATS
            ),
        ),
    ];
    let mut lines = Vec::new();
    for (psbt, label, what) in cases {
        let request = demo_request(warm, Tier::Warm, &psbt, label, &to.to_string())?;
        let signed = client::sign_withdrawal(&request, &cluster.custody_key)?;
        progress.step(format!(
            "custody service asks {} for {what}",
            warm.group.name
        ));
        match client::submit_withdrawal(&cluster.custody, signed).await {
            Err(CtlError::Rpc {
                code: tonic::Code::PermissionDenied,
                message,
                ..
            }) => {
                let reason = message.strip_prefix("refused: ").unwrap_or(&message);
                progress.step(format!("refused: {reason}"));
                lines.push(format!("{what}: refused ({reason})"));
            }
            Err(other) => {
                return Err(SimError::Verification(format!(
                "{what} should be refused by policy, but submitting it failed otherwise: {other}"
            )))
            }
            Ok(status) => {
                return Err(SimError::Verification(format!(
                    "{what} was accepted ({}: {})",
                    client::state_name(status.state),
                    status.detail
                )))
            }
        }
    }
    Ok(lines)
}

/// Moves 2 BTC from cold-1 to warm-1's own address (the only allowlisted
/// destination): two approvals by different approvers, and the time-lock.
async fn sign_cold_transfer(
    cluster: &LocalCluster,
    cold: &Wallet,
    warm: &Wallet,
    funding: &Funding,
    progress: &Progress,
) -> Result<Signed, SimError> {
    let warm_address = warm.output.address().clone();
    let amount = COLD_AMOUNT_SATS as u64;
    let psbt = build(
        cold,
        &[funding.cold],
        &[(warm_address.clone(), amount)],
        DEMO_FEE_RATE,
    )?;
    let request = demo_request(
        cold,
        Tier::Cold,
        &psbt,
        u128::from(amount),
        &warm_address.to_string(),
    )?;
    let request_id = request.request_id.clone();
    let signed = client::sign_withdrawal(&request, &cluster.custody_key)?;
    progress.step(format!(
        "custody service submits withdrawal {request_id}: {} from {} to warm-1's own address {warm_address}",
        btc(COLD_AMOUNT_SATS),
        cold.group.name
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
        // exactly the request under review, decode its PSBT, then sign its digest.
        let current = client::get_withdrawal(&cluster.custody, request_id.as_str()).await?;
        let digest = approval::check_request_matches(request_id.as_str(), &request, &current)?;
        let seen = permafrostctl::psbt::describe(&psbt.serialize(), &cold.output).map_err(|e| {
            SimError::Verification(format!("{approver} cannot decode the PSBT: {e}"))
        })?;
        let key = keys::load_key_file(&cluster.approver_key_path(approver))?;
        let expires_at = unix_now() + APPROVAL_LIFETIME_SECS;
        let approval =
            client::sign_approval(request_id.as_str(), &digest, approver, expires_at, &key);
        status = client::submit_approval(&cluster.custody, approval).await?;
        progress.step(format!(
            "{approver} decoded the PSBT ({}) and approved: approvals counted [{}], {} missing",
            seen.lines()
                .find(|l| l.contains("PAYS"))
                .map(str::trim)
                .unwrap_or("no payment"),
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
    let signers = status.signers.clone();
    let (signatures, transaction) = check_signed(status, cold, &request)?;
    progress.step(format!(
        "signed by {} in {attempts} attempt(s) after approvals by {}: transaction {} verified locally against {}'s output key",
        signers.join(" + "),
        approved_by.join(" and "),
        transaction.txid,
        cold.group.name
    ));
    Ok(Signed {
        what: format!(
            "{} from {} to warm-1's own address: approved by {}, signed after a {COLD_TIME_LOCK_SECS}s time-lock (txid {})",
            btc(COLD_AMOUNT_SATS),
            cold.group.name,
            approvers.join(" and "),
            transaction.txid
        ),
        signatures,
        transaction,
    })
}

fn print_summary(report: &DemoReport) {
    println!();
    println!("Key groups");
    for g in &report.key_groups {
        println!(
            "  {:<8} {:<5} {}-of-{}  members {:<16} {} {} address {}",
            g.name,
            g.tier,
            g.threshold,
            g.members.len(),
            g.members.join(","),
            g.scheme,
            g.network,
            g.address
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
        println!("    sighash   {}", s.message);
        println!("    signature {}", s.signature);
    }
    println!("Transactions (synthetic funding: valid signatures, never broadcast)");
    for t in &report.transactions {
        println!("  {} from {}: txid {}", t.request_id, t.key_group, t.txid);
        println!("    {}", t.tx);
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
            transactions: vec![TransactionSummary {
                request_id: "r".into(),
                key_group: "g".into(),
                tx: "00".into(),
                txid: "11".into(),
                prevouts: vec![PrevoutSummary {
                    script_pubkey: "51".into(),
                    amount: 1,
                }],
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
        assert_eq!(
            keys,
            ["key_groups", "signatures", "transactions"]
                .into_iter()
                .collect()
        );
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
