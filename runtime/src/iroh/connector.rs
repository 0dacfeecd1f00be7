//! One QUIC connection per peer, shared by every client of that peer, reconnected on demand.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use iroh::endpoint::Connection;
use iroh::{Endpoint, EndpointAddr, EndpointId};

use super::ALPN;
use crate::Status;

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
            })
        });
        *slot.addr.lock().expect("peer lock") = addr;
        slot.clone()
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

    pub(crate) async fn connection(&self) -> Result<Connection, Status> {
        if let Some(conn) = self.live() {
            return Ok(conn);
        }
        let _one_at_a_time = self.connecting.lock().await;
        if let Some(conn) = self.live() {
            return Ok(conn);
        }
        let addr = self.addr.lock().expect("peer lock").clone();
        let id = addr.id;
        let conn = match tokio::time::timeout(self.connect_timeout, self.endpoint.connect(addr, ALPN)).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => return Err(Status::unavailable(format!("cannot connect to {id} over Iroh: {e}"))),
            Err(_) => {
                return Err(Status::unavailable(format!(
                    "connecting to {id} over Iroh timed out after {:?}",
                    self.connect_timeout
                )));
            }
        };
        *self.current.lock().expect("peer lock") = Some(conn.clone());
        Ok(conn)
    }
}
