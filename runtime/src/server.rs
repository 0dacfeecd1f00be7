//! Serving one set of service impls on a gRPC listener and an Iroh endpoint at once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use iroh::protocol::Router;
use iroh::{Endpoint, EndpointAddr};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::service::RoutesBuilder;
use tonic::transport::server::TcpIncoming;

use crate::error::Error;
use crate::iroh::{ALPN, DuetProtocol, IrohService};
use crate::limits::Limits;
use crate::middleware::{CallService, Stack};

/// Default limit of calls in flight on one connection (one HTTP/2 connection or one QUIC connection);
/// further calls wait for a slot.
pub const DEFAULT_MAX_CONCURRENT_CALLS: u32 = 256;

/// Default time in-flight calls get to finish when a server shuts down.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// A service that duet can serve on both transports. `duet-codegen` implements it for every generated
/// `<Service>Server<T>`.
pub trait Service: Send + Sync + 'static {
    /// The fully qualified proto name, `pkg.Service`.
    fn name(&self) -> &'static str;
    /// The service's methods.
    fn methods(&self) -> &'static [crate::method::MethodDesc];
    /// Adds the tonic service to a gRPC router, with the server's limits and compression.
    fn add_grpc(&self, routes: &mut RoutesBuilder, limits: &Limits, compression: &crate::compression::Compression);
    /// The dispatcher for the Iroh wire; `None` for a service generated without Iroh stubs.
    fn iroh(&self) -> Option<Arc<dyn IrohService>>;
}

enum GrpcListen {
    Addr(SocketAddr),
    Listener(TcpListener),
}

/// Serves service impls over gRPC, Iroh, or both.
///
/// ```no_run
/// # async fn f(health: impl duet::Service) -> Result<(), Box<dyn std::error::Error>> {
/// let endpoint = duet::iroh::endpoint::bind_loopback().await?;
/// let server = duet::Server::builder()
///     .grpc("127.0.0.1:0".parse()?)
///     .iroh(endpoint)
///     .add_service(health)
///     .serve()
///     .await?;
/// println!("gRPC on {:?}, Iroh at {:?}", server.grpc_addr(), server.iroh_addr());
/// server.shutdown().await;
/// # Ok(()) }
/// ```
pub struct Server {
    grpc: Option<GrpcListen>,
    grpc_tls: Option<tonic::transport::ServerTlsConfig>,
    iroh: Option<Endpoint>,
    /// Bind the endpoint from this config at `serve` if none was given.
    iroh_config: Option<crate::config::IrohConfig>,
    legacy: Vec<(Vec<u8>, tonic::service::Routes)>,
    access: crate::iroh::AccessControl,
    header_timeout: Duration,
    services: Vec<Box<dyn Service>>,
    /// Plain tonic services, served on the gRPC port only.
    grpc_only: RoutesBuilder,
    limits: Limits,
    grace: Duration,
    max_concurrent_calls: u32,
    stack: Stack,
    compression: crate::compression::Compression,
    keepalive: Keepalive,
}

/// HTTP/2 and TCP keep-alive of the gRPC listener's connections.
#[derive(Debug, Clone, Copy, Default)]
struct Keepalive {
    http2_interval: Option<Duration>,
    http2_timeout: Option<Duration>,
    tcp: Option<Duration>,
}

impl Default for Server {
    fn default() -> Self {
        Self::builder()
    }
}

impl Server {
    /// A server with no transport and no service yet.
    pub fn builder() -> Self {
        Self {
            grpc: None,
            grpc_tls: None,
            iroh: None,
            iroh_config: None,
            legacy: vec![],
            access: Default::default(),
            header_timeout: crate::iroh::DEFAULT_HEADER_TIMEOUT,
            services: vec![],
            grpc_only: RoutesBuilder::default(),
            limits: Limits::default(),
            grace: DEFAULT_SHUTDOWN_GRACE,
            max_concurrent_calls: DEFAULT_MAX_CONCURRENT_CALLS,
            stack: Stack::default(),
            compression: crate::compression::Compression::default(),
            keepalive: Keepalive::default(),
        }
    }

    /// A server set up as `[transport]` says: gRPC on `grpc.bind_address` unless the mode is `iroh`,
    /// Iroh (an endpoint bound from `[transport.iroh]` at `serve`, unless you pass one with
    /// [`Server::iroh`]) unless the mode is `grpc`, `grpc.max_message_size` as the decoding limit
    /// on both, TLS on the gRPC port if `grpc.tls_enabled` (the certificate files are read now, and a
    /// missing or unusable one is an error naming its key), and the Iroh allowlist.
    pub fn from_config(config: &crate::config::TransportConfig) -> Result<Self, Error> {
        config.validate()?;
        let mut server = Self::builder().max_decoding_message_size(config.grpc.max_message_size);
        if config.mode != crate::config::Mode::Iroh {
            server = server.grpc(config.grpc.bind_address);
            server.grpc_tls = config.grpc.server_tls()?;
            server.keepalive = Keepalive {
                http2_interval: config.grpc.http2_keepalive_interval(),
                http2_timeout: Some(config.grpc.http2_keepalive_timeout()),
                tcp: config.grpc.tcp_keepalive(),
            };
        }
        if config.mode != crate::config::Mode::Grpc {
            server.iroh_config = Some(config.iroh.clone());
            server = server.iroh_allowlist(config.iroh.allowed_peer_ids()?);
        }
        Ok(server)
    }

    /// Serves gRPC on a TCP listener bound to `addr` (port 0 picks a free port; see
    /// [`ServerHandle::grpc_addr`]).
    pub fn grpc(mut self, addr: SocketAddr) -> Self {
        self.grpc = Some(GrpcListen::Addr(addr));
        self
    }

    /// Serves gRPC on a listener you bound yourself.
    pub fn grpc_listener(mut self, listener: TcpListener) -> Self {
        self.grpc = Some(GrpcListen::Listener(listener));
        self
    }

    /// Serves the gRPC port over TLS (rustls) instead of plaintext HTTP/2; with
    /// [`ServerTlsConfig::client_ca_root`](crate::tls::ServerTlsConfig::client_ca_root), clients must show a
    /// certificate signed by that CA (mutual TLS). A plaintext client gets a failed connection, never a
    /// call. See [`crate::tls`].
    pub fn grpc_tls(mut self, tls: crate::tls::ServerTlsConfig) -> Self {
        self.grpc_tls = Some(tls);
        self
    }

    /// Serves duet's native wire (ALPN `duet/1`) on an Iroh endpoint.
    pub fn iroh(mut self, endpoint: Endpoint) -> Self {
        self.iroh = Some(endpoint);
        self
    }

    /// Sends an HTTP/2 PING on every gRPC connection this often, closing connections whose PING goes
    /// unanswered for `timeout` (tonic's default: 20 s); default: no keep-alive, as tonic.
    pub fn http2_keepalive(mut self, interval: Duration, timeout: Duration) -> Self {
        self.keepalive.http2_interval = Some(interval);
        self.keepalive.http2_timeout = Some(timeout);
        self
    }

    /// Enables TCP keep-alive on accepted gRPC sockets after `idle` without traffic.
    pub fn tcp_keepalive(mut self, idle: Duration) -> Self {
        self.keepalive.tcp = Some(idle);
        self
    }

    /// Largest request message accepted, on both transports (default 4 MiB).
    pub fn max_decoding_message_size(mut self, limit: usize) -> Self {
        self.limits.max_decoding_message_size = limit;
        self
    }

    /// Largest response message sent, on both transports (default unlimited).
    pub fn max_encoding_message_size(mut self, limit: usize) -> Self {
        self.limits.max_encoding_message_size = limit;
        self
    }

    /// Compresses responses with `encoding`, on both transports, for clients that accept it (their
    /// `grpc-accept-encoding` lists it); others get plain messages. As tonic's `send_compressed`.
    pub fn send_compressed(mut self, encoding: crate::compression::CompressionEncoding) -> Self {
        self.compression = self.compression.send(encoding);
        self
    }

    /// Accepts requests compressed with `encoding`, on both transports; a request compressed with
    /// an encoding not accepted is refused `UNIMPLEMENTED`. As tonic's `accept_compressed`.
    pub fn accept_compressed(mut self, encoding: crate::compression::CompressionEncoding) -> Self {
        self.compression = self.compression.accept(encoding);
        self
    }

    /// Most calls in flight on one connection, on either transport (default 256). Further calls wait
    /// for a slot (HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS`, QUIC `MAX_STREAMS`): they are delayed, not
    /// refused.
    pub fn max_concurrent_calls_per_connection(mut self, limit: u32) -> Self {
        self.max_concurrent_calls = limit;
        self
    }

    /// How long a new Iroh stream may take to send its request header (and a unary call its message)
    /// before it is answered `DEADLINE_EXCEEDED` and dropped (default 10 s): the guard against peers that
    /// open streams and trickle bytes.
    pub fn iroh_header_timeout(mut self, timeout: Duration) -> Self {
        self.header_timeout = timeout;
        self
    }

    /// How long [`ServerHandle::shutdown`] waits for in-flight calls.
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Serves plain tonic services (not generated by duet) over Iroh on their own ALPN, as gRPC's
    /// HTTP/2 on a QUIC stream, on the same endpoint as the native services. Call them with
    /// [`crate::legacy::channel`] and tonic's own clients. Needs an Iroh endpoint.
    pub fn legacy(mut self, alpn: impl Into<Vec<u8>>, routes: tonic::service::Routes) -> Self {
        self.legacy.push((alpn.into(), routes));
        self
    }

    /// Lets only these Iroh endpoints connect (their ids are their public keys, proven by the QUIC
    /// handshake); any other peer's connection is closed before it can make a call. Empty: everyone.
    pub fn iroh_allowlist(mut self, peers: impl IntoIterator<Item = iroh::EndpointId>) -> Self {
        self.access.allowed = Arc::new(peers.into_iter().collect());
        self
    }

    /// Decides per Iroh call (peer, service, method) whether it may run; a refused call is answered
    /// `PERMISSION_DENIED` and its handler never runs.
    pub fn iroh_access(
        mut self,
        hook: impl Fn(&crate::iroh::AccessRequest<'_>) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.access.hook = Some(Arc::new(hook));
        self
    }

    /// Adds a tower layer around every call this server serves, on gRPC and Iroh alike (see
    /// [`crate::middleware`] for what a layer sees). Layers run in the order added: the first is
    /// the outermost. On the gRPC port they also wrap services added with
    /// [`Server::add_grpc_service`].
    ///
    /// ```
    /// use std::task::{Context, Poll};
    /// use duet::middleware::CallService;
    /// use duet::{Request, Response, Status};
    ///
    /// /// Tags every response with the server's name.
    /// #[derive(Clone)]
    /// struct Tag(CallService);
    ///
    /// impl tower::Service<Request<()>> for Tag {
    ///     type Response = Response<()>;
    ///     type Error = Status;
    ///     type Future = duet::middleware::BoxCallFuture;
    ///
    ///     fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
    ///         self.0.poll_ready(cx)
    ///     }
    ///
    ///     fn call(&mut self, req: Request<()>) -> Self::Future {
    ///         let call = self.0.call(req);
    ///         Box::pin(async move {
    ///             let mut resp = call.await?;
    ///             resp.metadata_mut().insert("x-served-by", "node-1".parse().unwrap());
    ///             Ok(resp)
    ///         })
    ///     }
    /// }
    ///
    /// let server = duet::Server::builder().layer(tower::layer::layer_fn(Tag));
    /// # let _ = server;
    /// ```
    pub fn layer<L>(mut self, layer: L) -> Self
    where
        L: tower::Layer<CallService> + Send + Sync + 'static,
        L::Service: tower::Service<tonic::Request<()>, Response = tonic::Response<()>> + Clone + Send + Sync + 'static,
        <L::Service as tower::Service<tonic::Request<()>>>::Error: Into<crate::middleware::BoxError>,
        <L::Service as tower::Service<tonic::Request<()>>>::Future: Send + 'static,
    {
        self.stack.push(layer);
        self
    }

    /// Adds an interceptor in tonic's shape, run on every call's head on gRPC and Iroh alike; an
    /// `Err` refuses the call with that status before its request message is read. Extensions it
    /// adds reach the handler. See [`Server::layer`] for the order.
    pub fn interceptor<F>(mut self, f: F) -> Self
    where
        F: Fn(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Send + Sync + 'static,
    {
        self.stack.push_check(Arc::new(f));
        self
    }

    /// Adds an interceptor that may wait (a token lookup, a membership check), run on every call's
    /// head on gRPC and Iroh alike.
    pub fn async_interceptor<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(tonic::Request<()>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<tonic::Request<()>, tonic::Status>> + Send + 'static,
    {
        self.stack.push_async_check(Arc::new(move |req| Box::pin(f(req))));
        self
    }

    /// Adds a service, served on every transport of this server.
    pub fn add_service<S: Service>(mut self, service: S) -> Self {
        self.services.push(Box::new(service));
        self
    }

    /// Adds a plain tonic service, one duet did not generate, to the gRPC port only: gRPC server
    /// reflection, `tonic-health`, or a legacy service not yet moved to duet. (To reach such a
    /// service over Iroh, see [`Server::legacy`].)
    ///
    /// ```no_run
    /// # fn f(descriptors: &[u8]) -> Result<(), Box<dyn std::error::Error>> {
    /// let reflection = tonic_reflection::server::Builder::configure()
    ///     .register_encoded_file_descriptor_set(descriptors)
    ///     .build_v1()?;
    /// let server = duet::Server::builder().grpc("127.0.0.1:0".parse()?).add_grpc_service(reflection);
    /// # Ok(()) }
    /// ```
    pub fn add_grpc_service<S>(mut self, service: S) -> Self
    where
        S: tower::Service<
                http::Request<tonic::body::Body>,
                Response = http::Response<tonic::body::Body>,
                Error = std::convert::Infallible,
            > + tonic::server::NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.grpc_only.add_service(service);
        self
    }

    /// Binds and starts serving in the background; the handle tells the bound addresses and stops it.
    pub async fn serve(mut self) -> Result<ServerHandle, Error> {
        if !self.legacy.is_empty() && self.iroh.is_none() && self.iroh_config.is_none() {
            // Checked before anything is bound, so nothing is left serving on an error.
            return Err(Error::NoTransport);
        }
        if self.iroh.is_none()
            && let Some(cfg) = &self.iroh_config
        {
            self.iroh = Some(crate::iroh::endpoint::bind_from_config(cfg).await?);
        }
        if self.grpc.is_none() && self.iroh.is_none() {
            return Err(Error::NoTransport);
        }
        let mut grpc_addr = None;
        let mut grpc_task = None;
        let mut grpc_stop = None;
        if let Some(listen) = self.grpc {
            let listener = match listen {
                GrpcListen::Listener(l) => l,
                GrpcListen::Addr(addr) => {
                    TcpListener::bind(addr).await.map_err(|source| Error::Bind { addr, source })?
                }
            };
            grpc_addr = Some(listener.local_addr()?);
            let mut routes = std::mem::take(&mut self.grpc_only);
            for s in &self.services {
                s.add_grpc(&mut routes, &self.limits, &self.compression);
            }
            let stop = CancellationToken::new();
            let incoming = TcpIncoming::from(listener).with_nodelay(Some(true)).with_keepalive(self.keepalive.tcp);
            let incoming = crate::grpc::UntilShutdown::new(incoming, stop.clone().cancelled_owned());
            let mut builder = tonic::transport::Server::builder();
            if let Some(tls) = self.grpc_tls.take() {
                builder = builder.tls_config(tls)?;
            }
            let methods = self.services.iter().flat_map(|s| s.methods()).map(|d| (d.path, d)).collect();
            let setup = crate::grpc::ServeSetup { stack: Arc::new(self.stack.clone()), methods: Arc::new(methods) };
            let router = builder
                .http2_keepalive_interval(self.keepalive.http2_interval)
                .http2_keepalive_timeout(self.keepalive.http2_timeout)
                .max_concurrent_streams(self.max_concurrent_calls)
                .layer(crate::grpc::DuetGrpcLayer(setup))
                .add_routes(routes.routes());
            grpc_task =
                Some(tokio::spawn(router.serve_with_incoming_shutdown(incoming, stop.clone().cancelled_owned())));
            grpc_stop = Some(stop);
        }
        let tracker = TaskTracker::new();
        let iroh_services: Vec<_> = self.services.iter().filter_map(|s| s.iroh()).collect();
        let mut handle = ServerHandle {
            grpc_addr,
            grpc_task,
            grpc_stop,
            iroh: None,
            iroh_services,
            limits: self.limits,
            max_concurrent_calls: self.max_concurrent_calls,
            stack: Arc::new(self.stack),
            compression: self.compression,
            access: self.access,
            header_timeout: self.header_timeout,
            tracker,
            grace: self.grace,
            legacy: self
                .legacy
                .into_iter()
                .map(|(alpn, routes)| (alpn, crate::legacy::LegacyProtocol::spawn(routes)))
                .collect(),
        };
        if let Some(endpoint) = self.iroh {
            handle.start_iroh(endpoint);
        }
        Ok(handle)
    }
}

/// A running server.
pub struct ServerHandle {
    grpc_addr: Option<SocketAddr>,
    grpc_task: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
    grpc_stop: Option<CancellationToken>,
    iroh: Option<(Router, DuetProtocol)>,
    iroh_services: Vec<Arc<dyn IrohService>>,
    limits: Limits,
    max_concurrent_calls: u32,
    stack: Arc<Stack>,
    compression: crate::compression::Compression,
    access: crate::iroh::AccessControl,
    header_timeout: Duration,
    tracker: TaskTracker,
    grace: Duration,
    legacy: Vec<(Vec<u8>, crate::legacy::LegacyProtocol)>,
}

/// Dropping the handle stops everything the server started, at once and without a grace period (use
/// [`ServerHandle::shutdown`] to let calls finish): the gRPC listener and its connections, and the
/// Iroh endpoint with its connections (closed in the background when a tokio runtime is there).
impl Drop for ServerHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.grpc_stop.take() {
            stop.cancel();
        }
        if let Some(task) = self.grpc_task.take() {
            task.abort();
        }
        if let Some((router, protocol)) = self.iroh.take() {
            protocol.drain();
            // Without a runtime the router's accept loop still ends as the last handle to it drops.
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    let _ = router.shutdown().await;
                });
            }
        }
        self.tracker.close();
    }
}

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle")
            .field("grpc_addr", &self.grpc_addr)
            .field("iroh", &self.endpoint().map(|e| e.id()))
            .finish()
    }
}

impl ServerHandle {
    /// The address the gRPC listener is bound to.
    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.grpc_addr
    }

    /// The full Iroh address of the server's endpoint (id and bound sockets).
    pub fn iroh_addr(&self) -> Option<EndpointAddr> {
        self.endpoint().map(crate::iroh::endpoint::addr)
    }

    /// Both addresses as one [`crate::PeerAddr`], printable as a ticket for other nodes.
    pub fn peer_addr(&self) -> crate::peer_addr::PeerAddr {
        crate::peer_addr::PeerAddr { grpc: self.grpc_addr, iroh: self.iroh_addr() }
    }

    /// The server's Iroh endpoint.
    pub fn endpoint(&self) -> Option<&Endpoint> {
        self.iroh.as_ref().map(|(r, _)| r.endpoint())
    }

    /// Serves the Iroh side on `endpoint` (after [`ServerHandle::stop_iroh`], say, with an endpoint
    /// bound to the same key and port so peers find it again). Replaces any Iroh side running.
    pub fn start_iroh(&mut self, endpoint: Endpoint) {
        let settings = crate::iroh::CallSettings {
            limits: self.limits,
            max_concurrent_calls: self.max_concurrent_calls,
            access: self.access.clone(),
            header_timeout: self.header_timeout,
            stack: self.stack.clone(),
            compression: self.compression.clone(),
        };
        let protocol = DuetProtocol::new(self.iroh_services.clone(), settings, self.tracker.clone(), endpoint.id());
        let mut router = Router::builder(endpoint).accept(ALPN, protocol.clone());
        for (alpn, legacy) in &self.legacy {
            router = router.accept(alpn.clone(), legacy.clone());
        }
        let router = router.spawn();
        self.iroh = Some((router, protocol));
    }

    /// Stops the Iroh side only (its endpoint closes; calls in flight on it fail), leaving gRPC up:
    /// what an operator does to take Iroh out, and what fault tests do.
    pub async fn stop_iroh(&mut self) {
        if let Some((router, _)) = self.iroh.take()
            && let Err(e) = router.shutdown().await
        {
            tracing::warn!(error = %e, "iroh router did not shut down cleanly");
        }
    }

    /// Stops accepting calls (new gRPC connections are refused, new Iroh calls get `UNAVAILABLE`), lets
    /// in-flight calls finish within the grace period, then closes both transports.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.grpc_stop.take() {
            stop.cancel();
        }
        if let Some((_, protocol)) = &self.iroh {
            protocol.drain();
        }
        self.tracker.close();
        let grpc = async {
            if let Some(task) = self.grpc_task.take() {
                let _ = task.await;
            }
        };
        let _ = tokio::time::timeout(self.grace, async { tokio::join!(grpc, self.tracker.wait()) }).await;
        self.stop_iroh().await;
    }
}
