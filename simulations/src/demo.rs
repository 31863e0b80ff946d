//! `permafrost-sim demo`: a whole cluster from nothing, two key ceremonies and
//! one warm withdrawal signed and verified locally, then everything torn down.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use permafrost_core::withdrawal::WithdrawalRequest;
use permafrost_core::{unix_now, GroupName, RequestId, Tier};
use permafrost_proto as pb;
use permafrostctl::client::{self, KeyGroupSummary};
use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::cluster::{Binaries, LocalCluster, CUSTODY_ID};
use crate::progress::Progress;
use crate::SimError;

/// Where the demo withdrawal sends 0.5 BTC (a well-known example address).
pub const DEMO_DESTINATION: &str = "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq";
/// 0.5 BTC in satoshis.
pub const DEMO_AMOUNT_SATS: u128 = 50_000_000;
/// How long the demo waits for the cluster to come up.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

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
    let warm = groups
        .iter()
        .find(|g| g.name == "warm-1")
        .ok_or_else(|| SimError::Verification("warm-1 was not created".into()))?;
    let signature = sign_warm_withdrawal(&cluster, warm, progress).await?;
    cluster.stop();
    progress.step("all daemons stopped");

    let report = DemoReport {
        key_groups: groups.iter().map(KeyGroupSummary::from_wire).collect(),
        signatures: vec![signature],
    };
    print_summary(&report);
    Ok(report)
}

/// Signs 0.5 BTC from warm-1 as the custody service and checks the result
/// without trusting the coordinator: message, group key and signature.
async fn sign_warm_withdrawal(
    cluster: &LocalCluster,
    warm: &pb::KeyGroup,
    progress: &Progress,
) -> Result<SignatureSummary, SimError> {
    let mut id = [0u8; 6];
    rand::rngs::OsRng.fill_bytes(&mut id);
    let request_id = RequestId::new(format!("demo-{}", hex::encode(id)))
        .map_err(|e| SimError::Setup(e.to_string()))?;
    // Stands in for a transaction sighash: 32 bytes the chain would have us sign.
    let payload = Sha256::new()
        .chain_update(b"permafrost demo sighash/")
        .chain_update(request_id.as_str())
        .finalize()
        .to_vec();
    let now = unix_now();
    let request = WithdrawalRequest {
        request_id: request_id.clone(),
        key_group: GroupName::new(warm.name.clone()).map_err(|e| SimError::Setup(e.to_string()))?,
        tier: Tier::Warm,
        asset: "BTC".into(),
        amount: DEMO_AMOUNT_SATS,
        destination: DEMO_DESTINATION.into(),
        payload: payload.clone(),
        created_at: now,
        expires_at: now + 600,
        requested_by: CUSTODY_ID.into(),
    };
    let signed = client::sign_withdrawal(&request, &cluster.custody_key)?;
    progress.step(format!(
        "custody service submits withdrawal {request_id}: 0.5 BTC ({DEMO_AMOUNT_SATS} sat) to {DEMO_DESTINATION} from {}",
        warm.name
    ));
    let mut status = client::submit_withdrawal(&cluster.custody, signed.clone()).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while status.state == pb::WithdrawalState::Pending as i32 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        status = client::get_withdrawal(&cluster.custody, request_id.as_str()).await?;
    }
    if status.state != pb::WithdrawalState::Signed as i32 {
        return Err(SimError::Verification(format!(
            "withdrawal {request_id} ended {} after {} attempt(s): {}",
            client::state_name(status.state),
            status.attempts,
            status.detail
        )));
    }
    if status.group_public_key != warm.group_public_key {
        return Err(SimError::Verification(format!(
            "withdrawal {request_id} reports group key {}, but {} was created with {}",
            hex::encode(&status.group_public_key),
            warm.name,
            hex::encode(&warm.group_public_key)
        )));
    }
    client::verify_signed(&status, &payload)?;
    client::verify_signature(&warm.group_public_key, &payload, &status.signature)
        .map_err(|e| SimError::Verification(format!("withdrawal {request_id}: {e}")))?;
    let threshold = usize::try_from(warm.threshold).unwrap_or(usize::MAX);
    if status.signers.len() < threshold || !status.signers.iter().all(|s| warm.members.contains(s))
    {
        return Err(SimError::Verification(format!(
            "withdrawal {request_id} names signers [{}], not {} members of {}",
            status.signers.join(", "),
            warm.threshold,
            warm.name
        )));
    }
    progress.step(format!(
        "signed by {} in {} attempt(s); signature verified locally with frost-secp256k1 against {}'s group key",
        status.signers.join(" + "),
        status.attempts,
        warm.name
    ));
    let again = client::submit_withdrawal(&cluster.custody, signed).await?;
    if again.signature != status.signature {
        return Err(SimError::Verification(format!(
            "resubmitting {request_id} produced a different outcome (at most one signature per request id)"
        )));
    }
    progress.step(
        "resubmitting the same request returns the same signature (one signature per request id)",
    );
    Ok(SignatureSummary {
        request_id: request_id.to_string(),
        key_group: warm.name.clone(),
        message: hex::encode(&payload),
        signature: hex::encode(&status.signature),
        signers: status.signers,
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
