//! The middleware the `duet-*-middleware` contenders carry: on the server one interceptor (it
//! checks who calls) and one tower layer (it counts calls), on the client one interceptor (it
//! checks the call's deadline). None adds metadata, so the figures are the machinery's cost, not that
//! of the bytes a real token would add.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use duet::middleware::{BoxCallFuture, CallInfo, CallService};
use duet::{Peer, Request, RequestExt, Response, Status};

/// The server side: one interceptor and one layer.
pub fn serve(server: duet::Server) -> duet::Server {
    let served = Arc::new(AtomicU64::new(0));
    server
        .interceptor(|req: Request<()>| match req.peer() {
            Peer::Iroh(_) | Peer::Grpc(Some(_)) => Ok(req),
            Peer::Grpc(None) => Err(Status::permission_denied("no peer")),
        })
        .layer(tower::layer::layer_fn(move |inner| Count { inner, served: served.clone() }))
}

/// The client side: one interceptor.
pub fn call(channel: duet::Channel) -> duet::Channel {
    channel.interceptor(|req: Request<()>| match CallInfo::timeout(&req) {
        Some(t) if t.is_zero() => Err(Status::deadline_exceeded("no time left")),
        _ => Ok(req),
    })
}

/// Counts the calls that pass.
#[derive(Clone)]
struct Count {
    inner: CallService,
    served: Arc<AtomicU64>,
}

impl tower::Service<Request<()>> for Count {
    type Response = Response<()>;
    type Error = Status;
    type Future = BoxCallFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<()>) -> Self::Future {
        self.served.fetch_add(1, Ordering::Relaxed);
        self.inner.call(req)
    }
}
