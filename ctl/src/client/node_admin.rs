//! One signer node's `NodeAdmin` service, reached directly over mTLS with
//! the operator certificate: status, seal, unseal.

use permafrost_proto as pb;
use zeroize::Zeroizing;

use super::Connection;
use crate::CtlError;

/// `NodeAdmin.GetStatus` on the node `conn` points at.
pub async fn node_status(conn: &Connection) -> Result<pb::NodeStatus, CtlError> {
    Ok(conn
        .node_admin()?
        .get_status(pb::NodeStatusRequest {})
        .await
        .map_err(conn.failed("NodeAdmin.GetStatus"))?
        .into_inner())
}

/// `NodeAdmin.Seal`: the node drops its share key and refuses to sign until unsealed.
pub async fn seal_node(conn: &Connection) -> Result<pb::NodeStatus, CtlError> {
    Ok(conn
        .node_admin()?
        .seal(pb::SealRequest {})
        .await
        .map_err(conn.failed("NodeAdmin.Seal"))?
        .into_inner())
}

/// `NodeAdmin.Unseal`. The passphrase goes only to the node, over the operator's mTLS channel.
pub async fn unseal_node(
    conn: &Connection,
    mut passphrase: Zeroizing<String>,
) -> Result<pb::NodeStatus, CtlError> {
    // Moved, not copied, into the request; the generated message type cannot
    // zeroize itself, so the encoded buffer is the one copy we do not wipe.
    let request = pb::UnsealRequest {
        passphrase: std::mem::take(&mut *passphrase),
    };
    Ok(conn
        .node_admin()?
        .unseal(request)
        .await
        .map_err(conn.failed("NodeAdmin.Unseal"))?
        .into_inner())
}
