//! duet's metrics, through the `metrics` facade: install any recorder (Prometheus, say) to collect them.
//!
//! | name | kind | labels |
//! | --- | --- | --- |
//! | `duet_rpc_duration_seconds` | histogram | service, method, transport, code |
//! | `duet_server_rpc_duration_seconds` | histogram | service, method, transport, code |
//! | `duet_server_calls_in_flight` | gauge | service, transport |
//! | `duet_connections_active` | gauge | transport |
//! | `duet_connection_attempts_total` | counter | transport |
//! | `duet_connection_errors_total` | counter | transport, kind |
//! | `duet_transport_selected_total` | counter | service, transport, reason |
//! | `duet_fallback_total` | counter | service, from, to, reason |
//!
//! `duet_rpc_duration_seconds` is the client's view of a call, from the channel (for a Dual call,
//! one observation per transport tried); `duet_server_rpc_duration_seconds` the server's, from the
//! request's arrival to the end of its response. `service` is the service's config name; on the
//! server, calls to plain tonic services on the gRPC port and to unknown paths count as service and
//! method `other` (paths come from the network, and labels taken from them would grow without
//! bound). `code` is the gRPC code name (`Ok`, `Unavailable`, …).
//!
//! The `metrics` facade has one histogram kind; whether an exporter writes it as a histogram or a
//! summary is the exporter's choice. `metrics-exporter-prometheus` writes a summary unless buckets
//! are set: use [`DURATION_BUCKETS`] (the orchestrator does) so durations aggregate across nodes.

use std::cell::RefCell;
use std::time::Duration;

use metrics::{Key, Label, Level, Metadata};
use rustc_hash::FxHashMap;

use crate::call::Transport;
use crate::method::MethodDesc;
use tonic::Code;

/// Histogram buckets, in seconds, for duet's duration metrics: 100 µs to 30 s, about three per
/// decade, covering loopback calls and calls that wait out a deadline.
pub const DURATION_BUCKETS: [f64; 16] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0];

/// The service and method label of server calls to plain tonic services and unknown paths.
const OTHER: &str = "other";

/// What the facade's macros would pass to the recorder with each registration.
static METADATA: Metadata<'static> = Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

fn t(t: Transport) -> &'static str {
    match t {
        Transport::Grpc => "grpc",
        Transport::Iroh => "iroh",
    }
}

/// One series of the per-call metrics, as plain words so that finding its key hashes a few
/// integers: which metric, which method (its description's address; 0 for `other`), transport,
/// code (or none) and reason (the static text's address and length; none is empty).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Series {
    metric: Metric,
    desc: usize,
    transport: Transport,
    code: Option<Code>,
    reason: (usize, usize),
}

/// duet's per-call metrics.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Metric {
    Rpc,
    Served,
    InFlight,
    Selected,
}

impl Metric {
    fn name(self) -> &'static str {
        match self {
            Metric::Rpc => "duet_rpc_duration_seconds",
            Metric::Served => "duet_server_rpc_duration_seconds",
            Metric::InFlight => "duet_server_calls_in_flight",
            Metric::Selected => "duet_transport_selected_total",
        }
    }
}

impl Series {
    fn new(metric: Metric, desc: Option<&'static MethodDesc>, transport: Transport, code: Option<Code>) -> Self {
        let desc = desc.map_or(0, |d| std::ptr::from_ref(d) as usize);
        Self { metric, desc, transport, code, reason: (0, 0) }
    }
}

thread_local! {
    /// The keys of the per-call series, built once per thread. The facade's macros build a key (a
    /// label vector and its hash) at every use, even with no recorder installed; a key does not
    /// depend on the recorder, so one installed later gets these as it would the macros'. The
    /// series are bounded: methods × transports × codes.
    static KEYS: RefCell<FxHashMap<Series, Key>> = RefCell::new(FxHashMap::default());
}

/// Runs `with` on the key of `series`, built by `build` the first time this thread needs it.
fn with_key<R>(series: Series, build: impl FnOnce() -> Key, with: impl FnOnce(&Key) -> R) -> R {
    let mut parts = Some((build, with));
    let cached = KEYS.try_with(|keys| {
        // Busy only if a recorder recorded a duet call from inside its own registration.
        let mut keys = keys.try_borrow_mut().ok()?;
        let (build, with) = parts.take()?;
        // Looked up before `entry`, which would make room for one more key on every call.
        if let Some(key) = keys.get(&series) {
            return Some(with(key));
        }
        Some(with(keys.entry(series).or_insert_with(build)))
    });
    if let Ok(Some(r)) = cached {
        return r;
    }
    // The cache is busy, or torn down with its thread (a call dropped in the thread's last moments).
    let (build, with) = parts.take().expect("unused when the cache was unavailable");
    with(&build())
}

fn labels(desc: Option<&'static MethodDesc>) -> (&'static str, &'static str) {
    desc.map_or((OTHER, OTHER), |d| (d.config_name, d.method))
}

/// Records a call's duration in `metric`'s histogram, by service, method, transport and code.
fn duration(metric: Metric, desc: Option<&'static MethodDesc>, transport: Transport, code: Code, elapsed: Duration) {
    let series = Series::new(metric, desc, transport, Some(code));
    let build = || {
        let (service, method) = labels(desc);
        Key::from_parts(
            metric.name(),
            vec![
                Label::from_static_parts("service", service),
                Label::from_static_parts("method", method),
                Label::from_static_parts("transport", t(transport)),
                Label::from_static_parts("code", code_name(code)),
            ],
        )
    };
    with_key(series, build, |key| {
        metrics::with_recorder(|r| r.register_histogram(key, &METADATA)).record(elapsed.as_secs_f64());
    });
}

/// A client's attempt of `desc` on `transport` ended with `code` after `elapsed`.
pub(crate) fn rpc(desc: &'static MethodDesc, transport: Transport, code: Code, elapsed: Duration) {
    duration(Metric::Rpc, Some(desc), transport, code, elapsed);
}

fn in_flight(desc: Option<&'static MethodDesc>, transport: Transport, started: bool) {
    let series = Series::new(Metric::InFlight, desc, transport, None);
    let build = || {
        let (service, _) = labels(desc);
        Key::from_parts(
            Metric::InFlight.name(),
            vec![Label::from_static_parts("service", service), Label::from_static_parts("transport", t(transport))],
        )
    };
    with_key(series, build, |key| {
        let gauge = metrics::with_recorder(|r| r.register_gauge(key, &METADATA));
        if started { gauge.increment(1.0) } else { gauge.decrement(1.0) }
    });
}

/// A served call of `desc` (`None`: a plain tonic service or an unknown path) started.
pub(crate) fn server_started(desc: Option<&'static MethodDesc>, transport: Transport) {
    in_flight(desc, transport, true);
}

/// A served call of `desc` ended with `code` after `elapsed`.
pub(crate) fn server_finished(desc: Option<&'static MethodDesc>, transport: Transport, code: Code, elapsed: Duration) {
    in_flight(desc, transport, false);
    duration(Metric::Served, desc, transport, code, elapsed);
}

/// The code's name as `Debug` prints it (`Ok`, `Unavailable`, …), without formatting a string per call.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "Ok",
        Code::Cancelled => "Cancelled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

/// A Dual call of `desc` chose `transport` for `reason`.
pub(crate) fn selected(desc: &'static MethodDesc, transport: Transport, reason: &'static str) {
    let reason_at = (reason.as_ptr() as usize, reason.len());
    let series = Series { reason: reason_at, ..Series::new(Metric::Selected, Some(desc), transport, None) };
    let build = || {
        Key::from_parts(
            Metric::Selected.name(),
            vec![
                Label::from_static_parts("service", desc.config_name),
                Label::from_static_parts("transport", t(transport)),
                Label::from_static_parts("reason", reason),
            ],
        )
    };
    with_key(series, build, |key| metrics::with_recorder(|r| r.register_counter(key, &METADATA)).increment(1));
}

pub(crate) fn fallback(service: &'static str, from: Transport, to: Transport, reason: &'static str) {
    metrics::counter!("duet_fallback_total", "service" => service, "from" => t(from), "to" => t(to), "reason" => reason)
        .increment(1);
}

pub(crate) fn connect_attempt(transport: Transport) {
    metrics::counter!("duet_connection_attempts_total", "transport" => t(transport)).increment(1);
}

pub(crate) fn connect_error(transport: Transport, kind: &'static str) {
    metrics::counter!("duet_connection_errors_total", "transport" => t(transport), "kind" => kind).increment(1);
}

pub(crate) fn connection_opened(transport: Transport) {
    metrics::gauge!("duet_connections_active", "transport" => t(transport)).increment(1.0);
}

pub(crate) fn connection_closed(transport: Transport) {
    metrics::gauge!("duet_connections_active", "transport" => t(transport)).decrement(1.0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::method::MethodKind;
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    static ECHO: MethodDesc = MethodDesc {
        path: "/t.Echo/Say",
        service: "t.Echo",
        method: "Say",
        config_name: "echo",
        kind: MethodKind::Unary,
        idempotent: false,
        fingerprint: 0,
        codec: crate::codec::WireCodec::Postcard,
    };

    /// Every series with its labels (sorted) and value, as the recorder holds them.
    fn recorded(run: impl FnOnce()) -> Vec<(String, Vec<String>, DebugValue)> {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics::with_local_recorder(&recorder, run);
        let mut out: Vec<_> = snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .map(|(key, _, _, value)| {
                let key = key.key();
                let mut labels: Vec<_> = key.labels().map(|l| format!("{}={}", l.key(), l.value())).collect();
                labels.sort();
                (key.name().to_owned(), labels, value)
            })
            .collect();
        out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        out
    }

    #[test]
    fn cached_keys_reach_every_recorder_with_the_labels_the_macros_gave() {
        let ms = Duration::from_millis(1);
        // The first recorder makes this thread build the keys; the second gets the cached ones.
        for _ in 0..2 {
            let series = recorded(|| {
                rpc(&ECHO, Transport::Iroh, Code::Ok, ms);
                rpc(&ECHO, Transport::Iroh, Code::Ok, ms);
                rpc(&ECHO, Transport::Grpc, Code::Unavailable, ms);
                server_started(Some(&ECHO), Transport::Iroh);
                server_finished(Some(&ECHO), Transport::Iroh, Code::Ok, ms);
                server_started(None, Transport::Grpc);
                selected(&ECHO, Transport::Iroh, "prefer_iroh_for");
                selected(&ECHO, Transport::Iroh, "prefer_iroh_for");
            });
            let summary: Vec<_> = series
                .iter()
                .map(|(name, labels, value)| {
                    let value = match value {
                        DebugValue::Counter(n) => format!("counter {n}"),
                        DebugValue::Gauge(g) => format!("gauge {}", g.into_inner()),
                        DebugValue::Histogram(h) => format!("histogram x{}", h.len()),
                    };
                    format!("{name} {} {value}", labels.join(","))
                })
                .collect();
            assert_eq!(
                summary,
                [
                    "duet_rpc_duration_seconds code=Ok,method=Say,service=echo,transport=iroh histogram x2",
                    "duet_rpc_duration_seconds code=Unavailable,method=Say,service=echo,transport=grpc histogram x1",
                    "duet_server_calls_in_flight service=echo,transport=iroh gauge 0",
                    "duet_server_calls_in_flight service=other,transport=grpc gauge 1",
                    "duet_server_rpc_duration_seconds code=Ok,method=Say,service=echo,transport=iroh histogram x1",
                    "duet_transport_selected_total reason=prefer_iroh_for,service=echo,transport=iroh counter 2",
                ]
            );
        }
    }

    #[test]
    fn code_names_are_what_debug_prints() {
        for n in 0..=16 {
            let code = Code::from_i32(n);
            assert_eq!(code_name(code), format!("{code:?}"));
        }
    }
}
