//! Dual mode: per call, pick the transport the migration strategy names, and fall back to gRPC when
//! Iroh fails in a way that makes it safe.
//!
//! The rules, from the weakest failure to the strongest:
//! - Iroh cannot connect, or the stream cannot be opened (nothing left): the call goes over gRPC.
//! - The transport failed after the request may have left: retried over gRPC only when the method is
//!   idempotent (`NO_SIDE_EFFECTS` or `IDEMPOTENT`); otherwise `UNAVAILABLE`, never a second run.
//! - The server answered (any status, or the deadline passed): that is the answer, except a schema
//!   mismatch, which the server refuses before any handler runs; the service then goes over gRPC.
//! - A circuit breaker keeps Iroh out after repeated transport failures, then lets a probe through.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::Stream;
use tonic::transport::Channel as TonicChannel;
use tracing::Instrument;

use super::adaptive::Adaptive;
use super::breaker::Breaker;
use super::{CallOptions, Opened, explain, iroh_connect};
use crate::call::Transport;
use crate::codec::Message;
use crate::config::TransportConfig;
use crate::deadline::Deadline;
use crate::iroh::Failure;
use crate::iroh::connector::PeerSlot;
use crate::iroh::wire::{SCHEMA_MISMATCH_KEY, SCHEMA_MISMATCH_VALUE};
use crate::method::MethodDesc;
use crate::observe::{attempt_finished, attempt_span, measured, traced};
use crate::routing::Plan;
use crate::streaming::Streaming;
use crate::{deadline, metrics};
use tonic::Request;
use tonic::Response;
use tonic::Status;

pub(crate) struct Dual {
    pub grpc: TonicChannel,
    pub iroh: Arc<PeerSlot>,
    pub breaker: Breaker,
    config: TransportConfig,
    adaptive: Mutex<HashMap<&'static str, Adaptive>>,
    /// Whether any service has an adaptive estimate: until one has, calls skip its lock.
    any_adaptive: AtomicBool,
    schema_mismatch: Mutex<HashMap<&'static str, Mismatch>>,
    /// Whether any service is held on gRPC by a schema mismatch: while none is, calls skip its lock.
    any_mismatch: AtomicBool,
}

/// A service refused for a schema mismatch: it stays on gRPC until the cool-down ends or the peer
/// comes back on a new connection (restarted, perhaps upgraded), then Iroh is tried again.
struct Mismatch {
    until: Instant,
    generation: u64,
}

enum Choice {
    Grpc(&'static str),
    Iroh { reason: &'static str, fallback: bool },
}

enum Attempt<T> {
    Done(Result<T, Status>),
    FallBack(&'static str),
}

fn is_schema_mismatch(s: &Status) -> bool {
    s.code() == tonic::Code::FailedPrecondition
        && s.metadata().get(SCHEMA_MISMATCH_KEY).is_some_and(|v| v == SCHEMA_MISMATCH_VALUE)
}

/// `DEADLINE_EXCEEDED` once nothing is left of the call's deadline (after connecting, say).
fn time_left(deadline: Deadline) -> Result<(), Status> {
    if deadline.remaining().is_some_and(|left| left.is_zero()) { Err(deadline::exceeded()) } else { Ok(()) }
}

fn is_deadline<T>(result: &Result<T, Failure>) -> bool {
    matches!(result, Err(Failure::Answered(s)) if s.code() == tonic::Code::DeadlineExceeded)
}

/// The request kept for a fallback: its message, metadata and extensions, so the retry carries
/// everything the first attempt did.
fn copy<T: Clone>(req: &Request<T>) -> Request<T> {
    Request::from_parts(req.metadata().clone(), req.extensions().clone(), req.get_ref().clone())
}

impl Dual {
    pub fn new(grpc: TonicChannel, iroh: Arc<PeerSlot>, config: &TransportConfig) -> Self {
        let m = &config.migration;
        Self {
            grpc,
            iroh,
            breaker: Breaker::new(m.breaker_failures, std::time::Duration::from_millis(m.breaker_cooldown_ms)),
            config: config.clone(),
            adaptive: Mutex::default(),
            any_adaptive: AtomicBool::new(false),
            schema_mismatch: Mutex::default(),
            any_mismatch: AtomicBool::new(false),
        }
    }

    pub fn adaptive_choice(&self, service: &str) -> Option<Transport> {
        self.adaptive.lock().expect("adaptive lock").get(service).map(Adaptive::current)
    }

    /// Connects (or reuses the connection) and opens a stream for a call. When the call may fall back
    /// and has a deadline, Iroh gets half of it: a peer that cannot be reached (a partition, a dead
    /// process) leaves the other half to gRPC instead of eating the whole deadline.
    async fn connect(&self, deadline: Deadline, fallback: bool) -> Result<Opened, Failure> {
        match deadline.remaining() {
            Some(t) if fallback => {
                let budget = t / 2;
                tokio::time::timeout(budget, iroh_connect(&self.iroh, Deadline::NONE, false)).await.unwrap_or_else(
                    |_| {
                        Err(Failure::NotSent(Status::unavailable(format!(
                            "Iroh did not connect within {budget:?}, half the call's deadline"
                        ))))
                    },
                )
            }
            _ => iroh_connect(&self.iroh, deadline, !fallback).await,
        }
    }

    fn choose(&self, desc: &'static MethodDesc) -> Choice {
        let route = self.config.route(desc.config_name);
        let (first, reason, fallback) = match route.plan {
            Plan::Only(t) => (t, route.reason, false),
            Plan::First { transport, fallback } => (transport, route.reason, fallback),
            Plan::Adaptive { fallback } => {
                let mut adaptive = self.adaptive.lock().expect("adaptive lock");
                self.any_adaptive.store(true, Ordering::Release);
                let state = adaptive
                    .entry(desc.config_name)
                    .or_insert_with(|| Adaptive::new(self.config.migration.adaptive_probe_every));
                let (t, why) = state.pick();
                (t, why, fallback)
            }
        };
        if first == Transport::Grpc {
            return Choice::Grpc(reason);
        }
        if fallback && self.schema_mismatch_holds(desc.service) {
            return Choice::Grpc("schema_mismatch");
        }
        if fallback && !self.breaker.allow() {
            return Choice::Grpc("circuit_open");
        }
        Choice::Iroh { reason, fallback }
    }

    /// Whether a schema mismatch still keeps `service` on gRPC; a mismatch that has cooled down, or
    /// whose connection has closed or been replaced (the peer restarted, perhaps upgraded), is
    /// forgotten so the next call probes Iroh.
    fn schema_mismatch_holds(&self, service: &str) -> bool {
        if !self.any_mismatch.load(Ordering::Acquire) {
            return false;
        }
        let mut marks = self.schema_mismatch.lock().expect("schema lock");
        let Some(mark) = marks.get(service) else { return false };
        let same_connection = self.iroh.generation() == mark.generation && self.iroh.connected();
        if Instant::now() < mark.until && same_connection {
            return true;
        }
        marks.remove(service);
        self.any_mismatch.store(!marks.is_empty(), Ordering::Release);
        tracing::info!(service, "probing Iroh again after a schema mismatch");
        false
    }

    fn observe(&self, desc: &'static MethodDesc, t: Transport, started: Instant, transport_ok: bool) {
        if !self.any_adaptive.load(Ordering::Acquire) {
            return;
        }
        if let Some(state) = self.adaptive.lock().expect("adaptive lock").get_mut(desc.config_name) {
            state.record(t, started.elapsed(), transport_ok);
        }
    }

    /// A call (or a fallback) over gRPC. Its callers box it: tonic's call future is kilobytes, and a
    /// Dual call on Iroh, the common case, would otherwise carry room for it.
    async fn on_grpc<T>(
        &self,
        desc: &'static MethodDesc,
        reason: &'static str,
        call: impl Future<Output = Result<T, Status>>,
    ) -> Result<T, Status> {
        metrics::selected(desc, Transport::Grpc, reason);
        let started = Instant::now();
        let result = measured(desc, Transport::Grpc, reason, call).await;
        let transport_ok = !matches!(&result, Err(s) if s.code() == tonic::Code::Unavailable);
        self.observe(desc, Transport::Grpc, started, transport_ok);
        result
    }

    fn fall_back(&self, desc: &'static MethodDesc, reason: &'static str) {
        // A warning: each one is a call Iroh failed; the breaker stops the stream of them once open.
        tracing::warn!(path = desc.path, reason, "falling back from Iroh to gRPC");
        metrics::fallback(desc.config_name, Transport::Iroh, Transport::Grpc, reason);
    }

    /// Runs the Iroh part of a call and judges its outcome. Callers await it where they make it,
    /// so its clock starts here.
    fn attempt_iroh<'a, T>(
        &'a self,
        desc: &'static MethodDesc,
        reason: &'static str,
        fallback: bool,
        retry_lost: bool,
        call: impl Future<Output = (Result<T, Failure>, bool)> + 'a,
    ) -> impl Future<Output = Attempt<T>> + 'a {
        use futures_util::FutureExt;
        // A combinator, not an async fn: one that took `call` and awaited it would hold two copies
        // of the whole Iroh call, and every call through a Dual channel would carry the room.
        metrics::selected(desc, Transport::Iroh, reason);
        let started = Instant::now();
        traced(attempt_span(desc, Transport::Iroh, reason), call)
            .map(move |(result, silent)| self.judge(desc, started, result, fallback, retry_lost, silent))
    }

    /// Records an Iroh outcome (metrics, breaker, adaptive estimate) and decides what happens next.
    /// `silent`: the call's deadline passed while the peer sent nothing at all on the connection,
    /// which the breaker and the adaptive estimate count as a transport failure, though the call's
    /// answer stays `DEADLINE_EXCEEDED` (a slow handler looks the same from here, so nothing is
    /// retried).
    fn judge<T>(
        &self,
        desc: &'static MethodDesc,
        started: Instant,
        result: Result<T, Failure>,
        fallback: bool,
        retry_lost: bool,
        silent: bool,
    ) -> Attempt<T> {
        let (code, transport_ok) = match &result {
            Ok(_) => (tonic::Code::Ok, true),
            Err(Failure::Answered(s)) => (s.code(), !silent),
            Err(Failure::NotSent(s) | Failure::Lost(s)) => (s.code(), false),
        };
        attempt_finished(desc, Transport::Iroh, code, started);
        self.observe(desc, Transport::Iroh, started, transport_ok);
        if transport_ok {
            self.breaker.success();
        } else {
            self.breaker.failure();
        }
        match result {
            Ok(v) => Attempt::Done(Ok(v)),
            Err(Failure::Answered(s)) if is_schema_mismatch(&s) => {
                let mark = Mismatch {
                    until: Instant::now() + Duration::from_millis(self.config.migration.schema_recheck_ms),
                    generation: self.iroh.generation(),
                };
                let mut marks = self.schema_mismatch.lock().expect("schema lock");
                marks.insert(desc.service, mark);
                self.any_mismatch.store(true, Ordering::Release);
                drop(marks);
                tracing::warn!(
                    service = desc.service,
                    recheck_ms = self.config.migration.schema_recheck_ms,
                    "schema mismatch with the peer: this service goes over gRPC until the peer reconnects or the \
                     recheck time passes"
                );
                if fallback { Attempt::FallBack("schema_mismatch") } else { Attempt::Done(Err(s)) }
            }
            Err(Failure::Answered(s)) => Attempt::Done(Err(s)),
            Err(Failure::NotSent(s)) if fallback => {
                tracing::debug!(status = %s, "Iroh unreachable");
                Attempt::FallBack("iroh_unreachable")
            }
            Err(Failure::NotSent(s)) => Attempt::Done(Err(s)),
            Err(Failure::Lost(_)) if fallback && retry_lost => Attempt::FallBack("idempotent_retry"),
            Err(Failure::Lost(s)) => Attempt::Done(Err(Status::unavailable(format!(
                "the Iroh call failed after its request left and was not retried ({} is not idempotent, or its \
                 request was a stream): {}",
                desc.path,
                s.message()
            )))),
        }
    }

    /// A call whose request is one message: Iroh first when the plan says so, and on failure the kept
    /// copy of the request goes over gRPC, when the stage of the failure allows it.
    async fn replayable<Req, T, G, GF, I, IF>(
        &self,
        req: Request<Req>,
        desc: &'static MethodDesc,
        deadline: Deadline,
        grpc: G,
        iroh: I,
    ) -> Result<T, Status>
    where
        Req: Message,
        G: FnOnce(Request<Req>) -> GF,
        GF: Future<Output = Result<T, Status>>,
        I: FnOnce(Request<Req>, (iroh::endpoint::SendStream, iroh::endpoint::RecvStream)) -> IF,
        IF: Future<Output = Result<T, Failure>>,
    {
        let (reason, fallback) = match self.choose(desc) {
            Choice::Grpc(reason) => return Box::pin(self.on_grpc(desc, reason, grpc(req))).await,
            Choice::Iroh { reason, fallback } => (reason, fallback),
        };
        let retry = fallback.then(|| copy(&req));
        let call = async {
            let Opened { streams, watch } = match self.connect(deadline, fallback).await {
                Ok(opened) => opened,
                Err(failure) => return (Err(failure), false),
            };
            if let Err(status) = time_left(deadline) {
                return (Err(Failure::Answered(status)), false);
            }
            let result = iroh(req, streams).await.map_err(|f| explain(f, &watch));
            let silent = is_deadline(&result) && watch.peer_silent();
            (result, silent)
        };
        match (self.attempt_iroh(desc, reason, fallback, desc.idempotent, call).await, retry) {
            (Attempt::FallBack(why), Some(retry)) => {
                self.fall_back(desc, why);
                Box::pin(self.on_grpc(desc, why, grpc(retry))).await
            }
            (Attempt::Done(result), _) => result,
            (Attempt::FallBack(_), None) => unreachable!("fallback is only asked for when allowed"),
        }
    }

    /// A call whose request is a stream: it cannot be replayed, so it falls back only if Iroh fails
    /// before the stream opens, while the request is still untouched.
    async fn one_shot<S, T, G, GF, I, IF>(
        &self,
        req: Request<S>,
        desc: &'static MethodDesc,
        deadline: Deadline,
        grpc: G,
        iroh: I,
    ) -> Result<T, Status>
    where
        G: FnOnce(Request<S>) -> GF,
        GF: Future<Output = Result<T, Status>>,
        I: FnOnce((iroh::endpoint::SendStream, iroh::endpoint::RecvStream), Request<S>) -> IF,
        IF: Future<Output = Result<T, Failure>>,
    {
        let (reason, fallback) = match self.choose(desc) {
            Choice::Grpc(reason) => return Box::pin(self.on_grpc(desc, reason, grpc(req))).await,
            Choice::Iroh { reason, fallback } => (reason, fallback),
        };
        metrics::selected(desc, Transport::Iroh, reason);
        let started = Instant::now();
        let span = attempt_span(desc, Transport::Iroh, reason);
        let stream = match self.connect(deadline, fallback).instrument(span.clone()).await {
            Ok(stream) => stream,
            Err(failure) => {
                return match self.judge(desc, started, Err::<(), _>(failure), fallback, false, false) {
                    Attempt::FallBack(why) => {
                        self.fall_back(desc, why);
                        Box::pin(self.on_grpc(desc, why, grpc(req))).await
                    }
                    Attempt::Done(result) => Err(result.expect_err("judged a failure")),
                };
            }
        };
        // The request stream is consumed from here on: the call is judged as a whole, with no fallback.
        let Opened { streams, watch } = stream;
        let result = match time_left(deadline) {
            Ok(()) => iroh(streams, req).instrument(span).await.map_err(|f| explain(f, &watch)),
            Err(status) => Err(Failure::Answered(status)),
        };
        let silent = is_deadline(&result) && watch.peer_silent();
        match self.judge(desc, started, result, false, false, silent) {
            Attempt::Done(result) => result,
            Attempt::FallBack(_) => unreachable!("no fallback once the request stream is consumed"),
        }
    }

    pub async fn unary<Req: Message, Resp: Message>(
        &self,
        req: Request<Req>,
        desc: &'static MethodDesc,
        opts: &CallOptions,
        deadline: Deadline,
    ) -> Result<Response<Resp>, Status> {
        let grpc = |r| crate::grpc::unary(&self.grpc, r, desc, opts, deadline);
        let iroh = |r, streams| crate::iroh::unary(streams, r, desc, opts, deadline);
        self.replayable(req, desc, deadline, grpc, iroh).await
    }

    pub async fn server_streaming<Req: Message, Resp: Message>(
        &self,
        req: Request<Req>,
        desc: &'static MethodDesc,
        opts: &CallOptions,
        deadline: Deadline,
    ) -> Result<Response<Streaming<Resp>>, Status> {
        let grpc = |r| crate::grpc::server_streaming(&self.grpc, r, desc, opts, deadline);
        let iroh = |r, streams| crate::iroh::server_streaming(streams, r, desc, opts, deadline);
        self.replayable(req, desc, deadline, grpc, iroh).await
    }

    pub async fn client_streaming<S, Req, Resp>(
        &self,
        req: Request<S>,
        desc: &'static MethodDesc,
        opts: &CallOptions,
        deadline: Deadline,
    ) -> Result<Response<Resp>, Status>
    where
        S: Stream<Item = Req> + Send + 'static,
        Req: Message,
        Resp: Message,
    {
        let grpc = |r| crate::grpc::client_streaming(&self.grpc, r, desc, opts, deadline);
        let iroh = |stream, r| crate::iroh::client_streaming(stream, r, desc, opts, deadline);
        self.one_shot(req, desc, deadline, grpc, iroh).await
    }

    pub async fn bidi<S, Req, Resp>(
        &self,
        req: Request<S>,
        desc: &'static MethodDesc,
        opts: &CallOptions,
        deadline: Deadline,
    ) -> Result<Response<Streaming<Resp>>, Status>
    where
        S: Stream<Item = Req> + Send + 'static,
        Req: Message,
        Resp: Message,
    {
        let grpc = |r| crate::grpc::bidi(&self.grpc, r, desc, opts, deadline);
        let iroh = |stream, r| crate::iroh::bidi(stream, r, desc, opts, deadline);
        self.one_shot(req, desc, deadline, grpc, iroh).await
    }
}
