//! The `NodeAdmin` service (operator role, straight to the node): status and
//! Vault-style manual seal / unseal of the [`crate::vault::ShareVault`]. The
//! unseal passphrase travels only over the operator's mTLS channel and never
//! reaches the coordinator or the disk. It is set at `permafrost-node init`,
//! never by a first unseal; wrong attempts back off exponentially; every
//! seal, unseal and refusal is audited with the operator's id. Any one
//! operator may seal (an emergency stop). Errors answer through the same
//! mapping as the `SignerNode` service (`crate::service`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use permafrost_hsm::{PassphraseSealer, SealError, Sealer};
use permafrost_proto::{self as pb, node_admin_server::NodeAdmin};
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use crate::service::audit;
use crate::{NodeError, SignerNode};

/// Shortest unseal passphrase `init` accepts.
pub(crate) const MIN_UNSEAL_PASSPHRASE: usize = 12;

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

/// Where a manually sealed node keeps its unseal sealer's state (salt, KDF
/// parameters, check value), written once by `permafrost-node init`.
pub(crate) fn manual_seal_dir(data_dir: &std::path::Path) -> std::path::PathBuf {
    data_dir.join("manual-seal")
}

/// Longest wait between wrong unseal attempts.
const MAX_UNSEAL_BACKOFF: Duration = Duration::from_secs(600);

/// Consecutive wrong unseal passphrases back off exponentially: after the
/// n-th the next attempt waits 2^(n-1) s, at most [`MAX_UNSEAL_BACKOFF`];
/// attempts inside the wait are refused without trying the passphrase. One
/// attempt runs at a time (the lock is held across the key derivation), so
/// parallel guesses do not get around it.
#[derive(Debug, Default)]
pub(crate) struct UnsealThrottle {
    failures: u32,
    not_before: Option<Instant>,
}

impl UnsealThrottle {
    /// `Err(wait)` while an earlier failure's backoff lasts.
    fn check(&self, now: Instant) -> Result<(), Duration> {
        match self.not_before {
            Some(t) if t > now => Err(t - now),
            _ => Ok(()),
        }
    }

    /// Records a wrong passphrase; returns the wait before the next attempt.
    fn failed(&mut self, now: Instant) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let wait = Duration::from_secs(1u64 << (self.failures - 1).min(20)).min(MAX_UNSEAL_BACKOFF);
        self.not_before = Some(now + wait);
        wait
    }

    fn succeeded(&mut self) {
        *self = Self::default();
    }
}

/// Opens the operator's passphrase sealer, set up at `init`, and hands it to
/// the vault. A first unseal never sets the passphrase: without the state
/// `init` wrote, the node refuses.
async fn unseal(
    node: &SignerNode,
    operator: &str,
    passphrase: zeroize::Zeroizing<String>,
) -> Result<pb::NodeStatus, NodeError> {
    require_manual_seal(node)?;
    if !node.is_sealed() {
        return node.status();
    }
    let mut throttle = node.unseal_throttle.lock().await;
    if let Err(wait) = throttle.check(Instant::now()) {
        audit(
            node,
            "unseal_throttled",
            serde_json::json!({"operator": operator, "retry_after_secs": wait.as_secs_f64().ceil()}),
        )?;
        return Err(NodeError::Busy {
            what: format!(
                "unseal: {} wrong passphrase(s) in a row; next attempt in {} s",
                throttle.failures,
                wait.as_secs_f64().ceil()
            ),
            retry_after: wait,
        });
    }
    let dir = manual_seal_dir(&node.data_dir);
    if !PassphraseSealer::state_exists(&dir) {
        let reason = format!(
            "{} holds no unseal state; the unseal passphrase is set at `permafrost-node init`, never by an unseal",
            dir.display()
        );
        audit(
            node,
            "unseal_refused",
            serde_json::json!({"operator": operator, "reason": reason}),
        )?;
        return Err(NodeError::Corrupt(reason));
    }
    let opened = tokio::task::spawn_blocking(move || PassphraseSealer::open(&dir, &passphrase))
        .await
        .map_err(|e| NodeError::Bug(format!("unseal task failed: {e}")))?;
    match opened {
        Ok(sealer) => {
            throttle.succeeded();
            audit(node, "unsealed", serde_json::json!({"operator": operator}))?;
            let sealer: Arc<dyn Sealer> = Arc::new(sealer);
            node.vault.install_sealer(sealer)?;
            info!(node = %node.id, %operator, "unsealed");
            node.status()
        }
        Err(e) => {
            let wait =
                matches!(e, SealError::WrongPassphrase).then(|| throttle.failed(Instant::now()));
            warn!(node = %node.id, %operator, error = %e, "unseal refused");
            audit(
                node,
                "unseal_refused",
                serde_json::json!({"operator": operator, "reason": e.to_string(), "failures": throttle.failures, "backoff_secs": wait.map(|w| w.as_secs())}),
            )?;
            Err(match e {
                SealError::WrongPassphrase => NodeError::NotAuthorized(format!(
                    "wrong unseal passphrase; next attempt in {} s",
                    wait.map(|w| w.as_secs()).unwrap_or(0)
                )),
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

/// Drops the share sealer: nothing can be signed until the next unseal. Any
/// one operator may seal (an emergency stop); unsealing needs the passphrase
/// set at init.
fn seal(node: &SignerNode, operator: &str) -> Result<pb::NodeStatus, NodeError> {
    require_manual_seal(node)?;
    // Drop the key first: from here on, nothing can be signed, even if the audit write fails.
    node.vault.drop_sealer()?;
    audit(node, "sealed", serde_json::json!({"operator": operator}))?;
    info!(node = %node.id, %operator, "sealed");
    node.status()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_unseals_back_off_exponentially_and_a_success_resets() {
        let mut t = UnsealThrottle::default();
        let now = Instant::now();
        assert!(t.check(now).is_ok());
        assert_eq!(t.failed(now), Duration::from_secs(1));
        assert!(t.check(now).is_err());
        assert!(t.check(now + Duration::from_secs(1)).is_ok());
        assert_eq!(t.failed(now), Duration::from_secs(2));
        assert_eq!(t.failed(now), Duration::from_secs(4));
        for _ in 0..30 {
            t.failed(now);
        }
        assert_eq!(t.failed(now), MAX_UNSEAL_BACKOFF);
        t.succeeded();
        assert!(t.check(now).is_ok());
        assert_eq!(t.failed(now), Duration::from_secs(1));
    }
}
