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
    pub(crate) fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self { key: key.into(), message: message.into(), file: None }
    }

    /// Wraps a TOML parse or type error (toml already names the key and shows its line).
    pub(crate) fn from_toml(e: toml::de::Error) -> Self {
        Self::new("", e.to_string().trim_end().to_owned())
    }

    pub(crate) fn in_file(mut self, path: &Path) -> Self {
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
            write!(f, "invalid transport config: {}", self.message)
        } else {
            write!(f, "invalid transport config: `{}`: {}", self.key, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

impl TransportConfig {
    /// Checks what types alone cannot: contradictions between keys and values out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let m = &self.migration;
        if self.grpc.tls_enabled {
            return Err(ConfigError::new(
                "transport.grpc.tls_enabled",
                "TLS on the gRPC port is not supported by this version of duet; set it to false and terminate \
                 TLS in front of the node, or use Iroh, whose QUIC connections are always encrypted",
            ));
        }
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
        self.iroh.allowed_peer_ids()?;
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
}
