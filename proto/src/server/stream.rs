//! The TCP stream under each server-side TLS session: it closes the
//! connection after an idle period, cuts it when shutdown's grace runs out,
//! tells admission whether the peer has spoken, and holds the connection's
//! established slot until it is dropped.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};
use tonic::transport::server::{Connected, TcpConnectInfo};

use super::admission::{lock, PeerKey, SharedTable};

/// An established connection's place in the table; dropping it frees the place.
pub(super) struct EstablishedSlot {
    pub(super) table: SharedTable,
    pub(super) key: PeerKey,
}

impl Drop for EstablishedSlot {
    fn drop(&mut self) {
        lock(&self.table).release(self.key);
    }
}

/// See the module doc.
pub(super) struct GuardedStream {
    inner: TcpStream,
    idle_timeout: Duration,
    last_io: Instant,
    idle: Pin<Box<Sleep>>,
    /// Resolves when shutdown's grace is over (or the server is gone).
    kill: Pin<Box<dyn Future<Output = ()> + Send>>,
    /// Set once idle or killed: every later call fails without polling again.
    dead: Option<io::ErrorKind>,
    heard: Arc<AtomicBool>,
    slot: Option<EstablishedSlot>,
}

impl GuardedStream {
    pub(super) fn new(
        inner: TcpStream,
        idle_timeout: Duration,
        mut kill: watch::Receiver<bool>,
        heard: Arc<AtomicBool>,
    ) -> Self {
        let now = Instant::now();
        Self {
            inner,
            idle_timeout,
            last_io: now,
            idle: Box::pin(tokio::time::sleep_until(now + idle_timeout)),
            kill: Box::pin(async move {
                let _ = kill.wait_for(|k| *k).await;
            }),
            dead: None,
            heard,
            slot: None,
        }
    }

    /// Makes this stream own `slot`, freed when the connection is dropped.
    pub(super) fn hold(&mut self, slot: EstablishedSlot) {
        self.slot = Some(slot);
    }

    /// Fails if the connection was idle too long or is being cut. Registers
    /// the task's waker with both timers, so a parked read wakes to fail.
    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if let Some(kind) = self.dead {
            return Err(io::Error::from(kind));
        }
        if self.kill.as_mut().poll(cx).is_ready() {
            return Err(self.die(io::ErrorKind::ConnectionAborted));
        }
        // Progress only moves `last_io`; the timer is re-armed lazily when it
        // fires early, so busy connections do not reset a timer per read.
        while self.idle.as_mut().poll(cx).is_ready() {
            let deadline = self.last_io + self.idle_timeout;
            if deadline <= Instant::now() {
                tracing::debug!(idle = ?self.idle_timeout, "closing idle connection");
                return Err(self.die(io::ErrorKind::TimedOut));
            }
            self.idle.as_mut().reset(deadline);
        }
        Ok(())
    }

    fn die(&mut self, kind: io::ErrorKind) -> io::Error {
        self.dead = Some(kind);
        io::Error::from(kind)
    }

    fn progressed(&mut self) {
        self.last_io = Instant::now();
    }
}

impl AsyncRead for GuardedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check(cx)?;
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.progressed();
            this.heard.store(true, Ordering::Relaxed);
        }
        polled
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.check(cx)?;
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.progressed();
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.check(cx)?;
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.progressed();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check(cx)?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.dead.is_some() {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

/// Delegates, so `TlsStream<GuardedStream>` yields tonic's
/// `TlsConnectInfo<TcpConnectInfo>` and `Request::peer_certs()` keeps working.
impl Connected for GuardedStream {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}
