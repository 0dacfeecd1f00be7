//! A tower layer around duet's tonic services, so gRPC behaves as duet's Iroh wire does:
//!
//! - trailing metadata a handler attached with [`crate::Trailers`] is sent in the HTTP/2 trailers;
//! - tonic's size-limit errors (`OUT_OF_RANGE`) are reported as `RESOURCE_EXHAUSTED`, the code the gRPC
//!   spec and the C-core, Go and Java implementations use.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::{HeaderMap, HeaderValue};
use http_body::{Body as HttpBody, Frame, SizeHint};
use tower::{Layer, Service};

use crate::Trailers;

const OUT_OF_RANGE: &str = "11";
const RESOURCE_EXHAUSTED: &[u8] = b"8";
/// The start of tonic's size-limit messages, percent-encoded as they travel in `grpc-message`.
const SIZE_LIMIT_PREFIXES: [&str; 2] =
    ["Error,%20decoded%20message%20length%20too%20large", "Error,%20encoded%20message%20length%20too%20large"];

pub(crate) fn fix_size_limit_code(headers: &mut HeaderMap) {
    let is_size_error = headers.get("grpc-status").is_some_and(|s| s == OUT_OF_RANGE)
        && headers
            .get("grpc-message")
            .and_then(|m| m.to_str().ok())
            .is_some_and(|m| SIZE_LIMIT_PREFIXES.iter().any(|p| m.starts_with(p)));
    if is_size_error {
        headers.insert("grpc-status", HeaderValue::from_static(std::str::from_utf8(RESOURCE_EXHAUSTED).unwrap()));
    }
}

/// tonic's client reports size limits as `OUT_OF_RANGE`; duet reports `RESOURCE_EXHAUSTED` on both
/// transports.
pub(crate) fn fix_size_limit_status(status: tonic::Status) -> tonic::Status {
    let msg = status.message();
    let is_size_error = status.code() == tonic::Code::OutOfRange
        && (msg.starts_with("Error, decoded message length too large")
            || msg.starts_with("Error, encoded message length too large"));
    if is_size_error { tonic::Status::resource_exhausted(msg.to_owned()) } else { status }
}

/// The layer duet puts on its gRPC router.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct DuetGrpcLayer;

impl<S> Layer<S> for DuetGrpcLayer {
    type Service = DuetGrpcService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        DuetGrpcService { inner }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct DuetGrpcService<S> {
    inner: S,
}

impl<S, B> Service<http::Request<B>> for DuetGrpcService<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let fut = self.inner.call(req);
        Box::pin(async move {
            let mut resp = fut.await?;
            // A trailers-only response carries its status in the headers.
            fix_size_limit_code(resp.headers_mut());
            let extra = resp.extensions_mut().remove::<Trailers>().map(|t| t.0.into_headers());
            Ok(resp.map(|body| tonic::body::Body::new(TrailerBody { inner: body, extra })))
        })
    }
}

struct TrailerBody {
    inner: tonic::body::Body,
    extra: Option<HeaderMap>,
}

impl HttpBody for TrailerBody {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        Poll::Ready(frame.map(|f| {
            f.map(|frame| match frame.into_trailers() {
                Ok(mut trailers) => {
                    fix_size_limit_code(&mut trailers);
                    if let Some(extra) = self.extra.take() {
                        // User metadata never overrides gRPC's own status headers.
                        for (name, value) in extra.iter() {
                            if !name.as_str().starts_with("grpc-") {
                                trailers.append(name.clone(), value.clone());
                            }
                        }
                    }
                    Frame::trailers(trailers)
                }
                Err(frame) => frame,
            })
        }))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
