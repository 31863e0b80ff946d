//! Rate-limited warnings about refused, evicted and timed-out connections: a
//! flood must not turn into a flood of log lines.

use std::fmt::Display;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// At most one detailed warning per this interval; the rest are counted.
const WARN_INTERVAL: Duration = Duration::from_secs(1);

/// Something the server did to a connection that an operator should see.
#[derive(Clone, Copy, Debug)]
pub(super) enum ConnEvent {
    /// A half-open connection was closed to make room for a newer one.
    Evicted,
    /// The TLS handshake did not finish in time.
    HandshakeTimeout,
    /// The TLS handshake failed (no or foreign client certificate, garbage, reset).
    HandshakeFailed,
    /// Closed because the established-connection cap is full.
    EstablishedFull,
    /// `accept` itself failed (e.g. out of file descriptors).
    AcceptFailed,
}

const KINDS: usize = 5;

impl ConnEvent {
    fn index(self) -> usize {
        self as usize
    }

    fn describe(self) -> &'static str {
        match self {
            Self::Evicted => "half-open connection evicted to admit a newer one",
            Self::HandshakeTimeout => "TLS handshake timed out",
            Self::HandshakeFailed => "TLS handshake failed",
            Self::EstablishedFull => "connection refused: established-connection cap full",
            Self::AcceptFailed => "accept failed",
        }
    }
}

#[derive(Default)]
struct State {
    last_warn: Option<Instant>,
    suppressed: [u64; KINDS],
}

/// The limiter; one per server.
#[derive(Default)]
pub(super) struct ConnEvents {
    state: Mutex<State>,
}

impl ConnEvents {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Logs `event` with its details if no warning went out in the last
    /// second, else counts it for the next [`Self::flush`].
    pub(super) fn note(&self, event: ConnEvent, peer: Option<SocketAddr>, detail: &dyn Display) {
        {
            let mut s = self.state();
            let now = Instant::now();
            if s.last_warn
                .is_some_and(|t| now.duration_since(t) < WARN_INTERVAL)
            {
                s.suppressed[event.index()] += 1;
                return;
            }
            s.last_warn = Some(now);
        }
        match peer {
            Some(peer) => tracing::warn!(peer = %peer, detail = %detail, "{}", event.describe()),
            None => tracing::warn!(detail = %detail, "{}", event.describe()),
        }
    }

    /// Logs the counts of suppressed events, at most once a second (or now, if `force`).
    pub(super) fn flush(&self, force: bool) {
        let counts = {
            let mut s = self.state();
            let now = Instant::now();
            let due = force
                || s.last_warn
                    .is_none_or(|t| now.duration_since(t) >= WARN_INTERVAL);
            if !due || s.suppressed.iter().all(|n| *n == 0) {
                return;
            }
            s.last_warn = Some(now);
            std::mem::take(&mut s.suppressed)
        };
        let n = |e: ConnEvent| counts[e.index()];
        tracing::warn!(
            evicted = n(ConnEvent::Evicted),
            handshake_timeouts = n(ConnEvent::HandshakeTimeout),
            handshake_failures = n(ConnEvent::HandshakeFailed),
            refused_cap_full = n(ConnEvent::EstablishedFull),
            accept_errors = n(ConnEvent::AcceptFailed),
            "connections dropped since the last warning (details suppressed)"
        );
    }
}
