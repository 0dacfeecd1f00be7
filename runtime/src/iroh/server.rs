//! The Iroh side of a server: accepts connections on ALPN `duet/1`, one task per stream, dispatch by
//! method path, deadline and cancellation around every handler.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use http::Extensions;
use iroh::EndpointId;
use iroh::endpoint::{Connection, RecvStream, SendStream};
use iroh::protocol::{AcceptError, ProtocolHandler};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::metadata::MetadataMap;
use tracing::Instrument;

use super::frame::{Frame, FrameKind};
use super::frame_buf::FrameBuf;
use super::recv::{self, Frames, IrohStream, Role};
use super::send::FrameSender;
use super::wire::{RequestHeader, ResponseHeader};
use super::{ok_trailer, trailer_from_status};
use crate::codec::{Message, WireCodec};
use crate::compression::{Compression, CompressionEncoding};
use crate::limits::Limits;
use crate::method::MethodDesc;
use crate::middleware::{CallInfo, CallService, Plan, Stack};
use crate::observe::{Served, serve_span};
use crate::peer::IrohPeer;
use crate::{BoxStream, Request, Response, Status, Streaming, Trailers, Transport, deadline, metadata_wire};

/// What an access hook sees of one call: who, and what it asks for.
#[derive(Debug, Clone, Copy)]
pub struct AccessRequest<'a> {
    /// The caller: its endpoint id is its public key, proven by the QUIC handshake.
    pub peer: EndpointId,
    /// The fully qualified service, `pkg.Service`.
    pub service: &'a str,
    /// The method's proto name.
    pub method: &'a str,
}

/// Decides per call whether a peer may make it; `false` answers `PERMISSION_DENIED` and the handler never
/// runs.
pub type AccessHook = Arc<dyn Fn(&AccessRequest<'_>) -> bool + Send + Sync>;

/// Who may call over Iroh: an allowlist of endpoint ids checked when a connection arrives (others are
/// refused before any call), and a hook checked per call.
#[derive(Clone, Default)]
pub struct AccessControl {
    /// Endpoint ids allowed to connect; empty allows every peer.
    pub allowed: Arc<std::collections::HashSet<EndpointId>>,
    /// A per-call decision, after the allowlist.
    pub hook: Option<AccessHook>,
}

impl fmt::Debug for AccessControl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessControl")
            .field("allowed", &self.allowed.len())
            .field("hook", &self.hook.is_some())
            .finish()
    }
}

/// Application close code sent to a peer that is not on the allowlist.
pub const NOT_ALLOWED: u32 = 0x403;

/// Default time a new stream may take to deliver its request header (and, for unary and
/// server-streaming calls, its request message): a peer that opens streams and sends nothing cannot
/// hold handler slots longer than this.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// A service as the Iroh dispatcher sees it. `duet-codegen` implements this for every generated
/// `<Service>Server`; you rarely implement it by hand.
pub trait IrohService: Send + Sync + 'static {
    /// The fully qualified proto name, `pkg.Service`.
    fn name(&self) -> &'static str;
    /// Runs one call of `method` (the proto method name) to completion.
    fn call(&self, method: &str, call: ServerCall) -> BoxFuture<'static, ()>;
}

/// One incoming call on the Iroh wire, handed to [`IrohService::call`]. Generated dispatchers pick the
/// method's shape ([`ServerCall::unary`] and friends), which decode, run the handler under the call's
/// deadline and cancellation, and write the response.
pub struct ServerCall {
    metadata: MetadataMap,
    timeout: Option<Duration>,
    fingerprint: u64,
    frames: Frames,
    send: FrameSender,
    limits: Limits,
    peer: EndpointId,
    header_timeout: Duration,
    drained: CancellationToken,
    stack: Arc<Stack>,
    /// The encoding of the request's compressed messages (its `grpc-encoding`).
    inbound: Option<CompressionEncoding>,
    /// The encoding the response is compressed with, if the client accepts the server's.
    outbound: Option<CompressionEncoding>,
}

impl fmt::Debug for ServerCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerCall").field("peer", &self.peer).field("timeout", &self.timeout).finish()
    }
}

enum Reply<T> {
    One(Response<T>),
    Many(Response<BoxStream<T>>),
}

/// A reply's body, kept aside while its head goes back up through the middleware.
enum ReplyBody<T> {
    One(T),
    Many(BoxStream<T>),
}

impl<T> Reply<T> {
    fn split(self) -> (Response<()>, ReplyBody<T>) {
        match self {
            Reply::One(r) => {
                let (md, body, ext) = r.into_parts();
                (Response::from_parts(md, (), ext), ReplyBody::One(body))
            }
            Reply::Many(r) => {
                let (md, body, ext) = r.into_parts();
                (Response::from_parts(md, (), ext), ReplyBody::Many(body))
            }
        }
    }

    fn join(head: Response<()>, body: ReplyBody<T>) -> Self {
        let (md, (), ext) = head.into_parts();
        match body {
            ReplyBody::One(b) => Reply::One(Response::from_parts(md, b, ext)),
            ReplyBody::Many(b) => Reply::Many(Response::from_parts(md, b, ext)),
        }
    }
}

/// Runs `make` (which reads the request and runs the handler) below the server's middleware: the
/// layers see the call's head before the request message is read, and the response's head after
/// the handler returned.
async fn through_stack<Resp, Make, Work>(
    stack: CallService,
    path: &'static str,
    frames: Frames,
    metadata: MetadataMap,
    mut ext: Extensions,
    make: Make,
) -> Result<Reply<Resp>, Status>
where
    Resp: Message,
    Make: FnOnce(Frames, MetadataMap, Extensions) -> Work + Send + 'static,
    Work: Future<Output = Result<Reply<Resp>, Status>> + Send + 'static,
{
    ext.insert(CallInfo { path: path.into(), transport: Some(Transport::Iroh) });
    let slot = crate::middleware::Body::new();
    let left = slot.clone();
    let head = crate::middleware::run(&stack, Request::from_parts(metadata, ext, ()), move |head| async move {
        let (metadata, ext, ()) = head.into_parts();
        let (head, body) = make(frames, metadata, ext).await?.split();
        left.put(body);
        Ok(head)
    })
    .await?;
    Ok(Reply::join(head, slot.take()?))
}

#[derive(Clone, Copy)]
enum Outcome {
    /// The response went out, ending with this code.
    Done(tonic::Code),
    Cancelled,
    Deadline,
}

/// Reads the single request message of a unary or server-streaming call. A peer that sends a header
/// and then nothing is cut off after the header timeout, so it cannot hold a handler slot for ever.
async fn read_one<T: Message>(
    frames: &mut Frames,
    codec: WireCodec,
    compression: Option<CompressionEncoding>,
    wait: Duration,
) -> Result<T, Status> {
    let next = tokio::time::timeout(wait, frames.next())
        .await
        .map_err(|_| Status::deadline_exceeded("no request message received in time"))?;
    match next {
        Some(Ok(Frame { kind: kind @ (FrameKind::Message | FrameKind::CompressedMessage), body })) => {
            recv::read_end_if_there(frames);
            let limit = frames.decoder().max_message();
            recv::decode_message(codec, compression, kind, &body, limit)
        }
        Some(Ok(Frame { kind, .. })) => Err(super::unexpected(kind)),
        Some(Err(e)) => Err(e.to_status()),
        None => Err(Status::internal("Missing request message.")),
    }
}

impl ServerCall {
    /// Runs a unary handler.
    pub fn unary<Req, Resp, F, Fut>(self, desc: &'static MethodDesc, handler: F) -> BoxFuture<'static, ()>
    where
        Req: Message,
        Resp: Message,
        F: FnOnce(Request<Req>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Response<Resp>, Status>> + Send + 'static,
    {
        let (wait, inbound) = (self.header_timeout, self.inbound);
        self.run(desc, move |mut frames, md, ext| async move {
            let msg = read_one::<Req>(&mut frames, desc.codec, inbound, wait).await?;
            handler(Request::from_parts(md, ext, msg)).await.map(Reply::One)
        })
    }

    /// Runs a server-streaming handler.
    pub fn server_streaming<Req, Resp, F, Fut>(self, desc: &'static MethodDesc, handler: F) -> BoxFuture<'static, ()>
    where
        Req: Message,
        Resp: Message,
        F: FnOnce(Request<Req>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Response<BoxStream<Resp>>, Status>> + Send + 'static,
    {
        let (wait, inbound) = (self.header_timeout, self.inbound);
        self.run(desc, move |mut frames, md, ext| async move {
            let msg = read_one::<Req>(&mut frames, desc.codec, inbound, wait).await?;
            handler(Request::from_parts(md, ext, msg)).await.map(Reply::Many)
        })
    }

    /// Runs a client-streaming handler.
    pub fn client_streaming<Req, Resp, F, Fut>(self, desc: &'static MethodDesc, handler: F) -> BoxFuture<'static, ()>
    where
        Req: Message,
        Resp: Message,
        F: FnOnce(Request<Streaming<Req>>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Response<Resp>, Status>> + Send + 'static,
    {
        let inbound = self.inbound;
        self.run(desc, move |frames, md, ext| async move {
            let stream = Streaming::from_iroh(IrohStream::new(frames, desc.codec, Role::Server).compressed(inbound));
            handler(Request::from_parts(md, ext, stream)).await.map(Reply::One)
        })
    }

    /// Runs a bidi-streaming handler.
    pub fn bidi<Req, Resp, F, Fut>(self, desc: &'static MethodDesc, handler: F) -> BoxFuture<'static, ()>
    where
        Req: Message,
        Resp: Message,
        F: FnOnce(Request<Streaming<Req>>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Response<BoxStream<Resp>>, Status>> + Send + 'static,
    {
        let inbound = self.inbound;
        self.run(desc, move |frames, md, ext| async move {
            let stream = Streaming::from_iroh(IrohStream::new(frames, desc.codec, Role::Server).compressed(inbound));
            handler(Request::from_parts(md, ext, stream)).await.map(Reply::Many)
        })
    }

    /// Answers `UNIMPLEMENTED` for a method the service does not have.
    pub fn unimplemented(self, method: &str) -> BoxFuture<'static, ()> {
        let status = Status::unimplemented(format!("method {method} is not implemented"));
        let mut send = self.send;
        Box::pin(async move {
            let _ = send.trailer(&trailer_from_status(&status)).await;
        })
    }

    fn run<Resp, Make, Work>(self, desc: &'static MethodDesc, make: Make) -> BoxFuture<'static, ()>
    where
        Resp: Message,
        Make: FnOnce(Frames, MetadataMap, Extensions) -> Work + Send + 'static,
        Work: Future<Output = Result<Reply<Resp>, Status>> + Send + 'static,
    {
        let ServerCall {
            metadata, timeout, fingerprint, frames, mut send, limits, peer, drained, stack, outbound, ..
        } = self;
        let served = Served::start(desc.config_name.into(), desc.method.into(), Transport::Iroh);
        let mut ext = Extensions::new();
        ext.insert(IrohPeer(peer));
        let span = serve_span(desc.path, Transport::Iroh, &metadata, &mut ext);
        let call = async move {
            if fingerprint != desc.fingerprint {
                let mut md = MetadataMap::new();
                md.insert(
                    super::wire::SCHEMA_MISMATCH_KEY,
                    super::wire::SCHEMA_MISMATCH_VALUE.parse().expect("ASCII metadata value"),
                );
                let status = Status::with_metadata(
                    tonic::Code::FailedPrecondition,
                    format!(
                        "schema mismatch for {}: the client was built from a different version of the proto \
                     (fingerprint {fingerprint:016x}, server {:016x}); regenerate both sides or call over gRPC",
                        desc.path, desc.fingerprint
                    ),
                    md,
                );
                let _ = send.trailer(&trailer_from_status(&status)).await;
                served.finish(status.code());
                return;
            }
            let work = async move {
                match stack.plan() {
                    Plan::Empty => make(frames, metadata, ext).await,
                    Plan::Checks(checks) => {
                        let mut ext = ext;
                        ext.insert(CallInfo { path: desc.path.into(), transport: Some(Transport::Iroh) });
                        let head = crate::middleware::check(checks, Request::from_parts(metadata, ext, ())).await?;
                        let (metadata, ext, ()) = head.into_parts();
                        make(frames, metadata, ext).await
                    }
                    Plan::Layers(service) => {
                        through_stack(service.clone(), desc.path, frames, metadata, ext, make).await
                    }
                }
            };
            let stopped = send.stream().stopped();
            let outcome = {
                let respond = respond(work, &mut send, desc.codec, outbound, limits.max_encoding_message_size);
                tokio::pin!(respond);
                let deadline = async {
                    match timeout {
                        Some(t) => tokio::time::sleep(t).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    biased;
                    _ = stopped => Outcome::Cancelled,
                    _ = deadline => Outcome::Deadline,
                    code = &mut respond => Outcome::Done(code),
                }
            };
            served.finish(match outcome {
                Outcome::Done(code) => code,
                Outcome::Cancelled => tonic::Code::Cancelled,
                Outcome::Deadline => tonic::Code::DeadlineExceeded,
            });
            match outcome {
                Outcome::Done(_) => {
                    // Stay until the client has acknowledged the reply (or the server drains), as a
                    // plain QUIC echo does: a task that ends at once leaves its worker thread idle to
                    // park, and the next call's stream must wake it through the kernel. With this,
                    // CPU per small call at 16-64 callers fell 5-15 % (BENCHMARKS.md).
                    tokio::select! {
                        _ = send.stream().stopped() => {}
                        () = drained.cancelled() => {}
                    }
                }
                Outcome::Cancelled => tracing::debug!(path = desc.path, "call cancelled by the client"),
                Outcome::Deadline => {
                    tracing::debug!(path = desc.path, "deadline exceeded");
                    // A half-written frame cannot be followed by a trailer: the drop then resets the stream.
                    if !send.mid_frame() {
                        let _ = send.trailer(&trailer_from_status(&deadline::exceeded())).await;
                    }
                }
            }
        };
        if span.is_disabled() { Box::pin(call) } else { Box::pin(call.instrument(span)) }
    }
}

/// Writes the handler's reply; returns the code the call ended with.
async fn respond<Resp: Message>(
    work: impl Future<Output = Result<Reply<Resp>, Status>>,
    send: &mut FrameSender,
    codec: WireCodec,
    compression: Option<CompressionEncoding>,
    limit: usize,
) -> tonic::Code {
    let reply = match work.await {
        Ok(reply) => reply,
        Err(status) => {
            let _ = send.trailer(&trailer_from_status(&status)).await;
            return status.code();
        }
    };
    let mut code = tonic::Code::Ok;
    let result = match reply {
        Reply::One(response) => {
            let (md, msg, mut ext) = response.into_parts();
            let trailer = success_trailer(&mut ext);
            let mut reply = FrameBuf::new();
            reply.header(FrameKind::ResponseHeader, &response_header(md, compression));
            match reply.message_as(codec, compression, &msg, limit) {
                Err(status) => {
                    code = status.code();
                    send.trailer(&trailer_from_status(&status)).await
                }
                Ok(()) => {
                    reply.header(FrameKind::Trailer, &trailer);
                    send.write(reply, true).await
                }
            }
        }
        Reply::Many(response) => {
            let (md, mut stream, mut ext) = response.into_parts();
            let trailer = success_trailer(&mut ext);
            async {
                send.header(FrameKind::ResponseHeader, &response_header(md, compression), false).await?;
                while let Some(item) = stream.next().await {
                    let mut frame = FrameBuf::new();
                    let encoded = match item {
                        Ok(msg) => frame.message_as(codec, compression, &msg, limit),
                        Err(status) => Err(status),
                    };
                    if let Err(status) = encoded {
                        code = status.code();
                        return send.trailer(&trailer_from_status(&status)).await;
                    }
                    send.write(frame, false).await?;
                }
                send.trailer(&trailer).await
            }
            .await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "response not delivered");
        code = e.code();
    }
    code
}

/// The response header, naming the encoding of the response's compressed messages.
fn response_header(mut md: MetadataMap, compression: Option<CompressionEncoding>) -> ResponseHeader {
    if let Some(encoding) = compression {
        md.insert(crate::compression::ENCODING, crate::compression::name(encoding).parse().expect("ASCII name"));
    }
    ResponseHeader { metadata: metadata_wire::to_wire(md) }
}

fn success_trailer(ext: &mut Extensions) -> super::wire::Trailer {
    let mut trailer = ok_trailer();
    if let Some(Trailers(md)) = ext.remove::<Trailers>() {
        trailer.metadata = metadata_wire::to_wire(md);
    }
    trailer
}

/// The services one Iroh endpoint serves, by fully qualified name.
pub(crate) struct Registry {
    services: HashMap<&'static str, Arc<dyn IrohService>>,
    limits: Limits,
    tracker: TaskTracker,
    max_concurrent_calls: u32,
    draining: AtomicBool,
    /// Cancelled with `draining` set: ends the tasks that wait for their reply's acknowledgement.
    drained: CancellationToken,
    access: AccessControl,
    header_timeout: Duration,
    stack: Arc<Stack>,
    compression: Compression,
}

/// What every Iroh call a server serves runs with.
#[derive(Clone)]
pub(crate) struct CallSettings {
    pub limits: Limits,
    pub max_concurrent_calls: u32,
    pub access: AccessControl,
    pub header_timeout: Duration,
    pub stack: Arc<Stack>,
    pub compression: Compression,
}

/// The `duet/1` protocol handler mounted on an iroh `Router`.
#[derive(Clone)]
pub(crate) struct DuetProtocol {
    registry: Arc<Registry>,
    /// The id of the endpoint this protocol serves on.
    local: EndpointId,
}

impl fmt::Debug for DuetProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<_> = self.registry.services.keys().collect();
        f.debug_struct("DuetProtocol").field("services", &names).finish()
    }
}

impl DuetProtocol {
    pub fn new(
        services: Vec<Arc<dyn IrohService>>,
        settings: CallSettings,
        tracker: TaskTracker,
        local: EndpointId,
    ) -> Self {
        let CallSettings { limits, max_concurrent_calls, access, header_timeout, stack, compression } = settings;
        let services = services.into_iter().map(|s| (s.name(), s)).collect();
        let draining = AtomicBool::new(false);
        let drained = CancellationToken::new();
        let registry = Registry {
            services,
            limits,
            tracker,
            max_concurrent_calls,
            draining,
            drained,
            access,
            header_timeout,
            stack,
            compression,
        };
        Self { registry: Arc::new(registry), local }
    }

    /// From now on, new calls are refused with `UNAVAILABLE` while calls in flight finish.
    pub fn drain(&self) {
        self.registry.draining.store(true, Ordering::SeqCst);
        self.registry.drained.cancel();
    }
}

impl ProtocolHandler for DuetProtocol {
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        let peer = conn.remote_id();
        let allowed = &self.registry.access.allowed;
        if !allowed.is_empty() && !allowed.contains(&peer) {
            tracing::info!(%peer, "refused an Iroh connection from a peer not on the allowlist");
            conn.close(NOT_ALLOWED.into(), b"this endpoint is not on the server's allowlist");
            return Ok(());
        }
        // A peer that dials in may be a restarted process our own connector still holds a dead
        // connection to.
        super::connector::incoming(self.local, peer);
        // Liveness probes are DATAGRAMs whose only use is the acknowledgement QUIC sends for them.
        let probes = conn.clone();
        tokio::spawn(async move { while probes.read_datagram().await.is_ok() {} });
        // Calls past the limit wait for a slot: QUIC does not let the client open another stream.
        conn.set_max_concurrent_bi_streams(self.registry.max_concurrent_calls.into());
        while let Ok((send, recv)) = conn.accept_bi().await {
            let registry = self.registry.clone();
            self.registry.tracker.spawn(async move { registry.serve_stream(peer, send, recv).await });
        }
        Ok(())
    }
}

/// A method path, `/pkg.Service/Method`, split into service and method; `None` for anything else (no
/// leading slash, an empty part, a slash in the method).
pub fn split_path(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix('/')?;
    let (service, method) = rest.split_once('/')?;
    (!service.is_empty() && !method.is_empty() && !method.contains('/')).then_some((service, method))
}

/// What the server takes from a call's request header before it looks up the method.
#[derive(Debug)]
pub struct CallHeader {
    /// The method path as sent; [`split_path`] splits it.
    pub path: String,
    /// The request metadata, as the handler sees it.
    pub metadata: MetadataMap,
    /// The call's relative deadline, if the client set one.
    pub timeout: Option<Duration>,
    /// Schema fingerprint of the method the client was built with.
    pub fingerprint: u64,
}

/// The server's reading of a request header frame's body: a body that is not a postcard
/// [`RequestHeader`] is `INVALID_ARGUMENT`, metadata entries that are not valid HTTP/2 headers (or too
/// many) are `INTERNAL` (or `RESOURCE_EXHAUSTED`), and the timeout in microseconds becomes a
/// [`Duration`].
pub fn read_call_header(body: &[u8]) -> Result<CallHeader, Status> {
    let h = postcard::from_bytes::<RequestHeader>(body)
        .map_err(|e| Status::invalid_argument(format!("malformed request header: {e}")))?;
    let metadata = metadata_wire::from_wire(h.metadata)?;
    Ok(CallHeader {
        path: h.path,
        metadata,
        timeout: h.timeout_micros.map(Duration::from_micros),
        fingerprint: h.fingerprint,
    })
}

impl Registry {
    async fn serve_stream(&self, peer: EndpointId, send: SendStream, recv: RecvStream) {
        let mut frames = recv::frames(recv, self.limits.max_decoding_message_size);
        let mut send = FrameSender::new(send);
        if self.draining.load(Ordering::SeqCst) {
            let status = Status::unavailable("the server is shutting down");
            let _ = send.trailer(&trailer_from_status(&status)).await;
            return;
        }
        let header = match tokio::time::timeout(self.header_timeout, frames.next()).await {
            Err(_) => Err(Status::deadline_exceeded("no request header received in time")),
            Ok(None) => return,
            Ok(Some(Err(e))) => Err(e.to_status()),
            Ok(Some(Ok(Frame { kind: FrameKind::RequestHeader, body }))) => read_call_header(&body),
            Ok(Some(Ok(Frame { kind, .. }))) => {
                Err(Status::internal(format!("protocol error: expected a request header, got a {kind:?} frame")))
            }
        };
        let CallHeader { path, metadata, timeout, fingerprint } = match header {
            Ok(c) => c,
            Err(status) => {
                let _ = send.trailer(&trailer_from_status(&status)).await;
                return;
            }
        };
        let (inbound, outbound) = match self.compression.incoming(&metadata) {
            Ok(inbound) => (inbound, self.compression.response_encoding(&metadata)),
            Err(status) => {
                let _ = send.trailer(&trailer_from_status(&status)).await;
                return;
            }
        };
        let service = split_path(&path).and_then(|(s, m)| Some((self.services.get(s)?, m)));
        let Some((service, method)) = service else {
            let status = Status::unimplemented(format!("unknown service or malformed path {path:?}"));
            let _ = send.trailer(&trailer_from_status(&status)).await;
            return;
        };
        if let Some(hook) = &self.access.hook
            && !hook(&AccessRequest { peer, service: service.name(), method })
        {
            let status = Status::permission_denied(format!("peer {peer} may not call {path}"));
            let _ = send.trailer(&trailer_from_status(&status)).await;
            return;
        }
        let call = ServerCall {
            metadata,
            timeout,
            fingerprint,
            frames,
            send,
            limits: self.limits,
            peer,
            header_timeout: self.header_timeout,
            drained: self.drained.clone(),
            stack: self.stack.clone(),
            inbound,
            outbound,
        };
        service.call(method, call).await;
    }
}

#[cfg(test)]
mod tests {
    use super::split_path;

    #[test]
    fn paths_split_into_service_and_method() {
        assert_eq!(split_path("/a.B/C"), Some(("a.B", "C")));
        assert_eq!(split_path("a.B/C"), None);
        assert_eq!(split_path("/a.B/"), None);
        assert_eq!(split_path("//C"), None);
        assert_eq!(split_path("/a/b/c"), None);
    }
}
