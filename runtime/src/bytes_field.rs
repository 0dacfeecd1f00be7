//! `bytes` fields decoded from postcard as slices of the frame they arrived in, not as copies.
//!
//! serde's `Deserialize` for [`Bytes`] copies: it never sees the buffer the input came from. For a
//! large field (an image chunk, a snapshot piece) that copy doubles the memory a call holds and
//! costs a pass over the payload. `duet-codegen` puts `#[serde(with = "…bytes_field", default)]` on
//! the `bytes` fields of the messages it generates (not on map values, and not where the build
//! gives a field its own serde `with`), and
//! [`WireCodec::decode_shared`](crate::WireCodec::decode_shared) tells this module, for the length
//! of one decode, which buffer the input is; a field of at least [`SHARE_FROM`] bytes is then a
//! [`Bytes::slice_ref`] of it. The bytes on the wire are the same as serde's own.
//!
//! Sending works the same way round: when duet writes a message to a QUIC stream, a field of at
//! least [`SHARE_FROM`] bytes is handed to the stream as its own chunk, not copied into the frame.
//! An echo of a 1 MiB field then holds the megabyte in one buffer, the one it was read into, until
//! the reply is acknowledged (it held three before: that buffer, the decoded copy, the encoded one).
//!
//! A message type written by hand can ask for the same:
//!
//! ```
//! #[derive(Clone, PartialEq, prost::Message, serde::Serialize, serde::Deserialize)]
//! struct Chunk {
//!     #[prost(bytes = "bytes", tag = "1")]
//!     #[serde(with = "duet::bytes_field")]
//!     data: bytes::Bytes,
//! }
//!
//! let body = duet::WireCodec::Postcard.encode(&Chunk { data: vec![1; 8192].into() }, usize::MAX)?;
//! let chunk: Chunk = duet::WireCodec::Postcard.decode_shared(&body)?;
//! assert!(body.as_ptr_range().contains(&chunk.data.as_ptr()), "shared, not copied");
//! # Ok::<(), duet::Status>(())
//! ```

use std::cell::RefCell;
use std::fmt;
use std::thread::LocalKey;

use bytes::Bytes;
use serde::de::{Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// Fields at least this long share the received buffer; shorter ones are copied.
///
/// A shared field keeps the stream's whole read buffer alive, which is about as large as the
/// largest frames the stream carried (for a stream of 1 MiB messages, up to 2 MiB): a field you keep
/// for long, such as a log entry, is better copied out with [`Bytes::copy_from_slice`]. Below this
/// size duet copies anyway, since a copy is cheaper than that risk.
pub const SHARE_FROM: usize = 4096;

thread_local! {
    // The buffer being decoded on this thread, if it is large enough to hold a field worth sharing.
    static SOURCE: RefCell<Option<Bytes>> = const { RefCell::new(None) };
    // What serialising a marked field on this thread does besides serde's own.
    static OUTGOING: RefCell<Outgoing> = const { RefCell::new(Outgoing::Plain) };
}

/// The modes of an encode by duet's Iroh sender (anything else serialises as serde always does).
#[derive(Debug)]
enum Outgoing {
    Plain,
    /// Sizing a message: the bytes of fields that will be sent as chunks of their own.
    Measuring {
        shared: usize,
    },
    /// Writing a message: the field being serialised, until the output takes it.
    Writing {
        field: Option<Bytes>,
    },
}

/// Holds `value` in a thread-local until dropped, then puts back what was there (unwinding included),
/// so a nested encode or decode leaves the outer one's state as it found it.
struct Scoped<T: 'static> {
    key: &'static LocalKey<RefCell<T>>,
    outer: Option<T>,
}

impl<T> Drop for Scoped<T> {
    fn drop(&mut self) {
        if let Some(outer) = self.outer.take() {
            self.key.with(|cell| *cell.borrow_mut() = outer);
        }
    }
}

fn scoped<T>(key: &'static LocalKey<RefCell<T>>, value: T) -> Scoped<T> {
    Scoped { key, outer: Some(key.with(|cell| std::mem::replace(&mut *cell.borrow_mut(), value))) }
}

/// Runs a sizing pass; returns its result and how many of the bytes it counted are fields that
/// [`writing_shared`] will hand over as chunks of their own.
pub(crate) fn measuring_shared<R>(size: impl FnOnce() -> R) -> (R, usize) {
    let restore = scoped(&OUTGOING, Outgoing::Measuring { shared: 0 });
    let out = size();
    let shared = OUTGOING.with(|o| match *o.borrow() {
        Outgoing::Measuring { shared } => shared,
        _ => 0,
    });
    drop(restore);
    (out, shared)
}

/// Runs an encode whose output calls [`take_shared`] for every slice it is given.
pub(crate) fn writing_shared<R>(encode: impl FnOnce() -> R) -> R {
    let _restore = scoped(&OUTGOING, Outgoing::Writing { field: None });
    encode()
}

/// The field being written, if `data` is exactly its bytes: the output then keeps the `Bytes`
/// instead of copying `data`.
pub(crate) fn take_shared(data: &[u8]) -> Option<Bytes> {
    if data.len() < SHARE_FROM {
        return None;
    }
    OUTGOING.with(|o| match &mut *o.borrow_mut() {
        Outgoing::Writing { field } => field.take_if(|f| f.as_ptr() == data.as_ptr() && f.len() == data.len()),
        _ => None,
    })
}

fn serialize_bytes<S: Serializer>(field: &Bytes, serializer: S) -> Result<S::Ok, S::Error> {
    if field.len() >= SHARE_FROM {
        let writing = OUTGOING.with(|o| match &mut *o.borrow_mut() {
            Outgoing::Measuring { shared } => {
                *shared += field.len();
                false
            }
            Outgoing::Writing { field: current } => {
                *current = Some(field.clone());
                true
            }
            Outgoing::Plain => false,
        });
        if writing {
            let out = serializer.serialize_bytes(field);
            // Not taken (a serializer that does not pass the slice through): no stale handle.
            OUTGOING.with(|o| {
                if let Outgoing::Writing { field } = &mut *o.borrow_mut() {
                    *field = None;
                }
            });
            return out;
        }
    }
    serializer.serialize_bytes(field)
}

/// Runs `decode` with `input` as the buffer `bytes` fields may share.
pub(crate) fn decoding_from<R>(input: &Bytes, decode: impl FnOnce(&[u8]) -> R) -> R {
    if input.len() < SHARE_FROM {
        return decode(input);
    }
    let _restore = scoped(&SOURCE, Some(input.clone()));
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
        serialize_bytes(self, serializer)
    }
    fn deserialize_field<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_bytes(SharedVisitor)
    }
}

impl BytesField for Option<Bytes> {
    fn serialize_field<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Some(b) => serializer.serialize_some(&SharedRef(b)),
            None => serializer.serialize_none(),
        }
    }
    fn deserialize_field<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Option::<Shared>::deserialize(deserializer)?.map(|s| s.0))
    }
}

impl BytesField for Vec<Bytes> {
    fn serialize_field<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter().map(SharedRef))
    }
    fn deserialize_field<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Vec::<Shared>::deserialize(deserializer)?.into_iter().map(|s| s.0).collect())
    }
}

struct Shared(Bytes);

impl Serialize for Shared {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serialize_bytes(&self.0, serializer)
    }
}

struct SharedRef<'a>(&'a Bytes);

impl Serialize for SharedRef<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serialize_bytes(self.0, serializer)
    }
}

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

    /// Every shape `duet-codegen` marks, and its twin without the attribute.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Marked {
        #[serde(with = "super", default)]
        one: Bytes,
        #[serde(with = "super", default)]
        maybe: Option<Bytes>,
        #[serde(with = "super", default)]
        many: Vec<Bytes>,
        kind: Option<MarkedKind>,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    enum MarkedKind {
        #[serde(with = "super")]
        Raw(Bytes),
        Text(String),
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Plain {
        one: Bytes,
        maybe: Option<Bytes>,
        many: Vec<Bytes>,
        kind: Option<PlainKind>,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    enum PlainKind {
        Raw(Bytes),
        Text(String),
    }

    fn twins(len: usize, variant: u8) -> (Marked, Plain) {
        let b = |n: u8| Bytes::from(vec![n; len]);
        let (mk, pk) = match variant {
            0 => (None, None),
            1 => (Some(MarkedKind::Raw(b(4))), Some(PlainKind::Raw(b(4)))),
            _ => (Some(MarkedKind::Text("t".into())), Some(PlainKind::Text("t".into()))),
        };
        let marked = Marked { one: b(1), maybe: Some(b(2)), many: vec![b(3), Bytes::new()], kind: mk };
        let plain = Plain { one: b(1), maybe: Some(b(2)), many: vec![b(3), Bytes::new()], kind: pk };
        (marked, plain)
    }

    proptest::proptest! {
        #[test]
        fn marked_fields_write_and_read_the_bytes_plain_serde_does(len in 0usize..10_000, variant in 0u8..3) {
            let (marked, plain) = twins(len, variant);
            let wire = postcard::to_stdvec(&marked).unwrap();
            proptest::prop_assert_eq!(&wire, &postcard::to_stdvec(&plain).unwrap());
            let input = Bytes::from(wire);
            let back: Marked = decoding_from(&input, |buf| postcard::from_bytes(buf)).unwrap();
            proptest::prop_assert_eq!(&back, &marked);
            // Shared exactly when long enough.
            proptest::prop_assert_eq!(input.as_ptr_range().contains(&back.one.as_ptr()), len >= SHARE_FROM);
            // And through a self-describing format, both ways.
            let json = serde_json::to_string(&marked).unwrap();
            proptest::prop_assert_eq!(&json, &serde_json::to_string(&plain).unwrap());
            proptest::prop_assert_eq!(serde_json::from_str::<Marked>(&json).unwrap(), marked);
        }
    }

    #[test]
    fn a_marked_field_missing_from_json_is_its_default() {
        let m: Marked = serde_json::from_str("{}").unwrap();
        assert_eq!(m, Marked { one: Bytes::new(), maybe: None, many: vec![], kind: None });
    }

    #[test]
    fn a_nested_decode_restores_the_outer_source() {
        let outer = Bytes::from(vec![3u8; 2 * SHARE_FROM]);
        let inner = Bytes::from(vec![4u8; 2 * SHARE_FROM]);
        let from_outer = decoding_from(&outer, |buf| {
            decoding_from(&inner, |_| ());
            SharedVisitor.visit_borrowed_bytes::<serde::de::value::Error>(&buf[..SHARE_FROM]).unwrap()
        });
        assert_eq!(from_outer.as_ptr(), outer.as_ptr());
    }
}
