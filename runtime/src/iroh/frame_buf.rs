//! Frames encoded straight into one buffer, so that a unary request (header, message) or reply
//! (header, message, trailer) costs one allocation and one write.
//!
//! Encoding each body to its own `Vec` and each length prefix to its own buffer took a dozen
//! allocations per small call, more than the raw QUIC echo's whole per-call count (see
//! BENCHMARKS.md, "CPU cost per call").

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;

use super::frame::{FrameKind, put_prefix};
use crate::Status;
use crate::codec::{Message, WireCodec};

/// Room for the frames of a small call; a larger message reserves what it needs.
const SMALL: usize = 256;

/// Room left after a message for the frame that may follow it (a reply's trailer): without it, a
/// 1 MiB reply filled its buffer exactly and the trailer doubled it to 2 MiB.
const AFTER_MESSAGE: usize = 64;

/// Frames gathered for one write.
#[derive(Debug)]
pub(crate) struct FrameBuf {
    buf: BytesMut,
}

/// A postcard output that appends to a `BytesMut` (postcard's own `to_extend` pushes byte by byte).
struct Append<'a>(&'a mut BytesMut);

impl postcard::ser_flavors::Flavor for Append<'_> {
    type Output = ();

    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        self.0.put_u8(byte);
        Ok(())
    }

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

impl FrameBuf {
    pub fn new() -> Self {
        Self { buf: BytesMut::with_capacity(SMALL) }
    }

    /// Appends a header or trailer frame: the postcard body of `value`.
    pub fn header<T: Serialize>(&mut self, kind: FrameKind, value: &T) {
        // Header types hold only strings, bytes and integers: serialising them cannot fail.
        let len = postcard::experimental::serialized_size(value).expect("header types always serialise");
        put_prefix(&mut self.buf, kind, len);
        self.buf.reserve(len);
        postcard::serialize_with_flavor(value, Append(&mut self.buf)).expect("header types always serialise");
    }

    /// Appends a message frame, refusing a body larger than `limit` with `RESOURCE_EXHAUSTED` (as
    /// tonic does) before anything is written.
    pub fn message<T: Message>(&mut self, codec: WireCodec, msg: &T, limit: usize) -> Result<(), Status> {
        let len = match codec {
            WireCodec::Postcard => postcard::experimental::serialized_size(msg).map_err(encode_failed)?,
            WireCodec::Protobuf => msg.encoded_len(),
        };
        if len > limit {
            return Err(crate::codec::too_large(len, limit));
        }
        put_prefix(&mut self.buf, FrameKind::Message, len);
        self.buf.reserve(len + AFTER_MESSAGE);
        match codec {
            WireCodec::Postcard => {
                postcard::serialize_with_flavor(msg, Append(&mut self.buf)).map_err(encode_failed)?
            }
            // Cannot fail: the buffer grows as needed.
            WireCodec::Protobuf => msg.encode_raw(&mut self.buf),
        }
        Ok(())
    }

    pub fn freeze(self) -> Bytes {
        self.buf.freeze()
    }
}

fn encode_failed(e: postcard::Error) -> Status {
    Status::internal(format!("failed to encode message: {e}"))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use futures_util::StreamExt;
    use tokio_util::codec::FramedRead;

    use super::*;
    use crate::iroh::frame::{Frame, FrameDecoder};
    use crate::iroh::wire::Trailer;

    #[derive(Clone, PartialEq, prost::Message, serde::Serialize, serde::Deserialize)]
    struct Blob {
        #[prost(bytes = "bytes", tag = "1")]
        data: Bytes,
        #[prost(uint64, tag = "2")]
        n: u64,
    }

    async fn read_all(bytes: Bytes) -> Vec<Frame> {
        let frames = FramedRead::new(&bytes[..], FrameDecoder::new(usize::MAX));
        frames.map(|f| f.expect("frame")).collect().await
    }

    #[tokio::test]
    async fn frames_decode_to_what_the_separate_encoders_make() {
        for codec in [WireCodec::Postcard, WireCodec::Protobuf] {
            for size in [0, 1, 127, 128, 300, 70_000] {
                let msg = Blob { data: Bytes::from(vec![5u8; size]), n: size as u64 * 1_000_003 };
                let trailer =
                    Trailer { code: 3, message: "ü".repeat(size % 97), details: Bytes::new(), metadata: vec![] };
                let mut buf = FrameBuf::new();
                buf.message(codec, &msg, usize::MAX).expect("fits");
                buf.header(FrameKind::Trailer, &trailer);
                let frames = read_all(buf.freeze()).await;
                assert_eq!(frames.len(), 2, "{codec:?}, {size} B");
                assert_eq!(frames[0].kind, FrameKind::Message);
                assert_eq!(frames[0].body, codec.encode(&msg, usize::MAX).expect("encodes"), "{codec:?}, {size} B");
                assert_eq!(codec.decode::<Blob>(&frames[0].body).expect("decodes"), msg);
                assert_eq!(frames[1].kind, FrameKind::Trailer);
                assert_eq!(postcard::from_bytes::<Trailer>(&frames[1].body).expect("trailer"), trailer);
            }
        }
    }

    #[test]
    fn a_large_reply_with_its_trailer_takes_one_buffer_of_about_its_size() {
        let msg = Blob { data: Bytes::from(vec![9u8; 1 << 20]), n: 7 };
        let mut buf = FrameBuf::new();
        buf.header(FrameKind::ResponseHeader, &crate::iroh::wire::ResponseHeader { metadata: vec![] });
        buf.message(WireCodec::Postcard, &msg, usize::MAX).expect("fits");
        buf.header(
            FrameKind::Trailer,
            &Trailer { code: 0, message: String::new(), details: Bytes::new(), metadata: vec![] },
        );
        let (len, cap) = (buf.buf.len(), buf.buf.capacity());
        assert!(cap < len + 4096, "{len} bytes of frames in a buffer of {cap}");
    }

    #[test]
    fn a_message_over_the_limit_is_refused_and_leaves_the_buffer_as_it_was() {
        let msg = Blob { data: Bytes::from(vec![1u8; 100]), n: 1 };
        for codec in [WireCodec::Postcard, WireCodec::Protobuf] {
            let mut buf = FrameBuf::new();
            buf.header(
                FrameKind::Trailer,
                &Trailer { code: 0, message: String::new(), details: Bytes::new(), metadata: vec![] },
            );
            let before = buf.buf.len();
            let err = buf.message(codec, &msg, 50).expect_err("over the limit");
            assert_eq!(err.code(), tonic::Code::ResourceExhausted);
            assert!(err.message().contains("the limit is: 50 bytes"), "{}", err.message());
            assert_eq!(buf.buf.len(), before);
        }
    }
}
