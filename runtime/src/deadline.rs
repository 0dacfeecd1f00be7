//! Deadlines: gRPC's relative `grpc-timeout`, carried as microseconds on the Iroh wire.

use std::future::Future;
use std::time::Duration;

use std::sync::LazyLock;

use futures_util::FutureExt;
use futures_util::future::Either;
use tonic::metadata::{Ascii, MetadataKey, MetadataMap};

use tonic::Status;

/// The metadata key of gRPC's relative deadline.
pub(crate) const GRPC_TIMEOUT: &str = "grpc-timeout";
/// [`GRPC_TIMEOUT`] parsed once: a key given as `&str` is parsed at every lookup, which costs more
/// than the lookup on a request that carries headers (every gRPC request does).
pub(crate) static GRPC_TIMEOUT_KEY: LazyLock<MetadataKey<Ascii>> =
    LazyLock::new(|| MetadataKey::from_static(GRPC_TIMEOUT));

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
    let value = metadata.get(&*GRPC_TIMEOUT_KEY)?.to_str().ok()?;
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

/// When a client call must be over: computed once per call, from the request's `grpc-timeout` and
/// the client's default, and passed down to whichever transport carries it. Each transport sends
/// what is left of it when the request leaves, so time spent connecting, or on a first attempt that
/// fell back, comes off what the server is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Deadline(Option<tokio::time::Instant>);

impl Deadline {
    /// No deadline.
    pub const NONE: Deadline = Deadline(None);

    /// The deadline of a call whose request carries `metadata`, with the client's `default` timeout.
    pub fn of(metadata: &MetadataMap, default: Option<Duration>) -> Self {
        // A timeout too long to add to now (`Duration::MAX`, say) is no deadline at all.
        Self(effective(metadata, default).and_then(|t| tokio::time::Instant::now().checked_add(t)))
    }

    /// The instant, if the call has a deadline.
    pub fn instant(self) -> Option<tokio::time::Instant> {
        self.0
    }

    /// What is left; zero once it has passed.
    pub fn remaining(self) -> Option<Duration> {
        self.0.map(|d| d.saturating_duration_since(tokio::time::Instant::now()))
    }

    /// Writes what is left into the request's `grpc-timeout` (what the gRPC path sends), or fails
    /// the call if nothing is left.
    pub fn stamp<T>(self, req: &mut tonic::Request<T>) -> Result<(), Status> {
        match self.remaining() {
            Some(left) if left.is_zero() => Err(exceeded()),
            Some(left) => {
                req.set_timeout(left);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Runs `fut` until the deadline; past it, the call's answer is `DEADLINE_EXCEEDED`, made by
    /// `expired`. Callers pass `fut` built in place and await the result where they make it: a
    /// future held in a local and then awaited is stored twice in the caller's state.
    pub fn bound<T, E, F>(self, fut: F, expired: impl FnOnce(Status) -> E) -> impl Future<Output = Result<T, E>>
    where
        F: Future<Output = Result<T, E>>,
    {
        // Not an async fn: one that took `fut` and awaited it would hold two copies of its state.
        match self.0 {
            Some(at) => {
                Either::Left(tokio::time::timeout_at(at, fut).map(|r| r.unwrap_or_else(|_| Err(expired(exceeded())))))
            }
            None => Either::Right(fut),
        }
    }
}

/// `grpc-timeout`'s form of a timeout: at most 8 digits, in the finest unit that fits.
pub(crate) fn to_grpc_timeout(t: Duration) -> String {
    const MAX: u128 = 99_999_999;
    let nanos = t.as_nanos();
    for (per, unit) in [(1, "n"), (1_000, "u"), (1_000_000, "m"), (1_000_000_000, "S"), (60_000_000_000, "M")] {
        let n = nanos.div_ceil(per);
        if n <= MAX {
            return format!("{n}{unit}");
        }
    }
    format!("{}H", nanos.div_ceil(3_600_000_000_000).min(MAX))
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
    fn timeouts_format_in_at_most_eight_digits_and_parse_back() {
        for t in [
            Duration::from_nanos(1),
            Duration::from_micros(1500),
            Duration::from_millis(250),
            Duration::from_secs(7),
            Duration::from_secs(99_999),
            Duration::from_secs(10 * 86_400),
        ] {
            let text = to_grpc_timeout(t);
            assert!(text.len() <= 9, "{text}");
            let back = parse_grpc_timeout(&text).unwrap();
            assert!(back >= t && back - t < t / 1000 + Duration::from_nanos(1), "{t:?} -> {text} -> {back:?}");
        }
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
