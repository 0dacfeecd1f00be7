//! `duet-orchestrator`: the flagship example node, its three-node demo, and its client.
//!
//! ```text
//! duet-orchestrator cluster --demo             # three nodes in this process: elect, VM, image, table, exit
//! duet-orchestrator cluster                    # the same, then stay up for the client until Ctrl-C
//! duet-orchestrator node --config node-1.toml  # one node per process
//! duet-orchestrator client --node '<ticket>' status|raft|vms|images|health|metrics|create-vm …
//! duet-orchestrator check-config node-1.toml
//! ```

#![forbid(unsafe_code)]

mod cli;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use duet::PeerAddr;
use duet_orchestrator::client::{NodeChannel, Via};
use duet_orchestrator::cluster::Cluster;
use duet_orchestrator::config::NodeConfig;
use duet_orchestrator::node::{Node, NodeOptions};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

#[derive(Parser)]
#[command(version, about = "A microVM orchestrator node whose every service runs on duet over gRPC and Iroh.")]
struct Cli {
    /// Log lines as text or as JSON objects, one per line (to stderr). `RUST_LOG` filters them
    /// (default: `info` for `node` and `cluster`, `warn` for the others).
    #[arg(long, value_enum, default_value = "text", global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Installs the process's log subscriber: `RUST_LOG` if set, else `default`.
fn init_logs(format: LogFormat, default: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().flatten_event(true).with_current_span(false).init(),
    }
}

/// Waits for SIGTERM (what systemd and Kubernetes send) or SIGINT (Ctrl-C) and names it.
async fn stop_signal() -> std::io::Result<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}

#[derive(Subcommand)]
enum Command {
    /// Start a cluster of nodes in this process (Dual mode, offline), elect a leader, create and start
    /// a VM, move an image between nodes, print the table; then serve until Ctrl-C (or exit: --demo).
    Cluster {
        /// Number of nodes (3 to 9).
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(3..=9))]
        nodes: u64,
        /// Exit after the demo instead of serving.
        #[arg(long)]
        demo: bool,
        /// Size of the demo image, MiB.
        #[arg(long, default_value_t = 8)]
        image_mib: usize,
        /// How the demo's client reaches the nodes.
        #[arg(long, value_enum, default_value = "auto")]
        transport: Via,
        /// Transport config for every node (a file with `[node]` and `[transport]`; its `[transport]` is
        /// used); default: the embedded offline Dual config.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run one node until Ctrl-C.
    Node {
        /// The node's config (`[node]` and `[transport]`).
        #[arg(long)]
        config: PathBuf,
    },
    /// Call a node.
    Client {
        /// The node's ticket, as it prints it (`duet:grpc=…;iroh=…`; `duet:grpc=127.0.0.1:7001` works too).
        #[arg(long)]
        node: PeerAddr,
        /// The transport: grpc, iroh, or auto (Dual, as the config routes each service).
        #[arg(long, value_enum, default_value = "auto")]
        transport: Via,
        /// Transport settings for the client (its `[transport]` table); default: the embedded config.
        #[arg(long)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        call: cli::Call,
    },
    /// Check a node config and print what it sets up.
    CheckConfig {
        /// The file.
        config: PathBuf,
    },
}

/// Installs the process's Prometheus recorder, serving it over HTTP at `http` if given.
fn install_metrics(http: Option<SocketAddr>) -> Result<Option<PrometheusHandle>, String> {
    // Buckets make duet's durations Prometheus histograms, which aggregate across nodes (a summary
    // would not).
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Suffix("_seconds".into()),
            &duet::metrics::DURATION_BUCKETS,
        )
        .map_err(|e| format!("metrics buckets: {e}"))?;
    match http {
        None => Ok(builder.install_recorder().ok()),
        Some(addr) => {
            let (recorder, exporter) = builder
                .with_http_listener(addr)
                .build()
                .map_err(|e| format!("invalid config: `node.metrics_address`: cannot serve metrics on {addr}: {e}"))?;
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).map_err(|e| format!("metrics recorder: {e}"))?;
            tokio::spawn(exporter);
            Ok(Some(handle))
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let default = match cli.command {
        Command::Node { .. } | Command::Cluster { .. } => "info",
        _ => "warn",
    };
    init_logs(cli.log_format, default);
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", cli::render_error(&*e));
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    match cli.command {
        Command::Cluster { nodes, demo, image_mib, transport, config } => {
            let base = match &config {
                Some(path) => NodeConfig::from_file(path)?.transport,
                None => NodeConfig::embedded(1).transport,
            };
            let metrics = install_metrics(None)?;
            let started = std::time::Instant::now();
            let cluster = Cluster::start(nodes, |t| *t = base.clone(), metrics).await?;
            println!(
                "{nodes} nodes up in {:.0?} (one process, each node its own gRPC port and Iroh endpoint):",
                started.elapsed()
            );
            for id in cluster.running() {
                println!("  node {id}: {}", cluster.node(id).ticket());
            }
            let report = duet_orchestrator::demo::run(&cluster, &base, transport, image_mib << 20).await;
            let report = match report {
                Ok(r) => r,
                Err(e) => {
                    cluster.shutdown().await;
                    return Err(e.into());
                }
            };
            println!(
                "leader: node {} (term {}); VM {:?} running on node {}; image {:?} ({} MiB, blake3 {}…) held by nodes {:?}\n",
                report.leader,
                report.term,
                report.vm.name,
                report.vm.host_node,
                report.image.name,
                report.image.size >> 20,
                &report.image.blake3_hex[..16],
                report.image.holders
            );
            println!("{}", report.table);
            if !demo {
                println!(
                    "serving until Ctrl-C; try: duet-orchestrator client --node '{}' status",
                    cluster.node(1).ticket()
                );
                let signal = stop_signal().await?;
                tracing::info!(signal, "stopping the cluster");
            }
            cluster.shutdown().await;
            Ok(())
        }
        Command::Node { config } => {
            let path = config;
            let config = NodeConfig::from_file(&path)?;
            config.check_for_node().map_err(|e| e.in_file(&path))?;
            let metrics = install_metrics(config.node.metrics_address)?;
            let node = Node::start(&config, NodeOptions { metrics, ..NodeOptions::default() }).await?;
            println!("node {} ({}) up; ticket:\n{}", node.id(), config.node.name, node.ticket());
            let signal = stop_signal().await?;
            tracing::info!(node = node.id(), signal, "stopping: no new calls; calls in flight may finish");
            // A second signal ends a drain that takes too long.
            tokio::spawn(async {
                if let Ok(signal) = stop_signal().await {
                    tracing::warn!(signal, "stopping now, without waiting for the drain");
                    std::process::exit(130);
                }
            });
            node.drain().await;
            tracing::info!("stopped cleanly");
            Ok(())
        }
        Command::CheckConfig { config: path } => {
            // Exactly the checks `node` runs before it starts.
            let config = NodeConfig::from_file(&path)?;
            config.check_for_node().map_err(|e| e.in_file(&path))?;
            let t = &config.transport;
            println!(
                "node {} ({}): mode {:?}, gRPC {}, Iroh {}, Raft {:?}, Iroh first for {:?}, bootstrap {}, join {:?}",
                config.node.id,
                config.node.name,
                t.mode,
                t.grpc.bind_address,
                if t.mode == duet::Mode::Grpc {
                    "off".to_owned()
                } else {
                    format!("{}:{}", t.iroh.bind_ip, t.iroh.bind_port)
                },
                t.migration.raft_transport,
                t.migration.prefer_iroh_for,
                config.node.bootstrap,
                config.node.join
            );
            Ok(())
        }
        Command::Client { node, transport, config, call } => {
            let base = match &config {
                Some(path) => NodeConfig::from_file(path)?.transport,
                None => NodeConfig::embedded(1).transport,
            };
            let conn = NodeChannel::connect(&node, transport, &base).await?;
            let result = cli::client_call(&conn, call).await;
            conn.close().await;
            result
        }
    }
}
