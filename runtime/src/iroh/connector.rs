//! One QUIC connection per peer, shared by every client of that peer, reconnected on demand.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use iroh::endpoint::{Connection, VarInt};
use iroh::{Endpoint, EndpointAddr, EndpointId};
use tokio::time::Instant;

use super::ALPN;
use super::liveness::{self, Health, InFlight, Verdicts};
use crate::call::Transport;
use crate::metrics;
use tonic::Status;

/// Default time allowed for a QUIC connect, as tonic's connect timeout is often set.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Hands out one shared connection per peer over a local [`Endpoint`].
///
/// Connections are made lazily on first use, reused by every [`crate::Channel`] made from this
/// connector for the same peer, and remade when they close.
#[derive(Clone)]
pub struct Connector {
    inner: Arc<Inner>,
}

struct Inner {
    endpoint: Endpoint,
    connect_timeout: Duration,
    peers: Mutex<HashMap<EndpointId, Arc<PeerSlot>>>,
    swept: Mutex<Instant>,
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connector").field("endpoint", &self.inner.endpoint.id()).finish()
    }
}

/// The shared connection state for one peer.
pub(crate) struct PeerSlot {
    me: Weak<PeerSlot>,
    endpoint: Endpoint,
    addr: Mutex<EndpointAddr>,
    connect_timeout: Duration,
    current: Mutex<Option<Live>>,
    connecting: Arc<tokio::sync::Mutex<()>>,
    backoff: Mutex<Backoff>,
    /// Bumped for every new connection: a peer that changes (restarts, upgrades) comes back on a new one.
    generation: AtomicU64,
    last_used: Mutex<Instant>,
    dialing_since: Mutex<Option<Instant>>,
}

/// A connection and its watcher's shared state.
#[derive(Clone)]
struct Live {
    conn: Connection,
    health: Arc<Health>,
}

/// An open stream for one call, and the mark that keeps its connection watched while it waits.
pub(crate) struct CallConn {
    pub conn: Connection,
    pub watch: InFlight,
}

/// First wait after a failed connect; it doubles per failure up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait between connect attempts to an unreachable peer. Short, so a restarted peer is
/// reached within about a second of its start: an attempt costs a handshake packet or two, and
/// is made only while calls ask for the peer (Dual mode's calls go over gRPC meanwhile).
const MAX_BACKOFF: Duration = Duration::from_millis(500);
/// Time allowed for one connect attempt to a peer whose last connect failed or whose connection
/// died: the peer was reachable on this path, so a live one answers within a few round trips,
/// and a fresh attempt (with fresh handshake timers) is better than waiting out a long one.
const REDIAL_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
struct Backoff {
    failures: u32,
    retry_at: Option<Instant>,
    last_error: Option<String>,
}

/// What a connector knows of its connection to one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionState {
    /// No connection has been tried yet (connects are lazy).
    Idle,
    /// A live QUIC connection.
    Connected,
    /// The last connect failed; the next is allowed once `retry_in` has passed.
    Failed {
        /// The last connect error.
        error: String,
        /// Time until the next attempt is allowed (zero: now).
        retry_in: Duration,
    },
    /// The connection closed; the next call reconnects.
    Closed,
}

/// A slot no channel has held for this long is forgotten, and its connection closed.
const FORGET_AFTER: Duration = Duration::from_secs(600);
/// How often `slot` looks for slots to forget.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Connectors by the id of the endpoint they dial from, so the server on the same endpoint can tell
/// them of an incoming connection (a peer that restarted dials back before anyone notices it died).
static BY_ENDPOINT: Mutex<Vec<(EndpointId, Weak<Inner>)>> = Mutex::new(Vec::new());

/// The server on `local` accepted a connection from `peer`: an outgoing connection to `peer` that is
/// silent may be to a process that no longer exists, so its watcher checks it now.
pub(crate) fn incoming(local: EndpointId, peer: EndpointId) {
    let mut all = BY_ENDPOINT.lock().expect("connector registry lock");
    all.retain(|(_, w)| w.strong_count() > 0);
    let inners: Vec<_> = all.iter().filter(|(id, _)| *id == local).filter_map(|(_, w)| w.upgrade()).collect();
    drop(all);
    for inner in inners {
        let slot = inner.peers.lock().expect("connector lock").get(&peer).cloned();
        if let Some(live) = slot.and_then(|s| s.live()) {
            live.health.suspect();
        }
    }
}

impl Connector {
    /// A connector dialing from `endpoint`.
    pub fn new(endpoint: Endpoint) -> Self {
        Self::with_connect_timeout(endpoint, DEFAULT_CONNECT_TIMEOUT)
    }

    /// A connector whose connects give up after `timeout` with `UNAVAILABLE`.
    pub fn with_connect_timeout(endpoint: Endpoint, timeout: Duration) -> Self {
        let id = endpoint.id();
        let inner = Arc::new(Inner {
            endpoint,
            connect_timeout: timeout,
            peers: Mutex::default(),
            swept: Mutex::new(Instant::now()),
        });
        BY_ENDPOINT.lock().expect("connector registry lock").push((id, Arc::downgrade(&inner)));
        Self { inner }
    }

    /// A connector with the connect timeout of `[transport.iroh]`.
    pub fn from_config(endpoint: Endpoint, config: &crate::config::IrohConfig) -> Self {
        Self::with_connect_timeout(endpoint, config.connect_timeout())
    }

    /// The local endpoint.
    pub fn endpoint(&self) -> &Endpoint {
        &self.inner.endpoint
    }

    /// The slot of a peer; a newer address replaces the one known.
    pub(crate) fn slot(&self, addr: EndpointAddr) -> Arc<PeerSlot> {
        let mut peers = self.inner.peers.lock().expect("connector lock");
        self.inner.sweep(&mut peers);
        let slot = peers.entry(addr.id).or_insert_with(|| {
            Arc::new_cyclic(|me| PeerSlot {
                me: me.clone(),
                endpoint: self.inner.endpoint.clone(),
                addr: Mutex::new(addr.clone()),
                connect_timeout: self.inner.connect_timeout,
                current: Mutex::default(),
                connecting: Arc::default(),
                backoff: Mutex::default(),
                generation: AtomicU64::new(0),
                last_used: Mutex::new(Instant::now()),
                dialing_since: Mutex::default(),
            })
        });
        *slot.addr.lock().expect("peer lock") = addr;
        *slot.last_used.lock().expect("peer lock") = Instant::now();
        slot.clone()
    }

    /// The peers this connector keeps state for: those a channel holds, and those a channel was made
    /// for in the last ten minutes (an older one is forgotten and its connection closed).
    pub fn peers(&self) -> Vec<EndpointId> {
        let mut peers = self.inner.peers.lock().expect("connector lock");
        self.inner.sweep(&mut peers);
        peers.keys().copied().collect()
    }

    /// The state of the connection to a peer.
    pub fn state(&self, peer: EndpointId) -> ConnectionState {
        let slot = self.inner.peers.lock().expect("connector lock").get(&peer).cloned();
        slot.map_or(ConnectionState::Idle, |s| s.state())
    }

    /// The open connection to `addr`, connecting if there is none.
    pub async fn connection(&self, addr: EndpointAddr) -> Result<Connection, Status> {
        self.slot(addr).connection(true).await.map(|c| c.conn)
    }
}

impl Inner {
    /// Forgets slots no channel holds, with no live connection, unused for [`FORGET_AFTER`].
    fn sweep(&self, peers: &mut HashMap<EndpointId, Arc<PeerSlot>>) {
        let mut swept = self.swept.lock().expect("connector lock");
        if swept.elapsed() < SWEEP_EVERY {
            return;
        }
        *swept = Instant::now();
        peers.retain(|_, slot| {
            let keep =
                Arc::strong_count(slot) > 1 || slot.last_used.lock().expect("peer lock").elapsed() < FORGET_AFTER;
            if !keep && let Some(live) = slot.current.lock().expect("peer lock").take() {
                live.conn.close(VarInt::from_u32(0), b"unused");
            }
            keep
        });
    }
}

impl PeerSlot {
    fn live(&self) -> Option<Live> {
        let current = self.current.lock().expect("peer lock");
        current.as_ref().filter(|l| l.conn.close_reason().is_none()).cloned()
    }

    pub(crate) fn id(&self) -> EndpointId {
        self.addr.lock().expect("peer lock").id
    }

    /// Whether a live connection is open.
    pub(crate) fn connected(&self) -> bool {
        self.live().is_some()
    }

    /// The generation of the live connection, or of the last one (0: none yet).
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub(crate) fn state(&self) -> ConnectionState {
        if self.live().is_some() {
            return ConnectionState::Connected;
        }
        let backoff = self.backoff.lock().expect("peer lock");
        match (&backoff.last_error, backoff.retry_at) {
            (Some(error), Some(at)) => {
                ConnectionState::Failed { error: error.clone(), retry_in: at.saturating_duration_since(Instant::now()) }
            }
            _ if self.current.lock().expect("peer lock").is_some() => ConnectionState::Closed,
            _ => ConnectionState::Idle,
        }
    }

    fn unreachable(&self, backoff: &Backoff) -> Status {
        let retry = backoff.retry_at.map(|at| at.saturating_duration_since(Instant::now())).unwrap_or_default();
        Status::unavailable(format!(
            "Iroh peer {} unreachable ({}); next connect attempt in {retry:?}",
            self.id(),
            backoff.last_error.as_deref().unwrap_or("unknown error"),
        ))
    }

    /// Refuses to dial again before the backoff after a failure has passed: a dead peer then costs
    /// callers nothing, and Dual mode falls back at once.
    fn check_backoff(&self) -> Result<(), Status> {
        let backoff = self.backoff.lock().expect("peer lock");
        match backoff.retry_at {
            Some(at) if Instant::now() < at => Err(self.unreachable(&backoff)),
            _ => Ok(()),
        }
    }

    fn record_failure(&self, error: &str) {
        let mut b = self.backoff.lock().expect("peer lock");
        b.failures = b.failures.saturating_add(1);
        let wait = MIN_BACKOFF.saturating_mul(1 << b.failures.min(16).saturating_sub(1)).min(MAX_BACKOFF);
        b.retry_at = Some(Instant::now() + wait);
        b.last_error = Some(error.to_owned());
    }

    fn known_unreachable(&self) -> bool {
        self.backoff.lock().expect("peer lock").failures > 0
    }

    /// A live connection for one call, watched while the call waits.
    ///
    /// With `wait`, a caller dials (or waits for the dial in progress) within the connect timeout.
    /// Without it, a peer whose last connect failed or whose connection died is not waited for:
    /// the caller gets `UNAVAILABLE` at once (so Dual mode goes over gRPC) while one dial runs in
    /// the background, at most once per backoff step, and brings the peer back when it answers;
    /// and neither is a dial already in progress (see [`Self::dial_detached`]).
    pub(crate) async fn connection(&self, wait: bool) -> Result<CallConn, Status> {
        if let Some(live) = self.live() {
            return Ok(live.call());
        }
        // Boxed: dialing's future is kilobytes, and every call's future would hold room for it.
        Box::pin(self.connect_slowly(wait)).await
    }

    /// [`Self::connection`] when no live connection is there: dial, wait for a dial, or refuse.
    async fn connect_slowly(&self, wait: bool) -> Result<CallConn, Status> {
        self.check_backoff()?;
        if !wait && self.known_unreachable() {
            self.dial_in_background();
            let backoff = self.backoff.lock().expect("peer lock");
            return Err(self.unreachable(&backoff));
        }
        if !wait {
            return self.dial_detached().await;
        }
        let _one_at_a_time = self.connecting.lock().await;
        if let Some(live) = self.live() {
            return Ok(live.call());
        }
        self.check_backoff()?;
        self.dial().await.map(|live| live.call())
    }

    /// For a caller that can go elsewhere: a dial in progress is not waited for, and a dial this
    /// caller starts goes on in the background if the caller stops waiting (its deadline's share
    /// for Iroh passed), so its outcome is recorded and later callers do not pay for the same
    /// attempt.
    async fn dial_detached(&self) -> Result<CallConn, Status> {
        let in_progress = || Status::unavailable(format!("an Iroh connect to {} is in progress", self.id()));
        let lock = match self.connecting.clone().try_lock_owned() {
            Ok(lock) => lock,
            // A dial that has run this long is to a peer that does not answer: go elsewhere now.
            Err(_) if self.dialing_for() > REDIAL_TIMEOUT => return Err(in_progress()),
            // A young dial is likely the first connect of a burst of calls: wait for it.
            Err(_) => {
                drop(self.connecting.lock().await);
                return match self.live() {
                    Some(live) => Ok(live.call()),
                    None => Err(self.check_backoff().err().unwrap_or_else(in_progress)),
                };
            }
        };
        let me = self.me.upgrade().ok_or_else(in_progress)?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let _one_at_a_time = lock;
            let result = match me.live() {
                Some(live) => Ok(live),
                None => me.dial().await,
            };
            let _ = tx.send(result);
        });
        rx.await.map_err(|_| in_progress())?.map(|live| live.call())
    }

    /// Starts a dial unless one is in progress.
    fn dial_in_background(&self) {
        let Ok(lock) = self.connecting.clone().try_lock_owned() else { return };
        let Some(me) = self.me.upgrade() else { return };
        tokio::spawn(async move {
            let _one_at_a_time = lock;
            if me.live().is_none() && me.check_backoff().is_ok() {
                let _ = me.dial().await;
            }
        });
    }

    /// How long the dial in progress has run (zero if none).
    fn dialing_for(&self) -> Duration {
        self.dialing_since.lock().expect("peer lock").map(|at| at.elapsed()).unwrap_or_default()
    }

    /// Dials the peer; the new connection becomes the one calls use.
    async fn dial(&self) -> Result<Live, Status> {
        *self.dialing_since.lock().expect("peer lock") = Some(Instant::now());
        let result = self.dial_now().await;
        *self.dialing_since.lock().expect("peer lock") = None;
        result
    }

    async fn dial_now(&self) -> Result<Live, Status> {
        let addr = self.addr.lock().expect("peer lock").clone();
        let id = addr.id;
        metrics::connect_attempt(Transport::Iroh);
        let limit =
            if self.known_unreachable() { self.connect_timeout.min(REDIAL_TIMEOUT) } else { self.connect_timeout };
        let conn = match tokio::time::timeout(limit, self.endpoint.connect(addr, ALPN)).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => {
                metrics::connect_error(Transport::Iroh, "connect");
                self.record_failure(&e.to_string());
                return Err(Status::unavailable(format!("cannot connect to {id} over Iroh: {e}")));
            }
            Err(_) => {
                metrics::connect_error(Transport::Iroh, "timeout");
                self.record_failure("connect timed out");
                return Err(Status::unavailable(format!("connecting to {id} over Iroh timed out after {limit:?}")));
            }
        };
        *self.backoff.lock().expect("peer lock") = Backoff::default();
        metrics::connection_opened(Transport::Iroh);
        tracing::info!(peer = %id, "Iroh connection up");
        let health = Health::new();
        self.generation.fetch_add(1, Ordering::AcqRel);
        let verdicts: Weak<dyn Verdicts> = self.me.clone();
        tokio::spawn(liveness::watch(conn.clone(), health.clone(), verdicts));
        let watched = conn.clone();
        tokio::spawn(async move {
            let reason = watched.closed().await;
            metrics::connection_closed(Transport::Iroh);
            tracing::info!(peer = %id, %reason, "Iroh connection down");
        });
        let live = Live { conn, health };
        let old = self.current.lock().expect("peer lock").replace(live.clone());
        // A connection replaced while silent is to a peer that is gone (or came back as a new
        // process); its calls, if any, end as its watcher declares it dead.
        if let Some(old) = old.filter(|o| o.health.dead().is_none() && o.conn.stable_id() != live.conn.stable_id()) {
            old.health.suspect();
        }
        Ok(live)
    }
}

impl Live {
    fn call(&self) -> CallConn {
        CallConn { conn: self.conn.clone(), watch: self.health.enter() }
    }
}

impl Verdicts for PeerSlot {
    fn suspicious(&self, conn: &Connection) {
        tracing::debug!(peer = %self.id(), "Iroh connection silent: racing a fresh handshake");
        let Ok(lock) = self.connecting.clone().try_lock_owned() else { return };
        let Some(me) = self.me.upgrade() else { return };
        let stale = conn.stable_id();
        tokio::spawn(async move {
            let _one_at_a_time = lock;
            let still_current = me.live().is_some_and(|l| l.conn.stable_id() == stale);
            if still_current && let Ok(fresh) = me.dial().await {
                tracing::info!(peer = %me.id(), "a fresh Iroh handshake answered while the old connection was silent");
                drop(fresh);
            }
        });
    }

    fn dead(&self, conn: &Connection, reason: &str) {
        let mut current = self.current.lock().expect("peer lock");
        if current.as_ref().is_some_and(|l| l.conn.stable_id() == conn.stable_id()) {
            *current = None;
            drop(current);
            self.record_failure(reason);
        }
    }

    fn is_current(&self, conn: &Connection) -> bool {
        self.current.lock().expect("peer lock").as_ref().is_some_and(|l| l.conn.stable_id() == conn.stable_id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_peer_no_channel_holds_is_forgotten_after_ten_minutes() {
        let connector = Connector::new(crate::iroh::endpoint::bind_loopback().await.expect("endpoint"));
        let held = EndpointAddr::new(iroh::SecretKey::generate().public());
        let dropped = EndpointAddr::new(iroh::SecretKey::generate().public());
        let channel = connector.slot(held.clone());
        drop(connector.slot(dropped.clone()));
        assert_eq!(connector.peers().len(), 2);
        tokio::time::advance(FORGET_AFTER / 2).await;
        assert_eq!(connector.peers().len(), 2, "not yet");
        tokio::time::advance(FORGET_AFTER).await;
        assert_eq!(connector.peers(), vec![held.id], "the slot a channel holds stays");
        drop(channel);
        connector.endpoint().close().await;
    }
}
