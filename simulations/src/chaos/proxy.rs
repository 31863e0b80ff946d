//! A fault-injecting TCP proxy for one coordinator→node link (threats F1, F2).
//!
//! TLS passes through untouched: the proxy delays, withholds or cuts bytes but
//! never edits them, so the coordinator still verifies the node's certificate
//! under the node's own server name. Dropping bytes inside a TLS stream would
//! only kill it, so loss is modelled the way TCP shows it to the application:
//! a lost segment is retransmitted after a timeout (200 ms, doubling), so the
//! chunk and everything queued behind it arrives late; a chunk lost too many
//! times, and a small share of all chunks, reset the connection. Every random
//! choice comes from a generator seeded per link, connection and direction.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::Rng;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::chaos::seed;

/// First retransmission timeout of a lost chunk (Linux's minimum RTO); doubles for each further loss.
const RTO_MIN: Duration = Duration::from_millis(200);
/// A chunk lost this many times in a row gives the connection up (reset), as TCP eventually does.
const MAX_RETRANSMISSIONS: u32 = 5;
/// Largest chunk read and forwarded at once.
const CHUNK: usize = 16 * 1024;
/// Chunks queued per direction before the proxy stops reading (back-pressure).
const QUEUE: usize = 64;
/// How long the proxy tries to reach its upstream before resetting the client.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Which way bytes flow on a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Coordinator to node (requests).
    ToNode,
    /// Node to coordinator (responses).
    ToCoordinator,
}

impl Direction {
    fn label(self) -> &'static str {
        match self {
            Direction::ToNode => "to-node",
            Direction::ToCoordinator => "to-coordinator",
        }
    }
}

/// A full partition of a link.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Partition {
    /// No partition.
    #[default]
    None,
    /// Packets vanish: new connections are accepted but never reach the node,
    /// existing ones freeze; callers find out only through their deadlines.
    Blackhole,
    /// The node is unreachable and says so: new and existing connections are reset.
    Refuse,
}

/// Faults applied to a link; change them at any time with [`LinkProxy::set_faults`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LinkFaults {
    /// Delay added to every chunk, in each direction (one way; the round trip gains twice this).
    pub latency: Duration,
    /// Uniform jitter: each chunk's delay is `latency ± jitter` (never negative; order is kept).
    pub jitter: Duration,
    /// Probability that a chunk is lost once and waits for a retransmission timeout.
    pub loss: f64,
    /// Probability, per chunk, that the connection is reset.
    pub reset: f64,
    /// Full partition.
    pub partition: Partition,
    /// One-way partition: bytes in this direction are held until it is lifted.
    pub stalled: Option<Direction>,
}

impl LinkFaults {
    /// No faults at all.
    pub fn healthy() -> Self {
        Self::default()
    }

    /// Whether bytes in `direction` are held back right now.
    fn blocks(&self, direction: Direction) -> bool {
        self.partition != Partition::None || self.stalled == Some(direction)
    }
}

#[derive(Clone, Debug)]
struct LinkConfig {
    faults: LinkFaults,
    upstream: SocketAddr,
    /// Bumped to reset every open connection.
    reset_epoch: u64,
}

/// What a link has seen so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkCounters {
    /// Connections accepted from the coordinator.
    pub connections: u64,
    /// Connections refused at once (partition [`Partition::Refuse`], or the upstream was down).
    pub refused: u64,
    /// Bytes forwarded to the node.
    pub bytes_to_node: u64,
    /// Bytes forwarded to the coordinator.
    pub bytes_to_coordinator: u64,
    /// Chunks held back by simulated loss.
    pub stalled_chunks: u64,
    /// Connections reset (injected at random, ordered, or by a partition).
    pub resets: u64,
}

#[derive(Debug, Default)]
struct LinkStats {
    connections: AtomicU64,
    refused: AtomicU64,
    bytes_to_node: AtomicU64,
    bytes_to_coordinator: AtomicU64,
    stalled_chunks: AtomicU64,
    resets: AtomicU64,
}

impl LinkStats {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn snapshot(&self) -> LinkCounters {
        LinkCounters {
            connections: self.connections.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            bytes_to_node: self.bytes_to_node.load(Ordering::Relaxed),
            bytes_to_coordinator: self.bytes_to_coordinator.load(Ordering::Relaxed),
            stalled_chunks: self.stalled_chunks.load(Ordering::Relaxed),
            resets: self.resets.load(Ordering::Relaxed),
        }
    }
}

/// One link's proxy: listens on 127.0.0.1, forwards to its upstream (the node,
/// or a lying node in front of it). Dropping it closes every connection.
#[derive(Debug)]
pub struct LinkProxy {
    name: String,
    addr: SocketAddr,
    seed: u64,
    control: watch::Sender<LinkConfig>,
    stats: Arc<LinkStats>,
    listener: Option<TcpListener>,
    task: Option<JoinHandle<()>>,
}

impl Drop for LinkProxy {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl LinkProxy {
    /// Binds a port on 127.0.0.1 for link `name`; nothing is forwarded until [`LinkProxy::start`].
    /// Connections made before then wait in the listen backlog.
    pub async fn bind(name: &str, seed: u64) -> std::io::Result<Self> {
        Self::bind_on(name, seed, std::net::Ipv4Addr::LOCALHOST.into()).await
    }

    /// [`LinkProxy::bind`] on a free port of `ip` (`bench --wan` binds the
    /// host's end of the link into the coordinator's namespace).
    pub async fn bind_on(name: &str, seed: u64, ip: std::net::IpAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind((ip, 0)).await?;
        let addr = listener.local_addr()?;
        let (control, _) = watch::channel(LinkConfig {
            faults: LinkFaults::healthy(),
            upstream: addr,
            reset_epoch: 0,
        });
        Ok(Self {
            name: name.to_string(),
            addr,
            seed,
            control,
            stats: Arc::new(LinkStats::default()),
            listener: Some(listener),
            task: None,
        })
    }

    /// Link name (the node id).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where the coordinator connects.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Starts forwarding to `upstream`. Calling it twice does nothing more.
    pub fn start(&mut self, upstream: SocketAddr) {
        self.set_upstream(upstream);
        if let Some(listener) = self.listener.take() {
            self.task = Some(tokio::spawn(accept_loop(
                listener,
                self.control.subscribe(),
                self.stats.clone(),
                self.seed,
                self.name.clone(),
            )));
        }
    }

    /// Where new connections go from now on (existing ones keep theirs until reset).
    pub fn set_upstream(&self, upstream: SocketAddr) {
        self.control.send_modify(|c| c.upstream = upstream);
    }

    /// The current upstream.
    pub fn upstream(&self) -> SocketAddr {
        self.control.borrow().upstream
    }

    /// Replaces the link's faults; open connections see the change at their next chunk.
    pub fn set_faults(&self, faults: LinkFaults) {
        self.control.send_modify(|c| c.faults = faults);
    }

    /// The link's current faults.
    pub fn faults(&self) -> LinkFaults {
        self.control.borrow().faults.clone()
    }

    /// Resets every open connection now (the coordinator reconnects on its next call).
    pub fn reset_connections(&self) {
        self.control.send_modify(|c| c.reset_epoch += 1);
    }

    /// Counters so far.
    pub fn counters(&self) -> LinkCounters {
        self.stats.snapshot()
    }
}

async fn accept_loop(
    listener: TcpListener,
    control: watch::Receiver<LinkConfig>,
    stats: Arc<LinkStats>,
    link_seed: u64,
    name: String,
) {
    // Owned here: aborting this task aborts every connection with it.
    let mut connections = JoinSet::new();
    let mut index = 0u64;
    loop {
        let accepted = listener.accept().await;
        while connections.try_join_next().is_some() {}
        let Ok((client, _)) = accepted else {
            // Out of descriptors or similar: back off instead of spinning.
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        LinkStats::add(&stats.connections, 1);
        let label = |d: Direction| format!("link/{name}/connection/{index}/{}", d.label());
        let rngs = (
            seed::rng(link_seed, &label(Direction::ToNode)),
            seed::rng(link_seed, &label(Direction::ToCoordinator)),
        );
        index += 1;
        connections.spawn(connection(client, control.clone(), stats.clone(), rngs));
    }
}

/// How a connection or one of its directions ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// Orderly: end of stream forwarded.
    Closed,
    /// Cut: reset both sides.
    Reset,
}

fn refuse(client: TcpStream, stats: &LinkStats) {
    // Zero linger: closing sends RST, as a host that refuses the connection would.
    let _ = client.set_zero_linger();
    LinkStats::add(&stats.refused, 1);
}

async fn connection(
    mut client: TcpStream,
    mut control: watch::Receiver<LinkConfig>,
    stats: Arc<LinkStats>,
    (to_node_rng, to_coordinator_rng): (StdRng, StdRng),
) {
    let _ = client.set_nodelay(true);
    // Behind a blackhole the connection just hangs until the partition lifts.
    let (upstream_addr, epoch) = loop {
        let (partition, upstream, epoch) = {
            let c = control.borrow_and_update();
            (c.faults.partition, c.upstream, c.reset_epoch)
        };
        match partition {
            Partition::None => break (upstream, epoch),
            Partition::Refuse => return refuse(client, &stats),
            Partition::Blackhole => {
                if control.changed().await.is_err() {
                    return;
                }
            }
        }
    };
    let mut upstream =
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(upstream_addr)).await {
            Ok(Ok(s)) => s,
            // The node is down: the coordinator sees a reset, as it would connecting directly.
            _ => return refuse(client, &stats),
        };
    let _ = upstream.set_nodelay(true);
    let ended = {
        let (client_read, client_write) = client.split();
        let (upstream_read, upstream_write) = upstream.split();
        let to_node = pump(
            client_read,
            upstream_write,
            Direction::ToNode,
            control.clone(),
            to_node_rng,
            &stats,
        );
        let to_coordinator = pump(
            upstream_read,
            client_write,
            Direction::ToCoordinator,
            control.clone(),
            to_coordinator_rng,
            &stats,
        );
        tokio::pin!(to_node, to_coordinator);
        let (mut to_node_done, mut to_coordinator_done) = (false, false);
        loop {
            tokio::select! {
                changed = control.changed() => {
                    if changed.is_err() {
                        break End::Reset;
                    }
                    let c = control.borrow_and_update();
                    if c.reset_epoch != epoch || c.faults.partition == Partition::Refuse {
                        break End::Reset;
                    }
                }
                end = &mut to_node, if !to_node_done => {
                    if end == End::Reset {
                        break End::Reset;
                    }
                    to_node_done = true;
                }
                end = &mut to_coordinator, if !to_coordinator_done => {
                    if end == End::Reset {
                        break End::Reset;
                    }
                    to_coordinator_done = true;
                }
            }
            if to_node_done && to_coordinator_done {
                break End::Closed;
            }
        }
    };
    if ended == End::Reset {
        LinkStats::add(&stats.resets, 1);
        let _ = client.set_zero_linger();
        let _ = upstream.set_zero_linger();
    }
}

/// Delay of one chunk: `latency ± jitter`, uniform.
fn jittered(latency: Duration, jitter: Duration, rng: &mut StdRng) -> Duration {
    let jitter_us = i64::try_from(jitter.as_micros()).unwrap_or(i64::MAX / 4);
    if jitter_us == 0 {
        return latency;
    }
    let offset = rng.gen_range(-jitter_us..=jitter_us);
    let base = i64::try_from(latency.as_micros()).unwrap_or(i64::MAX / 4);
    Duration::from_micros(u64::try_from(base.saturating_add(offset)).unwrap_or(0))
}

/// Forwards one direction: reads chunks, gives each its release time (latency,
/// jitter, retransmission stalls; never earlier than the chunk before it), and
/// writes each at its time unless the direction is held by a partition.
async fn pump<R, W>(
    mut reader: R,
    mut writer: W,
    direction: Direction,
    control: watch::Receiver<LinkConfig>,
    mut rng: StdRng,
    stats: &LinkStats,
) -> End
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(QUEUE);
    let bytes_counter = match direction {
        Direction::ToNode => &stats.bytes_to_node,
        Direction::ToCoordinator => &stats.bytes_to_coordinator,
    };
    let read_side = {
        let control = control.clone();
        async move {
            let mut buf = vec![0u8; CHUNK];
            let mut last_release = Instant::now();
            loop {
                let n = match reader.read(&mut buf).await {
                    Ok(0) => return End::Closed,
                    Ok(n) => n,
                    Err(_) => return End::Reset,
                };
                let faults = control.borrow().faults.clone();
                if rng.gen::<f64>() < faults.reset {
                    return End::Reset;
                }
                let mut delay = jittered(faults.latency, faults.jitter, &mut rng);
                let mut rto = RTO_MIN;
                let mut losses = 0;
                while rng.gen::<f64>() < faults.loss {
                    losses += 1;
                    if losses > MAX_RETRANSMISSIONS {
                        return End::Reset;
                    }
                    delay += rto;
                    rto *= 2;
                }
                if losses > 0 {
                    LinkStats::add(&stats.stalled_chunks, 1);
                }
                let release = (Instant::now() + delay).max(last_release);
                last_release = release;
                if tx.send((release, buf[..n].to_vec())).await.is_err() {
                    return End::Reset;
                }
            }
            // `tx` drops here: the write side flushes what is queued, then ends the stream.
        }
    };
    let write_side = async move {
        let mut control = control;
        while let Some((release, bytes)) = rx.recv().await {
            tokio::time::sleep_until(release).await;
            while control.borrow_and_update().faults.blocks(direction) {
                if control.changed().await.is_err() {
                    return End::Reset;
                }
            }
            if writer.write_all(&bytes).await.is_err() {
                return End::Reset;
            }
            LinkStats::add(bytes_counter, bytes.len() as u64);
        }
        let _ = writer.shutdown().await;
        End::Closed
    };
    tokio::pin!(read_side, write_side);
    let mut read_done = false;
    loop {
        tokio::select! {
            end = &mut read_side, if !read_done => {
                if end == End::Reset {
                    return End::Reset;
                }
                read_done = true;
            }
            end = &mut write_side => return end,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// An echo server on 127.0.0.1; returns its address.
    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let _ = s.set_nodelay(true);
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    /// A test client socket, with TCP_NODELAY like every socket in the cluster.
    async fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
        let s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        Ok(s)
    }

    async fn proxy_to_echo(faults: LinkFaults) -> LinkProxy {
        let upstream = echo_server().await;
        let mut proxy = LinkProxy::bind("test", 1).await.expect("bind proxy");
        proxy.set_faults(faults);
        proxy.start(upstream);
        proxy
    }

    async fn round_trip(s: &mut TcpStream, within: Duration) -> Option<Duration> {
        let started = std::time::Instant::now();
        s.write_all(b"ping").await.ok()?;
        let mut buf = [0u8; 4];
        match tokio::time::timeout(within, s.read_exact(&mut buf)).await {
            Ok(Ok(_)) if &buf == b"ping" => Some(started.elapsed()),
            _ => None,
        }
    }

    #[tokio::test]
    async fn latency_is_added_in_both_directions() {
        let proxy = proxy_to_echo(LinkFaults {
            latency: Duration::from_millis(60),
            ..LinkFaults::healthy()
        })
        .await;
        let mut s = connect(proxy.addr()).await.expect("connect");
        let rtt = round_trip(&mut s, Duration::from_secs(5))
            .await
            .expect("echo");
        assert!(rtt >= Duration::from_millis(120), "{rtt:?}");
        assert!(rtt < Duration::from_secs(2), "{rtt:?}");
        assert_eq!(proxy.counters().connections, 1);
    }

    #[tokio::test]
    async fn blackhole_holds_bytes_until_healed_and_one_way_stalls_one_direction() {
        let proxy = proxy_to_echo(LinkFaults::healthy()).await;
        let mut s = connect(proxy.addr()).await.expect("connect");
        round_trip(&mut s, Duration::from_secs(5))
            .await
            .expect("healthy");
        proxy.set_faults(LinkFaults {
            partition: Partition::Blackhole,
            ..LinkFaults::healthy()
        });
        assert!(round_trip(&mut s, Duration::from_millis(300))
            .await
            .is_none());
        proxy.set_faults(LinkFaults::healthy());
        let mut buf = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf))
            .await
            .expect("held bytes arrive after healing")
            .expect("read");
        proxy.set_faults(LinkFaults {
            stalled: Some(Direction::ToCoordinator),
            ..LinkFaults::healthy()
        });
        assert!(round_trip(&mut s, Duration::from_millis(300))
            .await
            .is_none());
        // The request did reach the node: only the answer is held.
        assert!(proxy.counters().bytes_to_node >= 12);
        proxy.set_faults(LinkFaults::healthy());
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf))
            .await
            .expect("answer released")
            .expect("read");
    }

    #[tokio::test]
    async fn refuse_and_reset_cut_connections() {
        let proxy = proxy_to_echo(LinkFaults::healthy()).await;
        let mut s = connect(proxy.addr()).await.expect("connect");
        round_trip(&mut s, Duration::from_secs(5))
            .await
            .expect("healthy");
        proxy.reset_connections();
        let mut buf = [0u8; 4];
        let read = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("reset noticed");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        proxy.set_faults(LinkFaults {
            partition: Partition::Refuse,
            ..LinkFaults::healthy()
        });
        let mut s = connect(proxy.addr()).await.expect("accepted, then cut");
        assert!(round_trip(&mut s, Duration::from_secs(2)).await.is_none());
        assert!(proxy.counters().refused >= 1);
        assert!(proxy.counters().resets >= 1);
    }

    #[tokio::test]
    async fn total_loss_resets_and_partial_loss_stalls() {
        let proxy = proxy_to_echo(LinkFaults {
            loss: 1.0,
            ..LinkFaults::healthy()
        })
        .await;
        let mut s = connect(proxy.addr()).await.expect("connect");
        assert!(round_trip(&mut s, Duration::from_secs(2)).await.is_none());
        proxy.set_faults(LinkFaults {
            loss: 0.5,
            ..LinkFaults::healthy()
        });
        let mut s = connect(proxy.addr()).await.expect("connect");
        let mut stalled = false;
        for _ in 0..20 {
            match round_trip(&mut s, Duration::from_secs(30)).await {
                Some(rtt) if rtt >= RTO_MIN => {
                    stalled = true;
                    break;
                }
                Some(_) => {}
                None => break, // a chunk lost six times in a row reset the connection
            }
        }
        assert!(stalled || proxy.counters().resets >= 2);
        assert!(proxy.counters().stalled_chunks >= 1);
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let mut rng = seed::rng(3, "jitter");
        for _ in 0..1000 {
            let d = jittered(
                Duration::from_millis(100),
                Duration::from_millis(10),
                &mut rng,
            );
            assert!(d >= Duration::from_millis(90) && d <= Duration::from_millis(110));
        }
        let d = jittered(Duration::ZERO, Duration::from_millis(10), &mut rng);
        assert!(d <= Duration::from_millis(10));
    }
}
