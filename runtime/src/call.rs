//! What every call carries down through the layers, whatever transport takes it: the client's
//! options and the name of the transport that carried it.

use std::fmt;
use std::time::Duration;

use crate::limits::Limits;

/// Which transport carried a call. Every response from a duet client carries it in its extensions:
///
/// ```
/// # fn f(resp: duet::Response<()>) {
/// let transport = resp.extensions().get::<duet::Transport>();
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    /// Stock gRPC: HTTP/2 over TCP, through tonic.
    Grpc,
    /// duet's native wire over an Iroh QUIC connection.
    Iroh,
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Grpc => "grpc",
            Transport::Iroh => "iroh",
        })
    }
}

/// Per-client settings applied to every call (generated clients expose them as builder methods).
#[derive(Debug, Clone, Default)]
pub struct CallOptions {
    /// Default deadline of every call; a shorter `grpc-timeout` on a request wins.
    pub timeout: Option<Duration>,
    /// Message size limits.
    pub limits: Limits,
    /// Message compression, as tonic's `send_compressed` and `accept_compressed` (see
    /// [`crate::Compression`]).
    pub compression: crate::compression::Compression,
}
