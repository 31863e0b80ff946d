//! A lying signer node for adversarial tests: it presents the real node's
//! identity (a certificate the test CA issued for the same id), forwards every
//! call to the real node, and falsifies what the test asks it to.

use permafrost_proto::signer_node_client::SignerNodeClient;
use permafrost_proto::signer_node_server::{SignerNode, SignerNodeServer};
use permafrost_proto::tls::TlsMaterial;
use permafrost_proto::{self as pb};
use tokio::sync::oneshot;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::Running;

/// How the node lies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lie {
    /// Returns a well-formed but wrong signature share (C1).
    BadShare,
}

struct Liar {
    upstream: SignerNodeClient<Channel>,
    lie: Lie,
}

#[tonic::async_trait]
impl SignerNode for Liar {
    async fn get_status(
        &self,
        r: Request<pb::NodeStatusRequest>,
    ) -> Result<Response<pb::NodeStatus>, Status> {
        self.upstream.clone().get_status(r.into_inner()).await
    }
    async fn dkg_start(
        &self,
        r: Request<pb::DkgStartRequest>,
    ) -> Result<Response<pb::DkgRound1Message>, Status> {
        self.upstream.clone().dkg_start(r.into_inner()).await
    }
    async fn dkg_echo(
        &self,
        r: Request<pb::DkgEchoRequest>,
    ) -> Result<Response<pb::DkgEchoMessage>, Status> {
        self.upstream.clone().dkg_echo(r.into_inner()).await
    }
    async fn dkg_round2(
        &self,
        r: Request<pb::DkgRound2Request>,
    ) -> Result<Response<pb::DkgRound2Response>, Status> {
        self.upstream.clone().dkg_round2(r.into_inner()).await
    }
    async fn dkg_finish(
        &self,
        r: Request<pb::DkgFinishRequest>,
    ) -> Result<Response<pb::DkgKeyReport>, Status> {
        self.upstream.clone().dkg_finish(r.into_inner()).await
    }
    async fn activate_group(
        &self,
        r: Request<pb::ActivateGroupRequest>,
    ) -> Result<Response<pb::ActivateGroupResponse>, Status> {
        self.upstream.clone().activate_group(r.into_inner()).await
    }
    async fn announce(
        &self,
        r: Request<pb::SignedWithdrawal>,
    ) -> Result<Response<pb::AnnounceResponse>, Status> {
        self.upstream.clone().announce(r.into_inner()).await
    }
    async fn commit_refresh(
        &self,
        r: Request<pb::CommitRefreshRequest>,
    ) -> Result<Response<pb::CommitRefreshResponse>, Status> {
        self.upstream.clone().commit_refresh(r.into_inner()).await
    }
    async fn repair_deltas(
        &self,
        r: Request<pb::RepairRequest>,
    ) -> Result<Response<pb::RepairMessages>, Status> {
        self.upstream.clone().repair_deltas(r.into_inner()).await
    }
    async fn repair_sigma(
        &self,
        r: Request<pb::RepairRequest>,
    ) -> Result<Response<pb::DkgSealedShare>, Status> {
        self.upstream.clone().repair_sigma(r.into_inner()).await
    }
    async fn repair_receive(
        &self,
        r: Request<pb::RepairRequest>,
    ) -> Result<Response<pb::DkgKeyReport>, Status> {
        self.upstream.clone().repair_receive(r.into_inner()).await
    }
    async fn replace_member(
        &self,
        r: Request<pb::RepairRequest>,
    ) -> Result<Response<pb::ReplaceMemberResponse>, Status> {
        self.upstream.clone().replace_member(r.into_inner()).await
    }
    async fn commit(
        &self,
        r: Request<pb::CommitRequest>,
    ) -> Result<Response<pb::CommitResponse>, Status> {
        self.upstream.clone().commit(r.into_inner()).await
    }
    async fn sign(
        &self,
        r: Request<pb::SignRequest>,
    ) -> Result<Response<pb::SignResponse>, Status> {
        let withdrawal = matches!(
            r.get_ref().target,
            Some(pb::sign_request::Target::Withdrawal(_))
        );
        let mut resp = self.upstream.clone().sign(r.into_inner()).await?;
        if withdrawal && self.lie == Lie::BadShare {
            // Add one to the scalar: still a valid encoding, never a valid share.
            let share = &mut resp.get_mut().signature_share;
            if let Some(last) = share.last_mut() {
                *last = last.wrapping_add(1);
            }
        }
        Ok(resp)
    }
}

/// Serves a liar for `upstream` on `listener` with the node's identity `tls`.
pub(crate) fn serve(
    listener: tokio::net::TcpListener,
    tls: TlsMaterial,
    upstream: SignerNodeClient<Channel>,
    lie: Lie,
) -> Running {
    let (stop, rx) = oneshot::channel();
    let routes = tonic::service::Routes::new(SignerNodeServer::new(Liar { upstream, lie }));
    let task = tokio::spawn(async move {
        permafrost_proto::server::serve(
            listener,
            &tls,
            routes,
            &[],
            None,
            permafrost_proto::server::ServerLimits::default(),
            async {
                let _ = rx.await;
            },
        )
        .await
        .map_err(|e| e.to_string())
    });
    Running {
        stop: Some(stop),
        task,
        signer: None,
    }
}
