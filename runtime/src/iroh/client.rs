//! The client side of one call on the Iroh wire.

use std::future::Future;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use http::Extensions;
use iroh::endpoint::Connection;
use tonic::metadata::MetadataMap;

use super::frame::{Frame, FrameKind};
use super::recv::{self, AbortOnDrop, Frames, IrohStream, Role};
use super::send::FrameSender;
use super::wire::{self, RequestHeader, ResponseHeader, Trailer};
use crate::channel::CallOptions;
use crate::codec::{Message, WireCodec};
use crate::method::MethodDesc;
use crate::streaming::CallGuard;
use crate::{Request, Response, Status, Streaming, Transport, deadline, metadata_wire};

enum Head {
    Headers(MetadataMap),
    /// A response with no messages: the status it ended with (OK or not).
    TrailersOnly(Status),
}

async fn open(
    conn: &Connection,
    desc: &MethodDesc,
    md: MetadataMap,
    timeout: Option<Duration>,
    opts: &CallOptions,
) -> Result<(FrameSender, Frames), Status> {
    let (send, recv) =
        conn.open_bi().await.map_err(|e| Status::unavailable(format!("cannot open an Iroh stream: {e}")))?;
    let mut send = FrameSender::new(send);
    let header = RequestHeader {
        path: desc.path.to_owned(),
        metadata: metadata_wire::to_wire(md),
        timeout_micros: timeout.map(|t| u64::try_from(t.as_micros()).unwrap_or(u64::MAX)),
        fingerprint: desc.fingerprint,
    };
    send.frame(FrameKind::RequestHeader, wire::encode(&header)).await?;
    Ok((send, recv::frames(recv, opts.limits.max_decoding_message_size)))
}

async fn read_head(frames: &mut Frames) -> Result<Head, Status> {
    match frames.next().await {
        Some(Ok(Frame { kind: FrameKind::ResponseHeader, body })) => {
            let header: ResponseHeader =
                postcard::from_bytes(&body).map_err(|e| Status::internal(format!("malformed response header: {e}")))?;
            Ok(Head::Headers(metadata_wire::from_wire(header.metadata)?))
        }
        Some(Ok(Frame { kind: FrameKind::Trailer, body })) => {
            let trailer: Trailer =
                postcard::from_bytes(&body).map_err(|e| Status::internal(format!("malformed trailer: {e}")))?;
            Ok(Head::TrailersOnly(super::status_from_trailer(trailer)))
        }
        Some(Ok(Frame { kind, .. })) => Err(Status::internal(format!("protocol error: unexpected {kind:?} frame"))),
        Some(Err(e)) => Err(e.to_status()),
        None => Err(Status::unavailable("the server closed the stream without a response")),
    }
}

fn response_extensions() -> Extensions {
    let mut ext = Extensions::new();
    ext.insert(Transport::Iroh);
    ext
}

/// Reads the single response message and the trailer that follows it.
async fn read_single<Resp: Message>(mut frames: Frames, codec: WireCodec) -> Result<Response<Resp>, Status> {
    let mut md = match read_head(&mut frames).await? {
        Head::Headers(md) => md,
        Head::TrailersOnly(status) if status.code() == tonic::Code::Ok => {
            return Err(Status::internal("Missing response message."));
        }
        Head::TrailersOnly(status) => return Err(status),
    };
    let mut stream = IrohStream::<Resp>::new(frames, codec, Role::Client);
    let msg = match stream.next().await {
        Some(Ok(m)) => m,
        Some(Err(s)) => return Err(s),
        None => return Err(Status::internal("Missing response message.")),
    };
    match stream.next().await {
        None => {}
        Some(Err(s)) => return Err(s),
        Some(Ok(_)) => return Err(Status::internal("protocol error: more than one response message")),
    }
    // As tonic does for unary calls, trailing metadata joins the response metadata.
    if let Some(trailers) = stream.take_trailers() {
        let mut headers = md.into_headers();
        headers.extend(trailers.into_headers());
        md = MetadataMap::from_headers(headers);
    }
    Ok(Response::from_parts(md, msg, response_extensions()))
}

fn streaming_response<Resp: Message>(
    head: Head,
    frames: Frames,
    codec: WireCodec,
    deadline: Option<tokio::time::Instant>,
    writer: Option<AbortOnDrop>,
) -> Result<Response<Streaming<Resp>>, Status> {
    match head {
        Head::Headers(md) => {
            let mut stream = Streaming::from_iroh(IrohStream::new(frames, codec, Role::Client)).with_deadline(deadline);
            if let Some(w) = writer {
                stream = stream.with_guard(CallGuard::Abort(w));
            }
            Ok(Response::from_parts(md, stream, response_extensions()))
        }
        Head::TrailersOnly(status) if status.code() == tonic::Code::Ok => Ok(Response::from_parts(
            MetadataMap::new(),
            Streaming::from_stream(futures_util::stream::empty()),
            response_extensions(),
        )),
        Head::TrailersOnly(status) => Err(status),
    }
}

async fn within<T>(timeout: Option<Duration>, fut: impl Future<Output = Result<T, Status>>) -> Result<T, Status> {
    match timeout {
        Some(t) => tokio::time::timeout(t, fut).await.unwrap_or_else(|_| Err(deadline::exceeded())),
        None => fut.await,
    }
}

/// Writes every request of a stream, then FIN.
async fn pump<Req: Message>(
    mut send: FrameSender,
    stream: impl Stream<Item = Req>,
    codec: WireCodec,
    limit: usize,
) -> Result<(), Status> {
    let mut stream = std::pin::pin!(stream);
    while let Some(msg) = stream.next().await {
        send.message(codec, &msg, limit).await?;
    }
    send.finish();
    Ok(())
}

pub(crate) async fn unary<Req: Message, Resp: Message>(
    conn: Connection,
    req: Request<Req>,
    desc: &'static MethodDesc,
    opts: &CallOptions,
) -> Result<Response<Resp>, Status> {
    let (md, _, msg) = req.into_parts();
    let timeout = deadline::effective(&md, opts.timeout);
    within(timeout, async {
        let body = desc.codec.encode(&msg, opts.limits.max_encoding_message_size)?;
        let (mut send, frames) = open(&conn, desc, md, timeout, opts).await?;
        send.frame(FrameKind::Message, body).await?;
        send.finish();
        read_single(frames, desc.codec).await
    })
    .await
}

pub(crate) async fn server_streaming<Req: Message, Resp: Message>(
    conn: Connection,
    req: Request<Req>,
    desc: &'static MethodDesc,
    opts: &CallOptions,
) -> Result<Response<Streaming<Resp>>, Status> {
    let (md, _, msg) = req.into_parts();
    let timeout = deadline::effective(&md, opts.timeout);
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    within(timeout, async {
        let body = desc.codec.encode(&msg, opts.limits.max_encoding_message_size)?;
        let (mut send, mut frames) = open(&conn, desc, md, timeout, opts).await?;
        send.frame(FrameKind::Message, body).await?;
        send.finish();
        let head = read_head(&mut frames).await?;
        streaming_response(head, frames, desc.codec, deadline, None)
    })
    .await
}

pub(crate) async fn client_streaming<S, Req, Resp>(
    conn: Connection,
    req: Request<S>,
    desc: &'static MethodDesc,
    opts: &CallOptions,
) -> Result<Response<Resp>, Status>
where
    S: Stream<Item = Req> + Send + 'static,
    Req: Message,
    Resp: Message,
{
    let (md, _, stream) = req.into_parts();
    let timeout = deadline::effective(&md, opts.timeout);
    within(timeout, async {
        let (send, frames) = open(&conn, desc, md, timeout, opts).await?;
        let writer = pump(send, stream, desc.codec, opts.limits.max_encoding_message_size);
        let reader = read_single(frames, desc.codec);
        tokio::pin!(writer, reader);
        let mut writing = true;
        loop {
            tokio::select! {
                response = &mut reader => return response,
                written = &mut writer, if writing => {
                    writing = false;
                    // A refused encode is the caller's error; a failed write means the server ended the
                    // call, and its trailer says why.
                    if let Err(status) = written
                        && status.code() == tonic::Code::ResourceExhausted
                    {
                        return Err(status);
                    }
                }
            }
        }
    })
    .await
}

pub(crate) async fn bidi<S, Req, Resp>(
    conn: Connection,
    req: Request<S>,
    desc: &'static MethodDesc,
    opts: &CallOptions,
) -> Result<Response<Streaming<Resp>>, Status>
where
    S: Stream<Item = Req> + Send + 'static,
    Req: Message,
    Resp: Message,
{
    let (md, _, stream) = req.into_parts();
    let timeout = deadline::effective(&md, opts.timeout);
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    let limit = opts.limits.max_encoding_message_size;
    within(timeout, async {
        let (send, mut frames) = open(&conn, desc, md, timeout, opts).await?;
        let task = tokio::spawn(async move {
            if let Err(status) = pump(send, stream, desc.codec, limit).await {
                tracing::debug!(%status, "request stream ended early");
            }
        });
        let writer = AbortOnDrop(task.abort_handle());
        let head = read_head(&mut frames).await?;
        streaming_response(head, frames, desc.codec, deadline, Some(writer))
    })
    .await
}
