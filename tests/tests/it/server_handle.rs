//! A dropped `ServerHandle` stops everything it started, as `shutdown` does but at once.

use std::time::Duration;

use duet::Code;
use duet_tests::harness::{self, Via};
use duet_tests::pb::matrix::v1::{EchoRequest, KindsClient, KindsServer};
use duet_tests::services::KindsImpl;

#[tokio::test]
async fn dropping_the_handle_stops_grpc_and_iroh() {
    let running = harness::serve(duet::Server::builder().add_service(KindsServer::new(KindsImpl::default()))).await;
    let grpc_addr = running.server.grpc_addr().expect("gRPC listener");
    let iroh = running.via(Via::Iroh);
    let grpc = running.via(Via::Grpc);
    let echo = || EchoRequest { text: "up".into(), ..Default::default() };
    for channel in [&grpc, &iroh] {
        KindsClient::new(channel.clone()).echo(echo()).await.expect("serving");
    }
    let duet_tests::harness::Running { server, connector } = running;
    drop(server);

    // New gRPC connections are refused once the listener is gone.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::net::TcpStream::connect(grpc_addr).await.is_ok() {
        assert!(tokio::time::Instant::now() < deadline, "the gRPC listener still accepts 5 s after the drop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Calls on both transports fail, and do not wait out their deadline for it.
    for (name, channel) in [("grpc", grpc), ("iroh", iroh)] {
        let client = KindsClient::new(channel).with_default_timeout(Duration::from_secs(30));
        let started = tokio::time::Instant::now();
        let mut last = None;
        while started.elapsed() < Duration::from_secs(10) {
            match client.echo(echo()).await {
                Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                Err(status) => {
                    last = Some(status);
                    break;
                }
            }
        }
        let status = last.unwrap_or_else(|| panic!("{name}: still answered 10 s after the drop"));
        assert_eq!(status.code(), Code::Unavailable, "{name}: {status:?}");
        assert!(started.elapsed() < Duration::from_secs(15), "{name}: failed by deadline, not at once");
    }
    connector.endpoint().close().await;
}
