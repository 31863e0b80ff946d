//! Standard tooling works unmodified: the coordinator and every node serve
//! gRPC server reflection as both `grpc.reflection.v1` (grpcurl, current
//! clients) and `grpc.reflection.v1alpha` (Python's grpcio-reflection,
//! Postman, Evans, older grpcurl). Asked by real reflection clients of each
//! version over mTLS: each lists exactly the services its server serves
//! (health and both reflection versions included), and the file defining a
//! service comes back as a descriptor that names its methods.

use std::time::Duration;

use permafrost_core::Role;
use permafrost_testkit::TestCluster;
use prost::Message;
use tonic::transport::Channel;

fn channel(cluster: &TestCluster, addr: &str, server_name: &str) -> Channel {
    cluster
        .credential(Role::Operator, "tooling")
        .channel(addr, server_name, Duration::from_secs(10))
        .expect("channel")
}

/// The methods of `service` in the descriptor files `files` (encoded `FileDescriptorProto`s).
fn methods_of(files: &[Vec<u8>], service: &str) -> Vec<String> {
    let (package, name) = service.rsplit_once('.').expect("qualified service name");
    files
        .iter()
        .map(|f| prost_types::FileDescriptorProto::decode(f.as_slice()).expect("descriptor"))
        .filter(|f| f.package() == package)
        .flat_map(|f| f.service)
        .filter(|s| s.name() == name)
        .flat_map(|s| s.method)
        .map(|m| m.name().to_string())
        .collect()
}

/// Lists services and fetches the file of `service` through v1alpha.
async fn ask_v1alpha(channel: Channel, service: &str) -> (Vec<String>, Vec<Vec<u8>>) {
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
    let requests = [
        MessageRequest::ListServices(String::new()),
        MessageRequest::FileContainingSymbol(service.to_string()),
    ]
    .map(|m| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(m),
    });
    let mut answers = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter(requests))
        .await
        .expect("v1alpha reflection is served")
        .into_inner();
    let (mut services, mut files) = (Vec::new(), Vec::new());
    while let Some(answer) = answers.message().await.expect("answer") {
        match answer.message_response.expect("a response") {
            MessageResponse::ListServicesResponse(list) => {
                services.extend(list.service.into_iter().map(|s| s.name))
            }
            MessageResponse::FileDescriptorResponse(f) => files.extend(f.file_descriptor_proto),
            MessageResponse::ErrorResponse(e) => panic!("v1alpha error: {e:?}"),
            other => panic!("unexpected v1alpha answer {other:?}"),
        }
    }
    (services, files)
}

/// The same through v1.
async fn ask_v1(channel: Channel, service: &str) -> (Vec<String>, Vec<Vec<u8>>) {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    let requests = [
        MessageRequest::ListServices(String::new()),
        MessageRequest::FileContainingSymbol(service.to_string()),
    ]
    .map(|m| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(m),
    });
    let mut answers = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter(requests))
        .await
        .expect("v1 reflection is served")
        .into_inner();
    let (mut services, mut files) = (Vec::new(), Vec::new());
    while let Some(answer) = answers.message().await.expect("answer") {
        match answer.message_response.expect("a response") {
            MessageResponse::ListServicesResponse(list) => {
                services.extend(list.service.into_iter().map(|s| s.name))
            }
            MessageResponse::FileDescriptorResponse(f) => files.extend(f.file_descriptor_proto),
            MessageResponse::ErrorResponse(e) => panic!("v1 error: {e:?}"),
            other => panic!("unexpected v1 answer {other:?}"),
        }
    }
    (services, files)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_reflection_versions_describe_the_coordinator_and_the_nodes() {
    let cluster = TestCluster::start(&["eu"]).await;
    let coordinator = (
        cluster.coordinator_addr.to_string(),
        "coord-1.coordinator.permafrost".to_string(),
        ["permafrost.v1.Custody", "permafrost.v1.Ceremony"],
        "SubmitWithdrawal",
    );
    let node = (
        cluster.nodes[0].addr.to_string(),
        format!("{}.node.permafrost", cluster.nodes[0].id),
        ["permafrost.v1.SignerNode", "permafrost.v1.NodeAdmin"],
        "Sign",
    );
    for (addr, server_name, served, method) in [coordinator, node] {
        let service = served[0];
        let v1alpha = ask_v1alpha(channel(&cluster, &addr, &server_name), service).await;
        let v1 = ask_v1(channel(&cluster, &addr, &server_name), service).await;
        for (version, (services, files)) in [("v1alpha", v1alpha), ("v1", v1)] {
            let mut listed = services.clone();
            listed.sort();
            let mut expected: Vec<String> = served
                .iter()
                .chain(&[
                    "grpc.health.v1.Health",
                    "grpc.reflection.v1.ServerReflection",
                    "grpc.reflection.v1alpha.ServerReflection",
                ])
                .map(|s| s.to_string())
                .collect();
            expected.sort();
            assert_eq!(listed, expected, "{version} at {addr}");
            let methods = methods_of(&files, service);
            assert!(
                methods.iter().any(|m| m == method),
                "{version}: the file of {service} does not define {method}: {methods:?}"
            );
        }
    }
    cluster.shutdown().await;
}
