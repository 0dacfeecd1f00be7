//! Generated code for the integration tests, the service impls they serve, and a harness that starts
//! real servers (a tonic listener and an Iroh endpoint on 127.0.0.1) and makes channels to them.

#![forbid(unsafe_code)]
#![deny(warnings)]

pub mod harness;
pub mod interop;
pub mod lab;
pub mod plain;
pub mod services;
pub mod udp_relay;

/// Every test package, nested by package name.
pub mod pb {
    duet::include_protos!();
}
