//! Frames of the `duet/1` wire: `varint(body length) | kind byte | body`.
//!
//! The decoder checks a frame's claimed length against its limit before it reserves a byte, so a peer
//! that announces 4 GiB costs nothing but the error.

use bytes::{Buf, BufMut, Bytes, BytesMut};
pub use tokio_util::codec::Decoder;

use tonic::Status;

/// Largest header or trailer frame accepted (metadata is bounded separately from messages, as HTTP/2
/// bounds its header list).
pub const MAX_HEADER_FRAME: usize = 64 * 1024;

/// The kind byte of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// Client → server, first on every stream: path, metadata, timeout, schema fingerprint.
    RequestHeader = 1,
    /// One encoded message, either direction.
    Message = 2,
    /// Server → client, before the first message: response metadata.
    ResponseHeader = 3,
    /// Server → client, last: status code, message, details, trailing metadata.
    Trailer = 4,
    /// One encoded message, compressed with the encoding its sender named in `grpc-encoding`
    /// (the request header's metadata, or the response header's), either direction.
    CompressedMessage = 5,
}

impl FrameKind {
    fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            1 => Self::RequestHeader,
            2 => Self::Message,
            3 => Self::ResponseHeader,
            4 => Self::Trailer,
            5 => Self::CompressedMessage,
            _ => return None,
        })
    }
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// What the body holds.
    pub kind: FrameKind,
    /// The body, exactly as sent.
    pub body: Bytes,
}

/// Why a byte sequence is not a valid frame.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The claimed body length exceeds the limit for that kind of frame.
    #[error("{kind:?} frame of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The kind byte of the refused frame.
        kind: FrameKind,
        /// The length the peer claimed.
        len: u64,
        /// The limit in force.
        limit: usize,
    },
    /// The kind byte is not one of the five kinds.
    #[error("unknown frame kind {0:#04x}")]
    UnknownKind(u8),
    /// The length prefix is not a valid varint of at most 64 bits.
    #[error("malformed frame length")]
    BadLength,
    /// The stream ended in the middle of a frame.
    #[error("stream ended inside a frame")]
    Truncated,
    /// The transport failed while reading.
    #[error("transport error: {0}")]
    Io(#[from] std::io::Error),
}

impl FrameError {
    /// The status a call ends with when its stream carries this error.
    pub fn to_status(&self) -> Status {
        match self {
            FrameError::TooLarge { .. } => Status::resource_exhausted(self.to_string()),
            FrameError::Io(e) => crate::iroh::status_from_io(e),
            _ => Status::internal(format!("malformed frame: {self}")),
        }
    }
}

/// The most a decoder reserves ahead of the bytes it has for a frame still arriving.
pub const RESERVE_AHEAD: usize = 64 * 1024;

/// A [`Decoder`] for frames, with the message size limit of the side that reads.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    max_message: usize,
}

impl FrameDecoder {
    /// A decoder accepting message frames up to `max_message` bytes.
    pub fn new(max_message: usize) -> Self {
        Self { max_message }
    }

    /// The largest message frame this decoder accepts.
    pub fn max_message(&self) -> usize {
        self.max_message
    }
}

/// Reads a LEB128 varint; `Ok(None)` when more bytes are needed.
fn read_varint(src: &[u8]) -> Result<Option<(u64, usize)>, FrameError> {
    let mut value = 0u64;
    for (i, &b) in src.iter().enumerate().take(10) {
        if i == 9 && b > 1 {
            return Err(FrameError::BadLength);
        }
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(Some((value, i + 1)));
        }
    }
    if src.len() >= 10 { Err(FrameError::BadLength) } else { Ok(None) }
}

impl Decoder for FrameDecoder {
    type Item = Frame;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        let Some((len, prefix)) = read_varint(src)? else { return Ok(None) };
        let Some(&kind_byte) = src.get(prefix) else { return Ok(None) };
        let kind = FrameKind::from_byte(kind_byte).ok_or(FrameError::UnknownKind(kind_byte))?;
        let limit = match kind {
            FrameKind::Message | FrameKind::CompressedMessage => self.max_message,
            _ => MAX_HEADER_FRAME,
        };
        // A claim this machine cannot even address is too large whatever limit was configured
        // (`usize::MAX` means "no limit", not "trust any length").
        let total = usize::try_from(len).ok().filter(|&l| l <= limit).and_then(|l| l.checked_add(prefix + 1));
        let Some(total) = total else {
            return Err(FrameError::TooLarge { kind, len, limit });
        };
        let len = total - prefix - 1;
        if src.len() < total {
            // Room for the next stretch only: memory follows the bytes that arrive, not what a peer
            // claims (with a large limit, a claim alone could otherwise abort the process).
            src.reserve((total - src.len()).min(RESERVE_AHEAD));
            return Ok(None);
        }
        src.advance(prefix + 1);
        let body = src.split_to(len).freeze();
        Ok(Some(Frame { kind, body }))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() => Ok(None),
            None => Err(FrameError::Truncated),
        }
    }
}

/// The length-and-kind prefix of a frame with a body of `len` bytes.
pub fn frame_prefix(kind: FrameKind, len: usize) -> Bytes {
    let mut buf = BytesMut::with_capacity(11);
    put_prefix(&mut buf, kind, len);
    buf.freeze()
}

/// Appends the length-and-kind prefix of a frame with a body of `len` bytes to `buf`.
pub(crate) fn put_prefix(buf: &mut BytesMut, kind: FrameKind, len: usize) {
    let mut v = len as u64;
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
    buf.put_u8(kind as u8);
}

/// A whole frame as one buffer (for tests, fuzzing and small frames).
pub fn encode_frame(kind: FrameKind, body: &[u8]) -> Bytes {
    let mut buf = BytesMut::from(&frame_prefix(kind, body.len())[..]);
    buf.extend_from_slice(body);
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(bytes: &[u8], max: usize) -> Result<Vec<Frame>, FrameError> {
        let mut dec = FrameDecoder::new(max);
        let mut buf = BytesMut::from(bytes);
        let mut out = vec![];
        while let Some(f) = dec.decode_eof(&mut buf)? {
            out.push(f);
        }
        Ok(out)
    }

    #[test]
    fn claimed_length_over_limit_is_refused_before_allocation() {
        // 4 GiB claimed, five bytes present.
        let mut bytes = frame_prefix(FrameKind::Message, 4 << 30).to_vec();
        bytes.push(0);
        let mut dec = FrameDecoder::new(1024);
        let mut buf = BytesMut::from(&bytes[..]);
        let cap = buf.capacity();
        let err = dec.decode(&mut buf).unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { len, .. } if len == 4 << 30));
        assert_eq!(buf.capacity(), cap, "nothing was reserved for the claimed length");
        assert_eq!(err.to_status().code(), tonic::Code::ResourceExhausted);
    }

    #[test]
    fn any_claim_with_no_limit_costs_no_more_than_the_reserve_window() {
        // usize::MAX as the limit: a claim of u64::MAX is still refused, and a claim that passes
        // (1 TiB) reserves one window, not the claim.
        let mut dec = FrameDecoder::new(usize::MAX);
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 2][..]);
        assert!(matches!(dec.decode(&mut buf), Err(FrameError::TooLarge { len: u64::MAX, .. })));
        let mut buf = BytesMut::from(&frame_prefix(FrameKind::Message, 1 << 40)[..]);
        assert!(dec.decode(&mut buf).unwrap().is_none());
        assert!(buf.capacity() <= buf.len() + RESERVE_AHEAD, "reserved {} bytes", buf.capacity());
        // A frame whose body arrives in pieces still decodes whole.
        let body = vec![7u8; 3 * RESERVE_AHEAD + 5];
        let encoded = encode_frame(FrameKind::Message, &body);
        let mut buf = BytesMut::new();
        let mut frame = None;
        for piece in encoded.chunks(1000) {
            buf.extend_from_slice(piece);
            if let Some(f) = dec.decode(&mut buf).unwrap() {
                frame = Some(f);
            }
        }
        assert_eq!(frame.expect("decoded").body, body);
    }

    #[test]
    fn header_frames_have_their_own_limit() {
        let bytes = frame_prefix(FrameKind::RequestHeader, MAX_HEADER_FRAME + 1);
        let err = decode_all(&bytes, usize::MAX).unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { kind: FrameKind::RequestHeader, .. }));
    }

    #[test]
    fn truncated_unknown_and_overlong_varint() {
        let mut truncated = encode_frame(FrameKind::Message, b"hello").to_vec();
        truncated.pop();
        assert!(matches!(decode_all(&truncated, 100), Err(FrameError::Truncated)));
        assert!(matches!(decode_all(&[1, 9, 0], 100), Err(FrameError::UnknownKind(9))));
        assert!(matches!(decode_all(&[0xff; 11], 100), Err(FrameError::BadLength)));
    }

    proptest! {
        #[test]
        fn frames_round_trip(bodies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..8)) {
            let mut wire = vec![];
            for b in &bodies {
                wire.extend_from_slice(&encode_frame(FrameKind::Message, b));
            }
            let frames = decode_all(&wire, 300).unwrap();
            prop_assert_eq!(frames.len(), bodies.len());
            for (f, b) in frames.iter().zip(&bodies) {
                prop_assert_eq!(&f.body[..], &b[..]);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic_nor_exceed_limits(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(frames) = decode_all(&bytes, 16) {
                for f in frames {
                    let limit = if f.kind == FrameKind::Message { 16 } else { MAX_HEADER_FRAME };
                    prop_assert!(f.body.len() <= limit);
                }
            }
        }
    }
}
