//! The README's quick start is the code of `examples/quickstart/main.rs`, which the workspace builds.

#[test]
fn readme_quickstart_is_the_compiled_example() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/quickstart/main.rs")).unwrap();
    let after = readme.split("<!-- quickstart -->").nth(1).expect("quickstart marker in README");
    let block = after.split("```rust,ignore\n").nth(1).and_then(|b| b.split("\n```").next()).expect("code block");
    assert!(block.lines().count() > 20, "the snippet is the whole program, not a fragment");
    assert!(example.contains(block), "README quick start differs from examples/quickstart/main.rs");
}
