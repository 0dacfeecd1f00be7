//! A bad proto is an error naming its file and line, never a panic.

use std::path::Path;

fn compile(files: &[(&str, &str)]) -> Result<(), duet_codegen::Error> {
    let dir = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    for (name, src) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, src).unwrap();
    }
    let protos: Vec<&Path> = files.iter().take(1).map(|(n, _)| Path::new(n)).collect();
    duet_codegen::configure().out_dir(out.path()).emit_rerun_if_changed(false).compile(&protos, &[dir.path()])
}

fn error_of(files: &[(&str, &str)]) -> String {
    match compile(files) {
        Ok(()) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn syntax_error_names_file_and_line() {
    let err = error_of(&[("bad/syntax.proto", "syntax = \"proto3\";\npackage p;\n\nmessage M {\n  int32 x = ;\n}\n")]);
    assert!(err.contains("bad/syntax.proto:5"), "{err}");
}

#[test]
fn missing_import_names_the_importing_file_and_the_import() {
    let err = error_of(&[("top.proto", "syntax = \"proto3\";\npackage p;\nimport \"nowhere/missing.proto\";\n")]);
    assert!(err.contains("top.proto:3"), "{err}");
    assert!(err.contains("nowhere/missing.proto"), "{err}");
}

#[test]
fn unknown_type_names_file_line_and_type() {
    let err = error_of(&[(
        "svc.proto",
        "syntax = \"proto3\";\npackage p;\nmessage A {}\nservice S {\n  rpc Call(A) returns (Nope);\n}\n",
    )]);
    assert!(err.contains("svc.proto:5"), "{err}");
    assert!(err.contains("Nope"), "{err}");
}

#[test]
fn missing_root_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let err = duet_codegen::configure()
        .out_dir(dir.path())
        .compile(&["absent.proto"], &[dir.path()])
        .unwrap_err()
        .to_string();
    assert!(err.contains("absent.proto"), "{err}");
}

#[test]
fn unknown_service_in_an_option_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("ok.proto"),
        "syntax = \"proto3\";\npackage p;\nmessage A {}\nservice Real { rpc Go(A) returns (A); }\n",
    )
    .unwrap();
    let err = duet_codegen::configure()
        .out_dir(dir.path())
        .emit_rerun_if_changed(false)
        .iroh_services(["Imaginary"])
        .compile(&["ok.proto"], &[dir.path()])
        .unwrap_err()
        .to_string();
    assert!(err.contains("Imaginary") && err.contains("p.Real"), "{err}");
}

#[test]
fn rpcs_that_meet_in_rust_are_an_error_naming_both() {
    let proto = "syntax = \"proto3\";\npackage p;\nmessage M {}\n\
                 service S {\n  rpc GetX(M) returns (M);\n  rpc get_x(M) returns (M);\n}\n";
    let err = error_of(&[("s.proto", proto)]);
    assert!(err.contains("GetX") && err.contains("get_x") && err.contains("p.S"), "{err}");
    assert!(err.contains("rename one in the proto"), "{err}");
}

#[test]
fn a_generated_item_named_as_a_message_is_an_error_naming_both() {
    let proto = "syntax = \"proto3\";\npackage p;\nmessage KindsClient {}\nservice Kinds {\n  rpc A(KindsClient) returns (KindsClient);\n}\n";
    let err = error_of(&[("s.proto", proto)]);
    assert!(err.contains("`KindsClient`") && err.contains("message p.KindsClient"), "{err}");
    assert!(err.contains("service p.Kinds"), "{err}");
}

#[test]
fn maps_and_optional_fields_make_no_module_to_collide_with() {
    // prost writes no module for a message whose only nested type is a map entry or whose only
    // oneof is a proto3 `optional`: `FooMethods` beside service `Foo` (whose items include the
    // module `foo_methods`) is fine.
    let proto = "syntax = \"proto3\";\npackage p;\n\
                 message FooMethods { map<string, int32> m = 1; optional int32 n = 2; }\n\
                 service Foo { rpc A(FooMethods) returns (FooMethods); }\n";
    compile(&[("s.proto", proto)]).expect("no collision");
    let proto = "syntax = \"proto3\";\npackage p;\nmessage FooMethods { oneof o { int32 n = 1; } }\n\
                 service Foo { rpc A(FooMethods) returns (FooMethods); }\n";
    let err = compile(&[("s.proto", proto)]).expect_err("a real oneof makes the module foo_methods");
    assert!(err.to_string().contains("`foo_methods`"), "{err}");
}
