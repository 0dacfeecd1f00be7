//! Deadlines: gRPC's relative `grpc-timeout`, carried as microseconds on the Iroh wire.

use std::time::Duration;

use tonic::metadata::MetadataMap;

use crate::Status;

/// The status of a call whose deadline passed (the message gRPC's own libraries use).
pub(crate) fn exceeded() -> Status {
    Status::deadline_exceeded("Deadline expired before operation could complete")
}

/// The timeout a request carries in its `grpc-timeout` metadata (set by [`tonic::Request::set_timeout`]).
pub(crate) fn from_metadata(metadata: &MetadataMap) -> Option<Duration> {
    // Most calls carry no metadata: skip parsing the key.
    if metadata.is_empty() {
        return None;
    }
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    parse_grpc_timeout(value)
}

/// Parses gRPC's `TimeoutValue TimeoutUnit` form: at most 8 digits and one of `H M S m u n`.
pub(crate) fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The effective timeout of a call: the earlier of the request's own and the client's default.
pub(crate) fn effective(metadata: &MetadataMap, default: Option<Duration>) -> Option<Duration> {
    match (from_metadata(metadata), default) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit_and_rejects_garbage() {
        assert_eq!(parse_grpc_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_grpc_timeout("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse_grpc_timeout("4S"), Some(Duration::from_secs(4)));
        assert_eq!(parse_grpc_timeout("5m"), Some(Duration::from_millis(5)));
        assert_eq!(parse_grpc_timeout("6u"), Some(Duration::from_micros(6)));
        assert_eq!(parse_grpc_timeout("7n"), Some(Duration::from_nanos(7)));
        assert_eq!(parse_grpc_timeout("123456789S"), None, "more than 8 digits");
        assert_eq!(parse_grpc_timeout("5x"), None);
        assert_eq!(parse_grpc_timeout("S"), None);
        assert_eq!(parse_grpc_timeout("-1S"), None);
    }

    #[test]
    fn earlier_deadline_wins() {
        let mut req = tonic::Request::new(());
        req.set_timeout(Duration::from_millis(50));
        let t = effective(req.metadata(), Some(Duration::from_secs(1)));
        assert_eq!(t, Some(Duration::from_millis(50)));
        assert_eq!(effective(&MetadataMap::new(), Some(Duration::from_secs(1))), Some(Duration::from_secs(1)));
    }
}
