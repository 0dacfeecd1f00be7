//! The command line's subcommands that are more than a few lines.

pub mod client;

pub use client::{Call, client_call};
