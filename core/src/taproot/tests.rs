//! Taproot withdrawals end to end in process: a 2-of-3 group's key, a PSBT
//! built for its own output, every node-side check (I4), FROST signing of
//! every input through the generic signing path, and Bitcoin Core's own
//! consensus code judging the result.

use std::collections::BTreeMap;

use bitcoin::consensus::encode::serialize;
use bitcoin::hashes::Hash;
use bitcoin::psbt::{Psbt, PsbtSighashType};
use bitcoin::{Amount, OutPoint, ScriptBuf, TxOut, Txid};
use ed25519_dalek::{Signer, SigningKey};
use frost_core::keys::{KeyPackage, PublicKeyPackage};
use frost_core::Identifier;
use frost_secp256k1::Secp256K1Sha256;
use frost_secp256k1_tr::Secp256K1Sha256TR;
use proptest::prelude::*;
use rand::thread_rng;

use super::*;
use crate::authz::{authorize_withdrawal, CheckSettings, GroupView, PolicyInput, SignedWithdrawal};
use crate::policy::{LedgerView, Policy};
use crate::signing::{self, taproot_key_package, taproot_public_key_package, SigningTarget};
use crate::withdrawal::WithdrawalRequest;
use crate::{GroupName, RequestId, Tier};

pub(crate) struct TestGroup {
    pub keys: BTreeMap<Identifier<Secp256K1Sha256>, KeyPackage<Secp256K1Sha256>>,
    pub public: PublicKeyPackage<Secp256K1Sha256>,
    pub output: GroupOutput,
}

pub(crate) fn test_group() -> TestGroup {
    let (shares, public) = frost_core::keys::generate_with_dealer::<Secp256K1Sha256, _>(
        3,
        2,
        frost_core::keys::IdentifierList::Default,
        &mut thread_rng(),
    )
    .expect("dealer");
    let keys = shares
        .into_iter()
        .map(|(id, s)| (id, KeyPackage::try_from(s).expect("key package")))
        .collect();
    let key = public.verifying_key().serialize().expect("key");
    let output = GroupOutput::derive(&key, Network::Regtest).expect("output");
    TestGroup {
        keys,
        public,
        output,
    }
}

fn coin(n: u8, sats: u64) -> Coin {
    Coin {
        outpoint: OutPoint {
            txid: Txid::from_byte_array([n; 32]),
            vout: u32::from(n),
        },
        amount_sat: sats,
    }
}

/// A regtest P2TR address nobody in these tests controls.
fn foreign(n: u8) -> Address {
    let secp = Secp256k1::new();
    let sk = secp256k1::SecretKey::from_slice(&[n.max(1); 32]).expect("key");
    let (x, _) = sk.public_key(&secp).x_only_public_key();
    Address::p2tr(&secp, x, None, bitcoin::Network::Regtest)
}

/// Signs every input of `decoded` with two of the three members, through
/// the one generic signing path, and returns the 64-byte signatures.
fn frost_sign(g: &TestGroup, target: &SigningTarget) -> Vec<Vec<u8>> {
    let signers: Vec<_> = g.keys.keys().take(2).copied().collect();
    let tr_keys: BTreeMap<_, _> = signers
        .iter()
        .map(|id| {
            let kp = taproot_key_package(&g.keys[id]).expect("taproot key");
            (*kp.identifier(), kp)
        })
        .collect();
    let messages = target.messages().to_vec();
    let mut nonces: BTreeMap<_, Vec<_>> = BTreeMap::new();
    let mut packages = Vec::new();
    for m in &messages {
        let mut commitments = BTreeMap::new();
        for (id, kp) in &tr_keys {
            let (n, c) = frost_core::round1::commit(kp.signing_share(), &mut thread_rng());
            nonces.entry(*id).or_default().push(n);
            commitments.insert(*id, c);
        }
        packages.push(frost_core::SigningPackage::<Secp256K1Sha256TR>::new(
            commitments,
            m,
        ));
    }
    let mut shares: Vec<BTreeMap<_, _>> = vec![BTreeMap::new(); messages.len()];
    for (id, kp) in &tr_keys {
        let mine = nonces.remove(id).expect("nonces");
        let out = signing::compute_shares(target, &packages, mine, kp).expect("shares");
        for (i, s) in out.into_iter().enumerate() {
            shares[i].insert(*id, s);
        }
    }
    let pkp = taproot_public_key_package(&g.public).expect("taproot public");
    packages
        .iter()
        .zip(&shares)
        .map(|(p, s)| {
            let sig = signing::aggregate(p, s, &pkp).expect("aggregate");
            sig.serialize().expect("serialize")
        })
        .collect()
}

fn consensus_accepts(decoded: &DecodedWithdrawal, signatures: &[Vec<u8>]) {
    let tx = decoded.signed_transaction(signatures).expect("signed tx");
    let bytes = serialize(&tx);
    let spent: Vec<_> = decoded
        .prevouts
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

fn policy(allowlist: Option<&Address>) -> Policy {
    let allow = allowlist
        .map(|a| format!("allowlist = [\"{a}\"]\n"))
        .unwrap_or_default();
    Policy::from_toml(&format!(
        r#"
[groups.warm-1]
tier = "warm"
scheme = "taproot"
network = "regtest"
max_fee_sat = 20000
max_fee_rate_sat_vb = 50
max_lifetime_secs = 86400
{allow}
[groups.warm-1.assets.BTC]
per_request_max = "1000000"
daily_max = "5000000"
"#
    ))
    .expect("policy")
}

struct Fixture {
    g: TestGroup,
    custody: SigningKey,
    settings: CheckSettings,
    view: GroupView,
}

fn fixture() -> Fixture {
    let g = test_group();
    let custody = SigningKey::generate(&mut thread_rng());
    let settings = CheckSettings {
        custody_keys: vec![custody.verifying_key()],
        max_clock_skew_secs: 60,
        max_lifetime_secs: 86_400,
    };
    let view = GroupView {
        name: GroupName::new("warm-1").expect("name"),
        tier: Tier::Warm,
        active: true,
        taproot: Some(g.output.clone()),
    };
    Fixture {
        g,
        custody,
        settings,
        view,
    }
}

const NOW: u64 = 1_800_000_000;

impl Fixture {
    fn request(&self, psbt: &Psbt, amount: u128, destination: &str) -> SignedWithdrawal {
        let request = WithdrawalRequest {
            request_id: RequestId::new("wd-tx").expect("id"),
            key_group: GroupName::new("warm-1").expect("name"),
            tier: Tier::Warm,
            asset: "BTC".into(),
            amount,
            destination: destination.into(),
            payload: Vec::new(),
            psbt: Some(psbt.serialize()),
            created_at: NOW - 10,
            expires_at: NOW + 3600,
            requested_by: "custody-1".into(),
        };
        let custody_signature = self.custody.sign(&request.digest().0).to_bytes().to_vec();
        SignedWithdrawal {
            request,
            custody_signature,
        }
    }

    fn authorize(
        &self,
        signed: &SignedWithdrawal,
        policy: &Policy,
    ) -> Result<crate::authz::AuthorizedWithdrawal, CoreError> {
        let approvals = crate::policy::CheckedApprovals::none();
        authorize_withdrawal(
            signed,
            &self.view,
            &self.settings,
            PolicyInput {
                policy,
                approvals: &approvals,
                ledger: LedgerView::default(),
            },
            NOW,
        )
    }
}

fn refused_with(result: Result<crate::authz::AuthorizedWithdrawal, CoreError>, text: &str) {
    match result {
        Ok(_) => panic!("authorized; expected a refusal mentioning {text:?}"),
        Err(e) => assert!(
            e.to_string().contains(text),
            "{e} does not mention {text:?}"
        ),
    }
}

#[test]
fn group_address_is_the_key_path_output_of_the_tweaked_key() {
    let g = test_group();
    let addr = g.output.address().to_string();
    assert!(addr.starts_with("bcrt1p"), "{addr}");
    assert_eq!(g.output.script_pubkey().len(), 34);
    assert_eq!(
        &g.output.script_pubkey().as_bytes()[2..],
        &g.output.output_key()
    );
    let mainnet = GroupOutput::derive(
        &g.public.verifying_key().serialize().expect("key"),
        Network::Bitcoin,
    )
    .expect("mainnet");
    assert!(mainnet.address().to_string().starts_with("bc1p"));
    assert_eq!(mainnet.output_key(), g.output.output_key());
}

#[test]
fn signed_payment_with_change_is_valid_under_consensus() {
    let f = fixture();
    let to = foreign(7);
    let psbt = build_withdrawal(
        &f.g.output,
        &[coin(1, 600_000), coin(2, 500_000)],
        &[(to.clone(), 700_000)],
        5,
    )
    .expect("psbt");
    let signed = f.request(&psbt, 700_000, &to.to_string());
    let authorized = f.authorize(&signed, &policy(None)).expect("authorized");
    let decoded = authorized.decoded().expect("decoded").clone();
    assert_eq!(decoded.payments.len(), 1);
    assert_eq!(decoded.change.len(), 1);
    assert_eq!(authorized.messages().len(), 2);
    assert_eq!(
        authorized.spend().amount,
        u128::from(700_000 + decoded.fee_sat)
    );
    let sigs = frost_sign(&f.g, &SigningTarget::Withdrawal(Box::new(authorized)));
    for (sig, hash) in sigs.iter().zip(&decoded.sighashes) {
        f.g.output
            .verify(hash, sig)
            .expect("BIP340 under the output key");
    }
    consensus_accepts(&decoded, &sigs);
}

#[test]
fn i4_input_not_owned_by_the_group_is_refused() {
    let f = fixture();
    let to = foreign(7);
    let mut psbt = build_withdrawal(
        &f.g.output,
        &[coin(1, 600_000), coin(2, 500_000)],
        &[(to, 1000)],
        5,
    )
    .expect("psbt");
    psbt.inputs[1].witness_utxo = Some(TxOut {
        value: Amount::from_sat(500_000),
        script_pubkey: foreign(9).script_pubkey(),
    });
    refused_with(
        f.authorize(&f.request(&psbt, 0, ""), &policy(None)),
        "not this group's own output",
    );
    psbt.inputs[1].witness_utxo = None;
    refused_with(
        f.authorize(&f.request(&psbt, 0, ""), &policy(None)),
        "no witness_utxo",
    );
}

#[test]
fn i4_payment_hidden_as_change_to_a_foreign_address_is_counted_as_a_payment() {
    let f = fixture();
    let shop = foreign(7);
    let thief = foreign(8);
    // The "change" output pays the attacker: it is a payment, so the label
    // (which names only the shop) and the allowlist both refuse it.
    let psbt = build_withdrawal(
        &f.g.output,
        &[coin(1, 900_000)],
        &[(shop.clone(), 10_000), (thief, 800_000)],
        2,
    )
    .expect("psbt");
    refused_with(
        f.authorize(&f.request(&psbt, 10_000, &shop.to_string()), &policy(None)),
        "amount label",
    );
    refused_with(
        f.authorize(&f.request(&psbt, 0, ""), &policy(Some(&shop))),
        "not on the allowlist",
    );
    // And with no label and no allowlist the limit still counts it.
    let big = build_withdrawal(
        &f.g.output,
        &[coin(1, 5_000_000)],
        &[(shop.clone(), 10_000), (foreign(8), 2_000_000)],
        2,
    )
    .expect("psbt");
    refused_with(
        f.authorize(&f.request(&big, 0, ""), &policy(None)),
        "per-request limit",
    );
}

#[test]
fn i4_fee_above_either_cap_is_refused() {
    let f = fixture();
    let to = foreign(7);
    // 30,000 sat of fee, over max_fee_sat = 20,000 (and over 50 sat/vB).
    let mut psbt = build_withdrawal(
        &f.g.output,
        &[coin(1, 600_000)],
        &[(to.clone(), 100_000)],
        2,
    )
    .expect("psbt");
    let change = psbt.unsigned_tx.output.len() - 1;
    let v = psbt.unsigned_tx.output[change].value.to_sat();
    psbt.unsigned_tx.output[change].value = Amount::from_sat(v - 30_000);
    refused_with(
        f.authorize(&f.request(&psbt, 100_000, &to.to_string()), &policy(None)),
        "fee 30",
    );
    // A fee under the absolute cap but over 50 sat/vB.
    let rate = build_withdrawal(
        &f.g.output,
        &[coin(1, 600_000)],
        &[(to.clone(), 100_000)],
        60,
    )
    .expect("psbt");
    refused_with(
        f.authorize(&f.request(&rate, 100_000, &to.to_string()), &policy(None)),
        "fee rate",
    );
}

#[test]
fn i4_displayed_amount_or_destination_not_decoded_is_refused() {
    let f = fixture();
    let to = foreign(7);
    let psbt = build_withdrawal(
        &f.g.output,
        &[coin(1, 600_000)],
        &[(to.clone(), 100_000)],
        2,
    )
    .expect("psbt");
    refused_with(
        f.authorize(&f.request(&psbt, 1, &to.to_string()), &policy(None)),
        "amount label says 1 sat",
    );
    refused_with(
        f.authorize(
            &f.request(&psbt, 100_000, &foreign(9).to_string()),
            &policy(None),
        ),
        "destination label",
    );
}

#[test]
fn i4_non_default_sighash_type_is_refused() {
    let f = fixture();
    let mut psbt =
        build_withdrawal(&f.g.output, &[coin(1, 600_000)], &[(foreign(7), 1000)], 2).expect("psbt");
    psbt.inputs[0].sighash_type = Some(PsbtSighashType::from(TapSighashType::AllPlusAnyoneCanPay));
    refused_with(
        f.authorize(&f.request(&psbt, 0, ""), &policy(None)),
        "not SIGHASH_DEFAULT",
    );
    psbt.inputs[0].sighash_type = Some(PsbtSighashType::from(TapSighashType::Default));
    f.authorize(&f.request(&psbt, 0, ""), &policy(None))
        .expect("explicit SIGHASH_DEFAULT is fine");
}

#[test]
fn i4_duplicate_inputs_are_refused() {
    let f = fixture();
    let mut psbt = build_withdrawal(
        &f.g.output,
        &[coin(1, 600_000), coin(2, 600_000)],
        &[(foreign(7), 1000)],
        2,
    )
    .expect("psbt");
    psbt.unsigned_tx.input[1].previous_output = psbt.unsigned_tx.input[0].previous_output;
    refused_with(
        f.authorize(&f.request(&psbt, 0, ""), &policy(None)),
        "a second time",
    );
}

#[test]
fn i4_payload_only_request_on_a_taproot_group_is_refused() {
    let f = fixture();
    let psbt =
        build_withdrawal(&f.g.output, &[coin(1, 600_000)], &[(foreign(7), 1000)], 2).expect("psbt");
    let mut signed = f.request(&psbt, 1000, "bcrt1qsomething");
    signed.request.psbt = None;
    signed.request.payload = vec![1; 32];
    signed.custody_signature = f
        .custody
        .sign(&signed.request.digest().0)
        .to_bytes()
        .to_vec();
    refused_with(f.authorize(&signed, &policy(None)), "taproot group");
}

#[test]
fn i4_psbt_for_another_network_is_refused() {
    let f = fixture();
    let secp = Secp256k1::new();
    let sk = secp256k1::SecretKey::from_slice(&[5; 32]).expect("key");
    let (x, _) = sk.public_key(&secp).x_only_public_key();
    let mainnet = Address::p2tr(&secp, x, None, bitcoin::Network::Bitcoin);
    let psbt = build_withdrawal(
        &f.g.output,
        &[coin(1, 600_000)],
        &[(mainnet.clone(), 1000)],
        2,
    )
    .expect("psbt");
    // The request says it pays a mainnet address; the group decodes a regtest one.
    refused_with(
        f.authorize(&f.request(&psbt, 1000, &mainnet.to_string()), &policy(None)),
        "destination label",
    );
    // A mainnet address in a regtest group's allowlist is a policy error.
    let err = Policy::from_toml(&format!(
        r#"
[groups.warm-1]
tier = "warm"
scheme = "taproot"
network = "regtest"
max_fee_sat = 1
max_fee_rate_sat_vb = 1
max_lifetime_secs = 60
allowlist = ["{mainnet}"]
[groups.warm-1.assets.BTC]
per_request_max = "1"
daily_max = "1"
"#
    ))
    .expect_err("refused");
    assert!(
        err.to_string().contains("not an address for regtest"),
        "{err}"
    );
    // And parse_address names both.
    let e = parse_address("to", &mainnet.to_string(), Network::Regtest).expect_err("refused");
    assert!(e.to_string().contains("regtest"), "{e}");
}

#[test]
fn i4_locktime_dust_and_script_path_are_refused() {
    let f = fixture();
    let base = build_withdrawal(
        &f.g.output,
        &[coin(1, 600_000)],
        &[(foreign(7), 100_000)],
        2,
    )
    .expect("psbt");
    let mut p = base.clone();
    p.unsigned_tx.lock_time = bitcoin::absolute::LockTime::from_consensus(800_000);
    refused_with(
        f.authorize(&f.request(&p, 0, ""), &policy(None)),
        "lock time",
    );
    let mut p = base.clone();
    p.unsigned_tx.output[0].value = Amount::from_sat(100);
    refused_with(f.authorize(&f.request(&p, 0, ""), &policy(None)), "dust");
    let mut p = base.clone();
    p.inputs[0].tap_merkle_root = Some(bitcoin::TapNodeHash::from_byte_array([1; 32]));
    refused_with(
        f.authorize(&f.request(&p, 0, ""), &policy(None)),
        "script tree",
    );
    let mut p = base;
    p.unsigned_tx.output.push(TxOut {
        value: Amount::from_sat(1000),
        script_pubkey: ScriptBuf::from_bytes(vec![0x51, 0x51]),
    });
    p.outputs.push(Default::default());
    refused_with(
        f.authorize(&f.request(&p, 0, ""), &policy(None)),
        "not a standard address",
    );
}

#[test]
fn garbage_psbt_is_invalid_and_names_the_field() {
    let f = fixture();
    let err = decode_withdrawal(b"not a psbt", &f.g.output).expect_err("garbage");
    assert!(err.to_string().contains("psbt"), "{err}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// For any PSBT a node authorizes, payments + fee never exceed the
    /// per-request limit, and a group with an allowlist never pays anyone off it.
    #[test]
    fn i4_authorized_transactions_never_pay_more_than_policy_allows(
        coins in proptest::collection::vec(1_000u64..3_000_000, 1..4),
        outs in proptest::collection::vec((0u8..4, 330u64..2_000_000), 1..5),
        fee_cut in 0u64..50_000,
        with_allowlist in any::<bool>(),
    ) {
        let f = fixture();
        let allowed = foreign(1);
        let total_in: u64 = coins.iter().sum();
        let coins: Vec<_> = coins.iter().enumerate().map(|(i, a)| coin(i as u8 + 1, *a)).collect();
        // Outputs: 0 = change (the group), 1 = the allowlisted address, else strangers.
        let mut psbt = build_withdrawal(&f.g.output, &coins, &[], 1)
            .unwrap_or_else(|_| build_withdrawal(&f.g.output, &coins, &[], 0).expect("psbt"));
        psbt.unsigned_tx.output.clear();
        psbt.outputs.clear();
        let mut out_total = 0u64;
        for (kind, amount) in &outs {
            let script = match kind {
                0 => f.g.output.script_pubkey().clone(),
                1 => allowed.script_pubkey(),
                k => foreign(*k + 10).script_pubkey(),
            };
            out_total += amount;
            psbt.unsigned_tx.output.push(TxOut { value: Amount::from_sat(*amount), script_pubkey: script });
            psbt.outputs.push(Default::default());
        }
        let _ = fee_cut;
        let policy = policy(with_allowlist.then_some(&allowed));
        if let Ok(a) = f.authorize(&f.request(&psbt, 0, ""), &policy) {
            let d = a.decoded().expect("decoded");
            prop_assert!(out_total <= total_in);
            prop_assert!(u128::from(d.outflow_sat()) <= 1_000_000);
            prop_assert_eq!(d.outflow_sat(), total_in - d.change.iter().map(|c| c.amount_sat).sum::<u64>());
            if with_allowlist {
                let allowed = allowed.to_string();
                prop_assert!(d.payments.iter().all(|p| p.address == allowed));
            }
        }
    }
}
