//! The `NodeAdmin` service (operator role, straight to the node): status and
//! Vault-style manual seal / unseal of the [`crate::vault::ShareVault`]. The
//! unseal passphrase travels only over the operator's mTLS channel and never
//! reaches the coordinator or the disk. Errors answer through the same
//! mapping as the `SignerNode` service (`crate::service`).

use std::sync::Arc;

use permafrost_hsm::{KdfParams, PassphraseSealer, SealError, Sealer};
use permafrost_proto::{self as pb, node_admin_server::NodeAdmin};
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use crate::service::audit;
use crate::{NodeError, SignerNode};

/// Shortest passphrase accepted when a manual seal is first set up.
const MIN_UNSEAL_PASSPHRASE: usize = 12;

/// gRPC front of node administration.
pub struct AdminService {
    pub(crate) node: Arc<SignerNode>,
}

#[tonic::async_trait]
impl NodeAdmin for AdminService {
    async fn get_status(
        &self,
        _r: Request<pb::NodeStatusRequest>,
    ) -> Result<Response<pb::NodeStatus>, Status> {
        Ok(Response::new(self.node.status()?))
    }

    async fn unseal(
        &self,
        request: Request<pb::UnsealRequest>,
    ) -> Result<Response<pb::NodeStatus>, Status> {
        let operator = permafrost_proto::auth::principal(&request)?.id;
        let passphrase = zeroize::Zeroizing::new(request.into_inner().passphrase);
        Ok(Response::new(
            unseal(&self.node, &operator, passphrase).await?,
        ))
    }

    async fn seal(
        &self,
        request: Request<pb::SealRequest>,
    ) -> Result<Response<pb::NodeStatus>, Status> {
        let operator = permafrost_proto::auth::principal(&request)?.id;
        Ok(Response::new(seal(&self.node, &operator)?))
    }
}

fn require_manual_seal(node: &SignerNode) -> Result<(), NodeError> {
    if node.manual_seal {
        return Ok(());
    }
    Err(NodeError::Precondition(format!(
        "node {} is not configured for manual sealing ([seal] manual = true)",
        node.id
    )))
}

/// Opens (or, the first time, creates) the operator's passphrase sealer and
/// hands it to the vault.
async fn unseal(
    node: &SignerNode,
    operator: &str,
    passphrase: zeroize::Zeroizing<String>,
) -> Result<pb::NodeStatus, NodeError> {
    require_manual_seal(node)?;
    if !node.is_sealed() {
        return node.status();
    }
    let dir = node.data_dir.join("manual-seal");
    let first_time = !dir.join("sealer.json").exists();
    let opened = tokio::task::spawn_blocking(move || {
        if first_time {
            if passphrase.len() < MIN_UNSEAL_PASSPHRASE {
                return Err(SealError::Config {
                    field: "passphrase",
                    value: format!("{} characters", passphrase.len()),
                    reason: format!("the first unseal sets the passphrase; use at least {MIN_UNSEAL_PASSPHRASE} characters"),
                });
            }
            PassphraseSealer::create(&dir, &passphrase, KdfParams::production())
        } else {
            PassphraseSealer::open(&dir, &passphrase)
        }
    })
    .await
    .map_err(|e| NodeError::Bug(format!("unseal task failed: {e}")))?;
    match opened {
        Ok(sealer) => {
            audit(
                node,
                "unsealed",
                serde_json::json!({"operator": operator, "first_time": first_time}),
            )?;
            let sealer: Arc<dyn Sealer> = Arc::new(sealer);
            node.vault.install_sealer(sealer)?;
            info!(node = %node.id, %operator, "unsealed");
            node.status()
        }
        Err(e) => {
            warn!(node = %node.id, %operator, error = %e, "unseal refused");
            audit(
                node,
                "unseal_refused",
                serde_json::json!({"operator": operator, "reason": e.to_string()}),
            )?;
            Err(match e {
                SealError::WrongPassphrase => {
                    NodeError::NotAuthorized("wrong unseal passphrase".into())
                }
                SealError::Config {
                    field,
                    value,
                    reason,
                } => NodeError::InvalidInput {
                    field: field.into(),
                    reason: format!("{value}: {reason}"),
                },
                other => NodeError::Sealer(other),
            })
        }
    }
}

/// Drops the share sealer: nothing can be signed until the next unseal.
fn seal(node: &SignerNode, operator: &str) -> Result<pb::NodeStatus, NodeError> {
    require_manual_seal(node)?;
    // Drop the key first: from here on, nothing can be signed, even if the audit write fails.
    node.vault.drop_sealer()?;
    audit(node, "sealed", serde_json::json!({"operator": operator}))?;
    info!(node = %node.id, %operator, "sealed");
    node.status()
}
