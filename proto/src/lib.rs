//! Permafrost's gRPC services (generated from `proto/permafrost.proto` without
//! a system `protoc`), mTLS identity of callers, and conversions between wire
//! messages and `permafrost-core` types.

#[allow(missing_docs, clippy::all, clippy::unwrap_used)]
mod generated {
    tonic::include_proto!("permafrost.v1");
}

pub mod audit;
pub mod auth;
pub mod backpressure;
pub mod convert;
pub mod daemon;
pub mod error;
pub mod logging;
pub mod metrics;
pub mod server;
pub mod stale;
pub mod tls;

pub use error::ProtoError;
pub use generated::*;

/// Encoded file descriptor set of every service, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("permafrost_descriptor");

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    permafrost_core::unix_now()
}
