//! Who may call over Iroh: the allowlist checked per connection and the hook checked per call.

use std::fmt;
use std::sync::Arc;

use iroh::EndpointId;

/// What an access hook sees of one call: who, and what it asks for.
#[derive(Debug, Clone, Copy)]
pub struct AccessRequest<'a> {
    /// The caller: its endpoint id is its public key, proven by the QUIC handshake.
    pub peer: EndpointId,
    /// The fully qualified service, `pkg.Service`.
    pub service: &'a str,
    /// The method's proto name.
    pub method: &'a str,
}

/// Decides per call whether a peer may make it; `false` answers `PERMISSION_DENIED` and the handler never
/// runs.
pub type AccessHook = Arc<dyn Fn(&AccessRequest<'_>) -> bool + Send + Sync>;

/// Who may call over Iroh: an allowlist of endpoint ids checked when a connection arrives (others are
/// refused before any call), and a hook checked per call.
#[derive(Clone, Default)]
pub struct AccessControl {
    /// Endpoint ids allowed to connect; empty allows every peer.
    pub allowed: Arc<std::collections::HashSet<EndpointId>>,
    /// A per-call decision, after the allowlist.
    pub hook: Option<AccessHook>,
}

impl fmt::Debug for AccessControl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessControl")
            .field("allowed", &self.allowed.len())
            .field("hook", &self.hook.is_some())
            .finish()
    }
}

/// Application close code sent to a peer that is not on the allowlist.
pub const NOT_ALLOWED: u32 = 0x403;
