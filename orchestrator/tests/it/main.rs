//! The orchestrator's integration tests, one module per concern, in one binary (one link of iroh,
//! tonic and openraft instead of one per file). Filter by module: `cargo test -p duet-orchestrator
//! --test it -- hostile::`.

mod client_output;
mod cluster;
mod data_dir;
mod demo;
mod grpc_tools;
mod hostile;
mod images;
mod lab;
mod liveness;
mod restart;
