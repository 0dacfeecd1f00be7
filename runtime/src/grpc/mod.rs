//! tonic glue: duet's generic calls over a `tonic::transport::Channel`.

mod cancel;
mod client;
pub(crate) mod handler;
mod incoming;
mod layer;

pub(crate) use cancel::CancelOnDrop;
pub(crate) use client::{bidi, client_status, client_streaming, server_streaming, unary};
pub(crate) use incoming::UntilShutdown;
pub(crate) use layer::{DuetGrpcLayer, ServeSetup, fix_size_limit_status};
