//! Writing a handler's reply: response header, messages (compressed when negotiated), trailer.

use std::future::Future;

use futures_util::StreamExt;
use http::Extensions;
use tonic::metadata::MetadataMap;

use crate::codec::{Message, WireCodec};
use crate::compression::CompressionEncoding;
use crate::iroh::frame::FrameKind;
use crate::iroh::frame_buf::FrameBuf;
use crate::iroh::send::FrameSender;
use crate::iroh::wire::ResponseHeader;
use crate::iroh::{ok_trailer, trailer_from_status};
use crate::metadata_wire;
use crate::streaming::BoxStream;
use crate::trailers::Trailers;
use tonic::Response;
use tonic::Status;

/// What a handler answered: one message, or a stream of them.
pub(super) enum Reply<T> {
    One(Response<T>),
    Many(Response<BoxStream<T>>),
}

/// A reply's body, kept aside while its head goes back up through the middleware.
pub(super) enum ReplyBody<T> {
    One(T),
    Many(BoxStream<T>),
}

impl<T> Reply<T> {
    pub(super) fn split(self) -> (Response<()>, ReplyBody<T>) {
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

    pub(super) fn join(head: Response<()>, body: ReplyBody<T>) -> Self {
        let (md, (), ext) = head.into_parts();
        match body {
            ReplyBody::One(b) => Reply::One(Response::from_parts(md, b, ext)),
            ReplyBody::Many(b) => Reply::Many(Response::from_parts(md, b, ext)),
        }
    }
}

/// Writes the handler's reply; returns the code the call ended with.
pub(super) async fn respond<Resp: Message>(
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

fn success_trailer(ext: &mut Extensions) -> crate::iroh::wire::Trailer {
    let mut trailer = ok_trailer();
    if let Some(Trailers(md)) = ext.remove::<Trailers>() {
        trailer.metadata = metadata_wire::to_wire(md);
    }
    trailer
}
