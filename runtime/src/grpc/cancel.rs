//! Cancellation of streaming gRPC calls.
//!
//! hyper keeps sending a request stream after the caller dropped the call, so the server would see a
//! clean end of stream (or nothing) instead of a cancellation. duet wraps the request body: when the
//! call (or its response stream) is dropped, the body fails, and hyper resets the HTTP/2 stream, which
//! makes the server drop its handler, as on the Iroh wire.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tonic::transport::Channel as TonicChannel;
use tower::Service;

#[derive(Default)]
struct Signal {
    cancelled: AtomicBool,
    waker: AtomicWaker,
}

/// Cancels the call's request body when dropped.
pub(crate) struct CancelOnDrop(Arc<Signal>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancelled.store(true, Ordering::SeqCst);
        self.0.waker.wake();
    }
}

/// A tonic channel whose request bodies fail once the paired [`CancelOnDrop`] is dropped.
#[derive(Clone)]
pub(crate) struct CancelChannel {
    inner: TonicChannel,
    signal: Arc<Signal>,
}

impl CancelChannel {
    pub fn new(inner: TonicChannel) -> (Self, CancelOnDrop) {
        let signal = Arc::new(Signal::default());
        (Self { inner, signal: signal.clone() }, CancelOnDrop(signal))
    }
}

impl Service<http::Request<tonic::body::Body>> for CancelChannel {
    type Response = <TonicChannel as Service<http::Request<tonic::body::Body>>>::Response;
    type Error = <TonicChannel as Service<http::Request<tonic::body::Body>>>::Error;
    type Future = <TonicChannel as Service<http::Request<tonic::body::Body>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Service::<http::Request<tonic::body::Body>>::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let signal = self.signal.clone();
        self.inner.call(req.map(|inner| tonic::body::Body::new(CancellableBody { inner, signal })))
    }
}

struct CancellableBody {
    inner: tonic::body::Body,
    signal: Arc<Signal>,
}

impl HttpBody for CancellableBody {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        self.signal.waker.register(cx.waker());
        if self.signal.cancelled.load(Ordering::SeqCst) {
            return Poll::Ready(Some(Err(tonic::Status::cancelled("the client dropped the call"))));
        }
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
