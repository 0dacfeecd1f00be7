//! A test node in its own process, for the fault tests that kill it: serves `matrix.v1.Kinds` on gRPC
//! and Iroh at the addresses given (so a restart finds the same ports and, from the key file, the same
//! endpoint id), prints `READY <ticket>` and runs until killed.
//!
//! `duet-test-node <grpc addr> <iroh port> <secret key file>`

#![forbid(unsafe_code)]

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;

use duet::Server;
use duet::iroh::endpoint;
use duet_tests::pb::matrix::v1::KindsServer;
use duet_tests::services::KindsImpl;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, grpc, iroh_port, key] = &args[..] else {
        return Err("usage: duet-test-node <grpc addr> <iroh port> <secret key file>".into());
    };
    let grpc: SocketAddr = grpc.parse()?;
    let key = endpoint::load_or_create_key(Path::new(key))?;
    let ep = endpoint::offline_builder_at(SocketAddr::from(([127, 0, 0, 1], iroh_port.parse()?)))
        .secret_key(key)
        .bind()
        .await?;
    let server =
        Server::builder().grpc(grpc).iroh(ep).add_service(KindsServer::new(KindsImpl::default())).serve().await?;
    let mut out = std::io::stdout();
    writeln!(out, "READY {}", server.peer_addr())?;
    out.flush()?;
    std::future::pending::<()>().await;
    Ok(())
}
