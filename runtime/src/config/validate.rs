//! Config errors that name the key and the fix.

use std::fmt;
use std::path::Path;

use super::{Mode, RaftTransport, TransportConfig};

/// A config that cannot be used: the key at fault (dotted, `transport.iroh.enabled`) and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    key: String,
    message: String,
    file: Option<String>,
}

impl ConfigError {
    /// An error about `key` (dotted, as in the file) saying what is wrong and how to fix it; for
    /// applications that add their own tables next to `[transport]` and want the same errors.
    ///
    /// ```
    /// let e = duet::ConfigError::new("node.id", "must be 1 or more");
    /// assert_eq!(e.key(), "node.id");
    /// assert!(e.to_string().contains("`node.id`: must be 1 or more"));
    /// ```
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self { key: key.into(), message: message.into(), file: None }
    }

    /// Wraps a TOML parse or type error (toml already names the key and shows its line).
    pub fn from_toml(e: toml::de::Error) -> Self {
        Self::new("", e.to_string().trim_end().to_owned())
    }

    /// The same error, said to be in `path`.
    pub fn in_file(mut self, path: &Path) -> Self {
        self.file = Some(path.display().to_string());
        self
    }

    /// The dotted key at fault, empty for parse errors (whose message shows the line).
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{file}: ")?;
        }
        if self.key.is_empty() {
            write!(f, "invalid config: {}", self.message)
        } else {
            write!(f, "invalid config: `{}`: {}", self.key, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

impl TransportConfig {
    /// Checks what types alone cannot: contradictions between keys and values out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let m = &self.migration;
        self.validate_tls()?;
        if self.grpc.max_message_size == 0 {
            return Err(ConfigError::new(
                "transport.grpc.max_message_size",
                "must be at least 1 byte (default 4194304)",
            ));
        }
        match self.mode {
            Mode::Iroh | Mode::Dual if !self.iroh.enabled => {
                let mode = if self.mode == Mode::Iroh { "iroh" } else { "dual" };
                return Err(ConfigError::new(
                    "transport.iroh.enabled",
                    format!(
                        "is false but transport.mode = \"{mode}\" needs Iroh; set enabled = true, or mode = \"grpc\""
                    ),
                ));
            }
            _ => {}
        }
        if let Some(relay) = self.iroh.relay_url()
            && relay.parse::<iroh::RelayUrl>().is_err()
        {
            return Err(ConfigError::new(
                "transport.iroh.home_relay",
                format!("{relay:?} is not a URL; give one like \"https://relay.example.org\", or \"disabled\""),
            ));
        }
        if self.iroh.relay_ca_path.is_some() && self.iroh.relay_url().is_none() {
            return Err(ConfigError::new(
                "transport.iroh.relay_ca_path",
                "is set but no relay is: set home_relay to the relay's https URL, or remove relay_ca_path",
            ));
        }
        self.iroh.allowed_peer_ids()?;
        if !(5_000..=600_000).contains(&self.iroh.idle_timeout_ms) {
            return Err(ConfigError::new(
                "transport.iroh.idle_timeout_ms",
                "must be between 5000 and 600000: keep-alives go every 2.5 s, and a dead peer should be \
                 found in minutes at most (default 15000)",
            ));
        }
        if !(100..=self.iroh.idle_timeout_ms / 3).contains(&self.iroh.keepalive_interval_ms) {
            return Err(ConfigError::new(
                "transport.iroh.keepalive_interval_ms",
                format!(
                    "is {}; give 100 to a third of idle_timeout_ms ({}), so keep-alives are heard before the \
                     connection idles out (default 2500)",
                    self.iroh.keepalive_interval_ms,
                    self.iroh.idle_timeout_ms / 3
                ),
            ));
        }
        let positive = [
            ("transport.grpc.http2_keepalive_interval_ms", self.grpc.http2_keepalive_interval_ms),
            ("transport.grpc.http2_keepalive_timeout_ms", Some(self.grpc.http2_keepalive_timeout_ms)),
            ("transport.grpc.tcp_keepalive_ms", self.grpc.tcp_keepalive_ms),
            ("transport.grpc.connect_timeout_ms", self.grpc.connect_timeout_ms),
        ];
        for (key, value) in positive {
            if value == Some(0) {
                return Err(ConfigError::new(key, "is 0; give a positive number of milliseconds, or remove the key"));
            }
        }
        let stream_max = super::defaults::STREAM_RECEIVE_WINDOW;
        if !(16 * 1024..=stream_max).contains(&self.iroh.stream_receive_window) {
            return Err(ConfigError::new(
                "transport.iroh.stream_receive_window",
                format!(
                    "is {}; give 16384 to {stream_max} bytes (the default and the most: iroh's QUIC stack drops \
                     connections whose streams have more out-of-order pieces than a larger window allows)",
                    self.iroh.stream_receive_window
                ),
            ));
        }
        if !(self.iroh.stream_receive_window..=1 << 30).contains(&self.iroh.receive_window) {
            return Err(ConfigError::new(
                "transport.iroh.receive_window",
                format!(
                    "is {}; give stream_receive_window ({}) to 1073741824 bytes (default 16777216)",
                    self.iroh.receive_window, self.iroh.stream_receive_window
                ),
            ));
        }
        if !(64 * 1024..=1 << 30).contains(&self.iroh.send_window) {
            return Err(ConfigError::new(
                "transport.iroh.send_window",
                format!("is {}; give 65536 to 1073741824 bytes (default 16777216)", self.iroh.send_window),
            ));
        }
        if self.iroh.connect_timeout_ms == 0 {
            return Err(ConfigError::new("transport.iroh.connect_timeout_ms", "must be positive (default 5000)"));
        }
        if self.mode == Mode::Iroh && m.fallback_to_grpc {
            // Harmless in spirit, but a silent no-op misleads operators.
            return Err(ConfigError::new(
                "transport.migration.fallback_to_grpc",
                "is true but transport.mode = \"iroh\" has no gRPC to fall back to; set it to false, or mode = \"dual\"",
            ));
        }
        if self.mode == Mode::Grpc
            && let Some((service, route)) = m.routes.iter().find(|(_, r)| **r != super::ServiceRoute::Grpc)
        {
            return Err(ConfigError::new(
                format!("transport.migration.routes.{service}"),
                format!(
                    "is {route:?}, which needs Iroh, but transport.mode = \"grpc\"; use \"grpc\", or mode = \"dual\""
                ),
            ));
        }
        if let Some(bad) = m.routes.keys().find(|s| s.is_empty() || s.contains(char::is_whitespace)) {
            return Err(ConfigError::new(
                "transport.migration.routes",
                format!("{bad:?} is not a service config name (snake_case, like \"health\")"),
            ));
        }
        if let Some(both) = m.routes.keys().find(|s| m.prefer_iroh_for.contains(s) || m.adaptive_for.contains(s)) {
            return Err(ConfigError::new(
                format!("transport.migration.routes.{both}"),
                format!("{both:?} is also in prefer_iroh_for or adaptive_for; give each service one route"),
            ));
        }
        if self.mode == Mode::Grpc && m.raft_transport != RaftTransport::AlwaysGrpc {
            return Err(ConfigError::new(
                "transport.migration.raft_transport",
                "needs Iroh, but transport.mode = \"grpc\"; use \"always_grpc\", or mode = \"dual\"",
            ));
        }
        for (key, list) in [("prefer_iroh_for", &m.prefer_iroh_for), ("adaptive_for", &m.adaptive_for)] {
            if let Some(bad) = list.iter().find(|s| s.is_empty() || s.contains(char::is_whitespace)) {
                return Err(ConfigError::new(
                    format!("transport.migration.{key}"),
                    format!("{bad:?} is not a service config name (snake_case, like \"health\")"),
                ));
            }
        }
        if let Some(both) = m.prefer_iroh_for.iter().find(|s| m.adaptive_for.contains(s)) {
            return Err(ConfigError::new(
                "transport.migration.adaptive_for",
                format!("{both:?} is also in prefer_iroh_for; a service is either preferred on Iroh or adaptive"),
            ));
        }
        if m.breaker_failures == 0 {
            return Err(ConfigError::new("transport.migration.breaker_failures", "must be at least 1 (default 3)"));
        }
        if m.adaptive_probe_every < 2 {
            return Err(ConfigError::new(
                "transport.migration.adaptive_probe_every",
                "must be at least 2: one call in N probes the other transport (default 20)",
            ));
        }
        Ok(())
    }

    fn validate_tls(&self) -> Result<(), ConfigError> {
        let g = &self.grpc;
        if !g.tls_enabled {
            let set = [
                ("tls_cert_path", g.tls_cert_path.is_some()),
                ("tls_key_path", g.tls_key_path.is_some()),
                ("tls_ca_path", g.tls_ca_path.is_some()),
                ("tls_client_auth", g.tls_client_auth),
                ("tls_server_name", g.tls_server_name.is_some()),
            ];
            if let Some((key, _)) = set.iter().find(|(_, is_set)| *is_set) {
                // A TLS setting with TLS off is almost always a forgotten switch: refuse rather than
                // serve plaintext the operator did not mean to.
                return Err(ConfigError::new(
                    format!("transport.grpc.{key}"),
                    "is set but transport.grpc.tls_enabled = false; set tls_enabled = true, or remove it",
                ));
            }
            return Ok(());
        }
        if self.mode == Mode::Iroh {
            return Err(ConfigError::new(
                "transport.grpc.tls_enabled",
                "is true but transport.mode = \"iroh\" has no gRPC port (Iroh connections are always encrypted); \
                 set it to false, or mode = \"dual\"",
            ));
        }
        // A client-only node may go without a certificate (the server side checks it has one when it
        // serves); half an identity is always a mistake.
        match (&g.tls_cert_path, &g.tls_key_path) {
            (Some(_), None) => {
                return Err(ConfigError::new(
                    "transport.grpc.tls_key_path",
                    "is required with tls_cert_path: the PEM private key of that certificate",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    "transport.grpc.tls_cert_path",
                    "is required with tls_key_path: the PEM certificate chain of that key",
                ));
            }
            _ => {}
        }
        if g.tls_client_auth && g.tls_ca_path.is_none() {
            return Err(ConfigError::new(
                "transport.grpc.tls_client_auth",
                "is true but tls_ca_path is not set: give the PEM CA that signs client certificates",
            ));
        }
        if g.tls_server_name.as_deref().is_some_and(|n| n.is_empty()) {
            return Err(ConfigError::new(
                "transport.grpc.tls_server_name",
                "is empty: give the name peers' certificates carry, or remove it to check their IP",
            ));
        }
        Ok(())
    }
}
