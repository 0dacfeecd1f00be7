//! A circuit breaker: keeps a failing transport out for a cool-down, then lets one probe through.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The breaker's state, as [`crate::Channel::iroh_breaker`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through; `failures` consecutive transport failures so far.
    Closed {
        /// Consecutive transport failures.
        failures: u32,
    },
    /// Calls are kept out until the cool-down ends.
    Open,
    /// The cool-down ended: one probe call is (or may be) in flight.
    HalfOpen,
}

#[derive(Debug)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// A probe went out at `since`; if its caller dropped it (so it never reported), another may go
    /// once a cool-down has passed, so the breaker cannot stick half-open.
    HalfOpen {
        since: Instant,
    },
}

#[derive(Debug)]
pub(crate) struct Breaker {
    state: Mutex<State>,
    /// Whether the state is `Closed { failures: 0 }`: the common case, which every call checks and
    /// every success confirms, read without the lock so concurrent calls do not contend on it.
    clean: AtomicBool,
    threshold: u32,
    cooldown: Duration,
}

impl Breaker {
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Self { state: Mutex::new(State::Closed { failures: 0 }), clean: AtomicBool::new(true), threshold, cooldown }
    }

    /// Whether a call may use the transport now; after the cool-down, the first caller is the probe.
    pub fn allow(&self) -> bool {
        if self.clean.load(Ordering::Acquire) {
            return true;
        }
        let mut s = self.state.lock().expect("breaker lock");
        let now = Instant::now();
        match *s {
            State::Closed { .. } => true,
            State::Open { until } if now >= until => {
                *s = State::HalfOpen { since: now };
                true
            }
            State::HalfOpen { since } if now >= since + self.cooldown => {
                *s = State::HalfOpen { since: now };
                true
            }
            State::Open { .. } | State::HalfOpen { .. } => false,
        }
    }

    pub fn success(&self) {
        if self.clean.load(Ordering::Acquire) {
            return;
        }
        let mut s = self.state.lock().expect("breaker lock");
        if !matches!(*s, State::Closed { .. }) {
            tracing::info!("circuit breaker on Iroh closed: a probe call succeeded");
        }
        *s = State::Closed { failures: 0 };
        self.clean.store(true, Ordering::Release);
    }

    pub fn failure(&self) {
        let mut s = self.state.lock().expect("breaker lock");
        self.clean.store(false, Ordering::Release);
        let open = State::Open { until: Instant::now() + self.cooldown };
        *s = match *s {
            State::Closed { failures } if failures + 1 < self.threshold => State::Closed { failures: failures + 1 },
            State::Closed { failures } => {
                tracing::warn!(
                    failures = failures + 1,
                    cooldown_ms = self.cooldown.as_millis() as u64,
                    "circuit breaker on Iroh opened: calls go over gRPC until a probe succeeds"
                );
                open
            }
            _ => open,
        };
    }

    pub fn state(&self) -> BreakerState {
        match *self.state.lock().expect("breaker lock") {
            State::Closed { failures } => BreakerState::Closed { failures },
            State::Open { until } if Instant::now() >= until => BreakerState::HalfOpen,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_and_probes_after_cooldown() {
        let b = Breaker::new(2, Duration::from_millis(30));
        assert!(b.allow());
        b.failure();
        assert_eq!(b.state(), BreakerState::Closed { failures: 1 });
        b.failure();
        assert_eq!(b.state(), BreakerState::Open);
        assert!(!b.allow());
        std::thread::sleep(Duration::from_millis(40));
        assert!(b.allow(), "the first call after the cool-down is the probe");
        assert!(!b.allow(), "only one probe at a time");
        b.failure();
        assert_eq!(b.state(), BreakerState::Open, "a failed probe reopens");
        std::thread::sleep(Duration::from_millis(40));
        assert!(b.allow());
        b.success();
        assert_eq!(b.state(), BreakerState::Closed { failures: 0 });
        assert!(b.allow() && b.allow());
    }

    #[test]
    fn a_probe_that_never_reports_does_not_stick_the_breaker() {
        let b = Breaker::new(1, Duration::from_millis(30));
        b.failure();
        std::thread::sleep(Duration::from_millis(40));
        assert!(b.allow(), "the probe goes out, and its caller drops it: no success, no failure");
        assert!(!b.allow());
        std::thread::sleep(Duration::from_millis(40));
        assert!(b.allow(), "after another cool-down a new probe may go");
    }
}
