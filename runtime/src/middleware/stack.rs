//! The layers a server or channel was given, built once into a [`CallService`], and the way one
//! call runs through it down to its own handler or transport.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use tower::{Layer, Service, ServiceExt};

use super::{BoxError, CallService, into_status};
use tonic::Request;
use tonic::Response;
use tonic::Status;

type Wrap = Arc<dyn Fn(CallService) -> CallService + Send + Sync>;

/// A synchronous interceptor, shared between its fast path and its layer.
pub(crate) type SyncCheck = Arc<dyn Fn(Request<()>) -> Result<Request<()>, Status> + Send + Sync>;
/// An async interceptor, its future boxed.
pub(crate) type AsyncCheck = Arc<dyn Fn(Request<()>) -> BoxFuture<'static, Result<Request<()>, Status>> + Send + Sync>;

/// An interceptor as the fast path runs it.
#[derive(Clone)]
pub(crate) enum Check {
    Sync(SyncCheck),
    Async(AsyncCheck),
}

/// Layers in the order they were added, and the service they make around the call's own end.
#[derive(Clone, Default)]
pub(crate) struct Stack {
    layers: Vec<Wrap>,
    /// The interceptors, while nothing but interceptors was added: a call then runs them in turn
    /// on its head, with none of a tower stack's boxing.
    checks: Option<Vec<Check>>,
    built: Option<CallService>,
}

/// How a call passes its middleware.
pub(crate) enum Plan<'a> {
    /// There is none.
    Empty,
    /// Interceptors only, run in turn on the head.
    Checks(&'a [Check]),
    /// A tower stack, down to the call's continuation.
    Layers(&'a CallService),
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
        self.checks = None;
        self.wrap(layer);
    }

    fn wrap<L>(&mut self, layer: L)
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

    /// Adds a synchronous interceptor inside the ones already added.
    pub fn push_check(&mut self, check: SyncCheck) {
        let first = self.built.is_none();
        self.wrap(super::InterceptorLayer::from_arc(check.clone()));
        self.add_check(first, Check::Sync(check));
    }

    /// Adds an async interceptor inside the ones already added.
    pub fn push_async_check(&mut self, check: AsyncCheck) {
        let first = self.built.is_none();
        let layer_check = check.clone();
        self.wrap(super::AsyncInterceptorLayer::new(move |req| layer_check(req)));
        self.add_check(first, Check::Async(check));
    }

    fn add_check(&mut self, first: bool, check: Check) {
        if first {
            self.checks = Some(vec![check]);
        } else if let Some(checks) = &mut self.checks {
            checks.push(check);
        }
    }

    /// The interceptors of a stack of nothing else (empty otherwise).
    pub fn checks(&self) -> &[Check] {
        self.checks.as_deref().unwrap_or(&[])
    }

    /// How calls pass this stack.
    pub fn plan(&self) -> Plan<'_> {
        match (&self.built, &self.checks) {
            (None, _) => Plan::Empty,
            (Some(_), Some(checks)) => Plan::Checks(checks),
            (Some(stack), None) => Plan::Layers(stack),
        }
    }
}

/// Runs interceptors in turn on a call's head; the first refusal is the call's answer.
pub(crate) async fn check(checks: &[Check], mut head: Request<()>) -> Result<Request<()>, Status> {
    for check in checks {
        head = match check {
            Check::Sync(f) => f(head)?,
            Check::Async(f) => f(head).await?,
        };
    }
    Ok(head)
}

/// The rest of one call below the stack and the slot its response body comes back in, in one
/// allocation: what the [`End`] of the stack runs, carried there in the request's extensions.
struct Call<F, T> {
    next: Mutex<Option<F>>,
    body: Mutex<Option<T>>,
}

/// A [`Call`] with its types erased, as the stack's end sees it.
trait Next: Send + Sync {
    /// Runs the call below the stack with the head as the layers left it; `None` if it already ran.
    fn run(self: Arc<Self>, head: Request<()>) -> Option<BoxFuture<'static, Result<Response<()>, Status>>>;
}

impl<F, Fut, T> Next for Call<F, T>
where
    F: FnOnce(Request<()>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(Response<()>, T), Status>> + Send + 'static,
    T: Send + 'static,
{
    fn run(self: Arc<Self>, head: Request<()>) -> Option<BoxFuture<'static, Result<Response<()>, Status>>> {
        let next = self.next.lock().ok()?.take()?;
        Some(Box::pin(async move {
            let (head, body) = next(head).await?;
            *self.body.lock().expect("body slot") = Some(body);
            Ok(head)
        }))
    }
}

/// A call's continuation in the request's extensions (extensions must be `Clone`, hence the `Arc`).
#[derive(Clone)]
struct Continuation(Arc<dyn Next>);

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
        let next = req.extensions_mut().remove::<Continuation>().and_then(|c| c.0.run(req));
        next.unwrap_or_else(|| {
            Box::pin(async {
                Err(Status::internal(
                    "a middleware layer replaced the request's extensions and lost the call it was to run; \
                     add to the extensions rather than replacing them",
                ))
            })
        })
    }
}

/// Runs one call's head through `stack`, down to `next`, which runs the call itself with the head as
/// the layers left it and returns the response head and body; the body passes the layers aside.
pub(crate) async fn run<F, Fut, T>(
    stack: &CallService,
    mut head: Request<()>,
    next: F,
) -> Result<(Response<()>, T), Status>
where
    F: FnOnce(Request<()>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(Response<()>, T), Status>> + Send + 'static,
    T: Send + 'static,
{
    let call = Arc::new(Call { next: Mutex::new(Some(next)), body: Mutex::new(None) });
    head.extensions_mut().insert(Continuation(call.clone()));
    let head = stack.clone().oneshot(head).await?;
    let body = call.body.lock().expect("body slot").take().ok_or_else(|| {
        Status::internal(
            "a middleware layer answered a call without running it; a layer may refuse a call with a \
             Status, not invent its response",
        )
    })?;
    Ok((head, body))
}
