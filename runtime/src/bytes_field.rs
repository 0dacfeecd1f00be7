//! `bytes` fields decoded from postcard as slices of the frame they arrived in, not as copies.
//!
//! serde's `Deserialize` for [`Bytes`] copies: it never sees the buffer the input came from. For a
//! large field (an image chunk, a snapshot piece) that copy doubles the memory a call holds and
//! costs a pass over the payload. `duet-codegen` puts `#[serde(with = "…bytes_field")]` on every
//! `bytes` field, and [`WireCodec::decode`](crate::WireCodec::decode) tells this module, for the
//! length of one decode, which buffer the input is; a field of at least [`SHARE_FROM`] bytes is
//! then a [`Bytes::slice_ref`] of it. The bytes on the wire are the same as serde's own.
//!
//! A message type written by hand can ask for the same:
//!
//! ```
//! #[derive(Clone, PartialEq, Default, prost::Message, serde::Serialize, serde::Deserialize)]
//! struct Chunk {
//!     #[prost(bytes = "bytes", tag = "1")]
//!     #[serde(with = "duet::bytes_field")]
//!     data: bytes::Bytes,
//! }
//!
//! let body = duet::WireCodec::Postcard.encode(&Chunk { data: vec![1; 8192].into() }, usize::MAX)?;
//! let chunk: Chunk = duet::WireCodec::Postcard.decode(&body)?;
//! assert!(body.as_ptr_range().contains(&chunk.data.as_ptr()), "shared, not copied");
//! # Ok::<(), duet::Status>(())
//! ```

use std::cell::RefCell;
use std::fmt;

use bytes::Bytes;
use serde::de::{Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// Fields at least this long share the received buffer; shorter ones are copied. A shared field
/// keeps the whole buffer it arrived in alive, so a small field kept for long (a Raft log entry,
/// say) would otherwise hold on to a read buffer many times its size; below this size a copy is
/// cheaper than that risk.
pub const SHARE_FROM: usize = 4096;

thread_local! {
    // The buffer being decoded on this thread, if it is large enough to hold a field worth sharing.
    static SOURCE: RefCell<Option<Bytes>> = const { RefCell::new(None) };
}

/// Runs `decode` with `input` as the buffer `bytes` fields may share.
pub(crate) fn decoding_from<R>(input: &Bytes, decode: impl FnOnce(&[u8]) -> R) -> R {
    if input.len() < SHARE_FROM {
        return decode(input);
    }
    // Restored on the way out, unwinding included, so a decode nested in a decode (a field type
    // with its own `Deserialize` that decodes again) sees its own buffer and leaves the outer one.
    struct Restore(Option<Bytes>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let outer = self.0.take();
            SOURCE.with(|s| *s.borrow_mut() = outer);
        }
    }
    let _restore = Restore(SOURCE.with(|s| s.borrow_mut().replace(input.clone())));
    decode(input)
}

fn shared_or_copied(field: &[u8]) -> Bytes {
    if field.len() >= SHARE_FROM {
        let shared =
            SOURCE.with(|s| s.borrow().as_ref().filter(|src| contains(src, field)).map(|src| src.slice_ref(field)));
        if let Some(shared) = shared {
            return shared;
        }
    }
    Bytes::copy_from_slice(field)
}

fn contains(outer: &[u8], inner: &[u8]) -> bool {
    let (o, i) = (outer.as_ptr() as usize, inner.as_ptr() as usize);
    i >= o && i + inner.len() <= o + outer.len()
}

/// A field type `duet-codegen` marks for sharing: `bytes` (singular, `optional`, or `repeated`).
pub trait BytesField: Sized {
    #[doc(hidden)]
    fn serialize_field<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error>;
    #[doc(hidden)]
    fn deserialize_field<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error>;
}

/// serde's `serialize_with` entry point for a marked field.
pub fn serialize<T: BytesField, S: Serializer>(field: &T, serializer: S) -> Result<S::Ok, S::Error> {
    field.serialize_field(serializer)
}

/// serde's `deserialize_with` entry point for a marked field.
pub fn deserialize<'de, T: BytesField, D: Deserializer<'de>>(deserializer: D) -> Result<T, D::Error> {
    T::deserialize_field(deserializer)
}

impl BytesField for Bytes {
    fn serialize_field<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        Serialize::serialize(self, serializer)
    }
    fn deserialize_field<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_bytes(SharedVisitor)
    }
}

impl BytesField for Option<Bytes> {
    fn serialize_field<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        Serialize::serialize(self, serializer)
    }
    fn deserialize_field<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Option::<Shared>::deserialize(deserializer)?.map(|s| s.0))
    }
}

impl BytesField for Vec<Bytes> {
    fn serialize_field<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        Serialize::serialize(self, serializer)
    }
    fn deserialize_field<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Vec::<Shared>::deserialize(deserializer)?.into_iter().map(|s| s.0).collect())
    }
}

struct Shared(Bytes);

impl<'de> Deserialize<'de> for Shared {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_bytes(SharedVisitor).map(Shared)
    }
}

/// Accepts everything `bytes`' own visitor does, so self-describing formats (JSON of a generated
/// message, say) read what they wrote.
struct SharedVisitor;

impl<'de> Visitor<'de> for SharedVisitor {
    type Value = Bytes;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a byte string")
    }

    fn visit_borrowed_bytes<E>(self, v: &'de [u8]) -> Result<Bytes, E> {
        Ok(shared_or_copied(v))
    }

    fn visit_bytes<E>(self, v: &[u8]) -> Result<Bytes, E> {
        Ok(Bytes::copy_from_slice(v))
    }

    fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Bytes, E> {
        Ok(Bytes::from(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Bytes, E> {
        Ok(Bytes::copy_from_slice(v.as_bytes()))
    }

    fn visit_string<E>(self, v: String) -> Result<Bytes, E> {
        Ok(Bytes::from(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Bytes, A::Error> {
        // The length hint comes from the input: cap it so a hostile one cannot reserve memory.
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(SHARE_FROM));
        while let Some(b) = seq.next_element::<u8>()? {
            out.push(b);
        }
        Ok(Bytes::from(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_shared(input: &Bytes, field: std::ops::Range<usize>) -> Bytes {
        decoding_from(input, |buf| {
            let v = &buf[field];
            // What postcard does for a field of a buffer it borrows from.
            SharedVisitor.visit_borrowed_bytes::<serde::de::value::Error>(v).unwrap()
        })
    }

    #[test]
    fn a_large_field_is_a_slice_of_the_input_and_a_small_one_a_copy() {
        let input = Bytes::from(vec![7u8; 3 * SHARE_FROM]);
        let big = decode_shared(&input, 10..10 + SHARE_FROM);
        assert_eq!(big.as_ptr(), input[10..].as_ptr());
        assert_eq!(big.len(), SHARE_FROM);
        let small = decode_shared(&input, 10..10 + SHARE_FROM - 1);
        assert_ne!(small.as_ptr(), input[10..].as_ptr());
        assert_eq!(&small[..], &input[10..10 + SHARE_FROM - 1]);
    }

    #[test]
    fn outside_a_decode_or_from_another_buffer_it_copies() {
        let other = vec![1u8; SHARE_FROM];
        let copied = SharedVisitor.visit_borrowed_bytes::<serde::de::value::Error>(&other).unwrap();
        assert_ne!(copied.as_ptr(), other.as_ptr());
        let input = Bytes::from(vec![2u8; 2 * SHARE_FROM]);
        let copied =
            decoding_from(&input, |_| SharedVisitor.visit_borrowed_bytes::<serde::de::value::Error>(&other).unwrap());
        assert_ne!(copied.as_ptr(), other.as_ptr());
        assert_eq!(copied, other);
        assert!(SOURCE.with(|s| s.borrow().is_none()), "the source is cleared after the decode");
    }

    #[test]
    fn a_nested_decode_restores_the_outer_source() {
        let outer = Bytes::from(vec![3u8; 2 * SHARE_FROM]);
        let inner = Bytes::from(vec![4u8; 2 * SHARE_FROM]);
        let from_outer = decoding_from(&outer, |buf| {
            let _ = decoding_from(&inner, |_| ());
            SharedVisitor.visit_borrowed_bytes::<serde::de::value::Error>(&buf[..SHARE_FROM]).unwrap()
        });
        assert_eq!(from_outer.as_ptr(), outer.as_ptr());
    }
}
