//! The node's service impls: written once against the generated traits, served on both transports.

use std::time::{Instant, SystemTime};

use duet::{BoxStream, Request, Response, Status, Streaming};
use futures_util::StreamExt;
use tokio::sync::watch;
use tokio_stream::wrappers::WatchStream;

use crate::pb::grpc::health::v1::health_check_response::ServingStatus;
use crate::pb::grpc::health::v1::{Health, HealthCheckRequest, HealthCheckResponse};
use crate::pb::node::v1::{NodeInfo, NodeStatus, Sample, TallyReply};

/// `grpc.health.v1.Health`: the node is `SERVING` until told otherwise.
#[derive(Debug, Clone)]
pub struct HealthService {
    status: watch::Sender<ServingStatus>,
    services: Vec<String>,
}

impl HealthService {
    /// Health for a node serving `services` (fully qualified proto names).
    pub fn new(services: Vec<String>) -> Self {
        Self { status: watch::Sender::new(ServingStatus::Serving), services }
    }

    /// Changes the reported status; `Watch` streams the change.
    pub fn set(&self, status: ServingStatus) {
        self.status.send_replace(status);
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
            let unknown = HealthCheckResponse { status: ServingStatus::ServiceUnknown as i32 };
            return Ok(Response::new(Box::pin(futures_util::stream::iter([Ok(unknown)]))));
        }
        let updates =
            WatchStream::new(self.status.subscribe()).map(|status| Ok(HealthCheckResponse { status: status as i32 }));
        Ok(Response::new(Box::pin(updates)))
    }
}

/// `node.v1.NodeStatus`.
#[derive(Debug, Clone)]
pub struct StatusService {
    name: String,
    ticket: String,
    services: Vec<String>,
    started: (Instant, SystemTime),
}

impl StatusService {
    /// Status of the node `name`, reachable at `ticket`, serving `services` (config names).
    pub fn new(name: impl Into<String>, ticket: impl Into<String>, services: Vec<String>) -> Self {
        Self { name: name.into(), ticket: ticket.into(), services, started: (Instant::now(), SystemTime::now()) }
    }
}

fn timestamp(t: SystemTime) -> duet::well_known::Timestamp {
    let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    duet::well_known::Timestamp { seconds: since.as_secs() as i64, nanos: since.subsec_nanos() as i32 }
}

impl NodeStatus for StatusService {
    async fn get_status(&self, _: Request<()>) -> Result<Response<NodeInfo>, Status> {
        let uptime = self.started.0.elapsed();
        Ok(Response::new(NodeInfo {
            name: self.name.clone(),
            ticket: self.ticket.clone(),
            started_at: Some(timestamp(self.started.1)),
            uptime: Some(duet::well_known::Duration {
                seconds: uptime.as_secs() as i64,
                nanos: uptime.subsec_nanos() as i32,
            }),
            services: self.services.clone(),
        }))
    }

    async fn tally(&self, request: Request<Streaming<Sample>>) -> Result<Response<TallyReply>, Status> {
        let mut samples = request.into_inner();
        let mut reply = TallyReply::default();
        while let Some(sample) = samples.message().await? {
            reply.total =
                reply.total.checked_add(sample.value).ok_or_else(|| Status::out_of_range("total overflows"))?;
            reply.count += 1;
        }
        Ok(Response::new(reply))
    }

    async fn running_total(
        &self,
        request: Request<Streaming<Sample>>,
    ) -> Result<Response<BoxStream<TallyReply>>, Status> {
        let totals = request.into_inner().scan(TallyReply::default(), |acc, sample| {
            let next = sample.map(|s| {
                acc.total = acc.total.saturating_add(s.value);
                acc.count += 1;
                *acc
            });
            futures_util::future::ready(Some(next))
        });
        Ok(Response::new(Box::pin(totals)))
    }
}
