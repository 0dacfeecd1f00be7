//! Generated code for the integration tests, and the service impls they serve.

#![deny(warnings)]

/// Every test package, nested by package name.
pub mod pb {
    duet::include_protos!();
}
