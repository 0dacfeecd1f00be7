//! Reading frames from a QUIC receive stream as a stream of messages.

use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures_util::Stream;
use iroh::endpoint::RecvStream;
use tokio::task::AbortHandle;
use tokio_util::codec::FramedRead;
use tonic::metadata::MetadataMap;

use super::frame::{Frame, FrameDecoder, FrameKind};
use crate::codec::{Message, WireCodec};
use crate::compression::CompressionEncoding;
use tonic::Status;

pub(crate) type Frames = FramedRead<RecvStream, FrameDecoder>;

pub(crate) fn frames(recv: RecvStream, max_message: usize) -> Frames {
    // tokio-util's default 8 KiB buffer: every later buffer of the stream starts from its size once
    // a frame is split off, and a smaller one makes a stream of large messages take several reads
    // (each through the connection's lock) to find each frame's length.
    FramedRead::new(recv, FrameDecoder::new(max_message))
}

/// Reads the end of the stream if it has already arrived, without waiting for it. A receive stream
/// dropped before its end was read makes the QUIC stack wake the connection and send `STOP_SENDING`,
/// which costs both ends a wakeup per call; after the last frame of a single-message request or
/// of a response, the FIN has usually come in the same packet.
pub(crate) fn read_end_if_there(frames: &mut Frames) {
    use futures_util::{FutureExt, StreamExt};
    let _ = frames.next().now_or_never();
}

/// Which end of a call is reading: the client's stream ends with a trailer, the server's with FIN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Client,
    Server,
}

/// Aborts the task writing a bidi call's requests when the response stream is dropped.
pub(crate) struct AbortOnDrop(pub AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Decodes a message frame's body, decompressing it first (within `limit`) if it is a compressed
/// one; a compressed frame on a call that named no encoding is a protocol error.
pub(crate) fn decode_message<T: Message>(
    codec: WireCodec,
    compression: Option<CompressionEncoding>,
    kind: FrameKind,
    body: &Bytes,
    limit: usize,
) -> Result<T, Status> {
    match (kind, compression) {
        (FrameKind::CompressedMessage, Some(encoding)) => {
            codec.decode_shared(&crate::compression::decompress(encoding, body, limit)?)
        }
        (FrameKind::CompressedMessage, None) => {
            Err(Status::internal("protocol error: a compressed message on a call that named no grpc-encoding"))
        }
        _ => codec.decode_shared(body),
    }
}

pub(crate) struct IrohStream<T> {
    frames: Frames,
    codec: WireCodec,
    compression: Option<CompressionEncoding>,
    limit: usize,
    role: Role,
    done: bool,
    trailers: Option<MetadataMap>,
    _msg: PhantomData<fn() -> T>,
}

impl<T> IrohStream<T> {
    pub fn new(frames: Frames, codec: WireCodec, role: Role) -> Self {
        let limit = frames.decoder().max_message();
        Self { frames, codec, compression: None, limit, role, done: false, trailers: None, _msg: PhantomData }
    }

    /// Decompresses compressed message frames with `encoding`.
    pub fn compressed(mut self, encoding: Option<CompressionEncoding>) -> Self {
        self.compression = encoding;
        self
    }

    pub fn take_trailers(&mut self) -> Option<MetadataMap> {
        self.trailers.take()
    }

    fn on_frame(&mut self, frame: Frame) -> Option<Result<T, Status>>
    where
        T: Message,
    {
        match (frame.kind, self.role) {
            (FrameKind::Message | FrameKind::CompressedMessage, _) => {
                let decoded = decode_message(self.codec, self.compression, frame.kind, &frame.body, self.limit);
                self.done = decoded.is_err();
                Some(decoded)
            }
            (FrameKind::Trailer, Role::Client) => {
                self.done = true;
                let status = super::parse_trailer(&frame.body);
                if status.code() == tonic::Code::Ok {
                    self.trailers = Some(status.metadata().clone());
                    None
                } else {
                    Some(Err(status))
                }
            }
            (kind, _) => {
                self.done = true;
                Some(Err(super::unexpected(kind)))
            }
        }
    }
}

impl<T: Message> Stream for IrohStream<T> {
    type Item = Result<T, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        loop {
            let next = ready!(Pin::new(&mut this.frames).poll_next(cx));
            let item = match next {
                Some(Ok(frame)) => this.on_frame(frame),
                Some(Err(e)) => {
                    this.done = true;
                    Some(Err(e.to_status()))
                }
                None => {
                    this.done = true;
                    match this.role {
                        Role::Server => None,
                        Role::Client => Some(Err(Status::internal("protocol error: stream ended without a trailer"))),
                    }
                }
            };
            // A successful trailer ends the stream: `None` from `on_frame` with `done` set.
            if item.is_some() || this.done {
                return Poll::Ready(item);
            }
        }
    }
}
