//! The coordinator's own API against a real coordinator on 127.0.0.1:0 with
//! real mTLS (its one member node is never started: these tests need none).
//! Input checks (V1), identity by certificate role (A1, X4), health that
//! follows the store (S4), and a shutdown that always finishes.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ed25519_dalek::{Signer, SigningKey};
use permafrost_coordinator::config::CoordinatorConfig;
use permafrost_coordinator::Coordinator;
use permafrost_core::identity::NodeIdentity;
use permafrost_core::manifest::{ClusterManifest, ManifestNode};
use permafrost_core::{unix_now, NodeId, RequestId, Role, Tier};
use permafrost_proto::tls::{TlsFiles, TlsMaterial};
use permafrost_proto::{self as pb, custody_client::CustodyClient};
use permafrostctl::pki;
use tokio::sync::oneshot;
use tonic::Code;

struct Fixture {
    dir: tempfile::TempDir,
    addr: std::net::SocketAddr,
    custody_key: SigningKey,
    coord: Arc<Coordinator>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), permafrost_coordinator::CoordinatorError>>,
}

const POLICY: &str = r#"
[groups.warm-1]
tier = "warm"
max_lifetime_secs = 86400
[groups.warm-1.assets.BTC]
per_request_max = "100000000"
daily_max = "1000000000"
"#;

impl Fixture {
    async fn start() -> Self {
        permafrost_proto::tls::install_crypto_provider();
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let ca = root.join("ca");
        pki::init_ca(&ca, "coordinator test CA").expect("CA");
        let extra = pki::Extra {
            ips: vec!["127.0.0.1".parse().expect("ip")],
            ..Default::default()
        };
        for (role, id) in [
            (Role::Coordinator, "coord-1"),
            (Role::Custody, "custody-1"),
            (Role::Operator, "op-1"),
        ] {
            pki::issue_to_dir(&ca, role, id, &extra, None, &root.join(id)).expect("cert");
        }
        let node = NodeIdentity::generate(&mut rand::thread_rng());
        let manifest = ClusterManifest {
            nodes: vec![ManifestNode {
                id: NodeId::new("n1").expect("id"),
                region: "eu".into(),
                // Nothing listens here: the tests never need a node.
                endpoint: "127.0.0.1:9".into(),
                tls_server_name: pki::server_name(Role::Node, "n1"),
                identity_key: hex::encode(node.identity_key().as_bytes()),
                encryption_key: hex::encode(node.encryption_public_key()),
            }],
        };
        std::fs::write(
            root.join("manifest.json"),
            serde_json::to_string(&manifest).expect("json"),
        )
        .expect("manifest");
        std::fs::write(root.join("policy.toml"), POLICY).expect("policy");
        let custody_key = SigningKey::generate(&mut rand::thread_rng());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let config = CoordinatorConfig {
            id: "coord-1".into(),
            listen: addr,
            data_dir: root.join("data"),
            manifest: root.join("manifest.json"),
            custody_keys: vec![hex::encode(custody_key.verifying_key().as_bytes())],
            policy: root.join("policy.toml"),
            audit_log: None,
            round_timeout_ms: 1_000,
            submit_wait_ms: 500,
            health_interval_ms: 500,
            max_inflight_requests: 16,
            max_sessions_per_node: 8,
            tls: files(root, "coord-1"),
            operators: None,
            admin: Default::default(),
            banked_nonces: true,
        };
        let coord = Coordinator::open(config).expect("open");
        let (stop, rx) = oneshot::channel();
        let task = tokio::spawn(coord.clone().run(listener, async {
            let _ = rx.await;
        }));
        Self {
            dir,
            addr,
            custody_key,
            coord,
            stop: Some(stop),
            task,
        }
    }

    /// Registers an active group as a DKG would have (its member never runs).
    async fn add_group(&self, name: &str) {
        self.coord
            .store()
            .put_group(&permafrost_coordinator::store::GroupRecord {
                v: 1,
                name: permafrost_core::GroupName::new(name).expect("name"),
                tier: Tier::Warm,
                threshold: 1,
                members: vec![NodeId::new("n1").expect("id")],
                removed: Vec::new(),
                removed_at: Default::default(),
                public_key_package: Vec::new(),
                group_public_key: vec![2; 33],
                active: true,
                epoch: 1,
                registry_seq: 0,
                registry: None,
            })
            .await
            .expect("group");
    }

    fn channel(&self, id: &str) -> tonic::transport::Channel {
        TlsMaterial::load(&files(self.dir.path(), id))
            .expect("credentials")
            .channel(
                &self.addr.to_string(),
                &pki::server_name(Role::Coordinator, "coord-1"),
                Duration::from_secs(5),
            )
            .expect("channel")
    }

    fn custody(&self) -> CustodyClient<tonic::transport::Channel> {
        CustodyClient::new(self.channel("custody-1"))
    }

    fn request(&self, id: &str, group: &str) -> permafrost_core::withdrawal::WithdrawalRequest {
        let now = unix_now();
        permafrost_core::withdrawal::WithdrawalRequest {
            request_id: RequestId::new(id).expect("id"),
            key_group: permafrost_core::GroupName::new(group).expect("group"),
            tier: Tier::Warm,
            asset: "BTC".into(),
            amount: 1_000,
            destination: "bc1qtestdestination0000000000000000000".into(),
            payload: vec![7; 32],
            psbt: None,
            created_at: now,
            expires_at: now + 600,
            requested_by: "custody-1".into(),
        }
    }

    fn signed(
        &self,
        r: &permafrost_core::withdrawal::WithdrawalRequest,
        key: &SigningKey,
    ) -> pb::SignedWithdrawal {
        pb::SignedWithdrawal {
            request: Some(r.into()),
            custody_signature: key.sign(&r.digest().0).to_bytes().to_vec(),
        }
    }

    async fn stop(mut self) -> Duration {
        let started = Instant::now();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
        started.elapsed()
    }
}

fn files(root: &Path, id: &str) -> TlsFiles {
    TlsFiles {
        ca_cert: root.join("ca").join(pki::CA_CERT),
        cert: root.join(id).join(format!("{id}.pem")),
        key: root.join(id).join(format!("{id}.key")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_bad_submissions_are_refused_naming_what_is_wrong() {
    let f = Fixture::start().await;
    let mut custody = f.custody();

    // No request at all.
    let err = custody
        .submit_withdrawal(pb::SignedWithdrawal::default())
        .await
        .expect_err("empty submission refused");
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    assert!(err.message().contains("request"), "{}", err.message());

    // A group nobody created.
    let r = f.request("wd-api-0", "warm-9");
    let err = custody
        .submit_withdrawal(f.signed(&r, &f.custody_key))
        .await
        .expect_err("unknown group refused");
    assert_eq!(err.code(), Code::NotFound, "{}", err.message());
    assert!(err.message().contains("warm-9"), "{}", err.message());

    f.add_group("warm-1").await;
    // Signed by a key that is not the custody key.
    let r = f.request("wd-api-1", "warm-1");
    let stranger = SigningKey::generate(&mut rand::thread_rng());
    let err = custody
        .submit_withdrawal(f.signed(&r, &stranger))
        .await
        .expect_err("foreign signature refused");
    assert_eq!(err.code(), Code::PermissionDenied, "{}", err.message());
    assert!(err.message().contains("custody"), "{}", err.message());

    // Over the per-request limit: refused at once, the rule in metadata.
    let mut big = f.request("wd-api-2", "warm-1");
    big.amount = 200_000_000;
    let err = custody
        .submit_withdrawal(f.signed(&big, &f.custody_key))
        .await
        .expect_err("over the limit refused");
    assert_eq!(err.code(), Code::PermissionDenied, "{}", err.message());
    assert_eq!(
        err.metadata()
            .get(permafrost_coordinator::service::POLICY_RULE_METADATA)
            .and_then(|v| v.to_str().ok()),
        Some("per_request_limit")
    );

    // Unknown ids are not found, not invented.
    let err = custody
        .get_withdrawal(pb::GetWithdrawalRequest {
            request_id: "never-submitted".into(),
        })
        .await
        .expect_err("unknown id");
    assert_eq!(err.code(), Code::NotFound, "{}", err.message());
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x4_each_role_reaches_only_its_own_service() {
    let f = Fixture::start().await;
    // The operator's certificate cannot submit withdrawals.
    let err = CustodyClient::new(f.channel("op-1"))
        .submit_withdrawal(pb::SignedWithdrawal::default())
        .await
        .expect_err("operator denied");
    assert_eq!(err.code(), Code::PermissionDenied, "{}", err.message());
    // The custody certificate cannot run ceremonies.
    let err = pb::ceremony_client::CeremonyClient::new(f.channel("custody-1"))
        .list_key_groups(pb::ListKeyGroupsRequest {})
        .await
        .expect_err("custody denied");
    assert_eq!(err.code(), Code::PermissionDenied, "{}", err.message());
    // The operator can list (no groups yet).
    let groups = pb::ceremony_client::CeremonyClient::new(f.channel("op-1"))
        .list_key_groups(pb::ListKeyGroupsRequest {})
        .await
        .expect("operator lists")
        .into_inner();
    assert!(groups.key_groups.is_empty());
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s4_health_follows_the_store_and_shutdown_always_finishes() {
    use tonic_health::pb::{health_check_response::ServingStatus, health_client::HealthClient};
    let f = Fixture::start().await;
    let mut health = HealthClient::new(f.channel("custody-1"));
    let check = |name: &str| tonic_health::pb::HealthCheckRequest {
        service: name.to_string(),
    };
    let status = health.check(check("")).await.expect("health").into_inner();
    assert_eq!(status.status(), ServingStatus::Serving);

    f.coord
        .store()
        .inner()
        .inject_stall(Duration::from_secs(6))
        .expect("stall");
    let mut seen = None;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let s = health
            .check(check("permafrost.v1.Custody"))
            .await
            .expect("health answers while the store is stuck")
            .into_inner();
        if s.status() == ServingStatus::NotServing {
            seen = Some(());
            break;
        }
    }
    assert!(seen.is_some(), "a stuck store never showed in health");
    assert!(f.coord.health().is_err());

    // A request is in flight (its only member never answers) when the shutdown comes.
    let r = f.request("wd-api-shutdown", "warm-1");
    let mut custody = f.custody();
    let signed = f.signed(&r, &f.custody_key);
    let _pending = tokio::spawn(async move { custody.submit_withdrawal(signed).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let took = f.stop().await;
    // The contract is "within 5 s"; the margin is for a loaded machine, not slack in the design.
    assert!(took < Duration::from_secs(8), "shutdown took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s4_admission_control_answers_busy_with_a_retry_hint() {
    let f = Fixture::start().await;
    f.add_group("warm-1").await;
    // Its only member never answers, so every accepted request stays in flight.
    let mut busy = None;
    for i in 0..40 {
        let r = f.request(&format!("wd-adm-{i}"), "warm-1");
        match f
            .custody()
            .submit_withdrawal(f.signed(&r, &f.custody_key))
            .await
        {
            Ok(s) => assert_eq!(s.into_inner().state(), pb::WithdrawalState::Pending),
            Err(e) => {
                busy = Some((i, e));
                break;
            }
        }
    }
    let (i, e) = busy.expect("admission control never refused");
    assert_eq!(e.code(), Code::ResourceExhausted, "{}", e.message());
    assert!(i >= 16, "refused after only {i} requests");
    assert!(
        permafrost_proto::backpressure::retry_after(&e).is_some(),
        "no retry hint: {e:?}"
    );
    // Nothing was stored for the refused request.
    let err = f
        .custody()
        .get_withdrawal(pb::GetWithdrawalRequest {
            request_id: format!("wd-adm-{i}"),
        })
        .await
        .expect_err("refused request not stored");
    assert_eq!(err.code(), Code::NotFound);
    f.stop().await;
}
