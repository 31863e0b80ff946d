//! Serving a set of gRPC services over mTLS with health checking and
//! reflection, behind our own accept loop (threats R1, R2): TCP_NODELAY on
//! every socket, a timed TLS handshake, caps on half-open and established
//! connections, HTTP/2 keepalive, idle and request timeouts, a message-size
//! cap on every service (V4), and a shutdown that always returns within
//! [`ServerLimits::drain_timeout`] plus half a second.

mod admission;
mod events;
mod message_caps;
mod stream;

use crate::ProtoError;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::MissedTickBehavior;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tonic::service::Routes;
use tonic::transport::Server;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::tls::TlsMaterial;
use admission::{lock, Caps, ConnTable, NotPromoted, PeerKey, SharedTable};
use events::{ConnEvent, ConnEvents};
use message_caps::MessageCapLayer;
pub use message_caps::MAX_STATUS_MESSAGE;
use stream::{EstablishedSlot, GuardedStream};

/// Largest gRPC message any Permafrost server accepts or sends (V4). [`serve`]
/// enforces it on every service, answering RESOURCE_EXHAUSTED; daemons also
/// build their services with it as both limits, so none relies on tonic's
/// 4 MiB default.
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// A readiness check polled every [`HEALTH_POLL`]: `Err(reason)` turns every
/// health service NOT_SERVING until it passes again. It runs on the async
/// runtime, so it must be quick and never block (read a flag, not a disk).
pub type HealthProbe = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// The probe of a daemon: runs `check` on it while it lives. Holds it weakly,
/// so the server's health task never keeps a stopped daemon (and its store) open.
pub fn probe_of<T: Send + Sync + 'static>(
    daemon: &Arc<T>,
    check: fn(&T) -> Result<(), String>,
) -> HealthProbe {
    let daemon = Arc::downgrade(daemon);
    Arc::new(move || match daemon.upgrade() {
        Some(d) => check(&d),
        None => Err("stopped".into()),
    })
}

/// How often a [`HealthProbe`] is polled.
pub const HEALTH_POLL: Duration = Duration::from_millis(500);

/// After the grace of [`ServerLimits::drain_timeout`], connections are cut and
/// `serve` waits at most this much more for them to go.
const CUT_GRACE: Duration = Duration::from_millis(500);

/// Longest a drain may be configured to last: shutdown must finish within 5 s.
const MAX_DRAIN: Duration = Duration::from_secs(4);

/// Connection limits of a server (threats R1, R2). The defaults fit a cluster
/// of tens of principals; at the caps a server holds about 1,300 sockets
/// (256 handshaking + 1024 established), so its RLIMIT_NOFILE should be
/// above that. Every field is documented with its default.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerLimits {
    /// From accept to a finished TLS handshake; a real client needs a few
    /// round trips. Default 5 s.
    pub handshake_timeout: Duration,
    /// Connections still in the TLS handshake, all peers together. When
    /// full, the oldest silent one of the busiest peer is evicted: a new
    /// connection is never refused for this. Default 1024.
    pub max_handshaking: usize,
    /// Handshaking connections per peer (IPv4 address or IPv6 /64); when
    /// full, that peer's oldest silent (else oldest) handshake is evicted.
    /// Default 512: a client opening a few hundred connections at once (one
    /// per request in flight) must not evict its own handshakes.
    pub max_handshaking_per_peer: usize,
    /// Established (authenticated) connections, all peers together; beyond
    /// it a new connection is accepted and closed at once. Default 4096
    /// (each costs one descriptor; daemons run with a 20,000 limit or more).
    pub max_established: usize,
    /// Established connections per peer. Default 2048: a custody service
    /// may open a connection per request in flight, and tests and local
    /// clusters run every principal on 127.0.0.1.
    pub max_established_per_peer: usize,
    /// HTTP/2 streams (concurrent requests) per connection. Default 256.
    pub max_concurrent_streams: u32,
    /// Longest a request handler may run. Default 10 min: a key ceremony of
    /// a 67-of-100 group is one `CreateKeyGroup` call and takes minutes on
    /// small machines; withdrawals answer within `submit_wait_ms` anyway.
    pub request_timeout: Duration,
    /// HTTP/2 PING after this long without hearing from the peer. Default 20 s.
    pub keepalive_interval: Duration,
    /// The connection is dropped if a PING is not answered within this. Default 10 s.
    pub keepalive_timeout: Duration,
    /// A connection with no bytes either way for this long is closed.
    /// Keepalive PINGs count as bytes, so this catches connections whose
    /// HTTP/2 never started (and any with keepalive off); keepalive catches
    /// dead peers. Default 5 min.
    pub idle_timeout: Duration,
    /// After shutdown, in-flight requests get this long to finish before
    /// their connections are cut; at most 4 s. Default 3.5 s.
    pub drain_timeout: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(5),
            max_handshaking: 1024,
            max_handshaking_per_peer: 512,
            max_established: 4096,
            max_established_per_peer: 2048,
            max_concurrent_streams: 256,
            request_timeout: Duration::from_secs(600),
            keepalive_interval: Duration::from_secs(20),
            keepalive_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            drain_timeout: Duration::from_millis(3500),
        }
    }
}

impl ServerLimits {
    /// Checks that every cap admits something and every timeout is positive,
    /// naming the offending field.
    pub fn validate(&self) -> Result<(), ProtoError> {
        let bad = |field: &str, reason: String| ProtoError::InvalidConfig {
            field: format!("server limits: {field}"),
            reason,
        };
        let counts = [
            ("max_handshaking", self.max_handshaking),
            ("max_handshaking_per_peer", self.max_handshaking_per_peer),
            ("max_established", self.max_established),
            ("max_established_per_peer", self.max_established_per_peer),
            (
                "max_concurrent_streams",
                self.max_concurrent_streams as usize,
            ),
        ];
        for (name, value) in counts {
            if value == 0 {
                return Err(bad(name, "is 0; it must be at least 1".into()));
            }
        }
        let durations = [
            ("handshake_timeout", self.handshake_timeout),
            ("request_timeout", self.request_timeout),
            ("keepalive_interval", self.keepalive_interval),
            ("keepalive_timeout", self.keepalive_timeout),
            ("idle_timeout", self.idle_timeout),
        ];
        for (name, value) in durations {
            if value.is_zero() {
                return Err(bad(name, "is 0; it must be positive".into()));
            }
        }
        if self.drain_timeout > MAX_DRAIN {
            return Err(bad(
                "drain_timeout",
                format!(
                    "is {:?}; at most {MAX_DRAIN:?} so shutdown finishes within 5 s",
                    self.drain_timeout
                ),
            ));
        }
        Ok(())
    }

    fn caps(&self) -> Caps {
        Caps {
            handshaking: self.max_handshaking,
            handshaking_per_peer: self.max_handshaking_per_peer,
            established: self.max_established,
            established_per_peer: self.max_established_per_peer,
        }
    }
}

/// Serves `routes` plus health (`service_names` and "" SERVING while `health`
/// passes) and reflection (`grpc.reflection.v1` and `v1alpha`) on `listener` over mTLS until `shutdown` resolves,
/// every message of every service capped at [`MAX_MESSAGE_BYTES`] and every
/// status message at [`MAX_STATUS_MESSAGE`]; then stops accepting, lets in-flight requests drain for at most
/// `limits.drain_timeout`, cuts what is left and returns.
pub async fn serve(
    listener: TcpListener,
    tls: &TlsMaterial,
    routes: Routes,
    service_names: &[&str],
    health: Option<HealthProbe>,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ProtoError> {
    limits.validate()?;
    let acceptor = TlsAcceptor::from(tls.rustls_server_config()?);
    let (reporter, health_service) = tonic_health::server::health_reporter();
    let health_service = health_service
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let names: Vec<String> = service_names
        .iter()
        .map(|s| s.to_string())
        .chain([String::new()])
        .collect();
    set_all(&reporter, &names, ServingStatus::Serving).await;
    // Reflection in both versions: grpcurl and current clients speak v1;
    // Python's grpcio-reflection, Postman, Evans and older grpcurl v1alpha.
    // Each version describes both, and advertises only what this server
    // serves (the descriptor file holds every Permafrost service).
    let reflection = || {
        let builder = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            )
            .include_reflection_service(false);
        service_names
            .iter()
            .copied()
            .chain([
                "grpc.health.v1.Health",
                "grpc.reflection.v1.ServerReflection",
                "grpc.reflection.v1alpha.ServerReflection",
            ])
            .fold(builder, |b, name| b.with_service_name(name))
    };
    let reflection_error = |e| ProtoError::Server(format!("reflection: {e}"));
    let reflection_v1 = reflection()
        .build_v1()
        .map_err(reflection_error)?
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .map_err(reflection_error)?
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let routes = routes
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);

    // `stop`: accepting ends and tonic starts its graceful drain.
    // `cut`: every connection still open fails its next read or write.
    let (stop_tx, stop_rx) = watch::channel(false);
    let (cut_tx, cut_rx) = watch::channel(false);
    let (conn_tx, conn_rx) = mpsc::channel(64);
    let events = Arc::new(ConnEvents::default());
    let gate = Arc::new(Gate {
        tls: acceptor,
        limits: limits.clone(),
        table: Arc::new(std::sync::Mutex::new(ConnTable::new(limits.caps()))),
        conns: conn_tx,
        cut: cut_rx,
        events: events.clone(),
    });
    let accepting = tokio::spawn(accept_loop(listener, gate, stop_rx.clone()));
    let probing =
        health.map(|probe| tokio::spawn(watch_health(probe, reporter, names, stop_rx.clone())));

    let mut stopped = stop_rx.clone();
    let server = Server::builder()
        .timeout(limits.request_timeout)
        .concurrency_limit_per_connection(limits.max_concurrent_streams as usize)
        .max_concurrent_streams(limits.max_concurrent_streams)
        .http2_keepalive_interval(Some(limits.keepalive_interval))
        .http2_keepalive_timeout(Some(limits.keepalive_timeout))
        .layer(MessageCapLayer {
            max: MAX_MESSAGE_BYTES,
        })
        .add_routes(routes)
        .serve_with_incoming_shutdown(ReceiverStream::new(conn_rx), async move {
            let _ = stopped.wait_for(|s| *s).await;
        });
    let mut server = pin!(server);
    let mut shutdown = pin!(shutdown);

    let ended_by_itself = tokio::select! {
        biased;
        () = &mut shutdown => None,
        r = &mut server => Some(r),
    };
    let result = match ended_by_itself {
        Some(r) => r.map_err(|e| ProtoError::Server(e.to_string())),
        None => {
            let _ = stop_tx.send(true);
            match tokio::time::timeout(limits.drain_timeout, &mut server).await {
                Ok(r) => r.map_err(|e| ProtoError::Server(e.to_string())),
                Err(_) => {
                    tracing::warn!(
                        grace = ?limits.drain_timeout,
                        "requests still in flight after the shutdown grace; cutting their connections"
                    );
                    let _ = cut_tx.send(true);
                    let _ = tokio::time::timeout(CUT_GRACE, &mut server).await;
                    Ok(())
                }
            }
        }
    };
    // Whatever ended the server, nothing it accepted outlives this call.
    let _ = stop_tx.send(true);
    let _ = cut_tx.send(true);
    if let Err(e) = accepting.await {
        tracing::error!(error = %e, "accept loop failed");
    }
    if let Some(probing) = probing {
        probing.abort();
    }
    events.flush(true);
    result
}

async fn set_all(reporter: &HealthReporter, names: &[String], status: ServingStatus) {
    for name in names {
        reporter.set_service_status(name, status).await;
    }
}

/// Polls `probe` and mirrors it into the health service until `stop`.
async fn watch_health(
    probe: HealthProbe,
    reporter: HealthReporter,
    names: Vec<String>,
    mut stop: watch::Receiver<bool>,
) {
    /// While failing, the reason is repeated at most this often (or when it changes).
    const REPEAT: Duration = Duration::from_secs(30);
    let mut tick = tokio::time::interval(HEALTH_POLL);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut failing: Option<(String, tokio::time::Instant)> = None;
    loop {
        tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => return,
            _ = tick.tick() => {}
        }
        // A panicking probe is a failing probe, not a health service stuck at its last answer.
        let verdict = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| probe()))
            .unwrap_or_else(|_| Err("health probe panicked".to_string()));
        match (verdict, failing.take()) {
            (Ok(()), None) => {}
            (Ok(()), Some(_)) => {
                tracing::info!("health probe passes again; services SERVING");
                set_all(&reporter, &names, ServingStatus::Serving).await;
            }
            (Err(reason), None) => {
                tracing::warn!(%reason, "health probe fails; services NOT_SERVING");
                set_all(&reporter, &names, ServingStatus::NotServing).await;
                failing = Some((reason, tokio::time::Instant::now()));
            }
            (Err(reason), Some((last, logged))) => {
                if reason != last || logged.elapsed() >= REPEAT {
                    tracing::warn!(%reason, "health probe still fails; services NOT_SERVING");
                    failing = Some((reason, tokio::time::Instant::now()));
                } else {
                    failing = Some((last, logged));
                }
            }
        }
    }
}

/// Everything the accept loop and handshake tasks share.
struct Gate {
    tls: TlsAcceptor,
    limits: ServerLimits,
    table: SharedTable,
    conns: mpsc::Sender<io::Result<TlsStream<GuardedStream>>>,
    cut: watch::Receiver<bool>,
    events: Arc<ConnEvents>,
}

/// Accepts until `stop`, handing each socket to [`Gate::admit`]; on the way
/// out it closes the listener and every handshake still in progress.
async fn accept_loop(listener: TcpListener, gate: Arc<Gate>, mut stop: watch::Receiver<bool>) {
    /// Well below the default per-peer handshaking cap; see the yield below.
    const ACCEPTS_PER_YIELD: u32 = 16;
    let mut since_yield = 0;
    let mut report = tokio::time::interval(Duration::from_secs(1));
    report.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            accepted = listener.accept() => accepted,
            _ = report.tick() => {
                gate.events.flush(false);
                continue;
            }
        };
        match accepted {
            Ok((socket, peer)) => {
                gate.admit(socket, peer);
                // Let the new handshake tasks read before accepting more:
                // otherwise a burst of accepts (up to tokio's budget of 128,
                // above the per-peer cap) can evict a client whose ClientHello
                // arrived after its accept but was not read yet, making it
                // look as silent as the flood. Not after every accept: that
                // slowed accepting under flood several-fold in tests here.
                since_yield += 1;
                if since_yield >= ACCEPTS_PER_YIELD {
                    since_yield = 0;
                    tokio::task::yield_now().await;
                }
            }
            Err(e) => {
                gate.events.note(ConnEvent::AcceptFailed, None, &e);
                // EMFILE/ENFILE (24/23 on Linux and the BSDs): the pending
                // connection stays in the backlog and accept fails again at
                // once, so free a descriptor held by a half-open connection,
                // and back off instead of spinning.
                let out_of_fds = matches!(e.raw_os_error(), Some(23 | 24));
                let evicted = if out_of_fds {
                    lock(&gate.table).evict_any()
                } else {
                    None
                };
                let pause = match evicted {
                    Some(victim) => {
                        victim.close();
                        Duration::from_millis(10)
                    }
                    None => Duration::from_millis(100),
                };
                tokio::select! {
                    biased;
                    _ = stop.wait_for(|s| *s) => break,
                    () = tokio::time::sleep(pause) => {}
                }
            }
        }
    }
    drop(listener);
    let pending = lock(&gate.table).drain_pending();
    for p in pending {
        p.close();
    }
}

impl Gate {
    fn admit(self: &Arc<Self>, socket: TcpStream, peer: SocketAddr) {
        if let Err(e) = socket.set_nodelay(true) {
            tracing::debug!(peer = %peer, error = %e, "cannot set TCP_NODELAY");
        }
        let key = PeerKey::of(peer.ip());
        let heard = Arc::new(AtomicBool::new(has_bytes_waiting(&socket)));
        let evicted = {
            let mut table = lock(&self.table);
            if !table.can_establish(key) {
                drop(table);
                // Accept-and-close keeps the kernel backlog moving.
                drop(socket);
                self.events
                    .note(ConnEvent::EstablishedFull, Some(peer), &"at accept");
                return;
            }
            let (id, evicted) = table.begin(key, peer, heard.clone());
            let stream =
                GuardedStream::new(socket, self.limits.idle_timeout, self.cut.clone(), heard);
            let task = tokio::spawn(self.clone().handshake(stream, key, id, peer));
            table.set_abort(key, id, task.abort_handle());
            evicted
        };
        for victim in evicted {
            self.events.note(
                ConnEvent::Evicted,
                Some(victim.peer),
                &"handshaking cap full",
            );
            victim.close();
        }
    }

    /// Runs handshake `id` under its timeout, then hands the connection to tonic.
    async fn handshake(
        self: Arc<Self>,
        stream: GuardedStream,
        key: PeerKey,
        id: u64,
        peer: SocketAddr,
    ) {
        // Leaves the table however this task ends, eviction's abort included.
        let mut pending = PendingSlot {
            table: &self.table,
            key,
            id: Some(id),
        };
        let mut tls = match tokio::time::timeout(
            self.limits.handshake_timeout,
            self.tls.accept(stream),
        )
        .await
        {
            Err(_) => {
                let timeout = self.limits.handshake_timeout;
                self.events.note(
                    ConnEvent::HandshakeTimeout,
                    Some(peer),
                    &format_args!("after {timeout:?}"),
                );
                return;
            }
            Ok(Err(e)) => {
                self.events.note(ConnEvent::HandshakeFailed, Some(peer), &e);
                return;
            }
            Ok(Ok(tls)) => tls,
        };
        pending.id = None;
        let promoted = lock(&self.table).promote(key, id);
        match promoted {
            Ok(()) => {}
            Err(NotPromoted::Evicted) => return,
            Err(NotPromoted::Full) => {
                self.events
                    .note(ConnEvent::EstablishedFull, Some(peer), &"after handshake");
                return;
            }
        }
        tls.get_mut().0.hold(EstablishedSlot {
            table: self.table.clone(),
            key,
        });
        // Fails only when tonic has stopped taking connections (shutdown): the
        // connection is dropped and its slot freed.
        let _ = self.conns.send(Ok(tls)).await;
    }
}

/// Whether the peer already sent something (its ClientHello), without
/// consuming it. When the accept loop runs behind, a real client's hello is
/// waiting by the time it is accepted, while a flood socket's never is; this
/// marks the client before its handshake task had a chance to read. Asks the
/// kernel directly: tokio's readiness of a just-accepted socket is not known yet.
fn has_bytes_waiting(socket: &TcpStream) -> bool {
    let mut byte = [std::mem::MaybeUninit::<u8>::uninit(); 1];
    matches!(socket2::SockRef::from(socket).peek(&mut byte), Ok(n) if n > 0)
}

/// A handshake's entry in the table, removed when the handshake task ends.
struct PendingSlot<'a> {
    table: &'a SharedTable,
    key: PeerKey,
    id: Option<u64>,
}

impl Drop for PendingSlot<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            lock(self.table).finish(self.key, id);
        }
    }
}
