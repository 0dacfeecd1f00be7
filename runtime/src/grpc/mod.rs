//! tonic glue: duet's generic calls over a `tonic::transport::Channel`.

mod client;

pub(crate) use client::{bidi, client_streaming, server_streaming, unary};
