//! The command line's subcommands that are more than a few lines.

pub mod client;
mod error;
mod output;
mod table;

pub use client::{Call, client_call};
pub use error::render_error;
