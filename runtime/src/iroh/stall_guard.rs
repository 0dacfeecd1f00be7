//! The clock of the slowloris guard: one timer per connection instead of one per stream.
//!
//! Every new stream must deliver its request header (and a unary call its message) within the header
//! timeout. A `tokio::time::timeout` per stream registers a timer with the runtime's time driver
//! whenever the bytes are not there at the first poll, which under many concurrent calls is most of
//! the time; the driver then wakes a parked worker to re-arm, and the server switched threads two to
//! three times as often per call as a plain QUIC echo. Here a connection has one ticking task and a
//! waiting stream only joins a [`Notify`]'s list, which wakes nobody.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

/// Ticks per timeout: a stalled stream is cut off between 1 and 1 + 1/`TICKS` timeouts after it began.
const TICKS: u64 = 4;

/// The shortest tick, so a zero or tiny timeout does not spin.
const MIN_TICK: Duration = Duration::from_millis(1);

/// The guard clock of one connection; cheap to clone into each stream's task.
#[derive(Clone, Debug)]
pub(crate) struct StallGuard {
    clock: Arc<Clock>,
}

#[derive(Debug)]
struct Clock {
    ticks: AtomicU64,
    ticked: Notify,
}

/// The stream did not deliver in time.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Stalled;

impl StallGuard {
    /// Starts the clock of one connection. Its task ends at the first tick after the last clone of
    /// the guard is dropped, that is once the connection and all its streams are gone.
    pub fn start(timeout: Duration) -> Self {
        let clock = Arc::new(Clock { ticks: AtomicU64::new(0), ticked: Notify::new() });
        let tick = (timeout / TICKS as u32).max(MIN_TICK);
        let weak = Arc::downgrade(&clock);
        tokio::spawn(async move {
            let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + tick, tick);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                let Some(clock) = weak.upgrade() else { return };
                clock.ticks.fetch_add(1, Ordering::Release);
                clock.ticked.notify_waiters();
            }
        });
        Self { clock }
    }

    /// Runs `work`, or gives up with [`Stalled`] once at least the timeout has passed (and at most a
    /// quarter of it more).
    pub async fn within<F: Future>(&self, work: F) -> Result<F::Output, Stalled> {
        // A stream that began during tick n has waited at least TICKS full ticks once tick n+TICKS+1
        // has started.
        let began = self.clock.ticks.load(Ordering::Acquire);
        let expired = async {
            loop {
                // Created before the check, so a tick between the check and the await still wakes it.
                let next = self.clock.ticked.notified();
                if self.clock.ticks.load(Ordering::Acquire) - began > TICKS {
                    return;
                }
                next.await;
            }
        };
        tokio::select! {
            biased;
            out = work => Ok(out),
            () = expired => Err(Stalled),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn work_that_never_finishes_is_cut_off_between_one_and_one_and_a_quarter_timeouts() {
        let guard = StallGuard::start(Duration::from_secs(4));
        // Begin part way through a tick, the worst case for precision.
        tokio::time::sleep(Duration::from_millis(900)).await;
        let began = tokio::time::Instant::now();
        assert_eq!(guard.within(std::future::pending::<()>()).await, Err(Stalled));
        let waited = began.elapsed();
        assert!(waited >= Duration::from_secs(4) && waited <= Duration::from_secs(5), "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn work_that_finishes_in_time_is_not_cut_off() {
        let guard = StallGuard::start(Duration::from_secs(4));
        let slow = async {
            tokio::time::sleep(Duration::from_millis(3900)).await;
            7
        };
        assert_eq!(guard.within(slow).await, Ok(7));
    }

    #[tokio::test(start_paused = true)]
    async fn the_clock_stops_when_the_last_guard_is_gone() {
        let tasks = || tokio::runtime::Handle::current().metrics().num_alive_tasks();
        let guard = StallGuard::start(Duration::from_millis(40));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(tasks(), 1, "the clock ticks while a guard is held");
        drop(guard);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(tasks(), 0, "the clock's task returned after the last guard went");
    }
}
