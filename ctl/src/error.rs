//! The one error type of `permafrostctl`, named for who is at fault and what
//! the operator can do, and [`CtlError::from_status`], the one place a gRPC
//! status from the coordinator or a node becomes a [`CtlError`].
//!
//! Statuses are sorted by their gRPC code and by where they came from (the
//! transport or the server), never by the text of their message.

use std::error::Error as StdError;
use std::path::{Path, PathBuf};

use tonic::Code;

/// Errors of `permafrostctl`, named for who is at fault and what to do.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// The operator's command line is wrong or asks for something impossible:
    /// a flag is missing, malformed or contradicts another (the message names
    /// it). Fix the flags and rerun.
    #[error("{0}")]
    InvalidInput(String),
    /// A local file the command was given (cluster file, key, certificate,
    /// CSR, CA, request file) is malformed; the message names it. Replace or
    /// regenerate the file.
    #[error("{0}")]
    InvalidFile(String),
    /// A file could not be read or written (missing, permissions, full disk).
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The server did not accept the client certificate (`Unauthenticated`):
    /// present a certificate the cluster CA issued.
    #[error("{call} at {endpoint} failed with status {code:?}: {message}")]
    NotAuthorized {
        /// `Service.Method`.
        call: &'static str,
        /// The server's `host:port`.
        endpoint: String,
        /// gRPC status code.
        code: Code,
        /// Status message and transport cause.
        message: String,
    },
    /// The coordinator or node could not be reached, did not answer in time,
    /// dropped the connection or reports itself unavailable. Check that it
    /// runs and is reachable (and, when the message says so, the client
    /// certificate), then retry.
    #[error("{call} at {endpoint} failed with status {code:?}: {message}")]
    Unavailable {
        /// `Service.Method`.
        call: &'static str,
        /// The server's `host:port`.
        endpoint: String,
        /// gRPC status code.
        code: Code,
        /// Status message and transport cause.
        message: String,
    },
    /// The server (the coordinator, or a node for `NodeAdmin`) answered and
    /// refused the call; act on `code`: `PermissionDenied` (the certificate's
    /// role, or the policy), `InvalidArgument`, `NotFound`,
    /// `FailedPrecondition`, `AlreadyExists`, ... The variant keeps its old
    /// name because the simulations match on it.
    #[error("{call} at {endpoint} failed with status {code:?}: {message}")]
    Rpc {
        /// `Service.Method`.
        call: &'static str,
        /// The server's `host:port`.
        endpoint: String,
        /// gRPC status code.
        code: Code,
        /// Status message and transport cause.
        message: String,
    },
    /// The server failed on its side (`Internal`, `Unknown`, `DataLoss`,
    /// `Unimplemented`): a bug, a broken dependency or a version mismatch
    /// there. Its logs say more; retrying rarely helps.
    #[error("{call} at {endpoint} failed with status {code:?}: {message}")]
    ServerFailed {
        /// `Service.Method`.
        call: &'static str,
        /// The server's `host:port`.
        endpoint: String,
        /// gRPC status code.
        code: Code,
        /// Status message and transport cause.
        message: String,
    },
    /// The coordinator's answer is inconsistent or does not verify: the
    /// coordinator misbehaved. Do not trust it.
    #[error("untrustworthy answer from the coordinator: {0}")]
    BadResponse(String),
    /// The cluster refused or failed to sign the withdrawal; `detail` is its
    /// reason, shown as reported and never parsed.
    #[error("withdrawal {request_id} failed: {detail}")]
    WithdrawalFailed {
        /// Request id.
        request_id: String,
        /// Why, as the coordinator reports it.
        detail: String,
    },
    /// An audit log does not verify: it was edited, reordered, cut or forged.
    #[error("audit log {} does not verify: {reason}", .path.display())]
    AuditInvalid {
        /// The log file.
        path: PathBuf,
        /// Where and what (`line N: ...`).
        reason: String,
    },
    /// A bug in `permafrostctl`: something that should not fail did.
    #[error("{0}")]
    Bug(String),
}

impl CtlError {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        CtlError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// Turns the failed call `call` to `endpoint` into an error naming the
    /// call, the endpoint, the status code and the cause; the variant follows
    /// from the code and from whether the server answered at all.
    pub fn from_status(call: &'static str, endpoint: &str, status: tonic::Status) -> Self {
        let code = status.code();
        // A status the server sent has no source; one with a source was made
        // on our side by the transport (connect, TLS, HTTP/2, timeout).
        let from_transport = StdError::source(&status).is_some();
        let mut message = status_text(&status);
        // A server that rejects our certificate just closes the connection; say what that usually means.
        let dropped_codes = matches!(code, Code::Unknown | Code::Cancelled | Code::Unavailable);
        if dropped_codes && failed_after_connecting(&status) {
            message.push_str(
                " (the server dropped the TLS connection: is the client certificate issued by the cluster CA, and of the role this service admits?)",
            );
        }
        let endpoint = endpoint.to_string();
        match code {
            // Whatever the code, a call the transport failed never reached a
            // server that answered it.
            _ if from_transport => CtlError::Unavailable {
                call,
                endpoint,
                code,
                message,
            },
            Code::Unavailable | Code::DeadlineExceeded => CtlError::Unavailable {
                call,
                endpoint,
                code,
                message,
            },
            Code::Unauthenticated => CtlError::NotAuthorized {
                call,
                endpoint,
                code,
                message,
            },
            Code::Internal | Code::Unknown | Code::DataLoss | Code::Unimplemented => {
                CtlError::ServerFailed {
                    call,
                    endpoint,
                    code,
                    message,
                }
            }
            // PermissionDenied means the certificate's role or the policy
            // refused; neither is a fault of ours, so both stay refusals and
            // the message is shown, never parsed.
            // TODO(structured reason): the coordinator puts a policy
            // refusal's rule in the `permafrost-policy-rule` metadata, but the
            // proto has no field or constant for it yet; carry it here once it has.
            _ => CtlError::Rpc {
                call,
                endpoint,
                code,
                message,
            },
        }
    }
}

/// The status message followed by its transport causes, skipping repeats.
fn status_text(status: &tonic::Status) -> String {
    let mut message = status.message().to_string();
    let mut source = StdError::source(status);
    while let Some(s) = source {
        let text = s.to_string();
        if !message.contains(&text) {
            if !message.is_empty() {
                message.push_str(": ");
            }
            message.push_str(&text);
        }
        source = s.source();
    }
    message
}

/// Whether the call failed in the transport after the connection was made
/// (a TLS alert, a reset, a closed stream): what a server that rejects the
/// client certificate looks like. Judged from the typed causes only: the
/// server sent no status, and neither connecting nor the deadline failed.
fn failed_after_connecting(status: &tonic::Status) -> bool {
    let mut source = StdError::source(status);
    if source.is_none() {
        // The server answered with this status.
        return false;
    }
    while let Some(s) = source {
        if s.is::<tonic::ConnectError>() || s.is::<tonic::TimeoutExpired>() {
            return false;
        }
        source = s.source();
    }
    true
}

/// `err` and all its sources, joined by `": "`, skipping repeats.
pub fn error_chain(err: &(dyn StdError + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_statuses_are_sorted_by_code() {
        let err = |code| {
            CtlError::from_status(
                "Custody.GetWithdrawal",
                "h:1",
                tonic::Status::new(code, "m"),
            )
        };
        assert!(matches!(
            err(Code::PermissionDenied),
            CtlError::Rpc {
                code: Code::PermissionDenied,
                ..
            }
        ));
        assert!(matches!(
            err(Code::Unauthenticated),
            CtlError::NotAuthorized { .. }
        ));
        assert!(matches!(
            err(Code::Unavailable),
            CtlError::Unavailable { .. }
        ));
        assert!(matches!(err(Code::Internal), CtlError::ServerFailed { .. }));
        assert_eq!(
            err(Code::NotFound).to_string(),
            "Custody.GetWithdrawal at h:1 failed with status NotFound: m"
        );
    }

    #[test]
    fn transport_failures_are_unavailable() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let status = tonic::Status::from_error(Box::new(tonic::ConnectError(Box::new(refused))));
        let err = CtlError::from_status("Ceremony.ListKeyGroups", "h:1", status);
        assert!(matches!(err, CtlError::Unavailable { .. }), "{err}");
        assert!(!err.to_string().contains("dropped the TLS"), "{err}");

        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        let status = tonic::Status::from_error(Box::new(reset));
        let err = CtlError::from_status("Ceremony.ListKeyGroups", "h:1", status);
        assert!(matches!(err, CtlError::Unavailable { .. }), "{err}");
        assert!(err.to_string().contains("dropped the TLS"), "{err}");
    }
}
