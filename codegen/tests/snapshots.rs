//! Snapshots of the code generated for a few representative protos (`tests/snapshots/*.snap`), so a
//! change in what users compile shows in review. After an intended change, run
//! `INSTA_UPDATE=always cargo test -p duet-codegen --test snapshots` and review the diff.

use std::path::Path;

/// The Rust generated for `proto` (package `demo.v1`) by `builder`.
fn generated(proto: &str, builder: duet_codegen::Builder) -> String {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("demo.proto"), proto).unwrap();
    builder
        .out_dir(out.path())
        .emit_rerun_if_changed(false)
        .compile(&[Path::new("demo.proto")], &[src.path()])
        .unwrap();
    std::fs::read_to_string(out.path().join("demo.v1.rs")).unwrap()
}

#[test]
fn unary_service() {
    let proto = r#"
syntax = "proto3";
package demo.v1;

// Says hello. Comments keep <angle> [brackets] as text; see https://example.org/a_b.
service Greeter {
  // Greets `name`.
  rpc Greet(GreetRequest) returns (GreetReply) { option idempotency_level = NO_SIDE_EFFECTS; }
}

message GreetRequest { string name = 1; bytes avatar = 2; }
message GreetReply { string text = 1; }
"#;
    insta::assert_snapshot!(generated(proto, duet_codegen::configure()));
}

#[test]
fn every_call_shape() {
    let proto = r#"
syntax = "proto3";
package demo.v1;

service Shapes {
  rpc One(Item) returns (Item);
  rpc Fetch(Item) returns (stream Item);
  rpc Push(stream Item) returns (Item);
  rpc Chat(stream Item) returns (stream Item);
}

message Item { uint64 id = 1; }
"#;
    insta::assert_snapshot!(generated(proto, duet_codegen::configure()));
}

#[test]
fn empty_grpc_only_and_protobuf_services() {
    let proto = r#"
syntax = "proto3";
package demo.v1;

service Empty {}
service GrpcOnly { rpc Ping(Item) returns (Item); }
service Tolerant { rpc Ping(Item) returns (Item); }

message Item { uint64 id = 1; }
"#;
    let builder = duet_codegen::configure()
        .iroh_services(["Empty", "Tolerant"])
        .iroh_codec("demo.v1.Tolerant", duet_codegen::Codec::Protobuf)
        .config_name("demo.v1.Tolerant", "tolerant_svc");
    insta::assert_snapshot!(generated(proto, builder));
}
