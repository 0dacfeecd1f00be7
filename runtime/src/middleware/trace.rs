//! W3C trace context (`traceparent`) on both transports, so a client's span and the server's span of
//! one call carry the same trace id.
//!
//! A client call sends `traceparent` when its request has none: as a child of the [`TraceContext`]
//! in the request's extensions if there is one (a handler passing on the context of the call it
//! serves), else as the root of a new trace when the `duet.call` span is enabled. A server reads it,
//! records `trace_id` and `parent_id` on its `duet.serve` span, and puts the server span's own
//! context in the handler's request extensions. A `traceparent` set by the caller (by an
//! OpenTelemetry propagator, say) is sent as it is.
//!
//! ```
//! use duet::middleware::TraceContext;
//! let ctx: TraceContext = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse().unwrap();
//! assert_eq!(ctx.to_string(), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
//! let child = ctx.child();
//! assert_eq!(child.trace_id, ctx.trace_id);
//! assert_ne!(child.span_id, ctx.span_id);
//! ```

use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

use http::Extensions;
use tonic::metadata::{Ascii, MetadataKey, MetadataMap, MetadataValue};

/// The metadata key of W3C trace context.
pub const TRACEPARENT: &str = "traceparent";
/// [`TRACEPARENT`] parsed once: a key given as `&str` is parsed at every lookup.
static TRACEPARENT_KEY: std::sync::LazyLock<MetadataKey<Ascii>> =
    std::sync::LazyLock::new(|| MetadataKey::from_static(TRACEPARENT));

/// One span's place in a distributed trace, as W3C `traceparent` carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceContext {
    /// The trace every span of one operation shares; never zero.
    pub trace_id: u128,
    /// This span's id; never zero.
    pub span_id: u64,
    /// Whether the trace is sampled (the `01` flag).
    pub sampled: bool,
}

fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    // SipHash with per-process random keys of a counter: unique and unpredictable enough for trace
    // ids, which need no cryptographic strength.
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    RandomState::new().hash_one(n).max(1)
}

impl TraceContext {
    /// The first span of a new, sampled trace.
    pub fn new_root() -> Self {
        let trace_id = (u128::from(random_u64()) << 64) | u128::from(random_u64());
        Self { trace_id, span_id: random_u64(), sampled: true }
    }

    /// A new span in the same trace, whose parent is this one.
    pub fn child(&self) -> Self {
        Self { span_id: random_u64(), ..*self }
    }

    /// The context a request's `traceparent` metadata carries, if it holds a valid one.
    pub fn from_metadata(metadata: &MetadataMap) -> Option<Self> {
        if metadata.is_empty() {
            return None;
        }
        metadata.get(&*TRACEPARENT_KEY)?.to_str().ok()?.parse().ok()
    }

    /// The trace id as 32 lowercase hex digits, as logs and tracing backends show it.
    pub fn trace_id_hex(&self) -> String {
        format!("{:032x}", self.trace_id)
    }
}

impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "00-{:032x}-{:016x}-{:02x}", self.trace_id, self.span_id, u8::from(self.sampled))
    }
}

/// Why a string is not a `traceparent` value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a W3C traceparent (00-<32 hex>-<16 hex>-<2 hex>, ids not zero)")]
pub struct ParseTraceContextError;

impl FromStr for TraceContext {
    type Err = ParseTraceContextError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.split('-');
        let (Some(version), Some(trace), Some(span), Some(flags)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(ParseTraceContextError);
        };
        let hex = |p: &str, len: usize| {
            (p.len() == len && p.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))).then_some(())
        };
        // Version 00 has exactly four fields; a later version may append more, which we ignore.
        let version_ok = hex(version, 2).is_some() && version != "ff" && (version != "00" || parts.next().is_none());
        if !version_ok || hex(trace, 32).is_none() || hex(span, 16).is_none() || hex(flags, 2).is_none() {
            return Err(ParseTraceContextError);
        }
        let trace_id = u128::from_str_radix(trace, 16).map_err(|_| ParseTraceContextError)?;
        let span_id = u64::from_str_radix(span, 16).map_err(|_| ParseTraceContextError)?;
        let flags = u8::from_str_radix(flags, 16).map_err(|_| ParseTraceContextError)?;
        if trace_id == 0 || span_id == 0 {
            return Err(ParseTraceContextError);
        }
        Ok(Self { trace_id, span_id, sampled: flags & 1 == 1 })
    }
}

/// The context a client call goes out with: `None` when the request already names its own
/// `traceparent`, or has no context and `start` is false (tracing is off).
pub(crate) fn outgoing(metadata: &mut MetadataMap, extensions: &Extensions, start: bool) -> Option<TraceContext> {
    let parent = extensions.get::<TraceContext>();
    // A name looked up by `&str` is parsed first: skipped where the answer cannot matter.
    if (parent.is_none() && !start) || (!metadata.is_empty() && metadata.contains_key(&*TRACEPARENT_KEY)) {
        return None;
    }
    let ctx = match parent {
        Some(parent) => parent.child(),
        None => TraceContext::new_root(),
    };
    let value = MetadataValue::try_from(ctx.to_string()).expect("traceparent is ASCII");
    metadata.insert(TRACEPARENT_KEY.clone(), value);
    Some(ctx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_spec_example_and_refuses_malformed_values() {
        let ctx: TraceContext = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse().unwrap();
        assert_eq!(ctx.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(ctx.span_id, 0x00f067aa0ba902b7);
        assert!(ctx.sampled);
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(bad.parse::<TraceContext>(), Err(ParseTraceContextError), "{bad:?}");
        }
        let later: TraceContext = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-extra".parse().unwrap();
        assert!(!later.sampled);
    }

    #[test]
    fn a_request_with_its_own_traceparent_keeps_it_and_a_parent_in_extensions_gets_a_child() {
        let mut md = MetadataMap::new();
        md.insert(TRACEPARENT, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse().unwrap());
        assert_eq!(outgoing(&mut md, &Extensions::new(), true), None);

        let parent = TraceContext::new_root();
        let mut ext = Extensions::new();
        ext.insert(parent);
        let mut md = MetadataMap::new();
        let sent = outgoing(&mut md, &ext, false).expect("a child of the parent");
        assert_eq!(sent.trace_id, parent.trace_id);
        assert_eq!(TraceContext::from_metadata(&md), Some(sent));

        assert_eq!(outgoing(&mut MetadataMap::new(), &Extensions::new(), false), None);
    }
}
