//! Prometheus metrics of a daemon, served in the text exposition format on
//! its own admin listener (plain HTTP, `GET /metrics`), apart from the mTLS
//! gRPC port: scrapers hold no cluster certificate, and nothing on this
//! listener can change anything.
//!
//! What both daemons export lives here ([`CommonMetrics`]: store, audit log,
//! build); each daemon adds its own metrics to the same [`Registry`] and
//! refreshes its gauges from live state in the closure it serves
//! ([`Render`]). Every label takes values from a small fixed set, or from
//! names an operator created (node ids of the manifest, key groups made by
//! a ceremony); never from request data or error text.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::audit::AuditLog;
use crate::ProtoError;

/// The `[admin]` section of a daemon's config.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Where to serve Prometheus metrics (`GET /metrics`, plain HTTP), e.g.
    /// `127.0.0.1:9464`; port 0 picks a free one. No listener when absent.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// Allow `metrics_listen` on an address other than loopback. Default
    /// false: metrics carry no secret, but they show when and how much a
    /// cluster signs, so exposing them beyond the host is a decision.
    #[serde(default)]
    pub allow_non_loopback: bool,
}

impl AdminConfig {
    /// Checks that a non-loopback metrics address was asked for explicitly.
    pub fn validate(&self) -> Result<(), ProtoError> {
        match self.metrics_listen {
            Some(addr) if !addr.ip().is_loopback() && !self.allow_non_loopback => {
                Err(ProtoError::InvalidConfig {
                    field: "admin.metrics_listen".into(),
                    reason: format!(
                        "{addr} is not a loopback address; set admin.allow_non_loopback = true \
                         to serve metrics beyond this host"
                    ),
                })
            }
            _ => Ok(()),
        }
    }
}

/// Renders the whole exposition text of a scrape (refreshing what is read
/// from live state first).
pub type Render = Arc<dyn Fn() -> Result<String, String> + Send + Sync>;

/// Connections served at once; a scraper needs one.
const MAX_CONNECTIONS: usize = 16;
/// A request's headers must arrive within this.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection (kept alive across scrapes) is closed after this; the
/// scraper opens a new one.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(300);

/// The content type of the text exposition format (version 0.0.4).
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Serves `GET /metrics` on `listener` until `shutdown` resolves; then
/// closes every connection and returns. Anything else is 404 (or 405 for
/// another method on `/metrics`).
pub async fn serve(
    listener: TcpListener,
    render: Render,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ProtoError> {
    let mut connections = JoinSet::new();
    let mut shutdown = pin!(shutdown);
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "serving metrics");
    }
    loop {
        let accepted = tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => accepted,
        };
        let socket = match accepted {
            Ok((socket, _)) => socket,
            Err(e) => {
                tracing::warn!(error = %e, "metrics listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if connections.len() >= MAX_CONNECTIONS {
            // Accept-and-close keeps the backlog moving; a scraper retries.
            drop(socket);
            continue;
        }
        let _ = socket.set_nodelay(true);
        let render = render.clone();
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let render = render.clone();
                async move { Ok::<_, Infallible>(respond(&render, &request)) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(socket), service);
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, connection).await;
        });
    }
    drop(listener);
    connections.abort_all();
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// A metrics listener served in the background while its daemon runs.
#[derive(Debug)]
pub struct MetricsServer {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), ProtoError>>,
}

impl MetricsServer {
    /// Starts [`serve`] on `listener` in a task of its own.
    pub fn spawn(listener: TcpListener, render: Render) -> Self {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, render, async {
            let _ = stopped.await;
        }));
        Self { stop, task }
    }

    /// Stops it and waits until every connection is closed.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        match self.task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "metrics listener failed"),
            Err(e) => tracing::warn!(error = %e, "metrics listener task failed"),
        }
    }
}

fn respond<B>(render: &Render, request: &Request<B>) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, content_type: &str, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        if let Ok(value) = content_type.parse() {
            response
                .headers_mut()
                .insert(hyper::header::CONTENT_TYPE, value);
        }
        response
    };
    if request.uri().path() != "/metrics" {
        return reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found; metrics are at /metrics\n".into(),
        );
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET\n".into(),
        );
        if let Ok(allow) = "GET, HEAD".parse() {
            response.headers_mut().insert(hyper::header::ALLOW, allow);
        }
        return response;
    }
    match render() {
        Ok(text) => reply(StatusCode::OK, CONTENT_TYPE, text),
        Err(e) => {
            tracing::error!(error = %e, "cannot render metrics");
            reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                format!("cannot render metrics: {e}\n"),
            )
        }
    }
}

/// The exposition text of everything in `registry`.
pub fn encode(registry: &Registry) -> Result<String, String> {
    let mut out = Vec::new();
    TextEncoder::new()
        .encode(&registry.gather(), &mut out)
        .map_err(|e| e.to_string())?;
    String::from_utf8(out).map_err(|e| e.to_string())
}

/// Latency buckets of a signing step or a withdrawal, seconds.
pub const SIGNING_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Store commit latency buckets, seconds (an fsync is ~0.1 ms on fast disks).
pub const COMMIT_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];
/// Steps per store commit (at most [`permafrost_store::MAX_BATCH`]).
pub const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];
/// Key ceremony durations, seconds.
pub const CEREMONY_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

fn registered<C: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    made: prometheus::Result<C>,
) -> Result<C, ProtoError> {
    let metric = made.map_err(|e| ProtoError::Server(format!("metrics: {e}")))?;
    registry
        .register(Box::new(metric.clone()))
        .map_err(|e| ProtoError::Server(format!("metrics: {e}")))?;
    Ok(metric)
}

/// A counter registered in `registry`.
pub fn counter(registry: &Registry, name: &str, help: &str) -> Result<IntCounter, ProtoError> {
    registered(registry, IntCounter::new(name, help))
}

/// A counter with labels registered in `registry`.
pub fn counter_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntCounterVec, ProtoError> {
    registered(registry, IntCounterVec::new(Opts::new(name, help), labels))
}

/// A gauge registered in `registry`.
pub fn gauge(registry: &Registry, name: &str, help: &str) -> Result<IntGauge, ProtoError> {
    registered(registry, IntGauge::new(name, help))
}

/// A gauge with labels registered in `registry`.
pub fn gauge_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntGaugeVec, ProtoError> {
    registered(registry, IntGaugeVec::new(Opts::new(name, help), labels))
}

/// A float gauge with labels registered in `registry`.
pub fn float_gauge_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<prometheus::GaugeVec, ProtoError> {
    registered(
        registry,
        prometheus::GaugeVec::new(Opts::new(name, help), labels),
    )
}

/// A histogram registered in `registry`.
pub fn histogram(
    registry: &Registry,
    name: &str,
    help: &str,
    buckets: &[f64],
) -> Result<Histogram, ProtoError> {
    registered(
        registry,
        Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec())),
    )
}

/// A histogram with labels registered in `registry`.
pub fn histogram_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: &[f64],
) -> Result<HistogramVec, ProtoError> {
    registered(
        registry,
        HistogramVec::new(
            HistogramOpts::new(name, help).buckets(buckets.to_vec()),
            labels,
        ),
    )
}

/// Raises `counter` to `value`, a total kept elsewhere (never lowers it).
fn catch_up(counter: &IntCounter, value: u64) {
    counter.inc_by(value.saturating_sub(counter.get()));
}

/// What both daemons export: their store's writer, their audit log, and the build.
pub struct CommonMetrics {
    store_commits: IntCounter,
    store_steps: IntCounter,
    store_failed_commits: IntCounter,
    store_refused_busy: IntCounter,
    store_max_batch: IntGauge,
    store_queued: IntGauge,
    store_commit_seconds: Histogram,
    store_batch_steps: Histogram,
    store_healthy: IntGauge,
    audit_entries: IntGauge,
    audit_write_failures: IntCounter,
    audit_last_failure: IntGauge,
    audit_writable: IntGauge,
    step_seconds: HistogramVec,
    /// Counters caught up from totals must not be caught up twice at once.
    refreshing: Mutex<()>,
}

impl std::fmt::Debug for CommonMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommonMetrics").finish_non_exhaustive()
    }
}

impl CommonMetrics {
    /// Registers the common metrics of daemon `daemon` (`node` or
    /// `coordinator`) with id `id`, and starts observing `store`'s commits.
    pub fn register(
        registry: &Registry,
        daemon: &str,
        id: &str,
        store: &permafrost_store::Store,
    ) -> Result<Self, ProtoError> {
        let build = gauge_vec(
            registry,
            "permafrost_build_info",
            "Always 1; the labels name the daemon, its id and its version.",
            &["daemon", "id", "version"],
        )?;
        build
            .with_label_values(&[daemon, id, env!("CARGO_PKG_VERSION")])
            .set(1);
        let metrics = Self {
            store_commits: counter(
                registry,
                "permafrost_store_commits_total",
                "Durable store commits of at least one step (group commits).",
            )?,
            store_steps: counter(
                registry,
                "permafrost_store_steps_total",
                "Store steps committed (one per write a caller asked for).",
            )?,
            store_failed_commits: counter(
                registry,
                "permafrost_store_failed_commits_total",
                "Store commits that failed (every step in them was refused).",
            )?,
            store_refused_busy: counter(
                registry,
                "permafrost_store_refused_busy_total",
                "Store steps refused because the write queue was full.",
            )?,
            store_max_batch: gauge(
                registry,
                "permafrost_store_max_batch_steps",
                "Largest number of steps committed at once since start.",
            )?,
            store_queued: gauge(
                registry,
                "permafrost_store_queued_steps",
                "Store steps waiting for the writer now.",
            )?,
            store_commit_seconds: histogram(
                registry,
                "permafrost_store_commit_duration_seconds",
                "Time from a batch's first step to its durable commit.",
                COMMIT_BUCKETS,
            )?,
            store_batch_steps: histogram(
                registry,
                "permafrost_store_batch_steps",
                "Steps per durable store commit.",
                BATCH_BUCKETS,
            )?,
            store_healthy: gauge(
                registry,
                "permafrost_store_healthy",
                "1 while the store commits; 0 when a commit is stuck or the last one failed.",
            )?,
            audit_entries: gauge(
                registry,
                "permafrost_audit_entries",
                "Entries in the audit log's hash chain (checkpoints included).",
            )?,
            audit_write_failures: counter(
                registry,
                "permafrost_audit_write_failures_total",
                "Audit log appends and checkpoints that failed since start.",
            )?,
            audit_last_failure: gauge(
                registry,
                "permafrost_audit_last_write_failure_timestamp_seconds",
                "Unix time of the last failed audit write; 0 if none since start.",
            )?,
            audit_writable: gauge(
                registry,
                "permafrost_audit_writable",
                "1 while the audit log takes records; 0 while it refuses them (the daemon then refuses what needs a record).",
            )?,
            step_seconds: histogram_vec(
                registry,
                "permafrost_step_duration_seconds",
                "Time spent in each step of a withdrawal in this daemon (where one \
                 signature's time goes; `permafrost-sim bench` reports the means).",
                &["step"],
                COMMIT_BUCKETS,
            )?,
            refreshing: Mutex::new(()),
        };
        let (latency, batch) = (
            metrics.store_commit_seconds.clone(),
            metrics.store_batch_steps.clone(),
        );
        store.observe_commits(Arc::new(move |took, steps| {
            latency.observe(took.as_secs_f64());
            batch.observe(steps as f64);
        }));
        Ok(metrics)
    }

    /// Time `took` spent in step `step` of a withdrawal.
    pub fn step(&self, step: &str, took: Duration) {
        self.step_seconds
            .with_label_values(&[step])
            .observe(took.as_secs_f64());
    }

    /// Reads the store's counters and the audit log's state into the metrics.
    pub fn refresh(&self, store: &permafrost_store::Store, audit: &AuditLog) {
        let _one_at_a_time = self.refreshing.lock();
        let stats = store.stats();
        catch_up(&self.store_commits, stats.commits);
        catch_up(&self.store_steps, stats.steps);
        catch_up(&self.store_failed_commits, stats.failed_commits);
        catch_up(&self.store_refused_busy, stats.refused_busy);
        self.store_max_batch.set(saturating_i64(stats.max_batch));
        self.store_queued.set(saturating_i64(stats.queued));
        self.store_healthy.set(i64::from(store.health().is_ok()));
        let failures = audit.failures();
        self.audit_entries.set(saturating_i64(audit.head().0));
        catch_up(&self.audit_write_failures, failures.total);
        self.audit_last_failure
            .set(saturating_i64(failures.last_at));
        self.audit_writable.set(i64::from(!failures.failing));
    }
}

/// `value` as a gauge value.
pub fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_non_loopback_address_must_be_asked_for() {
        let loopback = AdminConfig {
            metrics_listen: Some("127.0.0.1:9464".parse().expect("addr")),
            allow_non_loopback: false,
        };
        loopback.validate().expect("loopback is fine");
        let wide = AdminConfig {
            metrics_listen: Some("0.0.0.0:9464".parse().expect("addr")),
            allow_non_loopback: false,
        };
        let e = wide.validate().expect_err("refused").to_string();
        assert!(
            e.contains("admin.metrics_listen") && e.contains("0.0.0.0:9464"),
            "{e}"
        );
        AdminConfig {
            allow_non_loopback: true,
            ..wide
        }
        .validate()
        .expect("asked for");
        AdminConfig::default().validate().expect("no listener");
    }

    #[test]
    fn catching_up_never_lowers_a_counter() {
        let c = IntCounter::new("c_total", "c").expect("counter");
        catch_up(&c, 5);
        catch_up(&c, 3);
        assert_eq!(c.get(), 5);
        catch_up(&c, 9);
        assert_eq!(c.get(), 9);
    }

    #[tokio::test]
    async fn serves_metrics_and_nothing_else_then_stops() {
        let registry = Registry::new();
        counter(&registry, "permafrost_test_total", "A test counter.")
            .expect("counter")
            .inc_by(3);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let render: Render = Arc::new(move || encode(&registry));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, render, async {
            let _ = stopped.await;
        }));
        let get = |path: &'static str, method: &'static str| async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
            s.write_all(
                format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await
            .expect("write");
            let mut out = String::new();
            s.read_to_string(&mut out).await.expect("read");
            out
        };
        let ok = get("/metrics", "GET").await;
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(ok.contains(CONTENT_TYPE), "{ok}");
        assert!(ok.contains("permafrost_test_total 3"), "{ok}");
        assert!(get("/", "GET").await.starts_with("HTTP/1.1 404"));
        assert!(get("/metrics", "POST").await.starts_with("HTTP/1.1 405"));
        let _ = stop.send(());
        tokio::time::timeout(Duration::from_secs(2), server)
            .await
            .expect("stops")
            .expect("join")
            .expect("serve");
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }
}
