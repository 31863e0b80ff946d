//! Serving a set of gRPC services over mTLS with health checking and reflection.

use std::future::Future;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::service::Routes;
use tonic::transport::Server;

use crate::tls::TlsMaterial;

/// Largest gRPC message any Permafrost server accepts (V4).
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// Health service names reported SERVING for `services`, plus reflection.
pub async fn serve(
    listener: TcpListener,
    tls: &TlsMaterial,
    routes: Routes,
    service_names: &[&str],
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), String> {
    let (reporter, health) = tonic_health::server::health_reporter();
    for name in service_names {
        reporter
            .set_service_status(*name, tonic_health::ServingStatus::Serving)
            .await;
    }
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| format!("reflection: {e}"))?;
    let routes = routes.add_service(health).add_service(reflection);
    Server::builder()
        .tls_config(tls.server_config())
        .map_err(|e| format!("TLS config: {e}"))?
        .timeout(Duration::from_secs(60))
        .concurrency_limit_per_connection(256)
        .http2_keepalive_interval(Some(Duration::from_secs(20)))
        .add_routes(routes)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await
        .map_err(|e| format!("server: {e}"))
}
