//! The `NodeAdmin` service (operator role, straight to the node): status and
//! Vault-style manual seal / unseal. The unseal passphrase travels only over
//! the operator's mTLS channel and never reaches the coordinator or the disk.

use std::sync::Arc;

use permafrost_hsm::{KdfParams, PassphraseSealer, SealError, Sealer};
use permafrost_proto::{self as pb, node_admin_server::NodeAdmin};
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use crate::{NodeError, SignerNode};

/// Shortest passphrase accepted when a manual seal is first set up.
const MIN_UNSEAL_PASSPHRASE: usize = 12;

/// gRPC front of node administration.
pub struct AdminService {
    pub(crate) node: Arc<SignerNode>,
}

impl SignerNode {
    fn audit_or_status(&self, event: &str, detail: serde_json::Value) -> Result<(), Status> {
        self.audit
            .append(event, detail)
            .map_err(|e| Status::unavailable(format!("audit log: {e}")))
    }
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
        let node = &self.node;
        let operator = permafrost_proto::auth::principal(&request)?.id;
        if !node.manual_seal {
            return Err(Status::failed_precondition(format!(
                "node {} is not configured for manual sealing ([seal] manual = true)",
                node.id
            )));
        }
        if !node.is_sealed() {
            return Ok(Response::new(node.status()?));
        }
        let passphrase = zeroize::Zeroizing::new(request.into_inner().passphrase);
        let dir = node.data_dir.join("manual-seal");
        let first_time = !dir.join("sealer.json").exists();
        let opened = tokio::task::spawn_blocking({
            let dir = dir.clone();
            let passphrase = passphrase.clone();
            move || {
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
            }
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?;
        match opened {
            Ok(sealer) => {
                node.audit_or_status(
                    "unsealed",
                    serde_json::json!({"operator": operator, "first_time": first_time}),
                )?;
                let sealer: Arc<dyn Sealer> = Arc::new(sealer);
                *node
                    .share_sealer
                    .write()
                    .map_err(|_| Status::internal("seal lock poisoned"))? = Some(sealer);
                info!(node = %node.id, %operator, "unsealed");
                Ok(Response::new(node.status()?))
            }
            Err(e) => {
                warn!(node = %node.id, %operator, error = %e, "unseal refused");
                node.audit_or_status(
                    "unseal_refused",
                    serde_json::json!({"operator": operator, "reason": e.to_string()}),
                )?;
                Err(match e {
                    SealError::WrongPassphrase => {
                        Status::permission_denied("wrong unseal passphrase")
                    }
                    SealError::Config { .. } => Status::invalid_argument(e.to_string()),
                    other => Status::from(NodeError::Sealer(other)),
                })
            }
        }
    }

    async fn seal(
        &self,
        request: Request<pb::SealRequest>,
    ) -> Result<Response<pb::NodeStatus>, Status> {
        let node = &self.node;
        let operator = permafrost_proto::auth::principal(&request)?.id;
        if !node.manual_seal {
            return Err(Status::failed_precondition(format!(
                "node {} is not configured for manual sealing ([seal] manual = true)",
                node.id
            )));
        }
        // Drop the key first: from here on, nothing can be signed, even if the audit write fails.
        *node
            .share_sealer
            .write()
            .map_err(|_| Status::internal("seal lock poisoned"))? = None;
        node.audit_or_status("sealed", serde_json::json!({"operator": operator}))?;
        info!(node = %node.id, %operator, "sealed");
        Ok(Response::new(node.status()?))
    }
}
