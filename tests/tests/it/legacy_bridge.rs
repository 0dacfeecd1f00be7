//! The legacy bridge: an unmodified tonic service and an unmodified tonic client, talking gRPC's
//! HTTP/2 over a QUIC stream, on the same endpoint as duet's native services.

use std::time::Duration;

use bytes::Bytes;
use duet::Server;
use duet::iroh::{Connector, endpoint};
use duet_tests::pb::grpc::testing::test_service_client::TestServiceClient as TonicClient;
use duet_tests::pb::grpc::testing::test_service_server::TestServiceServer as TonicServer;
use duet_tests::pb::grpc::testing::{
    Payload, ResponseParameters, SimpleRequest, StreamingInputCallRequest, StreamingOutputCallRequest,
};
use duet_tests::pb::matrix::v1::{EchoRequest, KindsClient, KindsServer};
use duet_tests::plain::PlainTonic;
use duet_tests::services::KindsImpl;
use futures_util::StreamExt;
use iroh::SecretKey;

const ALPN: &[u8] = b"legacy/grpc.testing.TestService/1";

fn body(n: usize) -> Option<Payload> {
    Some(Payload { r#type: 0, body: Bytes::from(vec![0u8; n]) })
}

fn routes() -> tonic::service::Routes {
    tonic::service::Routes::new(TonicServer::new(PlainTonic))
}

#[tokio::test]
async fn a_plain_tonic_service_and_client_over_iroh_beside_native_services() {
    let key = SecretKey::generate();
    let ep = endpoint::offline_builder_at("127.0.0.1:0".parse().unwrap()).secret_key(key.clone()).bind().await.unwrap();
    let socket = ep.bound_sockets()[0];
    let mut server = Server::builder()
        .iroh(ep)
        .legacy(ALPN, routes())
        .add_service(KindsServer::new(KindsImpl::default()))
        .serve()
        .await
        .unwrap();
    let addr = server.iroh_addr().unwrap();
    let client_ep = endpoint::bind_loopback().await.unwrap();
    let mut client = TonicClient::new(duet::legacy::channel(client_ep.clone(), addr.clone(), ALPN.to_vec()));

    let resp =
        client.unary_call(SimpleRequest { response_size: 314_159, payload: body(271_828), ..Default::default() });
    assert_eq!(resp.await.unwrap().into_inner().payload.unwrap().body.len(), 314_159);

    let req = StreamingOutputCallRequest {
        response_parameters: [31_415, 9, 2_653].map(|size| ResponseParameters { size, interval_us: 0 }).to_vec(),
        ..Default::default()
    };
    let sizes: Vec<_> = client
        .streaming_output_call(req)
        .await
        .unwrap()
        .into_inner()
        .map(|r| r.unwrap().payload.unwrap().body.len())
        .collect()
        .await;
    assert_eq!(sizes, [31_415, 9, 2_653]);

    let reqs = [27_182, 8, 1_828, 45_904].map(|n| StreamingInputCallRequest { payload: body(n) });
    let resp = client.streaming_input_call(futures_util::stream::iter(reqs)).await.unwrap();
    assert_eq!(resp.into_inner().aggregated_payload_size, 74_922);

    // duet's native wire on the same endpoint, at the same time.
    let native = duet::Channel::iroh(&Connector::new(client_ep.clone()), addr.clone());
    let echo = KindsClient::new(native).echo(EchoRequest { text: "native".into(), ..Default::default() }).await;
    assert_eq!(echo.unwrap().into_inner().text, "native");

    // The peer restarts (same key, same port): tonic reconnects through the bridge on its own.
    server.stop_iroh().await;
    server.start_iroh(duet_tests::harness::rebind(key, socket).await);
    let mut recovered = false;
    for _ in 0..50 {
        if client.empty_call(()).await.is_ok() {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "the legacy channel reconnected after the peer restarted");
    server.shutdown().await;
    client_ep.close().await;
}
