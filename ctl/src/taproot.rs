//! Taproot key groups as this client establishes them (I4): the group's own
//! output is derived here from its group key and network, and an answer from
//! the coordinator that says otherwise is refused, never believed; an address
//! a person types must be for the group's network.
//!
//! Why a coordinator-reported group key is still safe to decode against: a
//! PSBT the nodes sign spends only outputs whose script is the real group's
//! own, and [`decode_withdrawal`](permafrost_core::taproot::decode_withdrawal)
//! here requires every input's script to be the output derived from the key
//! used. Decoding under a wrong key therefore fails on the first input for
//! every PSBT the nodes would sign, so "change" and "payment" can never be
//! shown differently from how the nodes classify them.

use std::str::FromStr;

use bitcoin::address::NetworkUnchecked;
use bitcoin::Address;
use permafrost_core::taproot::{parse_address, GroupOutput, Network, Scheme};
use permafrost_proto as pb;

use crate::CtlError;

/// Every network, in the order error messages list them.
const NETWORKS: [Network; 4] = [
    Network::Bitcoin,
    Network::Testnet,
    Network::Signet,
    Network::Regtest,
];

/// The scheme a wire key group reports; a coordinator that predates schemes
/// reports none, and every group then signed messages.
pub fn scheme_of(g: &pb::KeyGroup) -> Result<Scheme, CtlError> {
    if g.scheme.is_empty() {
        return Ok(Scheme::Message);
    }
    Scheme::from_str(&g.scheme)
        .map_err(|e| CtlError::BadResponse(format!("key group {}: {e}", g.name)))
}

/// For a taproot group, its output derived here from the reported group key
/// and network, after checking that the output key and address the
/// coordinator reports are that same output; `None` for a message group.
pub fn group_output(g: &pb::KeyGroup) -> Result<Option<GroupOutput>, CtlError> {
    if scheme_of(g)? != Scheme::Taproot {
        return Ok(None);
    }
    let bad = |why: String| CtlError::BadResponse(format!("key group {}: {why}", g.name));
    let network = Network::from_str(&g.network).map_err(|e| bad(e.to_string()))?;
    let output =
        GroupOutput::derive(&g.group_public_key, network).map_err(|e| bad(e.to_string()))?;
    if g.output_key != output.output_key() {
        return Err(bad(format!(
            "the coordinator reports output key {}, but the group key {} derives {}; do not use it",
            hex::encode(&g.output_key),
            hex::encode(&g.group_public_key),
            hex::encode(output.output_key())
        )));
    }
    if g.address != output.address().to_string() {
        return Err(bad(format!(
            "the coordinator reports address {:?}, but the group key {} derives {} on {network}; do not pay to it",
            g.address,
            hex::encode(&g.group_public_key),
            output.address()
        )));
    }
    Ok(Some(output))
}

/// The output of a group that must hold bitcoin; a message group is refused by name.
pub fn require_taproot(g: &pb::KeyGroup) -> Result<GroupOutput, CtlError> {
    group_output(g)?.ok_or_else(|| {
        CtlError::InvalidInput(format!(
            "key group {} is a {} group: it has no bitcoin address and signs no transactions \
             (only taproot groups do)",
            g.name,
            scheme_of(g).map_or("message", |s| s.as_str())
        ))
    })
}

/// The output of a group whose key and network the operator gave by hand
/// (`--group-key`, `--network`).
pub fn derive_given(group_key_hex: &str, network: Network) -> Result<GroupOutput, CtlError> {
    let key = hex::decode(group_key_hex.trim())
        .map_err(|e| CtlError::InvalidInput(format!("--group-key: not hex ({e})")))?;
    GroupOutput::derive(&key, network)
        .map_err(|e| CtlError::InvalidInput(format!("--group-key: {e}")))
}

/// Refuses a withdrawal status whose group key or output key is not `group`'s:
/// the coordinator would then be reporting on some other group.
pub fn check_status_group(
    status: &pb::WithdrawalStatus,
    group: &GroupOutput,
) -> Result<(), CtlError> {
    if !status.output_key.is_empty() && status.output_key != group.output_key() {
        return Err(CtlError::BadResponse(format!(
            "withdrawal {}: the coordinator reports output key {}, but the group's own is {}",
            status.request_id,
            hex::encode(&status.output_key),
            hex::encode(group.output_key())
        )));
    }
    if !status.group_public_key.is_empty() {
        let reported = GroupOutput::derive(&status.group_public_key, group.network())
            .map_err(|e| CtlError::BadResponse(format!("withdrawal {}: {e}", status.request_id)))?;
        if reported.output_key() != group.output_key() {
            return Err(CtlError::BadResponse(format!(
                "withdrawal {}: the coordinator reports group key {}, which is not the group's own (output key {})",
                status.request_id,
                hex::encode(&status.group_public_key),
                hex::encode(group.output_key())
            )));
        }
    }
    Ok(())
}

/// Parses an address a person typed in `flag` for a payment from `group_name`
/// on `network`; an address for another network is refused naming both.
pub fn parse_destination(
    flag: &str,
    text: &str,
    group_name: &str,
    network: Network,
) -> Result<Address, CtlError> {
    if let Ok(address) = parse_address("address", text, network) {
        return Ok(address);
    }
    let shown = permafrost_core::error::preview(text);
    match Address::<NetworkUnchecked>::from_str(text) {
        Err(e) => Err(CtlError::InvalidInput(format!(
            "{flag} {shown:?} is not a bitcoin address: {e}"
        ))),
        Ok(unchecked) => {
            let theirs: Vec<&str> = NETWORKS
                .iter()
                .filter(|n| unchecked.is_valid_for_network(n.to_bitcoin()))
                .map(|n| n.as_str())
                .collect();
            Err(CtlError::InvalidInput(format!(
                "{flag} {shown} is an address for {}, but key group {group_name} is on {network}; \
                 give a {network} address",
                theirs.join(" or ")
            )))
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// SEC1 encoding of the secp256k1 generator: a valid group key for tests.
    pub(crate) const GROUP_KEY: &str =
        "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798";

    /// Another valid key (-2G): someone else's output.
    pub(crate) const OTHER_KEY: &str =
        "03c6047f9441ed7d6d3045406e95c07cd85c778e4b8cef3ca7abac09b95c709ee5";

    /// Someone else's regtest output, to pay to or to mistake for the group.
    pub(crate) fn other_output() -> GroupOutput {
        derive_given(OTHER_KEY, Network::Regtest).expect("valid key")
    }

    pub(crate) fn regtest_group() -> GroupOutput {
        derive_given(GROUP_KEY, Network::Regtest).expect("valid key")
    }

    pub(crate) fn wire_group(output: &GroupOutput) -> pb::KeyGroup {
        pb::KeyGroup {
            name: "warm-1".into(),
            tier: pb::Tier::Warm as i32,
            threshold: 2,
            members: vec!["n1".into(), "n2".into(), "n3".into()],
            group_public_key: hex::decode(GROUP_KEY).expect("hex"),
            active: true,
            scheme: "taproot".into(),
            network: output.network().to_string(),
            output_key: output.output_key().to_vec(),
            address: output.address().to_string(),
            epoch: 1,
            removed: Vec::new(),
            ..Default::default()
        }
    }

    #[test]
    fn reported_output_is_derived_and_checked_here() {
        let output = regtest_group();
        let g = wire_group(&output);
        assert_eq!(group_output(&g).expect("consistent"), Some(output.clone()));
        assert!(output.address().to_string().starts_with("bcrt1p"));

        // A coordinator that reports another address (its own, say) is refused.
        let mut lying = g.clone();
        lying.address = derive_given(GROUP_KEY, Network::Bitcoin)
            .expect("key")
            .address()
            .to_string();
        let err = group_output(&lying).expect_err("other address").to_string();
        assert!(err.contains("do not pay to it"), "{err}");
        let mut lying = g;
        lying.output_key[0] ^= 1;
        let err = group_output(&lying).expect_err("other key").to_string();
        assert!(err.contains("output key"), "{err}");
    }

    #[test]
    fn message_groups_have_no_address() {
        let mut g = wire_group(&regtest_group());
        g.scheme = "message".into();
        assert_eq!(group_output(&g).expect("message"), None);
        let err = require_taproot(&g).expect_err("message").to_string();
        assert!(
            err.contains("warm-1") && err.contains("message group"),
            "{err}"
        );
        g.scheme = String::new();
        assert_eq!(scheme_of(&g).expect("old coordinator"), Scheme::Message);
    }

    #[test]
    fn mainnet_address_on_a_regtest_group_is_refused_naming_both() {
        let mainnet = derive_given(GROUP_KEY, Network::Bitcoin)
            .expect("key")
            .address()
            .to_string();
        let err = parse_destination("--to", &mainnet, "warm-1", Network::Regtest)
            .expect_err("mainnet")
            .to_string();
        assert!(
            err.contains("--to") && err.contains("for bitcoin") && err.contains("on regtest"),
            "{err}"
        );
        let err = parse_destination("--to", "not-an-address", "warm-1", Network::Regtest)
            .expect_err("garbage")
            .to_string();
        assert!(err.contains("not a bitcoin address"), "{err}");
        let ok = regtest_group().address().to_string();
        assert!(parse_destination("--to", &ok, "warm-1", Network::Regtest).is_ok());
    }

    #[test]
    fn status_of_another_group_is_refused() {
        let output = regtest_group();
        let mut status = pb::WithdrawalStatus {
            request_id: "wd-1".into(),
            group_public_key: hex::decode(GROUP_KEY).expect("hex"),
            output_key: output.output_key().to_vec(),
            ..Default::default()
        };
        check_status_group(&status, &output).expect("same group");
        status.output_key[3] ^= 1;
        assert!(check_status_group(&status, &output).is_err());
    }
}
