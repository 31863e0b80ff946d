//! docs/encoding.md's version 2 layout, written out byte by byte as another
//! client would from the document, must be exactly what core encodes and
//! signs for a request built by `permafrostctl`'s PSBT builder.

use bitcoin::hashes::Hash;
use permafrost_core::taproot::{decode_withdrawal, Coin, GroupOutput, Network};
use permafrost_core::withdrawal::WithdrawalRequest;
use permafrost_core::{GroupName, RequestId, Tier};
use permafrostctl::approval::RequestFile;
use sha2::{Digest, Sha256};

fn field(tag: u8, value: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&(value.len() as u32).to_be_bytes());
    out.extend_from_slice(value);
    out
}

/// The version 2 encoding exactly as docs/encoding.md spells it.
fn encode_as_documented(r: &WithdrawalRequest, psbt: &[u8]) -> Vec<u8> {
    let mut out = b"PERMAFROST/WITHDRAWAL".to_vec();
    out.extend_from_slice(&2u16.to_be_bytes());
    out.extend(field(1, r.request_id.as_str().as_bytes()));
    out.extend(field(2, r.key_group.as_str().as_bytes()));
    out.extend(field(3, &[2]));
    out.extend(field(4, b"BTC"));
    out.extend(field(5, &r.amount.to_be_bytes()));
    out.extend(field(6, r.destination.as_bytes()));
    out.extend(field(11, psbt));
    out.extend(field(8, &r.created_at.to_be_bytes()));
    out.extend(field(9, &r.expires_at.to_be_bytes()));
    out.extend(field(10, r.requested_by.as_bytes()));
    out
}

fn group(key_hex: &str) -> GroupOutput {
    GroupOutput::derive(&hex::decode(key_hex).expect("hex"), Network::Regtest).expect("key")
}

#[test]
fn version_2_layout_is_what_the_document_says() {
    let warm = group("0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798");
    let payee = group("03c6047f9441ed7d6d3045406e95c07cd85c778e4b8cef3ca7abac09b95c709ee5");
    let coin = Coin {
        outpoint: bitcoin::OutPoint {
            txid: bitcoin::Txid::from_byte_array([7; 32]),
            vout: 1,
        },
        amount_sat: 500_000,
    };
    let psbt = permafrostctl::psbt::build_payment(&warm, payee.address(), 120_000, &[coin], 2)
        .expect("builds");
    assert!(psbt.starts_with(b"psbt\xff"), "binary, not base64");
    let decoded = decode_withdrawal(&psbt, &warm).expect("decodes");
    let request = WithdrawalRequest {
        request_id: RequestId::new("wd-doc").expect("id"),
        key_group: GroupName::new("warm-1").expect("group"),
        tier: Tier::Warm,
        asset: "BTC".into(),
        amount: u128::from(decoded.payments_sat()),
        destination: decoded.destination_label(),
        payload: Vec::new(),
        psbt: Some(psbt.clone()),
        created_at: 1_700_000_000,
        expires_at: 1_700_003_600,
        requested_by: "custody".into(),
    };
    request.validate().expect("valid");
    assert_eq!(request.amount, 120_000);
    assert_eq!(request.destination, payee.address().to_string());
    let documented = encode_as_documented(&request, &psbt);
    assert_eq!(request.encode(), documented);
    assert_eq!(
        request.digest().0,
        <[u8; 32]>::from(Sha256::digest(&documented))
    );
    assert_eq!(
        WithdrawalRequest::decode(&documented).expect("decodes"),
        request
    );
    // The request file an approver receives carries the same PSBT and digest.
    let file = RequestFile::from_request(&request);
    assert_eq!(file.digest, request.digest().to_hex());
    assert_eq!(file.to_request().expect("round trip"), request);
}
