//! The gRPC path is stock gRPC: clients that never heard of duet call a duet server, and duet's client
//! calls a server that never heard of duet.

use std::process::Command;

use bytes::Bytes;
use duet::{Channel, CompressionEncoding, Server, Transport};
use duet_tests::harness;
use duet_tests::interop::TestServiceImpl;
use duet_tests::pb::grpc::testing::test_service_client::TestServiceClient as TonicClient;
use duet_tests::pb::grpc::testing::test_service_server::TestServiceServer as TonicServer;
use duet_tests::pb::grpc::testing::{
    Payload, ResponseParameters, SimpleRequest, StreamingInputCallRequest, StreamingOutputCallRequest,
    TestServiceClient, TestServiceServer,
};
use duet_tests::plain::PlainTonic;
use futures_util::StreamExt;

fn body(n: usize) -> Option<Payload> {
    Some(Payload { r#type: 0, body: Bytes::from(vec![0u8; n]) })
}

fn streaming_request(sizes: &[i32]) -> StreamingOutputCallRequest {
    StreamingOutputCallRequest {
        response_parameters: sizes.iter().map(|&size| ResponseParameters { size, interval_us: 0 }).collect(),
        ..Default::default()
    }
}

/// A duet server that accepts gzip and zstd requests and answers in gzip to clients that accept it.
fn gzip_server() -> Server {
    Server::builder()
        .accept_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Zstd)
        .send_compressed(CompressionEncoding::Gzip)
}

#[tokio::test]
async fn plain_tonic_client_with_gzip_calls_a_duet_server() {
    let running = harness::serve(gzip_server().add_service(TestServiceServer::new(TestServiceImpl::default()))).await;
    let uri = format!("http://{}", running.server.grpc_addr().unwrap());
    let client = TonicClient::connect(uri).await.unwrap();
    let mut client = client.send_compressed(CompressionEncoding::Gzip).accept_compressed(CompressionEncoding::Gzip);
    let resp = client
        .unary_call(SimpleRequest { response_size: 314_159, payload: body(271_828), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(resp.metadata().get("grpc-encoding").unwrap(), "gzip", "the response came compressed");
    assert_eq!(resp.into_inner().payload.unwrap().body.len(), 314_159);
    let reqs = [27_182, 8, 1_828, 45_904].map(|n| StreamingInputCallRequest { payload: body(n) });
    let resp = client.streaming_input_call(futures_util::stream::iter(reqs)).await.unwrap();
    assert_eq!(resp.into_inner().aggregated_payload_size, 74_922);

    // A client that accepts no compression gets plain messages.
    let uri = format!("http://{}", running.server.grpc_addr().unwrap());
    let mut plain = TonicClient::connect(uri).await.unwrap();
    let resp = plain.unary_call(SimpleRequest { response_size: 10, ..Default::default() }).await.unwrap();
    assert!(resp.metadata().get("grpc-encoding").is_none());
    running.stop().await;
}

#[tokio::test]
async fn plain_tonic_client_calls_a_duet_server() {
    let running = harness::serve(gzip_server().add_service(TestServiceServer::new(TestServiceImpl::default()))).await;
    let uri = format!("http://{}", running.server.grpc_addr().unwrap());
    let mut client = TonicClient::connect(uri).await.unwrap();

    let resp =
        client.unary_call(SimpleRequest { response_size: 314_159, payload: body(271_828), ..Default::default() });
    assert_eq!(resp.await.unwrap().into_inner().payload.unwrap().body.len(), 314_159);

    let resp = client.streaming_output_call(streaming_request(&[31_415, 9, 2_653, 58_979])).await.unwrap();
    let sizes: Vec<_> = resp.into_inner().map(|r| r.unwrap().payload.unwrap().body.len()).collect().await;
    assert_eq!(sizes, [31_415, 9, 2_653, 58_979]);

    let reqs = [27_182, 8, 1_828, 45_904].map(|n| StreamingInputCallRequest { payload: body(n) });
    let resp = client.streaming_input_call(futures_util::stream::iter(reqs)).await.unwrap();
    assert_eq!(resp.into_inner().aggregated_payload_size, 74_922);

    let reqs = [streaming_request(&[10]), streaming_request(&[20])];
    let resp = client.full_duplex_call(futures_util::stream::iter(reqs)).await.unwrap();
    let sizes: Vec<_> = resp.into_inner().map(|r| r.unwrap().payload.unwrap().body.len()).collect().await;
    assert_eq!(sizes, [10, 20]);
    running.stop().await;
}

/// Python's grpcio, installed by `.ci/run` in a virtualenv (`DUET_PYTHON` names its interpreter).
#[tokio::test]
async fn grpcio_client_calls_a_duet_server() {
    let python = std::env::var("DUET_PYTHON").unwrap_or_else(|_| "python3".into());
    let has_grpcio = Command::new(&python).args(["-c", "import grpc, grpc_tools"]).status().is_ok_and(|s| s.success());
    if !has_grpcio {
        assert!(
            std::env::var_os("DUET_REQUIRE_GRPCIO").is_none(),
            "DUET_REQUIRE_GRPCIO is set but {python} cannot import grpc and grpc_tools"
        );
        eprintln!("skipped: {python} has no grpcio; `.ci/run` installs it (pip install grpcio grpcio-tools)");
        return;
    }
    let running = harness::serve(gzip_server().add_service(TestServiceServer::new(TestServiceImpl::default()))).await;
    let target = running.server.grpc_addr().unwrap().to_string();
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let output = tokio::process::Command::new(&python)
        .arg(format!("{root}/tests/interop/grpcio_client.py"))
        .arg(&target)
        .arg(format!("{root}/proto"))
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "grpcio client failed:\n{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("timeout_on_sleeping_server"), "{stdout}");
    eprintln!("{stdout}");
    running.stop().await;
}

#[tokio::test]
async fn duet_client_calls_a_plain_tonic_server() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TonicServer::new(PlainTonic))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let client = TestServiceClient::new(Channel::connect_grpc(format!("http://{addr}")).await.unwrap());

    let resp = client.unary_call(SimpleRequest { response_size: 314_159, ..Default::default() }).await.unwrap();
    assert_eq!(resp.extensions().get::<Transport>(), Some(&Transport::Grpc));
    assert_eq!(resp.into_inner().payload.unwrap().body.len(), 314_159);

    let stream = client.streaming_output_call(streaming_request(&[31_415, 9])).await.unwrap().into_inner();
    let sizes: Vec<_> = stream.map(|r| r.unwrap().payload.unwrap().body.len()).collect().await;
    assert_eq!(sizes, [31_415, 9]);

    let reqs = [27_182, 8, 1_828, 45_904].map(|n| StreamingInputCallRequest { payload: body(n) });
    let resp = client.streaming_input_call(futures_util::stream::iter(reqs)).await.unwrap();
    assert_eq!(resp.into_inner().aggregated_payload_size, 74_922);

    let reqs = [streaming_request(&[10]), streaming_request(&[20])];
    let stream = client.full_duplex_call(futures_util::stream::iter(reqs)).await.unwrap().into_inner();
    let sizes: Vec<_> = stream.map(|r| r.unwrap().payload.unwrap().body.len()).collect().await;
    assert_eq!(sizes, [10, 20]);

    let err = client.unimplemented_call(()).await.unwrap_err();
    assert_eq!(err.code(), duet::Code::Unimplemented);
    server.abort();
}
