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

/// The start of tonic's size-limit messages.
const SIZE_LIMIT_MESSAGES: [&str; 2] =
    ["Error, decoded message length too large", "Error, encoded message length too large"];

fn is_size_limit(code: tonic::Code, message: &str) -> bool {
    code == tonic::Code::OutOfRange && SIZE_LIMIT_MESSAGES.iter().any(|p| message.starts_with(p))
}

/// The same translation on the wire, for the status headers tonic's server writes.
pub(crate) fn fix_size_limit_code(headers: &mut HeaderMap) {
    let code = headers.get("grpc-status").and_then(|s| s.to_str().ok()?.parse::<i32>().ok());
    let message =
        headers.get("grpc-message").map(|m| percent_encoding::percent_decode(m.as_bytes()).decode_utf8_lossy());
    if let (Some(code), Some(message)) = (code, message)
        && is_size_limit(tonic::Code::from_i32(code), &message)
    {
        headers.insert("grpc-status", HeaderValue::from(tonic::Code::ResourceExhausted as i32));
    }
}

/// tonic's client reports size limits as `OUT_OF_RANGE`; duet reports `RESOURCE_EXHAUSTED` on both
/// transports.
pub(crate) fn fix_size_limit_status(status: tonic::Status) -> tonic::Status {
    if is_size_limit(status.code(), status.message()) {
        tonic::Status::resource_exhausted(status.message().to_owned())
    } else {
        status
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tonic_size_errors_on_the_wire_become_resource_exhausted_and_others_stay() {
        let mut headers = HeaderMap::new();
        headers.insert("grpc-status", HeaderValue::from_static("11"));
        headers.insert(
            "grpc-message",
            HeaderValue::from_static("Error,%20decoded%20message%20length%20too%20large:%20found"),
        );
        fix_size_limit_code(&mut headers);
        assert_eq!(headers.get("grpc-status").unwrap(), "8");

        let mut other = HeaderMap::new();
        other.insert("grpc-status", HeaderValue::from_static("11"));
        other.insert("grpc-message", HeaderValue::from_static("index%20out%20of%20range"));
        fix_size_limit_code(&mut other);
        assert_eq!(other.get("grpc-status").unwrap(), "11");
    }
}
