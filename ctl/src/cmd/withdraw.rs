//! `withdraw` (build, sign and submit a withdrawal; custody certificate and
//! key) and `withdrawal get` (look one up), with the local check of what the
//! cluster returns: a message group's signature, or every input of a taproot
//! group's signed transaction.
//!
//! A taproot withdrawal's PSBT is built (or read) and decoded here with the
//! code every node runs, and its labels (amount, destination) are taken from
//! that decode, so they always say what the transaction pays.

use std::path::PathBuf;

use permafrost_core::taproot::{decode_withdrawal, Coin, GroupOutput};
use permafrost_core::withdrawal::WithdrawalRequest;
use permafrost_core::{unix_now, GroupName, RequestId};
use permafrost_proto as pb;
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::group_output;
use crate::approval::{self, RequestFile};
use crate::cli::{WithdrawArgs, WithdrawalCommand};
use crate::client::{self, ClientRole};
use crate::{display, keys, psbt, taproot, CtlError};

/// What a withdrawal asks its group to sign, as the flags say.
#[derive(Debug)]
enum Body {
    /// A message group's payload under labels nothing ties it to.
    Message {
        asset: String,
        amount: u128,
        destination: String,
        payload: Vec<u8>,
    },
    /// A taproot group's transaction.
    Transaction(TransactionSource),
}

/// Where a taproot withdrawal's PSBT comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TransactionSource {
    /// Built here: one payment, change back to the group (`--to` ...).
    Build {
        /// `--to`, as typed.
        to: String,
        /// `--amount`, sat.
        amount_sat: u64,
        /// `--utxo`s.
        coins: Vec<Coin>,
        /// `--fee-rate`, sat/vB.
        fee_rate: u64,
    },
    /// From a wallet (`--psbt FILE`), with the `--amount` the operator expects, if given.
    Wallet {
        /// The PSBT file.
        path: PathBuf,
        /// `--amount`: what the PSBT must pay, sat.
        amount: Option<u128>,
    },
}

/// The fields of a taproot withdrawal request: the PSBT and the labels
/// decoded from it.
#[derive(Debug)]
pub(crate) struct TransactionFields {
    /// The serialized PSBT.
    pub psbt: Vec<u8>,
    /// Payments, sat (the amount label).
    pub amount: u128,
    /// Payment addresses, comma-separated in output order (the destination label).
    pub destination: String,
}

fn body_of(args: &WithdrawArgs) -> Result<Body, CtlError> {
    let source = match (&args.to, &args.psbt) {
        (Some(_), Some(_)) => {
            return Err(CtlError::InvalidInput(
                "give either --to (build the transaction here) or --psbt FILE (from a wallet), not both".into(),
            ))
        }
        (Some(to), None) => {
            let amount = args.amount.ok_or_else(|| {
                CtlError::InvalidInput("--to needs --amount SATS, the payment".into())
            })?;
            let amount_sat = u64::try_from(amount).map_err(|_| {
                CtlError::InvalidInput(format!("--amount {amount} sat is more bitcoin than exists"))
            })?;
            let fee_rate = args.fee_rate.ok_or_else(|| {
                CtlError::InvalidInput("--to needs --fee-rate SAT_VB".into())
            })?;
            Some(TransactionSource::Build {
                to: to.clone(),
                amount_sat,
                coins: args.utxos.clone(),
                fee_rate,
            })
        }
        (None, Some(path)) => Some(TransactionSource::Wallet {
            path: path.clone(),
            amount: args.amount,
        }),
        (None, None) => None,
    };
    if let Some(source) = source {
        if args.destination.is_some() || args.payload_hex.is_some() {
            return Err(CtlError::InvalidInput(
                "--destination and --payload-hex are for message groups; a transaction's \
                 destination is what it pays, decoded from it"
                    .into(),
            ));
        }
        if let Some(asset) = args.asset.as_deref().filter(|a| *a != "BTC") {
            return Err(CtlError::InvalidInput(format!(
                "--asset {asset}: a transaction of a taproot group moves BTC"
            )));
        }
        return Ok(Body::Transaction(source));
    }
    if !args.utxos.is_empty() || args.fee_rate.is_some() {
        return Err(CtlError::InvalidInput(
            "--utxo and --fee-rate build a transaction: give --to ADDRESS too".into(),
        ));
    }
    let missing = |flag: &str| {
        CtlError::InvalidInput(format!(
            "{flag} is required for a message group's withdrawal (a taproot group's takes --to or --psbt)"
        ))
    };
    let asset = args.asset.clone().ok_or_else(|| missing("--asset"))?;
    let amount = args.amount.ok_or_else(|| missing("--amount"))?;
    let destination = args
        .destination
        .clone()
        .ok_or_else(|| missing("--destination"))?;
    let payload = match &args.payload_hex {
        Some(h) => hex::decode(h.trim())
            .map_err(|e| CtlError::InvalidInput(format!("--payload-hex: {e}")))?,
        None => Sha256::digest(format!("{destination}:{amount}")).to_vec(),
    };
    Ok(Body::Message {
        asset,
        amount,
        destination,
        payload,
    })
}

/// Builds or reads the PSBT of `source` for `group` (named `name`), decodes
/// it as every node will, refuses it if the nodes would, and takes the
/// labels from that decode.
pub(crate) fn transaction_fields(
    name: &GroupName,
    group: &GroupOutput,
    source: &TransactionSource,
) -> Result<TransactionFields, CtlError> {
    let (psbt, expected) = match source {
        TransactionSource::Build {
            to,
            amount_sat,
            coins,
            fee_rate,
        } => {
            let to = taproot::parse_destination("--to", to, name.as_str(), group.network())?;
            (
                psbt::build_payment(group, &to, *amount_sat, coins, *fee_rate)?,
                Some(u128::from(*amount_sat)),
            )
        }
        TransactionSource::Wallet { path, amount } => {
            let bytes = std::fs::read(path).map_err(|e| CtlError::io(path, e))?;
            let psbt = psbt::from_file_bytes(&bytes)
                .map_err(|e| CtlError::InvalidFile(format!("--psbt {}: {e}", path.display())))?;
            (psbt, *amount)
        }
    };
    let decoded = decode_withdrawal(&psbt, group).map_err(|e| {
        CtlError::InvalidInput(format!(
            "the nodes of key group {name} would refuse this PSBT: {e}"
        ))
    })?;
    let amount = u128::from(decoded.payments_sat());
    if let Some(expected) = expected.filter(|e| *e != amount) {
        return Err(CtlError::InvalidInput(format!(
            "--amount {expected} sat, but the transaction pays {amount} sat"
        )));
    }
    Ok(TransactionFields {
        psbt,
        amount,
        destination: decoded.destination_label(),
    })
}

/// Runs `withdraw`.
pub async fn run(args: WithdrawArgs) -> Result<(), CtlError> {
    let conn = args.conn.resolve(ClientRole::Custody)?;
    let key_path = match (&args.custody_key, &conn.cluster) {
        (Some(p), _) => p.clone(),
        (None, Some(c)) => c.custody.signing_key.clone(),
        (None, None) => {
            return Err(CtlError::InvalidInput(
                "--custody-key FILE is required without --cluster".into(),
            ))
        }
    };
    let custody_key = keys::load_key_file(&key_path)?;
    let body = body_of(&args)?;
    let request_id = match &args.request_id {
        Some(id) => RequestId::new(id.clone())
            .map_err(|e| CtlError::InvalidInput(format!("--request-id: {e}")))?,
        None => random_request_id()?,
    };
    let created_at = unix_now();
    let mut request = WithdrawalRequest {
        request_id,
        key_group: args.group.clone(),
        tier: args.tier,
        asset: "BTC".into(),
        amount: 0,
        destination: String::new(),
        payload: Vec::new(),
        psbt: None,
        created_at,
        expires_at: created_at.saturating_add(args.expires_in),
        requested_by: args.requested_by.clone(),
    };
    let group = match body {
        Body::Message {
            asset,
            amount,
            destination,
            payload,
        } => {
            request.asset = asset;
            request.amount = amount;
            request.destination = destination;
            request.payload = payload;
            None
        }
        Body::Transaction(source) => {
            let group =
                group_output::establish(&args.conn, &args.group, &args.group_identity, None)
                    .await?;
            let fields = transaction_fields(&args.group, &group, &source)?;
            say!(
                "key group {} ({}, address {} derived here):",
                args.group,
                group.network(),
                group.address()
            );
            say!(
                "{}",
                psbt::describe(&fields.psbt, &group)
                    .map_err(CtlError::Bug)?
                    .trim_end()
            );
            request.amount = fields.amount;
            request.destination = fields.destination;
            request.psbt = Some(fields.psbt);
            Some(group)
        }
    };
    let signed = client::sign_withdrawal(&request, &custody_key)?;
    if let Some(path) = &args.save_request {
        RequestFile::from_request(&request).write(path)?;
        eprintln!(
            "wrote the request to {} for approvers to review",
            path.display()
        );
    }
    let status = client::submit_withdrawal(&conn, signed).await?;
    say!("{}", display::describe_withdrawal(&status).trim_end());
    if status.state == pb::WithdrawalState::Pending as i32 && status.approvals_missing > 0 {
        let file = args
            .save_request
            .as_ref()
            .map_or("<request file>".to_string(), |p| p.display().to_string());
        say!(
            "approvers: permafrostctl approve --request {} --request-file {file} --key <approver key> --approver-id <id>",
            status.request_id
        );
        if args.save_request.is_none() {
            say!("(rerun with --save-request FILE and the same --request-id to write the request file approvers check)");
        }
    }
    let expected = match (&request.psbt, &group) {
        (Some(psbt), Some(group)) => Expected::Transaction { psbt, group },
        _ => Expected::Message(Some(&request.payload)),
    };
    report_signature_check(&status, expected)
}

/// Runs `withdrawal ...`.
pub async fn lookup(cmd: WithdrawalCommand) -> Result<(), CtlError> {
    match cmd {
        WithdrawalCommand::Get {
            request_id,
            request_file,
            group_identity,
            conn,
        } => {
            let status =
                client::get_withdrawal(&conn.resolve(ClientRole::Custody)?, &request_id).await?;
            say!("{}", display::describe_withdrawal(&status).trim_end());
            let Some(path) = request_file else {
                let expected = if status.tx.is_empty() {
                    Expected::Message(None)
                } else {
                    Expected::Unchecked
                };
                return report_signature_check(&status, expected);
            };
            let request = RequestFile::read(&path)?;
            approval::check_request_digest(&request_id, &request, &status)?;
            let signed = status.state == pb::WithdrawalState::Signed as i32;
            match &request.psbt {
                None => report_signature_check(&status, Expected::Message(Some(&request.payload))),
                // Nothing to check yet: no need for the group's key and network.
                Some(_) if !signed => report_signature_check(&status, Expected::Unchecked),
                Some(psbt) => {
                    let group = group_output::establish(
                        &conn,
                        &request.key_group,
                        &group_identity,
                        Some(&status),
                    )
                    .await?;
                    report_signature_check(
                        &status,
                        Expected::Transaction {
                            psbt,
                            group: &group,
                        },
                    )
                }
            }
        }
    }
}

/// What a signed status must have signed, as this command knows it.
pub(crate) enum Expected<'a> {
    /// A message group's payload; `None` when the command has no request and
    /// can only check the reported message under the reported key.
    Message(Option<&'a [u8]>),
    /// A taproot group's request PSBT and its output as established here.
    Transaction {
        /// The request's own PSBT.
        psbt: &'a [u8],
        /// The group's output, derived here.
        group: &'a GroupOutput,
    },
    /// A taproot transaction whose request this command was not given.
    Unchecked,
}

/// For a signed status, verifies what was signed locally and says so; a
/// failed withdrawal becomes an error so scripts see a non-zero exit.
pub(crate) fn report_signature_check(
    status: &pb::WithdrawalStatus,
    expected: Expected<'_>,
) -> Result<(), CtlError> {
    match pb::WithdrawalState::try_from(status.state) {
        Ok(pb::WithdrawalState::Signed) => {
            match expected {
                Expected::Message(payload) => {
                    client::verify_signed(status, payload.unwrap_or(&status.message))?;
                    say!("verified:         the signature is valid for the signed message under the group key");
                }
                Expected::Transaction { psbt, group } => {
                    let tx = client::verify_signed_transaction(status, psbt, group)?;
                    say!(
                        "verified:         it is the request's own transaction, and each of its {} input signature(s) is a valid BIP340 signature over the sighash derived here, under the output key {} derived here",
                        tx.input.len(),
                        hex::encode(group.output_key())
                    );
                    say!("txid:             {}", tx.compute_txid());
                    say!("signed transaction, ready to broadcast (e.g. bitcoin-cli sendrawtransaction):");
                    say!(
                        "{}",
                        hex::encode(bitcoin::consensus::encode::serialize(&tx))
                    );
                }
                Expected::Unchecked => {
                    say!(
                        "not checked here: rerun with --request-file FILE (the request, with its PSBT) to check every input's signature and print the transaction to broadcast"
                    );
                }
            }
            Ok(())
        }
        Ok(pb::WithdrawalState::Failed) => Err(CtlError::WithdrawalFailed {
            request_id: status.request_id.clone(),
            detail: status.detail.clone(),
        }),
        _ => {
            say!(
                "not signed yet; check later with: permafrostctl withdrawal get --request-id {}",
                status.request_id
            );
            Ok(())
        }
    }
}

/// A random request id, `wd-` and 16 hex digits.
pub fn random_request_id() -> Result<RequestId, CtlError> {
    let mut bytes = [0u8; 8];
    rand::thread_rng().fill_bytes(&mut bytes);
    RequestId::new(format!("wd-{}", hex::encode(bytes))).map_err(|e| CtlError::Bug(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::taproot::tests::regtest_group;
    use permafrost_core::taproot::Network;

    /// The flags of `withdraw`, for tests that parse a command line.
    fn parse(args: &[&str]) -> Result<WithdrawArgs, clap::Error> {
        use clap::Parser as _;
        let mut argv = vec!["permafrostctl", "withdraw"];
        argv.extend_from_slice(args);
        match crate::Cli::try_parse_from(argv)?.command {
            crate::Command::Withdraw(args) => Ok(*args),
            other => panic!("parsed as {other:?}"),
        }
    }

    const TXID_A: &str = "1111111111111111111111111111111111111111111111111111111111111111";
    const TXID_B: &str = "2222222222222222222222222222222222222222222222222222222222222222";

    /// A regtest address of some other key (not the group's).
    fn payee() -> String {
        crate::taproot::tests::other_output().address().to_string()
    }

    fn build_flags(to: &str) -> Vec<String> {
        [
            "--group",
            "warm-1",
            "--tier",
            "warm",
            "--to",
            to,
            "--amount",
            "150000",
            "--utxo",
            &format!("{TXID_A}:0:100000"),
            "--utxo",
            &format!("{TXID_B}:1:100000"),
            "--fee-rate",
            "3",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    fn args_of(flags: &[String]) -> WithdrawArgs {
        let refs: Vec<&str> = flags.iter().map(String::as_str).collect();
        parse(&refs).expect("parses")
    }

    fn name() -> GroupName {
        GroupName::new("warm-1").expect("name")
    }

    #[test]
    fn psbt_is_built_from_utxo_to_and_fee_rate_flags() {
        let group = regtest_group();
        let to = payee();
        let args = args_of(&build_flags(&to));
        let Body::Transaction(source) = body_of(&args).expect("body") else {
            panic!("a transaction");
        };
        let fields = transaction_fields(&name(), &group, &source).expect("builds");
        // The labels are what the transaction pays, decoded as the nodes will.
        assert_eq!(fields.amount, 150_000);
        assert_eq!(fields.destination, to);
        let d = decode_withdrawal(&fields.psbt, &group).expect("decodes");
        assert_eq!(d.inputs.len(), 2);
        assert_eq!(d.payments.len(), 1);
        assert_eq!(d.change.len(), 1);
        assert_eq!(d.fee_sat, 3 * d.vsize);
        assert_eq!(d.change[0].amount_sat, 200_000 - 150_000 - d.fee_sat);
        // Such a request is one the nodes accept the shape and labels of.
        let request = WithdrawalRequest {
            request_id: RequestId::new("wd-1").expect("id"),
            key_group: name(),
            tier: permafrost_core::Tier::Warm,
            asset: "BTC".into(),
            amount: fields.amount,
            destination: fields.destination,
            payload: Vec::new(),
            psbt: Some(fields.psbt),
            created_at: 1,
            expires_at: 2,
            requested_by: "custody".into(),
        };
        request.validate().expect("valid");
        permafrost_core::authz::decode_request(
            &request,
            &permafrost_core::authz::GroupView {
                name: name(),
                tier: permafrost_core::Tier::Warm,
                active: true,
                taproot: Some(group),
            },
        )
        .expect("the labels match what the nodes decode");
    }

    #[test]
    fn mainnet_to_on_a_regtest_group_is_refused() {
        let mainnet =
            crate::taproot::derive_given(crate::taproot::tests::GROUP_KEY, Network::Bitcoin)
                .expect("key")
                .address()
                .to_string();
        let args = args_of(&build_flags(&mainnet));
        let Body::Transaction(source) = body_of(&args).expect("body") else {
            panic!("a transaction");
        };
        let err = transaction_fields(&name(), &regtest_group(), &source)
            .expect_err("mainnet address")
            .to_string();
        assert!(
            err.contains("for bitcoin") && err.contains("warm-1 is on regtest"),
            "{err}"
        );
    }

    #[test]
    fn coins_short_of_payment_and_fee_are_refused() {
        let mut flags = build_flags(&payee());
        flags[7] = "199999".into();
        let Body::Transaction(source) = body_of(&args_of(&flags)).expect("body") else {
            panic!("a transaction");
        };
        let err = transaction_fields(&name(), &regtest_group(), &source)
            .expect_err("short")
            .to_string();
        assert!(err.contains("need more"), "{err}");
    }

    #[test]
    fn wallet_psbt_is_read_as_binary_or_base64_and_checked_against_amount() {
        let group = regtest_group();
        let Body::Transaction(source) = body_of(&args_of(&build_flags(&payee()))).expect("body")
        else {
            panic!("a transaction");
        };
        let built = transaction_fields(&name(), &group, &source).expect("builds");
        let dir = tempfile::tempdir().expect("dir");
        let binary = dir.path().join("tx.psbt");
        std::fs::write(&binary, &built.psbt).expect("write");
        let text = dir.path().join("tx.b64");
        std::fs::write(&text, format!("{}\n", psbt::to_base64(&built.psbt))).expect("write");
        for path in [&binary, &text] {
            let args = parse(&[
                "--group",
                "warm-1",
                "--tier",
                "warm",
                "--psbt",
                &path.display().to_string(),
            ])
            .expect("parses");
            let Body::Transaction(source) = body_of(&args).expect("body") else {
                panic!("a transaction");
            };
            let fields = transaction_fields(&name(), &group, &source).expect("reads");
            assert_eq!(fields.psbt, built.psbt);
            assert_eq!(fields.amount, 150_000);
        }
        let args = parse(&[
            "--group",
            "warm-1",
            "--tier",
            "warm",
            "--amount",
            "1",
            "--psbt",
            &binary.display().to_string(),
        ])
        .expect("parses");
        let Body::Transaction(source) = body_of(&args).expect("body") else {
            panic!("a transaction");
        };
        let err = transaction_fields(&name(), &group, &source)
            .expect_err("amount differs")
            .to_string();
        assert!(
            err.contains("--amount 1 sat") && err.contains("150000"),
            "{err}"
        );
        // A PSBT spending another group's coins is refused before it is signed.
        let other = crate::taproot::tests::other_output();
        let err = transaction_fields(&name(), &other, &source)
            .expect_err("not its coins")
            .to_string();
        assert!(
            err.contains("would refuse") && err.contains("not this group's own output"),
            "{err}"
        );
    }

    #[test]
    fn message_withdrawals_keep_their_flags_and_modes_do_not_mix() {
        let args = parse(&[
            "--group",
            "hot-1",
            "--tier",
            "hot",
            "--asset",
            "ETH",
            "--amount",
            "5",
            "--destination",
            "0xabc",
        ])
        .expect("parses");
        let Body::Message { payload, .. } = body_of(&args).expect("body") else {
            panic!("a message");
        };
        assert_eq!(payload, Sha256::digest("0xabc:5").to_vec());
        // A message withdrawal still needs its labels.
        assert!(parse(&["--group", "hot-1", "--tier", "hot", "--amount", "5"]).is_err());
        // --to with --psbt, or --destination with --to, is refused.
        let to = payee();
        assert!(parse(&[
            "--group",
            "warm-1",
            "--tier",
            "warm",
            "--to",
            &to,
            "--amount",
            "1",
            "--utxo",
            &format!("{TXID_A}:0:1000"),
            "--fee-rate",
            "1",
            "--psbt",
            "f",
        ])
        .is_err());
        assert!(parse(&[
            "--group",
            "warm-1",
            "--tier",
            "warm",
            "--to",
            &to,
            "--amount",
            "1",
            "--utxo",
            &format!("{TXID_A}:0:1000"),
            "--fee-rate",
            "1",
            "--destination",
            "x",
        ])
        .is_err());
        // --to without coins or a fee rate is refused by clap.
        assert!(
            parse(&["--group", "warm-1", "--tier", "warm", "--to", &to, "--amount", "1"]).is_err()
        );
        // A malformed --utxo is refused naming the expected form.
        let err = parse(&[
            "--group",
            "warm-1",
            "--tier",
            "warm",
            "--to",
            &to,
            "--amount",
            "1",
            "--utxo",
            "abc:0",
            "--fee-rate",
            "1",
        ])
        .expect_err("bad utxo")
        .to_string();
        assert!(err.contains("TXID:VOUT:SATS"), "{err}");
        let mut flags = build_flags(&to);
        flags.extend(["--asset".to_string(), "ETH".to_string()]);
        assert!(body_of(&args_of(&flags)).is_err());
    }
}
