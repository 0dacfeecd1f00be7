//! `duet-node`: an example node serving health and status on gRPC and Iroh at once, and its client.
//!
//! ```text
//! duet-node                          # demo: start a node offline, call every method over gRPC, Iroh
//!                                    # and a Dual channel, print who answered, exit
//! duet-node serve [--metrics ADDR]   # run a node until Ctrl-C; prints its ticket
//! duet-node call <TICKET>            # call every method of a running node
//! duet-node --config node.toml --check-config   # validate a config and print each service's route
//! ```

#![forbid(unsafe_code)]

use std::net::SocketAddr;

use clap::{Parser, Subcommand};
use duet::iroh::{Connector, endpoint};
use duet::routing::Plan;
use duet::{Channel, Config, PeerAddr, Server, ServerHandle, Transport, TransportConfig};
use duet_examples::client::{self, CallReport};
use duet_examples::pb::grpc::health::v1::HealthServer;
use duet_examples::pb::node::v1::NodeStatusServer;
use duet_examples::services::{HealthService, StatusService};

/// The embedded default config (offline Dual mode).
const DEFAULT_CONFIG: &str = include_str!("../node.toml");

#[derive(Parser)]
#[command(version, about = "An example duet node: health and status served on gRPC and Iroh at once.")]
struct Cli {
    /// Transport config (TOML with a `[transport]` table); default: the embedded offline Dual config.
    #[arg(long, global = true)]
    config: Option<std::path::PathBuf>,
    /// Validate the config, print every service's route, and exit.
    #[arg(long)]
    check_config: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Start a node, call every method over gRPC, Iroh and Dual, print who answered, exit (default).
    Demo,
    /// Run a node until interrupted.
    Serve {
        /// Node name reported by GetStatus.
        #[arg(long, default_value = "node-1")]
        name: String,
        /// Serve Prometheus metrics over HTTP on this address.
        #[arg(long)]
        metrics: Option<SocketAddr>,
    },
    /// Call every method of a running node, given its ticket.
    Call {
        /// The node's ticket, as `serve` prints it (`duet:grpc=…;iroh=…`).
        ticket: PeerAddr,
        /// Which channels to use: each transport alone, or the config's Dual routing.
        #[arg(long, value_enum, default_value = "all")]
        via: Via,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Via {
    Grpc,
    Iroh,
    Dual,
    All,
}

/// The services this node serves, by config name.
const SERVICES: [&str; 2] = ["health", "status"];

fn load(path: Option<&std::path::Path>) -> Result<TransportConfig, duet::ConfigError> {
    Ok(match path {
        Some(p) => Config::from_file(p)?.transport,
        None => Config::from_toml(DEFAULT_CONFIG)?.transport,
    })
}

async fn start_node(name: &str, cfg: &TransportConfig) -> Result<ServerHandle, Box<dyn std::error::Error>> {
    // The endpoint is bound first so the status service can report the node's own ticket.
    let server = Server::from_config(cfg)?;
    let (server, iroh_addr) = if cfg.mode != duet::Mode::Grpc {
        let ep = endpoint::bind_from_config(&cfg.iroh).await?;
        let addr = endpoint::addr(&ep);
        (server.iroh(ep), Some(addr))
    } else {
        (server, None)
    };
    let listener = tokio::net::TcpListener::bind(cfg.grpc.bind_address).await?;
    let grpc_addr = listener.local_addr()?;
    let server = if cfg.mode != duet::Mode::Iroh { server.grpc_listener(listener) } else { server };
    let ticket = PeerAddr { grpc: (cfg.mode != duet::Mode::Iroh).then_some(grpc_addr), iroh: iroh_addr };
    let health = HealthServer::new(HealthService::new(vec!["node.v1.NodeStatus".into()]));
    let status =
        NodeStatusServer::new(StatusService::new(name, ticket.to_string(), SERVICES.map(String::from).to_vec()));
    Ok(server.add_service(health).add_service(status).serve().await?)
}

async fn call(
    peer: &PeerAddr,
    cfg: &TransportConfig,
    via: Via,
) -> Result<Vec<(&'static str, CallReport)>, Box<dyn std::error::Error>> {
    let connector = Connector::from_config(endpoint::bind_from_config(&cfg.iroh).await?, &cfg.iroh);
    let mut channels = vec![];
    if matches!(via, Via::Grpc | Via::All) && peer.grpc.is_some() {
        channels.push(("grpc", Channel::grpc_lazy(peer.grpc_uri().unwrap_or_default())?));
    }
    if matches!(via, Via::Iroh | Via::All)
        && let Some(addr) = &peer.iroh
    {
        channels.push(("iroh", Channel::iroh(&connector, addr.clone())));
    }
    if matches!(via, Via::Dual | Via::All) {
        channels.push(("dual", Channel::from_config(cfg, &connector, peer)?));
    }
    let mut rows = vec![];
    for (name, channel) in channels {
        rows.extend(client::call_every_method(channel).await?.into_iter().map(|r| (name, r)));
    }
    connector.endpoint().close().await;
    Ok(rows)
}

/// The transport that should have answered: the channel's own, or for Dual the route's first choice.
fn expected(channel: &str, method: &str, cfg: &TransportConfig) -> Option<Transport> {
    match channel {
        "grpc" => Some(Transport::Grpc),
        "iroh" => Some(Transport::Iroh),
        _ => {
            let service = if method.starts_with("Health/") { "health" } else { "status" };
            match cfg.route(service).plan {
                Plan::Only(t) | Plan::First { transport: t, .. } => Some(t),
                Plan::Adaptive { .. } => None,
            }
        }
    }
}

fn check_answers(rows: &[(&str, CallReport)], cfg: &TransportConfig) -> Result<(), String> {
    for (channel, r) in rows {
        if let Some(want) = expected(channel, r.method, cfg)
            && r.transport != Some(want)
        {
            return Err(format!(
                "{} over the {channel} channel was answered by {:?}, not {want}",
                r.method, r.transport
            ));
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cli = Cli::parse();
    let cfg = match load(cli.config.as_deref()) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    if cli.check_config {
        let source = cli.config.as_ref().map_or("the embedded default".into(), |p| p.display().to_string());
        println!("{source}: valid; mode = {:?}", cfg.mode);
        print!("{}", cfg.describe_routes(SERVICES.into_iter().chain([cfg.migration.raft_service.as_str()])));
        return Ok(());
    }
    match cli.command.unwrap_or(Command::Demo) {
        Command::Demo => {
            let metrics = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
            let node = start_node("demo-node", &cfg).await?;
            println!("node up, offline: {}", node.peer_addr());
            let rows = call(&node.peer_addr(), &cfg, Via::All).await?;
            print!("{}", client::table(&rows));
            node.shutdown().await;
            check_answers(&rows, &cfg)?;
            println!("every method answered, each on the transport its channel and route call for");
            let rendered = metrics.render();
            let selections = rendered.lines().filter(|l| l.starts_with("duet_transport_selected_total"));
            println!("transport selections (Prometheus):");
            for line in selections {
                println!("  {line}");
            }
        }
        Command::Serve { name, metrics } => {
            if let Some(addr) = metrics {
                metrics_exporter_prometheus::PrometheusBuilder::new().with_http_listener(addr).install()?;
                eprintln!("metrics on http://{addr}/metrics");
            }
            let node = start_node(&name, &cfg).await?;
            println!("{}", node.peer_addr());
            eprintln!("serving {name}; call it with: duet-node call '{}'", node.peer_addr());
            tokio::signal::ctrl_c().await?;
            node.shutdown().await;
        }
        Command::Call { ticket, via } => {
            let rows = call(&ticket, &cfg, via).await?;
            print!("{}", client::table(&rows));
            check_answers(&rows, &cfg)?;
        }
    }
    Ok(())
}
