//! Every method kind on every transport, through the generated client, against real endpoints.

use bytes::Bytes;
use duet::{Code, MethodDesc, MethodKind, Server, Transport, WireCodec};
use duet_tests::harness::{self, TRANSPORTS};
use duet_tests::pb::cases::b::v1::MirrorClient;
use duet_tests::pb::matrix::v1::{CountRequest, EchoRequest, KindsClient, KindsServer};
use duet_tests::services::KindsImpl;
use futures_util::StreamExt;

fn text(t: &str) -> EchoRequest {
    EchoRequest { text: t.into(), ..Default::default() }
}

async fn kinds_server() -> harness::Running {
    harness::serve(Server::builder().add_service(KindsServer::new(KindsImpl::default()))).await
}

#[tokio::test]
async fn unary_on_each_transport_reports_its_transport() {
    let running = kinds_server().await;
    for transport in TRANSPORTS {
        let client = KindsClient::new(running.channel(transport));
        let resp = client.echo(text("hello")).await.unwrap();
        assert_eq!(resp.extensions().get::<Transport>(), Some(&transport));
        assert_eq!(resp.into_inner().text, "hello", "{transport}");
    }
    running.stop().await;
}

#[tokio::test]
async fn server_streaming_several_and_empty() {
    let running = kinds_server().await;
    for transport in TRANSPORTS {
        let client = KindsClient::new(running.channel(transport));
        let stream = client.count(CountRequest { count: 5 }).await.unwrap().into_inner();
        let got: Vec<_> = stream.map(|r| r.unwrap().index).collect().await;
        assert_eq!(got, [0, 1, 2, 3, 4], "{transport}");

        let mut empty = client.count(CountRequest { count: 0 }).await.unwrap().into_inner();
        assert_eq!(empty.message().await.unwrap(), None, "{transport}");
    }
    running.stop().await;
}

#[tokio::test]
async fn client_streaming_several_and_empty() {
    let running = kinds_server().await;
    for transport in TRANSPORTS {
        let client = KindsClient::new(running.channel(transport));
        let reqs = futures_util::stream::iter(["a", "b", "c"].map(text));
        let reply = client.join(reqs).await.unwrap().into_inner();
        assert_eq!((reply.text.as_str(), reply.index), ("a,b,c", 3), "{transport}");

        let reply = client.join(futures_util::stream::empty()).await.unwrap().into_inner();
        assert_eq!((reply.text.as_str(), reply.index), ("", 0), "{transport}");
    }
    running.stop().await;
}

#[tokio::test]
async fn bidi_ping_pong_and_empty() {
    let running = kinds_server().await;
    for transport in TRANSPORTS {
        let client = KindsClient::new(running.channel(transport));
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let mut replies = client.chat(tokio_stream::wrappers::ReceiverStream::new(rx)).await.unwrap().into_inner();
        for (i, word) in ["ping", "pong", "pang"].into_iter().enumerate() {
            tx.send(text(word)).await.unwrap();
            let reply = replies.message().await.unwrap().expect("a reply per request");
            assert_eq!((reply.text, reply.index), (word.to_uppercase(), i as u32), "{transport}");
        }
        drop(tx);
        assert_eq!(replies.message().await.unwrap(), None, "{transport}");

        let mut empty = client.chat(futures_util::stream::empty()).await.unwrap().into_inner();
        assert_eq!(empty.message().await.unwrap(), None, "{transport}");
    }
    running.stop().await;
}

#[tokio::test]
async fn handler_status_reaches_the_client_unchanged() {
    let running = kinds_server().await;
    let details = Bytes::from_static(&[0, 1, 2, 255, 254]);
    for transport in TRANSPORTS {
        let client = KindsClient::new(running.channel(transport));
        for code in [Code::InvalidArgument, Code::NotFound, Code::Aborted, Code::DataLoss] {
            let req = EchoRequest {
                text: String::new(),
                fail_with: code as i32,
                fail_message: format!("no luck ✓ 🚀 {code:?}"),
                fail_details: details.clone(),
            };
            let status = client.echo(req.clone()).await.unwrap_err();
            assert_eq!(status.code(), code, "{transport}");
            assert_eq!(status.message(), req.fail_message, "{transport}");
            assert_eq!(status.details(), &details[..], "{transport}");

            // The same status ends a stream in the middle.
            let reqs = futures_util::stream::iter([text("fine"), req.clone()]);
            let mut replies = client.chat(reqs).await.unwrap().into_inner();
            assert_eq!(replies.message().await.unwrap().unwrap().text, "FINE");
            let status = replies.message().await.unwrap_err();
            assert_eq!((status.code(), status.message()), (code, req.fail_message.as_str()), "{transport}");
        }
    }
    running.stop().await;
}

/// A method the server's service does not have.
const MISSING_METHOD: MethodDesc = MethodDesc {
    path: "/matrix.v1.Kinds/Missing",
    service: "matrix.v1.Kinds",
    method: "Missing",
    config_name: "kinds",
    kind: MethodKind::Unary,
    idempotent: false,
    fingerprint: 0,
    codec: WireCodec::Postcard,
};

#[tokio::test]
async fn unimplemented_method_and_service() {
    let running = kinds_server().await;
    for transport in TRANSPORTS {
        let channel = running.channel(transport);
        let status = channel
            .unary::<EchoRequest, EchoRequest>(duet::Request::new(text("x")), &MISSING_METHOD, &Default::default())
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unimplemented, "{transport}: {status:?}");

        // Mirror is not served at all.
        let status =
            MirrorClient::new(channel).reflect(duet_tests::pb::cases::a::v1::Everything::default()).await.unwrap_err();
        assert_eq!(status.code(), Code::Unimplemented, "{transport}: {status:?}");

        // And the channel still works afterwards.
        let client = KindsClient::new(running.channel(transport));
        assert_eq!(client.echo(text("still here")).await.unwrap().into_inner().text, "still here");
    }
    running.stop().await;
}

#[tokio::test]
async fn iroh_calls_share_one_connection_per_peer() {
    let running = kinds_server().await;
    let a = running.channel(Transport::Iroh);
    let b = running.channel(Transport::Iroh);
    KindsClient::new(a).echo(text("1")).await.unwrap();
    KindsClient::new(b).echo(text("2")).await.unwrap();
    let addr = running.server.iroh_addr().unwrap();
    let c1 = running.connector.connection(addr.clone()).await.unwrap();
    let c2 = running.connector.connection(addr).await.unwrap();
    assert_eq!(c1.stable_id(), c2.stable_id());
    running.stop().await;
}
