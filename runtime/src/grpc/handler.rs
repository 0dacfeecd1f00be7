//! The gRPC side of a generated service: tonic's server call for each of the four call shapes,
//! written once here so that the generated code only matches a path to its handler. The generated
//! code names nothing of tonic's but the service traits, so a user's crate needs only `duet`.

use std::convert::Infallible;
use std::future::Future;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use tonic::body::Body;
use tonic::codec::EnabledCompressionEncodings;
use tonic::codegen::{Body as HttpBody, StdError, http};
use tonic::server::Grpc;
use tonic::{Request, Response, Status};
use tonic_prost::ProstCodec;

use crate::codec::Message;
use crate::compression::Compression;
use crate::limits::Limits;
use crate::streaming::{BoxStream, Streaming};

/// What serving one gRPC request comes to: an HTTP response (a failed call is a response too).
pub type GrpcFuture = BoxFuture<'static, Result<http::Response<Body>, Infallible>>;

/// The message limits and compression one service is served with, as tonic's generated servers hold
/// them.
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcSettings {
    accept: EnabledCompressionEncodings,
    send: EnabledCompressionEncodings,
    max_decoding: Option<usize>,
    max_encoding: Option<usize>,
}

impl GrpcSettings {
    /// The server's limits and compression.
    pub fn new(limits: &Limits, compression: &Compression) -> Self {
        let mut settings = Self {
            max_decoding: Some(limits.max_decoding_message_size),
            max_encoding: Some(limits.max_encoding_message_size),
            ..Self::default()
        };
        if let Some(encoding) = compression.sends() {
            settings.send.enable(encoding);
        }
        for encoding in compression.accepted() {
            settings.accept.enable(*encoding);
        }
        settings
    }

    /// The largest request message accepted (tonic's default: 4 MiB).
    pub fn max_decoding_message_size(mut self, limit: usize) -> Self {
        self.max_decoding = Some(limit);
        self
    }

    /// The largest response message sent (tonic's default: no limit).
    pub fn max_encoding_message_size(mut self, limit: usize) -> Self {
        self.max_encoding = Some(limit);
        self
    }

    /// Compresses responses with `encoding` when the client accepts it.
    pub fn send_compressed(mut self, encoding: tonic::codec::CompressionEncoding) -> Self {
        self.send.enable(encoding);
        self
    }

    /// Accepts requests compressed with `encoding`.
    pub fn accept_compressed(mut self, encoding: tonic::codec::CompressionEncoding) -> Self {
        self.accept.enable(encoding);
        self
    }

    fn grpc<Resp, Req>(&self) -> Grpc<ProstCodec<Resp, Req>>
    where
        Resp: prost::Message + Send + 'static,
        Req: prost::Message + Default + Send + 'static,
    {
        Grpc::new(ProstCodec::default())
            .apply_compression_config(self.accept, self.send)
            .apply_max_message_size_config(self.max_decoding, self.max_encoding)
    }
}

/// A handler called once, as tonic's service traits want it: a tower service over the request.
struct Once<F>(Option<F>);

impl<F> Once<F> {
    fn take(&mut self) -> F {
        self.0.take().expect("tonic calls a method's service once per request")
    }
}

impl<Req, Resp, F, Fut> tower::Service<Request<Req>> for Once<F>
where
    F: FnOnce(Request<Req>) -> Fut,
    Fut: Future<Output = Result<Response<Resp>, Status>>,
{
    type Response = Response<Resp>;
    type Error = Status;
    type Future = Fut;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Req>) -> Fut {
        (self.take())(request)
    }
}

/// A handler of a request stream: it reads the messages through duet's transport-neutral
/// [`Streaming`].
struct OnceStreaming<F>(Once<F>);

impl<Req: Message, Resp, F, Fut> tower::Service<Request<tonic::Streaming<Req>>> for OnceStreaming<F>
where
    F: FnOnce(Request<Streaming<Req>>) -> Fut,
    Fut: Future<Output = Result<Response<Resp>, Status>>,
{
    type Response = Response<Resp>;
    type Error = Status;
    type Future = Fut;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<tonic::Streaming<Req>>) -> Fut {
        (self.0.take())(request.map(Streaming::from_grpc))
    }
}

/// Serves a unary call.
pub fn unary<Req, Resp, B, F, Fut>(settings: GrpcSettings, request: http::Request<B>, handler: F) -> GrpcFuture
where
    Req: Message,
    Resp: Message,
    B: HttpBody + Send + 'static,
    B::Error: Into<StdError> + Send,
    F: FnOnce(Request<Req>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Response<Resp>, Status>> + Send + 'static,
{
    Box::pin(async move { Ok(settings.grpc::<Resp, Req>().unary(Once(Some(handler)), request).await) })
}

/// Serves a server-streaming call.
pub fn server_streaming<Req, Resp, B, F, Fut>(
    settings: GrpcSettings,
    request: http::Request<B>,
    handler: F,
) -> GrpcFuture
where
    Req: Message,
    Resp: Message,
    B: HttpBody + Send + 'static,
    B::Error: Into<StdError> + Send,
    F: FnOnce(Request<Req>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Response<BoxStream<Resp>>, Status>> + Send + 'static,
{
    Box::pin(async move { Ok(settings.grpc::<Resp, Req>().server_streaming(Once(Some(handler)), request).await) })
}

/// Serves a client-streaming call.
pub fn client_streaming<Req, Resp, B, F, Fut>(
    settings: GrpcSettings,
    request: http::Request<B>,
    handler: F,
) -> GrpcFuture
where
    Req: Message,
    Resp: Message,
    B: HttpBody + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
    F: FnOnce(Request<Streaming<Req>>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Response<Resp>, Status>> + Send + 'static,
{
    let handler = OnceStreaming(Once(Some(handler)));
    Box::pin(async move { Ok(settings.grpc::<Resp, Req>().client_streaming(handler, request).await) })
}

/// Serves a bidirectional-streaming call.
pub fn bidi<Req, Resp, B, F, Fut>(settings: GrpcSettings, request: http::Request<B>, handler: F) -> GrpcFuture
where
    Req: Message,
    Resp: Message,
    B: HttpBody + Send + 'static,
    B::Error: Into<StdError> + Send,
    F: FnOnce(Request<Streaming<Req>>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Response<BoxStream<Resp>>, Status>> + Send + 'static,
{
    let handler = OnceStreaming(Once(Some(handler)));
    Box::pin(async move { Ok(settings.grpc::<Resp, Req>().streaming(handler, request).await) })
}

/// The answer to a path the service does not have: `UNIMPLEMENTED` with no body, as tonic's
/// generated servers answer it.
pub fn unimplemented() -> GrpcFuture {
    Box::pin(async {
        let mut response = http::Response::new(Body::default());
        let headers = response.headers_mut();
        headers.insert(Status::GRPC_STATUS, (tonic::Code::Unimplemented as i32).into());
        headers.insert(http::header::CONTENT_TYPE, tonic::metadata::GRPC_CONTENT_TYPE);
        Ok(response)
    })
}
