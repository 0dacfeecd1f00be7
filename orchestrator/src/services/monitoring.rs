//! Phase 2: monitoring, the node's Prometheus metrics over either transport.

use std::sync::Arc;

use duet::{Request, Response, Status};

use crate::ctx::Ctx;
use crate::pb::orchestrator::v1::{GetMetricsRequest, MetricsReply, Monitoring};

/// `orchestrator.v1.Monitoring`.
#[derive(Debug, Clone)]
pub struct MonitoringService(pub Arc<Ctx>);

impl Monitoring for MonitoringService {
    async fn get_metrics(&self, _: Request<GetMetricsRequest>) -> Result<Response<MetricsReply>, Status> {
        let handle = self.0.metrics.as_ref().ok_or_else(|| {
            Status::unavailable("this process has no Prometheus recorder installed (another one was installed first)")
        })?;
        Ok(Response::new(MetricsReply { prometheus_text: handle.render() }))
    }
}
