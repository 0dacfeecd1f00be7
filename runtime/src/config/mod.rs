//! Transport config in TOML: modes, the gRPC listener, the Iroh endpoint, the migration strategy.
//!
//! It accepts the orchestrator's file as it stands and embeds in a larger application config as a
//! `[transport]` table:
//!
//! ```
//! #[derive(serde::Deserialize)]
//! struct NodeConfig {
//!     name: String,
//!     transport: duet::TransportConfig,
//! }
//! let cfg: NodeConfig = toml::from_str(r#"
//!     name = "node-1"
//!     [transport]
//!     mode = "dual"
//!     [transport.migration]
//!     prefer_iroh_for = ["health", "status", "monitoring"]
//! "#).unwrap();
//! cfg.transport.validate().unwrap();
//! ```
//!
//! Unknown keys and wrong types are errors that name the key (serde with `deny_unknown_fields`, located
//! by toml); contradictions are caught by [`TransportConfig::validate`] and name both keys and the fix.

pub(crate) mod defaults;
mod validate;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use validate::ConfigError;

/// Which transports a node serves and calls on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// gRPC only.
    Grpc,
    /// Iroh only.
    Iroh,
    /// Both: each service goes over the transport the migration strategy picks, with fallback.
    #[default]
    Dual,
}

/// How one service's calls travel in Dual mode: an entry of `[transport.migration.routes]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceRoute {
    /// gRPC only.
    Grpc,
    /// Iroh first, with fallback to gRPC if `fallback_to_grpc`.
    Iroh,
    /// Per peer, by measured latency and error rate, with fallback if `fallback_to_grpc`.
    Adaptive,
}

impl From<RaftTransport> for ServiceRoute {
    fn from(r: RaftTransport) -> Self {
        match r {
            RaftTransport::AlwaysGrpc => ServiceRoute::Grpc,
            RaftTransport::AlwaysIroh => ServiceRoute::Iroh,
            RaftTransport::Adaptive => ServiceRoute::Adaptive,
        }
    }
}

/// How the service named by `raft_service` travels in Dual mode: `raft_transport`, the key the
/// orchestrator's config has always used, kept as a named entry of the route table (`raft_transport
/// = "adaptive"` means `routes.raft = "adaptive"`; an entry in `routes` for the same service wins).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RaftTransport {
    /// Always gRPC.
    #[default]
    AlwaysGrpc,
    /// Always Iroh (with fallback to gRPC if `fallback_to_grpc`).
    AlwaysIroh,
    /// Per peer, by measured latency and error rate.
    Adaptive,
}

/// The `[transport]` table.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransportConfig {
    /// `grpc`, `iroh` or `dual` (default `dual`).
    pub mode: Mode,
    /// `[transport.grpc]`.
    pub grpc: GrpcConfig,
    /// `[transport.iroh]`.
    pub iroh: IrohConfig,
    /// `[transport.migration]`.
    pub migration: MigrationConfig,
}

/// `[transport.grpc]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrpcConfig {
    /// Listen address of the gRPC server (default `127.0.0.1:0`: loopback, any free port).
    pub bind_address: SocketAddr,
    /// Largest message accepted, on both transports (default 4 MiB, as tonic).
    pub max_message_size: usize,
    /// TLS (rustls) on the gRPC port, and `https` when calling peers' gRPC ports. Needs
    /// `tls_cert_path` and `tls_key_path`; see [`crate::tls`].
    pub tls_enabled: bool,
    /// PEM certificate chain this node serves on its gRPC port, and presents as its client
    /// certificate to peers that ask for one (mutual TLS).
    pub tls_cert_path: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `tls_cert_path`.
    pub tls_key_path: Option<PathBuf>,
    /// PEM CA certificates trusted for peers' certificates: the servers this node calls and, with
    /// `tls_client_auth`, the clients that call it. Absent: the Mozilla roots (webpki-roots).
    pub tls_ca_path: Option<PathBuf>,
    /// Require every gRPC client to present a certificate signed by `tls_ca_path` (mutual TLS).
    pub tls_client_auth: bool,
    /// The name checked in a peer's certificate when calling it (default: the host of the peer's
    /// gRPC address, an IP, which the certificate must then carry as an IP SAN).
    pub tls_server_name: Option<String>,
    /// HTTP/2 keep-alive: send a PING on every gRPC connection (client and server side) this often,
    /// in milliseconds (default: none, as tonic).
    pub http2_keepalive_interval_ms: Option<u64>,
    /// How long an HTTP/2 keep-alive PING may go unanswered before the connection is closed, in
    /// milliseconds (default 20000, as tonic).
    pub http2_keepalive_timeout_ms: u64,
    /// TCP keep-alive probes on gRPC sockets after this much idle time, in milliseconds (default:
    /// none, the OS default).
    pub tcp_keepalive_ms: Option<u64>,
    /// Time allowed to connect to a peer's gRPC port, in milliseconds (default: none, as tonic; a
    /// call's deadline still bounds it).
    pub connect_timeout_ms: Option<u64>,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        Self {
            bind_address: SocketAddr::from(([127, 0, 0, 1], 0)),
            max_message_size: crate::limits::DEFAULT_MAX_DECODING_MESSAGE_SIZE,
            tls_enabled: false,
            tls_cert_path: None,
            tls_key_path: None,
            tls_ca_path: None,
            tls_client_auth: false,
            tls_server_name: None,
            http2_keepalive_interval_ms: None,
            http2_keepalive_timeout_ms: 20_000,
            tcp_keepalive_ms: None,
            connect_timeout_ms: None,
        }
    }
}

impl GrpcConfig {
    /// The HTTP/2 keep-alive interval, if set.
    pub fn http2_keepalive_interval(&self) -> Option<Duration> {
        self.http2_keepalive_interval_ms.map(Duration::from_millis)
    }

    /// The HTTP/2 keep-alive timeout.
    pub fn http2_keepalive_timeout(&self) -> Duration {
        Duration::from_millis(self.http2_keepalive_timeout_ms)
    }

    /// The TCP keep-alive idle time, if set.
    pub fn tcp_keepalive(&self) -> Option<Duration> {
        self.tcp_keepalive_ms.map(Duration::from_millis)
    }

    /// The connect timeout, if set.
    pub fn connect_timeout(&self) -> Option<Duration> {
        self.connect_timeout_ms.map(Duration::from_millis)
    }
}

/// `[transport.iroh]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IrohConfig {
    /// Whether the node has an Iroh endpoint at all (default true).
    pub enabled: bool,
    /// The home relay URL, or absent / `"disabled"` for no relay (the offline default).
    pub home_relay: Option<String>,
    /// A PEM file of the CA certificate(s) that signed the relay's TLS certificate: for a private
    /// relay whose certificate no public root vouches for. When set, only these roots are trusted
    /// for relay connections. The relay's QUIC address discovery is expected on UDP port 7842, the
    /// relay server's default.
    pub relay_ca_path: Option<PathBuf>,
    /// The UDP port the endpoint binds (0 = any free port). The seed config's name for it,
    /// `discovery_port`, is accepted as an alias (setting both is an error).
    #[serde(alias = "discovery_port")]
    pub bind_port: u16,
    /// The IP the endpoint binds (default 127.0.0.1, offline; use 0.0.0.0 to be reachable).
    pub bind_ip: IpAddr,
    /// A file holding the endpoint's secret key, so its id survives restarts; created (mode 0600) if
    /// missing. Absent: a fresh key, and a new id, every start.
    pub secret_key_file: Option<PathBuf>,
    /// Publish and resolve endpoint addresses through n0's DNS/pkarr lookup (default false: peers
    /// exchange full tickets).
    pub address_lookup: bool,
    /// Time allowed for a QUIC connect before the call falls back or fails, in milliseconds.
    pub connect_timeout_ms: u64,
    /// Endpoint ids (64 hex digits) allowed to connect; empty allows every peer.
    pub allowed_peers: Vec<String>,
    /// How long a QUIC connection may hear nothing from its peer before it is declared dead, in
    /// milliseconds (default 15000; see [`defaults::IDLE_TIMEOUT`]).
    pub idle_timeout_ms: u64,
    /// QUIC receive window per stream (per call), bytes: how much one call may have in flight
    /// unacknowledged (default and most 1 MiB; see [`defaults::STREAM_RECEIVE_WINDOW`]).
    pub stream_receive_window: u32,
    /// QUIC receive window per connection (all calls to one peer together), bytes (default 16 MiB).
    pub receive_window: u32,
    /// QUIC send window per connection, bytes (default 16 MiB): raise both windows for peers far away
    /// (window ≥ bandwidth × round-trip time).
    pub send_window: u64,
    /// Interval of QUIC keep-alive packets on an idle connection, in milliseconds (default 2500; see
    /// [`defaults::KEEP_ALIVE`]): keeps NAT mappings open and lets a peer's silence be
    /// noticed. At most a third of `idle_timeout_ms`.
    pub keepalive_interval_ms: u64,
}

impl Default for IrohConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            home_relay: None,
            relay_ca_path: None,
            bind_port: 0,
            bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            secret_key_file: None,
            address_lookup: false,
            connect_timeout_ms: 5_000,
            allowed_peers: vec![],
            idle_timeout_ms: defaults::IDLE_TIMEOUT.as_millis() as u64,
            stream_receive_window: defaults::STREAM_RECEIVE_WINDOW,
            receive_window: defaults::RECEIVE_WINDOW,
            send_window: u64::from(defaults::RECEIVE_WINDOW),
            keepalive_interval_ms: defaults::KEEP_ALIVE.as_millis() as u64,
        }
    }
}

impl IrohConfig {
    /// The relay URL, unless relays are off.
    pub fn relay_url(&self) -> Option<&str> {
        self.home_relay.as_deref().filter(|r| !r.is_empty() && *r != "disabled")
    }

    /// The allowlist as endpoint ids.
    pub fn allowed_peer_ids(&self) -> Result<Vec<iroh::EndpointId>, ConfigError> {
        self.allowed_peers
            .iter()
            .map(|p| {
                p.parse().map_err(|e| {
                    ConfigError::new(
                        "transport.iroh.allowed_peers",
                        format!("{p:?} is not an endpoint id ({e}); give the 64 hex digits a node prints"),
                    )
                })
            })
            .collect()
    }

    /// The idle timeout of QUIC connections.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }

    /// The connect timeout.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// The keep-alive interval of QUIC connections.
    pub fn keepalive_interval(&self) -> Duration {
        Duration::from_millis(self.keepalive_interval_ms)
    }
}

/// `[transport.migration]`: which service goes where in Dual mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MigrationConfig {
    /// Services (by config name) that go over Iroh first; the rest go over gRPC.
    pub prefer_iroh_for: Vec<String>,
    /// Each service's route by config name (`grpc`, `iroh`, `adaptive`), ahead of
    /// `prefer_iroh_for` and `adaptive_for`.
    pub routes: std::collections::BTreeMap<String, ServiceRoute>,
    /// The route of the service `raft_service` names, under the key this setting has always had
    /// (see [`RaftTransport`]).
    pub raft_transport: RaftTransport,
    /// The config name of the service `raft_transport` routes (default `raft`).
    pub raft_service: String,
    /// Further services whose transport is chosen adaptively per peer.
    pub adaptive_for: Vec<String>,
    /// Retry over gRPC when Iroh fails (see the README for exactly when).
    pub fallback_to_grpc: bool,
    /// Consecutive transport failures that open the circuit breaker.
    pub breaker_failures: u32,
    /// How long an open breaker keeps a transport out before a probe, in milliseconds.
    pub breaker_cooldown_ms: u64,
    /// Adaptive: one call in this many goes to the transport not in use, to keep its estimate fresh.
    pub adaptive_probe_every: u32,
    /// After a schema mismatch, how long a service stays on gRPC for that peer before Iroh is tried
    /// again, in milliseconds (sooner if the peer comes back on a new connection, as after a restart).
    pub schema_recheck_ms: u64,
}

impl Default for MigrationConfig {
    fn default() -> Self {
        Self {
            prefer_iroh_for: vec![],
            routes: Default::default(),
            raft_transport: RaftTransport::AlwaysGrpc,
            raft_service: "raft".into(),
            adaptive_for: vec![],
            fallback_to_grpc: true,
            breaker_failures: 3,
            breaker_cooldown_ms: 5_000,
            adaptive_probe_every: 20,
            schema_recheck_ms: 30_000,
        }
    }
}

/// A whole file whose only table is `[transport]`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The `[transport]` table.
    #[serde(default)]
    pub transport: TransportConfig,
}

impl Config {
    /// Parses and validates a TOML document with a `[transport]` table.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(ConfigError::from_toml)?;
        cfg.transport.validate()?;
        Ok(cfg)
    }

    /// Reads, parses and validates a file. Relative paths in it are taken from the file's directory
    /// (see [`TransportConfig::resolve_paths`]).
    pub fn from_file(path: impl AsRef<std::path::Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new("", format!("cannot read {}: {e}", path.display())))?;
        let mut cfg: Config = toml::from_str(&text).map_err(|e| ConfigError::from_toml(e).in_file(path))?;
        cfg.transport.resolve_paths(path.parent().unwrap_or(std::path::Path::new("")));
        cfg.transport.validate().map_err(|e| e.in_file(path))?;
        Ok(cfg)
    }
}

impl TransportConfig {
    /// Makes every relative path of the table (TLS files, the relay CA, the Iroh key file) relative
    /// to `base`, the directory of the file it came from, so a config means the same files whatever
    /// directory the process starts in.
    pub fn resolve_paths(&mut self, base: &std::path::Path) {
        let grpc = &mut self.grpc;
        let iroh = &mut self.iroh;
        for path in [
            &mut grpc.tls_cert_path,
            &mut grpc.tls_key_path,
            &mut grpc.tls_ca_path,
            &mut iroh.relay_ca_path,
            &mut iroh.secret_key_file,
        ]
        .into_iter()
        .flatten()
        {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        }
    }

    /// Checks that every service `[transport.migration]` names (`prefer_iroh_for`, `adaptive_for`,
    /// `routes`, `raft_service` when `raft_transport` is set) is one of `known`, the config names of
    /// the services the process serves or calls; a misspelt name would otherwise route nothing,
    /// silently. The error names the key, the unknown name and the known ones.
    ///
    /// ```
    /// let mut cfg = duet::TransportConfig::default();
    /// cfg.migration.prefer_iroh_for = vec!["helth".into()];
    /// let err = cfg.check_service_names(["health", "status"]).unwrap_err();
    /// assert_eq!(err.key(), "transport.migration.prefer_iroh_for");
    /// assert!(err.to_string().contains("\"helth\"") && err.to_string().contains("health, status"));
    /// ```
    pub fn check_service_names<'a>(&self, known: impl IntoIterator<Item = &'a str>) -> Result<(), ConfigError> {
        let mut known: Vec<&str> = known.into_iter().collect();
        known.sort_unstable();
        known.dedup();
        let m = &self.migration;
        let named = m
            .prefer_iroh_for
            .iter()
            .map(|n| ("prefer_iroh_for", n))
            .chain(m.adaptive_for.iter().map(|n| ("adaptive_for", n)))
            .chain(m.routes.keys().map(|n| ("routes", n)));
        for (key, name) in named {
            if !known.contains(&name.as_str()) {
                return Err(ConfigError::new(
                    format!("transport.migration.{key}"),
                    format!(
                        "names {name:?}, which is no service of this process; the services are: {}",
                        known.join(", ")
                    ),
                ));
            }
        }
        if m.raft_transport != RaftTransport::default() && !known.contains(&m.raft_service.as_str()) {
            return Err(ConfigError::new(
                "transport.migration.raft_service",
                format!(
                    "is {:?}, which is no service of this process; the services are: {}",
                    m.raft_service,
                    known.join(", ")
                ),
            ));
        }
        Ok(())
    }
}
