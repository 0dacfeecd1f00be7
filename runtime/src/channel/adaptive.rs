//! Adaptive choice: a decaying estimate of each transport's latency and error rate, per peer and
//! service, with hysteresis so the choice does not flap, and periodic probes of the transport not in use.

use std::time::Duration;

use crate::call::Transport;

/// Weight of the newest sample in the moving averages.
const ALPHA: f64 = 0.3;
/// The other transport must score this much better (30 %) before the choice moves.
const HYSTERESIS: f64 = 0.7;
/// Samples needed on a transport before its score counts.
const MIN_SAMPLES: u32 = 3;
/// An error costs as much as this many times the latency.
const ERROR_WEIGHT: f64 = 10.0;

#[derive(Debug, Clone, Copy, Default)]
struct Estimate {
    latency_ms: f64,
    errors: f64,
    samples: u32,
}

impl Estimate {
    fn record(&mut self, latency: Duration, ok: bool) {
        let ms = latency.as_secs_f64() * 1e3;
        let err = if ok { 0.0 } else { 1.0 };
        if self.samples == 0 {
            (self.latency_ms, self.errors) = (ms, err);
        } else {
            self.latency_ms += ALPHA * (ms - self.latency_ms);
            self.errors += ALPHA * (err - self.errors);
        }
        self.samples = self.samples.saturating_add(1);
    }

    fn score(&self) -> f64 {
        // Guard against 0 ms so an error-free fast path still compares.
        self.latency_ms.max(0.01) * (1.0 + ERROR_WEIGHT * self.errors)
    }
}

#[derive(Debug)]
pub(crate) struct Adaptive {
    current: Transport,
    estimates: [Estimate; 2],
    calls: u64,
    probe_every: u64,
}

fn idx(t: Transport) -> usize {
    match t {
        Transport::Grpc => 0,
        Transport::Iroh => 1,
    }
}

fn other(t: Transport) -> Transport {
    match t {
        Transport::Grpc => Transport::Iroh,
        Transport::Iroh => Transport::Grpc,
    }
}

impl Adaptive {
    /// Starts on Iroh (the point of migrating), probing gRPC one call in `probe_every`.
    pub fn new(probe_every: u32) -> Self {
        Self {
            current: Transport::Iroh,
            estimates: Default::default(),
            calls: 0,
            probe_every: probe_every.max(2).into(),
        }
    }

    /// The transport for the next call, and why.
    pub fn pick(&mut self) -> (Transport, &'static str) {
        self.calls += 1;
        if self.calls.is_multiple_of(self.probe_every) {
            (other(self.current), "adaptive_probe")
        } else {
            (self.current, "adaptive")
        }
    }

    /// Feeds one call's outcome; may move the choice.
    pub fn record(&mut self, t: Transport, latency: Duration, ok: bool) {
        self.estimates[idx(t)].record(latency, ok);
        let (cur, alt) = (self.estimates[idx(self.current)], self.estimates[idx(other(self.current))]);
        if alt.samples >= MIN_SAMPLES && cur.samples >= MIN_SAMPLES && alt.score() < cur.score() * HYSTERESIS {
            tracing::info!(from = %self.current, to = %other(self.current), "adaptive choice moves");
            self.current = other(self.current);
        }
    }

    pub fn current(&self) -> Transport {
        self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(a: &mut Adaptive, calls: usize, grpc_ms: u64, iroh_ms: u64) {
        for _ in 0..calls {
            let (t, _) = a.pick();
            let ms = if t == Transport::Grpc { grpc_ms } else { iroh_ms };
            a.record(t, Duration::from_millis(ms), true);
        }
    }

    #[test]
    fn moves_to_the_faster_transport_and_back_without_flapping() {
        let mut a = Adaptive::new(4);
        feed(&mut a, 40, 10, 10);
        assert_eq!(a.current(), Transport::Iroh, "equal transports: stay put (hysteresis)");
        feed(&mut a, 40, 10, 50);
        assert_eq!(a.current(), Transport::Grpc, "Iroh slowed down: move to gRPC");
        feed(&mut a, 40, 10, 11);
        assert_eq!(a.current(), Transport::Grpc, "a near tie does not move the choice back");
        feed(&mut a, 60, 50, 10);
        assert_eq!(a.current(), Transport::Iroh, "gRPC slowed down: back to Iroh");
    }

    #[test]
    fn errors_count_against_a_transport() {
        let mut a = Adaptive::new(4);
        for _ in 0..20 {
            let (t, _) = a.pick();
            a.record(t, Duration::from_millis(5), t == Transport::Grpc);
        }
        assert_eq!(a.current(), Transport::Grpc);
    }
}
