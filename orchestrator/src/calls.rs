//! A log of the calls a node or the demo made: which phase, which transport carried each, how long it
//! took. The demo prints it as its table; Raft's own calls land here too.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use duet::Transport;

/// Samples kept per row for the percentiles; older ones are dropped so a long-running node's log
/// stays bounded.
const SAMPLES_KEPT: usize = 4096;

#[derive(Debug, Default)]
struct Samples {
    count: u64,
    recent: VecDeque<Duration>,
}

/// A row's key: phase, call, transport.
type RowKey = (String, String, String);

/// Shared call log; cloning shares it.
#[derive(Debug, Clone, Default)]
pub struct CallLog {
    rows: Arc<Mutex<BTreeMap<RowKey, Samples>>>,
}

/// One line of the table.
#[derive(Debug, Clone, PartialEq)]
pub struct CallRow {
    /// The migration phase, such as `2 health`.
    pub phase: String,
    /// The method, such as `ClusterStatus/GetClusterStatus`.
    pub call: String,
    /// `grpc`, `iroh`, or `failed`.
    pub transport: String,
    /// Calls made.
    pub count: u64,
    /// Median latency of the recent calls.
    pub p50: Duration,
    /// Slowest of the recent calls.
    pub max: Duration,
}

impl CallLog {
    /// Records one call; `transport` is `None` for a call that failed.
    pub fn record(&self, phase: &str, call: &str, transport: Option<Transport>, took: Duration) {
        let transport = transport.map_or_else(|| "failed".to_owned(), |t| t.to_string());
        let mut rows = self.rows.lock().expect("call log lock");
        let samples = rows.entry((phase.to_owned(), call.to_owned(), transport)).or_default();
        samples.count += 1;
        if samples.recent.len() == SAMPLES_KEPT {
            samples.recent.pop_front();
        }
        samples.recent.push_back(took);
    }

    /// Runs `call`, records it under `phase` with the transport that answered (`failed` for an
    /// error) and how long it took, and returns its result.
    pub async fn timed<T>(
        &self,
        phase: &str,
        call: &str,
        fut: impl std::future::Future<Output = Result<duet::Response<T>, duet::Status>>,
    ) -> Result<duet::Response<T>, duet::Status> {
        let started = std::time::Instant::now();
        let result = fut.await;
        let transport = result.as_ref().ok().and_then(|r| r.extensions().get::<Transport>().copied());
        self.record(phase, call, transport, started.elapsed());
        result
    }

    /// The rows, by phase and call.
    pub fn rows(&self) -> Vec<CallRow> {
        let rows = self.rows.lock().expect("call log lock");
        rows.iter()
            .map(|((phase, call, transport), s)| {
                let mut sorted: Vec<_> = s.recent.iter().copied().collect();
                sorted.sort();
                CallRow {
                    phase: phase.clone(),
                    call: call.clone(),
                    transport: transport.clone(),
                    count: s.count,
                    p50: sorted.get(sorted.len() / 2).copied().unwrap_or_default(),
                    max: sorted.last().copied().unwrap_or_default(),
                }
            })
            .collect()
    }

    /// The rows as an aligned text table.
    pub fn table(&self) -> String {
        let rows = self.rows();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<20} {:<34} {:<9} {:>6} {:>10} {:>10}",
            "phase", "call", "transport", "calls", "p50", "max"
        );
        for r in rows {
            let _ = writeln!(
                out,
                "{:<20} {:<34} {:<9} {:>6} {:>10} {:>10}",
                r.phase,
                r.call,
                r.transport,
                r.count,
                format!("{:.2?}", r.p50),
                format!("{:.2?}", r.max)
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_count_calls_by_phase_call_and_transport() {
        let log = CallLog::default();
        for ms in [3, 1, 2] {
            log.record("5 raft", "AppendEntries", Some(Transport::Iroh), Duration::from_millis(ms));
        }
        log.record("5 raft", "AppendEntries", Some(Transport::Grpc), Duration::from_millis(9));
        log.record("2 health", "Check", None, Duration::from_millis(1));
        let rows = log.rows();
        assert_eq!(rows.len(), 3);
        let iroh = rows.iter().find(|r| r.transport == "iroh").expect("iroh row");
        assert_eq!((iroh.count, iroh.p50, iroh.max), (3, Duration::from_millis(2), Duration::from_millis(3)));
        assert_eq!(rows[0].phase, "2 health");
        assert!(log.table().contains("failed"));
    }
}
