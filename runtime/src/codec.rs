//! How messages become bytes on duet's Iroh wire.
//!
//! gRPC always carries protobuf; on Iroh a service may choose postcard (the default: smaller and faster,
//! but with no field tags, so both sides must share one schema) or protobuf (tolerant of schema change).

use bytes::Bytes;
use serde::{Serialize, de::DeserializeOwned};

use tonic::Status;

/// Everything a message type needs to travel on both transports.
///
/// Implemented automatically for every prost message that also derives serde's traits, which is what
/// `duet-codegen` generates. `Clone` lets Dual mode retry an idempotent call over gRPC.
pub trait Message: prost::Message + Serialize + DeserializeOwned + Default + Clone + Send + Sync + 'static {}

impl<T> Message for T where T: prost::Message + Serialize + DeserializeOwned + Default + Clone + Send + Sync + 'static {}

/// The encoding of message bodies on the Iroh wire, chosen per service at build time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum WireCodec {
    /// postcard: compact and fast; both peers must be built from the same schema (checked by fingerprint).
    #[default]
    Postcard,
    /// protobuf: the same bytes as gRPC, tolerant of added or removed fields.
    Protobuf,
}

impl WireCodec {
    /// Encodes `msg`, refusing results larger than `limit` bytes with `RESOURCE_EXHAUSTED` (as tonic does).
    pub fn encode<T: Message>(self, msg: &T, limit: usize) -> Result<Bytes, Status> {
        let bytes = match self {
            WireCodec::Postcard => postcard::to_stdvec(msg).map_err(encode_failed)?,
            WireCodec::Protobuf => msg.encode_to_vec(),
        };
        if bytes.len() > limit {
            return Err(too_large(bytes.len(), limit));
        }
        Ok(Bytes::from(bytes))
    }

    /// Decodes one message body. A body that does not parse is `INTERNAL`, as in tonic.
    ///
    /// ```
    /// # use duet::WireCodec;
    /// let body = WireCodec::Postcard.encode(&"hello".to_owned(), 1024)?;
    /// assert_eq!(WireCodec::Postcard.decode::<String>(&body)?, "hello");
    /// # Ok::<(), duet::Status>(())
    /// ```
    pub fn decode<T: Message>(self, body: &[u8]) -> Result<T, Status> {
        match self {
            WireCodec::Postcard => postcard::from_bytes(body).map_err(decode_failed),
            WireCodec::Protobuf => T::decode(body).map_err(decode_failed),
        }
    }

    /// [`decode`](Self::decode), where postcard `bytes` fields of at least
    /// [`SHARE_FROM`](crate::bytes_field::SHARE_FROM) bytes become slices of `body` instead of
    /// copies (see [`crate::bytes_field`]). This is how duet's Iroh wire decodes. Protobuf bodies are
    /// decoded as by `decode`: prost would share every `bytes` field, however small.
    pub fn decode_shared<T: Message>(self, body: &Bytes) -> Result<T, Status> {
        match self {
            WireCodec::Postcard => {
                crate::bytes_field::decoding_from(body, |buf| postcard::from_bytes(buf)).map_err(decode_failed)
            }
            WireCodec::Protobuf => self.decode(body),
        }
    }
}

fn decode_failed(e: impl std::fmt::Display) -> Status {
    Status::internal(format!("failed to decode message: {e}"))
}

/// The status of a message the codec could not encode, worded as tonic's.
pub(crate) fn encode_failed(e: impl std::fmt::Display) -> Status {
    Status::internal(format!("failed to encode message: {e}"))
}

/// The status of a message that encodes to more than the sender's limit, worded as tonic's.
pub(crate) fn too_large(len: usize, limit: usize) -> Status {
    Status::resource_exhausted(format!(
        "encoded message length too large: found {len} bytes, the limit is: {limit} bytes"
    ))
}
