//! Building Iroh endpoints for duet: the offline loopback endpoint used by tests and the examples.

use std::net::SocketAddr;

use std::time::Duration;

use iroh::endpoint::{BindError, Builder, PortmapperConfig, QuicTransportConfig, VarInt, presets};
use iroh::{Endpoint, EndpointAddr, RelayMode, SecretKey};

pub use crate::config::defaults::{IDLE_TIMEOUT, KEEP_ALIVE, RECEIVE_WINDOW, STREAM_RECEIVE_WINDOW};

/// Concurrent streams a peer may open on a connection before duet's server sets its own limit
/// (`Server::max_concurrent_calls_per_connection`) on the connection.
pub const MAX_CONCURRENT_STREAMS: u32 = 1024;

/// Bytes of QUIC DATAGRAMs a connection keeps unread. duet sends none but the one-byte liveness
/// probes of a silent connection (see [`crate::iroh::silence_bound`]), which its server reads and
/// drops; the bound keeps a peer that never reads them from holding more.
pub const DATAGRAM_RECEIVE_BUFFER: usize = 1024;
/// The round-trip time QUIC assumes before it has measured one. It sets when a lost handshake
/// packet is sent again: QUIC's usual 333 ms retries after about 1, 3 and 7 s, so a peer that
/// restarts while a connect is in flight is found seconds late; from 100 ms the retries come
/// after about 0.3, 0.9 and 2.1 s. A path slower than that only resends a handshake packet early.
pub const INITIAL_RTT: Duration = Duration::from_millis(100);

/// The QUIC transport settings duet uses: a connection window for many concurrent streams, a stream
/// window as large as the QUIC stack allows safely, room for 1024 concurrent calls per connection,
/// keep-alives so idle peer connections survive NAT timeouts, and an idle timeout that finds dead
/// peers in [`IDLE_TIMEOUT`].
pub fn transport_config() -> QuicTransportConfig {
    transport_config_with_idle(IDLE_TIMEOUT)
}

/// [`transport_config`] with another idle timeout (at least 1 s; keep-alives stay every
/// [`KEEP_ALIVE`], so use a timeout several times as long).
pub fn transport_config_with_idle(idle_timeout: Duration) -> QuicTransportConfig {
    let config = crate::config::IrohConfig {
        idle_timeout_ms: u64::try_from(idle_timeout.as_millis()).unwrap_or(u64::MAX),
        ..Default::default()
    };
    transport_config_for(&config)
}

/// The QUIC transport settings `[transport.iroh]` asks for: its idle timeout (at least 1 s),
/// windows and keep-alive interval.
///
/// ```
/// let cfg = duet::Config::from_toml("[transport.iroh]\nreceive_window = 67108864\nsend_window = 67108864")?;
/// let quic = duet::iroh::endpoint::transport_config_for(&cfg.transport.iroh);
/// # let _ = quic;
/// # Ok::<(), duet::ConfigError>(())
/// ```
pub fn transport_config_for(cfg: &crate::config::IrohConfig) -> QuicTransportConfig {
    let idle = cfg
        .idle_timeout()
        .max(Duration::from_secs(1))
        .try_into()
        .unwrap_or_else(|_| IDLE_TIMEOUT.try_into().expect("15 s is a valid QUIC idle timeout"));
    QuicTransportConfig::builder()
        .max_idle_timeout(Some(idle))
        .stream_receive_window(VarInt::from_u32(cfg.stream_receive_window))
        .receive_window(VarInt::from_u32(cfg.receive_window))
        .send_window(cfg.send_window)
        .max_concurrent_bidi_streams(VarInt::from_u32(MAX_CONCURRENT_STREAMS))
        .keep_alive_interval(cfg.keepalive_interval().max(Duration::from_millis(100)))
        .datagram_receive_buffer_size(Some(DATAGRAM_RECEIVE_BUFFER))
        .initial_rtt(INITIAL_RTT)
        .build()
}

/// A builder for an endpoint that touches no network but loopback: no relays, no address lookup
/// (DNS, pkarr), no port mapping, bound to `127.0.0.1` on an ephemeral port, with a fresh key.
///
/// Peers must then be given full addresses ([`addr`]), since nothing can be looked up.
pub fn loopback_builder() -> Builder {
    offline_builder_at(SocketAddr::from(([127, 0, 0, 1], 0))).secret_key(SecretKey::generate())
}

/// Like [`loopback_builder`] but bound to `addr` and without a key: set one with `.secret_key(..)`
/// (a restarted node keeps its id and port this way).
pub fn offline_builder_at(addr: SocketAddr) -> Builder {
    Endpoint::builder(presets::Minimal)
        .transport_config(transport_config())
        .relay_mode(RelayMode::Disabled)
        .clear_address_lookup()
        .portmapper_config(PortmapperConfig::Disabled)
        .clear_ip_transports()
        .bind_addr(addr)
        .expect("an IP socket address is a valid bind address")
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

/// The full address of a local endpoint, so a peer can dial it with no lookup service: its id,
/// every socket it is bound to, its home relay once it has reached it, and, for an endpoint bound to
/// every interface (`0.0.0.0`), the addresses iroh has found for it instead of the wildcard.
pub fn addr(endpoint: &Endpoint) -> EndpointAddr {
    let mut addr = EndpointAddr::new(endpoint.id());
    let mut wildcard = false;
    for socket in endpoint.bound_sockets() {
        if socket.ip().is_unspecified() {
            wildcard = true;
        } else {
            addr = addr.with_ip_addr(socket);
        }
    }
    for known in endpoint.addr().addrs {
        match known {
            iroh::TransportAddr::Relay(url) => addr = addr.with_relay_url(url),
            iroh::TransportAddr::Ip(socket) if wildcard => addr = addr.with_ip_addr(socket),
            _ => {}
        }
    }
    addr
}

/// Builds and binds the endpoint `[transport.iroh]` describes: relay or none, address lookup or none,
/// the bind IP and port, and the secret key from `secret_key_file` (created if missing) so the
/// endpoint id is stable across restarts.
pub async fn bind_from_config(cfg: &crate::config::IrohConfig) -> Result<Endpoint, crate::error::Error> {
    let key = match &cfg.secret_key_file {
        Some(path) => load_or_create_key(path)?,
        None => SecretKey::generate(),
    };
    bind_from_config_with_key(cfg, key).await
}

/// [`bind_from_config`] with a key the caller holds (ignoring `secret_key_file`): for a process that
/// restarts an endpoint with the id it had, such as a node brought back after a simulated crash.
pub async fn bind_from_config_with_key(
    cfg: &crate::config::IrohConfig,
    key: SecretKey,
) -> Result<Endpoint, crate::error::Error> {
    let mut builder = if cfg.address_lookup {
        Endpoint::builder(presets::N0)
    } else {
        Endpoint::builder(presets::Minimal).clear_address_lookup()
    };
    builder = match cfg.relay_url() {
        Some(url) => {
            let url: iroh::RelayUrl =
                url.parse().map_err(|e| crate::error::Error::IrohBind(format!("home_relay: {e}")))?;
            builder.relay_mode(RelayMode::Custom(url.into()))
        }
        None => builder.relay_mode(RelayMode::Disabled),
    };
    if let Some(path) = &cfg.relay_ca_path {
        builder = builder.ca_tls_config(relay_roots(path)?);
    }
    let builder = builder
        .transport_config(transport_config_for(cfg))
        .portmapper_config(PortmapperConfig::Disabled)
        .clear_ip_transports()
        .bind_addr(SocketAddr::new(cfg.bind_ip, cfg.bind_port))
        .map_err(|e| crate::error::Error::IrohBind(format!("bind address: {e}")))?
        .secret_key(key);
    builder.bind().await.map_err(|e| crate::error::Error::IrohBind(e.to_string()))
}

/// The CA certificates a private relay's TLS certificate is checked against.
fn relay_roots(path: &std::path::Path) -> Result<iroh::tls::CaTlsConfig, crate::error::Error> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let err = |what: String| {
        crate::error::Error::Config(crate::config::ConfigError::new(
            "transport.iroh.relay_ca_path",
            format!("{}: {what}; give a PEM file of the CA that signed the relay's certificate", path.display()),
        ))
    };
    let pem = std::fs::read(path).map_err(|e| err(format!("cannot read it: {e}")))?;
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&pem).collect::<Result<_, _>>().map_err(|e| err(format!("not PEM: {e}")))?;
    if certs.is_empty() {
        return Err(err("holds no certificate".into()));
    }
    Ok(iroh::tls::CaTlsConfig::custom_roots(certs))
}

/// Reads a secret key (64 hex digits) from `path`, or generates one and writes it there (mode 0600).
pub fn load_or_create_key(path: &std::path::Path) -> Result<SecretKey, crate::error::Error> {
    let err = |what: String| crate::error::Error::IrohBind(format!("secret_key_file {}: {what}", path.display()));
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let text = text.trim();
            let mut bytes = [0u8; 32];
            if text.len() != 64 || !text.is_ascii() {
                return Err(err(format!("expected 64 hex digits, found {} characters", text.len())));
            }
            for (i, b) in bytes.iter_mut().enumerate() {
                *b = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|e| err(format!("not hex: {e}")))?;
            }
            Ok(SecretKey::from_bytes(&bytes))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = SecretKey::generate();
            let hex: String = key.to_bytes().iter().map(|b| format!("{b:02x}")).collect();
            write_private(path, &hex).map_err(|e| err(format!("cannot create: {e}")))?;
            Ok(key)
        }
        Err(e) => Err(err(e.to_string())),
    }
}

/// Creates `path` with `contents`, readable by the owner only, all or nothing: written to a temporary
/// file, synced, then linked into place (failing if `path` exists) and the directory synced, so a
/// crash leaves either no key file or the whole key, never an empty one.
fn write_private(path: &std::path::Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = (|| {
        let mut file = options.open(&tmp)?;
        file.write_all(contents.as_bytes())?;
        file.sync_all()?;
        std::fs::hard_link(&tmp, path)
    })();
    let _ = std::fs::remove_file(&tmp);
    written?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_file_is_created_private_and_read_back_as_the_same_key() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("node.key");
        let key = load_or_create_key(&path).expect("created");
        assert_eq!(load_or_create_key(&path).expect("read back").public(), key.public());
        let text = std::fs::read_to_string(&path).expect("key file");
        assert_eq!(text.len(), 64);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("metadata").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // No temporary file is left beside it.
        assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 1);
        // An existing file is never replaced.
        assert!(write_private(&path, "other").is_err());
        assert_eq!(load_or_create_key(&path).expect("still the first key").public(), key.public());
    }

    #[test]
    fn a_damaged_key_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("node.key");
        std::fs::write(&path, "").expect("write");
        let err = load_or_create_key(&path).expect_err("an empty file is refused").to_string();
        assert!(err.contains("secret_key_file") && err.contains("node.key"), "{err}");
    }
}
