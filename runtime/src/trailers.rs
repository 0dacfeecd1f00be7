//! Trailing metadata sent by a handler on success, on both transports.

use tonic::metadata::MetadataMap;

/// Trailing metadata for a successful response: put it in the response's extensions and duet sends it
/// after the last message (in HTTP/2 trailers on gRPC, in the trailer frame on Iroh). Clients read it
/// as tonic delivers trailers: merged into a unary response's metadata, or from
/// [`crate::Streaming::trailers`].
///
/// ```
/// use duet::metadata::MetadataMap;
/// let mut trailers = MetadataMap::new();
/// trailers.insert("x-checksum", "abc".parse().unwrap());
/// let mut resp = duet::Response::new(());
/// resp.extensions_mut().insert(duet::Trailers(trailers));
/// ```
///
/// A failing call sends its trailing metadata in [`crate::Status::metadata`] instead, as in tonic.
#[derive(Debug, Clone, Default)]
pub struct Trailers(pub MetadataMap);
