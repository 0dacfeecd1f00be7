//! The postcard bodies of the header and trailer frames.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::metadata_wire::Entry;

/// First frame of every call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RequestHeader {
    /// `/pkg.Service/Method`.
    pub path: String,
    /// Request metadata as HTTP/2 header pairs.
    pub metadata: Vec<Entry>,
    /// Relative deadline in microseconds, as gRPC's `grpc-timeout`.
    pub timeout_micros: Option<u64>,
    /// Schema fingerprint of the method the client was built with.
    pub fingerprint: u64,
}

/// First frame of a response that carries messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ResponseHeader {
    pub metadata: Vec<Entry>,
}

/// Last frame of every response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Trailer {
    pub code: i32,
    pub message: String,
    pub details: Bytes,
    pub metadata: Vec<Entry>,
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Bytes {
    // Header types hold only strings, bytes and integers: serialising them cannot fail.
    Bytes::from(postcard::to_stdvec(value).expect("header types always serialise"))
}
