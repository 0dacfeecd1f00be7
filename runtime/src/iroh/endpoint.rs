//! Building Iroh endpoints for duet: the offline loopback endpoint used by tests and the examples.

use std::net::SocketAddr;

use iroh::endpoint::{BindError, Builder, PortmapperConfig, presets};
use iroh::{Endpoint, EndpointAddr, RelayMode, SecretKey};

/// A builder for an endpoint that touches no network but loopback: no relays, no address lookup
/// (DNS, pkarr), no port mapping, bound to `127.0.0.1` on an ephemeral port, with a fresh key.
///
/// Peers must then be given full addresses ([`addr`]), since nothing can be looked up.
pub fn loopback_builder() -> Builder {
    Endpoint::builder(presets::Minimal)
        .relay_mode(RelayMode::Disabled)
        .clear_address_lookup()
        .portmapper_config(PortmapperConfig::Disabled)
        .clear_ip_transports()
        .bind_addr(SocketAddr::from(([127, 0, 0, 1], 0)))
        .expect("a literal IPv4 socket address is valid")
        .secret_key(SecretKey::generate())
}

/// Binds [`loopback_builder`].
///
/// ```no_run
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// let endpoint = duet::iroh::endpoint::bind_loopback().await?;
/// println!("dial me at {:?}", duet::iroh::endpoint::addr(&endpoint));
/// # Ok(()) }
/// ```
pub async fn bind_loopback() -> Result<Endpoint, BindError> {
    loopback_builder().bind().await
}

/// The full address of a local endpoint: its id and every socket it is bound to, so a peer can dial
/// it with no lookup service.
pub fn addr(endpoint: &Endpoint) -> EndpointAddr {
    endpoint.bound_sockets().into_iter().fold(EndpointAddr::new(endpoint.id()), |a, s| a.with_ip_addr(s))
}
