//! A peer that opens streams and trickles bytes cannot hold handler slots or starve other peers: each
//! stalled stream is answered DEADLINE_EXCEEDED after the header timeout, its slot comes back, and
//! other connections are served meanwhile.

use std::time::Duration;

use bytes::BytesMut;
use duet::iroh::frame::{Decoder as _, FrameDecoder, FrameKind};
use duet::iroh::wire::Trailer;
use duet::iroh::{Connector, endpoint};
use duet::{Channel, Code, Server};
use duet_tests::pb::matrix::v1::{EchoRequest, KindsClient, KindsServer};
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

    // The attacker fills every slot of its connection with a stream that sends one byte of a length.
    let attacker = Connector::new(endpoint::bind_loopback().await.unwrap());
    let conn = attacker.connection(addr.clone()).await.unwrap();
    let mut stalled = vec![];
    for _ in 0..16 {
        let (mut send, recv) = conn.open_bi().await.unwrap();
        send.write_all(&[0x80]).await.unwrap();
        stalled.push((send, recv));
    }

    // Meanwhile an honest peer is served at once.
    let honest = Channel::iroh(&Connector::new(endpoint::bind_loopback().await.unwrap()), addr.clone());
    let reply = KindsClient::new(honest).echo(EchoRequest { text: "fine".into(), ..Default::default() }).await;
    assert_eq!(reply.unwrap().into_inner().text, "fine");

    // Every stalled stream is answered DEADLINE_EXCEEDED once the header timeout passes.
    for (_send, mut recv) in stalled {
        let bytes = tokio::time::timeout(Duration::from_secs(5), recv.read_to_end(1 << 16)).await.unwrap().unwrap();
        let mut buf = BytesMut::from(&bytes[..]);
        let frame = FrameDecoder::new(1 << 16).decode_eof(&mut buf).unwrap().expect("a trailer");
        assert_eq!(frame.kind, FrameKind::Trailer);
        let trailer: Trailer = postcard::from_bytes(&frame.body).unwrap();
        assert_eq!(Code::from_i32(trailer.code), Code::DeadlineExceeded, "{}", trailer.message);
    }

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
