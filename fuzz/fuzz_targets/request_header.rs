//! Arbitrary bytes as the postcard bodies of the `duet/1` header frames (`duet::iroh::wire`):
//! `RequestHeader`, `ResponseHeader` and `Trailer`, each decoded from the whole input.
//!
//! The server and client code under test is duet's own, through `duet::iroh::fuzzing`.
//!
//! Checked:
//! - no panic, in postcard and in everything the server and client do with a header body: the
//!   server's reading of it (`read_call_header`: postcard, metadata entries into a tonic `MetadataMap`,
//!   the timeout into a `Duration`), the path split into service and method, every metadata value read
//!   back as a handler would (`-bin` values base64-decoded), a tokio sleep of the timeout polled once
//!   (as the server's deadline is), a trailer body into a `Status` (`parse_trailer`), and that status
//!   relayed over gRPC (`Status::add_header` / `Status::from_header_map`);
//! - the server reads a request header exactly when postcard decodes one (`INVALID_ARGUMENT`
//!   otherwise), with its path, fingerprint and timeout, or refuses its metadata with a status; the
//!   client reads a trailer body as the status of the decoded trailer, or `INTERNAL`;
//! - `split_path` accepts exactly the paths `/service/method` with two non-empty parts;
//! - round trip: `encode(decode(x))` decodes to the same value, consumes all it encodes and is never
//!   longer than the bytes `decode` consumed (postcard's encoding is the minimal one);
//! - metadata round trip: `metadata_to_wire(metadata_from_wire(entries))` is the entries with names
//!   lower-cased, reserved gRPC headers dropped and repeated names grouped; a trailer's status turns
//!   back into the same trailer (for the 17 known codes);
//! - the body travels in a `RequestHeader` frame unchanged when it fits `MAX_HEADER_FRAME`.
#![no_main]

use std::future::Future;
use std::sync::OnceLock;
use std::task::Poll;
use std::time::Duration;

use bytes::BytesMut;
use duet::iroh::frame::{Decoder, FrameDecoder, FrameKind, MAX_HEADER_FRAME, encode_frame};
use duet::iroh::fuzzing::{
    metadata_from_wire, metadata_to_wire, parse_trailer, read_call_header, split_path, status_from_trailer,
    trailer_from_status,
};
use duet::iroh::wire::{Entry, RequestHeader, ResponseHeader, Trailer, encode};
use duet::metadata::{KeyAndValueRef, MetadataMap};
use duet::{Code, Status};
use duet_fuzz::{header_seeds, normalized, seed_empty_corpora};
use libfuzzer_sys::fuzz_target;

/// Decodes `data` as a `$t`; when it does, checks the postcard round trip. A macro, not a
/// function: `RequestHeader` borrows from the bytes it was decoded from, so the value and its
/// re-decoded copy have different lifetimes.
macro_rules! round_trip {
    ($t:ty, $data:expr) => {{
        let data: &[u8] = $data;
        match postcard::take_from_bytes::<$t>(data) {
            Err(_) => None,
            Ok((value, rest)) => {
                let consumed = data.len() - rest.len();
                let bytes = encode(&value);
                assert!(
                    bytes.len() <= consumed,
                    "re-encoding is longer ({}) than the input consumed ({consumed})",
                    bytes.len()
                );
                let (back, rest) = postcard::take_from_bytes::<$t>(&bytes).expect("an encoded value decodes");
                assert!(rest.is_empty(), "decoding an encoded value left {} bytes", rest.len());
                assert_eq!(back, value);
                Some(value)
            }
        }
    }};
}

fuzz_target!(
    init: seed_empty_corpora(&header_seeds()),
    |data: &[u8]| {
        request_header(data, round_trip!(RequestHeader, data));
        if let Some(h) = round_trip!(ResponseHeader, data) {
            metadata(h.metadata);
        }
        trailer(data, round_trip!(Trailer, data));
        if let Ok(path) = std::str::from_utf8(data) {
            check_split(path);
        }
        if data.len() <= MAX_HEADER_FRAME {
            let mut buf = BytesMut::from(&encode_frame(FrameKind::RequestHeader, data)[..]);
            let frame = FrameDecoder::new(0).decode_eof(&mut buf).expect("a header frame within its limit").unwrap();
            assert_eq!((frame.kind, &frame.body[..]), (FrameKind::RequestHeader, data));
        }
    }
);

/// What the server does with a request header frame's body before the handler runs.
fn request_header(body: &[u8], decoded: Option<RequestHeader>) {
    let call = read_call_header(body);
    let Some(h) = decoded else {
        let status = call.expect_err("the server read a request header that postcard does not decode");
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        return;
    };
    check_split(&h.path);
    match call {
        Ok(call) => {
            assert_eq!(call.path, h.path);
            assert_eq!(call.fingerprint, h.fingerprint);
            assert_eq!(call.timeout.map(|t| t.as_micros()), h.timeout_micros.map(u128::from));
            check_metadata(&h.metadata, call.metadata);
            if let Some(t) = call.timeout {
                poll_sleep_once(t);
            }
        }
        Err(status) => {
            assert!(matches!(status.code(), Code::Internal | Code::ResourceExhausted), "{status:?}");
            assert!(metadata_from_wire(h.metadata).is_err(), "refused a header whose metadata is valid: {status:?}");
        }
    }
}

/// `split_path` splits exactly the paths `/service/method` with two non-empty parts and no other slash.
fn check_split(path: &str) {
    let parts: Vec<&str> = path.split('/').collect();
    let expected = match parts[..] {
        ["", service, method] if !service.is_empty() && !method.is_empty() => Some((service, method)),
        _ => None,
    };
    assert_eq!(split_path(path), expected, "{path:?}");
}

/// What the client does with response-header metadata.
fn metadata(entries: Vec<Entry>) {
    match metadata_from_wire(entries.clone()) {
        Ok(md) => check_metadata(&entries, md),
        Err(status) => assert!(matches!(status.code(), Code::Internal | Code::ResourceExhausted)),
    }
}

/// Reads every value as a handler would and checks the wire round trip.
fn check_metadata(entries: &[Entry], md: MetadataMap) {
    assert!(md.len() <= entries.len());
    for kv in md.iter() {
        match kv {
            KeyAndValueRef::Ascii(key, value) => {
                assert!(!key.as_str().ends_with("-bin"));
                let _ = value.to_str();
            }
            KeyAndValueRef::Binary(key, value) => {
                assert!(key.as_str().ends_with("-bin"));
                let _ = value.to_bytes();
            }
        }
    }
    assert_eq!(metadata_to_wire(md), normalized(entries), "metadata changed between the wire and the handler");
}

/// The server's deadline is `tokio::time::sleep(timeout)` raced against the handler: build it and
/// poll it once on a runtime with a timer, as the server does.
fn poll_sleep_once(t: Duration) {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    let rt = RT.get_or_init(|| tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap());
    rt.block_on(async {
        let mut sleep = std::pin::pin!(tokio::time::sleep(t));
        std::future::poll_fn(|cx| {
            let _ = sleep.as_mut().poll(cx);
            Poll::Ready(())
        })
        .await;
    });
}

/// What the client does with a trailer frame's body, and what relaying its status over gRPC does.
fn trailer(body: &[u8], decoded: Option<Trailer>) {
    let parsed = parse_trailer(body);
    let Some(t) = decoded else {
        assert_eq!(parsed.code(), Code::Internal, "{parsed:?}");
        assert!(parsed.message().starts_with("malformed trailer"), "{parsed:?}");
        return;
    };
    let status = status_from_trailer(t.clone());
    assert_eq!(parsed.code(), status.code());
    assert_eq!(parsed.message(), status.message());
    assert_eq!(parsed.details(), status.details());
    assert_eq!(parsed.metadata().clone().into_headers(), status.metadata().clone().into_headers());
    match metadata_from_wire(t.metadata.clone()) {
        Ok(_) => {
            let known = (0..=16).contains(&t.code);
            assert_eq!(status.code() as i32, if known { t.code } else { Code::Unknown as i32 });
            assert_eq!(status.message(), t.message);
            assert_eq!(status.details(), &t.details[..]);
            let back = trailer_from_status(&status);
            assert_eq!(back.metadata, normalized(&t.metadata));
            if known {
                assert_eq!((back.code, &back.message, &back.details), (t.code, &t.message, &t.details));
            }
            relay_over_grpc(&status);
        }
        Err(_) => assert!(matches!(status.code(), Code::Internal | Code::ResourceExhausted)),
    }
}

/// A status from an Iroh peer written as gRPC trailers and read back (a handler returning an error it
/// got from an Iroh call to a gRPC caller).
fn relay_over_grpc(status: &Status) {
    let mut headers = http::HeaderMap::new();
    status.add_header(&mut headers).expect("percent-encoded message and base64 details are valid headers");
    let back = Status::from_header_map(&headers).expect("grpc-status was written");
    assert_eq!(back.code(), status.code());
    assert_eq!(back.message(), status.message());
    assert_eq!(back.details(), status.details());
}
