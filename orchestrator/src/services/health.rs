//! Phase 2: the standard `grpc.health.v1.Health`, so Kubernetes probes and any gRPC health client work
//! on the gRPC port, and the same impl answers over Iroh.

use duet::{BoxStream, Request, Response, Status};
use futures_util::StreamExt;
use tokio::sync::watch;
use tokio_stream::wrappers::WatchStream;

use crate::pb::grpc::health::v1::health_check_response::ServingStatus;
use crate::pb::grpc::health::v1::{Health, HealthCheckRequest, HealthCheckResponse};

/// `SERVING` while the node is a cluster member that knows a leader, `NOT_SERVING` otherwise; the
/// same for the whole server (`""`) and each of its services by full proto name.
#[derive(Debug, Clone)]
pub struct HealthService {
    status: watch::Receiver<ServingStatus>,
    services: Vec<String>,
}

impl HealthService {
    /// Health reporting `status` for the node and for `services`.
    pub fn new(status: watch::Receiver<ServingStatus>, services: Vec<String>) -> Self {
        Self { status, services }
    }

    fn known(&self, service: &str) -> bool {
        service.is_empty() || self.services.iter().any(|s| s == service)
    }
}

impl Health for HealthService {
    async fn check(&self, request: Request<HealthCheckRequest>) -> Result<Response<HealthCheckResponse>, Status> {
        let service = request.into_inner().service;
        if !self.known(&service) {
            return Err(Status::not_found(format!("unknown service {service:?}")));
        }
        Ok(Response::new(HealthCheckResponse { status: *self.status.borrow() as i32 }))
    }

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<BoxStream<HealthCheckResponse>>, Status> {
        let service = request.into_inner().service;
        if !self.known(&service) {
            // As the health protocol says: SERVICE_UNKNOWN, and the stream stays open.
            let unknown = HealthCheckResponse { status: ServingStatus::ServiceUnknown as i32 };
            let stream = futures_util::stream::iter([Ok(unknown)]).chain(futures_util::stream::pending());
            return Ok(Response::new(Box::pin(stream)));
        }
        let updates = WatchStream::new(self.status.clone()).map(|s| Ok(HealthCheckResponse { status: s as i32 }));
        Ok(Response::new(Box::pin(updates)))
    }
}
