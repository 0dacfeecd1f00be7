//! Interceptors: tonic's synchronous shape, and an async one for checks that wait (a token service,
//! a membership lookup). Those added before any tower layer run as checks on the call's head, ahead
//! of the stack; those added after one run as the tower layers here.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use tower::{Layer, Service, ServiceExt};

use super::CallService;
use tonic::Request;
use tonic::Response;
use tonic::Status;

/// A layer that runs `f` on every call's head before the call goes on; an `Err` ends the call with
/// that status (tonic's `Interceptor`, on both transports).
pub struct InterceptorLayer<F: ?Sized> {
    f: Arc<F>,
}

impl<F: ?Sized> Clone for InterceptorLayer<F> {
    fn clone(&self) -> Self {
        Self { f: self.f.clone() }
    }
}

impl<F> InterceptorLayer<F>
where
    F: Fn(Request<()>) -> Result<Request<()>, Status> + Send + Sync + 'static,
{
    /// Wraps `f`.
    pub fn new(f: F) -> Self {
        Self { f: Arc::new(f) }
    }
}

impl<F: ?Sized> InterceptorLayer<F> {
    /// Wraps a shared `f`.
    pub(crate) fn from_arc(f: Arc<F>) -> Self {
        Self { f }
    }
}

impl<F: ?Sized> std::fmt::Debug for InterceptorLayer<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InterceptorLayer")
    }
}

impl<F> Layer<CallService> for InterceptorLayer<F>
where
    F: Fn(Request<()>) -> Result<Request<()>, Status> + Send + Sync + ?Sized + 'static,
{
    type Service = Intercepted<F>;

    fn layer(&self, inner: CallService) -> Self::Service {
        Intercepted { f: self.f.clone(), inner }
    }
}

/// The service an [`InterceptorLayer`] makes.
pub struct Intercepted<F: ?Sized> {
    f: Arc<F>,
    inner: CallService,
}

impl<F: ?Sized> Clone for Intercepted<F> {
    fn clone(&self) -> Self {
        Self { f: self.f.clone(), inner: self.inner.clone() }
    }
}

impl<F> Service<Request<()>> for Intercepted<F>
where
    F: Fn(Request<()>) -> Result<Request<()>, Status> + Send + Sync + ?Sized + 'static,
{
    type Response = Response<()>;
    type Error = Status;
    type Future = BoxFuture<'static, Result<Response<()>, Status>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<()>) -> Self::Future {
        // The inner future owns what it needs, so the inner service is called in place, not cloned.
        match (self.f)(req) {
            Ok(req) => self.inner.call(req),
            Err(status) => Box::pin(std::future::ready(Err(status))),
        }
    }
}

/// A layer that awaits `f` on every call's head before the call goes on; an `Err` ends the call with
/// that status.
pub struct AsyncInterceptorLayer<F> {
    f: Arc<F>,
}

impl<F> Clone for AsyncInterceptorLayer<F> {
    fn clone(&self) -> Self {
        Self { f: self.f.clone() }
    }
}

impl<F, Fut> AsyncInterceptorLayer<F>
where
    F: Fn(Request<()>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Request<()>, Status>> + Send + 'static,
{
    /// Wraps `f`.
    pub fn new(f: F) -> Self {
        Self { f: Arc::new(f) }
    }
}

impl<F> std::fmt::Debug for AsyncInterceptorLayer<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AsyncInterceptorLayer")
    }
}

impl<F, Fut> Layer<CallService> for AsyncInterceptorLayer<F>
where
    F: Fn(Request<()>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Request<()>, Status>> + Send + 'static,
{
    type Service = AsyncIntercepted<F>;

    fn layer(&self, inner: CallService) -> Self::Service {
        AsyncIntercepted { f: self.f.clone(), inner }
    }
}

/// The service an [`AsyncInterceptorLayer`] makes.
pub struct AsyncIntercepted<F> {
    f: Arc<F>,
    inner: CallService,
}

impl<F> Clone for AsyncIntercepted<F> {
    fn clone(&self) -> Self {
        Self { f: self.f.clone(), inner: self.inner.clone() }
    }
}

impl<F, Fut> Service<Request<()>> for AsyncIntercepted<F>
where
    F: Fn(Request<()>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Request<()>, Status>> + Send + 'static,
{
    type Response = Response<()>;
    type Error = Status;
    type Future = BoxFuture<'static, Result<Response<()>, Status>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Status>> {
        // Readiness is the inner service's, checked by `oneshot` once the check passes.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<()>) -> Self::Future {
        let checked = (self.f)(req);
        let inner = self.inner.clone();
        Box::pin(async move { inner.oneshot(checked.await?).await })
    }
}

/// A synchronous interceptor, as a check holds it.
pub(crate) type SyncCheck = Arc<dyn Fn(Request<()>) -> Result<Request<()>, Status> + Send + Sync>;
/// An async interceptor, its future boxed.
pub(crate) type AsyncCheck = Arc<dyn Fn(Request<()>) -> BoxFuture<'static, Result<Request<()>, Status>> + Send + Sync>;

/// An interceptor as a check runs it: on the call's head, ahead of the tower stack, with no tower
/// service around it.
#[derive(Clone)]
pub(crate) enum Check {
    Sync(SyncCheck),
    Async(AsyncCheck),
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
