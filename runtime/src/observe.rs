//! The one place a call is observed, the same on gRPC and Iroh. On the client, each attempt on a
//! transport: its `duet.attempt` span and its duration and code. On the server, each served call: its
//! `duet.serve` span (with the caller's trace context), its duration histogram and the calls-in-flight
//! gauge.

use std::future::Future;
use std::time::Instant;

use futures_util::future::Either;
use http::Extensions;
use tonic::metadata::MetadataMap;
use tonic::{Code, Status};
use tracing::instrument::Instrumented;

use crate::call::Transport;
use crate::method::MethodDesc;
use crate::middleware::TraceContext;

/// Runs `call` in `span` when the span is enabled: entering a disabled span on every poll is not
/// free (about a quarter of what duet adds to a tonic call on the gRPC path; BENCHMARKS.md).
pub(crate) fn traced<F: Future>(span: tracing::Span, call: F) -> Either<F, Instrumented<F>> {
    use tracing::Instrument;
    // Not an async fn: one that took `call` and awaited it would hold two copies of its state.
    if span.is_disabled() { Either::Left(call) } else { Either::Right(call.instrument(span)) }
}

/// The span of one attempt of a client call on one transport; `reason` is why that transport.
pub(crate) fn attempt_span(desc: &'static MethodDesc, transport: Transport, reason: &'static str) -> tracing::Span {
    tracing::debug_span!("duet.attempt", path = desc.path, %transport, reason)
}

/// Records how an attempt on one transport ended (`duet_rpc_duration_seconds`).
pub(crate) fn attempt_finished(desc: &'static MethodDesc, transport: Transport, code: Code, started: Instant) {
    crate::metrics::rpc(desc, transport, code, started.elapsed());
}

/// Runs one attempt on one transport inside its span and records its duration and code.
pub(crate) fn measured<T>(
    desc: &'static MethodDesc,
    transport: Transport,
    reason: &'static str,
    call: impl Future<Output = Result<T, Status>>,
) -> impl Future<Output = Result<T, Status>> {
    use futures_util::FutureExt;
    // A combinator, not an async block: one that awaited `call` would hold two copies of its state.
    // Callers await the attempt where they make it, so its clock starts here.
    let started = Instant::now();
    traced(attempt_span(desc, transport, reason), call).map(move |result| {
        attempt_finished(desc, transport, result.as_ref().map_or_else(Status::code, |_| Code::Ok), started);
        result
    })
}

/// A served call being observed: recorded once, with the code it ended with, when
/// [`Served::finish`] is called or, if it never is, on drop: as `DEADLINE_EXCEEDED` once its
/// deadline has passed (tonic's own timeout drops a gRPC call at its deadline), else `CANCELLED` (the
/// client went away).
pub(crate) struct Served {
    /// The method called; `None` for a plain tonic service or an unknown path.
    desc: Option<&'static MethodDesc>,
    transport: Transport,
    start: Instant,
    /// The call's deadline, less the slack within which a dropped call counts as past it.
    deadline: Option<Instant>,
    done: bool,
}

impl Served {
    /// Starts observing a call of `desc` (`None`: a plain tonic service or an unknown path).
    pub fn start(desc: Option<&'static MethodDesc>, transport: Transport) -> Self {
        crate::metrics::server_started(desc, transport);
        Self { desc, transport, start: Instant::now(), deadline: None, done: false }
    }

    /// Notes the call's relative deadline, for a call dropped without an answer. A client gives up
    /// at its deadline and tonic's timer started before this observation did, so a call dropped in
    /// the last tenth of its time (at least the last 5 ms) counts as past its deadline.
    pub fn expires(mut self, timeout: Option<std::time::Duration>) -> Self {
        let slack = |t: std::time::Duration| (t / 10).max(std::time::Duration::from_millis(5));
        self.deadline = timeout.and_then(|t| self.start.checked_add(t.saturating_sub(slack(t))));
        self
    }

    /// Records the call's end.
    pub fn finish(mut self, code: Code) {
        self.record(code);
    }

    fn record(&mut self, code: Code) {
        if !std::mem::replace(&mut self.done, true) {
            crate::metrics::server_finished(self.desc, self.transport, code, self.start.elapsed());
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let expired = self.deadline.is_some_and(|d| Instant::now() >= d);
        self.record(if expired { Code::DeadlineExceeded } else { Code::Cancelled });
    }
}

/// The server span of one call, and the trace context the handler inherits: a child of the
/// caller's `traceparent`, if it sent one, put into `extensions`.
pub(crate) fn serve_span(
    path: &str,
    transport: Transport,
    metadata: &MetadataMap,
    extensions: &mut Extensions,
) -> tracing::Span {
    let parent = TraceContext::from_metadata(metadata);
    let own = parent.map(|p| p.child());
    if let Some(own) = own {
        extensions.insert(own);
    }
    let span = tracing::debug_span!(
        "duet.serve",
        path,
        %transport,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
        parent_id = tracing::field::Empty,
    );
    if let (Some(parent), Some(own)) = (parent, own)
        && !span.is_disabled()
    {
        span.record("trace_id", tracing::field::display(format_args!("{:032x}", parent.trace_id)));
        span.record("span_id", tracing::field::display(format_args!("{:016x}", own.span_id)));
        span.record("parent_id", tracing::field::display(format_args!("{:016x}", parent.span_id)));
    }
    span
}
