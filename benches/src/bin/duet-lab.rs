//! duet on a shaped lab link: a 64 MiB download and 64-byte unary throughput for tonic over TCP,
//! duet's gRPC path, duet's Iroh wire on the direct path, and duet's Iroh wire through the relay,
//! across a link of `--rate-mbit` (default 1000) with a 1500-byte MTU, shaped with `tc tbf` both
//! ways. Each figure is a fraction of the link rate and a ratio to tonic, all from one run.
//!
//! Needs root and `nft` (the network lab of `duet_tests::lab`):
//! `cargo run --release -p duet-bench --bin duet-lab -- --rounds 3`

#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use duet::iroh::Connector;
use duet::{Channel, Server};
use duet_tests::interop::TestServiceImpl;
use duet_tests::lab::{Device, NetLab, RouterPreset, run_in};
use duet_tests::pb::grpc::testing::test_service_client::TestServiceClient as TonicClient;
use duet_tests::pb::grpc::testing::{
    Payload, ResponseParameters, SimpleRequest, StreamingOutputCallRequest, TestServiceClient, TestServiceServer,
};
use futures_util::StreamExt;
use iroh::EndpointAddr;

#[derive(Parser, Debug)]
struct Args {
    /// The shaped link's rate, Mbit/s.
    #[arg(long, default_value_t = 1000)]
    rate_mbit: u64,
    /// MiB downloaded per transfer.
    #[arg(long, default_value_t = 64)]
    mib: usize,
    /// Seconds of 64-byte unary calls per contender.
    #[arg(long, default_value_t = 3)]
    seconds: u64,
    /// Concurrent callers for the unary run.
    #[arg(long, default_value_t = 64)]
    callers: usize,
    /// Rounds (every contender once per round); medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

const CONTENDERS: [&str; 4] = ["tonic-tcp", "duet-grpc", "duet-iroh-direct", "duet-iroh-relay"];

/// A client of the interop service over one contender's path.
#[derive(Clone)]
enum Client {
    Tonic(TonicClient<tonic::transport::Channel>),
    Duet(TestServiceClient),
}

impl Client {
    async fn download(&mut self, req: StreamingOutputCallRequest) -> usize {
        let mut total = 0;
        match self {
            Client::Tonic(c) => {
                let mut s = c.streaming_output_call(req).await.expect("tonic stream").into_inner();
                while let Some(r) = s.next().await {
                    total += r.expect("a message").payload.map_or(0, |p| p.body.len());
                }
            }
            Client::Duet(c) => {
                let mut s = c.streaming_output_call(req).await.expect("duet stream").into_inner();
                while let Some(r) = s.next().await {
                    total += r.expect("a message").payload.map_or(0, |p| p.body.len());
                }
            }
        }
        total
    }

    async fn small(&mut self) {
        let req = SimpleRequest {
            response_size: 64,
            payload: Some(Payload { r#type: 0, body: Bytes::from_static(&[7; 64]) }),
            ..Default::default()
        };
        match self {
            Client::Tonic(c) => drop(c.unary_call(req).await.expect("tonic unary")),
            Client::Duet(c) => drop(c.unary_call(req).await.expect("duet unary")),
        }
    }
}

/// Shapes `dev`'s side of the link (its egress) with tbf at `rate_mbit`.
fn shape_device(dev: &Device, rate_mbit: u64) {
    let rate = format!("{rate_mbit}mbit");
    run_in(
        dev,
        "tc",
        &["qdisc", "replace", "dev", "eth0", "root", "tbf", "rate", &rate, "burst", "1mb", "latency", "50ms"],
        None,
    )
    .expect("tbf on the client's link");
}

fn shape_router(router: &duet_tests::lab::Router, rate_mbit: u64) {
    let rate = format!("{rate_mbit}mbit");
    let lan = router.interfaces().into_iter().map(|i| i.name().to_owned()).find(|n| n.starts_with("br"));
    let lan = lan.expect("the router's LAN bridge");
    let mut cmd = std::process::Command::new("tc");
    cmd.args(["qdisc", "replace", "dev", &lan, "root", "tbf", "rate", &rate, "burst", "1mb", "latency", "50ms"]);
    let out = router.spawn_command_sync(cmd).expect("tc").wait_with_output().expect("tc");
    assert!(out.status.success(), "tbf toward the client: {}", String::from_utf8_lossy(&out.stderr));
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let lab = NetLab::new().await.unwrap_or_else(|e| panic!("{e}"));
    let link = lab.router("link", RouterPreset::Public).await;
    let client_host = lab.host("client", &link).await;
    let server_host = lab.host("server", &lab.dc).await;
    shape_device(&client_host, args.rate_mbit);
    shape_router(&link, args.rate_mbit);

    // The server: duet on gRPC 50051 and Iroh, plain tonic on 50052.
    let cfg = lab.config("dual", "");
    let relay: iroh::RelayUrl = lab.relay_url.parse().unwrap();
    let server_ip = server_host.ip().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let _server = server_host
        .spawn(move |_| async move {
            let endpoint = duet::iroh::endpoint::bind_from_config(&cfg.transport.iroh).await.unwrap();
            tokio::time::timeout(Duration::from_secs(20), endpoint.online()).await.expect("relay reached");
            let server = Server::from_config(&cfg.transport)
                .unwrap()
                .iroh(endpoint.clone())
                .add_service(TestServiceServer::new(TestServiceImpl::default()))
                .max_encoding_message_size(8 << 20)
                .serve()
                .await
                .unwrap();
            let listener = tokio::net::TcpListener::bind((std::net::Ipv4Addr::UNSPECIFIED, 50052)).await.unwrap();
            tokio::spawn(
                tonic::transport::Server::builder()
                    .add_service(duet_tests::pb::grpc::testing::test_service_server::TestServiceServer::new(
                        duet_tests::plain::PlainTonic,
                    ))
                    .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
            );
            let port = endpoint.bound_sockets()[0].port();
            let _ = tx.send((endpoint.id(), port));
            std::future::pending::<()>().await;
            drop(server);
        })
        .unwrap();
    let (id, port) = rx.await.unwrap();
    let direct = EndpointAddr::new(id).with_ip_addr((server_ip, port).into());
    let by_relay = EndpointAddr::new(id).with_relay_url(relay);

    let client_cfg = lab.config("iroh", "fallback_to_grpc = false");
    let relay_ca = std::fs::read(&lab.relay_ca).unwrap();
    let rows = client_host
        .spawn(move |_| async move {
            // Direct: an endpoint from the config. Relay: one with no IP transport at all.
            let endpoint = duet::iroh::endpoint::bind_from_config(&client_cfg.transport.iroh).await.unwrap();
            let direct_connector = Connector::from_config(endpoint, &client_cfg.transport.iroh);
            let roots = rustls_roots(&relay_ca);
            let relay_map: iroh::RelayMap = by_relay.relay_urls().next().unwrap().clone().into();
            let relay_only = iroh::Endpoint::builder(iroh::endpoint::presets::Minimal)
                .relay_mode(iroh::RelayMode::Custom(relay_map))
                .ca_tls_config(iroh::tls::CaTlsConfig::custom_roots(roots))
                .transport_config(duet::iroh::endpoint::transport_config())
                .clear_ip_transports()
                .bind()
                .await
                .unwrap();
            tokio::time::timeout(Duration::from_secs(20), relay_only.online()).await.expect("relay reached");
            let relay_connector = Connector::new(relay_only);
            let tonic_channel =
                tonic::transport::Endpoint::from_shared(format!("http://{server_ip}:50052")).unwrap().connect_lazy();
            let clients = [
                Client::Tonic(TonicClient::new(tonic_channel).max_decoding_message_size(8 << 20)),
                Client::Duet(
                    TestServiceClient::new(Channel::grpc_lazy(format!("http://{server_ip}:50051")).unwrap())
                        .max_decoding_message_size(8 << 20),
                ),
                Client::Duet(
                    TestServiceClient::new(Channel::iroh(&direct_connector, direct.clone()))
                        .max_decoding_message_size(8 << 20),
                ),
                Client::Duet(
                    TestServiceClient::new(Channel::iroh(&relay_connector, by_relay.clone()))
                        .max_decoding_message_size(8 << 20),
                ),
            ];
            let download = StreamingOutputCallRequest {
                response_parameters: vec![ResponseParameters { size: 1 << 20, interval_us: 0 }; args.mib],
                ..Default::default()
            };
            let mut mbit = vec![vec![]; CONTENDERS.len()];
            let mut calls = vec![vec![]; CONTENDERS.len()];
            for _ in 0..args.rounds {
                for (i, client) in clients.iter().enumerate() {
                    let mut c = client.clone();
                    c.small().await; // connect first
                    let t = Instant::now();
                    let bytes = c.download(download.clone()).await;
                    assert_eq!(bytes, args.mib << 20);
                    mbit[i].push(bytes as f64 * 8.0 / t.elapsed().as_secs_f64() / 1e6);
                    let until = Instant::now() + Duration::from_secs(args.seconds);
                    let tasks: Vec<_> = (0..args.callers)
                        .map(|_| {
                            let mut c = client.clone();
                            tokio::spawn(async move {
                                let mut n = 0u64;
                                while Instant::now() < until {
                                    c.small().await;
                                    n += 1;
                                }
                                n
                            })
                        })
                        .collect();
                    let mut n = 0;
                    for t in tasks {
                        n += t.await.unwrap();
                    }
                    calls[i].push(n as f64 / args.seconds as f64);
                }
            }
            let path = |c: &Connector, a: &EndpointAddr| {
                let c = c.clone();
                let a = a.clone();
                async move {
                    let conn = c.connection(a).await.unwrap();
                    conn.paths().iter().find(|p| p.is_selected()).map(|p| format!("{:?}", p.remote_addr()))
                }
            };
            let paths = (path(&direct_connector, &direct).await, path(&relay_connector, &by_relay).await);
            (mbit.into_iter().map(median).collect::<Vec<_>>(), calls.into_iter().map(median).collect::<Vec<_>>(), paths)
        })
        .unwrap()
        .await
        .unwrap();
    let (mbit, calls, paths) = rows;
    println!(
        "link {} Mbit/s (tbf both ways, MTU 1500), {} MiB download, 64-byte unary with {} callers for {} s, \
         median of {} rounds; Iroh paths: direct {:?}, relay {:?}",
        args.rate_mbit, args.mib, args.callers, args.seconds, args.rounds, paths.0, paths.1
    );
    println!("| contender | download Mbit/s | of link | × tonic | 64 B calls/s | × tonic |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for (i, name) in CONTENDERS.iter().enumerate() {
        println!(
            "| {name} | {:.0} | {:.2} | {:.2} | {:.0} | {:.2} |",
            mbit[i],
            mbit[i] / args.rate_mbit as f64,
            mbit[i] / mbit[0],
            calls[i],
            calls[i] / calls[0]
        );
    }
}

fn rustls_roots(pem: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem).collect::<Result<_, _>>().expect("the relay CA")
}
