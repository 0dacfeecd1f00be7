//! gRPC metadata on the Iroh wire.
//!
//! Metadata travels as the HTTP/2 header pairs gRPC would send (binary `-bin` values base64-encoded, as on
//! HTTP/2), so a [`MetadataMap`] arrives on Iroh exactly as tonic would deliver it over gRPC.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use tonic::metadata::MetadataMap;

use tonic::Status;

/// One metadata pair as carried in an Iroh header or trailer frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Lower-case header name.
    pub name: String,
    /// Header value bytes (base64 for `-bin` keys, as on HTTP/2).
    pub value: Bytes,
}

/// Headers gRPC reserves for itself; they never travel as user metadata.
const RESERVED: [&str; 6] =
    ["te", "content-type", "grpc-message", "grpc-message-type", "grpc-status", "grpc-status-details-bin"];

/// Metadata to wire entries, as every Iroh header and trailer frame carries it: names as the map holds
/// them (lower-case), repeated values each in their own entry, gRPC's reserved headers dropped.
pub fn to_wire(map: MetadataMap) -> Vec<Entry> {
    let headers = map.into_headers();
    let mut out = Vec::with_capacity(headers.len());
    let mut last: Option<HeaderName> = None;
    // HeaderMap's owning iterator yields the name only for the first of repeated values.
    for (name, value) in headers {
        if let Some(name) = name {
            last = Some(name);
        }
        let Some(name) = last.as_ref() else { continue };
        if RESERVED.contains(&name.as_str()) {
            continue;
        }
        out.push(Entry { name: name.as_str().to_owned(), value: Bytes::copy_from_slice(value.as_bytes()) });
    }
    out
}

/// Most metadata entries one header or trailer frame may carry; HTTP/2 servers refuse far fewer
/// (hyper's default header list is 16 KiB), and `HeaderMap` panics past 24k.
pub(crate) const MAX_ENTRIES: usize = 1024;

/// Wire entries to the metadata a handler or caller sees: more than `MAX_ENTRIES` (1024) entries is
/// `RESOURCE_EXHAUSTED`, a name or value that is not a valid HTTP/2 header is `INTERNAL`.
pub fn from_wire(entries: Vec<Entry>) -> Result<MetadataMap, Status> {
    if entries.len() > MAX_ENTRIES {
        return Err(Status::resource_exhausted(format!(
            "{} metadata entries in one frame; at most {MAX_ENTRIES} are accepted",
            entries.len()
        )));
    }
    let mut headers = HeaderMap::with_capacity(entries.len());
    for Entry { name, value } in entries {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| Status::internal(format!("invalid metadata key {name:?}")))?;
        let value = HeaderValue::from_maybe_shared(value)
            .map_err(|_| Status::internal(format!("invalid metadata value for key {name}")))?;
        headers.append(name, value);
    }
    Ok(MetadataMap::from_headers(headers))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::metadata::{BinaryMetadataValue, MetadataValue};

    #[test]
    fn ascii_binary_and_repeated_values_survive() {
        let mut map = MetadataMap::new();
        map.insert("x-one", MetadataValue::from_static("1"));
        map.append("x-many", MetadataValue::from_static("a"));
        map.append("x-many", MetadataValue::from_static("b"));
        map.insert_bin("x-blob-bin", BinaryMetadataValue::from_bytes(&[0, 255, 10]));
        map.insert("content-type", MetadataValue::from_static("application/grpc"));
        let back = from_wire(to_wire(map)).unwrap();
        assert_eq!(back.get("x-one").unwrap(), "1");
        let many: Vec<_> = back.get_all("x-many").iter().map(|v| v.to_str().unwrap().to_owned()).collect();
        assert_eq!(many, ["a", "b"]);
        assert_eq!(back.get_bin("x-blob-bin").unwrap().to_bytes().unwrap().as_ref(), &[0, 255, 10]);
        assert!(back.get("content-type").is_none(), "reserved headers are not user metadata");
    }

    #[test]
    fn too_many_entries_is_a_status_not_a_panic() {
        let entries = (0..30_000).map(|i| Entry { name: format!("k{i}"), value: Bytes::new() }).collect();
        let err = from_wire(entries).unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    }

    #[test]
    fn invalid_key_is_a_status() {
        let err = from_wire(vec![Entry { name: "bad key".into(), value: Bytes::from_static(b"v") }]).unwrap_err();
        assert_eq!(err.code(), tonic::Code::Internal);
    }
}
