//! Noticing a silently dead connection: a peer that vanished without a goodbye (a cut link, a killed
//! or restarted process) sends nothing, and QUIC would only give up after its idle timeout.
//!
//! While calls wait on a connection, a watcher samples how many datagrams the connection has
//! received. Anything from the peer (data, acknowledgements, keep-alives) proves it alive. After half
//! of [`silence_bound`] without a datagram, the watcher sends a one-byte QUIC DATAGRAM, which is
//! ack-eliciting, so a live peer's QUIC stack answers within its acknowledgement delay whatever its
//! handlers are doing; if that goes unanswered for a quarter of the bound, the connector races a
//! fresh handshake (a restarted peer answers that at once). After the whole bound the connection is closed, which ends every call on it with a
//! transport failure at once. An idle connection is not watched and costs nothing.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use iroh::endpoint::{Connection, VarInt};
use tokio::sync::Notify;
use tokio::time::Instant;

/// The shortest silence that declares a peer dead. Three of QUIC's probe timeouts on loopback or a
/// LAN are a few tens of milliseconds, far below what a loaded host's scheduler can stall a live
/// peer's acknowledgements (a 2-core machine under a test suite stalls tasks for 100–200 ms) or
/// what iroh takes to move a connection between its relay and direct paths. Half a second stays
/// clear of both and still leaves a call with a one-second deadline time to go elsewhere.
pub const SILENCE_FLOOR: Duration = Duration::from_millis(500);

/// The acknowledgement delay a QUIC peer may add (`max_ack_delay`, RFC 9000 §18.2: 25 ms by
/// default, which noq keeps).
const MAX_ACK_DELAY: Duration = Duration::from_millis(25);

/// How often a busy connection is sampled. Short against [`SILENCE_FLOOR`], so a death is declared
/// within a tenth of the bound after it is due.
const TICK: Duration = Duration::from_millis(50);

/// The application error code a connection closed for silence carries.
pub(crate) const SILENT: VarInt = VarInt::from_u32(0x5111);

/// How long a connection with calls waiting may hear nothing from its peer before it is declared
/// dead: three QUIC probe timeouts (the period after which QUIC itself declares persistent
/// congestion), each `rtt + 4·rttvar + max_ack_delay` with the variance taken as half the RTT, and
/// never less than [`SILENCE_FLOOR`].
///
/// ```
/// use std::time::Duration;
/// use duet::iroh::silence_bound;
/// assert_eq!(silence_bound(Duration::from_micros(80)), duet::iroh::SILENCE_FLOOR);
/// assert_eq!(silence_bound(Duration::from_millis(100)), Duration::from_millis(975));
/// ```
pub fn silence_bound(rtt: Duration) -> Duration {
    let pto = rtt * 3 + MAX_ACK_DELAY;
    (pto * 3).max(SILENCE_FLOOR)
}

/// What the watcher and the calls on one connection share.
pub(crate) struct Health {
    in_flight: AtomicUsize,
    /// Set when something suggests the connection is stale (an incoming connection from the same
    /// peer): the watcher then probes even with no call waiting.
    suspect: AtomicBool,
    wake: Notify,
    /// When the watcher last saw the datagram count grow, in ms since `born`.
    heard_ms: AtomicU64,
    /// When the watcher last looked, in ms since `born`.
    sampled_ms: AtomicU64,
    born: Instant,
    dead: OnceLock<String>,
}

impl Health {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            in_flight: AtomicUsize::new(0),
            suspect: AtomicBool::new(false),
            wake: Notify::new(),
            heard_ms: AtomicU64::new(0),
            sampled_ms: AtomicU64::new(0),
            born: Instant::now(),
            dead: OnceLock::new(),
        })
    }

    /// Marks a call waiting on the connection until the guard drops.
    pub fn enter(self: &Arc<Self>) -> InFlight {
        if self.in_flight.fetch_add(1, Ordering::AcqRel) == 0 {
            self.wake.notify_one();
        }
        InFlight { health: self.clone(), started: Instant::now() }
    }

    /// Asks the watcher to check the connection now, calls or not.
    pub fn suspect(&self) {
        self.suspect.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    /// Why the connection was declared dead, if it was.
    pub fn dead(&self) -> Option<&str> {
        self.dead.get().map(String::as_str)
    }

    fn busy(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) > 0 || self.suspect.load(Ordering::Acquire)
    }

    fn ms(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.born).as_millis()).unwrap_or(u64::MAX)
    }

    fn sampled(&self, at: Instant, grew: bool) {
        let ms = self.ms(at);
        self.sampled_ms.fetch_max(ms, Ordering::AcqRel);
        if grew {
            self.heard_ms.fetch_max(ms, Ordering::AcqRel);
        }
    }

    /// Whether the watcher, looking at least once a tick after `since`, saw nothing arrive since.
    fn silent_since(&self, since: Instant) -> bool {
        let since = self.ms(since);
        self.sampled_ms.load(Ordering::Acquire) >= since + TICK.as_millis() as u64
            && self.heard_ms.load(Ordering::Acquire) < since
    }
}

/// A call waiting on a watched connection.
pub(crate) struct InFlight {
    health: Arc<Health>,
    started: Instant,
}

impl InFlight {
    /// Whether the peer sent nothing at all on the connection while this call waited, as far as the
    /// watcher saw: a deadline passed in such silence is a transport signal, not a slow handler.
    pub fn peer_silent(&self) -> bool {
        self.health.dead().is_some() || self.health.silent_since(self.started)
    }

    /// The reason the connection was declared dead, if it was.
    pub fn dead(&self) -> Option<&str> {
        self.health.dead()
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.health.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What the watcher reports to the connector.
pub(crate) trait Verdicts: Send + Sync + 'static {
    /// Half the bound passed in silence: a fresh handshake may find a restarted peer.
    fn suspicious(&self, conn: &Connection);
    /// The connection was declared dead and closed.
    fn dead(&self, conn: &Connection, reason: &str);
    /// Whether new calls still get this connection.
    fn is_current(&self, conn: &Connection) -> bool;
}

/// How often an idle watcher checks whether its connection was replaced.
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// Watches `conn` while calls wait on it (or it is suspected), until it closes.
pub(crate) async fn watch(conn: Connection, health: Arc<Health>, verdicts: std::sync::Weak<dyn Verdicts>) {
    loop {
        tokio::select! {
            _ = conn.closed() => return,
            () = health.wake.notified() => {}
            () = tokio::time::sleep(IDLE_CHECK) => {}
        }
        if !health.busy() {
            match verdicts.upgrade() {
                // A connection replaced by a fresh one (a false suspicion) closes once its calls end.
                Some(v) if !v.is_current(&conn) => {
                    conn.close(VarInt::from_u32(0), b"superseded by a newer connection");
                    return;
                }
                Some(_) => continue,
                // The connector is gone: the watcher no longer keeps the connection open.
                None => return,
            }
        }
        if let Some(reason) = watch_busy(&conn, &health, &verdicts).await {
            tracing::warn!(peer = %conn.remote_id(), %reason, "Iroh connection declared dead");
            // Recorded before the close, so the calls it ends can tell why.
            let _ = health.dead.set(reason.clone());
            if let Some(v) = verdicts.upgrade() {
                v.dead(&conn, &reason);
            }
            conn.close(SILENT, reason.as_bytes());
            return;
        }
    }
}

/// Samples the connection while it is busy; `Some(reason)` once it must be declared dead.
async fn watch_busy(conn: &Connection, health: &Health, verdicts: &std::sync::Weak<dyn Verdicts>) -> Option<String> {
    // What arrived while nobody watched cannot be dated: the silence is measured from now.
    let mut last_rx = conn.stats().udp_rx.datagrams;
    let mut heard = Instant::now();
    let mut probed: Option<Instant> = None;
    let mut first_probe: Option<Instant> = None;
    let mut raced = false;
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_tick = Instant::now();
    while health.busy() {
        tokio::select! {
            _ = conn.closed() => return None,
            _ = ticks.tick() => {}
        }
        let now = Instant::now();
        // A watcher woken late was itself starved: what it did not see says nothing of the peer.
        let on_time = now.duration_since(last_tick) < TICK * 3;
        last_tick = now;
        let rx = conn.stats().udp_rx.datagrams;
        health.sampled(now, rx != last_rx);
        if rx != last_rx {
            last_rx = rx;
            heard = now;
            probed = None;
            first_probe = None;
            raced = false;
            health.suspect.store(false, Ordering::Release);
            continue;
        }
        let bound = silence_bound(rtt(conn));
        let silent = now.duration_since(heard);
        if silent < bound / 2 {
            continue;
        }
        // A probe unanswered for a quarter of the bound (at least 3/4 of a probe timeout) is news.
        let unanswered = first_probe.is_some_and(|p| now.duration_since(p) >= bound / 4);
        if probed.is_none_or(|p| now.duration_since(p) >= bound / 4) {
            // A peer that does not take datagrams still acknowledges the packet; an error here only
            // means this end cannot send one, and the calls' own packets remain the probe.
            let _ = conn.send_datagram(Bytes::from_static(b"\0"));
            probed = Some(now);
            first_probe.get_or_insert(now);
        }
        if unanswered && !raced {
            raced = true;
            if let Some(v) = verdicts.upgrade() {
                v.suspicious(conn);
            }
        }
        if silent >= bound && on_time {
            return Some(format!(
                "the peer sent nothing for {} ms (bound {} ms from a {:.1} ms round trip) while calls waited",
                silent.as_millis(),
                bound.as_millis(),
                rtt(conn).as_secs_f64() * 1e3
            ));
        }
    }
    health.suspect.store(false, Ordering::Release);
    None
}

/// The round-trip time of the path the connection sends on.
fn rtt(conn: &Connection) -> Duration {
    let paths = conn.paths();
    let selected = paths.iter().find(|p| p.is_selected());
    selected.map(|p| p.rtt()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_grows_with_the_round_trip_above_its_floor() {
        assert_eq!(silence_bound(Duration::ZERO), SILENCE_FLOOR);
        assert_eq!(silence_bound(Duration::from_millis(40)), SILENCE_FLOOR);
        assert_eq!(silence_bound(Duration::from_millis(300)), Duration::from_millis(2_775));
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_counts_as_waiting_until_its_guard_drops() {
        let health = Health::new();
        assert!(!health.busy());
        let call = health.enter();
        assert!(health.busy());
        assert!(!call.peer_silent(), "not looked at yet: no verdict");
        tokio::time::sleep(TICK * 2).await;
        health.sampled(Instant::now(), true);
        assert!(!call.peer_silent(), "heard while waiting");
        drop(call);
        assert!(!health.busy());
        tokio::time::sleep(TICK).await;
        let late = health.enter();
        tokio::time::sleep(TICK * 2).await;
        health.sampled(Instant::now(), false);
        assert!(late.peer_silent(), "looked at, and nothing heard since this call began");
    }
}
