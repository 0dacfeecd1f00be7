//! duet's integration tests, one module per concern, in one binary: each binary links iroh, tonic
//! and the test services, so one binary builds and links once (a binary per file cost CI minutes
//! and gigabytes of disk). Filter by module: `cargo test -p duet-tests --test it -- middleware::`.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// The one Prometheus recorder of this test process, with histogram buckets for duet's durations;
/// every test that reads metrics renders it.
pub fn metrics() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &duet::metrics::DURATION_BUCKETS)
            .expect("valid buckets")
            .install_recorder()
            .expect("the only recorder of this process")
    })
}

mod access;
mod bad_frames;
mod bulk;
mod compression;
mod config;
mod conformance;
mod dual;
mod health;
mod kill;
mod lab;
mod legacy_bridge;
mod logs;
mod macro_errors;
mod macro_service;
mod method_kinds;
mod middleware;
mod partition;
mod proto_cases;
mod quic_config;
mod readme;
mod semantics;
mod server_handle;
mod slowloris;
mod tls;
mod wire_compat;
