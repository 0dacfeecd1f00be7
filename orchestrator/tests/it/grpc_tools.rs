//! The gRPC port is stock gRPC: tonic's own generated health client and a gRPC server-reflection
//! client, neither of which knows duet, can use it.

use std::time::Duration;

use duet_orchestrator::cluster::Cluster;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_health_and_reflection_clients_work_on_the_grpc_port() {
    let cluster = Cluster::start(1, |_| {}, None).await.expect("node starts");
    cluster.leader(Duration::from_secs(10)).await.expect("the lone node leads");
    let uri = format!("http://{}", cluster.node(1).ticket().grpc.expect("a gRPC port"));

    let channel = tonic::transport::Endpoint::from_shared(uri).expect("uri").connect().await.expect("tonic connects");
    let mut health = HealthClient::new(channel.clone());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let status = health.check(HealthCheckRequest::default()).await.expect("Check").into_inner().status;
        if status == ServingStatus::Serving as i32 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never SERVING: {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let unknown = health.check(HealthCheckRequest { service: "no.such.Service".into() }).await.expect_err("unknown");
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    let mut watch = health.watch(HealthCheckRequest::default()).await.expect("Watch").into_inner();
    let first = watch.message().await.expect("a first status").expect("stream open");
    assert_eq!(first.status, ServingStatus::Serving as i32);

    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies =
        reflection.server_reflection_info(tokio_stream::iter([request])).await.expect("reflection").into_inner();
    let reply = replies.message().await.expect("a reply").expect("stream open");
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("not a service list: {:?}", reply.message_response)
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "grpc.health.v1.Health",
        "orchestrator.v1.ClusterStatus",
        "orchestrator.v1.Monitoring",
        "orchestrator.v1.VmService",
        "orchestrator.v1.ImageService",
        "orchestrator.v1.RaftService",
    ] {
        assert!(names.iter().any(|n| n == expected), "{expected} missing from {names:?}");
    }

    // v1alpha, the version Python grpcio's reflection client speaks.
    use tonic_reflection::pb::v1alpha;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", cluster.node(1).ticket().grpc.unwrap()))
        .expect("uri")
        .connect()
        .await
        .expect("tonic connects");
    let mut reflection = v1alpha::server_reflection_client::ServerReflectionClient::new(channel);
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1alpha::server_reflection_request::MessageRequest::ListServices(String::new())),
    };
    let mut replies =
        reflection.server_reflection_info(tokio_stream::iter([request])).await.expect("v1alpha").into_inner();
    let reply = replies.message().await.expect("a reply").expect("stream open");
    let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) = reply.message_response
    else {
        panic!("not a service list: {:?}", reply.message_response)
    };
    // Each version lists itself as the reflection service; the rest must agree.
    let alpha: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    assert!(alpha.iter().any(|n| n == "grpc.reflection.v1alpha.ServerReflection"), "{alpha:?}");
    let apps =
        |list: &[String]| list.iter().filter(|n| !n.starts_with("grpc.reflection.")).cloned().collect::<Vec<_>>();
    assert_eq!(apps(&alpha), apps(&names), "both versions list the same services");
    cluster.shutdown().await;
}
