//! I4 (and X1 for transactions) against real nodes and a real coordinator
//! over mTLS: a taproot key group on regtest, withdrawals as PSBTs. Every
//! signed transaction is judged by Bitcoin Core's consensus code; every
//! attack on what a transaction pays is refused by the nodes themselves.

use bitcoin::consensus::encode::deserialize_hex;
use bitcoin::hashes::Hash;
use bitcoin::{Address, Amount, OutPoint, Transaction, TxOut, Txid};
use frost_core::round1::SigningCommitments;
use frost_core::{Identifier, SigningPackage};
use frost_secp256k1_tr::Secp256K1Sha256TR;
use permafrost_core::taproot::{build_withdrawal, Coin, GroupOutput, Network};
use permafrost_core::withdrawal::WithdrawalRequest;
use permafrost_core::{Role, Tier};
use permafrost_proto as pb;
use permafrost_proto::WithdrawalState;
use permafrost_testkit::{approver, ClusterOptions, TestCluster};
use std::collections::BTreeMap;

fn policy() -> String {
    let key = |n: &str| hex::encode(approver(n).verifying_key().as_bytes());
    format!(
        r#"
[approvers]
alice = "{}"
bob = "{}"
[groups.warm-1]
tier = "warm"
scheme = "taproot"
network = "regtest"
max_fee_sat = 20000
max_fee_rate_sat_vb = 50
max_lifetime_secs = 86400
[groups.warm-1.assets.BTC]
per_request_max = "100000000"
daily_max = "300000000"
"#,
        key("alice"),
        key("bob")
    )
}

async fn cluster() -> (TestCluster, pb::KeyGroup, GroupOutput) {
    let cluster = TestCluster::start_with(ClusterOptions {
        regions: vec!["eu".into(), "us".into(), "ap".into()],
        policy: Some(policy()),
        ..Default::default()
    })
    .await;
    let group = cluster
        .create_group("warm-1", Tier::Warm, 2, &[0, 1, 2])
        .await
        .expect("taproot DKG and BIP340 activation test");
    assert!(group.active);
    let output = GroupOutput::derive(&group.group_public_key, Network::Regtest).expect("output");
    (cluster, group, output)
}

fn coin(n: u8, sats: u64) -> Coin {
    Coin {
        outpoint: OutPoint {
            txid: Txid::from_byte_array([n; 32]),
            vout: 0,
        },
        amount_sat: sats,
    }
}

fn customer() -> Address {
    let program =
        bitcoin::WitnessProgram::new(bitcoin::WitnessVersion::V0, &[7u8; 20]).expect("program");
    Address::from_witness_program(program, bitcoin::Network::Regtest)
}

fn tx_request(
    cluster: &TestCluster,
    id: &str,
    psbt: &bitcoin::psbt::Psbt,
    amount: u128,
    to: &str,
) -> WithdrawalRequest {
    let mut r = cluster.request(id, "warm-1", Tier::Warm);
    r.payload = Vec::new();
    r.psbt = Some(psbt.serialize());
    r.amount = amount;
    r.destination = to.into();
    r
}

fn consensus_accepts(tx_hex: &str, prevouts: &[TxOut]) {
    let bytes = hex::decode(tx_hex).expect("hex");
    let spent: Vec<(Vec<u8>, u64)> = prevouts
        .iter()
        .map(|p| (p.script_pubkey.as_bytes().to_vec(), p.value.to_sat()))
        .collect();
    let utxos: Vec<_> = spent
        .iter()
        .map(|(spk, v)| bitcoinconsensus::Utxo {
            script_pubkey: spk.as_ptr(),
            script_pubkey_len: spk.len() as u32,
            value: *v as i64,
        })
        .collect();
    for (i, (spk, v)) in spent.iter().enumerate() {
        bitcoinconsensus::verify_with_flags(
            spk,
            *v,
            &bytes,
            Some(&utxos),
            i,
            bitcoinconsensus::VERIFY_ALL_PRE_TAPROOT | bitcoinconsensus::VERIFY_TAPROOT,
        )
        .unwrap_or_else(|e| panic!("input {i} rejected by consensus: {e:?}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i4_taproot_group_signs_a_three_input_payment_that_consensus_accepts() {
    let (cluster, group, output) = cluster().await;
    // Every member reports the same address, derived by itself.
    for i in 0..3 {
        let status = cluster
            .node_client(i, Role::Coordinator, "probe")
            .get_status(pb::NodeStatusRequest {})
            .await
            .expect("status")
            .into_inner();
        let g = status
            .key_groups
            .iter()
            .find(|g| g.name == "warm-1")
            .expect("held");
        assert_eq!(g.scheme, "taproot");
        assert_eq!(g.network, "regtest");
        assert_eq!(g.address, output.address().to_string());
        assert_eq!(g.output_key, output.output_key().to_vec());
    }
    assert_eq!(group.address, output.address().to_string());

    let to = customer();
    let coins = [
        coin(1, 30_000_000),
        coin(2, 30_000_000),
        coin(3, 30_000_000),
    ];
    let psbt = build_withdrawal(&output, &coins, &[(to.clone(), 80_000_000)], 3).expect("psbt");
    let request = tx_request(&cluster, "wd-tr-1", &psbt, 80_000_000, &to.to_string());
    let status = cluster
        .custody()
        .submit_withdrawal(cluster.sign(&request))
        .await
        .expect("submit")
        .into_inner();
    assert_eq!(status.state(), WithdrawalState::Signed, "{}", status.detail);
    assert_eq!(status.input_signatures.len(), 3);
    // The client is told what binds it: payments + fee against the limits, and the fee caps.
    assert!(status.limits.contains("per request"), "{}", status.limits);
    assert!(status.limits.contains("sat/vB"), "{}", status.limits);
    assert_eq!(status.output_key, output.output_key().to_vec());
    let tx: Transaction = deserialize_hex(&status.tx).expect("tx");
    assert_eq!(tx.compute_txid().to_string(), status.txid);
    let prevouts: Vec<TxOut> = psbt
        .inputs
        .iter()
        .map(|i| i.witness_utxo.clone().expect("utxo"))
        .collect();
    consensus_accepts(&status.tx, &prevouts);
    // Velocity counted payments + fee, not the label.
}

/// Submits `request` and expects a refusal whose message mentions `text`.
async fn refused(cluster: &TestCluster, request: &WithdrawalRequest, text: &str) {
    match cluster
        .custody()
        .submit_withdrawal(cluster.sign(request))
        .await
    {
        Err(status) => assert!(
            status.message().contains(text),
            "refused, but {:?} does not mention {text:?}",
            status.message()
        ),
        Ok(s) => panic!(
            "{} was not refused: {:?} {}",
            request.request_id,
            s.get_ref().state(),
            s.get_ref().detail
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i4_payment_attacks_are_refused_and_the_group_still_signs() {
    let (cluster, _group, output) = cluster().await;
    let to = customer();
    let stranger = {
        let program =
            bitcoin::WitnessProgram::new(bitcoin::WitnessVersion::V0, &[9u8; 20]).expect("program");
        Address::from_witness_program(program, bitcoin::Network::Regtest)
    };
    let base = build_withdrawal(
        &output,
        &[coin(1, 50_000_000)],
        &[(to.clone(), 1_000_000)],
        2,
    )
    .expect("psbt");

    // A payload-only request on a taproot group.
    let mut payload_only = cluster.request("wd-a1", "warm-1", Tier::Warm);
    payload_only.amount = 1;
    refused(&cluster, &payload_only, "taproot group").await;

    // "Change" that pays a stranger, under labels naming only the small payment.
    let mut hidden = base.clone();
    hidden
        .unsigned_tx
        .output
        .last_mut()
        .expect("change")
        .script_pubkey = stranger.script_pubkey();
    refused(
        &cluster,
        &tx_request(&cluster, "wd-a2", &hidden, 1_000_000, &to.to_string()),
        "amount label",
    )
    .await;

    // An input that is not the group's own output.
    let mut foreign = base.clone();
    foreign.inputs[0].witness_utxo = Some(TxOut {
        value: Amount::from_sat(50_000_000),
        script_pubkey: stranger.script_pubkey(),
    });
    refused(
        &cluster,
        &tx_request(&cluster, "wd-a3", &foreign, 0, ""),
        "not this group's own output",
    )
    .await;

    // A fee over the cap.
    let greedy = build_withdrawal(
        &output,
        &[coin(1, 50_000_000)],
        &[(to.clone(), 1_000_000)],
        500,
    )
    .expect("psbt");
    refused(
        &cluster,
        &tx_request(&cluster, "wd-a4", &greedy, 0, ""),
        "fee",
    )
    .await;

    // A mainnet destination label on a regtest group.
    let mainnet = Address::from_witness_program(
        bitcoin::WitnessProgram::new(bitcoin::WitnessVersion::V0, &[7u8; 20]).expect("program"),
        bitcoin::Network::Bitcoin,
    );
    refused(
        &cluster,
        &tx_request(&cluster, "wd-a5", &base, 1_000_000, &mainnet.to_string()),
        "destination label",
    )
    .await;

    // The group still signs an honest request afterwards.
    let ok = cluster
        .custody()
        .submit_withdrawal(cluster.sign(&tx_request(
            &cluster,
            "wd-ok",
            &base,
            1_000_000,
            &to.to_string(),
        )))
        .await
        .expect("submit")
        .into_inner();
    assert_eq!(ok.state(), WithdrawalState::Signed, "{}", ok.detail);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x1_rogue_coordinator_cannot_get_a_share_for_a_sighash_the_node_did_not_derive() {
    let (cluster, _group, output) = cluster().await;
    let to = customer();
    let psbt = build_withdrawal(
        &output,
        &[coin(4, 50_000_000)],
        &[(to.clone(), 1_000_000)],
        2,
    )
    .expect("psbt");
    let request = tx_request(&cluster, "wd-rogue", &psbt, 1_000_000, &to.to_string());
    let signed = cluster.sign(&request);
    // Round 1 on two members directly, as a rogue coordinator.
    let mut clients: Vec<_> = (0..2)
        .map(|i| cluster.node_client(i, Role::Coordinator, "coord-1"))
        .collect();
    let mut commitments = BTreeMap::new();
    let mut handles = Vec::new();
    let mut receipts = Vec::new();
    for c in clients.iter_mut() {
        let r = c
            .commit(pb::CommitRequest {
                bank: false,
                key_group: "warm-1".into(),
                count: 1,
                withdrawal: Some(signed.clone()),
                ..Default::default()
            })
            .await
            .expect("commit")
            .into_inner();
        receipts.push(r.receipt.clone());
        let n = r.nonces.first().expect("nonce").clone();
        let id = Identifier::<Secp256K1Sha256TR>::try_from(r.identifier as u16).expect("id");
        commitments.insert(
            id,
            SigningCommitments::<Secp256K1Sha256TR>::deserialize(&n.commitments)
                .expect("commitments"),
        );
        handles.push(n.handle);
    }
    let mut attestations = Vec::new();
    for c in clients.iter_mut() {
        let a = c
            .attest(pb::AttestRequest {
                key_group: "warm-1".into(),
                withdrawal: Some(signed.clone()),
                receipts: receipts.clone(),
                since: 0,
            })
            .await
            .expect("attest")
            .into_inner();
        attestations.push(a.attestation);
    }
    // The package signs some other sighash (say, of a transaction paying the attacker).
    let package = SigningPackage::new(commitments, &[0xAB; 32])
        .serialize()
        .expect("package");
    let err = clients[0]
        .sign(pb::SignRequest {
            reservation: Vec::new(),
            epoch: 0,
            key_group: "warm-1".into(),
            nonce_handles: vec![handles[0].clone()],
            signing_packages: vec![package],
            target: Some(pb::sign_request::Target::Withdrawal(signed.clone())),
            approvals: Vec::new(),
            attestations: attestations.clone(),
        })
        .await
        .expect_err("refused");
    assert!(
        err.message().contains("not the one derived"),
        "{}",
        err.message()
    );
    // Too few sessions for the transaction's inputs is refused too.
    let err = clients[1]
        .sign(pb::SignRequest {
            reservation: Vec::new(),
            epoch: 0,
            key_group: "warm-1".into(),
            nonce_handles: vec![handles[1].clone()],
            signing_packages: vec![],
            target: Some(pb::sign_request::Target::Withdrawal(signed)),
            approvals: Vec::new(),
            attestations,
        })
        .await
        .expect_err("refused");
    assert!(
        err.message().contains("signing packages"),
        "{}",
        err.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c1_taproot_invalid_share_names_the_culprit_and_the_transaction_still_signs() {
    let cluster = TestCluster::start_with(ClusterOptions {
        regions: vec!["eu".into(), "us".into(), "ap".into()],
        policy: Some(policy()),
        liars: vec![(0, permafrost_testkit::Lie::BadShare)],
        ..Default::default()
    })
    .await;
    let group = cluster
        .create_group("warm-1", Tier::Warm, 2, &[0, 1, 2])
        .await
        .expect("DKG");
    let output = GroupOutput::derive(&group.group_public_key, Network::Regtest).expect("output");
    let to = customer();
    let liar = cluster.nodes[0].id.to_string();
    // The coordinator spreads its choice of signers over requests: send
    // withdrawals until one meets the liar (each must sign either way).
    let mut met = None;
    for i in 0..6u8 {
        let coins = [coin(5 + 2 * i, 2_000_000), coin(6 + 2 * i, 2_000_000)];
        let psbt = build_withdrawal(&output, &coins, &[(to.clone(), 3_000_000)], 2).expect("psbt");
        let request = tx_request(
            &cluster,
            &format!("wd-tr-c1-{i}"),
            &psbt,
            3_000_000,
            &to.to_string(),
        );
        let status = cluster
            .custody()
            .submit_withdrawal(cluster.sign(&request))
            .await
            .expect("submit")
            .into_inner();
        assert_eq!(status.state(), WithdrawalState::Signed, "{}", status.detail);
        assert!(!status.signers.contains(&liar), "{:?}", status.signers);
        if !status.culprits.is_empty() {
            met = Some((psbt, status));
            break;
        }
    }
    let (psbt, status) = met.expect("the liar was chosen for one of six withdrawals");
    assert_eq!(status.culprits, vec![liar.clone()]);
    let prevouts: Vec<TxOut> = psbt
        .inputs
        .iter()
        .map(|i| i.witness_utxo.clone().expect("utxo"))
        .collect();
    consensus_accepts(&status.tx, &prevouts);
}

/// Pays `amount` from `coin` and checks the signed transaction under consensus.
async fn pay_and_check(
    cluster: &TestCluster,
    output: &GroupOutput,
    id: &str,
    c: Coin,
    amount: u64,
) {
    let to = customer();
    let psbt = build_withdrawal(output, &[c], &[(to.clone(), amount)], 2).expect("psbt");
    let request = tx_request(cluster, id, &psbt, u128::from(amount), &to.to_string());
    let status = cluster
        .custody()
        .submit_withdrawal(cluster.sign(&request))
        .await
        .expect("submit")
        .into_inner();
    assert_eq!(status.state(), WithdrawalState::Signed, "{}", status.detail);
    let prevouts: Vec<TxOut> = psbt
        .inputs
        .iter()
        .map(|i| i.witness_utxo.clone().expect("utxo"))
        .collect();
    consensus_accepts(&status.tx, &prevouts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k6_taproot_group_signs_after_refresh_and_after_repair_at_the_same_address() {
    let mut cluster = TestCluster::start_with(ClusterOptions {
        regions: vec!["eu".into(), "us".into(), "ap".into(), "ap".into()],
        policy: Some(policy()),
        ..Default::default()
    })
    .await;
    let group = cluster
        .create_group("warm-1", Tier::Warm, 2, &[0, 1, 2])
        .await
        .expect("DKG");
    let output = GroupOutput::derive(&group.group_public_key, Network::Regtest).expect("output");
    pay_and_check(
        &cluster,
        &output,
        "wd-tr-before",
        coin(7, 10_000_000),
        1_000_000,
    )
    .await;

    let refreshed = cluster.refresh_group("warm-1").await.expect("refresh");
    assert_eq!(
        refreshed.address,
        output.address().to_string(),
        "refresh keeps the address"
    );
    pay_and_check(
        &cluster,
        &output,
        "wd-tr-refreshed",
        coin(8, 10_000_000),
        1_000_000,
    )
    .await;

    cluster.stop_node(2).await;
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let repaired = cluster
        .repair_group("warm-1", "n3", "n4")
        .await
        .expect("repair");
    assert_eq!(
        repaired.address,
        output.address().to_string(),
        "repair keeps the address"
    );
    // n4 (the replacement) took the scheme from its own policy and signs with it.
    let status = cluster
        .node_client(3, Role::Coordinator, "probe")
        .get_status(pb::NodeStatusRequest {})
        .await
        .expect("status")
        .into_inner();
    let g = status
        .key_groups
        .iter()
        .find(|g| g.name == "warm-1")
        .expect("n4 holds warm-1");
    assert_eq!(g.scheme, "taproot");
    assert_eq!(g.address, output.address().to_string());
    pay_and_check(
        &cluster,
        &output,
        "wd-tr-repaired",
        coin(9, 10_000_000),
        1_000_000,
    )
    .await;
}
