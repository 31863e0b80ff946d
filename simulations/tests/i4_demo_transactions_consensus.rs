//! I4 end to end: every transaction the demo signs (taproot groups on
//! regtest, PSBTs decoded by every node) is judged by Bitcoin Core's own
//! consensus code (libbitcoinconsensus, taproot rules, all prevouts), and
//! every spent output is the signing group's own key-path output.
//!
//! As for the chaos test, build the daemons first (`cargo build --workspace
//! --bins`); without them the test is skipped with a message unless `CI` is set.

use std::path::PathBuf;

use bitcoin::consensus::encode::deserialize_hex;
use bitcoin::Transaction;
use permafrost_simulations::demo::{self, DemoOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i4_every_demo_transaction_is_valid_under_bitcoin_consensus() {
    permafrost_proto::tls::install_crypto_provider();
    let sim = PathBuf::from(env!("CARGO_BIN_EXE_permafrost-sim"));
    let bin_dir = sim.parent().expect("binary directory").to_path_buf();
    if !bin_dir.join("permafrost-node").is_file() {
        let msg = "daemons missing: run `cargo build --workspace --bins` before `cargo test`";
        if std::env::var_os("CI").is_some() {
            panic!("{msg}");
        }
        eprintln!("SKIPPED: {msg}");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let report = demo::demo(DemoOptions {
        dir: Some(dir.path().join("cluster")),
        bin_dir: Some(bin_dir),
        ..DemoOptions::default()
    })
    .await
    .expect("demo runs");
    assert_eq!(
        report.transactions.len(),
        2,
        "a warm payment and a cold transfer"
    );
    for t in &report.transactions {
        let group = report
            .key_groups
            .iter()
            .find(|g| g.name == t.key_group)
            .expect("the signing group is reported");
        assert_eq!(group.scheme, "taproot");
        assert_eq!(group.network, "regtest");
        let own_script = format!("5120{}", group.output_key);
        let tx: Transaction = deserialize_hex(&t.tx).expect("transaction decodes");
        assert_eq!(tx.compute_txid().to_string(), t.txid);
        assert_eq!(tx.input.len(), t.prevouts.len());
        let spent: Vec<(Vec<u8>, u64)> = t
            .prevouts
            .iter()
            .map(|p| {
                assert_eq!(
                    p.script_pubkey, own_script,
                    "{} spends only its own output",
                    t.key_group
                );
                (hex::decode(&p.script_pubkey).expect("hex"), p.amount)
            })
            .collect();
        let utxos: Vec<bitcoinconsensus::Utxo> = spent
            .iter()
            .map(|(spk, amount)| bitcoinconsensus::Utxo {
                script_pubkey: spk.as_ptr(),
                script_pubkey_len: spk.len() as u32,
                value: *amount as i64,
            })
            .collect();
        let bytes = hex::decode(&t.tx).expect("hex");
        for (i, (spk, amount)) in spent.iter().enumerate() {
            bitcoinconsensus::verify_with_flags(
                spk,
                *amount,
                &bytes,
                Some(&utxos),
                i,
                bitcoinconsensus::VERIFY_ALL_PRE_TAPROOT | bitcoinconsensus::VERIFY_TAPROOT,
            )
            .unwrap_or_else(|e| panic!("{} input {i} rejected by consensus: {e:?}", t.request_id));
        }
    }
    // The warm payment spends two coins: two inputs, two FROST sessions.
    assert!(report.transactions[0].prevouts.len() >= 2);
    assert_eq!(
        report.signatures.len(),
        report
            .transactions
            .iter()
            .map(|t| t.prevouts.len())
            .sum::<usize>()
    );
}
