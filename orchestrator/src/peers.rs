//! Phase 4, the peer connector: one duet [`Channel`] per peer, routed as the node's `[transport]` config
//! says (Dual: the migration strategy picks gRPC or Iroh per service, with fallback), shared by every
//! client the node keeps to that peer — Raft, forwarded writes, image pulls.

use std::collections::HashMap;
use std::sync::Mutex;

use duet::iroh::Connector;
use duet::{Channel, Mode, PeerAddr, Status, TransportConfig};

/// Channels to peers, by ticket.
#[derive(Debug)]
pub struct Peers {
    config: TransportConfig,
    connector: Option<Connector>,
    token: Option<String>,
    channels: Mutex<HashMap<String, Channel>>,
}

impl Peers {
    /// A connector dialling from `connector`'s endpoint (so peers see this node's endpoint id), or gRPC
    /// only when the node has no Iroh endpoint. With a cluster `token`, every call carries it (see
    /// [`crate::auth`]).
    pub fn new(config: TransportConfig, connector: Option<Connector>, token: Option<String>) -> Self {
        Self { config, connector, token, channels: Mutex::new(HashMap::new()) }
    }

    /// The channel to the peer with this ticket, made on first use and kept.
    ///
    /// A ticket with one transport only (a `join` seed given as `duet:grpc=…`, say) gets a channel on
    /// that transport whatever the mode, since there is nothing to choose between.
    pub fn channel(&self, ticket: &str) -> Result<Channel, Status> {
        if let Some(channel) = self.channels.lock().expect("peers lock").get(ticket) {
            return Ok(channel.clone());
        }
        let peer: PeerAddr =
            ticket.parse().map_err(|e| Status::invalid_argument(format!("peer ticket {ticket:?}: {e}")))?;
        let unavailable = |e: duet::Error| Status::unavailable(format!("no channel to {ticket}: {e}"));
        let channel = match (&peer.grpc, &peer.iroh, &self.connector) {
            (Some(_), Some(_), Some(connector)) => {
                Channel::from_config(&self.config, connector, &peer).map_err(unavailable)?
            }
            (_, Some(addr), Some(connector)) if self.config.mode != Mode::Grpc || peer.grpc.is_none() => {
                Channel::iroh(connector, addr.clone())
            }
            (Some(_), _, _) => Channel::grpc_from_config(&self.config, &peer).map_err(unavailable)?,
            _ => return Err(Status::unavailable(format!("this node has no transport that can reach {ticket}"))),
        };
        let channel = match &self.token {
            Some(token) => {
                let value: duet::metadata::MetadataValue<_> = token
                    .parse()
                    .map_err(|_| Status::invalid_argument("node.cluster_token must be printable ASCII"))?;
                channel.interceptor(move |mut req| {
                    req.metadata_mut().insert(crate::auth::TOKEN_KEY, value.clone());
                    Ok(req)
                })
            }
            None => channel,
        };
        self.channels.lock().expect("peers lock").insert(ticket.to_owned(), channel.clone());
        Ok(channel)
    }
}
