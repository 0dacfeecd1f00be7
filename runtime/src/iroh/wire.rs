//! The postcard bodies of the header and trailer frames: the `duet/1` wire spec in types, public so
//! tools, fuzzers and other implementations can speak it.

use std::borrow::Cow;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

pub use crate::metadata_wire::Entry;

/// First frame of every call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestHeader<'a> {
    /// `/pkg.Service/Method`: the client's static path, the server's view into the frame it read.
    #[serde(borrow)]
    pub path: Cow<'a, str>,
    /// Request metadata as HTTP/2 header pairs.
    pub metadata: Vec<Entry>,
    /// Relative deadline in microseconds, as gRPC's `grpc-timeout`.
    pub timeout_micros: Option<u64>,
    /// Schema fingerprint of the method the client was built with.
    pub fingerprint: u64,
}

/// First frame of a response that carries messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseHeader {
    /// Response metadata as HTTP/2 header pairs.
    pub metadata: Vec<Entry>,
}

/// Last frame of every response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trailer {
    /// gRPC status code (0 = OK).
    pub code: i32,
    /// Status message, any Unicode.
    pub message: String,
    /// Binary status details (`grpc-status-details-bin`).
    pub details: Bytes,
    /// Trailing metadata.
    pub metadata: Vec<Entry>,
}

/// Trailer metadata key a server sets when it refuses a call for a schema mismatch
/// (`FAILED_PRECONDITION`, before any handler runs), so a Dual client knows the call may go over gRPC.
pub const SCHEMA_MISMATCH_KEY: &str = "duet-error";
/// The value of [`SCHEMA_MISMATCH_KEY`] on such a refusal.
pub const SCHEMA_MISMATCH_VALUE: &str = "schema-mismatch";

/// Encodes a header or trailer body.
pub fn encode<T: Serialize>(value: &T) -> Bytes {
    // Header types hold only strings, bytes and integers: serialising them cannot fail.
    Bytes::from(postcard::to_stdvec(value).expect("header types always serialise"))
}
