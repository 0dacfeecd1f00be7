//! Attribute macros for duet service impls. Use them through `duet` (`#[duet::service]`).
