//! duet's own handling of the `duet/1` header and trailer bodies, public for the fuzz targets in
//! `fuzz/` and for other implementations of the wire that want to check themselves against duet.
//!
//! Not a stable API: hidden from the docs, outside semver, and free to change or go away in any
//! release. Everything here is the code duet runs (re-exported, or called through a one-line
//! function), not a copy of it.

use tonic::Status;

use super::wire::Trailer;

pub use super::server::{CallHeader, read_call_header};
pub use crate::metadata_wire::{from_wire as metadata_from_wire, to_wire as metadata_to_wire};
pub use crate::method::split_path;

/// The status a trailer carries, as the client reads it (`INTERNAL` when its metadata is malformed).
pub fn status_from_trailer(t: Trailer) -> Status {
    super::status_from_trailer(t)
}

/// The trailer the server writes for a status (reserved gRPC headers dropped from its metadata).
pub fn trailer_from_status(status: &Status) -> Trailer {
    super::trailer_from_status(status)
}

/// The status a trailer frame's body carries, as the client reads it; a body that does not decode is
/// `INTERNAL`.
pub fn parse_trailer(body: &[u8]) -> Status {
    super::parse_trailer(body)
}
