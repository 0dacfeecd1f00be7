//! Hostile bytes on a raw QUIC stream: each bad call ends with a fitting status, and the connection and
//! other calls live on.

use bytes::BytesMut;
use duet::Code;
use duet::iroh::frame::Decoder as _;
use duet::iroh::frame::{FrameDecoder, FrameKind, encode_frame, frame_prefix};
use duet::iroh::wire::{self, RequestHeader, Trailer};
use duet::{Server, Transport};
use duet_tests::harness;
use duet_tests::pb::matrix::v1::{EchoRequest, KindsClient, KindsServer, kinds_methods};
use duet_tests::services::KindsImpl;
use iroh::endpoint::Connection;

fn header(path: &str, fingerprint: u64) -> Vec<u8> {
    let h = RequestHeader { path: path.to_owned().into(), metadata: vec![], timeout_micros: None, fingerprint };
    encode_frame(FrameKind::RequestHeader, &wire::encode(&h)).to_vec()
}

fn message(msg: &EchoRequest) -> Vec<u8> {
    encode_frame(FrameKind::Message, &postcard::to_stdvec(msg).unwrap()).to_vec()
}

/// Sends raw bytes as one call and returns the status of the trailer the server answers with.
async fn raw_call(conn: &Connection, bytes: &[u8]) -> (Code, String) {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(bytes).await.unwrap();
    send.finish().unwrap();
    let answer = recv.read_to_end(1 << 20).await.unwrap();
    let mut buf = BytesMut::from(&answer[..]);
    let mut decoder = FrameDecoder::new(1 << 20);
    while let Some(frame) = decoder.decode_eof(&mut buf).unwrap() {
        if frame.kind == FrameKind::Trailer {
            let t: Trailer = postcard::from_bytes(&frame.body).unwrap();
            return (Code::from_i32(t.code), t.message);
        }
    }
    panic!("no trailer in {answer:?}")
}

#[tokio::test]
async fn each_bad_call_gets_a_status_and_the_connection_survives() {
    let running = harness::serve(Server::builder().add_service(KindsServer::new(KindsImpl::default()))).await;
    let addr = running.server.iroh_addr().unwrap();
    let conn = running.connector.connection(addr).await.unwrap();
    let echo = &kinds_methods::ECHO;
    let good = EchoRequest { text: "ok".into(), ..Default::default() };

    let mut huge_message = header(echo.path, echo.fingerprint);
    huge_message.extend_from_slice(&frame_prefix(FrameKind::Message, 4 << 30));
    huge_message.extend_from_slice(b"not 4 GiB");

    let mut garbage_message = header(echo.path, echo.fingerprint);
    garbage_message.extend_from_slice(&encode_frame(FrameKind::Message, &[0xff; 12]));

    let mut wrong_fingerprint = header(echo.path, echo.fingerprint ^ 1);
    wrong_fingerprint.extend_from_slice(&message(&good));

    let mut no_message = header(echo.path, echo.fingerprint);
    no_message.extend_from_slice(&encode_frame(FrameKind::Trailer, b""));

    let cases: Vec<(&str, Vec<u8>, Code)> = vec![
        ("truncated length", vec![0x80], Code::Internal),
        ("truncated body", encode_frame(FrameKind::RequestHeader, b"abcdef")[..4].to_vec(), Code::Internal),
        ("header over the limit", frame_prefix(FrameKind::RequestHeader, 1 << 32).to_vec(), Code::ResourceExhausted),
        ("message of 4 GiB", huge_message, Code::ResourceExhausted),
        ("garbage header body", encode_frame(FrameKind::RequestHeader, &[0xff; 20]).to_vec(), Code::InvalidArgument),
        ("garbage message body", garbage_message, Code::Internal),
        ("unknown frame kind", vec![0, 0x77], Code::Internal),
        ("message before header", message(&good), Code::Internal),
        ("trailer in place of the request", no_message, Code::Internal),
        ("unknown method", header("/matrix.v1.Kinds/Nope", 0), Code::Unimplemented),
        ("unknown service", header("/nope.v1.Nothing/Echo", 0), Code::Unimplemented),
        ("malformed path", header("no slashes", 0), Code::Unimplemented),
        ("schema mismatch", wrong_fingerprint, Code::FailedPrecondition),
    ];
    for (name, bytes, expected) in cases {
        let (code, status_message) = raw_call(&conn, &bytes).await;
        assert_eq!(code, expected, "{name}: {status_message}");

        // A good call right after, on the same connection.
        let mut ok = header(echo.path, echo.fingerprint);
        ok.extend_from_slice(&message(&good));
        assert_eq!(raw_call(&conn, &ok).await.0, Code::Ok, "good call after {name}");
    }
    assert!(conn.close_reason().is_none(), "the connection survived every bad call");

    // The generated client, sharing that connection through the connector, still works.
    let client = KindsClient::new(running.channel(Transport::Iroh));
    assert_eq!(client.echo(good).await.unwrap().into_inner().text, "ok");
    running.stop().await;
}
