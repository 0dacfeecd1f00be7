//! The contenders: how each serves the bench service, and how a client calls it.

use std::net::SocketAddr;

use bytes::Bytes;
use clap::ValueEnum;
use duet::iroh::{Connector, endpoint};
use futures_util::StreamExt;
use iroh::endpoint::{Connection, PortmapperConfig, presets};
use iroh::{Endpoint, EndpointAddr, RelayMode, SecretKey};

use crate::pb::bench_client::BenchClient as TonicClient;
use crate::pb::bench_server::BenchServer as TonicServer;
use crate::pb::{Blob, Size};
use crate::services::{BRIDGE_ALPN, DuetBench, RAW_ALPN, RawEcho, TonicBench};

/// A way to run the bench service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Contender {
    /// A plain tonic server and client over TCP, no duet.
    TonicTcp,
    /// The same over TLS (rustls, as duet's TLS mode): what a production gRPC deployment runs, and
    /// the like-for-like comparison with QUIC, which is always encrypted.
    TonicTls,
    /// duet's gRPC path (tonic underneath, duet's generated client and server).
    DuetGrpc,
    /// duet's native wire over Iroh.
    DuetIroh,
    /// A Dual channel routing the service to Iroh first (`prefer_iroh_for`, fallback to gRPC on):
    /// what Dual's per-call choice costs over an Iroh-only channel.
    DuetDual,
    /// n0's irpc over iroh: postcard messages on one QUIC stream per request, duet's QUIC settings.
    Irpc,
    /// tonic's HTTP/2 over an Iroh stream (duet's legacy bridge).
    Bridge,
    /// The ceiling: a raw Iroh bi-stream echoing bytes, no encoding, with duet's QUIC tuning.
    RawIroh,
    /// The same ceiling with iroh's default QUIC settings, to show what the tuning buys.
    RawIrohDefaults,
    /// duet's gRPC path with one server interceptor, one server layer and one client interceptor
    /// (`crate::middleware`): what middleware costs. Not in the default table.
    DuetGrpcMiddleware,
    /// duet's Iroh path with the same middleware. Not in the default table.
    DuetIrohMiddleware,
}

impl Contender {
    /// Every contender, in table order.
    pub const ALL: [Contender; 9] = [
        Contender::TonicTcp,
        Contender::TonicTls,
        Contender::DuetGrpc,
        Contender::DuetIroh,
        Contender::DuetDual,
        Contender::Irpc,
        Contender::Bridge,
        Contender::RawIroh,
        Contender::RawIrohDefaults,
    ];

    /// The column title.
    pub fn label(self) -> &'static str {
        match self {
            Contender::TonicTcp => "tonic TCP",
            Contender::TonicTls => "tonic TLS",
            Contender::DuetGrpc => "duet gRPC",
            Contender::DuetIroh => "duet Iroh",
            Contender::DuetDual => "duet Dual",
            Contender::Irpc => "irpc",
            Contender::Bridge => "HTTP/2 bridge",
            Contender::RawIroh => "raw Iroh",
            Contender::RawIrohDefaults => "raw Iroh (defaults)",
            Contender::DuetGrpcMiddleware => "duet gRPC + middleware",
            Contender::DuetIrohMiddleware => "duet Iroh + middleware",
        }
    }

    fn tuned(self) -> bool {
        self != Contender::RawIrohDefaults
    }
}

/// An offline loopback endpoint, with duet's QUIC tuning or with iroh's defaults.
pub async fn bind(tuned: bool) -> Endpoint {
    if tuned {
        return endpoint::bind_loopback().await.expect("bind endpoint");
    }
    Endpoint::builder(presets::Minimal)
        .relay_mode(RelayMode::Disabled)
        .clear_address_lookup()
        .portmapper_config(PortmapperConfig::Disabled)
        .clear_ip_transports()
        .bind_addr(SocketAddr::from(([127, 0, 0, 1], 0)))
        .expect("loopback")
        .secret_key(SecretKey::generate())
        .bind()
        .await
        .expect("bind endpoint")
}

/// Starts the contender's server; returns the address line the client needs.
pub async fn serve(c: Contender) -> String {
    let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
    match c {
        Contender::TonicTcp => {
            let listener = tokio::net::TcpListener::bind(loopback).await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(
                tonic::transport::Server::builder()
                    .add_service(TonicServer::new(TonicBench).max_decoding_message_size(64 << 20))
                    // TCP_NODELAY, as duet's gRPC listener and tonic's client use: without it Nagle's
                    // algorithm adds ~40 ms to mid-sized calls.
                    .serve_with_incoming(
                        tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                    ),
            );
            format!("http://{addr}")
        }
        Contender::TonicTls => {
            let listener = tokio::net::TcpListener::bind(loopback).await.unwrap();
            let addr = listener.local_addr().unwrap();
            let id = crate::tls::identity();
            let tls = tonic::transport::ServerTlsConfig::new()
                .identity(tonic::transport::Identity::from_pem(id.cert, id.key));
            tokio::spawn(
                tonic::transport::Server::builder()
                    .tls_config(tls)
                    .unwrap()
                    .add_service(TonicServer::new(TonicBench).max_decoding_message_size(64 << 20))
                    .serve_with_incoming(
                        tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                    ),
            );
            format!("https://{addr} {}", crate::tls::fold(&id.ca))
        }
        Contender::Irpc => {
            let ep = crate::irpc_bench::bind_server().await;
            let addr = endpoint::addr(&ep);
            let router = iroh::protocol::Router::builder(ep)
                .accept(crate::irpc_bench::ALPN, crate::irpc_bench::protocol())
                .spawn();
            std::mem::forget(router);
            duet::PeerAddr { grpc: None, iroh: Some(addr) }.to_string()
        }
        Contender::DuetGrpc
        | Contender::DuetIroh
        | Contender::DuetDual
        | Contender::Bridge
        | Contender::DuetGrpcMiddleware
        | Contender::DuetIrohMiddleware => {
            let mut server = duet::Server::builder().max_decoding_message_size(64 << 20);
            server = match c {
                Contender::DuetGrpc => server.grpc(loopback),
                Contender::DuetIroh => server.iroh(bind(true).await),
                Contender::DuetDual => server.grpc(loopback).iroh(bind(true).await),
                Contender::DuetGrpcMiddleware => crate::middleware::serve(server.grpc(loopback)),
                Contender::DuetIrohMiddleware => crate::middleware::serve(server.iroh(bind(true).await)),
                _ => server.iroh(bind(true).await).legacy(
                    BRIDGE_ALPN,
                    tonic::service::Routes::new(TonicServer::new(TonicBench).max_decoding_message_size(64 << 20)),
                ),
            };
            let handle = server.add_service(crate::pb::BenchServer::new(DuetBench)).serve().await.unwrap();
            let ticket = handle.peer_addr().to_string();
            std::mem::forget(handle);
            ticket
        }
        Contender::RawIroh | Contender::RawIrohDefaults => {
            let ep = bind(c.tuned()).await;
            let addr = endpoint::addr(&ep);
            let router = iroh::protocol::Router::builder(ep).accept(RAW_ALPN, RawEcho).spawn();
            std::mem::forget(router);
            duet::PeerAddr { grpc: None, iroh: Some(addr) }.to_string()
        }
    }
}

/// A client of one contender.
#[derive(Clone)]
pub enum Client {
    /// tonic's own generated client.
    Tonic(TonicClient<tonic::transport::Channel>),
    /// duet's generated client.
    Duet(crate::pb::BenchClient),
    /// duet's generated client on a Dual channel: its unary calls must have gone over Iroh, or the
    /// column would mix in gRPC's figures unseen.
    Dual(crate::pb::BenchClient),
    /// A QUIC connection for the raw echo.
    Raw(Connection),
    /// irpc's client.
    Irpc(crate::irpc_bench::Client),
}

fn iroh_addr(addr: &str) -> EndpointAddr {
    addr.parse::<duet::PeerAddr>().expect("ticket").iroh.expect("iroh address")
}

/// Connects a fresh client (lazy ones make their first call connect).
pub async fn connect(c: Contender, addr: &str, ep: &Endpoint) -> Client {
    match c {
        Contender::TonicTcp => Client::Tonic(
            TonicClient::new(tonic::transport::Endpoint::from_shared(addr.to_owned()).unwrap().connect_lazy())
                .max_decoding_message_size(64 << 20),
        ),
        Contender::TonicTls => {
            let (url, ca) = addr.split_once(' ').expect("url and CA");
            let tls = tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(crate::tls::unfold(ca)))
                .domain_name("localhost");
            let endpoint = tonic::transport::Endpoint::from_shared(url.to_owned()).unwrap().tls_config(tls).unwrap();
            Client::Tonic(TonicClient::new(endpoint.connect_lazy()).max_decoding_message_size(64 << 20))
        }
        Contender::DuetGrpc => {
            let uri = addr.parse::<duet::PeerAddr>().unwrap().grpc_uri().unwrap();
            Client::Duet(
                crate::pb::BenchClient::new(duet::Channel::grpc_lazy(uri).unwrap()).max_decoding_message_size(64 << 20),
            )
        }
        Contender::DuetIroh => {
            let channel = duet::Channel::iroh(&Connector::new(ep.clone()), iroh_addr(addr));
            Client::Duet(crate::pb::BenchClient::new(channel).max_decoding_message_size(64 << 20))
        }
        Contender::DuetDual => {
            let peer = addr.parse::<duet::PeerAddr>().expect("ticket");
            let grpc = tonic::transport::Endpoint::from_shared(peer.grpc_uri().unwrap()).unwrap().connect_lazy();
            let mut config = duet::TransportConfig::default();
            config.migration.prefer_iroh_for = vec!["bench".into()];
            let channel = duet::Channel::dual(grpc, &Connector::new(ep.clone()), iroh_addr(addr), &config);
            Client::Dual(crate::pb::BenchClient::new(channel).max_decoding_message_size(64 << 20))
        }
        Contender::Irpc => Client::Irpc(crate::irpc_bench::Client::new(
            ep.connect(iroh_addr(addr), crate::irpc_bench::ALPN).await.expect("irpc connect"),
        )),
        Contender::DuetGrpcMiddleware => {
            let uri = addr.parse::<duet::PeerAddr>().unwrap().grpc_uri().unwrap();
            let channel = crate::middleware::call(duet::Channel::grpc_lazy(uri).unwrap());
            Client::Duet(crate::pb::BenchClient::new(channel).max_decoding_message_size(64 << 20))
        }
        Contender::DuetIrohMiddleware => {
            let channel = duet::Channel::iroh(&Connector::new(ep.clone()), iroh_addr(addr));
            let channel = crate::middleware::call(channel);
            Client::Duet(crate::pb::BenchClient::new(channel).max_decoding_message_size(64 << 20))
        }
        Contender::Bridge => Client::Tonic(
            TonicClient::new(duet::legacy::channel(ep.clone(), iroh_addr(addr), BRIDGE_ALPN.to_vec()))
                .max_decoding_message_size(64 << 20),
        ),
        Contender::RawIroh | Contender::RawIrohDefaults => {
            Client::Raw(ep.connect(iroh_addr(addr), RAW_ALPN).await.expect("raw connect"))
        }
    }
}

/// What a failed bench call says.
pub type Error = String;

impl Client {
    /// One echo call carrying `payload` both ways.
    pub async fn unary(&self, payload: Bytes) -> Result<(), Error> {
        let len = payload.len();
        let got = match self {
            Client::Tonic(c) => {
                c.clone().unary(Blob { data: payload }).await.map_err(|e| e.to_string())?.into_inner().data.len()
            }
            // duet's clients take `&self`: no clone per call, as tonic's `&mut self` needs.
            Client::Duet(c) => {
                c.unary(Blob { data: payload }).await.map_err(|e| e.to_string())?.into_inner().data.len()
            }
            Client::Dual(c) => {
                let resp = c.unary(Blob { data: payload }).await.map_err(|e| e.to_string())?;
                let via = resp.extensions().get::<duet::Transport>().copied();
                if via != Some(duet::Transport::Iroh) {
                    return Err(format!("a Dual call went over {via:?}, not Iroh: it fell back"));
                }
                resp.into_inner().data.len()
            }
            Client::Raw(conn) => {
                let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
                send.write_all(&[0]).await.map_err(|e| e.to_string())?;
                send.write_chunk(payload).await.map_err(|e| e.to_string())?;
                send.finish().map_err(|e| e.to_string())?;
                recv.read_to_end(64 << 20).await.map_err(|e| e.to_string())?.len()
            }
            Client::Irpc(c) => c.unary(payload).await?,
        };
        if got == len { Ok(()) } else { Err(format!("echo of {len} bytes came back as {got}")) }
    }

    /// Receives `total` bytes in `chunk`-byte messages; returns the bytes received.
    pub async fn download(&self, total: u64, chunk: u32) -> Result<u64, Error> {
        let size = Size { total, chunk };
        match self {
            Client::Tonic(c) => {
                let mut s = c.clone().download(size).await.map_err(|e| e.to_string())?.into_inner();
                let mut n = 0;
                while let Some(b) = s.next().await {
                    n += b.map_err(|e| e.to_string())?.data.len() as u64;
                }
                Ok(n)
            }
            Client::Duet(c) | Client::Dual(c) => {
                let mut s = c.download(size).await.map_err(|e| e.to_string())?.into_inner();
                let mut n = 0;
                while let Some(b) = s.next().await {
                    n += b.map_err(|e| e.to_string())?.data.len() as u64;
                }
                Ok(n)
            }
            Client::Raw(conn) => {
                let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
                send.write_all(&[1]).await.map_err(|e| e.to_string())?;
                send.write_all(&total.to_be_bytes()).await.map_err(|e| e.to_string())?;
                send.finish().map_err(|e| e.to_string())?;
                let mut n = 0;
                while let Some(c) = recv.read_chunk(1 << 20).await.map_err(|e| e.to_string())? {
                    n += c.len() as u64;
                }
                Ok(n)
            }
            Client::Irpc(c) => c.download(total, chunk).await,
        }
    }

    /// Sends `total` bytes in `chunk`-byte messages; returns the count the server acknowledged.
    pub async fn upload(&self, total: u64, chunk: u32) -> Result<u64, Error> {
        let data = Bytes::from(vec![9u8; chunk as usize]);
        let n = total.div_ceil(u64::from(chunk));
        let blobs = move || {
            let data = data.clone();
            futures_util::stream::iter((0..n).map(move |_| Blob { data: data.clone() }))
        };
        match self {
            Client::Tonic(c) => Ok(c.clone().upload(blobs()).await.map_err(|e| e.to_string())?.into_inner().total),
            Client::Duet(c) | Client::Dual(c) => {
                Ok(c.upload(blobs()).await.map_err(|e| e.to_string())?.into_inner().total)
            }
            Client::Raw(conn) => {
                let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
                send.write_all(&[2]).await.map_err(|e| e.to_string())?;
                let chunk = Bytes::from(vec![9u8; chunk as usize]);
                for _ in 0..n {
                    send.write_chunk(chunk.clone()).await.map_err(|e| e.to_string())?;
                }
                send.finish().map_err(|e| e.to_string())?;
                let ack = recv.read_to_end(8).await.map_err(|e| e.to_string())?;
                Ok(u64::from_be_bytes(ack.try_into().map_err(|_| "short ack".to_string())?))
            }
            Client::Irpc(c) => c.upload(Bytes::from(vec![9u8; chunk as usize]), n).await,
        }
    }
}
