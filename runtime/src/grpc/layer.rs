//! A tower layer around duet's tonic services, so gRPC behaves as duet's Iroh wire does:
//!
//! - the server's middleware stack runs around every call, and every call is observed (span,
//!   trace context, metrics) as on Iroh;
//! - trailing metadata a handler attached with [`crate::Trailers`] is sent in the HTTP/2 trailers;
//! - tonic's size-limit errors (`OUT_OF_RANGE`) are reported as `RESOURCE_EXHAUSTED`, the code the gRPC
//!   spec and the C-core, Go and Java implementations use;
//! - a status message longer than [`crate::MAX_STATUS_MESSAGE_BYTES`] is cut, as on Iroh.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use rustc_hash::FxHashMap;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue};
use http_body::{Body as HttpBody, Frame, SizeHint};
use tonic::metadata::MetadataMap;
use tower::{Layer, Service, ServiceExt};
use tracing::Instrument;

use std::borrow::Cow;

use crate::call::{MAX_STATUS_MESSAGE_BYTES, Transport, fit_status_message};
use crate::method::MethodDesc;
use crate::middleware::{BoxError, CallInfo, Plan, Stack, check, into_status, run};
use crate::observe::{Served, serve_span};
use crate::trailers::Trailers;
use tonic::Request;
use tonic::Response;
use tonic::Status;

/// The start of tonic's size-limit messages.
const SIZE_LIMIT_MESSAGES: [&str; 2] =
    ["Error, decoded message length too large", "Error, encoded message length too large"];

fn is_size_limit(code: tonic::Code, message: &str) -> bool {
    code == tonic::Code::OutOfRange && SIZE_LIMIT_MESSAGES.iter().any(|p| message.starts_with(p))
}

/// The status headers, as names: looked up by `&str`, a name is parsed on every call.
static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
static GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");

/// The code in a header map's `grpc-status`, if it has one (`UNKNOWN` if it cannot be read, as
/// tonic reads it); unlike `Status::from_header_map` it copies nothing.
fn status_code(headers: &HeaderMap) -> Option<tonic::Code> {
    headers.get(&GRPC_STATUS).map(|v| tonic::Code::from_bytes(v.as_bytes()))
}

/// Bytes percent-encoded in `grpc-message` (the gRPC spec: anything outside printable ASCII, and `%`);
/// `utf8_percent_encode` encodes every non-ASCII byte too.
const GRPC_MESSAGE_ENCODE: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS.add(b'%');

/// Brings the status headers tonic's server writes in line with the Iroh wire: size-limit errors
/// are `RESOURCE_EXHAUSTED`, and a message longer than [`MAX_STATUS_MESSAGE_BYTES`] is cut as on
/// Iroh (whole, it could overflow the client's header limit and fail the call `INTERNAL`).
pub(crate) fn fix_status_headers(headers: &mut HeaderMap) {
    let Some(encoded) = headers.get(&GRPC_MESSAGE) else { return };
    // Each byte of a message takes one to three on the wire: a short header needs no decoding.
    let long = encoded.len() > MAX_STATUS_MESSAGE_BYTES;
    let size_limit = status_code(headers) == Some(tonic::Code::OutOfRange);
    if !long && !size_limit {
        return;
    }
    let message = percent_encoding::percent_decode(encoded.as_bytes()).decode_utf8_lossy().into_owned();
    if size_limit && is_size_limit(tonic::Code::OutOfRange, &message) {
        headers.insert(&GRPC_STATUS, HeaderValue::from(tonic::Code::ResourceExhausted as i32));
    }
    if let Cow::Owned(cut) = fit_status_message(&message) {
        let value = percent_encoding::utf8_percent_encode(&cut, GRPC_MESSAGE_ENCODE).to_string();
        headers.insert(&GRPC_MESSAGE, HeaderValue::try_from(value).expect("percent-encoded text is a valid header"));
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

/// What the gRPC side of a server runs around every call, as the Iroh side does.
#[derive(Clone, Default)]
pub(crate) struct ServeSetup {
    /// The user's middleware (an empty stack when there is none).
    pub stack: Arc<Stack>,
    /// duet's own methods by path, for metric labels without an allocation per call. Fixed when the
    /// server starts, so a fast hash is safe with paths from the network: no one can add to it.
    pub methods: Arc<FxHashMap<&'static str, &'static MethodDesc>>,
}

/// The layer duet puts on its gRPC router.
#[derive(Clone, Default)]
pub(crate) struct DuetGrpcLayer(pub ServeSetup);

impl<S> Layer<S> for DuetGrpcLayer {
    type Service = DuetGrpcService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        DuetGrpcService { inner, setup: self.0.clone() }
    }
}

#[derive(Clone)]
pub(crate) struct DuetGrpcService<S> {
    inner: S,
    setup: ServeSetup,
}

type ResponseFuture<E> = Pin<Box<dyn Future<Output = Result<http::Response<tonic::body::Body>, E>> + Send>>;

impl<S, B> Service<http::Request<B>> for DuetGrpcService<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>> + Clone + Send + 'static,
    S::Error: Into<BoxError> + Send,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        // The clone is ready for nothing: the ready one goes to this call (tower's usual swap).
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let desc = self.setup.methods.get(req.uri().path()).copied();
        // Paths come from the network: labels taken from them would let any client grow the metric
        // series without bound, so plain tonic services and unknown paths share one (`other`).
        let served = Served::start(desc, Transport::Grpc);
        let (mut parts, body) = req.into_parts();
        let metadata = MetadataMap::from_headers(std::mem::take(&mut parts.headers));
        let served = served.expires(crate::deadline::from_metadata(&metadata));
        let span = serve_span(parts.uri.path(), Transport::Grpc, &metadata, &mut parts.extensions);
        let path = || match desc {
            Some(desc) => std::borrow::Cow::Borrowed(desc.path),
            None => parts.uri.path().to_owned().into(),
        };
        let call = match self.setup.stack.plan() {
            Plan::Empty => {
                parts.headers = metadata.into_headers();
                let fut = inner.oneshot(http::Request::from_parts(parts, body));
                Box::pin(async move { fut.await.map(|resp| finish(resp, served)) }) as ResponseFuture<S::Error>
            }
            Plan::Checks(_) => {
                let path = path();
                let stack = self.setup.stack.clone();
                let mut extensions = std::mem::take(&mut parts.extensions);
                extensions.insert(CallInfo { path, transport: Some(Transport::Grpc) });
                let head = Request::from_parts(metadata, extensions, ());
                Box::pin(async move {
                    match check(stack.checks(), head).await {
                        Ok(head) => {
                            let (metadata, extensions, ()) = head.into_parts();
                            parts.headers = metadata.into_headers();
                            parts.extensions = extensions;
                            let resp = inner.oneshot(http::Request::from_parts(parts, body)).await?;
                            Ok(finish(resp, served))
                        }
                        Err(status) => Ok(finish(status.into_http(), served)),
                    }
                })
            }
            Plan::Layers(_, layers) => {
                let (stack, layers) = (self.setup.stack.clone(), layers.clone());
                let path = path();
                let mut extensions = std::mem::take(&mut parts.extensions);
                extensions.insert(CallInfo { path, transport: Some(Transport::Grpc) });
                let head = Request::from_parts(metadata, extensions, ());
                Box::pin(async move {
                    // The plan's checks are borrowed from the server's stack: this future holds the
                    // stack itself and reads them from it.
                    let through = run(stack.checks(), layers, head, move |head| async move {
                        let (metadata, extensions, ()) = head.into_parts();
                        parts.headers = metadata.into_headers();
                        parts.extensions = extensions;
                        let resp = inner
                            .oneshot(http::Request::from_parts(parts, body))
                            .await
                            .map_err(|e| into_status(e.into()))?;
                        let (mut parts, body) = resp.into_parts();
                        // A trailers-only response is the handler's error: layers see it as one.
                        if status_code(&parts.headers).is_some_and(|c| c != tonic::Code::Ok) {
                            fix_status_headers(&mut parts.headers);
                            if let Some(status) = Status::from_header_map(&parts.headers) {
                                return Err(status);
                            }
                        }
                        let metadata = MetadataMap::from_headers(std::mem::take(&mut parts.headers));
                        let extensions = std::mem::take(&mut parts.extensions);
                        Ok((Response::from_parts(metadata, (), extensions), (parts, body)))
                    });
                    let resp = match through.await {
                        Ok((head, (mut parts, body))) => {
                            let (metadata, (), extensions) = head.into_parts();
                            parts.headers = metadata.into_headers();
                            parts.extensions = extensions;
                            http::Response::from_parts(parts, body)
                        }
                        Err(status) => status.into_http(),
                    };
                    Ok(finish(resp, served))
                })
            }
        };
        if span.is_disabled() { call } else { Box::pin(call.instrument(span)) }
    }
}

/// Brings a tonic response in line with the Iroh wire (size-limit codes, [`Trailers`]) and
/// observes it to its end.
fn finish(mut resp: http::Response<tonic::body::Body>, served: Served) -> http::Response<tonic::body::Body> {
    // A trailers-only response carries its status in the headers.
    fix_status_headers(resp.headers_mut());
    let extra = resp.extensions_mut().remove::<Trailers>().map(|t| t.0.into_headers());
    let served = match status_code(resp.headers()) {
        Some(code) => {
            served.finish(code);
            None
        }
        None => Some(served),
    };
    resp.map(|body| tonic::body::Body::new(TrailerBody { inner: body, extra, served }))
}

struct TrailerBody {
    inner: tonic::body::Body,
    extra: Option<HeaderMap>,
    /// Finished with the status in the trailers; dropped unfinished (as `CANCELLED`) if the body
    /// never reaches them.
    served: Option<Served>,
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
                    fix_status_headers(&mut trailers);
                    if let Some(served) = self.served.take() {
                        let code = status_code(&trailers).unwrap_or(tonic::Code::Unknown);
                        served.finish(code);
                    }
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
        fix_status_headers(&mut headers);
        assert_eq!(headers.get("grpc-status").unwrap(), "8");

        let mut other = HeaderMap::new();
        other.insert("grpc-status", HeaderValue::from_static("11"));
        other.insert("grpc-message", HeaderValue::from_static("index%20out%20of%20range"));
        fix_status_headers(&mut other);
        assert_eq!(other.get("grpc-status").unwrap(), "11");
    }
}
