//! Driving withdrawals through the coordinator as the custody service would:
//! submit, poll until signed or failed, resubmit after a transport error
//! (submission is idempotent by request id), all within a deadline.

use std::sync::Arc;
use std::time::Duration;

use permafrost_proto::{self as pb, custody_client::CustodyClient};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::Code;

/// How often a pending request is polled.
const POLL: Duration = Duration::from_millis(200);
/// Longest single call (the coordinator answers a submission within its own 20 s wait).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// What happened to one request.
#[derive(Clone, Debug, Default)]
pub struct Driven {
    /// Request id.
    pub id: String,
    /// Every status the coordinator returned, in order.
    pub statuses: Vec<pb::WithdrawalStatus>,
    /// Time from the first submission until it was seen signed.
    pub signed_after: Option<Duration>,
    /// Time from the first submission until "below threshold" was reported.
    pub below_threshold_after: Option<Duration>,
    /// The submission was refused outright: (code, message).
    pub refused: Option<(Code, String)>,
    /// The last transport error, if any.
    pub last_error: Option<String>,
}

impl Driven {
    /// The last status seen.
    pub fn last(&self) -> Option<&pb::WithdrawalStatus> {
        self.statuses.last()
    }

    /// Whether it ended signed.
    pub fn signed(&self) -> bool {
        self.signed_after.is_some()
    }

    /// One line on where it ended.
    pub fn describe(&self) -> String {
        match (self.last(), &self.refused, &self.last_error) {
            (_, Some((code, msg)), _) => format!("{}: refused ({code:?}): {msg}", self.id),
            (Some(s), _, _) => format!(
                "{}: {} after {} attempt(s): {}",
                self.id,
                permafrostctl::client::state_name(s.state),
                s.attempts,
                s.detail
            ),
            (None, _, Some(e)) => format!("{}: no answer: {e}", self.id),
            (None, _, None) => format!("{}: no answer", self.id),
        }
    }
}

/// Whether a failed call is worth retrying (the coordinator may be restarting or unreachable).
fn transient(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::Unknown
            | Code::Internal
    )
}

/// When to stop driving a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Until {
    /// Signed or failed.
    Final,
    /// As above, or as soon as "below threshold" is reported.
    BelowThreshold,
}

/// Submits `signed` and follows it until `until` or `deadline`.
pub async fn drive(
    mut custody: CustodyClient<Channel>,
    id: String,
    signed: pb::SignedWithdrawal,
    until: Until,
    deadline: Duration,
) -> Driven {
    let started = Instant::now();
    let end = started + deadline;
    let mut out = Driven {
        id: id.clone(),
        ..Driven::default()
    };
    let mut submitted = false;
    while Instant::now() < end {
        let wait = CALL_TIMEOUT.min(end.saturating_duration_since(Instant::now()));
        let call = async {
            if submitted {
                custody
                    .get_withdrawal(pb::GetWithdrawalRequest {
                        request_id: id.clone(),
                    })
                    .await
            } else {
                custody.submit_withdrawal(signed.clone()).await
            }
        };
        let result = match tokio::time::timeout(wait, call).await {
            Ok(r) => r.map(tonic::Response::into_inner),
            Err(_) => Err(tonic::Status::deadline_exceeded("no answer in time")),
        };
        match result {
            Ok(status) => {
                submitted = true;
                let state = status.state;
                if out.below_threshold_after.is_none()
                    && status.reason() == pb::WithdrawalReason::BelowThreshold
                {
                    out.below_threshold_after = Some(started.elapsed());
                }
                out.statuses.push(status);
                if state == pb::WithdrawalState::Signed as i32 {
                    out.signed_after = Some(started.elapsed());
                    return out;
                }
                if state == pb::WithdrawalState::Failed as i32
                    || (until == Until::BelowThreshold && out.below_threshold_after.is_some())
                {
                    return out;
                }
            }
            Err(status) if transient(status.code()) => {
                // Resubmit: whatever the coordinator kept, the same request returns the same outcome.
                submitted = false;
                out.last_error = Some(format!("{:?}: {}", status.code(), status.message()));
            }
            Err(status) => {
                out.refused = Some((status.code(), status.message().to_string()));
                return out;
            }
        }
        tokio::time::sleep(POLL.min(end.saturating_duration_since(Instant::now()))).await;
    }
    out
}

/// Drives every request, at most `concurrency` at a time; results in input order.
pub async fn drive_all(
    custody: &CustodyClient<Channel>,
    requests: Vec<(String, pb::SignedWithdrawal)>,
    concurrency: usize,
    deadline: Duration,
) -> Vec<Driven> {
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut tasks = JoinSet::new();
    let ids: Vec<String> = requests.iter().map(|(id, _)| id.clone()).collect();
    for (index, (id, signed)) in requests.into_iter().enumerate() {
        let custody = custody.clone();
        let permits = permits.clone();
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await;
            (
                index,
                drive(custody, id, signed, Until::Final, deadline).await,
            )
        });
    }
    let mut out: Vec<Option<Driven>> = vec![None; ids.len()];
    while let Some(joined) = tasks.join_next().await {
        if let Ok((index, driven)) = joined {
            out[index] = Some(driven);
        }
    }
    out.into_iter()
        .zip(ids)
        .map(|(driven, id)| {
            driven.unwrap_or_else(|| Driven {
                id,
                last_error: Some("the task driving it panicked".into()),
                ..Driven::default()
            })
        })
        .collect()
}
