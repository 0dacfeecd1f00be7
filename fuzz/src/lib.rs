//! Shared by the fuzz targets: the expected metadata after a wire round trip, a reference frame
//! parser, and seed inputs.
//!
//! The targets call duet's own header handling through `duet::iroh::fuzzing` (hidden from duet's
//! docs, not a stable API): the server's `read_call_header` and `split_path`, the metadata
//! conversions `metadata_from_wire` / `metadata_to_wire`, and the client's `status_from_trailer`,
//! `parse_trailer` and `trailer_from_status`. What they check it against is written here from the
//! `duet/1` spec, independently of duet: [`normalized`] and [`reference_parse`].

use std::path::Path;

use bytes::Bytes;
use duet::iroh::frame::{FrameKind, encode_frame};
use duet::iroh::wire::{Entry, RequestHeader, ResponseHeader, Trailer, encode};

/// Headers gRPC reserves for itself (its HTTP/2 protocol spec): they never travel as user metadata.
pub const RESERVED: [&str; 6] =
    ["te", "content-type", "grpc-message", "grpc-message-type", "grpc-status", "grpc-status-details-bin"];

/// What `to_wire(from_wire(entries))` must give back: names lower-cased (HTTP/2 header names are),
/// reserved gRPC headers dropped, values grouped under the first appearance of their name.
pub fn normalized(entries: &[Entry]) -> Vec<Entry> {
    let mut names: Vec<String> = vec![];
    let mut groups: Vec<Vec<Bytes>> = vec![];
    for e in entries {
        let name = e.name.to_ascii_lowercase();
        match names.iter().position(|n| *n == name) {
            Some(i) => groups[i].push(e.value.clone()),
            None => {
                names.push(name);
                groups.push(vec![e.value.clone()]);
            }
        }
    }
    names
        .into_iter()
        .zip(groups)
        .filter(|(n, _)| !RESERVED.contains(&n.as_str()))
        .flat_map(|(name, values)| values.into_iter().map(move |value| Entry { name: name.clone(), value }))
        .collect()
}

/// One frame as the `duet/1` spec reads it: `varint(len) | kind | body`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefFrame {
    /// The kind byte, known to be 1..=5.
    pub kind: FrameKind,
    /// Bytes of the length prefix (1..=10; non-minimal varints are allowed).
    pub prefix: usize,
    /// Body length.
    pub len: usize,
}

/// How a stream ends, as the spec says it must.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefEnd {
    /// All bytes were whole frames.
    Clean,
    /// A claimed length over the limit of its kind.
    TooLarge { kind: FrameKind, len: u64, limit: usize },
    /// A kind byte outside 1..=5.
    UnknownKind(u8),
    /// A varint longer than 64 bits.
    BadLength,
    /// The bytes ended inside a frame.
    Truncated,
}

/// The kind a byte names, per the spec.
pub fn kind_of(b: u8) -> Option<FrameKind> {
    Some(match b {
        1 => FrameKind::RequestHeader,
        2 => FrameKind::Message,
        3 => FrameKind::ResponseHeader,
        4 => FrameKind::Trailer,
        5 => FrameKind::CompressedMessage,
        _ => return None,
    })
}

/// Result of reading one frame head (varint and kind byte) from `src`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Head {
    /// More bytes are needed to know.
    Incomplete,
    /// A complete head: kind, prefix length, claimed body length.
    Head(FrameKind, usize, u64),
    /// The head is invalid.
    Bad(RefEnd),
}

/// Reads a frame head the way the spec describes it, independently of duet's decoder.
pub fn read_head(src: &[u8], max_message: usize) -> Head {
    let mut len: u128 = 0;
    let mut prefix = None;
    for (i, &b) in src.iter().enumerate().take(10) {
        len |= u128::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            prefix = Some(i + 1);
            break;
        }
    }
    let Some(prefix) = prefix else {
        return if src.len() >= 10 { Head::Bad(RefEnd::BadLength) } else { Head::Incomplete };
    };
    if len > u128::from(u64::MAX) {
        return Head::Bad(RefEnd::BadLength);
    }
    let len = len as u64;
    let Some(&kind_byte) = src.get(prefix) else { return Head::Incomplete };
    let Some(kind) = kind_of(kind_byte) else { return Head::Bad(RefEnd::UnknownKind(kind_byte)) };
    let limit = limit_of(kind, max_message);
    if len > limit as u64 {
        return Head::Bad(RefEnd::TooLarge { kind, len, limit });
    }
    Head::Head(kind, prefix, len)
}

/// The body limit of a kind of frame.
pub fn limit_of(kind: FrameKind, max_message: usize) -> usize {
    match kind {
        FrameKind::Message | FrameKind::CompressedMessage => max_message,
        _ => duet::iroh::frame::MAX_HEADER_FRAME,
    }
}

/// The frames a whole byte stream holds and how it ends, per the spec.
pub fn reference_parse(stream: &[u8], max_message: usize) -> (Vec<RefFrame>, RefEnd) {
    let mut frames = vec![];
    let mut pos = 0;
    loop {
        if pos == stream.len() {
            return (frames, RefEnd::Clean);
        }
        match read_head(&stream[pos..], max_message) {
            Head::Incomplete => return (frames, RefEnd::Truncated),
            Head::Bad(end) => return (frames, end),
            Head::Head(kind, prefix, len) => {
                let len = len as usize;
                if stream.len() - pos < prefix + 1 + len {
                    return (frames, RefEnd::Truncated);
                }
                frames.push(RefFrame { kind, prefix, len });
                pos += prefix + 1 + len;
            }
        }
    }
}

/// A `frame_decoder` input: limit byte, split count, split sizes, then the stream.
pub fn frame_input(max_message: u8, splits: &[u8], stream: &[u8]) -> Vec<u8> {
    let mut out = vec![max_message, splits.len() as u8];
    out.extend_from_slice(splits);
    out.extend_from_slice(stream);
    out
}

fn entry(name: &str, value: &[u8]) -> Entry {
    Entry { name: name.into(), value: Bytes::copy_from_slice(value) }
}

/// Seed inputs for the `frame_decoder` target.
pub fn frame_seeds() -> Vec<Vec<u8>> {
    let header = encode(&RequestHeader {
        path: "/node.v1.Health/Check".into(),
        metadata: vec![entry("x-request-id", b"42")],
        timeout_micros: Some(1_000_000),
        fingerprint: duet::__codegen::PROTOBUF_FINGERPRINT,
    });
    let mut call = encode_frame(FrameKind::RequestHeader, &header).to_vec();
    call.extend_from_slice(&encode_frame(FrameKind::Message, b"\x08\x01"));
    let mut response = encode_frame(FrameKind::ResponseHeader, &encode(&ResponseHeader { metadata: vec![] })).to_vec();
    response.extend_from_slice(&encode_frame(FrameKind::Message, b"hello"));
    response.extend_from_slice(&encode_frame(FrameKind::Trailer, &encode(&ok_trailer())));
    let mut over = duet::iroh::frame::frame_prefix(FrameKind::Message, 4 << 30).to_vec();
    over.push(0);
    vec![
        frame_input(16, &[], &call),
        frame_input(16, &[1, 3, 7], &call),
        frame_input(32, &[5], &response),
        frame_input(4, &[2], &encode_frame(FrameKind::Message, b"hello")),
        frame_input(16, &[], &over),
        frame_input(16, &[], &[0x80, 0x80, 0x00, 2]),
        frame_input(16, &[], &[0xff; 11]),
        frame_input(16, &[], &[1, 9, 0]),
        frame_input(16, &[1], &duet::iroh::frame::frame_prefix(FrameKind::RequestHeader, 60_000)),
    ]
}

fn ok_trailer() -> Trailer {
    Trailer { code: 0, message: String::new(), details: Bytes::new(), metadata: vec![] }
}

/// Seed inputs for the `request_header` target (postcard bodies of the three header kinds).
pub fn header_seeds() -> Vec<Vec<u8>> {
    vec![
        encode(&RequestHeader {
            path: "/node.v1.Health/Check".into(),
            metadata: vec![
                entry("x-request-id", b"42"),
                entry("x-many", b"a"),
                entry("X-Many", b"b"),
                entry("x-blob-bin", b"AP8K"),
                entry("content-type", b"application/grpc"),
            ],
            timeout_micros: Some(250_000),
            fingerprint: 0x0123_4567_89ab_cdef,
        })
        .to_vec(),
        encode(&RequestHeader { path: "/a.B/C".into(), metadata: vec![], timeout_micros: None, fingerprint: 0 })
            .to_vec(),
        encode(&RequestHeader {
            path: "//x".into(),
            metadata: vec![entry("bad key", b"v")],
            timeout_micros: Some(u64::MAX),
            fingerprint: u64::MAX,
        })
        .to_vec(),
        encode(&ResponseHeader { metadata: vec![entry("x-resp", b"1"), entry("x-resp", b"\x80\xff")] }).to_vec(),
        encode(&Trailer {
            code: 5,
            message: "not found: ünïcode".into(),
            details: Bytes::from_static(b"\x00\x01\x02"),
            metadata: vec![entry("x-trailer", b"t"), entry("grpc-status", b"0")],
        })
        .to_vec(),
        encode(&Trailer { code: -1, message: String::new(), details: Bytes::new(), metadata: vec![] }).to_vec(),
    ]
}

/// Writes `seeds` into every empty corpus directory named on the command line, so a first
/// `cargo fuzz run` starts from valid frames and headers rather than from nothing. Called from the
/// targets' `init`, before libFuzzer reads its corpus; a non-empty corpus is left alone.
pub fn seed_empty_corpora(seeds: &[Vec<u8>]) {
    for arg in std::env::args().skip(1).filter(|a| !a.starts_with('-')) {
        let dir = Path::new(&arg);
        let empty = dir.is_dir() && dir.read_dir().map(|mut d| d.next().is_none()).unwrap_or(false);
        if !empty {
            continue;
        }
        for (i, seed) in seeds.iter().enumerate() {
            let _ = std::fs::write(dir.join(format!("seed-{i:02}")), seed);
        }
    }
}
