//! Writing frames to a QUIC send stream.

use bytes::Bytes;
use iroh::endpoint::SendStream;

use super::CANCEL;
use super::frame::{FrameKind, frame_prefix};
use super::wire::{self, Trailer};
use crate::Status;
use crate::codec::{Message, WireCodec};

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

    pub async fn frame(&mut self, kind: FrameKind, body: Bytes) -> Result<(), Status> {
        let mut chunks = [frame_prefix(kind, body.len()), body];
        self.mid_frame = true;
        self.stream.write_all_chunks(&mut chunks).await.map_err(|e| super::status_from_io(&e.into()))?;
        self.mid_frame = false;
        Ok(())
    }

    /// Writes several frames with one write, then finishes the stream if `finish`: a small unary call
    /// or reply then costs one pass through the QUIC stream's lock and usually one packet, where a
    /// write per frame would wake the connection once per frame.
    pub async fn frames(
        &mut self,
        frames: impl IntoIterator<Item = (FrameKind, Bytes)>,
        finish: bool,
    ) -> Result<(), Status> {
        let mut chunks: Vec<Bytes> = Vec::with_capacity(6);
        for (kind, body) in frames {
            chunks.push(frame_prefix(kind, body.len()));
            chunks.push(body);
        }
        self.mid_frame = true;
        self.stream.write_all_chunks(&mut chunks).await.map_err(|e| super::status_from_io(&e.into()))?;
        self.mid_frame = false;
        if finish {
            self.finish();
        }
        Ok(())
    }

    pub async fn message<T: Message>(&mut self, codec: WireCodec, msg: &T, limit: usize) -> Result<(), Status> {
        let body = codec.encode(msg, limit)?;
        self.frame(FrameKind::Message, body).await
    }

    pub async fn trailer(&mut self, trailer: &Trailer) -> Result<(), Status> {
        self.frame(FrameKind::Trailer, wire::encode(trailer)).await?;
        self.finish();
        Ok(())
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
