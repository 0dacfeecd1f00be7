//! Every builder option, and its effect on the generated code.

use std::path::Path;

use duet_codegen::Codec;
use prost::Message as _;

const PROTO: &str = r#"
syntax = "proto3";
package p;

// A message.
message Msg {
  string name = 1;
  Mood mood = 2;
  External ext = 3;
}
message External { int32 x = 1; }
enum Mood { MOOD_UNSPECIFIED = 0; }

// Service A.
service A { rpc Go(Msg) returns (Msg); }
// Service B.
service B { rpc Go(Msg) returns (stream Msg); }
"#;

fn setup() -> (tempfile::TempDir, tempfile::TempDir) {
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("p.proto"), PROTO).unwrap();
    (src, tempfile::tempdir().unwrap())
}

fn generated(out: &Path) -> String {
    std::fs::read_to_string(out.join("p.rs")).unwrap()
}

#[test]
fn attributes_extern_paths_and_descriptor_set() {
    let (src, out) = setup();
    let fds_path = out.path().join("fds.bin");
    duet_codegen::configure()
        .out_dir(out.path())
        .emit_rerun_if_changed(false)
        .type_attribute(".p.Msg", "#[doc = \"type attribute\"]")
        .message_attribute(".p.Msg", "#[doc = \"message attribute\"]")
        .enum_attribute(".p.Mood", "#[doc = \"enum attribute\"]")
        .field_attribute(".p.Msg.name", "#[doc = \"field attribute\"]")
        .extern_path(".p.External", "crate::elsewhere::External")
        .file_descriptor_set_path(&fds_path)
        .compile(&["p.proto"], &[src.path()])
        .unwrap();
    let code = generated(out.path());
    for needle in
        ["type attribute", "message attribute", "enum attribute", "field attribute", "crate::elsewhere::External"]
    {
        assert!(code.contains(needle), "missing {needle:?}");
    }
    assert!(!code.contains("pub struct External"), "an extern type is not generated");
    let fds = prost_types::FileDescriptorSet::decode(&std::fs::read(&fds_path).unwrap()[..]).unwrap();
    assert!(fds.file.iter().any(|f| f.name() == "p.proto"));
}

#[test]
fn server_client_and_iroh_choices() {
    let (src, out) = setup();
    duet_codegen::configure()
        .out_dir(out.path())
        .emit_rerun_if_changed(false)
        .build_client(false)
        .tonic_stubs(true)
        .iroh_services(["A"])
        .iroh_codec("p.B", Codec::Protobuf)
        .config_name("p.A", "alpha")
        .compile(&["p.proto"], &[src.path()])
        .unwrap();
    let code = generated(out.path());
    assert!(code.contains("pub struct AServer<T>") && code.contains("pub mod a_server"));
    assert!(!code.contains("pub struct AClient") && !code.contains("pub mod a_client"), "no client code");
    assert!(code.contains("impl<__Impl: A> ::duet::__codegen::IrohService for AServer<__Impl>"));
    assert!(!code.contains("::duet::__codegen::IrohService for BServer<__Impl>"), "B has no Iroh stubs");
    assert!(code.contains("gRPC (Iroh stubs were not generated for this service)"), "B's docs say so");
    assert!(code.contains("config_name: \"alpha\""));
    assert!(code.contains("codec: ::duet::WireCodec::Protobuf"));
    assert!(code.contains("/// Service A."), "proto comments become rustdoc");

    let out2 = tempfile::tempdir().unwrap();
    duet_codegen::configure()
        .out_dir(out2.path())
        .emit_rerun_if_changed(false)
        .build_server(false)
        .compile(&["p.proto"], &[src.path()])
        .unwrap();
    let code = generated(out2.path());
    assert!(code.contains("pub struct AClient") && !code.contains("pub struct AServer"));
    assert!(!code.contains("pub mod a_server"));
    assert!(!code.contains("pub mod a_client"), "tonic's stubs only when asked");
    let bare_tonic = code.match_indices("tonic::").filter(|(at, _)| !code[..*at].ends_with("::duet::__codegen::"));
    assert_eq!(bare_tonic.count(), 0, "without tonic's stubs the code names tonic only through duet");
}

#[test]
fn a_directory_compiles_in_one_call() {
    let (src, out) = setup();
    std::fs::write(src.path().join("q.proto"), "syntax = \"proto3\";\npackage q;\nmessage Q { int32 n = 1; }\n")
        .unwrap();
    duet_codegen::configure()
        .out_dir(out.path())
        .emit_rerun_if_changed(false)
        .compile_dir(src.path(), &[] as &[&Path])
        .unwrap();
    assert!(out.path().join("p.rs").exists() && out.path().join("q.rs").exists());
    let includes = std::fs::read_to_string(out.path().join(duet_codegen::INCLUDE_FILE)).unwrap();
    assert!(includes.contains("pub mod p") && includes.contains("pub mod q"));
}
