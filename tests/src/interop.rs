//! The interop `TestService`, implemented once on duet's trait, as gRPC's interop servers behave.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use duet::metadata::MetadataMap;
use duet::{BoxStream, Code, Request, Response, Status, Streaming, Trailers};
use futures_util::{Stream, StreamExt};

use crate::pb::grpc::testing::{
    EchoStatus, Payload, SimpleRequest, SimpleResponse, StreamingInputCallRequest, StreamingInputCallResponse,
    StreamingOutputCallRequest, StreamingOutputCallResponse, TestService,
};

/// Header echoed back in the response headers.
pub const ECHO_INITIAL: &str = "x-grpc-test-echo-initial";
/// Binary header echoed back in the trailers.
pub const ECHO_TRAILING: &str = "x-grpc-test-echo-trailing-bin";

/// Counts handlers that were dropped before they finished (the server's view of cancellation).
#[derive(Debug, Default, Clone)]
pub struct TestServiceImpl {
    /// Handlers (or response streams) dropped unfinished.
    pub cancelled: Arc<AtomicUsize>,
    /// Handlers started.
    pub started: Arc<AtomicUsize>,
    /// Response messages produced by streaming handlers (to observe flow control).
    pub produced: Arc<AtomicUsize>,
}

/// Increments `cancelled` unless disarmed: lives as long as a handler or its response stream.
struct CancelGuard {
    armed: bool,
    cancelled: Arc<AtomicUsize>,
}

impl CancelGuard {
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if self.armed {
            self.cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl TestServiceImpl {
    fn guard(&self) -> CancelGuard {
        self.started.fetch_add(1, Ordering::SeqCst);
        CancelGuard { armed: true, cancelled: self.cancelled.clone() }
    }
}

fn payload(size: i32) -> Result<Payload, Status> {
    let size = usize::try_from(size).map_err(|_| Status::invalid_argument("negative response size"))?;
    Ok(Payload { r#type: 0, body: Bytes::from(vec![0u8; size]) })
}

fn requested_status(status: &Option<EchoStatus>) -> Result<(), Status> {
    match status {
        Some(s) if s.code != 0 => Err(Status::new(Code::from_i32(s.code), s.message.clone())),
        _ => Ok(()),
    }
}

/// Echoes the interop metadata: the initial value into headers, the trailing value into trailers.
fn echo_metadata<T>(request_md: &MetadataMap, mut response: Response<T>) -> Response<T> {
    if let Some(v) = request_md.get(ECHO_INITIAL) {
        response.metadata_mut().insert(ECHO_INITIAL, v.clone());
    }
    if let Some(v) = request_md.get_bin(ECHO_TRAILING) {
        let mut trailers = MetadataMap::new();
        trailers.insert_bin(ECHO_TRAILING, v.clone());
        response.extensions_mut().insert(Trailers(trailers));
    }
    response
}

fn output_stream(
    requests: impl futures_util::Stream<Item = Result<StreamingOutputCallRequest, Status>> + Send + 'static,
    guard: CancelGuard,
    produced: Arc<AtomicUsize>,
) -> BoxStream<StreamingOutputCallResponse> {
    let responses = requests
        .map(move |req| -> BoxStream<StreamingOutputCallResponse> {
            let produced = produced.clone();
            let req = match req {
                Ok(r) => r,
                Err(s) => return Box::pin(futures_util::stream::iter([Err(s)])),
            };
            if let Err(s) = requested_status(&req.response_status) {
                return Box::pin(futures_util::stream::iter([Err(s)]));
            }
            Box::pin(futures_util::stream::iter(req.response_parameters).then(move |p| {
                let produced = produced.clone();
                async move {
                    produced.fetch_add(1, Ordering::SeqCst);
                    if p.interval_us > 0 {
                        tokio::time::sleep(Duration::from_micros(p.interval_us as u64)).await;
                    }
                    Ok(StreamingOutputCallResponse { payload: Some(payload(p.size)?) })
                }
            }))
        })
        .flatten();
    // The guard travels with the stream: dropping the stream early is a cancellation.
    let mut guard = Some(guard);
    let mut responses = Box::pin(responses);
    Box::pin(futures_util::stream::poll_fn(move |cx| {
        let next = responses.as_mut().poll_next(cx);
        if let std::task::Poll::Ready(None) = next
            && let Some(g) = guard.take()
        {
            g.disarm();
        }
        next
    }))
}

impl TestService for TestServiceImpl {
    async fn empty_call(&self, request: Request<()>) -> Result<Response<()>, Status> {
        let md = request.metadata().clone();
        Ok(echo_metadata(&md, Response::new(())))
    }

    async fn unary_call(&self, request: Request<SimpleRequest>) -> Result<Response<SimpleResponse>, Status> {
        let guard = self.guard();
        let (md, _, req) = request.into_parts();
        requested_status(&req.response_status)?;
        let response = SimpleResponse { payload: Some(payload(req.response_size)?) };
        guard.disarm();
        Ok(echo_metadata(&md, Response::new(response)))
    }

    async fn streaming_output_call(
        &self,
        request: Request<StreamingOutputCallRequest>,
    ) -> Result<Response<BoxStream<StreamingOutputCallResponse>>, Status> {
        let guard = self.guard();
        let (md, _, req) = request.into_parts();
        let stream = output_stream(futures_util::stream::iter([Ok(req)]), guard, self.produced.clone());
        Ok(echo_metadata(&md, Response::new(stream)))
    }

    async fn streaming_input_call(
        &self,
        request: Request<Streaming<StreamingInputCallRequest>>,
    ) -> Result<Response<StreamingInputCallResponse>, Status> {
        let guard = self.guard();
        let (md, _, mut stream) = request.into_parts();
        let mut size = 0usize;
        while let Some(req) = stream.message().await? {
            size += req.payload.map_or(0, |p| p.body.len());
        }
        guard.disarm();
        let aggregated_payload_size = i32::try_from(size).map_err(|_| Status::out_of_range("aggregate too large"))?;
        Ok(echo_metadata(&md, Response::new(StreamingInputCallResponse { aggregated_payload_size })))
    }

    async fn full_duplex_call(
        &self,
        request: Request<Streaming<StreamingOutputCallRequest>>,
    ) -> Result<Response<BoxStream<StreamingOutputCallResponse>>, Status> {
        let guard = self.guard();
        let (md, _, stream) = request.into_parts();
        Ok(echo_metadata(&md, Response::new(output_stream(stream, guard, self.produced.clone()))))
    }

    async fn half_duplex_call(
        &self,
        request: Request<Streaming<StreamingOutputCallRequest>>,
    ) -> Result<Response<BoxStream<StreamingOutputCallResponse>>, Status> {
        let guard = self.guard();
        let (md, _, stream) = request.into_parts();
        // Half duplex: read every request first, then answer them in order.
        let requests: Vec<_> = stream.collect().await;
        Ok(echo_metadata(
            &md,
            Response::new(output_stream(futures_util::stream::iter(requests), guard, self.produced.clone())),
        ))
    }

    async fn unimplemented_call(&self, _: Request<()>) -> Result<Response<()>, Status> {
        Err(Status::unimplemented("UnimplementedCall is not implemented by design"))
    }
}
