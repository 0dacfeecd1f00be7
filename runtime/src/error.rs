//! Errors of setting up (not of calls: a call fails with a [`crate::Status`]).

/// Why a server or channel could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A gRPC transport error from tonic (bad URI, connect failure, serve failure).
    #[error("gRPC transport: {0}")]
    Grpc(#[from] tonic::transport::Error),
    /// A socket could not be bound.
    #[error("cannot bind {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// A server was asked to serve on no transport at all.
    #[error("the server has no transport: call .grpc(addr) and/or .iroh(endpoint) before serve()")]
    NoTransport,
    /// A peer address lacks what the transport mode needs.
    #[error("{0}")]
    PeerAddr(String),
    /// The transport config is unusable.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The Iroh endpoint could not be bound.
    #[error("cannot bind the Iroh endpoint: {0}")]
    IrohBind(String),
    /// Any other I/O error.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}
