//! Reading a call's request header: the method path and what travels with it.

use std::borrow::Cow;
use std::time::Duration;

use tonic::metadata::MetadataMap;

use crate::iroh::wire::RequestHeader;
use crate::metadata_wire;
use tonic::Status;

/// What the server takes from a call's request header before it looks up the method.
#[derive(Debug)]
pub struct CallHeader<'a> {
    /// The method path as sent, in the frame's body; [`crate::method::split_path`] splits it.
    pub path: Cow<'a, str>,
    /// The request metadata, as the handler sees it.
    pub metadata: MetadataMap,
    /// The call's relative deadline, if the client set one.
    pub timeout: Option<Duration>,
    /// Schema fingerprint of the method the client was built with.
    pub fingerprint: u64,
}

/// The server's reading of a request header frame's body: a body that is not a postcard
/// [`RequestHeader`] is `INVALID_ARGUMENT`, metadata entries that are not valid HTTP/2 headers (or too
/// many) are `INTERNAL` (or `RESOURCE_EXHAUSTED`), and the timeout in microseconds becomes a
/// [`Duration`].
pub fn read_call_header(body: &[u8]) -> Result<CallHeader<'_>, Status> {
    let h = postcard::from_bytes::<RequestHeader>(body)
        .map_err(|e| Status::invalid_argument(format!("malformed request header: {e}")))?;
    let metadata = metadata_wire::from_wire(h.metadata)?;
    Ok(CallHeader {
        path: h.path,
        metadata,
        timeout: h.timeout_micros.map(Duration::from_micros),
        fingerprint: h.fingerprint,
    })
}
