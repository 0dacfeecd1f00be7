//! duet's native Iroh wire: postcard frames, one QUIC bidirectional stream per call, ALPN `duet/1`.
//!
//! See the crate docs for the frame layout. The pieces: [`frame`] (the codec), the server dispatcher
//! ([`IrohService`], driven by [`crate::Server`]), the client calls (used by [`crate::Channel`]), the
//! per-peer [`Connector`], and [`endpoint`] helpers for building endpoints.

pub mod endpoint;
pub mod frame;
/// Test hooks for the fuzz targets, behind the `fuzzing` feature.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;

mod client;
pub(crate) mod connector;
mod frame_buf;
mod liveness;
pub(crate) mod recv;
mod send;
pub(crate) mod server;
pub mod wire;

pub(crate) use client::{Failure, bidi, client_streaming, open_stream, server_streaming, unary};
pub use connector::{ConnectionState, Connector};
pub(crate) use liveness::InFlight;
pub use liveness::{SILENCE_FLOOR, silence_bound};
pub use server::{AccessControl, AccessHook, AccessRequest, DEFAULT_HEADER_TIMEOUT, NOT_ALLOWED};
pub(crate) use server::{CallSettings, DuetProtocol, IrohService};

use iroh::endpoint::VarInt;
use tonic::{Code, Status};

use crate::metadata_wire;
use wire::Trailer;

/// The ALPN of duet's native wire.
pub const ALPN: &[u8] = b"duet/1";

/// Stream error code for a call abandoned by either side (HTTP/2's CANCEL).
pub(crate) const CANCEL: VarInt = VarInt::from_u32(8);

pub(crate) fn status_from_io(e: &std::io::Error) -> Status {
    let detail = error_chain(e);
    match e.kind() {
        std::io::ErrorKind::ConnectionReset => Status::cancelled(format!("stream reset by peer: {detail}")),
        _ => Status::unavailable(format!("Iroh connection lost: {detail}")),
    }
}

/// An error and its sources, `a: b: c`, so the reason a connection closed reaches the caller.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

pub(crate) fn trailer_from_status(status: &Status) -> Trailer {
    Trailer {
        code: status.code() as i32,
        message: crate::call::fit_status_message(status.message()).into_owned(),
        details: status.details().to_vec().into(),
        metadata: metadata_wire::to_wire(status.metadata().clone()),
    }
}

pub(crate) fn ok_trailer() -> Trailer {
    Trailer { code: 0, message: String::new(), details: Default::default(), metadata: vec![] }
}

/// The status a trailer frame's body carries; a body that does not decode is `INTERNAL`.
pub(crate) fn parse_trailer(body: &[u8]) -> Status {
    match postcard::from_bytes::<Trailer>(body) {
        Ok(t) => status_from_trailer(t),
        Err(e) => Status::internal(format!("malformed trailer: {e}")),
    }
}

/// A frame of a kind that has no place where it arrived.
pub(crate) fn unexpected(kind: frame::FrameKind) -> Status {
    Status::internal(format!("protocol error: unexpected {kind:?} frame"))
}

/// The status a trailer carries (an `INTERNAL` status when its metadata is malformed).
pub(crate) fn status_from_trailer(t: Trailer) -> Status {
    let metadata = match metadata_wire::from_wire(t.metadata) {
        Ok(m) => m,
        Err(s) => return s,
    };
    Status::with_details_and_metadata(Code::from_i32(t.code), t.message, t.details, metadata)
}
