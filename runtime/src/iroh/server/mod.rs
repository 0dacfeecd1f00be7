//! The Iroh side of a server: accepts connections on ALPN `duet/1`, one task per stream, dispatch by
//! method path, deadline and cancellation around every handler.

mod access;
mod call;
mod header;
mod reply;

use rustc_hash::FxHashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use iroh::EndpointId;
use iroh::endpoint::{Connection, RecvStream, SendStream};
use iroh::protocol::{AcceptError, ProtocolHandler};
use tokio_util::task::TaskTracker;
use tokio_util::task::task_tracker::TaskTrackerToken;

use super::frame::{Frame, FrameKind};
use super::recv::{self};
use super::send::FrameSender;
use super::trailer_from_status;
use crate::compression::Compression;
use crate::limits::Limits;
use crate::middleware::Stack;
use tonic::Status;

use crate::method::split_path;
pub use access::{AccessControl, AccessHook, AccessRequest, NOT_ALLOWED};
pub use call::{IrohService, ServerCall};
pub use header::{CallHeader, read_call_header};

/// Default time a new stream may take to deliver its request header (and, for unary and
/// server-streaming calls, its request message): a peer that opens streams and sends nothing cannot
/// hold handler slots longer than this.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The services one Iroh endpoint serves, by fully qualified name. The services are fixed when
/// the server starts, so a fast hash is safe with names from the network: no one can add to them.
pub(crate) struct Registry {
    services: FxHashMap<&'static str, Arc<dyn IrohService>>,
    limits: Limits,
    tracker: TaskTracker,
    max_concurrent_calls: u32,
    draining: AtomicBool,
    access: AccessControl,
    header_timeout: Duration,
    stack: Arc<Stack>,
    compression: Compression,
}

/// What every Iroh call a server serves runs with.
#[derive(Clone)]
pub(crate) struct CallSettings {
    pub limits: Limits,
    pub max_concurrent_calls: u32,
    pub access: AccessControl,
    pub header_timeout: Duration,
    pub stack: Arc<Stack>,
    pub compression: Compression,
}

/// The `duet/1` protocol handler mounted on an iroh `Router`.
#[derive(Clone)]
pub(crate) struct DuetProtocol {
    registry: Arc<Registry>,
    /// The id of the endpoint this protocol serves on.
    local: EndpointId,
}

impl fmt::Debug for DuetProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<_> = self.registry.services.keys().collect();
        f.debug_struct("DuetProtocol").field("services", &names).finish()
    }
}

impl DuetProtocol {
    pub fn new(
        services: Vec<Arc<dyn IrohService>>,
        settings: CallSettings,
        tracker: TaskTracker,
        local: EndpointId,
    ) -> Self {
        let CallSettings { limits, max_concurrent_calls, access, header_timeout, stack, compression } = settings;
        let services = services.into_iter().map(|s| (s.name(), s)).collect();
        let draining = AtomicBool::new(false);
        let registry = Registry {
            services,
            limits,
            tracker,
            max_concurrent_calls,
            draining,
            access,
            header_timeout,
            stack,
            compression,
        };
        Self { registry: Arc::new(registry), local }
    }

    /// From now on, new calls are refused with `UNAVAILABLE` while calls in flight finish.
    pub fn drain(&self) {
        self.registry.draining.store(true, Ordering::SeqCst);
    }
}

impl ProtocolHandler for DuetProtocol {
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        let peer = conn.remote_id();
        let allowed = &self.registry.access.allowed;
        if !allowed.is_empty() && !allowed.contains(&peer) {
            tracing::info!(%peer, "refused an Iroh connection from a peer not on the allowlist");
            conn.close(NOT_ALLOWED.into(), b"this endpoint is not on the server's allowlist");
            return Ok(());
        }
        // A peer that dials in may be a restarted process our own connector still holds a dead
        // connection to.
        super::connector::incoming(self.local, peer);
        // Liveness probes are DATAGRAMs whose only use is the acknowledgement QUIC sends for them.
        let probes = conn.clone();
        tokio::spawn(async move { while probes.read_datagram().await.is_ok() {} });
        // Calls past the limit wait for a slot: QUIC does not let the client open another stream.
        conn.set_max_concurrent_bi_streams(self.registry.max_concurrent_calls.into());
        while let Ok((send, recv)) = conn.accept_bi().await {
            let registry = self.registry.clone();
            let in_flight = self.registry.tracker.token();
            // Boxed: a task's future is copied as it is spawned and again as it ends, and this one
            // is over a kilobyte (the header's read, the call, the error paths' replies).
            tokio::spawn(Box::pin(async move { registry.serve_stream(peer, send, recv, in_flight).await }));
        }
        Ok(())
    }
}

impl Registry {
    async fn serve_stream(&self, peer: EndpointId, send: SendStream, recv: RecvStream, in_flight: TaskTrackerToken) {
        let mut frames = recv::frames(recv, self.limits.max_decoding_message_size);
        let mut send = FrameSender::new(send);
        if self.draining.load(Ordering::SeqCst) {
            let status = Status::unavailable("the server is shutting down");
            let _ = send.trailer(&trailer_from_status(&status)).await;
            return;
        }
        let first = tokio::time::timeout(self.header_timeout, frames.next()).await;
        let header = match &first {
            Err(_) => Err(Status::deadline_exceeded("no request header received in time")),
            Ok(None) => return,
            Ok(Some(Err(e))) => Err(e.to_status()),
            Ok(Some(Ok(Frame { kind: FrameKind::RequestHeader, body }))) => read_call_header(body),
            Ok(Some(Ok(Frame { kind, .. }))) => {
                Err(Status::internal(format!("protocol error: expected a request header, got a {kind:?} frame")))
            }
        };
        let CallHeader { path, mut metadata, timeout, fingerprint } = match header {
            Ok(c) => c,
            Err(status) => {
                let _ = send.trailer(&trailer_from_status(&status)).await;
                return;
            }
        };
        // The deadline travels once, as `timeout_micros`; handlers and middleware read it as on gRPC,
        // and a `grpc-timeout` the client sent as metadata (an older duet) is not one the server keeps.
        if !metadata.is_empty() {
            metadata.remove(&*crate::deadline::GRPC_TIMEOUT_KEY);
        }
        if let Some(t) = timeout
            && let Ok(value) = crate::deadline::to_grpc_timeout(t).parse()
        {
            metadata.insert(crate::deadline::GRPC_TIMEOUT_KEY.clone(), value);
        }
        let (inbound, outbound) = match self.compression.incoming(&metadata) {
            Ok(inbound) => (inbound, self.compression.response_encoding(&metadata)),
            Err(status) => {
                let _ = send.trailer(&trailer_from_status(&status)).await;
                return;
            }
        };
        let service = split_path(&path).and_then(|(s, m)| Some((self.services.get(s)?, m)));
        let Some((service, method)) = service else {
            let status = Status::unimplemented(format!("unknown service or malformed path {path:?}"));
            let _ = send.trailer(&trailer_from_status(&status)).await;
            return;
        };
        if let Some(hook) = &self.access.hook
            && !hook(&AccessRequest { peer, service: service.name(), method })
        {
            let status = Status::permission_denied(format!("peer {peer} may not call {path}"));
            let _ = send.trailer(&trailer_from_status(&status)).await;
            return;
        }
        let call = ServerCall {
            metadata,
            timeout,
            fingerprint,
            frames,
            send,
            limits: self.limits,
            peer,
            header_timeout: self.header_timeout,
            in_flight,
            stack: self.stack.clone(),
            inbound,
            outbound,
        };
        service.call(method, call).await;
    }
}
