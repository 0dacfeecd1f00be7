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

use std::time::Duration;

use metrics::SharedString;

use crate::call::Transport;
use tonic::Code;

/// Histogram buckets, in seconds, for duet's duration metrics: 100 µs to 30 s, about three per
/// decade, covering loopback calls and calls that wait out a deadline.
pub const DURATION_BUCKETS: [f64; 16] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0];

fn t(t: Transport) -> &'static str {
    match t {
        Transport::Grpc => "grpc",
        Transport::Iroh => "iroh",
    }
}

pub(crate) fn rpc(service: &'static str, method: &'static str, transport: Transport, code: Code, elapsed: Duration) {
    let code = code_name(code);
    metrics::histogram!("duet_rpc_duration_seconds", "service" => service, "method" => method, "transport" => t(transport), "code" => code)
        .record(elapsed.as_secs_f64());
}

pub(crate) fn server_started(service: &SharedString, transport: Transport) {
    metrics::gauge!("duet_server_calls_in_flight", "service" => service.clone(), "transport" => t(transport))
        .increment(1.0);
}

pub(crate) fn server_finished(
    service: &SharedString,
    method: &SharedString,
    transport: Transport,
    code: Code,
    elapsed: Duration,
) {
    let transport = t(transport);
    metrics::gauge!("duet_server_calls_in_flight", "service" => service.clone(), "transport" => transport)
        .decrement(1.0);
    metrics::histogram!("duet_server_rpc_duration_seconds", "service" => service.clone(), "method" => method.clone(), "transport" => transport, "code" => code_name(code))
        .record(elapsed.as_secs_f64());
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

pub(crate) fn selected(service: &'static str, transport: Transport, reason: &'static str) {
    metrics::counter!("duet_transport_selected_total", "service" => service, "transport" => t(transport), "reason" => reason)
        .increment(1);
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

    #[test]
    fn code_names_are_what_debug_prints() {
        for n in 0..=16 {
            let code = Code::from_i32(n);
            assert_eq!(code_name(code), format!("{code:?}"));
        }
    }
}
