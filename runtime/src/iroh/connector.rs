//! One QUIC connection per peer, shared by every client of that peer, reconnected on demand.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use iroh::endpoint::Connection;
use iroh::{Endpoint, EndpointAddr, EndpointId};

use super::ALPN;
use crate::{Status, Transport, metrics};

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
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connector").field("endpoint", &self.inner.endpoint.id()).finish()
    }
}

/// The shared connection state for one peer.
pub(crate) struct PeerSlot {
    endpoint: Endpoint,
    addr: Mutex<EndpointAddr>,
    connect_timeout: Duration,
    current: Mutex<Option<Connection>>,
    connecting: tokio::sync::Mutex<()>,
    backoff: Mutex<Backoff>,
}

/// First wait after a failed connect; it doubles per failure up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait between connect attempts to an unreachable peer.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
struct Backoff {
    failures: u32,
    retry_at: Option<tokio::time::Instant>,
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

impl Connector {
    /// A connector dialing from `endpoint`.
    pub fn new(endpoint: Endpoint) -> Self {
        Self::with_connect_timeout(endpoint, DEFAULT_CONNECT_TIMEOUT)
    }

    /// A connector whose connects give up after `timeout` with `UNAVAILABLE`.
    pub fn with_connect_timeout(endpoint: Endpoint, timeout: Duration) -> Self {
        Self { inner: Arc::new(Inner { endpoint, connect_timeout: timeout, peers: Mutex::default() }) }
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
        let slot = peers.entry(addr.id).or_insert_with(|| {
            Arc::new(PeerSlot {
                endpoint: self.inner.endpoint.clone(),
                addr: Mutex::new(addr.clone()),
                connect_timeout: self.inner.connect_timeout,
                current: Mutex::default(),
                connecting: tokio::sync::Mutex::default(),
                backoff: Mutex::default(),
            })
        });
        *slot.addr.lock().expect("peer lock") = addr;
        slot.clone()
    }

    /// The state of the connection to a peer.
    pub fn state(&self, peer: EndpointId) -> ConnectionState {
        let slot = self.inner.peers.lock().expect("connector lock").get(&peer).cloned();
        slot.map_or(ConnectionState::Idle, |s| s.state())
    }

    /// The open connection to `addr`, connecting if there is none.
    pub async fn connection(&self, addr: EndpointAddr) -> Result<Connection, Status> {
        self.slot(addr).connection().await
    }
}

impl PeerSlot {
    fn live(&self) -> Option<Connection> {
        let current = self.current.lock().expect("peer lock");
        current.as_ref().filter(|c| c.close_reason().is_none()).cloned()
    }

    pub(crate) fn id(&self) -> EndpointId {
        self.addr.lock().expect("peer lock").id
    }

    pub(crate) fn state(&self) -> ConnectionState {
        if self.live().is_some() {
            return ConnectionState::Connected;
        }
        let backoff = self.backoff.lock().expect("peer lock");
        match (&backoff.last_error, backoff.retry_at) {
            (Some(error), Some(at)) => ConnectionState::Failed {
                error: error.clone(),
                retry_in: at.saturating_duration_since(tokio::time::Instant::now()),
            },
            _ if self.current.lock().expect("peer lock").is_some() => ConnectionState::Closed,
            _ => ConnectionState::Idle,
        }
    }

    /// Refuses to dial again before the backoff after a failure has passed: a dead peer then costs
    /// callers nothing, and Dual mode falls back at once.
    fn check_backoff(&self) -> Result<(), Status> {
        let backoff = self.backoff.lock().expect("peer lock");
        match backoff.retry_at {
            Some(at) if tokio::time::Instant::now() < at => Err(Status::unavailable(format!(
                "Iroh peer {} unreachable ({}); next connect attempt in {:?}",
                self.id(),
                backoff.last_error.as_deref().unwrap_or("unknown error"),
                at - tokio::time::Instant::now()
            ))),
            _ => Ok(()),
        }
    }

    fn record_failure(&self, error: &str) {
        let mut b = self.backoff.lock().expect("peer lock");
        b.failures = b.failures.saturating_add(1);
        let wait = MIN_BACKOFF.saturating_mul(1 << b.failures.min(16).saturating_sub(1)).min(MAX_BACKOFF);
        b.retry_at = Some(tokio::time::Instant::now() + wait);
        b.last_error = Some(error.to_owned());
    }

    pub(crate) async fn connection(&self) -> Result<Connection, Status> {
        if let Some(conn) = self.live() {
            return Ok(conn);
        }
        self.check_backoff()?;
        let _one_at_a_time = self.connecting.lock().await;
        if let Some(conn) = self.live() {
            return Ok(conn);
        }
        self.check_backoff()?;
        let addr = self.addr.lock().expect("peer lock").clone();
        let id = addr.id;
        metrics::connect_attempt(Transport::Iroh);
        let conn = match tokio::time::timeout(self.connect_timeout, self.endpoint.connect(addr, ALPN)).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => {
                metrics::connect_error(Transport::Iroh, "connect");
                self.record_failure(&e.to_string());
                return Err(Status::unavailable(format!("cannot connect to {id} over Iroh: {e}")));
            }
            Err(_) => {
                metrics::connect_error(Transport::Iroh, "timeout");
                self.record_failure("connect timed out");
                return Err(Status::unavailable(format!(
                    "connecting to {id} over Iroh timed out after {:?}",
                    self.connect_timeout
                )));
            }
        };
        *self.backoff.lock().expect("peer lock") = Backoff::default();
        metrics::connection_opened(Transport::Iroh);
        let watched = conn.clone();
        tokio::spawn(async move {
            watched.closed().await;
            metrics::connection_closed(Transport::Iroh);
        });
        *self.current.lock().expect("peer lock") = Some(conn.clone());
        Ok(conn)
    }
}
