//! The one error type of `permafrost-proto`, named for who is at fault and
//! what the caller can do. Messages name the file, field or peer involved and
//! never carry secret material.

use std::path::PathBuf;

/// Errors of the shared wire, TLS, audit and server plumbing.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    /// A file cannot be read or written (the operator must fix the path or permissions).
    #[error("{what} {}: {reason}", .path.display())]
    File {
        /// What the file is for.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// The I/O error.
        reason: String,
    },
    /// A setting is out of range; names the field and why.
    #[error("{field}: {reason}")]
    InvalidConfig {
        /// The setting.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Certificates or keys are unusable (wrong format, not from the cluster CA).
    #[error("credentials: {0}")]
    Credentials(String),
    /// A peer's certificate does not name a Permafrost principal.
    #[error("certificate: {0}")]
    Certificate(String),
    /// The audit log cannot take records (disk full, file gone): nothing that
    /// needs a record may happen (L2). Retry when it is writable again.
    #[error("{0}")]
    AuditUnavailable(String),
    /// The audit log on disk is damaged or was tampered with: the daemon will
    /// not extend it. `permafrostctl audit verify` says where.
    #[error("{0}")]
    AuditDamaged(String),
    /// The server failed while serving.
    #[error("server: {0}")]
    Server(String),
}
