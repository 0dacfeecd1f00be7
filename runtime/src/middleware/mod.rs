//! One middleware stack for both transports: interceptors and tower layers that run for every call,
//! whether it travels over gRPC or over Iroh.
//!
//! A layer sees a call as its head, a [`Request<()>`]: the call's metadata (its deadline is the
//! `grpc-timeout` entry, see [`CallInfo::timeout`]) and extensions (the [`CallInfo`]; on a server
//! also the caller, read with [`RequestExt::peer`](crate::RequestExt::peer), and tonic's
//! connection info for `remote_addr()` and `peer_certs()` on gRPC). It answers with the response
//! head, a [`Response<()>`]: its metadata reaches the client as response metadata, on both
//! transports. Refusing is returning a [`Status`] without calling the inner service; extensions
//! added to the request reach the handler (on a server) or the transport (on a client). The
//! messages themselves never pass through a layer, so one stack serves every message type and call
//! shape.
//!
//! On a [`Server`](crate::Server) the stack runs once per call, on gRPC and on Iroh alike, before the
//! request message is read (as tonic's interceptors do). On a [`Channel`](crate::Channel) it runs
//! once per call, above the choice of transport: a Dual call that falls back from Iroh to gRPC
//! passes through it once, and the response's extensions name the transport that answered.
//!
//! Layers are applied in the order they are added: the first added is the outermost and sees the
//! call first. Interceptors added before any tower layer run ahead of the tower stack, before its
//! readiness is asked: a call they refuse never waits for a layer's capacity (a concurrency limit,
//! say).
//!
//! ```
//! use duet::middleware::CallInfo;
//! use duet::{Request, Status};
//!
//! // An interceptor in tonic's shape: admit calls that carry a token.
//! fn check_token(req: Request<()>) -> Result<Request<()>, Status> {
//!     match req.metadata().get("authorization") {
//!         Some(t) if t == "Bearer secret" => Ok(req),
//!         _ => Err(Status::unauthenticated("no valid token")),
//!     }
//! }
//! let server = duet::Server::builder().interceptor(check_token);
//! let mut req = Request::new(());
//! req.metadata_mut().insert("authorization", "Bearer secret".parse().unwrap());
//! assert!(check_token(req).is_ok());
//! # let _ = (server, std::any::type_name::<CallInfo>());
//! ```

mod interceptor;
mod stack;
mod through;
pub mod trace;

use std::time::Duration;

pub use interceptor::{AsyncIntercepted, AsyncInterceptorLayer, Intercepted, InterceptorLayer};
pub(crate) use interceptor::{Check, check};
pub(crate) use stack::{Plan, Stack};
pub(crate) use through::run;
pub use trace::TraceContext;

use crate::call::Transport;
use tonic::Request;
use tonic::Response;
use tonic::Status;

/// What a layer wraps: the rest of the stack below it, down to the handler (on a server) or the
/// transport (on a client). Cheap to clone.
pub type CallService = tower::util::BoxCloneSyncService<Request<()>, Response<()>, Status>;

/// The future a [`CallService`] returns, boxed: a convenient `Future` type for layers.
pub type BoxCallFuture = futures_util::future::BoxFuture<'static, Result<Response<()>, Status>>;

/// The error type layers may return; a [`Status`] anywhere in its source chain is kept, anything
/// else becomes `UNKNOWN` (as in tonic).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Which call a middleware is looking at: a request extension on every call that passes through a
/// stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallInfo {
    /// The gRPC path, `/pkg.Service/Method`.
    pub path: std::borrow::Cow<'static, str>,
    /// The transport the call arrived on (server), or `None` on a client, where the stack runs
    /// before a transport is chosen.
    pub transport: Option<Transport>,
}

impl CallInfo {
    /// The fully qualified service, `pkg.Service` (empty for a malformed path).
    pub fn service(&self) -> &str {
        crate::method::split_path(&self.path).map_or("", |(s, _)| s)
    }

    /// The method's proto name (empty for a malformed path).
    pub fn method(&self) -> &str {
        crate::method::split_path(&self.path).map_or("", |(_, m)| m)
    }

    /// The call's relative deadline as the request carries it (`grpc-timeout`), on either transport.
    pub fn timeout<T>(request: &Request<T>) -> Option<Duration> {
        crate::deadline::from_metadata(request.metadata())
    }
}

/// Turns a layer's error into the status the call ends with.
pub(crate) fn into_status(error: BoxError) -> Status {
    match error.downcast::<Status>() {
        Ok(status) => *status,
        Err(other) => Status::from_error(other),
    }
}
