//! A peer's address on both transports, with a printable form a node can hand to another.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use iroh::{EndpointAddr, EndpointId, RelayUrl, TransportAddr};

/// Where a peer can be reached: its gRPC address, its Iroh endpoint, or both.
///
/// Its text form (the ticket) is `duet:` followed by `;`-separated parts, readable and copy-pasteable:
///
/// ```
/// let ticket = "duet:grpc=127.0.0.1:7001;iroh=\
///     ae58ff8833241ac82d6ff7611046ed67b5072d142c588d0063e942d9a75502b6@127.0.0.1:7002";
/// let peer: duet::PeerAddr = ticket.parse().unwrap();
/// assert_eq!(peer.grpc, Some("127.0.0.1:7001".parse().unwrap()));
/// assert_eq!(peer.to_string(), ticket);
/// ```
///
/// The Iroh part is `<endpoint id>@<addr>,<addr>…` where each addr is an IP socket address or a relay
/// URL; the id alone is enough where an address lookup service is on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PeerAddr {
    /// The gRPC listener, `host:port`.
    pub grpc: Option<SocketAddr>,
    /// The Iroh endpoint.
    pub iroh: Option<EndpointAddr>,
}

/// Why a ticket did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duet peer address {input:?}: {reason}")]
pub struct PeerAddrParseError {
    input: String,
    reason: String,
}

const PREFIX: &str = "duet:";

impl PeerAddr {
    /// The gRPC URI (`http://host:port`) for tonic.
    pub fn grpc_uri(&self) -> Option<String> {
        self.grpc.map(|a| format!("http://{a}"))
    }
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(PREFIX)?;
        let mut sep = "";
        if let Some(g) = self.grpc {
            write!(f, "grpc={g}")?;
            sep = ";";
        }
        if let Some(i) = &self.iroh {
            write!(f, "{sep}iroh={}", i.id)?;
            let mut addrs = i.addrs.iter().filter_map(|a| match a {
                TransportAddr::Ip(s) => Some(s.to_string()),
                TransportAddr::Relay(u) => Some(u.to_string()),
                _ => None,
            });
            if let Some(first) = addrs.next() {
                write!(f, "@{first}")?;
                for a in addrs {
                    write!(f, ",{a}")?;
                }
            }
        }
        Ok(())
    }
}

impl FromStr for PeerAddr {
    type Err = PeerAddrParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason: String| PeerAddrParseError { input: s.to_owned(), reason };
        let body = s.trim().strip_prefix(PREFIX).ok_or_else(|| err(format!("it must start with {PREFIX:?}")))?;
        let mut out = PeerAddr::default();
        for part in body.split(';').filter(|p| !p.is_empty()) {
            let (key, value) = part.split_once('=').ok_or_else(|| err(format!("part {part:?} is not key=value")))?;
            match key {
                "grpc" => {
                    out.grpc = Some(value.parse().map_err(|e| err(format!("grpc address {value:?}: {e}")))?);
                }
                "iroh" => {
                    let (id, addrs) = value.split_once('@').unwrap_or((value, ""));
                    let id: EndpointId = id.parse().map_err(|e| err(format!("endpoint id {id:?}: {e}")))?;
                    let mut addr = EndpointAddr::new(id);
                    for a in addrs.split(',').filter(|a| !a.is_empty()) {
                        addr = if let Ok(sock) = a.parse::<SocketAddr>() {
                            addr.with_ip_addr(sock)
                        } else {
                            let url: RelayUrl = a.parse().map_err(|e| err(format!("address {a:?}: {e}")))?;
                            addr.with_relay_url(url)
                        };
                    }
                    out.iroh = Some(addr);
                }
                other => return Err(err(format!("unknown part {other:?} (expected grpc= or iroh=)"))),
            }
        }
        if out.grpc.is_none() && out.iroh.is_none() {
            return Err(err("it names neither a grpc nor an iroh address".into()));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_with_ips_and_relays() {
        let id = iroh::SecretKey::generate().public();
        let addr = EndpointAddr::new(id)
            .with_ip_addr("127.0.0.1:5".parse().unwrap())
            .with_ip_addr("[::1]:6".parse().unwrap())
            .with_relay_url("https://relay.example.org./".parse().unwrap());
        let peer = PeerAddr { grpc: Some("10.0.0.1:7001".parse().unwrap()), iroh: Some(addr) };
        assert_eq!(peer.to_string().parse::<PeerAddr>().unwrap(), peer);
        let only_iroh = PeerAddr { grpc: None, iroh: Some(EndpointAddr::new(id)) };
        assert_eq!(only_iroh.to_string().parse::<PeerAddr>().unwrap(), only_iroh);
    }

    #[test]
    fn bad_tickets_say_what_is_wrong() {
        for (input, says) in [
            ("grpc=1.2.3.4:5", "must start with"),
            ("duet:", "neither"),
            ("duet:grpc=nope", "grpc address"),
            ("duet:iroh=zz", "endpoint id"),
            ("duet:ftp=x", "unknown part"),
            ("duet:grpc", "key=value"),
        ] {
            let e = input.parse::<PeerAddr>().unwrap_err().to_string();
            assert!(e.contains(says), "{input}: {e}");
        }
    }
}
