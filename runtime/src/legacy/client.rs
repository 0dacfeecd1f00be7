//! A `tonic::transport::Channel` whose connections are QUIC streams to an Iroh peer.

use std::sync::{Arc, Mutex};

use hyper_util::rt::TokioIo;
use iroh::endpoint::Connection;
use iroh::{Endpoint, EndpointAddr};
use tonic::transport::{Channel, Uri};

use super::io::IrohIo;

/// A lazy tonic channel to the legacy service set on `alpn` at `peer`, for tonic's own generated
/// clients (`MyServiceClient::new(channel)`).
///
/// Each HTTP/2 connection tonic makes is a new bi-stream on one shared QUIC connection, remade if it
/// closed; tonic's reconnect logic drives it, so a restarted peer is reached again on the next call.
///
/// ```no_run
/// # async fn f(endpoint: iroh::Endpoint, peer: iroh::EndpointAddr) {
/// let channel = duet::legacy::channel(endpoint, peer, b"legacy/my.Service/1".to_vec());
/// // let mut client = my_service_client::MyServiceClient::new(channel);
/// # }
/// ```
pub fn channel(endpoint: Endpoint, peer: EndpointAddr, alpn: Vec<u8>) -> Channel {
    let shared: Arc<Mutex<Option<Connection>>> = Arc::default();
    let connector = tower::service_fn(move |_: Uri| {
        let (endpoint, peer, alpn, shared) = (endpoint.clone(), peer.clone(), alpn.clone(), shared.clone());
        async move {
            let live = shared.lock().expect("legacy lock").clone().filter(|c| c.close_reason().is_none());
            let conn = match live {
                Some(c) => c,
                None => {
                    let c = endpoint.connect(peer, &alpn).await.map_err(std::io::Error::other)?;
                    *shared.lock().expect("legacy lock") = Some(c.clone());
                    c
                }
            };
            let (send, recv) = conn.open_bi().await.map_err(std::io::Error::other)?;
            Ok::<_, std::io::Error>(TokioIo::new(IrohIo::new(send, recv, conn.remote_id())))
        }
    });
    // The URI is never dialled: the connector decides where bytes go.
    tonic::transport::Endpoint::from_static("http://iroh.invalid").connect_with_connector_lazy(connector)
}
