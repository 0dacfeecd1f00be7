fn main() -> Result<(), Box<dyn std::error::Error>> {
    duet_codegen::configure()
        // tonic's own stubs too: the suite calls duet with a plain tonic client, and serves plain tonic.
        .tonic_stubs(true)
        // Clock travels as protobuf on Iroh, so the suite covers both body codecs.
        .iroh_codec("cases.b.v1.Clock", duet_codegen::Codec::Protobuf)
        .compile(
            &["matrix/v1/kinds.proto", "cases/a/v1/common.proto", "cases/b/v1/uses.proto", "grpc/testing/test.proto"],
            &["../proto"],
        )?;
    Ok(())
}
