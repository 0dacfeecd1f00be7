//! The defaults of the QUIC settings in `[transport.iroh]`, which the Iroh endpoint also uses when it
//! is built without a config (re-exported as `duet::iroh::endpoint::*`).

use std::time::Duration;

/// Per-stream receive window. Not larger: noq (iroh's QUIC stack) keeps at most 1024 out-of-order
/// pieces per stream and kills the whole connection ("too many gaps in stream buffer") past that,
/// which an 8 MiB window under loss reached in `duet-bench`; 1 MiB (about 900 packets) cannot.
pub const STREAM_RECEIVE_WINDOW: u32 = 1024 * 1024;
/// Connection receive window: room for many streams in flight at once.
pub const RECEIVE_WINDOW: u32 = 16 * 1024 * 1024;

/// How long a connection may go without hearing from the peer before it is declared dead (default of
/// `[transport.iroh] idle_timeout_ms`). A peer process that dies sends no goodbye over UDP, and a
/// restarted one cannot reset the old connection, so until this passes every call on it waits out
/// its deadline: QUIC's usual 30 s is too long for a cluster whose calls fall back or fail over.
/// 15 s is iroh's own idle limit for a direct path; peers reached only through a relay may want
/// 30 s, iroh's limit for relay paths, to ride out a relay restart.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(15);

/// Interval of keep-alive packets on an idle connection (default of `[transport.iroh]
/// keepalive_interval_ms`).
pub const KEEP_ALIVE: Duration = Duration::from_millis(2_500);
