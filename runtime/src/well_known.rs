//! protobuf's well-known types (`google.protobuf.*`), with serde derives so they travel as postcard.
//!
//! Generated code refers to these for `Timestamp`, `Duration`, `Any`, `Struct`, `Value`, `ListValue`,
//! `FieldMask`; `Empty` becomes `()` and the wrapper types become `Option` of a primitive, as in prost.
#![allow(missing_docs, clippy::all)]

include!(concat!(env!("OUT_DIR"), "/google.protobuf.rs"));
