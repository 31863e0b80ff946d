//! Threats R1 and R2 against the real `server::serve` over real mTLS: silent
//! and half-open connections are closed and bounded, a client on the same
//! address as the flood still gets in and is still identified by its
//! certificate, health follows the probe, and shutdown never hangs.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream as StdTcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use permafrost_core::Role;
use permafrost_proto::auth::{principal, RequireRole, PRINCIPAL_URI_PREFIX};
use permafrost_proto::node_admin_client::NodeAdminClient;
use permafrost_proto::node_admin_server::{NodeAdmin, NodeAdminServer};
use permafrost_proto::server::{serve, HealthProbe, ServerLimits};
use permafrost_proto::tls::{install_crypto_provider, TlsMaterial};
use permafrost_proto::{NodeStatus, NodeStatusRequest, SealRequest, UnsealRequest};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use tokio::sync::{oneshot, Notify};
use tokio::task::JoinHandle;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

const SERVER_NAME: &str = "n1.node.permafrost";
const SERVICE: &str = "permafrost.v1.NodeAdmin";
/// Generous bound for anything that should take milliseconds; never a latency claim.
const PATIENCE: Duration = Duration::from_secs(20);

/// The flood tests measure sockets; run them one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

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
            .push(DnType::CommonName, "R2 test CA");
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

/// NodeAdmin answering with the caller's certificate id; `unseal` never returns.
struct EchoAdmin {
    entered: Arc<Notify>,
}

#[tonic::async_trait]
impl NodeAdmin for EchoAdmin {
    async fn get_status(
        &self,
        request: Request<NodeStatusRequest>,
    ) -> Result<Response<NodeStatus>, Status> {
        Ok(Response::new(NodeStatus {
            node_id: principal(&request)?.id,
            ..NodeStatus::default()
        }))
    }

    async fn unseal(&self, _: Request<UnsealRequest>) -> Result<Response<NodeStatus>, Status> {
        self.entered.notify_one();
        std::future::pending().await
    }

    async fn seal(&self, _: Request<SealRequest>) -> Result<Response<NodeStatus>, Status> {
        Err(Status::unimplemented("test"))
    }
}

struct Running {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), permafrost_proto::ProtoError>>,
    entered: Arc<Notify>,
}

impl Running {
    async fn start(pki: &Pki, limits: ServerLimits, health: Option<HealthProbe>) -> Self {
        install_crypto_provider();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let tls = pki.leaf(Role::Node, "n1");
        let entered = Arc::new(Notify::new());
        let routes = tonic::service::Routes::new(InterceptedService::new(
            NodeAdminServer::new(EchoAdmin {
                entered: entered.clone(),
            }),
            RequireRole(Role::Operator),
        ));
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            serve(listener, &tls, routes, &[SERVICE], health, limits, async {
                let _ = stopped.await;
            })
            .await
        });
        Self {
            addr,
            stop: Some(stop),
            task,
            entered,
        }
    }

    /// Stops the server and returns how `serve` ended.
    async fn stop(mut self) -> Result<(), permafrost_proto::ProtoError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(PATIENCE, &mut self.task)
            .await
            .expect("serve returns after shutdown")
            .expect("serve task")
    }
}

/// One fresh connection: a health check, then a call that needs the peer's certificate.
async fn client_call(
    tls: &TlsMaterial,
    addr: SocketAddr,
) -> Result<(ServingStatus, String), String> {
    let channel = tls
        .channel(&addr.to_string(), SERVER_NAME, Duration::from_secs(5))
        .map_err(|e| e.to_string())?;
    let health = HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: SERVICE.into(),
        })
        .await
        .map_err(|e| format!("health: {e}"))?
        .into_inner();
    let status = NodeAdminClient::new(channel)
        .get_status(NodeStatusRequest::default())
        .await
        .map_err(|e| format!("get_status: {e}"))?
        .into_inner();
    Ok((health.status(), status.node_id))
}

/// Retries [`client_call`] for up to [`PATIENCE`]; returns the answer and the attempts it took.
async fn client_gets_in(tls: &TlsMaterial, addr: SocketAddr) -> ((ServingStatus, String), u32) {
    let deadline = Instant::now() + PATIENCE;
    let mut attempts = 0;
    loop {
        attempts += 1;
        match client_call(tls, addr).await {
            Ok(answer) => return (answer, attempts),
            Err(e) if Instant::now() < deadline => {
                eprintln!("attempt {attempts} failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("legitimate client locked out after {attempts} attempts: {e}"),
        }
    }
}

/// Whether the server closed this (silent) socket: EOF or reset, not "nothing yet".
fn closed_by_server(mut socket: &StdTcpStream) -> bool {
    let mut byte = [0u8; 1];
    match socket.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
    }
}

/// Soft RLIMIT_NOFILE, from /proc (no unsafe, no libc).
fn open_file_limit() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| {
            limits
                .lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3).map(str::to_string))
        })
        .and_then(|soft| soft.parse().ok())
        .unwrap_or(1024)
}

/// Server-side sockets of `port` in state ESTABLISHED, from /proc/net/tcp:
/// what the server holds open (plus any still in the kernel's accept queue).
fn server_side_established(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let port = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let mut f = l.split_whitespace();
            let local = f.nth(1).unwrap_or("");
            let state = f.nth(1).unwrap_or("");
            local.ends_with(&port) && state == "01"
        })
        .count()
}

fn connect_silent(addr: SocketAddr) -> Option<StdTcpStream> {
    let s = StdTcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    s.set_nonblocking(true).ok()?;
    Some(s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r1_silent_connection_is_closed_after_the_handshake_timeout() {
    let pki = Pki::new();
    let limits = ServerLimits {
        handshake_timeout: Duration::from_millis(300),
        ..ServerLimits::default()
    };
    let server = Running::start(&pki, limits, None).await;
    let addr = server.addr;
    let started = Instant::now();
    let (silent, stalled) = tokio::task::spawn_blocking(move || {
        let read_until_closed = |s: StdTcpStream| {
            s.set_read_timeout(Some(PATIENCE)).expect("timeout");
            closed_by_server(&s)
        };
        // Sends nothing at all.
        let silent = StdTcpStream::connect(addr).expect("connect");
        // Starts a TLS record (handshake, TLS 1.0 header) and stalls inside it.
        let mut stalled = StdTcpStream::connect(addr).expect("connect");
        stalled.write_all(&[0x16, 0x03, 0x01]).expect("write");
        (read_until_closed(silent), read_until_closed(stalled))
    })
    .await
    .expect("join");
    assert!(
        silent,
        "a connection that never sends a ClientHello is closed"
    );
    assert!(stalled, "a connection stalled mid-ClientHello is closed");
    eprintln!(
        "R1: both closed {:?} after connecting (handshake timeout 300 ms)",
        started.elapsed()
    );

    // The server is unharmed.
    let operator = pki.leaf(Role::Operator, "ops-1");
    let ((health, id), _) = client_gets_in(&operator, addr).await;
    assert_eq!(health, ServingStatus::Serving);
    assert_eq!(id, "ops-1");
    server.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r2_half_open_flood_does_not_lock_out_a_client_on_the_same_address() {
    let _serial = SERIAL.lock().await;
    let pki = Pki::new();
    let limits = ServerLimits::default();
    let cap = limits.max_handshaking_per_peer;
    let server = Running::start(&pki, limits, None).await;
    let addr = server.addr;

    // Each flood socket costs this process two descriptors for a while
    // (client end, and server end until evicted); keep well inside the limit.
    let fd_limit = open_file_limit();
    let wanted = 3000;
    let flood_size = wanted.min(fd_limit.saturating_sub(500) / 3);
    if flood_size < wanted {
        eprintln!(
            "R2: RLIMIT_NOFILE is {fd_limit}; flooding with {flood_size} instead of {wanted}"
        );
    }
    let started = Instant::now();
    let flood: Vec<StdTcpStream> = tokio::task::spawn_blocking(move || {
        (0..flood_size)
            .filter_map(|_| connect_silent(addr))
            .collect()
    })
    .await
    .expect("join");
    let opened = flood.len();
    eprintln!(
        "R2: flood of {opened} connected after {:?}",
        started.elapsed()
    );
    assert!(
        opened * 10 >= flood_size * 9,
        "opened only {opened} of {flood_size}"
    );

    // A real client from the same address gets in, and is still identified
    // by its certificate through the server's own TLS stream.
    let operator = pki.leaf(Role::Operator, "ops-1");
    let ((health, id), attempts) = client_gets_in(&operator, addr).await;
    assert_eq!(health, ServingStatus::Serving);
    assert_eq!(id, "ops-1", "peer_certs() sees the client chain");

    // The server holds at most its per-peer handshaking cap of the flood.
    let held = server_side_established(addr.port());
    let closed_now = flood.iter().filter(|s| closed_by_server(s)).count();
    eprintln!(
        "R2: {opened} silent connections held open; client in after {attempts} attempt(s); \
         server holds {held} sockets; {closed_now} flood sockets already closed by the server"
    );
    assert!(
        held <= cap + 8,
        "server holds {held} sockets; half-open cap is {cap}"
    );
    assert!(
        closed_now + cap + 8 >= opened,
        "only {closed_now} of {opened} flood sockets closed"
    );

    // The rest go when their handshake times out (default 5 s).
    let deadline = Instant::now() + PATIENCE;
    let mut closed = closed_now;
    while closed < opened && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        closed = flood.iter().filter(|s| closed_by_server(s)).count();
    }
    eprintln!("R2: after the handshake timeout {closed} of {opened} flood sockets are closed");
    assert_eq!(closed, opened, "every silent socket is closed in the end");
    server.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r2_client_gets_in_while_the_flood_goes_on() {
    let _serial = SERIAL.lock().await;
    let pki = Pki::new();
    let server = Running::start(&pki, ServerLimits::default(), None).await;
    let addr = server.addr;

    // A flood that never pauses: open, keep the newest 1000, drop the oldest.
    let flooding = Arc::new(AtomicBool::new(true));
    let flooded = Arc::new(AtomicUsize::new(0));
    let flooder = {
        let flooding = flooding.clone();
        let flooded = flooded.clone();
        std::thread::spawn(move || {
            let mut held = VecDeque::new();
            while flooding.load(Ordering::Relaxed) {
                if let Some(s) = connect_silent(addr) {
                    held.push_back(s);
                    flooded.fetch_add(1, Ordering::Relaxed);
                }
                if held.len() > 1000 {
                    held.pop_front();
                }
            }
        })
    };
    while flooded.load(Ordering::Relaxed) < 1000 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let operator = pki.leaf(Role::Operator, "ops-1");
    let mut attempts = Vec::new();
    for _ in 0..10 {
        let ((health, id), n) = client_gets_in(&operator, addr).await;
        assert_eq!(health, ServingStatus::Serving);
        assert_eq!(id, "ops-1");
        attempts.push(n);
    }
    flooding.store(false, Ordering::Relaxed);
    flooder.join().expect("flooder");
    eprintln!(
        "R2: 10 fresh client connections during a flood of {} connections; attempts each: {attempts:?}",
        flooded.load(Ordering::Relaxed)
    );
    server.stop().await.expect("clean stop");
}

/// Polls until the service and "" both report `want`.
async fn wait_for_health(
    health: &mut HealthClient<tonic::transport::Channel>,
    want: ServingStatus,
) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let mut all = true;
        for service in [SERVICE, ""] {
            let got = health
                .check(HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .expect("health check")
                .into_inner()
                .status();
            all &= got == want;
        }
        if all {
            return;
        }
        assert!(Instant::now() < deadline, "health never became {want:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_probe_failure_turns_services_not_serving() {
    let pki = Pki::new();
    let healthy = Arc::new(AtomicBool::new(true));
    let probe: HealthProbe = {
        let healthy = healthy.clone();
        Arc::new(move || {
            if healthy.load(Ordering::Relaxed) {
                Ok(())
            } else {
                Err("store unavailable".into())
            }
        })
    };
    let server = Running::start(&pki, ServerLimits::default(), Some(probe)).await;
    let operator = pki.leaf(Role::Operator, "ops-1");
    let channel = operator
        .channel(
            &server.addr.to_string(),
            SERVER_NAME,
            Duration::from_secs(5),
        )
        .expect("channel");
    let mut health = HealthClient::new(channel);
    wait_for_health(&mut health, ServingStatus::Serving).await;
    healthy.store(false, Ordering::Relaxed);
    wait_for_health(&mut health, ServingStatus::NotServing).await;
    healthy.store(true, Ordering::Relaxed);
    wait_for_health(&mut health, ServingStatus::Serving).await;
    server.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_returns_although_a_request_never_finishes() {
    let pki = Pki::new();
    let limits = ServerLimits {
        drain_timeout: Duration::from_millis(300),
        ..ServerLimits::default()
    };
    let server = Running::start(&pki, limits, None).await;
    let addr = server.addr;
    let operator = pki.leaf(Role::Operator, "ops-1");
    let channel = operator
        .channel(&addr.to_string(), SERVER_NAME, Duration::from_secs(30))
        .expect("channel");
    let entered = server.entered.clone();
    let hung = tokio::spawn(async move {
        NodeAdminClient::new(channel)
            .unseal(UnsealRequest::default())
            .await
    });
    tokio::time::timeout(PATIENCE, entered.notified())
        .await
        .expect("the hanging handler is reached");

    server.stop().await.expect("serve returns Ok after cutting");
    let outcome = tokio::time::timeout(PATIENCE, hung)
        .await
        .expect("the hung call ends once its connection is cut")
        .expect("join");
    assert!(outcome.is_err(), "the hung call fails: {outcome:?}");
    assert!(
        StdTcpStream::connect(addr).is_err(),
        "the listener is closed after shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r1_idle_established_connection_is_closed() {
    let pki = Pki::new();
    let limits = ServerLimits {
        idle_timeout: Duration::from_millis(500),
        ..ServerLimits::default()
    };
    let server = Running::start(&pki, limits, None).await;
    let operator = pki.leaf(Role::Operator, "ops-1");
    let channel = operator
        .channel(
            &server.addr.to_string(),
            SERVER_NAME,
            Duration::from_secs(5),
        )
        .expect("channel");
    let status = NodeAdminClient::new(channel.clone())
        .get_status(NodeStatusRequest::default())
        .await
        .expect("call")
        .into_inner();
    assert_eq!(status.node_id, "ops-1");
    assert_eq!(server_side_established(server.addr.port()), 1);
    // The channel stays open but says nothing (keepalive PINGs are 20 s apart).
    let deadline = Instant::now() + PATIENCE;
    while server_side_established(server.addr.port()) > 0 {
        assert!(Instant::now() < deadline, "idle connection never closed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The client just reconnects.
    let status = NodeAdminClient::new(channel)
        .get_status(NodeStatusRequest::default())
        .await
        .expect("call after the idle close");
    assert_eq!(status.into_inner().node_id, "ops-1");
    server.stop().await.expect("clean stop");
}
