//! Talking to a node from outside the cluster: one duet channel over the transport the user picks.

use duet::iroh::Connector;
use duet::{Channel, Mode, PeerAddr, TransportConfig};

/// Which transport a client uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Via {
    /// gRPC only: plain HTTP/2, any gRPC tool could do the same.
    Grpc,
    /// Iroh only: duet's native wire over QUIC.
    Iroh,
    /// Dual, as the config's migration strategy routes each service, with fallback.
    Auto,
}

/// A channel to a node, and the client endpoint it dials from (kept alive with it).
#[derive(Debug, Clone)]
pub struct NodeChannel {
    /// The channel; build any generated client on it.
    pub channel: Channel,
    connector: Option<Connector>,
}

impl NodeChannel {
    /// A channel to the node with `ticket`, over `via` (`Auto` with a one-transport ticket uses that
    /// transport), using `config`'s `[transport]` settings (its
    /// Iroh table for the client's own endpoint, its migration table for `auto`).
    pub async fn connect(ticket: &PeerAddr, via: Via, config: &TransportConfig) -> Result<Self, duet::Error> {
        let mode = match via {
            Via::Grpc => Mode::Grpc,
            Via::Iroh => Mode::Iroh,
            // A ticket with one transport leaves nothing to choose.
            Via::Auto if ticket.iroh.is_none() => Mode::Grpc,
            Via::Auto if ticket.grpc.is_none() => Mode::Iroh,
            Via::Auto => Mode::Dual,
        };
        let mut config = TransportConfig { mode, ..config.clone() };
        // A client given a node's own config must not take the node's UDP port or its Iroh identity.
        config.iroh.bind_port = 0;
        config.iroh.secret_key_file = None;
        // Forcing one transport overrides the migration strategy, which must then agree with it.
        match mode {
            Mode::Grpc => {
                config.migration.raft_transport = duet::RaftTransport::AlwaysGrpc;
                config.migration.prefer_iroh_for.clear();
                config.migration.adaptive_for.clear();
            }
            Mode::Iroh => {
                config.migration.raft_transport = duet::RaftTransport::AlwaysIroh;
                config.migration.fallback_to_grpc = false;
            }
            Mode::Dual => {}
        }
        if mode == Mode::Grpc {
            return Ok(Self { channel: Channel::grpc_from_config(&config, ticket)?, connector: None });
        }
        let endpoint = duet::iroh::endpoint::bind_from_config(&config.iroh).await?;
        let connector = Connector::from_config(endpoint, &config.iroh);
        let channel = Channel::from_config(&config, &connector, ticket)?;
        Ok(Self { channel, connector: Some(connector) })
    }

    /// Closes the client's endpoint, if it has one.
    pub async fn close(self) {
        if let Some(connector) = self.connector {
            connector.endpoint().close().await;
        }
    }
}
