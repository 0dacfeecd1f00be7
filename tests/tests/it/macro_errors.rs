//! Mistakes in a `#[duet::service]` impl are errors on the user's code that say the fix; the expected
//! messages are checked in next to each case (`tests/ui/*.stderr`).

#[test]
fn macro_mistakes_point_at_the_users_code() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("ui/*.rs");
}
