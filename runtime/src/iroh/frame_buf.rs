//! Frames encoded straight into one buffer, so that a unary request (header, message) or reply
//! (header, message, trailer) costs one allocation and one write.
//!
//! A body per `Vec` and a length prefix per buffer would cost a dozen allocations per small call,
//! more than a raw QUIC echo's whole per-call count. A large `bytes` field is the exception: it goes
//! to the stream as a chunk of its own, uncopied (see [`crate::bytes_field`]).

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;

use super::frame::{FrameKind, put_prefix};
use crate::codec::{Message, WireCodec, encode_failed};
use crate::compression::CompressionEncoding;
use tonic::Status;

/// Room for the frames of a small call; a larger message reserves what it needs.
const SMALL: usize = 256;

/// Room left after a message for the frame that may follow it (a reply's trailer): without it, a
/// 1 MiB reply filled its buffer exactly and the trailer doubled it to 2 MiB.
const AFTER_MESSAGE: usize = 64;

/// Frames gathered for one write.
#[derive(Debug)]
pub(crate) struct FrameBuf {
    /// Finished chunks, in order, before `buf`: empty unless a large field was spliced in.
    chunks: Vec<Bytes>,
    buf: BytesMut,
}

/// A postcard output that appends to a `BytesMut` (postcard's own `to_extend` pushes byte by byte),
/// and splices in large `bytes` fields as chunks of their own.
struct Append<'a> {
    chunks: &'a mut Vec<Bytes>,
    buf: &'a mut BytesMut,
}

impl postcard::ser_flavors::Flavor for Append<'_> {
    type Output = ();

    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        self.buf.put_u8(byte);
        Ok(())
    }

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        match crate::bytes_field::take_shared(data) {
            Some(field) => {
                if !self.buf.is_empty() {
                    self.chunks.push(self.buf.split().freeze());
                }
                self.chunks.push(field);
            }
            None => self.buf.extend_from_slice(data),
        }
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

impl FrameBuf {
    pub fn new() -> Self {
        Self { chunks: Vec::new(), buf: BytesMut::with_capacity(SMALL) }
    }

    /// Appends a header or trailer frame: the postcard body of `value`.
    pub fn header<T: Serialize>(&mut self, kind: FrameKind, value: &T) {
        // Header types hold only strings, bytes and integers: serialising them cannot fail.
        let len = postcard::experimental::serialized_size(value).expect("header types always serialise");
        put_prefix(&mut self.buf, kind, len);
        self.buf.reserve(len);
        postcard::serialize_with_flavor(value, Append { chunks: &mut self.chunks, buf: &mut self.buf })
            .expect("header types always serialise");
    }

    /// Appends a message frame, refusing a body larger than `limit` with `RESOURCE_EXHAUSTED` (as
    /// tonic does) before anything is written.
    pub fn message<T: Message>(&mut self, codec: WireCodec, msg: &T, limit: usize) -> Result<(), Status> {
        let (len, shared) = match codec {
            WireCodec::Postcard => {
                let (len, shared) =
                    crate::bytes_field::measuring_shared(|| postcard::experimental::serialized_size(msg));
                (len.map_err(encode_failed)?, shared)
            }
            WireCodec::Protobuf => (msg.encoded_len(), 0),
        };
        if len > limit {
            return Err(crate::codec::too_large(len, limit));
        }
        put_prefix(&mut self.buf, FrameKind::Message, len);
        // Saturating: a hand-written `Serialize` that also feeds marked fields to another serializer
        // is counted too, and an over-count only makes the buffer grow later.
        self.buf.reserve(len.saturating_sub(shared) + AFTER_MESSAGE);
        match codec {
            WireCodec::Postcard => crate::bytes_field::writing_shared(|| {
                postcard::serialize_with_flavor(msg, Append { chunks: &mut self.chunks, buf: &mut self.buf })
            })
            .map_err(encode_failed)?,
            // Cannot fail: the buffer grows as needed.
            WireCodec::Protobuf => msg.encode_raw(&mut self.buf),
        }
        Ok(())
    }

    /// Appends a message frame as [`FrameBuf::message`] does, compressed with `compression` if it
    /// names an encoding (the limit applies to the message before compression).
    pub fn message_as<T: Message>(
        &mut self,
        codec: WireCodec,
        compression: Option<CompressionEncoding>,
        msg: &T,
        limit: usize,
    ) -> Result<(), Status> {
        let Some(encoding) = compression else { return self.message(codec, msg, limit) };
        let packed = crate::compression::compress(encoding, &codec.encode(msg, limit)?)?;
        put_prefix(&mut self.buf, FrameKind::CompressedMessage, packed.len());
        self.buf.reserve(packed.len() + AFTER_MESSAGE);
        self.buf.extend_from_slice(&packed);
        Ok(())
    }

    /// The frames as one chunk when nothing was spliced in (the usual case, and no allocation).
    pub fn into_chunks(mut self) -> Chunks {
        if self.chunks.is_empty() {
            Chunks::One(self.buf.freeze())
        } else {
            if !self.buf.is_empty() {
                self.chunks.push(self.buf.freeze());
            }
            Chunks::Many(self.chunks)
        }
    }
}

/// Frames ready to write.
#[derive(Debug)]
pub(crate) enum Chunks {
    One(Bytes),
    Many(Vec<Bytes>),
}

impl Chunks {
    #[cfg(test)]
    fn concat(self) -> Bytes {
        match self {
            Chunks::One(b) => b,
            Chunks::Many(v) => v.concat().into(),
        }
    }
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
        #[serde(with = "crate::bytes_field")]
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
                let frames = read_all(buf.into_chunks().concat()).await;
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
    fn a_large_field_goes_out_as_its_own_chunk_and_the_buffer_holds_the_rest() {
        let data = Bytes::from(vec![9u8; 1 << 20]);
        let msg = Blob { data: data.clone(), n: 7 };
        let trailer = Trailer { code: 0, message: String::new(), details: Bytes::new(), metadata: vec![] };
        let mut buf = FrameBuf::new();
        buf.header(FrameKind::ResponseHeader, &crate::iroh::wire::ResponseHeader { metadata: vec![] });
        buf.message(WireCodec::Postcard, &msg, usize::MAX).expect("fits");
        buf.header(FrameKind::Trailer, &trailer);
        assert!(buf.buf.capacity() < 4096, "the buffer reserved {} bytes for a spliced field", buf.buf.capacity());
        let Chunks::Many(chunks) = buf.into_chunks() else { panic!("the field was copied into the frame") };
        assert_eq!(chunks.len(), 3, "frames before the field, the field, frames after it");
        assert_eq!(chunks[1].as_ptr(), data.as_ptr(), "the field itself, not a copy");

        // Protobuf and small fields are copied: one chunk.
        for (codec, size) in [(WireCodec::Protobuf, 1 << 20), (WireCodec::Postcard, crate::bytes_field::SHARE_FROM - 1)]
        {
            let mut buf = FrameBuf::new();
            buf.message(codec, &Blob { data: Bytes::from(vec![1u8; size]), n: 1 }, usize::MAX).expect("fits");
            assert!(matches!(buf.into_chunks(), Chunks::One(_)), "{codec:?}, {size} B");
        }
    }

    /// Every shape `duet-codegen` marks.
    #[derive(Clone, PartialEq, prost::Message, serde::Serialize, serde::Deserialize)]
    struct Shapes {
        #[prost(bytes = "bytes", tag = "1")]
        #[serde(with = "crate::bytes_field", default)]
        one: Bytes,
        #[prost(bytes = "bytes", optional, tag = "2")]
        #[serde(with = "crate::bytes_field", default)]
        maybe: Option<Bytes>,
        #[prost(bytes = "bytes", repeated, tag = "3")]
        #[serde(with = "crate::bytes_field", default)]
        many: Vec<Bytes>,
        #[prost(string, tag = "4")]
        text: String,
    }

    proptest::proptest! {
        #[test]
        fn spliced_frames_hold_the_bytes_a_plain_encode_makes(
            sizes in proptest::collection::vec(0usize..9000, 1..5),
            maybe in proptest::option::of(0usize..9000),
            text in ".{0,20}",
        ) {
            let b = |n: usize| Bytes::from(vec![n as u8; n]);
            let msg = Shapes { one: b(sizes[0]), maybe: maybe.map(b), many: sizes[1..].iter().map(|&n| b(n)).collect(), text };
            let mut buf = FrameBuf::new();
            buf.message(WireCodec::Postcard, &msg, usize::MAX).unwrap();
            buf.header(FrameKind::Trailer, &Trailer { code: 0, message: String::new(), details: Bytes::new(), metadata: vec![] });
            let large = sizes.iter().chain(maybe.iter()).filter(|&&n| n >= crate::bytes_field::SHARE_FROM).count();
            let chunks = buf.into_chunks();
            match &chunks {
                Chunks::One(_) => proptest::prop_assert_eq!(large, 0),
                Chunks::Many(v) => proptest::prop_assert!(v.len() > large, "{} chunks for {large} large fields", v.len()),
            }
            let mut whole = BytesMut::from(&chunks.concat()[..]);
            let mut decoder = FrameDecoder::new(usize::MAX);
            let frame = tokio_util::codec::Decoder::decode(&mut decoder, &mut whole).unwrap().expect("a frame");
            proptest::prop_assert_eq!(&frame.body[..], &postcard::to_stdvec(&msg).unwrap()[..]);
            let trailer = tokio_util::codec::Decoder::decode(&mut decoder, &mut whole).unwrap().expect("the trailer");
            proptest::prop_assert_eq!(trailer.kind, FrameKind::Trailer);
        }
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
