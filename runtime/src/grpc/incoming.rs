//! The gRPC listener, closed the moment shutdown starts.
//!
//! tonic's graceful shutdown stops accepting but keeps the socket until every connection has gone, so
//! a client that reconnects during the drain would wait in the backlog. Dropping the listener at once
//! makes such a connect fail fast (`UNAVAILABLE`), as a new call on Iroh does.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::Stream;
use tokio_util::sync::WaitForCancellationFutureOwned;
use tonic::transport::server::TcpIncoming;

pub(crate) struct UntilShutdown {
    inner: Option<TcpIncoming>,
    stop: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl UntilShutdown {
    pub fn new(inner: TcpIncoming, stop: WaitForCancellationFutureOwned) -> Self {
        Self { inner: Some(inner), stop: Box::pin(stop) }
    }
}

impl Stream for UntilShutdown {
    type Item = <TcpIncoming as Stream>::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.stop.as_mut().poll(cx).is_ready() {
            self.inner = None;
        }
        match self.inner.as_mut() {
            Some(inner) => Pin::new(inner).poll_next(cx),
            None => Poll::Ready(None),
        }
    }
}
