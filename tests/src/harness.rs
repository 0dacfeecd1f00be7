//! Starts real servers on 127.0.0.1 (gRPC over TCP and an offline Iroh endpoint) and makes channels.

use duet::iroh::{Connector, endpoint};
use duet::{Channel, Server, ServerHandle, Transport};

/// A server on both transports and a client-side Iroh connector.
pub struct Running {
    /// The server.
    pub server: ServerHandle,
    /// The client's connector (its own endpoint).
    pub connector: Connector,
}

/// Both transports, for tests that run once per transport.
pub const TRANSPORTS: [Transport; 2] = [Transport::Grpc, Transport::Iroh];

/// How a conformance case reaches the server: one transport, or a Dual channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// gRPC only.
    Grpc,
    /// Iroh only.
    Iroh,
    /// A Dual channel from config, with every test service preferred on Iroh (and gRPC fallback).
    Dual,
}

/// Every way, for suites that must pass unchanged on each.
pub const VIAS: [Via; 3] = [Via::Grpc, Via::Iroh, Via::Dual];

impl Via {
    /// The transport that should answer.
    pub fn transport(self) -> Transport {
        match self {
            Via::Grpc => Transport::Grpc,
            Via::Iroh | Via::Dual => Transport::Iroh,
        }
    }
}

impl std::fmt::Display for Via {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// Serves `server` (services already added) on a gRPC listener and an Iroh endpoint, both on loopback.
pub async fn serve(server: Server) -> Running {
    let ep = endpoint::bind_loopback().await.expect("bind server endpoint");
    let server = server.grpc("127.0.0.1:0".parse().unwrap()).iroh(ep).serve().await.expect("serve");
    let client_ep = endpoint::bind_loopback().await.expect("bind client endpoint");
    Running { server, connector: Connector::new(client_ep) }
}

impl Running {
    /// A channel to the server over `transport`.
    pub fn channel(&self, transport: Transport) -> Channel {
        match transport {
            Transport::Grpc => {
                let addr = self.server.grpc_addr().expect("grpc listener");
                Channel::grpc_lazy(format!("http://{addr}")).expect("valid uri")
            }
            Transport::Iroh => Channel::iroh(&self.connector, self.server.iroh_addr().expect("iroh endpoint")),
        }
    }

    /// A channel to the server by `via`.
    pub fn via(&self, via: Via) -> Channel {
        match via {
            Via::Grpc => self.channel(Transport::Grpc),
            Via::Iroh => self.channel(Transport::Iroh),
            Via::Dual => {
                let cfg = duet::Config::from_toml(
                    "[transport]\nmode = \"dual\"\n[transport.migration]\n\
                     prefer_iroh_for = [\"test_service\", \"unimplemented_service\", \"kinds\", \"mirror\", \"clock\"]",
                )
                .expect("valid test config");
                Channel::from_config(&cfg.transport, &self.connector, &self.server.peer_addr()).expect("both addresses")
            }
        }
    }

    /// Stops the server and the client endpoint.
    pub async fn stop(self) {
        self.server.shutdown().await;
        self.connector.endpoint().close().await;
    }
}

/// Binds an offline endpoint with `key` at `addr`, as a restarted peer does. A closed endpoint's UDP
/// socket is released in the background, so the port may still be taken for a moment: retry for up
/// to 2 s.
pub async fn rebind(key: iroh::SecretKey, addr: std::net::SocketAddr) -> iroh::Endpoint {
    let mut last = None;
    for _ in 0..100 {
        match duet::iroh::endpoint::offline_builder_at(addr).secret_key(key.clone()).bind().await {
            Ok(ep) => return ep,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("{addr} still taken after 2 s: {last:?}")
}
