//! `permafrost-sim up`: the local cluster in the foreground until Ctrl-C, with
//! everything a client needs written to its directory.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cluster::{
    has_cluster, offline_ca_dir, Binaries, CreateOptions, LocalCluster, COLD_TIME_LOCK_SECS,
    WARM_WALLET_ADDRESS,
};
use crate::demo::{DEMO_AMOUNT_SATS, DEMO_DESTINATION, READY_TIMEOUT};
use crate::progress::Progress;
use crate::SimError;

/// Builds (or restarts) the cluster in `dir` and serves until SIGINT/SIGTERM.
pub async fn up(dir: &Path, bin_dir: Option<&Path>) -> Result<(), SimError> {
    let bins = Binaries::locate(bin_dir)?;
    let progress = Progress::new();
    let setup = async {
        if has_cluster(dir) {
            let mut cluster = LocalCluster::restart(dir, &bins, &progress)?;
            cluster.wait_ready(READY_TIMEOUT, &progress).await?;
            Ok(cluster)
        } else {
            println!(
                "note: node secrets are sealed under a random per-node passphrase with kdf = \"fast-insecure\" \
                 (local use only; production uses argon2id with 64 MiB)"
            );
            std::fs::create_dir_all(dir).map_err(|e| SimError::io(dir, e))?;
            let canonical = dir.canonicalize().map_err(|e| SimError::io(dir, e))?;
            let ca = offline_ca_dir(&canonical);
            let options = CreateOptions {
                offline_ca: Some(ca.clone()),
                ..Default::default()
            };
            let mut cluster = LocalCluster::create_with(dir, &bins, &progress, &options).await?;
            println!(
                "note: the cluster CA (its private key) is in {}, outside {}: keep it off the cluster and \
                 away from client machines; it is needed only to issue certificates",
                ca.display(),
                canonical.display()
            );
            cluster.wait_ready(READY_TIMEOUT, &progress).await?;
            cluster.create_groups(&bins, &progress).await?;
            Ok(cluster)
        }
    };
    let mut cluster = crate::interruptible(setup).await?;
    print_how_to_use(&cluster);
    // Only now, with every daemon ready and the key groups made, does
    // cluster.json appear: a client that waits for the file may start.
    let published = cluster.publish()?;
    println!("cluster ready: wrote {}", published.display());

    let shutdown = crate::shutdown_signal();
    tokio::pin!(shutdown);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tick.tick() => {
                for (name, status, log) in cluster.daemons().newly_exited() {
                    eprintln!("permafrost-sim: warning: {name} exited ({status}); see {}", log.display());
                }
                if cluster.daemons().running() == 0 {
                    return Err(SimError::Setup("every daemon has exited; stopping".into()));
                }
            }
        }
    }
    progress.step("stopping the cluster");
    cluster.stop();
    progress.step(format!(
        "all daemons stopped; {} keeps the cluster (run `up` on it again to restart)",
        dir.display()
    ));
    Ok(())
}

fn print_how_to_use(cluster: &LocalCluster) {
    let f = &cluster.file;
    let dir = &cluster.dir;
    let cluster_json: PathBuf = cluster.cluster_file_path();
    let cj = cluster_json.display();
    println!();
    println!(
        "Permafrost cluster is up in {} (Ctrl-C to stop)",
        dir.display()
    );
    let metrics = |m: &Option<String>| match m {
        Some(addr) => format!("  metrics http://{addr}/metrics"),
        None => String::new(),
    };
    println!(
        "  coordinator {:<10} {:<22} {}  log {}{}",
        crate::cluster::COORDINATOR_ID,
        f.coordinator.endpoint,
        f.coordinator.tls_server_name,
        dir.join("coordinator/coordinator.log").display(),
        metrics(&f.coordinator.metrics)
    );
    for n in &f.nodes {
        println!(
            "  node {:<6} {:<10} {:<22} log {}{}",
            n.id,
            n.region,
            n.endpoint,
            dir.join("nodes").join(&n.id).join("node.log").display(),
            metrics(&n.metrics)
        );
    }
    for g in &f.key_groups {
        println!(
            "  key group {} ({}, {}-of-{} on {}): {}",
            g.name,
            g.tier,
            g.threshold,
            g.members.len(),
            g.members.join(","),
            g.group_public_key
        );
    }
    println!();
    println!("Client files: {cj} (written once the cluster is ready), ca.pem, custody-1.pem/.key, operator-1.pem/.key, custody-signing.key/.pub, approvers/*.key, operators/*.key, policy.toml");
    // Taproot groups pay addresses derived from their keys.
    let address = |name: &str| {
        f.key_groups
            .iter()
            .find(|g| g.name == name && !g.address.is_empty())
            .map(|g| g.address.clone())
    };
    let cold_pays = address("warm-1").unwrap_or_else(|| WARM_WALLET_ADDRESS.to_string());
    println!(
        "Policy (policy.toml): warm-1 signs up to 1 BTC per request unapproved and up to {} sat with one approval; \
         cold-1 pays only {cold_pays}, with two approvers and a {COLD_TIME_LOCK_SECS}s time-lock (short for local use)",
        crate::cluster::WARM_PER_REQUEST_MAX_SATS
    );
    let req = dir.join("cold-request.json");
    let req = req.display();
    let approvers = dir.join("approvers");
    let approvers = approvers.display();
    let n1_audit = dir.join("nodes/n1/data/audit.log");
    println!("Try:");
    println!("  permafrostctl status --cluster {cj}");
    println!("  permafrostctl keygroup list --cluster {cj}");
    // A taproot group signs transactions: spend a coin of the group (locally
    // any txid:vout:sats will do; nodes check the transaction, not a chain).
    let coin = format!("{}:0:300000000", "07".repeat(32));
    match address("cold-1") {
        Some(cold) => println!(
            "  permafrostctl withdraw --cluster {cj} --group warm-1 --tier warm --to {cold} --amount {DEMO_AMOUNT_SATS} --utxo {coin} --fee-rate 2"
        ),
        None => println!(
            "  permafrostctl withdraw --cluster {cj} --group warm-1 --tier warm --asset BTC --amount {DEMO_AMOUNT_SATS} --destination {DEMO_DESTINATION}"
        ),
    }
    println!("  permafrostctl withdrawal get --cluster {cj} --request-id <ID printed by withdraw>");
    println!("  # cold: submit, then two different approvers review the request file and approve");
    match address("warm-1") {
        Some(warm) => println!(
            "  permafrostctl withdraw --cluster {cj} --group cold-1 --tier cold --to {warm} --amount 200000000 --utxo {coin} --fee-rate 2 --save-request {req}"
        ),
        None => println!(
            "  permafrostctl withdraw --cluster {cj} --group cold-1 --tier cold --asset BTC --amount 200000000 --destination {WARM_WALLET_ADDRESS} --save-request {req}"
        ),
    }
    for approver in &crate::cluster::APPROVERS[..2] {
        println!(
            "  permafrostctl approve --cluster {cj} --request <ID> --request-file {req} --key {approvers}/{approver}.key --approver-id {approver}"
        );
    }
    println!("  permafrostctl node status --cluster {cj} --node n1");
    println!(
        "  permafrostctl audit verify {} --key {} --head <ENTRIES:HASH from node status>",
        n1_audit.display(),
        identity_key(dir, "n1").unwrap_or_else(|| "<n1 identity_key in manifest.json>".into())
    );
    let operators = dir.join("operators");
    let operators = operators.display();
    let spec = dir.join("hot-1-create.json");
    let spec = spec.display();
    println!("  # a new group: propose it, two operators approve (each checks what `ceremony show` prints), submit");
    println!("  permafrostctl ceremony propose --operation create --group hot-1 --tier hot --threshold 2 --nodes n2,n4,n5 --out {spec}");
    for operator in &crate::cluster::OPERATORS[..2] {
        println!(
            "  permafrostctl ceremony approve --spec {spec} --key {operators}/{operator}.key --operator-id {operator}"
        );
    }
    println!("  permafrostctl ceremony submit --cluster {cj} --spec {spec}");
    println!();
}

/// A node's Ed25519 identity key (hex) from the cluster manifest, for `audit verify --key`.
fn identity_key(dir: &Path, node: &str) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("manifest.json")).ok()?;
    let manifest = permafrost_core::manifest::ClusterManifest::from_json(&text).ok()?;
    manifest
        .nodes
        .into_iter()
        .find(|n| n.id.as_str() == node)
        .map(|n| n.identity_key)
}
