//! Static descriptions of RPC methods, emitted by `duet-codegen` for every method of every service.

use crate::codec::WireCodec;

/// Which of gRPC's four call shapes a method has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MethodKind {
    /// One request, one response.
    Unary,
    /// One request, a stream of responses.
    ServerStreaming,
    /// A stream of requests, one response.
    ClientStreaming,
    /// Streams both ways.
    Bidi,
}

/// Everything the runtime needs to know about a method, fixed at build time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MethodDesc {
    /// The gRPC path, `/pkg.Service/Method`.
    pub path: &'static str,
    /// The fully qualified service name, `pkg.Service`.
    pub service: &'static str,
    /// The method's proto name, `Method`.
    pub method: &'static str,
    /// The service's config name (`prefer_iroh_for` and metrics use it): snake_case of the proto
    /// service name unless set with `duet_codegen::Builder::config_name`.
    pub config_name: &'static str,
    /// The call shape.
    pub kind: MethodKind,
    /// True when the proto marks the method `NO_SIDE_EFFECTS` or `IDEMPOTENT`: such a call may be
    /// retried on another transport after its request left.
    pub idempotent: bool,
    /// Fingerprint of the request and response message schemas, checked on the Iroh wire because
    /// postcard has no field tags.
    pub fingerprint: u64,
    /// The body encoding on the Iroh wire.
    pub codec: WireCodec,
}

/// A method path, `/pkg.Service/Method`, split into service and method; `None` for anything else (no
/// leading slash, an empty part, a slash in the method).
pub fn split_path(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix('/')?;
    let (service, method) = rest.split_once('/')?;
    (!service.is_empty() && !method.is_empty() && !method.contains('/')).then_some((service, method))
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
