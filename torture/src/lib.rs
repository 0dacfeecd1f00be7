//! The generator's torture test: `proto/torture` names packages, messages, fields, enums, oneofs,
//! services and rpcs after Rust keywords, std prelude names, std trait methods and the names duet's
//! generated items use (and a package after the crates generated code names: `core`, `std`, `duet`,
//! `prost`, `serde`, `tonic`), mixes proto2 and proto3, has an empty service and a comment full of markdown
//! and HTML. The code generated from it must compile here without a warning, pass clippy and
//! `cargo doc -D warnings`, and serve and call every rpc on both transports (`tests/`).

#![deny(warnings)]
#![forbid(unsafe_code)]

duet::include_protos!();
