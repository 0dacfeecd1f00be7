//! Per-service choices: Iroh stubs or not, the body codec on Iroh, the config name.

/// The encoding of message bodies on duet's Iroh wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Codec {
    /// postcard (default): compact and fast; peers must share one schema, which duet checks by
    /// fingerprint on every call.
    #[default]
    Postcard,
    /// protobuf: the same bytes gRPC sends; tolerant of added and removed fields across versions.
    Protobuf,
}

#[derive(Debug, Clone)]
pub(crate) struct ServiceOptions {
    pub iroh: bool,
    pub codec: Codec,
    pub config_name: Option<String>,
}
