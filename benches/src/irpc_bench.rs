//! The closest peer as a contender: n0's irpc over iroh (postcard messages, one QUIC stream per
//! request), serving the same echo, stream and count handlers as the others, on an endpoint with
//! duet's QUIC settings.
//!
//! The server is irpc's own pattern: `irpc_iroh::IrohProtocol` forwards each request to an actor,
//! which spawns a task per request (as irpc's `compute` example does), so calls run concurrently as
//! they do on duet's server.
//!
//! One setting differs: the server's connection receive window is unlimited (noq's default) instead
//! of duet's 16 MiB. irpc's accept loop reads each request whole before it accepts the next stream,
//! so with a bounded window, requests that together exceed it stall the connection for good: the
//! unread streams hold the whole window and the one being read cannot get more (16 callers of 1 MiB
//! did, every time). The window does not change what a small call costs.

use bytes::Bytes;
use iroh::endpoint::Connection;
use irpc::channel::{mpsc, oneshot};
use irpc::{WithChannels, rpc_requests};
use serde::{Deserialize, Serialize};

use crate::contenders::Error;
use crate::services::chunk_lengths;

/// The ALPN the irpc contender serves.
pub const ALPN: &[u8] = b"duet-bench/irpc/1";

/// One message's bytes: the echo's request and reply, and each streamed message.
#[derive(Debug, Serialize, Deserialize)]
pub struct Blob {
    data: Bytes,
}

/// Stream `total` bytes to the caller in `chunk`-byte messages.
#[derive(Debug, Serialize, Deserialize)]
pub struct Download {
    total: u64,
    chunk: u32,
}

/// Count the bytes of the messages the caller streams.
#[derive(Debug, Serialize, Deserialize)]
pub struct Upload;

/// The bench service as an irpc protocol.
#[rpc_requests(message = BenchMessage)]
#[derive(Debug, Serialize, Deserialize)]
pub enum BenchProtocol {
    /// Echo the blob.
    #[rpc(tx = oneshot::Sender<Blob>)]
    Echo(Blob),
    /// Stream bytes to the caller.
    #[rpc(tx = mpsc::Sender<Blob>)]
    Download(Download),
    /// Count the bytes the caller streams.
    #[rpc(tx = oneshot::Sender<u64>, rx = mpsc::Receiver<Blob>)]
    Upload(Upload),
}

/// The server's endpoint: duet's QUIC settings with an unlimited connection receive window (see
/// the module docs).
pub async fn bind_server() -> iroh::Endpoint {
    let config = duet::config::IrohConfig { receive_window: u32::MAX, ..Default::default() };
    duet::iroh::endpoint::loopback_builder()
        .transport_config(duet::iroh::endpoint::transport_config_for(&config))
        .bind()
        .await
        .expect("bind endpoint")
}

/// Starts the actor and returns the protocol handler to mount on a router under [`ALPN`].
pub fn protocol() -> irpc_iroh::IrohProtocol<BenchProtocol> {
    let (tx, mut rx) = mpsc::channel::<BenchMessage>(128);
    tokio::spawn(async move {
        while let Ok(Some(msg)) = rx.recv().await {
            tokio::spawn(handle(msg));
        }
    });
    irpc_iroh::IrohProtocol::with_sender(tx)
}

async fn handle(msg: BenchMessage) {
    match msg {
        BenchMessage::Echo(WithChannels { inner, tx, .. }) => {
            let _ = tx.send(inner).await;
        }
        BenchMessage::Download(WithChannels { inner, tx, .. }) => {
            let data = Bytes::from(vec![7u8; inner.chunk.max(1) as usize]);
            for len in chunk_lengths(inner.total, inner.chunk) {
                if tx.send(Blob { data: data.slice(..len) }).await.is_err() {
                    return;
                }
            }
        }
        BenchMessage::Upload(WithChannels { tx, mut rx, .. }) => {
            let mut total = 0u64;
            while let Ok(Some(blob)) = rx.recv().await {
                total += blob.data.len() as u64;
            }
            let _ = tx.send(total).await;
        }
    }
}

/// irpc's client on one connection.
#[derive(Debug, Clone)]
pub struct Client(irpc::Client<BenchProtocol>);

impl Client {
    /// A client making its requests on `conn`.
    pub fn new(conn: Connection) -> Self {
        Self(irpc::Client::boxed(irpc_iroh::IrohRemoteConnection::new(conn)))
    }

    /// One echo; returns the bytes that came back.
    pub async fn unary(&self, data: Bytes) -> Result<usize, Error> {
        Ok(self.0.rpc(Blob { data }).await.map_err(|e| e.to_string())?.data.len())
    }

    /// Receives `total` bytes in `chunk`-byte messages; returns the bytes received.
    pub async fn download(&self, total: u64, chunk: u32) -> Result<u64, Error> {
        let mut rx = self.0.server_streaming(Download { total, chunk }, 16).await.map_err(|e| e.to_string())?;
        let mut n = 0;
        while let Some(blob) = rx.recv().await.map_err(|e| e.to_string())? {
            n += blob.data.len() as u64;
        }
        Ok(n)
    }

    /// Sends `n` messages of `data`; returns the count the server acknowledged.
    pub async fn upload(&self, data: Bytes, n: u64) -> Result<u64, Error> {
        let (tx, rx) = self.0.client_streaming(Upload, 16).await.map_err(|e| e.to_string())?;
        for _ in 0..n {
            tx.send(Blob { data: data.clone() }).await.map_err(|e| e.to_string())?;
        }
        drop(tx);
        rx.await.map_err(|e| e.to_string())
    }
}
