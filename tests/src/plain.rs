//! A tonic service written against tonic's own generated trait, with no duet in it: the yardstick for
//! wire compatibility and the legacy bridge.

use bytes::Bytes;
use duet::__codegen::tonic::{self, Request, Response, Status};
use futures_util::StreamExt;

use crate::pb::grpc::testing::test_service_server::TestService as TonicTestService;
use crate::pb::grpc::testing::{
    Payload, SimpleRequest, SimpleResponse, StreamingInputCallRequest, StreamingInputCallResponse,
    StreamingOutputCallRequest, StreamingOutputCallResponse,
};

fn body(n: usize) -> Option<Payload> {
    Some(Payload { r#type: 0, body: Bytes::from(vec![0u8; n]) })
}

/// The interop service, in plain tonic.
#[derive(Debug, Default, Clone)]
pub struct PlainTonic;

#[tonic::async_trait]
impl TonicTestService for PlainTonic {
    async fn empty_call(&self, _: Request<()>) -> Result<Response<()>, Status> {
        Ok(Response::new(()))
    }

    async fn unary_call(&self, req: Request<SimpleRequest>) -> Result<Response<SimpleResponse>, Status> {
        Ok(Response::new(SimpleResponse { payload: body(req.into_inner().response_size as usize) }))
    }

    type StreamingOutputCallStream = duet::BoxStream<StreamingOutputCallResponse>;

    async fn streaming_output_call(
        &self,
        req: Request<StreamingOutputCallRequest>,
    ) -> Result<Response<Self::StreamingOutputCallStream>, Status> {
        let sizes = req.into_inner().response_parameters.into_iter().map(|p| p.size as usize);
        let out = sizes.map(|n| Ok(StreamingOutputCallResponse { payload: body(n) }));
        Ok(Response::new(Box::pin(futures_util::stream::iter(out))))
    }

    async fn streaming_input_call(
        &self,
        req: Request<tonic::Streaming<StreamingInputCallRequest>>,
    ) -> Result<Response<StreamingInputCallResponse>, Status> {
        let mut stream = req.into_inner();
        let mut total = 0;
        while let Some(r) = stream.message().await? {
            total += r.payload.map_or(0, |p| p.body.len() as i32);
        }
        Ok(Response::new(StreamingInputCallResponse { aggregated_payload_size: total }))
    }

    type FullDuplexCallStream = duet::BoxStream<StreamingOutputCallResponse>;

    async fn full_duplex_call(
        &self,
        req: Request<tonic::Streaming<StreamingOutputCallRequest>>,
    ) -> Result<Response<Self::FullDuplexCallStream>, Status> {
        let out = req.into_inner().map(|r| {
            let size = r?.response_parameters.first().map_or(0, |p| p.size as usize);
            Ok(StreamingOutputCallResponse { payload: body(size) })
        });
        Ok(Response::new(Box::pin(out)))
    }

    type HalfDuplexCallStream = duet::BoxStream<StreamingOutputCallResponse>;

    async fn half_duplex_call(
        &self,
        _: Request<tonic::Streaming<StreamingOutputCallRequest>>,
    ) -> Result<Response<Self::HalfDuplexCallStream>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn unimplemented_call(&self, _: Request<()>) -> Result<Response<()>, Status> {
        Err(Status::unimplemented("by design"))
    }
}
