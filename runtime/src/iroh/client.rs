//! The client side of one call on the Iroh wire.
//!
//! Every step reports how far the call got ([`Failure`]), which is what Dual mode needs to decide
//! whether a call may be retried over gRPC: not at all once the server answered, only for idempotent
//! methods once the request may have left, always before.

use futures_util::{Stream, StreamExt};
use http::Extensions;
use iroh::endpoint::{Connection, RecvStream, SendStream};
use tonic::metadata::MetadataMap;

use super::frame::{Frame, FrameKind};
use super::frame_buf::FrameBuf;
use super::recv::{self, AbortOnDrop, Frames, IrohStream, Role};
use super::send::FrameSender;
use super::wire::{RequestHeader, ResponseHeader};
use crate::call::CallOptions;
use crate::call::Transport;
use crate::codec::{Message, WireCodec};
use crate::compression::{Compression, CompressionEncoding};
use crate::deadline::{Deadline, GRPC_TIMEOUT_KEY};
use crate::metadata_wire;
use crate::method::MethodDesc;
use crate::streaming::CallGuard;
use crate::streaming::Streaming;
use tonic::Request;
use tonic::Response;
use tonic::Status;

/// How far a failed call got.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Nothing reached the server: safe to send elsewhere.
    NotSent(Status),
    /// The transport failed after the request may have left: the server may have run it.
    Lost(Status),
    /// The server (or the deadline) gave a final answer.
    Answered(Status),
}

impl Failure {
    pub fn into_status(self) -> Status {
        match self {
            Failure::NotSent(s) | Failure::Lost(s) | Failure::Answered(s) => s,
        }
    }
}

/// A frame that does not decode is a final answer from a broken or hostile peer (the server may have
/// run the call); only a transport failure leaves the outcome unknown.
fn frame_failure(e: super::frame::FrameError) -> Failure {
    match e {
        super::frame::FrameError::Io(_) => Failure::Lost(e.to_status()),
        _ => Failure::Answered(e.to_status()),
    }
}

/// A new stream for one call. QUIC sends nothing until the first write, so a failure here is `NotSent`.
pub(crate) async fn open_stream(conn: &Connection) -> Result<(SendStream, RecvStream), Failure> {
    conn.open_bi().await.map_err(|e| Failure::NotSent(Status::unavailable(format!("cannot open an Iroh stream: {e}"))))
}

enum Head {
    /// Response metadata, and the encoding of the response's compressed messages.
    Headers(MetadataMap, Option<CompressionEncoding>),
    /// A response with no messages: the status it ended with (OK or not).
    TrailersOnly(Status),
}

async fn start(
    (send, recv): (SendStream, RecvStream),
    desc: &MethodDesc,
    mut md: MetadataMap,
    deadline: Deadline,
    opts: &CallOptions,
) -> Result<(FrameSender, Frames), Failure> {
    opts.compression.mark_request(&mut md);
    let mut send = FrameSender::new(send);
    send.header(FrameKind::RequestHeader, &request_header(desc, md, deadline), false).await.map_err(Failure::Lost)?;
    Ok((send, recv::frames(recv, opts.limits.max_decoding_message_size)))
}

/// The request header, with what is left of the deadline as the request leaves; the deadline travels
/// once, as `timeout_micros`, not also as `grpc-timeout` metadata (the server puts that back).
fn request_header(desc: &MethodDesc, mut md: MetadataMap, deadline: Deadline) -> RequestHeader<'static> {
    if !md.is_empty() {
        md.remove(&*GRPC_TIMEOUT_KEY);
    }
    let timeout = deadline.remaining();
    RequestHeader {
        path: desc.path.into(),
        metadata: metadata_wire::to_wire(md),
        timeout_micros: timeout.map(|t| u64::try_from(t.as_micros()).unwrap_or(u64::MAX)),
        fingerprint: desc.fingerprint,
    }
}

/// Sends a whole single-message request (header, message, end of stream) in one write: the unary and
/// server-streaming calls' request, for which nothing needs to interleave.
async fn send_whole_request<Req: Message>(
    (send, recv): (SendStream, RecvStream),
    desc: &MethodDesc,
    mut md: MetadataMap,
    deadline: Deadline,
    opts: &CallOptions,
    msg: &Req,
) -> Result<(FrameSender, Frames), Failure> {
    opts.compression.mark_request(&mut md);
    let mut request = FrameBuf::new();
    request.header(FrameKind::RequestHeader, &request_header(desc, md, deadline));
    // Refused before anything is written: the server sees at most an empty stream, which it ignores.
    request
        .message_as(desc.codec, opts.compression.sends(), msg, opts.limits.max_encoding_message_size)
        .map_err(Failure::Answered)?;
    let mut send = FrameSender::new(send);
    let mut frames = recv::frames(recv, opts.limits.max_decoding_message_size);
    match send.write(request, true).await {
        Ok(()) => Ok((send, frames)),
        // As for a message that could not be written: the server may have refused the call already.
        Err(status) => match read_head(&mut frames, &opts.compression).await {
            Ok(Head::TrailersOnly(answer)) => Err(Failure::Answered(answer)),
            _ => Err(Failure::NotSent(status)),
        },
    }
}

async fn read_head(frames: &mut Frames, compression: &Compression) -> Result<Head, Failure> {
    match frames.next().await {
        Some(Ok(Frame { kind: FrameKind::ResponseHeader, body })) => {
            let header: ResponseHeader = postcard::from_bytes(&body)
                .map_err(|e| Failure::Answered(Status::internal(format!("malformed response header: {e}"))))?;
            let md = metadata_wire::from_wire(header.metadata).map_err(Failure::Answered)?;
            let encoding = compression.incoming(&md).map_err(Failure::Answered)?;
            Ok(Head::Headers(md, encoding))
        }
        Some(Ok(Frame { kind: FrameKind::Trailer, body })) => Ok(Head::TrailersOnly(super::parse_trailer(&body))),
        Some(Ok(Frame { kind, .. })) => Err(Failure::Answered(super::unexpected(kind))),
        Some(Err(e)) => Err(frame_failure(e)),
        None => Err(Failure::Lost(Status::unavailable("the server closed the stream without a response"))),
    }
}

fn response_extensions() -> Extensions {
    let mut ext = Extensions::new();
    ext.insert(Transport::Iroh);
    ext
}

/// Reads the single response message and the trailer that follows it.
async fn read_single<Resp: Message>(
    mut frames: Frames,
    codec: WireCodec,
    compression: &Compression,
) -> Result<Response<Resp>, Failure> {
    let (mut md, encoding) = match read_head(&mut frames, compression).await? {
        Head::Headers(md, encoding) => (md, encoding),
        Head::TrailersOnly(status) if status.code() == tonic::Code::Ok => {
            return Err(Failure::Answered(Status::internal("Missing response message.")));
        }
        Head::TrailersOnly(status) => return Err(Failure::Answered(status)),
    };
    let mut msg = None;
    loop {
        match frames.next().await {
            Some(Ok(Frame { kind: kind @ (FrameKind::Message | FrameKind::CompressedMessage), body }))
                if msg.is_none() =>
            {
                let limit = frames.decoder().max_message();
                msg = Some(recv::decode_message(codec, encoding, kind, &body, limit).map_err(Failure::Answered)?);
            }
            Some(Ok(Frame { kind: FrameKind::Trailer, body })) => {
                let mut status = super::parse_trailer(&body);
                if status.code() != tonic::Code::Ok {
                    return Err(Failure::Answered(status));
                }
                let msg = msg.ok_or_else(|| Failure::Answered(Status::internal("Missing response message.")))?;
                recv::read_end_if_there(&mut frames);
                // As tonic does for unary calls, trailing metadata joins the response metadata.
                let trailing = std::mem::take(status.metadata_mut());
                if !trailing.is_empty() {
                    let mut headers = md.into_headers();
                    headers.extend(trailing.into_headers());
                    md = MetadataMap::from_headers(headers);
                }
                return Ok(Response::from_parts(md, msg, response_extensions()));
            }
            Some(Ok(Frame { kind, .. })) => {
                return Err(Failure::Answered(super::unexpected(kind)));
            }
            Some(Err(e)) => return Err(frame_failure(e)),
            None => return Err(Failure::Lost(Status::unavailable("the server closed the stream without a trailer"))),
        }
    }
}

fn streaming_response<Resp: Message>(
    head: Head,
    frames: Frames,
    codec: WireCodec,
    deadline: Option<tokio::time::Instant>,
    writer: Option<AbortOnDrop>,
) -> Result<Response<Streaming<Resp>>, Failure> {
    match head {
        Head::Headers(md, encoding) => {
            let stream = IrohStream::new(frames, codec, Role::Client).compressed(encoding);
            let mut stream = Streaming::from_iroh(stream).with_deadline(deadline);
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
        Head::TrailersOnly(status) => Err(Failure::Answered(status)),
    }
}

/// Writes every request of a stream, then FIN.
async fn pump<Req: Message>(
    mut send: FrameSender,
    stream: impl Stream<Item = Req>,
    codec: WireCodec,
    compression: Option<CompressionEncoding>,
    limit: usize,
) -> Result<(), Status> {
    let mut stream = std::pin::pin!(stream);
    while let Some(msg) = stream.next().await {
        send.message(codec, compression, &msg, limit).await?;
    }
    send.finish();
    Ok(())
}

pub(crate) async fn unary<Req: Message, Resp: Message>(
    stream: (SendStream, RecvStream),
    req: Request<Req>,
    desc: &'static MethodDesc,
    opts: &CallOptions,
    deadline: Deadline,
) -> Result<Response<Resp>, Failure> {
    let (md, _, msg) = req.into_parts();
    deadline
        .bound(
            async {
                let (_send, frames) = send_whole_request(stream, desc, md, deadline, opts, &msg).await?;
                read_single(frames, desc.codec, &opts.compression).await
            },
            Failure::Answered,
        )
        .await
}

pub(crate) async fn server_streaming<Req: Message, Resp: Message>(
    stream: (SendStream, RecvStream),
    req: Request<Req>,
    desc: &'static MethodDesc,
    opts: &CallOptions,
    deadline: Deadline,
) -> Result<Response<Streaming<Resp>>, Failure> {
    let (md, _, msg) = req.into_parts();
    deadline
        .bound(
            async {
                let (_send, mut frames) = send_whole_request(stream, desc, md, deadline, opts, &msg).await?;
                let head = read_head(&mut frames, &opts.compression).await?;
                streaming_response(head, frames, desc.codec, deadline.instant(), None)
            },
            Failure::Answered,
        )
        .await
}

pub(crate) async fn client_streaming<S, Req, Resp>(
    stream: (SendStream, RecvStream),
    req: Request<S>,
    desc: &'static MethodDesc,
    opts: &CallOptions,
    deadline: Deadline,
) -> Result<Response<Resp>, Failure>
where
    S: Stream<Item = Req> + Send + 'static,
    Req: Message,
    Resp: Message,
{
    let (md, _, requests) = req.into_parts();
    deadline
        .bound(
            async {
                let (send, frames) = start(stream, desc, md, deadline, opts).await?;
                let writer =
                    pump(send, requests, desc.codec, opts.compression.sends(), opts.limits.max_encoding_message_size);
                let reader = read_single(frames, desc.codec, &opts.compression);
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
                                return Err(Failure::Answered(status));
                            }
                        }
                    }
                }
            },
            Failure::Answered,
        )
        .await
}

pub(crate) async fn bidi<S, Req, Resp>(
    stream: (SendStream, RecvStream),
    req: Request<S>,
    desc: &'static MethodDesc,
    opts: &CallOptions,
    deadline: Deadline,
) -> Result<Response<Streaming<Resp>>, Failure>
where
    S: Stream<Item = Req> + Send + 'static,
    Req: Message,
    Resp: Message,
{
    let (md, _, requests) = req.into_parts();
    let limit = opts.limits.max_encoding_message_size;
    let compression = opts.compression.sends();
    deadline
        .bound(
            async {
                let (send, mut frames) = start(stream, desc, md, deadline, opts).await?;
                let task = tokio::spawn(async move {
                    if let Err(status) = pump(send, requests, desc.codec, compression, limit).await {
                        tracing::debug!(%status, "request stream ended early");
                    }
                });
                let writer = AbortOnDrop(task.abort_handle());
                let head = read_head(&mut frames, &opts.compression).await?;
                streaming_response(head, frames, desc.codec, deadline.instant(), Some(writer))
            },
            Failure::Answered,
        )
        .await
}
