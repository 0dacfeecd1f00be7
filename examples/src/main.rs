//! `duet-node`: an example node serving health and status on gRPC and Iroh at once, and its client.
//!
//! ```text
//! duet-node                 # demo: start a node offline, call every method over gRPC and Iroh, exit
//! duet-node serve           # run a node until Ctrl-C; prints its ticket
//! duet-node call <TICKET>   # call every method of a running node over gRPC and Iroh
//! ```

use std::net::SocketAddr;

use clap::{Parser, Subcommand};
use duet::iroh::{Connector, endpoint};
use duet::{Channel, PeerAddr, Server, ServerHandle, Transport};
use duet_examples::client::{self, CallReport};
use duet_examples::pb::grpc::health::v1::HealthServer;
use duet_examples::pb::node::v1::NodeStatusServer;
use duet_examples::services::{HealthService, StatusService};

#[derive(Parser)]
#[command(version, about = "An example duet node: health and status served on gRPC and Iroh at once.")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Start a node, call every method over gRPC and over Iroh, print who answered, exit (default).
    Demo,
    /// Run a node until interrupted.
    Serve {
        /// gRPC listen address.
        #[arg(long, default_value = "127.0.0.1:0")]
        grpc: SocketAddr,
        /// Node name reported by GetStatus.
        #[arg(long, default_value = "node-1")]
        name: String,
    },
    /// Call every method of a running node, given its ticket.
    Call {
        /// The node's ticket, as `serve` prints it (`duet:grpc=…;iroh=…`).
        ticket: PeerAddr,
        /// Which transports to try.
        #[arg(long, value_enum, default_value = "both")]
        transport: Which,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Which {
    Grpc,
    Iroh,
    Both,
}

async fn start_node(name: &str, grpc: SocketAddr) -> Result<ServerHandle, Box<dyn std::error::Error>> {
    // Bind first so the status service can report the node's own ticket.
    let listener = tokio::net::TcpListener::bind(grpc).await?;
    let ep = endpoint::bind_loopback().await?;
    let ticket = PeerAddr { grpc: Some(listener.local_addr()?), iroh: Some(endpoint::addr(&ep)) };
    let health = HealthServer::new(HealthService::new(vec!["node.v1.NodeStatus".into()]));
    let status_placeholder = NodeStatusServer::new(StatusService::new(name, "", vec![]));
    let services = vec![health.config_name().to_owned(), status_placeholder.config_name().to_owned()];
    let status = NodeStatusServer::new(StatusService::new(name, ticket.to_string(), services));
    Ok(Server::builder().grpc_listener(listener).iroh(ep).add_service(health).add_service(status).serve().await?)
}

async fn call(peer: &PeerAddr, which: Which) -> Result<Vec<(&'static str, CallReport)>, Box<dyn std::error::Error>> {
    let mut rows = vec![];
    if matches!(which, Which::Grpc | Which::Both) {
        let uri = peer.grpc_uri().ok_or("the ticket has no gRPC address")?;
        for r in client::call_every_method(Channel::connect_grpc(uri).await?).await? {
            rows.push(("grpc", r));
        }
    }
    if matches!(which, Which::Iroh | Which::Both) {
        let addr = peer.iroh.clone().ok_or("the ticket has no Iroh address")?;
        let connector = Connector::new(endpoint::bind_loopback().await?);
        for r in client::call_every_method(Channel::iroh(&connector, addr)).await? {
            rows.push(("iroh", r));
        }
        connector.endpoint().close().await;
    }
    Ok(rows)
}

fn check_answers(rows: &[(&str, CallReport)]) -> Result<(), String> {
    for (channel, r) in rows {
        let want = if *channel == "grpc" { Transport::Grpc } else { Transport::Iroh };
        if r.transport != Some(want) {
            return Err(format!("{} over {channel} was answered by {:?}", r.method, r.transport));
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    match Cli::parse().command.unwrap_or(Command::Demo) {
        Command::Demo => {
            let node = start_node("demo-node", "127.0.0.1:0".parse()?).await?;
            println!("node up, offline: {}", node.peer_addr());
            let rows = call(&node.peer_addr(), Which::Both).await?;
            print!("{}", client::table(&rows));
            node.shutdown().await;
            check_answers(&rows)?;
            println!("every method answered on both transports");
        }
        Command::Serve { grpc, name } => {
            let node = start_node(&name, grpc).await?;
            println!("{}", node.peer_addr());
            eprintln!("serving {name} on gRPC and Iroh; call it with: duet-node call '{}'", node.peer_addr());
            tokio::signal::ctrl_c().await?;
            node.shutdown().await;
        }
        Command::Call { ticket, transport } => {
            let rows = call(&ticket, transport).await?;
            print!("{}", client::table(&rows));
            check_answers(&rows)?;
        }
    }
    Ok(())
}
