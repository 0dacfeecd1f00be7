//! Reading a call's request header: the method path and what travels with it.

use std::time::Duration;

use tonic::metadata::MetadataMap;

use crate::iroh::wire::RequestHeader;
use crate::{Status, metadata_wire};

/// A method path, `/pkg.Service/Method`, split into service and method; `None` for anything else (no
/// leading slash, an empty part, a slash in the method).
pub fn split_path(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix('/')?;
    let (service, method) = rest.split_once('/')?;
    (!service.is_empty() && !method.is_empty() && !method.contains('/')).then_some((service, method))
}

/// What the server takes from a call's request header before it looks up the method.
#[derive(Debug)]
pub struct CallHeader {
    /// The method path as sent; [`split_path`] splits it.
    pub path: String,
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
pub fn read_call_header(body: &[u8]) -> Result<CallHeader, Status> {
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

#[cfg(test)]
mod tests {
    use super::split_path;

    #[test]
    fn paths_split_into_service_and_method() {
        assert_eq!(split_path("/a.B/C"), Some(("a.B", "C")));
        assert_eq!(split_path("a.B/C"), None);
        assert_eq!(split_path("/a.B/"), None);
        assert_eq!(split_path("//C"), None);
        assert_eq!(split_path("/a/b/c"), None);
    }
}
