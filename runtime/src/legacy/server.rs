//! Serving plain tonic routes on an ALPN: every accepted bi-stream is handed to one tonic server as a
//! new connection.

use std::fmt;

use iroh::endpoint::Connection;
use iroh::protocol::{AcceptError, ProtocolHandler};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::service::Routes;

use super::io::IrohIo;

/// The protocol handler for one legacy ALPN.
#[derive(Clone)]
pub(crate) struct LegacyProtocol {
    connections: mpsc::Sender<Result<IrohIo, std::io::Error>>,
}

impl fmt::Debug for LegacyProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LegacyProtocol")
    }
}

impl LegacyProtocol {
    /// Starts a tonic server for `routes` fed by the streams this handler accepts.
    pub fn spawn(routes: Routes) -> Self {
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            if let Err(e) = tonic::transport::Server::builder()
                .add_routes(routes)
                .serve_with_incoming(ReceiverStream::new(rx))
                .await
            {
                tracing::warn!(error = %e, "legacy tonic server over Iroh stopped");
            }
        });
        Self { connections: tx }
    }
}

impl ProtocolHandler for LegacyProtocol {
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        let peer = conn.remote_id();
        while let Ok((send, recv)) = conn.accept_bi().await {
            if self.connections.send(Ok(IrohIo::new(send, recv, peer))).await.is_err() {
                break;
            }
        }
        Ok(())
    }
}
