//! What can go wrong while generating code.

/// A code generation failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A proto file could not be parsed or resolved; the message names the file and line.
    #[error("{0}")]
    Proto(String),
    /// Reading protos or writing generated files failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A builder option names something the protos do not have.
    #[error("{0}")]
    Config(String),
}
