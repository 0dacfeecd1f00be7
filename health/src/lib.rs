//! The standard gRPC health service, `grpc.health.v1.Health`, as a duet service: what
//! `tonic-health` is for tonic, served on both of a [`duet::Server`]'s transports. Kubernetes
//! probes, `grpc_health_probe` and any gRPC health client call it on the gRPC port; duet clients
//! call the same service over Iroh.
//!
//! One [`HealthReporter`] sets the status of the whole server (the empty service name) and of each
//! service by its full proto name; `Check` answers the current status (`NOT_FOUND` for a service
//! never reported), and `Watch` streams it, starting with the current one (`SERVICE_UNKNOWN` for a
//! service never reported, with the stream kept open until it is).
//!
//! ```
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! use duet_health::pb::health_check_response::ServingStatus;
//!
//! let (reporter, health) = duet_health::health_reporter();
//! reporter.set_service_status("node.v1.Status", ServingStatus::Serving);
//! let server = duet::Server::builder().grpc("127.0.0.1:0".parse()?).add_service(health).serve().await?;
//! // ... later, while draining:
//! reporter.set_service_status("", ServingStatus::NotServing);
//! server.shutdown().await;
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use duet::{BoxStream, Request, Response, Status};
use futures_util::StreamExt;
use tokio::sync::watch;
use tokio_stream::wrappers::WatchStream;

use pb::health_check_response::ServingStatus;
use pb::{Health, HealthCheckRequest, HealthCheckResponse};

/// The generated `grpc.health.v1` types, server and client.
#[allow(missing_docs)]
pub mod pb {
    duet::include_proto!("grpc.health.v1");

    /// The file descriptor set of `grpc/health/v1/health.proto`, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/health_descriptor.bin"));
}

/// The most service names kept at once, reported or watched: `Watch` of an unknown name from a
/// caller must not grow the map without bound.
const MAX_WATCHED_NAMES: usize = 1024;

/// Statuses by service name; a sender per service ever reported or watched.
type Statuses = Arc<Mutex<HashMap<String, watch::Sender<Option<ServingStatus>>>>>;

/// Sets what the health service answers. Cheap to clone; every clone sets the same statuses.
#[derive(Debug, Clone, Default)]
pub struct HealthReporter {
    statuses: Statuses,
}

impl HealthReporter {
    /// Sets the status of `service` (its full proto name, or `""` for the whole server), waking
    /// every `Watch` of it.
    pub fn set_service_status(&self, service: impl Into<String>, status: ServingStatus) {
        let service = service.into();
        let mut statuses = self.statuses.lock().expect("health statuses");
        match statuses.get(&service) {
            Some(tx) => {
                tx.send_replace(Some(status));
            }
            None => {
                statuses.insert(service, watch::channel(Some(status)).0);
            }
        }
    }

    /// Marks `service` as `SERVING`.
    pub fn set_serving(&self, service: impl Into<String>) {
        self.set_service_status(service, ServingStatus::Serving);
    }

    /// Marks `service` as `NOT_SERVING`.
    pub fn set_not_serving(&self, service: impl Into<String>) {
        self.set_service_status(service, ServingStatus::NotServing);
    }

    /// Forgets `service`: `Check` answers `NOT_FOUND` again and watchers see `SERVICE_UNKNOWN`.
    pub fn clear_service_status(&self, service: &str) {
        if let Some(tx) = self.statuses.lock().expect("health statuses").get(service) {
            tx.send_replace(None);
        }
    }

    /// The status last set for `service`, if any.
    pub fn status(&self, service: &str) -> Option<ServingStatus> {
        *self.statuses.lock().expect("health statuses").get(service)?.borrow()
    }

    fn subscribe(&self, service: String) -> watch::Receiver<Option<ServingStatus>> {
        let mut statuses = self.statuses.lock().expect("health statuses");
        if let Some(tx) = statuses.get(&service) {
            return tx.subscribe();
        }
        // Names come from callers: forget unreported ones nobody watches any more, and past a
        // bound, watch an unknown name on a channel of its own that no report reaches.
        statuses.retain(|_, tx| tx.borrow().is_some() || tx.receiver_count() > 0);
        if statuses.len() >= MAX_WATCHED_NAMES {
            return watch::channel(None).1;
        }
        statuses.entry(service).or_insert_with(|| watch::channel(None).0).subscribe()
    }
}

/// The `grpc.health.v1.Health` impl that answers what its [`HealthReporter`] set.
#[derive(Debug, Clone)]
pub struct HealthService {
    reporter: HealthReporter,
}

/// A reporter, and the health service it drives, ready to add to a [`duet::Server`]. The whole
/// server (`""`) starts out `SERVING`, as with `tonic-health`.
pub fn health_reporter() -> (HealthReporter, pb::HealthServer<HealthService>) {
    let reporter = HealthReporter::default();
    reporter.set_serving("");
    let service = HealthService { reporter: reporter.clone() };
    (reporter, pb::HealthServer::new(service))
}

impl HealthService {
    /// The service answering what `reporter` sets.
    pub fn new(reporter: HealthReporter) -> Self {
        Self { reporter }
    }
}

fn response(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse { status: status as i32 }
}

impl Health for HealthService {
    async fn check(&self, request: Request<HealthCheckRequest>) -> Result<Response<HealthCheckResponse>, Status> {
        let service = request.into_inner().service;
        match self.reporter.status(&service) {
            Some(status) => Ok(Response::new(response(status))),
            None => Err(Status::not_found(format!("unknown service {service:?}"))),
        }
    }

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<BoxStream<HealthCheckResponse>>, Status> {
        let service = request.into_inner().service;
        let updates = WatchStream::new(self.reporter.subscribe(service))
            .map(|status| Ok(response(status.unwrap_or(ServingStatus::ServiceUnknown))));
        Ok(Response::new(Box::pin(updates)))
    }
}
