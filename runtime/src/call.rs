//! What every call carries down through the layers, whatever transport takes it: the client's
//! options, the name of the transport that carried it, and how much of a status message travels.

use std::borrow::Cow;
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

/// The most bytes of a status message a duet server sends, on both transports. A longer message is
/// cut (at a character boundary) and ends with a marker saying how long it was, so it arrives the
/// same on gRPC, where percent-encoded in a `grpc-message` header it must fit the client's HTTP/2
/// header limit (16 KiB in hyper and tonic; a longer one fails the call `INTERNAL`), and on Iroh.
pub const MAX_STATUS_MESSAGE_BYTES: usize = 4096;

/// `message` cut to [`MAX_STATUS_MESSAGE_BYTES`] with a marker, or as it is when it fits.
pub(crate) fn fit_status_message(message: &str) -> Cow<'_, str> {
    if message.len() <= MAX_STATUS_MESSAGE_BYTES {
        return Cow::Borrowed(message);
    }
    let marker = format!(" [… status message cut: {} bytes in all]", message.len());
    let mut end = MAX_STATUS_MESSAGE_BYTES - marker.len();
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}{marker}", &message[..end]))
}

#[cfg(test)]
mod tests {
    use super::{MAX_STATUS_MESSAGE_BYTES, fit_status_message};

    #[test]
    fn long_status_messages_are_cut_at_a_character_with_a_marker() {
        assert_eq!(fit_status_message("short"), "short");
        let exact = "x".repeat(MAX_STATUS_MESSAGE_BYTES);
        assert_eq!(fit_status_message(&exact), exact);
        let long = "é".repeat(10_000);
        let cut = fit_status_message(&long);
        assert!(cut.len() <= MAX_STATUS_MESSAGE_BYTES, "{}", cut.len());
        assert!(cut.starts_with("éé") && cut.ends_with(" [… status message cut: 20000 bytes in all]"), "{cut}");
    }
}
