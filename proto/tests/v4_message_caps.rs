//! Threat V4 against the real `server::serve` over real mTLS: every service,
//! health included and whatever limits it was built with, refuses a message
//! over `MAX_MESSAGE_BYTES` (cap + 1 byte) with RESOURCE_EXHAUSTED in either
//! direction, and a bad field comes back as a short INVALID_ARGUMENT naming
//! it, never as an echo of the value or a metadata-size failure.

use std::net::SocketAddr;
use std::time::Duration;

use permafrost_core::authz::SignedWithdrawal as CoreSignedWithdrawal;
use permafrost_core::Role;
use permafrost_proto::auth::PRINCIPAL_URI_PREFIX;
use permafrost_proto::custody_client::CustodyClient;
use permafrost_proto::custody_server::{Custody, CustodyServer};
use permafrost_proto::node_admin_client::NodeAdminClient;
use permafrost_proto::node_admin_server::{NodeAdmin, NodeAdminServer};
use permafrost_proto::server::{serve, ServerLimits, MAX_MESSAGE_BYTES, MAX_STATUS_MESSAGE};
use permafrost_proto::tls::{install_crypto_provider, TlsMaterial};
use permafrost_proto::{
    Approval, GetWithdrawalRequest, NodeStatus, NodeStatusRequest, SealRequest, SignedWithdrawal,
    Tier, UnsealRequest, WithdrawalRequest, WithdrawalStatus,
};
use prost::Message;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

const SERVER_NAME: &str = "c1.coordinator.permafrost";

struct Pki {
    ca_pem: String,
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params
            .distinguished_name
            .push(DnType::CommonName, "V4 test CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key"))
            .expect("CA certificate");
        Self {
            ca_pem: ca.pem(),
            ca,
        }
    }

    /// A leaf for `role`/`id` the way `permafrostctl pki issue` makes one.
    fn leaf(&self, role: Role, id: &str) -> TlsMaterial {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{role}:{id}"));
        params.subject_alt_names = vec![
            SanType::URI(
                format!("{PRINCIPAL_URI_PREFIX}{role}:{id}")
                    .try_into()
                    .expect("URI SAN"),
            ),
            SanType::DnsName(
                format!("{id}.{role}.permafrost")
                    .try_into()
                    .expect("DNS SAN"),
            ),
        ];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.ca).expect("sign");
        TlsMaterial::from_pem(
            self.ca_pem.as_bytes(),
            cert.pem().as_bytes(),
            key.serialize_pem().as_bytes(),
        )
    }
}

/// Custody the way a daemon builds it: both tonic limits set. Submissions go
/// through the real wire conversion; reads answer with more than the cap; an
/// approval is answered with a status that echoes all it was sent.
struct ConvertingCustody;

#[tonic::async_trait]
impl Custody for ConvertingCustody {
    async fn submit_withdrawal(
        &self,
        request: Request<SignedWithdrawal>,
    ) -> Result<Response<WithdrawalStatus>, Status> {
        let signed = CoreSignedWithdrawal::try_from(request.get_ref())?;
        Ok(Response::new(WithdrawalStatus {
            request_id: signed.request.request_id.to_string(),
            ..WithdrawalStatus::default()
        }))
    }

    async fn get_withdrawal(
        &self,
        _: Request<GetWithdrawalRequest>,
    ) -> Result<Response<WithdrawalStatus>, Status> {
        Ok(Response::new(WithdrawalStatus {
            detail: "d".repeat(MAX_MESSAGE_BYTES),
            ..WithdrawalStatus::default()
        }))
    }

    async fn submit_approval(
        &self,
        request: Request<Approval>,
    ) -> Result<Response<WithdrawalStatus>, Status> {
        // A careless handler: the whole value in the status message.
        Err(Status::invalid_argument(format!(
            "approver_id: {:?} is not registered",
            request.get_ref().approver_id
        )))
    }
}

/// NodeAdmin built with no limits of its own: only `serve` caps it.
struct UncappedAdmin;

#[tonic::async_trait]
impl NodeAdmin for UncappedAdmin {
    async fn get_status(
        &self,
        _: Request<NodeStatusRequest>,
    ) -> Result<Response<NodeStatus>, Status> {
        Ok(Response::new(NodeStatus {
            node_id: "n".repeat(MAX_MESSAGE_BYTES),
            ..NodeStatus::default()
        }))
    }

    async fn unseal(&self, _: Request<UnsealRequest>) -> Result<Response<NodeStatus>, Status> {
        Ok(Response::new(NodeStatus::default()))
    }

    async fn seal(&self, _: Request<SealRequest>) -> Result<Response<NodeStatus>, Status> {
        Err(Status::unimplemented("test"))
    }
}

struct Running {
    channel: Channel,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), permafrost_proto::ProtoError>>,
}

impl Running {
    async fn start() -> Self {
        install_crypto_provider();
        let pki = Pki::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr: SocketAddr = listener.local_addr().expect("addr");
        let tls = pki.leaf(Role::Coordinator, "c1");
        let routes = tonic::service::Routes::new(
            CustodyServer::new(ConvertingCustody)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(NodeAdminServer::new(UncappedAdmin));
        let (stop, stopped) = oneshot::channel();
        let names = ["permafrost.v1.Custody", "permafrost.v1.NodeAdmin"];
        let task = tokio::spawn(async move {
            serve(
                listener,
                &tls,
                routes,
                &names,
                None,
                ServerLimits::default(),
                async {
                    let _ = stopped.await;
                },
            )
            .await
        });
        let channel = pki
            .leaf(Role::Custody, "custody-1")
            .channel(&addr.to_string(), SERVER_NAME, Duration::from_secs(20))
            .expect("channel");
        Self {
            channel,
            stop: Some(stop),
            task,
        }
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(20), &mut self.task)
            .await
            .expect("serve returns after shutdown")
            .expect("serve task")
            .expect("serve");
    }

    fn custody(&self) -> CustodyClient<Channel> {
        CustodyClient::new(self.channel.clone())
    }
}

fn request(request_id: String) -> SignedWithdrawal {
    SignedWithdrawal {
        request: Some(WithdrawalRequest {
            request_id,
            key_group: "warm-1".into(),
            tier: Tier::Warm as i32,
            asset: "BTC".into(),
            amount: "150000".into(),
            destination: "bc1qexampledestination".into(),
            payload: vec![7; 32],
            created_at: 1_700_000_000,
            expires_at: 1_700_003_600,
            requested_by: "custody-1".into(),
            ..WithdrawalRequest::default()
        }),
        custody_signature: vec![0; 64],
    }
}

/// What a status costs on the wire: its message (percent-encoding aside) and metadata.
fn trailer_bytes(status: &Status) -> usize {
    let metadata: usize = status
        .metadata()
        .clone()
        .into_headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    status.message().len() + metadata
}

/// A health check request whose encoding is exactly `len` bytes.
fn health_request(len: usize) -> HealthCheckRequest {
    // Tag byte, a three-byte varint length, then the name: 4 bytes of overhead near 1 MiB.
    let request = HealthCheckRequest {
        service: "s".repeat(len - 4),
    };
    assert_eq!(request.encoded_len(), len);
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v4_health_refuses_cap_plus_one_byte_with_resource_exhausted() {
    let server = Running::start().await;
    let mut health = HealthClient::new(server.channel.clone());
    // At the cap the message is read: the (unknown) service is not found.
    let at_cap = health
        .check(health_request(MAX_MESSAGE_BYTES))
        .await
        .expect_err("no such service");
    assert_eq!(at_cap.code(), Code::NotFound, "{at_cap}");
    let over = health
        .check(health_request(MAX_MESSAGE_BYTES + 1))
        .await
        .expect_err("over the cap");
    assert_eq!(over.code(), Code::ResourceExhausted, "{over}");
    // The connection is still good afterwards.
    let ok = health
        .check(HealthCheckRequest {
            service: "permafrost.v1.Custody".into(),
        })
        .await
        .expect("health");
    assert_eq!(ok.into_inner().status, 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v4_oversized_requests_are_resource_exhausted_on_every_service() {
    let server = Running::start().await;
    // Custody has tonic's limits too; NodeAdmin has none and relies on `serve`.
    let custody = server
        .custody()
        .submit_withdrawal(request("r".repeat(MAX_MESSAGE_BYTES)))
        .await
        .expect_err("over the cap");
    assert_eq!(custody.code(), Code::ResourceExhausted, "{custody}");
    let admin = NodeAdminClient::new(server.channel.clone())
        .unseal(UnsealRequest {
            passphrase: "p".repeat(2 * MAX_MESSAGE_BYTES),
        })
        .await
        .expect_err("over the cap");
    assert_eq!(admin.code(), Code::ResourceExhausted, "{admin}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v4_oversized_responses_are_resource_exhausted_not_sent() {
    let server = Running::start().await;
    let custody = server
        .custody()
        .get_withdrawal(GetWithdrawalRequest {
            request_id: "wd-1".into(),
        })
        .await
        .expect_err("response over the cap");
    assert_eq!(custody.code(), Code::ResourceExhausted, "{custody}");
    let admin = NodeAdminClient::new(server.channel.clone())
        .get_status(NodeStatusRequest {})
        .await
        .expect_err("response over the cap");
    assert_eq!(admin.code(), Code::ResourceExhausted, "{admin}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v4_a_900_kb_request_id_gets_a_short_invalid_argument() {
    let server = Running::start().await;
    let status = server
        .custody()
        .submit_withdrawal(request("r".repeat(900_000)))
        .await
        .expect_err("too long");
    assert_eq!(status.code(), Code::InvalidArgument, "{status}");
    assert!(status.message().starts_with("request_id: "), "{status}");
    assert!(status.message().contains("(900000 bytes)"), "{status}");
    let bytes = trailer_bytes(&status);
    assert!(bytes < 512, "the status costs {bytes} bytes: {status}");
    // The same request with a good id passes the conversion.
    server
        .custody()
        .submit_withdrawal(request("wd-1".into()))
        .await
        .expect("a valid request converts");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v4_fields_of_8_to_16_kb_get_invalid_argument_not_a_metadata_error() {
    let server = Running::start().await;
    let mut custody = server.custody();
    for size in [8 * 1024, 12 * 1024, 16 * 1024] {
        let mut long_destination = request("wd-1".into());
        if let Some(w) = long_destination.request.as_mut() {
            w.destination = "d".repeat(size);
        }
        for (field, sent) in [
            ("request_id", request("r".repeat(size))),
            ("destination", long_destination),
        ] {
            let status = custody.submit_withdrawal(sent).await.expect_err(field);
            assert_eq!(
                status.code(),
                Code::InvalidArgument,
                "{field}, {size} bytes: {status}"
            );
            assert!(status.message().contains(field), "{status}");
            assert!(trailer_bytes(&status) < 512, "{field}: {status}");
        }
        // A handler that echoes the whole value is cut by `serve`, code intact.
        let status = custody
            .submit_approval(Approval {
                approver_id: "a".repeat(size),
                ..Approval::default()
            })
            .await
            .expect_err("echoing handler");
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{size} bytes: {status}"
        );
        assert!(status.message().starts_with("approver_id: "), "{status}");
        assert!(
            status.message().len() <= MAX_STATUS_MESSAGE + 32,
            "{} bytes",
            status.message().len()
        );
    }
    server.stop().await;
}
