//! Withdrawals as a custody service sends them, several at a time: submit,
//! follow until signed or refused, back off when the coordinator says busy
//! (its retry hint), and re-submit the same request id when the coordinator
//! cannot be reached (submission is idempotent by request id). A request
//! with no final status within the hang limit is a hang, never a retry loop.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use permafrost_core::withdrawal::WithdrawalRequest;
use permafrost_core::{unix_now, GroupName, RequestId, Tier};
use permafrost_proto::{self as pb, custody_client::CustodyClient};
use permafrostctl::client;
use rand::Rng;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::Code;

use crate::bench::stats::Summary;
use crate::bench::BENCH_AMOUNT_SATS;
use crate::demo::DEMO_DESTINATION;
use crate::SimError;

/// How often a request the coordinator answered PENDING is polled.
const POLL: Duration = Duration::from_millis(20);
/// Wait before re-submitting to a coordinator that could not be reached.
const UNREACHABLE_BACKOFF: Duration = Duration::from_millis(200);
/// Wait after a busy answer that carries no retry hint.
const DEFAULT_BUSY_BACKOFF: Duration = Duration::from_millis(20);
/// Lifetime of a bench request.
const REQUEST_LIFETIME_SECS: u64 = 3600;
/// Problems quoted in a report (the counts hold them all).
const QUOTED_PROBLEMS: usize = 5;

/// What the load needs: clients, the custody key and the group to sign with.
#[derive(Clone, Debug)]
pub struct Workload {
    /// Custody clients, each its own mTLS connection; workers take them in turn.
    pub custody: Vec<CustodyClient<Channel>>,
    /// The custody service's request-signing key.
    pub key: SigningKey,
    /// Key group that signs.
    pub group: GroupName,
    /// Its public key (33 bytes), to verify every signature locally.
    pub group_key: Vec<u8>,
    /// Unique per run, so request ids never repeat across runs on one cluster.
    pub tag: String,
    /// No final status within this long is a hang.
    pub hang: Duration,
}

/// A custody-signed request ready to send.
#[derive(Clone, Debug)]
pub struct Prepared {
    /// Request id.
    pub id: String,
    /// The bytes the group signs.
    pub payload: Vec<u8>,
    /// What goes on the wire.
    pub signed: pb::SignedWithdrawal,
}

/// How one request ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Signed, and the signature verifies under the group key.
    Signed,
    /// A final, clear refusal (policy, validation, or the request failed).
    Refused(String),
    /// A final error that is not a refusal (internal error, bad signature).
    Error(String),
    /// No final status within the hang limit; the last thing seen.
    Hang(String),
}

/// One request, driven to its end.
#[derive(Clone, Debug)]
pub struct Driven {
    /// Request id.
    pub id: String,
    /// How it ended.
    pub outcome: Outcome,
    /// From the first submission until the final status arrived.
    pub latency: Duration,
    /// Times the request id was submitted again after the coordinator could not be reached.
    pub resubmits: u32,
    /// Busy answers it backed off from.
    pub busy_retries: u32,
}

/// Counts and latency of one batch of requests.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LevelReport {
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Requests sent.
    pub requests: usize,
    /// Signed and verified.
    pub ok: usize,
    /// Refused with a clear reason.
    pub refused: usize,
    /// Other final errors.
    pub errors: usize,
    /// No final status within the hang limit.
    pub hangs: usize,
    /// Requests re-submitted at least once because the coordinator could not be reached.
    pub resubmitted: usize,
    /// Busy answers backed off from, over all requests.
    pub busy_retries: u64,
    /// From the first submission to the last final status, seconds.
    pub wall_secs: f64,
    /// Signed requests per second of wall time.
    pub throughput_per_sec: f64,
    /// Latency of the signed requests.
    pub latency: Summary,
    /// Store commits on the nodes while this batch ran (sum over nodes).
    pub store: Option<crate::bench::probe::StoreDelta>,
    /// A few of the refusals, errors and hangs, verbatim.
    pub problems: Vec<String>,
}

impl Workload {
    /// A fresh request `label`-`i`, signed by the custody key.
    pub fn prepare(&self, label: &str, i: usize) -> Result<Prepared, SimError> {
        let id = request_id(self, label, i);
        let payload = Sha256::digest(format!("permafrost bench sighash/{id}")).to_vec();
        let now = unix_now();
        let request = WithdrawalRequest {
            request_id: RequestId::new(id.clone()).map_err(|e| SimError::Setup(e.to_string()))?,
            key_group: self.group.clone(),
            tier: Tier::Warm,
            asset: "BTC".into(),
            amount: BENCH_AMOUNT_SATS,
            destination: DEMO_DESTINATION.into(),
            payload: payload.clone(),
            psbt: None,
            created_at: now,
            expires_at: now + REQUEST_LIFETIME_SECS,
            requested_by: crate::cluster::CUSTODY_ID.into(),
        };
        let signed = client::sign_withdrawal(&request, &self.key)?;
        Ok(Prepared {
            id,
            payload,
            signed,
        })
    }

    /// Checks a signed status locally (the coordinator is not trusted).
    pub fn check(&self, status: &pb::WithdrawalStatus, payload: &[u8]) -> Outcome {
        if status.group_public_key != self.group_key {
            return Outcome::Error(format!(
                "{}: signed under another group key",
                status.request_id
            ));
        }
        match client::verify_signed(status, payload) {
            Ok(()) => Outcome::Signed,
            Err(e) => Outcome::Error(e.to_string()),
        }
    }
}

/// Whether a failed call means the coordinator could not be reached (it may be
/// restarting): the request id is then submitted again.
fn unreachable(code: Code) -> bool {
    matches!(code, Code::Unavailable | Code::Unknown | Code::Cancelled)
}

/// Submits `p` and follows it to a final status or the hang limit. Returns
/// the final status when signed (verified by the caller).
pub async fn drive(
    mut custody: CustodyClient<Channel>,
    p: &Prepared,
    hang: Duration,
) -> (Driven, Option<pb::WithdrawalStatus>) {
    let started = Instant::now();
    let end = started + hang;
    let mut resubmits = 0u32;
    let mut busy_retries = 0u32;
    let mut submitted = false;
    let mut last = String::from("no answer");
    let finish = |outcome, resubmits, busy_retries| Driven {
        id: p.id.clone(),
        outcome,
        latency: started.elapsed(),
        resubmits,
        busy_retries,
    };
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let outcome = Outcome::Hang(format!("{}: after {hang:?}: {last}", p.id));
            return (finish(outcome, resubmits, busy_retries), None);
        }
        let call = async {
            if submitted {
                custody
                    .get_withdrawal(pb::GetWithdrawalRequest {
                        request_id: p.id.clone(),
                    })
                    .await
            } else {
                custody.submit_withdrawal(p.signed.clone()).await
            }
        };
        let pause = match tokio::time::timeout(left, call).await {
            Err(_) => continue,
            Ok(Ok(answer)) => {
                let status = answer.into_inner();
                submitted = true;
                if status.state == pb::WithdrawalState::Signed as i32 {
                    return (
                        finish(Outcome::Signed, resubmits, busy_retries),
                        Some(status),
                    );
                }
                if status.state == pb::WithdrawalState::Failed as i32 {
                    let outcome = Outcome::Refused(format!(
                        "{}: failed after {} attempt(s): {}",
                        p.id, status.attempts, status.detail
                    ));
                    return (finish(outcome, resubmits, busy_retries), None);
                }
                last = format!("pending: {}", status.detail);
                POLL
            }
            Ok(Err(status)) if status.code() == Code::ResourceExhausted => {
                busy_retries += 1;
                last = format!("busy: {}", status.message());
                let hint = permafrost_proto::backpressure::retry_after(&status)
                    .unwrap_or(DEFAULT_BUSY_BACKOFF)
                    .min(Duration::from_secs(1));
                // Jitter, so requests told the same hint do not return in lockstep.
                hint + hint.mul_f64(rand::thread_rng().gen_range(0.0..0.5))
            }
            Ok(Err(status))
                if unreachable(status.code()) || (submitted && status.code() == Code::NotFound) =>
            {
                // Whatever the coordinator kept, the same request returns the same outcome.
                resubmits += 1;
                submitted = false;
                last = format!("{:?}: {}", status.code(), status.message());
                UNREACHABLE_BACKOFF
            }
            Ok(Err(status)) => {
                let text = format!("{}: {:?}: {}", p.id, status.code(), status.message());
                let outcome = match status.code() {
                    Code::PermissionDenied
                    | Code::FailedPrecondition
                    | Code::InvalidArgument
                    | Code::AlreadyExists
                    | Code::NotFound => Outcome::Refused(text),
                    _ => Outcome::Error(text),
                };
                return (finish(outcome, resubmits, busy_retries), None);
            }
        };
        tokio::time::sleep(pause.min(end.saturating_duration_since(Instant::now()))).await;
    }
}

/// Times `count` `GetWithdrawal` calls for request `id` on one connection:
/// what one mTLS gRPC round trip to the coordinator (with a store read)
/// costs, the network share of a signature's latency.
pub async fn round_trips(w: &Workload, id: &str, count: usize) -> Summary {
    let Some(mut custody) = w.custody.first().cloned() else {
        return Summary::default();
    };
    let mut samples = Vec::with_capacity(count);
    for _ in 0..count {
        let started = Instant::now();
        let answer = custody
            .get_withdrawal(pb::GetWithdrawalRequest {
                request_id: id.to_string(),
            })
            .await;
        if answer.is_ok() {
            samples.push(started.elapsed());
        }
    }
    Summary::of(&samples)
}

/// Request id of `prepare(label, i)`.
pub fn request_id(w: &Workload, label: &str, i: usize) -> String {
    format!("bench-{}-{label}-{i}", w.tag)
}

/// Adds one finished request to `report` (latency only when signed).
pub fn tally(report: &mut LevelReport, d: &Driven, latencies: &mut Vec<Duration>) {
    if d.resubmits > 0 {
        report.resubmitted += 1;
    }
    report.busy_retries += u64::from(d.busy_retries);
    let problem = match &d.outcome {
        Outcome::Signed => {
            report.ok += 1;
            latencies.push(d.latency);
            None
        }
        Outcome::Refused(why) => {
            report.refused += 1;
            Some(format!("refused: {why}"))
        }
        Outcome::Error(why) => {
            report.errors += 1;
            Some(format!("error: {why}"))
        }
        Outcome::Hang(why) => {
            report.hangs += 1;
            Some(format!("hang: {why}"))
        }
    };
    if let Some(p) = problem {
        if report.problems.len() < QUOTED_PROBLEMS {
            report.problems.push(p);
        }
    }
}

/// Sends `count` fresh requests with `concurrency` in flight at all times
/// (until the last ones) and reports how they ended. Signatures are verified
/// after the batch, so the client's own checks do not slow the cluster.
pub async fn run_level(
    w: &Workload,
    label: &str,
    concurrency: usize,
    count: usize,
) -> Result<LevelReport, SimError> {
    let prepared: Arc<Vec<Prepared>> = Arc::new(
        (0..count)
            .map(|i| w.prepare(label, i))
            .collect::<Result<_, _>>()?,
    );
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = JoinSet::new();
    for worker in 0..concurrency.clamp(1, count.max(1)) {
        let custody = w.custody[worker % w.custody.len().max(1)].clone();
        let (prepared, next, hang) = (prepared.clone(), next.clone(), w.hang);
        workers.spawn(async move {
            let mut done = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(p) = prepared.get(i) else { break };
                done.push((i, drive(custody.clone(), p, hang).await));
            }
            done
        });
    }
    let mut finished = Vec::with_capacity(count);
    while let Some(joined) = workers.join_next().await {
        finished.extend(joined.map_err(|e| SimError::Setup(format!("a load worker failed: {e}")))?);
    }
    let wall = started.elapsed();
    let mut report = LevelReport {
        concurrency,
        requests: count,
        wall_secs: wall.as_secs_f64(),
        ..LevelReport::default()
    };
    let mut latencies = Vec::with_capacity(count);
    for (i, (mut driven, status)) in finished {
        if let Some(status) = status {
            driven.outcome = w.check(&status, &prepared[i].payload);
        }
        tally(&mut report, &driven, &mut latencies);
    }
    report.latency = Summary::of(&latencies);
    report.throughput_per_sec = if report.wall_secs > 0.0 {
        report.ok as f64 / report.wall_secs
    } else {
        0.0
    };
    Ok(report)
}
