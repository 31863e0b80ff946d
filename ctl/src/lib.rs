//! permafrostctl: the operator and custody CLI — CA and certificates, key
//! groups, withdrawals, cluster status.

pub mod files;
pub mod pki;

use std::path::Path;

/// Errors of the CLI, named for who is at fault.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// The command line is wrong.
    #[error("{0}")]
    Usage(String),
    /// Certificate work failed.
    #[error("pki: {0}")]
    Pki(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// Which file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

impl CtlError {
    /// An I/O error naming `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        CtlError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}
