//! The node's service impls, each written once against its duet-generated trait and served on gRPC
//! and Iroh at once.

mod cluster;
mod image;
mod monitoring;
mod raft;
mod vm;

pub use cluster::ClusterStatusService;
pub use image::ImageServiceImpl;
pub use monitoring::MonitoringService;
pub use raft::RaftServiceImpl;
pub use vm::VmServiceImpl;
