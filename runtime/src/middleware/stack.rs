//! The layers a server or channel was given, built once into a [`CallService`] behind the
//! interceptors that run before it.

use std::fmt;
use std::sync::Arc;

use tower::{Layer, Service, ServiceExt};

use super::interceptor::{AsyncCheck, Check, SyncCheck};
use super::through::End;
use super::{BoxError, CallService, into_status};
use tonic::Request;
use tonic::Response;

type Wrap = Arc<dyn Fn(CallService) -> CallService + Send + Sync>;

/// The interceptors that run ahead of the tower stack, then the layers in the order they were added
/// and the service they make around the stack's end.
#[derive(Clone, Default)]
pub(crate) struct Stack {
    /// The interceptors added before any other layer. They are the outermost, so a call runs them in
    /// turn on its head before it enters the tower stack, with none of that stack's boxing.
    checks: Vec<Check>,
    /// Everything added from the first tower layer on, interceptors included, outermost first.
    layers: Vec<Wrap>,
    built: Option<CallService>,
}

/// How a call passes its middleware.
pub(crate) enum Plan<'a> {
    /// There is none.
    Empty,
    /// Interceptors only, run in turn on the head.
    Checks(&'a [Check]),
    /// Interceptors run in turn on the head, then a tower stack down to its end, below which the call
    /// runs (see `through`).
    Layers(&'a [Check], &'a CallService),
}

impl fmt::Debug for Stack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stack").field("interceptors", &self.checks.len()).field("layers", &self.layers.len()).finish()
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

    /// Adds a synchronous interceptor inside the ones already added.
    pub fn push_check(&mut self, check: SyncCheck) {
        if self.layers.is_empty() {
            self.checks.push(Check::Sync(check));
        } else {
            self.push(super::InterceptorLayer::from_arc(check));
        }
    }

    /// Adds an async interceptor inside the ones already added.
    pub fn push_async_check(&mut self, check: AsyncCheck) {
        if self.layers.is_empty() {
            self.checks.push(Check::Async(check));
        } else {
            self.push(super::AsyncInterceptorLayer::new(move |req| check(req)));
        }
    }

    /// The interceptors that run before the tower stack (all of them, if there is none).
    pub fn checks(&self) -> &[Check] {
        &self.checks
    }

    /// How calls pass this stack.
    pub fn plan(&self) -> Plan<'_> {
        match (&self.built, self.checks.is_empty()) {
            (None, true) => Plan::Empty,
            (None, false) => Plan::Checks(&self.checks),
            (Some(stack), _) => Plan::Layers(&self.checks, stack),
        }
    }
}
