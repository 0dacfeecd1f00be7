//! Draining a node for SIGTERM: new client calls are refused while members' calls go on (Raft's
//! own, forwarded writes and joins, the leader's read index: a draining node still votes, replicates
//! and applies, so the writes in flight through it can finish), and the node waits for the calls in
//! flight to end.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use duet::middleware::{BoxCallFuture, CallInfo, CallService};
use duet::{Request, Response, Status};
use tokio::sync::Notify;

/// Calls that keep being served while a node drains: Raft's own.
const RAFT_SERVICE: &str = "orchestrator.v1.RaftService";

/// Whether the node is draining, and how many client calls are in flight.
#[derive(Debug, Default)]
pub struct Drain {
    draining: AtomicBool,
    in_flight: AtomicUsize,
    idle: Notify,
}

impl Drain {
    /// Refuses new client calls from now on.
    pub fn start(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Client calls being served now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Waits until no client call is in flight, or `grace` passes; returns how many were left.
    pub async fn idle(&self, grace: Duration) -> usize {
        let wait = async {
            loop {
                let notified = self.idle.notified();
                if self.in_flight() == 0 {
                    return;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(grace, wait).await;
        self.in_flight()
    }

    /// The server layer that counts client calls and refuses new ones while draining.
    pub fn layer(
        self: &Arc<Self>,
    ) -> impl tower::Layer<CallService, Service = Counted> + Clone + Send + Sync + 'static {
        let drain = self.clone();
        tower::layer::layer_fn(move |inner| Counted { inner, drain: drain.clone() })
    }
}

/// A client call's count, released when the call's answer (its response head) is ready. A
/// streaming response's body may run on after; the server's own shutdown grace covers it.
struct InFlight(Arc<Drain>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// The service [`Drain::layer`] wraps every call in.
#[derive(Clone)]
pub struct Counted {
    inner: CallService,
    drain: Arc<Drain>,
}

impl tower::Service<Request<()>> for Counted {
    type Response = Response<()>;
    type Error = Status;
    type Future = BoxCallFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<()>) -> Self::Future {
        // Members' calls go on: Raft's own, writes and joins a follower passed on, and the read
        // index a follower catches up with.
        let from_member =
            req.extensions().get::<CallInfo>().is_some_and(|c| {
                c.service() == RAFT_SERVICE || c.path == "/orchestrator.v1.ClusterStatus/GetRaftStatus"
            }) || req.metadata().get(crate::ctx::FORWARDED).is_some();
        if from_member {
            return self.inner.call(req);
        }
        if self.drain.draining.load(Ordering::SeqCst) {
            return Box::pin(async { Err(Status::unavailable("this node is shutting down; call another member")) });
        }
        self.drain.in_flight.fetch_add(1, Ordering::SeqCst);
        let guard = InFlight(self.drain.clone());
        let call = self.inner.call(req);
        Box::pin(async move {
            let answer = call.await;
            drop(guard);
            answer
        })
    }
}
