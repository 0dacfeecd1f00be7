//! Message compression with tonic's semantics on both transports.
//!
//! A side that [sends compressed](Compression::send) compresses every message it sends with that
//! encoding and names it in `grpc-encoding`; a side that [accepts](Compression::accept) encodings
//! lists them in `grpc-accept-encoding`. A server compresses its responses only when the client
//! accepts the encoding, so a peer that does not accept gets plain messages; a request compressed
//! with an encoding the server does not accept is refused `UNIMPLEMENTED`, with the encodings the
//! server does accept in the status's `grpc-accept-encoding` (gRPC's rule, and tonic's).
//!
//! On gRPC this is tonic's own compression. On the Iroh wire the encodings travel in the same
//! metadata, and a compressed message is a frame of its own kind
//! ([`FrameKind::CompressedMessage`](crate::iroh::frame::FrameKind::CompressedMessage)), so each
//! message says whether it is compressed, as gRPC's per-message flag does. On both, the size limit
//! applies to the decompressed message and is checked while decompressing: a small message that
//! inflates past it is `RESOURCE_EXHAUSTED`, and no more than about the limit is ever held.
//!
//! ```
//! use duet::{Compression, CompressionEncoding};
//! let both = Compression::default().send(CompressionEncoding::Zstd).accept(CompressionEncoding::Gzip);
//! assert_eq!(both.sends(), Some(CompressionEncoding::Zstd));
//! assert_eq!(both.accepted(), &[CompressionEncoding::Gzip]);
//! ```

use std::io::Read;
use std::sync::LazyLock;

use bytes::Bytes;
pub use tonic::codec::CompressionEncoding;
use tonic::metadata::{Ascii, MetadataKey, MetadataMap, MetadataValue};

use tonic::Status;

/// The metadata key naming the encoding of a call's messages.
pub(crate) const ENCODING: &str = "grpc-encoding";
/// The metadata key listing the encodings a side accepts.
pub(crate) const ACCEPT_ENCODING: &str = "grpc-accept-encoding";
/// [`ENCODING`] and [`ACCEPT_ENCODING`] parsed once: a key given as `&str` is parsed at every lookup.
static ENCODING_KEY: LazyLock<MetadataKey<Ascii>> = LazyLock::new(|| MetadataKey::from_static(ENCODING));
static ACCEPT_ENCODING_KEY: LazyLock<MetadataKey<Ascii>> = LazyLock::new(|| MetadataKey::from_static(ACCEPT_ENCODING));

/// One side's compression: the encoding it sends with, if any, and the encodings it accepts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Compression {
    send: Option<CompressionEncoding>,
    accept: Vec<CompressionEncoding>,
}

impl Compression {
    /// Compresses the messages this side sends with `encoding` (a server: only for clients that
    /// accept it). As in tonic, this does not accept it: see [`Compression::accept`].
    pub fn send(mut self, encoding: CompressionEncoding) -> Self {
        self.send = Some(encoding);
        self
    }

    /// Accepts messages compressed with `encoding`.
    pub fn accept(mut self, encoding: CompressionEncoding) -> Self {
        if !self.accept.contains(&encoding) {
            self.accept.push(encoding);
        }
        self
    }

    /// The encoding this side sends with.
    pub fn sends(&self) -> Option<CompressionEncoding> {
        self.send
    }

    /// The encodings this side accepts.
    pub fn accepted(&self) -> &[CompressionEncoding] {
        &self.accept
    }

    /// The `grpc-accept-encoding` value: the accepted encodings, comma-separated.
    pub(crate) fn accept_header(&self) -> Option<MetadataValue<tonic::metadata::Ascii>> {
        if self.accept.is_empty() {
            return None;
        }
        let list: Vec<_> = self.accept.iter().map(|e| name(*e)).collect();
        Some(MetadataValue::try_from(list.join(",")).expect("encoding names are ASCII"))
    }

    /// Adds this side's `grpc-encoding` (if it sends compressed) and `grpc-accept-encoding` to a
    /// request's metadata.
    pub(crate) fn mark_request(&self, metadata: &mut MetadataMap) {
        if let Some(e) = self.send {
            metadata.insert(ENCODING, MetadataValue::from_static(name(e)));
        }
        if let Some(list) = self.accept_header() {
            metadata.insert(ACCEPT_ENCODING, list);
        }
    }

    /// The encoding of an incoming call's messages, from its `grpc-encoding`: `None` for plain,
    /// `UNIMPLEMENTED` (with the encodings accepted) for one this side does not accept.
    pub(crate) fn incoming(&self, metadata: &MetadataMap) -> Result<Option<CompressionEncoding>, Status> {
        // Most calls carry no metadata: skip parsing the key.
        if metadata.is_empty() {
            return Ok(None);
        }
        let Some(value) = metadata.get(&*ENCODING_KEY) else { return Ok(None) };
        let value = value.to_str().unwrap_or("");
        if value == "identity" {
            return Ok(None);
        }
        match self.accept.iter().find(|e| name(**e) == value) {
            Some(e) => Ok(Some(*e)),
            None => {
                let mut md = MetadataMap::new();
                md.insert(
                    ACCEPT_ENCODING,
                    self.accept_header().unwrap_or_else(|| MetadataValue::from_static("identity")),
                );
                Err(Status::with_metadata(
                    tonic::Code::Unimplemented,
                    format!("Content is compressed with `{value}` which isn't supported"),
                    md,
                ))
            }
        }
    }

    /// The encoding a server answers with: its own, if the request's `grpc-accept-encoding` lists it.
    pub(crate) fn response_encoding(&self, request: &MetadataMap) -> Option<CompressionEncoding> {
        let ours = self.send?;
        if request.is_empty() {
            return None;
        }
        let accepts = request.get(&*ACCEPT_ENCODING_KEY)?.to_str().ok()?;
        accepts.split(',').any(|e| e.trim() == name(ours)).then_some(ours)
    }
}

/// The encoding's name on the wire.
pub(crate) fn name(encoding: CompressionEncoding) -> &'static str {
    match encoding {
        CompressionEncoding::Gzip => "gzip",
        CompressionEncoding::Zstd => "zstd",
        // tonic's enum is non-exhaustive; duet builds tonic with gzip and zstd only.
        _ => "identity",
    }
}

/// Compresses one encoded message.
pub(crate) fn compress(encoding: CompressionEncoding, plain: &[u8]) -> Result<Vec<u8>, Status> {
    let failed = |e: std::io::Error| Status::internal(format!("compressing a message failed: {e}"));
    match encoding {
        CompressionEncoding::Gzip => {
            let mut out = Vec::with_capacity(plain.len() / 2 + 64);
            let mut encoder = flate2::read::GzEncoder::new(plain, flate2::Compression::new(6));
            encoder.read_to_end(&mut out).map_err(failed)?;
            Ok(out)
        }
        CompressionEncoding::Zstd => zstd::bulk::compress(plain, 0).map_err(failed),
        other => Err(Status::internal(format!("compression encoding {other:?} is not built into duet"))),
    }
}

/// Decompresses one message, refusing it `RESOURCE_EXHAUSTED` the moment its output passes `limit`:
/// at most `limit + 1` bytes are produced, whatever the compressed bytes claim.
pub(crate) fn decompress(encoding: CompressionEncoding, compressed: &[u8], limit: usize) -> Result<Bytes, Status> {
    let bound = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    // A start that fits most messages without reserving the limit for every one.
    let mut out = Vec::with_capacity(compressed.len().saturating_mul(4).min(limit.saturating_add(1)));
    let read = match encoding {
        CompressionEncoding::Gzip => flate2::read::GzDecoder::new(compressed).take(bound).read_to_end(&mut out),
        CompressionEncoding::Zstd => zstd::stream::read::Decoder::with_buffer(compressed).and_then(|mut d| {
            // A frame may ask for a window far larger than the message (zstd allows 128 MiB by
            // default); a message within the limit never needs more than the limit's size.
            d.window_log_max(window_log_for(limit))?;
            d.take(bound).read_to_end(&mut out)
        }),
        other => return Err(Status::internal(format!("compression encoding {other:?} is not built into duet"))),
    };
    read.map_err(|e| Status::internal(format!("Error decompressing: {e}")))?;
    if out.len() > limit {
        return Err(Status::resource_exhausted(format!(
            "Error decompressing: size limit, of {limit} bytes, exceeded while decompressing message"
        )));
    }
    Ok(Bytes::from(out))
}

/// The largest zstd window (as a power of two) a message of at most `limit` bytes needs.
fn window_log_for(limit: usize) -> u32 {
    let needed = usize::BITS - limit.max(1).leading_zeros();
    needed.clamp(10, 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_encodings_round_trip() {
        let plain: Vec<u8> = (0..100_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect();
        for e in [CompressionEncoding::Gzip, CompressionEncoding::Zstd] {
            let packed = compress(e, &plain).unwrap();
            assert!(packed.len() < plain.len(), "{e:?}");
            assert_eq!(decompress(e, &packed, plain.len()).unwrap(), plain, "{e:?}");
        }
    }

    #[test]
    fn a_bomb_stops_at_the_limit_with_memory_bounded() {
        // 256 MiB of zeros packs into a few hundred KiB; decompressing must stop just past 1 MiB.
        let limit = 1 << 20;
        let zeros = vec![0u8; 256 << 20];
        for e in [CompressionEncoding::Gzip, CompressionEncoding::Zstd] {
            let bomb = compress(e, &zeros).unwrap();
            assert!(bomb.len() < 2 << 20, "{e:?}: {} bytes", bomb.len());
            let err = decompress(e, &bomb, limit).unwrap_err();
            assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{e:?}: {err:?}");
        }
        drop(zeros);
        // What the decoder may hold is bounded by the limit, not by the claimed size.
        let bomb = compress(CompressionEncoding::Gzip, &vec![0u8; 64 << 20]).unwrap();
        let mut out = Vec::new();
        let n = flate2::read::GzDecoder::new(&bomb[..]).take(limit as u64 + 1).read_to_end(&mut out).unwrap();
        assert_eq!(n, limit + 1);
        assert!(out.capacity() <= 2 * (limit + 1), "held {} bytes", out.capacity());
    }

    #[test]
    fn negotiation_follows_grpc() {
        let server = Compression::default().send(CompressionEncoding::Gzip).accept(CompressionEncoding::Gzip);
        let mut md = MetadataMap::new();
        assert_eq!(server.response_encoding(&md), None, "a client that accepts nothing gets plain messages");
        md.insert(ACCEPT_ENCODING, "zstd, gzip".parse().unwrap());
        assert_eq!(server.response_encoding(&md), Some(CompressionEncoding::Gzip));

        md.insert(ENCODING, "zstd".parse().unwrap());
        let refused = server.incoming(&md).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unimplemented);
        assert_eq!(refused.metadata().get(ACCEPT_ENCODING).unwrap(), "gzip");
        md.insert(ENCODING, "gzip".parse().unwrap());
        assert_eq!(server.incoming(&md).unwrap(), Some(CompressionEncoding::Gzip));
        md.insert(ENCODING, "identity".parse().unwrap());
        assert_eq!(server.incoming(&md).unwrap(), None);
    }
}
