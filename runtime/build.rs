//! Generates protobuf's well-known types with serde derives, so generated messages that use them can
//! travel as postcard (prost_types has no serde impls).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "google/protobuf/any.proto",
        "google/protobuf/duration.proto",
        "google/protobuf/empty.proto",
        "google/protobuf/field_mask.proto",
        "google/protobuf/struct.proto",
        "google/protobuf/timestamp.proto",
        "google/protobuf/wrappers.proto",
    ];
    let fds = protox::compile(files, ["."])?;
    let mut config = prost_build::Config::new();
    config
        .compile_well_known_types()
        .bytes(["."])
        .type_attribute(".", "#[derive(::serde::Serialize, ::serde::Deserialize)]");
    config.compile_fds(fds)?;
    println!("cargo:rerun-if-changed=build.rs");
    Ok(())
}
