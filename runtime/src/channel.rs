//! The transport-agnostic client channel: what every generated client calls through.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;
use iroh::EndpointAddr;
use tonic::transport::Channel as TonicChannel;

use crate::codec::Message;
use crate::iroh::Connector;
use crate::iroh::connector::PeerSlot;
use crate::limits::Limits;
use crate::method::MethodDesc;
use crate::{Error, Request, Response, Status, Streaming};

/// Which transport carried a call. Every response from a duet client carries it in its extensions:
///
/// ```
/// # fn f(resp: duet::Response<()>) {
/// let transport = resp.extensions().get::<duet::Transport>();
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    /// Stock gRPC: HTTP/2 over TCP, through tonic.
    Grpc,
    /// duet's native wire over an Iroh QUIC connection.
    Iroh,
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Grpc => "grpc",
            Transport::Iroh => "iroh",
        })
    }
}

/// Per-client settings applied to every call (generated clients expose them as builder methods).
#[derive(Debug, Clone, Default)]
pub struct CallOptions {
    /// Default deadline of every call; a shorter `grpc-timeout` on a request wins.
    pub timeout: Option<Duration>,
    /// Message size limits.
    pub limits: Limits,
}

/// A client's way to a peer: over gRPC, or over Iroh.
///
/// Cheap to clone; clones share the underlying HTTP/2 or QUIC connection.
///
/// ```no_run
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// // gRPC, like tonic's `Channel`:
/// let grpc = duet::Channel::connect_grpc("http://127.0.0.1:7001").await?;
/// // Iroh, through a connector that keeps one connection per peer:
/// let endpoint = duet::iroh::endpoint::bind_loopback().await?;
/// let connector = duet::iroh::Connector::new(endpoint);
/// # let peer: iroh::EndpointAddr = unimplemented!();
/// let iroh = duet::Channel::iroh(&connector, peer);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Channel {
    route: Route,
}

#[derive(Clone)]
enum Route {
    Grpc(TonicChannel),
    Iroh(Arc<PeerSlot>),
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.route {
            Route::Grpc(_) => f.write_str("Channel(grpc)"),
            Route::Iroh(slot) => write!(f, "Channel(iroh {})", slot.id()),
        }
    }
}

impl Channel {
    /// Wraps a tonic channel (with whatever TLS, timeouts and keep-alive it was built with).
    pub fn from_tonic(channel: TonicChannel) -> Self {
        Self { route: Route::Grpc(channel) }
    }

    /// Connects over gRPC to `uri` (`http://host:port`).
    pub async fn connect_grpc(uri: impl Into<String>) -> Result<Self, Error> {
        let channel = tonic::transport::Endpoint::from_shared(uri.into())?.connect().await?;
        Ok(Self::from_tonic(channel))
    }

    /// A gRPC channel to `uri` that connects on first use.
    pub fn grpc_lazy(uri: impl Into<String>) -> Result<Self, Error> {
        Ok(Self::from_tonic(tonic::transport::Endpoint::from_shared(uri.into())?.connect_lazy()))
    }

    /// A channel to the Iroh peer at `addr`, through `connector` (which dials lazily and shares one
    /// connection per peer among all its channels).
    pub fn iroh(connector: &Connector, addr: EndpointAddr) -> Self {
        Self { route: Route::Iroh(connector.slot(addr)) }
    }

    /// The transport this channel uses.
    pub fn transport(&self) -> Transport {
        match self.route {
            Route::Grpc(_) => Transport::Grpc,
            Route::Iroh(_) => Transport::Iroh,
        }
    }

    /// A unary call. Generated clients call this; you rarely need to.
    pub async fn unary<Req: Message, Resp: Message>(
        &self,
        req: Request<Req>,
        desc: &'static MethodDesc,
        opts: &CallOptions,
    ) -> Result<Response<Resp>, Status> {
        match &self.route {
            Route::Grpc(ch) => crate::grpc::unary(ch, req, desc, opts).await,
            Route::Iroh(slot) => crate::iroh::unary(slot.connection().await?, req, desc, opts).await,
        }
    }

    /// A server-streaming call. Generated clients call this.
    pub async fn server_streaming<Req: Message, Resp: Message>(
        &self,
        req: Request<Req>,
        desc: &'static MethodDesc,
        opts: &CallOptions,
    ) -> Result<Response<Streaming<Resp>>, Status> {
        match &self.route {
            Route::Grpc(ch) => crate::grpc::server_streaming(ch, req, desc, opts).await,
            Route::Iroh(slot) => crate::iroh::server_streaming(slot.connection().await?, req, desc, opts).await,
        }
    }

    /// A client-streaming call. Generated clients call this.
    pub async fn client_streaming<S, Req, Resp>(
        &self,
        req: Request<S>,
        desc: &'static MethodDesc,
        opts: &CallOptions,
    ) -> Result<Response<Resp>, Status>
    where
        S: Stream<Item = Req> + Send + 'static,
        Req: Message,
        Resp: Message,
    {
        match &self.route {
            Route::Grpc(ch) => crate::grpc::client_streaming(ch, req, desc, opts).await,
            Route::Iroh(slot) => crate::iroh::client_streaming(slot.connection().await?, req, desc, opts).await,
        }
    }

    /// A bidi-streaming call. Generated clients call this.
    pub async fn bidi<S, Req, Resp>(
        &self,
        req: Request<S>,
        desc: &'static MethodDesc,
        opts: &CallOptions,
    ) -> Result<Response<Streaming<Resp>>, Status>
    where
        S: Stream<Item = Req> + Send + 'static,
        Req: Message,
        Resp: Message,
    {
        match &self.route {
            Route::Grpc(ch) => crate::grpc::bidi(ch, req, desc, opts).await,
            Route::Iroh(slot) => crate::iroh::bidi(slot.connection().await?, req, desc, opts).await,
        }
    }
}
