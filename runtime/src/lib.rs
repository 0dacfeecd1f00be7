#![doc = include_str!("../../README.md")]
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod bytes_field;
mod call;
mod channel;
mod codec;
pub mod compression;
pub mod config;
mod deadline;
mod error;
mod grpc;
mod limits;
mod metadata_wire;
mod method;
pub mod metrics;
pub mod middleware;
mod observe;
mod peer;
mod peer_addr;
pub mod routing;
mod server;
mod streaming;
pub mod tls;
mod trailers;

pub mod iroh;
pub mod legacy;
pub mod well_known;

pub use call::{CallOptions, MAX_STATUS_MESSAGE_BYTES, Transport};
pub use channel::{BreakerState, Channel};
pub use codec::{Message, WireCodec};
pub use compression::{Compression, CompressionEncoding};
pub use config::{Config, ConfigError, Mode, RaftTransport, ServiceRoute, TransportConfig};
pub use error::Error;
pub use limits::{DEFAULT_MAX_DECODING_MESSAGE_SIZE, Limits};
pub use method::{MethodDesc, MethodKind};
pub use peer::{Peer, RequestExt};
pub use peer_addr::{PeerAddr, PeerAddrParseError};
pub use server::{DEFAULT_MAX_CONCURRENT_CALLS, DEFAULT_SHUTDOWN_GRACE, Server, ServerHandle, Service};
pub use streaming::{BoxStream, Streaming};
pub use trailers::Trailers;

/// The `bytes` crate generated messages use for `bytes` fields (`duet::bytes::Bytes`), so a user's crate
/// needs no dependency of its own to build one.
pub use bytes;
/// tonic's request, response, status and metadata types, used unchanged so tonic code ports as is.
pub use tonic::{Code, IntoRequest, IntoStreamingRequest, Request, Response, Status, metadata};

/// Includes the code `duet-codegen` generated for a proto package, from `OUT_DIR`.
///
/// ```ignore
/// pub mod pb {
///     duet::include_proto!("node.v1");
/// }
/// ```
#[macro_export]
macro_rules! include_proto {
    ($package:tt) => {
        include!(concat!(env!("OUT_DIR"), concat!("/", $package, ".rs")));
    };
}

/// Includes every package `duet-codegen` generated, nested in modules named after the packages, so
/// packages that import one another resolve (`super::super::other::v1::Msg`).
///
/// ```ignore
/// pub mod pb {
///     duet::include_protos!();
/// }
/// // pb::node::v1::HealthClient, pb::other::v1::...
/// ```
#[macro_export]
macro_rules! include_protos {
    () => {
        include!(concat!(env!("OUT_DIR"), "/_duet_includes.rs"));
    };
}

/// What generated code refers to, so a user's crate needs only `duet` as a dependency. Not a
/// stable API.
#[doc(hidden)]
pub mod __codegen {
    pub use futures_util::future::BoxFuture;

    pub use crate::iroh::server::{IrohService, ServerCall};

    /// The fingerprint every method of a service using the protobuf codec on Iroh carries: protobuf
    /// tolerates schema change, so there is nothing to compare.
    pub const PROTOBUF_FINGERPRINT: u64 = 0x7072_6f74_6f62_7566; // "protobuf"
    pub use prost;
    pub use serde;
    pub use tonic;
    pub use tonic_prost;

    /// Serving a generated service's gRPC side, one function per call shape.
    pub mod grpc {
        pub use crate::grpc::handler::*;
    }

    use futures_util::{Stream, StreamExt};

    use crate::{BoxStream, Response, Status};

    /// `#[duet::service]`: a handler's `impl Stream` response, boxed.
    pub async fn box_stream<T, S>(
        fut: impl Future<Output = Result<Response<S>, Status>>,
    ) -> Result<Response<BoxStream<T>>, Status>
    where
        S: Stream<Item = Result<T, Status>> + Send + 'static,
    {
        fut.await.map(|r| r.map(|s| Box::pin(s) as BoxStream<T>))
    }

    /// `#[duet::service]`: a handler's `Vec` response, as a stream.
    pub async fn box_vec<T: Send + 'static>(
        fut: impl Future<Output = Result<Response<Vec<T>>, Status>>,
    ) -> Result<Response<BoxStream<T>>, Status> {
        fut.await.map(|r| r.map(|v| Box::pin(futures_util::stream::iter(v).map(Ok)) as BoxStream<T>))
    }

    /// `#[duet::service]`: a handler's channel receiver response, as a stream.
    pub async fn box_receiver<T: Send + 'static>(
        fut: impl Future<Output = Result<Response<tokio::sync::mpsc::Receiver<Result<T, Status>>>, Status>>,
    ) -> Result<Response<BoxStream<T>>, Status> {
        fut.await.map(|r| r.map(|rx| Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)) as BoxStream<T>))
    }

    /// `#[duet::service]`: a handler's unbounded channel receiver response, as a stream.
    pub async fn box_unbounded_receiver<T: Send + 'static>(
        fut: impl Future<Output = Result<Response<tokio::sync::mpsc::UnboundedReceiver<Result<T, Status>>>, Status>>,
    ) -> Result<Response<BoxStream<T>>, Status> {
        fut.await
            .map(|r| r.map(|rx| Box::pin(tokio_stream::wrappers::UnboundedReceiverStream::new(rx)) as BoxStream<T>))
    }
}

/// Attribute macro for service impls: see [`duet_macros::service`].
pub use duet_macros::service;
