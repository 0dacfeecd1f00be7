//! Calls over stock gRPC, made with tonic's own client so the wire is exactly tonic's.

use futures_util::Stream;
use http::uri::PathAndQuery;
use tonic::GrpcMethod;
use tonic::client::Grpc;
use tonic::transport::Channel as TonicChannel;
use tonic_prost::ProstCodec;

use super::cancel::CancelChannel;
use crate::call::CallOptions;
use crate::call::Transport;
use crate::codec::Message;
use crate::deadline::Deadline;
use crate::method::MethodDesc;
use crate::streaming::CallGuard;
use crate::streaming::Streaming;
use tonic::Request;
use tonic::Response;
use tonic::Status;

async fn ready<T>(channel: T, opts: &CallOptions) -> Result<Grpc<T>, Status>
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut grpc = Grpc::new(channel)
        .max_decoding_message_size(opts.limits.max_decoding_message_size)
        .max_encoding_message_size(opts.limits.max_encoding_message_size);
    if let Some(encoding) = opts.compression.sends() {
        grpc = grpc.send_compressed(encoding);
    }
    for encoding in opts.compression.accepted() {
        grpc = grpc.accept_compressed(*encoding);
    }
    grpc.ready().await.map_err(|e| Status::unavailable(format!("gRPC channel not ready: {}", e.into())))?;
    Ok(grpc)
}

/// Sends what is left of the call's deadline as `grpc-timeout`, and names the method for tonic.
fn prepare<T>(mut req: Request<T>, desc: &MethodDesc, deadline: Deadline) -> Result<Request<T>, Status> {
    deadline.stamp(&mut req)?;
    req.extensions_mut().insert(GrpcMethod::new(desc.service, desc.method));
    Ok(req)
}

/// hyper reports a call cut off by a closing connection (after GOAWAY, say) as `CANCELLED`, and one cut
/// off by a dead peer (reset or broken pipe mid-body) or by a TLS alert as `UNKNOWN`; gRPC calls
/// them all `UNAVAILABLE` (the call may be retried), and so does duet on both transports. Statuses the
/// server sent carry no transport error as their source and are left alone.
fn connection_closed_is_unavailable(status: Status) -> Status {
    use std::error::Error as _;
    let from_transport = status.source().is_some_and(|e| e.is::<tonic::transport::Error>());
    let connection_lost = || {
        let mut cause = status.source();
        while let Some(e) = cause {
            // h2 keeps the socket's error inside, without exposing it as a source.
            let io = e.downcast_ref::<std::io::Error>().or_else(|| e.downcast_ref::<h2::Error>()?.get_io());
            if let Some(io) = io {
                use std::io::ErrorKind::*;
                return matches!(
                    io.kind(),
                    BrokenPipe | ConnectionReset | ConnectionAborted | UnexpectedEof | NotConnected
                );
            }
            cause = e.source();
        }
        false
    };
    let lost = match status.code() {
        tonic::Code::Cancelled => from_transport,
        // A connection that failed under the call (a TLS alert after the handshake, a reset socket).
        tonic::Code::Unknown => from_transport || connection_lost(),
        tonic::Code::Internal => connection_lost(),
        _ => false,
    };
    if lost {
        Status::unavailable(format!("the connection closed before the call completed: {}", status.message()))
    } else {
        status
    }
}

/// Every status a gRPC call hands the caller, on the call and on its response stream, goes through
/// here so both transports answer alike.
pub(crate) fn client_status(status: Status) -> Status {
    connection_closed_is_unavailable(super::fix_size_limit_status(status))
}

/// tonic's client fails an oversized request with an HTTP/2 reset (`INTERNAL`); check first, so the
/// caller gets `RESOURCE_EXHAUSTED` as on the Iroh wire, and nothing is sent.
fn check_encoded_size<M: Message>(msg: &M, opts: &CallOptions) -> Result<(), Status> {
    let len = msg.encoded_len();
    let limit = opts.limits.max_encoding_message_size;
    if len > limit {
        return Err(crate::codec::too_large(len, limit));
    }
    Ok(())
}

fn tag<T>(mut resp: Response<T>) -> Response<T> {
    resp.extensions_mut().insert(Transport::Grpc);
    resp
}

/// Enforces the deadline on the client as well, so a silent server cannot hold the caller past it.
fn within<T>(
    deadline: Deadline,
    fut: impl Future<Output = Result<T, Status>>,
) -> impl Future<Output = Result<T, Status>> {
    use futures_util::FutureExt;
    // Not an async fn: one that took `fut` and awaited it would hold two copies of its state.
    deadline.bound(fut, |s| s).map(move |result| {
        result.map_err(|status| {
            let status = client_status(status);
            // The server's own timer may fire first: tonic answers CANCELLED ("Timeout expired") or
            // resets the stream. Past its deadline the call is DEADLINE_EXCEEDED, as gRPC says.
            let past = deadline.remaining().is_some_and(|left| left.is_zero());
            if past && matches!(status.code(), tonic::Code::Cancelled | tonic::Code::Unavailable) {
                crate::deadline::exceeded()
            } else {
                status
            }
        })
    })
}

pub(crate) async fn unary<Req: Message, Resp: Message>(
    channel: &TonicChannel,
    req: Request<Req>,
    desc: &'static MethodDesc,
    opts: &CallOptions,
    deadline: Deadline,
) -> Result<Response<Resp>, Status> {
    check_encoded_size(req.get_ref(), opts)?;
    within(deadline, async {
        let mut grpc = ready(channel.clone(), opts).await?;
        // Stamped once ready: connecting comes off what the server is given.
        let req = prepare(req, desc, deadline)?;
        let codec = ProstCodec::<Req, Resp>::default();
        grpc.unary(req, PathAndQuery::from_static(desc.path), codec).await.map(tag)
    })
    .await
}

pub(crate) async fn server_streaming<Req: Message, Resp: Message>(
    channel: &TonicChannel,
    req: Request<Req>,
    desc: &'static MethodDesc,
    opts: &CallOptions,
    deadline: Deadline,
) -> Result<Response<Streaming<Resp>>, Status> {
    check_encoded_size(req.get_ref(), opts)?;
    within(deadline, async {
        let mut grpc = ready(channel.clone(), opts).await?;
        // Stamped once ready: connecting comes off what the server is given.
        let req = prepare(req, desc, deadline)?;
        let codec = ProstCodec::<Req, Resp>::default();
        let resp = grpc.server_streaming(req, PathAndQuery::from_static(desc.path), codec).await?;
        Ok(tag(resp.map(|s| Streaming::from_grpc(s).with_deadline(deadline.instant()))))
    })
    .await
}

pub(crate) async fn client_streaming<S, Req, Resp>(
    channel: &TonicChannel,
    req: Request<S>,
    desc: &'static MethodDesc,
    opts: &CallOptions,
    deadline: Deadline,
) -> Result<Response<Resp>, Status>
where
    S: Stream<Item = Req> + Send + 'static,
    Req: Message,
    Resp: Message,
{
    let (channel, _cancel_on_drop) = CancelChannel::new(channel.clone());
    // `_cancel_on_drop` goes with this future: a caller who gives up resets the HTTP/2 stream.
    within(deadline, async {
        let mut grpc = ready(channel, opts).await?;
        // Stamped once ready: connecting comes off what the server is given.
        let req = prepare(req, desc, deadline)?;
        let codec = ProstCodec::<Req, Resp>::default();
        grpc.client_streaming(req, PathAndQuery::from_static(desc.path), codec).await.map(tag)
    })
    .await
}

pub(crate) async fn bidi<S, Req, Resp>(
    channel: &TonicChannel,
    req: Request<S>,
    desc: &'static MethodDesc,
    opts: &CallOptions,
    deadline: Deadline,
) -> Result<Response<Streaming<Resp>>, Status>
where
    S: Stream<Item = Req> + Send + 'static,
    Req: Message,
    Resp: Message,
{
    let (channel, guard) = CancelChannel::new(channel.clone());
    within(deadline, async {
        let mut grpc = ready(channel, opts).await?;
        // Stamped once ready: connecting comes off what the server is given.
        let req = prepare(req, desc, deadline)?;
        let codec = ProstCodec::<Req, Resp>::default();
        let resp = grpc.streaming(req, PathAndQuery::from_static(desc.path), codec).await?;
        // The response stream owns the guard: dropping it cancels the call.
        Ok(tag(resp
            .map(|s| Streaming::from_grpc(s).with_deadline(deadline.instant()).with_guard(CallGuard::Cancel(guard)))))
    })
    .await
}
