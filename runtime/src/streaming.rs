//! A stream of messages that does not care which transport carries it.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::{Stream, StreamExt};
use tonic::metadata::MetadataMap;

use crate::codec::Message;
use crate::iroh::recv::{AbortOnDrop, IrohStream};
use tokio::time::Sleep;
use tonic::Status;

/// A boxed stream of messages or a status: what server-streaming and bidi handlers return.
pub type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// A stream of incoming messages: the requests of a client-streaming or bidi handler, or the responses
/// a client reads from a server-streaming or bidi call.
///
/// It mirrors [`tonic::Streaming`] (`message()`, `trailers()`, and [`Stream`]) but is transport-neutral:
/// the same handler code reads from gRPC's HTTP/2 body or from an Iroh QUIC stream.
pub struct Streaming<T> {
    inner: Inner<T>,
    deadline: Option<Pin<Box<Sleep>>>,
    done: bool,
    _guard: Option<CallGuard>,
}

/// What ends a call when its response stream is dropped.
pub(crate) enum CallGuard {
    /// gRPC: fails the request body so hyper resets the HTTP/2 stream.
    Cancel(#[allow(dead_code)] crate::grpc::CancelOnDrop),
    /// Iroh: aborts the task writing requests, which resets the QUIC stream.
    Abort(#[allow(dead_code)] AbortOnDrop),
}

enum Inner<T> {
    Grpc(tonic::Streaming<T>),
    Iroh(IrohStream<T>),
    Local(BoxStream<T>),
}

impl<T> std::fmt::Debug for Streaming<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let transport = match self.inner {
            Inner::Grpc(_) => "grpc",
            Inner::Iroh(_) => "iroh",
            Inner::Local(_) => "local",
        };
        f.debug_struct("Streaming").field("transport", &transport).finish()
    }
}

impl<T: Message> Streaming<T> {
    /// Wraps any stream, e.g. to call a handler directly in a unit test.
    ///
    /// ```
    /// # tokio_test_block_on(async {
    /// use futures_util::stream;
    /// let mut s = duet::Streaming::from_stream(stream::iter([Ok::<_, duet::Status>("a".to_string()), Ok("b".into())]));
    /// assert_eq!(s.message().await.unwrap(), Some("a".into()));
    /// assert_eq!(s.message().await.unwrap(), Some("b".into()));
    /// assert_eq!(s.message().await.unwrap(), None);
    /// # });
    /// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
    /// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
    /// # }
    /// ```
    pub fn from_stream<S>(stream: S) -> Self
    where
        S: Stream<Item = Result<T, Status>> + Send + 'static,
    {
        Self::new(Inner::Local(Box::pin(stream)))
    }

    /// Wraps tonic's HTTP/2 stream.
    pub fn from_grpc(stream: tonic::Streaming<T>) -> Self {
        Self::new(Inner::Grpc(stream))
    }

    pub(crate) fn from_iroh(stream: IrohStream<T>) -> Self {
        Self::new(Inner::Iroh(stream))
    }

    fn new(inner: Inner<T>) -> Self {
        Self { inner, deadline: None, done: false, _guard: None }
    }

    /// Ends the stream with `DEADLINE_EXCEEDED` at `deadline`, dropping the call.
    pub(crate) fn with_deadline(mut self, deadline: Option<tokio::time::Instant>) -> Self {
        self.deadline = deadline.map(|d| Box::pin(tokio::time::sleep_until(d)));
        self
    }

    pub(crate) fn with_guard(mut self, guard: CallGuard) -> Self {
        self._guard = Some(guard);
        self
    }

    /// The next message, `Ok(None)` at the end of the stream, or the status the stream ended with.
    pub async fn message(&mut self) -> Result<Option<T>, Status> {
        match self.next().await {
            Some(Ok(m)) => Ok(Some(m)),
            Some(Err(s)) => Err(s),
            None => Ok(None),
        }
    }

    /// The trailing metadata, once the stream has ended (reads and drops any messages left).
    pub async fn trailers(&mut self) -> Result<Option<MetadataMap>, Status> {
        if let Inner::Grpc(s) = &mut self.inner {
            return s.trailers().await.map_err(crate::grpc::client_status);
        }
        while self.next().await.transpose()?.is_some() {}
        Ok(match &mut self.inner {
            Inner::Iroh(s) => s.take_trailers(),
            _ => None,
        })
    }
}

impl<T: Message> Stream for Streaming<T> {
    type Item = Result<T, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        if let Some(deadline) = this.deadline.as_mut()
            && deadline.as_mut().poll(cx).is_ready()
        {
            // Dropping the transport stream cancels the call on the server.
            this.done = true;
            this.inner = Inner::Local(Box::pin(futures_util::stream::empty()));
            this._guard = None;
            return Poll::Ready(Some(Err(crate::deadline::exceeded())));
        }
        match &mut this.inner {
            Inner::Grpc(s) => Pin::new(s).poll_next(cx).map(|i| i.map(|r| r.map_err(crate::grpc::client_status))),
            Inner::Iroh(s) => Pin::new(s).poll_next(cx),
            Inner::Local(s) => s.as_mut().poll_next(cx),
        }
    }
}
