//! The transport-agnostic client channel: what every generated client calls through.

use std::fmt;
use std::sync::Arc;

mod adaptive;
mod breaker;
mod dual;

use futures_util::Stream;
use iroh::EndpointAddr;
use tonic::transport::Channel as TonicChannel;

pub use breaker::BreakerState;
use dual::Dual;

pub use crate::call::{CallOptions, Transport};
use crate::codec::Message;
use crate::config::{Mode, TransportConfig};
use crate::deadline::Deadline;
use crate::error::Error;
use crate::iroh::connector::PeerSlot;
use crate::iroh::{Connector, Failure, InFlight};
use crate::method::MethodDesc;
use crate::middleware::{CallInfo, CallService, Check, Plan, Stack};
use crate::observe::{measured, traced};
use crate::peer_addr::PeerAddr;
use crate::streaming::Streaming;
use tonic::Request;
use tonic::Response;
use tonic::Status;

/// The body every call shape of [`Channel`] shares: the call's span and trace context, then the
/// channel's middleware once, above the choice of transport. A macro, not a generic helper: a helper
/// taking the call as a closure made every call's future twice as large.
macro_rules! through_channel {
    ($channel:ident, $req:ident, $desc:ident, $opts:ident, $shape:ident) => {{
        let ($req, span) = $channel.outgoing($req, $desc);
        // Built in place: a future held in a local and then moved is stored twice.
        traced(span, async {
            let req = match $channel.stack.plan() {
                Plan::Empty => $req,
                Plan::Checks(checks) => checked(checks, $req, $desc).await?,
                Plan::Layers(checks, stack) => {
                    let (route, opts) = ($channel.route.clone(), $opts.clone());
                    let through = through_stack(checks, stack, $req, $desc, move |req| async move {
                        route.$shape(req, $desc, &opts).await
                    });
                    // Boxed, as the call's own future below: one large future per call, not two.
                    return Box::pin(through).await;
                }
            };
            $channel.route.$shape(req, $desc, $opts).await
        })
        .await
    }};
}

/// The body every call shape of [`Route`] shares: the call's one deadline, computed here and passed
/// down to whichever transport carries it. A macro for the reason `through_channel!` is one.
macro_rules! route {
    ($route:ident, $req:ident, $desc:ident, $opts:ident, $shape:ident) => {{
        let deadline = Deadline::of($req.metadata(), $opts.timeout);
        match $route {
            // Boxed: tonic's call future is kilobytes, and every Iroh call would carry room for it.
            Route::Grpc(ch) => {
                Box::pin(measured(
                    $desc,
                    Transport::Grpc,
                    "channel",
                    crate::grpc::$shape(ch, $req, $desc, $opts, deadline),
                ))
                .await
            }
            Route::Iroh(slot) => {
                on_iroh(slot, $desc, deadline, |s| crate::iroh::$shape(s, $req, $desc, $opts, deadline)).await
            }
            // Not boxed: a Dual call boxes its gRPC part, so it is about as large as an Iroh call.
            Route::Dual(d) => d.$shape($req, $desc, $opts, deadline).await,
        }
    }};
}

/// A client's way to a peer: over gRPC, over Iroh, or both (Dual) with the migration strategy choosing
/// per call.
///
/// Cheap to clone; clones share the underlying HTTP/2 or QUIC connection and, in Dual mode, the circuit
/// breaker and adaptive estimates of the peer.
///
/// ```no_run
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// // gRPC, like tonic's `Channel`:
/// let grpc = duet::Channel::connect_grpc("http://127.0.0.1:7001").await?;
/// // Iroh, through a connector that keeps one connection per peer:
/// let endpoint = duet::iroh::endpoint::bind_loopback().await?;
/// let connector = duet::iroh::Connector::new(endpoint);
/// let peer: duet::PeerAddr = "duet:grpc=127.0.0.1:7001".parse()?;
/// # let peer_iroh: iroh::EndpointAddr = unimplemented!();
/// let iroh = duet::Channel::iroh(&connector, peer_iroh);
/// // Whatever the config says, with fallback:
/// let cfg = duet::Config::from_toml("[transport]\nmode = \"dual\"")?;
/// let dual = duet::Channel::from_config(&cfg.transport, &connector, &peer)?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Channel {
    route: Route,
    stack: Stack,
}

#[derive(Clone)]
enum Route {
    Grpc(TonicChannel),
    Iroh(Arc<PeerSlot>),
    Dual(Arc<Dual>),
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.route {
            Route::Grpc(_) => f.write_str("Channel(grpc)"),
            Route::Iroh(slot) => write!(f, "Channel(iroh {})", slot.id()),
            Route::Dual(d) => write!(f, "Channel(dual, iroh {})", d.iroh.id()),
        }
    }
}

/// A call's stream on a live connection, and the mark that keeps the connection watched while the
/// call waits.
pub(crate) struct Opened {
    pub streams: (iroh::endpoint::SendStream, iroh::endpoint::RecvStream),
    pub watch: InFlight,
}

/// Connects (or reuses the connection) and opens the call's stream, within the call's deadline: a
/// deadline that passes here is the call's final answer, not a reason to try elsewhere. With `wait`
/// false, a peer known to be unreachable is not waited for (see [`PeerSlot::connection`]).
async fn iroh_connect(slot: &PeerSlot, deadline: Deadline, wait: bool) -> Result<Opened, Failure> {
    deadline
        .bound(
            async {
                let c = slot.connection(wait).await.map_err(Failure::NotSent)?;
                let streams = crate::iroh::open_stream(&c.conn).await?;
                Ok(Opened { streams, watch: c.watch })
            },
            Failure::Answered,
        )
        .await
}

/// A transport failure on a connection its watcher declared dead says so, rather than what QUIC
/// reports of a connection closed locally.
pub(crate) fn explain(failure: Failure, watch: &InFlight) -> Failure {
    let Some(reason) = watch.dead() else { return failure };
    let status = || Status::unavailable(format!("the Iroh connection to the peer was declared dead: {reason}"));
    match failure {
        Failure::Lost(_) => Failure::Lost(status()),
        Failure::NotSent(_) => Failure::NotSent(status()),
        answered => answered,
    }
}

impl Channel {
    /// Wraps a tonic channel (with whatever TLS, timeouts and keep-alive it was built with).
    pub fn from_tonic(channel: TonicChannel) -> Self {
        Self { route: Route::Grpc(channel), stack: Stack::default() }
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
        Self { route: Route::Iroh(connector.slot(addr)), stack: Stack::default() }
    }

    /// A Dual channel: every call goes over gRPC or Iroh as `config`'s migration strategy says, with
    /// fallback, a circuit breaker on Iroh, and adaptive choice where configured.
    pub fn dual(grpc: TonicChannel, connector: &Connector, addr: EndpointAddr, config: &TransportConfig) -> Self {
        Self { route: Route::Dual(Arc::new(Dual::new(grpc, connector.slot(addr), config))), stack: Stack::default() }
    }

    /// A gRPC channel to `peer`'s gRPC address with `config`'s `[transport.grpc]` settings (TLS if
    /// `tls_enabled`), whatever `transport.mode` says: for peers known only by their gRPC address, and
    /// for nodes without an Iroh endpoint. Connects lazily.
    pub fn grpc_from_config(config: &TransportConfig, peer: &PeerAddr) -> Result<Self, Error> {
        config.validate()?;
        Ok(Self::from_tonic(grpc_endpoint(config, peer)?))
    }

    /// The channel the config asks for, to `peer`: gRPC, Iroh or Dual by `transport.mode`, with TLS to
    /// the gRPC port if `grpc.tls_enabled` (see [`crate::tls`]). Connects lazily. Fails if the peer
    /// lacks an address the mode needs, or a TLS file cannot be used.
    pub fn from_config(config: &TransportConfig, connector: &Connector, peer: &PeerAddr) -> Result<Self, Error> {
        config.validate()?;
        let grpc = || grpc_endpoint(config, peer);
        let iroh = || peer.iroh.clone().ok_or_else(|| Error::PeerAddr(format!("{peer} has no Iroh address")));
        Ok(match config.mode {
            Mode::Grpc => Self::from_tonic(grpc()?),
            Mode::Iroh => Self::iroh(connector, iroh()?),
            Mode::Dual => Self::dual(grpc()?, connector, iroh()?, config),
        })
    }

    /// The transport this channel uses; `None` for a Dual channel, which picks per call.
    pub fn transport(&self) -> Option<Transport> {
        match self.route {
            Route::Grpc(_) => Some(Transport::Grpc),
            Route::Iroh(_) => Some(Transport::Iroh),
            Route::Dual(_) => None,
        }
    }

    /// The state of a Dual channel's circuit breaker on Iroh (`None` for other channels).
    pub fn iroh_breaker(&self) -> Option<BreakerState> {
        match &self.route {
            Route::Dual(d) => Some(d.breaker.state()),
            _ => None,
        }
    }

    /// The transport adaptive routing currently prefers for a service (by config name) on a Dual
    /// channel; `None` before its first call or for other channels.
    pub fn adaptive_choice(&self, service: &str) -> Option<Transport> {
        match &self.route {
            Route::Dual(d) => d.adaptive_choice(service),
            _ => None,
        }
    }

    /// Adds a tower layer around every call made through this channel (and its clones made after),
    /// whatever transport carries it (see [`crate::middleware`] for what a layer sees). It runs
    /// once per call, above the choice of transport: a Dual call that falls back from Iroh to gRPC
    /// passes through it once, and the response's extensions name the transport that answered.
    /// Layers run in the order added: the first is the outermost.
    pub fn layer<L>(mut self, layer: L) -> Self
    where
        L: tower::Layer<CallService> + Send + Sync + 'static,
        L::Service: tower::Service<Request<()>, Response = Response<()>> + Clone + Send + Sync + 'static,
        <L::Service as tower::Service<Request<()>>>::Error: Into<crate::middleware::BoxError>,
        <L::Service as tower::Service<Request<()>>>::Future: Send + 'static,
    {
        self.stack.push(layer);
        self
    }

    /// Adds an interceptor in tonic's shape, run on every call's head before it leaves, on every
    /// transport; an `Err` fails the call with that status and nothing is sent.
    ///
    /// ```
    /// # fn f(channel: duet::Channel) {
    /// let channel = channel.interceptor(|mut req: duet::Request<()>| {
    ///     req.metadata_mut().insert("authorization", "Bearer secret".parse().unwrap());
    ///     Ok(req)
    /// });
    /// # }
    /// ```
    pub fn interceptor<F>(mut self, f: F) -> Self
    where
        F: Fn(Request<()>) -> Result<Request<()>, Status> + Send + Sync + 'static,
    {
        self.stack.push_check(Arc::new(f));
        self
    }

    /// Adds an interceptor that may wait (fetching a token, say), run on every call's head before
    /// it leaves, on every transport.
    pub fn async_interceptor<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(Request<()>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Request<()>, Status>> + Send + 'static,
    {
        self.stack.push_async_check(Arc::new(move |req| Box::pin(f(req))));
        self
    }

    /// A unary call. Generated clients call this; you rarely need to.
    pub async fn unary<Req: Message, Resp: Message>(
        &self,
        req: Request<Req>,
        desc: &'static MethodDesc,
        opts: &CallOptions,
    ) -> Result<Response<Resp>, Status> {
        through_channel!(self, req, desc, opts, unary)
    }

    /// A server-streaming call. Generated clients call this.
    pub async fn server_streaming<Req: Message, Resp: Message>(
        &self,
        req: Request<Req>,
        desc: &'static MethodDesc,
        opts: &CallOptions,
    ) -> Result<Response<Streaming<Resp>>, Status> {
        through_channel!(self, req, desc, opts, server_streaming)
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
        through_channel!(self, req, desc, opts, client_streaming)
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
        through_channel!(self, req, desc, opts, bidi)
    }

    /// A call's `duet.call` span, and its request with the trace context it goes out with.
    fn outgoing<B>(&self, req: Request<B>, desc: &'static MethodDesc) -> (Request<B>, tracing::Span) {
        let span = tracing::debug_span!(
            "duet.call",
            path = desc.path,
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty
        );
        let enabled = !span.is_disabled();
        let (mut md, ext, body) = req.into_parts();
        if let Some(ctx) = crate::middleware::trace::outgoing(&mut md, &ext, enabled)
            && enabled
        {
            span.record("trace_id", tracing::field::display(format_args!("{:032x}", ctx.trace_id)));
            span.record("span_id", tracing::field::display(format_args!("{:016x}", ctx.span_id)));
        }
        (Request::from_parts(md, ext, body), span)
    }
}

/// Runs the channel's interceptors on a call's head; the body waits aside.
async fn checked<B>(checks: &[Check], req: Request<B>, desc: &'static MethodDesc) -> Result<Request<B>, Status> {
    let (metadata, mut extensions, body) = req.into_parts();
    extensions.insert(CallInfo { path: desc.path.into(), transport: None });
    let head = crate::middleware::check(checks, Request::from_parts(metadata, extensions, ())).await?;
    let (metadata, extensions, ()) = head.into_parts();
    Ok(Request::from_parts(metadata, extensions, body))
}

/// Runs a client call's head through the channel's middleware, down to `route`; the request body
/// rides past the layers and the response body comes back the same way.
async fn through_stack<B, R, F, Fut>(
    checks: &[Check],
    stack: &CallService,
    req: Request<B>,
    desc: &'static MethodDesc,
    route: F,
) -> Result<Response<R>, Status>
where
    B: Send + 'static,
    R: Send + 'static,
    F: FnOnce(Request<B>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Response<R>, Status>> + Send + 'static,
{
    let (metadata, mut extensions, body) = req.into_parts();
    extensions.insert(CallInfo { path: desc.path.into(), transport: None });
    let head = Request::from_parts(metadata, extensions, ());
    let (head, body) = crate::middleware::run(checks, stack.clone(), head, move |head| async move {
        let (metadata, extensions, ()) = head.into_parts();
        let (metadata, body, extensions) = route(Request::from_parts(metadata, extensions, body)).await?.into_parts();
        Ok((Response::from_parts(metadata, (), extensions), body))
    })
    .await?;
    let (metadata, (), extensions) = head.into_parts();
    Ok(Response::from_parts(metadata, body, extensions))
}

impl Route {
    async fn unary<Req: Message, Resp: Message>(
        &self,
        req: Request<Req>,
        desc: &'static MethodDesc,
        opts: &CallOptions,
    ) -> Result<Response<Resp>, Status> {
        route!(self, req, desc, opts, unary)
    }

    async fn server_streaming<Req: Message, Resp: Message>(
        &self,
        req: Request<Req>,
        desc: &'static MethodDesc,
        opts: &CallOptions,
    ) -> Result<Response<Streaming<Resp>>, Status> {
        route!(self, req, desc, opts, server_streaming)
    }

    async fn client_streaming<S, Req, Resp>(
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
        route!(self, req, desc, opts, client_streaming)
    }

    async fn bidi<S, Req, Resp>(
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
        route!(self, req, desc, opts, bidi)
    }
}

/// An Iroh-only call: connect (or reuse), open a stream, run `call` on it. The connection and the
/// call share the call's deadline, so connecting comes off what the server is given.
async fn on_iroh<T, F, Fut>(
    slot: &PeerSlot,
    desc: &'static MethodDesc,
    deadline: Deadline,
    call: F,
) -> Result<T, Status>
where
    F: FnOnce((iroh::endpoint::SendStream, iroh::endpoint::RecvStream)) -> Fut,
    Fut: Future<Output = Result<T, Failure>>,
{
    measured(desc, Transport::Iroh, "channel", async {
        let Opened { streams, watch } = iroh_connect(slot, deadline, true).await.map_err(Failure::into_status)?;
        call(streams).await.map_err(|f| explain(f, &watch).into_status())
    })
    .await
}

fn grpc_endpoint(config: &TransportConfig, peer: &PeerAddr) -> Result<TonicChannel, Error> {
    let addr = peer.grpc.ok_or_else(|| Error::PeerAddr(format!("{peer} has no gRPC address")))?;
    let mut endpoint = match config.grpc.client_tls()? {
        Some(tls) => tonic::transport::Endpoint::from_shared(format!("https://{addr}"))?.tls_config(tls)?,
        None => tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?,
    };
    let grpc = &config.grpc;
    if let Some(interval) = grpc.http2_keepalive_interval() {
        endpoint = endpoint
            .http2_keep_alive_interval(interval)
            .keep_alive_timeout(grpc.http2_keepalive_timeout())
            .keep_alive_while_idle(true);
    }
    if let Some(timeout) = grpc.connect_timeout() {
        endpoint = endpoint.connect_timeout(timeout);
    }
    Ok(endpoint.tcp_keepalive(grpc.tcp_keepalive()).connect_lazy())
}
