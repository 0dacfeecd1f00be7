//! Message size limits, with tonic's defaults.

/// tonic's default decoding limit: 4 MiB.
pub const DEFAULT_MAX_DECODING_MESSAGE_SIZE: usize = 4 * 1024 * 1024;

/// Size limits on one message, applied on both transports: a message past a limit ends its call with
/// `RESOURCE_EXHAUSTED`, and on the Iroh wire nothing of its claimed size is allocated first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest message accepted (default 4 MiB, as tonic).
    pub max_decoding_message_size: usize,
    /// Largest message sent (default unlimited, as tonic).
    pub max_encoding_message_size: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_decoding_message_size: DEFAULT_MAX_DECODING_MESSAGE_SIZE, max_encoding_message_size: usize::MAX }
    }
}
