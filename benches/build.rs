fn main() -> Result<(), Box<dyn std::error::Error>> {
    // tonic's own stubs too: plain tonic is a contender.
    duet_codegen::configure().tonic_stubs(true).compile(&["bench/v1/bench.proto"], &["../proto"])?;
    Ok(())
}
