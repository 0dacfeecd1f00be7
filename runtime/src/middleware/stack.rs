//! The layers a server or channel was given, built once into a [`CallService`], and the way one
//! call runs through it down to its own handler or transport.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use tower::{Layer, Service, ServiceExt};

use super::{BoxError, CallService, into_status};
use crate::{Request, Response, Status};

type Wrap = Arc<dyn Fn(CallService) -> CallService + Send + Sync>;

/// Layers in the order they were added, and the service they make around the call's own end.
#[derive(Clone, Default)]
pub(crate) struct Stack {
    layers: Vec<Wrap>,
    built: Option<CallService>,
}

impl fmt::Debug for Stack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stack").field("layers", &self.layers.len()).finish()
    }
}

impl Stack {
    /// Adds `layer` inside the ones already added.
    pub fn push<L>(&mut self, layer: L)
    where
        L: Layer<CallService> + Send + Sync + 'static,
        L::Service: Service<Request<()>, Response = Response<()>> + Clone + Send + Sync + 'static,
        <L::Service as Service<Request<()>>>::Error: Into<BoxError>,
        <L::Service as Service<Request<()>>>::Future: Send + 'static,
    {
        self.layers.push(Arc::new(move |inner| {
            CallService::new(
                layer.layer(inner).map_err(|e: <L::Service as Service<Request<()>>>::Error| into_status(e.into())),
            )
        }));
        let end = CallService::new(End);
        self.built = Some(self.layers.iter().rev().fold(end, |inner, wrap| wrap(inner)));
    }

    /// The built stack, or `None` when no layer was added (calls then skip it entirely).
    pub fn service(&self) -> Option<&CallService> {
        self.built.as_ref()
    }
}

type Continue = Box<dyn FnOnce(Request<()>) -> BoxFuture<'static, Result<Response<()>, Status>> + Send>;

/// The rest of one call below the stack, carried in the request's extensions to the [`End`] of the
/// stack (extensions must be `Clone`, hence the shared slot).
#[derive(Clone)]
struct Continuation(Arc<Mutex<Option<Continue>>>);

/// The innermost service of every stack: hands the head, as the layers left it, to the call's own
/// continuation.
#[derive(Clone, Copy)]
struct End;

impl Service<Request<()>> for End {
    type Response = Response<()>;
    type Error = Status;
    type Future = BoxFuture<'static, Result<Response<()>, Status>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<()>) -> Self::Future {
        let next = req.extensions_mut().remove::<Continuation>().and_then(|c| c.0.lock().ok()?.take());
        match next {
            Some(next) => next(req),
            None => Box::pin(async {
                Err(Status::internal(
                    "a middleware layer replaced the request's extensions and lost the call it was to run; \
                     add to the extensions rather than replacing them",
                ))
            }),
        }
    }
}

/// Runs one call's head through `stack`, down to `next`, which runs the call itself with the head as
/// the layers left it and returns the response head (the body stays with the caller of `run`).
pub(crate) async fn run<F, Fut>(stack: &CallService, mut head: Request<()>, next: F) -> Result<Response<()>, Status>
where
    F: FnOnce(Request<()>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Response<()>, Status>> + Send + 'static,
{
    let next: Continue = Box::new(move |head| Box::pin(next(head)));
    head.extensions_mut().insert(Continuation(Arc::new(Mutex::new(Some(next)))));
    stack.clone().oneshot(head).await
}

/// A slot the call's end leaves its response body in, for the caller of [`run`] to take back.
pub(crate) struct Body<T>(Arc<Mutex<Option<T>>>);

impl<T> Clone for Body<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T> Body<T> {
    pub fn new() -> Self {
        Self(Arc::new(Mutex::new(None)))
    }

    pub fn put(&self, body: T) {
        *self.0.lock().expect("body slot") = Some(body);
    }

    /// The body the call left, or `INTERNAL` if a layer answered without running the call.
    pub fn take(&self) -> Result<T, Status> {
        self.0.lock().expect("body slot").take().ok_or_else(|| {
            Status::internal(
                "a middleware layer answered a call without running it; a layer may refuse a call with a \
                 Status, not invent its response",
            )
        })
    }
}
