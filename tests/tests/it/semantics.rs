//! What gRPC promises, kept on both transports: metadata, peer identity, size limits, flow control,
//! graceful shutdown.

use std::sync::atomic::Ordering;
use std::time::Duration;

use duet::metadata::{BinaryMetadataValue, MetadataValue};
use duet::{Code, Peer, Request, Server, Transport};
use duet_tests::harness::{self, TRANSPORTS};
use duet_tests::interop::TestServiceImpl;
use duet_tests::pb::grpc::testing::{
    ResponseParameters, StreamingOutputCallRequest, TestServiceClient, TestServiceServer,
};
use duet_tests::pb::matrix::v1::{EchoRequest, KindsClient, KindsServer};
use duet_tests::services::KindsImpl;

fn text(t: impl Into<String>) -> EchoRequest {
    EchoRequest { text: t.into(), ..Default::default() }
}

#[tokio::test]
async fn request_metadata_reaches_the_handler_and_response_metadata_the_client() {
    let running = harness::serve(Server::builder().add_service(KindsServer::new(KindsImpl::default()))).await;
    for t in TRANSPORTS {
        let mut req = Request::new(text("md"));
        req.metadata_mut().insert("x-echo-plain", MetadataValue::from_static("plain value"));
        req.metadata_mut().append("x-echo-plain", MetadataValue::from_static("second value"));
        req.metadata_mut().insert_bin("x-echo-blob-bin", BinaryMetadataValue::from_bytes(&[0, 1, 0xfe, 0xff]));
        req.metadata_mut().insert("x-not-echoed", MetadataValue::from_static("v"));
        let resp = KindsClient::new(running.channel(t)).echo(req).await.unwrap();
        let md = resp.metadata();
        let plain: Vec<_> = md.get_all("x-echo-plain").iter().map(|v| v.to_str().unwrap().to_owned()).collect();
        assert_eq!(plain, ["plain value", "second value"], "{t}");
        assert_eq!(md.get_bin("x-echo-blob-bin").unwrap().to_bytes().unwrap().as_ref(), &[0, 1, 0xfe, 0xff], "{t}");
        assert!(md.get("x-not-echoed").is_none(), "{t}");
    }
    running.stop().await;
}

#[tokio::test]
async fn handler_knows_who_called() {
    let running = harness::serve(Server::builder().add_service(KindsServer::new(KindsImpl::default()))).await;
    let iroh = KindsClient::new(running.channel(Transport::Iroh)).echo(text("peer")).await.unwrap().into_inner().text;
    assert_eq!(iroh, format!("{:?}", Peer::Iroh(running.connector.endpoint().id())));
    let grpc = KindsClient::new(running.channel(Transport::Grpc)).echo(text("peer")).await.unwrap().into_inner().text;
    assert!(grpc.starts_with("Grpc(Some(127.0.0.1:"), "{grpc}");
    running.stop().await;
}

#[tokio::test]
async fn size_limits_are_resource_exhausted_on_both_sides() {
    let running = harness::serve(
        Server::builder()
            .max_decoding_message_size(1024)
            .max_encoding_message_size(4096)
            .add_service(KindsServer::new(KindsImpl::default())),
    )
    .await;
    for t in TRANSPORTS {
        let client = KindsClient::new(running.channel(t));
        // The server refuses a request past its decoding limit, then serves the next call.
        let err = client.clone().echo(text("x".repeat(2000))).await.unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted, "{t} server decode: {err:?}");
        assert_eq!(client.clone().echo(text("small")).await.unwrap().into_inner().text, "small");
        // The server refuses to send a response past its encoding limit.
        let big_reply = client.clone().max_decoding_message_size(1 << 20);
        let err = big_reply.echo(text("y".repeat(1000))).await.map(|_| ()).and(Ok(()));
        assert!(err.is_ok(), "{t}: 1000 bytes fits both limits");
        // The client refuses a response past its own decoding limit.
        let err = client.clone().max_decoding_message_size(100).echo(text("z".repeat(500))).await.unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted, "{t} client decode: {err:?}");
        // The client refuses to send a request past its encoding limit.
        let err = client.clone().max_encoding_message_size(100).echo(text("w".repeat(500))).await.unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted, "{t} client encode: {err:?}");
    }
    running.stop().await;
}

#[tokio::test]
async fn server_encoding_limit_is_resource_exhausted() {
    let running = harness::serve(
        Server::builder()
            .max_encoding_message_size(1000)
            .add_service(TestServiceServer::new(TestServiceImpl::default())),
    )
    .await;
    for t in TRANSPORTS {
        let req = duet_tests::pb::grpc::testing::SimpleRequest { response_size: 5000, ..Default::default() };
        let err = TestServiceClient::new(running.channel(t)).unary_call(req).await.unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted, "{t}: {err:?}");
    }
    running.stop().await;
}

#[tokio::test]
async fn a_slow_reader_holds_the_producer_back() {
    let service = TestServiceImpl::default();
    let running = harness::serve(Server::builder().add_service(TestServiceServer::new(service.clone()))).await;
    for t in TRANSPORTS {
        service.produced.store(0, Ordering::SeqCst);
        // 10,000 messages of 64 KiB (640 MiB) asked for; the client reads one and then stops reading.
        let req = StreamingOutputCallRequest {
            response_parameters: vec![ResponseParameters { size: 65_536, interval_us: 0 }; 10_000],
            ..Default::default()
        };
        let mut stream =
            TestServiceClient::new(running.channel(t)).streaming_output_call(req).await.unwrap().into_inner();
        stream.message().await.unwrap().unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let produced = service.produced.load(Ordering::SeqCst);
        // Flow-control windows, not the stream's length, bound what is in flight: well under 20 MiB.
        assert!(produced < 320, "{t}: the server produced {produced} messages for a reader that read one");
        drop(stream);
    }
    running.stop().await;
}

#[tokio::test]
async fn shutdown_drains_in_flight_calls_and_refuses_new_ones() {
    for t in TRANSPORTS {
        let running =
            harness::serve(Server::builder().add_service(TestServiceServer::new(TestServiceImpl::default()))).await;
        let client = TestServiceClient::new(running.channel(t));
        // A call that takes 300 ms on the server.
        let slow = StreamingOutputCallRequest {
            response_parameters: vec![ResponseParameters { size: 10, interval_us: 300_000 }],
            ..Default::default()
        };
        let mut in_flight = client.streaming_output_call(slow).await.unwrap().into_inner();
        let harness::Running { server, connector } = running;
        let shutdown = tokio::spawn(server.shutdown());
        tokio::time::sleep(Duration::from_millis(50)).await;

        // A new call during the drain is refused as UNAVAILABLE (never run).
        let err = client.empty_call(()).await.unwrap_err();
        assert_eq!(err.code(), Code::Unavailable, "{t}: {err:?}");

        // The in-flight call completes.
        let msg = in_flight.message().await.unwrap().expect("the in-flight call finishes");
        assert_eq!(msg.payload.unwrap().body.len(), 10, "{t}");
        assert!(in_flight.message().await.unwrap().is_none(), "{t}");

        // gRPC's graceful shutdown waits for clients to hang up, as tonic's does.
        drop((client, in_flight));
        shutdown.await.unwrap();
        connector.endpoint().close().await;
    }
}

#[tokio::test]
async fn a_long_status_message_arrives_cut_and_the_same_on_both_transports() {
    let running = harness::serve(Server::builder().add_service(KindsServer::new(KindsImpl::default()))).await;
    let long = "status ".repeat(3000);
    let mut seen = vec![];
    for t in TRANSPORTS {
        let req = EchoRequest { fail_with: Code::FailedPrecondition as i32, fail_message: long.clone(), ..text("x") };
        let status = KindsClient::new(running.channel(t)).echo(req).await.unwrap_err();
        assert_eq!(status.code(), Code::FailedPrecondition, "{t}: {status}");
        assert!(status.message().len() <= duet::MAX_STATUS_MESSAGE_BYTES, "{t}: {} bytes", status.message().len());
        assert!(status.message().starts_with("status status"), "{t}");
        assert!(status.message().ends_with("[… status message cut: 21000 bytes in all]"), "{t}");
        seen.push(status.message().to_owned());
    }
    assert_eq!(seen[0], seen[1], "the same message on gRPC and Iroh");
}
