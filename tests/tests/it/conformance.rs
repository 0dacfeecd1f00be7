//! The gRPC interop cases, run unchanged on every transport through the generated client.
//!
//! Each test runs its case once per transport against one server that serves the interop
//! `TestService` on a tonic listener and an Iroh endpoint at once.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use duet::metadata::{BinaryMetadataValue, MetadataValue};
use duet::{Code, Request, Server, Streaming, Transport};
use duet_tests::harness::{self, Running, VIAS, Via};
use duet_tests::interop::{ECHO_INITIAL, ECHO_TRAILING, TestServiceImpl};
use duet_tests::pb::grpc::testing::{
    EchoStatus, Payload, ResponseParameters, SimpleRequest, StreamingInputCallRequest, StreamingOutputCallRequest,
    StreamingOutputCallResponse, TestServiceClient, TestServiceServer, UnimplementedServiceClient,
};
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

async fn server() -> (Running, TestServiceImpl) {
    let service = TestServiceImpl::default();
    let running = harness::serve(Server::builder().add_service(TestServiceServer::new(service.clone()))).await;
    (running, service)
}

fn body(n: usize) -> Option<Payload> {
    Some(Payload { r#type: 0, body: Bytes::from(vec![0u8; n]) })
}

fn output_request(sizes: &[i32], payload: usize) -> StreamingOutputCallRequest {
    StreamingOutputCallRequest {
        response_parameters: sizes.iter().map(|&size| ResponseParameters { size, interval_us: 0 }).collect(),
        payload: body(payload),
        ..Default::default()
    }
}

fn size_of(r: &StreamingOutputCallResponse) -> usize {
    r.payload.as_ref().map_or(0, |p| p.body.len())
}

/// Waits (bounded) until the server has seen `n` cancellations.
/// Polls for up to 10 s: a bound on a hang, generous because CI machines are shared and slow.
async fn server_saw_cancellations(service: &TestServiceImpl, n: usize) -> bool {
    for _ in 0..1000 {
        if service.cancelled.load(Ordering::SeqCst) >= n {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// Polls for up to 10 s until every handler that started has been dropped unfinished.
async fn every_started_handler_was_cancelled(service: &TestServiceImpl) -> bool {
    for _ in 0..1000 {
        if service.cancelled.load(Ordering::SeqCst) == service.started.load(Ordering::SeqCst) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

#[tokio::test]
async fn empty_unary() {
    let (running, _) = server().await;
    for t in VIAS {
        let resp = TestServiceClient::new(running.via(t)).empty_call(()).await.unwrap();
        assert_eq!(resp.extensions().get::<Transport>(), Some(&t.transport()), "{t}");
    }
    running.stop().await;
}

#[tokio::test]
async fn large_unary() {
    let (running, _) = server().await;
    for t in VIAS {
        let req = SimpleRequest { response_size: 314_159, payload: body(271_828), ..Default::default() };
        let resp = TestServiceClient::new(running.via(t)).unary_call(req).await.unwrap().into_inner();
        assert_eq!(resp.payload.unwrap().body.len(), 314_159, "{t}");
    }
    running.stop().await;
}

#[tokio::test]
async fn client_streaming() {
    let (running, _) = server().await;
    for t in VIAS {
        let reqs = [27_182, 8, 1_828, 45_904].map(|n| StreamingInputCallRequest { payload: body(n) });
        let resp = TestServiceClient::new(running.via(t))
            .streaming_input_call(futures_util::stream::iter(reqs))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(resp.aggregated_payload_size, 74_922, "{t}");
    }
    running.stop().await;
}

#[tokio::test]
async fn server_streaming() {
    let (running, _) = server().await;
    for t in VIAS {
        let req = output_request(&[31_415, 9, 2_653, 58_979], 0);
        let stream = TestServiceClient::new(running.via(t)).streaming_output_call(req).await.unwrap().into_inner();
        let sizes: Vec<usize> = stream.map(|r| size_of(&r.unwrap())).collect().await;
        assert_eq!(sizes, [31_415, 9, 2_653, 58_979], "{t}");
    }
    running.stop().await;
}

#[tokio::test]
async fn ping_pong() {
    let (running, _) = server().await;
    for t in VIAS {
        let (tx, rx) = mpsc::channel(1);
        let client = TestServiceClient::new(running.via(t));
        let mut replies = client.full_duplex_call(ReceiverStream::new(rx)).await.unwrap().into_inner();
        for (resp, req) in [(31_415, 27_182), (9, 8), (2_653, 1_828), (58_979, 45_904)] {
            tx.send(output_request(&[resp], req)).await.unwrap();
            let reply = replies.message().await.unwrap().expect("one reply per request");
            assert_eq!(size_of(&reply), resp as usize, "{t}");
        }
        drop(tx);
        assert!(replies.message().await.unwrap().is_none(), "{t}");
    }
    running.stop().await;
}

#[tokio::test]
async fn half_duplex() {
    let (running, _) = server().await;
    for t in VIAS {
        let reqs = [31_415, 9].map(|n| output_request(&[n], 1));
        let stream = TestServiceClient::new(running.via(t))
            .half_duplex_call(futures_util::stream::iter(reqs))
            .await
            .unwrap()
            .into_inner();
        let sizes: Vec<usize> = stream.map(|r| size_of(&r.unwrap())).collect().await;
        assert_eq!(sizes, [31_415, 9], "{t}");
    }
    running.stop().await;
}

#[tokio::test]
async fn empty_stream() {
    let (running, _) = server().await;
    for t in VIAS {
        let mut replies = TestServiceClient::new(running.via(t))
            .full_duplex_call(futures_util::stream::empty())
            .await
            .unwrap()
            .into_inner();
        assert!(replies.message().await.unwrap().is_none(), "{t}");
    }
    running.stop().await;
}

async fn expect_status(running: &Running, t: Via, message: &str) {
    let client = TestServiceClient::new(running.via(t));
    let status = EchoStatus { code: 2, message: message.into() };
    let req = SimpleRequest { response_status: Some(status.clone()), ..Default::default() };
    let err = client.unary_call(req).await.unwrap_err();
    assert_eq!((err.code(), err.message()), (Code::Unknown, message), "{t} unary");

    let req = StreamingOutputCallRequest { response_status: Some(status), ..Default::default() };
    let mut replies = client.full_duplex_call(futures_util::stream::iter([req])).await.unwrap().into_inner();
    let err = replies.message().await.unwrap_err();
    assert_eq!((err.code(), err.message()), (Code::Unknown, message), "{t} full duplex");
}

#[tokio::test]
async fn status_code_and_message() {
    let (running, _) = server().await;
    for t in VIAS {
        expect_status(&running, t, "test status message").await;
    }
    running.stop().await;
}

#[tokio::test]
async fn special_status_message() {
    let (running, _) = server().await;
    for t in VIAS {
        expect_status(&running, t, "\t\ntest with whitespace\r\nand Unicode BMP ☺ and non-BMP 😈\t\n").await;
    }
    running.stop().await;
}

#[tokio::test]
async fn every_status_code_round_trips() {
    let (running, _) = server().await;
    for t in VIAS {
        let client = TestServiceClient::new(running.via(t));
        for code in 1..=16 {
            let req = SimpleRequest {
                response_status: Some(EchoStatus { code, message: format!("code {code}") }),
                ..Default::default()
            };
            let err = client.unary_call(req).await.unwrap_err();
            assert_eq!(err.code(), Code::from_i32(code), "{t}");
            assert_eq!(err.message(), format!("code {code}"), "{t}");
        }
    }
    running.stop().await;
}

#[tokio::test]
async fn custom_metadata() {
    let (running, _) = server().await;
    let trailing = BinaryMetadataValue::from_bytes(&[0xab, 0xab, 0xab]);
    for t in VIAS {
        let client = TestServiceClient::new(running.via(t));
        let mut req =
            Request::new(SimpleRequest { response_size: 314_159, payload: body(271_828), ..Default::default() });
        req.metadata_mut().insert(ECHO_INITIAL, MetadataValue::from_static("test_initial_metadata_value"));
        req.metadata_mut().insert_bin(ECHO_TRAILING, trailing.clone());
        let resp = client.unary_call(req).await.unwrap();
        assert_eq!(resp.metadata().get(ECHO_INITIAL).unwrap(), "test_initial_metadata_value", "{t}");
        // As tonic delivers a unary call, trailers join the response metadata.
        assert_eq!(resp.metadata().get_bin(ECHO_TRAILING).unwrap(), &trailing, "{t}");

        let mut req = Request::new(futures_util::stream::iter([output_request(&[314_159], 271_828)]));
        req.metadata_mut().insert(ECHO_INITIAL, MetadataValue::from_static("test_initial_metadata_value"));
        req.metadata_mut().insert_bin(ECHO_TRAILING, trailing.clone());
        let resp = client.full_duplex_call(req).await.unwrap();
        assert_eq!(resp.metadata().get(ECHO_INITIAL).unwrap(), "test_initial_metadata_value", "{t}");
        let mut stream: Streaming<_> = resp.into_inner();
        assert_eq!(size_of(&stream.message().await.unwrap().unwrap()), 314_159);
        let trailers = stream.trailers().await.unwrap().expect("trailers");
        assert_eq!(trailers.get_bin(ECHO_TRAILING).unwrap(), &trailing, "{t}");
    }
    running.stop().await;
}

#[tokio::test]
async fn unimplemented_method() {
    let (running, _) = server().await;
    for t in VIAS {
        let err = TestServiceClient::new(running.via(t)).unimplemented_call(()).await.unwrap_err();
        assert_eq!(err.code(), Code::Unimplemented, "{t}");
    }
    running.stop().await;
}

#[tokio::test]
async fn unimplemented_service() {
    let (running, _) = server().await;
    for t in VIAS {
        let err = UnimplementedServiceClient::new(running.via(t)).unimplemented_call(()).await.unwrap_err();
        assert_eq!(err.code(), Code::Unimplemented, "{t}");
    }
    running.stop().await;
}

#[tokio::test]
async fn timeout_on_sleeping_server() {
    let (running, service) = server().await;
    for t in VIAS {
        let client = TestServiceClient::new(running.via(t));
        // The server would sleep 10 s before answering; the call allows 50 ms.
        let slow = StreamingOutputCallRequest {
            response_parameters: vec![ResponseParameters { size: 1, interval_us: 10_000_000 }],
            payload: body(27_182),
            ..Default::default()
        };
        let mut req = Request::new(futures_util::stream::iter([slow.clone()]));
        req.set_timeout(Duration::from_millis(50));
        let result = match client.full_duplex_call(req).await {
            Ok(resp) => resp.into_inner().message().await.map(|_| ()),
            Err(status) => Err(status),
        };
        assert_eq!(result.unwrap_err().code(), Code::DeadlineExceeded, "{t}");

        // A client-wide default deadline does the same.
        let client = client.with_default_timeout(Duration::from_millis(50));
        let result = match client.streaming_output_call(slow).await {
            Ok(resp) => resp.into_inner().message().await.map(|_| ()),
            Err(status) => Err(status),
        };
        assert_eq!(result.unwrap_err().code(), Code::DeadlineExceeded, "{t}");
        // The server stopped every handler that started (on a loaded machine a 50 ms deadline can pass
        // before a request even reaches the server, which then has nothing to stop).
        assert!(every_started_handler_was_cancelled(&service).await, "{t}");
    }
    running.stop().await;
}

#[tokio::test]
async fn cancel_after_begin() {
    let (running, service) = server().await;
    for (i, t) in VIAS.into_iter().enumerate() {
        let client = TestServiceClient::new(running.via(t));
        let (tx, rx) = mpsc::channel::<StreamingInputCallRequest>(1);
        let call = tokio::spawn(async move { client.streaming_input_call(ReceiverStream::new(rx)).await });
        // Let the call begin on the server, then cancel it.
        for _ in 0..200 {
            if service.started.load(Ordering::SeqCst) > i {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        call.abort();
        assert!(call.await.unwrap_err().is_cancelled());
        if t.transport() == Transport::Iroh {
            // The QUIC stream is reset and the server drops the handler. Over gRPC, hyper leaves the
            // HTTP/2 stream of a client-streaming call open when the caller gives up before the
            // response headers (a known gap, in the README), so the server only sees the client go.
            assert!(server_saw_cancellations(&service, i).await, "{t}: the server handler was not dropped");
        }
        drop(tx);
    }
    running.stop().await;
}

#[tokio::test]
async fn cancel_after_first_response() {
    let (running, service) = server().await;
    for (i, t) in VIAS.into_iter().enumerate() {
        let (tx, rx) = mpsc::channel(1);
        let client = TestServiceClient::new(running.via(t));
        let mut replies = client.full_duplex_call(ReceiverStream::new(rx)).await.unwrap().into_inner();
        tx.send(output_request(&[31_415], 27_182)).await.unwrap();
        assert_eq!(size_of(&replies.message().await.unwrap().unwrap()), 31_415);
        drop(replies);
        assert!(server_saw_cancellations(&service, i + 1).await, "{t}: the server handler was not dropped");
        drop(tx);
    }
    running.stop().await;
}

#[tokio::test]
async fn concurrent_large_unary() {
    let (running, _) = server().await;
    for t in VIAS {
        let client = TestServiceClient::new(running.via(t));
        let calls = (0..32).map(|_| {
            let client = client.clone();
            async move {
                let req = SimpleRequest { response_size: 314_159, payload: body(271_828), ..Default::default() };
                client.unary_call(req).await.map(|r| r.into_inner().payload.unwrap().body.len())
            }
        });
        let sizes = futures_util::future::join_all(calls).await;
        assert!(sizes.iter().all(|s| s.as_ref().ok() == Some(&314_159)), "{t}: {sizes:?}");
    }
    running.stop().await;
}
