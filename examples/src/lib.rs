//! The example node's services and its client, shared by the `duet-node` binary and the README test.
//!
//! The node serves the standard `grpc.health.v1.Health` service and a small `node.v1.NodeStatus`
//! service, each implemented once and served on gRPC and Iroh at the same time.

#![forbid(unsafe_code)]
#![deny(warnings)]

pub mod client;
pub mod services;

/// Generated code for the example's protos, nested by package.
pub mod pb {
    duet::include_protos!();
}
