//! A peer that opens streams and trickles bytes cannot hold handler slots or starve other peers: each
//! stalled stream (before its header is complete, or after a unary call's header and before its
//! message) is answered DEADLINE_EXCEEDED after the header timeout, its slot comes back, and
//! other connections are served meanwhile.

use std::time::Duration;

use bytes::BytesMut;
use duet::iroh::frame::{Decoder as _, FrameDecoder, FrameKind, encode_frame};
use duet::iroh::wire::{RequestHeader, Trailer};
use duet::iroh::{Connector, endpoint};
use duet::{Channel, Code, Server};
use duet_tests::pb::matrix::v1::{EchoRequest, KindsClient, KindsServer, kinds_methods};
use duet_tests::services::KindsImpl;

#[tokio::test]
async fn trickling_streams_time_out_and_free_their_slots() {
    let server = Server::builder()
        .iroh(endpoint::bind_loopback().await.unwrap())
        .iroh_header_timeout(Duration::from_millis(300))
        .max_concurrent_calls_per_connection(16)
        .add_service(KindsServer::new(KindsImpl::default()))
        .serve()
        .await
        .unwrap();
    let addr = server.iroh_addr().unwrap();

    // The attacker fills every slot of its connection: half the streams send one byte of a length,
    // half a whole request header for a unary call and then no message.
    let attacker = Connector::new(endpoint::bind_loopback().await.unwrap());
    let conn = attacker.connection(addr.clone()).await.unwrap();
    let echo = &kinds_methods::ECHO;
    let header =
        RequestHeader { path: echo.path.into(), metadata: vec![], timeout_micros: None, fingerprint: echo.fingerprint };
    let header = encode_frame(FrameKind::RequestHeader, &postcard::to_stdvec(&header).unwrap());
    let began = std::time::Instant::now();
    let mut stalled = vec![];
    for i in 0..16 {
        let (mut send, recv) = conn.open_bi().await.unwrap();
        let (stage, bytes) = if i % 2 == 0 { ("header", &[0x80][..]) } else { ("message", &header[..]) };
        send.write_all(bytes).await.unwrap();
        stalled.push((stage, send, recv));
    }

    // Meanwhile an honest peer is served at once.
    let honest = Channel::iroh(&Connector::new(endpoint::bind_loopback().await.unwrap()), addr.clone());
    let reply = KindsClient::new(honest).echo(EchoRequest { text: "fine".into(), ..Default::default() }).await;
    assert_eq!(reply.unwrap().into_inner().text, "fine");

    // Every stalled stream is answered DEADLINE_EXCEEDED once the header timeout passes.
    for (stage, _send, mut recv) in stalled {
        let bytes = tokio::time::timeout(Duration::from_secs(5), recv.read_to_end(1 << 16)).await.unwrap().unwrap();
        let mut buf = BytesMut::from(&bytes[..]);
        let frame = FrameDecoder::new(1 << 16).decode_eof(&mut buf).unwrap().expect("a trailer");
        assert_eq!(frame.kind, FrameKind::Trailer);
        let trailer: Trailer = postcard::from_bytes(&frame.body).unwrap();
        assert_eq!(Code::from_i32(trailer.code), Code::DeadlineExceeded, "{stage}: {}", trailer.message);
        assert!(trailer.message.contains(stage), "{stage}: {}", trailer.message);
    }
    // Not before the timeout (an upper bound would be a timed assertion: the 5 s above is the guard).
    assert!(began.elapsed() >= Duration::from_millis(300), "cut off after {:?}", began.elapsed());

    // And the attacker's own connection has its slots back for a real call.
    let channel = Channel::iroh(&attacker, addr);
    let reply = tokio::time::timeout(
        Duration::from_secs(5),
        KindsClient::new(channel).echo(EchoRequest { text: "after".into(), ..Default::default() }),
    )
    .await
    .expect("a slot came back");
    assert_eq!(reply.unwrap().into_inner().text, "after");
    server.shutdown().await;
}
