//! The legacy bridge: plain tonic services (built by tonic's own generator, not by duet) served and
//! called over Iroh, with gRPC's HTTP/2 carried on a QUIC bidirectional stream.
//!
//! Each legacy service set gets its own ALPN and is mounted on the same endpoint as duet's native
//! services ([`crate::Server::legacy`]); a plain tonic client reaches it through a
//! `tonic::transport::Channel` from [`channel`]. HTTP/2 framing stays in h2, where it belongs: this
//! module only hands tonic a byte stream. One QUIC stream carries one HTTP/2 connection; when it breaks,
//! tonic reconnects through the connector, which opens a new stream (and a new QUIC connection if the
//! old one closed).
//!
//! The native wire is faster (no HTTP/2 layer, one stream per call); the bridge is for services not yet
//! regenerated with duet.

mod client;
mod io;
mod server;

pub use client::channel;
pub use io::{IrohConnectInfo, IrohIo};
pub(crate) use server::LegacyProtocol;
