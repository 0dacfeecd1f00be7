//! Service impls used by the tests: plain `async fn`s against the generated traits.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use duet::metadata::KeyAndValueRef;
use duet::{BoxStream, Code, Request, RequestExt, Response, Status, Streaming};
use futures_util::StreamExt;

use crate::pb::cases::a::v1::{Everything, Tree};
use crate::pb::cases::b::v1::{Clock, Mirror};
use crate::pb::matrix::v1::{CountRequest, EchoReply, EchoRequest, Kinds};

/// A request extension a middleware may add for the handler; `Echo` of `"tag"` answers with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag(pub String);

/// Implements every method kind; counts the calls it ran.
#[derive(Debug, Default, Clone)]
pub struct KindsImpl {
    /// Handler invocations, across all methods.
    pub calls: Arc<AtomicUsize>,
    /// How often `Record` ran for each id.
    pub recorded: Arc<Mutex<HashMap<String, usize>>>,
    /// Extra latency of `Echo` and `Record` (after it records) when called over gRPC and over Iroh,
    /// in ms: a delay layer for the adaptive tests, and a slow handler for the fault tests.
    pub delay_ms: [Arc<AtomicU64>; 2],
}

impl KindsImpl {
    /// Sets the extra latency `Echo` adds for callers on `transport`.
    pub fn set_delay(&self, transport: duet::Transport, ms: u64) {
        let i = if transport == duet::Transport::Grpc { 0 } else { 1 };
        self.delay_ms[i].store(ms, Ordering::SeqCst);
    }

    fn delay_for(&self, peer: duet::Peer) -> u64 {
        let i = if matches!(peer, duet::Peer::Grpc(_)) { 0 } else { 1 };
        self.delay_ms[i].load(Ordering::SeqCst)
    }
}

fn failure(req: &EchoRequest) -> Option<Status> {
    (req.fail_with != 0).then(|| {
        Status::with_details(Code::from_i32(req.fail_with), req.fail_message.clone(), req.fail_details.clone())
    })
}

impl Kinds for KindsImpl {
    /// Echoes the text; `"peer"` answers with the caller's identity instead, `"tag"` with the
    /// request's [`Tag`] extension, `"trace"` with the trace id of the handler's trace context. Request metadata whose key
    /// starts with `x-echo-` comes back as response metadata.
    async fn echo(&self, request: Request<EchoRequest>) -> Result<Response<EchoReply>, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let peer = request.peer();
        let delay = self.delay_for(peer);
        if delay > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
        }
        let (md, ext, req) = request.into_parts();
        if let Some(status) = failure(&req) {
            return Err(status);
        }
        let text = match req.text.as_str() {
            "peer" => format!("{peer:?}"),
            "tag" => format!("{:?}", ext.get::<Tag>()),
            "trace" => format!("{:?}", ext.get::<duet::middleware::TraceContext>().map(|c| c.trace_id_hex())),
            _ => req.text,
        };
        let mut resp = Response::new(EchoReply { text, index: 0 });
        for kv in md.iter() {
            match kv {
                KeyAndValueRef::Ascii(k, v) if k.as_str().starts_with("x-echo-") => {
                    resp.metadata_mut().append(k.clone(), v.clone());
                }
                KeyAndValueRef::Binary(k, v) if k.as_str().starts_with("x-echo-") => {
                    resp.metadata_mut().append_bin(k.clone(), v.clone());
                }
                _ => {}
            }
        }
        Ok(resp)
    }

    async fn record(&self, request: Request<EchoRequest>) -> Result<Response<EchoReply>, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let delay = self.delay_for(request.peer());
        let id = request.into_inner().text;
        let n = {
            let mut recorded = self.recorded.lock().expect("recorded lock");
            let n = recorded.entry(id.clone()).or_default();
            *n += 1;
            *n
        };
        if delay > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
        }
        Ok(Response::new(EchoReply { text: id, index: n as u32 }))
    }

    async fn count(&self, request: Request<CountRequest>) -> Result<Response<BoxStream<EchoReply>>, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let n = request.into_inner().count;
        let stream = futures_util::stream::iter((0..n).map(|i| Ok(EchoReply { text: format!("#{i}"), index: i })));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn join(&self, request: Request<Streaming<EchoRequest>>) -> Result<Response<EchoReply>, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mut stream = request.into_inner();
        let mut texts = vec![];
        while let Some(req) = stream.message().await? {
            if let Some(status) = failure(&req) {
                return Err(status);
            }
            texts.push(req.text);
        }
        Ok(Response::new(EchoReply { index: texts.len() as u32, text: texts.join(",") }))
    }

    async fn chat(&self, request: Request<Streaming<EchoRequest>>) -> Result<Response<BoxStream<EchoReply>>, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let replies = request.into_inner().enumerate().map(|(i, req)| {
            let req = req?;
            match failure(&req) {
                Some(status) => Err(status),
                None => Ok(EchoReply { text: req.text.to_uppercase(), index: i as u32 }),
            }
        });
        Ok(Response::new(Box::pin(replies)))
    }
}

/// Returns what it gets, across packages.
#[derive(Debug, Default, Clone)]
pub struct MirrorImpl;

impl Mirror for MirrorImpl {
    async fn reflect(&self, request: Request<Everything>) -> Result<Response<Everything>, Status> {
        Ok(Response::new(request.into_inner()))
    }

    async fn grow(&self, request: Request<Tree>) -> Result<Response<BoxStream<Tree>>, Status> {
        let children = request.into_inner().children;
        Ok(Response::new(Box::pin(futures_util::stream::iter(children.into_iter().map(Ok)))))
    }
}

/// Answers with well-known types.
#[derive(Debug, Default, Clone)]
pub struct ClockImpl;

/// The instant `Clock.Now` always answers.
pub const FIXED_NOW: duet::well_known::Timestamp = duet::well_known::Timestamp { seconds: 1_700_000_000, nanos: 5 };

impl Clock for ClockImpl {
    async fn now(&self, _: Request<()>) -> Result<Response<duet::well_known::Timestamp>, Status> {
        Ok(Response::new(FIXED_NOW))
    }

    async fn ping(&self, _: Request<()>) -> Result<Response<()>, Status> {
        Ok(Response::new(()))
    }
}
