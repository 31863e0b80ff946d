//! How `withdraw`, `approve` and `withdrawal get` establish a taproot group's
//! own output before building, describing or checking a transaction: derived
//! here from the group key and network, never read off the coordinator.
//!
//! `Ceremony.ListKeyGroups` admits only the operator role, while these
//! commands speak to `Custody`. With `--cluster`, the cluster file's operator
//! credential looks the group up (and what the coordinator reports must be
//! what its key derives); a custody-only client instead names the group's key
//! and network with `--group-key` and `--network`.

use permafrost_core::taproot::GroupOutput;
use permafrost_core::GroupName;
use permafrost_proto as pb;

use crate::cli::{ConnectionArgs, GroupIdentityArgs};
use crate::client::{self, ClientRole};
use crate::{taproot, CtlError};

/// `name`'s output, as described in the module docs. With `status` (a
/// withdrawal the coordinator reports), the key it reports may stand in for
/// `--group-key`, and the status must be about this same group.
pub(crate) async fn establish(
    conn: &ConnectionArgs,
    name: &GroupName,
    given: &GroupIdentityArgs,
    status: Option<&pb::WithdrawalStatus>,
) -> Result<GroupOutput, CtlError> {
    let output = if conn.cluster.is_some() {
        let operator = operator_lookup(conn).resolve(ClientRole::Operator)?;
        let group = client::find_key_group(&operator, name).await?;
        let output = taproot::require_taproot(&group)?;
        check_given(name, given, &group)?;
        output
    } else {
        let status_key = status
            .map(|s| hex::encode(&s.group_public_key))
            .filter(|k| !k.is_empty());
        match (given.group_key.clone().or(status_key), given.network) {
            (Some(key), Some(network)) => taproot::derive_given(&key, network)?,
            _ => {
                return Err(CtlError::InvalidInput(format!(
                    "key group {name} holds bitcoin, so this needs its key and network to derive its \
                     address here: give --cluster FILE (looked up with its operator credential), or {}",
                    if status.is_some() {
                        "--network NETWORK (and --group-key HEX to pin the key)"
                    } else {
                        "--group-key HEX and --network NETWORK"
                    }
                )))
            }
        }
    };
    if let Some(status) = status {
        taproot::check_status_group(status, &output)?;
    }
    Ok(output)
}

/// The connection flags for the lookup: the cluster file's operator
/// credential, whichever credential the main call presents (an explicit
/// --cert/--key is the custody one here).
fn operator_lookup(conn: &ConnectionArgs) -> ConnectionArgs {
    ConnectionArgs {
        as_role: Some(ClientRole::Operator),
        cert: None,
        key: None,
        ..conn.clone()
    }
}

/// A key or network given by hand must be what the coordinator reports.
fn check_given(
    name: &GroupName,
    given: &GroupIdentityArgs,
    reported: &pb::KeyGroup,
) -> Result<(), CtlError> {
    if let Some(key) = &given.group_key {
        let key = hex::decode(key.trim())
            .map_err(|e| CtlError::InvalidInput(format!("--group-key: not hex ({e})")))?;
        if key != reported.group_public_key {
            return Err(CtlError::BadResponse(format!(
                "key group {name}: the coordinator reports group key {}, not the --group-key {} you gave",
                hex::encode(&reported.group_public_key),
                hex::encode(&key)
            )));
        }
    }
    if let Some(network) = given.network {
        if reported.network != network.as_str() {
            return Err(CtlError::BadResponse(format!(
                "key group {name}: the coordinator reports network {:?}, not the --network {network} you gave",
                reported.network
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::taproot::tests::{regtest_group, wire_group, GROUP_KEY};
    use permafrost_core::taproot::Network;

    #[test]
    fn lookup_uses_the_operator_credential_of_the_cluster_file() {
        let conn = ConnectionArgs {
            cluster: Some("cluster.json".into()),
            as_role: Some(ClientRole::Custody),
            cert: Some("custody.pem".into()),
            key: Some("custody.key".into()),
            coordinator: Some("127.0.0.1:9".into()),
            ..ConnectionArgs::default()
        };
        let op = operator_lookup(&conn);
        assert_eq!(op.as_role, Some(ClientRole::Operator));
        assert!(op.cert.is_none() && op.key.is_none());
        assert_eq!(op.coordinator.as_deref(), Some("127.0.0.1:9"));
    }

    #[test]
    fn given_key_or_network_must_match_the_coordinator() {
        let name = GroupName::new("warm-1").expect("name");
        let reported = wire_group(&regtest_group());
        let mut given = GroupIdentityArgs {
            group_key: Some(GROUP_KEY.into()),
            network: Some(Network::Regtest),
        };
        check_given(&name, &given, &reported).expect("same");
        given.network = Some(Network::Bitcoin);
        let err = check_given(&name, &given, &reported)
            .expect_err("network")
            .to_string();
        assert!(err.contains("regtest") && err.contains("bitcoin"), "{err}");
    }

    #[tokio::test]
    async fn custody_only_client_derives_from_the_given_key_or_is_told_what_to_give() {
        let name = GroupName::new("warm-1").expect("name");
        let conn = ConnectionArgs::default();
        let given = GroupIdentityArgs {
            group_key: Some(GROUP_KEY.into()),
            network: Some(Network::Regtest),
        };
        let output = establish(&conn, &name, &given, None)
            .await
            .expect("derived");
        assert_eq!(output, regtest_group());
        let err = establish(&conn, &name, &GroupIdentityArgs::default(), None)
            .await
            .expect_err("nothing given")
            .to_string();
        assert!(
            err.contains("--group-key HEX and --network NETWORK"),
            "{err}"
        );
        // With a status, its key stands in for --group-key, and is checked.
        let status = pb::WithdrawalStatus {
            request_id: "wd-1".into(),
            group_public_key: hex::decode(GROUP_KEY).expect("hex"),
            output_key: output.output_key().to_vec(),
            ..Default::default()
        };
        let only_network = GroupIdentityArgs {
            group_key: None,
            network: Some(Network::Regtest),
        };
        assert_eq!(
            establish(&conn, &name, &only_network, Some(&status))
                .await
                .expect("from status"),
            output
        );
    }
}
