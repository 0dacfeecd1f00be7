//! One call on the server: the generated dispatcher's entry points, one per call shape, which read
//! the request, run the handler below the middleware under the call's deadline and cancellation,
//! and write the reply.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use http::Extensions;
use iroh::EndpointId;
use tokio_util::task::task_tracker::TaskTrackerToken;
use tonic::metadata::MetadataMap;
use tracing::Instrument;

use super::reply::{Reply, respond};
use crate::call::Transport;
use crate::codec::{Message, WireCodec};
use crate::compression::CompressionEncoding;
use crate::deadline;
use crate::iroh::frame::{Frame, FrameKind};
use crate::iroh::recv::{self, Frames, IrohStream, Role};
use crate::iroh::send::FrameSender;
use crate::iroh::trailer_from_status;
use crate::limits::Limits;
use crate::method::MethodDesc;
use crate::middleware::{CallInfo, Plan, Stack};
use crate::observe::{Served, serve_span};
use crate::peer::IrohPeer;
use crate::streaming::BoxStream;
use crate::streaming::Streaming;
use tonic::Request;
use tonic::Response;
use tonic::Status;

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
    pub(super) metadata: MetadataMap,
    pub(super) timeout: Option<Duration>,
    pub(super) fingerprint: u64,
    pub(super) frames: Frames,
    pub(super) send: FrameSender,
    pub(super) limits: Limits,
    pub(super) peer: EndpointId,
    pub(super) header_timeout: Duration,
    /// Counts the call as in flight for a draining server until its reply is written.
    pub(super) in_flight: TaskTrackerToken,
    pub(super) stack: Arc<Stack>,
    /// The encoding of the request's compressed messages (its `grpc-encoding`).
    pub(super) inbound: Option<CompressionEncoding>,
    /// The encoding the response is compressed with, if the client accepts the server's.
    pub(super) outbound: Option<CompressionEncoding>,
}

impl fmt::Debug for ServerCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerCall").field("peer", &self.peer).field("timeout", &self.timeout).finish()
    }
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
        Some(Ok(Frame { kind, .. })) => Err(crate::iroh::unexpected(kind)),
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
            metadata,
            timeout,
            fingerprint,
            frames,
            mut send,
            limits,
            peer,
            in_flight,
            stack,
            outbound,
            ..
        } = self;
        let served = Served::start(Some(desc), Transport::Iroh).expires(timeout);
        let mut ext = Extensions::new();
        ext.insert(IrohPeer(peer));
        let span = serve_span(desc.path, Transport::Iroh, &metadata, &mut ext);
        let call = async move {
            if fingerprint != desc.fingerprint {
                let mut md = MetadataMap::new();
                md.insert(
                    crate::iroh::wire::SCHEMA_MISMATCH_KEY,
                    crate::iroh::wire::SCHEMA_MISMATCH_VALUE.parse().expect("ASCII metadata value"),
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
            // Middleware sees the call's head before the request message is read, and (layers) the
            // response's head after the handler returned.
            let work = async move {
                let (checks, layers) = match stack.plan() {
                    Plan::Empty => return make(frames, metadata, ext).await,
                    Plan::Checks(checks) => (checks, None),
                    Plan::Layers(checks, layers) => (checks, Some(layers)),
                };
                let mut ext = ext;
                ext.insert(CallInfo { path: desc.path.into(), transport: Some(Transport::Iroh) });
                let head = Request::from_parts(metadata, ext, ());
                match layers {
                    None => {
                        let (metadata, ext, ()) = crate::middleware::check(checks, head).await?.into_parts();
                        make(frames, metadata, ext).await
                    }
                    Some(layers) => {
                        let (head, body) =
                            crate::middleware::run(checks, layers.clone(), head, move |head| async move {
                                let (metadata, ext, ()) = head.into_parts();
                                Ok(make(frames, metadata, ext).await?.split())
                            })
                            .await?;
                        Ok(Reply::join(head, body))
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
            match outcome {
                Outcome::Done(code) => served.finish(code),
                Outcome::Deadline => served.finish(tonic::Code::DeadlineExceeded),
                // A client gives up at its deadline, a moment before the server's timer: dropped,
                // the observation tells a call past its deadline from one the client abandoned.
                Outcome::Cancelled => drop(served),
            }
            match outcome {
                Outcome::Done(_) => {
                    // Stay until the client has acknowledged the reply, as a plain QUIC echo does: a
                    // task that ends at once leaves its worker thread idle to park, and the next
                    // call's stream must wake it through the kernel. A draining server does not
                    // wait for this (the call is done); closing the endpoint ends the wait.
                    drop(in_flight);
                    let _ = send.stream().stopped().await;
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
