//! Who called: the handler's view of the remote peer on either transport.

use std::net::SocketAddr;

use iroh::EndpointId;

use tonic::Request;

/// The remote end of a call, as a handler sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Peer {
    /// An Iroh endpoint: its id is its public key, proven by the QUIC handshake.
    Iroh(EndpointId),
    /// A gRPC client: its TCP address, when the listener knows it.
    Grpc(Option<SocketAddr>),
}

/// Request extension set by duet's Iroh server.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IrohPeer(pub EndpointId);

/// Reads the caller's identity from a request, on either transport.
///
/// ```
/// use duet::{Peer, RequestExt};
/// let req = duet::Request::new(());
/// // A request built locally came from no network peer.
/// assert_eq!(req.peer(), Peer::Grpc(None));
/// ```
pub trait RequestExt {
    /// The caller of this request.
    fn peer(&self) -> Peer;
}

impl<T> RequestExt for Request<T> {
    fn peer(&self) -> Peer {
        match self.extensions().get::<IrohPeer>() {
            Some(IrohPeer(id)) => Peer::Iroh(*id),
            None => Peer::Grpc(self.remote_addr()),
        }
    }
}
