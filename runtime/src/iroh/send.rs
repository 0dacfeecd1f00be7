//! Writing frames to a QUIC send stream.

use iroh::endpoint::SendStream;
use serde::Serialize;

use super::CANCEL;
use super::frame::FrameKind;
use super::frame_buf::{Chunks, FrameBuf};
use super::wire::Trailer;
use crate::codec::{Message, WireCodec};
use tonic::Status;

/// The sending half of a call. Dropping it before [`FrameSender::finish`] resets the stream, so the
/// peer sees an abandoned call, never a clean end of a half-sent stream.
pub(crate) struct FrameSender {
    stream: SendStream,
    finished: bool,
    mid_frame: bool,
}

impl FrameSender {
    pub fn new(stream: SendStream) -> Self {
        Self { stream, finished: false, mid_frame: false }
    }

    pub fn stream(&self) -> &SendStream {
        &self.stream
    }

    /// True while a frame is half written (a future writing it was dropped): no further frame can follow.
    pub fn mid_frame(&self) -> bool {
        self.mid_frame
    }

    /// Writes frames gathered in one buffer with one write, then finishes the stream if `finish`: a
    /// small unary call or reply then costs one pass through the QUIC stream's lock and usually one
    /// packet, where a write per frame would wake the connection once per frame.
    pub async fn write(&mut self, frames: FrameBuf, finish: bool) -> Result<(), Status> {
        self.mid_frame = true;
        let written = match frames.into_chunks() {
            Chunks::One(chunk) => self.stream.write_chunk(chunk).await,
            Chunks::Many(mut chunks) => self.stream.write_all_chunks(&mut chunks).await,
        };
        written.map_err(|e| super::status_from_io(&e.into()))?;
        self.mid_frame = false;
        if finish {
            self.finish();
        }
        Ok(())
    }

    pub async fn message<T: Message>(
        &mut self,
        codec: WireCodec,
        compression: Option<crate::compression::CompressionEncoding>,
        msg: &T,
        limit: usize,
    ) -> Result<(), Status> {
        let mut frames = FrameBuf::new();
        frames.message_as(codec, compression, msg, limit)?;
        self.write(frames, false).await
    }

    /// Writes one header-like frame (request header, response header, trailer) and finishes the
    /// stream if `finish`.
    pub async fn header<T: Serialize>(&mut self, kind: FrameKind, value: &T, finish: bool) -> Result<(), Status> {
        let mut frames = FrameBuf::new();
        frames.header(kind, value);
        self.write(frames, finish).await
    }

    pub async fn trailer(&mut self, trailer: &Trailer) -> Result<(), Status> {
        self.header(FrameKind::Trailer, trailer, true).await
    }

    pub fn finish(&mut self) {
        self.finished = true;
        let _ = self.stream.finish();
    }
}

impl Drop for FrameSender {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.stream.reset(CANCEL);
        }
    }
}
