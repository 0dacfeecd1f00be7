//! duet's benchmark: the same proto and the same handler behind every contender, measured from a
//! client process against a server process.

#![forbid(unsafe_code)]

pub mod contenders;
pub mod cost;
pub mod irpc_bench;
pub mod load;
pub mod load_report;
pub mod middleware;
pub mod report;
pub mod services;
pub mod tls;
pub mod workloads;

/// Generated code for `bench.v1`.
pub mod pb {
    duet::include_proto!("bench.v1");
}
